//! The `ferry` binary: parse arguments, set up logging, build the runtime,
//! run the command, and turn the outcome into an exit code.
#![allow(clippy::print_stderr)]

use std::process::ExitCode;

use clap::Parser;
use ferry::cli::Cli;
use ferry::engine::depth::STACK_BYTES;
use ferry::error::{ExitStatus, is_broken_pipe};

fn main() -> ExitCode {
    let cli = Cli::parse();
    ferry::logging::init(cli.global.verbose);
    // The command runs on a thread with a stack as deep as the runtime's
    // workers': queries are planned and polled on both, and DataFusion
    // recurses over expressions as deep as `engine::depth` allows.
    let main =
        std::thread::Builder::new().name("ferry-main".to_owned()).stack_size(STACK_BYTES).spawn(move || run(cli));
    match main.map(std::thread::JoinHandle::join) {
        Ok(Ok(code)) => code,
        // The panic has printed its message; exit as Rust's runtime does.
        Ok(Err(_)) => ExitCode::from(101),
        Err(e) => {
            eprintln!("error: cannot start the main thread: {e}");
            ExitStatus::Error.into()
        }
    }
}

fn run(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().thread_stack_size(STACK_BYTES).enable_all().build()
    {
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
