//! `eval --run DIR`: evaluate the last checkpoint of a run, write results.json / results.md
//! into the run folder and print the table.

use clap::Parser;
use oodforge_cli::{init_logging, parse_backend, report};
use oodforge_core::config::BackendChoice;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "eval",
    version,
    about = "Evaluate a trained run with OOD scores and OpenOOD metrics"
)]
struct Args {
    /// Run folder written by `train`.
    #[arg(long)]
    run: PathBuf,
    /// Compute backend for inference: auto, wgpu, flex, ndarray, cuda.
    #[arg(long, value_parser = parse_backend)]
    backend: Option<BackendChoice>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging();
    match oodforge_train::evaluate_run(&args.run, args.backend) {
        Ok(results) => {
            println!("{}", results.to_markdown(&args.run.display().to_string()));
            ExitCode::SUCCESS
        }
        Err(e) => report(&e),
    }
}
