//! A MATLAB level-5 MAT-file reader for numeric arrays (what SVHN's `*_32x32.mat` hold).
//!
//! Layout (MathWorks "MAT-File Format", level 5): a 128-byte header (116 bytes of text, 8-byte
//! subsystem offset, version 0x0100, endian indicator "IM" for little-endian files) followed by
//! tagged data elements. A tag is (type u32, byte count u32), or the "small element" form where
//! both fit in the first 4 bytes and the data in the next 4. Elements are padded to 8 bytes,
//! except `miCOMPRESSED` (a zlib stream holding one more element). A numeric `miMATRIX` holds the
//! sub-elements array flags, dimensions, name and the real part; the real part's stored type may
//! be narrower than the array class (scipy and MATLAB store a double array of small integers as
//! uint8), so every numeric storage type is accepted and widened on request.

use crate::error::DataError;
use flate2::read::ZlibDecoder;
use std::io::Read;
use std::path::Path;

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;

/// One numeric variable: MATLAB dimensions (column-major) and its raw stored values.
#[derive(Debug, Clone, PartialEq)]
pub struct MatArray {
    pub name: String,
    /// MATLAB array class (6 = double, 9 = uint8, ...).
    pub class: u8,
    pub dims: Vec<usize>,
    /// Stored element type (`miUINT8`, `miDOUBLE`, ...) and its little-endian bytes.
    pub stored_type: u32,
    pub bytes: Vec<u8>,
}

impl MatArray {
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as bytes, when the stored type is `miUINT8` (no copy of a large image array
    /// through a wider type).
    pub fn as_u8(&self) -> Option<&[u8]> {
        (self.stored_type == MI_UINT8).then_some(&self.bytes[..])
    }

    /// The values widened to f64, whatever their stored type.
    pub fn to_f64(&self) -> Vec<f64> {
        let b = &self.bytes;
        match self.stored_type {
            MI_INT8 => b.iter().map(|&v| f64::from(v as i8)).collect(),
            MI_UINT8 => b.iter().map(|&v| f64::from(v)).collect(),
            MI_INT16 => b
                .chunks_exact(2)
                .map(|c| f64::from(i16::from_le_bytes([c[0], c[1]])))
                .collect(),
            MI_UINT16 => b
                .chunks_exact(2)
                .map(|c| f64::from(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            MI_INT32 => b
                .chunks_exact(4)
                .map(|c| f64::from(i32::from_le_bytes(c.try_into().unwrap())))
                .collect(),
            MI_UINT32 => b
                .chunks_exact(4)
                .map(|c| f64::from(u32::from_le_bytes(c.try_into().unwrap())))
                .collect(),
            MI_SINGLE => b
                .chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
                .collect(),
            MI_DOUBLE => b
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            MI_INT64 => b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            MI_UINT64 => b
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            _ => unreachable!("checked when the element was read"),
        }
    }
}

fn type_size(t: u32) -> Option<usize> {
    Some(match t {
        MI_INT8 | MI_UINT8 => 1,
        MI_INT16 | MI_UINT16 => 2,
        MI_INT32 | MI_UINT32 | MI_SINGLE => 4,
        MI_DOUBLE | MI_INT64 | MI_UINT64 => 8,
        _ => return None,
    })
}

fn type_name(t: u32) -> String {
    match t {
        MI_INT8 => "miINT8".into(),
        MI_UINT8 => "miUINT8".into(),
        MI_INT16 => "miINT16".into(),
        MI_UINT16 => "miUINT16".into(),
        MI_INT32 => "miINT32".into(),
        MI_UINT32 => "miUINT32".into(),
        MI_SINGLE => "miSINGLE".into(),
        MI_DOUBLE => "miDOUBLE".into(),
        MI_INT64 => "miINT64".into(),
        MI_UINT64 => "miUINT64".into(),
        MI_MATRIX => "miMATRIX".into(),
        MI_COMPRESSED => "miCOMPRESSED".into(),
        other => format!("type {other}"),
    }
}

/// A cursor over one buffer. `base` is the file offset of `buf[0]` for messages; inside a
/// decompressed element, offsets are given as "offset N inside the compressed element at M".
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
    /// How to name a position: the file offset, or the enclosing compressed element.
    context: Option<usize>,
}

impl<'a> Cursor<'a> {
    fn at(&self, pos: usize) -> String {
        match self.context {
            None => format!("byte offset {pos}"),
            Some(c) => {
                format!("byte {pos} of the decompressed miCOMPRESSED element at byte offset {c}")
            }
        }
    }

    fn err(&self, pos: usize, problem: impl Into<String>) -> DataError {
        DataError::corrupt(self.path, self.at(pos), problem)
    }

    fn u32_at(&self, pos: usize) -> Result<u32, DataError> {
        self.buf
            .get(pos..pos + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
            .ok_or_else(|| self.err(pos, "file ends inside an element tag"))
    }

    /// Read one element: (type, payload, offset of the tag). Advances past padding.
    fn element(&mut self) -> Result<(u32, &'a [u8], usize), DataError> {
        let start = self.pos;
        let first = self.u32_at(start)?;
        if first >> 16 != 0 {
            // Small data element: type in the low 16 bits, size in the high 16, data in 4 bytes.
            let (t, n) = (first & 0xffff, (first >> 16) as usize);
            if n > 4 {
                return Err(self.err(
                    start,
                    format!("small data element claims {n} bytes (at most 4)"),
                ));
            }
            let data = self
                .buf
                .get(start + 4..start + 4 + n)
                .ok_or_else(|| self.err(start, "file ends inside a small data element"))?;
            self.pos = start + 8;
            return Ok((t, data, start));
        }
        let n = self.u32_at(start + 4)? as usize;
        let data = self.buf.get(start + 8..start + 8 + n).ok_or_else(|| {
            self.err(
                start,
                format!(
                    "{} element of {n} bytes runs past the end ({} bytes left)",
                    type_name(first),
                    self.buf.len().saturating_sub(start + 8)
                ),
            )
        })?;
        self.pos = start + 8 + n;
        if first != MI_COMPRESSED {
            self.pos = self.pos.div_ceil(8) * 8;
        }
        Ok((first, data, start))
    }
}

/// Read every numeric variable of a level-5 MAT-file.
pub fn read(path: &Path, bytes: &[u8]) -> Result<Vec<MatArray>, DataError> {
    if bytes.len() < 128 {
        return Err(DataError::corrupt(
            path,
            format!("byte offset {}", bytes.len()),
            "file is shorter than the 128-byte MAT-file header",
        ));
    }
    if bytes.get(512..516) == Some(b"\x89HDF") {
        return Err(DataError::corrupt(
            path,
            "byte offset 0",
            "this is a MATLAB v7.3 (HDF5) file; expected a level-5 MAT-file (save with -v7 or scipy.io.savemat)",
        ));
    }
    match &bytes[126..128] {
        b"IM" => {}
        b"MI" => {
            return Err(DataError::corrupt(
                path,
                "byte offset 126",
                "big-endian MAT-file (endian indicator \"MI\"); only little-endian files are supported",
            ));
        }
        other => {
            return Err(DataError::corrupt(
                path,
                "byte offset 126",
                format!("endian indicator {other:?}, expected \"IM\": not a level-5 MAT-file"),
            ));
        }
    }
    let mut out = Vec::new();
    let mut cur = Cursor {
        buf: bytes,
        pos: 128,
        path,
        context: None,
    };
    while cur.pos < bytes.len() {
        let (t, data, at) = cur.element()?;
        match t {
            MI_COMPRESSED => {
                let mut inflated = Vec::new();
                ZlibDecoder::new(data)
                    .read_to_end(&mut inflated)
                    .map_err(|e| {
                        DataError::corrupt(
                            path,
                            format!("byte offset {at}"),
                            format!("miCOMPRESSED element does not inflate: {e}"),
                        )
                    })?;
                let mut inner = Cursor {
                    buf: &inflated,
                    pos: 0,
                    path,
                    context: Some(at),
                };
                let (it, idata, iat) = inner.element()?;
                if it == MI_MATRIX {
                    if let Some(a) = matrix(&inner, idata, iat + 8)? {
                        out.push(a);
                    }
                } else {
                    return Err(inner.err(
                        iat,
                        format!(
                            "compressed element holds {}, expected miMATRIX",
                            type_name(it)
                        ),
                    ));
                }
            }
            MI_MATRIX => {
                if let Some(a) = matrix(&cur, data, at + 8)? {
                    out.push(a);
                }
            }
            other => {
                return Err(cur.err(
                    at,
                    format!(
                        "top-level element {}, expected miMATRIX or miCOMPRESSED",
                        type_name(other)
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// Parse a matrix element's sub-elements; `None` for non-numeric classes (cells, structs, chars).
fn matrix(outer: &Cursor<'_>, data: &[u8], base: usize) -> Result<Option<MatArray>, DataError> {
    let mut c = Cursor {
        buf: data,
        pos: 0,
        path: outer.path,
        context: outer.context,
    };
    let at = |p: usize| base + p;
    let (t, flags, p) = c.element()?;
    if t != MI_UINT32 || flags.len() < 8 {
        return Err(outer.err(
            at(p),
            format!(
                "array flags sub-element is {} of {} bytes, expected miUINT32 of 8",
                type_name(t),
                flags.len()
            ),
        ));
    }
    let class = flags[0];
    let complex = flags[1] & 0x08 != 0;
    let (t, dims_raw, p) = c.element()?;
    if t != MI_INT32 || dims_raw.is_empty() || dims_raw.len() % 4 != 0 {
        return Err(outer.err(
            at(p),
            format!(
                "dimensions sub-element is {}, expected miINT32",
                type_name(t)
            ),
        ));
    }
    let dims: Vec<usize> = dims_raw
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes(b.try_into().unwrap()).max(0) as usize)
        .collect();
    let (t, name_raw, p) = c.element()?;
    if t != MI_INT8 {
        return Err(outer.err(
            at(p),
            format!(
                "array name sub-element is {}, expected miINT8",
                type_name(t)
            ),
        ));
    }
    let name = String::from_utf8_lossy(name_raw).into_owned();
    // Numeric classes: double 6, single 7, int8 8 .. uint64 15. Others (cell 1, struct 2,
    // object 3, char 4, sparse 5) are skipped: SVHN files only hold numeric arrays.
    if !(6..=15).contains(&class) {
        return Ok(None);
    }
    if complex {
        return Err(outer.err(
            at(p),
            format!("variable `{name}` is complex; expected a real numeric array"),
        ));
    }
    let (t, real, p) = c.element()?;
    let size = type_size(t).ok_or_else(|| {
        outer.err(
            at(p),
            format!(
                "variable `{name}`: real part stored as {}, expected a numeric type",
                type_name(t)
            ),
        )
    })?;
    let n: usize = dims.iter().product();
    if real.len() != n * size {
        return Err(outer.err(
            at(p),
            format!(
                "variable `{name}` with dimensions {dims:?} needs {} bytes of {}, found {}",
                n * size,
                type_name(t),
                real.len()
            ),
        ));
    }
    Ok(Some(MatArray {
        name,
        class,
        dims,
        stored_type: t,
        bytes: real.to_vec(),
    }))
}
