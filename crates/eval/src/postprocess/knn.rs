//! KNN (Sun et al., ICML 2022; OpenOOD `knn_postprocessor.py`): the negative **squared** L2
//! distance from a normalised feature to its K-th nearest normalised ID training feature.
//!
//! Upstream normalises with `x / ||x|| + 1e-10` (the epsilon is added to every element after
//! the division) and searches a faiss `IndexFlatL2`, which works in float32 and, for batches,
//! computes `||q||^2 + ||b||^2 - 2 q.b` with a matrix product. We do the same: float32 distances
//! from one `gemm` per block of queries, the K-th smallest by selection.

use crate::linalg::matmul_nt;

/// Queries per block: bounds the distance block to `QUERY_BLOCK x bank` floats.
const QUERY_BLOCK: usize = 256;

/// `x / ||x||_2 + 1e-10`, row by row, computed in float64 and stored as float32 (faiss's type).
pub fn normalize(features: &[f64], dim: usize) -> Vec<f32> {
    features
        .chunks_exact(dim)
        .flat_map(|row| {
            let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
            row.iter().map(move |v| (v / norm + 1e-10) as f32)
        })
        .collect()
}

/// The normalised ID training features.
#[derive(Debug, Clone)]
pub struct KnnBank {
    pub bank: Vec<f32>,
    pub dim: usize,
    norms: Vec<f32>,
}

impl KnnBank {
    pub fn fit(train_features: &[f64], dim: usize) -> Self {
        let bank = normalize(train_features, dim);
        let norms = squared_norms(&bank, dim);
        Self { bank, dim, norms }
    }

    pub fn len(&self) -> usize {
        self.norms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.norms.is_empty()
    }

    /// `-(squared distance to the k-th nearest bank vector)` of every query row, for each `k` of
    /// `ks` (one pass over the bank serves every K of a sweep). `k` must be in `1..=len()`.
    pub fn scores(&self, features: &[f64], ks: &[usize]) -> Vec<Vec<f64>> {
        let d = self.dim;
        let n_bank = self.len();
        assert!(
            ks.iter().all(|&k| (1..=n_bank).contains(&k)),
            "K must be in 1..={n_bank}"
        );
        let queries = normalize(features, d);
        let q_norms = squared_norms(&queries, d);
        let n = q_norms.len();
        let mut out = vec![Vec::with_capacity(n); ks.len()];
        for start in (0..n).step_by(QUERY_BLOCK) {
            let end = (start + QUERY_BLOCK).min(n);
            let dots = matmul_nt(
                &queries[start * d..end * d],
                &self.bank,
                end - start,
                n_bank,
                d,
            );
            // The K-th smallest distance of each row, rows split over the cores (the selection
            // costs as much as the product at CIFAR scale).
            let rows = end - start;
            let threads = std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(rows);
            let per = rows.div_ceil(threads);
            let kth: Vec<Vec<Vec<f64>>> = std::thread::scope(|scope| {
                let handles: Vec<_> = dots
                    .chunks(per * n_bank)
                    .enumerate()
                    .map(|(t, part)| {
                        let q = &q_norms[start + t * per..];
                        scope.spawn(move || {
                            part.chunks_exact(n_bank)
                                .zip(q)
                                .map(|(row, &qn)| self.kth_distances(row, qn, ks))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("KNN selection thread"))
                    .collect()
            });
            for per_k in kth.into_iter().flatten() {
                for (o, v) in out.iter_mut().zip(per_k) {
                    o.push(v);
                }
            }
        }
        out
    }

    /// `-(k-th smallest squared distance)` for each `k`, from one row of dot products.
    fn kth_distances(&self, dots: &[f32], q_norm: f32, ks: &[usize]) -> Vec<f64> {
        let mut dist: Vec<f32> = dots
            .iter()
            .zip(&self.norms)
            .map(|(dot, bn)| q_norm + bn - 2.0 * dot)
            .collect();
        ks.iter()
            .map(|&k| {
                let (_, kth, _) = dist.select_nth_unstable_by(k - 1, f32::total_cmp);
                -f64::from(*kth)
            })
            .collect()
    }
}

fn squared_norms(x: &[f32], dim: usize) -> Vec<f32> {
    x.chunks_exact(dim)
        .map(|r| r.iter().map(|v| v * v).sum())
        .collect()
}
