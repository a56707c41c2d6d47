//! PALM's test-time score (METHODS §5.5; PALM `util/evaluations/mahalanobis.py`, the SSD+
//! score): one class-agnostic Gaussian on the penultimate (backbone) feature, not on the
//! projection.
//!
//! `h^ = h / (||h|| + 1e-10)`; `h~ = (h^ - mu) / (sigma + 1e-10)` with mu, sigma the per-dimension
//! mean and (population) std of the normalised training features; `S = cov(h~_train)` (biased),
//! `S+ = pinv(S)`; `conf = -(h~ - c)^T S+ (h~ - c)`. The official code takes `c = mu` — the mean
//! of the *normalised* features subtracted a second time from already standardised ones — and
//! that quirk is the default (`double_centering = true`) so PALM's numbers reproduce; `false`
//! centres at the mean of the standardised training features instead. Upstream computes in
//! float32; we compute in float64.

use crate::linalg::{centre, column_means, matmul_nt, pinv, scatter};

#[derive(Debug, Clone)]
pub struct PalmMahalanobis {
    mean: Vec<f64>,
    std: Vec<f64>,
    centre: Vec<f64>,
    pinv: Vec<f64>,
    dim: usize,
}

fn normalize(features: &[f64], dim: usize) -> Vec<f64> {
    features
        .chunks_exact(dim)
        .flat_map(|r| {
            let norm = r.iter().map(|v| v * v).sum::<f64>().sqrt() + 1e-10;
            r.iter().map(move |v| v / norm)
        })
        .collect()
}

impl PalmMahalanobis {
    pub fn fit(train_features: &[f64], dim: usize, double_centering: bool) -> Self {
        let n = train_features.len() / dim;
        let h = normalize(train_features, dim);
        let mean = column_means(&h, dim);
        let mut std = vec![0.0; dim];
        for r in h.chunks_exact(dim) {
            for ((s, v), m) in std.iter_mut().zip(r).zip(&mean) {
                *s += (v - m) * (v - m);
            }
        }
        std.iter_mut().for_each(|s| *s = (*s / n as f64).sqrt());
        let mut fitted = Self {
            centre: Vec::new(),
            pinv: Vec::new(),
            mean,
            std,
            dim,
        };
        let t = fitted.standardize(train_features);
        // np.cov(x.T, bias=True): centred at the standardised features' own mean, divided by N.
        let tm = column_means(&t, dim);
        let cov = scatter(&centre(&t, &tm), dim);
        fitted.pinv = pinv(&cov, dim, dim);
        fitted.centre = if double_centering {
            fitted.mean.clone()
        } else {
            tm
        };
        fitted
    }

    fn standardize(&self, features: &[f64]) -> Vec<f64> {
        normalize(features, self.dim)
            .chunks_exact(self.dim)
            .flat_map(|r| {
                r.iter()
                    .zip(&self.mean)
                    .zip(&self.std)
                    .map(|((v, m), s)| (v - m) / (s + 1e-10))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// `-(h~ - c)^T S+ (h~ - c)` of every row.
    pub fn scores(&self, features: &[f64]) -> Vec<f64> {
        let d = self.dim;
        let z: Vec<f64> = self
            .standardize(features)
            .chunks_exact(d)
            .flat_map(|r| {
                r.iter()
                    .zip(&self.centre)
                    .map(|(v, c)| v - c)
                    .collect::<Vec<_>>()
            })
            .collect();
        let n = z.len() / d;
        // S+ is symmetric: z S+ = z @ S+^T.
        let zp = matmul_nt(&z, &self.pinv, n, d, d);
        zp.chunks_exact(d)
            .zip(z.chunks_exact(d))
            .map(|(a, b)| -a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the formula written out directly (a full inverse, one sample at a time) on data
    /// whose standardised covariance is invertible.
    #[test]
    fn matches_the_formula_and_the_quirk_moves_the_centre() {
        let d = 3;
        let train: Vec<f64> = (0..40)
            .flat_map(|i| {
                let t = i as f64;
                [
                    1.0 + (t * 0.7).sin(),
                    2.0 + (t * 1.3).cos(),
                    0.5 + (t * 0.37).sin() * (t * 0.11).cos(),
                ]
            })
            .collect();
        let test = [0.3, 1.9, 0.2, 2.0, -1.0, 0.7];
        for quirk in [true, false] {
            let m = PalmMahalanobis::fit(&train, d, quirk);
            let got = m.scores(&test);
            // Direct: normalise, standardise, covariance, inverse.
            let norm = |r: &[f64]| {
                let n = r.iter().map(|v| v * v).sum::<f64>().sqrt() + 1e-10;
                r.iter().map(|v| v / n).collect::<Vec<f64>>()
            };
            let h: Vec<Vec<f64>> = train.chunks(d).map(norm).collect();
            let mu: Vec<f64> = (0..d)
                .map(|j| h.iter().map(|r| r[j]).sum::<f64>() / 40.0)
                .collect();
            let sd: Vec<f64> = (0..d)
                .map(|j| (h.iter().map(|r| (r[j] - mu[j]).powi(2)).sum::<f64>() / 40.0).sqrt())
                .collect();
            let st = |r: &[f64]| -> Vec<f64> {
                let r = norm(r);
                (0..d).map(|j| (r[j] - mu[j]) / (sd[j] + 1e-10)).collect()
            };
            let ht: Vec<Vec<f64>> = train.chunks(d).map(st).collect();
            let tm: Vec<f64> = (0..d)
                .map(|j| ht.iter().map(|r| r[j]).sum::<f64>() / 40.0)
                .collect();
            let cov = nalgebra::DMatrix::from_fn(d, d, |a, b| {
                ht.iter()
                    .map(|r| (r[a] - tm[a]) * (r[b] - tm[b]))
                    .sum::<f64>()
                    / 40.0
            });
            let inv = cov.try_inverse().unwrap();
            let centre = if quirk { &mu } else { &tm };
            for (k, r) in test.chunks(d).enumerate() {
                let z = nalgebra::DVector::from_iterator(
                    d,
                    st(r).iter().zip(centre).map(|(v, c)| v - c),
                );
                let want = -(z.transpose() * &inv * &z)[(0, 0)];
                assert!(
                    (got[k] - want).abs() < 1e-9 * want.abs().max(1.0),
                    "{quirk}: {} vs {want}",
                    got[k]
                );
            }
        }
        let a = PalmMahalanobis::fit(&train, d, true).scores(&test);
        let b = PalmMahalanobis::fit(&train, d, false).scores(&test);
        assert!(
            (a[0] - b[0]).abs() > 1e-3,
            "the quirk changes the score: {a:?} {b:?}"
        );
    }
}
