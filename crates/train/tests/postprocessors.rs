//! Every post-processor through the whole evaluation path (network once per set, statistics
//! fitted once on the ID training features, ODIN through the input gradient), on a short run
//! over the built-in data.

use oodforge_core::config::{self, BackendChoice, ExperimentConfig, ResolvedConfig};
use oodforge_train::{TrainOptions, train};
use std::path::Path;

fn config() -> ResolvedConfig {
    let text = r#"
name = "all_scores"
seed = 2
backend = "flex"
[data]
batch_size = 16
eval_batch_size = 40
[data.source]
kind = "synthetic"
num_classes = 3
train_per_class = 30
test_per_class = 12
ood_per_set = 16
outliers = 4
[model]
backbone = "resnet10"
width = 4
[train]
epochs = 2
log_every = 100
[eval]
postprocessors = [
  { name = "msp" }, { name = "maxlogit" }, { name = "energy" },
  { name = "odin", temperature = 1.0, noise = 0.0 },
  { name = "gen" }, { name = "mds" }, { name = "knn", k = 5 }, { name = "vim", dim = 8 },
  { name = "react" }, { name = "ash" }, { name = "palm_mds" },
]
"#;
    let cfg: ExperimentConfig = toml::from_str(text).unwrap();
    config::resolve(cfg, Path::new("all_scores.toml")).unwrap()
}

#[test]
fn every_postprocessor_scores_a_trained_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = train(
        &config(),
        &TrainOptions {
            out: Some(dir.path().join("run")),
            backend: Some(BackendChoice::Flex),
            ..Default::default()
        },
    )
    .unwrap();
    let r = out.results.expect("evaluated after training");
    let names: Vec<&str> = r.postprocessors.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "ash", "energy", "gen", "knn", "maxlogit", "mds", "msp", "odin", "palm_mds", "react",
            "vim"
        ]
    );
    for (name, pp) in &r.postprocessors {
        assert_eq!(pp.datasets.len(), 4, "{name}");
        for m in pp.near.iter().chain(&pp.far) {
            assert!((0.0..=1.0).contains(&m.auroc), "{name}: {m:?}");
            assert!((0.0..=1.0).contains(&m.fpr95), "{name}: {m:?}");
        }
    }
    // ODIN with T = 1 and no perturbation is MSP, through the autodiff pass.
    let (odin, msp) = (&r.postprocessors["odin"], &r.postprocessors["msp"]);
    for (set, m) in &odin.datasets {
        let want = &msp.datasets[set].metrics;
        assert!(
            (m.metrics.auroc - want.auroc).abs() < 1e-12
                && (m.metrics.fpr95 - want.fpr95).abs() < 1e-12,
            "{set}: ODIN {:?} vs MSP {want:?}",
            m.metrics
        );
    }
    // The fitted scores are not the logit scores in disguise.
    let auroc = |n: &str| r.postprocessors[n].far.unwrap().auroc;
    for n in ["mds", "knn", "vim", "palm_mds"] {
        assert!((auroc(n) - auroc("msp")).abs() > 1e-9, "{n} equals MSP");
    }
    let json = std::fs::read_to_string(dir.path().join("run/results.json")).unwrap();
    assert!(json.contains("\"knn\"") && json.contains("\"vim\""));
    // The same table as CSV (11 post-processors x (4 sets + 2 means) + header) and LaTeX.
    let csv = std::fs::read_to_string(dir.path().join("run/results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 11 * 6, "{csv}");
    let tex = std::fs::read_to_string(dir.path().join("run/results.tex")).unwrap();
    assert!(
        tex.contains("palm\\_mds & ") && tex.contains("\\bottomrule"),
        "{tex}"
    );
}
