use super::*;
use burn::module::{ModuleVisitor, Param};
use burn::tensor::Distribution;
/// The crate's tests in other modules reach it as `crate::tests::device_rng`.
pub(crate) use oodforge_testutil::device_rng;

fn model(backbone: Backbone_, classes: usize, image: usize) -> Classifier {
    Classifier::new(
        &ModelConfig::from(backbone),
        classes,
        image,
        &Device::flex(),
    )
}

#[test]
fn parameter_counts_match_the_reference_architectures() {
    let _rng = device_rng();
    // `sum(p.numel() for p in net.parameters())` of the reference code (BatchNorm running
    // statistics are buffers, not parameters).
    let cifar = ResNetStem::Cifar;
    let imagenet = ResNetStem::ImageNet;
    let cases = [
        // OpenOOD resnet18_32x32, 10 classes.
        (
            Backbone_::ResNet18 {
                width: 64,
                stem: cifar,
            },
            10,
            32,
            11_173_962,
            512,
        ),
        // PALM / kuangliu pytorch-cifar ResNet34, 10 classes.
        (
            Backbone_::ResNet34 {
                width: 64,
                stem: cifar,
            },
            10,
            32,
            21_282_122,
            512,
        ),
        // torchvision resnet18 / resnet50, 1000 classes.
        (
            Backbone_::ResNet18 {
                width: 64,
                stem: imagenet,
            },
            1000,
            224,
            11_689_512,
            512,
        ),
        (
            Backbone_::ResNet50 {
                width: 64,
                stem: imagenet,
            },
            1000,
            224,
            25_557_032,
            2048,
        ),
        // OE / energy WideResNet(40, 10, 2, dropRate=0.3).
        (
            Backbone_::Wrn {
                depth: 40,
                widen_factor: 2,
                dropout: 0.3,
            },
            10,
            32,
            2_243_546,
            128,
        ),
        // timm vit_tiny_patch16_224 / vit_small_patch16_224, 1000 classes.
        (
            Backbone_::VitTiny { patch_size: None },
            1000,
            224,
            5_717_416,
            192,
        ),
        (
            Backbone_::VitSmall { patch_size: None },
            1000,
            224,
            22_050_664,
            384,
        ),
    ];
    for (backbone, classes, image, params, dim) in cases {
        let m = model(backbone.clone(), classes, image);
        assert_eq!(m.num_trainable_params(), params, "{backbone:?}");
        assert_eq!(m.feature_dim(), dim, "{backbone:?}");
        assert_eq!(m.num_classes(), classes, "{backbone:?}");
    }
    // 2 x 4,800 BatchNorm running statistics on top of ResNet-18's parameters.
    let m = model(
        Backbone_::ResNet18 {
            width: 64,
            stem: cifar,
        },
        10,
        32,
    );
    assert_eq!(m.num_params(), 11_173_962 + 9_600);
    // PALM's head on ResNet-34: 512*512 + 512 + 512*128 + 128 more parameters.
    let cfg = ModelConfig {
        projection: Some(ProjectionConfig {
            hidden: 512,
            dim: 128,
        }),
        ..ModelConfig::from(Backbone_::ResNet34 {
            width: 64,
            stem: cifar,
        })
    };
    let m = Classifier::new(&cfg, 100, 32, &Device::flex());
    assert_eq!(
        m.num_trainable_params(),
        21_328_292 + 512 * 512 + 512 + 512 * 128 + 128
    );
    assert_eq!(m.projection_dim(), Some(128));
}

struct GradCheck<'a> {
    grads: &'a burn::tensor::Gradients,
    missing: Vec<String>,
    path: Vec<String>,
    total: usize,
}

impl ModuleVisitor for GradCheck<'_> {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_owned());
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        // BatchNorm's running statistics are buffers (PyTorch's `register_buffer`), not trained.
        if self.path.last().is_some_and(|n| n.starts_with("running_")) {
            return;
        }
        self.total += 1;
        // Every other parameter of our networks trains (the official code freezes none): one
        // that does not require a gradient is a bug, as the zeroed head bias once was.
        if !param.is_require_grad() {
            self.missing
                .push(format!("{} (frozen)", self.path.join(".")));
            return;
        }
        let ok = param.val().grad(self.grads).is_some_and(|g| {
            let sum: f32 = g.abs().sum().into_scalar::<f32>();
            sum.is_finite() && sum > 0.0
        });
        if !ok {
            self.missing.push(self.path.join("."));
        }
    }
}

fn assert_all_gradients(m: &impl Module, grads: &burn::tensor::Gradients, what: &str) {
    let mut check = GradCheck {
        grads,
        missing: Vec::new(),
        path: Vec::new(),
        total: 0,
    };
    m.visit(&mut check);
    assert!(check.total > 5, "{what}: only {} parameters", check.total);
    assert!(
        check.missing.is_empty(),
        "{what}: {} of {} parameters got no gradient: {:?}",
        check.missing.len(),
        check.total,
        check.missing
    );
}

fn finite(t: &Tensor<2>) -> bool {
    let v: Vec<f32> = t.clone().into_data().try_to_vec().unwrap();
    v.iter().all(|x| x.is_finite())
}

/// Every backbone variant, small: shapes, feature dimension, finite outputs, and a gradient on
/// every parameter (through logits, and through the embedding when there is a projection head).
/// A new `Backbone` variant must be added to `variants()`; the match below fails to compile
/// until it is.
fn variants() -> Vec<(Backbone_, usize)> {
    let all = vec![
        (
            Backbone_::ResNet10 {
                width: 4,
                stem: ResNetStem::Cifar,
            },
            32,
        ),
        (
            Backbone_::ResNet18 {
                width: 4,
                stem: ResNetStem::Cifar,
            },
            32,
        ),
        (
            Backbone_::ResNet34 {
                width: 2,
                stem: ResNetStem::Cifar,
            },
            32,
        ),
        (
            Backbone_::ResNet50 {
                width: 2,
                stem: ResNetStem::Cifar,
            },
            32,
        ),
        (
            Backbone_::ResNet18 {
                width: 4,
                stem: ResNetStem::ImageNet,
            },
            64,
        ),
        (
            Backbone_::ResNet50 {
                width: 2,
                stem: ResNetStem::ImageNet,
            },
            64,
        ),
        (
            Backbone_::Wrn {
                depth: 10,
                widen_factor: 1,
                dropout: 0.3,
            },
            32,
        ),
        (
            Backbone_::Vit {
                patch_size: 8,
                dim: 12,
                depth: 2,
                heads: 3,
                mlp_dim: None,
            },
            32,
        ),
    ];
    for (b, _) in &all {
        // Exhaustiveness guard: adding a variant breaks this match until it is listed above.
        match b {
            Backbone_::ResNet10 { .. }
            | Backbone_::ResNet18 { .. }
            | Backbone_::ResNet34 { .. }
            | Backbone_::ResNet50 { .. }
            | Backbone_::Wrn { .. }
            | Backbone_::Vit { .. } => {}
            // The presets are `Vit` with fixed shapes (counted in the parameter test).
            Backbone_::VitTiny { .. } | Backbone_::VitSmall { .. } => {}
            // Not image networks: `mil_aggregators_from_config` covers them.
            Backbone_::Abmil { .. } | Backbone_::MilMha { .. } => {}
        }
    }
    all
}

#[test]
fn every_backbone_gives_shapes_finite_outputs_and_gradients_everywhere() {
    let _rng = device_rng();
    let device = Device::flex().autodiff();
    for (backbone, image) in variants() {
        let what = format!("{backbone:?}");
        device.seed(0);
        let cfg = ModelConfig {
            projection: Some(ProjectionConfig { hidden: 8, dim: 4 }),
            prediction_heads: 2,
            ..ModelConfig::from(backbone.clone())
        };
        let m = Classifier::new(&cfg, 5, image, &device);
        let x = Tensor::<4>::random(
            [3, 3, image, image],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let out = m.forward(x);
        assert_eq!(out.logits.dims(), [3, 5], "{what}");
        assert_eq!(out.features.dims(), [3, m.feature_dim()], "{what}");
        let z = out.embedding.clone().expect("projection head");
        assert_eq!(z.dims(), [3, 4], "{what}");
        assert!(
            finite(&out.logits) && finite(&out.features) && finite(&z),
            "{what}"
        );
        // The embedding is L2-normalised.
        let norms: Vec<f32> = z
            .clone()
            .square()
            .sum_dim(1)
            .into_data()
            .try_to_vec()
            .unwrap();
        assert!(
            norms.iter().all(|n| (n - 1.0).abs() < 1e-5),
            "{what}: {norms:?}"
        );
        if let Backbone_::Vit { depth, heads, .. } = backbone {
            let tokens = (image / 8).pow(2) + 1;
            assert_eq!(out.cls_attention.len(), depth, "{what}");
            for a in &out.cls_attention {
                assert_eq!(a.dims(), [3, heads, tokens], "{what}");
            }
        } else {
            assert!(out.cls_attention.is_empty());
        }
        // The head on the same features reproduces the logits (the ReAct / ASH hook).
        let again = m.forward_head(out.features.clone());
        let diff: f32 = (again - out.logits.clone()).abs().max().into_scalar();
        assert_eq!(diff, 0.0, "{what}");
        let aux = out.aux_logits.clone().expect("a second prediction head");
        assert_eq!(aux.dims(), [3, 5], "{what}");
        let loss = out.logits.sum() + z.sum() + aux.sum();
        let grads = loss.backward();
        assert_all_gradients(&m, &grads, &what);
    }
}

#[test]
fn head_weight_and_bias_reproduce_the_logits() {
    let _rng = device_rng();
    // ViM uses W and b directly: logits = features W^T + b.
    let m = model(
        Backbone_::ResNet10 {
            width: 4,
            stem: ResNetStem::Cifar,
        },
        7,
        32,
    );
    let x = Tensor::<4>::random(
        [2, 3, 32, 32],
        Distribution::Normal(0.0, 1.0),
        &Device::flex(),
    );
    let out = m.forward(x);
    assert_eq!(m.head_weight().dims(), [7, 32]);
    assert_eq!(m.head_bias().dims(), [7]);
    let manual = out.features.matmul(m.head_weight().transpose()) + m.head_bias().unsqueeze();
    let diff: f32 = (manual - out.logits).abs().max().into_scalar();
    assert!(diff < 1e-5, "{diff}");
}

#[test]
fn mil_aggregators_give_bag_logits_attention_and_gradients() {
    let _rng = device_rng();
    let device = Device::flex().autodiff();
    device.seed(1);
    let bag = Tensor::<2>::random([9, 16], Distribution::Normal(0.0, 1.0), &device);
    let abmil = MilModel::Abmil(Abmil::new(16, 8, 6, 3, &device));
    let mha = MilModel::Mha(MhaMil::new(16, 16, 3, &device));
    for (m, heads) in [(abmil, 1), (mha, MhaMil::HEADS)] {
        let out = m.forward(bag.clone());
        assert_eq!(out.logits.dims(), [1, 3]);
        assert_eq!(out.attention.dims(), [heads, 9]);
        assert!(finite(&out.logits) && finite(&out.attention));
        let grads = (out.logits.sum() + out.attention.sum()).backward();
        assert_all_gradients(&m, &grads, &format!("{heads} heads"));
    }
}

#[test]
fn mil_aggregators_from_config() {
    let _rng = device_rng();
    let device = Device::flex().autodiff();
    device.seed(0);
    let bag = Tensor::<2>::random([7, 12], Distribution::Normal(0.0, 1.0), &device).require_grad();
    for (backbone, heads) in [
        (
            Backbone_::Abmil {
                d_inner: 16,
                d_attention: 8,
            },
            1,
        ),
        (Backbone_::MilMha { d_inner: 16 }, 8),
    ] {
        let m = MilModel::new(&ModelConfig::from(backbone.clone()), 12, 3, &device)
            .expect("a MIL backbone");
        let out = m.forward(bag.clone());
        assert_eq!(out.logits.dims(), [1, 3], "{backbone:?}");
        assert_eq!(out.attention.dims(), [heads, 7], "{backbone:?}");
        assert_eq!(out.features.dims(), [1, 16], "{backbone:?}");
        let grads = out.logits.sum().backward();
        let g = bag.grad(&grads).expect("gradient reaches the instances");
        assert!(g.abs().sum().into_scalar::<f32>() > 0.0, "{backbone:?}");
    }
    let image = ModelConfig::from(Backbone_::ResNet10 {
        width: 8,
        stem: Default::default(),
    });
    assert!(MilModel::new(&image, 12, 3, &device).is_none());
}
