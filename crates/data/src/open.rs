//! Open a planned set: the format reader for its `SetSpec`.

use crate::error::DataError;
use crate::formats::cifar::{self, Cifar};
use crate::formats::files::FileList;
use crate::formats::{npy, svhn, webvision};
use crate::plan::{Pick, PlannedSet, Role};
use crate::source::Source;
use oodforge_core::config::SetSpec;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An opened set and its class names (empty when the format has none).
pub struct Opened {
    pub source: Source,
    pub class_names: Vec<String>,
    /// The file listing behind `source` for folder and list formats (for `data check`).
    pub listing: Option<Arc<FileList>>,
}

impl Opened {
    fn memory(source: Source, class_names: Vec<String>) -> Self {
        Self {
            source,
            class_names,
            listing: None,
        }
    }

    fn files(list: FileList) -> Self {
        let list = Arc::new(list);
        Self {
            source: list.clone(),
            class_names: list.classes.clone(),
            listing: Some(list),
        }
    }
}

/// Open a set and take what its `pick` says. `num_classes` checks ID labels where the format
/// stores them; `earlier` holds the sizes of the sets of the plan opened before this one (a
/// `PoolSample` is as large as one of them).
pub fn open(
    set: &PlannedSet,
    num_classes: Option<usize>,
    earlier: &[(Role, usize)],
) -> Result<Opened, DataError> {
    let name = set.name.as_str();
    let spec = |spec: &SetSpec, classes: Option<usize>| {
        open_spec(spec, name, &set.layout, &set.hint, classes)
    };
    let listing = |o: Opened, spec: &SetSpec| {
        o.listing.ok_or_else(|| {
            DataError::Config(format!(
                "set `{name}`: only image lists and folders can be filtered or pooled, not {spec:?}"
            ))
        })
    };
    match &set.pick {
        Pick::All => spec(&set.spec, num_classes),
        Pick::Classes(classes) => {
            // Labels are the dataset's own (all of its classes); they are checked after the
            // selection, which relabels them 0..classes.len().
            let list = listing(spec(&set.spec, None)?, &set.spec)?;
            let kept = list.keep_classes(classes);
            if kept.files.is_empty() {
                return Err(DataError::corrupt(
                    list.root(),
                    "labels",
                    format!(
                        "set `{name}` has no image of the {} classes this split uses; expected the dataset's full list",
                        classes.len()
                    ),
                ));
            }
            Ok(Opened::files(kept))
        }
        Pick::PoolSample { more, seed, like } => {
            let mut lists = vec![listing(spec(&set.spec, None)?, &set.spec)?];
            for s in more {
                lists.push(listing(spec(s, None)?, s)?);
            }
            let root = common_root(lists.iter().map(|l| l.root()));
            let refs: Vec<&FileList> = lists.iter().map(|l| l.as_ref()).collect();
            let pool = FileList::concat(name, &root, &refs);
            let k = earlier
                .iter()
                .find(|(r, _)| r == like)
                .map(|(_, n)| *n)
                .ok_or_else(|| {
                    DataError::Config(format!(
                        "set `{name}` is sampled to the size of the {} set, which the plan opens later",
                        like.as_str()
                    ))
                })?;
            if k > pool.files.len() {
                return Err(DataError::corrupt(
                    &root,
                    "images",
                    format!(
                        "set `{name}` pools {} images but the protocol samples {k} (the size of the {} set)",
                        pool.files.len(),
                        like.as_str()
                    ),
                ));
            }
            let picked = crate::pyrand::python_sample(*seed, pool.files.len(), k);
            Ok(Opened::files(pool.subset(&picked)))
        }
    }
}

/// The deepest folder holding every one of `roots`.
fn common_root<'a>(mut roots: impl Iterator<Item = &'a Path>) -> PathBuf {
    let mut common = roots.next().map(Path::to_path_buf).unwrap_or_default();
    for r in roots {
        while !r.starts_with(&common) {
            if !common.pop() {
                break;
            }
        }
    }
    common
}

fn open_spec(
    spec: &SetSpec,
    name: &str,
    layout: &str,
    hint: &str,
    num_classes: Option<usize>,
) -> Result<Opened, DataError> {
    Ok(match spec {
        SetSpec::Cifar10 { path, split } | SetSpec::Cifar100 { path, split, .. } => {
            let kind = match spec {
                SetSpec::Cifar100 { labels, .. } => Cifar::Cifar100 {
                    coarse: labels == "coarse",
                },
                _ => Cifar::Cifar10,
            };
            let (images, names) = cifar::read(Path::new(path), kind, split == "train", name)?;
            check_classes(Path::new(path), kind.num_classes(), num_classes)?;
            Opened::memory(Arc::new(images), names)
        }
        SetSpec::Svhn { path } => {
            let images = svhn::read(Path::new(path), name)?;
            check_classes(Path::new(path), 10, num_classes)?;
            Opened::memory(Arc::new(images), (0..10).map(|d| d.to_string()).collect())
        }
        SetSpec::ImageFolder { path } => {
            let list = FileList::class_folders(Path::new(path), name, layout, hint)?;
            check_classes(Path::new(path), list.classes.len(), num_classes)?;
            Opened::files(list)
        }
        SetSpec::FlatFolder { path } => {
            Opened::files(FileList::flat(Path::new(path), name, layout, hint)?)
        }
        SetSpec::ImgList { list, root } => Opened::files(FileList::imglist(
            Path::new(list),
            Path::new(root),
            name,
            num_classes,
            layout,
            hint,
        )?),
        SetSpec::MixoeList { list, root } => Opened::files(FileList::mixoe_list(
            Path::new(list),
            Path::new(root),
            name,
            num_classes,
            layout,
            hint,
        )?),
        SetSpec::Webvision { path, exclude } => {
            let excluded = match exclude.as_str() {
                "mixoe" => webvision::mixoe_excluded(),
                _ => Vec::new(),
            };
            Opened::files(webvision::read(Path::new(path), &excluded, name)?)
        }
        SetSpec::Npy { path } => Opened::memory(
            Arc::new(npy::NpyImages::open(Path::new(path), name)?),
            Vec::new(),
        ),
    })
}

fn check_classes(path: &Path, found: usize, expected: Option<usize>) -> Result<(), DataError> {
    match expected {
        Some(k) if k != found => Err(DataError::corrupt(
            path,
            "classes",
            format!("the set has {found} classes but the config declares num_classes = {k}"),
        )),
        _ => Ok(()),
    }
}
