//! Run the network once over every evaluation set, then score in plain Rust
//! (`oodforge_eval`), and write `results.json` / `results.md`.

use crate::checkpoint::{self, write_atomic};
use crate::error::TrainError;
use crate::odin::Odin;
use crate::run::{self, Manifest};
use crate::trainer::read_resolved;
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use oodforge_core::backend;
use oodforge_core::config::PostprocessorConfig;
use oodforge_core::config::{BackendChoice, ExperimentConfig};
use oodforge_core::rng::Purpose;
use oodforge_data::{Datasets, Normalizer, Pipeline, Prefetch, Source, loader, make_batch};
use oodforge_eval::postprocess::Head;
use oodforge_eval::postprocess::fitted::{needs_features, needs_train_features};
use oodforge_eval::{Fitted, Logits, OodOutputs, Reference, Results, SetOutputs, evaluate};
use oodforge_models::Classifier;
use std::path::Path;
use tracing::{info, warn};

/// Batches of `set` under the test transform, decoded ahead on the loader's threads.
fn test_batches(
    set: &Source,
    pipeline: &Pipeline,
    cfg: &ExperimentConfig,
) -> Prefetch<Result<oodforge_data::Batch, oodforge_data::DataError>> {
    let n = set.len();
    let bs = cfg.data.eval_batch_size;
    let (src, pipe) = (Source::clone(set), pipeline.clone());
    Prefetch::new(
        n.div_ceil(bs),
        loader::default_workers(cfg.data.loader.workers),
        cfg.data.loader.prefetch,
        move |k| {
            let idx: Vec<usize> = (k * bs..((k + 1) * bs).min(n)).collect();
            make_batch(src.as_ref(), &idx, &pipe, 0, Purpose::Augment, 0, 0)
        },
    )
}

fn host(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("float outputs")
}

/// Logits (and, with `features`, the penultimate features) of every image of `set`, in order,
/// in inference mode (BatchNorm uses running statistics).
pub fn infer(
    model: &Classifier,
    set: &Source,
    pipeline: &Pipeline,
    cfg: &ExperimentConfig,
    device: &Device,
    features: bool,
) -> Result<SetOutputs, TrainError> {
    let mut logits = Vec::new();
    let mut feats = Vec::new();
    let mut classes = 0;
    for batch in test_batches(set, pipeline, cfg) {
        let batch = batch?;
        let x = Tensor::<4>::from_data(TensorData::new(batch.images, batch.shape), device);
        let out = model.forward(x);
        classes = out.logits.dims()[1];
        logits.extend(host(out.logits));
        if features {
            feats.extend(host(out.features).into_iter().map(f64::from));
        }
    }
    Ok(SetOutputs {
        logits: Logits::new(logits, classes.max(1)),
        features: feats,
        external: Vec::new(),
    })
}

/// ODIN's scores of every image of `set`. `net` is the inference-mode network moved to the
/// autodiff device `ad`, for the input gradient.
fn odin_scores(
    net: &Classifier,
    set: &Source,
    pipeline: &Pipeline,
    cfg: &ExperimentConfig,
    ad: &Device,
    odin: &Odin,
) -> Result<Vec<f64>, TrainError> {
    let mut conf = Vec::with_capacity(set.len());
    for batch in test_batches(set, pipeline, cfg) {
        let batch = batch?;
        let images: Vec<f64> = batch.images.iter().map(|&v| f64::from(v)).collect();
        let out = odin.batch(|x| net.forward(x).logits, &images, batch.shape, ad);
        conf.extend(out.conf);
    }
    Ok(conf)
}

/// Evaluate a model (on a non-autodiff device) on the ID test set and every OOD set with every
/// configured post-processor. The network runs once per set (plus once over the ID training set
/// when a score is fitted on its features, and ODIN's two passes with the input gradient); the
/// fitted statistics are computed once and reused for every set.
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
    let pps = &cfg.eval.postprocessors;
    let features = pps.iter().any(needs_features);
    let mut id = infer(model, &data.test, &pipeline, cfg, device, features)?;
    let mut ood = Vec::new();
    for (set, group) in &data.ood {
        ood.push(OodOutputs {
            name: set.name().to_owned(),
            group: *group,
            outputs: infer(model, set, &pipeline, cfg, device, features)?,
        });
    }
    for pp in pps {
        if let PostprocessorConfig::Odin { temperature, noise } = pp {
            let odin = Odin {
                temperature: *temperature,
                noise: *noise,
                std: norm.std.map(f64::from),
            };
            // One move of the (inference-mode) network to the autodiff device for every set.
            let ad = device.clone().autodiff();
            let net = model.clone().to_device(&ad);
            let conf = odin_scores(&net, &data.test, &pipeline, cfg, &ad, &odin)?;
            id.external.push((pp.label().to_owned(), conf));
            for (o, (set, _)) in ood.iter_mut().zip(&data.ood) {
                let conf = odin_scores(&net, set, &pipeline, cfg, &ad, &odin)?;
                o.outputs.external.push((pp.label().to_owned(), conf));
            }
        }
    }

    // OpenOOD's `setup`: statistics of the ID training features (test transform), once.
    let head = features.then(|| {
        let w = host(model.head_weight());
        let b: Vec<f32> = model
            .head_bias()
            .into_data()
            .try_to_vec()
            .expect("float bias");
        Head::new(
            w.into_iter().map(f64::from).collect(),
            b.into_iter().map(f64::from).collect(),
            model.num_classes(),
            model.feature_dim(),
        )
    });
    let train = if pps.iter().any(needs_train_features) {
        info!("fitting post-processors on the ID training features");
        let out = infer(model, &data.train, &pipeline, cfg, device, true)?;
        let labels: Vec<usize> = (0..data.train.len()).map(|i| data.train.label(i)).collect();
        Some((out.features, labels))
    } else {
        None
    };
    let needs_val = pps
        .iter()
        .any(|p| matches!(p, PostprocessorConfig::React { .. }));
    let val = match (&data.val, needs_val) {
        (Some(v), true) => Some(infer(model, v, &pipeline, cfg, device, true)?.features),
        (None, true) => {
            warn!(
                "the ID data have no validation split: ReAct's percentile is taken over the ID training features instead"
            );
            None
        }
        _ => None,
    };
    let empty: (Vec<f64>, Vec<usize>) = (Vec::new(), Vec::new());
    let (train_features, train_labels) = train.as_ref().unwrap_or(&empty);
    let reference = head.as_ref().map(|head| Reference {
        head,
        train_features,
        train_labels,
        val_features: val.as_deref().unwrap_or(train_features),
    });
    let fitted = pps
        .iter()
        .map(|pp| Ok((pp.clone(), Fitted::fit(pp, reference.as_ref())?)))
        .collect::<Result<Vec<_>, oodforge_eval::EvalError>>()?;
    let labels: Vec<usize> = (0..data.test.len()).map(|i| data.test.label(i)).collect();
    Ok(evaluate(&id, &labels, &ood, &fitted, &cfg.eval.convention)?)
}

pub fn write_results(dir: &Path, title: &str, results: &Results) -> Result<(), TrainError> {
    let json = serde_json::to_vec_pretty(results).expect("results serialize");
    write_atomic(&dir.join(run::RESULTS_JSON), &json)?;
    write_atomic(
        &dir.join(run::RESULTS_MD),
        results.to_markdown(title).as_bytes(),
    )?;
    write_atomic(&dir.join(run::RESULTS_CSV), results.to_csv().as_bytes())?;
    write_atomic(
        &dir.join(run::RESULTS_TEX),
        results.to_latex(title).as_bytes(),
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
