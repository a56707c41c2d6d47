//! ReLU whose training step on the flex (CPU) backend is one pass each way, through burn's
//! backend-extension mechanism.
//!
//! Why: on flex, burn's autodiff ReLU writes its output, then in the backward builds a boolean
//! mask of the output in a pass of its own and applies it in another, each into a fresh buffer: a
//! ResNet-18 stage-1 ReLU (128 x 64 x 32 x 32) took 80 ms forward + backward against PyTorch's 22
//! (BENCHMARKS.md, "Where the time goes"). Here the forward is one pass and the backward one pass
//! over the saved output and the incoming gradient. A ReLU that follows a batch norm is fused into
//! the batch norm instead ([`crate::batch_norm::batch_norm_relu`]).
//!
//! Values and gradients are burn's (and PyTorch's): `max(x, 0)`, gradient 0 where the output is 0.

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use burn::tensor::{DType, Tensor, TensorData};
use rayon::prelude::*;

/// Elements per parallel task: large enough that rayon's overhead is noise.
const TASK: usize = 1 << 16;

/// `relu(x)`, in one pass each way on flex autodiff devices (burn's `relu` elsewhere).
pub fn relu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let on_flex_autodiff = crate::on_flex_autodiff(&x.device());
    if !on_flex_autodiff || x.dtype() != DType::F32 {
        return burn::tensor::activation::relu(x);
    }
    Tensor::<D>::from_dispatch(<burn::backend::Dispatch as ReluFused>::relu_fused(
        x.into_dispatch(),
    ))
}

/// A ReLU whose autodiff implementation on flex saves only its output.
#[backend_extension(Autodiff, Flex)]
pub trait ReluFused: Backend {
    fn relu_fused(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl ReluFused for Flex {
    fn relu_fused(x: FloatTensor<Self>) -> FloatTensor<Self> {
        forward(x)
    }
}

impl<C: CheckpointStrategy> ReluFused for Autodiff<Flex, C> {
    fn relu_fused(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match ReluBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = forward(x.into_primitive());
                prep.finish(y.clone(), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(x.into_primitive())),
        }
    }
}

#[derive(Debug)]
struct ReluBackward;

impl Backward<Flex, 1> for ReluBackward {
    /// The output: the gradient passes where it is not `<= 0`.
    type State = FloatTensor<Flex>;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let Some(node) = node else { return };
        let (y, dy) = (ops.state.to_contiguous(), dy.to_contiguous());
        let (device, shape) = (y.device(), y.shape());
        let dx = backward_kernel(floats(&y), floats(&dy));
        let data = TensorData::new(dx, shape);
        grads.register::<Flex>(node.id, Flex::float_from_data(data, &device));
    }
}

/// The values of a contiguous f32 tensor, borrowed.
fn floats(t: &FloatTensor<Flex>) -> &[f32] {
    t.as_slice::<f32>()
        .expect("the fused ReLU is taken for contiguous f32 tensors only")
}

fn forward(x: FloatTensor<Flex>) -> FloatTensor<Flex> {
    let x = x.to_contiguous();
    let (device, shape) = (x.device(), x.shape());
    let y = forward_kernel(floats(&x));
    Flex::float_from_data(TensorData::new(y, shape), &device)
}

/// `max(v, 0)` as burn's and PyTorch's ReLU computes it: 0 where `v <= 0`, `v` elsewhere, so a
/// NaN stays NaN (divergence must stay visible to the training loop).
#[inline(always)]
pub(crate) fn relu1(v: f32) -> f32 {
    if v <= 0.0 { 0.0 } else { v }
}

/// `max(x, 0)` elementwise.
pub fn forward_kernel(x: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0f32; x.len()];
    y.par_chunks_mut(TASK)
        .zip(x.par_chunks(TASK))
        .for_each(|(out, inp)| {
            for (o, v) in out.iter_mut().zip(inp) {
                *o = relu1(*v);
            }
        });
    y
}

/// 0 where the output is `<= 0`, `dy` elsewhere (burn's ReLU backward).
pub fn backward_kernel(y: &[f32], dy: &[f32]) -> Vec<f32> {
    let mut dx = vec![0.0f32; y.len()];
    dx.par_chunks_mut(TASK)
        .zip(y.par_chunks(TASK).zip(dy.par_chunks(TASK)))
        .for_each(|(out, (ys, gs))| {
            for (o, (v, g)) in out.iter_mut().zip(ys.iter().zip(gs)) {
                *o = if *v <= 0.0 { 0.0 } else { *g };
            }
        });
    dx
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec().unwrap()
    }

    /// On a flex autodiff device, against burn's `relu`: values and input gradient, with exact
    /// zeros in the input (gradient 0 there in both) and a NaN (kept, as burn keeps it).
    #[test]
    fn fused_relu_matches_burns_relu_with_gradient() {
        let device = Device::flex().autodiff();
        let mut x = values(Tensor::<3>::random(
            [4, 3, 50],
            Distribution::Normal(0.0, 1.0),
            &device,
        ));
        for i in (0..x.len()).step_by(7) {
            x[i] = 0.0;
        }
        x[5] = f32::NAN;
        let x = Tensor::<3>::from_data(TensorData::new(x, [4, 3, 50]), &device);
        let target = Tensor::<3>::random([4, 3, 50], Distribution::Default, &device);
        let run = |f: &dyn Fn(Tensor<3>) -> Tensor<3>| {
            let x = x.clone().require_grad();
            let y = f(x.clone());
            let grads = (y.clone() * target.clone()).sum().backward();
            (values(y), values(x.grad(&grads).unwrap()))
        };
        let (y, dx) = run(&|x| relu(x));
        let (want_y, want_dx) = run(&|x| burn::tensor::activation::relu(x));
        assert!(y[5].is_nan() && want_y[5].is_nan(), "NaN propagates");
        // Bit for bit: both are selections, no arithmetic (NaN compared by its bits).
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&y), bits(&want_y), "values");
        assert_eq!(bits(&dx), bits(&want_dx), "gradients");
        let clamped = y.iter().filter(|v| **v == 0.0).count();
        assert!(clamped > 200 && clamped < 400, "{clamped} of 600 clamped");
    }

    #[test]
    fn kernels_on_a_boundary_case() {
        let x = [-1.0, -0.0, 0.0, 2.5, f32::NAN];
        let y = forward_kernel(&x);
        assert_eq!(&y[..4], &[0.0, 0.0, 0.0, 2.5]);
        assert!(y[4].is_nan());
        let dx = backward_kernel(&y, &[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(dx, vec![0.0, 0.0, 0.0, 4.0, 5.0]);
    }
}
