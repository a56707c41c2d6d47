//! End-to-end runs on tiny generated data: the run folder's files, stopping and resuming, and
//! `eval` of a finished run.

mod common;

use burn::module::Module;
use burn::tensor::Device;
use common::{Collect, final_weights, opts};
use oodforge_core::config::{self, BackendChoice, ExperimentConfig, ResolvedConfig};
use oodforge_models::Classifier;
use oodforge_testutil::{device_rng, metrics_lines};
use oodforge_train::{TrainError, TrainOptions, checkpoint, evaluate_run, resume, train};
use std::path::Path;

// `train` seeds the device's global RNG and draws initial weights from it: runs (and model
// constructions) in parallel test threads would interleave their draws and make "same weights"
// comparisons flaky. Every test here holds `device_rng` (see there) for its whole body.

fn tiny(epochs: usize) -> ResolvedConfig {
    let text = format!(
        r#"
name = "tiny"
seed = 5
backend = "flex"
[data]
batch_size = 16
eval_batch_size = 32
[data.source]
kind = "synthetic"
num_classes = 3
train_per_class = 20
test_per_class = 10
ood_per_set = 12
outliers = 4
[model]
backbone = "resnet10"
width = 4
[train]
epochs = {epochs}
checkpoint_every = 1
log_every = 2
"#
    );
    let cfg: ExperimentConfig = toml::from_str(&text).unwrap();
    config::resolve(cfg, Path::new("tiny.toml")).unwrap()
}

#[test]
fn stopping_and_resuming_gives_the_same_weights_as_training_straight() {
    let _rng = device_rng();
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(4);
    let straight = dir.path().join("straight");
    let out = train(&cfg, &opts(&straight)).unwrap();
    assert!(out.finished && out.results.is_some());

    let split = dir.path().join("split");
    let first = train(
        &cfg,
        &TrainOptions {
            stop_after: Some(2),
            ..opts(&split)
        },
    )
    .unwrap();
    assert!(!first.finished && first.results.is_none());
    assert_eq!(
        checkpoint::load_state(
            &checkpoint::latest(&split.join("checkpoints"))
                .unwrap()
                .unwrap()
        )
        .unwrap()
        .epoch,
        2
    );
    let second = resume(&split, &opts(&split)).unwrap();
    assert!(second.finished);

    let a = final_weights(&straight, &cfg);
    let b = final_weights(&split, &cfg);
    assert!(a.len() > 1000);
    assert_eq!(a, b, "resumed training diverged from straight training");
    // Not vacuous: training moved the weights away from a fresh initialisation.
    let fresh = {
        let mut c = Collect(Vec::new());
        Classifier::new(&cfg.config.model, 3, 32, &Device::flex()).visit(&mut c);
        c.0
    };
    assert_ne!(a, fresh);
    // Same results table, and the manifest records both sessions.
    let ra = std::fs::read_to_string(straight.join("results.json")).unwrap();
    let rb = std::fs::read_to_string(split.join("results.json")).unwrap();
    assert_eq!(ra, rb);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(split.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["sessions"].as_array().unwrap().len(), 2);
    assert_eq!(manifest["sessions"][1]["from_epoch"], 2);
}

#[test]
fn run_folder_has_every_file_and_eval_reproduces_the_results() {
    let _rng = device_rng();
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(2);
    let run = dir.path().join("run");
    let out = train(&cfg, &opts(&run)).unwrap();
    for f in [
        "resolved.toml",
        "manifest.json",
        "metrics.jsonl",
        "results.json",
        "results.md",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    assert!(run.join("checkpoints/epoch-0001/model.bpk").is_file());
    assert!(run.join("checkpoints/epoch-0002/optim.bpk").is_file());
    // No temporary leftovers of the atomic writes.
    let leftovers: Vec<_> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.starts_with('.').then_some(n)
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["backend"], "flex");
    assert_eq!(manifest["config_hash"], cfg.hash.as_str());
    assert_eq!(manifest["burn_version"], "0.22.1");
    assert_eq!(manifest["datasets"].as_array().unwrap().len(), 7);
    assert_eq!(manifest["epochs_completed"], 2);
    assert!(manifest["train_images_per_s"].as_f64().unwrap() > 0.0);

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let epochs: Vec<&serde_json::Value> = lines.iter().filter(|l| l["kind"] == "epoch").collect();
    let steps: Vec<&serde_json::Value> = lines.iter().filter(|l| l["kind"] == "step").collect();
    assert_eq!(epochs.len(), 2);
    // 60 images / batch 16 = 4 steps per epoch (last batch of 12 kept), a step line every 2.
    assert_eq!(steps.len(), 4);
    for l in &lines {
        assert!(l["loss"].as_f64().unwrap().is_finite() && l["lr"].as_f64().unwrap() > 0.0);
        assert!(l["images_per_s"].as_f64().unwrap() > 0.0);
    }
    assert!(epochs[1]["train_accuracy"].as_f64().is_some());
    assert!(
        steps[0]["ce"].as_f64().is_some(),
        "named loss terms are logged"
    );

    // results.json shape (public interface).
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("results.json")).unwrap()).unwrap();
    let acc = results["id_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    for pp in ["msp", "maxlogit", "energy"] {
        let r = &results["postprocessors"][pp];
        for set in ["unseen_curved", "unseen_angular", "noise", "textures"] {
            let d = &r["datasets"][set];
            assert_eq!(
                d["group"],
                if set.starts_with("unseen") {
                    "near"
                } else {
                    "far"
                }
            );
            for m in ["auroc", "fpr95", "aupr_in", "aupr_out"] {
                let v = d[m].as_f64().unwrap();
                assert!((0.0..=1.0).contains(&v), "{pp}/{set}/{m} = {v}");
            }
        }
        for g in ["near", "far"] {
            assert!(r[g]["auroc"].as_f64().is_some(), "{pp}: {g} mean");
        }
    }

    // `eval --run` recomputes the same numbers from the checkpoint.
    std::fs::remove_file(run.join("results.json")).unwrap();
    let again = evaluate_run(&run, Some(BackendChoice::Flex)).unwrap();
    assert_eq!(Some(again), out.results);
    assert!(run.join("results.json").is_file());
}

#[test]
fn an_existing_run_is_never_overwritten() {
    let _rng = device_rng();
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(1);
    let run = dir.path().join("run");
    train(&cfg, &opts(&run)).unwrap();
    let before = std::fs::read(run.join("results.json")).unwrap();
    let err = train(&cfg, &opts(&run)).unwrap_err();
    assert!(matches!(err, TrainError::RunExists { .. }), "{err}");
    assert!(err.to_string().contains("--resume"), "{err}");
    assert_eq!(std::fs::read(run.join("results.json")).unwrap(), before);
}

#[test]
fn resuming_with_an_edited_config_is_refused() {
    let _rng = device_rng();
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(2);
    let run = dir.path().join("run");
    train(
        &cfg,
        &TrainOptions {
            stop_after: Some(1),
            ..opts(&run)
        },
    )
    .unwrap();
    let edited = std::fs::read_to_string(run.join("resolved.toml"))
        .unwrap()
        .replace("lr = 0.1", "lr = 0.2");
    std::fs::write(run.join("resolved.toml"), edited).unwrap();
    let err = resume(&run, &opts(&run)).unwrap_err().to_string();
    assert!(err.contains("edited"), "{err}");
}

/// A checkpoint damaged after it was written (a flipped byte in its weights, a truncated
/// state.json) is skipped: `latest` and `resume` use the one before it, and the resumed run
/// still ends with the weights of an uninterrupted one. With every checkpoint damaged the error
/// names the damage instead of starting over.
#[test]
fn damaged_checkpoints_are_reported_and_the_previous_one_used() {
    let _rng = device_rng();
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(3);
    let straight = dir.path().join("straight");
    train(&cfg, &opts(&straight)).unwrap();

    let run = dir.path().join("damaged");
    train(
        &cfg,
        &TrainOptions {
            stop_after: Some(2),
            ..opts(&run)
        },
    )
    .unwrap();
    let ckpts = run.join("checkpoints");
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(ckpts.join("epoch-0002/state.json")).unwrap(),
    )
    .unwrap();
    for file in ["model.bpk", "optim.bpk"] {
        assert_eq!(state["sha256"][file].as_str().unwrap().len(), 64, "{state}");
    }
    // Flip one byte in the middle of the newest checkpoint's weights.
    let model = ckpts.join("epoch-0002/model.bpk");
    let mut bytes = std::fs::read(&model).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&model, &bytes).unwrap();
    let e = checkpoint::verify(&ckpts.join("epoch-0002"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("damaged checkpoint") && e.contains("model.bpk"),
        "{e}"
    );
    assert_eq!(
        checkpoint::latest(&ckpts).unwrap().unwrap(),
        ckpts.join("epoch-0001")
    );
    let resumed = resume(&run, &opts(&run)).unwrap();
    assert!(resumed.finished);
    assert_eq!(final_weights(&run, &cfg), final_weights(&straight, &cfg));

    // Every checkpoint damaged: an error, not a fresh start.
    for entry in std::fs::read_dir(&ckpts).unwrap() {
        let state = entry.unwrap().path().join("state.json");
        let text = std::fs::read_to_string(&state).unwrap();
        std::fs::write(&state, &text[..text.len() / 2]).unwrap();
    }
    let e = checkpoint::latest(&ckpts).unwrap_err().to_string();
    assert!(e.contains("state.json"), "{e}");
    let e = resume(&run, &opts(&run)).unwrap_err().to_string();
    assert!(e.contains("state.json"), "{e}");
}

/// A WRN-10-1 with dropout 0.3: its masks come from the device RNG, which a resume must replay.
fn tiny_dropout(epochs: usize) -> ResolvedConfig {
    let text = tiny(epochs).text.replace(
        "[model]\nbackbone = \"resnet10\"\nwidth = 4\nstem = \"cifar\"\n",
        "[model]\nbackbone = \"wrn\"\ndepth = 10\nwiden_factor = 1\ndropout = 0.3\n",
    );
    assert!(text.contains("\"wrn\""), "{text}");
    let cfg: ExperimentConfig = toml::from_str(&text).unwrap();
    config::resolve(cfg, Path::new("tiny_dropout.toml")).unwrap()
}

#[test]
fn a_stop_request_checkpoints_the_current_step_and_resuming_is_exact() {
    let _rng = device_rng();
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_dropout(2);
    let straight = dir.path().join("straight");
    train(&cfg, &opts(&straight)).unwrap();

    // A stop already requested: each session trains one step, checkpoints it, and returns.
    let split = dir.path().join("split");
    let stop = oodforge_train::StopRequest::new();
    stop.request(15);
    let stopping = TrainOptions {
        stop: stop.clone(),
        ..opts(&split)
    };
    let first = train(&cfg, &stopping).unwrap();
    let stopped = first.stopped.expect("stopped");
    assert!(!first.finished && first.results.is_none());
    assert_eq!((stopped.signal, stopped.epoch, stopped.step), (15, 1, 1));
    assert!(stopped.checkpoint.ends_with("epoch-0000-step-00000001"));
    let state = checkpoint::load_state(&stopped.checkpoint).unwrap();
    let partial = state.partial.expect("a mid-epoch state");
    assert_eq!(
        (state.epoch, state.step, partial.batches, partial.seen),
        (0, 1, 1, 16)
    );

    let second = resume(&split, &stopping).unwrap();
    assert_eq!(second.stopped.unwrap().step, 2);
    // The newer mid-epoch checkpoint supersedes the older one.
    let names: Vec<String> = std::fs::read_dir(split.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["epoch-0000-step-00000002"]);

    let last = resume(&split, &opts(&split)).unwrap();
    assert!(last.finished && last.stopped.is_none() && last.results.is_some());
    let (a, b) = (final_weights(&straight, &cfg), final_weights(&split, &cfg));
    let differ = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    assert_eq!(
        differ,
        0,
        "resumed mid-epoch: {differ} of {} weights diverged",
        a.len()
    );
    // The log is the uninterrupted run's, epoch means included (4 steps an epoch).
    assert_eq!(metrics_lines(&straight), metrics_lines(&split));
    assert_eq!(
        std::fs::read_to_string(straight.join("results.json")).unwrap(),
        std::fs::read_to_string(split.join("results.json")).unwrap()
    );
    let mut names: Vec<String> = std::fs::read_dir(split.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["epoch-0001", "epoch-0002"]);
}

#[test]
fn resume_changes_only_safe_keys_and_names_the_keys_of_an_edited_config() {
    let _rng = device_rng();
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny(3);
    let run = dir.path().join("run");
    let first = train(
        &cfg,
        &TrainOptions {
            stop_after: Some(2),
            ..opts(&run)
        },
    )
    .unwrap();
    assert!(!first.finished);
    let with = |set: &[&str]| TrainOptions {
        set: set.iter().map(|s| s.to_string()).collect(),
        ..opts(&run)
    };

    // A key that changes the experiment: refused, nothing written.
    let before = std::fs::read_to_string(run.join("resolved.toml")).unwrap();
    let e = resume(&run, &with(&["optim.lr=0.5", "train.epochs=3"]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("optim.lr")
            && !e.contains("would change the experiment itself: optim.lr, train.epochs"),
        "{e}"
    );
    assert!(e.contains("train.epochs, train.log_every"), "{e}");
    assert_eq!(
        std::fs::read_to_string(run.join("resolved.toml")).unwrap(),
        before
    );
    // Fewer epochs than already trained: refused.
    let e = resume(&run, &with(&["train.epochs=1"]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--set train.epochs=1") && e.contains("2 epoch"),
        "{e}"
    );

    // resolved.toml edited by hand: refused, with the keys.
    let edited = before.replace("log_every = 2", "log_every = 3");
    assert_ne!(edited, before);
    std::fs::write(run.join("resolved.toml"), &edited).unwrap();
    let e = resume(&run, &opts(&run)).unwrap_err().to_string();
    assert!(
        e.contains("resolved.toml") && e.contains("in: train.log_every"),
        "{e}"
    );
    assert!(e.contains("--set KEY=VALUE"), "{e}");
    let edited = before.replace("seed = 5", "seed = 6");
    std::fs::write(run.join("resolved.toml"), &edited).unwrap();
    let e = resume(&run, &opts(&run)).unwrap_err().to_string();
    assert!(
        e.contains("in: seed") && e.contains("start a new run"),
        "{e}"
    );
    std::fs::write(run.join("resolved.toml"), &before).unwrap();

    // Safe keys: the run goes on to 4 epochs, and the folder records the new config.
    let out = resume(&run, &with(&["train.epochs=4", "train.log_every=1"])).unwrap();
    assert!(out.finished);
    let state = checkpoint::load_state(
        &checkpoint::latest(&run.join("checkpoints"))
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(state.epoch, 4);
    let now = std::fs::read_to_string(run.join("resolved.toml")).unwrap();
    assert!(
        now.contains("epochs = 4") && now.contains("log_every = 1"),
        "{now}"
    );
    let steps = metrics_lines(&run)
        .iter()
        .filter(|l| l["kind"] == "step" && l["epoch"] == 4)
        .count();
    assert_eq!(steps, 4, "epoch 4 logs every step");
}

#[test]
fn a_non_finite_loss_or_gradient_stops_the_run_naming_the_step_the_pieces_and_the_last_good_checkpoint()
 {
    let _rng = device_rng();
    let dir = tempfile::tempdir().unwrap();
    // One step an epoch; warm-up from lr 0 to a lr that blows the weights up: the first epoch
    // is checkpointed, a later step goes non-finite.
    let text = tiny(6)
        .text
        .replace("batch_size = 16", "batch_size = 60")
        .replace("lr = 0.1", "lr = 1e12")
        .replace("warmup_epochs = 0", "warmup_epochs = 5");
    let cfg: ExperimentConfig = toml::from_str(&text).unwrap();
    let cfg = config::resolve(cfg, Path::new("nan.toml")).unwrap();
    let run = dir.path().join("run");
    let e = train(&cfg, &opts(&run)).unwrap_err();
    let msg = e.to_string();
    let TrainError::NonFinite {
        what, epoch, step, ..
    } = &e
    else {
        panic!("{msg}")
    };
    assert!(*what == "loss" || *what == "gradient norm", "{msg}");
    assert!(*epoch >= 2 && epoch == step, "{msg}");
    assert!(
        msg.contains("loss pieces: total = ") && msg.contains("ce = "),
        "{msg}"
    );
    let last = checkpoint::latest(&run.join("checkpoints"))
        .unwrap()
        .unwrap();
    assert_eq!(checkpoint::load_state(&last).unwrap().epoch, epoch - 1);
    assert!(
        msg.contains(&format!("The last good checkpoint is {}", last.display())),
        "{msg}"
    );
    assert!(msg.contains("--set model.weights.path="), "{msg}");
}
