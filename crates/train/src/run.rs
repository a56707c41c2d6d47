//! The run folder: `resolved.toml`, `manifest.json`, `metrics.jsonl`, `checkpoints/`,
//! `results.md`, `results.json`. Default location `runs/<config name>/<hash8>/s<seed>/`.

use crate::checkpoint::write_atomic;
use crate::error::TrainError;
use oodforge_core::backend::SelectedBackend;
use oodforge_core::config::ResolvedConfig;
use oodforge_data::Normalizer;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const RESOLVED: &str = "resolved.toml";
pub const MANIFEST: &str = "manifest.json";
pub const METRICS: &str = "metrics.jsonl";
pub const CHECKPOINTS: &str = "checkpoints";
pub const RESULTS_JSON: &str = "results.json";
pub const RESULTS_MD: &str = "results.md";
pub const RESULTS_CSV: &str = "results.csv";
pub const RESULTS_TEX: &str = "results.tex";

/// `runs/<name>/<hash8>/s<seed>`.
pub fn default_dir(root: &Path, name: &str, hash8: &str, seed: u64) -> PathBuf {
    root.join(name).join(hash8).join(format!("s{seed}"))
}

/// Identity of one dataset the run used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetEntry {
    pub name: String,
    /// `train`, `test`, `ood/near`, `ood/far` or `outliers`.
    pub role: String,
    pub count: usize,
    pub sha256: String,
}

/// One start of the training process on this run (the first, then each resume).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub started_unix: u64,
    pub from_epoch: usize,
    pub backend: String,
    pub adapter: String,
    pub command: Vec<String>,
}

/// Provenance of every number of the run (DESIGN §5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub oodforge_version: String,
    pub burn_version: String,
    pub git_commit: Option<String>,
    pub config_name: String,
    pub config_source: String,
    pub config_hash: String,
    pub seed: u64,
    pub backend: String,
    pub adapter: String,
    /// Why `auto` chose the backend (empty for an explicit choice).
    pub backend_reason: String,
    pub datasets: Vec<DatasetEntry>,
    pub normalizer: Normalizer,
    pub parameters: usize,
    pub sessions: Vec<Session>,
    pub epochs_completed: usize,
    pub steps_completed: usize,
    /// Mean training throughput of the last session.
    pub train_images_per_s: Option<f64>,
    /// Peak resident memory of the process (Linux `VmHWM`), MiB.
    pub peak_rss_mib: Option<f64>,
    pub finished_unix: Option<u64>,
}

/// What a new run records about itself in its manifest (a resumed run keeps its own).
pub struct NewRun {
    pub datasets: Vec<DatasetEntry>,
    pub normalizer: Normalizer,
    pub parameters: usize,
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Self, TrainError> {
        read_json(&dir.join(MANIFEST))
    }

    /// The manifest of a training session, written to `dir`: a new one for a new run
    /// (`Some(NewRun)`), or the run's own with this session appended when it resumes.
    pub fn begin_session(
        dir: &Path,
        resolved: &ResolvedConfig,
        backend: &SelectedBackend,
        from_epoch: usize,
        command: &[String],
        new_run: Option<NewRun>,
    ) -> Result<Self, TrainError> {
        let session = Session {
            started_unix: now_unix(),
            from_epoch,
            backend: backend.name.into(),
            adapter: backend.adapter.clone(),
            command: command.to_vec(),
        };
        let cfg = &resolved.config;
        let manifest = match new_run {
            None => {
                let mut m = Manifest::read(dir)?;
                m.sessions.push(session);
                m
            }
            Some(NewRun {
                datasets,
                normalizer,
                parameters,
            }) => Manifest {
                oodforge_version: env!("CARGO_PKG_VERSION").into(),
                burn_version: "0.22.1".into(),
                git_commit: git_commit(),
                config_name: cfg.name.clone(),
                config_source: resolved.source.display().to_string(),
                config_hash: resolved.hash.clone(),
                seed: cfg.seed,
                backend: backend.name.into(),
                adapter: backend.adapter.clone(),
                backend_reason: backend.reason.clone(),
                datasets,
                normalizer,
                parameters,
                sessions: vec![session],
                epochs_completed: 0,
                steps_completed: 0,
                train_images_per_s: None,
                peak_rss_mib: None,
                finished_unix: None,
            },
        };
        manifest.write(dir)?;
        Ok(manifest)
    }

    /// Record the end of a session: its throughput (samples per second: images, or bags for
    /// MIL runs), the peak memory and, when every epoch is done, the finishing time.
    pub fn end_session(
        &mut self,
        dir: &Path,
        samples_seen: usize,
        seconds: f64,
        finished: bool,
    ) -> Result<(), TrainError> {
        if samples_seen > 0 {
            self.train_images_per_s = Some(samples_seen as f64 / seconds);
        }
        self.peak_rss_mib = peak_rss_mib();
        if finished {
            self.finished_unix = Some(now_unix());
        }
        self.write(dir)
    }

    pub fn write(&self, dir: &Path) -> Result<(), TrainError> {
        let json = serde_json::to_vec_pretty(self).expect("manifest serializes");
        write_atomic(&dir.join(MANIFEST), &json).map_err(TrainError::from)
    }
}

/// A JSON file of the run folder; a parse error names the line and column.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, TrainError> {
    let text = fs::read_to_string(path).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| TrainError::Corrupt {
        path: path.to_path_buf(),
        message: format!("line {} column {}: {e}", e.line(), e.column()),
    })
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The commit of the working directory's git checkout, if there is one.
pub fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Peak resident set size in MiB (Linux only).
pub fn peak_rss_mib() -> Option<f64> {
    Some(proc_status_kib("VmHWM")? as f64 / 1024.0)
}

/// A KiB field of `/proc/self/status` (`VmHWM`, `VmRSS`, ...); None where there is no procfs.
pub fn proc_status_kib(key: &str) -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status
        .lines()
        .find(|l| l.strip_prefix(key).is_some_and(|r| r.starts_with(':')))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Drop the lines of `metrics.jsonl` logged after step `step` (a run killed after its last
/// checkpoint logs those steps again when resumed), and a last line cut short by the kill.
/// Returns how many lines were dropped; the file is rewritten atomically only if any were.
pub fn trim_metrics(dir: &Path, step: usize) -> Result<usize, TrainError> {
    let path = dir.join(METRICS);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => return Err(TrainError::Io { path, source }),
    };
    let mut kept = String::with_capacity(text.len());
    let mut dropped = 0;
    for line in text.lines() {
        let keep = match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) => v
                .get("step")
                .and_then(serde_json::Value::as_u64)
                .is_none_or(|s| s as usize <= step),
            Err(_) => false,
        };
        if keep {
            kept.push_str(line);
            kept.push('\n');
        } else {
            dropped += 1;
        }
    }
    if dropped > 0 {
        write_atomic(&path, kept.as_bytes())?;
        tracing::info!(
            "{}: dropped {dropped} line(s) logged after the checkpoint's step {step}",
            path.display()
        );
    }
    Ok(dropped)
}

/// Appends JSON lines to `metrics.jsonl`, flushing each one so a crash loses nothing logged.
pub struct MetricsLog {
    file: fs::File,
    path: PathBuf,
}

impl MetricsLog {
    pub fn open(dir: &Path) -> Result<Self, TrainError> {
        let path = dir.join(METRICS);
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| TrainError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(Self { file, path })
    }

    pub fn write(&mut self, value: &serde_json::Value) -> Result<(), TrainError> {
        let mut line = serde_json::to_vec(value).expect("JSON value serializes");
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.flush())
            .map_err(|source| TrainError::Io {
                path: self.path.clone(),
                source,
            })
    }
}
