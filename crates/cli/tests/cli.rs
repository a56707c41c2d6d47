//! The binaries as a user meets them: clear errors (file, line, key; exit code 2; no panic),
//! `--dry-run`, and a train + eval round trip.

mod common;

use common::{TINY, assert_same_run, png, run, stderr, text};
use std::path::Path;

#[test]
fn config_typo_is_a_clear_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("typo.toml"),
        TINY.replace("epochs = 1", "epochs = 1\nepoch = 2"),
    )
    .unwrap();
    let o = run(
        env!("CARGO_BIN_EXE_train"),
        &["--config", "typo.toml"],
        dir.path(),
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("typo.toml:18: key `train.epoch`: unknown field `epoch`"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        !dir.path().join("runs").exists(),
        "nothing written for a bad config"
    );
}

#[test]
fn missing_config_file_and_bad_backend_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(
        env!("CARGO_BIN_EXE_train"),
        &["--config", "nope.toml"],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("cannot read config file nope.toml"),
        "{}",
        stderr(&o)
    );
    std::fs::write(dir.path().join("tiny.toml"), TINY).unwrap();
    let o = run(
        env!("CARGO_BIN_EXE_train"),
        &["--config", "tiny.toml", "--backend", "gpu"],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unknown backend `gpu`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn dry_run_prints_the_resolved_config_with_overrides() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tiny.toml"), TINY).unwrap();
    let o = run(
        env!("CARGO_BIN_EXE_train"),
        &[
            "--config",
            "tiny.toml",
            "--dry-run",
            "--set",
            "optim.lr=0.05",
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("lr = 0.05"), "{out}");
    assert!(out.contains("name = \"tiny\""), "{out}");
    assert!(
        out.contains("weight_decay = 0.0005"),
        "defaults are written out: {out}"
    );
    assert!(!dir.path().join("runs").exists());
}

#[test]
fn train_then_eval_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tiny.toml"), TINY).unwrap();
    let o = run(
        env!("CARGO_BIN_EXE_train"),
        &["--config", "tiny.toml"],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        table.contains("ID accuracy:") && table.contains("| msp | unseen_curved | near |"),
        "{table}"
    );
    // Default run folder: runs/<name>/<hash8>/s<seed>.
    let runs: Vec<_> = std::fs::read_dir(dir.path().join("runs/tiny"))
        .unwrap()
        .collect();
    assert_eq!(runs.len(), 1);
    let run_dir = runs[0].as_ref().unwrap().path().join("s1");
    assert_eq!(runs[0].as_ref().unwrap().file_name().len(), 8);
    assert!(run_dir.join("results.md").is_file());

    let o = run(
        env!("CARGO_BIN_EXE_eval"),
        &["--run", run_dir.to_str().unwrap()],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let again = String::from_utf8_lossy(&o.stdout);
    // Same numbers (the title differs: the path as given).
    let body = |t: &str| t.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&again), body(&table));

    // Other scores and a paper's metric convention, from the cached outputs, into another folder.
    let o = run(
        env!("CARGO_BIN_EXE_eval"),
        &[
            "--run",
            run_dir.to_str().unwrap(),
            "--postprocessors",
            "msp,gen",
            "--convention",
            "palm",
            "--ood",
            "noise",
            "--out",
            "palm-eval",
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let palm = String::from_utf8_lossy(&o.stdout);
    assert!(
        palm.contains("| gen | noise | far |") && palm.contains("PALM's `cal_metric`"),
        "{palm}"
    );
    assert!(!palm.contains("textures"), "{palm}");
    assert!(dir.path().join("palm-eval/plots/gen_roc.png").is_file());
    let o = run(
        env!("CARGO_BIN_EXE_eval"),
        &["--run", run_dir.to_str().unwrap(), "--set", "model.width=8"],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("only `eval.*` keys"), "{}", stderr(&o));

    let o = run(
        env!("CARGO_BIN_EXE_eval"),
        &["--run", "missing-dir"],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("missing-dir/resolved.toml"),
        "{}",
        stderr(&o)
    );
}

/// A user's own data: class-per-folder PNGs for ID, a flat folder for OOD, trained and evaluated
/// end to end through `kind = "custom"`.
#[test]
fn custom_image_folders_train_and_evaluate() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let save = |rel: String, v: u8| png(root, &rel, 40, 36, v);
    for i in 0..6u8 {
        save(format!("mine/train/dark/{i}.png"), 10 + i);
        save(format!("mine/train/light/{i}.png"), 200 + i);
        save(format!("mine/test/dark/{i}.png"), 20 + i);
        save(format!("mine/test/light/{i}.png"), 210 + i);
        save(format!("other/x{i}.png"), 100 + i);
    }
    let cfg = r#"
seed = 3
backend = "flex"
[data]
batch_size = 4
image_size = 32
pre_size = 32
train_transform = [{ op = "resize", size = 32 }, { op = "center_crop", size = 32 }, { op = "horizontal_flip" }]
[data.source]
kind = "custom"
num_classes = 2
train = { format = "image_folder", path = "mine/train" }
test = { format = "image_folder", path = "mine/test" }
[[data.source.ood]]
name = "other"
group = "far"
set = { format = "flat_folder", path = "other" }
[model]
backbone = "resnet10"
width = 2
[train]
epochs = 1
"#;
    std::fs::write(root.join("mine.toml"), cfg).unwrap();
    let o = run(
        env!("CARGO_BIN_EXE_data"),
        &["check", "--config", "mine.toml"],
        root,
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(out.contains("3 of 3 sets ready"), "{out}");
    let o = run(
        env!("CARGO_BIN_EXE_train"),
        &["--config", "mine.toml", "--out", "run", "--no-progress"],
        root,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("run/results.json")).unwrap()).unwrap();
    let text = results.to_string();
    assert!(text.contains("\"other\""), "{text}");
    let manifest = std::fs::read_to_string(root.join("run/manifest.json")).unwrap();
    assert!(
        manifest.contains("\"count\": 12") && manifest.contains("\"other\""),
        "{manifest}"
    );

    // A typo'd path: a clear error naming it and the expected layout, exit code 2, no run.
    std::fs::write(root.join("bad.toml"), cfg.replace("mine/test", "mine/tset")).unwrap();
    let o = run(
        env!("CARGO_BIN_EXE_train"),
        &["--config", "bad.toml", "--out", "bad", "--no-progress"],
        root,
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("mine/tset") && err.contains("<class a>"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let o = run(
        env!("CARGO_BIN_EXE_data"),
        &["check", "--config", "bad.toml"],
        root,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("MISSING"));
}

/// `eval --config`: OpenOOD's `resnet18_32x32` checkpoint (made by the official model code,
/// `../shared/fixtures/weights`) evaluated on the built-in data without training; a config
/// without weights, a missing file and a checkpoint of the wrong network are clear errors.
#[test]
fn eval_imports_pytorch_weights_named_by_the_config() {
    let ckpt = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/weights/openood_resnet18_32x32.ckpt")
        .canonicalize()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = TINY
        .replace("num_classes = 2", "num_classes = 10")
        .replace("test_per_class = 4", "test_per_class = 2")
        .replace(
            "backbone = \"resnet10\"\nwidth = 2",
            "backbone = \"resnet18\"",
        );
    let with_weights = format!(
        "{config}\n[model.weights]\npath = {:?}\n",
        ckpt.to_str().unwrap()
    );
    // `[model.weights]` after `[train]` is still the model's table in TOML.
    std::fs::write(dir.path().join("openood.toml"), &with_weights).unwrap();
    let o = run(
        env!("CARGO_BIN_EXE_eval"),
        &["--config", "openood.toml", "--out", "imported"],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("ID accuracy:") && table.contains("| msp |"),
        "{table}"
    );
    let results = std::fs::read_to_string(dir.path().join("imported/results.json")).unwrap();
    assert!(results.contains("unseen_curved"), "{results}");

    // No weights named.
    std::fs::write(dir.path().join("plain.toml"), &config).unwrap();
    let o = run(
        env!("CARGO_BIN_EXE_eval"),
        &["--config", "plain.toml", "--out", "x"],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("model.weights"), "{}", stderr(&o));
    // A checkpoint that is not there.
    let o = run(
        env!("CARGO_BIN_EXE_eval"),
        &[
            "--config",
            "plain.toml",
            "--set",
            "model.weights.path=\"nope.ckpt\"",
            "--out",
            "x",
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("nope.ckpt"), "{}", stderr(&o));
    // The right file for the wrong network: the keys are named.
    let o = run(
        env!("CARGO_BIN_EXE_eval"),
        &[
            "--config",
            "openood.toml",
            "--set",
            "model.backbone=\"resnet34\"",
            "--out",
            "x",
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("layer1.2.conv1.weight") && !e.contains("panicked"),
        "{e}"
    );
}

/// `bench ops` times each listed ResNet-18 layer, forward and forward + backward, and writes the
/// table in the format of `scripts/bench_pytorch.py --ops`.
#[test]
fn bench_ops_writes_one_row_per_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bench");
    let o = run(
        env!("CARGO_BIN_EXE_bench"),
        &[
            "ops",
            "--batch",
            "2",
            "--warmup",
            "0",
            "--steps",
            "1",
            "--out",
            out.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("bench_ops.json")).unwrap())
            .unwrap();
    let rows = json["results"].as_array().unwrap();
    let ops: Vec<&str> = rows.iter().map(|r| r["op"].as_str().unwrap()).collect();
    assert_eq!(
        ops,
        [
            "conv3x3_64",
            "conv3x3_128",
            "conv3x3_256",
            "conv3x3_512",
            "conv3x3_s2_64_128",
            "conv1x1_s2_64_128",
            "batchnorm_64",
            "relu_64",
            "batchnorm_relu_64"
        ]
    );
    for r in rows {
        assert_eq!(r["input"][0].as_u64(), Some(2), "{r}");
        let (fwd, train) = (
            r["forward_ms"].as_f64().unwrap(),
            r["train_ms"].as_f64().unwrap(),
        );
        assert!(fwd > 0.0 && train > 0.0, "{r}");
    }
    let md = std::fs::read_to_string(out.join("bench_ops.md")).unwrap();
    assert!(
        md.contains("| oodforge | flex | conv3x3_128 | 2x128x16x16 |"),
        "{md}"
    );
    let o = run(
        env!("CARGO_BIN_EXE_bench"),
        &["ops", "--backend", "tpu", "--out", out.to_str().unwrap()],
        tmp.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--backend"), "{}", text(&o));
}

/// `bench train` measures every configuration in a process of its own and writes the table in
/// the format `scripts/bench_pytorch.py` writes (one row per model, batch and mode).
#[test]
fn bench_train_writes_json_and_markdown_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bench");
    let o = run(
        env!("CARGO_BIN_EXE_bench"),
        &[
            "train",
            "--models",
            "vit_tiny",
            "--batches",
            "2,3",
            "--backends",
            "flex",
            "--warmup",
            "0",
            "--steps",
            "1",
            "--out",
            out.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("bench_train.json")).unwrap())
            .unwrap();
    let rows = json["results"].as_array().unwrap();
    let keys: Vec<(u64, &str)> = rows
        .iter()
        .map(|r| (r["batch"].as_u64().unwrap(), r["mode"].as_str().unwrap()))
        .collect();
    assert_eq!(keys, [(2, "train"), (2, "eval"), (3, "train"), (3, "eval")]);
    for r in rows {
        assert_eq!(
            (r["framework"].as_str(), r["backend"].as_str()),
            (Some("oodforge"), Some("flex"))
        );
        let (ips, step) = (
            r["images_per_s"].as_f64().unwrap(),
            r["median_step_s"].as_f64().unwrap(),
        );
        assert!(ips > 0.0 && step > 0.0);
        assert!((ips * step - r["batch"].as_f64().unwrap()).abs() < 1e-6);
        assert!(
            r["peak_mib"].as_f64().unwrap() > 0.0,
            "CPU peak memory: {r}"
        );
    }
    let md = std::fs::read_to_string(out.join("bench_train.md")).unwrap();
    assert_eq!(
        md.lines()
            .filter(|l| l.starts_with("| oodforge | flex | vit_tiny"))
            .count(),
        4
    );
    let o = run(
        env!("CARGO_BIN_EXE_bench"),
        &[
            "train",
            "--models",
            "resnet99",
            "--out",
            out.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        stderr(&o).contains("unknown model `resnet99`"),
        "{}",
        text(&o)
    );
}

/// SIGTERM (what `kill`, `scancel` and SLURM's time limit send) stops `train` after its current
/// step with a checkpoint there; `--resume` then ends where an uninterrupted run ends.
#[test]
fn sigterm_stops_after_the_step_with_a_checkpoint_and_resume_finishes_the_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tiny.toml"), TINY).unwrap();
    let args = |out: &'static str| {
        vec![
            "--config",
            "tiny.toml",
            "--set",
            "train.epochs=6",
            "--set",
            "data.source.train_per_class=48",
            "--set",
            "train.log_every=1",
            "--no-progress",
            "--out",
            out,
        ]
    };
    let o = run(env!("CARGO_BIN_EXE_train"), &args("straight"), dir.path());
    assert!(o.status.success(), "{}", stderr(&o));

    let child = std::process::Command::new(env!("CARGO_BIN_EXE_train"))
        .args(args("split"))
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let metrics = dir.path().join("split/metrics.jsonl");
    let started = std::time::Instant::now();
    while !std::fs::read_to_string(&metrics).is_ok_and(|t| t.contains("\"step\"")) {
        assert!(started.elapsed().as_secs() < 120, "no step logged");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(143), "{err}");
    assert!(err.contains("stopped by SIGTERM at epoch"), "{err}");
    assert!(err.contains("continue with: train --resume split"), "{err}");
    assert!(!dir.path().join("split/results.json").exists());
    let ckpts = std::fs::read_dir(dir.path().join("split/checkpoints"))
        .unwrap()
        .count();
    assert!(ckpts >= 1);

    let o = run(
        env!("CARGO_BIN_EXE_train"),
        &["--resume", "split", "--no-progress"],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // The same results and the same log as the uninterrupted run (wall-clock fields aside).
    assert_same_run(&dir.path().join("straight"), &dir.path().join("split"));
}

/// SIGKILL gives no warning. Killed at several points (right after start, mid-epoch, while a
/// checkpoint or the evaluation is being written), `train --resume` until it finishes must end
/// with the results and the log of a run that was never killed.
#[test]
fn sigkill_at_many_points_then_resume_until_done_matches_an_uninterrupted_run() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tiny.toml"), TINY).unwrap();
    let config = [
        "--config",
        "tiny.toml",
        "--set",
        "train.epochs=5",
        "--set",
        "data.source.train_per_class=40",
        "--set",
        "train.log_every=1",
        "--no-progress",
        "--out",
    ];
    let straight: Vec<&str> = config.iter().copied().chain(["straight"]).collect();
    let o = run(env!("CARGO_BIN_EXE_train"), &straight, dir.path());
    assert!(o.status.success(), "{}", stderr(&o));

    let metrics = dir.path().join("split/metrics.jsonl");
    let steps_logged = || {
        std::fs::read_to_string(&metrics)
            .map(|t| t.matches("\"kind\":\"step\"").count())
            .unwrap_or(0)
    };
    // A fixed pseudo-random sequence of kill points: how many more steps to let through, then
    // how many milliseconds more (landing inside a step, a checkpoint write or the evaluation).
    let mut lcg = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: u64| {
        lcg = lcg
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (lcg >> 33) % n
    };
    let (mut kills, mut finished) = (0, false);
    for round in 0..10 {
        let args: Vec<&str> = if round == 0 {
            config.iter().copied().chain(["split"]).collect()
        } else {
            vec!["--resume", "split", "--no-progress"]
        };
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_train"))
            .args(&args)
            .current_dir(dir.path())
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Round 0 dies before its first checkpoint; later rounds a few steps in.
        let (more, ms) = if round == 0 {
            (0, 0)
        } else {
            (next(8) as usize, next(40))
        };
        let target = steps_logged() + more;
        let start = Instant::now();
        while round == 0 && !dir.path().join("split/resolved.toml").exists() {
            assert!(start.elapsed() < Duration::from_secs(120), "never started");
            std::thread::sleep(Duration::from_millis(1));
        }
        while steps_logged() < target && child.try_wait().unwrap().is_none() {
            assert!(start.elapsed() < Duration::from_secs(120), "stuck");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(ms));
        let killed = child.try_wait().unwrap().is_none();
        if killed {
            child.kill().unwrap();
            kills += 1;
        }
        let status = child.wait().unwrap();
        let ckpts: Vec<String> = std::fs::read_dir(dir.path().join("split/checkpoints"))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        eprintln!(
            "round {round}: +{more} steps +{ms} ms, killed {killed}, {} steps logged, checkpoints {ckpts:?}",
            steps_logged()
        );
        if status.success() {
            finished = true;
            break;
        }
    }
    if !finished {
        let o = run(
            env!("CARGO_BIN_EXE_train"),
            &["--resume", "split", "--no-progress"],
            dir.path(),
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert!(kills >= 3, "only {kills} kills landed");

    assert_same_run(&dir.path().join("straight"), &dir.path().join("split"));
}

/// A full disk: `train` writing into a 512 KiB tmpfs (in a private mount namespace, so no root
/// is needed) stops with an error that names the file it could not write, says the disk is
/// full, and leaves every checkpoint written before intact: the run resumes elsewhere.
#[test]
fn a_full_disk_is_an_error_naming_the_path_and_the_run_resumes_from_what_was_written() {
    let namespaces = std::process::Command::new("unshare")
        .args(["-rm", "true"])
        .stderr(std::process::Stdio::null())
        .status();
    if !namespaces.is_ok_and(|s| s.success()) {
        eprintln!(
            "skipped: `unshare -rm` (a private mount namespace for a small tmpfs) is not permitted here"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tiny.toml"), TINY).unwrap();
    std::fs::create_dir(dir.path().join("disk")).unwrap();
    // The tmpfs disappears with the namespace: the run folder is copied out for inspection.
    let script = format!(
        "mount -t tmpfs -o size=512k tmpfs disk || exit 99; \
         '{}' --config tiny.toml --set train.epochs=8 --no-progress --out disk/run; \
         code=$?; cp -r disk/run saved; exit $code",
        env!("CARGO_BIN_EXE_train")
    );
    let o = std::process::Command::new("unshare")
        .args(["-rm", "sh", "-c", &script])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_ne!(o.status.code(), Some(99), "mount failed: {err}");
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains("disk/run/"), "the error names the path: {err}");
    assert!(err.contains("hint: the disk is full"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let saved = dir.path().join("saved");
    let ckpts: Vec<String> = std::fs::read_dir(saved.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        ckpts.iter().any(|c| c.starts_with("epoch-")),
        "no checkpoint fitted: {ckpts:?}"
    );
    assert!(
        !ckpts.iter().any(|c| c.ends_with(".tmp")),
        "a half-written checkpoint was left behind: {ckpts:?}"
    );
    // On a disk with room, the run continues from its last complete checkpoint and finishes.
    let o = run(
        env!("CARGO_BIN_EXE_train"),
        &["--resume", "saved", "--no-progress"],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(saved.join("results.json").is_file());
}
