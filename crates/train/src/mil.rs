//! The training loop for attention-MIL models on feature bags: AEM's setting (METHODS §7.3,
//! `main.py`). It reads top to bottom like the image loop: data, model, optimiser, (checkpoint),
//! epochs of one-bag steps, per-epoch validation and test metrics, model selection.
//!
//! - One slide per step (`B: 1`), slides shuffled every epoch from the run's `Shuffle` stream; no
//!   augmentation and no instance subsampling (AEM's `--subsampling` is off by default).
//! - The loss is CE (`objective.name = "ce"`, AEM's baseline `--lamda 0`) or AEM's
//!   `CE + weight * sum softmax(a) log softmax(a)` (`crates/losses/src/aem.rs`).
//! - The learning rate follows `train.lr_schedule` per step (AEM: half-cycle cosine from the
//!   base rate to `min_lr = 0`, evaluated at fractional epochs, which is our per-step cosine).
//! - After every epoch the validation and test slides are scored (accuracy, macro AUROC, macro
//!   F1); the epoch with the best `val_F1 + val_AUC` is the selected one, as in AEM, and its test
//!   metrics are the run's result. The per-epoch metrics are kept in `epochs.json`, so the
//!   selection survives resumes.
//! - The device RNG (the MHA aggregator's dropout) is re-seeded from (seed, epoch) at the start of
//!   every epoch, so a run resumed from a checkpoint draws the same dropout masks as one that ran
//!   through.

use crate::checkpoint::{self, PartialEpoch, TrainState, write_atomic};
use crate::error::TrainError;
use crate::run::{self, DatasetEntry, Manifest, MetricsLog, NewRun};
use crate::schedule::Schedule;
use crate::trainer::{
    Stopped, TrainOptions, TrainOutcome, end_stopped, grad_norm, non_finite, optimizer,
    progress_bar, save_checkpoint, scalar,
};
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use oodforge_core::backend::SelectedBackend;
use oodforge_core::config::{ObjectiveConfig, ResolvedConfig};
use oodforge_core::rng::{Purpose, derived_seed, stream};
use oodforge_data::Normalizer;
use oodforge_data::bags::{self, Bag, BagSplits};
use oodforge_eval::ClassificationMetrics;
use oodforge_losses::aem::aem_loss;
use oodforge_losses::ce::cross_entropy;
use oodforge_models::MilModel;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tracing::info;

/// Every finished epoch's validation and test metrics, rewritten after each epoch.
pub const EPOCHS: &str = "epochs.json";

/// Feature bags are used as extracted; the manifest and checkpoint record this identity.
const IDENTITY: Normalizer = Normalizer {
    mean: [0.0; 3],
    std: [1.0; 3],
};

/// Metrics of one epoch's model on the held-out splits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    /// `None` when the run has no validation slide.
    pub val: Option<ClassificationMetrics>,
    pub test: ClassificationMetrics,
}

/// `results.json` of a feature-bag run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MilResults {
    pub name: String,
    pub dataset: String,
    /// `val_f1 + val_auroc` (AEM `main.py`), or the last epoch without validation slides.
    pub selection_rule: String,
    /// The selected epoch and its metrics: the run's result.
    pub selected: EpochMetrics,
    /// The checkpoint of the selected epoch, when one was written.
    pub selected_checkpoint: Option<String>,
    pub last: EpochMetrics,
    /// Slides per split.
    pub slides: [usize; 3],
}

impl MilResults {
    pub fn to_markdown(&self) -> String {
        let pct = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:.2}", 100.0 * v));
        let row = |what: &str, m: &ClassificationMetrics| {
            format!(
                "| {what} | {} | {} | {} |\n",
                pct(Some(m.accuracy)),
                pct(m.auroc),
                pct(Some(m.f1))
            )
        };
        let mut s = format!(
            "# {} ({})\n\nslides: {} train, {} validation, {} test; selection: {}\n\n| split | ACC | AUC (macro) | F1 (macro) |\n|---|---|---|---|\n",
            self.name,
            self.dataset,
            self.slides[0],
            self.slides[1],
            self.slides[2],
            self.selection_rule
        );
        if let Some(v) = &self.selected.val {
            s += &row(&format!("validation, epoch {}", self.selected.epoch), v);
        }
        s += &row(
            &format!("test, epoch {} (selected)", self.selected.epoch),
            &self.selected.test,
        );
        s += &row(
            &format!("test, epoch {} (last)", self.last.epoch),
            &self.last.test,
        );
        s
    }
}

/// Train (or continue) a feature-bag run in `dir`.
pub(crate) fn execute(
    resolved: &ResolvedConfig,
    dir: &Path,
    resume_from: Option<(PathBuf, TrainState)>,
    opts: &TrainOptions,
    selected: SelectedBackend,
) -> Result<TrainOutcome, TrainError> {
    let cfg = &resolved.config;
    let data = bags::load(&cfg.data.source, cfg.seed).expect("a feature-bag source")?;
    let device = selected.device.clone().autodiff();
    device.seed(derived_seed(cfg.seed, Purpose::Init, 0, 0));
    let mut model = MilModel::new(&cfg.model, data.dim, data.num_classes, &device)
        .expect("validation pairs feature bags with an attention-MIL backbone");
    let mut optim = optimizer(&cfg.optim);
    let aem_weight = match cfg.objective {
        ObjectiveConfig::Aem {
            attention_entropy_weight,
        } => Some(attention_entropy_weight),
        _ => None,
    };

    let (mut epoch, mut step) = (0usize, 0usize);
    let mut partial: Option<PartialEpoch> = None;
    // The checkpoint a NaN would send the user back to.
    let mut last_checkpoint = resume_from.as_ref().map(|(ckpt, _)| ckpt.clone());
    let mut history: Vec<EpochMetrics> = Vec::new();
    if let Some((ckpt, state)) = &resume_from {
        model = checkpoint::load_model(ckpt, model)?;
        optim = checkpoint::load_optim(ckpt, optim)?;
        (epoch, step, partial) = (state.epoch, state.step, state.partial);
        // Epochs after the checkpoint (a crash between the two writes) are trained again.
        history = read_history(dir)?;
        history.retain(|m| m.epoch <= epoch);
        run::trim_metrics(dir, step)?;
        info!(checkpoint = %ckpt.display(), epoch, step, "resumed");
    }

    let new_run = resume_from.is_none().then(|| NewRun {
        datasets: dataset_entries(&data),
        normalizer: IDENTITY,
        // No buffers in the aggregators: every parameter is trainable.
        parameters: model.num_params(),
    });
    let mut manifest =
        Manifest::begin_session(dir, resolved, &selected, epoch, &opts.command, new_run)?;
    let mut log = MetricsLog::open(dir)?;

    let epochs = cfg.train.epochs;
    let per_epoch = data.train.len();
    let schedule = Schedule::for_run(cfg, per_epoch);
    let last_epoch = opts.stop_after.map_or(epochs, |k| (epoch + k).min(epochs));
    let ckpt_dir = dir.join(run::CHECKPOINTS);
    let started = Instant::now();
    let mut slides_seen = 0usize;
    info!(epochs, slides_per_epoch = per_epoch, params = manifest.parameters, run = %dir.display(), "training (feature bags)");

    while epoch < last_epoch {
        // A run resumed inside this epoch skips the slides it trained and carries on the sums.
        let resumed = partial.take();
        let skip = resumed.map_or(0, |p| p.batches);
        let bar = progress_bar(opts.progress, per_epoch, epoch, epochs);
        if let Some(bar) = &bar {
            bar.set_position(skip as u64);
        }
        let epoch_start = Instant::now();
        let earlier_seconds = resumed.map_or(0.0, |p| p.seconds);
        let (mut loss_sum, mut correct) = resumed.map_or((0.0, 0), |p| (p.loss_sum, p.correct));
        let mut order: Vec<usize> = (0..per_epoch).collect();
        order.shuffle(&mut stream(cfg.seed, Purpose::Shuffle, epoch as u64, 0));
        let mut stopped = None;
        for (k, &i) in order.iter().enumerate().skip(skip) {
            // The device RNG (attention dropout) is keyed by the step, so a run resumed at any
            // step trains exactly as an uninterrupted one.
            device.seed(derived_seed(
                cfg.seed,
                Purpose::Dropout,
                epoch as u64,
                step as u64,
            ));
            let lr = schedule.lr(step);
            let bag = &data.train[i];
            let y = Tensor::<1, Int>::from_data(TensorData::new(vec![bag.label], [1]), &device);
            let out = model.forward(bag_tensor(bag, &device));
            let hit = out.logits.clone().argmax(1).reshape([1]).equal(y.clone());
            let (total, terms) = match aem_weight {
                Some(w) => {
                    let t = aem_loss(out.logits, y, out.attention, w);
                    (t.total, vec![("ce", t.ce), ("neg_entropy", t.neg_entropy)])
                }
                None => (cross_entropy(out.logits, y), Vec::new()),
            };
            let grads = GradientsParams::from_grads(total.backward(), &model);
            let loss_value = scalar(total);
            let norm_value = grad_norm(&model, &grads);
            if !loss_value.is_finite() || !norm_value.is_finite() {
                let pieces = terms.iter().map(|(name, t)| (*name, scalar(t.clone())));
                return Err(non_finite(
                    (loss_value, norm_value),
                    (epoch, step),
                    pieces.collect(),
                    last_checkpoint.as_deref(),
                    dir,
                ));
            }
            model = optim.step(lr, model, grads);
            loss_sum += f64::from(loss_value);
            let batch_hits = scalar(hit.int().sum().float()) as usize;
            correct += batch_hits;
            slides_seen += 1;
            step += 1;
            if step % cfg.train.log_every == 0 {
                let mut line = json!({
                    "kind": "step", "epoch": epoch + 1, "step": step, "lr": lr, "loss": loss_value,
                    "grad_norm": norm_value, "slide": bag.slide_id, "correct": batch_hits == 1,
                });
                for (name, term) in terms {
                    line[name] = json!(scalar(term));
                }
                log.write(&line)?;
            }
            if let Some(bar) = &bar {
                bar.set_message(format!("loss {loss_value:.4} lr {lr:.2e}"));
                bar.inc(1);
            }
            // A stop request inside the epoch: checkpoint this step and return. On the last
            // slide the epoch's own checkpoint below serves.
            if let Some(signal) = opts.stop.requested()
                && k + 1 < per_epoch
            {
                let at = PartialEpoch {
                    batches: k + 1,
                    loss_sum,
                    correct,
                    seen: k + 1,
                    seconds: earlier_seconds + epoch_start.elapsed().as_secs_f64(),
                };
                let checkpoint = save_checkpoint(
                    &ckpt_dir,
                    resolved,
                    IDENTITY,
                    (epoch, step, Some(at)),
                    &model,
                    &optim,
                    None,
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
            return end_stopped(&mut manifest, dir, (slides_seen, started), stopped, false);
        }
        epoch += 1;
        let secs = earlier_seconds + epoch_start.elapsed().as_secs_f64();

        // AEM `main.py`: score the validation and test slides after every epoch.
        let valid = model.valid();
        let score = |set: &[Bag]| -> Option<ClassificationMetrics> {
            (!set.is_empty()).then(|| classify(&valid, set, data.num_classes, &selected.device))
        };
        let metrics = EpochMetrics {
            epoch,
            val: score(&data.val),
            test: score(&data.test).expect("load_splits refuses an empty test set"),
        };
        history.push(metrics);
        let json = serde_json::to_vec_pretty(&history).expect("metrics serialize");
        write_atomic(&dir.join(EPOCHS), &json)?;
        let improved = select(&history).is_some_and(|m| m.epoch == epoch);
        let mean_loss = loss_sum / per_epoch as f64;
        let acc = correct as f64 / per_epoch as f64;
        log.write(&json!({
            "kind": "epoch", "epoch": epoch, "step": step, "lr": schedule.lr(step.saturating_sub(1)),
            "loss": mean_loss, "train_accuracy": acc, "slides_per_s": per_epoch as f64 / secs,
            "seconds": secs, "val": metrics.val, "test": metrics.test, "selected": improved,
        }))?;
        let fmt = |m: &Option<ClassificationMetrics>| {
            m.map_or("-".to_owned(), |m| {
                format!(
                    "acc {:.3} auc {} f1 {:.3}",
                    m.accuracy,
                    m.auroc.map_or("-".into(), |a| format!("{a:.3}")),
                    m.f1
                )
            })
        };
        info!(
            "epoch {epoch}/{epochs}: loss {mean_loss:.4}, train accuracy {:.2}%; val {}; test {}{}",
            100.0 * acc,
            fmt(&metrics.val),
            fmt(&Some(metrics.test)),
            if improved { " (selected)" } else { "" }
        );

        let stop = opts.stop.requested();
        if epoch % cfg.train.checkpoint_every == 0 || epoch == last_epoch || stop.is_some() {
            let path = save_checkpoint(
                &ckpt_dir,
                resolved,
                IDENTITY,
                (epoch, step, None),
                &model,
                &optim,
                None,
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
                    (slides_seen, started),
                    stopped,
                    finished,
                );
            }
        }
    }

    let finished = epoch >= epochs;
    // Slides (bags) per second: the unit of a MIL step.
    manifest.end_session(dir, slides_seen, started.elapsed().as_secs_f64(), finished)?;

    let mil_results = match (finished, select(&history), history.last()) {
        (true, Some(&selected), Some(&last)) => {
            let ckpt = ckpt_dir.join(checkpoint::checkpoint_name(selected.epoch));
            let results = MilResults {
                name: cfg.name.clone(),
                dataset: data.name.clone(),
                selection_rule: if data.val.is_empty() {
                    "last epoch (no validation slides)".into()
                } else {
                    "max val_f1 + val_auroc (AEM main.py)".into()
                },
                selected,
                selected_checkpoint: ckpt.is_dir().then(|| {
                    ckpt.strip_prefix(dir)
                        .unwrap_or(&ckpt)
                        .display()
                        .to_string()
                }),
                last,
                slides: [data.train.len(), data.val.len(), data.test.len()],
            };
            let json = serde_json::to_vec_pretty(&results).expect("results serialize");
            write_atomic(&dir.join(run::RESULTS_JSON), &json)?;
            write_atomic(&dir.join(run::RESULTS_MD), results.to_markdown().as_bytes())?;
            Some(results)
        }
        _ => None,
    };
    Ok(TrainOutcome {
        run_dir: dir.to_path_buf(),
        finished,
        results: None,
        mil_results,
        stopped: None,
    })
}

fn bag_tensor(bag: &Bag, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(bag.feat.clone(), [bag.n, bag.dim]), device)
}

/// Softmax probabilities of every slide of `set`, scored (inference mode: no dropout).
pub fn classify(
    model: &MilModel,
    set: &[Bag],
    num_classes: usize,
    device: &Device,
) -> ClassificationMetrics {
    let mut probs = Vec::with_capacity(set.len());
    for bag in set {
        let p = softmax(model.forward(bag_tensor(bag, device)).logits, 1);
        let p = p
            .into_data()
            .try_to_vec::<f32>()
            .expect("float probabilities");
        probs.push(p.into_iter().map(f64::from).collect::<Vec<f64>>());
    }
    let labels: Vec<usize> = set.iter().map(|b| b.label as usize).collect();
    ClassificationMetrics::compute(&probs, &labels, num_classes)
}

/// AEM's selection: the first epoch with the highest `val_F1 + val_AUC` (`main.py` replaces
/// its best only on a strictly greater value); the last epoch when there are no validation slides.
pub fn select(history: &[EpochMetrics]) -> Option<&EpochMetrics> {
    let mut best: Option<(&EpochMetrics, f64)> = None;
    for m in history {
        let Some(v) = &m.val else {
            return history.last();
        };
        let score = v.selection_score();
        if best.is_none_or(|(_, b)| score > b) {
            best = Some((m, score));
        }
    }
    best.map(|(m, _)| m)
}

fn read_history(dir: &Path) -> Result<Vec<EpochMetrics>, TrainError> {
    let path = dir.join(EPOCHS);
    if !path.exists() {
        return Ok(Vec::new());
    }
    run::read_json(&path)
}

fn dataset_entries(data: &BagSplits) -> Vec<DatasetEntry> {
    [
        ("train", &data.train),
        ("val", &data.val),
        ("test", &data.test),
    ]
    .into_iter()
    .map(|(role, set)| DatasetEntry {
        name: format!("{}/{role}", data.name),
        role: role.into(),
        count: set.len(),
        sha256: BagSplits::fingerprint(set),
    })
    .collect()
}
