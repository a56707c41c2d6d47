//! Checkpoints: `checkpoints/epoch-NNNN/{model.bpk, optim.bpk, config.toml, state.json}`, plus
//! `objective.bin` for objectives with state (PALM's prototypes, NP-Mix's queues). A run
//! stopped mid-epoch (SIGINT/SIGTERM) writes `epoch-NNNN-step-SSSSSSSS`: NNNN epochs done and
//! SSSSSSSS steps; its state carries the position in the epoch and the epoch's running sums.
//!
//! A checkpoint is written into a hidden temporary folder, every file flushed to disk, and the
//! folder then renamed into place, so a crash mid-write leaves the previous checkpoint intact
//! and never a half-written one under a real name. The random state needs no bytes of its own:
//! every stream is keyed by (seed, epoch, step) (`oodforge_core::rng`), so `state.json`'s seed
//! and position are the RNG state.
//!
//! `state.json` records the SHA-256 of every other file of the checkpoint. [`latest`] returns
//! the newest checkpoint whose files are all there and match; a damaged one (a disk error, a
//! copy cut short) is reported and the one before it used.

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::ModuleRecord;
use oodforge_data::Normalizer;
use oodforge_losses::ObjectiveState;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The objective's state file in a checkpoint folder.
pub const OBJECTIVE: &str = "objective.bin";

/// Bumped when the layout changes; a checkpoint of another format is refused with a message.
pub const FORMAT: u32 = 1;

/// Everything of a checkpoint that is not a tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainState {
    pub format: u32,
    /// Epochs completed.
    pub epoch: usize,
    /// Optimiser steps completed (the schedule position).
    pub step: usize,
    pub seed: u64,
    /// Hash of the resolved config the run was started with.
    pub config_hash: String,
    pub normalizer: Normalizer,
    /// SHA-256 (hex) of each other file of the checkpoint, by file name. Empty in checkpoints
    /// written before checksums existed; those are not verified.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sha256: BTreeMap<String, String>,
    /// Set when the checkpoint was written inside an epoch (a stop request): how far into
    /// epoch `epoch + 1` the run got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<PartialEpoch>,
}

/// The position inside an epoch and the sums its log line is made of, so a run resumed
/// mid-epoch logs the epoch an uninterrupted run would.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialEpoch {
    /// Batches (steps) of the epoch already trained.
    pub batches: usize,
    /// Sum over those batches of loss x batch size.
    pub loss_sum: f64,
    /// Correct predictions so far.
    pub correct: usize,
    /// Samples so far.
    pub seen: usize,
    /// Seconds spent on the epoch so far (its images/s figure).
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot read checkpoint tensors: {message}")]
    Record { path: PathBuf, message: String },
    #[error("{path}: invalid checkpoint state: {message}")]
    State { path: PathBuf, message: String },
    /// `model.weights` names a folder that cannot be loaded as one of our runs.
    #[error("{path}: {message}")]
    Weights { path: PathBuf, message: String },
    /// A checkpoint whose files are missing or do not match the checksums in its state.json.
    #[error("{path}: damaged checkpoint: {message}")]
    Damaged { path: PathBuf, message: String },
    #[error("{dir}: no checkpoint found (expected folders named epoch-NNNN)")]
    NoCheckpoint { dir: PathBuf },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `bytes` to `path` and flush them to the disk.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let mut f = fs::File::create(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// Write a file atomically: a temporary sibling, flushed, then renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    write_synced(&tmp, bytes)?;
    fs::rename(&tmp, path).map_err(io(path))
}

/// The folder name of the checkpoint after `epoch` complete epochs.
pub fn checkpoint_name(epoch: usize) -> String {
    format!("epoch-{epoch:04}")
}

/// The folder name of a state's checkpoint: [`checkpoint_name`], or with `-step-SSSSSSSS` for a
/// checkpoint written inside an epoch.
pub fn state_checkpoint_name(state: &TrainState) -> String {
    match state.partial {
        None => checkpoint_name(state.epoch),
        Some(_) => format!("epoch-{:04}-step-{:08}", state.epoch, state.step),
    }
}

/// Where a checkpoint stands, for ordering: (epochs done, steps done for one written inside the
/// next epoch, else 0).
type Position = (usize, usize);

/// The [`Position`] of a checkpoint folder name.
fn parse_name(name: &str) -> Option<Position> {
    let rest = name.strip_prefix("epoch-")?;
    match rest.split_once("-step-") {
        None => Some((rest.parse().ok()?, 0)),
        Some((e, s)) => Some((e.parse().ok()?, s.parse().ok()?)),
    }
}

/// The resolved config a checkpoint was written under (so a refused resume can list what
/// changed).
pub const CONFIG: &str = "config.toml";

/// Save a checkpoint for `state` under `dir`; returns its folder. `config` is the resolved
/// config text of the run. Checkpoints written inside an epoch before this one are removed
/// once it is in place: they only ever serve to resume, and this one supersedes them.
pub fn save<M: Module>(
    dir: &Path,
    model: &M,
    optim: &ModuleOptimizer,
    state: &TrainState,
    objective: Option<&ObjectiveState>,
    config: &str,
) -> Result<PathBuf, CheckpointError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let name = state_checkpoint_name(state);
    let tmp = dir.join(format!(".{name}.tmp"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    fs::create_dir(&tmp).map_err(io(&tmp))?;
    let written = write_files(&tmp, model, optim, state, objective, config);
    if written.is_err() {
        // A full disk: give back the space of the half-written folder (best effort; `save`
        // also clears a leftover one next time).
        let _ = fs::remove_dir_all(&tmp);
    }
    written?;
    put_in_place(dir, &tmp, &name)
}

/// Write every file of a checkpoint into the temporary folder `tmp`, `state.json` last.
fn write_files<M: Module>(
    tmp: &Path,
    model: &M,
    optim: &ModuleOptimizer,
    state: &TrainState,
    objective: Option<&ObjectiveState>,
    config: &str,
) -> Result<(), CheckpointError> {
    let record = |path: &Path, e: burn::store::RecordError| CheckpointError::Record {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut sha256 = BTreeMap::new();
    let mut write = |name: &str, bytes: &[u8]| {
        sha256.insert(name.to_owned(), hex_sha256(bytes));
        write_synced(&tmp.join(name), bytes)
    };
    let model_path = tmp.join("model.bpk");
    // `valid()` first: it folds the pending BatchNorm running statistics (burn's `RunningState`
    // keeps each update aside until synced) into the values a record reads. Recording the
    // training module directly saves statistics one update behind.
    let bytes = model
        .valid()
        .into_record()
        .into_bytes()
        .map_err(|e| record(&model_path, e))?;
    write("model.bpk", &bytes)?;
    let optim_path = tmp.join("optim.bpk");
    let bytes = optim.into_bytes().map_err(|e| record(&optim_path, e))?;
    write("optim.bpk", &bytes)?;
    if let Some(o) = objective {
        write(OBJECTIVE, &o.to_bytes())?;
    }
    write(CONFIG, config.as_bytes())?;
    // state.json last: it carries the checksums of the files above.
    let state = TrainState {
        sha256,
        ..state.clone()
    };
    let json = serde_json::to_vec_pretty(&state).expect("TrainState serializes");
    write_synced(&tmp.join("state.json"), &json)
}

/// Rename the written folder `tmp` to `dir/name` (replacing one of that name), make the rename
/// durable, and remove the mid-epoch checkpoints it supersedes.
fn put_in_place(dir: &Path, tmp: &Path, name: &str) -> Result<PathBuf, CheckpointError> {
    let target = dir.join(name);
    let old = dir.join(format!(".{name}.old"));
    if target.exists() {
        fs::rename(&target, &old).map_err(io(&target))?;
    }
    fs::rename(tmp, &target).map_err(io(&target))?;
    if old.exists() {
        fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    // Make the rename itself durable.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    let position = parse_name(name).expect("a checkpoint name");
    for (p, path) in listed(dir)? {
        let partial = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains("-step-"));
        if partial && p < position {
            fs::remove_dir_all(&path).map_err(io(&path))?;
        }
    }
    Ok(target)
}

/// The checkpoint folders under `dir` (names `epoch-NNNN[-step-SSSSSSSS]`) with their position
/// ([`parse_name`]), in no particular order.
fn listed(dir: &Path) -> Result<Vec<(Position, PathBuf)>, CheckpointError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        if let Some(p) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_name)
        {
            found.push((p, path));
        }
    }
    Ok(found)
}

fn hex_sha256(bytes: &[u8]) -> String {
    oodforge_core::config::hex(&Sha256::digest(bytes))
}

/// Check that a checkpoint's state parses and that every file it lists is there with the
/// recorded SHA-256.
pub fn verify(ckpt: &Path) -> Result<(), CheckpointError> {
    let state = load_state(ckpt)?;
    for (name, want) in &state.sha256 {
        let path = ckpt.join(name);
        let bytes = fs::read(&path).map_err(|e| CheckpointError::Damaged {
            path: ckpt.to_owned(),
            message: format!("{name}: {e}"),
        })?;
        let got = hex_sha256(&bytes);
        if &got != want {
            return Err(CheckpointError::Damaged {
                path: ckpt.to_owned(),
                message: format!(
                    "{name}: SHA-256 {got} does not match {want} recorded in state.json"
                ),
            });
        }
    }
    Ok(())
}

/// The newest intact checkpoint under `dir`, if any: the highest epoch whose files verify
/// ([`verify`]). Damaged ones are skipped with a warning that names them and the checkpoint
/// used instead; folders without a `state.json` (never finished) are not checkpoints.
pub fn latest(dir: &Path) -> Result<Option<PathBuf>, CheckpointError> {
    if !dir.exists() {
        return Ok(None);
    }
    let mut found = listed(dir)?;
    // A folder without a state.json never finished (`save` writes it last).
    found.retain(|(_, path)| path.join("state.json").is_file());
    found.sort();
    let mut damaged = Vec::new();
    while let Some((_, path)) = found.pop() {
        match verify(&path) {
            Ok(()) => {
                for e in &damaged {
                    tracing::warn!("{e}; using {} instead", path.display());
                }
                return Ok(Some(path));
            }
            Err(e @ (CheckpointError::Damaged { .. } | CheckpointError::State { .. })) => {
                damaged.push(e)
            }
            Err(e) => return Err(e),
        }
    }
    // Every checkpoint is damaged: say so rather than start over silently.
    match damaged.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(None),
    }
}

pub fn load_state(ckpt: &Path) -> Result<TrainState, CheckpointError> {
    let path = ckpt.join("state.json");
    let text = fs::read_to_string(&path).map_err(io(&path))?;
    let state: TrainState = serde_json::from_str(&text).map_err(|e| CheckpointError::State {
        path: path.clone(),
        message: format!("line {} column {}: {e}", e.line(), e.column()),
    })?;
    if state.format != FORMAT {
        return Err(CheckpointError::State {
            path,
            message: format!(
                "checkpoint format {} is not supported by this build (expected {FORMAT})",
                state.format
            ),
        });
    }
    Ok(state)
}

/// Load the model tensors of a checkpoint into `model` (whose shapes come from the config).
pub fn load_model<M: Module>(ckpt: &Path, model: M) -> Result<M, CheckpointError> {
    let path = ckpt.join("model.bpk");
    let record = ModuleRecord::load(&path).map_err(|e| CheckpointError::Record {
        path: path.clone(),
        message: e.to_string(),
    })?;
    model
        .try_load_record(record)
        .map_err(|e| CheckpointError::Record {
            message: misfit(ckpt, &e.to_string()),
            path,
        })
}

/// A checkpoint that does not fit the model: burn lists every tensor, which for another width
/// is all of them; keep three, and say which [model] the checkpoint was written for.
fn misfit(ckpt: &Path, full: &str) -> String {
    let items: Vec<&str> = full
        .split_once("[\"")
        .map(|(_, rest)| rest.trim_end_matches([']', '"']).split("\", \"").collect())
        .unwrap_or_default();
    let mut message = if items.len() > 3 {
        format!(
            "{} tensors do not fit this model, e.g. {}",
            items.len(),
            items[..3].join("; ")
        )
    } else {
        full.to_owned()
    };
    let model = fs::read_to_string(ckpt.join(CONFIG))
        .ok()
        .and_then(|t| toml::from_str::<toml::Table>(&t).ok())
        .and_then(|t| t.get("model").and_then(|m| m.as_table()).cloned());
    if let Some(model) = model {
        let keys: Vec<String> = model
            .iter()
            .filter(|(k, _)| *k != "weights")
            .map(|(k, v)| format!("{k} = {v}"))
            .collect();
        message.push_str(&format!(
            "\n  hint: the checkpoint was written for [model] {}; the config's [model] must match",
            keys.join(", ")
        ));
    }
    message
}

pub fn load_optim(ckpt: &Path, optim: ModuleOptimizer) -> Result<ModuleOptimizer, CheckpointError> {
    let path = ckpt.join("optim.bpk");
    optim.load(&path).map_err(|e| CheckpointError::Record {
        path: path.clone(),
        message: e.to_string(),
    })
}

/// Initial weights named by `model.weights`: a PyTorch / safetensors file, imported by key name,
/// or one of our own runs to fine-tune from (MixOE fine-tunes its 90-epoch baseline): a run
/// folder (its newest complete checkpoint) or a checkpoint folder. Returns what was loaded (the
/// weights file or checkpoint folder, which keys the output cache) and a line for the log.
pub fn load_initial_weights(
    model: &mut oodforge_models::Classifier,
    weights: &oodforge_core::config::WeightsConfig,
) -> Result<(PathBuf, String), crate::TrainError> {
    let path = Path::new(&weights.path);
    if !path.is_dir() {
        let report = oodforge_models::load_weights(model, path, weights.reset_head)?;
        let what = format!(
            "{} tensors imported, {} ignored",
            report.loaded,
            report.ignored.len()
        );
        return Ok((path.to_path_buf(), what));
    }
    let ckpt = if path.join("model.bpk").is_file() {
        path.to_path_buf()
    } else {
        latest(&path.join(crate::run::CHECKPOINTS))?.ok_or_else(|| CheckpointError::Weights {
            path: path.to_owned(),
            message: "model.weights names a folder that is neither a checkpoint (model.bpk) nor a run with a finished checkpoint under checkpoints/".into(),
        })?
    };
    if weights.reset_head {
        return Err(CheckpointError::Weights {
            path: ckpt,
            message: "reset_head applies to imported checkpoints; a run of ours is loaded whole (same classes); drop reset_head".into(),
        }
        .into());
    }
    *model = load_model(&ckpt, model.clone())?;
    let what = format!("run checkpoint {}", ckpt.display());
    Ok((ckpt, what))
}

/// The objective state of a checkpoint, if it has one.
pub fn load_objective(ckpt: &Path) -> Result<Option<ObjectiveState>, CheckpointError> {
    let path = ckpt.join(OBJECTIVE);
    if !path.exists() {
        return Ok(None);
    }
    let bytes = fs::read(&path).map_err(io(&path))?;
    ObjectiveState::from_bytes(&bytes)
        .map(Some)
        .map_err(|e| CheckpointError::State {
            path,
            message: e.to_string(),
        })
}
