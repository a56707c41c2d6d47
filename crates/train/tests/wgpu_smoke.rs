//! The wgpu path end to end on a tiny model. Needs a wgpu adapter: CI installs Mesa's lavapipe
//! (software Vulkan); without any adapter the test says so and skips.

use oodforge_core::backend::wgpu_adapters;
use oodforge_core::config::{self, BackendChoice, ExperimentConfig};
use oodforge_train::{TrainOptions, train};
use std::path::Path;

#[test]
fn trains_and_evaluates_on_wgpu() {
    if wgpu_adapters().is_empty() {
        eprintln!(
            "SKIPPED trains_and_evaluates_on_wgpu: no wgpu adapter (install mesa-vulkan-drivers)"
        );
        return;
    }
    let cfg: ExperimentConfig = toml::from_str(
        r#"
name = "wgpu-smoke"
[data]
batch_size = 8
eval_batch_size = 16
[data.source]
kind = "synthetic"
num_classes = 2
train_per_class = 8
test_per_class = 4
ood_per_set = 4
outliers = 2
[model]
backbone = "resnet10"
width = 2
[train]
epochs = 1
"#,
    )
    .unwrap();
    let resolved = config::resolve(cfg, Path::new("wgpu-smoke.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = train(
        &resolved,
        &TrainOptions {
            out: Some(dir.path().join("run")),
            backend: Some(BackendChoice::Wgpu),
            ..Default::default()
        },
    )
    .unwrap();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.run_dir.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["backend"], "wgpu");
    assert!(!manifest["adapter"].as_str().unwrap().is_empty());
    let results = out.results.expect("evaluated after training");
    assert!((0.0..=1.0).contains(&results.id_accuracy));
    for r in results.postprocessors.values() {
        for d in r.datasets.values() {
            assert!((0.0..=1.0).contains(&d.metrics.auroc));
        }
    }
}
