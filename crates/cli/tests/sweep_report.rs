//! `sweep` and `report` as a user runs them: a grid x seeds over the built-in data with two
//! local workers, skipping finished runs on a second call, a failing run reported without
//! stopping the others, typos refused before anything runs, the SLURM array script, and the
//! paper comparison with `--check`.

mod common;

use common::{TINY, run, text};
use std::process::Command;

/// The tiny config, named (run folders are named after it).
fn base() -> String {
    format!("name = \"tiny\"{TINY}")
}

const SWEEP: &str = r#"
base = "base.toml"
seeds = [0, 1]
out = "runs/grid"
[grid]
"optim.lr" = [0.05, 0.1]
[slurm]
partition = "gpu"
time = "02:00:00"
cpus = 4
mem = "16G"
max_parallel = 2
setup = ["module load cuda"]
"#;

#[test]
fn a_grid_over_seeds_runs_skips_finished_runs_and_reports_failures() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("base.toml"), base()).unwrap();
    std::fs::write(d.join("grid.toml"), SWEEP).unwrap();
    let sweep = env!("CARGO_BIN_EXE_sweep");
    let train = env!("CARGO_BIN_EXE_train");

    let o = run(sweep, &["grid.toml", "--dry-run"], d);
    assert!(o.status.success(), "{}", text(&o));
    let listing = text(&o);
    assert!(listing.contains("4 runs of `tiny`"), "{listing}");
    assert_eq!(listing.matches("to run").count(), 4, "{listing}");

    let o = run(
        sweep,
        &["grid.toml", "--workers", "2", "--train-bin", train],
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("4 finished, 0 already done, 0 failed"),
        "{out}"
    );
    // Two points (stable names: config name + hash of the overrides), two seeds each.
    let points: Vec<String> = std::fs::read_dir(d.join("runs/grid"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tiny-"))
        .collect();
    assert_eq!(points.len(), 2, "{points:?}");
    for p in &points {
        assert_eq!(p.len(), "tiny-".len() + 8);
        for s in ["s0", "s1"] {
            assert!(
                d.join("runs/grid")
                    .join(p)
                    .join(s)
                    .join("results.json")
                    .is_file()
            );
        }
        let resolved =
            std::fs::read_to_string(d.join("runs/grid").join(p).join("s1/resolved.toml")).unwrap();
        assert!(resolved.contains("seed = 1"), "{resolved}");
    }
    let table = std::fs::read_to_string(d.join("runs/grid/sweep.md")).unwrap();
    assert!(
        table.contains("optim.lr=0.05") && table.contains("optim.lr=0.1"),
        "{table}"
    );
    assert!(
        table.contains("| 2/2 |") && table.contains(" ± "),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("runs/grid/sweep.json")).unwrap())
            .unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);

    // A second call finds every run finished.
    let o = run(sweep, &["grid.toml", "--train-bin", train], d);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("0 finished, 4 already done, 0 failed"),
        "{}",
        text(&o)
    );

    // GPU pinning: worker i sees only gpus[i % n]. A wrapper records what each `train` saw
    // and runs the real binary.
    let wrapper = d.join("train-wrapper.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$CUDA_VISIBLE_DEVICES\" >> {}\nexec {} \"$@\"\n",
            d.join("gpus.txt").display(),
            train
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(d.join("pin.toml"), SWEEP.replace("runs/grid", "runs/pin")).unwrap();
    let o = run(
        sweep,
        &[
            "pin.toml",
            "--gpus",
            "3,5",
            "--train-bin",
            wrapper.to_str().unwrap(),
        ],
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    let seen = std::fs::read_to_string(d.join("gpus.txt")).unwrap();
    let mut seen: Vec<&str> = seen.lines().collect();
    seen.sort();
    assert_eq!(seen, ["3", "3", "5", "5"], "two workers, one GPU each");
    // Without --gpus: the GPUs visible to sweep itself.
    std::fs::remove_file(d.join("gpus.txt")).unwrap();
    std::fs::write(d.join("pin2.toml"), SWEEP.replace("runs/grid", "runs/pin2")).unwrap();
    let o = Command::new(sweep)
        .args(["pin2.toml", "--train-bin", wrapper.to_str().unwrap()])
        .current_dir(d)
        .env("RUST_LOG", "warn")
        .env("CUDA_VISIBLE_DEVICES", "4")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let seen = std::fs::read_to_string(d.join("gpus.txt")).unwrap();
    assert_eq!(seen.lines().collect::<Vec<_>>(), ["4", "4", "4", "4"]);

    // A point whose runs fail at run time (weights file missing) does not stop the others; the
    // failures are listed with their logs and the exit code says so.
    let failing = SWEEP.replace(
        "\"optim.lr\" = [0.05, 0.1]",
        "\"optim.lr\" = [0.05]\n\"model.weights\" = [{ path = \"missing.ckpt\" }]",
    );
    std::fs::write(
        d.join("fail.toml"),
        failing.replace("runs/grid", "runs/fail"),
    )
    .unwrap();
    let o = run(sweep, &["fail.toml", "--train-bin", train], d);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("0 finished, 0 already done, 2 failed"),
        "{out}"
    );
    assert!(out.contains("log: ") && out.contains("s0.log"), "{out}");
    let log = std::fs::read_dir(d.join("runs/fail"))
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            p.is_dir().then_some(p)
        })
        .next()
        .unwrap()
        .join("s0.log");
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("missing.ckpt"),
        "the log holds train's error"
    );

    // A typo in a grid key fails before anything runs, naming the key.
    std::fs::write(
        d.join("typo.toml"),
        SWEEP
            .replace("optim.lr", "optim.lrr")
            .replace("runs/grid", "runs/typo"),
    )
    .unwrap();
    let o = run(sweep, &["typo.toml", "--train-bin", train], d);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("lrr"), "{}", text(&o));
    assert!(!d.join("runs/typo").exists());

    // SLURM: an array job over the pending runs (none here: the script says so) ...
    let o = run(sweep, &["grid.toml", "--slurm", "--train-bin", train], d);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("0 of 4 runs pending"), "{}", text(&o));
    // ... and with one run's results removed, a one-task array that resumes it by index.
    let victim = d.join("runs/grid").join(&points[0]).join("s1");
    std::fs::remove_file(victim.join("results.json")).unwrap();
    let o = run(sweep, &["grid.toml", "--slurm", "--train-bin", train], d);
    assert!(o.status.success(), "{}", text(&o));
    let script = std::fs::read_to_string(d.join("runs/grid/slurm/sweep.sbatch")).unwrap();
    for line in [
        "#SBATCH --job-name=tiny",
        "#SBATCH --time=02:00:00",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --gres=gpu:1",
        "#SBATCH --mem=16G",
        "#SBATCH --partition=gpu",
        "module load cuda",
        "--task \"$SLURM_ARRAY_TASK_ID\"",
    ] {
        assert!(script.contains(line), "{line}\n{script}");
    }
    let array = script
        .lines()
        .find(|l| l.starts_with("#SBATCH --array="))
        .unwrap();
    let index: usize = array["#SBATCH --array=".len()..]
        .trim_end_matches("%2")
        .parse()
        .unwrap_or_else(|_| panic!("{array}"));
    // What an array task runs: `sweep FILE --task K` (checkpoints exist: it resumes).
    let o = run(
        sweep,
        &[
            "grid.toml",
            "--task",
            &index.to_string(),
            "--train-bin",
            train,
        ],
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(victim.join("results.json").is_file());
    let o = run(
        sweep,
        &["grid.toml", "--task", "99", "--train-bin", train],
        d,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("out of range"), "{}", text(&o));

    // report: our seeds of one point against "paper" numbers.
    let agg = run(
        env!("CARGO_BIN_EXE_eval"),
        &[
            "--runs",
            &format!("runs/grid/{}/s0", points[0]),
            &format!("runs/grid/{}/s1", points[0]),
            "--out",
            "runs/grid/agg",
        ],
        d,
    );
    assert!(agg.status.success(), "{}", text(&agg));
    let agg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.join("runs/grid/agg/results.json")).unwrap(),
    )
    .unwrap();
    let msp_far = 100.0
        * agg["postprocessors"]["msp"]["far"]["auroc"]["mean"]
            .as_f64()
            .unwrap();
    let acc = 100.0 * agg["id_accuracy"]["mean"].as_f64().unwrap();
    let spec = format!(
        r#"
title = "tiny vs a made-up paper"
source = "this test"
runs = ["runs/grid/{p}/s*"]
tolerance = 0.5
[[rows]]
label = "MSP far"
postprocessor = "msp"
set = "far"
paper = {{ auroc = {close} }}
[[rows]]
set = "id"
paper = {{ accuracy = {acc} }}
"#,
        p = points[0],
        close = msp_far + 0.25,
    );
    std::fs::create_dir_all(d.join("exp")).unwrap();
    std::fs::write(d.join("exp/table.toml"), &spec).unwrap();
    let report = env!("CARGO_BIN_EXE_report");
    let o = run(report, &["exp/table.toml", "--check"], d);
    assert!(o.status.success(), "{}", text(&o));
    let md = std::fs::read_to_string(d.join("exp/table.md")).unwrap();
    assert!(
        md.contains("| MSP far | auroc |") && md.contains("| -0.25 | yes |"),
        "{md}"
    );
    assert!(d.join("exp/table.csv").is_file());
    // The same from the aggregate `eval --runs` wrote.
    let o = run(
        report,
        &[
            "exp/table.toml",
            "--aggregate",
            "runs/grid/agg/results.json",
            "--check",
        ],
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    // A paper number 3 points away fails the check.
    std::fs::write(
        d.join("exp/far.toml"),
        spec.replace(
            &format!("auroc = {}", msp_far + 0.25),
            &format!("auroc = {}", msp_far + 3.0),
        ),
    )
    .unwrap();
    let o = run(report, &["exp/far.toml", "--check"], d);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("**no** (±0.5)"), "{}", text(&o));
    // A row naming runs that do not exist (yet) is reported as missing, and fails the check.
    std::fs::write(
        d.join("exp/partial.toml"),
        format!("{spec}\n[[rows]]\nlabel = \"other method\"\npostprocessor = \"msp\"\nset = \"far\"\npaper = {{ auroc = 90.0 }}\nruns = [\"runs/none/s*\"]\n"),
    )
    .unwrap();
    let o = run(report, &["exp/partial.toml"], d);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("| other method | auroc | missing |"),
        "{}",
        text(&o)
    );
    let o = run(report, &["exp/partial.toml", "--check"], d);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    // A table in another metric convention is refused with the command that fixes it.
    std::fs::write(
        d.join("exp/oe.toml"),
        spec.replace(
            "source = \"this test\"",
            "source = \"this test\"\nconvention = \"oe\"",
        ),
    )
    .unwrap();
    let o = run(report, &["exp/oe.toml"], d);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--convention oe"), "{}", text(&o));
}

/// A real SLURM submission, where a cluster answers (`.ci/slurm_localhost.sh` starts a
/// single-node one): the array job trains every run through `sweep --task`, `--wait` blocks
/// until it ends, and the table is written.
#[test]
fn slurm_array_job_runs_every_task_on_a_real_cluster() {
    // A node that can take jobs (a drained or down node would leave the job pending forever).
    let up = Command::new("sinfo")
        .args(["-h", "-o", "%T"])
        .output()
        .is_ok_and(|o| {
            let states = String::from_utf8_lossy(&o.stdout);
            o.status.success()
                && states
                    .split_whitespace()
                    .any(|s| ["idle", "mixed", "mix", "allocated", "alloc"].contains(&s))
        });
    if !up {
        eprintln!(
            "skipped: no SLURM node answers `sinfo` as idle (run .ci/slurm_localhost.sh as root)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("base.toml"), base()).unwrap();
    let sweep_file = SWEEP
        .replace("runs/grid", "runs/slurm")
        .replace("partition = \"gpu\"\n", "")
        .replace("mem = \"16G\"\n", "")
        .replace("cpus = 4", "cpus = 1\ngpus = 0")
        .replace(
            "setup = [\"module load cuda\"]",
            "setup = [\"echo task $SLURM_ARRAY_TASK_ID\"]",
        );
    std::fs::write(d.join("grid.toml"), sweep_file).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sweep"))
        .args([
            "grid.toml",
            "--slurm",
            "--submit",
            "--wait",
            "--train-bin",
            env!("CARGO_BIN_EXE_train"),
        ])
        .current_dir(d)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Four one-epoch runs take seconds; ten minutes means the cluster is not running them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().ok();
            let _ = Command::new("scancel").args(["--name", "tiny"]).status();
            panic!("the SLURM job did not end within 10 minutes (see `squeue`, `sinfo -R`)");
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let o = child.wait_with_output().unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("Submitted batch job"), "{out}");
    let table = std::fs::read_to_string(d.join("runs/slurm/sweep.md")).unwrap();
    assert_eq!(table.matches("| 2/2 |").count(), 2, "{table}");
    // Each task wrote its SLURM log under the sweep folder.
    let logs = std::fs::read_dir(d.join("runs/slurm/slurm"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".out")
        })
        .count();
    assert_eq!(logs, 4);
}
