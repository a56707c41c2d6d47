//! `bench train`: training and evaluation throughput of the networks users train (ResNet-18
//! CIFAR, WRN-40-2, ViT-Tiny) on each backend, measured the way `scripts/bench_pytorch.py`
//! measures PyTorch so the two tables compare line by line.
//!
//! A training step is what `train` does per batch with the CE objective: forward, cross-entropy,
//! backward, SGD (momentum 0.9, Nesterov, weight decay 5e-4) step; the loss is read back to the
//! host each step, which waits for the device. An evaluation step is a forward pass of the
//! inference model (no autodiff) with the logits read back. Inputs are fixed random batches on
//! the device, so data loading is not measured (`bench data` measures it). Each configuration
//! runs `warmup` steps, then `steps` timed steps; the median step time gives images/s.
//!
//! Peak memory: each configuration runs in a process of its own; on the CPU backends its
//! resident-set high-water mark (`VmHWM`) minus the resident set before the network was built;
//! on GPU backends it is not measured (null).

use burn::optim::GradientsParams;
use burn::tensor::{Int, Tensor, TensorData};
use oodforge_core::backend::SelectedBackend;
use oodforge_core::config::{Backbone, ModelConfig, ResNetStem};
use oodforge_core::rng::uniform_noise;
use oodforge_models::Classifier;
use oodforge_train::run::proc_status_kib;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// The benchmarked networks, by the names the PyTorch script uses.
pub const MODELS: [&str; 3] = ["resnet18_cifar", "wrn40_2", "vit_tiny"];

/// The config of a benchmarked network (CIFAR-sized inputs, 10 classes).
pub fn model_config(name: &str) -> Option<ModelConfig> {
    let backbone = match name {
        // OpenOOD's resnet18_32x32.
        "resnet18_cifar" => Backbone::ResNet18 {
            width: 64,
            stem: ResNetStem::Cifar,
        },
        // OE / energy WRN-40-2 (dropout 0.3 as they train it).
        "wrn40_2" => Backbone::Wrn {
            depth: 40,
            widen_factor: 2,
            dropout: 0.3,
        },
        // ViT-Tiny (dim 192, depth 12, 3 heads) with 4x4 patches on 32x32 images.
        "vit_tiny" => Backbone::VitTiny {
            patch_size: Some(4),
        },
        _ => return None,
    };
    Some(ModelConfig::from(backbone))
}

/// One measured configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    pub framework: String,
    pub backend: String,
    pub device: String,
    pub model: String,
    pub batch: usize,
    pub mode: String,
    pub images_per_s: f64,
    pub median_step_s: f64,
    pub steps: usize,
    /// Peak resident memory above the level before the configuration, MiB (CPU backends).
    pub peak_mib: Option<f64>,
}

/// Median of the times (seconds) of `steps` calls of `step` after `warmup` untimed ones.
fn median_step(warmup: usize, steps: usize, mut step: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        step();
    }
    let mut t: Vec<f64> = (0..steps.max(1))
        .map(|_| {
            let start = Instant::now();
            step();
            start.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// Measure one mode (`train` or `eval`) of `model` at `batch` on `backend`. Meant to run in a
/// process of its own (`bench train` spawns one per configuration), so the peak memory is this
/// configuration's alone: the resident-set high-water mark at the end minus the resident set
/// before the network was built (CPU backends; GPU memory is not measured: null).
pub fn measure(
    backend: &SelectedBackend,
    model: &str,
    batch: usize,
    mode: &str,
    warmup: usize,
    steps: usize,
) -> Result<Measurement, String> {
    let config = model_config(model).ok_or_else(|| {
        format!(
            "unknown model `{model}`, expected one of {}",
            MODELS.join(", ")
        )
    })?;
    let classes = 10;
    let cpu = matches!(backend.name, "flex" | "ndarray" | "tch");
    let base = proc_status_kib("VmRSS");
    let pixels = uniform_noise(batch * 3 * 32 * 32, 1);
    let labels: Vec<i64> = (0..batch as i64).map(|i| i % classes as i64).collect();
    let step_s = match mode {
        // As `train` steps: the autodiff device, CE, backward, SGD.
        "train" => {
            let device = backend.device.clone().autodiff();
            let x = Tensor::<4>::from_data(TensorData::new(pixels, [batch, 3, 32, 32]), &device);
            let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [batch]), &device);
            let mut net = Some(Classifier::new(&config, classes, 32, &device));
            let mut optim =
                oodforge_train::trainer::optimizer(&oodforge_core::config::OptimConfig::Sgd {
                    lr: 0.1,
                    momentum: 0.9,
                    nesterov: true,
                    weight_decay: 5e-4,
                });
            median_step(warmup, steps, || {
                let m = net.take().expect("the model is put back after each step");
                let logits = m.forward(x.clone()).logits;
                let loss = oodforge_losses::ce::cross_entropy(logits, y.clone());
                let grads = GradientsParams::from_grads(loss.backward(), &m);
                let m = optim.step(0.1, m, grads);
                std::hint::black_box(loss.into_data());
                net = Some(m);
            })
        }
        // The inference model (no autodiff), as evaluation runs it.
        "eval" => {
            let device = &backend.device;
            let x = Tensor::<4>::from_data(TensorData::new(pixels, [batch, 3, 32, 32]), device);
            let net = Classifier::new(&config, classes, 32, device);
            median_step(warmup, steps, || {
                std::hint::black_box(net.forward(x.clone()).logits.into_data());
            })
        }
        other => return Err(format!("unknown mode `{other}`, expected train or eval")),
    };
    let peak_mib = match (cpu, base, proc_status_kib("VmHWM")) {
        (true, Some(base), Some(peak)) => Some(peak.saturating_sub(base) as f64 / 1024.0),
        _ => None,
    };
    Ok(Measurement {
        framework: "oodforge".into(),
        backend: backend.name.into(),
        device: backend.adapter.clone(),
        model: model.into(),
        batch,
        mode: mode.into(),
        images_per_s: batch as f64 / step_s,
        median_step_s: step_s,
        steps,
        peak_mib,
    })
}

/// The Markdown table of measurements (one row per configuration and mode).
pub fn markdown(rows: &[Measurement]) -> String {
    let mut s = String::from(
        "| framework | backend | model | batch | mode | images/s | median step (s) | peak MiB |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.1} | {:.4} | {} |\n",
            r.framework,
            r.backend,
            r.model,
            r.batch,
            r.mode,
            r.images_per_s,
            r.median_step_s,
            r.peak_mib.map_or("-".into(), |m| format!("{m:.0}"))
        ));
    }
    s
}

/// One layer of ResNet-18 (CIFAR) timed alone: where a training step's time goes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpMeasurement {
    pub framework: String,
    pub backend: String,
    pub op: String,
    /// Input shape, NCHW.
    pub input: [usize; 4],
    /// Median forward time of the inference layer, milliseconds.
    pub forward_ms: f64,
    /// Median forward + backward time on the autodiff device (input and weight gradients),
    /// milliseconds.
    pub train_ms: f64,
}

/// The layers `bench ops` times, as `scripts/bench_pytorch.py --ops` does: ResNet-18 CIFAR's
/// 3x3 convolutions of each stage (stride 1), the stride-2 entry of stage 2, its 1x1 shortcut,
/// batch norm and ReLU at stage 1's size. Name, input channels, output channels, kernel,
/// stride, input side.
pub const OPS: [(&str, usize, usize, usize, usize, usize); 9] = [
    ("conv3x3_64", 64, 64, 3, 1, 32),
    ("conv3x3_128", 128, 128, 3, 1, 16),
    ("conv3x3_256", 256, 256, 3, 1, 8),
    ("conv3x3_512", 512, 512, 3, 1, 4),
    ("conv3x3_s2_64_128", 64, 128, 3, 2, 32),
    ("conv1x1_s2_64_128", 64, 128, 1, 2, 32),
    ("batchnorm_64", 64, 64, 0, 1, 32),
    ("relu_64", 64, 64, 0, 1, 32),
    ("batchnorm_relu_64", 64, 64, 0, 1, 32),
];

/// Time each layer of [`OPS`] at `batch` on `backend`: forward of the inference layer, and
/// forward + backward (gradients of the input and the parameters) on the autodiff device.
pub fn measure_ops(
    backend: &SelectedBackend,
    batch: usize,
    warmup: usize,
    steps: usize,
) -> Vec<OpMeasurement> {
    use burn::nn::conv::Conv2dConfig;
    use burn::nn::{BatchNormConfig, PaddingConfig2d};
    let mut rows = Vec::new();
    for (name, cin, cout, k, stride, side) in OPS {
        let input = [batch, cin, side, side];
        let data = || TensorData::new(uniform_noise(batch * cin * side * side, 2), input);
        let time = |autodiff: bool| -> f64 {
            let device = if autodiff {
                backend.device.clone().autodiff()
            } else {
                backend.device.clone()
            };
            let x = Tensor::<4>::from_data(data(), &device);
            let x = if autodiff { x.require_grad() } else { x };
            let layer: Box<dyn Fn(Tensor<4>) -> Tensor<4>> = match name {
                "batchnorm_64" => {
                    let bn = BatchNormConfig::new(cin).init(&device);
                    Box::new(move |x| oodforge_models::batch_norm::batch_norm(&bn, x))
                }
                // The ReLU the models call after a residual sum, and the batch norm + ReLU
                // they call everywhere else (fused on flex).
                "relu_64" => Box::new(oodforge_models::activation::relu),
                "batchnorm_relu_64" => {
                    let bn = BatchNormConfig::new(cin).init(&device);
                    Box::new(move |x| oodforge_models::batch_norm::batch_norm_relu(&bn, x))
                }
                _ => {
                    let pad = k / 2;
                    let conv = Conv2dConfig::new([cin, cout], [k, k])
                        .with_stride([stride, stride])
                        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                        .with_bias(false)
                        .init(&device);
                    // The convolution the models call: im2col + gemm when training on flex.
                    Box::new(move |x| oodforge_models::conv::conv2d(&conv, x))
                }
            };
            let s = median_step(warmup, steps, || {
                let y = layer(x.clone());
                if autodiff {
                    // The gradients are computed by backward; reading one back waits for them.
                    let grads = y.sum().backward();
                    std::hint::black_box(x.grad(&grads).map(|g| g.into_data()));
                } else {
                    std::hint::black_box(y.into_data());
                }
            });
            s * 1e3
        };
        rows.push(OpMeasurement {
            framework: "oodforge".into(),
            backend: backend.name.into(),
            op: name.into(),
            input,
            forward_ms: time(false),
            train_ms: time(true),
        });
    }
    rows
}

/// The Markdown table of [`measure_ops`] rows.
pub fn ops_markdown(rows: &[OpMeasurement]) -> String {
    let mut s = String::from(
        "| framework | backend | op | input | forward ms | forward+backward ms |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let [n, c, h, w] = r.input;
        s.push_str(&format!(
            "| {} | {} | {} | {n}x{c}x{h}x{w} | {:.2} | {:.2} |\n",
            r.framework, r.backend, r.op, r.forward_ms, r.train_ms
        ));
    }
    s
}
