//! MixOE's fine-grained environments: the NumPy / Python draws that pick its classes and
//! subsets (against values NumPy and CPython printed, `fixtures/make_pyrand.py`), the WebVision
//! reader, and the whole `finegrained` source on a generated tree.

use oodforge_core::config::{DataConfig, DataSource};
use oodforge_data::formats::webvision;
use oodforge_data::plan::{FINEGRAINED, finegrained_id_classes};
use oodforge_data::pyrand::{Mt19937, numpy_choice, numpy_permutation, python_sample};
use oodforge_data::{DataError, Datasets, ImageSource};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixture() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pyrand.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn ints(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

#[test]
fn numpy_legacy_draws_match_numpy() {
    let f = fixture();
    let np = &f["numpy"];
    assert_eq!(numpy_permutation(0, 10), ints(&np["permutation_seed0_n10"]));
    assert_eq!(
        numpy_choice(4_294_967_295, 1000, 7),
        ints(&np["choice_seed4294967295_n1000_k7"])
    );
    let mut mt = Mt19937::new(5489);
    let raw: Vec<usize> = (0..3).map(|_| mt.next_u32() as usize).collect();
    assert_eq!(raw, ints(&np["uint32_seed5489_x3"]));
    // Every class split of the paper (4 datasets x splits 0, 1, 2), in draw order.
    let splits = f["mixoe_id_classes"].as_object().unwrap();
    assert_eq!(splits.len(), 12);
    for (key, want) in splits {
        let (ds, split) = key.split_once('/').unwrap();
        let got = finegrained_id_classes(ds, split.parse().unwrap()).unwrap();
        assert_eq!(got, ints(want), "{key}");
    }
}

#[test]
fn python_random_sample_matches_cpython() {
    let f = fixture();
    let py = &f["python_random"];
    let mut mt = Mt19937::python(0);
    let raw: Vec<usize> = (0..3).map(|_| mt.next_u32() as usize).collect();
    assert_eq!(raw, ints(&py["getrandbits32_seed0_x3"]));
    let cases = py["samples"].as_array().unwrap();
    assert!(cases.len() >= 9);
    for c in cases {
        let (seed, n, k) = (
            c["seed"].as_u64().unwrap(),
            c["n"].as_u64().unwrap() as usize,
            c["k"].as_u64().unwrap() as usize,
        );
        assert_eq!(
            python_sample(seed, n, k),
            ints(&c["sample"]),
            "seed {seed}, n {n}, k {k}"
        );
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Lists for the four datasets: aircraft (the ID dataset of the test) has one train and val
/// image per class and two test images; the others one test image per class (651 in all).
/// A file name with a space exercises MixOE's three-token lines.
fn make_lists(info: &Path) {
    for (ds, (n_id, n_ood), _) in FINEGRAINED {
        let n = n_id + n_ood;
        let line = |split: &str, c: usize, j: usize| {
            if c == 7 && j == 0 {
                format!("{split}/c{c} a{j}.jpg {c}\n")
            } else {
                format!("{split}/c{c}_{j}.jpg {c}\n")
            }
        };
        let per_test = if ds == "aircraft" { 2 } else { 1 };
        for (split, per) in [("train", 1), ("val", 1), ("test", per_test)] {
            let text: String = (0..n)
                .flat_map(|c| (0..per).map(move |j| (c, j)))
                .map(|(c, j)| line(split, c, j))
                .collect();
            write(&info.join(ds).join(format!("{split}.txt")), &text);
        }
    }
}

/// WebVision with six concepts; aircraft (line 1) and a dog (line 4) are in INET_SPLITS.
/// Query q belongs to concept ((q - 1) % 6) + 1, so q2, q3, q5, q6, q8 are kept.
fn make_webvision(root: &Path) -> Vec<PathBuf> {
    write(
        &root.join("info/synsets.txt"),
        "n02690373 airliner\nn01440764 tench, Tinca tinca\nn01443537 goldfish\nn02089078 black-and-tan coonhound\nn01484850 great white shark\nn01491361 tiger shark\n",
    );
    let map: String = (1..=8)
        .map(|q| format!("{q} {}\n", (q - 1) % 6 + 1))
        .collect();
    write(&root.join("info/queries_synsets_map.txt"), &map);
    let mut kept = Vec::new();
    for source in ["google", "flickr"] {
        for q in 1..=8u32 {
            let dir = root.join(source).join(format!("q{q:04}"));
            let keep = ![1, 4, 7].contains(&q);
            let mut files: Vec<PathBuf> = Vec::new();
            let count = if source == "google" { 15 } else { 10 };
            for i in 0..count {
                files.push(dir.join(format!("{i:03}.jpg")));
            }
            if source == "flickr" {
                // torchvision's order: a folder's own files, then its sub-folders'.
                files.push(dir.join("sub/000.JPG"));
                files.push(dir.join("sub/001.png"));
                write(&dir.join("notes.txt"), "not an image");
            }
            for f in &files {
                write(f, "");
            }
            if keep {
                kept.extend(files);
            }
        }
    }
    kept
}

#[test]
fn webvision_leaves_out_mixoe_concepts_in_torchvision_order() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("WebVision");
    let kept = make_webvision(&root);
    assert_eq!(kept.len(), 135);
    let list = webvision::read(&root, &webvision::mixoe_excluded(), "webvision").unwrap();
    assert_eq!(list.files, kept);
    let all = webvision::read(&root, &[], "webvision").unwrap();
    assert_eq!(all.files.len(), 8 * 27);
    assert_eq!(webvision::mixoe_excluded().len(), 120 + 52 + 42 + 6 + 3);
    // A concept number outside synsets.txt names the line.
    write(&root.join("info/queries_synsets_map.txt"), "1 2\n2 9\n");
    let e = webvision::read(&root, &[], "webvision").unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, DataError::Corrupt { .. }), "{msg}");
    assert!(
        msg.contains("queries_synsets_map.txt: line 2") && msg.contains("1..=6"),
        "{msg}"
    );
}

#[test]
fn finegrained_source_builds_mixoe_sets() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, info) = (tmp.path().join("data"), tmp.path().join("info"));
    make_lists(&info);
    for (_, _, folder) in FINEGRAINED {
        std::fs::create_dir_all(root.join(folder)).unwrap();
    }
    let kept_webvision = make_webvision(&root.join("WebVision"));
    let text = format!(
        "source = {{ kind = \"finegrained\", dataset = \"aircraft\", split = 2, root = \"{}\", info = \"{}\" }}\nimage_size = 448\npre_size = 512\nsquare_resize = true\n",
        root.display(),
        info.display()
    );
    let cfg: DataConfig = toml::from_str(&text).unwrap();
    assert!(matches!(cfg.source, DataSource::Finegrained { .. }));
    let d = Datasets::load(&cfg).unwrap();
    let f = fixture();
    let ids = ints(&f["mixoe_id_classes"]["aircraft/2"]);
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(d.num_classes, 90);
    let air = root.join("aircraft/images");
    // ID sets: the split's classes in list order, relabelled by rank.
    let train_raw: Vec<usize> = (0..100).filter(|c| ids.contains(c)).collect();
    assert_eq!(d.train.len(), 90);
    for (i, raw) in train_raw.iter().enumerate() {
        assert_eq!(d.train.label(i), sorted.binary_search(raw).unwrap());
    }
    let val = d.val.as_ref().unwrap();
    assert_eq!((val.len(), d.test.len()), (90, 180));
    // Near OOD: the 10 held-out classes' test images.
    let (fine, g) = &d.ood[0];
    assert_eq!((fine.name(), *g), ("fine", oodforge_core::Group::Near));
    assert_eq!(fine.len(), 20);
    // Far OOD: bird, butterfly, car test lists pooled (651), CPython's random.sample(.., 180).
    let (coarse, g) = &d.ood[1];
    assert_eq!((coarse.name(), *g), ("coarse", oodforge_core::Group::Far));
    let mut pool = Vec::new();
    for (ds, (a, b), folder) in FINEGRAINED.iter().take(3) {
        for c in 0..a + b {
            let name = if c == 7 {
                "c7 a0.jpg".into()
            } else {
                format!("c{c}_0.jpg")
            };
            pool.push((root.join(folder).join("test").join(name), *ds));
        }
    }
    assert_eq!(pool.len(), 651);
    let sample = ints(&f["python_random"]["samples"][7]["sample"]);
    assert_eq!(sample.len(), 180);
    let listing = |s: &dyn ImageSource| -> Vec<String> {
        (0..s.len())
            // The tree's images are absent or empty: the error names the file.
            .map(|i| match s.load(i) {
                Err(DataError::Decode { path, .. } | DataError::Missing { path, .. }) => {
                    path.display().to_string()
                }
                other => panic!("no image decodes here: {:?}", other.map(|_| ())),
            })
            .collect()
    };
    let want: Vec<String> = sample
        .iter()
        .map(|&i| pool[i].0.display().to_string())
        .collect();
    assert_eq!(listing(coarse.as_ref()), want);
    // Validation OOD: WebVision (135 kept images) sampled to the ID validation size.
    let wv_sample = ints(&f["python_random"]["samples"][8]["sample"]);
    let want: Vec<String> = wv_sample
        .iter()
        .map(|&i| kept_webvision[i].display().to_string())
        .collect();
    assert_eq!(listing(d.val_ood.as_ref().unwrap().as_ref()), want);
    assert_eq!(d.outliers.as_ref().unwrap().len(), 135);
    // The list line with a space in its file name reached the ID or held-out set whole.
    let test_files = listing(d.test.as_ref());
    let in_fine = listing(fine.as_ref());
    let spaced = air.join("test/c7 a0.jpg").display().to_string();
    assert!(test_files.contains(&spaced) || in_fine.contains(&spaced));
}

#[test]
fn finegrained_errors_name_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, info) = (tmp.path().join("data"), tmp.path().join("info"));
    make_lists(&info);
    std::fs::remove_file(info.join("car/test.txt")).unwrap();
    let text = format!(
        "source = {{ kind = \"finegrained\", dataset = \"bird\", split = 0, root = \"{}\", info = \"{}\", outliers = \"none\" }}\n",
        root.display(),
        info.display()
    );
    std::fs::create_dir_all(root.join("bird/images")).unwrap();
    std::fs::create_dir_all(root.join("butterfly/images_small")).unwrap();
    std::fs::create_dir_all(root.join("car")).unwrap();
    let cfg: DataConfig = toml::from_str(&text).unwrap();
    let msg = Datasets::load(&cfg).err().unwrap().to_string();
    assert!(
        msg.contains("car/test.txt") && msg.contains("not found"),
        "{msg}"
    );
    assert!(msg.contains("MixOE"), "{msg}");
}
