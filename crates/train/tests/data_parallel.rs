//! Data-parallel training (`devices = [...]`) on CPU "devices" (replicas on flex): the same
//! weights as one device with the same global batch, for every image objective and uneven
//! chunks; with batch norm, per-device statistics, and resuming a data-parallel run is exact.

mod common;

use burn::module::Module;
use burn::tensor::Device;
use common::{Collect, final_weights, opts};
use oodforge_core::config::{self, ExperimentConfig, ResolvedConfig};
use oodforge_core::rng::{Purpose, derived_seed};
use oodforge_models::Classifier;
use oodforge_testutil::{device_rng, max_abs_diff, metrics_lines};
use oodforge_train::{TrainOptions, resume, train};
use std::path::Path;

// `train` seeds the device's global RNG and draws initial weights from it: every test holds
// `device_rng` (see there) for its whole body.

/// 3 classes x 20 images, batch 16: steps of 16, 16, 16 and 12 images, so three devices get
/// uneven chunks (6/6/4, and 4/4/4 for the last batch).
fn config(model: &str, objective: &str, devices: &str, epochs: usize) -> ResolvedConfig {
    config_with(model, objective, OUTLIERS, devices, epochs)
}

fn config_with(
    model: &str,
    objective: &str,
    data: &str,
    devices: &str,
    epochs: usize,
) -> ResolvedConfig {
    let text = format!(
        r#"
name = "dp"
seed = 3
backend = "flex"
devices = {devices}
[data]
batch_size = 16
eval_batch_size = 32
{data}
[data.source]
kind = "synthetic"
num_classes = 3
train_per_class = 20
test_per_class = 4
ood_per_set = 4
outliers = 48
[model]
{model}
[objective]
{objective}
[optim]
name = "sgd"
lr = 0.05
[train]
epochs = {epochs}
checkpoint_every = 1
log_every = 1
[eval]
after_training = false
"#
    );
    let cfg: ExperimentConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    config::resolve(cfg, Path::new("dp.toml")).unwrap_or_else(|e| panic!("{e}"))
}

const VIT: &str = "backbone = \"vit\"\npatch_size = 8\ndim = 16\ndepth = 2\nheads = 2";
const RESNET: &str = "backbone = \"resnet10\"\nwidth = 4";
const OUTLIERS: &str = "outlier_batch_size = 12";
const OE: &str = "name = \"oe\"\noe_weight = 0.5";

fn trained(cfg: &ResolvedConfig, dir: &Path, name: &str) -> Vec<f32> {
    let run = dir.join(name);
    let out = train(cfg, &opts(&run)).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(out.finished, "{name}");
    final_weights(&run, cfg)
}

/// The step losses a run logged.
fn losses(run: &Path) -> Vec<f64> {
    metrics_lines(run)
        .into_iter()
        .filter(|v| v["kind"] == "step")
        .map(|v| v["loss"].as_f64().unwrap())
        .collect()
}

/// A network without batch norm: N devices must train to the weights of one device on the
/// same global batch (the forward passes are scattered and gathered, the loss is the whole
/// batch's, so only the order of float sums differs), for every image objective, its
/// batch-level state included (PALM's prototypes, NP-Mix's queues), and with uneven chunks
/// (16 rows over 3 devices: 6/6/4; OE's joint forward of 16 + 12 rows: 10/10/8).
#[test]
fn several_devices_train_to_the_weights_of_one_with_the_same_global_batch() {
    let _rng = device_rng();
    let dir = tempfile::tempdir().unwrap();
    let vit_projection = format!("{VIT}\nprojection = {{ hidden = 16, dim = 8 }}");
    let vit_two_heads = format!("{VIT}\nprediction_heads = 2");
    let cases: [(&str, &str, &str, &str); 5] = [
        ("ce", VIT, "name = \"ce\"", ""),
        ("oe", VIT, OE, OUTLIERS),
        (
            "mixoe",
            VIT,
            "name = \"mixoe\"\nmix_op = \"mixup\"",
            "outlier_batch_size = 16",
        ),
        (
            "palm",
            &vit_projection,
            "name = \"palm\"\nprototypes_per_class = 2\ntop_k = 2",
            "views = 2",
        ),
        (
            "npmix",
            &vit_two_heads,
            "name = \"npmix\"\nqueue_size = 8\nstart_epoch = 0\na2d_weight = 0.5\na2d_outlier_weight = 0.5",
            "",
        ),
    ];
    for (what, model, objective, data) in cases {
        let one = trained(
            &config_with(model, objective, data, "[0]", 2),
            dir.path(),
            &format!("{what}1"),
        );
        // The initial weights, drawn as `train` draws them.
        let init = {
            let cfg = config_with(model, objective, data, "[0]", 2);
            let device = Device::flex().autodiff();
            device.seed(derived_seed(cfg.config.seed, Purpose::Init, 0, 0));
            let mut c = Collect(Vec::new());
            Classifier::new(&cfg.config.model, 3, 32, &device).visit(&mut c);
            c.0
        };
        // Not vacuous: training moved the weights well beyond the tolerance below.
        assert!(
            max_abs_diff(&one, &init) > 1e-2,
            "{what}: weights did not move"
        );
        for devices in ["[0, 1]", "[0, 1, 2]"] {
            let name = format!("{what}{}", devices.len());
            let cfg = config_with(model, objective, data, devices, 2);
            let many = trained(&cfg, dir.path(), &name);
            let d = max_abs_diff(&one, &many);
            assert!(d < 2e-5, "{what}, devices {devices}: max |Δw| = {d}");
            // The logged loss is the batch's, whatever the device count.
            let (l1, ln) = (
                losses(&dir.path().join(format!("{what}1"))),
                losses(&dir.path().join(&name)),
            );
            assert_eq!(l1.len(), ln.len());
            for (a, b) in l1.iter().zip(&ln) {
                assert!(
                    (a - b).abs() < 1e-4 * a.abs().max(1.0),
                    "{what}: {a} vs {b}"
                );
            }
        }
    }
}

/// With batch norm, each device normalises its chunk with the chunk's statistics (as
/// `torch.nn.DataParallel`; no SyncBN), so two devices train differently from one; the running
/// statistics are the main device's. A two-device run stopped after an epoch and resumed ends
/// with the weights and running statistics of an uninterrupted one.
#[test]
fn a_data_parallel_run_with_batch_norm_resumes_exactly() {
    let _rng = device_rng();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(RESNET, "name = \"ce\"", "[0, 1]", 2);
    let straight = trained(&cfg, dir.path(), "straight");
    let one = trained(
        &config(RESNET, "name = \"ce\"", "[0]", 2),
        dir.path(),
        "one",
    );
    // Per-device batch statistics: not the one-device result.
    assert!(max_abs_diff(&straight, &one) > 1e-4);

    let split = dir.path().join("split");
    let first = train(
        &cfg,
        &TrainOptions {
            stop_after: Some(1),
            ..opts(&split)
        },
    )
    .unwrap();
    assert!(!first.finished);
    let second = resume(&split, &opts(&split)).unwrap();
    assert!(second.finished);
    assert_eq!(final_weights(&split, &cfg), straight);
}
