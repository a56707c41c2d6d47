//! Every format reader on small files: fixtures written by the reference writers (scipy, numpy,
//! h5py; `tests/fixtures/make_fixtures.py`) and files these tests write, including truncated and
//! corrupt ones, whose errors must name the file and the offset or entry.

use oodforge_data::bags::{self, f16_to_f32};
use oodforge_data::error::DataError;
use oodforge_data::formats::cifar::{self, Cifar};
use oodforge_data::formats::files::FileList;
use oodforge_data::formats::npy::NpyImages;
use oodforge_data::formats::svhn;
use oodforge_data::{ImageSource, Rgb};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn pixel(i: usize, k: usize) -> u8 {
    ((i * 7 + k * 3) % 256) as u8
}

/// CIFAR records: label byte(s) then 3072 pixel bytes (R, G, B planes).
fn cifar_records(labels: &[(u8, u8)], cifar100: bool, first: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, (coarse, fine)) in labels.iter().enumerate() {
        if cifar100 {
            out.extend([*coarse, *fine]);
        } else {
            out.push(*fine);
        }
        out.extend((0..3072).map(|k| pixel(first + i, k)));
    }
    out
}

fn write_cifar10(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for b in 1..=5 {
        let labels: Vec<(u8, u8)> = (0..2).map(|i| (0, ((b * 2 + i) % 10) as u8)).collect();
        std::fs::write(
            dir.join(format!("data_batch_{b}.bin")),
            cifar_records(&labels, false, (b - 1) * 2),
        )
        .unwrap();
    }
    std::fs::write(
        dir.join("test_batch.bin"),
        cifar_records(&[(0, 9), (0, 0), (0, 3)], false, 100),
    )
    .unwrap();
    let names = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ];
    std::fs::write(dir.join("batches.meta.txt"), names.join("\n") + "\n\n").unwrap();
}

#[test]
fn cifar10_binary_reads_labels_planes_and_names() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cifar-10-batches-bin");
    write_cifar10(&dir);
    let (train, names) = cifar::read(&dir, Cifar::Cifar10, true, "c10/train").unwrap();
    assert_eq!(train.len(), 10);
    assert_eq!(train.labels, vec![2, 3, 4, 5, 6, 7, 8, 9, 0, 1]);
    assert_eq!(names[0], "airplane");
    assert_eq!(names[9], "truck");
    // Sample 3 (batch 2, record 1): CHW planes as stored.
    let chw = train.image(3);
    assert_eq!(chw[0], pixel(3, 0));
    assert_eq!(chw[1024 + 5], pixel(3, 1024 + 5));
    // Decoded as HWC RGB: pixel (row 1, col 2) = planes at 34.
    let rgb: Rgb = train.load(3).unwrap();
    assert_eq!(
        &rgb.data[(32 + 2) * 3..(32 + 2) * 3 + 3],
        &[pixel(3, 34), pixel(3, 1024 + 34), pixel(3, 2048 + 34)]
    );
    let (test, _) = cifar::read(&dir, Cifar::Cifar10, false, "c10/test").unwrap();
    assert_eq!(test.labels, vec![9, 0, 3]);
}

#[test]
fn cifar100_reads_fine_or_coarse_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cifar-100-binary");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("train.bin"),
        cifar_records(&[(3, 99), (19, 0)], true, 0),
    )
    .unwrap();
    let (fine, names) = cifar::read(&dir, Cifar::Cifar100 { coarse: false }, true, "f").unwrap();
    assert_eq!(fine.labels, vec![99, 0]);
    assert_eq!(
        names.len(),
        100,
        "names default to class_<i> without the meta file"
    );
    let (coarse, _) = cifar::read(&dir, Cifar::Cifar100 { coarse: true }, true, "c").unwrap();
    assert_eq!(coarse.labels, vec![3, 19]);
    assert_eq!(coarse.image(1)[7], pixel(1, 7));
}

#[test]
fn cifar_errors_name_file_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cifar-10-batches-bin");
    write_cifar10(&dir);
    // Truncate batch 3 inside its second record.
    let p = dir.join("data_batch_3.bin");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..3073 + 100]).unwrap();
    let e = cifar::read(&dir, Cifar::Cifar10, true, "t")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("data_batch_3.bin")
            && e.contains("byte offset 3073")
            && e.contains("truncated record 1"),
        "{e}"
    );
    // A label byte out of range.
    let mut bytes = cifar_records(&[(0, 1), (0, 12)], false, 0);
    std::fs::write(&p, &bytes).unwrap();
    let e = cifar::read(&dir, Cifar::Cifar10, true, "t")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("byte offset 3073 (record 1)") && e.contains("label 12"),
        "{e}"
    );
    bytes.truncate(0);
    // A missing folder names the layout and where to get it.
    let e = cifar::read(&tmp.path().join("nope"), Cifar::Cifar10, true, "t").unwrap_err();
    assert!(matches!(e, DataError::Missing { .. }));
    let e = e.to_string();
    assert!(
        e.contains("nope")
            && e.contains("data_batch_1.bin")
            && e.contains("cifar-10-binary.tar.gz"),
        "{e}"
    );
}

fn svhn_x(r: usize, c: usize, ch: usize, k: usize) -> u8 {
    ((r * 7 + c * 13 + ch * 50 + k * 31) % 256) as u8
}

#[test]
fn svhn_mat_files_written_by_scipy_read_column_major() {
    for f in ["svhn_plain.mat", "svhn_compressed.mat"] {
        let set = svhn::read(&fixture(f), "svhn").unwrap();
        assert_eq!(set.labels, vec![0, 1, 7], "{f}: label 10 means digit 0");
        for k in 0..3 {
            let chw = set.image(k);
            for (r, c, ch) in [(0, 0, 0), (5, 17, 1), (31, 2, 2), (9, 30, 0)] {
                assert_eq!(
                    chw[ch * 1024 + r * 32 + c],
                    svhn_x(r, c, ch, k),
                    "{f} image {k} ({r},{c},{ch})"
                );
            }
        }
    }
}

/// A level-5 MAT file with `X` (uint8) and `y` stored as uint8 although its class is double
/// (what MATLAB writes for SVHN's labels).
fn write_mat(path: &Path, n: usize, y: &[u8], y_name: &str) {
    fn element(t: u32, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(t.to_le_bytes());
        out.extend((data.len() as u32).to_le_bytes());
        out.extend(data);
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        out
    }
    fn matrix(name: &str, class: u8, dims: &[i32], stored: u32, data: &[u8]) -> Vec<u8> {
        let mut body = element(6, &[class, 0, 0, 0, 0, 0, 0, 0]);
        body.extend(element(
            5,
            &dims
                .iter()
                .flat_map(|d| d.to_le_bytes())
                .collect::<Vec<_>>(),
        ));
        body.extend(element(1, name.as_bytes()));
        body.extend(element(stored, data));
        element(14, &body)
    }
    let mut out = vec![b' '; 116];
    out[..20].copy_from_slice(b"MATLAB 5.0 MAT-file,");
    out.extend([0u8; 8]);
    out.extend([0x00, 0x01]);
    out.extend(b"IM");
    let x: Vec<u8> = (0..n)
        .flat_map(|k| {
            (0..3).flat_map(move |ch| {
                (0..32).flat_map(move |c| (0..32).map(move |r| svhn_x(r, c, ch, k)))
            })
        })
        .collect();
    out.extend(matrix("X", 9, &[32, 32, 3, n as i32], 2, &x));
    out.extend(matrix(y_name, 6, &[n as i32, 1], 2, y));
    std::fs::write(path, out).unwrap();
}

#[test]
fn svhn_mat_accepts_narrow_storage_and_reports_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("test_32x32.mat");
    write_mat(&p, 2, &[10, 4], "y");
    let set = svhn::read(&p, "svhn").unwrap();
    assert_eq!(set.labels, vec![0, 4]);
    assert_eq!(set.image(1)[2048 + 3 * 32 + 4], svhn_x(3, 4, 2, 1));

    // Truncated inside the X element.
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..2000]).unwrap();
    let e = svhn::read(&p, "svhn").unwrap_err().to_string();
    assert!(
        e.contains("test_32x32.mat") && e.contains("byte offset 128") && e.contains("miMATRIX"),
        "{e}"
    );

    // Wrong variable name.
    write_mat(&p, 1, &[3], "labels");
    let e = svhn::read(&p, "svhn").unwrap_err().to_string();
    assert!(e.contains("variable `y`") && e.contains("labels"), "{e}");

    // A label outside 1..=10.
    write_mat(&p, 1, &[11], "y");
    let e = svhn::read(&p, "svhn").unwrap_err().to_string();
    assert!(e.contains("entry 0") && e.contains("label 11"), "{e}");

    // Not a MAT file at all.
    std::fs::write(&p, vec![0u8; 200]).unwrap();
    let e = svhn::read(&p, "svhn").unwrap_err().to_string();
    assert!(e.contains("byte offset 126") && e.contains("endian"), "{e}");

    let e = svhn::read(&tmp.path().join("missing.mat"), "svhn")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("missing.mat") && e.contains("test_32x32.mat") && e.contains("ufldl"),
        "{e}"
    );
}

#[test]
fn npy_written_by_numpy_is_memory_mapped_hwc() {
    let set = NpyImages::open(&fixture("images.npy"), "npy").unwrap();
    assert_eq!(set.shape(), (2, 4, 5, 3));
    let img = set.load(1).unwrap();
    assert_eq!((img.height, img.width), (4, 5));
    for (h, w, c) in [(0, 0, 0), (3, 4, 2), (2, 1, 1)] {
        assert_eq!(
            img.data[(h * 5 + w) * 3 + c],
            ((40 + h * 5 + w * 3 + c) % 256) as u8
        );
    }
}

fn npy_bytes(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.to_owned();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((h.len() as u16).to_le_bytes());
    out.extend(h.as_bytes());
    out.extend(data);
    out
}

#[test]
fn npy_errors_name_file_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("x.npy");
    let ok = "{'descr': '|u1', 'fortran_order': False, 'shape': (2, 2, 2, 3), }";
    std::fs::write(&p, npy_bytes(ok, &[7u8; 24])).unwrap();
    assert_eq!(
        NpyImages::open(&p, "x").unwrap().load(1).unwrap().data,
        vec![7u8; 12]
    );
    // Truncated payload.
    std::fs::write(&p, npy_bytes(ok, &[7u8; 20])).unwrap();
    let e = NpyImages::open(&p, "x").unwrap_err().to_string();
    assert!(
        e.contains("x.npy") && e.contains("byte offset 148") && e.contains("needs 24 data bytes"),
        "{e}"
    );
    // Wrong dtype.
    std::fs::write(
        &p,
        npy_bytes(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 2, 3), }",
            &[0u8; 48],
        ),
    )
    .unwrap();
    let e = NpyImages::open(&p, "x").unwrap_err().to_string();
    assert!(e.contains("'<f4'") && e.contains("uint8"), "{e}");
    // Bad magic.
    std::fs::write(&p, b"PK\x03\x04 not numpy").unwrap();
    let e = NpyImages::open(&p, "x").unwrap_err().to_string();
    assert!(e.contains("byte offset 0") && e.contains("magic"), "{e}");
    // Header longer than the file.
    let mut b = npy_bytes(ok, &[]);
    b.truncate(30);
    std::fs::write(&p, b).unwrap();
    let e = NpyImages::open(&p, "x").unwrap_err().to_string();
    assert!(
        e.contains("byte offset 10") && e.contains("runs past the end"),
        "{e}"
    );
}

fn write_png(path: &Path, w: u32, h: u32, seed: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([seed, x as u8, y as u8]));
    img.save(path).unwrap();
}

#[test]
fn image_folders_sort_classes_and_convert_grey_to_rgb() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("train");
    write_png(&root.join("zebra/b.png"), 4, 3, 1);
    write_png(&root.join("zebra/a.png"), 4, 3, 2);
    write_png(&root.join("ant/sub/c.png"), 5, 2, 3);
    // A grey JPEG: decoded to three equal channels.
    let grey = image::GrayImage::from_fn(6, 6, |_, _| image::Luma([200]));
    std::fs::create_dir_all(root.join("ant")).unwrap();
    grey.save(root.join("ant/grey.jpg")).unwrap();
    std::fs::write(root.join("ant/notes.txt"), "not an image").unwrap();

    let set = FileList::class_folders(&root, "t", "", "").unwrap();
    assert_eq!(set.classes, vec!["ant", "zebra"]);
    assert_eq!(set.labels, vec![0, 0, 1, 1]);
    let names: Vec<String> = set
        .files
        .iter()
        .map(|f| f.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    assert_eq!(
        names,
        vec![
            "ant/grey.jpg",
            "ant/sub/c.png",
            "zebra/a.png",
            "zebra/b.png"
        ]
    );
    let g = set.load(0).unwrap();
    assert_eq!((g.height, g.width), (6, 6));
    assert!(
        g.data
            .chunks(3)
            .all(|p| p[0] == p[1] && p[1] == p[2] && (p[0] as i32 - 200).abs() <= 2)
    );
    let a = set.load(2).unwrap();
    assert_eq!(&a.data[..6], &[2, 0, 0, 2, 1, 0]);

    let flat = FileList::flat(&root, "flat", "", "").unwrap();
    assert_eq!(flat.len(), 4);
    assert!(flat.labels.iter().all(|l| *l == 0));

    // An undecodable image names the file.
    std::fs::write(root.join("zebra/a.png"), b"\x89PNG\r\n\x1a\n garbage").unwrap();
    let e = set.load(2).unwrap_err().to_string();
    assert!(
        e.contains("zebra/a.png") && e.contains("cannot decode"),
        "{e}"
    );
    let e = FileList::class_folders(
        &tmp.path().join("absent"),
        "t",
        "absent/<class>/*.png",
        "get it",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("absent") && e.contains("<class>/*.png") && e.contains("get it"),
        "{e}"
    );
}

#[test]
fn openood_imglists_split_on_the_first_space_and_stay_inside_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("images_classic");
    write_png(&data.join("cifar10/test/airplane/0001.png"), 2, 2, 9);
    let list = tmp.path().join("test.txt");
    std::fs::write(&list, "cifar10/test/airplane/0001.png 3\n\ncifar10/test/airplane/0001.png {'label': 5}\ncifar10/test/airplane/0001.png -1\n").unwrap();
    let set = FileList::imglist(&list, &data, "t", None, "", "").unwrap();
    assert_eq!(set.labels, vec![3, 0, 0]);
    assert_eq!(set.load(0).unwrap().data[..3], [9, 0, 0]);
    let fp = set.fingerprint();
    assert_eq!(fp.len(), 64);

    for (line, want) in [
        ("../secret.png 0", "leaves the data folder"),
        ("/etc/passwd 0", "leaves the data folder"),
        ("cifar10/test/airplane/0001.png x1", "not an integer"),
    ] {
        std::fs::write(&list, format!("cifar10/test/airplane/0001.png 0\n{line}\n")).unwrap();
        let e = FileList::imglist(&list, &data, "t", None, "", "")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("test.txt") && e.contains("line 2") && e.contains(want),
            "{e}"
        );
    }
    std::fs::write(&list, "cifar10/test/airplane/0001.png 10\n").unwrap();
    let e = FileList::imglist(&list, &data, "t", Some(10), "", "")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("line 1") && e.contains("label 10 is out of range"),
        "{e}"
    );
    // A listed file that is absent fails when loaded, naming it.
    std::fs::write(&list, "cifar10/test/airplane/0002.png 1\n").unwrap();
    let set = FileList::imglist(&list, &data, "t", None, "", "").unwrap();
    assert_eq!(set.missing_files().len(), 1);
    let e = set.load(0).unwrap_err().to_string();
    assert!(e.contains("0002.png") && e.contains("not found"), "{e}");
}

#[test]
fn hdf5_feature_bags_written_by_h5py() {
    let bags = bags::read_bags(&fixture("bags.h5")).unwrap();
    let ids: Vec<&str> = bags.iter().map(|b| b.slide_id.as_str()).collect();
    assert_eq!(ids, vec!["normal_001", "test_003", "tumor_002"]);
    // (slide index s as written, patches, label)
    for (bag, s, n, label) in [
        (&bags[0], 0, 3, 0),
        (&bags[1], 2, 4, 1),
        (&bags[2], 1, 2, 1),
    ] {
        assert_eq!((bag.n, bag.dim, bag.label), (n, 6, label));
        for i in 0..n {
            for d in 0..6 {
                let want = (s * 100 + i * 10 + d) as f32 / 8.0;
                // float16 has 11 significant bits: values up to 2048/8 are exact multiples of 1/8
                // only below 256; compare with the f16 rounding of the value.
                let got = bag.feat[i * 6 + d];
                assert!(
                    (got - want).abs() <= want.abs() / 1024.0,
                    "{} ({i},{d}): {got} vs {want}",
                    bag.slide_id
                );
            }
            assert_eq!(
                bag.coords[i],
                [(s * 1000 + i * 768) as i64, (s * 1000 + i * 768 + 1) as i64]
            );
        }
    }
    let csv = fixture("camelyon16.csv");
    let rows = bags::read_label_csv(&csv).unwrap();
    assert_eq!(rows.len(), 3);
    let ordered = bags::match_csv(&fixture("bags.h5"), bags.clone(), &csv, &rows).unwrap();
    assert_eq!(ordered[1].slide_id, "tumor_002");

    // A CSV that disagrees with the file's label attribute.
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("c.csv");
    std::fs::write(&bad, "case_id,slide_id,label\np,normal_001,1\n").unwrap();
    let rows = bags::read_label_csv(&bad).unwrap();
    let e = bags::match_csv(&fixture("bags.h5"), bags.clone(), &bad, &rows)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("slide `normal_001`") && e.contains("line 2 says 1"),
        "{e}"
    );
    std::fs::write(&bad, "slide,label\nx,1\n").unwrap();
    let e = bags::read_label_csv(&bad).unwrap_err().to_string();
    assert!(e.contains("no `slide_id` column"), "{e}");

    // A truncated HDF5 file is an error naming it, not a panic.
    let h5 = tmp.path().join("cut.h5");
    let bytes = std::fs::read(fixture("bags.h5")).unwrap();
    std::fs::write(&h5, &bytes[..1500]).unwrap();
    let e = bags::read_bags(&h5).unwrap_err().to_string();
    assert!(e.contains("cut.h5"), "{e}");
    let e = bags::read_bags(&tmp.path().join("none.h5"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("none.h5") && e.contains("patch_feats_pretrain"),
        "{e}"
    );
}

#[test]
fn half_precision_conversion_is_exact() {
    assert_eq!(f16_to_f32(0x3c00), 1.0);
    assert_eq!(f16_to_f32(0xc000), -2.0);
    assert_eq!(f16_to_f32(0x7bff), 65504.0);
    assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
    assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
    assert!(f16_to_f32(0x7c00).is_infinite() && f16_to_f32(0x7e00).is_nan());
}

#[test]
fn mixoe_lists_keep_one_space_inside_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("car");
    write_png(&data.join("cars_train/00001.png"), 2, 2, 4);
    write_png(&data.join("cars_train/my car.png"), 2, 2, 5);
    let list = tmp.path().join("train.txt");
    std::fs::write(&list, "cars_train/00001.png 3\ncars_train/my car.png 7\n").unwrap();
    let set = FileList::mixoe_list(&list, &data, "car", Some(10), "", "").unwrap();
    assert_eq!(set.labels, vec![3, 7]);
    assert!(set.files[1].ends_with("cars_train/my car.png"));
    assert_eq!(set.load(1).unwrap().data[..3], [5, 0, 0]);
    // The same line in an OpenOOD list splits at the first space (as OpenOOD does) and fails.
    let e = FileList::imglist(&list, &data, "car", Some(10), "", "")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("line 2") && e.contains("`car.png 7` is not an integer"),
        "{e}"
    );
}

/// AEM's split rules over the h5py-written file: CAMELYON16 by slide name, CAMELYON17 by
/// hospital, BRACS by `split_info` with its 7 -> 3 class grouping.
#[test]
fn bag_splits_follow_each_datasets_rule() {
    use oodforge_core::config::BagSource;
    let tmp = tempfile::tempdir().unwrap();
    let source = |dataset: &str, csv: &std::path::Path| BagSource {
        dataset: dataset.into(),
        features: fixture("bags.h5").display().to_string(),
        labels: csv.display().to_string(),
        val_fraction: 0.1,
    };
    let ids = |b: &[bags::Bag]| b.iter().map(|b| b.slide_id.clone()).collect::<Vec<_>>();

    // CAMELYON16: `test_003` is the test slide; ceil(0.1 * 2) = 1 of the other two validates.
    let s = bags::load_splits(&source("camelyon16", &fixture("camelyon16.csv")), 4).unwrap();
    assert_eq!((s.num_classes, s.dim), (2, 6));
    assert_eq!(ids(&s.test), ["test_003"]);
    assert_eq!((s.train.len(), s.val.len()), (1, 1));
    let mut rest = [ids(&s.train), ids(&s.val)].concat();
    rest.sort();
    assert_eq!(rest, ["normal_001", "tumor_002"]);
    // The held-out slide depends on the seed only: the same seed, the same split.
    let again = bags::load_splits(&source("camelyon16", &fixture("camelyon16.csv")), 4).unwrap();
    assert_eq!(ids(&again.val), ids(&s.val));
    let held: std::collections::BTreeSet<_> = (0..16)
        .map(|seed| {
            ids(
                &bags::load_splits(&source("camelyon16", &fixture("camelyon16.csv")), seed)
                    .unwrap()
                    .val,
            )
        })
        .collect();
    assert_eq!(
        held.len(),
        2,
        "both slides are drawn for some seed: {held:?}"
    );

    // CAMELYON17: hospitals 3 and 4 are the test set.
    let c17 = tmp.path().join("camelyon17.csv");
    std::fs::write(
        &c17,
        ",slide_id,label,center\n0,normal_001,0,0\n1,tumor_002,1,3\n2,test_003,1,1\n",
    )
    .unwrap();
    let s = bags::load_splits(&source("camelyon17", &c17), 0).unwrap();
    assert_eq!(s.num_classes, 4);
    assert_eq!(ids(&s.test), ["tumor_002"]);
    std::fs::write(&c17, "case_id,slide_id,label\np,normal_001,0\n").unwrap();
    let e = bags::load_splits(&source("camelyon17", &c17), 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("camelyon17.csv") && e.contains("no `center` column"),
        "{e}"
    );

    // BRACS: the CSV's split, subtypes grouped (the file's labels 0 and 1 are both class 0).
    let bracs = tmp.path().join("bracs.csv");
    std::fs::write(
        &bracs,
        ",case_id,slide_id,split_info,full_path,label\n0,a,normal_001,train,x,0\n1,b,tumor_002,val,y,1\n2,c,test_003,test,z,1\n",
    )
    .unwrap();
    let s = bags::load_splits(&source("bracs", &bracs), 0).unwrap();
    assert_eq!(s.num_classes, 3);
    assert_eq!(
        (ids(&s.train), ids(&s.val), ids(&s.test)),
        (
            vec!["normal_001".into()],
            vec!["tumor_002".into()],
            vec!["test_003".into()]
        )
    );
    assert!(
        s.train
            .iter()
            .chain(&s.val)
            .chain(&s.test)
            .all(|b| b.label == 0)
    );
    std::fs::write(
        &bracs,
        ",case_id,slide_id,split_info,full_path,label\n0,a,normal_001,training,x,0\n",
    )
    .unwrap();
    let e = bags::load_splits(&source("bracs", &bracs), 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("line 2") && e.contains("\"training\" is not a split"),
        "{e}"
    );

    // A CAMELYON16 CSV without test slides leaves the test set empty: an error, not a crash.
    let c16 = tmp.path().join("c16.csv");
    std::fs::write(
        &c16,
        "case_id,slide_id,label\np,normal_001,0\nq,tumor_002,1\n",
    )
    .unwrap();
    let e = bags::load_splits(&source("camelyon16", &c16), 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no test slide"), "{e}");
}

/// The built-in bags: deterministic in `data_seed`, balanced labels, bag sizes in range, and
/// key instances only in bags of classes > 0.
#[test]
fn synthetic_bags_are_deterministic_and_carry_key_instances() {
    let cfg = oodforge_core::config::SyntheticBagsConfig {
        num_classes: 3,
        train_bags: 30,
        val_bags: 6,
        test_bags: 9,
        feature_dim: 16,
        instances: [10, 20],
        data_seed: 7,
    };
    let a = bags::synthetic(&cfg);
    let b = bags::synthetic(&cfg);
    assert_eq!(a.train, b.train);
    assert_eq!((a.train.len(), a.val.len(), a.test.len()), (30, 6, 9));
    let other = bags::synthetic(&oodforge_core::config::SyntheticBagsConfig {
        data_seed: 8,
        ..cfg.clone()
    });
    assert_ne!(a.train[0].feat, other.train[0].feat);
    for (i, bag) in a.train.iter().enumerate() {
        assert_eq!(bag.label, (i % 3) as i64);
        assert!((10..=20).contains(&bag.n) && bag.feat.len() == bag.n * 16);
    }
    // The key direction of class k, estimated as the difference of the mean instance of class-k
    // and class-0 bags; a class-k bag's best instance projects far along it (a key instance sits
    // 2.5 out), a class-0 bag's only as far as the largest of its normal draws.
    let mean_instance = |label: i64| {
        let mut m = vec![0f64; 16];
        let mut n = 0;
        for b in a.train.iter().filter(|b| b.label == label) {
            for r in b.feat.chunks(16) {
                m.iter_mut().zip(r).for_each(|(m, x)| *m += f64::from(*x));
                n += 1;
            }
        }
        m.into_iter().map(|v| v / n as f64).collect::<Vec<_>>()
    };
    let m0 = mean_instance(0);
    for k in [1, 2] {
        let d: Vec<f64> = mean_instance(k)
            .iter()
            .zip(&m0)
            .map(|(a, b)| a - b)
            .collect();
        let norm = d.iter().map(|v| v * v).sum::<f64>().sqrt();
        let best = |label: i64| {
            let v: Vec<f64> = a
                .train
                .iter()
                .filter(|b| b.label == label)
                .map(|b| {
                    b.feat
                        .chunks(16)
                        .map(|r| {
                            r.iter()
                                .zip(&d)
                                .map(|(x, d)| f64::from(*x) * d)
                                .sum::<f64>()
                                / norm
                        })
                        .fold(f64::NEG_INFINITY, f64::max)
                })
                .collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        assert!(
            best(k) > best(0) + 0.8,
            "class {k}: {} vs {}",
            best(k),
            best(0)
        );
    }
}

/// A PNG file whose header declares `width` x `height` RGB pixels, with a few bytes of image
/// data: what a decompression bomb or a corrupt header looks like to the decoder.
fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc.sum().to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit, RGB, deflate, no filter, no interlace
    chunk(&mut out, b"IHDR", &ihdr);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut z, &[0u8; 4096]).unwrap();
    chunk(&mut out, b"IDAT", &z.finish().unwrap());
    chunk(&mut out, b"IEND", &[]);
    out
}

#[test]
fn image_headers_beyond_the_limits_are_errors_not_allocations() {
    use oodforge_data::formats::files::{MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, decode, decode_bytes};
    let path = Path::new("bomb.png");
    // Too wide: one side over the limit.
    let e = decode_bytes(path, &png_declaring(100_000, 100_000))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("bomb.png: cannot decode image"), "{e}");
    assert!(e.contains("100000x100000"), "{e}");
    assert!(e.contains(&MAX_IMAGE_SIDE.to_string()), "{e}");
    assert!(e.contains("decompression bomb"), "{e}");
    // Both sides allowed, the pixel count not (10,000 x 10,000 > 8192 x 8192).
    const { assert!(10_000 <= MAX_IMAGE_SIDE && 10_000u64 * 10_000 > MAX_IMAGE_PIXELS) };
    let e = decode_bytes(path, &png_declaring(10_000, 10_000))
        .unwrap_err()
        .to_string();
    assert!(e.contains("10000x10000"), "{e}");
    // Within the limits the same construction is an ordinary truncated image: an error about
    // the data, and a real file is named by its path.
    let tmp = tempfile::tempdir().unwrap();
    let small = tmp.path().join("small.png");
    std::fs::write(&small, png_declaring(64, 64)).unwrap();
    let e = decode(&small).unwrap_err().to_string();
    assert!(e.contains("small.png: cannot decode image"), "{e}");
    assert!(!e.contains("decompression bomb"), "{e}");
    // And a valid image at the limit's scale of ordinary data decodes.
    let ok = tmp.path().join("ok.png");
    write_png(&ok, 40, 30, 7);
    let img = decode(&ok).unwrap();
    assert_eq!((img.height, img.width), (30, 40));
}

/// A feature file whose `feat` shape is damaged to claim about a billion rows: hdf5-reader would
/// zero-fill the 12 GiB before reading (CI's fuzz run was killed for memory on such a file), so
/// the reader must refuse the shape from the file's size, naming the file, the slide and the
/// dataset.
#[test]
fn hdf5_shapes_beyond_the_file_are_errors_not_allocations() {
    let valid = std::fs::read(fixture("bags.h5")).unwrap();
    // h5py writes the dataspace of `normal_001/feat` (3 x 6) as version 1 with maximum
    // dimensions: dims (3, 6) then max dims (3, 6), 8 bytes little-endian each.
    let dims: Vec<u8> = [3u64, 6, 3, 6]
        .iter()
        .flat_map(|d| d.to_le_bytes())
        .collect();
    let at = valid
        .windows(dims.len())
        .position(|w| w == dims.as_slice())
        .expect("the fixture's 3 x 6 dataspace");
    let mut damaged = valid.clone();
    for d in [at, at + 16] {
        damaged[d + 3] = 0x40; // 3 -> 0x4000_0003 rows
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("patch_feats_pretrain_damaged.h5");
    std::fs::write(&path, &damaged).unwrap();
    let e = bags::read_bags(&path).unwrap_err().to_string();
    assert!(e.contains("patch_feats_pretrain_damaged.h5"), "{e}");
    assert!(e.contains("slide `normal_001`, dataset `feat`"), "{e}");
    assert!(e.contains("[1073741827, 6]"), "{e}");
    assert!(
        e.contains(&format!("{} bytes", 1_073_741_827u64 * 12)),
        "{e}"
    );
    assert!(e.contains("the shape is damaged"), "{e}");
    // The same bytes with a shape that fits read as before.
    let fine = tmp.path().join("patch_feats_pretrain_fine.h5");
    std::fs::write(&fine, &valid).unwrap();
    assert_eq!(bags::read_bags(&fine).unwrap()[0].n, 3);
}
