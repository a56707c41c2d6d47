//! CIFAR-10 / CIFAR-100 binary version (METHODS §9.1): fixed-size records of a label byte (two
//! for CIFAR-100: coarse then fine) followed by 3072 pixel bytes, the R, G and B planes of a
//! 32x32 image, each row-major. That is `ImageSet`'s CHW layout, so records are copied as they are.

use crate::error::{DataError, read_file};
use crate::images::ImageSet;
use std::path::Path;

const PIXELS: usize = 3 * 32 * 32;

/// Which CIFAR and which split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cifar {
    Cifar10,
    /// `coarse = true` reads the 20 superclass labels instead of the 100 fine ones.
    Cifar100 {
        coarse: bool,
    },
}

impl Cifar {
    fn record_len(self) -> usize {
        match self {
            Self::Cifar10 => 1 + PIXELS,
            Self::Cifar100 { .. } => 2 + PIXELS,
        }
    }

    pub fn num_classes(self) -> usize {
        match self {
            Self::Cifar10 => 10,
            Self::Cifar100 { coarse: true } => 20,
            Self::Cifar100 { coarse: false } => 100,
        }
    }

    /// The files of a split inside the extracted folder.
    pub fn files(self, train: bool) -> Vec<&'static str> {
        match (self, train) {
            (Self::Cifar10, true) => vec![
                "data_batch_1.bin",
                "data_batch_2.bin",
                "data_batch_3.bin",
                "data_batch_4.bin",
                "data_batch_5.bin",
            ],
            (Self::Cifar10, false) => vec!["test_batch.bin"],
            (Self::Cifar100 { .. }, true) => vec!["train.bin"],
            (Self::Cifar100 { .. }, false) => vec!["test.bin"],
        }
    }

    pub fn layout(self) -> &'static str {
        match self {
            Self::Cifar10 => {
                "cifar-10-batches-bin/\n  batches.meta.txt\n  data_batch_1.bin ... data_batch_5.bin   (30,730,000 bytes each)\n  test_batch.bin"
            }
            Self::Cifar100 { .. } => {
                "cifar-100-binary/\n  coarse_label_names.txt\n  fine_label_names.txt\n  train.bin   (50,000 records of 3074 bytes)\n  test.bin    (10,000 records)"
            }
        }
    }

    pub fn hint(self) -> &'static str {
        match self {
            Self::Cifar10 => {
                "download and extract https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz (scripts/download_cifar.sh)"
            }
            Self::Cifar100 { .. } => {
                "download and extract https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz (scripts/download_cifar.sh)"
            }
        }
    }

    fn names_file(self) -> &'static str {
        match self {
            Self::Cifar10 => "batches.meta.txt",
            Self::Cifar100 { coarse: true } => "coarse_label_names.txt",
            Self::Cifar100 { coarse: false } => "fine_label_names.txt",
        }
    }
}

/// Parse the records of one file (already read) into `images`/`labels`.
pub fn parse_records(
    path: &Path,
    bytes: &[u8],
    kind: Cifar,
    images: &mut Vec<u8>,
    labels: &mut Vec<usize>,
) -> Result<(), DataError> {
    let rec = kind.record_len();
    let whole = bytes.len() / rec;
    if !bytes.len().is_multiple_of(rec) {
        return Err(DataError::corrupt(
            path,
            format!("byte offset {}", whole * rec),
            format!(
                "truncated record {whole}: {} of {rec} bytes (the file has {} bytes, not a multiple of the {rec}-byte record)",
                bytes.len() % rec,
                bytes.len()
            ),
        ));
    }
    images.reserve(whole * PIXELS);
    for (i, r) in bytes.chunks_exact(rec).enumerate() {
        // CIFAR-100: byte 0 coarse label, byte 1 fine label.
        let (at, label) = match kind {
            Cifar::Cifar10 => (0, r[0]),
            Cifar::Cifar100 { coarse: true } => (0, r[0]),
            Cifar::Cifar100 { coarse: false } => (1, r[1]),
        };
        if usize::from(label) >= kind.num_classes() {
            return Err(DataError::corrupt(
                path,
                format!("byte offset {} (record {i})", i * rec + at),
                format!(
                    "label {label} is out of range: expected 0..{}",
                    kind.num_classes()
                ),
            ));
        }
        labels.push(usize::from(label));
        images.extend_from_slice(&r[rec - PIXELS..]);
    }
    Ok(())
}

/// Read a split from the extracted binary folder.
pub fn read(
    dir: &Path,
    kind: Cifar,
    train: bool,
    name: &str,
) -> Result<(ImageSet, Vec<String>), DataError> {
    if !dir.is_dir() {
        return Err(DataError::missing(
            dir,
            "CIFAR binary folder",
            kind.layout(),
            kind.hint(),
        ));
    }
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for f in kind.files(train) {
        let path = dir.join(f);
        let bytes = read_file(&path, "CIFAR binary batch", kind.layout(), kind.hint())?;
        parse_records(&path, &bytes, kind, &mut images, &mut labels)?;
    }
    let names = class_names(dir, kind)?;
    Ok((ImageSet::new(name, images, labels, 32, 32), names))
}

/// Class names from the meta file, or `class_<i>` when it is absent (it is optional).
fn class_names(dir: &Path, kind: Cifar) -> Result<Vec<String>, DataError> {
    let path = dir.join(kind.names_file());
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((0..kind.num_classes())
                .map(|i| format!("class_{i}"))
                .collect());
        }
        Err(e) => return Err(DataError::io(&path, e)),
    };
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if names.len() != kind.num_classes() {
        return Err(DataError::corrupt(
            &path,
            format!("line {}", names.len()),
            format!(
                "{} class names, expected {}",
                names.len(),
                kind.num_classes()
            ),
        ));
    }
    Ok(names)
}
