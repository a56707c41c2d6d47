//! `eval --run DIR`: evaluate the last checkpoint of a run, write results.json / results.md
//! into the run folder and print the table.
//!
//! `eval --config FILE --out DIR`: evaluate the weights a config's `model.weights` names
//! (OpenOOD's released `resnet18_32x32` checkpoints, OE WRN snapshots, torchvision / timm
//! weights) on that config's data, without training.

use clap::{ArgGroup, Parser};
use oodforge_cli::{init_logging, parse_backend, report};
use oodforge_core::config::BackendChoice;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "eval",
    version,
    about = "Evaluate a trained run, or imported weights, with OOD scores and OpenOOD metrics",
    group(ArgGroup::new("what").required(true).args(["run", "config"]))
)]
struct Args {
    /// Run folder written by `train`.
    #[arg(long)]
    run: Option<PathBuf>,
    /// Experiment config whose `model.weights` names the checkpoint to evaluate.
    #[arg(long, requires = "out")]
    config: Option<PathBuf>,
    /// Override a config key (with --config), e.g. `--set model.weights.path=x.ckpt`. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", requires = "config")]
    set: Vec<String>,
    /// Folder for results.json / results.md (with --config).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Compute backend for inference: auto, wgpu, flex, ndarray, cuda.
    #[arg(long, value_parser = parse_backend)]
    backend: Option<BackendChoice>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging();
    let (result, title) = match (&args.run, &args.config, &args.out) {
        (Some(run), _, _) => (
            oodforge_train::evaluate_run(run, args.backend),
            run.display().to_string(),
        ),
        (None, Some(config), Some(out)) => (
            oodforge_train::evaluate_weights(config, &args.set, out, args.backend),
            out.display().to_string(),
        ),
        _ => unreachable!("clap requires --run or --config with --out"),
    };
    match result {
        Ok(results) => {
            println!("{}", results.to_markdown(&title));
            ExitCode::SUCCESS
        }
        Err(e) => report(&e),
    }
}
