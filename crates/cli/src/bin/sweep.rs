//! `sweep FILE`: expand a sweep file (base config x grid / random ranges x seeds) into runs,
//! run the unfinished ones with local workers, then write the table of every point
//! (`<out>/sweep.md`, `.csv`, `.json`). Finished runs are skipped, interrupted ones resumed; a
//! failing run does not stop the others and is listed at the end with its log (exit code 1).
//!
//!     sweep scripts/sweeps/palm_grid.toml --workers 2 --gpus 0,1
//!     sweep scripts/sweeps/palm_grid.toml --slurm --submit     # a SLURM array job instead
//!     sweep scripts/sweeps/palm_grid.toml --aggregate-only     # the table, after the job

use clap::Parser;
use oodforge_cli::{init_logging, report};
use oodforge_experiments::sweep::{RunState, Sweep, run_state, sweep_csv, sweep_markdown};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "sweep",
    version,
    about = "Run a hyperparameter / seed sweep locally or as a SLURM array job"
)]
struct Args {
    /// Sweep file (TOML).
    file: PathBuf,
    /// Parallel runs (default: one per `--gpus` entry, else 1).
    #[arg(long)]
    workers: Option<usize>,
    /// GPU ids, comma-separated: worker i sees only gpus[i % n] (CUDA_VISIBLE_DEVICES). Default:
    /// the GPUs visible to this process ($CUDA_VISIBLE_DEVICES, else `nvidia-smi -L`); `none`
    /// for no pinning.
    #[arg(long, value_delimiter = ',')]
    gpus: Vec<String>,
    /// Backend passed to every run (auto, wgpu, flex, ndarray, cuda).
    #[arg(long)]
    backend: Option<String>,
    /// The `train` binary (default: beside this one, or $OODFORGE_TRAIN).
    #[arg(long)]
    train_bin: Option<PathBuf>,
    /// List the runs and where each stands, then exit.
    #[arg(long)]
    dry_run: bool,
    /// Write a SLURM array job (`<out>/slurm/sweep.sbatch`) for the unfinished runs.
    #[arg(long, conflicts_with_all = ["task", "dry_run"])]
    slurm: bool,
    /// With --slurm: submit it with `sbatch`.
    #[arg(long, requires = "slurm")]
    submit: bool,
    /// With --submit: wait for the job to end (`sbatch --wait`), then write the table.
    #[arg(long, requires = "submit")]
    wait: bool,
    /// Run only run number K (what each SLURM array task does).
    #[arg(long, value_name = "K")]
    task: Option<usize>,
    /// Only (re)write the table from the finished runs.
    #[arg(long)]
    aggregate_only: bool,
}

fn train_bin(args: &Args) -> PathBuf {
    if let Some(p) = &args.train_bin {
        return p.clone();
    }
    if let Some(p) = std::env::var_os("OODFORGE_TRAIN") {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|e| {
            e.parent()
                .map(|d| d.join(format!("train{}", std::env::consts::EXE_SUFFIX)))
        })
        .unwrap_or_else(|| PathBuf::from("train"))
}

/// The GPUs this process may use: `--gpus`, else $CUDA_VISIBLE_DEVICES, else those
/// `nvidia-smi -L` lists; none on a machine without NVIDIA GPUs.
fn visible_gpus(given: &[String]) -> Vec<String> {
    if given == ["none"] {
        return Vec::new();
    }
    if !given.is_empty() {
        return given.to_vec();
    }
    if let Ok(v) = std::env::var("CUDA_VISIBLE_DEVICES") {
        return v
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
    }
    std::process::Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            let n = String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.starts_with("GPU "))
                .count();
            (0..n).map(|i| i.to_string()).collect()
        })
        .unwrap_or_default()
}

fn write_table(sweep: &Sweep) -> Result<String, Box<dyn std::error::Error>> {
    let points = sweep.aggregate()?;
    std::fs::create_dir_all(&sweep.out)?;
    let md = sweep_markdown(&sweep.name, &points);
    for (name, body) in [
        ("sweep.md", md.clone()),
        ("sweep.csv", sweep_csv(&points)),
        ("sweep.json", serde_json::to_string_pretty(&points)?),
    ] {
        let path = sweep.out.join(name);
        std::fs::write(&path, body).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(md)
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging();
    let sweep = match Sweep::load(&args.file) {
        Ok(s) => s,
        Err(e) => return report(&e),
    };
    let train = train_bin(&args);
    let backend = args.backend.as_deref();
    if let Some(k) = args.task {
        return match sweep.run_task(k, &train, backend) {
            Ok(oodforge_experiments::sweep::Outcome::Failed(code)) => {
                eprintln!(
                    "error: run {k} failed (exit {code:?}); see {}",
                    sweep.runs[k].log().display()
                );
                ExitCode::from(1)
            }
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => report(&e),
        };
    }
    if args.dry_run {
        println!(
            "{} runs of `{}` in {}:",
            sweep.runs.len(),
            sweep.name,
            sweep.out.display()
        );
        for (i, run) in sweep.runs.iter().enumerate() {
            let state = match run_state(&run.dir) {
                RunState::Done => "done",
                RunState::Resumable => "resumable",
                RunState::Stale => "stale (restarts)",
                RunState::Fresh => "to run",
            };
            println!(
                "{i:>4}  {:<16} {}  {}",
                state,
                run.dir.display(),
                run.all_overrides().join(" ")
            );
        }
        return ExitCode::SUCCESS;
    }
    if args.slurm {
        let me = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("sweep"));
        let (script, pending) = match sweep.write_slurm(&me, &train, backend) {
            Ok(x) => x,
            Err(e) => return report(&e),
        };
        println!(
            "{} ({} of {} runs pending)",
            script.display(),
            pending.len(),
            sweep.runs.len()
        );
        if pending.is_empty() {
            println!("nothing to submit: every run has finished");
            return ExitCode::SUCCESS;
        }
        if args.submit {
            let code = submit(&script, args.wait);
            if !args.wait || code != ExitCode::SUCCESS {
                return code;
            }
            // The job has ended: its table, and which runs failed.
            let failed: Vec<_> = sweep
                .runs
                .iter()
                .filter(|r| run_state(&r.dir) != RunState::Done)
                .collect();
            for r in &failed {
                eprintln!(
                    "  not finished: {}  log: {}",
                    r.dir.display(),
                    r.log().display()
                );
            }
            return match write_table(&sweep) {
                Ok(md) => {
                    println!("{md}");
                    if failed.is_empty() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            };
        }
        return ExitCode::SUCCESS;
    }
    let mut failed = 0;
    if !args.aggregate_only {
        let gpus = visible_gpus(&args.gpus);
        let workers = args.workers.unwrap_or(gpus.len().max(1));
        if !gpus.is_empty() {
            eprintln!("{workers} worker(s) on GPU(s) {}", gpus.join(","));
        }
        match sweep.run_local(&train, workers, &gpus, backend) {
            Ok(summary) => {
                eprintln!(
                    "{} finished, {} already done, {} failed",
                    summary.finished,
                    summary.skipped,
                    summary.failed.len()
                );
                for (run, code) in &summary.failed {
                    eprintln!(
                        "  failed (exit {code:?}): {}  log: {}",
                        run.dir.display(),
                        run.log().display()
                    );
                }
                failed = summary.failed.len();
            }
            Err(e) => return report(&e),
        }
    }
    match write_table(&sweep) {
        Ok(md) => println!("{md}"),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// `sbatch [--wait] SCRIPT`. With `--wait`, sbatch's exit status is the job's: a failed task
/// is not a failed submission (the caller lists the unfinished runs).
fn submit(script: &Path, wait: bool) -> ExitCode {
    let mut cmd = std::process::Command::new("sbatch");
    if wait {
        cmd.arg("--wait");
    }
    match cmd.arg(script).output() {
        Ok(o) => {
            let out = String::from_utf8_lossy(&o.stdout);
            print!("{out}");
            if o.status.success() || (wait && out.contains("Submitted batch job")) {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "error: sbatch {} failed: {}",
                    script.display(),
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                ExitCode::from(2)
            }
        }
        Err(e) => {
            eprintln!(
                "error: cannot run sbatch ({e}); is SLURM installed on this machine? The script is at {}",
                script.display()
            );
            ExitCode::from(2)
        }
    }
}
