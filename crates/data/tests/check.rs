//! Benchmark declarations and `data check` on small trees laid out like the real downloads.

use oodforge_core::Group;
use oodforge_core::config::{CustomSource, DataSource, OodSetSpec, SetSpec};
use oodforge_data::check::{Status, check_plan, render};
use oodforge_data::plan::{self, Role};
use std::path::Path;

fn png(path: &Path, v: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([v, x as u8, y as u8]))
        .save(path)
        .unwrap();
}

#[test]
fn openood_benchmarks_declare_every_list() {
    let p = plan::openood("cifar10", "data", true).unwrap();
    assert_eq!(p.num_classes, 10);
    let names: Vec<(&str, &str)> = p
        .sets
        .iter()
        .map(|(r, s)| (r.as_str(), s.name.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("train", "cifar10/train"),
            ("val", "cifar10/val"),
            ("test", "cifar10/test"),
            ("val-ood", "val_ood"),
            ("ood/near", "cifar100"),
            ("ood/near", "tin"),
            ("ood/far", "mnist"),
            ("ood/far", "svhn"),
            ("ood/far", "texture"),
            ("ood/far", "places365"),
            ("outliers", "outliers"),
        ]
    );
    let SetSpec::ImgList { list, root } = &p.sets[4].1.spec else {
        panic!()
    };
    assert_eq!(list, "data/benchmark_imglist/cifar10/test_cifar100.txt");
    assert_eq!(root, "data/images_classic");
    let p = plan::openood("imagenet200", "/d", false).unwrap();
    assert_eq!((p.num_classes, p.sizes), (200, Some((256, 224))));
    assert!(
        p.sets
            .iter()
            .any(|(r, s)| *r == Role::Ood(Group::Near) && s.name == "ssb_hard")
    );
    let SetSpec::ImgList { root, .. } = &p.sets[0].1.spec else {
        panic!()
    };
    assert_eq!(root, "/d/images_largescale");
    assert!(
        plan::openood("imagenet1k", "d", true)
            .unwrap_err()
            .to_string()
            .contains("no outlier list")
    );
    assert!(plan::openood("mnist", "d", false).is_err());

    let energy = plan::classic("cifar10", "d", "energy", "300k").unwrap();
    let far: Vec<&str> = energy
        .sets
        .iter()
        .filter(|(r, _)| *r == Role::Ood(Group::Far))
        .map(|(_, s)| s.name.as_str())
        .collect();
    assert_eq!(
        far,
        vec!["textures", "svhn", "places365", "lsun_c", "lsun_r", "isun"]
    );
    let palm = plan::classic("cifar100", "d", "palm", "none").unwrap();
    let far: Vec<&str> = palm
        .sets
        .iter()
        .filter(|(r, _)| *r == Role::Ood(Group::Far))
        .map(|(_, s)| s.name.as_str())
        .collect();
    assert_eq!(far, vec!["svhn", "places365", "lsun_c", "isun", "textures"]);
    assert_eq!(palm.num_classes, 100);
}

#[test]
fn data_check_reports_present_missing_and_incomplete_sets() {
    let tmp = tempfile::tempdir().unwrap();
    let root = &tmp.path().join("first");
    let lists = root.join("benchmark_imglist/cifar10");
    std::fs::create_dir_all(&lists).unwrap();
    let data = root.join("images_classic");
    for i in 0..4 {
        png(
            &data.join(format!("cifar10/train/c{}/{i:04}.png", i % 2)),
            i as u8,
        );
    }
    std::fs::write(
        lists.join("train_cifar10.txt"),
        "cifar10/train/c0/0000.png 0\ncifar10/train/c1/0001.png 1\ncifar10/train/c0/0002.png 0\n",
    )
    .unwrap();
    // The test list names one image that is not there.
    std::fs::write(
        lists.join("test_cifar10.txt"),
        "cifar10/train/c1/0003.png 1\ncifar10/test/gone.png 4\n",
    )
    .unwrap();
    let p = plan::openood("cifar10", &root.display().to_string(), false).unwrap();
    let reports = check_plan(&p);
    let by = |n: &str| reports.iter().find(|r| r.name == n).unwrap();
    let train = by("cifar10/train");
    assert_eq!((train.status, train.count), (Status::Ok, Some(3)));
    assert_eq!(train.fingerprint.as_ref().unwrap().len(), 64);
    let test = by("cifar10/test");
    assert_eq!((test.status, test.missing_files), (Status::Incomplete, 1));
    assert!(test.detail.as_ref().unwrap().contains("gone.png"));
    let svhn = by("svhn");
    assert_eq!(svhn.status, Status::Missing);
    let d = svhn.detail.as_ref().unwrap();
    assert!(
        d.contains("test_svhn.txt")
            && d.contains("benchmark_imglist/cifar10/<list>.txt")
            && d.contains("download_openood.sh"),
        "{d}"
    );
    let text = render(&reports);
    assert!(text.contains("1 of 10 sets ready"), "{text}");

    // Same list hash for the same listing, wherever the root lives.
    let moved = tmp.path().join("second");
    std::fs::rename(root, &moved).unwrap();
    let p = plan::openood("cifar10", &moved.display().to_string(), false).unwrap();
    let again = check_plan(&p);
    assert_eq!(again[0].status, Status::Ok);
    assert_eq!(again[0].fingerprint, reports[0].fingerprint);
}

#[test]
fn custom_sources_load_with_their_declared_formats() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    for (c, n) in [("cat", 3), ("dog", 2)] {
        for i in 0..n {
            png(&root.join(format!("train/{c}/{i}.png")), 10 * i as u8);
            png(&root.join(format!("test/{c}/{i}.png")), 10 * i as u8);
        }
    }
    png(&root.join("lsun/test/a.png"), 1);
    let s = |p: &str| root.join(p).display().to_string();
    let source = DataSource::Custom(CustomSource {
        num_classes: 2,
        train: SetSpec::ImageFolder { path: s("train") },
        test: SetSpec::ImageFolder { path: s("test") },
        ood: vec![OodSetSpec {
            name: "lsun".into(),
            group: "far".into(),
            set: SetSpec::FlatFolder { path: s("lsun") },
        }],
        outliers: Some(SetSpec::Npy {
            path: Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/images.npy")
                .display()
                .to_string(),
        }),
    });
    let base: oodforge_core::config::DataConfig =
        toml::from_str("[source]\nkind = \"synthetic\"\n").unwrap();
    let cfg = oodforge_core::config::DataConfig { source, ..base };
    let d = oodforge_data::Datasets::load(&cfg).unwrap();
    assert_eq!(
        (d.num_classes, d.class_names.clone()),
        (2, vec!["cat".to_owned(), "dog".to_owned()])
    );
    assert_eq!((d.train.len(), d.test.len(), d.ood.len()), (5, 5, 1));
    assert_eq!(d.ood[0].1, Group::Far);
    assert_eq!(d.outliers.as_ref().unwrap().len(), 2);
    // No published statistics: measured on the training images.
    let n = d.normalizer(&cfg).unwrap();
    assert!(n.mean.iter().all(|m| (0.0..1.0).contains(m)));

    // A declared class count that disagrees with the folders.
    let mut bad = cfg.clone();
    if let DataSource::Custom(c) = &mut bad.source {
        c.num_classes = 3;
    }
    let e = oodforge_data::Datasets::load(&bad)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("2 classes") && e.contains("num_classes = 3"),
        "{e}"
    );
}
