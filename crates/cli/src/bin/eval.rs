//! `eval --run DIR`: evaluate the last checkpoint of a run, write results.json / results.md
//! into the run folder and print the table.
//!
//! `eval --config FILE --out DIR`: evaluate the weights a config's `model.weights` names
//! (OpenOOD's released `resnet18_32x32` checkpoints, OE WRN snapshots, torchvision / timm
//! weights) on that config's data, without training.
//!
//! Either way the network runs once per dataset: its outputs are cached in `outputs/` of the
//! run (or `--out`) folder, and a second `eval` with other post-processors, settings or metric
//! convention only re-scores them:
//!
//!     eval --run runs/x --postprocessors msp,knn,vim --convention oe --out runs/x/eval-oe
//!     eval --run runs/x --set 'eval.postprocessors=[{name="knn", k=200}]' --ood textures
//!
//! `eval --runs DIR... --out DIR`: the same evaluation of several runs (one per seed), and the
//! mean ± std tables (OpenOOD's leaderboard reports three seeds this way):
//!
//!     eval --runs runs/cifar10_oe_seed0 runs/cifar10_oe_seed1 runs/cifar10_oe_seed2 --out runs/cifar10_oe

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
    group(ArgGroup::new("what").required(true).args(["run", "runs", "config"]))
)]
struct Args {
    /// Run folder written by `train`.
    #[arg(long)]
    run: Option<PathBuf>,
    /// Several run folders (seeds) evaluated alike; mean ± std tables into --out.
    #[arg(long, num_args = 1.., requires = "out", value_name = "DIR")]
    runs: Vec<PathBuf>,
    /// Experiment config whose `model.weights` names the checkpoint to evaluate.
    #[arg(long, requires = "out")]
    config: Option<PathBuf>,
    /// Override a config key, e.g. `--set model.weights.path=x.ckpt` (with --config) or
    /// `--set eval.postprocessors=[{name="knn",k=100}]` (with --run: `eval.*` keys only).
    /// Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Post-processors to evaluate, comma-separated, each with OpenOOD's defaults: msp, maxlogit,
    /// energy, odin, gen, mds, palm_mds, knn, vim, react, ash.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    postprocessors: Option<Vec<String>>,
    /// Metric convention: openood (default), oe, energy, palm, mixoe (METHODS §1).
    #[arg(long, value_name = "NAME")]
    convention: Option<String>,
    /// Only these OOD sets, comma-separated names.
    #[arg(long, value_delimiter = ',', value_name = "SETS")]
    ood: Option<Vec<String>>,
    /// Folder for results.json / .md / .csv / .tex (required with --config; with --run the run
    /// folder by default).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Compute backend for inference: auto, wgpu, flex, ndarray, cuda.
    #[arg(long, value_parser = parse_backend)]
    backend: Option<BackendChoice>,
}

fn main() -> ExitCode {
    oodforge_cli::keep_freed_memory();
    let args = Args::parse();
    init_logging();
    let options = oodforge_train::EvalOptions {
        backend: args.backend,
        overrides: args.set.clone(),
        postprocessors: args.postprocessors.clone(),
        convention: args.convention.clone(),
        ood_sets: args.ood.clone(),
        out: args.out.clone(),
    };
    if !args.runs.is_empty() {
        let out = args
            .out
            .as_deref()
            .expect("clap requires --out with --runs");
        return match oodforge_train::evaluate_runs(&args.runs, out, &options) {
            Ok(agg) => {
                println!("{}", agg.to_markdown(&out.display().to_string()));
                ExitCode::SUCCESS
            }
            Err(e) => report(&e),
        };
    }
    let (result, title) = match (&args.run, &args.config, &args.out) {
        (Some(run), _, _) => (
            oodforge_train::evaluate_run_with(run, &options),
            run.display().to_string(),
        ),
        (None, Some(config), Some(out)) => (
            oodforge_train::evaluate_weights_with(config, out, &options),
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
