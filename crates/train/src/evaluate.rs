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
use oodforge_eval::aggregate::Aggregate;
use oodforge_eval::cache::{self, CacheError};
use oodforge_eval::metrics::ood_metrics;
use oodforge_eval::plots::Scores;
use oodforge_eval::postprocess::Head;
use oodforge_eval::postprocess::fitted::{needs_features, needs_train_features};
use oodforge_eval::report::evaluate_scored;
use oodforge_eval::{Fitted, Logits, OodOutputs, Reference, Results, SetOutputs, aps};
use oodforge_models::Classifier;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tracing::{info, warn};

/// The run folder's `outputs/`: network outputs per dataset, keyed by the weights that produced
/// them (see `oodforge_eval::cache`).
#[derive(Debug, Clone)]
pub struct OutputCache {
    pub dir: PathBuf,
    /// SHA-256 of the checkpoint or weights file.
    pub model_key: String,
}

impl OutputCache {
    pub const DIR: &'static str = "outputs";

    /// The cache of `run_dir` for the weights in `weights`: a weights file, or a checkpoint
    /// folder (its `model.bpk`; the normaliser of its state enters through the pipeline).
    pub fn new(run_dir: &Path, weights: &Path) -> Result<Self, TrainError> {
        let file = if weights.is_dir() {
            weights.join("model.bpk")
        } else {
            weights.to_path_buf()
        };
        let bytes = std::fs::read(&file).map_err(|source| TrainError::Io { path: file, source })?;
        Ok(Self {
            dir: run_dir.join(Self::DIR),
            model_key: oodforge_core::config::hex(&Sha256::digest(&bytes)),
        })
    }

    /// What a set's outputs depend on: the weights, the set's listing and the test transform.
    fn key(&self, set: &Source, pipeline: &Pipeline, extra: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.model_key.as_bytes());
        h.update(set.fingerprint().as_bytes());
        h.update(format!("{pipeline:?}{extra}").as_bytes());
        oodforge_core::config::hex(&h.finalize())
    }

    fn path(&self, stem: &str) -> PathBuf {
        let clean: String = stem
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(format!("{clean}.safetensors"))
    }
}

fn cache_err(e: CacheError) -> TrainError {
    TrainError::Cache(e)
}

/// `infer`, through the cache when there is one: a stored file with the same key (and the
/// features, when they are needed) is read instead of running the network.
#[allow(clippy::too_many_arguments)]
fn outputs(
    cache: Option<&OutputCache>,
    stem: &str,
    model: &Classifier,
    set: &Source,
    pipeline: &Pipeline,
    cfg: &ExperimentConfig,
    device: &Device,
    features: bool,
    with_labels: bool,
) -> Result<SetOutputs, TrainError> {
    let Some(cache) = cache else {
        return infer(model, set, pipeline, cfg, device, features);
    };
    let (path, key) = (cache.path(stem), cache.key(set, pipeline, ""));
    match cache::read_set(&path, &key, features) {
        Ok(Some(hit)) if hit.outputs.logits.len() == set.len() => {
            info!(set = set.name(), file = %path.display(), "cached outputs");
            return Ok(hit.outputs);
        }
        Ok(_) => {}
        // A damaged cache is recomputed, not fatal: it holds nothing that cannot be rebuilt.
        Err(e) => warn!("{e}; recomputing"),
    }
    let out = infer(model, set, pipeline, cfg, device, features)?;
    let labels: Option<Vec<usize>> =
        with_labels.then(|| (0..set.len()).map(|i| set.label(i)).collect());
    cache::write_set(&path, &key, &out, labels.as_deref()).map_err(cache_err)?;
    Ok(out)
}

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
    let mut embeddings = Vec::new();
    let mut classes = 0;
    for batch in test_batches(set, pipeline, cfg) {
        let batch = batch?;
        let x = Tensor::<4>::from_data(TensorData::new(batch.images, batch.shape), device);
        let out = model.forward(x);
        classes = out.logits.dims()[1];
        logits.extend(host(out.logits));
        if features {
            feats.extend(host(out.features).into_iter().map(f64::from));
            if let Some(e) = out.embedding {
                embeddings.extend(host(e));
            }
        }
    }
    Ok(SetOutputs {
        logits: Logits::new(logits, classes.max(1)),
        features: feats,
        external: Vec::new(),
        embeddings,
    })
}

/// ODIN's scores of every image of `set` (cached per setting). `net` is the inference-mode
/// network moved to the autodiff device `ad`, for the input gradient.
#[allow(clippy::too_many_arguments)]
fn odin_scores(
    cache: Option<&OutputCache>,
    stem: &str,
    net: &Classifier,
    set: &Source,
    pipeline: &Pipeline,
    cfg: &ExperimentConfig,
    ad: &Device,
    odin: &Odin,
) -> Result<Vec<f64>, TrainError> {
    let setting = format!("odin_t{}_n{}", odin.temperature, odin.noise);
    let place = cache.map(|c| {
        (
            c.path(&format!("{stem}.{setting}")),
            c.key(set, pipeline, &setting),
        )
    });
    if let Some((path, key)) = &place {
        match cache::read_scores(path, key) {
            Ok(Some(conf)) if conf.len() == set.len() => return Ok(conf),
            Ok(_) => {}
            Err(e) => warn!("{e}; recomputing"),
        }
    }
    let conf = odin_pass(net, set, pipeline, cfg, ad, odin)?;
    if let Some((path, key)) = &place {
        cache::write_scores(path, key, &conf).map_err(cache_err)?;
    }
    Ok(conf)
}

fn odin_pass(
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
/// when a score is fitted on its features, over the validation sets for ReAct and APS, and
/// ODIN's passes with the input gradient); the fitted statistics are computed once and reused
/// for every set and every setting APS tries.
pub fn evaluate_model(
    model: &Classifier,
    data: &Datasets,
    norm: &Normalizer,
    cfg: &ExperimentConfig,
    device: &Device,
    cache: Option<&OutputCache>,
) -> Result<(Results, Vec<Scores>), TrainError> {
    let pipeline = Pipeline::Test {
        pre_size: cfg.data.pre_size.unwrap_or(cfg.data.image_size),
        image_size: cfg.data.image_size,
        square: cfg.data.square_resize,
        norm: *norm,
    };
    let pps = &cfg.eval.postprocessors;
    let features = pps.iter().any(needs_features);
    let run = |stem: &str, set: &Source, features: bool, labels: bool| {
        outputs(
            cache, stem, model, set, &pipeline, cfg, device, features, labels,
        )
    };
    let ood_stem = |set: &Source| format!("ood_{}", set.name());
    let mut id = run("id_test", &data.test, features, true)?;
    let mut ood = Vec::new();
    for (set, group) in &data.ood {
        ood.push(OodOutputs {
            name: set.name().to_owned(),
            group: *group,
            outputs: run(&ood_stem(set), set, features, false)?,
        });
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
        let out = run("id_train", &data.train, true, true)?;
        let labels: Vec<usize> = (0..data.train.len()).map(|i| data.train.label(i)).collect();
        Some((out.features, labels))
    } else {
        None
    };
    let needs_val = pps
        .iter()
        .any(|p| matches!(p, PostprocessorConfig::React { .. }));
    let val = match (&data.val, needs_val) {
        (Some(v), true) => Some(run("id_val", v, true, true)?.features),
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

    // ODIN runs beside the network, on its autodiff flavour: one move of the network, made
    // only when some ODIN setting is scored.
    let ad = device.clone().autodiff();
    let mut odin_net: Option<Classifier> = None;
    let mut odin = |setting: &PostprocessorConfig, stem: &str, set: &Source| {
        let PostprocessorConfig::Odin { temperature, noise } = setting else {
            unreachable!("ODIN settings only")
        };
        let net = odin_net.get_or_insert_with(|| model.clone().to_device(&ad));
        let o = Odin {
            temperature: *temperature,
            noise: *noise,
            std: norm.std.map(f64::from),
        };
        odin_scores(cache, stem, net, set, &pipeline, cfg, &ad, &o)
    };

    // APS: each post-processor's setting, searched on ID val vs val OOD (METHODS §8.5). A
    // post-processor is searched when its OpenOOD grid has more than one fittable setting.
    let feature_dim = head.as_ref().map_or(0, |h| h.dim);
    let train_count = train_features.len() / feature_dim.max(1);
    let grids: Vec<Vec<PostprocessorConfig>> = pps
        .iter()
        .map(|pp| {
            let grid = aps::grid(pp, feature_dim, train_count);
            if cfg.eval.aps && grid.len() > 1 {
                grid
            } else {
                Vec::new()
            }
        })
        .collect();
    let val_sets = if grids.iter().any(|g| !g.is_empty()) {
        let (Some(v), Some(vo)) = (&data.val, &data.val_ood) else {
            return Err(TrainError::Options(
                "eval.aps = true needs the benchmark's ID validation and validation OOD lists (OpenOOD benchmarks and the built-in data have them; this data source does not)".into(),
            ));
        };
        Some((
            (v, run("id_val", v, features, true)?),
            (vo, run("val_ood", vo, features, false)?),
        ))
    } else {
        None
    };
    // (setting, its APS record, the statistics the search already fitted for it)
    let mut chosen = Vec::with_capacity(pps.len());
    for (pp, grid) in pps.iter().zip(grids) {
        let Some(((v, val_id), (vo, val_ood))) = val_sets.as_ref().filter(|_| !grid.is_empty())
        else {
            chosen.push((pp.clone(), None, None));
            continue;
        };
        let mut fits: Vec<(PostprocessorConfig, Fitted)> = Vec::new();
        let record = aps::search(grid, pp, |setting| -> Result<f64, TrainError> {
            let (conf_id, conf_ood) = if matches!(setting, PostprocessorConfig::Odin { .. }) {
                (odin(setting, "id_val", v)?, odin(setting, "val_ood", vo)?)
            } else {
                let previous = fits.last().map(|(_, f)| f);
                let f = Fitted::refit(previous, setting, reference.as_ref())?;
                let scores = (f.score(val_id), f.score(val_ood));
                fits.push((setting.clone(), f));
                scores
            };
            Ok(ood_metrics(&conf_id, &conf_ood).auroc)
        })?;
        info!(postprocessor = pp.label(), chosen = ?record.chosen, val_auroc = record.val_auroc, "APS");
        let fitted = fits
            .into_iter()
            .find(|(s, _)| *s == record.chosen)
            .map(|(_, f)| f);
        chosen.push((record.chosen.clone(), Some(record), fitted));
    }

    for (pp, _, _) in &chosen {
        if matches!(pp, PostprocessorConfig::Odin { .. }) {
            let conf = odin(pp, "id_test", &data.test)?;
            id.external.push((pp.label().to_owned(), conf));
            for (o, (set, _)) in ood.iter_mut().zip(&data.ood) {
                let conf = odin(pp, &ood_stem(set), set)?;
                o.outputs.external.push((pp.label().to_owned(), conf));
            }
        }
    }
    let mut records = Vec::with_capacity(chosen.len());
    let mut fitted = Vec::with_capacity(chosen.len());
    for (pp, record, fit) in chosen {
        let fit = match fit {
            Some(f) => f,
            None => Fitted::fit(&pp, reference.as_ref())?,
        };
        records.push((pp.label(), record));
        fitted.push((pp, fit));
    }
    let labels: Vec<usize> = (0..data.test.len()).map(|i| data.test.label(i)).collect();
    let (mut results, scores) = evaluate_scored(&id, &labels, &ood, &fitted, &cfg.eval.convention)?;
    for (label, record) in records {
        if let Some(r) = results.postprocessors.get_mut(label) {
            r.aps = record;
        }
    }
    Ok((results, scores))
}

/// Into `dir` (created if needed): the tables (`results.json` / `.md` / `.csv` / `.tex`) and,
/// unless `[eval] plots = false`, the pictures (`plots/<postprocessor>_{hist,roc}.png`).
pub fn write_results(
    dir: &Path,
    cfg: &ExperimentConfig,
    results: &Results,
    scores: &[Scores],
) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(|source| TrainError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let title = &cfg.name;
    if cfg.eval.plots {
        oodforge_eval::plots::write_all(&dir.join("plots"), title, scores)?;
    }
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

/// What `eval` may change about an evaluation: everything under `[eval]`, which OOD sets are
/// scored, and where the tables go. The network, data and weights stay those of the run.
#[derive(Debug, Clone, Default)]
pub struct EvalOptions {
    pub backend: Option<BackendChoice>,
    /// `KEY=VALUE` overrides; with `--run` only `eval.*` keys.
    pub overrides: Vec<String>,
    /// Post-processor names (each with OpenOOD's default settings), replacing the config's list.
    pub postprocessors: Option<Vec<String>>,
    /// A metric convention name (`openood`, `oe`, `energy`, `palm`, `mixoe`).
    pub convention: Option<String>,
    /// Only these OOD sets (by name).
    pub ood_sets: Option<Vec<String>>,
    /// Folder for the tables; the run folder when `None`.
    pub out: Option<PathBuf>,
}

impl EvalOptions {
    /// The option flags as config overrides (after `--set`), so they are validated like a config.
    fn all_overrides(&self) -> Result<Vec<String>, TrainError> {
        let mut out = self.overrides.clone();
        if let Some(names) = &self.postprocessors {
            let list: Vec<String> = names
                .iter()
                .map(|n| format!("{{ name = \"{}\" }}", n.trim()))
                .collect();
            out.push(format!("eval.postprocessors=[{}]", list.join(", ")));
        }
        if let Some(name) = &self.convention {
            if oodforge_core::config::MetricConvention::from_name(name).is_none() {
                return Err(TrainError::Options(format!(
                    "--convention `{name}` is unknown, expected one of {}",
                    oodforge_core::config::MetricConvention::NAMES.join(", ")
                )));
            }
            out.push(format!("eval.convention={{ name = \"{name}\" }}"));
        }
        Ok(out)
    }
}

/// Keep only the OOD sets `names` lists; an unknown name is an error listing the known ones.
fn select_ood(data: &mut Datasets, names: &Option<Vec<String>>) -> Result<(), TrainError> {
    let Some(names) = names else {
        return Ok(());
    };
    let known: Vec<String> = data.ood.iter().map(|(s, _)| s.name().to_owned()).collect();
    for n in names {
        if !known.contains(n) {
            return Err(TrainError::Options(format!(
                "--ood `{n}` is not an OOD set of this config, expected some of: {}",
                known.join(", ")
            )));
        }
    }
    data.ood
        .retain(|(s, _)| names.iter().any(|n| n == s.name()));
    Ok(())
}

/// `eval --run DIR`: evaluate the last checkpoint of a run and (re)write its results.
pub fn evaluate_run(
    dir: &Path,
    backend_override: Option<BackendChoice>,
) -> Result<Results, TrainError> {
    evaluate_run_with(
        dir,
        &EvalOptions {
            backend: backend_override,
            ..Default::default()
        },
    )
}

/// `eval --run DIR [options]`: the last checkpoint of a run, with the `[eval]` section, OOD sets
/// and output folder of `options`. Network outputs come from (and go to) the run's `outputs/`.
pub fn evaluate_run_with(dir: &Path, options: &EvalOptions) -> Result<Results, TrainError> {
    let overrides = options.all_overrides()?;
    if let Some(bad) = overrides
        .iter()
        .find(|o| !o.trim_start().starts_with("eval."))
    {
        return Err(TrainError::Options(format!(
            "--set `{bad}`: a trained run keeps its model, data and training settings; only `eval.*` keys can be changed (use `eval --config` to evaluate other settings)"
        )));
    }
    let resolved = if overrides.is_empty() {
        read_resolved(dir)?
    } else {
        oodforge_core::config::load(&dir.join(run::RESOLVED), &overrides)?
    };
    let cfg = &resolved.config;
    let ckpt = checkpoint::latest(&dir.join(run::CHECKPOINTS))?.ok_or_else(|| {
        TrainError::NothingToEvaluate {
            path: dir.to_path_buf(),
        }
    })?;
    let state = checkpoint::load_state(&ckpt)?;
    let selected = backend::select(options.backend.unwrap_or(cfg.backend))?;
    info!(backend = selected.name, adapter = %selected.adapter, checkpoint = %ckpt.display(), "evaluating");
    if state.epoch < cfg.train.epochs {
        warn!(
            "evaluating an unfinished run: checkpoint after epoch {} of {}",
            state.epoch, cfg.train.epochs
        );
    }
    let mut data = Datasets::load(&cfg.data)?;
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
    select_ood(&mut data, &options.ood_sets)?;
    let model = Classifier::new(
        &cfg.model,
        data.num_classes,
        cfg.data.image_size,
        &selected.device,
    );
    let model = checkpoint::load_model(&ckpt, model)?;
    let cache = OutputCache::new(dir, &ckpt)?;
    let (results, scores) = evaluate_model(
        &model,
        &data,
        &state.normalizer,
        cfg,
        &selected.device,
        Some(&cache),
    )?;
    write_results(
        options.out.as_deref().unwrap_or(dir),
        cfg,
        &results,
        &scores,
    )?;
    Ok(results)
}

/// `eval --runs DIR... --out DIR`: evaluate every run the same way (`options`; each through its
/// own output cache) and write the mean ± std tables into `out`. The runs' own results files
/// are left as they are.
pub fn evaluate_runs(
    dirs: &[PathBuf],
    out: &Path,
    options: &EvalOptions,
) -> Result<Aggregate, TrainError> {
    let mut all = Vec::with_capacity(dirs.len());
    let mut title = String::new();
    for dir in dirs {
        // Per-run tables go under `out/<run folder name>/`, not into the run.
        let name = dir.file_name().map_or_else(
            || dir.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let per_run = EvalOptions {
            out: Some(out.join(&name)),
            ..options.clone()
        };
        let results = evaluate_run_with(dir, &per_run)?;
        if title.is_empty() {
            title = read_resolved(dir)?.config.name;
        }
        all.push((dir.display().to_string(), results));
    }
    let agg = Aggregate::of(&all).map_err(|e| TrainError::Options(e.to_string()))?;
    write_atomic(
        &out.join(run::RESULTS_JSON),
        &serde_json::to_vec_pretty(&agg).expect("aggregate serializes"),
    )?;
    write_atomic(
        &out.join(run::RESULTS_MD),
        agg.to_markdown(&title).as_bytes(),
    )?;
    write_atomic(&out.join(run::RESULTS_CSV), agg.to_csv().as_bytes())?;
    write_atomic(&out.join(run::RESULTS_TEX), agg.to_latex(&title).as_bytes())?;
    Ok(agg)
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
    evaluate_weights_with(
        config,
        out,
        &EvalOptions {
            backend: backend_override,
            overrides: overrides.to_vec(),
            ..Default::default()
        },
    )
}

/// `eval --config FILE --out DIR [options]`.
pub fn evaluate_weights_with(
    config: &Path,
    out: &Path,
    options: &EvalOptions,
) -> Result<Results, TrainError> {
    let backend_override = options.backend;
    let resolved = oodforge_core::config::load(config, &options.all_overrides()?)?;
    let cfg = &resolved.config;
    let Some(weights) = &cfg.model.weights else {
        return Err(TrainError::NoWeights {
            path: config.to_path_buf(),
        });
    };
    let selected = backend::select(backend_override.unwrap_or(cfg.backend))?;
    let mut data = Datasets::load(&cfg.data)?;
    select_ood(&mut data, &options.ood_sets)?;
    let mut model = Classifier::new(
        &cfg.model,
        data.num_classes,
        cfg.data.image_size,
        &selected.device,
    );
    let (loaded, what) = crate::checkpoint::load_initial_weights(&mut model, weights)?;
    info!(backend = selected.name, weights = %weights.path, "evaluating weights: {what}");
    let norm = data.normalizer(&cfg.data)?;
    // Keyed by what was loaded: a run folder's newest checkpoint, not the folder itself.
    let cache = OutputCache::new(out, &loaded)?;
    let (results, scores) =
        evaluate_model(&model, &data, &norm, cfg, &selected.device, Some(&cache))?;
    write_results(out, cfg, &results, &scores)?;
    Ok(results)
}
