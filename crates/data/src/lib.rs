//! oodforge data: image sets, the built-in synthetic benchmark, augmentation and batching.

pub mod batch;
pub mod images;
pub mod synthetic;

pub use batch::{Batch, Normalizer, epoch_batches, eval_batch, steps_per_epoch, train_batch};
pub use images::{ImageItem, ImageSet};

use oodforge_core::Group;
use oodforge_core::config::{DataConfig, DataSource};

/// Every set an experiment uses: ID train/test, the OOD test sets with their group, and the
/// auxiliary outliers for OE-style objectives.
#[derive(Debug, Clone)]
pub struct Datasets {
    pub num_classes: usize,
    pub class_names: Vec<String>,
    pub train: ImageSet,
    pub test: ImageSet,
    pub ood: Vec<(ImageSet, Group)>,
    pub outliers: ImageSet,
}

impl Datasets {
    pub fn load(config: &DataConfig) -> Self {
        match &config.source {
            DataSource::Synthetic(s) => synthetic::benchmark(s),
        }
    }

    /// The normalisation of the config, or the ID training statistics.
    pub fn normalizer(&self, config: &DataConfig) -> Normalizer {
        match &config.normalize {
            Some(n) => Normalizer {
                mean: n.mean,
                std: n.std,
            },
            None => Normalizer::from_images(&self.train),
        }
    }
}
