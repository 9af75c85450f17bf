//! `versa-server`: parses flags, then serves until SIGTERM.

use clap::Parser as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let flags = match versa_server::flags::Flags::try_parse() {
        Ok(flags) => flags.with_model_from_env(|name| std::env::var(name).ok()),
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let reason = e.to_string();
            let first =
                reason.lines().next().unwrap_or("invalid flags").trim_start_matches("error: ");
            eprintln!("versa-server: {first}");
            return ExitCode::from(2);
        }
    };
    let startup = match versa_server::prepare(flags) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("versa-server: {e:#}");
            return ExitCode::from(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("versa-server: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(versa_server::serve(startup, versa_server::shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("versa-server: {e:#}");
            ExitCode::from(1)
        }
    }
}
