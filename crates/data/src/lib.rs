//! oodforge data: the file formats of the OOD literature, benchmark declarations, the built-in
//! synthetic benchmark, seeded transforms and a multi-threaded deterministic loader.

pub mod bags;
pub mod check;
pub mod error;
pub mod formats;
pub mod images;
pub mod loader;
pub mod open;
pub mod plan;
pub mod pyrand;
pub mod source;
pub mod synthetic;
pub mod transform;

pub use error::DataError;
pub use images::{ImageItem, ImageSet};
pub use loader::{
    Batch, Normalizer, Pipeline, Prefetch, TrainBatch, epoch_batches, make_batch, outlier_indices,
    steps_per_epoch, train_epoch,
};
pub use source::{ImageSource, Rgb, Source};

use oodforge_core::Group;
use oodforge_core::config::{DataConfig, DataSource};
use plan::Role;
use std::sync::Arc;

/// Every set an experiment uses: ID train/test, the OOD test sets with their group, and the
/// auxiliary outliers for OE-style objectives.
#[derive(Clone)]
pub struct Datasets {
    pub num_classes: usize,
    pub class_names: Vec<String>,
    pub train: Source,
    pub test: Source,
    /// The benchmark's ID validation split, when it has one (OpenOOD's `val` lists: ReAct's
    /// percentile is taken there).
    pub val: Option<Source>,
    /// The benchmark's validation OOD list (OpenOOD `val_tin` / `val_openimage_o`): APS.
    pub val_ood: Option<Source>,
    pub ood: Vec<(Source, Group)>,
    pub outliers: Option<Source>,
    /// The benchmark's published normalisation, when it has one.
    pub benchmark_normalize: Option<Normalizer>,
}

impl Datasets {
    /// Open every set of the config. Files are checked and headers parsed here; image files
    /// of lists and folders are decoded when batches are built.
    pub fn load(config: &DataConfig) -> Result<Self, DataError> {
        if config.source.is_bags() {
            return Err(DataError::Config(
                "this config's data are feature bags (kind = \"bags\" / \"synthetic_bags\"): `train` trains and evaluates them in its MIL loop (test accuracy, AUROC and F1 in the run's results.json); the image evaluation does not apply".into(),
            ));
        }
        if let DataSource::Synthetic(s) = &config.source {
            let b = synthetic::benchmark(s);
            return Ok(Self {
                num_classes: b.num_classes,
                class_names: b.class_names,
                train: Arc::new(b.train),
                test: Arc::new(b.test),
                val: Some(Arc::new(b.val)),
                val_ood: Some(Arc::new(b.val_ood)),
                ood: b
                    .ood
                    .into_iter()
                    .map(|(s, g)| (Arc::new(s) as Source, g))
                    .collect(),
                outliers: Some(Arc::new(b.outliers)),
                benchmark_normalize: None,
            });
        }
        let plan = plan::plan(&config.source)?.expect("non-synthetic sources have a plan");
        if let Some((pre, size)) = plan.sizes {
            let cfg_pre = config.pre_size.unwrap_or(config.image_size);
            if (cfg_pre, config.image_size) != (pre, size) {
                tracing::warn!(
                    "data.pre_size/image_size are {cfg_pre}/{} but the benchmark is evaluated at {pre}/{size}; results will not be comparable to its published numbers",
                    config.image_size
                );
            }
        }
        let mut train = None;
        let mut test = None;
        let mut val = None;
        let mut val_ood = None;
        let mut class_names = Vec::new();
        let mut ood = Vec::new();
        let mut outliers = None;
        let mut sizes = Vec::new();
        for (role, set) in &plan.sets {
            let id = matches!(role, Role::Train | Role::Val | Role::Test);
            let o = open::open(set, id.then_some(plan.num_classes), &sizes)?;
            sizes.push((*role, o.source.len()));
            match role {
                Role::Train => {
                    class_names = o.class_names;
                    train = Some(o.source);
                }
                Role::Test => test = Some(o.source),
                Role::Ood(g) => ood.push((o.source, *g)),
                Role::Outliers => outliers = Some(o.source),
                Role::Val => val = Some(o.source),
                Role::ValOod => val_ood = Some(o.source),
            }
        }
        if class_names.len() != plan.num_classes {
            class_names = (0..plan.num_classes)
                .map(|i| format!("class_{i}"))
                .collect();
        }
        Ok(Self {
            num_classes: plan.num_classes,
            class_names,
            train: train.expect("every plan has a train set"),
            test: test.expect("every plan has a test set"),
            val,
            val_ood,
            ood,
            outliers,
            benchmark_normalize: plan.normalize,
        })
    }

    /// The normalisation: the config's, else the benchmark's, else measured on up to 10,000
    /// evenly spaced ID training images under the test transform.
    pub fn normalizer(&self, config: &DataConfig) -> Result<Normalizer, DataError> {
        if let Some(n) = &config.normalize {
            return Ok(Normalizer {
                mean: n.mean,
                std: n.std,
            });
        }
        if let Some(n) = self.benchmark_normalize {
            return Ok(n);
        }
        Normalizer::measure(
            self.train.as_ref(),
            10_000,
            config.pre_size.unwrap_or(config.image_size),
            config.image_size,
        )
    }
}

impl Normalizer {
    /// Channel mean and (population) standard deviation of pixels in [0, 1], over up to
    /// `max_images` evenly spaced images of `source` under the test transform.
    pub fn measure(
        source: &dyn ImageSource,
        max_images: usize,
        pre_size: usize,
        image_size: usize,
    ) -> Result<Self, DataError> {
        let n = source.len();
        let step = n.div_ceil(max_images.max(1)).max(1);
        let mut sum = [0f64; 3];
        let mut sq = [0f64; 3];
        let mut count = 0f64;
        for i in (0..n).step_by(step) {
            let img = transform::test_transform(source.load(i)?, pre_size, image_size);
            for px in img.data.chunks_exact(3) {
                for c in 0..3 {
                    let v = f64::from(px[c]) / 255.0;
                    sum[c] += v;
                    sq[c] += v * v;
                }
            }
            count += (img.height * img.width) as f64;
        }
        let mut mean = [0f32; 3];
        let mut std = [0f32; 3];
        for c in 0..3 {
            let m = sum[c] / count.max(1.0);
            mean[c] = m as f32;
            std[c] = ((sq[c] / count.max(1.0) - m * m).max(1e-12)).sqrt() as f32;
        }
        Ok(Self { mean, std })
    }
}
