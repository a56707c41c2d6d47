//! Dropout whose mask on the flex (CPU) backend comes from a counter-based generator, on every
//! thread, and is recomputed in the backward pass instead of stored.
//!
//! Why: burn's `Dropout` draws its Bernoulli mask with `random_like`, which flex fills from one
//! ChaCha generator on one thread, and keeps the mask as an f32 tensor until the backward pass.
//! In a WRN-40-2 training step (dropout 0.3 in all 18 blocks, OE's setting) drawing the masks
//! was 8.5% of the CPU time (BENCHMARKS.md, "Dropout masks from a counter-based generator").
//!
//! Here each call draws one 64-bit key from the device's generator (so the masks follow the
//! device seed that the training loop sets per step, and a resumed run draws the same masks),
//! and element `i` is kept when the SplitMix64 output for `(key, i)` (Steele, Lea & Flood,
//! "Fast splittable pseudorandom number generators", OOPSLA 2014: the generator of Java's
//! `SplittableRandom`) is below `(1 - p) · 2^64`. Kept values are scaled by `1 / (1 - p)`, as in
//! burn's and PyTorch's dropout; the masks themselves are not PyTorch's (nor burn's) random
//! numbers, which no CPU implementation shares anyway.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use burn::nn::Dropout;
use burn::tensor::{DType, Distribution, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;

use crate::activation::map_floats;
use crate::simd::dispatch;

/// Elements per parallel task.
const TASK: usize = 1 << 16;

/// `dropout.forward(x)`, with the counter-based mask on flex autodiff devices.
pub fn dropout<const D: usize>(dropout: &Dropout, x: Tensor<D>) -> Tensor<D> {
    // burn's conditions for an identity (Dropout::forward): not training, or no backward
    // possible, or p = 0.
    let device = x.device();
    if !dropout.training.is_enabled() || !device.is_autodiff() || dropout.prob == 0.0 {
        return x;
    }
    if !crate::on_flex_autodiff(&device) || x.dtype() != DType::F32 {
        return dropout.forward(x);
    }
    let mask = Mask::new(dropout.prob, draw_key(&device));
    Tensor::<D>::from_dispatch(<burn::backend::Dispatch as DropoutFused>::dropout_fused(
        x.into_dispatch(),
        mask,
    ))
}

/// One 64-bit key from the device's generator: three uniform draws of 24 bits each (an f32 in
/// [0, 1) carries 24), mixed.
fn draw_key(device: &burn::tensor::Device) -> u64 {
    let draws = Tensor::<1>::random([3], Distribution::Uniform(0.0, 1.0), device)
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32 draws");
    let bits = draws.iter().fold(0u64, |acc, v| {
        (acc << 24) | ((v * 16_777_216.0) as u64 & 0xff_ffff)
    });
    splitmix64(bits)
}

/// Which elements one dropout call keeps, and the scale of the kept ones.
#[derive(Debug, Clone, Copy)]
pub struct Mask {
    key: u64,
    /// Element `i` is kept when its 64-bit draw is below this: `(1 - p) · 2^64`.
    threshold: u64,
    /// `1 / (1 - p)` as burn's dropout rounds it (an f64 scalar applied to f32 values).
    scale: f32,
}

impl Mask {
    pub fn new(p: f64, key: u64) -> Self {
        let keep = 1.0 - p;
        Self {
            key,
            // `as` saturates at u64::MAX for keep = 1
            threshold: (keep * 18_446_744_073_709_551_616.0) as u64,
            scale: (1.0 / keep) as f32,
        }
    }

    #[inline(always)]
    fn keeps(&self, i: usize) -> bool {
        splitmix64(self.key.wrapping_add((i as u64).wrapping_mul(GOLDEN_GAMMA))) < self.threshold
    }

    /// `x · keep(i) · scale` elementwise: the forward pass, and with `x = dy` the backward.
    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        // SAFETY: the tasks cover `x`, and `masked` writes every value of its task.
        unsafe {
            crate::written(x.len(), |y| {
                y.par_chunks_mut(TASK)
                    .zip(x.par_chunks(TASK))
                    .enumerate()
                    .for_each(|(task, (out, inp))| masked(*self, task * TASK, inp, out))
            })
        }
    }
}

dispatch! {
    /// Values `first..first + x.len()` of `x · keep(i) · scale`. The AVX2 copy draws four 64-bit
    /// hashes per instruction where the baseline's SSE2 draws two, and compares them in one
    /// instruction where SSE2 has no 64-bit comparison: the masks were 5.3% of a WRN-40-2
    /// training step's CPU time in SSE2 code (BENCHMARKS.md, "Outputs written once, not zeroed
    /// first").
    fn masked(mask: Mask, first: usize, x: &[f32], y: &mut [MaybeUninit<f32>]) = masked_loop;
}

#[inline(always)]
fn masked_loop(mask: Mask, first: usize, x: &[f32], y: &mut [MaybeUninit<f32>]) {
    assert_eq!(x.len(), y.len());
    for (k, (o, v)) in y.iter_mut().zip(x).enumerate() {
        // burn's `x * mask * scale`: a dropped NaN is NaN · 0 = NaN there too
        let m = if mask.keeps(first + k) { 1.0 } else { 0.0 };
        o.write(v * m * mask.scale);
    }
}

/// SplitMix64's increment, 2^64 / φ rounded to odd.
const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's output function (the `mix64` of the paper, variant 13 of Stafford's mixers).
#[inline(always)]
fn splitmix64(z: u64) -> u64 {
    let z = z.wrapping_add(GOLDEN_GAMMA);
    let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A dropout whose autodiff implementation on flex keeps only the mask's key.
#[backend_extension(Autodiff, Flex)]
pub trait DropoutFused: Backend {
    fn dropout_fused(x: FloatTensor<Self>, mask: Mask) -> FloatTensor<Self>;
}

impl DropoutFused for Flex {
    fn dropout_fused(x: FloatTensor<Self>, mask: Mask) -> FloatTensor<Self> {
        apply(x, &mask)
    }
}

impl<C: CheckpointStrategy> DropoutFused for Autodiff<Flex, C> {
    fn dropout_fused(x: FloatTensor<Self>, mask: Mask) -> FloatTensor<Self> {
        match DropoutBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = apply(x.into_primitive(), &mask);
                prep.finish(mask, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(apply(x.into_primitive(), &mask)),
        }
    }
}

fn apply(x: FloatTensor<Flex>, mask: &Mask) -> FloatTensor<Flex> {
    map_floats(x, |values| mask.apply(values))
}

#[derive(Debug)]
struct DropoutBackward;

impl Backward<Flex, 1> for DropoutBackward {
    /// The mask: `dx = dy · keep · scale`, the forward's own map.
    type State = Mask;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        if let Some(node) = node {
            grads.register::<Flex>(node.id, apply(dy, &ops.state));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::DropoutConfig;
    use burn::tensor::Device;

    /// The kept share is `1 - p` (binomial: within 5 standard deviations), kept values are
    /// scaled by `1 / (1 - p)`, and consecutive elements are not correlated.
    #[test]
    fn mask_keeps_one_minus_p_independently() {
        let n = 1 << 20;
        let x = vec![1.0f32; n];
        for (p, key) in [(0.3, 7u64), (0.5, 8), (0.9, 9), (0.01, 10)] {
            let mask = Mask::new(p, key);
            let y = mask.apply(&x);
            let scale = (1.0 / (1.0 - p)) as f32;
            assert!(y.iter().all(|v| *v == 0.0 || *v == scale), "p {p}: values");
            let kept: Vec<bool> = y.iter().map(|v| *v != 0.0).collect();
            let share = kept.iter().filter(|k| **k).count() as f64 / n as f64;
            let sd = (p * (1.0 - p) / n as f64).sqrt();
            assert!((share - (1.0 - p)).abs() < 5.0 * sd, "p {p}: kept {share}");
            // P(kept, next kept) = (1 - p)^2 for independent draws
            let both = kept.windows(2).filter(|w| w[0] && w[1]).count() as f64 / (n - 1) as f64;
            let want = (1.0 - p) * (1.0 - p);
            let sd = (want * (1.0 - want) / n as f64).sqrt();
            assert!(
                (both - want).abs() < 6.0 * sd,
                "p {p}: pairs {both} vs {want}"
            );
        }
        // another key, another mask
        let a = Mask::new(0.5, 1).apply(&x[..4096]);
        let b = Mask::new(0.5, 2).apply(&x[..4096]);
        let same = a.iter().zip(&b).filter(|(u, v)| u == v).count();
        assert!(
            (1800..2300).contains(&same),
            "keys 1 and 2 agree on {same} of 4096"
        );
    }

    /// The dispatched loop (its AVX2 copy, on processors that have AVX2 and FMA) gives the
    /// baseline loop's bits, with a NaN and a tail, from offsets that are not multiples of 4.
    #[test]
    fn dispatched_mask_matches_the_baseline_bit_for_bit() {
        let bits = |f: &dyn Fn(&mut [MaybeUninit<f32>]), len: usize| {
            let mut out = vec![MaybeUninit::new(-1.0f32); len];
            f(&mut out);
            out.iter()
                .map(|v| unsafe { v.assume_init() }.to_bits())
                .collect::<Vec<_>>()
        };
        for (len, first, p) in [(1, 0, 0.3), (7, 3, 0.5), (64, 1, 0.1), (1027, 12345, 0.7)] {
            let mut x: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin() - 0.2).collect();
            x[len / 2] = f32::NAN;
            let mask = Mask::new(p, 0x0123_4567_89ab_cdef);
            let got = bits(&|o| masked(mask, first, &x, o), len);
            let want = bits(&|o| masked_loop(mask, first, &x, o), len);
            assert_eq!(got, want, "len {len}, first {first}, p {p}");
            // and the loop is the definition: keep(i) · scale · x
            for (k, v) in x.iter().enumerate() {
                let m = if mask.keeps(first + k) { 1.0 } else { 0.0 };
                assert_eq!(
                    want[k],
                    (v * m * mask.scale).to_bits(),
                    "[{k}] of len {len}"
                );
            }
        }
    }

    /// On a flex autodiff device: the output is `x · scale` or 0, the gradient is the same mask
    /// times `dy`, the device seed fixes the mask, and evaluation / inference is the identity.
    #[test]
    fn extension_masks_values_and_gradients_alike_and_follows_the_seed() {
        let _rng = crate::tests::device_rng();
        let device = Device::flex().autodiff();
        let layer = DropoutConfig::new(0.3).init();
        let x =
            Tensor::<2>::random([64, 300], Distribution::Uniform(1.0, 2.0), &device).require_grad();
        let weights = Tensor::<2>::random([64, 300], Distribution::Uniform(-1.0, 1.0), &device);
        let run = |seed: u64| {
            device.seed(seed);
            let x = x.clone().detach().require_grad();
            let y = dropout(&layer, x.clone());
            let grads = (y.clone() * weights.clone()).sum().backward();
            let dx = x
                .grad(&grads)
                .unwrap()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            (y.into_data().try_to_vec::<f32>().unwrap(), dx)
        };
        let (y, dx) = run(5);
        let xs = x.clone().into_data().try_to_vec::<f32>().unwrap();
        let ws = weights.clone().into_data().try_to_vec::<f32>().unwrap();
        let scale = (1.0f64 / 0.7) as f32;
        let mut kept = 0;
        for i in 0..y.len() {
            if y[i] == 0.0 {
                assert_eq!(dx[i], 0.0, "[{i}] dropped: no gradient");
            } else {
                kept += 1;
                assert_eq!(y[i], xs[i] * scale, "[{i}] kept value");
                assert_eq!(dx[i], ws[i] * scale, "[{i}] kept gradient");
            }
        }
        let share = kept as f64 / y.len() as f64;
        assert!((share - 0.7).abs() < 0.02, "kept share {share}");
        assert_eq!(run(5).0, y, "same device seed, same mask");
        assert_ne!(run(6).0, y, "another seed, another mask");
        // consecutive calls draw new keys
        device.seed(5);
        let first = dropout(&layer, x.clone())
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let second = dropout(&layer, x.clone())
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_ne!(first, second, "two calls, two masks");
        // no autodiff, or p = 0: the identity, as burn's
        let plain = x.clone().inner();
        let same = dropout(&layer, plain.clone());
        assert_eq!(same.into_data(), plain.into_data());
        let none = DropoutConfig::new(0.0).init();
        assert_eq!(dropout(&none, x.clone()).into_data(), x.clone().into_data());
    }
}
