//! Attention-MIL aggregators over bags of instance features, as AEM's code defines them
//! (`architecture/transformer.py`, `architecture/network.py`; METHODS §7.2). A bag is one slide:
//! `[n_instances, d_feat]` features from a frozen extractor. Both aggregators start with AEM's
//! `DimReduction` (Linear without bias + ReLU) and return the bag logits together with the
//! **pre-softmax** attention scores, which AEM's entropy term consumes.
//!
//! Field names follow the official ones (`dimreduction.fc1`, `attention.q_proj`, ...); the
//! importer maps AEM checkpoints (and the golden fixtures' parameter names) onto them.

use crate::dropout::dropout;
use burn::module::{Module, Param};
use burn::nn::{
    Dropout, DropoutConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};
use burn::tensor::activation::{relu, sigmoid, softmax, tanh};
use burn::tensor::{Device, Tensor};
use oodforge_core::config::{Backbone, ModelConfig};

/// `network.py::DimReduction` (with `numLayer_Res = 0`, the default): Linear(no bias) + ReLU.
#[derive(Module, Debug)]
pub struct DimReduction {
    fc1: Linear,
}

impl DimReduction {
    fn new(d_feat: usize, d_inner: usize, device: &Device) -> Self {
        Self {
            fc1: LinearConfig::new(d_feat, d_inner)
                .with_bias(false)
                .init(device),
        }
    }

    fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        relu(self.fc1.forward(x))
    }
}

/// `network.py::Classifier_1fc` (dropout 0 in both aggregators, so only the linear layer).
#[derive(Module, Debug)]
pub struct Classifier1fc {
    fc: Linear,
}

/// `transformer.py::Attention_Gated`: `a = w^T (tanh(V h) * sigmoid(U h))`, K = 1 row.
/// (Official names `attention_V.0` / `attention_U.0`: the Linear inside an `nn.Sequential`; the
/// importer maps them onto these fields.)
#[derive(Module, Debug)]
pub struct GatedAttention {
    attention_v: Linear,
    attention_u: Linear,
    attention_weights: Linear,
}

/// What an aggregator returns for one bag.
#[derive(Debug, Clone)]
pub struct MilOutput {
    /// `[1, n_class]`
    pub logits: Tensor<2>,
    /// Pre-softmax attention scores `[heads, n_instances]` (ABMIL: one row).
    pub attention: Tensor<2>,
    /// The attention-pooled bag feature `[1, d_inner]`.
    pub features: Tensor<2>,
}

/// Gated-attention ABMIL (Ilse et al., ICML 2018) as `transformer.py::ABMIL`.
#[derive(Module, Debug)]
pub struct Abmil {
    dimreduction: DimReduction,
    attention: GatedAttention,
    classifier: Classifier1fc,
}

impl Abmil {
    /// `d_attn` is the gated attention's hidden size (`D`, 128 in the official code).
    pub fn new(
        d_feat: usize,
        d_inner: usize,
        d_attn: usize,
        n_class: usize,
        device: &Device,
    ) -> Self {
        let lin = |i, o| LinearConfig::new(i, o).init(device);
        Self {
            dimreduction: DimReduction::new(d_feat, d_inner, device),
            attention: GatedAttention {
                attention_v: lin(d_inner, d_attn),
                attention_u: lin(d_inner, d_attn),
                attention_weights: lin(d_attn, 1),
            },
            classifier: Classifier1fc {
                fc: lin(d_inner, n_class),
            },
        }
    }

    /// `bag`: `[n_instances, d_feat]`.
    pub fn forward(&self, bag: Tensor<2>) -> MilOutput {
        let h = self.dimreduction.forward(bag); // [n, d_inner]
        let v = tanh(self.attention.attention_v.forward(h.clone()));
        let u = sigmoid(self.attention.attention_u.forward(h.clone()));
        let a = self
            .attention
            .attention_weights
            .forward(v * u)
            .swap_dims(0, 1); // [1, n]
        let features = softmax(a.clone(), 1).matmul(h); // [1, d_inner]
        MilOutput {
            logits: self.classifier.fc.forward(features.clone()),
            attention: a,
            features,
        }
    }
}

/// `transformer.py::MutiHeadAttention` (downsample rate 1, dropout 0.1).
#[derive(Module, Debug)]
pub struct QueryAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    layer_norm: LayerNorm,
    dropout: Dropout,
    heads: usize,
}

/// AEM's default aggregator (`--arch mha`, `transformer.py::MHA`): one learnable query attends
/// over the bag's instances with 8 heads; out-projection, dropout 0.1, LayerNorm(eps 1e-6),
/// linear classifier.
#[derive(Module, Debug)]
pub struct MhaMil {
    dimreduction: DimReduction,
    attention: QueryAttention,
    q: Param<Tensor<3>>,
    classifier: Classifier1fc,
}

impl MhaMil {
    pub const HEADS: usize = 8;

    pub fn new(d_feat: usize, d_inner: usize, n_class: usize, device: &Device) -> Self {
        let lin = |i, o| LinearConfig::new(i, o).init(device);
        Self {
            dimreduction: DimReduction::new(d_feat, d_inner, device),
            attention: QueryAttention {
                q_proj: lin(d_inner, d_inner),
                k_proj: lin(d_inner, d_inner),
                v_proj: lin(d_inner, d_inner),
                out_proj: lin(d_inner, d_inner),
                layer_norm: LayerNormConfig::new(d_inner)
                    .with_epsilon(1e-6)
                    .init(device),
                dropout: DropoutConfig::new(0.1).init(),
                heads: Self::HEADS,
            },
            // `nn.init.normal_(self.q, std=1e-6)`
            q: Initializer::Normal {
                mean: 0.0,
                std: 1e-6,
            }
            .init([1, 1, d_inner], device),
            classifier: Classifier1fc {
                fc: lin(d_inner, n_class),
            },
        }
    }

    /// `bag`: `[n_instances, d_feat]`.
    pub fn forward(&self, bag: Tensor<2>) -> MilOutput {
        let [n, _] = bag.dims();
        let h = self.dimreduction.forward(bag); // [n, d]
        let att = &self.attention;
        let d = h.dims()[1];
        let (heads, hd) = (att.heads, d / att.heads);
        let q = att.q_proj.forward(self.q.val().reshape([1, d])); // [1, d]
        let k = att.k_proj.forward(h.clone()); // [n, d]
        let v = att.v_proj.forward(h);
        // Separate heads: [heads, tokens, hd].
        let q = q.reshape([1, heads, hd]).swap_dims(0, 1);
        let k = k.reshape([n, heads, hd]).swap_dims(0, 1);
        let v = v.reshape([n, heads, hd]).swap_dims(0, 1);
        let scores = q.matmul(k.swap_dims(1, 2)).div_scalar((hd as f64).sqrt()); // [heads, 1, n]
        let out = softmax(scores.clone(), 2).matmul(v); // [heads, 1, hd]
        let out = out.swap_dims(0, 1).reshape([1, d]);
        let out = att
            .layer_norm
            .forward(dropout(&att.dropout, att.out_proj.forward(out)));
        MilOutput {
            logits: self.classifier.fc.forward(out.clone()),
            attention: scores.reshape([heads, n]),
            features: out,
        }
    }
}

/// The aggregators behind one enum. (One of them exists per run; boxing to even out the
/// variants' sizes would buy nothing.)
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum MilModel {
    Abmil(Abmil),
    Mha(MhaMil),
}

impl MilModel {
    /// The aggregator of a config for `d_feat`-dimensional instances, or `None` when the
    /// backbone is an image network. Parameters are drawn from the device's RNG; seed it first.
    pub fn new(
        config: &ModelConfig,
        d_feat: usize,
        n_class: usize,
        device: &Device,
    ) -> Option<Self> {
        match &config.backbone {
            Backbone::Abmil {
                d_inner,
                d_attention,
            } => Some(Self::Abmil(Abmil::new(
                d_feat,
                *d_inner,
                *d_attention,
                n_class,
                device,
            ))),
            Backbone::MilMha { d_inner } => {
                Some(Self::Mha(MhaMil::new(d_feat, *d_inner, n_class, device)))
            }
            _ => None,
        }
    }

    pub fn forward(&self, bag: Tensor<2>) -> MilOutput {
        match self {
            Self::Abmil(m) => m.forward(bag),
            Self::Mha(m) => m.forward(bag),
        }
    }
}
