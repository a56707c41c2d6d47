//! Mahalanobis (Lee et al., NeurIPS 2018) as OpenOOD's single-layer, no-perturbation `mds`
//! (`mds_postprocessor.py`): class means of the ID training features, one covariance of the
//! class-centred features (sklearn `EmpiricalCovariance`, which subtracts their mean once more),
//! its pseudo-inverse (sklearn's `precision_` = scipy `pinvh`), and the score
//! `max_c -(f - mu_c)^T P (f - mu_c)`.
//!
//! Upstream casts the centred features to float32 before fitting; we fit in float64 (the
//! fixture's float64 re-implementation of the same formulas), which only removes rounding.

use crate::linalg::{centre, column_means, matmul_nt, pinvh, scatter};

#[derive(Debug, Clone)]
pub struct Mahalanobis {
    /// `[classes, dim]`
    pub class_means: Vec<f64>,
    /// `[dim, dim]`
    pub precision: Vec<f64>,
    pub dim: usize,
}

impl Mahalanobis {
    /// `features [n, dim]` with `labels` in `0..num_classes`; every class needs a sample.
    pub fn fit(features: &[f64], labels: &[usize], num_classes: usize, dim: usize) -> Self {
        let mut sums = vec![0.0; num_classes * dim];
        let mut counts = vec![0usize; num_classes];
        for (row, &y) in features.chunks_exact(dim).zip(labels) {
            counts[y] += 1;
            for (s, v) in sums[y * dim..(y + 1) * dim].iter_mut().zip(row) {
                *s += v;
            }
        }
        let class_means: Vec<f64> = sums
            .chunks_exact(dim)
            .zip(&counts)
            .flat_map(|(s, &c)| s.iter().map(move |v| v / c as f64))
            .collect();
        let centred: Vec<f64> = features
            .chunks_exact(dim)
            .zip(labels)
            .flat_map(|(row, &y)| {
                let mu = &class_means[y * dim..(y + 1) * dim];
                row.iter().zip(mu).map(|(v, m)| v - m)
            })
            .collect();
        // EmpiricalCovariance(assume_centered=False): subtract the mean again, divide by N.
        let cov = scatter(&centre(&centred, &column_means(&centred, dim)), dim);
        Self {
            class_means,
            precision: pinvh(&cov, dim),
            dim,
        }
    }

    /// `max_c -(f - mu_c)^T P (f - mu_c)` of every row, by the expansion
    /// `f^T P f - 2 f^T P mu_c + mu_c^T P mu_c` (three matrix products instead of one per class).
    pub fn scores(&self, features: &[f64]) -> Vec<f64> {
        let d = self.dim;
        let n = features.len() / d;
        let c = self.class_means.len() / d;
        // P is symmetric: X P = X @ P^T.
        let xp = matmul_nt(features, &self.precision, n, d, d);
        let mp = matmul_nt(&self.class_means, &self.precision, c, d, d);
        let cross = matmul_nt(&xp, &self.class_means, n, c, d);
        let mu_p_mu: Vec<f64> = mp
            .chunks_exact(d)
            .zip(self.class_means.chunks_exact(d))
            .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x * y).sum())
            .collect();
        (0..n)
            .map(|i| {
                let x = &features[i * d..(i + 1) * d];
                let xpx: f64 = xp[i * d..(i + 1) * d]
                    .iter()
                    .zip(x)
                    .map(|(a, b)| a * b)
                    .sum();
                (0..c)
                    .map(|k| -(xpx - 2.0 * cross[i * c + k] + mu_p_mu[k]))
                    .fold(f64::NEG_INFINITY, f64::max)
            })
            .collect()
    }
}
