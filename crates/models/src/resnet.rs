//! CIFAR-style ResNet (He et al., "Deep Residual Learning", CVPR 2016), in the form OpenOOD
//! ships as `openood/networks/resnet18_32x32.py`: a 3x3 stride-1 stem convolution, no max-pool,
//! four stages of BasicBlocks with strides 1, 2, 2, 2, global average pooling and a linear head.
//! Initialisation is PyTorch's default (burn's default Kaiming-uniform with gain 1/sqrt(3) is
//! the same), as OpenOOD does not re-initialise.
//!
//! Deviation knob: `width` scales every stage (64 -> 64/128/256/512 is the paper network).

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::tensor::{Device, Tensor};

/// The residual block of ResNet-18/34: two 3x3 convolutions, projection shortcut when the
/// shape changes (torchvision / OpenOOD `BasicBlock`, option B).
#[derive(Module, Debug)]
pub struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    shortcut: Option<Shortcut>,
    relu: Relu,
}

#[derive(Module, Debug)]
pub struct Shortcut {
    conv: Conv2d,
    bn: BatchNorm,
}

fn conv3x3(cin: usize, cout: usize, stride: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([cin, cout], [3, 3])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bias(false)
        .init(device)
}

impl BasicBlock {
    fn new(cin: usize, cout: usize, stride: usize, device: &Device) -> Self {
        let shortcut = (stride != 1 || cin != cout).then(|| Shortcut {
            conv: Conv2dConfig::new([cin, cout], [1, 1])
                .with_stride([stride, stride])
                .with_bias(false)
                .init(device),
            bn: BatchNormConfig::new(cout).init(device),
        });
        Self {
            conv1: conv3x3(cin, cout, stride, device),
            bn1: BatchNormConfig::new(cout).init(device),
            conv2: conv3x3(cout, cout, 1, device),
            bn2: BatchNormConfig::new(cout).init(device),
            shortcut,
            relu: Relu::new(),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let out = self
            .relu
            .forward(self.bn1.forward(self.conv1.forward(x.clone())));
        let out = self.bn2.forward(self.conv2.forward(out));
        let identity = match &self.shortcut {
            Some(s) => s.bn.forward(s.conv.forward(x)),
            None => x,
        };
        self.relu.forward(out + identity)
    }
}

/// Logits and the penultimate (pooled) features of one forward pass.
#[derive(Debug, Clone)]
pub struct Output {
    /// `[batch, num_classes]`
    pub logits: Tensor<2>,
    /// `[batch, feature_dim]`
    pub features: Tensor<2>,
}

#[derive(Module, Debug)]
pub struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm,
    relu: Relu,
    stages: Vec<Vec<BasicBlock>>,
    pool: AdaptiveAvgPool2d,
    fc: Linear,
}

impl ResNet {
    /// ResNet with BasicBlocks, `blocks` per stage, base width `width`.
    pub fn cifar(blocks: [usize; 4], width: usize, num_classes: usize, device: &Device) -> Self {
        let widths = [width, 2 * width, 4 * width, 8 * width];
        let mut cin = width;
        let mut stages = Vec::new();
        for (stage, (&n, &cout)) in blocks.iter().zip(&widths).enumerate() {
            let stride = if stage == 0 { 1 } else { 2 };
            let mut layer = Vec::new();
            for b in 0..n {
                layer.push(BasicBlock::new(
                    cin,
                    cout,
                    if b == 0 { stride } else { 1 },
                    device,
                ));
                cin = cout;
            }
            stages.push(layer);
        }
        Self {
            conv1: conv3x3(3, width, 1, device),
            bn1: BatchNormConfig::new(width).init(device),
            relu: Relu::new(),
            stages,
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            fc: LinearConfig::new(8 * width, num_classes).init(device),
        }
    }

    /// ResNet-18 for 32x32 inputs (OpenOOD `ResNet18_32x32`): [2, 2, 2, 2].
    pub fn resnet18_32x32(width: usize, num_classes: usize, device: &Device) -> Self {
        Self::cifar([2, 2, 2, 2], width, num_classes, device)
    }

    /// ResNet-34 for 32x32 inputs (PALM's backbone): [3, 4, 6, 3].
    pub fn resnet34_32x32(width: usize, num_classes: usize, device: &Device) -> Self {
        Self::cifar([3, 4, 6, 3], width, num_classes, device)
    }

    /// The shallower [1, 1, 1, 1] variant used for fast CPU runs; not a paper network.
    pub fn resnet10_32x32(width: usize, num_classes: usize, device: &Device) -> Self {
        Self::cifar([1, 1, 1, 1], width, num_classes, device)
    }

    pub fn feature_dim(&self) -> usize {
        // burn stores Linear weights as [d_input, d_output].
        self.fc.weight.dims()[0]
    }

    /// Penultimate features: `[batch, 3, h, w]` -> `[batch, 8 * width]`.
    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = self.relu.forward(self.bn1.forward(self.conv1.forward(x))); // [b, w, h, w]
        for stage in &self.stages {
            for block in stage {
                x = block.forward(x);
            }
        }
        let x = self.pool.forward(x); // [b, 8w, 1, 1]
        x.flatten(1, 3) // [b, 8w]
    }

    pub fn forward_head(&self, features: Tensor<2>) -> Tensor<2> {
        self.fc.forward(features)
    }

    pub fn forward(&self, x: Tensor<4>) -> Output {
        let features = self.forward_features(x);
        let logits = self.forward_head(features.clone());
        Output { logits, features }
    }
}
