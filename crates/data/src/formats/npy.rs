//! NumPy `.npy` image arrays, N x H x W x C uint8 (the 300K Random Images outlier set; METHODS
//! §9.8), read memory-mapped: the 900 MB payload is paged in by the OS as images are touched and
//! is never copied whole into RAM.
//!
//! Format (numpy `lib/format.py`): magic `\x93NUMPY`, major/minor version, header length (u16 in
//! v1, u32 in v2/v3), then a Python dict literal `{'descr': '|u1', 'fortran_order': False,
//! 'shape': (N, H, W, C), }` padded with spaces to a multiple of 64 bytes, then the data.

use crate::error::DataError;
use crate::source::{ImageSource, Rgb};
use memmap2::Mmap;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

pub const HINT: &str = "download 300K_random_images.npy from https://people.eecs.berkeley.edu/~hendrycks/300K_random_images.npy (scripts/download_outliers.sh)";

/// A memory-mapped uint8 image array.
#[derive(Debug)]
pub struct NpyImages {
    name: String,
    path: PathBuf,
    map: Mmap,
    offset: usize,
    n: usize,
    h: usize,
    w: usize,
    c: usize,
}

/// The parsed header: data offset and shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub data_offset: usize,
    pub descr: String,
    pub fortran_order: bool,
    pub shape: Vec<usize>,
}

/// Parse an `.npy` header from the first bytes of a file.
pub fn parse_header(path: &Path, b: &[u8]) -> Result<Header, DataError> {
    let bad = |at: usize, p: String| DataError::corrupt(path, format!("byte offset {at}"), p);
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err(bad(
            0,
            "missing the magic string \\x93NUMPY: not a .npy file".into(),
        ));
    }
    let (major, minor) = (b[6], b[7]);
    let (len, start) = match major {
        1 => (usize::from(u16::from_le_bytes([b[8], b[9]])), 10),
        2 | 3 => {
            let l = b
                .get(8..12)
                .ok_or_else(|| bad(8, "file ends inside the header length".into()))?;
            (u32::from_le_bytes(l.try_into().unwrap()) as usize, 12)
        }
        _ => {
            return Err(bad(
                6,
                format!("format version {major}.{minor}, expected 1.0, 2.0 or 3.0"),
            ));
        }
    };
    let text = b.get(start..start + len).ok_or_else(|| {
        bad(
            start,
            format!(
                "header of {len} bytes runs past the end of the file ({} bytes)",
                b.len()
            ),
        )
    })?;
    let text = std::str::from_utf8(text).map_err(|_| bad(start, "header is not text".into()))?;
    let field = |key: &str| -> Result<&str, DataError> {
        let k = format!("'{key}':");
        let i = text
            .find(&k)
            .ok_or_else(|| bad(start, format!("header has no '{key}' key: {text:?}")))?;
        Ok(text[i + k.len()..].trim_start())
    };
    let descr = field("descr")?;
    let descr = descr
        .strip_prefix('\'')
        .and_then(|s| s.split('\'').next())
        .ok_or_else(|| bad(start, format!("cannot read 'descr' in {text:?}")))?
        .to_owned();
    let fortran_order = field("fortran_order")?.starts_with("True");
    let shape_text = field("shape")?;
    let shape_text = shape_text
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad(start, format!("cannot read 'shape' in {text:?}")))?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| {
            bad(
                start,
                format!("shape ({shape_text}) is not a tuple of integers"),
            )
        })?;
    Ok(Header {
        data_offset: start + len,
        descr,
        fortran_order,
        shape,
    })
}

impl NpyImages {
    pub fn open(path: &Path, name: &str) -> Result<Self, DataError> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DataError::missing(
                    path,
                    ".npy image array",
                    "300K_random_images.npy   (uint8, shape (300000, 32, 32, 3), 921,600,128 bytes)",
                    HINT,
                ));
            }
            Err(e) => return Err(DataError::io(path, e)),
        };
        // SAFETY: the map is read-only; a file truncated underneath us by another process would
        // fault, which is the documented risk of memory-mapping and acceptable for dataset files.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| DataError::io(path, e))?;
        let head = parse_header(path, &map)?;
        let bad = |p: String| DataError::corrupt(path, "header", p);
        if head.descr != "|u1" && head.descr != "<u1" && head.descr != "u1" {
            return Err(bad(format!(
                "dtype '{}', expected '|u1' (uint8 images)",
                head.descr
            )));
        }
        if head.fortran_order {
            return Err(bad(
                "fortran_order True, expected C order (N, H, W, C)".into()
            ));
        }
        let (n, h, w, c) = match head.shape[..] {
            [n, h, w, c] if c == 3 || c == 1 => (n, h, w, c),
            [n, h, w] => (n, h, w, 1),
            _ => {
                return Err(bad(format!(
                    "shape {:?}, expected (N, H, W, 3) uint8 images",
                    head.shape
                )));
            }
        };
        let need = n * h * w * c;
        let have = map.len() - head.data_offset.min(map.len());
        if have != need {
            return Err(DataError::corrupt(
                path,
                format!("byte offset {}", head.data_offset + have.min(need)),
                format!(
                    "shape {:?} needs {need} data bytes after the {}-byte header, the file has {have}",
                    head.shape, head.data_offset
                ),
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            path: path.to_owned(),
            map,
            offset: head.data_offset,
            n,
            h,
            w,
            c,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn shape(&self) -> (usize, usize, usize, usize) {
        (self.n, self.h, self.w, self.c)
    }
}

impl ImageSource for NpyImages {
    fn name(&self) -> &str {
        &self.name
    }
    fn len(&self) -> usize {
        self.n
    }
    fn label(&self, _index: usize) -> usize {
        0
    }
    fn load(&self, index: usize) -> Result<Rgb, DataError> {
        let size = self.h * self.w * self.c;
        let start = self.offset + index * size;
        let px = &self.map[start..start + size];
        let data = if self.c == 3 {
            px.to_vec()
        } else {
            px.iter().flat_map(|&g| [g, g, g]).collect()
        };
        Ok(Rgb::new(self.h, self.w, data))
    }
    /// Header, size and 64 evenly spaced images: hashing all 900 MB would cost seconds at
    /// every start.
    fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(&self.map[..self.offset]);
        h.update((self.map.len() as u64).to_le_bytes());
        let size = self.h * self.w * self.c;
        let step = (self.n / 64).max(1);
        for i in (0..self.n).step_by(step) {
            let s = self.offset + i * size;
            h.update(&self.map[s..s + size]);
        }
        oodforge_core::config::hex(&h.finalize())
    }
}
