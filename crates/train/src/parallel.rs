//! One optimiser step's gradients, on one device or data-parallel over several.
//!
//! Data parallelism as `torch.nn.DataParallel` does it, the way the official OE and energy-OE
//! code trains on several GPUs (`--ngpu`). It is built on burn's own multi-device pieces:
//! `Module::fork`, `GradientsParams::to_device` and `GradientsAccumulator`.
//! - The model is forked onto every further device at each step, so every replica has the
//!   current weights.
//! - Each forward pass is scattered over the devices (`oodforge_models::data_parallel`).
//! - The objective computes its loss on the gathered outputs of the whole batch, on the main
//!   device. So for every objective the loss is the one-device loss of the same global batch;
//!   only batch norm differs, normalising each device's chunk with the chunk's statistics.
//! - One backward pass reaches every replica's parameters through the gathers. Their
//!   gradients are moved to the main device and summed there, where the optimiser steps.
//!
//! The replicas' forward passes are issued one after the other from this thread, all before
//! any output is gathered. On GPU backends each device runs its kernels asynchronously, so the
//! devices overlap (the backward pass, in burn's graph order, less so); on CPU
//! backends every "device" is the same processor, so the result is that of several GPUs with no
//! speed-up. That is what the tests use.

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use oodforge_core::rng::{Purpose, device_stream, stream};
use oodforge_data::TrainBatch;
use oodforge_losses::{LossTerms, Objective, StepInput};
use oodforge_models::Classifier;
use oodforge_models::data_parallel::DataParallel;
use rand::RngCore;

/// What one step produced.
pub(crate) struct StepOutcome {
    pub loss: LossTerms,
    /// Logits of the ID rows (training accuracy).
    pub logits: Tensor<2>,
    /// The ID labels, on the main device.
    pub labels: Tensor<1, Int>,
    /// ID rows (images x views).
    pub rows: usize,
    /// The gradients of `loss.total`, on the main device.
    pub grads: GradientsParams,
}

/// Where a step is in the run: the keys of its random streams.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepKey {
    pub seed: u64,
    pub epoch: usize,
    pub step: usize,
}

/// Run the objective on `batch` with `model` (on `devices[0]`), data-parallel over `devices`.
pub(crate) fn step(
    model: &Classifier,
    objective: &mut Objective,
    devices: &[Device],
    batch: TrainBatch,
    key: StepKey,
) -> StepOutcome {
    let main = &devices[0];
    let TrainBatch {
        id: batch,
        outliers,
    } = batch;
    // Multi-view batches are view-major; every view keeps its image's label.
    let label_values = batch.labels.repeat(batch.views);
    let labels: Vec<i64> = label_values.iter().map(|&l| l as i64).collect();
    let n = labels.len();
    let x = Tensor::<4>::from_data(TensorData::new(batch.images, batch.shape), main);
    let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), main);
    let outliers =
        outliers.map(|o| Tensor::<4>::from_data(TensorData::new(o.images, o.shape), main));

    // The device RNG (dropout masks) is keyed by the step, like every other draw, so a run
    // resumed at any step trains exactly as an uninterrupted one. A further device has its own
    // stream; replicas on the main device itself (CPU backends) draw on after the main one.
    let (seed, epoch, step) = (key.seed, key.epoch as u64, key.step as u64);
    main.seed(device_stream(seed, Purpose::Dropout, epoch, step, 0).next_u64());
    for (k, device) in devices.iter().enumerate().skip(1) {
        if device != main {
            device.seed(device_stream(seed, Purpose::Dropout, epoch, step, k as u64).next_u64());
        }
    }
    let input = StepInput {
        images: x,
        labels: y.clone(),
        label_values: &label_values,
        outliers,
        epoch: key.epoch,
    };
    // The objective runs the forward pass(es) and draws from this step's own stream.
    let mut rng = stream(seed, Purpose::Objective, epoch, step);

    let (out, grads) = if devices.len() == 1 {
        let out = objective.step(model, input, &mut rng);
        let grads = GradientsParams::from_grads(out.loss.total.backward(), model);
        (out, grads)
    } else {
        let replicas: Vec<(Classifier, Device)> = devices[1..]
            .iter()
            .map(|d| (model.clone().fork(d), d.clone()))
            .collect();
        let out = objective.step(&DataParallel::new(model, &replicas), input, &mut rng);
        let mut all = out.loss.total.backward();
        let mut accumulator = GradientsAccumulator::new();
        accumulator.accumulate(model, GradientsParams::from_module(&mut all, model));
        for (replica, _) in &replicas {
            let grads = GradientsParams::from_module(&mut all, replica);
            accumulator.accumulate(model, grads.to_device(main, model));
        }
        // burn's running statistics (`RunningState`) are shared by a module and its forks, and
        // forking moved their value to the last device: bring it back to the main device.
        let _ = model.clone().to_device(main);
        (out, accumulator.grads())
    };
    StepOutcome {
        loss: out.loss,
        logits: out.logits,
        labels: y,
        rows: n,
        grads,
    }
}
