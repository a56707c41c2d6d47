//! Attention-MIL feature bags as the AEM code stores them (METHODS §9.10;
//! `Step2_feature_extract.py`, `datasets/datasets.py`): one HDF5 file per (dataset, feature
//! extractor), `patch_feats_pretrain_<name>.h5`, holding a group per slide with datasets `feat`
//! (N x D, float16 on disk, cast to float32 on load as the official loader does) and `coords`
//! (N x 2 integers), and an integer attribute `label`. The whole file is read at start-up, as in
//! the official code. Label CSVs (`dataset_csv/*.csv`) are read by header name.

use crate::error::DataError;
use hdf5_reader::{Datatype, Hdf5File};
use oodforge_core::config::{BagSource, DataSource, SyntheticBagsConfig};
use oodforge_core::rng::{Purpose, stream};
use rand::Rng;
use rand::seq::SliceRandom;
use rand_distr::StandardNormal;
use std::collections::BTreeMap;
use std::path::Path;

pub const LAYOUT: &str = "<data_dir>/patch_feats_pretrain_<extractor>.h5\n  /<slide_id>/feat     (N x D float16)\n  /<slide_id>/coords   (N x 2 int)\n  /<slide_id>@label    (int attribute)";
pub const HINT: &str = "extract patch features with the AEM repository's Step1/Step2 scripts (CLAM patching + a pretrained extractor); see datasets/README.md";

/// One slide: its patch features and coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct Bag {
    pub slide_id: String,
    pub label: i64,
    /// Patches.
    pub n: usize,
    /// Feature dimension.
    pub dim: usize,
    /// `n x dim`, row-major.
    pub feat: Vec<f32>,
    /// `n` (x, y) patch coordinates.
    pub coords: Vec<[i64; 2]>,
}

/// Read every slide group of a feature file, sorted by slide id.
pub fn read_bags(path: &Path) -> Result<Vec<Bag>, DataError> {
    let file_len = match std::fs::metadata(path) {
        Ok(m) if m.is_file() => m.len(),
        _ => return Err(DataError::missing(path, "HDF5 feature file", LAYOUT, HINT)),
    };
    let h5 = |loc: &str, e: hdf5_reader::error::Error| DataError::corrupt(path, loc, e.to_string());
    let file = Hdf5File::open(path).map_err(|e| h5("superblock", e))?;
    let root = file.root_group().map_err(|e| h5("root group", e))?;
    let groups = root.groups().map_err(|e| h5("root group", e))?;
    let mut bags = Vec::with_capacity(groups.len());
    for g in groups {
        let slide = g.name().trim_start_matches('/').to_owned();
        let loc = |what: &str| format!("slide `{slide}`, {what}");
        let label_attr = g.attribute("label").map_err(|e| {
            DataError::corrupt(
                path,
                loc("attribute `label`"),
                format!("missing or unreadable ({e}); expected an integer class label"),
            )
        })?;
        let label = label_attr
            .read_as_f64()
            .map_err(|e| DataError::corrupt(path, loc("attribute `label`"), e.to_string()))?;
        if label.fract() != 0.0 {
            return Err(DataError::corrupt(
                path,
                loc("attribute `label`"),
                format!("{label} is not an integer"),
            ));
        }
        let feat_ds = g.dataset("feat").map_err(|e| {
            DataError::corrupt(
                path,
                loc("dataset `feat`"),
                format!("missing or unreadable ({e}); expected N x D float16"),
            )
        })?;
        let shape = feat_ds.shape().to_vec();
        let (n, dim) = match shape[..] {
            [n, d] => (n as usize, d as usize),
            _ => {
                return Err(DataError::corrupt(
                    path,
                    loc("dataset `feat`"),
                    format!("shape {shape:?}, expected N x D"),
                ));
            }
        };
        fits_in_file(path, &loc("dataset `feat`"), &feat_ds, file_len)?;
        let raw = feat_ds
            .read_native_bytes()
            .map_err(|e| h5(&loc("dataset `feat`"), e))?;
        let feat = match feat_ds.dtype() {
            Datatype::FloatingPoint { size: 2, .. } => raw
                .chunks_exact(2)
                .map(|b| f16_to_f32(u16::from_ne_bytes([b[0], b[1]])))
                .collect(),
            Datatype::FloatingPoint { size: 4, .. } => raw
                .chunks_exact(4)
                .map(|b| f32::from_ne_bytes(b.try_into().unwrap()))
                .collect(),
            other => {
                return Err(DataError::corrupt(
                    path,
                    loc("dataset `feat`"),
                    format!("element type {other:?}, expected float16 (or float32)"),
                ));
            }
        };
        let coords_ds = g.dataset("coords").map_err(|e| {
            DataError::corrupt(
                path,
                loc("dataset `coords`"),
                format!("missing or unreadable ({e}); expected N x 2 integers"),
            )
        })?;
        let cshape = coords_ds.shape().to_vec();
        if cshape != [n as u64, 2] {
            return Err(DataError::corrupt(
                path,
                loc("dataset `coords`"),
                format!(
                    "shape {cshape:?}, expected [{n}, 2] (one coordinate pair per row of `feat`)"
                ),
            ));
        }
        fits_in_file(path, &loc("dataset `coords`"), &coords_ds, file_len)?;
        let craw = coords_ds
            .read_native_bytes()
            .map_err(|e| h5(&loc("dataset `coords`"), e))?;
        let ints: Vec<i64> = match coords_ds.dtype() {
            Datatype::FixedPoint { size, signed, .. } => {
                let size = usize::from(*size);
                craw.chunks_exact(size)
                    .map(|b| int_ne(b, *signed))
                    .collect()
            }
            Datatype::FloatingPoint { size: 8, .. } => craw
                .chunks_exact(8)
                .map(|b| f64::from_ne_bytes(b.try_into().unwrap()) as i64)
                .collect(),
            other => {
                return Err(DataError::corrupt(
                    path,
                    loc("dataset `coords`"),
                    format!("element type {other:?}, expected integers"),
                ));
            }
        };
        let coords = ints.chunks_exact(2).map(|c| [c[0], c[1]]).collect();
        bags.push(Bag {
            slide_id: slide,
            label: label as i64,
            n,
            dim,
            feat,
            coords,
        });
    }
    bags.sort_by(|a, b| a.slide_id.cmp(&b.slide_id));
    if let Some(first) = bags.first()
        && let Some(odd) = bags.iter().find(|b| b.dim != first.dim)
    {
        return Err(DataError::corrupt(
            path,
            format!("slide `{}`, dataset `feat`", odd.slide_id),
            format!(
                "feature dimension {} differs from {} of slide `{}`",
                odd.dim, first.dim, first.slide_id
            ),
        ));
    }
    Ok(bags)
}

/// The bytes a dataset's shape claims must be storable in the file. hdf5-reader allocates and
/// zero-fills the whole shape before it reads a byte, so one damaged dimension (2^30 rows, say)
/// would otherwise ask for gigabytes and bring the process down instead of giving an error.
/// The bound allows for compression: deflate, the only filter h5py offers for float data besides
/// lzf and szip (both weaker), expands at most 1032:1 (zlib's technical notes), so no chunked
/// dataset in this file can decode to more than 1032 bytes per byte of file.
fn fits_in_file(
    path: &Path,
    location: &str,
    ds: &hdf5_reader::Dataset,
    file_len: u64,
) -> Result<(), DataError> {
    const DEFLATE_MAX_RATIO: u64 = 1032;
    let bytes = ds
        .raw_byte_len()
        .map_err(|e| DataError::corrupt(path, location, e.to_string()))?;
    let most = file_len.saturating_mul(DEFLATE_MAX_RATIO);
    if bytes as u64 > most {
        return Err(DataError::corrupt(
            path,
            location,
            format!(
                "shape {:?} needs {bytes} bytes, more than a {file_len}-byte file can hold even \
                 compressed ({most} bytes at deflate's 1032:1); the shape is damaged",
                ds.shape()
            ),
        ));
    }
    Ok(())
}

fn int_ne(b: &[u8], signed: bool) -> i64 {
    let mut buf = [0u8; 8];
    let n = b.len().min(8);
    if cfg!(target_endian = "little") {
        buf[..n].copy_from_slice(&b[..n]);
        if signed && b[n - 1] & 0x80 != 0 {
            buf[n..].fill(0xff);
        }
        i64::from_le_bytes(buf)
    } else {
        buf[8 - n..].copy_from_slice(&b[..n]);
        if signed && b[0] & 0x80 != 0 {
            buf[..8 - n].fill(0xff);
        }
        i64::from_be_bytes(buf)
    }
}

/// IEEE 754 half to single precision (exact: every f16 is an f32).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: value = m * 2^-24.
            let v = m as f32 * f32::powi(2.0, -24);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, m) => sign | 0x7fc0_0000 | (m << 13),
        (e, m) => sign | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// One row of a label CSV: the columns the AEM loaders use.
#[derive(Debug, Clone, PartialEq)]
pub struct SlideRow {
    pub slide_id: String,
    pub label: i64,
    /// CAMELYON17 hospital (`center`; >= 3 is the test split in AEM).
    pub center: Option<i64>,
    /// BRACS `split_info` (train / val / test).
    pub split: Option<String>,
}

/// Read `camelyon16.csv` (`case_id,slide_id,label`), `camelyon17.csv`
/// (`,slide_id,label,center`), `bracs.csv` (`,case_id,slide_id,split_info,full_path,label`) or
/// any CSV with `slide_id` and `label` columns.
pub fn read_label_csv(path: &Path) -> Result<Vec<SlideRow>, DataError> {
    let mut rdr = match csv::Reader::from_path(path) {
        Ok(r) => r,
        Err(e) => {
            if let csv::ErrorKind::Io(io) = e.kind()
                && io.kind() == std::io::ErrorKind::NotFound
            {
                return Err(DataError::missing(
                    path,
                    "slide label CSV",
                    "dataset_csv/<dataset>.csv with columns slide_id, label (and center / split_info)",
                    "copy dataset_csv/ from the AEM repository",
                ));
            }
            return Err(DataError::corrupt(path, "header", e.to_string()));
        }
    };
    let headers = rdr
        .headers()
        .map_err(|e| DataError::corrupt(path, "line 1", e.to_string()))?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let need = |name: &str| {
        col(name).ok_or_else(|| {
            DataError::corrupt(
                path,
                "line 1",
                format!(
                    "no `{name}` column; found {:?}",
                    headers.iter().collect::<Vec<_>>()
                ),
            )
        })
    };
    let (sid, lab) = (need("slide_id")?, need("label")?);
    let (center, split) = (col("center"), col("split_info"));
    let mut rows = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let line = i + 2;
        let rec =
            rec.map_err(|e| DataError::corrupt(path, format!("line {line}"), e.to_string()))?;
        let field = |c: usize| rec.get(c).unwrap_or("").trim();
        let int = |c: usize, what: &str| -> Result<i64, DataError> {
            let v = field(c);
            v.parse::<i64>()
                .or_else(|_| v.parse::<f64>().map(|f| f as i64).map_err(|_| ()))
                .map_err(|_| {
                    DataError::corrupt(
                        path,
                        format!("line {line}"),
                        format!("{what} `{v}` is not an integer"),
                    )
                })
        };
        rows.push(SlideRow {
            slide_id: field(sid).to_owned(),
            label: int(lab, "label")?,
            center: center.map(|c| int(c, "center")).transpose()?,
            split: split.map(|c| field(c).to_owned()),
        });
    }
    Ok(rows)
}

/// Check a feature file against its CSV: every CSV slide has a bag with the same label.
/// Returns the bags in CSV order.
pub fn match_csv(
    h5: &Path,
    bags: Vec<Bag>,
    csv_path: &Path,
    rows: &[SlideRow],
) -> Result<Vec<Bag>, DataError> {
    let mut by_id: BTreeMap<String, Bag> =
        bags.into_iter().map(|b| (b.slide_id.clone(), b)).collect();
    let mut out = Vec::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        let bag = by_id.remove(&r.slide_id).ok_or_else(|| {
            DataError::corrupt(
                h5,
                format!("slide `{}`", r.slide_id),
                format!(
                    "listed in {} (line {}) but not in the feature file",
                    csv_path.display(),
                    i + 2
                ),
            )
        })?;
        if bag.label != r.label {
            return Err(DataError::corrupt(
                h5,
                format!("slide `{}`, attribute `label`", r.slide_id),
                format!(
                    "{} but {} line {} says {}",
                    bag.label,
                    csv_path.display(),
                    i + 2,
                    r.label
                ),
            ));
        }
        out.push(bag);
    }
    Ok(out)
}

/// The bags of a run, split into training, model-selection and test slides.
#[derive(Debug, Clone)]
pub struct BagSplits {
    /// `camelyon16`, ... or `synthetic_bags`.
    pub name: String,
    pub num_classes: usize,
    /// Instance feature dimension.
    pub dim: usize,
    pub train: Vec<Bag>,
    pub val: Vec<Bag>,
    pub test: Vec<Bag>,
}

impl BagSplits {
    /// SHA-256 over the slide ids, labels and features of one split (for the run manifest).
    pub fn fingerprint(bags: &[Bag]) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for b in bags {
            h.update(b.slide_id.as_bytes());
            h.update(b.label.to_le_bytes());
            for v in &b.feat {
                h.update(v.to_le_bytes());
            }
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Open the feature-bag source of a config and split it as AEM's `datasets/datasets.py` does:
/// - `camelyon16`: slides whose id contains `test` are the test set (the official test slides);
///   2 classes (normal 0, tumour 1);
/// - `camelyon17`: hospitals (`center`) 3 and 4 are the test set; 4 classes (CSV label 0-3);
/// - `bracs`: the CSV's `split_info`; the 7 subtypes grouped into 3 classes
///   ({0,1,2} -> 0, {3,4} -> 1, {5,6} -> 2).
///
/// CAMELYON16/17 hold out `val_fraction` of the remaining slides (rounded up, as sklearn's
/// `train_test_split(test_size=0.1)`) for model selection. The official split draws from numpy's
/// RNG with the run seed; ours draws from the run's `Split` stream, so the slides differ from the
/// official `split_<seed>.json` while the rule is the same.
pub fn load_splits(b: &BagSource, seed: u64) -> Result<BagSplits, DataError> {
    let (h5, csv_path) = (Path::new(&b.features), Path::new(&b.labels));
    let rows = read_label_csv(csv_path)?;
    let bags = match_csv(h5, read_bags(h5)?, csv_path, &rows)?;
    let num_classes = match b.dataset.as_str() {
        "camelyon16" => 2,
        "camelyon17" => 4,
        _ => 3,
    };
    let (mut trainval, mut val, mut test) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (mut bag, row)) in bags.into_iter().zip(&rows).enumerate() {
        let line = i + 2;
        let bad_label = |what: String| DataError::corrupt(csv_path, format!("line {line}"), what);
        match b.dataset.as_str() {
            "camelyon16" | "camelyon17" => {
                if !(0..num_classes as i64).contains(&bag.label) {
                    return Err(bad_label(format!(
                        "label {} is out of range for {}, expected 0..={}",
                        bag.label,
                        b.dataset,
                        num_classes - 1
                    )));
                }
                let is_test = if b.dataset == "camelyon16" {
                    bag.slide_id.contains("test")
                } else {
                    let center = row.center.ok_or_else(|| {
                        DataError::corrupt(
                            csv_path,
                            "line 1",
                            "no `center` column; camelyon17 splits by hospital (center >= 3 is test)",
                        )
                    })?;
                    center >= 3
                };
                if is_test {
                    test.push(bag);
                } else {
                    trainval.push(bag);
                }
            }
            _ => {
                bag.label = match bag.label {
                    0..=2 => 0,
                    3 | 4 => 1,
                    5 | 6 => 2,
                    other => {
                        return Err(bad_label(format!(
                            "BRACS subtype {other} is out of range, expected 0..=6"
                        )));
                    }
                };
                match row.split.as_deref() {
                    Some("train") => trainval.push(bag),
                    Some("val") => val.push(bag),
                    Some("test") => test.push(bag),
                    other => {
                        return Err(DataError::corrupt(
                            csv_path,
                            format!("line {line}"),
                            format!(
                                "split_info {:?} is not a split, expected train, val or test",
                                other.unwrap_or("(no split_info column)")
                            ),
                        ));
                    }
                }
            }
        }
    }
    let train = if b.dataset == "bracs" {
        trainval
    } else {
        let n_val = (b.val_fraction * trainval.len() as f64).ceil() as usize;
        let mut order: Vec<usize> = (0..trainval.len()).collect();
        order.shuffle(&mut stream(seed, Purpose::Split, 0, 0));
        let held: std::collections::BTreeSet<usize> = order[..n_val].iter().copied().collect();
        let mut train = Vec::new();
        for (i, bag) in trainval.into_iter().enumerate() {
            if held.contains(&i) {
                val.push(bag);
            } else {
                train.push(bag);
            }
        }
        train
    };
    for (split, set) in [("training", &train), ("test", &test)] {
        if set.is_empty() {
            return Err(DataError::corrupt(
                csv_path,
                "all lines",
                format!(
                    "no {split} slide: {} with the {} split rule leaves the {split} set empty",
                    csv_path.display(),
                    b.dataset
                ),
            ));
        }
    }
    let dim = train[0].dim;
    Ok(BagSplits {
        name: b.dataset.clone(),
        num_classes,
        dim,
        train,
        val,
        test,
    })
}

/// The bags of a feature-bag source (`None` for image sources).
pub fn load(source: &DataSource, seed: u64) -> Option<Result<BagSplits, DataError>> {
    match source {
        DataSource::Bags(b) => Some(load_splits(b, seed)),
        DataSource::SyntheticBags(s) => Some(Ok(synthetic(s))),
        _ => None,
    }
}

/// The built-in feature-bag set. Class `k > 0` has a unit direction `u_k`; every instance is
/// standard normal noise, and a class-`k` bag has 10-30% key instances shifted by
/// `KEY_SHIFT * u_k` (at least one). Class-0 bags hold background only. Bag `i` of split `s`
/// (0 train, 1 val, 2 test) has label `i % num_classes` and is drawn from its own stream
/// `rng::stream(data_seed, Data, 1000 + s, i)`.
pub fn synthetic(config: &SyntheticBagsConfig) -> BagSplits {
    const KEY_SHIFT: f32 = 2.5;
    let dim = config.feature_dim;
    let directions: Vec<Vec<f32>> = (0..config.num_classes)
        .map(|k| {
            let mut rng = stream(config.data_seed, Purpose::Data, 999, k as u64);
            let v: Vec<f32> = (0..dim).map(|_| rng.sample(StandardNormal)).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
            v.into_iter().map(|x| x / norm).collect()
        })
        .collect();
    let split = |s: u64, count: usize, prefix: &str| -> Vec<Bag> {
        (0..count)
            .map(|i| {
                let mut rng = stream(config.data_seed, Purpose::Data, 1000 + s, i as u64);
                let label = i % config.num_classes;
                let [lo, hi] = config.instances;
                let n = rng.random_range(lo..=hi);
                let keys = if label == 0 {
                    0
                } else {
                    ((rng.random_range(0.1..0.3) * n as f64).round() as usize).max(1)
                };
                let mut feat: Vec<f32> = (0..n * dim).map(|_| rng.sample(StandardNormal)).collect();
                let mut rows: Vec<usize> = (0..n).collect();
                rows.shuffle(&mut rng);
                for &r in &rows[..keys] {
                    for (x, u) in feat[r * dim..(r + 1) * dim]
                        .iter_mut()
                        .zip(&directions[label])
                    {
                        *x += KEY_SHIFT * u;
                    }
                }
                Bag {
                    slide_id: format!("{prefix}_{i:04}"),
                    label: label as i64,
                    n,
                    dim,
                    feat,
                    coords: (0..n as i64).map(|r| [r, 0]).collect(),
                }
            })
            .collect()
    };
    BagSplits {
        name: "synthetic_bags".into(),
        num_classes: config.num_classes,
        dim,
        train: split(0, config.train_bags, "train"),
        val: split(1, config.val_bags, "val"),
        test: split(2, config.test_bags, "test"),
    }
}
