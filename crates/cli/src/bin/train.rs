//! `train --config FILE`: train a model from a TOML experiment config, evaluate it, and print
//! the results table.

use clap::Parser;
use oodforge_cli::{init_logging, parse_backend, report};
use oodforge_core::config::{self, BackendChoice};
use oodforge_train::{StopRequest, TrainOptions, resume, train};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "train",
    version,
    about = "Train an OOD-aware classifier from a TOML experiment config"
)]
struct Args {
    /// Experiment config (TOML).
    #[arg(
        long,
        short,
        required_unless_present = "resume",
        conflicts_with = "resume"
    )]
    config: Option<PathBuf>,
    /// Override a config key, e.g. `--set optim.lr=0.05` (value parsed as TOML). Repeatable.
    /// With `--resume`, only the keys that are safe to change mid-run: train.epochs,
    /// train.log_every, train.checkpoint_every and eval.*.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Compute backend: auto, wgpu, flex, ndarray, cuda (overrides the config's `backend`).
    #[arg(long, value_parser = parse_backend)]
    backend: Option<BackendChoice>,
    /// Run folder (default runs/<name>/<hash8>/s<seed>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Root folder of default run folders.
    #[arg(long, default_value = "runs")]
    runs_root: PathBuf,
    /// Print the fully resolved config and its hash, then exit.
    #[arg(long, conflicts_with = "resume")]
    dry_run: bool,
    /// Continue the run in this folder from its last checkpoint.
    #[arg(long, value_name = "RUN_DIR")]
    resume: Option<PathBuf>,
    /// Stop after this many epochs (a checkpoint is written); `--resume` continues.
    #[arg(long, value_name = "EPOCHS")]
    stop_after: Option<usize>,
    /// Never draw a progress bar.
    #[arg(long)]
    no_progress: bool,
}

fn main() -> ExitCode {
    oodforge_cli::keep_freed_memory();
    let args = Args::parse();
    init_logging();
    // SIGINT / SIGTERM: finish the current step, write a checkpoint there, exit 128 + signal.
    let stop = StopRequest::new();
    if let Err(e) = stop.on_signals() {
        eprintln!("warning: cannot handle SIGINT/SIGTERM ({e}); a kill loses the current epoch");
    }
    let opts = TrainOptions {
        backend: args.backend,
        out: args.out.clone(),
        runs_root: args.runs_root.clone(),
        stop_after: args.stop_after,
        progress: !args.no_progress,
        command: std::env::args().collect(),
        stop,
        set: if args.resume.is_some() {
            args.set.clone()
        } else {
            Vec::new()
        },
    };
    let outcome = match (&args.resume, &args.config) {
        (Some(dir), _) => resume(dir, &opts),
        (None, Some(path)) => {
            let resolved = match config::load(path, &args.set) {
                Ok(r) => r,
                Err(e) => return report(&e),
            };
            if args.dry_run {
                println!(
                    "# resolved from {} (hash {})\n{}",
                    path.display(),
                    resolved.hash,
                    resolved.text
                );
                return ExitCode::SUCCESS;
            }
            train(&resolved, &opts)
        }
        (None, None) => unreachable!("clap requires --config or --resume"),
    };
    match outcome {
        Ok(outcome) => {
            if let Some(stopped) = &outcome.stopped {
                eprintln!(
                    "{stopped}\ncontinue with: train --resume {}",
                    outcome.run_dir.display()
                );
                // As a shell reports a process ended by the signal, so scripts and schedulers
                // see that the run did not finish.
                return ExitCode::from((128 + stopped.signal).clamp(1, 255) as u8);
            }
            if let Some(results) = &outcome.results {
                let title = outcome.run_dir.display().to_string();
                println!("{}", results.to_markdown(&title));
            } else if let Some(results) = &outcome.mil_results {
                println!("{}", results.to_markdown());
            } else if !outcome.finished {
                eprintln!(
                    "stopped early; continue with: train --resume {}",
                    outcome.run_dir.display()
                );
            }
            eprintln!("run folder: {}", outcome.run_dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => report(&e),
    }
}
