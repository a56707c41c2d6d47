//! Run the network once over every evaluation set, then score in plain Rust
//! (`oodforge_eval`), and write `results.json` / `results.md`.

use crate::checkpoint::{self, write_atomic};
use crate::error::TrainError;
use crate::run::{self, Manifest};
use crate::trainer::read_resolved;
use burn::tensor::{Device, Tensor, TensorData};
use oodforge_core::backend;
use oodforge_core::config::{BackendChoice, ExperimentConfig};
use oodforge_core::rng::Purpose;
use oodforge_data::{Datasets, Normalizer, Pipeline, Prefetch, Source, loader, make_batch};
use oodforge_eval::{Logits, OodOutputs, Results, evaluate};
use oodforge_models::Classifier;
use std::path::Path;
use tracing::{info, warn};

/// Logits of every image of `set`, in order (inference mode: BatchNorm uses running statistics).
/// Batches are decoded and transformed ahead of the network on the loader's threads.
pub fn infer(
    model: &Classifier,
    set: &Source,
    pipeline: &Pipeline,
    cfg: &ExperimentConfig,
    device: &Device,
) -> Result<Logits, TrainError> {
    let n = set.len();
    let bs = cfg.data.eval_batch_size;
    let (src, pipe) = (Source::clone(set), pipeline.clone());
    let batches = Prefetch::new(
        n.div_ceil(bs),
        loader::default_workers(cfg.data.loader.workers),
        cfg.data.loader.prefetch,
        move |k| {
            let idx: Vec<usize> = (k * bs..((k + 1) * bs).min(n)).collect();
            make_batch(src.as_ref(), &idx, &pipe, 0, Purpose::Augment, 0, 0)
        },
    );
    let mut data = Vec::new();
    let mut classes = 0;
    for batch in batches {
        let batch = batch?;
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
    Ok(Logits::new(data, classes.max(1)))
}

/// Evaluate a model (on a non-autodiff device) on the ID test set and every OOD set.
pub fn evaluate_model(
    model: &Classifier,
    data: &Datasets,
    norm: &Normalizer,
    cfg: &ExperimentConfig,
    device: &Device,
) -> Result<Results, TrainError> {
    let pipeline = Pipeline::Test {
        pre_size: cfg.data.pre_size.unwrap_or(cfg.data.image_size),
        image_size: cfg.data.image_size,
        norm: *norm,
    };
    let id_logits = infer(model, &data.test, &pipeline, cfg, device)?;
    let mut ood = Vec::new();
    for (set, group) in &data.ood {
        ood.push(OodOutputs {
            name: set.name().to_owned(),
            group: *group,
            logits: infer(model, set, &pipeline, cfg, device)?,
        });
    }
    let labels: Vec<usize> = (0..data.test.len()).map(|i| data.test.label(i)).collect();
    Ok(evaluate(
        &id_logits,
        &labels,
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
    let data = Datasets::load(&cfg.data)?;
    if let Ok(manifest) = Manifest::read(dir) {
        for entry in &manifest.datasets {
            let now = std::iter::once(&data.train)
                .chain(std::iter::once(&data.test))
                .chain(data.ood.iter().map(|(s, _)| s))
                .chain(data.outliers.iter())
                .find(|s| s.name() == entry.name);
            if let Some(set) = now
                && set.fingerprint() != entry.sha256
            {
                warn!(
                    "dataset `{}` differs from the one recorded when the run was trained",
                    entry.name
                );
            }
        }
    }
    let model = Classifier::new(
        &cfg.model,
        data.num_classes,
        cfg.data.image_size,
        &selected.device,
    );
    let model = checkpoint::load_model(&ckpt, model)?;
    let results = evaluate_model(&model, &data, &state.normalizer, cfg, &selected.device)?;
    write_results(dir, &cfg.name, &results)?;
    Ok(results)
}

/// `eval --config FILE`: evaluate the network of a config with the weights its `model.weights`
/// names (an OpenOOD or OE checkpoint, torchvision or timm weights) without training, and write
/// `results.json` / `results.md` into `out`.
pub fn evaluate_weights(
    config: &Path,
    overrides: &[String],
    out: &Path,
    backend_override: Option<BackendChoice>,
) -> Result<Results, TrainError> {
    let resolved = oodforge_core::config::load(config, overrides)?;
    let cfg = &resolved.config;
    let Some(weights) = &cfg.model.weights else {
        return Err(TrainError::NoWeights {
            path: config.to_path_buf(),
        });
    };
    let selected = backend::select(backend_override.unwrap_or(cfg.backend))?;
    let data = Datasets::load(&cfg.data)?;
    let mut model = Classifier::new(
        &cfg.model,
        data.num_classes,
        cfg.data.image_size,
        &selected.device,
    );
    let report =
        oodforge_models::load_weights(&mut model, Path::new(&weights.path), weights.reset_head)?;
    info!(backend = selected.name, weights = %weights.path, tensors = report.loaded, "evaluating imported weights");
    let norm = data.normalizer(&cfg.data)?;
    let results = evaluate_model(&model, &data, &norm, cfg, &selected.device)?;
    std::fs::create_dir_all(out).map_err(|source| TrainError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    write_results(out, &cfg.name, &results)?;
    Ok(results)
}
