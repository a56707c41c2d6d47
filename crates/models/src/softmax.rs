//! Softmax over the last axis whose training step on the flex (CPU) backend is flex's fused
//! softmax forward and one multi-threaded pass backward, through burn's backend-extension
//! mechanism.
//!
//! Why: burn's autodiff backend has no softmax op of its own, so under autodiff `softmax` is
//! burn-backend's default decomposition (max, subtract, exp, sum, divide), five tracked ops with
//! a fresh buffer each and their backwards, several of them one-threaded broadcasting ops on
//! flex. ViT's attention runs one per block on `[b, heads, n, n]` (BENCHMARKS.md, "ViT: fused
//! softmax"). Here the forward pass is flex's own softmax (multi-threaded, vectorised) and saves
//! its output; the backward is `dx = y · (dy - Σ dy · y)` per row, the softmax Jacobian-vector
//! product PyTorch's `_softmax_backward_data` computes.

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::ActivationOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

use crate::activation::unary_backward;

use crate::layer_norm::dot;

/// Values per parallel task, rounded down to whole rows.
const TASK: usize = 1 << 15;

/// `softmax(x, D - 1)`: the fused kernels on flex autodiff devices for f32 (libtorch's on
/// LibTorch autodiff, `libtorch.rs`), burn's `softmax` elsewhere.
pub fn softmax_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !crate::on_fused_autodiff(&x.device()) || x.dtype() != DType::F32 {
        return burn::tensor::activation::softmax(x, D - 1);
    }
    Tensor::<D>::from_dispatch(<burn::backend::Dispatch as SoftmaxFused>::softmax_last(
        x.into_dispatch(),
    ))
}

/// Softmax over the last axis.
#[backend_extension(Autodiff, Flex, LibTorch: cfg(feature = "tch"))]
pub trait SoftmaxFused: Backend {
    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl SoftmaxFused for Flex {
    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let last = x.shape().num_dims() - 1;
        Flex::softmax(x, last)
    }
}

impl<C: CheckpointStrategy> SoftmaxFused for Autodiff<Flex, C> {
    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let last = x.shape().num_dims() - 1;
        match SoftmaxBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = Flex::softmax(x.into_primitive(), last);
                prep.finish(y.clone(), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::softmax(x.into_primitive(), last)),
        }
    }
}

#[derive(Debug)]
struct SoftmaxBackward;

impl Backward<Flex, 1> for SoftmaxBackward {
    /// The output.
    type State = FloatTensor<Flex>;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let shape = ops.state.shape();
        let row = shape[shape.num_dims() - 1];
        unary_backward(ops, grads, |y, dy| backward_kernel(y, dy, row));
    }
}

/// `dx = y · (dy - Σ dy · y)` per row of `row` values; the row sums in f64.
pub fn backward_kernel(y: &[f32], dy: &[f32], row: usize) -> Vec<f32> {
    let mut dx = vec![0.0f32; y.len()];
    if row == 0 {
        return dx;
    }
    let task = (TASK / row).max(1) * row;
    dx.par_chunks_mut(task)
        .zip(y.par_chunks(task).zip(dy.par_chunks(task)))
        .for_each(|(dxs, (ys, dys))| {
            let rows = dxs.chunks_exact_mut(row).zip(ys.chunks_exact(row));
            for ((dx, y), dy) in rows.zip(dys.chunks_exact(row)) {
                let s = dot(dy, y) as f32;
                for ((o, y), g) in dx.iter_mut().zip(y).zip(dy) {
                    *o = y * (g - s);
                }
            }
        });
    dx
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};
    use oodforge_testutil::max_abs_diff;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec().unwrap()
    }

    /// On a flex autodiff device, against burn's `softmax` (burn-backend's decomposition):
    /// values and input gradient for a 4-d input with an odd row length (vector tails), rows
    /// spanning several tasks, large logits (the max shift matters) and a non-contiguous input.
    #[test]
    fn fused_softmax_matches_burns_softmax_with_gradient() {
        let _rng = crate::tests::device_rng();
        let device = Device::flex().autodiff();
        let x = Tensor::<4>::random([3, 2, 67, 65], Distribution::Normal(0.0, 8.0), &device)
            .swap_dims(2, 3);
        let target = Tensor::<4>::random([3, 2, 65, 67], Distribution::Default, &device);
        let run = |f: &dyn Fn(Tensor<4>) -> Tensor<4>| {
            let x = x.clone().require_grad();
            let y = f(x.clone());
            let grads = (y.clone() * target.clone()).sum().backward();
            (values(y), values(x.grad(&grads).unwrap()))
        };
        let (y, dx) = run(&|x| softmax_last(x));
        let (want_y, want_dx) = run(&|x| burn::tensor::activation::softmax(x, 3));
        assert!(max_abs_diff(&y, &want_y) < 1e-6, "values");
        let scale = want_dx.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.05, "a real gradient: {scale}");
        let diff = max_abs_diff(&dx, &want_dx);
        assert!(diff < 1e-6 * scale.max(1.0), "gradient: {diff}");
    }

    /// The backward on one row by hand: y = [0.5, 0.25, 0.25], dy = [1, 0, 2],
    /// Σ dy · y = 1, dx = y · (dy - 1) = [0, -0.25, 0.25].
    #[test]
    fn backward_on_one_row_by_hand() {
        let dx = backward_kernel(&[0.5, 0.25, 0.25], &[1.0, 0.0, 2.0], 3);
        assert_eq!(dx, vec![0.0, -0.25, 0.25]);
    }
}
