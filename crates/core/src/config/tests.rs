use super::*;
use std::fs;

const MINIMAL: &str = r#"
seed = 3

[data]
batch_size = 32
[data.source]
kind = "synthetic"
num_classes = 4

[model]
backbone = "resnet10"
width = 8

[train]
epochs = 2
"#;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    p
}

fn err(dir: &Path, text: &str) -> String {
    let p = write(dir, "bad.toml", text);
    load(&p, &[]).unwrap_err().to_string()
}

#[test]
fn minimal_config_fills_defaults_and_names_run_after_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "tiny.toml", MINIMAL);
    let r = load(&p, &[]).unwrap();
    assert_eq!(r.config.name, "tiny");
    assert_eq!(r.config.seed, 3);
    assert_eq!(r.config.data.batch_size, 32);
    assert_eq!(r.config.data.eval_batch_size, 200);
    assert_eq!(
        r.config.model.backbone,
        Backbone::ResNet10 {
            width: 8,
            stem: ResNetStem::Cifar
        }
    );
    assert_eq!(r.config.optim, OptimConfig::default());
    assert_eq!(r.config.eval.postprocessors.len(), 3);
    assert_eq!(r.hash.len(), 64);
    // The canonical text round-trips to the same config.
    let back: ExperimentConfig = toml::from_str(&r.text).unwrap();
    assert_eq!(back, r.config);
}

#[test]
fn unknown_key_names_file_line_and_allowed_keys() {
    let dir = tempfile::tempdir().unwrap();
    let text = MINIMAL.replace("epochs = 2", "epochs = 2\nepochz = 3");
    let e = err(dir.path(), &text);
    assert!(e.contains("bad.toml:16"), "{e}");
    assert!(e.contains("train.epochz"), "{e}");
    assert!(e.contains("unknown field `epochz`"), "{e}");
    assert!(
        e.contains("checkpoint_every"),
        "lists the allowed keys: {e}"
    );
}

#[test]
fn unknown_key_inside_tagged_enum_is_rejected_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = MINIMAL.replace("width = 8", "width = 8\ndepth = 3");
    let e = err(dir.path(), &text);
    assert!(e.contains("unknown field `depth`"), "{e}");
    assert!(e.contains("model.depth"), "{e}");
    assert!(e.contains("bad.toml:13"), "{e}");
}

#[test]
fn stray_key_in_empty_struct_variant_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{MINIMAL}\n[objective]\nname = \"ce\"\noe_weight = 0.5\n");
    let e = err(dir.path(), &text);
    assert!(e.contains("unknown field `oe_weight`"), "{e}");
}

#[test]
fn wrong_type_names_key_and_expected_type() {
    let dir = tempfile::tempdir().unwrap();
    let e = err(
        dir.path(),
        &MINIMAL.replace("batch_size = 32", "batch_size = \"big\""),
    );
    assert!(e.contains("bad.toml:5"), "{e}");
    assert!(e.contains("data.batch_size"), "{e}");
    assert!(e.contains("invalid type: string \"big\""), "{e}");
}

#[test]
fn unknown_variant_lists_allowed_values() {
    let dir = tempfile::tempdir().unwrap();
    let e = err(dir.path(), &MINIMAL.replace("resnet10", "resnet999"));
    assert!(e.contains("unknown variant `resnet999`"), "{e}");
    assert!(e.contains("resnet18"), "{e}");
    let e = err(dir.path(), &format!("backend = \"gpu\"\n{MINIMAL}"));
    assert!(e.contains("bad.toml:1"), "{e}");
    assert!(e.contains("unknown variant `gpu`"), "{e}");
    assert!(e.contains("`flex`"), "{e}");
}

#[test]
fn bad_values_are_all_reported_with_lines() {
    let dir = tempfile::tempdir().unwrap();
    let text = MINIMAL.replace("batch_size = 32", "batch_size = 0")
        + "\n[optim]\nname = \"sgd\"\nlr = -0.1\n";
    let e = err(dir.path(), &text);
    assert!(
        e.contains("bad.toml:5: key `data.batch_size`: 0 is not allowed"),
        "{e}"
    );
    assert!(
        e.contains("bad.toml:19: key `optim.lr`: -0.1 is not allowed"),
        "{e}"
    );
    assert_eq!(
        e.lines().count(),
        3,
        "one line per problem, no follow-on noise: {e}"
    );
}

#[test]
fn syntax_error_has_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let e = err(dir.path(), "seed = 1\n[data\n");
    assert!(
        e.starts_with(&format!("{}:2:", dir.path().join("bad.toml").display())),
        "{e}"
    );
}

#[test]
fn extends_merges_tables_and_reports_base_lines() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "base.toml", MINIMAL);
    let child = write(
        dir.path(),
        "child.toml",
        "extends = [\"base.toml\"]\n[model]\nbackbone = \"resnet18\"\n[train]\nepochs = 5\n",
    );
    let r = load(&child, &[]).unwrap();
    assert_eq!(r.config.name, "child");
    assert_eq!(r.config.train.epochs, 5);
    // Switching the backbone replaces [model] whole: the base's ResNet-10 `width` is not
    // carried over (see `a_layer_that_switches_a_variant_replaces_the_table`).
    assert_eq!(
        r.config.model.backbone,
        Backbone::ResNet18 {
            width: 64,
            stem: ResNetStem::Cifar
        }
    );
    assert_eq!(r.config.data.batch_size, 32);

    // An error in a key that the base set points at the base file.
    write(
        dir.path(),
        "base.toml",
        &MINIMAL.replace("batch_size = 32", "batch_size = 0"),
    );
    let e = load(&child, &[]).unwrap_err().to_string();
    assert!(e.contains("base.toml:5: key `data.batch_size`"), "{e}");
}

#[test]
fn extends_cycle_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.toml", "extends = [\"b.toml\"]\n");
    let b = write(dir.path(), "b.toml", "extends = [\"a.toml\"]\n");
    let e = load(&b, &[]).unwrap_err().to_string();
    assert!(e.contains("cycle"), "{e}");
}

#[test]
fn set_overrides_parse_toml_values_and_change_the_hash() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "tiny.toml", MINIMAL);
    let plain = load(&p, &[]).unwrap();
    let r = load(
        &p,
        &[
            "optim.lr=0.05".into(),
            "model.backbone=resnet18".into(),
            "eval.postprocessors=[{name=\"msp\"}]".into(),
        ],
    )
    .unwrap();
    assert_eq!(r.config.optim.base_lr(), 0.05);
    assert!(matches!(
        r.config.model.backbone,
        Backbone::ResNet18 { width: 8, .. }
    ));
    assert_eq!(
        r.config.eval.postprocessors,
        vec![PostprocessorConfig::Msp {}]
    );
    assert_ne!(plain.hash, r.hash);

    let e = load(&p, &["optim.lr=-1".into()]).unwrap_err().to_string();
    assert!(
        e.contains("--set optim.lr=-1: key `optim.lr`: -1 is not allowed"),
        "{e}"
    );
    let e = load(&p, &["optim.lrr=1".into()]).unwrap_err().to_string();
    assert!(e.contains("--set optim.lrr=1"), "{e}");
    assert!(e.contains("unknown field `lrr`"), "{e}");
    let e = load(&p, &["seed".into()]).unwrap_err().to_string();
    assert!(e.contains("expected KEY=VALUE"), "{e}");
}

#[test]
fn every_shipped_config_resolves() {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut n = 0;
    for entry in fs::read_dir(&configs).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            load(&path, &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 2, "expected the shipped configs, found {n}");
}

#[test]
fn data_sources_and_transforms_are_strict() {
    let dir = tempfile::tempdir().unwrap();
    // The default training transform is OpenOOD's CIFAR recipe, written into the resolved text.
    let r = load(&write(dir.path(), "m.toml", MINIMAL), &[]).unwrap();
    assert_eq!(r.config.data.train_transform.len(), 4);
    assert!(r.text.contains("op = \"random_crop\""), "{}", r.text);

    let typo = MINIMAL.replace(
        "batch_size = 32",
        "batch_size = 32\ntrain_transform = [{ op = \"random_crop\", size = 32, pading = 4 }]",
    );
    let e = err(dir.path(), &typo);
    assert!(
        e.contains("bad.toml:6") && e.contains("unknown field `pading`"),
        "{e}"
    );

    let bad = MINIMAL.replace(
        "batch_size = 32",
        "batch_size = 32\nviews = 0\ntrain_transform = [{ op = \"horizontal_flip\", p = 1.5 }, { op = \"random_resized_crop\", size = 8, scale = [0.9, 0.1] }]",
    );
    let e = err(dir.path(), &bad);
    assert!(
        e.contains("data.views")
            && e.contains("data.train_transform[0].p")
            && e.contains("data.train_transform[1].scale"),
        "{e}"
    );

    let custom = r#"
[data.source]
kind = "custom"
num_classes = 3
train = { format = "image_folder", path = "a" }
test = { format = "cifar10", path = "b", split = "tset" }
[[data.source.ood]]
name = "x"
group = "middle"
set = { format = "npy", path = "o.npy" }
[model]
backbone = "resnet10"
[train]
epochs = 1
"#;
    let e = err(dir.path(), custom);
    assert!(
        e.contains("data.source.test.split") && e.contains("`tset`"),
        "{e}"
    );
    assert!(
        e.contains("data.source.ood[0].group") && e.contains("near or far"),
        "{e}"
    );
    let e = err(dir.path(), &custom.replace("\"npy\"", "\"numpy\""));
    assert!(
        e.contains("unknown variant `numpy`") && e.contains("imglist"),
        "{e}"
    );
    let e = err(
        dir.path(),
        "[data.source]\nkind = \"openood\"\nbenchmark = \"cifar11\"\nroot = \"d\"\n[model]\nbackbone = \"resnet10\"\n[train]\nepochs = 1\n",
    );
    assert!(
        e.contains("data.source.benchmark") && e.contains("cifar11"),
        "{e}"
    );
}

#[test]
fn wide_resnet_defaults_to_wrn_40_2_and_checks_its_depth() {
    let dir = tempfile::tempdir().unwrap();
    let text = MINIMAL.replace("backbone = \"resnet10\"\nwidth = 8", "backbone = \"wrn\"");
    let r = load(&write(dir.path(), "w.toml", &text), &[]).unwrap();
    assert_eq!(
        r.config.model,
        ModelConfig::from(Backbone::Wrn {
            depth: 40,
            widen_factor: 2,
            dropout: 0.3
        })
    );
    let e = err(
        dir.path(),
        &MINIMAL.replace(
            "backbone = \"resnet10\"\nwidth = 8",
            "backbone = \"wrn\"\ndepth = 41\ndropout = 1.0",
        ),
    );
    assert!(
        e.contains("model.depth") && e.contains("6n + 4") && e.contains("model.dropout"),
        "{e}"
    );
}

#[test]
fn model_table_takes_heads_weights_and_vits_and_still_rejects_typos() {
    let dir = tempfile::tempdir().unwrap();
    let model = |body: &str| MINIMAL.replace("backbone = \"resnet10\"\nwidth = 8", body);
    let r = load(
        &write(
            dir.path(),
            "m.toml",
            &model(
                "backbone = \"resnet50\"\nstem = \"imagenet\"\nprojection = { dim = 64 }\n\
                 weights = { path = \"rn50.pth\", reset_head = true }",
            ),
        ),
        &[],
    )
    .unwrap();
    assert_eq!(
        r.config.model,
        ModelConfig {
            backbone: Backbone::ResNet50 {
                width: 64,
                stem: ResNetStem::ImageNet
            },
            projection: Some(ProjectionConfig {
                hidden: 512,
                dim: 64
            }),
            weights: Some(WeightsConfig {
                path: "rn50.pth".into(),
                reset_head: true
            }),
            prediction_heads: 1,
        }
    );
    // A typo beside the flattened backbone tag is still an error that names the key.
    let e = err(dir.path(), &model("backbone = \"resnet18\"\nwidht = 8"));
    assert!(e.contains("widht"), "{e}");
    let e = err(
        dir.path(),
        &model("backbone = \"resnet18\"\nstem = \"imagnet\""),
    );
    assert!(e.contains("imagnet") && e.contains("imagenet"), "{e}");
    let e = err(
        dir.path(),
        &model("backbone = \"vit_tiny\"\nprojection = { dimm = 3 }"),
    );
    assert!(e.contains("dimm"), "{e}");
    // ViT shapes: the patch must tile the image, heads must divide the width.
    let e = err(
        dir.path(),
        &model("backbone = \"vit_small\"\npatch_size = 5"),
    );
    assert!(
        e.contains("model.patch_size") && e.contains("data.image_size = 32"),
        "{e}"
    );
    let e = err(
        dir.path(),
        &model("backbone = \"vit\"\npatch_size = 4\ndim = 10\ndepth = 2\nheads = 3"),
    );
    assert!(e.contains("model.dim") && e.contains("heads = 3"), "{e}");
    let r = load(
        &write(dir.path(), "v.toml", &model("backbone = \"vit_tiny\"")),
        &[],
    )
    .unwrap();
    assert_eq!(
        r.config.model.backbone,
        Backbone::VitTiny { patch_size: None }
    );
}

#[test]
fn objectives_take_named_hyperparameters_and_say_what_they_need() {
    let dir = tempfile::tempdir().unwrap();
    let with = |objective: &str| format!("{MINIMAL}\n[objective]\n{objective}\n");
    // Defaults are the official code's.
    let p = write(dir.path(), "oe.toml", &with("name = \"oe\""));
    let e = load(&p, &[]).unwrap_err().to_string();
    assert!(e.contains("data.outlier_batch_size"), "{e}");
    let r = load(&p, &["data.outlier_batch_size=64".into()]).unwrap();
    assert_eq!(r.config.objective, ObjectiveConfig::Oe { oe_weight: 0.5 });
    let p = write(dir.path(), "palm.toml", &with("name = \"palm\""));
    let r = load(&p, &["model.projection={hidden=16, dim=8}".into()]).unwrap();
    let ObjectiveConfig::Palm {
        prototypes_per_class,
        top_k,
        proto_momentum,
        ..
    } = r.config.objective
    else {
        panic!("{:?}", r.config.objective)
    };
    assert_eq!((prototypes_per_class, top_k, proto_momentum), (6, 5, 0.999));
    // ... and PALM without a projection head is refused by name.
    let e = load(&p, &[]).unwrap_err().to_string();
    assert!(
        e.contains("model.projection") && e.contains("palm needs a projection head"),
        "{e}"
    );

    // A bare `beta` is not a MixOE hyperparameter: the error lists the real names.
    let e = err(
        dir.path(),
        &with("name = \"mixoe\"\nmix_op = \"mixup\"\nbeta = 5.0"),
    );
    assert!(
        e.contains("unknown field `beta`") && e.contains("mix_weight"),
        "{e}"
    );
    // MixOE pairs ID image i with outlier i.
    let p = write(
        dir.path(),
        "mix.toml",
        &with("name = \"mixoe\"\nmix_op = \"cutmix\""),
    );
    let e = load(&p, &["data.outlier_batch_size=64".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("mixes ID image i with outlier i"), "{e}");
    // Energy margins have no silent default.
    let e = err(dir.path(), &with("name = \"energy_oe\"\nm_in = -23.0"));
    assert!(e.contains("missing field `m_out`"), "{e}");
    let e = err(
        dir.path(),
        &with("name = \"palm\"\ntop_k = 7\nprototypes_per_class = 6"),
    );
    assert!(e.contains("objective.top_k"), "{e}");
    // A2D compares two predictions.
    let p = write(
        dir.path(),
        "a2d.toml",
        &with("name = \"npmix\"\na2d_weight = 0.5"),
    );
    let e = load(&p, &[]).unwrap_err().to_string();
    assert!(
        e.contains("model.prediction_heads") && e.contains("expected 2"),
        "{e}"
    );
    load(&p, &["model.prediction_heads=2".into()]).unwrap();
    let e = err(dir.path(), &with("name = \"aem\""));
    assert!(
        e.contains("attention-MIL model on feature bags") && e.contains("ViT backbone"),
        "{e}"
    );
}

const BAGS: &str = r#"
[data]
batch_size = 1
[data.source]
kind = "synthetic_bags"

[model]
backbone = "abmil"

[objective]
name = "aem"

[optim]
name = "adamw"

[train]
epochs = 2
"#;

#[test]
fn feature_bags_pair_with_mil_models_adamw_and_one_bag_per_step() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "bags.toml", BAGS);
    let r = load(&p, &[]).unwrap();
    // Defaults: AEM's ABMIL sizes, PyTorch's AdamW.
    assert_eq!(
        r.config.model.backbone,
        Backbone::Abmil {
            d_inner: 128,
            d_attention: 128
        }
    );
    assert_eq!(
        r.config.optim,
        OptimConfig::AdamW {
            lr: 1e-3,
            betas: [0.9, 0.999],
            epsilon: 1e-8,
            weight_decay: 1e-2
        }
    );
    let DataSource::SyntheticBags(s) = &r.config.data.source else {
        panic!()
    };
    assert_eq!((s.num_classes, s.instances), (2, [16, 48]));
    // Switching to the MHA aggregator drops ABMIL's d_attention (variant replaces the table).
    let r = load(&p, &["model.backbone=\"mil_mha\"".into()]).unwrap();
    assert_eq!(r.config.model.backbone, Backbone::MilMha { d_inner: 128 });

    let bad = |sets: &[&str]| {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        load(&p, &sets).unwrap_err().to_string()
    };
    let e = bad(&["data.batch_size=8"]);
    assert!(
        e.contains("data.batch_size") && e.contains("one bag (slide) per step"),
        "{e}"
    );
    let e = bad(&["model={backbone=\"resnet10\"}"]);
    assert!(
        e.contains("feature bags need an attention-MIL model"),
        "{e}"
    );
    let e = bad(&["objective={name=\"oe\"}"]);
    assert!(e.contains("oe is not available for feature bags"), "{e}");
    let e = bad(&["model={backbone=\"mil_mha\", d_inner=100}"]);
    assert!(
        e.contains("model.d_inner") && e.contains("multiple of the 8 heads"),
        "{e}"
    );
    let e = bad(&["optim.betas=[0.9, 1.0]"]);
    assert!(e.contains("optim.betas"), "{e}");
    let e = bad(&["data.source.instances=[10, 4]"]);
    assert!(e.contains("data.source.instances"), "{e}");
    let e = bad(&[
        "data.source={kind=\"bags\", dataset=\"tcga\", features=\"f.h5\", labels=\"l.csv\"}",
    ]);
    assert!(
        e.contains("unknown bag dataset `tcga`") && e.contains("camelyon17"),
        "{e}"
    );
    let e = bad(&["model.projection={hidden=8, dim=4}"]);
    assert!(e.contains("image-classifier options"), "{e}");
    // An image source with a MIL model.
    let e = err(
        dir.path(),
        &MINIMAL.replace("backbone = \"resnet10\"\nwidth = 8", "backbone = \"abmil\""),
    );
    assert!(
        e.contains("abmil and mil_mha aggregate feature bags"),
        "{e}"
    );
    // A typo in the bag source is an error, not ignored.
    let e = bad(&["data.source.val_fracton=0.2"]);
    assert!(e.contains("val_fracton"), "{e}");
}

#[test]
fn a_layer_that_switches_a_variant_replaces_the_table() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "base.toml", MINIMAL);
    // The base's ResNet `width` would be an unknown key for a WRN; switching the backbone
    // replaces [model] whole.
    let p = write(
        dir.path(),
        "child.toml",
        "extends = [\"base.toml\"]\n[model]\nbackbone = \"wrn\"\ndepth = 16\n",
    );
    let r = load(&p, &[]).unwrap();
    assert!(matches!(
        r.config.model.backbone,
        Backbone::Wrn { depth: 16, .. }
    ));
    // The same variant still merges key by key.
    let p = write(
        dir.path(),
        "same.toml",
        "extends = [\"base.toml\"]\n[model]\nbackbone = \"resnet10\"\n",
    );
    let r = load(&p, &[]).unwrap();
    assert!(matches!(
        r.config.model.backbone,
        Backbone::ResNet10 { width: 8, .. }
    ));
}

#[test]
fn postprocessors_take_openood_defaults_and_reject_bad_settings() {
    let dir = tempfile::tempdir().unwrap();
    let with = |pps: &str| format!("{MINIMAL}\n[eval]\npostprocessors = [{pps}]\n");
    let p = write(
        dir.path(),
        "pp.toml",
        &with(
            r#"{ name = "odin" }, { name = "gen" }, { name = "mds" }, { name = "knn" }, { name = "vim" }, { name = "react" }, { name = "ash" }"#,
        ),
    );
    let r = load(&p, &[]).unwrap();
    assert_eq!(
        r.config.eval.postprocessors,
        vec![
            PostprocessorConfig::Odin {
                temperature: 1000.0,
                noise: 0.0014
            },
            PostprocessorConfig::Gen {
                gamma: 0.1,
                top_m: 100
            },
            PostprocessorConfig::Mahalanobis {},
            PostprocessorConfig::Knn { k: 50 },
            PostprocessorConfig::Vim { dim: 256 },
            PostprocessorConfig::React { percentile: 90.0 },
            PostprocessorConfig::Ash { percentile: 90.0 },
        ]
    );
    for (pp, key) in [
        (r#"{ name = "knn", k = 0 }"#, "postprocessors[0].k"),
        (
            r#"{ name = "react", percentile = 0.0 }"#,
            "postprocessors[0].percentile",
        ),
        (
            r#"{ name = "odin", noise = -1.0 }"#,
            "postprocessors[0].noise",
        ),
        (
            r#"{ name = "gen", gamma = 0.0 }"#,
            "postprocessors[0].gamma",
        ),
    ] {
        let e = err(dir.path(), &with(pp));
        assert!(e.contains(key), "{pp}: {e}");
    }
    let e = err(dir.path(), &with(r#"{ name = "knn", K = 5 }"#));
    assert!(e.contains("unknown field `K`"), "{e}");
}

#[test]
fn metric_conventions_default_to_openood_and_check_their_settings() {
    let dir = tempfile::tempdir().unwrap();
    let r = load(&write(dir.path(), "m.toml", MINIMAL), &[]).unwrap();
    assert_eq!(r.config.eval.convention, MetricConvention::OpenOod {});
    let with = |c: &str| format!("{MINIMAL}\n[eval.convention]\n{c}\n");
    let r = load(&write(dir.path(), "oe.toml", &with(r#"name = "oe""#)), &[]).unwrap();
    assert_eq!(
        r.config.eval.convention,
        MetricConvention::Oe {
            draws: 10,
            ood_samples: None,
            seed: 0
        }
    );
    assert_eq!(
        Some(r.config.eval.convention),
        MetricConvention::from_name("oe")
    );
    for name in MetricConvention::NAMES {
        assert_eq!(MetricConvention::from_name(name).unwrap().label(), name);
    }
    let e = err(dir.path(), &with("name = \"mixoe\"\ndraws = 0"));
    assert!(e.contains("eval.convention.draws"), "{e}");
    let e = err(dir.path(), &with("name = \"energy\"\nood_samples = 0"));
    assert!(e.contains("eval.convention.ood_samples"), "{e}");
    let e = err(dir.path(), &with("name = \"palm\"\ndraws = 3"));
    assert!(e.contains("unknown field `draws`"), "{e}");
    let e = err(dir.path(), &with(r#"name = "hendrycks""#));
    assert!(e.contains("openood") && e.contains("mixoe"), "{e}");
}

#[test]
fn devices_parse_as_a_list_or_all_and_bad_values_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let with =
        |devices: &str| MINIMAL.replace("seed = 3", &format!("seed = 3\ndevices = {devices}"));

    // The default is one device and stays out of the canonical text (and so of the hash).
    let p = write(dir.path(), "one.toml", MINIMAL);
    let one = load(&p, &[]).unwrap();
    assert_eq!(one.config.devices, Devices::List(vec![0]));
    assert!(!one.text.contains("devices"), "{}", one.text);
    let zero = dir.path().join("zero");
    fs::create_dir(&zero).unwrap();
    let p = write(&zero, "one.toml", &with("[0]"));
    assert_eq!(load(&p, &[]).unwrap().hash, one.hash);

    let p = write(dir.path(), "two.toml", &with("[0, 1]"));
    let two = load(&p, &[]).unwrap();
    assert_eq!(two.config.devices, Devices::List(vec![0, 1]));
    assert!(two.text.contains("devices = [0, 1]"), "{}", two.text);
    assert_ne!(two.hash, one.hash);
    let p = write(dir.path(), "all.toml", &with("\"all\""));
    let all = load(&p, &[]).unwrap();
    assert_eq!(all.config.devices, Devices::All);
    assert_eq!(
        toml::from_str::<ExperimentConfig>(&all.text).unwrap(),
        all.config
    );

    let e = err(dir.path(), &with("2"));
    assert!(e.contains("devices") && e.contains("[0, 1]"), "{e}");
    let e = err(dir.path(), &with("\"every\""));
    assert!(e.contains("devices") && e.contains("\"all\""), "{e}");
    let e = err(dir.path(), &with("[0, -1]"));
    assert!(e.contains("devices"), "{e}");
    let e = err(dir.path(), &with("[]"));
    assert!(e.contains("devices") && e.contains("at least one"), "{e}");
    let e = err(dir.path(), &with("[1, 1]"));
    assert!(e.contains("listed twice"), "{e}");
}

#[test]
fn data_parallel_runs_every_objective_but_not_feature_bags() {
    let dir = tempfile::tempdir().unwrap();
    for objective in ["palm", "npmix", "oe", "mixoe"] {
        let text = MINIMAL
            .replace("seed = 3", "seed = 3\ndevices = [0, 1]")
            .replace(
                "batch_size = 32",
                "batch_size = 32\noutlier_batch_size = 64",
            )
            + &format!("\n[objective]\nname = \"{objective}\"\n");
        let p = write(dir.path(), &format!("{objective}.toml"), &text);
        // Other keys may be wrong for the objective; `devices` never is.
        if let Err(e) = load(&p, &[]) {
            assert!(!e.to_string().contains("devices"), "{objective}: {e}");
        }
    }
    let bags = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/synthetic_bags_aem.toml"),
    )
    .unwrap()
    .replace("backend = \"auto\"", "backend = \"auto\"\ndevices = [0, 1]");
    let e = err(dir.path(), &bags);
    assert!(e.contains("devices") && e.contains("feature bags"), "{e}");
}
