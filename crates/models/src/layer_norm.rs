//! Layer normalisation over the last axis whose training step on the flex (CPU) backend is one
//! multi-threaded pass each way, through burn's backend-extension mechanism.
//!
//! Why: burn's autodiff backend has no layer-norm op of its own, so under autodiff `LayerNorm`
//! runs burn-backend's default decomposition (`ModuleOps::layer_norm`: mean, subtract, square,
//! mean, add, sqrt, divide, scale, shift), each a tracked op with a fresh buffer, and flex runs
//! most of these broadcasting element-wise ops on one thread. ViT-Tiny has 25 of them per
//! forward pass (BENCHMARKS.md, "ViT: layer norm and GELU"). Here the forward pass is one pass
//! over each row and saves the input with one mean and one reciprocal standard deviation per
//! row; the backward is one pass over each row for the two row sums and the input gradient,
//! with the parameter gradients summed per task.
//!
//! The formulas are PyTorch's `layer_norm` (and burn's): `x̂ = (x - mean) / sqrt(var + eps)`
//! with the biased variance of the row, `y = x̂ · gamma + beta`, and
//! `dx = (g - mean(g) - x̂ · mean(g · x̂)) / sqrt(var + eps)` with `g = dy · gamma`,
//! `dgamma = Σ dy · x̂`, `dbeta = Σ dy` over all rows. Row statistics and the parameter gradients
//! are accumulated in f64. Other backends, f64 / f16 tensors and inference keep
//! `LayerNorm::forward`.

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::{FloatTensorOps, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use burn::nn::LayerNorm;
use burn::tensor::{DType, Tensor, TensorData};
use rayon::prelude::*;

use crate::floats;

use crate::batch_norm::plane_sum;

/// Rows per parallel task: 64 rows of ViT-Tiny's 192 values are 48 KiB of input.
const ROWS: usize = 64;

/// `ln.forward(x)` for a layer norm with bias and `epsilon` (burn's `LayerNorm` keeps its
/// epsilon private, so the caller passes the one it built the module with): the fused kernels on
/// flex autodiff devices for f32 (libtorch's on LibTorch autodiff, `libtorch.rs`), `ln.forward`
/// elsewhere.
pub fn layer_norm<const D: usize>(ln: &LayerNorm, epsilon: f64, x: Tensor<D>) -> Tensor<D> {
    let Some(beta) = ln.beta.as_ref() else {
        return ln.forward(x);
    };
    if !crate::on_fused_autodiff(&x.device()) || x.dtype() != DType::F32 {
        return ln.forward(x);
    }
    Tensor::<D>::from_dispatch(
        <burn::backend::Dispatch as LayerNormFused>::layer_norm_fused(
            x.into_dispatch(),
            ln.gamma.val().into_dispatch(),
            beta.val().into_dispatch(),
            epsilon,
        ),
    )
}

/// Layer norm over the last axis with scale and shift.
#[backend_extension(Autodiff, Flex, LibTorch: cfg(feature = "tch"))]
pub trait LayerNormFused: Backend {
    fn layer_norm_fused(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self>;
}

impl LayerNormFused for Flex {
    fn layer_norm_fused(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        // Without autodiff nothing needs saving: flex's own fused layer norm.
        Flex::layer_norm(x, gamma, Some(beta), epsilon)
    }
}

impl<C: CheckpointStrategy> LayerNormFused for Autodiff<Flex, C> {
    fn layer_norm_fused(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        match LayerNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (x, gamma) = (x.primitive().clone(), gamma.primitive().clone());
                let (y, stats) = forward(x.clone(), gamma.clone(), beta.into_primitive(), epsilon);
                prep.finish(Saved { x, gamma, stats }, y)
            }
            OpsKind::UnTracked(prep) => {
                let (x, gamma) = (x.into_primitive(), gamma.into_primitive());
                prep.finish(Flex::layer_norm(
                    x,
                    gamma,
                    Some(beta.into_primitive()),
                    epsilon,
                ))
            }
        }
    }
}

#[derive(Debug)]
struct LayerNormBackward;

/// What the backward pass needs: the input, the scale, and per row the mean and the reciprocal
/// standard deviation the forward pass used.
#[derive(Debug, Clone)]
struct Saved {
    x: FloatTensor<Flex>,
    gamma: FloatTensor<Flex>,
    stats: Vec<RowStats>,
}

impl Backward<Flex, 3> for LayerNormBackward {
    type State = Saved;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let Saved { x, gamma, stats } = ops.state;
        let device = x.device();
        let shape = x.shape();
        let [x, gamma, dy] = [x, gamma, dy].map(|t| t.to_contiguous());
        let (dx, dgamma, dbeta) = backward_kernel(floats(&x), floats(&gamma), &stats, floats(&dy));
        let d = dgamma.len();
        let tensor =
            |v: Vec<f32>, s: Vec<usize>| Flex::float_from_data(TensorData::new(v, s), &device);
        if let Some(node) = node_x {
            grads.register::<Flex>(node.id, tensor(dx, shape.to_vec()));
        }
        if let Some(node) = node_gamma {
            grads.register::<Flex>(node.id, tensor(dgamma, vec![d]));
        }
        if let Some(node) = node_beta {
            grads.register::<Flex>(node.id, tensor(dbeta, vec![d]));
        }
    }
}

fn forward(
    x: FloatTensor<Flex>,
    gamma: FloatTensor<Flex>,
    beta: FloatTensor<Flex>,
    epsilon: f64,
) -> (FloatTensor<Flex>, Vec<RowStats>) {
    let device = x.device();
    let shape = x.shape();
    let [x, gamma, beta] = [x, gamma, beta].map(|t| t.to_contiguous());
    let (y, stats) = forward_kernel(floats(&x), [floats(&gamma), floats(&beta)], epsilon);
    let y = Flex::float_from_data(TensorData::new(y, shape.to_vec()), &device);
    (y, stats)
}

/// A row's mean and `1 / sqrt(var + eps)`, as the forward pass applied them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowStats {
    pub mean: f32,
    pub rstd: f32,
}

/// Output and per-row statistics of rows of `gamma.len()` values.
pub fn forward_kernel(
    x: &[f32],
    [gamma, beta]: [&[f32]; 2],
    epsilon: f64,
) -> (Vec<f32>, Vec<RowStats>) {
    let d = gamma.len();
    let rows = x.len() / d.max(1);
    let mut y = vec![0.0f32; x.len()];
    let mut stats = vec![
        RowStats {
            mean: 0.0,
            rstd: 0.0
        };
        rows
    ];
    if d == 0 {
        return (y, stats);
    }
    y.par_chunks_mut(ROWS * d)
        .zip(x.par_chunks(ROWS * d))
        .zip(stats.par_chunks_mut(ROWS))
        .for_each(|((ys, xs), ss)| {
            for ((y, x), s) in ys.chunks_exact_mut(d).zip(xs.chunks_exact(d)).zip(ss) {
                let mean = plane_sum(x, |v| v as f64) / d as f64;
                let var = plane_sum(x, |v| (v as f64 - mean) * (v as f64 - mean)) / d as f64;
                *s = RowStats {
                    mean: mean as f32,
                    rstd: (1.0 / (var + epsilon).sqrt()) as f32,
                };
                for (((o, v), g), b) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
                    *o = (v - s.mean) * s.rstd * g + b;
                }
            }
        });
    (y, stats)
}

/// Input gradient and the gradients of gamma and beta.
pub fn backward_kernel(
    x: &[f32],
    gamma: &[f32],
    stats: &[RowStats],
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let d = gamma.len();
    let mut dx = vec![0.0f32; x.len()];
    if d == 0 {
        return (dx, vec![], vec![]);
    }
    // Per task, the partial sums of dgamma and dbeta; added up in task order below, so that the
    // result does not depend on how rayon schedules the tasks.
    let partials: Vec<(Vec<f64>, Vec<f64>)> = dx
        .par_chunks_mut(ROWS * d)
        .zip(x.par_chunks(ROWS * d))
        .zip(dy.par_chunks(ROWS * d))
        .zip(stats.par_chunks(ROWS))
        .map(|(((dxs, xs), dys), ss)| {
            let (mut dgamma, mut dbeta) = (vec![0.0f64; d], vec![0.0f64; d]);
            let mut xhat = vec![0.0f32; d];
            let mut g = vec![0.0f32; d];
            let rows = dxs.chunks_exact_mut(d).zip(xs.chunks_exact(d));
            for ((dx, x), (dy, s)) in rows.zip(dys.chunks_exact(d).zip(ss)) {
                for j in 0..d {
                    xhat[j] = (x[j] - s.mean) * s.rstd;
                    g[j] = dy[j] * gamma[j];
                    dgamma[j] += (dy[j] * xhat[j]) as f64;
                    dbeta[j] += dy[j] as f64;
                }
                let mean_g = (plane_sum(&g, |v| v as f64) / d as f64) as f32;
                let mean_gx = (dot(&g, &xhat) / d as f64) as f32;
                for j in 0..d {
                    dx[j] = (g[j] - mean_g - xhat[j] * mean_gx) * s.rstd;
                }
            }
            (dgamma, dbeta)
        })
        .collect();
    let (mut dgamma, mut dbeta) = (vec![0.0f64; d], vec![0.0f64; d]);
    for (pg, pb) in &partials {
        for j in 0..d {
            dgamma[j] += pg[j];
            dbeta[j] += pb[j];
        }
    }
    let narrow = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect();
    (dx, narrow(dgamma), narrow(dbeta))
}

/// `Σ a · b` accumulated in f64 over independent lanes (so that it vectorises).
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f64 {
    const LANES: usize = 8;
    let mut acc = [0.0f64; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f64 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| *x as f64 * *y as f64)
        .sum();
    for (x, y) in ac.zip(bc) {
        for j in 0..LANES {
            acc[j] += x[j] as f64 * y[j] as f64;
        }
    }
    acc.iter().sum::<f64>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::nn::LayerNormConfig;
    use burn::tensor::{Device, Distribution};
    use oodforge_testutil::max_abs_diff;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec().unwrap()
    }

    /// On a flex autodiff device, against burn's `LayerNorm::forward` (burn-backend's
    /// decomposition): output and the gradients of the input, gamma and beta, for a 3-d input of
    /// 70 rows (two tasks, the second partial), an odd row length (vector tails), non-trivial
    /// gamma and beta, and a non-contiguous input (a transposed view).
    #[test]
    fn fused_layer_norm_matches_burns_layer_norm_with_gradients() {
        let _rng = crate::tests::device_rng();
        let device = Device::flex().autodiff();
        let (rows_a, rows_b, d) = (7, 10, 13);
        let mut ln = LayerNormConfig::new(d).with_epsilon(1e-6).init(&device);
        let random = |mean: f64| Tensor::<1>::random([d], Distribution::Normal(mean, 0.5), &device);
        ln.gamma = Param::from_tensor(random(1.0));
        ln.beta = Some(Param::from_tensor(random(0.0)));
        // Rows with an offset and a scale, so that the mean and variance matter.
        let x = Tensor::<3>::random([rows_b, rows_a, d], Distribution::Normal(3.0, 2.0), &device)
            .swap_dims(0, 1);
        let target = Tensor::<3>::random([rows_a, rows_b, d], Distribution::Default, &device);
        let run = |f: &dyn Fn(Tensor<3>) -> Tensor<3>| {
            let x = x.clone().require_grad();
            let y = f(x.clone());
            let grads = (y.clone() * target.clone()).sum().backward();
            let gamma = ln.gamma.val().grad(&grads).unwrap();
            let beta = ln.beta.as_ref().unwrap().val().grad(&grads).unwrap();
            [
                values(y),
                values(x.grad(&grads).unwrap()),
                values(gamma),
                values(beta),
            ]
        };
        let got = run(&|x| layer_norm(&ln, 1e-6, x));
        let want = run(&|x| ln.forward(x));
        for (what, (g, w)) in ["output", "dx", "dgamma", "dbeta"]
            .iter()
            .zip(got.iter().zip(&want))
        {
            assert_eq!(g.len(), w.len(), "{what}");
            let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(scale > 0.1, "{what}: a real signal");
            let diff = max_abs_diff(g, w);
            assert!(
                diff <= 2e-5 * scale.max(1.0),
                "{what}: {diff} (scale {scale})"
            );
        }
    }

    /// The kernels on one row by hand: x = [1, 2, 3, 6], mean 3, variance 3.5.
    #[test]
    fn kernels_on_one_row_by_hand() {
        let x = [1.0f32, 2.0, 3.0, 6.0];
        let (gamma, beta) = ([1.0f32, 2.0, 1.0, 0.5], [0.0f32, 1.0, 0.0, -1.0]);
        let (y, stats) = forward_kernel(&x, [&gamma, &beta], 0.0);
        let rstd = 1.0 / 3.5f64.sqrt();
        assert_eq!(stats[0].mean, 3.0);
        assert!((stats[0].rstd as f64 - rstd).abs() < 1e-7);
        let xhat: Vec<f64> = x.iter().map(|v| (*v as f64 - 3.0) * rstd).collect();
        for j in 0..4 {
            let want = xhat[j] * gamma[j] as f64 + beta[j] as f64;
            assert!((y[j] as f64 - want).abs() < 1e-6, "y[{j}]");
        }
        // d(Σ y)/dx: g = gamma, dx = rstd (g - mean(g) - x̂ mean(g x̂)).
        let dy = [1.0f32; 4];
        let (dx, dgamma, dbeta) = backward_kernel(&x, &gamma, &stats, &dy);
        let mean_g = gamma.iter().map(|g| *g as f64).sum::<f64>() / 4.0;
        let mean_gx = (0..4).map(|j| gamma[j] as f64 * xhat[j]).sum::<f64>() / 4.0;
        for j in 0..4 {
            let want = rstd * (gamma[j] as f64 - mean_g - xhat[j] * mean_gx);
            assert!((dx[j] as f64 - want).abs() < 1e-6, "dx[{j}]");
            assert!((dgamma[j] as f64 - xhat[j]).abs() < 1e-6, "dgamma[{j}]");
        }
        assert_eq!(dbeta, vec![1.0; 4]);
        // The input gradient of a normalised row sums to zero when gamma is constant.
        let (dx, _, _) = backward_kernel(&x, &[1.0; 4], &stats, &[0.3, -1.0, 2.0, 0.7]);
        assert!(dx.iter().sum::<f32>().abs() < 1e-6, "{dx:?}");
    }
}
