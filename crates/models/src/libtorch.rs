//! Training kernels of the `tch` backend (LibTorch): the convolution, batch-norm, layer-norm and
//! softmax backward passes PyTorch's autograd runs, in place of burn's generic ones (feature
//! `tch`).
//!
//! Why: burn-tch implements the forward operations with libtorch's kernels but leaves the
//! backward passes to burn's generic formulas (burn-backend `conv2d_weight_grad_no_groups`,
//! `batch_norm_train_backward`): the weight gradient of a convolution becomes another
//! convolution whose kernel is the whole output gradient (on libtorch 2x the time of
//! `at::convolution_backward`'s weight gradient at ResNet-18's stage 1, BENCHMARKS.md), and a
//! batch norm a dozen separate tensor operations each way, each saving its own buffers; so do
//! a layer norm and a softmax (burn's autodiff has neither op). Here they go through the
//! extensions `conv::ConvGemm`, `batch_norm::BatchNormFused`, `layer_norm::LayerNormFused`
//! and `softmax::SoftmaxFused`, implemented for `LibTorch` with the functions PyTorch's
//! `ConvolutionBackward0`, `NativeBatchNormBackward0`, `NativeLayerNormBackward0` and
//! `SoftmaxBackward0` call (tools/autograd/derivatives.yaml): `at::convolution` /
//! `at::convolution_backward`, `at::native_batch_norm` / `at::native_batch_norm_backward`,
//! `at::native_layer_norm` / `at::native_layer_norm_backward`, `at::_softmax` /
//! `at::_softmax_backward_data`. The three backward functions with a `bool[3]` output mask
//! are not bound by the tch crate; the C++ file `csrc/libtorch_shim.cpp` (compiled by
//! build.rs) calls them.
//!
//! The numbers are libtorch's: the same kernels, the same summation order as PyTorch.

// burn-tch is deprecated upstream; it stays because it is how oodforge trains at PyTorch's CPU
// speed (crates/core/src/backend.rs).
#![allow(deprecated)]

use std::ffi::{CStr, c_char, c_int};

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::libtorch::TchTensor;
use burn::backend::ops::ConvOptions;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, LibTorch};
use tch::Tensor;
use torch_sys::C_tensor;

use crate::batch_norm::BatchNormFused;
use crate::conv::ConvGemm;
use crate::layer_norm::LayerNormFused;
use crate::softmax::SoftmaxFused;

unsafe extern "C" {
    fn oodforge_conv2d_backward(
        dy: *const C_tensor,
        x: *const C_tensor,
        w: *const C_tensor,
        stride: *const i64,
        padding: *const i64,
        dilation: *const i64,
        groups: i64,
        want_dx: c_int,
        want_dw: c_int,
        dx: *mut *mut C_tensor,
        dw: *mut *mut C_tensor,
    ) -> *mut c_char;

    #[allow(clippy::too_many_arguments)]
    fn oodforge_batch_norm_backward(
        dy: *const C_tensor,
        x: *const C_tensor,
        gamma: *const C_tensor,
        save_mean: *const C_tensor,
        save_invstd: *const C_tensor,
        eps: f64,
        want_dx: c_int,
        want_dgamma: c_int,
        want_dbeta: c_int,
        dx: *mut *mut C_tensor,
        dgamma: *mut *mut C_tensor,
        dbeta: *mut *mut C_tensor,
    ) -> *mut c_char;

    #[allow(clippy::too_many_arguments)]
    fn oodforge_layer_norm_backward(
        dy: *const C_tensor,
        x: *const C_tensor,
        d: i64,
        mean: *const C_tensor,
        rstd: *const C_tensor,
        gamma: *const C_tensor,
        beta: *const C_tensor,
        want_dx: c_int,
        want_dgamma: c_int,
        want_dbeta: c_int,
        dx: *mut *mut C_tensor,
        dgamma: *mut *mut C_tensor,
        dbeta: *mut *mut C_tensor,
    ) -> *mut c_char;

    fn free(ptr: *mut std::ffi::c_void);
}

/// The shim's outputs as owned tensors, or its error message as a panic: the shapes were
/// checked by the forward pass, so an error here is libtorch failing, not bad input.
fn take<const N: usize>(error: *mut c_char, outs: [*mut C_tensor; N]) -> [Option<Tensor>; N] {
    if !error.is_null() {
        // SAFETY: the shim returns a NUL-terminated string from strdup, which we free once.
        let text = unsafe { CStr::from_ptr(error) }
            .to_string_lossy()
            .into_owned();
        unsafe { free(error.cast()) };
        panic!("libtorch backward kernel failed: {text}");
    }
    // SAFETY: each non-null pointer is a fresh `new at::Tensor` that nothing else owns.
    outs.map(|p| (!p.is_null()).then(|| unsafe { Tensor::from_ptr(p) }))
}

/// The ids of an op's parents, `None` for those that need no gradient, and the shim's
/// "compute this gradient" flags for them.
fn parents<S, const N: usize>(ops: &Ops<S, N>) -> ([Option<NodeId>; N], [c_int; N]) {
    let ids = ops
        .parents
        .each_ref()
        .map(|p| p.as_ref().map(|node| node.id));
    (ids, ids.map(|id| id.is_some().into()))
}

/// Hands each computed gradient to its parent.
fn register<const N: usize>(
    grads: &mut Gradients,
    ids: [Option<NodeId>; N],
    outs: [Option<Tensor>; N],
) {
    for (id, grad) in ids.into_iter().zip(outs) {
        if let (Some(id), Some(grad)) = (id, grad) {
            grads.register::<LibTorch>(id, TchTensor::new(grad));
        }
    }
}

/// Calls a shim backward function with `N` out pointers (`call`), then hands each gradient it
/// computed to its parent; a libtorch error is a panic (`take`).
fn shim_backward<const N: usize>(
    grads: &mut Gradients,
    ids: [Option<NodeId>; N],
    call: impl FnOnce([&mut *mut C_tensor; N]) -> *mut c_char,
) {
    let mut outs = [std::ptr::null_mut(); N];
    let error = call(outs.each_mut());
    register(grads, ids, take(error, outs));
}

/// A pair of sizes as libtorch's `int[2]`.
fn ints(v: [usize; 2]) -> [i64; 2] {
    v.map(|i| i as i64)
}

fn conv_forward(x: &Tensor, w: &Tensor, options: &ConvOptions<2>) -> Tensor {
    x.conv2d(
        w,
        None::<Tensor>,
        ints(options.stride),
        ints(options.padding_begin()),
        ints(options.dilation),
        options.groups as i64,
    )
}

impl ConvGemm for LibTorch {
    fn conv2d_gemm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        TchTensor::new(conv_forward(&x.tensor, &weight.tensor, &options))
    }
}

impl<C: CheckpointStrategy> ConvGemm for Autodiff<LibTorch, C> {
    fn conv2d_gemm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        let (xp, wp) = (x.primitive(), weight.primitive());
        let y = TchTensor::new(conv_forward(&xp.tensor, &wp.tensor, &options));
        match ConvBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((xp.clone(), wp.clone(), options), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}

#[derive(Debug)]
struct ConvBackward;

impl Backward<LibTorch, 2> for ConvBackward {
    type State = (TchTensor, TchTensor, ConvOptions<2>);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let (ids, [want_dx, want_dw]) = parents(&ops);
        let dy = grads.consume::<LibTorch>(&ops.node);
        let (x, w, options) = ops.state;
        let (stride, padding) = (ints(options.stride), ints(options.padding_begin()));
        let dilation = ints(options.dilation);
        shim_backward(grads, ids, |[dx, dw]| {
            // SAFETY: the tensors outlive the call; the shim writes only the two out pointers.
            unsafe {
                oodforge_conv2d_backward(
                    dy.tensor.as_ptr(),
                    x.tensor.as_ptr(),
                    w.tensor.as_ptr(),
                    stride.as_ptr(),
                    padding.as_ptr(),
                    dilation.as_ptr(),
                    options.groups as i64,
                    want_dx,
                    want_dw,
                    dx,
                    dw,
                )
            }
        });
    }
}

/// `at::native_batch_norm` in training mode (no running statistics: `batch_norm::normalize`
/// updates those, with PyTorch's formula), then the ReLU in place when `relu`: the output,
/// the batch mean and the batch inverse standard deviation `1 / sqrt(var + eps)`.
fn bn_forward(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    epsilon: f64,
    relu: bool,
) -> (Tensor, Tensor, Tensor) {
    let (mut y, mean, invstd) =
        x.native_batch_norm(Some(gamma), Some(beta), None, None, true, 0.0, epsilon);
    if relu {
        let _ = y.relu_();
    }
    (y, mean, invstd)
}

/// The biased batch variance from the saved inverse standard deviation, for the running
/// statistics: `1 / invstd² - eps`, what `at::native_batch_norm` itself feeds its running
/// variance from up to float rounding (it keeps the variance it computed; the extension's
/// contract returns one, and libtorch returns `invstd`).
fn variance(invstd: &Tensor, epsilon: f64) -> Tensor {
    invstd.square().reciprocal() - epsilon
}

impl BatchNormFused for LibTorch {
    fn batch_norm_fused(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (y, mean, invstd) = bn_forward(&x.tensor, &gamma.tensor, &beta.tensor, epsilon, relu);
        let var = variance(&invstd, epsilon);
        (TchTensor::new(y), TchTensor::new(mean), TchTensor::new(var))
    }
}

/// What the backward pass needs: the input, gamma, libtorch's saved batch statistics, and the
/// output when a ReLU followed (its mask).
#[derive(Debug, Clone)]
struct BnSaved {
    x: TchTensor,
    gamma: TchTensor,
    mean: TchTensor,
    invstd: TchTensor,
    relu_output: Option<TchTensor>,
    epsilon: f64,
}

impl<C: CheckpointStrategy> BatchNormFused for Autodiff<LibTorch, C> {
    fn batch_norm_fused(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (xp, gp) = (x.primitive().clone(), gamma.primitive().clone());
        let (y, mean, invstd) = bn_forward(
            &xp.tensor,
            &gp.tensor,
            &beta.primitive().tensor,
            epsilon,
            relu,
        );
        let var = TchTensor::new(variance(&invstd, epsilon));
        let (y, mean, invstd) = (
            TchTensor::new(y),
            TchTensor::new(mean),
            TchTensor::new(invstd),
        );
        let mean_out = FloatTensor::<Self>::new(mean.clone());
        let var_out = FloatTensor::<Self>::new(var);
        match BnBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let state = BnSaved {
                    x: xp,
                    gamma: gp,
                    mean,
                    invstd,
                    relu_output: relu.then(|| y.clone()),
                    epsilon,
                };
                (prep.finish(state, y), mean_out, var_out)
            }
            OpsKind::UnTracked(prep) => (prep.finish(y), mean_out, var_out),
        }
    }
}

#[derive(Debug)]
struct BnBackward;

impl Backward<LibTorch, 3> for BnBackward {
    type State = BnSaved;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let (ids, [want_dx, want_dgamma, want_dbeta]) = parents(&ops);
        let dy = grads.consume::<LibTorch>(&ops.node).tensor;
        let s = ops.state;
        // ReLU's backward as PyTorch's (`threshold_backward(grad, result, 0)`): the gradient
        // where the output is positive.
        let dy = match &s.relu_output {
            Some(y) => y.tensor.threshold_backward(&dy, 0.0),
            None => dy,
        };
        shim_backward(grads, ids, |[dx, dgamma, dbeta]| {
            // SAFETY: the tensors outlive the call; the shim writes only the three out pointers.
            unsafe {
                oodforge_batch_norm_backward(
                    dy.as_ptr(),
                    s.x.tensor.as_ptr(),
                    s.gamma.tensor.as_ptr(),
                    s.mean.tensor.as_ptr(),
                    s.invstd.tensor.as_ptr(),
                    s.epsilon,
                    want_dx,
                    want_dgamma,
                    want_dbeta,
                    dx,
                    dgamma,
                    dbeta,
                )
            }
        });
    }
}

/// The size of the last axis, the one layer norm and softmax work over.
fn last_dim(x: &Tensor) -> i64 {
    *x.size().last().expect("a tensor with at least one axis")
}

/// `at::native_layer_norm` over the last axis: the output, and per row the mean and
/// `1 / sqrt(var + eps)`.
fn ln_forward(x: &Tensor, gamma: &Tensor, beta: &Tensor, epsilon: f64) -> (Tensor, Tensor, Tensor) {
    x.native_layer_norm([last_dim(x)], Some(gamma), Some(beta), epsilon)
}

impl LayerNormFused for LibTorch {
    fn layer_norm_fused(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        let (y, _, _) = ln_forward(&x.tensor, &gamma.tensor, &beta.tensor, epsilon);
        TchTensor::new(y)
    }
}

/// What the layer norm's backward needs: the input, the parameters, and libtorch's per-row mean
/// and `1 / sqrt(var + eps)`.
#[derive(Debug, Clone)]
struct LnSaved {
    x: TchTensor,
    gamma: TchTensor,
    beta: TchTensor,
    mean: TchTensor,
    rstd: TchTensor,
}

impl<C: CheckpointStrategy> LayerNormFused for Autodiff<LibTorch, C> {
    fn layer_norm_fused(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        let (xp, gp, bp) = (
            x.primitive().clone(),
            gamma.primitive().clone(),
            beta.primitive().clone(),
        );
        let (y, mean, rstd) = ln_forward(&xp.tensor, &gp.tensor, &bp.tensor, epsilon);
        match LnBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let state = LnSaved {
                    x: xp,
                    gamma: gp,
                    beta: bp,
                    mean: TchTensor::new(mean),
                    rstd: TchTensor::new(rstd),
                };
                prep.finish(state, TchTensor::new(y))
            }
            OpsKind::UnTracked(prep) => prep.finish(TchTensor::new(y)),
        }
    }
}

#[derive(Debug)]
struct LnBackward;

impl Backward<LibTorch, 3> for LnBackward {
    type State = LnSaved;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let (ids, [want_dx, want_dgamma, want_dbeta]) = parents(&ops);
        let dy = grads.consume::<LibTorch>(&ops.node).tensor;
        let s = ops.state;
        shim_backward(grads, ids, |[dx, dgamma, dbeta]| {
            // SAFETY: the tensors outlive the call; the shim writes only the three out pointers.
            unsafe {
                oodforge_layer_norm_backward(
                    dy.as_ptr(),
                    s.x.tensor.as_ptr(),
                    last_dim(&s.x.tensor),
                    s.mean.tensor.as_ptr(),
                    s.rstd.tensor.as_ptr(),
                    s.gamma.tensor.as_ptr(),
                    s.beta.tensor.as_ptr(),
                    want_dx,
                    want_dgamma,
                    want_dbeta,
                    dx,
                    dgamma,
                    dbeta,
                )
            }
        });
    }
}

impl SoftmaxFused for LibTorch {
    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
        TchTensor::new(x.tensor.softmax(-1, None))
    }
}

impl<C: CheckpointStrategy> SoftmaxFused for Autodiff<LibTorch, C> {
    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let y = TchTensor::new(x.primitive().tensor.softmax(-1, None));
        match SoftmaxBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(y.clone(), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}

#[derive(Debug)]
struct SoftmaxBackward;

impl Backward<LibTorch, 1> for SoftmaxBackward {
    /// The output.
    type State = TchTensor;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x] = ops.parents;
        let dy = grads.consume::<LibTorch>(&ops.node).tensor;
        if let Some(node) = node_x {
            let y = &ops.state.tensor;
            let dx = Tensor::internal_softmax_backward_data(&dy, y, -1, y.kind());
            grads.register::<LibTorch>(node.id, TchTensor::new(dx));
        }
    }
}

/// Run with `cargo test --release -p oodforge-models --features tch libtorch` (the README's tch
/// build environment): CI has no libtorch.
#[cfg(test)]
mod tests {
    use burn::module::Param;
    use burn::nn::conv::{Conv2d, Conv2dConfig};
    use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
    use burn::tensor::{Device, Tensor, TensorData};
    use oodforge_core::rng::uniform_noise;

    use crate::{batch_norm, conv};

    fn tensor<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
        let n = shape.iter().product();
        Tensor::from_data(TensorData::new(uniform_noise(n, seed), shape), device)
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().convert::<f32>().to_vec().unwrap()
    }

    fn close(what: &str, got: &[f32], want: &[f32], tol: f32) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= tol * (1.0 + w.abs()),
                "{what}[{i}]: {g} vs {w}"
            );
        }
    }

    /// `conv::conv2d` on LibTorch under autodiff (libtorch's forward and
    /// `convolution_backward`) against burn's own `Conv2d::forward` and generic backward on
    /// flex: values and the gradients of x, weight and bias, for strides, dilation, a bias, and
    /// an input that needs no gradient (the first layer: libtorch skips dX).
    #[test]
    fn convolution_matches_burns_on_flex() {
        let _rng = crate::tests::device_rng();
        let torch = Device::libtorch().autodiff();
        let flex = Device::flex().autodiff();
        for (stride, pad, dilation, bias, x_grad) in [
            (1, 1, 1, false, true),
            (2, 1, 1, true, true),
            (1, 2, 2, true, false),
            (2, 0, 1, false, true),
        ] {
            let case = format!("stride {stride} pad {pad} dilation {dilation} bias {bias}");
            let run = |device: &Device, ours: bool| {
                let conv = Conv2dConfig::new([3, 5], [3, 3])
                    .with_stride([stride, stride])
                    .with_dilation([dilation, dilation])
                    .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                    .with_bias(bias)
                    .init(device);
                let conv = Conv2d {
                    weight: Param::from_tensor(tensor([5, 3, 3, 3], 1, device).require_grad()),
                    bias: bias.then(|| Param::from_tensor(tensor([5], 2, device).require_grad())),
                    ..conv
                };
                let mut x = tensor([2, 3, 11, 9], 3, device);
                if x_grad {
                    x = x.require_grad();
                }
                let y = if ours {
                    assert!(conv::gemm_options(&conv, &x).is_some(), "{case}: the path");
                    conv::conv2d(&conv, x.clone())
                } else {
                    conv.forward(x.clone())
                };
                let dims = y.dims();
                let target = tensor(dims, 4, device);
                let grads = (y.clone() * target).sum().backward();
                let mut out = vec![values(y), values(conv.weight.val().grad(&grads).unwrap())];
                if let Some(b) = &conv.bias {
                    out.push(values(b.val().grad(&grads).unwrap()));
                }
                let dx = x.grad(&grads);
                assert_eq!(dx.is_some(), x_grad, "{case}: dx");
                out.extend(dx.map(values));
                out
            };
            let (got, want) = (run(&torch, true), run(&flex, false));
            assert_eq!(got.len(), want.len(), "{case}");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                close(&format!("{case}: output {i}"), g, w, 1e-4);
            }
        }
    }

    /// Asymmetric padding is not libtorch's: such a layer keeps burn's path.
    #[test]
    fn asymmetric_padding_keeps_burns_path() {
        let _rng = crate::tests::device_rng();
        let torch = Device::libtorch().autodiff();
        let conv = Conv2dConfig::new([3, 5], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(0, 0, 1, 1))
            .init(&torch);
        let x = Tensor::<4>::zeros([1, 3, 8, 8], &torch);
        assert!(conv::gemm_options(&conv, &x).is_none());
    }

    /// `batch_norm` / `batch_norm_relu` on LibTorch under autodiff (libtorch's
    /// `native_batch_norm` and its backward) against the textbook formulas written with burn
    /// tensor operations on flex: output, the three gradients, and the running statistics
    /// (PyTorch's update, unbiased variance).
    #[test]
    fn batch_norm_matches_the_formula() {
        let torch = Device::libtorch().autodiff();
        let flex = Device::flex().autodiff();
        let shape = [4, 3, 5, 6];
        for relu in [false, true] {
            let init = |device: &Device| {
                let bn: BatchNorm = BatchNormConfig::new(3).init(device);
                BatchNorm {
                    gamma: Param::from_tensor(
                        tensor([3], 5, device).add_scalar(1.5).require_grad(),
                    ),
                    beta: Param::from_tensor(tensor([3], 6, device).require_grad()),
                    ..bn
                }
            };
            let bn = init(&torch);
            let x = tensor(shape, 7, &torch)
                .mul_scalar(2.0)
                .add_scalar(0.3)
                .require_grad();
            let y = if relu {
                batch_norm::batch_norm_relu(&bn, x.clone())
            } else {
                batch_norm::batch_norm(&bn, x.clone())
            };
            let grads = (y.clone() * tensor(shape, 8, &torch)).sum().backward();
            let got = [
                values(y),
                values(x.grad(&grads).unwrap()),
                values(bn.gamma.val().grad(&grads).unwrap()),
                values(bn.beta.val().grad(&grads).unwrap()),
                values(bn.running_mean.value_sync()),
                values(bn.running_var.value_sync()),
            ];

            let reference = init(&flex);
            let x = tensor(shape, 7, &flex)
                .mul_scalar(2.0)
                .add_scalar(0.3)
                .require_grad();
            let mean = x.clone().mean_dim(0).mean_dim(2).mean_dim(3);
            let centred = x.clone() - mean.clone();
            let var = centred.clone().square().mean_dim(0).mean_dim(2).mean_dim(3);
            let scale = reference.gamma.val().reshape([1, 3, 1, 1]);
            let shift = reference.beta.val().reshape([1, 3, 1, 1]);
            let mut y = centred / var.clone().add_scalar(1e-5).sqrt() * scale + shift;
            if relu {
                y = burn::tensor::activation::relu(y);
            }
            let grads = (y.clone() * tensor(shape, 8, &flex)).sum().backward();
            let n = (4 * 5 * 6) as f32;
            let mean = values(mean.detach().reshape([3]));
            let var = values(var.detach().reshape([3]));
            let want = [
                values(y),
                values(x.grad(&grads).unwrap()),
                values(reference.gamma.val().grad(&grads).unwrap()),
                values(reference.beta.val().grad(&grads).unwrap()),
                mean.iter().map(|m| 0.1 * m).collect(),
                var.iter().map(|v| 0.9 + 0.1 * v * n / (n - 1.0)).collect(),
            ];
            let names = ["y", "dx", "dgamma", "dbeta", "running mean", "running var"];
            for ((name, g), w) in names.iter().zip(&got).zip(&want) {
                close(&format!("relu {relu}: {name}"), g, w, 1e-4);
            }
        }
    }

    /// `layer_norm` on LibTorch under autodiff (libtorch's `native_layer_norm` and its
    /// backward) against the formula with burn tensor operations on flex: output and the three
    /// gradients, over the last axis of a 3-D input.
    #[test]
    fn layer_norm_matches_the_formula() {
        let shape = [3, 5, 8];
        let run = |device: &Device, ours: bool| {
            let mut ln = burn::nn::LayerNormConfig::new(8).init(device);
            ln.gamma = Param::from_tensor(tensor([8], 9, device).add_scalar(1.0).require_grad());
            ln.beta = Some(Param::from_tensor(tensor([8], 10, device).require_grad()));
            let x = tensor(shape, 11, device).mul_scalar(3.0).require_grad();
            let y = if ours {
                crate::layer_norm::layer_norm(&ln, 1e-5, x.clone())
            } else {
                let mean = x.clone().mean_dim(2);
                let centred = x.clone() - mean;
                let var = centred.clone().square().mean_dim(2);
                let beta = ln.beta.as_ref().unwrap().val().reshape([1, 1, 8]);
                centred / var.add_scalar(1e-5).sqrt() * ln.gamma.val().reshape([1, 1, 8]) + beta
            };
            let grads = (y.clone() * tensor(shape, 12, device)).sum().backward();
            [
                values(y),
                values(x.grad(&grads).unwrap()),
                values(ln.gamma.val().grad(&grads).unwrap()),
                values(ln.beta.as_ref().unwrap().val().grad(&grads).unwrap()),
            ]
        };
        let got = run(&Device::libtorch().autodiff(), true);
        let want = run(&Device::flex().autodiff(), false);
        for ((name, g), w) in ["y", "dx", "dgamma", "dbeta"].iter().zip(&got).zip(&want) {
            close(name, g, w, 1e-4);
        }
    }

    /// `softmax_last` on LibTorch under autodiff (libtorch's softmax and
    /// `_softmax_backward_data`) against burn's softmax and generic backward on flex.
    #[test]
    fn softmax_matches_burns_on_flex() {
        let shape = [2, 3, 7, 7];
        let run = |device: &Device, ours: bool| {
            let x = tensor(shape, 13, device).mul_scalar(4.0).require_grad();
            let y = if ours {
                crate::softmax::softmax_last(x.clone())
            } else {
                burn::tensor::activation::softmax(x.clone(), 3)
            };
            let grads = (y.clone() * tensor(shape, 14, device)).sum().backward();
            [values(y), values(x.grad(&grads).unwrap())]
        };
        let got = run(&Device::libtorch().autodiff(), true);
        let want = run(&Device::flex().autodiff(), false);
        for ((name, g), w) in ["y", "dx"].iter().zip(&got).zip(&want) {
            close(name, g, w, 1e-5);
        }
    }

    /// A libtorch error inside the shim comes back as its message (here a channel mismatch
    /// between input and weight), turned into a panic that names it by `take`, with no
    /// gradient handed out; no C++ exception unwinds into Rust.
    #[test]
    fn shim_errors_come_back_as_messages() {
        let options = (tch::Kind::Float, tch::Device::Cpu);
        let dy = tch::Tensor::zeros([1, 2, 3, 3], options);
        let x = tch::Tensor::zeros([1, 4, 5, 5], options);
        let w = tch::Tensor::zeros([2, 3, 3, 3], options);
        let (one, zero) = ([1i64, 1], [0i64, 0]);
        let mut outs = [std::ptr::null_mut(); 2];
        let [dx, dw] = &mut outs;
        // SAFETY: as in `ConvBackward::backward`.
        let error = unsafe {
            super::oodforge_conv2d_backward(
                dy.as_ptr(),
                x.as_ptr(),
                w.as_ptr(),
                one.as_ptr(),
                zero.as_ptr(),
                one.as_ptr(),
                1,
                1,
                1,
                dx,
                dw,
            )
        };
        assert!(!error.is_null(), "a mismatch is an error");
        assert!(outs.iter().all(|p| p.is_null()), "no gradient on error");
        let panic = std::panic::catch_unwind(|| super::take(error, outs)).unwrap_err();
        let text = panic.downcast_ref::<String>().expect("a formatted message");
        assert!(
            text.starts_with("libtorch backward kernel failed: ") && text.contains("channels"),
            "{text}"
        );
    }
}
