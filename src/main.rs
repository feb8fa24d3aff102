//! The `ferry` binary: parse arguments, set up logging, build the runtime,
//! run the command, and turn the outcome into an exit code.
#![allow(clippy::print_stderr)]

use std::process::ExitCode;

use clap::Parser;
use ferry::cli::Cli;
use ferry::engine::depth::STACK_BYTES;
use ferry::error::{ExitStatus, is_broken_pipe};

fn main() -> ExitCode {
    fixed_mmap_threshold();
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

/// Gives freed Arrow buffers back to the system at once. glibc's malloc
/// raises its mmap threshold (up to 32 MiB) each time a mapped block is
/// freed, after which buffers of up to that size come from its heaps, where
/// freed memory stays resident: W1 at TPC-H scale factor 10 under
/// `--memory-limit 4GB` then peaked at 5.2 GB; with the threshold fixed at
/// 128 KiB (glibc's starting value), at 4.3 GB, and a little faster
/// (`scripts/bench_w1.sh`, benches/results/w1-2026-12-04.md).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn fixed_mmap_threshold() {
    const THRESHOLD: libc::c_int = 128 * 1024;
    // SAFETY: mallopt only sets allocator parameters; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, THRESHOLD);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn fixed_mmap_threshold() {}
