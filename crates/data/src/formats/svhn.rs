//! SVHN cropped digits (`train_32x32.mat`, `test_32x32.mat`, `extra_32x32.mat`; METHODS §9.2):
//! `X` uint8 with MATLAB dimensions (32, 32, 3, N), column-major, so the byte of (row r,
//! column c, channel ch, image n) is at `r + 32 c + 1024 ch + 3072 n`; `y` (N, 1) holds 1..=10
//! where 10 means digit 0 (torchvision and the OE/energy loaders apply `y % 10`).

use crate::error::{DataError, read_file};
use crate::formats::mat;
use crate::images::ImageSet;
use std::path::Path;

pub const LAYOUT: &str =
    "svhn/\n  train_32x32.mat   (73,257 images)\n  test_32x32.mat    (26,032 images)";
pub const HINT: &str =
    "download http://ufldl.stanford.edu/housenumbers/test_32x32.mat (scripts/download_ood.sh)";

pub fn read(path: &Path, name: &str) -> Result<ImageSet, DataError> {
    let bytes = read_file(path, "SVHN MATLAB file", LAYOUT, HINT)?;
    let vars = mat::read(path, &bytes)?;
    let find = |n: &str| {
        vars.iter().find(|v| v.name == n).ok_or_else(|| {
            DataError::corrupt(
                path,
                format!("variable `{n}`"),
                format!(
                    "missing; expected variables `X` (32x32x3xN uint8) and `y` (Nx1), found {:?}",
                    vars.iter().map(|v| v.name.as_str()).collect::<Vec<_>>()
                ),
            )
        })
    };
    let x = find("X")?;
    let y = find("y")?;
    let n = match x.dims[..] {
        [32, 32, 3, n] => n,
        [32, 32, 3] => 1,
        _ => {
            return Err(DataError::corrupt(
                path,
                "variable `X`",
                format!("dimensions {:?}, expected [32, 32, 3, N]", x.dims),
            ));
        }
    };
    let xb = x.as_u8().ok_or_else(|| {
        DataError::corrupt(
            path,
            "variable `X`",
            "stored with a type other than uint8; expected uint8 pixels",
        )
    })?;
    let yv = y.to_f64();
    if yv.len() != n {
        return Err(DataError::corrupt(
            path,
            "variable `y`",
            format!("{} labels for {n} images", yv.len()),
        ));
    }
    let mut labels = Vec::with_capacity(n);
    for (i, &v) in yv.iter().enumerate() {
        if v.fract() != 0.0 || !(1.0..=10.0).contains(&v) {
            return Err(DataError::corrupt(
                path,
                format!("variable `y`, entry {i}"),
                format!("label {v}, expected an integer 1..=10"),
            ));
        }
        labels.push(v as usize % 10);
    }
    // Column-major (r, c, ch, n) -> CHW row-major per image.
    let mut images = vec![0u8; n * 3072];
    for (img, out) in images.chunks_exact_mut(3072).enumerate() {
        let src = &xb[img * 3072..(img + 1) * 3072];
        for ch in 0..3 {
            for r in 0..32 {
                for c in 0..32 {
                    out[ch * 1024 + r * 32 + c] = src[r + 32 * c + 1024 * ch];
                }
            }
        }
    }
    Ok(ImageSet::new(name, images, labels, 32, 32))
}
