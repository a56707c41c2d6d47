//! oodforge models: every backbone behind one `Classifier`, returning logits, penultimate
//! features and (with a projection head) the embedding from one forward pass, with the hooks OOD
//! post-processors need (the head applied to modified features, the head's weight and bias), plus
//! the attention-MIL aggregators of AEM and PyTorch / safetensors weight import.

pub mod activation;
// With `tch`, the extensions of batch_norm, conv, layer_norm and softmax also route to
// burn-tch, which is deprecated upstream (see libtorch.rs for why it stays).
#[cfg_attr(feature = "tch", allow(deprecated))]
pub mod batch_norm;
#[cfg_attr(feature = "tch", allow(deprecated))]
pub mod conv;
mod conv_shifted;
mod conv_winograd;
pub mod data_parallel;
pub mod dropout;
pub mod error;
pub mod import;
#[cfg_attr(feature = "tch", allow(deprecated))]
pub mod layer_norm;
#[cfg(feature = "tch")]
mod libtorch;
pub mod mil;
pub mod resnet;
mod simd;
#[cfg_attr(feature = "tch", allow(deprecated))]
pub mod softmax;
pub mod vit;
pub mod wrn;

use burn::module::Module;
use burn::nn::{Linear, LinearConfig, Relu};
use burn::tensor::{Device, Tensor};
use oodforge_core::config::{Backbone as Backbone_, ModelConfig, ProjectionConfig, ResNetStem};

pub use error::ModelError;
pub use import::{ImportReport, load_weights};
pub use mil::{Abmil, MhaMil, MilModel, MilOutput};
pub use resnet::{BlockKind, ResNet, Stem};
pub use vit::{VisionTransformer, VitShape, cls_to_patch_weights};
pub use wrn::WideResNet;

/// The device under autodiff, when `device` is an autodiff device.
fn under_autodiff(device: &Device) -> Option<&burn::backend::DispatchDevice> {
    match device.as_dispatch() {
        burn::backend::DispatchDevice::Autodiff(inner) => Some(inner),
        _ => None,
    }
}

/// Whether `device` is flex under autodiff: the CPU training device, where the extensions in
/// `conv`, `batch_norm` and `activation` replace burn's kernels.
pub(crate) fn on_flex_autodiff(device: &Device) -> bool {
    matches!(
        under_autodiff(device),
        Some(burn::backend::DispatchDevice::Flex(_))
    )
}

/// Whether `device` is LibTorch under autodiff (feature `tch`): the training device where the
/// `conv`, `batch_norm`, `layer_norm` and `softmax` extensions take libtorch's own backward
/// kernels (`libtorch.rs`).
#[cfg(feature = "tch")]
pub(crate) fn on_libtorch_autodiff(device: &Device) -> bool {
    matches!(
        under_autodiff(device),
        Some(burn::backend::DispatchDevice::LibTorch(_))
    )
}

#[cfg(not(feature = "tch"))]
pub(crate) fn on_libtorch_autodiff(_device: &Device) -> bool {
    false
}

/// Whether the `batch_norm`, `layer_norm` and `softmax` extensions train on `device`: flex
/// under autodiff (their own kernels) or LibTorch under autodiff (libtorch's).
pub(crate) fn on_fused_autodiff(device: &Device) -> bool {
    on_flex_autodiff(device) || on_libtorch_autodiff(device)
}

/// The values of a contiguous f32 flex tensor, borrowed: the backend extensions (`conv`,
/// `batch_norm`, `layer_norm`, `activation`, `softmax`, `dropout`) are only taken for f32, and
/// make their tensors contiguous first.
pub(crate) fn floats(t: &burn::backend::tensor::FloatTensor<burn::backend::Flex>) -> &[f32] {
    t.as_slice::<f32>()
        .expect("the fused kernels take contiguous f32 tensors only")
}

/// A buffer of `n` floats that is written before it is read, so not zeroed first: for buffers
/// filled piece by piece (chunks of images), where `written`'s single closure does not fit.
/// The Winograd transformed tiles and products are 4x the size of a layer's input or output,
/// and zeroing them (glibc reuses freed memory, so calloc writes the zeros) was most of the
/// `memset` that took 5-9% of a ResNet-18 batch-32 training step and 7.5% of its evaluation
/// (perf, BENCHMARKS.md, "Winograd buffers left uninitialised").
pub(crate) fn uninit(n: usize) -> Box<[std::mem::MaybeUninit<f32>]> {
    Box::new_uninit_slice(n)
}

/// `len` floats that `fill` writes, without zeroing them first: the kernels' outputs are
/// written in full by their parallel loops, and `vec![0.0; len]` would make a pass of its own
/// over each, on the calling thread while rayon's workers wait (glibc reuses freed memory, so
/// calloc writes the zeros). `memset` was 5.4% of a WRN-40-2 batch-128 training step's CPU
/// time, 4.6% on the calling thread alone (BENCHMARKS.md, "Outputs written once, not zeroed
/// first").
///
/// # Safety
/// `fill` writes every one of the `len` floats it is given.
pub(crate) unsafe fn written(
    len: usize,
    fill: impl FnOnce(&mut [std::mem::MaybeUninit<f32>]),
) -> Vec<f32> {
    let mut values = Vec::with_capacity(len);
    fill(&mut values.spare_capacity_mut()[..len]);
    // SAFETY: `fill` wrote the first `len` floats (the caller's contract).
    unsafe { values.set_len(len) };
    values
}

/// Whether `device` is flex, with or without autodiff.
pub(crate) fn on_flex(device: &Device) -> bool {
    match device.as_dispatch() {
        burn::backend::DispatchDevice::Flex(_) => true,
        _ => on_flex_autodiff(device),
    }
}

/// Logits, penultimate features and (with a projection head) the embedding of one forward pass.
#[derive(Debug, Clone)]
pub struct Output {
    /// `[batch, num_classes]`
    pub logits: Tensor<2>,
    /// `[batch, feature_dim]`
    pub features: Tensor<2>,
    /// `[batch, projection_dim]`, L2-normalised, when the classifier has a projection head.
    pub embedding: Option<Tensor<2>>,
    /// `[batch, num_classes]` from the second prediction head, when the model has one
    /// (`prediction_heads = 2`, for A2D).
    pub aux_logits: Option<Tensor<2>>,
    /// ViT only: per block, the CLS query's pre-softmax attention scores over all tokens,
    /// `[batch, heads, 1 + num_patches]` (token 0 is the CLS token); [`cls_to_patch_weights`]
    /// turns them into the CLS-to-patch attention weights. Empty for CNNs.
    pub cls_attention: Vec<Tensor<3>>,
}

/// The feature extractors.
#[derive(Module, Debug)]
pub enum Backbone {
    ResNet(ResNet),
    Wrn(WideResNet),
    Vit(VisionTransformer),
}

/// PALM's projection head (`models/resnet.py::PALMResNet`, head "mlp"): Linear -> ReLU ->
/// Linear, output L2-normalised (`F.normalize(self.head(feat), dim=1)`).
#[derive(Module, Debug)]
pub struct ProjectionHead {
    fc1: Linear,
    relu: Relu,
    fc2: Linear,
}

impl ProjectionHead {
    pub fn new(feature_dim: usize, config: &ProjectionConfig, device: &Device) -> Self {
        Self {
            fc1: LinearConfig::new(feature_dim, config.hidden).init(device),
            relu: Relu::new(),
            fc2: LinearConfig::new(config.hidden, config.dim).init(device),
        }
    }

    pub fn forward(&self, features: Tensor<2>) -> Tensor<2> {
        let z = self
            .fc2
            .forward(self.relu.forward(self.fc1.forward(features)));
        l2_normalize(z)
    }

    pub fn dim(&self) -> usize {
        self.fc2.weight.dims()[1]
    }
}

/// `F.normalize(x, dim=1)`: `x / max(||x||, 1e-12)` per row.
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}

/// A backbone, its linear classifier head and an optional projection head.
#[derive(Module, Debug)]
pub struct Classifier {
    backbone: Backbone,
    projection: Option<ProjectionHead>,
    /// A second linear head on the same features (`prediction_heads = 2`). It is never part of
    /// an imported checkpoint, so it always starts fresh.
    aux_head: Option<Linear>,
}

impl Classifier {
    /// Build the network of a config for `image_size` x `image_size` inputs. Parameters are drawn
    /// from the device's RNG; seed it first. (Initial weights named by `model.weights` are
    /// loaded separately, by [`load_weights`].)
    ///
    /// # Panics
    /// For the attention-MIL backbones (`abmil`, `mil_mha`), which [`MilModel::new`] builds;
    /// config validation never lets them reach an image classifier.
    pub fn new(
        config: &ModelConfig,
        num_classes: usize,
        image_size: usize,
        device: &Device,
    ) -> Self {
        let stem = |s: &ResNetStem| match s {
            ResNetStem::Cifar => Stem::Cifar,
            ResNetStem::ImageNet => Stem::ImageNet,
        };
        let patch =
            |p: &Option<usize>| p.unwrap_or_else(|| Backbone_::default_patch_size(image_size));
        let resnet = |kind, blocks, width: &usize, s| {
            Backbone::ResNet(ResNet::new(
                kind,
                blocks,
                stem(s),
                *width,
                num_classes,
                device,
            ))
        };
        let backbone = match &config.backbone {
            Backbone_::ResNet18 { width, stem: s } => {
                resnet(BlockKind::Basic, [2, 2, 2, 2], width, s)
            }
            Backbone_::ResNet34 { width, stem: s } => {
                resnet(BlockKind::Basic, [3, 4, 6, 3], width, s)
            }
            Backbone_::ResNet50 { width, stem: s } => {
                resnet(BlockKind::Bottleneck, [3, 4, 6, 3], width, s)
            }
            Backbone_::ResNet10 { width, stem: s } => {
                resnet(BlockKind::Basic, [1, 1, 1, 1], width, s)
            }
            Backbone_::Wrn {
                depth,
                widen_factor,
                dropout,
            } => Backbone::Wrn(WideResNet::new(
                *depth,
                *widen_factor,
                *dropout,
                num_classes,
                device,
            )),
            Backbone_::VitTiny { patch_size } => Backbone::Vit(VisionTransformer::new(
                VitShape::tiny(image_size, patch(patch_size)),
                num_classes,
                device,
            )),
            Backbone_::VitSmall { patch_size } => Backbone::Vit(VisionTransformer::new(
                VitShape::small(image_size, patch(patch_size)),
                num_classes,
                device,
            )),
            Backbone_::Vit {
                patch_size,
                dim,
                depth,
                heads,
                mlp_dim,
            } => Backbone::Vit(VisionTransformer::new(
                VitShape {
                    image_size,
                    patch_size: *patch_size,
                    dim: *dim,
                    depth: *depth,
                    heads: *heads,
                    mlp_dim: mlp_dim.unwrap_or(4 * dim),
                },
                num_classes,
                device,
            )),
            // Config validation pairs these with feature-bag sources, which the MIL loop trains
            // with `MilModel`; no validated config reaches this arm.
            Backbone_::Abmil { .. } | Backbone_::MilMha { .. } => {
                panic!("attention-MIL aggregators are built by MilModel::new, not Classifier::new")
            }
        };
        let mut model = Self::from_backbone(backbone, config.projection.as_ref(), device);
        if config.prediction_heads == 2 {
            let (d, c) = (model.feature_dim(), model.num_classes());
            model.aux_head = Some(LinearConfig::new(d, c).init(device));
        }
        model
    }

    pub fn from_backbone(
        backbone: Backbone,
        projection: Option<&ProjectionConfig>,
        device: &Device,
    ) -> Self {
        let mut model = Self {
            backbone,
            projection: None,
            aux_head: None,
        };
        model.projection = projection.map(|p| ProjectionHead::new(model.feature_dim(), p, device));
        model
    }

    pub fn backbone(&self) -> &Backbone {
        &self.backbone
    }

    pub(crate) fn backbone_mut(&mut self) -> &mut Backbone {
        &mut self.backbone
    }

    /// Logits, features, embedding (and ViT attention) of one forward pass.
    pub fn forward(&self, x: Tensor<4>) -> Output {
        let (features, cls_attention) = match &self.backbone {
            Backbone::ResNet(m) => (m.forward_features(x), Vec::new()),
            Backbone::Wrn(m) => (m.forward_features(x), Vec::new()),
            Backbone::Vit(m) => {
                let out = m.forward_features_attention(x);
                (out.features, out.cls_attention)
            }
        };
        let logits = self.forward_head(features.clone());
        let embedding = self
            .projection
            .as_ref()
            .map(|p| p.forward(features.clone()));
        let aux_logits = self.forward_aux_head(features.clone());
        Output {
            logits,
            features,
            embedding,
            aux_logits,
            cls_attention,
        }
    }

    /// Penultimate features only (no head): `[batch, feature_dim]`.
    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<2> {
        match &self.backbone {
            Backbone::ResNet(m) => m.forward_features(x),
            Backbone::Wrn(m) => m.forward_features(x),
            Backbone::Vit(m) => m.forward_features(x),
        }
    }

    /// The linear classifier applied to (possibly modified) features: ReAct clips them, ASH
    /// prunes them, then calls this.
    pub fn forward_head(&self, features: Tensor<2>) -> Tensor<2> {
        self.head().forward(features)
    }

    /// The second prediction head applied to features, when there is one.
    pub fn forward_aux_head(&self, features: Tensor<2>) -> Option<Tensor<2>> {
        self.aux_head.as_ref().map(|h| h.forward(features))
    }

    fn head(&self) -> &Linear {
        match &self.backbone {
            Backbone::ResNet(m) => m.head(),
            Backbone::Wrn(m) => m.head(),
            Backbone::Vit(m) => m.head(),
        }
    }

    /// The head's weight in PyTorch's layout `[num_classes, feature_dim]` (ViM's `W`).
    pub fn head_weight(&self) -> Tensor<2> {
        // burn stores Linear weights as [d_input, d_output].
        self.head().weight.val().transpose()
    }

    /// The head's bias `[num_classes]` (zeros when the head has none).
    pub fn head_bias(&self) -> Tensor<1> {
        let head = self.head();
        match &head.bias {
            Some(b) => b.val(),
            None => head
                .weight
                .val()
                .sum_dim(0)
                .reshape([self.num_classes()])
                .zeros_like(),
        }
    }

    /// The projection head applied to features, when there is one.
    pub fn project(&self, features: Tensor<2>) -> Option<Tensor<2>> {
        self.projection.as_ref().map(|p| p.forward(features))
    }

    pub fn feature_dim(&self) -> usize {
        self.head().weight.dims()[0]
    }

    pub fn num_classes(&self) -> usize {
        self.head().weight.dims()[1]
    }

    pub fn projection_dim(&self) -> Option<usize> {
        self.projection.as_ref().map(ProjectionHead::dim)
    }

    /// Number of trainable parameters (PyTorch's `sum(p.numel() for p in net.parameters())`:
    /// BatchNorm running statistics are buffers, not parameters).
    pub fn num_trainable_params(&self) -> usize {
        // Counted by field name: whether a parameter requires a gradient is only known on an
        // autodiff device.
        struct Count {
            total: usize,
            path: Vec<String>,
        }
        impl burn::module::ModuleVisitor for Count {
            fn enter_module(&mut self, name: &str, _container: &str) {
                self.path.push(name.to_owned());
            }
            fn exit_module(&mut self, _name: &str, _container: &str) {
                self.path.pop();
            }
            fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
                let buffer = matches!(
                    self.path.last().map(String::as_str),
                    Some("running_mean" | "running_var")
                );
                if !buffer {
                    self.total += param.shape().num_elements();
                }
            }
        }
        let mut c = Count {
            total: 0,
            path: Vec::new(),
        };
        self.visit(&mut c);
        c.total
    }
}

/// Zero a Linear's bias (wrn.py and timm initialise biases to 0).
pub(crate) trait ZeroBias {
    fn zero_bias(self) -> Self;
}

impl ZeroBias for Linear {
    fn zero_bias(mut self) -> Self {
        if let Some(b) = self.bias.take() {
            // `zeros_like` is a new, untracked tensor, and `Param::map` takes the parameter's
            // trainability from the value it is given: without carrying it over, the bias was
            // frozen at 0 in fresh runs (and trainable again after a checkpoint load).
            self.bias = Some(b.map(|t| {
                let tracked = t.is_require_grad();
                t.zeros_like().set_require_grad(tracked)
            }));
        }
        self
    }
}

#[cfg(test)]
mod tests;
