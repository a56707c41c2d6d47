//! Every experiment under `experiments/`: its configs resolve and validate, its sweeps expand,
//! its smoke config runs the whole pipeline on the built-in data (train, eval) and every table
//! spec reports against the smoke run (evaluated in the table's metric convention).

mod common;

use common::{run, text};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn every_experiment_resolves_and_its_smoke_run_reports() {
    let root = repo();
    let tmp = tempfile::tempdir().unwrap();
    let mut names: Vec<String> = std::fs::read_dir(root.join("experiments"))
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            e.path()
                .is_dir()
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
        .collect();
    names.sort();
    for want in [
        "aem_camelyon16",
        "energy_oe_wrn",
        "mixoe_finegrained",
        "npmix_cifar",
        "openood_v15_cifar",
        "palm_cifar100",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "experiments/{want} missing"
        );
    }
    let mut tables_reported = 0;
    for name in &names {
        let dir = root.join("experiments").join(name);
        let card = std::fs::read_to_string(dir.join("README.md"))
            .unwrap_or_else(|_| panic!("experiments/{name}/README.md"));
        assert!(card.contains("## Protocol card"), "{name}: protocol card");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        let rel = |p: &Path| p.strip_prefix(&root).unwrap().display().to_string();
        let (mut tables, mut smoke) = (Vec::new(), None);
        for f in &files {
            let stem = f.file_stem().unwrap().to_string_lossy().into_owned();
            if stem.starts_with("table") {
                tables.push(f.clone());
            } else if stem.starts_with("sweep") {
                let o = run(env!("CARGO_BIN_EXE_sweep"), &[&rel(f), "--dry-run"], &root);
                assert!(o.status.success(), "{}: {}", rel(f), text(&o));
            } else {
                let o = run(
                    env!("CARGO_BIN_EXE_train"),
                    &["--config", &rel(f), "--dry-run"],
                    &root,
                );
                assert!(o.status.success(), "{}: {}", rel(f), text(&o));
                if stem == "smoke" {
                    smoke = Some(f.clone());
                }
            }
        }
        let Some(smoke) = smoke else {
            assert!(
                tables.is_empty(),
                "{name}: tables but no smoke config to exercise them"
            );
            continue;
        };
        let out = tmp.path().join(name);
        let o = run(
            env!("CARGO_BIN_EXE_train"),
            &[
                "--config",
                &rel(&smoke),
                "--out",
                out.to_str().unwrap(),
                "--no-progress",
            ],
            &root,
        );
        assert!(o.status.success(), "{name} smoke: {}", text(&o));
        assert!(out.join("results.json").is_file(), "{name}: results.json");
        if name == "palm_cifar100" {
            // A model with a projection head caches its embeddings beside the features.
            use oodforge_eval::cache;
            let file = out.join("outputs/id_test.safetensors");
            let key = cache::stored_key(&file).unwrap().unwrap();
            let set = cache::read_set(&file, &key, true).unwrap().unwrap();
            let n = set.outputs.logits.len();
            assert_eq!(set.outputs.embeddings.len(), n * 16, "projection dim 16");
            let norm: f32 = set.outputs.embeddings[..16].iter().map(|v| v * v).sum();
            assert!((norm - 1.0).abs() < 1e-4, "L2-normalised: {norm}");
        }
        for table in &tables {
            let spec: toml::Value =
                toml::from_str(&std::fs::read_to_string(table).unwrap()).unwrap();
            let convention = spec
                .get("convention")
                .and_then(|c| c.as_str())
                .unwrap_or("openood");
            // The smoke run evaluated in the table's convention (from its cached outputs); a
            // feature-bag run's results.json is its slide metrics already.
            let bags = std::fs::read_to_string(out.join("results.json"))
                .unwrap()
                .contains("\"selected\"");
            let evaluated = if bags {
                out.clone()
            } else {
                let evaluated = tmp.path().join(format!("{name}-{convention}"));
                let o = run(
                    env!("CARGO_BIN_EXE_eval"),
                    &[
                        "--run",
                        out.to_str().unwrap(),
                        "--convention",
                        convention,
                        "--out",
                        evaluated.to_str().unwrap(),
                    ],
                    &root,
                );
                assert!(o.status.success(), "{name} eval: {}", text(&o));
                evaluated
            };
            let reports = tmp.path().join("reports").join(name);
            let o = run(
                env!("CARGO_BIN_EXE_report"),
                &[
                    &rel(table),
                    "--runs",
                    evaluated.to_str().unwrap(),
                    "--out",
                    reports.to_str().unwrap(),
                ],
                &root,
            );
            assert!(o.status.success(), "{}: {}", rel(table), text(&o));
            let stem = table.file_stem().unwrap().to_string_lossy();
            let md = std::fs::read_to_string(reports.join(format!("{stem}.md"))).unwrap();
            let title = spec["title"].as_str().unwrap();
            assert!(md.starts_with(&format!("# {title}")), "{md}");
            // Group-mean and accuracy rows exist on any data; they must carry our number.
            assert!(
                md.lines()
                    .filter(|l| l.starts_with("| "))
                    .skip(1)
                    .any(|l| !l.contains("| missing |")),
                "{}: no row has our number\n{md}",
                rel(table)
            );
            tables_reported += 1;
        }
    }
    assert!(tables_reported >= 6, "{tables_reported} tables reported");

    // The sweeps behind the experiments (scripts/sweeps) expand and resolve.
    let mut sweeps = 0;
    for e in std::fs::read_dir(root.join("scripts/sweeps")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let rel = p.strip_prefix(&root).unwrap().display().to_string();
            let o = run(env!("CARGO_BIN_EXE_sweep"), &[&rel, "--dry-run"], &root);
            assert!(o.status.success(), "{rel}: {}", text(&o));
            sweeps += 1;
        }
    }
    assert!(sweeps >= 2);
}

/// Tiny PNGs of MixOE's layout: the four datasets' lists and images (each class a colour) and
/// a WebVision tree with one excluded concept.
fn finegrained_tree(root: &Path, info: &Path) {
    let png = |path: &Path, c: usize| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let img = image::RgbImage::from_fn(20, 24, |x, y| {
            image::Rgb([
                (c * 37 % 256) as u8,
                (x * 9) as u8,
                ((y as usize + c) * 7 % 256) as u8,
            ])
        });
        img.save(path).unwrap();
    };
    for (ds, n, folder) in [
        ("bird", 255, "bird/images"),
        ("butterfly", 200, "butterfly/images_small"),
        ("car", 196, "car"),
        ("aircraft", 100, "aircraft/images"),
    ] {
        for split in ["train", "val", "test"] {
            // Only aircraft (the ID dataset here) has training images; every set has its lists.
            let per = if ds == "aircraft" || split == "test" {
                1
            } else {
                0
            };
            let mut text = String::new();
            for c in 0..n {
                for j in 0..per {
                    let rel = format!("{split}/c{c}_{j}.png");
                    png(&root.join(folder).join(&rel), c);
                    text.push_str(&format!("{rel} {c}\n"));
                }
            }
            if text.is_empty() {
                text = format!("{split}/none.png 0\n");
            }
            std::fs::create_dir_all(info.join(ds)).unwrap();
            std::fs::write(info.join(ds).join(format!("{split}.txt")), text).unwrap();
        }
    }
    let wv = root.join("WebVision");
    std::fs::create_dir_all(wv.join("info")).unwrap();
    std::fs::write(
        wv.join("info/synsets.txt"),
        "n02690373 airliner\nn01440764 tench\nn01443537 goldfish\n",
    )
    .unwrap();
    std::fs::write(wv.join("info/queries_synsets_map.txt"), "1 1\n2 2\n3 3\n").unwrap();
    for (source, q) in [("google", 1), ("google", 2), ("google", 3), ("flickr", 3)] {
        for i in 0..60 {
            png(
                &wv.join(source).join(format!("q{q:04}/{i:03}.png")),
                300 + i,
            );
        }
    }
}

/// The experiment's own configs on a generated MixOE tree: the baseline trains on the split's
/// ID classes, MixOE fine-tunes from that run's folder with WebVision outliers, and both are
/// evaluated on the fine- and coarse-grained OOD sets in MixOE's metric.
#[test]
fn mixoe_finegrained_configs_run_on_a_generated_tree() {
    let root = repo();
    let tmp = tempfile::tempdir().unwrap();
    let (data, info) = (tmp.path().join("data"), tmp.path().join("info"));
    finegrained_tree(&data, &info);
    let exp = root.join("experiments/mixoe_finegrained");
    // The protocol configs with a network and image size that train here in seconds.
    let shrink = |text: String| {
        text.replace("image_size = 448", "image_size = 16")
            .replace("pre_size = 512", "pre_size = 20")
            .replace("size = 512 }", "size = 20 }")
            .replace("size = 448 }", "size = 16 }")
            .replace("batch_size = 32", "batch_size = 16")
            .replace("outlier_batch_size = 32", "outlier_batch_size = 16")
            .replace("backend = \"auto\"", "backend = \"flex\"")
            .replace(
                "backbone = \"resnet50\"",
                "backbone = \"resnet10\"\nwidth = 2",
            )
            .replace("stem = \"imagenet\"", "stem = \"cifar\"")
            .replace("epochs = 90", "epochs = 1")
            .replace("epochs = 10", "epochs = 1")
            .replace(
                "root = \"data\"",
                &format!("root = {:?}", data.display().to_string()),
            )
            .replace(
                "info = \"data/info\"",
                &format!("info = {:?}", info.display().to_string()),
            )
    };
    let baseline = std::fs::read_to_string(exp.join("baseline.toml")).unwrap();
    let baseline = shrink(baseline).replace(
        "weights = { path = \"weights/resnet50-0676ba61.pth\", reset_head = true }\n",
        "",
    );
    assert!(!baseline.contains("weights = {") && baseline.contains("kind = \"finegrained\""));
    assert!(baseline.contains("backbone = \"resnet10\"") && baseline.contains("epochs = 1\n"));
    std::fs::write(tmp.path().join("baseline.toml"), baseline).unwrap();
    let base_run = tmp.path().join("runs/aircraft/split1/baseline");
    let split = [
        "--set",
        "data.source.dataset=\"aircraft\"",
        "--set",
        "data.source.split=1",
    ];
    let mut args = vec!["--config", "baseline.toml", "--no-progress"];
    args.extend(split);
    args.extend(["--out", base_run.to_str().unwrap()]);
    let o = run(env!("CARGO_BIN_EXE_train"), &args, tmp.path());
    assert!(o.status.success(), "baseline: {}", text(&o));

    // `eval --config` takes the same run folder as weights (its newest checkpoint).
    let eval_out = tmp.path().join("eval-baseline");
    let weights = format!(
        "model.weights={{ path = {:?} }}",
        base_run.display().to_string()
    );
    let mut args = vec!["--config", "baseline.toml", "--set", &weights];
    args.extend(split);
    args.extend(["--out", eval_out.to_str().unwrap()]);
    let o = run(env!("CARGO_BIN_EXE_eval"), &args, tmp.path());
    assert!(o.status.success(), "eval of the baseline run: {}", text(&o));
    assert!(eval_out.join("results.json").is_file());

    let mixoe = std::fs::read_to_string(exp.join("mixoe_mixup.toml")).unwrap();
    std::fs::write(tmp.path().join("mixoe_mixup.toml"), shrink(mixoe)).unwrap();
    let mixoe_run = tmp.path().join("runs/aircraft/split1/mixoe_mixup");
    let weights = format!("model.weights.path={:?}", base_run.display().to_string());
    let mut args = vec![
        "--config",
        "mixoe_mixup.toml",
        "--no-progress",
        "--set",
        &weights,
    ];
    args.extend(split);
    args.extend(["--out", mixoe_run.to_str().unwrap()]);
    let o = run(env!("CARGO_BIN_EXE_train"), &args, tmp.path());
    assert!(o.status.success(), "mixoe: {}", text(&o));

    for run_dir in [&base_run, &mixoe_run] {
        let results: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run_dir.join("results.json")).unwrap())
                .unwrap();
        let s = results.to_string();
        assert!(s.contains("\"fine\"") && s.contains("\"coarse\""), "{s}");
        assert!(s.contains("mixoe"), "MixOE's convention: {s}");
    }
    // The manifest records the sets MixOE's protocol builds: 90 ID classes of aircraft split 1
    // (one test image each), 10 held-out, a coarse pool sampled to 90, WebVision without the
    // airliner concept (3 x 60 images).
    let manifest = std::fs::read_to_string(mixoe_run.join("manifest.json")).unwrap();
    let m: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    let count = |name: &str| {
        m["datasets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {manifest}"))["count"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(count("aircraft/train"), 90);
    assert_eq!(count("fine"), 10);
    assert_eq!(count("coarse"), 90);
    assert_eq!(count("webvision"), 180);
}
