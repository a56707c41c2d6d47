//! Cached network outputs (`<run>/outputs/*.safetensors`): the network runs once per dataset and
//! model; every post-processor, setting and metric convention afterwards reads these files.
//!
//! One file per dataset: `logits` (F32 `[n, classes]`), `features` (F32 `[n, dim]`, when a
//! feature score needed them), `embeddings` (F32 `[n, dim]`, the projection head's output when
//! the model has one, beside the features), `labels` (I64 `[n]`, ID sets) and `oodforge.meta` (U8: a JSON
//! object whose `key` is the SHA-256 of what the outputs depend on: the weights, the dataset
//! listing and the test pipeline). A file whose key differs is stale and recomputed. Scores
//! computed beside the network (ODIN) go to their own file per setting, tensor `score` (F64).
//! Python reads them with `safetensors.numpy.load_file`.

use crate::postprocess::Logits;
use crate::postprocess::fitted::SetOutputs;
use safetensors::{Dtype, SafeTensors, View};
use std::borrow::Cow;
use std::path::{Path, PathBuf};

const META: &str = "oodforge.meta";

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a readable oodforge output cache ({message}); delete it to recompute")]
    Format { path: PathBuf, message: String },
}

/// One dataset's cached outputs.
#[derive(Debug, Clone)]
pub struct CachedSet {
    pub outputs: SetOutputs,
    pub labels: Option<Vec<usize>>,
}

struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn f32s(v: impl Iterator<Item = f32>) -> Vec<u8> {
    v.flat_map(f32::to_le_bytes).collect()
}

fn meta(key: &str, rows: usize) -> Raw {
    let json = serde_json::json!({ "key": key, "rows": rows }).to_string();
    Raw {
        dtype: Dtype::U8,
        shape: vec![json.len()],
        bytes: json.into_bytes(),
    }
}

fn write_tensors(path: &Path, tensors: Vec<(&str, Raw)>) -> Result<(), CacheError> {
    let io = |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bytes =
        safetensors::serialize(tensors.iter().map(|(n, r)| (*n, r)), None).map_err(|e| {
            CacheError::Format {
                path: path.to_path_buf(),
                message: e.to_string(),
            }
        })?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    // Write then rename: a crash mid-write leaves the old file (or none), never half of one.
    let tmp = path.with_extension("safetensors.tmp");
    std::fs::write(&tmp, &bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Store a dataset's logits, features (if any) and labels (ID sets) under `key`.
pub fn write_set(
    path: &Path,
    key: &str,
    set: &SetOutputs,
    labels: Option<&[usize]>,
) -> Result<(), CacheError> {
    let n = set.logits.len();
    let mut tensors = vec![
        (META, meta(key, n)),
        (
            "logits",
            Raw {
                dtype: Dtype::F32,
                shape: vec![n, set.logits.num_classes],
                bytes: f32s(set.logits.data.iter().copied()),
            },
        ),
    ];
    if !set.features.is_empty() {
        tensors.push((
            "features",
            Raw {
                dtype: Dtype::F32,
                shape: vec![n, set.features.len() / n.max(1)],
                // The network computed them in f32: nothing is lost.
                bytes: f32s(set.features.iter().map(|v| *v as f32)),
            },
        ));
    }
    if !set.embeddings.is_empty() {
        tensors.push((
            "embeddings",
            Raw {
                dtype: Dtype::F32,
                shape: vec![n, set.embeddings.len() / n.max(1)],
                bytes: f32s(set.embeddings.iter().copied()),
            },
        ));
    }
    if let Some(labels) = labels {
        tensors.push((
            "labels",
            Raw {
                dtype: Dtype::I64,
                shape: vec![labels.len()],
                bytes: labels
                    .iter()
                    .flat_map(|l| (*l as i64).to_le_bytes())
                    .collect(),
            },
        ));
    }
    write_tensors(path, tensors)
}

/// Store one score per sample (ODIN) under `key`.
pub fn write_scores(path: &Path, key: &str, scores: &[f64]) -> Result<(), CacheError> {
    let tensors = vec![
        (META, meta(key, scores.len())),
        (
            "score",
            Raw {
                dtype: Dtype::F64,
                shape: vec![scores.len()],
                bytes: scores.iter().flat_map(|v| v.to_le_bytes()).collect(),
            },
        ),
    ];
    write_tensors(path, tensors)
}

/// The file's bytes, `None` when it does not exist.
fn read(path: &Path) -> Result<Option<Vec<u8>>, CacheError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CacheError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The key stored in a cache file's bytes.
fn key_of(path: &Path, bytes: &[u8]) -> Result<Option<String>, CacheError> {
    let bad = |message: String| CacheError::Format {
        path: path.to_path_buf(),
        message,
    };
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
    let m = st
        .tensor(META)
        .map_err(|_| bad(format!("no `{META}` tensor")))?;
    let m: serde_json::Value =
        serde_json::from_slice(m.data()).map_err(|e| bad(format!("`{META}`: {e}")))?;
    Ok(m["key"].as_str().map(str::to_owned))
}

/// The file's contents when it exists and was written under `key`; `None` when it is missing
/// or stale. The file is read once.
fn open(path: &Path, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
    let Some(bytes) = read(path)? else {
        return Ok(None);
    };
    Ok((key_of(path, &bytes)?.as_deref() == Some(key)).then_some(bytes))
}

/// The key a cache file was written under (`None` when the file is missing).
pub fn stored_key(path: &Path) -> Result<Option<String>, CacheError> {
    match read(path)? {
        Some(bytes) => key_of(path, &bytes),
        None => Ok(None),
    }
}

/// A stored tensor's shape and little-endian bytes.
type Stored<'a> = (Vec<usize>, &'a [u8]);

fn tensor<'a>(
    st: &SafeTensors<'a>,
    path: &Path,
    name: &str,
    dtype: Dtype,
) -> Result<Option<Stored<'a>>, CacheError> {
    let Ok(t) = st.tensor(name) else {
        return Ok(None);
    };
    if t.dtype() != dtype {
        return Err(CacheError::Format {
            path: path.to_path_buf(),
            message: format!("`{name}` is {:?}, expected {dtype:?}", t.dtype()),
        });
    }
    Ok(Some((t.shape().to_vec(), t.data())))
}

fn read_f32(b: &[u8]) -> impl Iterator<Item = f32> + '_ {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
}

/// A cached dataset, or `None` when the file is missing or stale (`key` differs) or lacks the
/// features that are now `needed`.
pub fn read_set(
    path: &Path,
    key: &str,
    needs_features: bool,
) -> Result<Option<CachedSet>, CacheError> {
    let Some(bytes) = open(path, key)? else {
        return Ok(None);
    };
    let st = SafeTensors::deserialize(&bytes).expect("checked by open");
    let bad = |message: String| CacheError::Format {
        path: path.to_path_buf(),
        message,
    };
    let (shape, data) =
        tensor(&st, path, "logits", Dtype::F32)?.ok_or_else(|| bad("no `logits`".into()))?;
    let [n, classes] = shape[..] else {
        return Err(bad(format!(
            "`logits` has shape {shape:?}, expected [n, classes]"
        )));
    };
    if classes == 0 {
        return Err(bad("`logits` has 0 classes".into()));
    }
    let logits = Logits::new(read_f32(data).collect(), classes);
    let features = match tensor(&st, path, "features", Dtype::F32)? {
        Some((shape, data)) if shape.first() == Some(&n) => read_f32(data).map(f64::from).collect(),
        Some((shape, _)) => {
            return Err(bad(format!(
                "`features` has shape {shape:?} for {n} logit rows"
            )));
        }
        None if needs_features => return Ok(None),
        None => Vec::new(),
    };
    let embeddings = match tensor(&st, path, "embeddings", Dtype::F32)? {
        Some((shape, data)) if shape.first() == Some(&n) => read_f32(data).collect(),
        Some((shape, _)) => {
            return Err(bad(format!(
                "`embeddings` has shape {shape:?} for {n} logit rows"
            )));
        }
        None => Vec::new(),
    };
    let labels = match tensor(&st, path, "labels", Dtype::I64)? {
        Some((shape, data)) if shape == [n] => Some(
            data.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as usize)
                .collect(),
        ),
        Some((shape, _)) => {
            return Err(bad(format!(
                "`labels` has shape {shape:?} for {n} logit rows"
            )));
        }
        None => None,
    };
    Ok(Some(CachedSet {
        outputs: SetOutputs {
            logits,
            features,
            external: Vec::new(),
            embeddings,
        },
        labels,
    }))
}

/// Cached per-sample scores, or `None` when missing or stale.
pub fn read_scores(path: &Path, key: &str) -> Result<Option<Vec<f64>>, CacheError> {
    let Some(bytes) = open(path, key)? else {
        return Ok(None);
    };
    let st = SafeTensors::deserialize(&bytes).expect("checked by open");
    let (_, data) = tensor(&st, path, "score", Dtype::F64)?.ok_or_else(|| CacheError::Format {
        path: path.to_path_buf(),
        message: "no `score`".into(),
    })?;
    Ok(Some(
        data.chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_staleness_and_missing_features() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outputs/id_test.safetensors");
        let set = SetOutputs {
            logits: Logits::new(vec![1.0, -2.5, 0.25, 3.0], 2),
            features: vec![0.5, 1.5, 2.5, -0.125, 7.0, 8.0],
            external: Vec::new(),
            embeddings: vec![0.6, 0.8, 1.0, 0.0],
        };
        write_set(&path, "k1", &set, Some(&[1, 0])).unwrap();
        let back = read_set(&path, "k1", true).unwrap().expect("cached");
        assert_eq!(back.outputs.logits.data, set.logits.data);
        assert_eq!(back.outputs.logits.num_classes, 2);
        assert_eq!(back.outputs.features, set.features);
        assert_eq!(back.outputs.embeddings, set.embeddings);
        assert_eq!(back.labels, Some(vec![1, 0]));
        assert!(read_set(&path, "other", false).unwrap().is_none(), "stale");
        assert!(
            read_set(&dir.path().join("none.safetensors"), "k1", false)
                .unwrap()
                .is_none()
        );
        let logits_only = SetOutputs::from_logits(set.logits.clone());
        write_set(&path, "k2", &logits_only, None).unwrap();
        assert!(
            read_set(&path, "k2", true).unwrap().is_none(),
            "no features"
        );
        assert!(
            read_set(&path, "k2", false)
                .unwrap()
                .unwrap()
                .labels
                .is_none()
        );
        let scores = dir.path().join("outputs/id_test.odin.safetensors");
        write_scores(&scores, "k", &[0.1, 0.2]).unwrap();
        assert_eq!(read_scores(&scores, "k").unwrap(), Some(vec![0.1, 0.2]));
        std::fs::write(&path, b"garbage").unwrap();
        let e = read_set(&path, "k2", false).unwrap_err().to_string();
        assert!(
            e.contains("id_test.safetensors") && e.contains("delete it"),
            "{e}"
        );
    }
}
