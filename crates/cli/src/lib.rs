//! Shared pieces of the command-line tools: logging, error reporting, the training benchmark.

use std::process::ExitCode;

pub mod train_bench;

/// Log to stderr through tracing; `RUST_LOG` overrides the default `info` level.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,wgpu_core=warn,wgpu_hal=warn,naga=warn,cubecl=warn",
        )
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// Print an error and its causes on stderr, without a backtrace, and return exit code 2.
pub fn report(err: &dyn std::error::Error) -> ExitCode {
    eprintln!("error: {err}");
    let mut source = err.source();
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
    ExitCode::from(2)
}

/// Parse a `--backend` value.
pub fn parse_backend(s: &str) -> Result<oodforge_core::config::BackendChoice, String> {
    s.parse()
}
