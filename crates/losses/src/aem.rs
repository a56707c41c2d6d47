//! AEM: attention entropy maximisation (Zhang et al., arXiv 2406.15303; METHODS §7),
//! `main.py::train_one_epoch`:
//! `div_loss = torch.sum(F.softmax(attn, dim=-1) * F.log_softmax(attn, dim=-1))` (divided by
//! `attn.shape[0]` for the multi-head aggregator), `loss = lamda * div_loss + bag_loss`.
//! Minimising the negative entropy spreads the attention over more instances.
//!
//! For a ViT (our adaptation) the attention is the last block's CLS query over all tokens,
//! `[batch, heads, 1 + patches]`; the negative entropy is averaged over images and heads, the
//! multi-head aggregator's per-head mean, so the weight does not depend on the batch size.

use crate::ce::cross_entropy;
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Int, Tensor};

/// `sum(softmax(a) log softmax(a)) / rows` for pre-softmax scores `[rows, n]` (softmax over the
/// last axis): ABMIL's single row gives the official plain sum; the 8-head aggregator's 8 rows
/// the official `/ attn.shape[0]`.
pub fn attention_neg_entropy(scores: Tensor<2>) -> Tensor<1> {
    let [rows, _] = scores.dims();
    (softmax(scores.clone(), 1) * log_softmax(scores, 1))
        .sum()
        .mul_scalar(1.0 / rows as f64)
}

/// The pieces of the AEM loss.
pub struct AemTerms {
    pub ce: Tensor<1>,
    /// The mean negative attention entropy (`div_loss`).
    pub neg_entropy: Tensor<1>,
    /// `ce + weight * neg_entropy`.
    pub total: Tensor<1>,
}

/// The AEM loss of the logits and the pre-softmax attention scores `[rows, n]`.
pub fn aem_loss(
    logits: Tensor<2>,
    labels: Tensor<1, Int>,
    scores: Tensor<2>,
    weight: f64,
) -> AemTerms {
    let ce = cross_entropy(logits, labels);
    let neg_entropy = attention_neg_entropy(scores);
    AemTerms {
        total: ce.clone() + neg_entropy.clone().mul_scalar(weight),
        ce,
        neg_entropy,
    }
}
