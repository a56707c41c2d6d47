//! The typed experiment schema. Every struct denies unknown fields, every tagged enum has struct
//! variants only (a unit variant in an internally tagged enum silently accepts stray keys), and
//! every default is written out here so the resolved config saved in a run folder is complete.

use serde::{Deserialize, Serialize};

/// One experiment: data, model, objective, optimiser, schedule and evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Run name; defaults to the file stem of the config given on the command line.
    #[serde(default)]
    pub name: String,
    /// Seed of every random stream of the run (initialisation, sample order, augmentation).
    #[serde(default)]
    pub seed: u64,
    /// Which compute backend runs the network.
    #[serde(default)]
    pub backend: BackendChoice,
    pub data: DataConfig,
    pub model: ModelConfig,
    #[serde(default)]
    pub objective: ObjectiveConfig,
    #[serde(default)]
    pub optim: OptimConfig,
    pub train: TrainConfig,
    #[serde(default)]
    pub eval: EvalConfig,
}

/// `--backend` / `backend = "..."`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// wgpu when a hardware GPU adapter exists, otherwise flex.
    #[default]
    Auto,
    Wgpu,
    Flex,
    /// Deprecated upstream; only with the `ndarray` cargo feature.
    Ndarray,
    /// Only with the `cuda` cargo feature.
    Cuda,
}

impl BackendChoice {
    pub const ALL: [&'static str; 5] = ["auto", "wgpu", "flex", "ndarray", "cuda"];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Wgpu => "wgpu",
            Self::Flex => "flex",
            Self::Ndarray => "ndarray",
            Self::Cuda => "cuda",
        }
    }
}

impl std::str::FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "wgpu" => Ok(Self::Wgpu),
            "flex" => Ok(Self::Flex),
            "ndarray" => Ok(Self::Ndarray),
            "cuda" => Ok(Self::Cuda),
            other => Err(format!(
                "unknown backend `{other}`, expected one of {}",
                Self::ALL.join(", ")
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Where the ID, OOD and outlier sets come from.
    pub source: DataSource,
    #[serde(default = "defaults::batch_size")]
    pub batch_size: usize,
    #[serde(default = "defaults::eval_batch_size")]
    pub eval_batch_size: usize,
    #[serde(default)]
    pub augment: AugmentConfig,
    /// Per-channel normalisation; computed from the ID training set when absent. The same
    /// statistics are applied to every OOD set (OpenOOD v1.5 preprocessing, METHODS §8.2).
    #[serde(default)]
    pub normalize: Option<NormalizeConfig>,
}

/// Dataset sources, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", deny_unknown_fields)]
pub enum DataSource {
    /// The built-in, file-free synthetic benchmark (`oodforge_data::synthetic`).
    #[serde(rename = "synthetic")]
    Synthetic(SyntheticConfig),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticConfig {
    /// Number of ID classes (shape families), 2..=10.
    #[serde(default = "defaults::num_classes")]
    pub num_classes: usize,
    #[serde(default = "defaults::train_per_class")]
    pub train_per_class: usize,
    #[serde(default = "defaults::test_per_class")]
    pub test_per_class: usize,
    /// Images in each OOD test set.
    #[serde(default = "defaults::ood_per_set")]
    pub ood_per_set: usize,
    /// Images in the auxiliary outlier set (for OE-style objectives).
    #[serde(default = "defaults::outliers")]
    pub outliers: usize,
    /// Seed of the data itself; fixed across training seeds so seeds compare the same data.
    #[serde(default)]
    pub data_seed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AugmentConfig {
    /// Zero padding before the random crop back to the input size; 0 disables the crop.
    #[serde(default = "defaults::crop_padding")]
    pub random_crop_padding: usize,
    #[serde(default = "defaults::yes")]
    pub horizontal_flip: bool,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            random_crop_padding: defaults::crop_padding(),
            horizontal_flip: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormalizeConfig {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// Backbones, tagged by `backbone`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "backbone", deny_unknown_fields)]
pub enum ModelConfig {
    /// CIFAR-style ResNet-18 (He et al. 2016; OpenOOD `resnet18_32x32`): 3x3 stem, stride 1,
    /// no max-pool, BasicBlocks [2, 2, 2, 2]. `width` = 64 is the paper network (512-d feature).
    #[serde(rename = "resnet18")]
    ResNet18 {
        #[serde(default = "defaults::resnet_width")]
        width: usize,
    },
    /// The same CIFAR ResNet with one BasicBlock per stage: a shallower network for fast
    /// CPU runs (the quickstart). Not a paper network.
    #[serde(rename = "resnet10")]
    ResNet10 {
        #[serde(default = "defaults::resnet_width")]
        width: usize,
    },
}

/// Training objectives, tagged by `name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", deny_unknown_fields)]
pub enum ObjectiveConfig {
    /// Plain cross-entropy on ID data.
    #[serde(rename = "ce")]
    Ce {},
}

impl Default for ObjectiveConfig {
    fn default() -> Self {
        Self::Ce {}
    }
}

/// Optimisers, tagged by `name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", deny_unknown_fields)]
pub enum OptimConfig {
    /// SGD as PyTorch's `torch.optim.SGD` (dampening 0), weight decay on every parameter
    /// (OpenOOD `train_base`: `model.parameters()` with `weight_decay=5e-4`).
    #[serde(rename = "sgd")]
    Sgd {
        #[serde(default = "defaults::lr")]
        lr: f64,
        #[serde(default = "defaults::momentum")]
        momentum: f64,
        #[serde(default = "defaults::yes")]
        nesterov: bool,
        #[serde(default = "defaults::weight_decay")]
        weight_decay: f64,
    },
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self::Sgd {
            lr: defaults::lr(),
            momentum: defaults::momentum(),
            nesterov: true,
            weight_decay: defaults::weight_decay(),
        }
    }
}

impl OptimConfig {
    pub fn base_lr(&self) -> f64 {
        match self {
            Self::Sgd { lr, .. } => *lr,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub epochs: usize,
    /// Learning-rate schedule, applied per optimiser step.
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    /// Linear warm-up from 0 to the base lr over this many epochs (in steps).
    #[serde(default)]
    pub warmup_epochs: usize,
    /// Final lr of the cosine schedule (OpenOOD: 1e-6).
    #[serde(default = "defaults::min_lr")]
    pub min_lr: f64,
    /// Write a checkpoint every N epochs (and always after the last epoch).
    #[serde(default = "defaults::one")]
    pub checkpoint_every: usize,
    /// Write a step line to metrics.jsonl every N steps.
    #[serde(default = "defaults::log_every")]
    pub log_every: usize,
}

/// Learning-rate schedules. Plain strings: `"cosine"` or `"constant"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// Per-step cosine annealing from the base lr to `min_lr` (OpenOOD `cosine_annealing`).
    #[default]
    Cosine,
    Constant,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Post-processors (OOD scores) to evaluate, each `{ name = "..." , ...settings }`.
    #[serde(default = "defaults::postprocessors")]
    pub postprocessors: Vec<PostprocessorConfig>,
    /// Evaluate right after training.
    #[serde(default = "defaults::yes")]
    pub after_training: bool,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            postprocessors: defaults::postprocessors(),
            after_training: true,
        }
    }
}

/// OOD scores, tagged by `name`. All are "higher = more in-distribution" (OpenOOD convention).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", deny_unknown_fields)]
pub enum PostprocessorConfig {
    /// Maximum softmax probability (Hendrycks & Gimpel 2017).
    #[serde(rename = "msp")]
    Msp {},
    /// Maximum logit (Hendrycks et al. 2022; OpenOOD `mls`).
    #[serde(rename = "maxlogit")]
    MaxLogit {},
    /// Energy score T·logsumexp(z/T) (Liu et al. 2020; OpenOOD `ebo`).
    #[serde(rename = "energy")]
    Energy {
        #[serde(default = "defaults::temperature")]
        temperature: f64,
    },
}

impl PostprocessorConfig {
    /// The key under which results are reported.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Msp {} => "msp",
            Self::MaxLogit {} => "maxlogit",
            Self::Energy { .. } => "energy",
        }
    }
}

pub(crate) mod defaults {
    use super::PostprocessorConfig;
    pub fn batch_size() -> usize {
        128
    }
    pub fn eval_batch_size() -> usize {
        200
    }
    pub fn num_classes() -> usize {
        10
    }
    pub fn train_per_class() -> usize {
        1000
    }
    pub fn test_per_class() -> usize {
        200
    }
    pub fn ood_per_set() -> usize {
        1000
    }
    pub fn outliers() -> usize {
        5000
    }
    pub fn crop_padding() -> usize {
        4
    }
    pub fn yes() -> bool {
        true
    }
    pub fn resnet_width() -> usize {
        64
    }
    pub fn lr() -> f64 {
        0.1
    }
    pub fn momentum() -> f64 {
        0.9
    }
    pub fn weight_decay() -> f64 {
        5e-4
    }
    pub fn min_lr() -> f64 {
        1e-6
    }
    pub fn one() -> usize {
        1
    }
    pub fn log_every() -> usize {
        50
    }
    pub fn temperature() -> f64 {
        1.0
    }
    pub fn postprocessors() -> Vec<PostprocessorConfig> {
        vec![
            PostprocessorConfig::Msp {},
            PostprocessorConfig::MaxLogit {},
            PostprocessorConfig::Energy { temperature: 1.0 },
        ]
    }
}
