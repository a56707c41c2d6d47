//! Helpers shared by the end-to-end training tests (each test file includes this module).

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use oodforge_core::config::{BackendChoice, ResolvedConfig};
use oodforge_models::Classifier;
use oodforge_train::{TrainOptions, checkpoint};
use std::path::Path;

/// Train on flex into `out`.
pub fn opts(out: &Path) -> TrainOptions {
    TrainOptions {
        out: Some(out.to_path_buf()),
        backend: Some(BackendChoice::Flex),
        ..Default::default()
    }
}

/// Every float tensor of a module, in visiting order.
pub struct Collect(pub Vec<f32>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0
            .extend(param.val().into_data().try_to_vec::<f32>().unwrap());
    }
}

/// Every float tensor of a run's last checkpoint (weights and batch-norm running statistics)
/// of a 3-class, 32-pixel model.
pub fn final_weights(run: &Path, cfg: &ResolvedConfig) -> Vec<f32> {
    let ckpt = checkpoint::latest(&run.join("checkpoints"))
        .unwrap()
        .unwrap();
    let model = Classifier::new(&cfg.config.model, 3, 32, &Device::flex());
    let model = checkpoint::load_model(&ckpt, model).unwrap();
    let mut c = Collect(Vec::new());
    model.visit(&mut c);
    c.0
}
