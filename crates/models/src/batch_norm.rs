//! Batch normalisation in training mode with fused per-channel kernels on the flex (CPU)
//! backend, through burn's backend-extension mechanism.
//!
//! Why: burn's default `batch_norm_train` / `batch_norm_train_backward` (burn-backend
//! `ModuleOps`, which flex does not override) are built from generic tensor operations,
//! including two full `[N, C, ...] -> [C, N·...]` transposes per direction; on flex that made the
//! backward of a ResNet-18 stage-1 batch norm about 2.3x PyTorch's (BENCHMARKS.md). Here the
//! statistics are two passes over each channel and the backward one pass for the two sums and
//! one for the input gradient, with no transposed copies.
//!
//! The formulas are burn's (and PyTorch's `batch_norm` in training mode): batch mean, biased
//! batch variance, `y = (x - mean) / sqrt(var + eps) · gamma + beta`, and
//! `dx = gamma / sqrt(var + eps) · (dy - mean(dy) - x̂ · mean(dy · x̂))`; the per-channel sums
//! are accumulated in f64. The running statistics are updated as PyTorch does (unbiased
//! variance; see [`batch_norm`]). Other backends and f64 / f16 tensors train through burn's
//! `batch_norm_train`; frozen layers and inference keep `BatchNorm::forward`.

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, DispatchDevice, Flex, backend_extension};
use burn::nn::BatchNorm;
use burn::tensor::{DType, Tensor, TensorData};
use rayon::prelude::*;

thread_local! {
    static RUNNING_STATS_FROZEN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `f` with training-mode batch norm that normalises with the batch statistics but leaves
/// the running statistics alone. Data-parallel training runs the replicas of the devices other
/// than the main one under it: as in `torch.nn.DataParallel`, the model's running statistics
/// are those of the main device's chunk. (burn's `RunningState` is shared by every clone and
/// fork of a module, so the replicas would otherwise write the main model's.)
pub fn with_frozen_running_stats<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            RUNNING_STATS_FROZEN.set(self.0);
        }
    }
    let _reset = Reset(RUNNING_STATS_FROZEN.replace(true));
    f()
}

/// `bn.forward(x)` as PyTorch's `BatchNorm2d` computes it: in training mode with the fused
/// kernels on flex (burn's `batch_norm_train` elsewhere), and the running variance updated with
/// the *unbiased* batch variance.
///
/// Why not `bn.forward` alone: burn's `BatchNorm` feeds the biased batch variance into
/// `running_var`, while PyTorch's (`torch.nn.functional.batch_norm`, ATen
/// `batch_norm_cpu_update_stats_template`: `running_var = (1 - m) · running_var + m · var · n /
/// (n - 1)`) feeds the unbiased one, so the eval-mode statistics of a network trained here
/// would differ from the official code's by the factor n / (n - 1) per step (n = batch x H x
/// W, e.g. 1.0005 for ResNet's 4x4 stage at batch 128). The normalisation itself uses the
/// biased variance in both.
pub fn batch_norm(bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    let device = x.device();
    if !device.is_autodiff() || !bn.training.is_enabled() {
        // Inference, or a frozen layer: the running statistics, as burn does.
        return bn.forward(x);
    }
    let on_flex = match device.as_dispatch() {
        DispatchDevice::Autodiff(inner) => matches!(**inner, DispatchDevice::Flex(_)),
        _ => false,
    };
    let [batch, _, h, w] = x.dims();
    let (output, mean, variance) = if on_flex && x.dtype() == DType::F32 {
        let (output, mean, variance) =
            <burn::backend::Dispatch as BatchNormFused>::batch_norm_fused(
                x.into_dispatch(),
                bn.gamma.val().into_dispatch(),
                bn.beta.val().into_dispatch(),
                bn.epsilon,
            );
        (
            Tensor::<4>::from_dispatch(output),
            Tensor::<1>::from_dispatch(mean),
            Tensor::<1>::from_dispatch(variance),
        )
    } else {
        let r =
            burn::tensor::module::batch_norm_train(x, bn.gamma.val(), bn.beta.val(), bn.epsilon);
        (r.output, r.mean, r.variance)
    };
    if RUNNING_STATS_FROZEN.get() {
        return output;
    }
    // With one value per channel the unbiased variance is undefined (PyTorch refuses such a
    // batch); the biased one (0) is kept rather than writing NaN into the running statistics.
    let n = (batch * h * w) as f64;
    let unbiased = if n > 1.0 { n / (n - 1.0) } else { 1.0 };
    // burn-nn `BatchNorm::forward_train`, with the unbiased variance.
    let running_mean = bn.running_mean.value_sync().to_device(&device);
    let running_var = bn.running_var.value_sync().to_device(&device);
    let running_mean = running_mean
        .mul_scalar(1.0 - bn.momentum)
        .add(mean.detach().mul_scalar(bn.momentum));
    let running_var = running_var
        .mul_scalar(1.0 - bn.momentum)
        .add(variance.detach().mul_scalar(bn.momentum * unbiased));
    bn.running_mean.update(running_mean.detach());
    bn.running_var.update(running_var.detach());
    output
}

/// Training-mode batch norm of an NCHW tensor: the output, and the batch mean and biased
/// variance per channel.
#[backend_extension(Autodiff, Flex)]
pub trait BatchNormFused: Backend {
    fn batch_norm_fused(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

impl BatchNormFused for Flex {
    fn batch_norm_fused(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        forward(x, gamma, beta, epsilon)
    }
}

impl<C: CheckpointStrategy> BatchNormFused for Autodiff<Flex, C> {
    fn batch_norm_fused(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        match BatchNormFusedBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (xp, gp) = (x.primitive().clone(), gamma.primitive().clone());
                let (y, mean, var) =
                    forward(xp.clone(), gp.clone(), beta.into_primitive(), epsilon);
                let state = (xp, gp, mean.clone(), var.clone(), epsilon);
                (
                    prep.finish(state, y),
                    FloatTensor::<Self>::new(mean),
                    FloatTensor::<Self>::new(var),
                )
            }
            OpsKind::UnTracked(prep) => {
                let (y, mean, var) = forward(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    epsilon,
                );
                (
                    prep.finish(y),
                    FloatTensor::<Self>::new(mean),
                    FloatTensor::<Self>::new(var),
                )
            }
        }
    }
}

#[derive(Debug)]
struct BatchNormFusedBackward;

impl Backward<Flex, 3> for BatchNormFusedBackward {
    /// x, gamma, batch mean, batch variance, epsilon.
    type State = (
        FloatTensor<Flex>,
        FloatTensor<Flex>,
        FloatTensor<Flex>,
        FloatTensor<Flex>,
        f64,
    );

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (x, gamma, mean, var, epsilon) = ops.state;
        let device = x.device();
        let dims = x.shape().to_vec();
        let shape = Shape3::of(&dims);
        let [x, gamma, mean, var, dy] = [x, gamma, mean, var, dy].map(contiguous);
        let (dx, dgamma, dbeta) = backward_kernel(
            shape,
            floats(&x),
            floats(&gamma),
            floats(&mean),
            floats(&var),
            epsilon,
            floats(&dy),
        );
        let tensor =
            |v: Vec<f32>, s: Vec<usize>| Flex::float_from_data(TensorData::new(v, s), &device);
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, tensor(dx, dims));
        }
        if let Some(node) = node_gamma {
            grads.register::<Flex>(node.id, tensor(dgamma, vec![shape.c]));
        }
        if let Some(node) = node_beta {
            grads.register::<Flex>(node.id, tensor(dbeta, vec![shape.c]));
        }
    }
}

/// The tensor in row-major order; a copy only when its layout is not contiguous already.
fn contiguous(t: FloatTensor<Flex>) -> FloatTensor<Flex> {
    t.to_contiguous()
}

/// The values of a contiguous f32 tensor, borrowed.
fn floats(t: &FloatTensor<Flex>) -> &[f32] {
    t.as_slice::<f32>()
        .expect("the fused batch norm is taken for contiguous f32 tensors only")
}

fn forward(
    x: FloatTensor<Flex>,
    gamma: FloatTensor<Flex>,
    beta: FloatTensor<Flex>,
    epsilon: f64,
) -> (FloatTensor<Flex>, FloatTensor<Flex>, FloatTensor<Flex>) {
    let device = x.device();
    let dims = x.shape().to_vec();
    let shape = Shape3::of(&dims);
    let [x, gamma, beta] = [x, gamma, beta].map(contiguous);
    let (y, mean, var) = forward_kernel(shape, floats(&x), floats(&gamma), floats(&beta), epsilon);
    let tensor = |v: Vec<f32>, s: Vec<usize>| Flex::float_from_data(TensorData::new(v, s), &device);
    (
        tensor(y, dims),
        tensor(mean, vec![shape.c]),
        tensor(var, vec![shape.c]),
    )
}

/// An `[N, C, ...]` tensor seen as N images of C planes of `plane` values.
#[derive(Debug, Clone, Copy)]
pub struct Shape3 {
    pub n: usize,
    pub c: usize,
    pub plane: usize,
}

impl Shape3 {
    pub fn of(dims: &[usize]) -> Self {
        Self {
            n: dims[0],
            c: dims[1],
            plane: dims[2..].iter().product(),
        }
    }

    /// The planes of channel `c`, image by image.
    fn planes<'a>(&self, v: &'a [f32], c: usize) -> impl Iterator<Item = &'a [f32]> + 'a {
        let (stride, plane) = (self.c * self.plane, self.plane);
        (0..self.n).map(move |n| &v[n * stride + c * plane..][..plane])
    }

    fn count(&self) -> f64 {
        (self.n * self.plane) as f64
    }
}

/// Output, batch mean and biased batch variance.
pub fn forward_kernel(
    s: Shape3,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    epsilon: f64,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let stats: Vec<(f64, f64)> = (0..s.c)
        .into_par_iter()
        .map(|c| {
            let sum: f64 = s
                .planes(x, c)
                .flat_map(|p| p.iter())
                .map(|v| *v as f64)
                .sum();
            let mean = sum / s.count();
            let sq: f64 = s
                .planes(x, c)
                .flat_map(|p| p.iter())
                .map(|v| (*v as f64 - mean).powi(2))
                .sum();
            (mean, sq / s.count())
        })
        .collect();
    let mut y = vec![0.0f32; x.len()];
    y.par_chunks_mut(s.plane.max(1))
        .zip(x.par_chunks(s.plane.max(1)))
        .enumerate()
        .for_each(|(p, (out, inp))| {
            let c = p % s.c;
            let (mean, var) = stats[c];
            let scale = (gamma[c] as f64 / (var + epsilon).sqrt()) as f32;
            let (mean, beta) = (mean as f32, beta[c]);
            for (o, v) in out.iter_mut().zip(inp) {
                *o = (v - mean) * scale + beta;
            }
        });
    let mean = stats.iter().map(|(m, _)| *m as f32).collect();
    let var = stats.iter().map(|(_, v)| *v as f32).collect();
    (y, mean, var)
}

/// Gradients of the input, gamma and beta.
pub fn backward_kernel(
    s: Shape3,
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    var: &[f32],
    epsilon: f64,
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let inv_std: Vec<f64> = var
        .iter()
        .map(|v| 1.0 / (*v as f64 + epsilon).sqrt())
        .collect();
    // Per channel: Σ dy (beta's gradient) and Σ dy · x̂ (gamma's gradient).
    let sums: Vec<(f64, f64)> = (0..s.c)
        .into_par_iter()
        .map(|c| {
            let m = mean[c] as f64;
            s.planes(dy, c)
                .zip(s.planes(x, c))
                .flat_map(|(g, v)| g.iter().zip(v))
                .fold((0.0, 0.0), |(a, b), (g, v)| {
                    (a + *g as f64, b + *g as f64 * (*v as f64 - m))
                })
        })
        .collect();
    let dbeta: Vec<f32> = sums.iter().map(|(a, _)| *a as f32).collect();
    let dgamma: Vec<f32> = sums
        .iter()
        .zip(&inv_std)
        .map(|((_, b), is)| (*b * is) as f32)
        .collect();
    let mut dx = vec![0.0f32; x.len()];
    dx.par_chunks_mut(s.plane.max(1))
        .zip(
            x.par_chunks(s.plane.max(1))
                .zip(dy.par_chunks(s.plane.max(1))),
        )
        .enumerate()
        .for_each(|(p, (out, (xs, gs)))| {
            let c = p % s.c;
            let is = inv_std[c];
            let mean_dy = (sums[c].0 / s.count()) as f32;
            // x̂ · mean(dy · x̂) = (x - mean) · is² · Σ dy (x - mean) / count
            let k = (sums[c].1 * is * is / s.count()) as f32;
            let scale = (gamma[c] as f64 * is) as f32;
            let m = mean[c];
            for (o, (v, g)) in out.iter_mut().zip(xs.iter().zip(gs)) {
                *o = scale * (g - mean_dy - (v - m) * k);
            }
        });
    (dx, dgamma, dbeta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::BatchNormConfig;
    use burn::tensor::{Device, Distribution};

    fn vec(t: Tensor<1>) -> Vec<f32> {
        t.into_data().try_to_vec().unwrap()
    }

    /// `batch_norm` on a flex autodiff device against burn's `BatchNorm::forward` (output,
    /// gradients of the input, gamma and beta) and against PyTorch's running-statistics update
    /// computed here in f64, over two steps.
    #[test]
    fn fused_kernels_match_burns_batch_norm() {
        let device = Device::flex().autodiff();
        let ours = BatchNormConfig::new(5).init(&device);
        let burns = BatchNormConfig::new(5).init(&device);
        // Not the initial gamma = 1, beta = 0, so that both enter the gradients.
        let gamma = Tensor::<1>::random([5], Distribution::Uniform(0.5, 1.5), &device);
        let beta = Tensor::<1>::random([5], Distribution::Uniform(-1.0, 1.0), &device);
        let set = |bn: &BatchNorm| BatchNorm {
            gamma: burn::module::Param::from_tensor(gamma.clone().require_grad()),
            beta: burn::module::Param::from_tensor(beta.clone().require_grad()),
            ..bn.clone()
        };
        let (ours, burns) = (set(&ours), set(&burns));
        let (mut expected_mean, mut expected_var) = ([0.0f64; 5], [1.0f64; 5]);
        for step in 0..2 {
            // An offset mean, so that cancellation in the variance would show.
            let x = Tensor::<4>::random([3, 5, 4, 6], Distribution::Normal(3.0, 2.0), &device);
            let target = Tensor::<4>::random([3, 5, 4, 6], Distribution::Default, &device);
            let run = |f: &dyn Fn(Tensor<4>) -> Tensor<4>, bn: &BatchNorm| {
                let x = x.clone().require_grad();
                let y = f(x.clone());
                let grads = (y.clone() * target.clone()).sum().backward();
                vec![
                    y.into_data().try_to_vec::<f32>().unwrap(),
                    x.grad(&grads).unwrap().into_data().try_to_vec().unwrap(),
                    vec(bn.gamma.val().grad(&grads).unwrap()),
                    vec(bn.beta.val().grad(&grads).unwrap()),
                ]
            };
            let a = run(&|x| batch_norm(&ours, x), &ours);
            let b = run(&|x| burns.forward(x), &burns);
            for (what, (a, b)) in ["y", "dx", "dgamma", "dbeta"].iter().zip(a.iter().zip(&b)) {
                assert_eq!(a.len(), b.len());
                for (i, (p, q)) in a.iter().zip(b).enumerate() {
                    assert!(
                        (p - q).abs() <= 1e-4 * (1.0 + q.abs()),
                        "step {step} {what}[{i}]: {p} vs {q}"
                    );
                }
            }
            // PyTorch's running statistics, from the batch itself in f64: mean, and the
            // unbiased variance (n = 3 x 4 x 6 = 72 values per channel).
            let xs = x.clone().into_data().try_to_vec::<f32>().unwrap();
            for c in 0..5 {
                let values: Vec<f64> = (0..3)
                    .flat_map(|n| &xs[(n * 5 + c) * 24..][..24])
                    .map(|v| *v as f64)
                    .collect();
                let m = values.iter().sum::<f64>() / 72.0;
                let var = values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / 71.0;
                expected_mean[c] = 0.9 * expected_mean[c] + 0.1 * m;
                expected_var[c] = 0.9 * expected_var[c] + 0.1 * var;
            }
            for (what, got, want) in [
                (
                    "running mean",
                    vec(ours.running_mean.value_sync()),
                    &expected_mean,
                ),
                (
                    "running var",
                    vec(ours.running_var.value_sync()),
                    &expected_var,
                ),
            ] {
                for (c, (p, q)) in got.iter().zip(want.iter()).enumerate() {
                    assert!(
                        (*p as f64 - q).abs() <= 1e-5 * (1.0 + q.abs()),
                        "step {step} {what}[{c}]: {p} vs {q}"
                    );
                }
            }
            // burn's own layer feeds the biased variance: the two differ by 72 / 71 per step.
            let burns_var = vec(burns.running_var.value_sync());
            let ours_var = vec(ours.running_var.value_sync());
            assert!(
                burns_var.iter().zip(&ours_var).all(|(b, o)| o > b),
                "step {step}: the unbiased running variance exceeds the biased one"
            );
        }
    }
}
