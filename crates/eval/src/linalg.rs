//! The dense linear algebra of the feature-space scores, on row-major `Vec`s: matrix products
//! through `gemm` (burn-flex's kernels, multi-threaded) and symmetric eigendecompositions /
//! pseudo-inverses through `nalgebra`, in float64 unless a score is float32 upstream (KNN).

use nalgebra::{DMatrix, SymmetricEigen};

/// `a [m, k] @ b[n, k]^T -> [m, n]`, row-major. The `gemm` call reads exactly these extents.
pub fn matmul_nt<T: Copy + Default + 'static + From<u8>>(
    a: &[T],
    b: &[T],
    m: usize,
    n: usize,
    k: usize,
) -> Vec<T> {
    assert_eq!(a.len(), m * k, "lhs is [m, k]");
    assert_eq!(b.len(), n * k, "rhs is [n, k]");
    let mut out = vec![T::default(); m * n];
    if m == 0 || n == 0 {
        return out;
    }
    if k == 0 {
        return out;
    }
    // SAFETY: `out` is m x n row-major (row stride n, column stride 1); `a` is m x k row-major;
    // `b^T` is k x n read from the n x k row-major `b` (row stride 1, column stride k). The
    // asserts above guarantee every index the kernel touches is inside its slice, and `out`
    // does not alias the inputs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            k as isize,
            1,
            T::from(0),
            T::from(1),
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
    }
    out
}

/// `a [m, k] @ b [k, n] -> [m, n]` in float64, row-major.
pub fn matmul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    matmul_nt(a, &transpose(b, k, n), m, n, k)
}

/// `[r, c] -> [c, r]`.
pub fn transpose<T: Copy>(a: &[T], r: usize, c: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(a.len());
    for j in 0..c {
        out.extend((0..r).map(|i| a[i * c + j]));
    }
    out
}

/// Per-column means of a `[n, d]` matrix.
pub fn column_means(x: &[f64], d: usize) -> Vec<f64> {
    let n = x.len() / d;
    let mut m = vec![0.0; d];
    for r in x.chunks_exact(d) {
        m.iter_mut().zip(r).for_each(|(m, v)| *m += v);
    }
    m.into_iter().map(|v| v / n as f64).collect()
}

/// Every row of a `[n, d]` matrix minus `c`.
pub fn centre(x: &[f64], c: &[f64]) -> Vec<f64> {
    x.chunks_exact(c.len())
        .flat_map(|r| r.iter().zip(c).map(|(v, c)| v - c))
        .collect()
}

/// `X^T X / n` of an already centred `[n, d]` matrix: the biased covariance
/// (`EmpiricalCovariance`, `np.cov(bias=True)`), one matrix product.
pub fn scatter(centred: &[f64], d: usize) -> Vec<f64> {
    let n = centred.len() / d;
    let ct = transpose(centred, n, d);
    matmul_nt(&ct, &ct, d, d, n)
        .into_iter()
        .map(|v| v / n as f64)
        .collect()
}

/// Eigenvalues and eigenvectors of a symmetric `[d, d]` matrix, in descending order of the
/// eigenvalue: `(values, vectors)` with `vectors[j]` the `j`-th unit eigenvector.
pub fn symmetric_eigen(a: &[f64], d: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    let m = DMatrix::from_row_slice(d, d, a);
    let e = SymmetricEigen::new(m);
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&i, &j| e.eigenvalues[j].total_cmp(&e.eigenvalues[i]));
    let values = order.iter().map(|&i| e.eigenvalues[i]).collect();
    let vectors = order
        .iter()
        .map(|&i| e.eigenvectors.column(i).iter().copied().collect())
        .collect();
    (values, vectors)
}

/// scipy `pinvh(a)` for a symmetric `[d, d]` matrix: eigenvalues with `|l| <= d * eps * max|l|`
/// are dropped (scipy's default cutoff), the rest inverted.
pub fn pinvh(a: &[f64], d: usize) -> Vec<f64> {
    let (values, vectors) = symmetric_eigen(a, d);
    let max = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let cutoff = d as f64 * f64::EPSILON * max;
    let mut out = vec![0.0; d * d];
    for (l, v) in values.iter().zip(&vectors) {
        if l.abs() <= cutoff {
            continue;
        }
        for i in 0..d {
            let vi = v[i] / l;
            for j in 0..d {
                out[i * d + j] += vi * v[j];
            }
        }
    }
    out
}

/// numpy `pinv(a)` of an `[r, c]` matrix (SVD; singular values `<= 1e-15 * max` dropped),
/// returned `[c, r]`.
pub fn pinv(a: &[f64], r: usize, c: usize) -> Vec<f64> {
    let m = DMatrix::from_row_slice(r, c, a);
    let svd = m.svd(true, true);
    let max = svd.singular_values.iter().fold(0.0f64, |m, v| m.max(*v));
    let p = svd
        .pseudo_inverse(1e-15 * max)
        .expect("both factors were computed");
    // nalgebra is column-major: read the c x r result row by row.
    (0..c)
        .flat_map(|i| (0..r).map(move |j| (i, j)))
        .map(|(i, j)| p[(i, j)])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_eigen_and_inverses() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // [2, 3]
        let b = [1.0, 0.0, -1.0, 2.0, 1.0, 0.5]; // [2, 3]
        assert_eq!(matmul_nt(&a, &b, 2, 2, 3), vec![-2.0, 5.5, -2.0, 16.0]);
        assert_eq!(
            matmul(&a, &transpose(&b, 2, 3), 2, 3, 2),
            vec![-2.0, 5.5, -2.0, 16.0]
        );
        let (v, e) = symmetric_eigen(&[2.0, 1.0, 1.0, 2.0], 2);
        assert!((v[0] - 3.0).abs() < 1e-14 && (v[1] - 1.0).abs() < 1e-14);
        assert!((e[0][0].abs() - 0.5f64.sqrt()).abs() < 1e-14);
        let inv = pinvh(&[2.0, 1.0, 1.0, 2.0], 2);
        for (x, y) in inv
            .iter()
            .zip([2.0 / 3.0, -1.0 / 3.0, -1.0 / 3.0, 2.0 / 3.0])
        {
            assert!((x - y).abs() < 1e-14, "{inv:?}");
        }
        // A rank-1 symmetric matrix: the zero eigenvalue is dropped.
        let inv = pinvh(&[1.0, 1.0, 1.0, 1.0], 2);
        assert!(inv.iter().all(|x| (x - 0.25).abs() < 1e-14), "{inv:?}");
        // pinv of a full-row-rank [1, 2]: a^T / |a|^2.
        let p = pinv(&[3.0, 4.0], 1, 2);
        assert!(
            (p[0] - 0.12).abs() < 1e-15 && (p[1] - 0.16).abs() < 1e-15,
            "{p:?}"
        );
    }
}
