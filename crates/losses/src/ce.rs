//! Cross-entropy on ID samples, and the tensor helpers the other objectives share.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};

/// Mean cross-entropy of `logits` `[n, k]` against class indices `labels` `[n]`:
/// `F.cross_entropy(logits, labels)` with mean reduction, `-mean(log_softmax(logits)[i, y_i])`.
pub fn cross_entropy(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    let logp = log_softmax(logits, 1); // [n, k]
    let picked = logp.gather(1, labels.unsqueeze_dim(1)); // [n, 1]
    picked.mean().neg()
}

/// `torch.logsumexp(x, dim=1)` `[n]`, stabilised by the (detached) row maximum; its gradient is
/// the softmax, as PyTorch's.
pub fn logsumexp(x: Tensor<2>) -> Tensor<1> {
    let [n, _] = x.dims();
    let m = x.clone().max_dim(1).detach(); // [n, 1]
    ((x - m.clone()).exp().sum_dim(1).log() + m).reshape([n])
}

/// The energy `E(x) = -logsumexp(z)` (T = 1) of each row `[n]`; lower is more ID.
pub fn energy(logits: Tensor<2>) -> Tensor<1> {
    logsumexp(logits).neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn matches_hand_computed_values() {
        let device = Device::flex();
        let logits = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 0.5, 0.0, 0.0, 3.0], [2, 3]),
            &device,
        );
        let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![1i64, 2], [2]), &device);
        let got: f32 = cross_entropy(logits.clone(), labels).into_scalar::<f32>();
        // -log softmax: row 0 class 1, row 1 class 2.
        let lse0 = (1f64.exp() + 2f64.exp() + 0.5f64.exp()).ln();
        let lse1 = (1.0 + 1.0 + 3f64.exp()).ln();
        let want = ((lse0 - 2.0) + (lse1 - 3.0)) / 2.0;
        assert!((f64::from(got) - want).abs() < 1e-6, "{got} vs {want}");
        let lse = logsumexp(logits).into_data().try_to_vec::<f32>().unwrap();
        assert!((f64::from(lse[0]) - lse0).abs() < 1e-6);
        assert!((f64::from(lse[1]) - lse1).abs() < 1e-6);
    }
}
