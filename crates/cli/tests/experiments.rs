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
