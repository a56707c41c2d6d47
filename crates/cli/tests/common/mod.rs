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

/// Two run folders that must hold the same training: the same `results.json` and the same
/// log, wall-clock fields aside.
pub fn assert_same_run(a: &Path, b: &Path) {
    let read = |run: &Path| std::fs::read_to_string(run.join("results.json")).unwrap();
    assert_eq!(read(a), read(b), "results.json");
    assert_eq!(
        oodforge_testutil::metrics_lines(a),
        oodforge_testutil::metrics_lines(b),
        "metrics.jsonl"
    );
}

/// An RGB test image at `root/rel` (folders made): red `v`, green and blue ramps.
pub fn png(root: &Path, rel: &str, w: u32, h: u32, v: u8) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([v, (x * 6) as u8, (y * 7) as u8]))
        .save(p)
        .unwrap();
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
