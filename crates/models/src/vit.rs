//! Vision Transformer (Dosovitskiy et al., ICLR 2021) laid out as timm's `VisionTransformer`
//! (`timm/models/vision_transformer.py`, `global_pool="token"`): a strided-convolution patch
//! embedding, a learned CLS token and position embedding, pre-norm blocks
//! `x + attn(norm1(x))`, `x + mlp(norm2(x))` with exact (erf) GELU, a final LayerNorm, and the
//! linear head on the CLS token. LayerNorm eps is timm's 1e-6. Field names are timm's
//! (`patch_embed.proj`, `blocks.i.attn.qkv`, ...), so timm weights load without renaming.
//!
//! The forward pass can also return, for every block, the CLS query's pre-softmax attention
//! scores over all tokens (AEM's attention-entropy term on ViT needs them).
//!
//! Init as timm's `init_weights_vit_timm`: Linear weights N(0, 0.02) (timm's `trunc_normal_`
//! truncates at +-2 absolute, i.e. at 100 standard deviations: the same distribution), biases 0,
//! position embedding N(0, 0.02), CLS token N(0, 1e-6), patch convolution PyTorch's default.
//! Deviation: no dropout / drop-path (timm's defaults for these presets are 0 too).

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};

use crate::ZeroBias;
use crate::activation::gelu;
use crate::layer_norm::layer_norm;
use crate::softmax::softmax_last;

/// timm's LayerNorm epsilon for ViTs.
const LN_EPSILON: f64 = 1e-6;

/// The shape of a ViT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VitShape {
    pub image_size: usize,
    pub patch_size: usize,
    pub dim: usize,
    pub depth: usize,
    pub heads: usize,
    pub mlp_dim: usize,
}

impl VitShape {
    /// ViT-Tiny (timm `vit_tiny_patch16_224`): width 192, depth 12, 3 heads, MLP 768.
    pub fn tiny(image_size: usize, patch_size: usize) -> Self {
        Self {
            image_size,
            patch_size,
            dim: 192,
            depth: 12,
            heads: 3,
            mlp_dim: 768,
        }
    }

    /// ViT-Small (timm `vit_small_patch16_224`): width 384, depth 12, 6 heads, MLP 1536.
    pub fn small(image_size: usize, patch_size: usize) -> Self {
        Self {
            image_size,
            patch_size,
            dim: 384,
            depth: 12,
            heads: 6,
            mlp_dim: 1536,
        }
    }

    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }
}

fn linear(d_in: usize, d_out: usize, device: &Device) -> Linear {
    LinearConfig::new(d_in, d_out)
        .with_initializer(Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        })
        .init(device)
        .zero_bias()
}

fn new_layer_norm(dim: usize, device: &Device) -> LayerNorm {
    LayerNormConfig::new(dim)
        .with_epsilon(LN_EPSILON)
        .init(device)
}

/// `linear.forward(x)` for `x: [b, n, d_in]` as one `[b·n, d_in] x [d_in, d_out]` product.
///
/// Why: burn's `Linear` on a 3-d input is a batched matmul against the weight broadcast over the
/// batch, and under autodiff the weight gradient of a broadcast matmul is computed per batch
/// element (`[b, d_in, d_out]`, from products with an inner size of only n = 65 tokens) and then
/// summed over b. Folding the tokens into rows makes it one `[d_in, b·n] x [b·n, d_out]`
/// product: ViT-Tiny's fc2 forward + backward at batch 128 took 114 ms before, 49 after
/// (BENCHMARKS.md, "ViT: token-folded linear layers"). Same values up to the order of the sums.
fn linear_tokens(linear: &Linear, x: Tensor<3>) -> Tensor<3> {
    let [b, n, d_in] = x.dims();
    let y = linear.forward(x.reshape([b * n, d_in]));
    let [_, d_out] = y.dims();
    y.reshape([b, n, d_out])
}

/// timm `PatchEmbed`: a `patch x patch` convolution with stride `patch`.
#[derive(Module, Debug)]
pub struct PatchEmbed {
    proj: Conv2d,
}

/// timm `Attention`: fused qkv projection, scaled dot product, output projection.
#[derive(Module, Debug)]
pub struct Attention {
    qkv: Linear,
    proj: Linear,
    heads: usize,
}

impl Attention {
    /// `x`: `[b, n, d]` -> (output `[b, n, d]`, CLS-query scores `[b, heads, n]` before softmax).
    fn forward(&self, x: Tensor<3>) -> (Tensor<3>, Tensor<3>) {
        let [b, n, d] = x.dims();
        let hd = d / self.heads;
        // timm: qkv(x).reshape(B, N, 3, H, hd).permute(2, 0, 3, 1, 4)
        let qkv = linear_tokens(&self.qkv, x)
            .reshape([b, n, 3, self.heads, hd])
            .permute([2, 0, 3, 1, 4]);
        let q = qkv.clone().narrow(0, 0, 1).reshape([b, self.heads, n, hd]);
        let k = qkv.clone().narrow(0, 1, 1).reshape([b, self.heads, n, hd]);
        let v = qkv.narrow(0, 2, 1).reshape([b, self.heads, n, hd]);
        let scale = (hd as f64).powf(-0.5);
        let scores = q.mul_scalar(scale).matmul(k.swap_dims(2, 3)); // [b, h, n, n]
        let cls = scores.clone().narrow(2, 0, 1).reshape([b, self.heads, n]);
        let attn = softmax_last(scores);
        let out = attn.matmul(v).swap_dims(1, 2).reshape([b, n, d]);
        (linear_tokens(&self.proj, out), cls)
    }
}

/// timm `Mlp`: fc1 -> GELU -> fc2.
#[derive(Module, Debug)]
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

/// timm `Block` (pre-norm).
#[derive(Module, Debug)]
pub struct VitBlock {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    mlp: Mlp,
}

impl VitBlock {
    fn forward(&self, x: Tensor<3>) -> (Tensor<3>, Tensor<3>) {
        let (a, cls) = self
            .attn
            .forward(layer_norm(&self.norm1, LN_EPSILON, x.clone()));
        let x = x + a;
        let h = self
            .mlp
            .forward(layer_norm(&self.norm2, LN_EPSILON, x.clone()));
        (x + h, cls)
    }
}

impl Mlp {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        linear_tokens(&self.fc2, gelu(linear_tokens(&self.fc1, x)))
    }
}

#[derive(Module, Debug)]
pub struct VisionTransformer {
    patch_embed: PatchEmbed,
    cls_token: Param<Tensor<3>>,
    pos_embed: Param<Tensor<3>>,
    blocks: Vec<VitBlock>,
    norm: LayerNorm,
    head: Linear,
    patch_size: usize,
}

/// What a ViT forward pass returns besides the logits.
#[derive(Debug, Clone)]
pub struct VitOutput {
    /// `[b, dim]`: the normalised CLS token.
    pub features: Tensor<2>,
    /// Per block, the CLS query's attention scores over all `1 + num_patches` tokens, before the
    /// softmax: `[b, heads, 1 + num_patches]`; token 0 is the CLS token itself.
    pub cls_attention: Vec<Tensor<3>>,
}

impl VisionTransformer {
    pub fn new(shape: VitShape, num_classes: usize, device: &Device) -> Self {
        let VitShape {
            image_size,
            patch_size,
            dim,
            depth,
            heads,
            mlp_dim,
        } = shape;
        assert!(
            image_size % patch_size == 0 && dim % heads == 0,
            "ViT shape checked by the config validation"
        );
        let tokens = shape.num_patches() + 1;
        let blocks = (0..depth)
            .map(|_| VitBlock {
                norm1: new_layer_norm(dim, device),
                attn: Attention {
                    qkv: linear(dim, 3 * dim, device),
                    proj: linear(dim, dim, device),
                    heads,
                },
                norm2: new_layer_norm(dim, device),
                mlp: Mlp {
                    fc1: linear(dim, mlp_dim, device),
                    fc2: linear(mlp_dim, dim, device),
                },
            })
            .collect();
        let normal = |std: f64, shape: [usize; 3]| {
            Initializer::Normal { mean: 0.0, std }.init(shape, device)
        };
        Self {
            patch_embed: PatchEmbed {
                proj: Conv2dConfig::new([3, dim], [patch_size, patch_size])
                    .with_stride([patch_size, patch_size])
                    .init(device),
            },
            cls_token: normal(1e-6, [1, 1, dim]),
            pos_embed: normal(0.02, [1, tokens, dim]),
            blocks,
            norm: new_layer_norm(dim, device),
            head: linear(dim, num_classes, device),
            patch_size,
        }
    }

    pub fn feature_dim(&self) -> usize {
        self.head.weight.dims()[0]
    }

    pub fn num_classes(&self) -> usize {
        self.head.weight.dims()[1]
    }

    /// Number of patch tokens the position embedding was built for.
    pub fn num_patches(&self) -> usize {
        self.pos_embed.dims()[1] - 1
    }

    /// Features and per-block CLS attention scores of `x`: `[b, 3, h, w]`.
    pub fn forward_features_attention(&self, x: Tensor<4>) -> VitOutput {
        let [b, _, _, _] = x.dims();
        let x = self.patch_embed.proj.forward(x); // [b, d, h/p, w/p]
        let [_, d, gh, gw] = x.dims();
        assert_eq!(
            gh * gw,
            self.num_patches(),
            "input size does not match the ViT's image_size / patch_size ({} patches)",
            self.num_patches()
        );
        let x = x.reshape([b, d, gh * gw]).swap_dims(1, 2); // [b, n, d]
        let cls = self.cls_token.val().expand([b as i64, 1, d as i64]);
        let mut x = Tensor::cat(vec![cls, x], 1) + self.pos_embed.val();
        let mut cls_attention = Vec::with_capacity(self.blocks.len());
        for block in &self.blocks {
            let (y, a) = block.forward(x);
            x = y;
            cls_attention.push(a);
        }
        let x = layer_norm(&self.norm, LN_EPSILON, x);
        let features = x.narrow(1, 0, 1).reshape([b, d]);
        VitOutput {
            features,
            cls_attention,
        }
    }

    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward_features_attention(x).features
    }

    pub fn head(&self) -> &Linear {
        &self.head
    }

    pub fn patch_size(&self) -> usize {
        self.patch_size
    }
}

/// The CLS token's attention weights over the patch tokens from one block's scores
/// (`Output::cls_attention`): the softmax over all tokens as the block computes it, with the CLS
/// token's own column dropped: `[b, heads, num_patches]`. Each row sums to one minus the weight
/// the CLS token gives itself.
pub fn cls_to_patch_weights(scores: Tensor<3>) -> Tensor<3> {
    let n = scores.dims()[2];
    softmax(scores, 2).narrow(2, 1, n - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn cls_attention_is_the_scaled_dot_product_of_the_cls_query() {
        let _rng = crate::tests::device_rng();
        // Recompute block 0's scores by hand from its weights: tokens = [cls; patches] + pos,
        // h = norm1(tokens), q = h Wq + bq, k = h Wk + bk, score_j = q_cls . k_j / sqrt(hd).
        let device = Device::flex();
        let shape = VitShape {
            image_size: 8,
            patch_size: 4,
            dim: 4,
            depth: 2,
            heads: 2,
            mlp_dim: 8,
        };
        let m = VisionTransformer::new(shape, 3, &device);
        let x = Tensor::<4>::random([2, 3, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let out = m.forward_features_attention(x.clone());
        assert_eq!(out.cls_attention.len(), 2);
        let got = out.cls_attention[0].clone();
        assert_eq!(got.dims(), [2, 2, 5]);

        let p = m
            .patch_embed
            .proj
            .forward(x)
            .reshape([2, 4, 4])
            .swap_dims(1, 2);
        let cls = m.cls_token.val().expand([2i64, 1, 4]);
        let tokens = Tensor::cat(vec![cls, p], 1) + m.pos_embed.val();
        let h = m.blocks[0].norm1.forward(tokens); // [2, 5, 4]
        let w = m.blocks[0].attn.qkv.weight.val(); // [4, 12]: q | k | v columns
        let b = m.blocks[0].attn.qkv.bias.as_ref().unwrap().val();
        let qkv = h.matmul(w.unsqueeze()) + b.unsqueeze(); // [2, 5, 12]
        for head in 0..2 {
            let q = qkv.clone().narrow(2, head * 2, 2).narrow(1, 0, 1); // [2, 1, 2]
            let k = qkv.clone().narrow(2, 4 + head * 2, 2); // [2, 5, 2]
            let want = q.matmul(k.swap_dims(1, 2)).div_scalar(2f64.sqrt()); // [2, 1, 5]
            let have = got.clone().narrow(1, head, 1);
            let diff: f32 = (have - want).abs().max().into_scalar();
            assert!(diff < 1e-5, "head {head}: {diff}");
        }
        // The weights: exp(score) / sum over all 5 tokens, patches only.
        let w: Vec<f32> = cls_to_patch_weights(got.clone())
            .into_data()
            .try_to_vec()
            .unwrap();
        assert_eq!(w.len(), 2 * 2 * 4);
        let v: Vec<f32> = got.into_data().try_to_vec().unwrap();
        for row in 0..4 {
            let s = &v[row * 5..row * 5 + 5];
            let z: f32 = s.iter().map(|x| x.exp()).sum();
            for j in 0..4 {
                assert!((w[row * 4 + j] - s[j + 1].exp() / z).abs() < 1e-6);
            }
        }
        // A real distribution: the scores differ across tokens.
        assert!(v[..5].iter().any(|s| (s - v[0]).abs() > 1e-6), "{v:?}");
    }
}
