//! Fuzzing every parser of untrusted input with proptest: the experiment config (TOML), CIFAR
//! binaries, `.npy` arrays, `.mat` files (SVHN), OpenOOD image lists, HDF5 feature bags, and
//! PNG/JPEG images. Each starts from a valid file (a fixture written by the reference writer, or
//! one written here) and takes random damage: bytes overwritten, the file cut short, bytes
//! inserted, or all of it random. Whatever the input, the reader returns a value or an error
//! that names the file; it never panics. The case count and the seed are fixed, so CI time is
//! bounded and a run reproducible (set `PROPTEST_CASES` and `PROPTEST_RNG_SEED` to explore
//! further locally); a failure prints the shrunk input.
//!
//! Nor may a reader believe a damaged length: every case runs under an allocator that refuses
//! any single request over [`CAP`], and the case fails if one was made. Without it a damaged
//! dimension that asks for 12 GiB gets it (Linux overcommits) and the zero-filling kills the
//! process for memory, which says nothing about the input (CI, 2026-11-25).

use oodforge_data::formats::cifar::{self, Cifar};
use oodforge_data::formats::files::{FileList, decode_bytes};
use oodforge_data::formats::npy::NpyImages;
use oodforge_data::formats::{mat, svhn};
use oodforge_data::{ImageSource, bags};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};

/// The largest single allocation a reader may make on these inputs (none is over 8 KiB; decoded
/// images are at most 8192 x 8192 x 3 = 192 MiB by `files::MAX_IMAGE_PIXELS`).
const CAP: usize = 256 << 20;

struct Capped;

thread_local! {
    /// The largest request this thread had refused since the case began.
    static REFUSED: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call goes to the system allocator unchanged, except requests over CAP, which
// are refused with a null pointer as the GlobalAlloc contract allows.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if refuse(layout.size()) {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if refuse(layout.size()) {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if refuse(new_size) {
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn refuse(size: usize) -> bool {
    if size <= CAP {
        return false;
    }
    // try_with: no panic from inside the allocator while the thread is being torn down.
    let _ = REFUSED.try_with(|r| r.set(r.get().max(size)));
    true
}

#[global_allocator]
static ALLOCATOR: Capped = Capped;

/// Run one case and fail it if it asked for more than [`CAP`] at once. A reader that checks
/// its allocation (`try_reserve`) turns the refusal into an error and the case fails here with
/// the size; one that does not aborts with "memory allocation of N bytes failed".
fn bounded(case: impl FnOnce() -> Result<(), TestCaseError>) -> Result<(), TestCaseError> {
    REFUSED.with(|r| r.set(0));
    let result = case();
    let refused = REFUSED.with(|r| r.replace(0));
    prop_assert!(
        refused == 0,
        "a reader asked for {refused} bytes at once from a damaged input"
    );
    result
}

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Damage done to a valid file.
#[derive(Debug, Clone)]
enum Damage {
    /// (position as a fraction of the length, byte)
    Overwrite(Vec<(f64, u8)>),
    /// Keep this fraction of the file.
    Truncate(f64),
    /// Insert bytes at a fraction of the length.
    Insert(f64, Vec<u8>),
    /// Replace the whole file.
    Random(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        4 => prop::collection::vec((0.0..1.0f64, any::<u8>()), 1..16).prop_map(Damage::Overwrite),
        2 => (0.0..1.0f64).prop_map(Damage::Truncate),
        1 => (0.0..1.0f64, prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(at, b)| Damage::Insert(at, b)),
        1 => prop::collection::vec(any::<u8>(), 0..512).prop_map(Damage::Random),
    ]
}

fn apply(valid: &[u8], d: &Damage) -> Vec<u8> {
    let at = |f: f64, len: usize| ((f * len as f64) as usize).min(len);
    let mut b = valid.to_vec();
    match d {
        Damage::Overwrite(edits) => {
            for &(f, byte) in edits {
                if !b.is_empty() {
                    let i = at(f, b.len() - 1);
                    b[i] = byte;
                }
            }
        }
        Damage::Truncate(f) => b.truncate(at(*f, b.len())),
        Damage::Insert(f, bytes) => {
            let i = at(*f, b.len());
            b.splice(i..i, bytes.iter().copied());
        }
        Damage::Random(bytes) => b = bytes.clone(),
    }
    b
}

/// An error must name the file it is about.
fn names(e: impl std::fmt::Display, path: &Path) -> Result<(), TestCaseError> {
    let e = e.to_string();
    let name = path.file_name().unwrap().to_string_lossy();
    prop_assert!(e.contains(name.as_ref()), "error does not name {name}: {e}");
    Ok(())
}

fn config() -> ProptestConfig {
    // 256 cases a parser by default; PROPTEST_CASES overrides (proptest reads it). The seed is
    // fixed unless PROPTEST_RNG_SEED names another, so a CI run is reproducible: proptest's
    // default random seed once failed CI on an input that no later run could show. Explore
    // with other seeds and more cases locally.
    let default = ProptestConfig::default();
    let rng_seed = match std::env::var_os("PROPTEST_RNG_SEED") {
        Some(_) => default.rng_seed,
        None => RngSeed::Fixed(20_261_125),
    };
    ProptestConfig {
        failure_persistence: None,
        rng_seed,
        ..default
    }
}

/// Two CIFAR-10 records: label byte, then 3072 pixel bytes.
fn cifar10() -> Vec<u8> {
    let mut b = Vec::new();
    for (label, fill) in [(3u8, 7u8), (9, 200)] {
        b.push(label);
        b.extend((0..3072).map(|i| (i as u8).wrapping_add(fill)));
    }
    b
}

const CONFIG: &str = r#"
name = "fuzz"
seed = 3
backend = "flex"
[data]
batch_size = 16
outlier_batch_size = 32
[data.source]
kind = "synthetic"
num_classes = 3
[model]
backbone = "resnet18"
[objective]
name = "oe"
oe_weight = 0.5
[optim]
name = "sgd"
lr = 0.1
[train]
epochs = 2
[[eval.postprocessors]]
name = "knn"
k = 50
"#;

proptest! {
    #![proptest_config(config())]

    #[test]
    fn config_parser(d in damage()) {
        bounded(|| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("fuzz.toml");
            std::fs::write(&path, apply(CONFIG.as_bytes(), &d)).unwrap();
            if let Err(e) = oodforge_core::config::load(&path, &[]) {
                // Every config error names the file, except a wrong --set, which has none.
                names(e, &path)?;
            }
            Ok(())
        })?;
    }

    #[test]
    fn config_overrides(key in "[a-z_.]{0,24}", value in "\\PC{0,16}") {
        bounded(|| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("fuzz.toml");
            std::fs::write(&path, CONFIG).unwrap();
            let _ = oodforge_core::config::load(&path, &[format!("{key}={value}")]);
            Ok(())
        })?;
    }

    #[test]
    fn cifar_records(d in damage()) {
        bounded(|| {
            let bytes = apply(&cifar10(), &d);
            let path = Path::new("data_batch_1.bin");
            let (mut images, mut labels) = (Vec::new(), Vec::new());
            match cifar::parse_records(path, &bytes, Cifar::Cifar10, &mut images, &mut labels) {
                Ok(()) => {
                    prop_assert_eq!(images.len(), labels.len() * 3072);
                    prop_assert!(labels.iter().all(|&l| l < 10));
                }
                Err(e) => names(e, path)?,
            }
            Ok(())
        })?;
    }

    #[test]
    fn npy_arrays(d in damage()) {
        bounded(|| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("images.npy");
            std::fs::write(&path, apply(&fixture("images.npy"), &d)).unwrap();
            match NpyImages::open(&path, "npy") {
                Ok(set) => {
                    for i in 0..set.len() {
                        if let Err(e) = set.load(i) {
                            names(e, &path)?;
                        }
                    }
                }
                Err(e) => names(e, &path)?,
            }
            Ok(())
        })?;
    }

    #[test]
    fn mat_files(d in damage()) {
        bounded(|| {
            let bytes = apply(&fixture("svhn_compressed.mat"), &d);
            let path = Path::new("test_32x32.mat");
            if let Err(e) = mat::read(path, &bytes) {
                names(e, path)?;
            }
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("test_32x32.mat");
            std::fs::write(&file, &bytes).unwrap();
            if let Err(e) = svhn::read(&file, "svhn") {
                names(e, &file)?;
            }
            Ok(())
        })?;
    }

    #[test]
    fn image_lists(lines in prop::collection::vec("\\PC{0,40}", 0..8), classes in 1usize..5) {
        bounded(|| {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("images")).unwrap();
            let list = dir.path().join("list.txt");
            std::fs::write(&list, lines.join("\n")).unwrap();
            let root = dir.path().join("images");
            if let Err(e) = FileList::imglist(&list, &root, "fuzz", Some(classes), "layout", "hint") {
                names(e, &list)?;
            }
            if let Err(e) = FileList::mixoe_list(&list, &root, "fuzz", Some(classes), "layout", "hint") {
                names(e, &list)?;
            }
            Ok(())
        })?;
    }

    #[test]
    fn hdf5_bags(d in damage()) {
        bounded(|| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("bags.h5");
            std::fs::write(&path, apply(&fixture("bags.h5"), &d)).unwrap();
            if let Err(e) = bags::read_bags(&path) {
                names(e, &path)?;
            }
            Ok(())
        })?;
    }

    #[test]
    fn png_images(d in damage()) {
        bounded(|| {
            let bytes = apply(&fixture("resize_src.png"), &d);
            let path = Path::new("image.png");
            match decode_bytes(path, &bytes) {
                Ok(img) => prop_assert_eq!(img.data.len(), img.width * img.height * 3),
                Err(e) => names(e, path)?,
            }
            Ok(())
        })?;
    }
}

/// The undamaged inputs parse, so the damage above starts from files the readers accept.
#[test]
fn the_seeds_are_valid() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("fuzz.toml");
    std::fs::write(&toml, CONFIG).unwrap();
    oodforge_core::config::load(&toml, &[]).unwrap();
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    let path = Path::new("data_batch_1.bin");
    cifar::parse_records(path, &cifar10(), Cifar::Cifar10, &mut images, &mut labels).unwrap();
    assert_eq!(labels, [3, 9]);
    let npy = dir.path().join("images.npy");
    std::fs::write(&npy, fixture("images.npy")).unwrap();
    NpyImages::open(&npy, "npy").unwrap().load(1).unwrap();
    let m = dir.path().join("test_32x32.mat");
    std::fs::write(&m, fixture("svhn_compressed.mat")).unwrap();
    assert!(!svhn::read(&m, "svhn").unwrap().labels.is_empty());
    let h5 = dir.path().join("bags.h5");
    std::fs::write(&h5, fixture("bags.h5")).unwrap();
    assert_eq!(bags::read_bags(&h5).unwrap().len(), 3);
    decode_bytes(Path::new("image.png"), &fixture("resize_src.png")).unwrap();
}

/// The cap fails a case that asks for more, whether the request is checked or not.
#[test]
fn a_request_over_the_cap_fails_the_case() {
    let checked = bounded(|| {
        let mut v: Vec<u8> = Vec::new();
        assert!(v.try_reserve_exact(CAP + 1).is_err());
        Ok(())
    });
    let e = checked.unwrap_err().to_string();
    assert!(e.contains(&format!("asked for {} bytes", CAP + 1)), "{e}");
    let at_the_cap = bounded(|| {
        assert_eq!(vec![7u8; CAP][CAP - 1], 7);
        Ok(())
    });
    assert!(at_the_cap.is_ok());
}
