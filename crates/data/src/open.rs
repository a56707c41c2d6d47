//! Open a planned set: the format reader for its `SetSpec`.

use crate::error::DataError;
use crate::formats::cifar::{self, Cifar};
use crate::formats::files::FileList;
use crate::formats::{npy, svhn};
use crate::plan::PlannedSet;
use crate::source::Source;
use oodforge_core::config::SetSpec;
use std::path::Path;
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

/// Open a set. `num_classes` checks ID labels where the format stores them.
pub fn open(set: &PlannedSet, num_classes: Option<usize>) -> Result<Opened, DataError> {
    let (layout, hint) = (set.layout.as_str(), set.hint.as_str());
    let name = set.name.as_str();
    Ok(match &set.spec {
        SetSpec::Cifar10 { path, split } | SetSpec::Cifar100 { path, split, .. } => {
            let kind = match &set.spec {
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
