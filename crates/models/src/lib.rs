//! oodforge models: backbones behind one enum, each returning logits and penultimate features
//! from one forward pass.

pub mod resnet;
pub mod wrn;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use oodforge_core::config::ModelConfig;
pub use resnet::{Output, ResNet};
pub use wrn::WideResNet;

/// Every backbone (an enum rather than trait objects: the compiler lists every place a new
/// variant must be handled).
#[derive(Module, Debug)]
pub enum Classifier {
    ResNet(ResNet),
    Wrn(WideResNet),
}

impl Classifier {
    /// Build the backbone of a config. Parameters are drawn from the device's RNG; seed it first.
    pub fn new(config: &ModelConfig, num_classes: usize, device: &Device) -> Self {
        match config {
            ModelConfig::ResNet18 { width } => {
                Self::ResNet(ResNet::resnet18_32x32(*width, num_classes, device))
            }
            ModelConfig::ResNet34 { width } => {
                Self::ResNet(ResNet::resnet34_32x32(*width, num_classes, device))
            }
            ModelConfig::ResNet10 { width } => {
                Self::ResNet(ResNet::resnet10_32x32(*width, num_classes, device))
            }
            ModelConfig::Wrn {
                depth,
                widen_factor,
                dropout,
            } => Self::Wrn(WideResNet::new(
                *depth,
                *widen_factor,
                *dropout,
                num_classes,
                device,
            )),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Output {
        match self {
            Self::ResNet(m) => m.forward(x),
            Self::Wrn(m) => m.forward(x),
        }
    }

    pub fn feature_dim(&self) -> usize {
        match self {
            Self::ResNet(m) => m.feature_dim(),
            Self::Wrn(m) => m.feature_dim(),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::{ModuleVisitor, Param};

    #[test]
    fn resnet18_matches_the_reference_parameter_count() {
        // torchvision-style ResNet-18 with a 3x3 stem and 10 classes: 11,173,962 parameters
        // (OpenOOD resnet18_32x32; `sum(p.numel() for p in net.parameters())`).
        let device = Device::flex();
        let m = Classifier::new(&ModelConfig::ResNet18 { width: 64 }, 10, &device);
        assert_eq!(m.num_trainable_params(), 11_173_962);
        // Plus 2 x 4,800 BatchNorm running statistics.
        assert_eq!(m.num_params(), 11_173_962 + 9_600);
        assert_eq!(m.feature_dim(), 512);
        // CIFAR ResNet-34, 10 classes: 21,282,122 (PALM / kuangliu pytorch-cifar `ResNet34`).
        let m = Classifier::new(&ModelConfig::ResNet34 { width: 64 }, 10, &device);
        assert_eq!(m.num_trainable_params(), 21_282_122);
    }

    #[test]
    fn wrn_40_2_matches_the_reference_parameter_count() {
        // OE / energy `WideResNet(40, 10, 2, dropRate=0.3)`: 2,243,546 parameters
        // (`sum(p.numel() for p in net.parameters())`), 128-d features.
        let device = Device::flex();
        let cfg = ModelConfig::Wrn {
            depth: 40,
            widen_factor: 2,
            dropout: 0.3,
        };
        let m = Classifier::new(&cfg, 10, &device);
        assert_eq!(m.num_trainable_params(), 2_243_546);
        assert_eq!(m.feature_dim(), 128);
    }

    struct GradCheck<'a> {
        grads: &'a burn::tensor::Gradients,
        missing: usize,
        total: usize,
    }

    impl ModuleVisitor for GradCheck<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if param.is_require_grad() {
                self.total += 1;
                match param.val().grad(self.grads) {
                    Some(g) => {
                        let sum: f32 = g.abs().sum().into_scalar::<f32>();
                        if !(sum.is_finite() && sum > 0.0) {
                            self.missing += 1;
                        }
                    }
                    None => self.missing += 1,
                }
            }
        }
    }

    #[test]
    fn small_resnets_give_shapes_finite_outputs_and_gradients_everywhere() {
        let device = Device::flex().autodiff();
        for cfg in [
            ModelConfig::ResNet10 { width: 4 },
            ModelConfig::ResNet18 { width: 4 },
            ModelConfig::ResNet34 { width: 2 },
            ModelConfig::Wrn {
                depth: 10,
                widen_factor: 1,
                dropout: 0.3,
            },
        ] {
            device.seed(0);
            let m = Classifier::new(&cfg, 5, &device);
            let x = Tensor::<4>::random(
                [3, 3, 32, 32],
                burn::tensor::Distribution::Normal(0.0, 1.0),
                &device,
            );
            let out = m.forward(x);
            assert_eq!(out.logits.dims(), [3, 5], "{cfg:?}");
            let dim = m.feature_dim();
            assert_eq!(out.features.dims(), [3, dim], "{cfg:?}");
            let logits: Vec<f32> = out.logits.clone().into_data().try_to_vec().unwrap();
            assert!(logits.iter().all(|v| v.is_finite()));
            let grads = out.logits.sum().backward();
            let mut check = GradCheck {
                grads: &grads,
                missing: 0,
                total: 0,
            };
            m.visit(&mut check);
            assert!(check.total > 10);
            assert_eq!(
                check.missing, 0,
                "{cfg:?}: {} of {} parameters got no gradient",
                check.missing, check.total
            );
        }
    }
}
