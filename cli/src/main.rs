//! `stratus`: parse the command line, set up logging, run the command, exit with its code.

/// mimalloc, not glibc's malloc, as the standalone API server and controllers (see
/// `platform/src/bin/stratus-apiserver.rs`): `stratus up` holds them both.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::IsTerminal;
use std::process::ExitCode;

use stratus_cli::args::Command;
use stratus_cli::{Environment, Io};

fn main() -> ExitCode {
    let mut io = Io::process();
    let cli = match stratus_cli::parse(std::env::args_os(), &mut io) {
        Ok(cli) => cli,
        Err(code) => return ExitCode::from(code),
    };
    // `up` is a server and says what it does; every other command speaks only when asked to.
    let default_filter = if matches!(cli.command, Command::Up(_)) { "info" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(stratus_cli::run(cli, &Environment::from_process(), &mut io));
    ExitCode::from(code)
}
