//! Wide ResNet (Zagoruyko & Komodakis, BMVC 2016) as the OE and energy repositories define it
//! (`CIFAR/models/wrn.py`, METHODS §2.5): pre-activation BasicBlocks (BN-ReLU-conv3x3,
//! BN-ReLU, dropout, conv3x3), a 1x1 convolution shortcut when the width changes, three groups of
//! n = (depth - 4) / 6 blocks with widths 16k, 32k, 64k and strides 1, 2, 2, then BN-ReLU,
//! global average pooling (the official `avg_pool2d(out, 8)` on 8x8 maps) and a linear head.
//! Init as the official code: conv weights N(0, sqrt(2 / (k * k * out_channels))), BN weight 1,
//! bias 0, linear bias 0 (its weight keeps PyTorch's default).

use crate::ZeroBias;
use crate::batch_norm::batch_norm_relu;
use crate::conv::conv2d;
use crate::dropout::dropout;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Initializer, Linear, LinearConfig,
    PaddingConfig2d,
};
use burn::tensor::{Device, Tensor};

fn conv(cin: usize, cout: usize, k: usize, stride: usize, device: &Device) -> Conv2d {
    let pad = k / 2;
    Conv2dConfig::new([cin, cout], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        // wrn.py: `m.weight.data.normal_(0, math.sqrt(2. / n))`, n = k * k * out_channels.
        .with_initializer(Initializer::Normal {
            mean: 0.0,
            std: (2.0 / (k * k * cout) as f64).sqrt(),
        })
        .init(device)
}

/// `wrn.py::BasicBlock`.
#[derive(Module, Debug)]
pub struct WideBlock {
    bn1: BatchNorm,
    conv1: Conv2d,
    bn2: BatchNorm,
    dropout: Dropout,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl WideBlock {
    fn new(cin: usize, cout: usize, stride: usize, drop: f64, device: &Device) -> Self {
        Self {
            bn1: BatchNormConfig::new(cin).init(device),
            conv1: conv(cin, cout, 3, stride, device),
            bn2: BatchNormConfig::new(cout).init(device),
            dropout: DropoutConfig::new(drop).init(),
            conv2: conv(cout, cout, 3, 1, device),
            shortcut: (cin != cout).then(|| conv(cin, cout, 1, stride, device)),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let act = batch_norm_relu(&self.bn1, x.clone());
        // wrn.py: when in != out the shortcut convolves the *activated* input; otherwise the
        // identity is the raw input.
        let identity = match &self.shortcut {
            Some(s) => conv2d(s, act.clone()),
            None => x,
        };
        let out = conv2d(&self.conv1, act);
        let out = batch_norm_relu(&self.bn2, out);
        let out = conv2d(&self.conv2, dropout(&self.dropout, out));
        out + identity
    }
}

#[derive(Module, Debug)]
pub struct WideResNet {
    conv1: Conv2d,
    groups: Vec<Vec<WideBlock>>,
    bn: BatchNorm,
    pool: AdaptiveAvgPool2d,
    fc: Linear,
}

impl WideResNet {
    /// WRN-`depth`-`widen`; `depth` = 6n + 4. OE/energy: WRN-40-2 with dropout 0.3.
    pub fn new(depth: usize, widen: usize, dropout: f64, classes: usize, device: &Device) -> Self {
        let n = (depth - 4) / 6;
        let widths = [16 * widen, 32 * widen, 64 * widen];
        let mut cin = 16;
        let mut groups = Vec::new();
        for (g, &cout) in widths.iter().enumerate() {
            let stride = if g == 0 { 1 } else { 2 };
            let blocks = (0..n)
                .map(|b| {
                    let block =
                        WideBlock::new(cin, cout, if b == 0 { stride } else { 1 }, dropout, device);
                    cin = cout;
                    block
                })
                .collect();
            groups.push(blocks);
        }
        Self {
            conv1: conv(3, 16, 3, 1, device),
            groups,
            bn: BatchNormConfig::new(cin).init(device),
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            fc: LinearConfig::new(cin, classes).init(device).zero_bias(),
        }
    }

    pub fn feature_dim(&self) -> usize {
        self.fc.weight.dims()[0]
    }

    /// Penultimate features `[batch, 64 * widen]`.
    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = conv2d(&self.conv1, x);
        for group in &self.groups {
            for block in group {
                x = block.forward(x);
            }
        }
        let x = batch_norm_relu(&self.bn, x);
        self.pool.forward(x).flatten(1, 3)
    }

    pub fn num_classes(&self) -> usize {
        self.fc.weight.dims()[1]
    }

    pub fn head(&self) -> &Linear {
        &self.fc
    }
}
