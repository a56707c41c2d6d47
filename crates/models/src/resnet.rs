//! ResNet (He et al., "Deep Residual Learning", CVPR 2016) in its two forms:
//!
//! - **CIFAR form**, as OpenOOD ships it (`openood/networks/resnet18_32x32.py`) and PALM uses it
//!   (`models/resnet.py`, ResNet-34): a 3x3 stride-1 stem convolution and no max-pool, so a 32x32
//!   image reaches the last stage at 4x4. Initialisation is PyTorch's default (burn's default
//!   Kaiming-uniform with gain 1/sqrt(3) is the same), as neither repository re-initialises.
//! - **ImageNet form**, torchvision's layout (`torchvision/models/resnet.py`): a 7x7 stride-2 stem
//!   and a 3x3 stride-2 max-pool; ResNet-50 uses Bottleneck blocks (stride on the 3x3 conv,
//!   "ResNet v1.5"). Convolutions are initialised as torchvision does,
//!   `kaiming_normal_(mode="fan_out", nonlinearity="relu")`; MixOE fine-tunes this network.
//!
//! Both forms: four stages with strides 1, 2, 2, 2, global average pooling, linear head.
//! Deviation knob: `width` scales every stage (64 -> 64/128/256/512 is the paper network).

use crate::activation::relu;
use crate::batch_norm::{batch_norm, batch_norm_relu};
use crate::conv::conv2d;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};

/// Which stem and initialisation a ResNet uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stem {
    /// 3x3 stride-1 convolution, no max-pool (32x32 inputs).
    Cifar,
    /// 7x7 stride-2 convolution + 3x3 stride-2 max-pool (224x224 inputs).
    ImageNet,
}

/// Which residual block a ResNet stacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3x3 convolutions (ResNet-18/34); expansion 1.
    Basic,
    /// 1x1 -> 3x3 (strided) -> 1x1 convolutions (ResNet-50); expansion 4.
    Bottleneck,
}

impl BlockKind {
    fn expansion(self) -> usize {
        match self {
            Self::Basic => 1,
            Self::Bottleneck => 4,
        }
    }
}

fn conv(cin: usize, cout: usize, k: usize, stride: usize, stem: Stem, device: &Device) -> Conv2d {
    let pad = k / 2;
    let config = Conv2dConfig::new([cin, cout], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false);
    let config = match stem {
        // PyTorch's default, kept by OpenOOD / PALM.
        Stem::Cifar => config,
        // torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu"), std = sqrt(2 / fan_out).
        Stem::ImageNet => config.with_initializer(Initializer::KaimingNormal {
            gain: std::f64::consts::SQRT_2,
            fan_out_only: true,
        }),
    };
    config.init(device)
}

/// A residual block: BasicBlock (`conv3`/`bn3` absent) or Bottleneck. One struct for both so that
/// the parameter names are torchvision's (`conv1`, `bn1`, ..., `conv3`, `bn3`) either way.
#[derive(Module, Debug)]
pub struct Block {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    conv3: Option<Conv2d>,
    bn3: Option<BatchNorm>,
    shortcut: Option<Shortcut>,
}

/// Projection shortcut (1x1 conv + BN) when the shape changes: OpenOOD's `shortcut`,
/// torchvision's `downsample` (option B).
#[derive(Module, Debug)]
pub struct Shortcut {
    conv: Conv2d,
    bn: BatchNorm,
}

impl Block {
    fn new(
        kind: BlockKind,
        cin: usize,
        planes: usize,
        stride: usize,
        stem: Stem,
        device: &Device,
    ) -> Self {
        let cout = planes * kind.expansion();
        let shortcut = (stride != 1 || cin != cout).then(|| Shortcut {
            conv: conv(cin, cout, 1, stride, stem, device),
            bn: BatchNormConfig::new(cout).init(device),
        });
        let bn = |c| BatchNormConfig::new(c).init(device);
        match kind {
            BlockKind::Basic => Self {
                conv1: conv(cin, planes, 3, stride, stem, device),
                bn1: bn(planes),
                conv2: conv(planes, planes, 3, 1, stem, device),
                bn2: bn(planes),
                conv3: None,
                bn3: None,
                shortcut,
            },
            BlockKind::Bottleneck => Self {
                conv1: conv(cin, planes, 1, 1, stem, device),
                bn1: bn(planes),
                conv2: conv(planes, planes, 3, stride, stem, device),
                bn2: bn(planes),
                conv3: Some(conv(planes, cout, 1, 1, stem, device)),
                bn3: Some(bn(cout)),
                shortcut,
            },
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let out = batch_norm_relu(&self.bn1, conv2d(&self.conv1, x.clone()));
        let out = match (&self.conv3, &self.bn3) {
            // Bottleneck: bn2 is followed by a ReLU and the 1x1 expansion.
            (Some(conv3), Some(bn3)) => {
                let out = batch_norm_relu(&self.bn2, conv2d(&self.conv2, out));
                batch_norm(bn3, conv2d(conv3, out))
            }
            _ => batch_norm(&self.bn2, conv2d(&self.conv2, out)),
        };
        let identity = match &self.shortcut {
            Some(s) => batch_norm(&s.bn, conv2d(&s.conv, x)),
            None => x,
        };
        relu(out + identity)
    }
}

#[derive(Module, Debug)]
pub struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm,
    maxpool: Option<MaxPool2d>,
    stages: Vec<Vec<Block>>,
    pool: AdaptiveAvgPool2d,
    fc: Linear,
}

impl ResNet {
    /// A ResNet with `blocks` blocks per stage and base width `width`.
    pub fn new(
        kind: BlockKind,
        blocks: [usize; 4],
        stem: Stem,
        width: usize,
        num_classes: usize,
        device: &Device,
    ) -> Self {
        let mut cin = width;
        let mut stages = Vec::new();
        for (stage, &n) in blocks.iter().enumerate() {
            let planes = width << stage;
            let stride = if stage == 0 { 1 } else { 2 };
            let mut layer = Vec::new();
            for b in 0..n {
                let s = if b == 0 { stride } else { 1 };
                layer.push(Block::new(kind, cin, planes, s, stem, device));
                cin = planes * kind.expansion();
            }
            stages.push(layer);
        }
        let (conv1, maxpool) = match stem {
            Stem::Cifar => (conv(3, width, 3, 1, stem, device), None),
            Stem::ImageNet => (
                conv(3, width, 7, 2, stem, device),
                Some(
                    MaxPool2dConfig::new([3, 3])
                        .with_strides([2, 2])
                        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                        .init(),
                ),
            ),
        };
        Self {
            conv1,
            bn1: BatchNormConfig::new(width).init(device),
            maxpool,
            stages,
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            fc: LinearConfig::new(cin, num_classes).init(device),
        }
    }

    /// ResNet-18 for 32x32 inputs (OpenOOD `ResNet18_32x32`): BasicBlocks [2, 2, 2, 2].
    pub fn resnet18_32x32(width: usize, num_classes: usize, device: &Device) -> Self {
        Self::new(
            BlockKind::Basic,
            [2, 2, 2, 2],
            Stem::Cifar,
            width,
            num_classes,
            device,
        )
    }

    /// ResNet-34 for 32x32 inputs (PALM's backbone): BasicBlocks [3, 4, 6, 3].
    pub fn resnet34_32x32(width: usize, num_classes: usize, device: &Device) -> Self {
        Self::new(
            BlockKind::Basic,
            [3, 4, 6, 3],
            Stem::Cifar,
            width,
            num_classes,
            device,
        )
    }

    /// ResNet-50 for 32x32 inputs: Bottlenecks [3, 4, 6, 3] behind the CIFAR stem (2048-d).
    pub fn resnet50_32x32(width: usize, num_classes: usize, device: &Device) -> Self {
        Self::new(
            BlockKind::Bottleneck,
            [3, 4, 6, 3],
            Stem::Cifar,
            width,
            num_classes,
            device,
        )
    }

    /// The shallower [1, 1, 1, 1] variant used for fast CPU runs; not a paper network.
    pub fn resnet10_32x32(width: usize, num_classes: usize, device: &Device) -> Self {
        Self::new(
            BlockKind::Basic,
            [1, 1, 1, 1],
            Stem::Cifar,
            width,
            num_classes,
            device,
        )
    }

    /// torchvision `resnet18`: ImageNet stem, BasicBlocks [2, 2, 2, 2].
    pub fn resnet18(width: usize, num_classes: usize, device: &Device) -> Self {
        Self::new(
            BlockKind::Basic,
            [2, 2, 2, 2],
            Stem::ImageNet,
            width,
            num_classes,
            device,
        )
    }

    /// torchvision `resnet34`: ImageNet stem, BasicBlocks [3, 4, 6, 3].
    pub fn resnet34(width: usize, num_classes: usize, device: &Device) -> Self {
        Self::new(
            BlockKind::Basic,
            [3, 4, 6, 3],
            Stem::ImageNet,
            width,
            num_classes,
            device,
        )
    }

    /// torchvision `resnet50` (v1.5): ImageNet stem, Bottlenecks [3, 4, 6, 3], 2048-d features.
    pub fn resnet50(width: usize, num_classes: usize, device: &Device) -> Self {
        Self::new(
            BlockKind::Bottleneck,
            [3, 4, 6, 3],
            Stem::ImageNet,
            width,
            num_classes,
            device,
        )
    }

    pub fn feature_dim(&self) -> usize {
        // burn stores Linear weights as [d_input, d_output].
        self.fc.weight.dims()[0]
    }

    pub fn num_classes(&self) -> usize {
        self.fc.weight.dims()[1]
    }

    /// Penultimate features: `[batch, 3, h, w]` -> `[batch, feature_dim]`.
    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = batch_norm_relu(&self.bn1, conv2d(&self.conv1, x));
        if let Some(pool) = &self.maxpool {
            x = pool.forward(x);
        }
        for stage in &self.stages {
            for block in stage {
                x = block.forward(x);
            }
        }
        self.pool.forward(x).flatten(1, 3)
    }

    pub fn head(&self) -> &Linear {
        &self.fc
    }
}
