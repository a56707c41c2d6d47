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
//!
//! [`batch_norm_relu`] is `relu(batch_norm(x))` in one kernel: the forward clamps as it writes,
//! and the backward recomputes the pre-activation from x (bit for bit the forward's value) to mask
//! the output gradient inside the two backward passes. On flex, burn's ReLU is a separate pass each
//! way with a fresh buffer and a separate mask pass (BENCHMARKS.md, "ReLU fused into batch norm").

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use burn::nn::BatchNorm;
use burn::tensor::{DType, Tensor, TensorData};
use rayon::prelude::*;
use std::mem::MaybeUninit;

use crate::floats;
use crate::simd::dispatch;

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
    normalize(bn, x, false)
}

/// `relu(batch_norm(bn, x))`, fused into the batch-norm kernels on flex.
pub fn batch_norm_relu(bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    normalize(bn, x, true)
}

fn normalize(bn: &BatchNorm, x: Tensor<4>, relu: bool) -> Tensor<4> {
    let activate = |y: Tensor<4>| if relu { crate::activation::relu(y) } else { y };
    let device = x.device();
    if !device.is_autodiff() || !bn.training.is_enabled() {
        // Inference, or a frozen layer: the running statistics, as burn does; in one pass on
        // flex without autodiff (a frozen layer under autodiff still needs burn's backward).
        let plain_flex = matches!(device.as_dispatch(), burn::backend::DispatchDevice::Flex(_));
        if plain_flex && x.dtype() == DType::F32 {
            let running = |p: &burn::module::RunningState<Tensor<1>>| {
                p.value().to_device(&device).into_dispatch()
            };
            return Tensor::<4>::from_dispatch(
                <burn::backend::Dispatch as BatchNormInference>::batch_norm_inference(
                    x.into_dispatch(),
                    bn.gamma.val().into_dispatch(),
                    bn.beta.val().into_dispatch(),
                    running(&bn.running_mean),
                    running(&bn.running_var),
                    bn.epsilon,
                    relu,
                ),
            );
        }
        return activate(bn.forward(x));
    }
    // The fused kernels: flex's below, or libtorch's (`libtorch.rs`, feature `tch`).
    let fused = crate::on_fused_autodiff(&device);
    let [batch, _, h, w] = x.dims();
    let (output, mean, variance) = if fused && x.dtype() == DType::F32 {
        let (output, mean, variance) =
            <burn::backend::Dispatch as BatchNormFused>::batch_norm_fused(
                x.into_dispatch(),
                bn.gamma.val().into_dispatch(),
                bn.beta.val().into_dispatch(),
                bn.epsilon,
                relu,
            );
        (
            Tensor::<4>::from_dispatch(output),
            Tensor::<1>::from_dispatch(mean),
            Tensor::<1>::from_dispatch(variance),
        )
    } else {
        let r =
            burn::tensor::module::batch_norm_train(x, bn.gamma.val(), bn.beta.val(), bn.epsilon);
        (activate(r.output), r.mean, r.variance)
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

/// Training-mode batch norm of an NCHW tensor, followed by a ReLU when `relu`: the output, and
/// the batch mean and biased variance per channel.
#[backend_extension(Autodiff, Flex, LibTorch: cfg(feature = "tch"))]
pub trait BatchNormFused: Backend {
    fn batch_norm_fused(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

impl BatchNormFused for Flex {
    fn batch_norm_fused(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        forward(x, gamma, beta, epsilon, relu)
    }
}

impl<C: CheckpointStrategy> BatchNormFused for Autodiff<Flex, C> {
    fn batch_norm_fused(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        match BatchNormFusedBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (xp, gp) = (x.primitive().clone(), gamma.primitive().clone());
                let bp = beta.primitive().clone();
                let (y, mean, var) = forward(xp.clone(), gp.clone(), bp.clone(), epsilon, relu);
                let state = Saved {
                    x: xp,
                    gamma: gp,
                    beta: bp,
                    mean: mean.clone(),
                    var: var.clone(),
                    epsilon,
                    relu,
                };
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
                    relu,
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

/// Inference-mode batch norm of an NCHW tensor with the given (running) statistics, followed by
/// a ReLU when `relu`.
#[backend_extension(Flex)]
pub trait BatchNormInference: Backend {
    fn batch_norm_inference(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> FloatTensor<Self>;
}

impl BatchNormInference for Flex {
    fn batch_norm_inference(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> FloatTensor<Self> {
        let device = x.device();
        let dims = x.shape().to_vec();
        let [x, gamma, beta, mean, var] = [x, gamma, beta, mean, var].map(contiguous);
        let y = inference_kernel(
            Shape3::of(&dims),
            floats(&x),
            [&gamma, &beta, &mean, &var].map(floats),
            epsilon,
            relu,
        );
        Flex::float_from_data(TensorData::new(y, dims), &device)
    }
}

#[derive(Debug)]
struct BatchNormFusedBackward;

/// What the backward pass needs: the input and parameters, the batch statistics, and whether a
/// ReLU followed (its mask is recomputed from these).
#[derive(Debug, Clone)]
struct Saved {
    x: FloatTensor<Flex>,
    gamma: FloatTensor<Flex>,
    beta: FloatTensor<Flex>,
    mean: FloatTensor<Flex>,
    var: FloatTensor<Flex>,
    epsilon: f64,
    relu: bool,
}

impl Backward<Flex, 3> for BatchNormFusedBackward {
    type State = Saved;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let Saved {
            x,
            gamma,
            beta,
            mean,
            var,
            epsilon,
            relu,
        } = ops.state;
        let device = x.device();
        let dims = x.shape().to_vec();
        let shape = Shape3::of(&dims);
        let [x, gamma, beta, mean, var, dy] = [x, gamma, beta, mean, var, dy].map(contiguous);
        let (dx, dgamma, dbeta) = backward_kernel(
            shape,
            floats(&x),
            [floats(&gamma), floats(&beta)],
            [floats(&mean), floats(&var)],
            epsilon,
            relu,
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

fn forward(
    x: FloatTensor<Flex>,
    gamma: FloatTensor<Flex>,
    beta: FloatTensor<Flex>,
    epsilon: f64,
    relu: bool,
) -> (FloatTensor<Flex>, FloatTensor<Flex>, FloatTensor<Flex>) {
    let device = x.device();
    let dims = x.shape().to_vec();
    let shape = Shape3::of(&dims);
    let [x, gamma, beta] = [x, gamma, beta].map(contiguous);
    let (y, mean, var) = forward_kernel(
        shape,
        floats(&x),
        [floats(&gamma), floats(&beta)],
        epsilon,
        relu,
    );
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

/// The per-channel affine map of the forward pass, `x ↦ (x - mean) · scale + beta` with
/// `scale = gamma / sqrt(var + eps)`, computed from the f32 statistics the backward pass is given,
/// so that the backward recomputes each pre-activation (the ReLU mask) bit for bit.
#[derive(Debug, Clone, Copy)]
struct Affine {
    mean: f32,
    scale: f32,
    beta: f32,
}

impl Affine {
    fn new(mean: f32, var: f32, gamma: f32, beta: f32, epsilon: f64) -> Self {
        let scale = (gamma as f64 / (var as f64 + epsilon).sqrt()) as f32;
        Self { mean, scale, beta }
    }

    #[inline(always)]
    fn apply(&self, v: f32) -> f32 {
        (v - self.mean) * self.scale + self.beta
    }
}

/// Lanes of the f64 accumulators below: independent sums, so that the loops vectorise.
const LANES: usize = 8;

dispatch! {
    /// `Σ f(v)` over a plane, accumulated in f64.
    pub(crate) fn plane_sum(p: &[f32], f: impl Fn(f32) -> f64) -> f64 = plane_sum_loop;
}

#[inline(always)]
fn plane_sum_loop(p: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    let mut acc = [0.0f64; LANES];
    let chunks = p.chunks_exact(LANES);
    let tail: f64 = chunks.remainder().iter().map(|v| f(*v)).sum();
    for chunk in chunks {
        for (a, v) in acc.iter_mut().zip(chunk) {
            *a += f(*v);
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// `(Σ g, Σ g · (x - mean))` over a plane of output gradients `g` (masked by the ReLU when
/// `RELU`) and inputs `x`, accumulated in f64 lanes. With AVX2 the lanes are four registers;
/// written as a loop instead, LLVM vectorised it across the two sums and loaded `g` behind a
/// branch per value (the mask), even with AVX2 enabled.
fn plane_grad_sums<const RELU: bool>(g: &[f32], x: &[f32], a: Affine) -> (f64, f64) {
    if RELU {
        plane_grad_sums_relu(g, x, a)
    } else {
        plane_grad_sums_plain(g, x, a)
    }
}

dispatch! {
    fn plane_grad_sums_plain(g: &[f32], x: &[f32], a: Affine) -> (f64, f64) =
        grad_sums::<false>, avx2: grad_sums_avx2::<false>;
}

dispatch! {
    fn plane_grad_sums_relu(g: &[f32], x: &[f32], a: Affine) -> (f64, f64) =
        grad_sums::<true>, avx2: grad_sums_avx2::<true>;
}

/// The baseline copy of `plane_grad_sums`.
fn grad_sums<const RELU: bool>(g: &[f32], x: &[f32], a: Affine) -> (f64, f64) {
    grad_sums_finish::<RELU>(g, x, a, grad_lanes::<RELU>(g, x, a))
}

/// The AVX2 copy of `plane_grad_sums`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn grad_sums_avx2<const RELU: bool>(g: &[f32], x: &[f32], a: Affine) -> (f64, f64) {
    grad_sums_finish::<RELU>(g, x, a, grad_lanes_avx2::<RELU>(g, x, a))
}

/// One value's terms, `(g, g · (x - mean))`, `g` masked.
#[inline(always)]
fn grad_term<const RELU: bool>(g: f32, x: f32, a: Affine) -> (f64, f64) {
    let g = relu_masked::<RELU>(a.apply(x), g) as f64;
    (g, g * (x as f64 - a.mean as f64))
}

/// The sums of the whole chunks of `LANES` values, lane `j` summing values `j`, `j + LANES`, ...
fn grad_lanes<const RELU: bool>(g: &[f32], x: &[f32], a: Affine) -> [[f64; LANES]; 2] {
    let mut lanes = [[0.0f64; LANES]; 2];
    for (gc, xc) in g.chunks_exact(LANES).zip(x.chunks_exact(LANES)) {
        for j in 0..LANES {
            let (p, q) = grad_term::<RELU>(gc[j], xc[j], a);
            lanes[0][j] += p;
            lanes[1][j] += q;
        }
    }
    lanes
}

/// The same sums, lane for lane, in AVX2 registers (values 0-3 and 4-7 of each chunk).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn grad_lanes_avx2<const RELU: bool>(g: &[f32], x: &[f32], a: Affine) -> [[f64; LANES]; 2] {
    use std::arch::x86_64::*;
    let (mean, scale, beta) = (
        _mm256_set1_ps(a.mean),
        _mm256_set1_ps(a.scale),
        _mm256_set1_ps(a.beta),
    );
    let mean64 = _mm256_set1_pd(a.mean as f64);
    let [mut g_lo, mut g_hi, mut gx_lo, mut gx_hi] = [_mm256_setzero_pd(); 4];
    for (gc, xc) in g.chunks_exact(LANES).zip(x.chunks_exact(LANES)) {
        // SAFETY: each chunk holds LANES = 8 floats.
        let (mut gv, xv) = unsafe { (_mm256_loadu_ps(gc.as_ptr()), _mm256_loadu_ps(xc.as_ptr())) };
        if RELU {
            // `relu_masked`: dy where the pre-activation `(x - mean) · scale + beta` (no fused
            // multiply-add: the forward pass's rounding) is not <= 0, NaN included; +0 elsewhere.
            let pre = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(xv, mean), scale), beta);
            let keep = _mm256_cmp_ps::<_CMP_NLE_UQ>(pre, _mm256_setzero_ps());
            gv = _mm256_and_ps(keep, gv);
        }
        let (glo, ghi) = (
            _mm256_cvtps_pd(_mm256_castps256_ps128(gv)),
            _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(gv)),
        );
        let (xlo, xhi) = (
            _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(xv)), mean64),
            _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps::<1>(xv)), mean64),
        );
        g_lo = _mm256_add_pd(g_lo, glo);
        g_hi = _mm256_add_pd(g_hi, ghi);
        gx_lo = _mm256_add_pd(gx_lo, _mm256_mul_pd(glo, xlo));
        gx_hi = _mm256_add_pd(gx_hi, _mm256_mul_pd(ghi, xhi));
    }
    let mut lanes = [[0.0f64; LANES]; 2];
    // SAFETY: each store writes 4 of a lane array's 8 values.
    unsafe {
        _mm256_storeu_pd(lanes[0].as_mut_ptr(), g_lo);
        _mm256_storeu_pd(lanes[0].as_mut_ptr().add(4), g_hi);
        _mm256_storeu_pd(lanes[1].as_mut_ptr(), gx_lo);
        _mm256_storeu_pd(lanes[1].as_mut_ptr().add(4), gx_hi);
    }
    lanes
}

/// The lanes' totals plus the values past the last whole chunk.
fn grad_sums_finish<const RELU: bool>(
    g: &[f32],
    x: &[f32],
    a: Affine,
    [sum_g, sum_gx]: [[f64; LANES]; 2],
) -> (f64, f64) {
    let (gs, xs) = (g.chunks_exact(LANES), x.chunks_exact(LANES));
    let tail = gs
        .remainder()
        .iter()
        .zip(xs.remainder())
        .map(|(g, x)| grad_term::<RELU>(*g, *x, a))
        .fold((0.0, 0.0), |(a, b), (p, q)| (a + p, b + q));
    (
        sum_g.iter().sum::<f64>() + tail.0,
        sum_gx.iter().sum::<f64>() + tail.1,
    )
}

/// Output (after a ReLU when `relu`), batch mean and biased batch variance.
pub fn forward_kernel(
    s: Shape3,
    x: &[f32],
    [gamma, beta]: [&[f32]; 2],
    epsilon: f64,
    relu: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let stats: Vec<(f32, f32)> = (0..s.c)
        .into_par_iter()
        .map(|c| {
            let sum: f64 = s.planes(x, c).map(|p| plane_sum(p, |v| v as f64)).sum();
            let mean = sum / s.count();
            let sq: f64 = s
                .planes(x, c)
                .map(|p| plane_sum(p, |v| (v as f64 - mean) * (v as f64 - mean)))
                .sum();
            (mean as f32, (sq / s.count()) as f32)
        })
        .collect();
    let affine: Vec<Affine> = stats
        .iter()
        .enumerate()
        .map(|(c, (m, v))| Affine::new(*m, *v, gamma[c], beta[c], epsilon))
        .collect();
    // SAFETY: the planes cover `x`, and each loop writes every value of its plane.
    let y = unsafe {
        crate::written(x.len(), |y| {
            y.par_chunks_mut(s.plane.max(1))
                .zip(x.par_chunks(s.plane.max(1)))
                .enumerate()
                .for_each(|(p, (out, inp))| {
                    let a = affine[p % s.c];
                    if relu {
                        apply_relu(a, inp, out)
                    } else {
                        apply(a, inp, out)
                    }
                })
        })
    };
    let mean = stats.iter().map(|(m, _)| *m).collect();
    let var = stats.iter().map(|(_, v)| *v).collect();
    (y, mean, var)
}

/// Gradients of the input, gamma and beta. With `relu`, `dy` is the gradient of the ReLU's
/// output, and is zeroed where the pre-activation was not positive (burn's and PyTorch's ReLU
/// backward: gradient 0 at 0).
pub fn backward_kernel(
    s: Shape3,
    x: &[f32],
    [gamma, beta]: [&[f32]; 2],
    [mean, var]: [&[f32]; 2],
    epsilon: f64,
    relu: bool,
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let inv_std: Vec<f64> = var
        .iter()
        .map(|v| 1.0 / (*v as f64 + epsilon).sqrt())
        .collect();
    let affine: Vec<Affine> = (0..s.c)
        .map(|c| Affine::new(mean[c], var[c], gamma[c], beta[c], epsilon))
        .collect();
    // The gradient reaching the batch norm's output: dy, masked by the ReLU. Two copies of
    // each loop (with and without the mask), so that neither carries a per-value branch: with
    // the mask as a run-time flag inside the loops the backward took 73 ms instead of 21 at
    // ResNet-18's stage-1 size (BENCHMARKS.md, "Batch norm + ReLU backward without branches").
    if relu {
        backward_planes::<true>(s, x, gamma, &affine, &inv_std, dy)
    } else {
        backward_planes::<false>(s, x, gamma, &affine, &inv_std, dy)
    }
}

/// dy, or 0 where the ReLU's pre-activation `pre` was not positive (when `RELU`). A select,
/// not a branch: NaN pre-activations pass the gradient, as burn's ReLU backward does.
#[inline(always)]
fn relu_masked<const RELU: bool>(pre: f32, g: f32) -> f32 {
    if RELU && pre <= 0.0 { 0.0 } else { g }
}

fn backward_planes<const RELU: bool>(
    s: Shape3,
    x: &[f32],
    gamma: &[f32],
    affine: &[Affine],
    inv_std: &[f64],
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    // Per channel: Σ dy (beta's gradient) and Σ dy · (x - mean) (gamma's, times inv_std).
    let sums: Vec<(f64, f64)> = (0..s.c)
        .into_par_iter()
        .map(|c| {
            let a = affine[c];
            s.planes(dy, c)
                .zip(s.planes(x, c))
                .map(|(g, v)| plane_grad_sums::<RELU>(g, v, a))
                .fold((0.0, 0.0), |(p, q), (dp, dq)| (p + dp, q + dq))
        })
        .collect();
    let dbeta: Vec<f32> = sums.iter().map(|(a, _)| *a as f32).collect();
    let dgamma: Vec<f32> = sums
        .iter()
        .zip(inv_std)
        .map(|((_, b), is)| (*b * is) as f32)
        .collect();
    // SAFETY: the planes cover `x`, and each loop writes every value of its plane.
    let dx = unsafe {
        crate::written(x.len(), |dx| {
            dx.par_chunks_mut(s.plane.max(1))
                .zip(
                    x.par_chunks(s.plane.max(1))
                        .zip(dy.par_chunks(s.plane.max(1))),
                )
                .enumerate()
                .for_each(|(p, (out, (xs, gs)))| {
                    let c = p % s.c;
                    let is = inv_std[c];
                    let terms = DxTerms {
                        affine: affine[c],
                        mean_dy: (sums[c].0 / s.count()) as f32,
                        // x̂ · mean(dy · x̂) = (x - mean) · is² · Σ dy (x - mean) / count
                        k: (sums[c].1 * is * is / s.count()) as f32,
                        scale: (gamma[c] as f64 * is) as f32,
                    };
                    if RELU {
                        dx_plane_relu(terms, xs, gs, out)
                    } else {
                        dx_plane(terms, xs, gs, out)
                    }
                })
        })
    };
    (dx, dgamma, dbeta)
}

dispatch! {
    /// One plane of the forward output, `x ↦ (x - mean) · scale + beta`.
    fn apply(a: Affine, x: &[f32], y: &mut [MaybeUninit<f32>]) = apply_loop::<false>;
}

dispatch! {
    /// The same, then a ReLU.
    fn apply_relu(a: Affine, x: &[f32], y: &mut [MaybeUninit<f32>]) = apply_loop::<true>;
}

#[inline(always)]
fn apply_loop<const RELU: bool>(a: Affine, x: &[f32], y: &mut [MaybeUninit<f32>]) {
    assert_eq!(x.len(), y.len());
    for (o, v) in y.iter_mut().zip(x) {
        let pre = a.apply(*v);
        o.write(if RELU {
            crate::activation::relu1(pre)
        } else {
            pre
        });
    }
}

/// A channel's terms of inference-mode batch norm, applied as burn's `ModuleOps::batch_norm`
/// applies them, `((x - mean) / sqrt(var + eps)) · gamma + beta` with each step rounded to f32
/// in that order: the fused pass gives burn's output bit for bit, so evaluating a model gives
/// the same scores whichever path ran. (PyTorch folds the terms into `x · a + b`; the two differ
/// in the last bits.)
#[derive(Debug, Clone, Copy)]
struct Running {
    mean: f32,
    std: f32,
    gamma: f32,
    beta: f32,
}

impl Running {
    /// burn adds `eps` as an f32 scalar to the f32 variance, then takes the f32 square root.
    fn new(mean: f32, var: f32, gamma: f32, beta: f32, epsilon: f64) -> Self {
        let std = (var + epsilon as f32).sqrt();
        Self {
            mean,
            std,
            gamma,
            beta,
        }
    }

    #[inline(always)]
    fn apply(&self, v: f32) -> f32 {
        (v - self.mean) / self.std * self.gamma + self.beta
    }
}

/// Values per task of `inference_kernel` (whole planes, at least one): ResNet's last stage has
/// 4 x 4 planes, and a task per plane would cost more in rayon than in arithmetic.
const INFERENCE_TASK: usize = 1 << 14;

/// Inference-mode batch norm with the statistics `mean` and `var` (the running ones), then a
/// ReLU when `relu`: one pass, where burn's `ModuleOps::batch_norm` (which flex does not
/// override) makes four (subtract, divide, multiply, add, each into a fresh buffer) and the
/// ReLU a fifth.
pub fn inference_kernel(
    s: Shape3,
    x: &[f32],
    [gamma, beta, mean, var]: [&[f32]; 4],
    epsilon: f64,
    relu: bool,
) -> Vec<f32> {
    let terms: Vec<Running> = (0..s.c)
        .map(|c| Running::new(mean[c], var[c], gamma[c], beta[c], epsilon))
        .collect();
    let plane = s.plane.max(1);
    let task = (INFERENCE_TASK / plane).max(1) * plane;
    // Every value is written below, so the buffer is not zeroed first (a pass of its own).
    let mut y = Vec::with_capacity(x.len());
    y.spare_capacity_mut()[..x.len()]
        .par_chunks_mut(task)
        .zip(x.par_chunks(task))
        .enumerate()
        .for_each(|(t, (out, inp))| {
            let first = t * task / plane;
            for (p, (out, inp)) in out.chunks_mut(plane).zip(inp.chunks(plane)).enumerate() {
                let r = terms[(first + p) % s.c];
                if relu {
                    running_relu(r, inp, out)
                } else {
                    running(r, inp, out)
                }
            }
        });
    // SAFETY: the chunks above cover the first `x.len()` values, and each loop writes every
    // value of its chunk.
    unsafe { y.set_len(x.len()) };
    y
}

dispatch! {
    /// One plane of inference-mode batch norm.
    fn running(r: Running, x: &[f32], y: &mut [MaybeUninit<f32>]) = running_loop::<false>;
}

dispatch! {
    /// The same, then a ReLU.
    fn running_relu(r: Running, x: &[f32], y: &mut [MaybeUninit<f32>]) = running_loop::<true>;
}

#[inline(always)]
fn running_loop<const RELU: bool>(r: Running, x: &[f32], y: &mut [MaybeUninit<f32>]) {
    assert_eq!(x.len(), y.len());
    for (o, v) in y.iter_mut().zip(x) {
        let pre = r.apply(*v);
        o.write(if RELU {
            crate::activation::relu1(pre)
        } else {
            pre
        });
    }
}

/// A channel's constants of the input gradient: `dx = scale · (dy - mean_dy - (x - mean) · k)`.
#[derive(Debug, Clone, Copy)]
struct DxTerms {
    affine: Affine,
    mean_dy: f32,
    k: f32,
    scale: f32,
}

dispatch! {
    /// One plane of the input gradient.
    fn dx_plane(t: DxTerms, x: &[f32], dy: &[f32], dx: &mut [MaybeUninit<f32>]) = dx_loop::<false>;
}

dispatch! {
    /// The same, with `dy` masked by the ReLU that followed the batch norm.
    fn dx_plane_relu(t: DxTerms, x: &[f32], dy: &[f32], dx: &mut [MaybeUninit<f32>])
        = dx_loop::<true>;
}

#[inline(always)]
fn dx_loop<const RELU: bool>(t: DxTerms, x: &[f32], dy: &[f32], dx: &mut [MaybeUninit<f32>]) {
    assert!(x.len() == dx.len() && dy.len() == dx.len());
    let m = t.affine.mean;
    for (o, (v, g)) in dx.iter_mut().zip(x.iter().zip(dy)) {
        o.write(
            t.scale * (relu_masked::<RELU>(t.affine.apply(*v), *g) - t.mean_dy - (v - m) * t.k),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::BatchNormConfig;
    use burn::tensor::{Device, Distribution, activation};

    fn vec(t: Tensor<1>) -> Vec<f32> {
        t.into_data().try_to_vec().unwrap()
    }

    /// The dispatched loops (their AVX2 copies, on processors that have AVX2 and FMA) give the
    /// same bits as the loops compiled for the baseline target, on planes with and without a
    /// tail, with zeros and negative values (the ReLU mask) and, in the element-wise loops, a NaN.
    #[test]
    fn dispatched_loops_match_the_baseline_bit_for_bit() {
        let a = Affine::new(0.3, 2.1, 1.4, -0.2, 1e-5);
        let t = DxTerms {
            affine: a,
            mean_dy: 0.7,
            k: -0.4,
            scale: 1.3,
        };
        for len in [1, 7, 8, 9, 64, 100, 1027] {
            let wave = |k: f32| -> Vec<f32> {
                let v = |i: usize| (i as f32 * k).sin() * 3.0 - 0.5;
                (0..len)
                    .map(|i| if i % 11 == 3 { 0.0 } else { v(i) })
                    .collect()
            };
            let (mut x, dy) = (wave(0.37), wave(1.13));
            let square = |v: f32| (v as f64 - 0.3) * (v as f64 - 0.3);
            let sums = [plane_sum(&x, square), plane_sum_loop(&x, square)];
            assert_eq!(sums[0].to_bits(), sums[1].to_bits(), "Σ (x - m)², {len}");
            let lanes = grad_lanes::<true>(&dy, &x, a);
            let sums = [
                plane_grad_sums::<true>(&dy, &x, a),
                grad_sums_finish::<true>(&dy, &x, a, lanes),
            ];
            let sums = sums.map(|(p, q)| (p.to_bits(), q.to_bits()));
            assert_eq!(
                sums[0], sums[1],
                "Σ dy, Σ dy (x - m) through the ReLU, {len}"
            );
            let lanes = grad_lanes::<false>(&dy, &x, a);
            let sums = [
                plane_grad_sums::<false>(&dy, &x, a),
                grad_sums_finish::<false>(&dy, &x, a, lanes),
            ];
            let sums = sums.map(|(p, q)| (p.to_bits(), q.to_bits()));
            assert_eq!(sums[0], sums[1], "Σ dy, Σ dy (x - m), {len}");
            // A NaN in the sums would hide every other difference; the element-wise loops
            // must pass it through.
            x[len / 2] = f32::NAN;
            let written = |f: &dyn Fn(&mut [MaybeUninit<f32>])| {
                let mut out = vec![MaybeUninit::new(f32::NAN); len];
                f(&mut out);
                out.iter()
                    .map(|v| unsafe { v.assume_init() }.to_bits())
                    .collect::<Vec<_>>()
            };
            let r = Running::new(0.3, 2.1, 1.4, -0.2, 1e-5);
            type Fill<'a> = &'a dyn Fn(&mut [MaybeUninit<f32>]);
            let pairs: [(&str, Fill, Fill); 6] = [
                ("affine + ReLU", &|o| apply_relu(a, &x, o), &|o| {
                    apply_loop::<true>(a, &x, o)
                }),
                ("affine", &|o| apply(a, &x, o), &|o| {
                    apply_loop::<false>(a, &x, o)
                }),
                (
                    "running statistics + ReLU",
                    &|o| running_relu(r, &x, o),
                    &|o| running_loop::<true>(r, &x, o),
                ),
                ("running statistics", &|o| running(r, &x, o), &|o| {
                    running_loop::<false>(r, &x, o)
                }),
                (
                    "dx through the ReLU",
                    &|o| dx_plane_relu(t, &x, &dy, o),
                    &|o| dx_loop::<true>(t, &x, &dy, o),
                ),
                ("dx", &|o| dx_plane(t, &x, &dy, o), &|o| {
                    dx_loop::<false>(t, &x, &dy, o)
                }),
            ];
            for (what, dispatched, baseline) in pairs {
                assert_eq!(written(dispatched), written(baseline), "{what}, {len}");
            }
        }
    }

    /// `batch_norm` on a flex autodiff device against burn's `BatchNorm::forward` (output,
    /// gradients of the input, gamma and beta) and against PyTorch's running-statistics update
    /// computed here in f64, over two steps.
    #[test]
    fn fused_kernels_match_burns_batch_norm() {
        check_against_burn(false);
    }

    /// `batch_norm_relu` against burn's `BatchNorm::forward` followed by burn's `relu`: about
    /// half the outputs are clamped (beta in [-1, 1]), so the mask shows in every gradient.
    #[test]
    fn fused_relu_matches_burns_batch_norm_then_relu() {
        check_against_burn(true);
    }

    /// Inference on flex (the fused pass) against burn's `BatchNorm::forward` and `relu`, bit
    /// for bit: planes of one value, of ResNet's 4 x 4 and of an odd size spanning several
    /// tasks whose first planes are not channel 0's.
    #[test]
    fn inference_matches_burns_batch_norm_bit_for_bit() {
        let _rng = crate::tests::device_rng();
        let device = Device::flex();
        let bits = |t: Tensor<4>| -> Vec<u32> {
            let v = t.into_data().try_to_vec::<f32>().unwrap();
            v.iter().map(|x| x.to_bits()).collect()
        };
        let (mut zeros, mut len) = (0, 0);
        for dims in [[3, 5, 1, 1], [4, 7, 4, 4], [40, 7, 9, 11]] {
            let c = dims[1];
            let random =
                |lo: f64, hi: f64| Tensor::<1>::random([c], Distribution::Uniform(lo, hi), &device);
            let bn = BatchNormConfig::new(c).init(&device);
            let bn = BatchNorm {
                gamma: burn::module::Param::from_tensor(random(0.5, 1.5)),
                beta: burn::module::Param::from_tensor(random(-1.0, 1.0)),
                running_mean: burn::module::RunningState::new(random(-2.0, 2.0)),
                running_var: burn::module::RunningState::new(random(0.01, 3.0)),
                ..bn
            };
            let x = Tensor::<4>::random(dims, Distribution::Normal(0.5, 2.0), &device);
            let y = batch_norm(&bn, x.clone());
            assert_eq!(bits(y), bits(bn.forward(x.clone())), "{dims:?}");
            let y = batch_norm_relu(&bn, x.clone());
            zeros += bits(y.clone()).iter().filter(|v| **v == 0).count();
            len += dims.iter().product::<usize>();
            assert_eq!(bits(y), bits(activation::relu(bn.forward(x))), "{dims:?}");
        }
        // The ReLU clamps a good share of the outputs, so its mask is tested too. Counted over
        // all cases: the draws of the shared test generator depend on which tests ran before,
        // and the 15 values of the smallest case alone can fall almost all on one side.
        assert!(
            zeros > len / 10 && zeros < len * 9 / 10,
            "{zeros} of {len} clamped"
        );
    }

    fn check_against_burn(relu: bool) {
        let _rng = crate::tests::device_rng();
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
            let (a, b) = if relu {
                let a = run(&|x| batch_norm_relu(&ours, x), &ours);
                let b = run(&|x| activation::relu(burns.forward(x)), &burns);
                let zeros = a[0].iter().filter(|v| **v == 0.0).count();
                assert!(
                    zeros > a[0].len() / 5 && zeros < a[0].len() * 4 / 5,
                    "step {step}: {zeros} of {} outputs clamped",
                    a[0].len()
                );
                (a, b)
            } else {
                (
                    run(&|x| batch_norm(&ours, x), &ours),
                    run(&|x| burns.forward(x), &burns),
                )
            };
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
