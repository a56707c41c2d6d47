//! The state an objective carries between steps (PALM's prototypes, NP-Mix's feature queues),
//! saved beside the model in every checkpoint so a resumed run continues from the same state.
//!
//! File layout (`objective.bin`): the line `oodforge-objective-state 1\n`, a JSON header line
//! `{"objective": ..., "arrays": [{"name", "shape"}, ...]}\n`, then each array's values as
//! little-endian f64 in header order (f64 holds f32 prototypes and f64 queues exactly).

use serde::{Deserialize, Serialize};

const MAGIC: &[u8] = b"oodforge-objective-state 1\n";

#[derive(Debug, Clone, PartialEq)]
pub struct StateArray {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

/// Named arrays of one objective.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectiveState {
    /// The objective's config name (`palm`, `npmix`).
    pub objective: String,
    pub arrays: Vec<StateArray>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    objective: String,
    arrays: Vec<ArrayHeader>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArrayHeader {
    name: String,
    shape: Vec<usize>,
}

/// A state file that cannot be read; the message names the byte offset.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StateError(pub String);

impl ObjectiveState {
    pub fn to_bytes(&self) -> Vec<u8> {
        let header = Header {
            objective: self.objective.clone(),
            arrays: self
                .arrays
                .iter()
                .map(|a| ArrayHeader {
                    name: a.name.clone(),
                    shape: a.shape.clone(),
                })
                .collect(),
        };
        let mut out = MAGIC.to_vec();
        out.extend(serde_json::to_vec(&header).expect("header serializes"));
        out.push(b'\n');
        for a in &self.arrays {
            for v in &a.data {
                out.extend(v.to_le_bytes());
            }
        }
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StateError> {
        let rest = bytes.strip_prefix(MAGIC).ok_or_else(|| {
            StateError("byte 0: not an oodforge objective state (bad magic line)".into())
        })?;
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| StateError(format!("byte {}: header line has no end", MAGIC.len())))?;
        let header: Header = serde_json::from_slice(&rest[..end])
            .map_err(|e| StateError(format!("byte {}: bad header: {e}", MAGIC.len())))?;
        let mut at = MAGIC.len() + end + 1;
        let mut arrays = Vec::new();
        for h in header.arrays {
            let n: usize = h.shape.iter().product();
            let need = n * 8;
            if bytes.len() < at + need {
                return Err(StateError(format!(
                    "byte {at}: array `{}` {:?} needs {need} bytes, the file has {} left",
                    h.name,
                    h.shape,
                    bytes.len() - at
                )));
            }
            let data = bytes[at..at + need]
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect();
            at += need;
            arrays.push(StateArray {
                name: h.name,
                shape: h.shape,
                data,
            });
        }
        if at != bytes.len() {
            return Err(StateError(format!(
                "byte {at}: {} bytes after the last array",
                bytes.len() - at
            )));
        }
        Ok(Self {
            objective: header.objective,
            arrays,
        })
    }

    /// The array called `name` with the expected shape.
    pub fn array(&self, name: &str, shape: &[usize]) -> Result<&StateArray, StateError> {
        let a = self.arrays.iter().find(|a| a.name == name).ok_or_else(|| {
            StateError(format!("no array `{name}` in the {} state", self.objective))
        })?;
        if a.shape != shape {
            return Err(StateError(format!(
                "array `{name}` has shape {:?}, this config needs {shape:?}",
                a.shape
            )));
        }
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_exactly_and_names_the_byte_of_a_truncation() {
        let s = ObjectiveState {
            objective: "palm".into(),
            arrays: vec![
                StateArray {
                    name: "prototypes".into(),
                    shape: vec![2, 3],
                    data: vec![0.1, -2.5, 1e-300, 3.0, f64::from(0.7f32), 6.0],
                },
                StateArray {
                    name: "counts".into(),
                    shape: vec![2],
                    data: vec![4.0, 1.0],
                },
            ],
        };
        let bytes = s.to_bytes();
        assert_eq!(ObjectiveState::from_bytes(&bytes).unwrap(), s);
        let e = ObjectiveState::from_bytes(&bytes[..bytes.len() - 3]).unwrap_err();
        assert!(e.0.contains("array `counts`"), "{e}");
        assert!(e.0.starts_with("byte "), "{e}");
        let e = ObjectiveState::from_bytes(b"hello").unwrap_err();
        assert!(e.0.contains("bad magic"), "{e}");
    }
}
