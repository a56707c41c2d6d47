//! Sweeps: a base config, a grid and/or random ranges over config keys, and seeds, expanded into
//! runs with stable folders (`<out>/<config name>-<hash8 of the overrides>/s<seed>`), run by
//! local workers (one GPU each with `--gpus`) or as a SLURM array job, then aggregated into one
//! table (mean ± std over the seeds of each point).
//!
//! ```toml
//! base = "../configs/cifar100_palm.toml"     # relative to this file
//! seeds = [0, 1, 2]
//! set = ["train.epochs=100"]                  # fixed overrides of every run
//! [grid]
//! "objective.momentum" = [0.9, 0.99, 0.999]
//! "objective.prototypes" = [1, 6]
//! [random]                                    # optional: `samples` draws per grid point
//! samples = 4
//! [random.params]
//! "optim.lr" = { log_uniform = [1e-3, 1e-1] }
//! [slurm]                                     # optional: `sweep --slurm` resources
//! partition = "gpu"
//! time = "24:00:00"
//! ```
//!
//! Every point's config is resolved and validated when the sweep is loaded, so a typo in a key
//! fails before anything runs.

use oodforge_core::config::{self, ConfigError, hex};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Spec { path: PathBuf, message: String },
    #[error("{path}: point {point} does not resolve")]
    Config {
        path: PathBuf,
        point: String,
        source: Box<ConfigError>,
    },
    #[error(
        "task {index} is out of range: the sweep has {count} runs (indices 0..{count}); was the sweep file edited after the array job was written?"
    )]
    Task { index: usize, count: usize },
    #[error("{0}")]
    Launch(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SweepError + '_ {
    move |source| SweepError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepFile {
    base: String,
    name: Option<String>,
    #[serde(default = "default_seeds")]
    seeds: Vec<u64>,
    out: Option<String>,
    #[serde(default)]
    set: Vec<String>,
    #[serde(default)]
    grid: BTreeMap<String, Vec<toml::Value>>,
    random: Option<RandomSpec>,
    #[serde(default)]
    slurm: SlurmSpec,
}

fn default_seeds() -> Vec<u64> {
    vec![0]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RandomSpec {
    samples: usize,
    #[serde(default)]
    seed: u64,
    params: BTreeMap<String, Distribution>,
}

/// A random range: `{ uniform = [lo, hi] }`, `{ log_uniform = [lo, hi] }`, `{ int = [lo, hi] }`
/// (inclusive) or `{ choice = [values] }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Distribution {
    Uniform([f64; 2]),
    LogUniform([f64; 2]),
    Int([i64; 2]),
    Choice(Vec<toml::Value>),
}

/// `[slurm]`: the resources of each array task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmSpec {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// Wall-clock limit per run, `HH:MM:SS` or `D-HH:MM:SS`.
    #[serde(default = "default_time")]
    pub time: String,
    /// GPUs per run (`--gres=gpu:N`); 0 for CPU runs.
    #[serde(default = "one")]
    pub gpus: u32,
    #[serde(default = "default_cpus")]
    pub cpus: u32,
    /// Memory per run, e.g. `"32G"`.
    pub mem: Option<String>,
    /// At most this many runs at once (`--array=...%N`).
    pub max_parallel: Option<usize>,
    /// Shell lines run before each task (`module load ...`, activating an environment).
    #[serde(default)]
    pub setup: Vec<String>,
    /// Extra `#SBATCH` options, e.g. `"--constraint=a100"`.
    #[serde(default)]
    pub sbatch: Vec<String>,
}

fn default_time() -> String {
    "24:00:00".into()
}
fn one() -> u32 {
    1
}
fn default_cpus() -> u32 {
    8
}

/// One run of a sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepRun {
    /// `<config name>-<hash8 of the overrides>`: the same for every seed of a point.
    pub point: String,
    /// The point's overrides (`key=value`, TOML values), without the seed.
    pub overrides: Vec<String>,
    pub seed: u64,
    pub dir: PathBuf,
}

impl SweepRun {
    /// Every override given to `train`, the seed last.
    pub fn all_overrides(&self) -> Vec<String> {
        let mut o = self.overrides.clone();
        o.push(format!("seed={}", self.seed));
        o
    }

    pub fn log(&self) -> PathBuf {
        self.dir.with_extension("log")
    }
}

/// Where a run stands on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// `results.json` is written.
    Done,
    /// Checkpoints exist: `train --resume` continues it.
    Resumable,
    /// The folder exists without a checkpoint (a run that failed at its start).
    Stale,
    Fresh,
}

pub fn run_state(dir: &Path) -> RunState {
    if dir.join("results.json").is_file() {
        return RunState::Done;
    }
    let has_checkpoint = std::fs::read_dir(dir.join("checkpoints"))
        .map(|mut d| {
            d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("epoch-")))
        })
        .unwrap_or(false);
    if has_checkpoint {
        RunState::Resumable
    } else if dir.exists() {
        RunState::Stale
    } else {
        RunState::Fresh
    }
}

/// A loaded, validated sweep.
#[derive(Debug, Clone)]
pub struct Sweep {
    pub file: PathBuf,
    pub name: String,
    pub base: PathBuf,
    pub out: PathBuf,
    pub runs: Vec<SweepRun>,
    pub slurm: SlurmSpec,
}

/// A TOML value as an override's right-hand side.
fn toml_text(v: &toml::Value) -> String {
    match v {
        toml::Value::Float(f) if f.fract() == 0.0 && f.is_finite() => format!("{f:.1}"),
        toml::Value::Float(f) => format!("{f:?}"),
        other => other.to_string(),
    }
}

impl Sweep {
    /// Read and expand a sweep file; every point's config is resolved (typos fail here).
    pub fn load(file: &Path) -> Result<Self, SweepError> {
        let text = std::fs::read_to_string(file).map_err(io(file))?;
        let spec: SweepFile = toml::from_str(&text).map_err(|e| SweepError::Spec {
            path: file.to_path_buf(),
            message: e.to_string(),
        })?;
        let bad = |message: String| SweepError::Spec {
            path: file.to_path_buf(),
            message,
        };
        if spec.seeds.is_empty() {
            return Err(bad("`seeds` is empty, expected at least one seed".into()));
        }
        for (key, values) in &spec.grid {
            if values.is_empty() {
                return Err(bad(format!("grid key `{key}` has no values")));
            }
            if key == "seed" {
                return Err(bad(
                    "`seed` belongs in `seeds = [...]`, not in the grid".into()
                ));
            }
        }
        let dir = file.parent().unwrap_or(Path::new("."));
        let base = dir.join(&spec.base);
        let base_cfg = config::load(&base, &spec.set).map_err(|e| SweepError::Config {
            path: file.to_path_buf(),
            point: "base".into(),
            source: Box::new(e),
        })?;
        let name = spec
            .name
            .clone()
            .unwrap_or_else(|| base_cfg.config.name.clone());
        let out = spec
            .out
            .as_ref()
            .map_or_else(|| PathBuf::from("runs/sweeps").join(&name), PathBuf::from);

        // The grid's product (keys in sorted order; the last key varies fastest).
        let mut points: Vec<Vec<String>> = vec![Vec::new()];
        for (key, values) in &spec.grid {
            points = points
                .into_iter()
                .flat_map(|p| {
                    values.iter().map(move |v| {
                        let mut p = p.clone();
                        p.push(format!("{key}={}", toml_text(v)));
                        p
                    })
                })
                .collect();
        }
        if let Some(random) = &spec.random {
            if random.samples == 0 {
                return Err(bad("random.samples is 0, expected >= 1".into()));
            }
            let mut rng = ChaCha8Rng::seed_from_u64(random.seed);
            let mut with_draws = Vec::new();
            for p in &points {
                for _ in 0..random.samples {
                    let mut q = p.clone();
                    for (key, d) in &random.params {
                        let v = match d {
                            Distribution::Uniform([lo, hi]) if lo <= hi => {
                                format!("{:?}", rng.random_range(*lo..=*hi))
                            }
                            Distribution::LogUniform([lo, hi]) if 0.0 < *lo && lo <= hi => {
                                format!("{:?}", rng.random_range(lo.ln()..=hi.ln()).exp())
                            }
                            Distribution::Int([lo, hi]) if lo <= hi => {
                                rng.random_range(*lo..=*hi).to_string()
                            }
                            Distribution::Choice(c) if !c.is_empty() => {
                                toml_text(&c[rng.random_range(0..c.len())])
                            }
                            _ => {
                                return Err(bad(format!(
                                    "random.params.\"{key}\": an empty range or choice (log_uniform needs 0 < lo)"
                                )));
                            }
                        };
                        q.push(format!("{key}={v}"));
                    }
                    with_draws.push(q);
                }
            }
            points = with_draws;
        }

        let mut runs = Vec::new();
        for overrides in points {
            let mut all = spec.set.clone();
            all.extend(overrides.iter().cloned());
            let digest = Sha256::digest(all.join("\n").as_bytes());
            let point = format!("{name}-{}", &hex(&digest)[..8]);
            // Resolve once per point: unknown keys and bad values fail before anything runs.
            config::load(&base, &all).map_err(|e| SweepError::Config {
                path: file.to_path_buf(),
                point: format!("{point} ({})", overrides.join(", ")),
                source: Box::new(e),
            })?;
            for &seed in &spec.seeds {
                runs.push(SweepRun {
                    point: point.clone(),
                    overrides: all.clone(),
                    seed,
                    dir: out.join(&point).join(format!("s{seed}")),
                });
            }
        }
        Ok(Self {
            file: file.to_path_buf(),
            name,
            base,
            out,
            runs,
            slurm: spec.slurm,
        })
    }

    /// The `train` command of a run, given where it stands. A stale folder (no checkpoint, no
    /// results: the run died at its start) is moved aside to `<dir>.stale-<n>` and started anew.
    pub fn command(
        &self,
        run: &SweepRun,
        train: &Path,
        backend: Option<&str>,
    ) -> Result<Option<Command>, SweepError> {
        let mut cmd = Command::new(train);
        match run_state(&run.dir) {
            RunState::Done => return Ok(None),
            RunState::Resumable => {
                cmd.arg("--resume").arg(&run.dir);
            }
            RunState::Stale | RunState::Fresh => {
                if run.dir.exists() {
                    let aside = (0..)
                        .map(|n| run.dir.with_extension(format!("stale-{n}")))
                        .find(|p| !p.exists())
                        .expect("an unused name");
                    std::fs::rename(&run.dir, &aside).map_err(io(&run.dir))?;
                }
                cmd.arg("--config").arg(&self.base);
                for o in run.all_overrides() {
                    cmd.arg("--set").arg(o);
                }
                cmd.arg("--out").arg(&run.dir);
            }
        }
        cmd.arg("--no-progress");
        if let Some(b) = backend {
            cmd.arg("--backend").arg(b);
        }
        Ok(Some(cmd))
    }

    /// Run one run to its end (`sweep --task K`, what each SLURM array task does). Output goes
    /// to the run's log file.
    pub fn run_task(
        &self,
        index: usize,
        train: &Path,
        backend: Option<&str>,
    ) -> Result<Outcome, SweepError> {
        let run = self.runs.get(index).ok_or(SweepError::Task {
            index,
            count: self.runs.len(),
        })?;
        run_one(self, run, train, backend, None)
    }

    /// Run every unfinished run with `workers` parallel processes; worker `i` sees GPU
    /// `gpus[i % len]` only (`CUDA_VISIBLE_DEVICES`). A failure does not stop the others.
    pub fn run_local(
        &self,
        train: &Path,
        workers: usize,
        gpus: &[String],
        backend: Option<&str>,
    ) -> Result<Summary, SweepError> {
        let queue: Mutex<VecDeque<&SweepRun>> = Mutex::new(self.runs.iter().collect());
        let results: Mutex<Vec<(SweepRun, Outcome)>> = Mutex::new(Vec::new());
        let errors: Mutex<Vec<SweepError>> = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for w in 0..workers.max(1) {
                let (queue, results, errors) = (&queue, &results, &errors);
                let gpu = (!gpus.is_empty()).then(|| gpus[w % gpus.len()].clone());
                s.spawn(move || {
                    loop {
                        let Some(run) = queue.lock().expect("queue").pop_front() else {
                            break;
                        };
                        match run_one(self, run, train, backend, gpu.as_deref()) {
                            Ok(o) => results.lock().expect("results").push((run.clone(), o)),
                            Err(e) => errors.lock().expect("errors").push(e),
                        }
                    }
                });
            }
        });
        if let Some(e) = errors.into_inner().expect("errors").into_iter().next() {
            return Err(e);
        }
        let mut summary = Summary::default();
        for (run, o) in results.into_inner().expect("results") {
            match o {
                Outcome::AlreadyDone => summary.skipped += 1,
                Outcome::Finished => summary.finished += 1,
                Outcome::Failed(code) => summary.failed.push((run, code)),
            }
        }
        summary.failed.sort_by(|a, b| a.0.dir.cmp(&b.0.dir));
        Ok(summary)
    }
}

/// How one run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    AlreadyDone,
    Finished,
    /// `train` exited with this status (None: killed by a signal).
    Failed(Option<i32>),
}

#[derive(Debug, Default)]
pub struct Summary {
    pub skipped: usize,
    pub finished: usize,
    pub failed: Vec<(SweepRun, Option<i32>)>,
}

fn run_one(
    sweep: &Sweep,
    run: &SweepRun,
    train: &Path,
    backend: Option<&str>,
    gpu: Option<&str>,
) -> Result<Outcome, SweepError> {
    let Some(mut cmd) = sweep.command(run, train, backend)? else {
        return Ok(Outcome::AlreadyDone);
    };
    let parent = run.dir.parent().expect("runs live in a point folder");
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let log_path = run.log();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io(&log_path))?;
    let err = log.try_clone().map_err(io(&log_path))?;
    if let Some(g) = gpu {
        cmd.env("CUDA_VISIBLE_DEVICES", g);
    }
    tracing::info!(run = %run.dir.display(), gpu = gpu.unwrap_or("-"), "starting");
    let status = cmd
        .stdout(log)
        .stderr(err)
        .status()
        .map_err(|e| {
            SweepError::Launch(format!(
                "cannot start `{}` ({e}); build it beside `sweep` with `cargo build --release -p oodforge-cli --bins`, or pass --train-bin",
                train.display()
            ))
        })?;
    if status.success() {
        tracing::info!(run = %run.dir.display(), "finished");
        Ok(Outcome::Finished)
    } else {
        tracing::warn!(run = %run.dir.display(), log = %log_path.display(), "failed");
        Ok(Outcome::Failed(status.code()))
    }
}

/// `'...'` for a POSIX shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `0-3,5,7-9`: SLURM's `--array` list of indices.
pub fn array_ranges(indices: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < indices.len() {
        let start = indices[i];
        let mut end = start;
        while i + 1 < indices.len() && indices[i + 1] == end + 1 {
            i += 1;
            end = indices[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// One point of the sweep, its seeds aggregated.
#[derive(Debug, Clone, Serialize)]
pub struct PointResult {
    pub point: String,
    pub overrides: Vec<String>,
    pub seeds: Vec<u64>,
    /// Seeds whose run has no (OOD) `results.json` yet.
    pub missing: Vec<u64>,
    pub aggregate: Option<oodforge_eval::aggregate::Aggregate>,
}

impl Sweep {
    /// Indices (into `runs`) of the runs without results.
    pub fn pending(&self) -> Vec<usize> {
        (0..self.runs.len())
            .filter(|&i| run_state(&self.runs[i].dir) != RunState::Done)
            .collect()
    }

    /// The SLURM array job of the pending runs: task `K` runs `sweep FILE --task K`, which
    /// starts or resumes run `K` (the same code as a local sweep, so a requeued task resumes).
    pub fn slurm_script(
        &self,
        pending: &[usize],
        sweep_bin: &Path,
        train_bin: &Path,
        backend: Option<&str>,
        workdir: &Path,
    ) -> String {
        let s = &self.slurm;
        let out = absolute(&self.out);
        let mut lines = vec![
            "#!/bin/bash".to_owned(),
            format!(
                "# Written by `sweep --slurm` from {}: {} of {} runs of `{}` are pending.",
                absolute(&self.file).display(),
                pending.len(),
                self.runs.len(),
                self.name
            ),
            format!(
                "# After the job: `sweep {}` skips the finished runs and writes the table.",
                self.file.display()
            ),
            format!("#SBATCH --job-name={}", self.name),
            format!(
                "#SBATCH --array={}{}",
                array_ranges(pending),
                s.max_parallel.map_or(String::new(), |m| format!("%{m}"))
            ),
            format!("#SBATCH --output={}/slurm/%A_%a.out", out.display()),
            format!("#SBATCH --time={}", s.time),
            "#SBATCH --ntasks=1".to_owned(),
            format!("#SBATCH --cpus-per-task={}", s.cpus),
        ];
        if s.gpus > 0 {
            lines.push(format!("#SBATCH --gres=gpu:{}", s.gpus));
        }
        for (key, v) in [
            ("mem", &s.mem),
            ("partition", &s.partition),
            ("account", &s.account),
            ("qos", &s.qos),
        ] {
            if let Some(v) = v {
                lines.push(format!("#SBATCH --{key}={v}"));
            }
        }
        for extra in &s.sbatch {
            lines.push(format!("#SBATCH {extra}"));
        }
        lines.push("set -euo pipefail".into());
        lines.push(format!("cd {}", quote(&workdir.display().to_string())));
        lines.extend(s.setup.iter().cloned());
        let mut exec = format!(
            "exec {} {} --task \"$SLURM_ARRAY_TASK_ID\" --train-bin {}",
            quote(&absolute(sweep_bin).display().to_string()),
            quote(&absolute(&self.file).display().to_string()),
            quote(&absolute(train_bin).display().to_string()),
        );
        if let Some(b) = backend {
            exec.push_str(&format!(" --backend {}", quote(b)));
        }
        lines.push(exec);
        lines.join("\n") + "\n"
    }

    /// Write `<out>/slurm/sweep.sbatch` (and `runs.txt`: one line per task, index and folder).
    pub fn write_slurm(
        &self,
        sweep_bin: &Path,
        train_bin: &Path,
        backend: Option<&str>,
    ) -> Result<(PathBuf, Vec<usize>), SweepError> {
        let pending = self.pending();
        let dir = self.out.join("slurm");
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let workdir = std::env::current_dir().map_err(io(Path::new(".")))?;
        let script = dir.join("sweep.sbatch");
        std::fs::write(
            &script,
            self.slurm_script(&pending, sweep_bin, train_bin, backend, &workdir),
        )
        .map_err(io(&script))?;
        let list: String = pending
            .iter()
            .map(|&i| {
                format!(
                    "{i}\t{}\t{}\n",
                    self.runs[i].dir.display(),
                    self.runs[i].all_overrides().join(" ")
                )
            })
            .collect();
        let runs = dir.join("runs.txt");
        std::fs::write(&runs, list).map_err(io(&runs))?;
        Ok((script, pending))
    }

    /// Mean ± std over the seeds of every point with results.
    pub fn aggregate(&self) -> Result<Vec<PointResult>, SweepError> {
        let mut points: Vec<PointResult> = Vec::new();
        for run in &self.runs {
            if points.last().is_none_or(|p| p.point != run.point) {
                points.push(PointResult {
                    point: run.point.clone(),
                    overrides: run.overrides.clone(),
                    seeds: Vec::new(),
                    missing: Vec::new(),
                    aggregate: None,
                });
            }
            points.last_mut().expect("pushed").seeds.push(run.seed);
        }
        for p in &mut points {
            let mut found = Vec::new();
            for &seed in &p.seeds {
                let path = self
                    .out
                    .join(&p.point)
                    .join(format!("s{seed}/results.json"));
                let results = std::fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<oodforge_eval::Results>(&b).ok());
                match results {
                    Some(r) => found.push((path.display().to_string(), r)),
                    None => p.missing.push(seed),
                }
            }
            if !found.is_empty() {
                p.aggregate = Some(oodforge_eval::aggregate::Aggregate::of(&found).map_err(
                    |e| SweepError::Spec {
                        path: self.out.join(&p.point),
                        message: e.to_string(),
                    },
                )?);
            }
        }
        Ok(points)
    }
}

/// The sweep's table: a row per point, ID accuracy and each post-processor's near / far AUROC
/// (percent, mean ± std over the seeds that finished).
pub fn sweep_markdown(name: &str, points: &[PointResult]) -> String {
    let pps: Vec<String> = points
        .iter()
        .find_map(|p| p.aggregate.as_ref())
        .map(|a| a.postprocessors.keys().cloned().collect())
        .unwrap_or_default();
    let pm = |m: &oodforge_eval::aggregate::MeanStd| {
        format!("{:.2} ± {:.2}", 100.0 * m.mean, 100.0 * m.std)
    };
    let mut s = format!("# Sweep {name}\n\n| point | overrides | seeds | ID acc |");
    for pp in &pps {
        s.push_str(&format!(" {pp} near AUROC | {pp} far AUROC |"));
    }
    s.push_str("\n|---|---|---|---:|");
    for _ in &pps {
        s.push_str("---:|---:|");
    }
    s.push('\n');
    for p in points {
        let done = p.seeds.len() - p.missing.len();
        s.push_str(&format!(
            "| {} | {} | {done}/{} |",
            p.point,
            p.overrides.join(", "),
            p.seeds.len()
        ));
        match &p.aggregate {
            None => {
                s.push_str(" — |");
                for _ in &pps {
                    s.push_str(" — | — |");
                }
            }
            Some(a) => {
                s.push_str(&format!(" {} |", pm(&a.id_accuracy)));
                for pp in &pps {
                    let r = a.postprocessors.get(pp);
                    for g in [r.and_then(|r| r.near), r.and_then(|r| r.far)] {
                        s.push_str(
                            &g.map_or(" — |".to_owned(), |g| format!(" {} |", pm(&g.auroc))),
                        );
                    }
                }
            }
        }
        s.push('\n');
    }
    s
}

/// The same as CSV (percent; mean and std columns).
pub fn sweep_csv(points: &[PointResult]) -> String {
    let mut s = String::from(
        "point,overrides,seeds_done,seeds,postprocessor,group,auroc_mean,auroc_std,fpr95_mean,fpr95_std,id_accuracy_mean,id_accuracy_std\n",
    );
    for p in points {
        let Some(a) = &p.aggregate else {
            continue;
        };
        for (pp, r) in &a.postprocessors {
            for (g, m) in [("near", r.near), ("far", r.far)] {
                let Some(m) = m else { continue };
                s.push_str(&format!(
                    "{},\"{}\",{},{},{pp},{g},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4}\n",
                    p.point,
                    p.overrides.join(" ").replace('"', "\"\""),
                    p.seeds.len() - p.missing.len(),
                    p.seeds.len(),
                    100.0 * m.auroc.mean,
                    100.0 * m.auroc.std,
                    100.0 * m.fpr95.mean,
                    100.0 * m.fpr95.std,
                    100.0 * a.id_accuracy.mean,
                    100.0 * a.id_accuracy.std,
                ));
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_ranges_compress_runs_of_indices() {
        assert_eq!(array_ranges(&[0, 1, 2, 3, 5, 7, 8, 9]), "0-3,5,7-9");
        assert_eq!(array_ranges(&[4]), "4");
        assert_eq!(array_ranges(&[]), "");
    }

    #[test]
    fn override_values_are_toml() {
        assert_eq!(toml_text(&toml::Value::Float(1.0)), "1.0");
        assert_eq!(toml_text(&toml::Value::Float(0.05)), "0.05");
        assert_eq!(toml_text(&toml::Value::Integer(6)), "6");
        assert_eq!(toml_text(&toml::Value::String("adamw".into())), "\"adamw\"");
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    const BASE: &str = "name = \"b\"\n[data.source]\nkind = \"synthetic\"\n[model]\nbackbone = \"resnet10\"\n[train]\nepochs = 1\n";

    #[test]
    fn grid_times_random_draws_times_seeds_with_stable_names() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "base.toml", BASE);
        let file = write(
            dir.path(),
            "s.toml",
            r#"
base = "base.toml"
seeds = [3, 4]
out = "o"
[grid]
"optim.momentum" = [0.9, 0.99]
[random]
samples = 3
seed = 7
[random.params]
"optim.lr" = { log_uniform = [0.001, 0.1] }
"optim.weight_decay" = { choice = [0.0, 0.0005] }
"#,
        );
        let s = Sweep::load(&file).unwrap();
        assert_eq!(s.runs.len(), 2 * 3 * 2);
        assert_eq!(s.name, "b");
        // Seeds share a point; points differ.
        assert_eq!(s.runs[0].point, s.runs[1].point);
        assert_eq!((s.runs[0].seed, s.runs[1].seed), (3, 4));
        let points: std::collections::BTreeSet<_> = s.runs.iter().map(|r| &r.point).collect();
        assert_eq!(points.len(), 6);
        for r in &s.runs {
            let lr: f64 = r
                .overrides
                .iter()
                .find_map(|o| o.strip_prefix("optim.lr="))
                .unwrap()
                .parse()
                .unwrap();
            assert!((0.001..=0.1).contains(&lr), "{lr}");
            assert_eq!(
                r.dir,
                Path::new("o").join(&r.point).join(format!("s{}", r.seed))
            );
        }
        // The same file expands to the same runs (names are stable across calls).
        assert_eq!(Sweep::load(&file).unwrap().runs, s.runs);
    }

    #[test]
    fn bad_sweep_files_name_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "base.toml", BASE);
        let err = |body: &str| {
            let f = write(
                dir.path(),
                "bad.toml",
                &format!("base = \"base.toml\"\n{body}"),
            );
            Sweep::load(&f).unwrap_err().to_string()
        };
        assert!(err("seeds = []").contains("`seeds` is empty"));
        assert!(err("[grid]\nseed = [1]").contains("`seeds = [...]`"));
        assert!(err("[grid]\n\"optim.lr\" = []").contains("optim.lr"));
        assert!(err("workers = 3").contains("unknown field `workers`"));
        let e = err(
            "[random]\nsamples = 1\n[random.params]\n\"optim.lr\" = { log_uniform = [0.0, 1.0] }",
        );
        assert!(e.contains("log_uniform needs 0 < lo"), "{e}");
        let e = err("[grid]\n\"optim.lr\" = [\"fast\"]");
        assert!(
            e.contains("optim.lr") && e.contains("does not resolve"),
            "{e}"
        );
    }
}
