//! The `uphost` binary: parse arguments, set up logging, run, and turn any
//! error into a clear message and a non-zero exit.

use std::io::Write as _;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use uphost::cli::{self, Cli, exit};

/// mimalloc, not glibc's malloc: a run's tasks allocate on one worker
/// thread and free on another, which glibc serialises on an arena lock
/// (measured in BENCHMARKS.md, "Scale").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__exec-record") {
        std::process::exit(uphost::transport::record::main(&args[2..]));
    }
    if args.get(1).map(String::as_str) == Some("__optimize") {
        std::process::exit(uphost::loading::cache::optimize_main(&args[2..]));
    }
    // A plugin loaded by the quick tier gets its optimized code compiled
    // by a detached `uphost __optimize`, which outlives a short command.
    if let Ok(exe) = std::env::current_exe() {
        uphost::loading::cache::set_optimizer(exe);
    }
    let cli = Cli::parse();
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "error: cannot start the async runtime: {e}"
            );
            std::process::exit(exit::FAILED);
        }
    };
    let code = match rt.block_on(cli::main(cli)) {
        Ok(code) => code,
        Err(e) => {
            // An error can quote a plugin (a describe that failed, a
            // reason): shown like every other plugin string.
            let text = e.to_string();
            let _ = writeln!(
                std::io::stderr(),
                "error: {}",
                uphost::untrusted::text_max(&text, 64 << 10)
            );
            if let Some(hint) = e.hint() {
                let _ = writeln!(std::io::stderr(), "hint: {hint}");
            }
            e.kind().exit_code()
        }
    };
    rt.shutdown_background();
    std::process::exit(code);
}
