//! Golden fixtures (`../shared/fixtures/golden`, or `$OODFORGE_GOLDEN_DIR`): the numbers the
//! official PyTorch/NumPy code produced on fixed inputs. Arrays are stored as
//! `{"shape", "dtype", "data"}` with non-finite floats as the strings "NaN", "Infinity",
//! "-Infinity" (see the fixtures' README). A fixture that cannot be read or parsed panics, which
//! fails the test: a golden test must never pass by finding nothing.

use serde_json::Value;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

/// Held by every test that draws random numbers on a device, for as long as it draws.
///
/// flex keeps one random number generator for the whole process (burn-flex's `SEED`), which
/// `train` and seeded tests reset, and cargo runs a binary's tests on parallel threads. A test
/// that seeds the device and expects the same draws again (two models from one seed, a run
/// resumed against a straight one) gets other draws whenever another test takes numbers from
/// that generator in between: CI saw a per-chunk batch norm test fail that way. Tests that only
/// draw hold it too, since their draws are what shift the seeded ones.
pub fn device_rng() -> MutexGuard<'static, ()> {
    static DEVICE_RNG: Mutex<()> = Mutex::new(());
    // A test that failed while holding it must not fail the others too.
    DEVICE_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

/// A run folder's `metrics.jsonl` without its wall-clock fields (`images_per_s`, `slides_per_s`,
/// `seconds`), so two runs' logs compare equal exactly when they trained the same.
pub fn metrics_lines(run: &std::path::Path) -> Vec<Value> {
    let path = run.join("metrics.jsonl");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().expect("a JSON object a line");
            for clock in ["images_per_s", "slides_per_s", "seconds"] {
                o.remove(clock);
            }
            v
        })
        .collect()
}

/// The golden fixture directory.
pub fn golden_dir() -> PathBuf {
    match std::env::var_os("OODFORGE_GOLDEN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/golden"),
    }
}

/// Every fixture file whose name ends with `suffix` (e.g. `_openood_metrics.json`), parsed.
/// Panics when there is none, so a moved fixture directory fails loudly.
pub fn golden_files(suffix: &str) -> Vec<(String, Value)> {
    let dir = golden_dir();
    let mut out = Vec::new();
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("golden fixture directory {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("readable directory entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(suffix) {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: not valid JSON: {e}", path.display()));
            out.push((name, value));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        !out.is_empty(),
        "no golden fixture matching *{suffix} in {}",
        dir.display()
    );
    out
}

/// A number, accepting the non-finite string spellings.
pub fn num(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().expect("finite JSON number"),
        Value::String(s) if s == "NaN" => f64::NAN,
        Value::String(s) if s == "Infinity" => f64::INFINITY,
        Value::String(s) if s == "-Infinity" => f64::NEG_INFINITY,
        other => panic!("expected a number, found {other}"),
    }
}

/// A stored array: (shape, flat row-major data as f64).
pub fn array(v: &Value) -> (Vec<usize>, Vec<f64>) {
    let shape = v["shape"]
        .as_array()
        .unwrap_or_else(|| panic!("array without shape: {v}"))
        .iter()
        .map(|d| d.as_u64().expect("integer dimension") as usize)
        .collect::<Vec<_>>();
    let data: Vec<f64> = v["data"]
        .as_array()
        .unwrap_or_else(|| panic!("array without data: {v}"))
        .iter()
        .map(num)
        .collect();
    assert_eq!(
        shape.iter().product::<usize>(),
        data.len(),
        "shape and data disagree"
    );
    (shape, data)
}

/// An object of named arrays (e.g. a fixture's PyTorch parameters) as `(name, shape, data)`.
pub fn named_arrays(v: &Value) -> Vec<(String, Vec<usize>, Vec<f64>)> {
    v.as_object()
        .unwrap_or_else(|| panic!("expected an object of arrays, found {v}"))
        .iter()
        .map(|(k, a)| {
            let (shape, data) = array(a);
            (k.clone(), shape, data)
        })
        .collect()
}

/// The largest element-wise `|a - b|` of two equally long slices (weights, logits).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// `|a - b| <= atol + rtol * |b|`, NaN equal to NaN, same-signed infinities equal.
pub fn close(a: f64, b: f64, rtol: f64, atol: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a.is_infinite() || b.is_infinite() {
        return a == b;
    }
    (a - b).abs() <= atol + rtol * b.abs()
}

/// Assert element-wise closeness with a message naming the case and the first bad index.
pub fn assert_close(what: &str, got: &[f64], want: &[f64], rtol: f64, atol: f64) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs expected {}",
        got.len(),
        want.len()
    );
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            close(*g, *w, rtol, atol),
            "{what}[{i}]: got {g:e}, expected {w:e} (rtol {rtol:e}, atol {atol:e})"
        );
    }
}

/// Write a safetensors file of `(name, shape, values)`, every tensor stored as `dtype` (`F32` or
/// `F64`), for weight-import tests.
pub fn write_safetensors(
    path: &std::path::Path,
    dtype: &str,
    tensors: &[(String, Vec<usize>, Vec<f64>)],
) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape, values) in tensors {
        let start = data.len();
        for &v in values {
            match dtype {
                "F32" => data.extend_from_slice(&(v as f32).to_le_bytes()),
                "F64" => data.extend_from_slice(&v.to_le_bytes()),
                other => panic!("write_safetensors: unsupported dtype {other}"),
            }
        }
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut json = serde_json::to_string(&Value::Object(header)).expect("header serializes");
    while !json.len().is_multiple_of(8) {
        json.push(' ');
    }
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(json.as_bytes());
    bytes.extend_from_slice(&data);
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}
