//! ViM, virtual-logit matching (Wang et al., CVPR 2022; OpenOOD `vim_postprocessor.py`):
//! `u = -pinv(W) b`; the principal space of the ID training features centred at `u`
//! (`EmpiricalCovariance(assume_centered=True)`); `NS` = the eigenvectors of every eigenvalue
//! but the `dim` largest; `alpha = mean(max_k z_k) / mean(||(f - u) NS||)` on the training set;
//! score `logsumexp(z) - alpha ||(f - u) NS||`.

use super::{Head, logsumexp};
use crate::linalg::{centre, matmul_nt, pinv, scatter, symmetric_eigen};

#[derive(Debug, Clone)]
pub struct Vim {
    pub u: Vec<f64>,
    /// `[dim - principal, dim]`: the residual space, one eigenvector per row.
    pub residual: Vec<f64>,
    pub alpha: f64,
    /// Eigenvalues of the centred covariance, descending.
    pub eigenvalues: Vec<f64>,
    pub dim: usize,
}

impl Vim {
    /// `principal` is OpenOOD's `dim` (256 by default); it must be below the feature dimension.
    pub fn fit(train_features: &[f64], head: &Head, principal: usize) -> Self {
        let d = head.dim;
        let n = train_features.len() / d;
        assert!(
            principal < d,
            "ViM's dim must be below the feature dimension"
        );
        // u = -pinv(W) @ b, pinv(W) is [D, K].
        let pw = pinv(&head.w, head.classes, d);
        let u: Vec<f64> = (0..d)
            .map(|i| {
                -(0..head.classes)
                    .map(|k| pw[i * head.classes + k] * head.b[k])
                    .sum::<f64>()
            })
            .collect();
        let cov = scatter(&centre(train_features, &u), d);
        let (eigenvalues, vectors) = symmetric_eigen(&cov, d);
        let residual: Vec<f64> = vectors[principal..].concat();
        let mut vim = Self {
            u,
            residual,
            alpha: 1.0,
            eigenvalues,
            dim: d,
        };
        let norms = vim.residual_norms(train_features);
        let max_logit: f64 = train_features
            .chunks_exact(d)
            .map(|f| head.apply(f).into_iter().fold(f64::NEG_INFINITY, f64::max))
            .sum::<f64>()
            / n as f64;
        vim.alpha = max_logit / (norms.iter().sum::<f64>() / n as f64);
        vim
    }

    /// `||(f - u) NS||` of every row.
    pub fn residual_norms(&self, features: &[f64]) -> Vec<f64> {
        let d = self.dim;
        let n = features.len() / d;
        let r = self.residual.len() / d;
        let proj = matmul_nt(&centre(features, &self.u), &self.residual, n, r, d);
        proj.chunks_exact(r.max(1))
            .map(|p| p.iter().map(|v| v * v).sum::<f64>().sqrt())
            .collect()
    }

    /// `logsumexp(z) - alpha ||(f - u) NS||` of every row.
    pub fn scores(&self, features: &[f64], head: &Head) -> Vec<f64> {
        self.residual_norms(features)
            .into_iter()
            .zip(features.chunks_exact(self.dim))
            .map(|(norm, f)| logsumexp(&head.apply(f)) - self.alpha * norm)
            .collect()
    }
}
