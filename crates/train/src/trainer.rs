//! The training loop. It reads top to bottom: backend, run folder, data, model, optimiser,
//! (checkpoint), epochs of steps, checkpoints, evaluation. It holds no method logic: the
//! objective is one call.

use crate::checkpoint::{self, PartialEpoch, TrainState};
use crate::error::TrainError;
use crate::evaluate::{OutputCache, evaluate_model, write_results};
use crate::parallel::{self, StepKey, StepOutcome};
use crate::run::{self, DatasetEntry, Manifest, MetricsLog, NewRun};
use crate::schedule::Schedule;
use crate::stop::{StopRequest, signal_name};
use burn::module::Module;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::{Device, Tensor};
use oodforge_core::config::{self, BackendChoice, ExperimentConfig, OptimConfig, ResolvedConfig};
use oodforge_core::rng::{Purpose, derived_seed, stream};
use oodforge_core::{Group, backend};
use oodforge_data::{Datasets, Source, steps_per_epoch, train_epoch};
use oodforge_eval::Results;
use oodforge_losses::Objective;
use oodforge_models::Classifier;
use serde_json::json;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tracing::info;

/// Command-line choices that are not part of the experiment (and so not of its hash).
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Overrides the config's `backend`.
    pub backend: Option<BackendChoice>,
    /// Run folder; default `<runs_root>/<name>/<hash8>/s<seed>`.
    pub out: Option<PathBuf>,
    /// Root of default run folders (`runs`).
    pub runs_root: PathBuf,
    /// Stop after this many epochs of this session, leaving a resumable checkpoint.
    pub stop_after: Option<usize>,
    /// Show an indicatif progress bar (only ever on a terminal).
    pub progress: bool,
    /// The command line, for the manifest.
    pub command: Vec<String>,
    /// Set (by SIGINT/SIGTERM, see [`StopRequest::on_signals`]) to stop after the current step
    /// with a checkpoint written.
    pub stop: StopRequest,
    /// `--set KEY=VALUE` for a resumed run: only the keys of [`SAFE_ON_RESUME`].
    pub set: Vec<String>,
}

/// Config keys a resumed run may change (`train --resume DIR --set KEY=VALUE`): how long it
/// runs, how often it logs and checkpoints, and how it is evaluated afterwards. Anything else
/// would make the checkpoint's weights belong to another experiment. Note that with a cosine
/// schedule the remaining steps follow the new length.
pub const SAFE_ON_RESUME: &[&str] = &[
    "train.epochs",
    "train.log_every",
    "train.checkpoint_every",
    "eval",
];

fn safe_on_resume(key: &str) -> bool {
    SAFE_ON_RESUME
        .iter()
        .any(|safe| key == *safe || key.starts_with(&format!("{safe}.")))
}

#[derive(Debug)]
pub struct TrainOutcome {
    pub run_dir: PathBuf,
    /// All configured epochs are done.
    pub finished: bool,
    /// Image runs: the OOD evaluation (when `eval.after_training`).
    pub results: Option<Results>,
    /// Feature-bag runs: the selected epoch's slide-classification metrics.
    pub mil_results: Option<crate::mil::MilResults>,
    /// The run stopped on this signal (SIGINT/SIGTERM), with a checkpoint at the step it was
    /// on.
    pub stopped: Option<Stopped>,
}

/// Where a run stopped on request.
#[derive(Debug, Clone)]
pub struct Stopped {
    pub signal: i32,
    pub epoch: usize,
    pub step: usize,
    pub checkpoint: PathBuf,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stopped by {} at epoch {}, step {}; checkpoint {}",
            signal_name(self.signal),
            self.epoch,
            self.step,
            self.checkpoint.display()
        )
    }
}

/// Start a new run.
pub fn train(resolved: &ResolvedConfig, opts: &TrainOptions) -> Result<TrainOutcome, TrainError> {
    let cfg = &resolved.config;
    let dir = opts.out.clone().unwrap_or_else(|| {
        run::default_dir(&opts.runs_root, &cfg.name, resolved.hash8(), cfg.seed)
    });
    refuse_existing_run(&dir)?;
    std::fs::create_dir_all(&dir).map_err(|source| TrainError::Io {
        path: dir.clone(),
        source,
    })?;
    checkpoint::write_atomic(&dir.join(run::RESOLVED), resolved.text.as_bytes())?;
    execute(resolved, &dir, None, opts)
}

/// Continue the run in `dir` from its last checkpoint, under the config that checkpoint was
/// written with, changed only by `opts.set` (keys of [`SAFE_ON_RESUME`]).
pub fn resume(dir: &Path, opts: &TrainOptions) -> Result<TrainOutcome, TrainError> {
    if !dir.join(run::RESOLVED).is_file() {
        return Err(TrainError::Resume {
            path: dir.to_path_buf(),
            message: format!(
                "not a run folder (it has no {}): nothing to resume; a run killed before it wrote one starts again with `train --config FILE --out {}`",
                run::RESOLVED,
                dir.display()
            ),
        });
    }
    let on_disk = read_resolved(dir)?;
    let Some(ckpt) = checkpoint::latest(&dir.join(run::CHECKPOINTS))? else {
        // Killed before its first checkpoint: nothing to continue, so the run starts over
        // (its folder and config are there; what it logged is dropped).
        if !opts.set.is_empty() {
            return Err(TrainError::Options(format!(
                "--set on --resume: {} has no checkpoint yet, so there is no run to change; start it again with `train --config`",
                dir.display()
            )));
        }
        info!(run = %dir.display(), "no checkpoint yet: training from the beginning");
        run::trim_metrics(dir, 0)?;
        return execute(&on_disk, dir, None, opts);
    };
    let state = checkpoint::load_state(&ckpt)?;
    let resolved = resume_config(dir, &ckpt, &state, on_disk, &opts.set)?;
    execute(&resolved, dir, Some((ckpt, state)), opts)
}

/// The config a resume continues with: the checkpoint's own (its `config.toml`; older
/// checkpoints: `resolved.toml` with the same hash), plus the `--set` overrides, which may touch
/// only [`SAFE_ON_RESUME`]. `resolved.toml` must be what that gives: an edited one is refused
/// with the keys that differ.
fn resume_config(
    dir: &Path,
    ckpt: &Path,
    state: &TrainState,
    on_disk: ResolvedConfig,
    set: &[String],
) -> Result<ResolvedConfig, TrainError> {
    let resolved_path = dir.join(run::RESOLVED);
    let ckpt_config = ckpt.join(checkpoint::CONFIG);
    // Where the checkpoint's config is read from, and `--set` applied to.
    let own_config = ckpt_config.is_file();
    let source = if own_config {
        ckpt_config
    } else {
        resolved_path.clone()
    };
    let base = if own_config {
        let base = config::load(&source, &[])?;
        if base.hash != state.config_hash {
            return Err(TrainError::Resume {
                path: source,
                message: "does not hash to the config hash in state.json".into(),
            });
        }
        base
    } else if on_disk.hash == state.config_hash {
        on_disk.clone()
    } else {
        return Err(TrainError::Resume {
            path: ckpt.to_path_buf(),
            message: format!(
                "checkpoint was written for config {} but {} now hashes to {}; the config was edited after the run started",
                &state.config_hash[..8],
                run::RESOLVED,
                on_disk.hash8()
            ),
        });
    };
    let wanted = if set.is_empty() {
        base.clone()
    } else {
        let wanted = config::load(&source, set)?;
        let changed = config::differing_keys(&base.text, &wanted.text).expect("resolved TOML");
        let refused: Vec<&String> = changed.iter().filter(|k| !safe_on_resume(k)).collect();
        if !refused.is_empty() {
            return Err(TrainError::Options(format!(
                "--set on --resume may change only {}; these keys would change the experiment itself: {}\n  hint: start a new run with `train --config` for that",
                SAFE_ON_RESUME.join(", "),
                refused
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let in_progress = state.epoch + usize::from(state.partial.is_some());
        if wanted.config.train.epochs < in_progress {
            return Err(TrainError::Options(format!(
                "--set train.epochs={}: the checkpoint has {} epoch(s) trained already",
                wanted.config.train.epochs, in_progress
            )));
        }
        if !changed.is_empty() {
            info!(keys = %changed.join(", "), "config changed on resume");
        }
        wanted
    };
    // resolved.toml is the checkpoint's config, or already the overridden one (a resume with
    // the same --set that stopped before its first checkpoint); anything else was edited.
    if on_disk.hash != base.hash && on_disk.hash != wanted.hash {
        let keys = config::differing_keys(&base.text, &on_disk.text).expect("resolved TOML");
        let all_safe = keys.iter().all(|k| safe_on_resume(k));
        let hint = if all_safe {
            format!(
                "\n  hint: these keys may change on resume when asked for explicitly: `train --resume {} --set KEY=VALUE` for each",
                dir.display()
            )
        } else {
            "\n  hint: a run continues only the experiment it started; start a new run with `train --config` to change the others".into()
        };
        return Err(TrainError::Resume {
            path: resolved_path,
            message: format!(
                "was edited after the run started: it differs from the config of checkpoint {} in: {}{hint}",
                ckpt.display(),
                keys.join(", ")
            ),
        });
    }
    if on_disk.hash != wanted.hash {
        checkpoint::write_atomic(&resolved_path, wanted.text.as_bytes())?;
    }
    Ok(wanted)
}

/// The resolved config saved in a run folder.
pub fn read_resolved(dir: &Path) -> Result<ResolvedConfig, TrainError> {
    let path = dir.join(run::RESOLVED);
    let text = std::fs::read_to_string(&path).map_err(|source| TrainError::Io {
        path: path.clone(),
        source,
    })?;
    let cfg: ExperimentConfig = toml::from_str(&text).map_err(|e| TrainError::Corrupt {
        path: path.clone(),
        message: e.to_string(),
    })?;
    Ok(config::resolve(cfg, &path)?)
}

fn refuse_existing_run(dir: &Path) -> Result<(), TrainError> {
    for (name, what) in [
        (run::CHECKPOINTS, "checkpoints"),
        (run::METRICS, "a metrics log"),
        (run::RESULTS_JSON, "results"),
    ] {
        if dir.join(name).exists() {
            return Err(TrainError::RunExists {
                path: dir.to_path_buf(),
                what: what.into(),
            });
        }
    }
    Ok(())
}

/// The optimiser of a config.
pub fn optimizer(config: &OptimConfig) -> ModuleOptimizer {
    match config {
        // torch.optim.SGD semantics: no dampening; decay added to the gradient before momentum.
        OptimConfig::Sgd {
            momentum,
            nesterov,
            weight_decay,
            ..
        } => SgdConfig::new()
            .with_momentum((*momentum > 0.0).then_some(MomentumConfig {
                momentum: *momentum,
                dampening: 0.0,
                nesterov: *nesterov,
            }))
            .with_weight_decay((*weight_decay > 0.0).then_some(WeightDecayConfig {
                penalty: *weight_decay as f32,
            }))
            .init(),
        // torch.optim.AdamW semantics (burn's AdamW decays `p * (1 - lr * wd)` before the
        // bias-corrected Adam step, eps outside the square root); burn's own defaults
        // (eps 1e-5, decay 1e-4) are not PyTorch's, so every value is set from the config.
        OptimConfig::AdamW {
            betas,
            epsilon,
            weight_decay,
            ..
        } => AdamWConfig::new()
            .with_beta_1(betas[0] as f32)
            .with_beta_2(betas[1] as f32)
            .with_epsilon(*epsilon as f32)
            .with_weight_decay(*weight_decay as f32)
            .init(),
    }
}

fn dataset_entries(data: &Datasets) -> Vec<DatasetEntry> {
    let entry = |set: &Source, role: &str| DatasetEntry {
        name: set.name().to_owned(),
        role: role.to_owned(),
        count: set.len(),
        sha256: set.fingerprint(),
    };
    let mut out = vec![entry(&data.train, "train"), entry(&data.test, "test")];
    for (set, group) in &data.ood {
        out.push(entry(
            set,
            if *group == Group::Near {
                "ood/near"
            } else {
                "ood/far"
            },
        ));
    }
    if let Some(o) = &data.outliers {
        out.push(entry(o, "outliers"));
    }
    out
}

fn execute(
    resolved: &ResolvedConfig,
    dir: &Path,
    resume_from: Option<(PathBuf, TrainState)>,
    opts: &TrainOptions,
) -> Result<TrainOutcome, TrainError> {
    let cfg = &resolved.config;
    let mut selected = backend::select(opts.backend.unwrap_or(cfg.backend))?;
    // Data-parallel runs: every device of `devices`, the main one first (it becomes
    // `selected.device`, where the model, the optimiser and evaluation live).
    let devices: Vec<Device> = backend::data_parallel(&mut selected, &cfg.devices)?
        .into_iter()
        .map(Device::autodiff)
        .collect();
    info!(backend = selected.name, adapter = %selected.adapter, "compute backend");
    if !selected.reason.is_empty() {
        info!("backend auto: {}", selected.reason);
    }
    if cfg.data.source.is_bags() {
        return crate::mil::execute(resolved, dir, resume_from, opts, selected);
    }

    let data = Datasets::load(&cfg.data)?;
    let device = devices[0].clone();
    device.seed(derived_seed(cfg.seed, Purpose::Init, 0, 0));
    let mut model = Classifier::new(&cfg.model, data.num_classes, cfg.data.image_size, &device);
    if resume_from.is_none()
        && let Some(w) = &cfg.model.weights
    {
        let (_, what) = checkpoint::load_initial_weights(&mut model, w)?;
        info!(weights = %w.path, "initial weights loaded: {what}");
    }
    let mut optim = optimizer(&cfg.optim);
    // PALM's initial prototypes are drawn here, so a run's prototypes depend only on its seed.
    let mut objective = Objective::new(
        &cfg.objective,
        &model,
        &device,
        &mut stream(cfg.seed, Purpose::Init, 1, 0),
    );

    let (mut epoch, mut step) = (0usize, 0usize);
    let mut partial: Option<PartialEpoch> = None;
    // The checkpoint a NaN would send the user back to.
    let mut last_checkpoint = resume_from.as_ref().map(|(ckpt, _)| ckpt.clone());
    // A resumed run keeps the normalisation in its checkpoint; measuring it again (up to
    // 10,000 decoded images for custom data) would be wasted start-up time.
    let norm = if let Some((ckpt, state)) = &resume_from {
        model = checkpoint::load_model(ckpt, model)?;
        optim = checkpoint::load_optim(ckpt, optim)?;
        objective
            .restore(checkpoint::load_objective(ckpt)?.as_ref())
            .map_err(|e| TrainError::Resume {
                path: ckpt.join(checkpoint::OBJECTIVE),
                message: e.to_string(),
            })?;
        (epoch, step, partial) = (state.epoch, state.step, state.partial);
        run::trim_metrics(dir, step)?;
        info!(checkpoint = %ckpt.display(), epoch, step, "resumed");
        state.normalizer
    } else {
        data.normalizer(&cfg.data)?
    };

    let new_run = resume_from.is_none().then(|| NewRun {
        datasets: dataset_entries(&data),
        normalizer: norm,
        parameters: model.num_trainable_params(),
    });
    let mut manifest =
        Manifest::begin_session(dir, resolved, &selected, epoch, &opts.command, new_run)?;
    let mut log = MetricsLog::open(dir)?;

    let epochs = cfg.train.epochs;
    let batch_size = cfg.data.batch_size;
    let per_epoch = steps_per_epoch(data.train.len(), batch_size);
    let schedule = Schedule::for_run(cfg, per_epoch);
    let last_epoch = opts.stop_after.map_or(epochs, |k| (epoch + k).min(epochs));
    let ckpt_dir = dir.join(run::CHECKPOINTS);
    let started = Instant::now();
    let mut images_seen = 0usize;
    info!(epochs, steps_per_epoch = per_epoch, params = manifest.parameters, run = %dir.display(), "training");

    while epoch < last_epoch {
        // A run resumed inside this epoch skips the batches it trained and carries on the sums.
        let resumed = partial.take();
        let skip = resumed.map_or(0, |p| p.batches);
        let bar = progress_bar(opts.progress, per_epoch, epoch, epochs);
        if let Some(bar) = &bar {
            bar.set_position(skip as u64);
        }
        let epoch_start = Instant::now();
        let earlier_seconds = resumed.map_or(0.0, |p| p.seconds);
        let (mut loss_sum, mut correct, mut seen) =
            resumed.map_or((0.0, 0, 0), |p| (p.loss_sum, p.correct, p.seen));
        let batches = train_epoch(
            &cfg.data,
            cfg.seed,
            &data.train,
            data.outliers.as_ref(),
            norm,
            epoch,
            skip,
        )?;
        let mut stopped = None;
        for (k, batch) in (skip..).zip(batches) {
            let lr = schedule.lr(step);
            // The objective's forward pass(es), scattered over the devices of a data-parallel
            // run, its loss on the whole batch, and the gradients summed on the main device.
            let key = StepKey {
                seed: cfg.seed,
                epoch,
                step,
            };
            let StepOutcome {
                loss,
                logits,
                labels: y,
                rows: n,
                grads,
            } = parallel::step(&model, &mut objective, &devices, batch?, key);
            let hits = logits.argmax(1).reshape([n]).equal(y).int().sum();
            let loss_value = scalar(loss.total.clone());
            let norm_value = grad_norm(&model, &grads);
            if !loss_value.is_finite() || !norm_value.is_finite() {
                let pieces = loss
                    .terms
                    .iter()
                    .map(|(name, t)| (*name, scalar(t.clone())));
                return Err(non_finite(
                    (loss_value, norm_value),
                    (epoch, step),
                    pieces.collect(),
                    last_checkpoint.as_deref(),
                    dir,
                ));
            }
            model = optim.step(lr, model, grads);
            loss_sum += f64::from(loss_value) * n as f64;
            let batch_hits = scalar(hits.float()) as usize;
            correct += batch_hits;
            seen += n;
            images_seen += n;
            step += 1;
            if step % cfg.train.log_every == 0 {
                let mut line = json!({
                    "kind": "step", "epoch": epoch + 1, "step": step, "lr": lr, "loss": loss_value,
                    "grad_norm": norm_value, "accuracy": batch_hits as f64 / n as f64,
                    "images_per_s": seen as f64 / (earlier_seconds + epoch_start.elapsed().as_secs_f64()),
                });
                for (name, term) in &loss.terms {
                    line[*name] = json!(scalar(term.clone()));
                }
                log.write(&line)?;
            }
            if let Some(bar) = &bar {
                bar.set_message(format!("loss {loss_value:.4} lr {lr:.4}"));
                bar.inc(1);
            }
            // A stop request inside the epoch: checkpoint this step and return. On the last
            // batch the epoch's own checkpoint below serves.
            if let Some(signal) = opts.stop.requested()
                && k + 1 < per_epoch
            {
                let at = PartialEpoch {
                    batches: k + 1,
                    loss_sum,
                    correct,
                    seen,
                    seconds: earlier_seconds + epoch_start.elapsed().as_secs_f64(),
                };
                let checkpoint = save_checkpoint(
                    &ckpt_dir,
                    resolved,
                    norm,
                    (epoch, step, Some(at)),
                    &model,
                    &optim,
                    objective.state().as_ref(),
                )?;
                stopped = Some(Stopped {
                    signal,
                    epoch: epoch + 1,
                    step,
                    checkpoint,
                });
                break;
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        if let Some(stopped) = stopped {
            return end_stopped(&mut manifest, dir, (images_seen, started), stopped, false);
        }
        epoch += 1;
        let secs = earlier_seconds + epoch_start.elapsed().as_secs_f64();
        let (mean_loss, acc, ips) = (
            loss_sum / seen as f64,
            correct as f64 / seen as f64,
            seen as f64 / secs,
        );
        log.write(&json!({
            "kind": "epoch", "epoch": epoch, "step": step, "lr": schedule.lr(step.saturating_sub(1)),
            "loss": mean_loss, "train_accuracy": acc, "images_per_s": ips, "seconds": secs,
        }))?;
        info!(
            "epoch {epoch}/{epochs}: loss {mean_loss:.4}, train accuracy {:.2}%, {ips:.1} images/s",
            100.0 * acc
        );

        let stop = opts.stop.requested();
        if epoch % cfg.train.checkpoint_every == 0 || epoch == last_epoch || stop.is_some() {
            let path = save_checkpoint(
                &ckpt_dir,
                resolved,
                norm,
                (epoch, step, None),
                &model,
                &optim,
                objective.state().as_ref(),
            )?;
            manifest.epochs_completed = epoch;
            manifest.steps_completed = step;
            manifest.write(dir)?;
            info!(checkpoint = %path.display(), "checkpoint written");
            last_checkpoint = Some(path.clone());
            if let Some(signal) = stop {
                let stopped = Stopped {
                    signal,
                    epoch,
                    step,
                    checkpoint: path,
                };
                let finished = epoch >= epochs;
                return end_stopped(
                    &mut manifest,
                    dir,
                    (images_seen, started),
                    stopped,
                    finished,
                );
            }
        }
    }

    let finished = epoch >= epochs;
    manifest.end_session(dir, images_seen, started.elapsed().as_secs_f64(), finished)?;

    let results = if finished && cfg.eval.after_training {
        let model = model.valid();
        // The outputs are cached under the final checkpoint, so `eval --run` with other
        // post-processors or conventions reuses them without running the network.
        let cache = match checkpoint::latest(&ckpt_dir)? {
            Some(last) => Some(OutputCache::new(dir, &last)?),
            None => None,
        };
        let (results, scores) =
            evaluate_model(&model, &data, &norm, cfg, &selected.device, cache.as_ref())?;
        write_results(dir, cfg, &results, &scores)?;
        Some(results)
    } else {
        None
    };
    Ok(TrainOutcome {
        run_dir: dir.to_path_buf(),
        finished,
        results,
        mil_results: None,
        stopped: None,
    })
}

/// End a session stopped on request (its checkpoint written): record it in the manifest with
/// its throughput over `(samples, since)`, and say where it stopped.
pub(crate) fn end_stopped(
    manifest: &mut Manifest,
    dir: &Path,
    (samples, since): (usize, Instant),
    stopped: Stopped,
    finished: bool,
) -> Result<TrainOutcome, TrainError> {
    manifest.steps_completed = stopped.step;
    manifest.end_session(dir, samples, since.elapsed().as_secs_f64(), finished)?;
    info!("{stopped}");
    Ok(TrainOutcome {
        run_dir: dir.to_path_buf(),
        finished,
        results: None,
        mil_results: None,
        stopped: Some(stopped),
    })
}

/// Write the checkpoint of position `(epochs done, steps done, inside-epoch state)`.
pub(crate) fn save_checkpoint<M: Module>(
    ckpt_dir: &Path,
    resolved: &ResolvedConfig,
    normalizer: oodforge_data::Normalizer,
    (epoch, step, partial): (usize, usize, Option<PartialEpoch>),
    model: &M,
    optim: &ModuleOptimizer,
    objective: Option<&oodforge_losses::ObjectiveState>,
) -> Result<PathBuf, TrainError> {
    let state = TrainState {
        format: checkpoint::FORMAT,
        epoch,
        step,
        seed: resolved.config.seed,
        config_hash: resolved.hash.clone(),
        normalizer,
        // Filled by `checkpoint::save` from the bytes it writes.
        sha256: Default::default(),
        partial,
    };
    Ok(checkpoint::save(
        ckpt_dir,
        model,
        optim,
        &state,
        objective,
        &resolved.text,
    )?)
}

/// The global L2 norm of a step's gradients (one device sync).
pub(crate) fn grad_norm<M: Module>(model: &M, grads: &GradientsParams) -> f32 {
    struct SumSquares<'a> {
        grads: &'a GradientsParams,
        sum: Option<Tensor<1>>,
    }
    impl burn::module::ModuleVisitor for SumSquares<'_> {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(param.id) {
                let s = g.square().sum();
                self.sum = Some(match self.sum.take() {
                    Some(acc) => acc + s,
                    None => s,
                });
            }
        }
    }
    let mut v = SumSquares { grads, sum: None };
    model.visit(&mut v);
    v.sum.map_or(0.0, |s| scalar(s).sqrt())
}

/// The error for a NaN/Inf loss or gradient norm at (epoch index, step index).
pub(crate) fn non_finite(
    (loss, norm): (f32, f32),
    (epoch, step): (usize, usize),
    pieces: Vec<(&str, f32)>,
    last_checkpoint: Option<&Path>,
    dir: &Path,
) -> TrainError {
    let (what, value) = if loss.is_finite() {
        ("gradient norm", norm)
    } else {
        ("loss", loss)
    };
    let mut listed: Vec<String> = vec![format!("total = {loss}")];
    listed.extend(pieces.iter().map(|(name, v)| format!("{name} = {v}")));
    TrainError::NonFinite {
        what,
        value,
        epoch: epoch + 1,
        step: step + 1,
        pieces: listed.join(", "),
        checkpoint: match last_checkpoint {
            // Training is deterministic: a resume would repeat this step. Other settings from
            // the same weights are a new run that starts from the checkpoint.
            Some(c) => format!(
                "The last good checkpoint is {} (run {}); resuming would repeat this step, so to go on from there with other settings start a new run with `--set model.weights.path={}`.",
                c.display(),
                dir.display(),
                c.display()
            ),
            None => format!(
                "No checkpoint of run {} was written before it.",
                dir.display()
            ),
        },
    }
}

pub(crate) fn scalar(t: Tensor<1>) -> f32 {
    t.into_data().try_to_vec::<f32>().expect("a float scalar")[0]
}

pub(crate) fn progress_bar(
    enabled: bool,
    steps: usize,
    epoch: usize,
    epochs: usize,
) -> Option<indicatif::ProgressBar> {
    if !enabled || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {per_sec} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("epoch {}/{epochs}", epoch + 1));
    Some(bar)
}
