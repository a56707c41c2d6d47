//! The bad-input catalogue, data side: each case is a user's mistake or a damaged file, run
//! through `train` as a user would. Each must end with exit code 2 and one clear message that
//! names the file or key and what was expected: never a panic, never a run that trains on the
//! wrong data. (Config mistakes — malformed TOML, unknown keys at every level, wrong types,
//! out-of-range values, `extends` cycles — are caught in `oodforge-core`'s config tests; damaged
//! CIFAR/.npy/.mat/HDF5 files in `oodforge-data`'s format tests and fuzz targets; see
//! `docs/BAD_INPUTS.md` for the whole list.)

mod common;

use common::{png, run, stderr};
use std::path::Path;

/// Two classes of 40x36 images for train and test, and a flat OOD folder.
fn folders(root: &Path) {
    for i in 0..4u8 {
        png(root, &format!("mine/train/dark/{i}.png"), 40, 36, 10 + i);
        png(root, &format!("mine/train/light/{i}.png"), 40, 36, 200 + i);
        png(root, &format!("mine/test/dark/{i}.png"), 40, 36, 20 + i);
        png(root, &format!("mine/test/light/{i}.png"), 40, 36, 210 + i);
        png(root, &format!("other/x{i}.png"), 40, 36, 100 + i);
    }
}

const CONFIG: &str = r#"
seed = 3
backend = "flex"
[data]
batch_size = 4
image_size = 32
pre_size = 32
train_transform = [{ op = "resize", size = 32 }, { op = "center_crop", size = 32 }]
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

/// Run `train` on `config` in `root` (run folder `out`) with `args`.
fn train(root: &Path, config: &str, out: &str, args: &[&str]) -> std::process::Output {
    std::fs::write(root.join("case.toml"), config).unwrap();
    let mut all = vec!["--config", "case.toml", "--no-progress", "--out", out];
    all.extend_from_slice(args);
    run(env!("CARGO_BIN_EXE_train"), &all, root)
}

/// `train` must succeed.
fn trains(root: &Path, config: &str, out: &str) {
    let o = train(root, config, out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// `train` must fail cleanly: exit code 2, no panic, no results. Returns stderr.
fn fails(root: &Path, config: &str, args: &[&str]) -> String {
    let o = train(root, config, "run", args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!root.join("run/results.json").exists());
    err
}

#[test]
fn the_unchanged_case_trains() {
    let dir = tempfile::tempdir().unwrap();
    folders(dir.path());
    trains(dir.path(), CONFIG, "run");
}

#[test]
fn an_empty_training_set() {
    let dir = tempfile::tempdir().unwrap();
    folders(dir.path());
    for class in ["dark", "light"] {
        std::fs::remove_dir_all(dir.path().join("mine/train").join(class)).unwrap();
        std::fs::create_dir(dir.path().join("mine/train").join(class)).unwrap();
    }
    let err = fails(dir.path(), CONFIG, &[]);
    assert!(err.contains("mine/train"), "{err}");
}

#[test]
fn an_ood_set_with_zero_images() {
    let dir = tempfile::tempdir().unwrap();
    folders(dir.path());
    std::fs::remove_dir_all(dir.path().join("other")).unwrap();
    std::fs::create_dir(dir.path().join("other")).unwrap();
    let err = fails(dir.path(), CONFIG, &[]);
    assert!(err.contains("other"), "{err}");
}

#[test]
fn class_counts_that_disagree_between_config_and_data() {
    let dir = tempfile::tempdir().unwrap();
    folders(dir.path());
    let err = fails(
        dir.path(),
        &CONFIG.replace("num_classes = 2", "num_classes = 3"),
        &[],
    );
    assert!(err.contains("mine/train") && err.contains('3'), "{err}");
}

#[test]
fn a_corrupted_image_in_the_training_set() {
    let dir = tempfile::tempdir().unwrap();
    folders(dir.path());
    let bad = dir.path().join("mine/train/dark/2.png");
    let bytes = std::fs::read(&bad).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    let err = fails(dir.path(), CONFIG, &[]);
    assert!(err.contains("mine/train/dark/2.png"), "{err}");
}

#[test]
fn a_file_that_is_not_an_image() {
    let dir = tempfile::tempdir().unwrap();
    folders(dir.path());
    std::fs::write(dir.path().join("mine/test/light/notes.png"), "not an image").unwrap();
    let err = fails(dir.path(), CONFIG, &[]);
    assert!(err.contains("mine/test/light/notes.png"), "{err}");
}

/// Not errors: an image smaller than the crop is zero-padded first and other modes (grey, RGBA,
/// 16-bit) are converted to RGB, as torchvision's `CenterCrop` and PIL's `.convert("RGB")` do.
#[test]
fn images_smaller_than_the_crop_or_in_other_modes_are_handled_as_torchvision_does() {
    let dir = tempfile::tempdir().unwrap();
    folders(dir.path());
    png(dir.path(), "mine/train/light/tiny.png", 8, 6, 50);
    image::GrayImage::from_fn(30, 50, |x, _| image::Luma([x as u8 * 8]))
        .save(dir.path().join("mine/train/dark/grey.png"))
        .unwrap();
    image::RgbaImage::from_fn(33, 33, |x, y| image::Rgba([x as u8, y as u8, 9, 128]))
        .save(dir.path().join("mine/train/dark/alpha.png"))
        .unwrap();
    image::ImageBuffer::<image::Rgb<u16>, Vec<u16>>::from_fn(36, 36, |x, _| {
        image::Rgb([x as u16 * 1000, 7, 65535])
    })
    .save(dir.path().join("mine/test/dark/deep.png"))
    .unwrap();
    let config = CONFIG.replace(
        r#"train_transform = [{ op = "resize", size = 32 }, { op = "center_crop", size = 32 }]"#,
        r#"train_transform = [{ op = "center_crop", size = 32 }]"#,
    );
    trains(dir.path(), &config, "run");
}

/// Images of several sizes and a pipeline that keeps each at its own size cannot be batched.
#[test]
fn images_of_several_sizes_without_a_fixed_size_crop() {
    let dir = tempfile::tempdir().unwrap();
    folders(dir.path());
    for i in 0..4 {
        png(
            dir.path(),
            &format!("mine/train/light/small{i}.png"),
            8,
            6,
            50,
        );
    }
    let config = CONFIG.replace(
        r#"train_transform = [{ op = "resize", size = 32 }, { op = "center_crop", size = 32 }]"#,
        "train_transform = []",
    );
    let err = fails(dir.path(), &config, &[]);
    assert!(
        err.contains("mine/train/light/small")
            && err.contains("6x8 after the transform")
            && err.contains("data.train_transform"),
        "{err}"
    );
}

#[test]
fn a_checkpoint_from_another_architecture() {
    let dir = tempfile::tempdir().unwrap();
    folders(dir.path());
    trains(dir.path(), CONFIG, "narrow");
    let err = fails(
        dir.path(),
        &CONFIG.replace("width = 2", "width = 4"),
        &["--set", "model.weights.path=narrow"],
    );
    assert!(
        err.contains("narrow/checkpoints/epoch-0001/model.bpk")
            && err.contains("tensors do not fit"),
        "{err}"
    );
    assert!(
        err.contains("written for [model] backbone = \"resnet10\""),
        "{err}"
    );
    assert!(err.contains("width = 2"), "{err}");
    assert!(err.lines().count() < 6, "one short message: {err}");
}
