//! Run the network once over every evaluation set, then score in plain Rust
//! (`oodforge_eval`), and write `results.json` / `results.md`.

use crate::checkpoint::{self, write_atomic};
use crate::error::TrainError;
use crate::run::{self, Manifest};
use crate::trainer::read_resolved;
use burn::tensor::{Device, Tensor, TensorData};
use oodforge_core::backend;
use oodforge_core::config::{BackendChoice, ExperimentConfig};
use oodforge_data::{Datasets, ImageSet, Normalizer, eval_batch};
use oodforge_eval::{Logits, OodOutputs, Results, evaluate};
use oodforge_models::Classifier;
use std::path::Path;
use tracing::{info, warn};

/// Logits of every image of `set`, in order (inference mode: BatchNorm uses running statistics).
pub fn infer(
    model: &Classifier,
    set: &ImageSet,
    norm: &Normalizer,
    batch_size: usize,
    device: &Device,
) -> Logits {
    let n = set.labels.len();
    let mut data = Vec::new();
    let mut classes = 0;
    for start in (0..n).step_by(batch_size) {
        let batch = eval_batch(set, start..(start + batch_size).min(n), norm);
        let x = Tensor::<4>::from_data(TensorData::new(batch.images, batch.shape), device);
        let logits = model.forward(x).logits;
        classes = logits.dims()[1];
        data.extend(
            logits
                .into_data()
                .try_to_vec::<f32>()
                .expect("float logits"),
        );
    }
    Logits::new(data, classes.max(1))
}

/// Evaluate a model (on a non-autodiff device) on the ID test set and every OOD set.
pub fn evaluate_model(
    model: &Classifier,
    data: &Datasets,
    norm: &Normalizer,
    cfg: &ExperimentConfig,
    device: &Device,
) -> Result<Results, TrainError> {
    let bs = cfg.data.eval_batch_size;
    let id_logits = infer(model, &data.test, norm, bs, device);
    let ood: Vec<OodOutputs> = data
        .ood
        .iter()
        .map(|(set, group)| OodOutputs {
            name: set.name.clone(),
            group: *group,
            logits: infer(model, set, norm, bs, device),
        })
        .collect();
    Ok(evaluate(
        &id_logits,
        &data.test.labels,
        &ood,
        &cfg.eval.postprocessors,
    )?)
}

pub fn write_results(dir: &Path, title: &str, results: &Results) -> Result<(), TrainError> {
    let json = serde_json::to_vec_pretty(results).expect("results serialize");
    write_atomic(&dir.join(run::RESULTS_JSON), &json)?;
    write_atomic(
        &dir.join(run::RESULTS_MD),
        results.to_markdown(title).as_bytes(),
    )?;
    Ok(())
}

/// `eval --run DIR`: evaluate the last checkpoint of a run and (re)write its results.
pub fn evaluate_run(
    dir: &Path,
    backend_override: Option<BackendChoice>,
) -> Result<Results, TrainError> {
    let resolved = read_resolved(dir)?;
    let cfg = &resolved.config;
    let ckpt = checkpoint::latest(&dir.join(run::CHECKPOINTS))?.ok_or_else(|| {
        TrainError::NothingToEvaluate {
            path: dir.to_path_buf(),
        }
    })?;
    let state = checkpoint::load_state(&ckpt)?;
    let selected = backend::select(backend_override.unwrap_or(cfg.backend))?;
    info!(backend = selected.name, adapter = %selected.adapter, checkpoint = %ckpt.display(), "evaluating");
    if state.epoch < cfg.train.epochs {
        warn!(
            "evaluating an unfinished run: checkpoint after epoch {} of {}",
            state.epoch, cfg.train.epochs
        );
    }
    let data = Datasets::load(&cfg.data);
    if let Ok(manifest) = Manifest::read(dir) {
        for entry in &manifest.datasets {
            let now = std::iter::once(&data.train)
                .chain(std::iter::once(&data.test))
                .chain(data.ood.iter().map(|(s, _)| s))
                .chain(std::iter::once(&data.outliers))
                .find(|s| s.name == entry.name);
            if let Some(set) = now
                && set.content_hash() != entry.sha256
            {
                warn!(
                    "dataset `{}` differs from the one recorded when the run was trained",
                    entry.name
                );
            }
        }
    }
    let model = Classifier::new(&cfg.model, data.num_classes, &selected.device);
    let model = checkpoint::load_model(&ckpt, model)?;
    let results = evaluate_model(&model, &data, &state.normalizer, cfg, &selected.device)?;
    write_results(dir, &cfg.name, &results)?;
    Ok(results)
}
