//! The `ferry` binary: parse arguments, set up logging, build the runtime,
//! run the command, and turn the outcome into an exit code.
#![allow(clippy::print_stderr)]

use std::process::ExitCode;

use clap::Parser;
use ferry::cli::Cli;
use ferry::error::{ExitStatus, is_broken_pipe};

fn main() -> ExitCode {
    let cli = Cli::parse();
    ferry::logging::init(cli.global.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: failed to start the async runtime: {e}");
            return ExitStatus::Error.into();
        }
    };
    match runtime.block_on(ferry::commands::run(cli)) {
        Ok(status) => status.into(),
        Err(e) if is_broken_pipe(&e) => ExitStatus::Success.into(),
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitStatus::Error.into()
        }
    }
}
