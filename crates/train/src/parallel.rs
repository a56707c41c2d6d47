//! One optimiser step's gradients, on one device or data-parallel over several.
//!
//! Data parallelism as PyTorch DDP does it, with burn's own multi-device pieces
//! (`Module::fork`, `GradientsParams::to_device`, `GradientsAccumulator`):
//! - every batch is split into one contiguous shard of rows per device (the outlier batch too),
//!   sizes as even as possible, the first shards one row larger;
//! - each device runs the objective on its shard with the main model's current weights (the
//!   main device on the model itself, the others on a fork of it);
//! - each shard's loss is weighted by its share of the batch's rows before its backward pass,
//!   and the gradients are summed on the main device: for a loss that is a mean over samples
//!   this is the one-device gradient of the whole batch (DDP averages equal shards the same
//!   way), and it stays exact for uneven shards. An objective with an outlier batch (OE,
//!   energy OE, MixOE) weights a shard's outlier term by its ID share too: exact when the
//!   outlier batch splits in the proportions of the ID batch (e.g. 128 + 256 over 2, 4 or 8
//!   devices); otherwise each shard's outlier term is off by the ratio of its two shares (with
//!   3 devices, 128 + 256 gives 43/43/42 ID and 86/85/85 outlier rows), as in DDP, which
//!   averages shards equally whatever their sizes;
//! - batch norm normalises each shard with its own statistics, and the model's running
//!   statistics are the main device's (DDP's default, `broadcast_buffers=True`; no SyncBN);
//! - dropout masks and objective draws (MixOE's mixing) come from a stream per device; the
//!   main device's is the one a one-device run uses.
//!
//! The shards are launched one after the other from this thread. On GPU backends the kernels
//! of a device run asynchronously, so the devices overlap; on CPU backends every "device" is the
//! same processor, so several of them give the same result as one and no speed-up (that is what
//! the tests use). Objectives with batch-level state (PALM, NP-Mix) and feature bags are refused
//! by the config check before a run starts.

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use oodforge_core::rng::{Purpose, shard_stream};
use oodforge_data::{Batch, TrainBatch};
use oodforge_losses::{Objective, StepInput};
use oodforge_models::Classifier;
use oodforge_models::batch_norm::with_frozen_running_stats;
use rand::RngCore;
use std::ops::Range;

/// What one step produced, over all devices.
pub(crate) struct StepOutcome {
    /// The batch's loss (shard losses weighted by their share of rows).
    pub loss: f32,
    /// Its named terms, weighted the same way.
    pub terms: Vec<(&'static str, f32)>,
    /// Correctly classified ID rows.
    pub hits: usize,
    /// ID rows (images x views).
    pub rows: usize,
    /// The gradients of `loss`, on the main device.
    pub grads: GradientsParams,
}

/// Where a step is in the run: the keys of its random streams.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepKey {
    pub seed: u64,
    pub epoch: usize,
    pub step: usize,
}

/// Row ranges of `rows` split over `parts` devices: sizes differ by at most one, larger first
/// (`torch.tensor_split`'s rule). A batch smaller than `parts` leaves the last shards empty.
pub(crate) fn shards(rows: usize, parts: usize) -> Vec<Range<usize>> {
    let (base, extra) = (rows / parts, rows % parts);
    let mut start = 0;
    (0..parts)
        .map(|k| {
            let len = base + usize::from(k < extra);
            let range = start..start + len;
            start += len;
            range
        })
        .collect()
}

/// Rows `range` of a batch's images as a tensor on `device`.
fn rows_tensor(batch: &Batch, range: Range<usize>, device: &Device) -> Tensor<4> {
    let [_, c, h, w] = batch.shape;
    let per_row = c * h * w;
    let values = batch.images[range.start * per_row..range.end * per_row].to_vec();
    Tensor::<4>::from_data(TensorData::new(values, [range.len(), c, h, w]), device)
}

/// Run the objective on every device's shard of `batch` and return the batch's gradients on
/// `devices[0]`, the device `model` lives on.
pub(crate) fn step(
    model: &Classifier,
    objective: &mut Objective,
    devices: &[Device],
    batch: TrainBatch,
    key: StepKey,
) -> StepOutcome {
    let TrainBatch { id, outliers } = batch;
    // Multi-view batches are view-major; every view keeps its image's label. (More than one
    // view is refused with more than one device: a shard would split an image's views.)
    let label_values = id.labels.repeat(id.views);
    let rows = label_values.len();
    let parts = devices.len();
    let id_shards = shards(rows, parts);
    let outlier_shards = outliers.as_ref().map(|o| shards(o.shape[0], parts));
    let main = &devices[0];

    // Per shard: (weight, loss, terms, hits), read back once every device has its work queued.
    let mut pending = Vec::with_capacity(parts);
    let mut accumulator = GradientsAccumulator::new();
    let mut single = None;
    for (k, device) in devices.iter().enumerate() {
        let range = id_shards[k].clone();
        if range.is_empty() {
            continue;
        }
        let weight = range.len() as f64 / rows as f64;
        let shard_labels = &label_values[range.clone()];
        let labels: Vec<i64> = shard_labels.iter().map(|&l| l as i64).collect();
        let n = labels.len();
        let x = rows_tensor(&id, range, device);
        let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), device);
        let outliers = outliers
            .as_ref()
            .zip(outlier_shards.as_ref())
            .map(|(o, s)| rows_tensor(o, s[k].clone(), device));

        // The device RNG (dropout masks) is keyed by the step, like every other draw, so a run
        // resumed at any step trains exactly as an uninterrupted one.
        let (seed, epoch, step) = (key.seed, key.epoch as u64, key.step as u64);
        device.seed(shard_stream(seed, Purpose::Dropout, epoch, step, k as u64).next_u64());
        let mut rng = shard_stream(seed, Purpose::Objective, epoch, step, k as u64);
        let replica;
        let on: &Classifier = if k == 0 {
            model
        } else {
            replica = model.clone().fork(device);
            &replica
        };
        // The objective runs the forward pass(es) and draws from this shard's own stream.
        let run = || {
            objective.step(
                on,
                StepInput {
                    images: x,
                    labels: y.clone(),
                    label_values: shard_labels,
                    outliers,
                    epoch: key.epoch,
                },
                &mut rng,
            )
        };
        let out = if k == 0 {
            run()
        } else {
            with_frozen_running_stats(run)
        };
        let hits = out.logits.argmax(1).reshape([n]).equal(y).int().sum();
        let total = if parts == 1 {
            out.loss.total.clone()
        } else {
            out.loss.total.clone().mul_scalar(weight)
        };
        let grads = GradientsParams::from_grads(total.backward(), on);
        if parts == 1 {
            single = Some(grads);
        } else {
            accumulator.accumulate(model, grads.to_device(main, model));
        }
        pending.push((weight, out.loss, hits));
    }

    if parts > 1 {
        // burn's running statistics (`RunningState`) are shared by a module and its forks, and
        // forking moved their value to the last device: bring it back to the main device.
        let _ = model.clone().to_device(main);
    }

    let mut loss = 0.0f64;
    let mut terms: Vec<(&'static str, f32)> = Vec::new();
    let mut hits = 0usize;
    for (weight, shard_loss, shard_hits) in pending {
        loss += weight * f64::from(scalar(shard_loss.total));
        for (i, (name, t)) in shard_loss.terms.into_iter().enumerate() {
            let v = (weight * f64::from(scalar(t))) as f32;
            match terms.get_mut(i) {
                Some((_, sum)) => *sum += v,
                None => terms.push((name, v)),
            }
        }
        hits += scalar(shard_hits.float()) as usize;
    }
    StepOutcome {
        // One device: the loss exactly as its tensor holds it.
        loss: loss as f32,
        terms,
        hits,
        rows,
        grads: single.unwrap_or_else(|| accumulator.grads()),
    }
}

fn scalar(t: Tensor<1>) -> f32 {
    crate::trainer::scalar(t)
}

#[cfg(test)]
mod tests {
    use super::shards;

    #[test]
    fn shards_are_even_larger_first_and_cover_the_batch() {
        assert_eq!(shards(8, 2), vec![0..4, 4..8]);
        assert_eq!(shards(7, 3), vec![0..3, 3..5, 5..7]);
        assert_eq!(shards(2, 3), vec![0..1, 1..2, 2..2]);
        assert_eq!(shards(5, 1), vec![0..5]);
    }
}
