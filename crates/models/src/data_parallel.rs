//! `torch.nn.DataParallel`'s forward pass: scatter the batch, run a replica per device, gather.
//!
//! The official OE and energy-OE code trains on several GPUs with
//! `torch.nn.DataParallel(net, device_ids=list(range(args.ngpu)))`, and this is that forward
//! pass, piece for piece:
//! - the input is split along the batch in `torch.chunk`'s chunks (`ceil(rows / devices)` rows
//!   each, the last one shorter, fewer chunks when rows run out);
//! - chunk 0 runs on the main model, chunk k on the replica on device k;
//! - every output field is moved to the main device and concatenated in chunk order.
//!
//! The objective then computes its loss on the gathered outputs of the whole batch, on the
//! main device. Its batch-level state (PALM's prototypes, NP-Mix's queues, OE's means over ID
//! and outlier rows) sees the global batch exactly as on one device. Only batch norm differs:
//! each replica normalises its chunk with the chunk's statistics, as in DataParallel. The
//! running statistics are the main model's (DataParallel's replica 0 shares the module's
//! buffers; the others' updates are dropped, here by [`with_frozen_running_stats`]).
//!
//! [`with_frozen_running_stats`]: crate::batch_norm::with_frozen_running_stats

use crate::batch_norm::with_frozen_running_stats;
use crate::{Classifier, Output};
use burn::tensor::{Device, Tensor};
use std::ops::Range;

/// What an objective needs of a network: its forward pass, and the classifier itself for the
/// heads and sizes (those run on the main device, on gathered features).
pub trait Network {
    fn forward(&self, x: Tensor<4>) -> Output;
    fn classifier(&self) -> &Classifier;
}

impl Network for Classifier {
    fn forward(&self, x: Tensor<4>) -> Output {
        Classifier::forward(self, x)
    }
    fn classifier(&self) -> &Classifier {
        self
    }
}

/// A classifier and its replicas on further devices.
pub struct DataParallel<'a> {
    main: &'a Classifier,
    /// `(replica, device)` for devices 1.., each replica a fork of `main` on its device.
    replicas: &'a [(Classifier, Device)],
}

impl<'a> DataParallel<'a> {
    pub fn new(main: &'a Classifier, replicas: &'a [(Classifier, Device)]) -> Self {
        Self { main, replicas }
    }
}

impl Network for DataParallel<'_> {
    fn forward(&self, x: Tensor<4>) -> Output {
        let device = x.device();
        let chunks = chunks(x.dims()[0], 1 + self.replicas.len());
        if chunks.len() == 1 {
            return self.main.forward(x);
        }
        // Every replica's forward pass is queued before any output is moved: on GPU backends
        // the kernels run asynchronously, and moving an output waits for its device, so the
        // devices compute at the same time only if the moves come after all the launches.
        let parts: Vec<Output> = chunks
            .into_iter()
            .enumerate()
            .map(|(k, rows)| {
                let part = x.clone().narrow(0, rows.start, rows.len());
                if k == 0 {
                    self.main.forward(part)
                } else {
                    let (replica, on) = &self.replicas[k - 1];
                    with_frozen_running_stats(|| replica.forward(part.to_device(on)))
                }
            })
            .collect();
        let outputs = parts.into_iter().map(|o| to_device(o, &device)).collect();
        gather(outputs)
    }

    fn classifier(&self) -> &Classifier {
        self.main
    }
}

/// `torch.chunk(rows, parts)`'s row ranges: chunks of `ceil(rows / parts)`, the last shorter;
/// fewer than `parts` when the rows run out (7 over 3: 3, 3, 1; 2 over 3: 1, 1).
pub fn chunks(rows: usize, parts: usize) -> Vec<Range<usize>> {
    let size = rows.div_ceil(parts.max(1)).max(1);
    (0..rows)
        .step_by(size)
        .map(|start| start..(start + size).min(rows))
        .collect()
}

fn to_device(out: Output, device: &Device) -> Output {
    Output {
        logits: out.logits.to_device(device),
        features: out.features.to_device(device),
        embedding: out.embedding.map(|t| t.to_device(device)),
        aux_logits: out.aux_logits.map(|t| t.to_device(device)),
        cls_attention: out
            .cls_attention
            .into_iter()
            .map(|t| t.to_device(device))
            .collect(),
    }
}

/// Concatenate the chunks' outputs along the batch, field by field.
fn gather(outputs: Vec<Output>) -> Output {
    let cat2 = |f: &dyn Fn(&Output) -> Tensor<2>| {
        Tensor::cat(outputs.iter().map(f).collect::<Vec<_>>(), 0)
    };
    let cat_opt = |f: &dyn Fn(&Output) -> Option<Tensor<2>>| {
        outputs
            .iter()
            .map(f)
            .collect::<Option<Vec<_>>>()
            .map(|v| Tensor::cat(v, 0))
    };
    let blocks = outputs[0].cls_attention.len();
    Output {
        logits: cat2(&|o| o.logits.clone()),
        features: cat2(&|o| o.features.clone()),
        embedding: cat_opt(&|o| o.embedding.clone()),
        aux_logits: cat_opt(&|o| o.aux_logits.clone()),
        cls_attention: (0..blocks)
            .map(|b| {
                Tensor::cat(
                    outputs.iter().map(|o| o.cls_attention[b].clone()).collect(),
                    0,
                )
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;
    use oodforge_testutil::max_abs_diff;

    fn values(t: Tensor<2>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn chunks_follow_torch_chunk() {
        assert_eq!(chunks(16, 3), vec![0..6, 6..12, 12..16]);
        assert_eq!(chunks(7, 3), vec![0..3, 3..6, 6..7]);
        assert_eq!(chunks(2, 3), vec![0..1, 1..2]);
        assert_eq!(chunks(12, 2), vec![0..6, 6..12]);
        assert_eq!(chunks(5, 1), vec![0..5]);
    }

    /// The gathered outputs of three replicas are the one-device outputs (a ViT: no batch
    /// norm), every field included.
    #[test]
    fn gathered_forward_is_the_one_device_forward() {
        let _rng = crate::tests::device_rng();
        use oodforge_core::config::{Backbone, ModelConfig, ProjectionConfig};
        let device = Device::flex();
        device.seed(7);
        // Projection head and a second prediction head: every optional field is gathered.
        let config = ModelConfig {
            backbone: Backbone::Vit {
                patch_size: 8,
                dim: 16,
                depth: 2,
                heads: 2,
                mlp_dim: None,
            },
            projection: Some(ProjectionConfig { hidden: 8, dim: 4 }),
            weights: None,
            prediction_heads: 2,
        };
        let model = Classifier::new(&config, 5, 32, &device);
        let replicas: Vec<(Classifier, Device)> = (0..2)
            .map(|_| (model.clone().fork(&device), device.clone()))
            .collect();
        let x = Tensor::<4>::from_data(
            burn::tensor::TensorData::new(
                oodforge_core::rng::uniform_noise(7 * 3 * 32 * 32, 3),
                [7, 3, 32, 32],
            ),
            &device,
        );
        let one = model.forward(x.clone());
        let many = DataParallel::new(&model, &replicas).forward(x);
        let close = |a: Tensor<2>, b: Tensor<2>, what: &str| {
            assert_eq!(a.dims(), b.dims(), "{what}");
            let d = max_abs_diff(&values(a), &values(b));
            assert!(d < 1e-5, "{what}: {d}");
        };
        close(one.logits, many.logits, "logits");
        close(one.features, many.features, "features");
        close(one.embedding.unwrap(), many.embedding.unwrap(), "embedding");
        close(
            one.aux_logits.unwrap(),
            many.aux_logits.unwrap(),
            "aux logits",
        );
        assert_eq!(one.cls_attention.len(), many.cls_attention.len());
        for (a, b) in one.cls_attention.into_iter().zip(many.cls_attention) {
            close(a.flatten(0, 1), b.flatten(0, 1), "cls attention");
        }
    }

    struct Collect(Vec<f32>);
    impl burn::module::ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            self.0
                .extend(param.val().into_data().try_to_vec::<f32>().unwrap());
        }
    }

    /// Batch norm as DataParallel has it: each chunk is normalised with its own statistics
    /// (chunk k's logits are those of a copy of the model run on chunk k alone), and the model's
    /// running statistics are those of chunk 0 (a copy run on chunk 0 alone ends with the same
    /// buffers), untouched by the other chunks.
    #[test]
    fn batch_norm_normalises_per_chunk_and_keeps_the_main_chunks_running_statistics() {
        let _rng = crate::tests::device_rng();
        use oodforge_core::config::{Backbone, ModelConfig, ResNetStem};
        let device = Device::flex().autodiff();
        let config = ModelConfig {
            backbone: Backbone::ResNet10 {
                width: 4,
                stem: ResNetStem::Cifar,
            },
            projection: None,
            weights: None,
            prediction_heads: 1,
        };
        let fresh = || {
            device.seed(11);
            Classifier::new(&config, 3, 32, &device)
        };
        let x = Tensor::<4>::from_data(
            burn::tensor::TensorData::new(
                oodforge_core::rng::uniform_noise(6 * 3 * 32 * 32, 5),
                [6, 3, 32, 32],
            ),
            &device,
        );
        let model = fresh();
        let replicas = vec![(model.clone().fork(&device), device.clone())];
        let gathered = DataParallel::new(&model, &replicas)
            .forward(x.clone())
            .logits;

        let first = fresh();
        let alone0 = first.forward(x.clone().narrow(0, 0, 3)).logits;
        let alone1 = fresh().forward(x.narrow(0, 3, 3)).logits;
        let expected = Tensor::cat(vec![alone0, alone1], 0);
        let d = max_abs_diff(&values(gathered), &values(expected));
        assert!(d < 1e-5, "per-chunk batch norm: {d}");

        // `valid()` folds the pending running-statistics updates in.
        let buffers = |m: &Classifier| {
            let mut c = Collect(Vec::new());
            m.valid().visit(&mut c);
            c.0
        };
        let (ours, chunk0) = (buffers(&model), buffers(&first));
        let d = max_abs_diff(&ours, &chunk0);
        assert!(d < 1e-6, "running statistics: {d}");
        // Not vacuous: the forward pass moved the running statistics.
        let untouched = buffers(&fresh());
        let moved = ours.iter().zip(&untouched).filter(|(a, b)| a != b).count();
        assert!(moved > 0, "the running statistics did not move");
    }
}
