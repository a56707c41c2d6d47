//! Outlier Exposure (Hendrycks, Mazeika, Dietterich, ICLR 2019; METHODS §2).
//!
//! `CIFAR/oe_tune.py` L172-174, on one forward pass over `cat([x_in, x_out])`:
//! `loss = F.cross_entropy(x[:n_in], y) + 0.5 * -(x[n_in:].mean(1) - torch.logsumexp(x[n_in:], 1)).mean()`.
//! The outlier term is the cross-entropy from the softmax to the uniform distribution,
//! `-(1/K) sum_k log p_k`. ID and outliers go through the network together because two passes
//! give BatchNorm two different batch statistics (OpenOOD #138).

use crate::ce::{cross_entropy, logsumexp};
use burn::tensor::{Int, Tensor};

/// The pieces of the OE loss.
pub struct OeTerms {
    /// CE on the ID batch.
    pub ce: Tensor<1>,
    /// Mean cross-entropy to uniform over the outliers (unweighted).
    pub uniform_ce: Tensor<1>,
    /// `ce + oe_weight * uniform_ce`.
    pub total: Tensor<1>,
}

/// Cross-entropy from softmax(`logits` `[n, k]`) to the uniform distribution, batch mean:
/// `mean_i [logsumexp(z_i) - mean_k z_ik]`.
pub fn uniform_cross_entropy(logits: Tensor<2>) -> Tensor<1> {
    let [n, _] = logits.dims();
    (logsumexp(logits.clone()) - logits.mean_dim(1).reshape([n])).mean()
}

/// The OE loss of the ID logits (with labels) and the outlier logits of the same forward pass.
pub fn oe_loss(
    logits_in: Tensor<2>,
    labels: Tensor<1, Int>,
    logits_out: Tensor<2>,
    oe_weight: f64,
) -> OeTerms {
    let ce = cross_entropy(logits_in, labels);
    let uniform_ce = uniform_cross_entropy(logits_out);
    OeTerms {
        total: ce.clone() + uniform_ce.clone().mul_scalar(oe_weight),
        ce,
        uniform_ce,
    }
}
