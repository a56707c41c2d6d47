//! Attention-MIL training on feature bags (AEM's setting): the shipped config trains on the
//! built-in bags, selects its epoch by val F1 + val AUC and reaches a high test AUROC; the real
//! HDF5 + CSV format trains end to end; a stopped and resumed run equals an uninterrupted one for
//! both aggregators, stopped mid-epoch included; and the AdamW the configs name updates as
//! `torch.optim.AdamW`.

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use oodforge_core::backend;
use oodforge_core::config::{self, BackendChoice, OptimConfig, ResolvedConfig};
use oodforge_models::MilModel;
use oodforge_testutil::{device_rng, metrics_lines};
use oodforge_train::mil::{EPOCHS, EpochMetrics, MilResults, select};
use oodforge_train::trainer::optimizer;
use oodforge_train::{TrainOptions, TrainOutcome, checkpoint, resume, train};
use std::path::{Path, PathBuf};

/// `f` holding `device_rng` (see there): `train` seeds the device's global RNG (initial
/// weights, dropout), so runs take turns, and so does every other draw from it (a model built
/// to load a checkpoint into), which would shift a run's draws if it came in the middle of them.
fn locked<T>(f: impl FnOnce() -> T) -> T {
    let _guard = device_rng();
    f()
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

fn load(config: &str, overrides: &[&str]) -> ResolvedConfig {
    let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    config::load(&repo(&format!("configs/{config}")), &o).unwrap_or_else(|e| panic!("{e}"))
}

fn opts(out: &Path) -> TrainOptions {
    TrainOptions {
        out: Some(out.to_path_buf()),
        backend: Some(BackendChoice::Flex),
        ..Default::default()
    }
}

fn run(cfg: &ResolvedConfig, out: &Path) -> TrainOutcome {
    locked(|| train(cfg, &opts(out))).unwrap_or_else(|e| panic!("{e}"))
}

fn jsonl(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn aem_trains_abmil_on_synthetic_bags_and_selects_by_validation() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("run");
    let cfg = load("synthetic_bags_aem.toml", &["train.log_every=1"]);
    let out = run(&cfg, &out_dir);
    assert!(out.finished && out.results.is_none());
    let res = out.mil_results.expect("a finished bag run has results");

    // The results file is what the outcome says.
    let file: MilResults =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("results.json")).unwrap())
            .unwrap();
    assert_eq!(file, res);
    assert_eq!(res.slides, [120, 40, 60]);
    assert!(out_dir.join("results.md").is_file());

    // The selected epoch is the first with the highest val F1 + val AUC of the per-epoch record.
    let history: Vec<EpochMetrics> =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join(EPOCHS)).unwrap()).unwrap();
    assert_eq!(history.len(), 6);
    let scores: Vec<f64> = history
        .iter()
        .map(|m| {
            let v = m.val.unwrap();
            v.f1 + v.auroc.unwrap()
        })
        .collect();
    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let first_best = scores.iter().position(|s| *s == max).unwrap() + 1;
    assert_eq!(res.selected.epoch, first_best, "{scores:?}");
    assert_eq!(res.selected, history[first_best - 1]);
    assert_eq!(res.last, history[5]);
    assert_eq!(
        res.selected_checkpoint.as_deref(),
        Some(format!("checkpoints/epoch-{first_best:04}").as_str())
    );

    // The key instances are learnable: the selected model separates the test bags.
    let test = res.selected.test;
    assert!(test.auroc.unwrap() > 0.95, "{test:?}");
    assert!(test.accuracy > 0.85 && test.f1 > 0.85, "{test:?}");

    // Every step logs the CE and the attention's negative entropy; CE falls.
    let steps: Vec<_> = jsonl(&out_dir)
        .into_iter()
        .filter(|v| v["kind"] == "step")
        .collect();
    assert_eq!(steps.len(), 720);
    let ce: Vec<f64> = steps.iter().map(|s| s["ce"].as_f64().unwrap()).collect();
    let ne: Vec<f64> = steps
        .iter()
        .map(|s| s["neg_entropy"].as_f64().unwrap())
        .collect();
    assert!(ce.iter().chain(&ne).all(|v| v.is_finite()));
    // A bag of n instances has entropy at most ln n (ln 48 < 3.9).
    assert!(ne.iter().all(|v| *v <= 1e-6 && *v >= -3.9), "{ne:?}");
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    assert!(
        mean(&ce[600..]) < 0.5 * mean(&ce[..120]),
        "CE {} -> {}",
        mean(&ce[..120]),
        mean(&ce[600..])
    );
}

/// `select` keeps the first best epoch and falls back to the last without validation slides.
#[test]
fn selection_rule() {
    let m = |epoch, val: Option<(f64, f64)>| EpochMetrics {
        epoch,
        val: val.map(|(f1, auc)| oodforge_eval::ClassificationMetrics {
            accuracy: 0.5,
            auroc: Some(auc),
            f1,
        }),
        test: oodforge_eval::ClassificationMetrics {
            accuracy: 0.5,
            auroc: None,
            f1: 0.0,
        },
    };
    let h = [
        m(1, Some((0.5, 0.6))),
        m(2, Some((0.7, 0.9))),
        m(3, Some((0.9, 0.7))),
        m(4, Some((0.1, 0.2))),
    ];
    assert_eq!(select(&h).unwrap().epoch, 2);
    let h = [m(1, None), m(2, None)];
    assert_eq!(select(&h).unwrap().epoch, 2);
    assert!(select(&[]).is_none());
}

/// A run stopped after 2 epochs and resumed ends with the same weights, optimiser state and
/// per-epoch metrics as one that ran through: ABMIL, and the MHA aggregator whose dropout draws
/// from the device RNG (re-seeded per epoch).
#[test]
fn bag_runs_resume_exactly() {
    for backbone in [
        &["model.backbone=abmil"][..],
        &["model={backbone=\"mil_mha\", d_inner=32}"][..],
    ] {
        let mut o = vec![
            "data.source.train_bags=30",
            "data.source.val_bags=10",
            "data.source.test_bags=10",
            "train.epochs=4",
        ];
        o.extend_from_slice(backbone);
        let cfg = load("synthetic_bags_aem.toml", &o);
        let dir = tempfile::tempdir().unwrap();
        let (straight, split) = (dir.path().join("a"), dir.path().join("b"));
        run(&cfg, &straight);
        let first = locked(|| {
            train(
                &cfg,
                &TrainOptions {
                    stop_after: Some(2),
                    ..opts(&split)
                },
            )
        })
        .unwrap();
        assert!(!first.finished && first.mil_results.is_none());
        // A stop request (SIGINT/SIGTERM) one slide into epoch 3: a mid-epoch checkpoint.
        let stop = oodforge_train::StopRequest::new();
        stop.request(2);
        let mid = locked(|| {
            resume(
                &split,
                &TrainOptions {
                    stop,
                    ..opts(&split)
                },
            )
        })
        .unwrap();
        let stopped = mid.stopped.expect("stopped inside epoch 3");
        assert_eq!((stopped.epoch, stopped.step), (3, 61), "{backbone:?}");
        assert!(stopped.checkpoint.ends_with("epoch-0002-step-00000061"));
        let second = locked(|| resume(&split, &opts(&split))).unwrap();
        assert!(second.finished);
        // The same log, wall-clock fields aside (the resumed epoch carries its sums over).
        assert_eq!(
            metrics_lines(&straight),
            metrics_lines(&split),
            "{backbone:?}"
        );
        // Two more epochs after the resume: a wrong optimiser state would show in the weights.
        let a = weights(&cfg, &straight, 4);
        assert!(a.len() > 1000);
        assert!(
            a == weights(&cfg, &split, 4),
            "{backbone:?}: weights differ after resume"
        );
        // Per-epoch metrics (read back and rewritten by the resumed session) and the selection.
        let e = |d: &Path| std::fs::read_to_string(d.join(EPOCHS)).unwrap();
        assert_eq!(e(&straight), e(&split), "{backbone:?}");
        assert_eq!(
            std::fs::read_to_string(straight.join("results.json")).unwrap(),
            std::fs::read_to_string(split.join("results.json")).unwrap()
        );
        // Not vacuous: training moved the weights.
        assert!(a != weights(&cfg, &straight, 1));
    }
}

struct Collect(Vec<f32>);
impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0
            .extend(param.val().into_data().try_to_vec::<f32>().unwrap());
    }
}

/// Every parameter of a run's checkpoint after `epoch`.
fn weights(cfg: &ResolvedConfig, run: &Path, epoch: usize) -> Vec<f32> {
    let ckpt = run
        .join("checkpoints")
        .join(checkpoint::checkpoint_name(epoch));
    let device = Device::flex();
    // Its initial draws would shift those of a run in another thread.
    let model = locked(|| MilModel::new(&cfg.config.model, 32, 2, &device)).unwrap();
    let model = checkpoint::load_model(&ckpt, model).unwrap();
    let mut c = Collect(Vec::new());
    model.visit(&mut c);
    c.0
}

/// The real format end to end: the HDF5 file and label CSV written by h5py (data fixtures),
/// split by CAMELYON16's rule (the `test_*` slide is the test set).
#[test]
fn camelyon16_config_trains_on_an_hdf5_feature_file() {
    let fx = repo("crates/data/tests/fixtures");
    let features = format!("data.source.features={}", fx.join("bags.h5").display());
    let labels = format!("data.source.labels={}", fx.join("camelyon16.csv").display());
    let cfg = load(
        "camelyon16_aem.toml",
        &[&features, &labels, "train.epochs=2", "model.d_inner=16"],
    );
    let dir = tempfile::tempdir().unwrap();
    let out = run(&cfg, &dir.path().join("run"));
    let res = out.mil_results.unwrap();
    assert_eq!(res.dataset, "camelyon16");
    assert_eq!(res.slides, [1, 1, 1]);
    // One test slide: accuracy is 0 or 1, AUROC undefined.
    assert!(res.selected.test.auroc.is_none());
    assert!([0.0, 1.0].contains(&res.selected.test.accuracy));
    let manifest = std::fs::read_to_string(dir.path().join("run/manifest.json")).unwrap();
    assert!(manifest.contains("camelyon16/test"), "{manifest}");
}

/// Three steps of our AdamW (the `optim.name = "adamw"` of the AEM configs) on
/// `L = 0.5 * sum(k * w^2)` equal `torch.optim.AdamW`'s update rule computed here in float64.
#[test]
fn adamw_is_torch_adamw() {
    let (lr0, betas, eps, wd) = (0.05, [0.8, 0.95], 1e-8, 0.1);
    let config = OptimConfig::AdamW {
        lr: lr0,
        betas,
        epsilon: eps,
        weight_decay: wd,
    };
    let device = backend::select(BackendChoice::Flex)
        .unwrap()
        .device
        .autodiff();
    let w0 = [0.5f64, -1.0, 2.0, 0.25, -0.75, 1.5];
    let k = [1.0f64, 2.0, 0.5, 3.0, 1.5, 0.1];
    let mut lin: Linear = locked(|| LinearConfig::new(3, 2).with_bias(false).init(&device));
    lin.weight = Param::from_tensor(Tensor::from_data(
        TensorData::new(w0.iter().map(|v| *v as f32).collect(), [3, 2]),
        &device,
    ));
    let kt = Tensor::<2>::from_data(
        TensorData::new(k.iter().map(|v| *v as f32).collect(), [3, 2]),
        &device,
    );
    let mut optim = optimizer(&config);
    let lrs = [0.05, 0.03, 0.01];
    for lr in lrs {
        let loss = (lin.weight.val().square() * kt.clone())
            .sum()
            .mul_scalar(0.5);
        let grads = GradientsParams::from_grads(loss.backward(), &lin);
        lin = optim.step(lr, lin, grads);
    }
    // torch/optim/adamw.py (single tensor, amsgrad off).
    let (mut p, mut m, mut v) = (w0, [0.0; 6], [0.0; 6]);
    for (t, lr) in lrs.iter().enumerate() {
        let t = t as i32 + 1;
        for i in 0..6 {
            let g = k[i] * p[i];
            p[i] *= 1.0 - lr * wd;
            m[i] = betas[0] * m[i] + (1.0 - betas[0]) * g;
            v[i] = betas[1] * v[i] + (1.0 - betas[1]) * g * g;
            let bc1 = 1.0 - betas[0].powi(t);
            let bc2 = 1.0 - betas[1].powi(t);
            let denom = v[i].sqrt() / bc2.sqrt() + eps;
            p[i] -= lr / bc1 * m[i] / denom;
        }
    }
    let got = lin.weight.val().into_data().try_to_vec::<f32>().unwrap();
    for i in 0..6 {
        assert!(
            (f64::from(got[i]) - p[i]).abs() < 2e-6,
            "w[{i}]: {} vs torch {}",
            got[i],
            p[i]
        );
        // Not vacuous: the weights moved by far more than the tolerance.
        assert!((p[i] - w0[i]).abs() > 1e-3);
    }
}
