//! ODIN (Liang et al., ICLR 2018) as OpenOOD runs it (`postprocessors/odin_postprocessor.py`):
//! the only score that needs the network's gradient with respect to its input, so it lives
//! beside the network rather than in `oodforge_eval`.
//!
//! `labels = argmax z(x)`; `g = d CE_mean(z(x) / T, labels) / d x`; `s = +1 where g >= 0, else
//! -1`, divided per channel by the ID normalisation std; `x' = x - noise * s`; the score is
//! `max softmax(z(x') / T)` and the prediction its arg-max.

use burn::tensor::{Device, Int, Tensor, TensorData};
use oodforge_losses::ce::cross_entropy;

/// ODIN's settings (OpenOOD defaults: T = 1000, noise = 0.0014) and the per-channel std of the
/// input normalisation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Odin {
    pub temperature: f64,
    pub noise: f64,
    pub std: [f64; 3],
}

/// What ODIN computes for one batch.
#[derive(Debug, Clone, PartialEq)]
pub struct OdinBatch {
    pub conf: Vec<f64>,
    pub pred: Vec<usize>,
    /// `d loss / d x` before the sign, `[n, c, h, w]` row-major.
    pub input_grad: Vec<f64>,
}

impl Odin {
    /// Score one batch of normalised images `[n, c, h, w]` (host data). `forward` runs the
    /// network in inference mode on `device`, which must be an autodiff device: the gradient
    /// flows to the input only.
    pub fn batch(
        &self,
        forward: impl Fn(Tensor<4>) -> Tensor<2>,
        images: &[f64],
        shape: [usize; 4],
        device: &Device,
    ) -> OdinBatch {
        let [n, c, h, w] = shape;
        let x =
            Tensor::<4>::from_data(TensorData::new(images.to_vec(), shape), device).require_grad();
        let logits = forward(x.clone());
        let labels: Tensor<1, Int> = logits.clone().detach().argmax(1).reshape([n]);
        // `criterion(output / T, labels)` with the mean reduction; a multiply by 1/T keeps the
        // float64 gradient exact (burn's autodiff `div_scalar` takes the reciprocal in float32).
        let loss = cross_entropy(logits.mul_scalar(1.0 / self.temperature), labels);
        let grads = loss.backward();
        let input_grad: Vec<f64> = x
            .grad(&grads)
            .expect("the input requires a gradient")
            .into_data()
            .convert::<f64>()
            .try_to_vec::<f64>()
            .expect("float64 data");
        // `torch.ge(grad, 0)` -> +-1, divided by the channel's std; `x - noise * s`.
        let plane = h * w;
        let perturbed: Vec<f64> = images
            .iter()
            .zip(&input_grad)
            .enumerate()
            .map(|(i, (x, g))| {
                let s = if *g >= 0.0 { 1.0 } else { -1.0 };
                x - self.noise * (s / self.std[(i / plane) % c])
            })
            .collect();
        let x2 = Tensor::<4>::from_data(TensorData::new(perturbed, shape), device);
        let z = forward(x2).detach().mul_scalar(1.0 / self.temperature);
        let rows: Vec<f64> = z
            .into_data()
            .convert::<f64>()
            .try_to_vec::<f64>()
            .expect("float64 data");
        let classes = rows.len() / n;
        let (mut conf, mut pred) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for row in rows.chunks_exact(classes) {
            let p = oodforge_eval::postprocess::softmax(row);
            let best = oodforge_eval::postprocess::argmax(&p);
            conf.push(p[best]);
            pred.push(best);
        }
        OdinBatch {
            conf,
            pred,
            input_grad,
        }
    }
}
