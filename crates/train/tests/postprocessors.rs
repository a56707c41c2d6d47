//! Every post-processor through the whole evaluation path (network once per set, statistics
//! fitted once on the ID training features, ODIN through the input gradient), on a short run
//! over the built-in data.

use oodforge_core::config::{self, BackendChoice, ExperimentConfig, ResolvedConfig};
use oodforge_eval::cache;
use oodforge_testutil::device_rng;
use oodforge_train::{EvalOptions, TrainOptions, evaluate_run_with, evaluate_runs, train};
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

/// Train `cfg` on the CPU backend into `run` (and evaluate it, as `train` does), holding
/// `device_rng`: the three tests here train at once on cargo's test threads, and each one's
/// seeded initialisation must not be interleaved with another's draws (one run in seven of the
/// whole suite failed the "not MSP in disguise" check below without it).
fn train_flex(cfg: &ResolvedConfig, run: &Path) -> oodforge_train::TrainOutcome {
    let _rng = device_rng();
    train(
        cfg,
        &TrainOptions {
            out: Some(run.to_path_buf()),
            backend: Some(BackendChoice::Flex),
            ..Default::default()
        },
    )
    .unwrap()
}

#[test]
fn every_postprocessor_scores_a_trained_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = train_flex(&config(), &dir.path().join("run"));
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

    // Pictures: a histogram and a ROC curve per post-processor, real PNGs.
    for pp in ["msp", "knn", "odin"] {
        for kind in ["hist", "roc"] {
            let png = dir.path().join(format!("run/plots/{pp}_{kind}.png"));
            let img = image::open(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
            assert_eq!((img.width(), img.height()), (900, 600));
        }
    }
    // The network's outputs are cached in the run folder, one file per set (ODIN per setting).
    let outputs = dir.path().join("run/outputs");
    for f in [
        "id_test",
        "id_train",
        "ood_textures",
        "ood_noise",
        "id_test.odin_t1_n0",
        "ood_textures.odin_t1_n0",
    ] {
        assert!(outputs.join(format!("{f}.safetensors")).is_file(), "{f}");
    }
    let test = cache::read_set(
        &outputs.join("id_test.safetensors"),
        &cache::stored_key(&outputs.join("id_test.safetensors"))
            .unwrap()
            .unwrap(),
        true,
    )
    .unwrap()
    .unwrap();
    assert_eq!(test.labels.as_ref().map(Vec::len), Some(36));
    assert_eq!(
        test.outputs.features.len(),
        36 * 32,
        "resnet10 width 4: 32 features"
    );

    // `eval --run` re-scores the cached outputs: doctor one OOD set's cached logits (same key)
    // and the new table must see the doctored values, i.e. the network did not run again.
    let run = dir.path().join("run");
    let noise = outputs.join("ood_noise.safetensors");
    let key = cache::stored_key(&noise).unwrap().unwrap();
    let mut doctored = cache::read_set(&noise, &key, true).unwrap().unwrap();
    // Every noise image now looks maximally ID to MaxLogit.
    for v in doctored.outputs.logits.data.iter_mut() {
        *v += 1000.0;
    }
    cache::write_set(&noise, &key, &doctored.outputs, None).unwrap();
    let options = EvalOptions {
        backend: Some(BackendChoice::Flex),
        postprocessors: Some(vec!["maxlogit".into(), "knn".into()]),
        convention: Some("oe".into()),
        ood_sets: Some(vec!["noise".into(), "textures".into()]),
        out: Some(run.join("eval-oe")),
        ..Default::default()
    };
    let again = evaluate_run_with(&run, &options).unwrap();
    assert_eq!(again.convention, "oe");
    let names: Vec<&str> = again.postprocessors.keys().map(String::as_str).collect();
    assert_eq!(names, ["knn", "maxlogit"]);
    let ml = &again.postprocessors["maxlogit"];
    assert_eq!(ml.datasets.len(), 2);
    assert_eq!(
        ml.datasets["noise"].metrics.auroc, 0.0,
        "doctored cache read"
    );
    assert!(ml.datasets["noise"].std.is_some(), "10 OE draws");
    assert!(run.join("eval-oe/results.json").is_file());
    // The run's own table is untouched.
    let mine: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("results.json")).unwrap()).unwrap();
    assert_eq!(mine["convention"], "openood");

    // Model and data settings of a trained run cannot be changed at evaluation; names are checked.
    let refuse = |o: EvalOptions| evaluate_run_with(&run, &o).unwrap_err().to_string();
    let e = refuse(EvalOptions {
        overrides: vec!["data.eval_batch_size=8".into()],
        ..Default::default()
    });
    assert!(e.contains("only `eval.*` keys"), "{e}");
    let e = refuse(EvalOptions {
        ood_sets: Some(vec!["svhn".into()]),
        ..Default::default()
    });
    assert!(e.contains("`svhn`") && e.contains("textures"), "{e}");
    let e = refuse(EvalOptions {
        convention: Some("hendrycks".into()),
        ..Default::default()
    });
    assert!(e.contains("mixoe"), "{e}");
    let e = refuse(EvalOptions {
        postprocessors: Some(vec!["mahalanobis".into()]),
        ..Default::default()
    });
    assert!(e.contains("mahalanobis") && e.contains("mds"), "{e}");
}

#[test]
fn aps_picks_each_setting_on_validation_data_and_scores_the_test_sets_with_it() {
    let text = r#"
name = "aps"
seed = 3
backend = "flex"
[data]
batch_size = 16
eval_batch_size = 64
[data.source]
kind = "synthetic"
num_classes = 3
train_per_class = 40
test_per_class = 12
ood_per_set = 16
outliers = 4
[model]
backbone = "resnet10"
width = 4
[train]
epochs = 1
log_every = 100
[eval]
aps = true
postprocessors = [
  { name = "msp" }, { name = "react" }, { name = "knn" }, { name = "gen" },
  { name = "ash" }, { name = "odin" },
]
"#;
    let cfg: ExperimentConfig = toml::from_str(text).unwrap();
    let cfg = config::resolve(cfg, Path::new("aps.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = train_flex(&cfg, &run);
    let r = out.results.unwrap();
    assert!(r.postprocessors["msp"].aps.is_none(), "MSP has no sweep");
    // 120 training features: K = 50 and 100 of OpenOOD's {50, ..., 1000}.
    for (pp, tried) in [
        ("react", 4),
        ("knn", 2),
        ("gen", 42),
        ("ash", 7),
        ("odin", 8),
    ] {
        let rec = r.postprocessors[pp]
            .aps
            .as_ref()
            .unwrap_or_else(|| panic!("{pp}"));
        assert_eq!(rec.tried.len(), tried, "{pp}");
        let best = rec
            .tried
            .iter()
            .map(|t| t.val_auroc)
            .fold(f64::NEG_INFINITY, f64::max);
        let first = rec.tried.iter().find(|t| t.val_auroc == best).unwrap();
        assert_eq!(rec.chosen, first.setting, "{pp}: first best");
        assert_eq!(rec.val_auroc, best);
    }
    assert!(run.join("outputs/val_ood.safetensors").is_file());

    // The test numbers are those of the chosen settings: evaluating them directly, without
    // APS, gives the same table.
    let chosen: Vec<String> = r
        .postprocessors
        .values()
        .map(|p| {
            let setting = p.aps.as_ref().map(|a| a.chosen.clone());
            toml::to_string(&setting.unwrap_or(oodforge_core::config::PostprocessorConfig::Msp {}))
                .unwrap()
                .trim()
                .replace('\n', ", ")
        })
        .map(|s| format!("{{ {s} }}"))
        .collect();
    let direct = evaluate_run_with(
        &run,
        &EvalOptions {
            backend: Some(BackendChoice::Flex),
            overrides: vec![
                "eval.aps=false".into(),
                format!("eval.postprocessors=[{}]", chosen.join(", ")),
            ],
            out: Some(run.join("direct")),
            ..Default::default()
        },
    )
    .unwrap();
    for (name, p) in &r.postprocessors {
        assert_eq!(direct.postprocessors[name].datasets, p.datasets, "{name}");
    }
}

#[test]
fn seeds_aggregate_to_mean_and_std_of_the_same_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    let mut accuracies = Vec::new();
    for seed in [0, 1] {
        let mut cfg = config().config;
        cfg.seed = seed;
        cfg.train.epochs = 1;
        cfg.eval.postprocessors = vec![oodforge_core::config::PostprocessorConfig::Msp {}];
        let cfg = config::resolve(cfg, Path::new("seeds.toml")).unwrap();
        let run = dir.path().join(format!("seed{seed}"));
        let out = train_flex(&cfg, &run);
        accuracies.push(out.results.unwrap().id_accuracy);
        runs.push(run);
    }
    let out = dir.path().join("agg");
    let options = EvalOptions {
        backend: Some(BackendChoice::Flex),
        postprocessors: Some(vec!["msp".into(), "energy".into()]),
        ..Default::default()
    };
    let agg = evaluate_runs(&runs, &out, &options).unwrap();
    assert_eq!(agg.runs.len(), 2);
    let mean = (accuracies[0] + accuracies[1]) / 2.0;
    assert!((agg.id_accuracy.mean - mean).abs() < 1e-12);
    assert!((agg.id_accuracy.std - (accuracies[0] - accuracies[1]).abs() / 2.0).abs() < 1e-12);
    // Each seed's own table is written under the aggregate folder, with the same options.
    let per_seed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("seed1/results.json")).unwrap())
            .unwrap();
    let e1 = per_seed["postprocessors"]["energy"]["far"]["auroc"]
        .as_f64()
        .unwrap();
    let per_seed0: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("seed0/results.json")).unwrap())
            .unwrap();
    let e0 = per_seed0["postprocessors"]["energy"]["far"]["auroc"]
        .as_f64()
        .unwrap();
    let far = agg.postprocessors["energy"].far.unwrap();
    assert!((far.auroc.mean - (e0 + e1) / 2.0).abs() < 1e-12);
    for f in ["results.json", "results.md", "results.csv", "results.tex"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains(" ± ") && md.contains("2 runs"), "{md}");
}
