//! tracing setup: `-v` = debug, `-vv` = trace, `RUST_LOG` overrides. Logs go to stderr.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber.
pub fn init(verbose: u8) {
    // connectorx's connection pool (r2d2) logs every failed try as an
    // ERROR; ferry reports the failure itself, once.
    let default = match verbose {
        0 => "warn,r2d2=off",
        1 => "ferry=debug,warn,r2d2=off",
        _ => "ferry=trace,debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
