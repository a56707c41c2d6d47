//! What the command-line tests share: running a binary as a user would, reading its output, and
//! the smallest training config. Each test binary uses a part of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Run `bin` with `args` in `cwd`, quiet logging.
pub fn run(bin: &str, args: &[&str], cwd: &Path) -> Output {
    Command::new(bin)
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A run's `metrics.jsonl` without its wall-clock fields, to compare two runs' logs.
pub fn metrics_lines(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            o.remove("images_per_s");
            o.remove("seconds");
            v
        })
        .collect()
}

/// Standard output and standard error together.
pub fn text(o: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&o.stdout), stderr(o))
}

/// One epoch of a width-2 ResNet-10 on a few built-in images: a second of training.
pub const TINY: &str = r#"
seed = 1
backend = "flex"
[data]
batch_size = 8
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
"#;
