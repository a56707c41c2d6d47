//! What a data config asks for, before anything is read: every set with its format, path,
//! expected layout and where to get it. `Datasets::load` opens a plan; `data check` reports on
//! one without failing at the first missing set.
//!
//! Benchmarks (METHODS §8.1, §2.6, §3.3, §5.7): OpenOOD v1.5 by image lists, and the classic
//! CIFAR suites of the OE/energy papers (six far-OOD sets) and of PALM (five).

use crate::Normalizer;
use crate::error::DataError;
use crate::formats::{cifar, npy, svhn};
use oodforge_core::Group;
use oodforge_core::config::{DataSource, SetSpec};

/// One set of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedSet {
    pub name: String,
    pub spec: SetSpec,
    /// The folder tree the format expects, shown when something is missing.
    pub layout: String,
    /// Where to get the data.
    pub hint: String,
    /// What of the opened set is used.
    pub pick: Pick,
}

/// What of an opened set a role uses.
#[derive(Debug, Clone, PartialEq)]
pub enum Pick {
    All,
    /// The items of these labels, relabelled by rank in sorted order (MixOE's ID and held-out
    /// classes, `FinegrainedDataset(class_list=...)`).
    Classes(Vec<usize>),
    /// The set with `more` appended, then `random.seed(seed); random.sample(pool, n)` where n
    /// is the size of the set of role `like`, opened earlier in the plan (MixOE `eval.py`: the
    /// coarse-grained OOD pool and the WebVision validation subset).
    PoolSample {
        more: Vec<SetSpec>,
        seed: u64,
        like: Role,
    },
}

/// Role of a set in an experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Train,
    Val,
    Test,
    ValOod,
    Ood(Group),
    Outliers,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Val => "val",
            Self::Test => "test",
            Self::ValOod => "val-ood",
            Self::Ood(Group::Near) => "ood/near",
            Self::Ood(Group::Far) => "ood/far",
            Self::Outliers => "outliers",
        }
    }
}

/// Every set of a (non-synthetic) data source.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub num_classes: usize,
    pub sets: Vec<(Role, PlannedSet)>,
    /// Published normalisation of the benchmark (None: measure it on the training set).
    pub normalize: Option<Normalizer>,
    /// The benchmark's input sizes (pre_size, image_size), when it has fixed ones.
    pub sizes: Option<(usize, usize)>,
}

pub const CIFAR10_NORM: Normalizer = Normalizer {
    mean: [0.4914, 0.4822, 0.4465],
    std: [0.2470, 0.2435, 0.2616],
};
pub const CIFAR100_NORM: Normalizer = Normalizer {
    mean: [0.5071, 0.4867, 0.4408],
    std: [0.2675, 0.2565, 0.2761],
};
pub const IMAGENET_NORM: Normalizer = Normalizer {
    mean: [0.485, 0.456, 0.406],
    std: [0.229, 0.224, 0.225],
};

const OPENOOD_HINT: &str = "download the OpenOOD v1.5 image lists and archives with scripts/download_openood.sh (the zips of openood/scripts/download/download.py, Google Drive) and extract them under the data root";

fn join(root: &str, rel: &str) -> String {
    if root.is_empty() {
        rel.to_owned()
    } else {
        format!("{}/{rel}", root.trim_end_matches('/'))
    }
}

/// The plan of an image source; `None` for the synthetic source (nothing on disk) and for
/// feature bags (`bags::load` reads and splits them).
pub fn plan(source: &DataSource) -> Result<Option<Plan>, DataError> {
    Ok(match source {
        DataSource::Synthetic(_) | DataSource::Bags(_) | DataSource::SyntheticBags(_) => None,
        DataSource::OpenOod {
            benchmark,
            root,
            outliers,
        } => Some(openood(benchmark, root, *outliers)?),
        DataSource::Classic {
            id,
            root,
            suite,
            outliers,
        } => Some(classic(id, root, suite, outliers)?),
        DataSource::Finegrained {
            dataset,
            split,
            root,
            info,
            outliers,
        } => Some(finegrained(dataset, *split, root, info, outliers)?),
        DataSource::Custom(c) => {
            let mut sets = vec![
                (Role::Train, custom("train", &c.train)),
                (Role::Test, custom("test", &c.test)),
            ];
            for o in &c.ood {
                let group = if o.group == "near" {
                    Group::Near
                } else {
                    Group::Far
                };
                sets.push((Role::Ood(group), custom(&o.name, &o.set)));
            }
            if let Some(o) = &c.outliers {
                sets.push((Role::Outliers, custom("outliers", o)));
            }
            Some(Plan {
                num_classes: c.num_classes,
                sets,
                normalize: None,
                sizes: None,
            })
        }
    })
}

fn custom(name: &str, spec: &SetSpec) -> PlannedSet {
    let layout = match spec {
        SetSpec::Cifar10 { .. } => cifar::Cifar::Cifar10.layout().to_owned(),
        SetSpec::Cifar100 { .. } => cifar::Cifar::Cifar100 { coarse: false }.layout().to_owned(),
        SetSpec::Svhn { .. } => svhn::LAYOUT.to_owned(),
        SetSpec::ImageFolder { .. } => {
            "<path>/\n  <class a>/<image>.jpg|.png ...\n  <class b>/...".into()
        }
        SetSpec::FlatFolder { .. } => {
            "<path>/\n  <image>.jpg|.png ... (sub-folders are searched too)".into()
        }
        SetSpec::ImgList { .. } | SetSpec::MixoeList { .. } => {
            "<list>: one `<relative path> <label>` per line\n<root>/<relative path>".into()
        }
        SetSpec::Npy { .. } => "<path>: NumPy uint8 array of shape (N, H, W, 3)".into(),
        SetSpec::Webvision { .. } => crate::formats::webvision::LAYOUT.into(),
    };
    PlannedSet {
        name: name.to_owned(),
        spec: spec.clone(),
        layout,
        hint: "check the path in the config's [data.source] (relative paths are relative to the working directory)".into(),
        pick: Pick::All,
    }
}

/// OpenOOD v1.5 (`openood/evaluation_api/datasets.py::DATA_INFO`).
pub fn openood(benchmark: &str, root: &str, outliers: bool) -> Result<Plan, DataError> {
    struct B {
        list_dir: &'static str,
        data_dir: &'static str,
        classes: usize,
        id: [&'static str; 3],
        val_ood: &'static str,
        near: &'static [(&'static str, &'static str)],
        far: &'static [(&'static str, &'static str)],
        outliers: Option<&'static str>,
        norm: Normalizer,
        sizes: (usize, usize),
    }
    const CIFAR_FAR: &[(&str, &str)] = &[
        ("mnist", "test_mnist.txt"),
        ("svhn", "test_svhn.txt"),
        ("texture", "test_texture.txt"),
        ("places365", "test_places365.txt"),
    ];
    const IMAGENET_NEAR: &[(&str, &str)] = &[
        ("ssb_hard", "test_ssb_hard.txt"),
        ("ninco", "test_ninco.txt"),
    ];
    const IMAGENET_FAR: &[(&str, &str)] = &[
        ("inaturalist", "test_inaturalist.txt"),
        ("textures", "test_textures.txt"),
        ("openimage_o", "test_openimage_o.txt"),
    ];
    let b = match benchmark {
        "cifar10" => B {
            list_dir: "cifar10",
            data_dir: "images_classic",
            classes: 10,
            id: ["train_cifar10.txt", "val_cifar10.txt", "test_cifar10.txt"],
            val_ood: "val_tin.txt",
            near: &[("cifar100", "test_cifar100.txt"), ("tin", "test_tin.txt")],
            far: CIFAR_FAR,
            outliers: Some("train_tin597.txt"),
            norm: CIFAR10_NORM,
            sizes: (32, 32),
        },
        "cifar100" => B {
            list_dir: "cifar100",
            data_dir: "images_classic",
            classes: 100,
            id: [
                "train_cifar100.txt",
                "val_cifar100.txt",
                "test_cifar100.txt",
            ],
            val_ood: "val_tin.txt",
            near: &[("cifar10", "test_cifar10.txt"), ("tin", "test_tin.txt")],
            far: CIFAR_FAR,
            outliers: Some("train_tin597.txt"),
            norm: CIFAR100_NORM,
            sizes: (32, 32),
        },
        "imagenet200" => B {
            list_dir: "imagenet200",
            data_dir: "images_largescale",
            classes: 200,
            id: [
                "train_imagenet200.txt",
                "val_imagenet200.txt",
                "test_imagenet200.txt",
            ],
            val_ood: "val_openimage_o.txt",
            near: IMAGENET_NEAR,
            far: IMAGENET_FAR,
            outliers: Some("train_imagenet800.txt"),
            norm: IMAGENET_NORM,
            sizes: (256, 224),
        },
        "imagenet1k" => B {
            list_dir: "imagenet",
            data_dir: "images_largescale",
            classes: 1000,
            id: [
                "train_imagenet.txt",
                "val_imagenet.txt",
                "test_imagenet.txt",
            ],
            val_ood: "val_openimage_o.txt",
            near: IMAGENET_NEAR,
            far: IMAGENET_FAR,
            outliers: None,
            norm: IMAGENET_NORM,
            sizes: (256, 224),
        },
        other => {
            return Err(DataError::Config(format!(
                "unknown OpenOOD benchmark `{other}`, expected cifar10, cifar100, imagenet200 or imagenet1k"
            )));
        }
    };
    let data_dir = join(root, b.data_dir);
    let layout = format!(
        "{root}/\n  benchmark_imglist/{}/<list>.txt\n  {}/<dataset>/<images referenced by the lists>",
        b.list_dir, b.data_dir
    );
    let set = |name: &str, list: &str| PlannedSet {
        name: name.to_owned(),
        spec: SetSpec::ImgList {
            list: join(root, &format!("benchmark_imglist/{}/{list}", b.list_dir)),
            root: data_dir.clone(),
        },
        layout: layout.clone(),
        hint: OPENOOD_HINT.into(),
        pick: Pick::All,
    };
    let id_name = benchmark;
    let mut sets = vec![
        (Role::Train, set(&format!("{id_name}/train"), b.id[0])),
        (Role::Val, set(&format!("{id_name}/val"), b.id[1])),
        (Role::Test, set(&format!("{id_name}/test"), b.id[2])),
        (Role::ValOod, set("val_ood", b.val_ood)),
    ];
    for (name, list) in b.near {
        sets.push((Role::Ood(Group::Near), set(name, list)));
    }
    for (name, list) in b.far {
        sets.push((Role::Ood(Group::Far), set(name, list)));
    }
    if outliers {
        let list = b.outliers.ok_or_else(|| {
            DataError::Config(format!(
                "OpenOOD benchmark `{benchmark}` has no outlier list (only cifar10, cifar100 and imagenet200 do); set data.source.outliers = false"
            ))
        })?;
        sets.push((Role::Outliers, set("outliers", list)));
    }
    Ok(Plan {
        num_classes: b.classes,
        sets,
        normalize: Some(b.norm),
        sizes: Some(b.sizes),
    })
}

/// CIFAR binaries plus a paper's far-OOD suite, all under one root.
pub fn classic(id: &str, root: &str, suite: &str, outliers: &str) -> Result<Plan, DataError> {
    let (kind, folder, norm) = match id {
        "cifar10" => (cifar::Cifar::Cifar10, "cifar-10-batches-bin", CIFAR10_NORM),
        "cifar100" => (
            cifar::Cifar::Cifar100 { coarse: false },
            "cifar-100-binary",
            CIFAR100_NORM,
        ),
        other => {
            return Err(DataError::Config(format!(
                "unknown ID set `{other}`, expected cifar10 or cifar100"
            )));
        }
    };
    let id_set = |split: &str| PlannedSet {
        name: format!("{id}/{split}"),
        spec: match kind {
            cifar::Cifar::Cifar10 => SetSpec::Cifar10 {
                path: join(root, folder),
                split: split.into(),
            },
            cifar::Cifar::Cifar100 { .. } => SetSpec::Cifar100 {
                path: join(root, folder),
                split: split.into(),
                labels: "fine".into(),
            },
        },
        layout: kind.layout().into(),
        hint: kind.hint().into(),
        pick: Pick::All,
    };
    let folder_set = |name: &str, rel: &str, layout: &str, hint: &str| PlannedSet {
        name: name.into(),
        spec: SetSpec::FlatFolder {
            path: join(root, rel),
        },
        layout: layout.into(),
        hint: hint.into(),
        pick: Pick::All,
    };
    let textures = folder_set(
        "textures",
        "dtd/images",
        "dtd/images/<47 class folders>/*.jpg   (5,640 images)",
        "download and extract https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz (scripts/download_ood.sh)",
    );
    let svhn_set = PlannedSet {
        name: "svhn".into(),
        spec: SetSpec::Svhn {
            path: join(root, "svhn/test_32x32.mat"),
        },
        layout: svhn::LAYOUT.into(),
        hint: svhn::HINT.into(),
        pick: Pick::All,
    };
    let places = folder_set(
        "places365",
        "places365",
        "places365/<sub-folders>/*.jpg   (the test subset the paper used)",
        "see datasets/README.md (Places365 test_256 subset; scripts/download_ood.sh)",
    );
    let lsun_c = folder_set(
        "lsun_c",
        "LSUN",
        "LSUN/test/*.jpg   (10,000 crops; ODIN's LSUN.tar.gz)",
        "download and extract https://www.dropbox.com/s/fhtsw1m3qxlwj6h/LSUN.tar.gz (scripts/download_ood.sh)",
    );
    let lsun_r = folder_set(
        "lsun_r",
        "LSUN_resize",
        "LSUN_resize/LSUN_resize/*.jpg   (10,000 images; ODIN's LSUN_resize.tar.gz)",
        "download and extract https://www.dropbox.com/s/moqh2wh8696c3yl/LSUN_resize.tar.gz (scripts/download_ood.sh)",
    );
    let isun = folder_set(
        "isun",
        "iSUN",
        "iSUN/iSUN_patches/*.jpeg   (8,925 images; ODIN's iSUN.tar.gz)",
        "download and extract https://www.dropbox.com/s/ssz7qxfqae0cca5/iSUN.tar.gz (scripts/download_ood.sh)",
    );
    let ood = match suite {
        // Energy README / OE CIFAR test: Textures, SVHN, Places365, LSUN-C, LSUN-R, iSUN.
        "energy" | "oe" => vec![textures, svhn_set, places, lsun_c, lsun_r, isun],
        // PALM `util/loaders/data_loader.py`: SVHN, Places365, LSUN (crop), iSUN, Textures.
        "palm" => vec![svhn_set, places, lsun_c, isun, textures],
        other => {
            return Err(DataError::Config(format!(
                "unknown OOD suite `{other}`, expected energy, oe or palm"
            )));
        }
    };
    let mut sets = vec![(Role::Train, id_set("train")), (Role::Test, id_set("test"))];
    sets.extend(ood.into_iter().map(|s| (Role::Ood(Group::Far), s)));
    match outliers {
        "300k" => sets.push((
            Role::Outliers,
            PlannedSet {
                name: "300k_random_images".into(),
                spec: SetSpec::Npy {
                    path: join(root, "300K_random_images.npy"),
                },
                layout: "300K_random_images.npy   (uint8, (300000, 32, 32, 3), ~921.6 MB)".into(),
                hint: npy::HINT.into(),
                pick: Pick::All,
            },
        )),
        "none" => {}
        other => {
            return Err(DataError::Config(format!(
                "unknown outlier set `{other}`, expected 300k or none"
            )));
        }
    }
    Ok(Plan {
        num_classes: kind.num_classes(),
        sets,
        normalize: Some(norm),
        sizes: Some((32, 32)),
    })
}

/// MixOE's four fine-grained environments (`utils/dataset.py::SPLIT_NUM_CLASSES`): dataset,
/// (ID classes, held-out classes), image folder under the data root. The order is
/// `eval.py::DATA_DIR`'s, in which the coarse-grained OOD pool appends the other three.
pub const FINEGRAINED: [(&str, (usize, usize), &str); 4] = [
    ("bird", (200, 55), "bird/images"),
    ("butterfly", (150, 50), "butterfly/images_small"),
    ("car", (150, 46), "car"),
    ("aircraft", (90, 10), "aircraft/images"),
];

const FINEGRAINED_HINT: &str = "prepare the images as MixOE's data/README.md describes (NABirds, the Butterfly-200 small images, Stanford Cars, FGVC-Aircraft) and take the lists from MixOE's info/ folder (scripts/download_finegrained.sh prints the steps)";

/// MixOE's ID classes of `dataset` for `split`, in draw order:
/// `np.random.RandomState(split).choice(range(n_id + n_ood), n_id, replace=False)`
/// (`train/train_mixoe.py`, `eval/eval.py`).
pub fn finegrained_id_classes(dataset: &str, split: u32) -> Result<Vec<usize>, DataError> {
    let (_, (n_id, n_ood), _) = finegrained_entry(dataset)?;
    Ok(crate::pyrand::numpy_choice(split, n_id + n_ood, *n_id))
}

/// The `FINEGRAINED` row of `dataset`.
fn finegrained_entry(
    dataset: &str,
) -> Result<&'static (&'static str, (usize, usize), &'static str), DataError> {
    FINEGRAINED
        .iter()
        .find(|(d, ..)| *d == dataset)
        .ok_or_else(|| {
            DataError::Config(format!(
                "unknown fine-grained dataset `{dataset}`, expected bird, butterfly, car or aircraft"
            ))
        })
}

/// MixOE's fine-grained protocol (METHODS §4.4): ID = the split's classes of `train.txt` /
/// `val.txt` / `test.txt`; near OOD `fine` = the held-out classes of `test.txt`; far OOD
/// `coarse` = the other three datasets' `test.txt` pooled and sampled to the ID test size
/// (`random.seed(0)`); outliers = WebVision without `INET_SPLITS`; validation OOD = a
/// `random.seed(0)` sample of it the size of the ID validation set (`eval.py --val`).
pub fn finegrained(
    dataset: &str,
    split: u32,
    root: &str,
    info: &str,
    outliers: &str,
) -> Result<Plan, DataError> {
    let this = finegrained_entry(dataset)?;
    let (_, (n_id, n_ood), _) = this;
    let id_classes = finegrained_id_classes(dataset, split)?;
    let held_out: Vec<usize> = (0..n_id + n_ood)
        .filter(|c| !id_classes.contains(c))
        .collect();
    let list = |(ds, _, folder): &(&str, (usize, usize), &str), file: &str| SetSpec::MixoeList {
        list: join(info, &format!("{ds}/{file}")),
        root: join(root, folder),
    };
    let layout = format!(
        "{info}/<dataset>/{{train,val,test}}.txt   (MixOE's info/ lists)\n{root}/bird/images/..., butterfly/images_small/..., car/cars_train|cars_test/..., aircraft/images/..."
    );
    let set = |name: String, spec: SetSpec, pick: Pick| PlannedSet {
        name,
        spec,
        layout: layout.clone(),
        hint: FINEGRAINED_HINT.into(),
        pick,
    };
    let ids = || Pick::Classes(id_classes.clone());
    let mut sets = vec![
        (
            Role::Train,
            set(format!("{dataset}/train"), list(this, "train.txt"), ids()),
        ),
        (
            Role::Val,
            set(format!("{dataset}/val"), list(this, "val.txt"), ids()),
        ),
        (
            Role::Test,
            set(format!("{dataset}/test"), list(this, "test.txt"), ids()),
        ),
        (
            Role::Ood(Group::Near),
            set(
                "fine".into(),
                list(this, "test.txt"),
                Pick::Classes(held_out),
            ),
        ),
    ];
    let mut others = FINEGRAINED
        .iter()
        .filter(|(d, ..)| *d != dataset)
        .map(|e| list(e, "test.txt"));
    let first = others.next().expect("three other datasets");
    sets.push((
        Role::Ood(Group::Far),
        set(
            "coarse".into(),
            first,
            Pick::PoolSample {
                more: others.collect(),
                seed: 0,
                like: Role::Test,
            },
        ),
    ));
    match outliers {
        "webvision" => {
            let webvision = || SetSpec::Webvision {
                path: join(root, "WebVision"),
                exclude: "mixoe".into(),
            };
            let wv = |name: &str, pick: Pick| PlannedSet {
                name: name.into(),
                spec: webvision(),
                layout: crate::formats::webvision::LAYOUT.into(),
                hint: crate::formats::webvision::HINT.into(),
                pick,
            };
            sets.push((
                Role::ValOod,
                wv(
                    "webvision_val",
                    Pick::PoolSample {
                        more: Vec::new(),
                        seed: 0,
                        like: Role::Val,
                    },
                ),
            ));
            sets.push((Role::Outliers, wv("webvision", Pick::All)));
        }
        "none" => {}
        other => {
            return Err(DataError::Config(format!(
                "unknown outlier set `{other}`, expected webvision or none"
            )));
        }
    }
    Ok(Plan {
        num_classes: *n_id,
        sets,
        normalize: Some(IMAGENET_NORM),
        sizes: Some((512, 448)),
    })
}
