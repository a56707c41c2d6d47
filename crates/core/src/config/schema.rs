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
    /// Data-parallel training (`torch.nn.DataParallel`): the backend's devices that each run a
    /// chunk of every forward pass (`[0, 1, 2, 3]` or `"all"`); `[0]`, the default, is one
    /// device. Part of the experiment (and its hash) because batch-norm statistics are per
    /// device. Left out of the resolved text when it is the default, so single-device configs
    /// keep the hashes they had before this key existed.
    #[serde(default, skip_serializing_if = "Devices::is_single")]
    pub devices: Devices,
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
    /// LibTorch on the CPU (burn-tch, linked against the libtorch of a PyTorch installation);
    /// only with the `tch` cargo feature.
    Tch,
}

impl BackendChoice {
    pub const ALL: [&'static str; 6] = ["auto", "wgpu", "flex", "ndarray", "cuda", "tch"];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Wgpu => "wgpu",
            Self::Flex => "flex",
            Self::Ndarray => "ndarray",
            Self::Cuda => "cuda",
            Self::Tch => "tch",
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
            "tch" => Ok(Self::Tch),
            other => Err(format!(
                "unknown backend `{other}`, expected one of {}",
                Self::ALL.join(", ")
            )),
        }
    }
}

/// `devices = [0, 1]` or `devices = "all"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Devices {
    /// Indices into the backend's devices, the first one the main device (it holds the
    /// optimiser and its batch-norm running statistics are the model's).
    List(Vec<usize>),
    /// Every device of the backend, found when the run starts.
    All,
}

impl Default for Devices {
    fn default() -> Self {
        Self::List(vec![0])
    }
}

impl Devices {
    pub fn is_single(&self) -> bool {
        *self == Self::default()
    }
}

impl Serialize for Devices {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::List(v) => v.serialize(s),
            Self::All => s.serialize_str("all"),
        }
    }
}

impl<'de> Deserialize<'de> for Devices {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Devices;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(r#"a list of device indices such as [0, 1], or "all""#)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Devices, E> {
                if v == "all" {
                    Ok(Devices::All)
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Str(v), &self))
                }
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Devices, A::Error> {
                let mut v = Vec::new();
                while let Some(i) = seq.next_element::<usize>()? {
                    v.push(i);
                }
                Ok(Devices::List(v))
            }
        }
        d.deserialize_any(Visitor)
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
    /// Network input size. Test transform (OpenOOD v1.5 preprocessor, METHODS §8.2): resize the
    /// shorter side to `pre_size` (bilinear), centre-crop `image_size`, normalise.
    #[serde(default = "defaults::image_size")]
    pub image_size: usize,
    /// Shorter side before the centre crop; defaults to `image_size` (CIFAR 32/32, ImageNet
    /// 256/224).
    #[serde(default)]
    pub pre_size: Option<usize>,
    /// The test transform resizes both sides to `pre_size` (`Resize((pre_size, pre_size))`,
    /// MixOE) instead of the shorter side (OpenOOD).
    #[serde(default, skip_serializing_if = "is_false")]
    pub square_resize: bool,
    /// Training augmentation, applied in order, followed by normalisation. The default is
    /// OpenOOD's CIFAR recipe: resize, centre crop, horizontal flip, random crop with padding 4.
    #[serde(default = "defaults::train_transform")]
    pub train_transform: Vec<TransformOp>,
    /// Augmented views per training image (PALM trains on 2; views are concatenated view-major,
    /// as `torch.cat([v0, v1])` in the official code).
    #[serde(default = "defaults::one")]
    pub views: usize,
    /// Outliers per training batch for OE-style objectives (OE: 256 beside 128 ID images);
    /// 0 loads no outliers.
    #[serde(default)]
    pub outlier_batch_size: usize,
    /// How the outlier stream walks its set; the epoch is always defined by the ID loader.
    #[serde(default)]
    pub outlier_order: OutlierOrder,
    /// Per-channel normalisation; by default the benchmark's published statistics, or for the
    /// synthetic and custom sources the statistics of (up to 10,000 evenly spaced) ID training
    /// images. The same statistics are applied to every OOD set (METHODS §8.2).
    #[serde(default)]
    pub normalize: Option<NormalizeConfig>,
    #[serde(default)]
    pub loader: LoaderConfig,
}

/// One augmentation step, tagged by `op` (torchvision semantics; draws come from the run's
/// seeded per-sample stream).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", deny_unknown_fields)]
pub enum TransformOp {
    /// `Resize(size)`: shorter side to `size`, bilinear with antialiasing (PIL).
    #[serde(rename = "resize")]
    Resize { size: usize },
    /// `Resize((size, size))`: both sides to `size`, aspect ratio not kept (MixOE's
    /// `Resize((512, 512))`), bilinear with antialiasing (PIL).
    #[serde(rename = "resize_square")]
    ResizeSquare { size: usize },
    /// `CenterCrop(size)` (zero padding when the image is smaller).
    #[serde(rename = "center_crop")]
    CenterCrop { size: usize },
    /// `RandomCrop(size, padding)` with zero padding.
    #[serde(rename = "random_crop")]
    RandomCrop {
        size: usize,
        #[serde(default)]
        padding: usize,
    },
    /// `RandomHorizontalFlip(p)`.
    #[serde(rename = "horizontal_flip")]
    HorizontalFlip {
        #[serde(default = "defaults::half")]
        p: f64,
    },
    /// `RandomResizedCrop(size, scale, ratio)`, bilinear.
    #[serde(rename = "random_resized_crop")]
    RandomResizedCrop {
        size: usize,
        #[serde(default = "defaults::rrc_scale")]
        scale: [f64; 2],
        #[serde(default = "defaults::rrc_ratio")]
        ratio: [f64; 2],
    },
    /// `RandomApply([ColorJitter(brightness, contrast, saturation, hue)], p)`.
    #[serde(rename = "color_jitter")]
    ColorJitter {
        #[serde(default)]
        brightness: f64,
        #[serde(default)]
        contrast: f64,
        #[serde(default)]
        saturation: f64,
        #[serde(default)]
        hue: f64,
        #[serde(default = "defaults::one_f64")]
        p: f64,
    },
    /// `RandomGrayscale(p)`.
    #[serde(rename = "grayscale")]
    Grayscale {
        #[serde(default = "defaults::grayscale_p")]
        p: f64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutlierOrder {
    /// OE (`CIFAR/oe_tune.py`): consecutive indices from a random offset drawn every epoch,
    /// wrapping around ("randomness without obliterating locality").
    #[default]
    Offset,
    /// A fresh permutation each pass over the outlier set (a shuffled `DataLoader`, MixOE).
    Shuffle,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoaderConfig {
    /// Decode/augment threads; 0 = one per available core. Results never depend on it.
    #[serde(default)]
    pub workers: usize,
    /// Batches prepared ahead of the one being trained on.
    #[serde(default = "defaults::prefetch")]
    pub prefetch: usize,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            workers: 0,
            prefetch: defaults::prefetch(),
        }
    }
}

/// Dataset sources, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", deny_unknown_fields)]
pub enum DataSource {
    /// The built-in, file-free synthetic benchmark (`oodforge_data::synthetic`).
    #[serde(rename = "synthetic")]
    Synthetic(SyntheticConfig),
    /// An OpenOOD v1.5 benchmark read from its image lists: `root` holds `benchmark_imglist/`,
    /// `images_classic/` and/or `images_largescale/` (METHODS §8.1).
    #[serde(rename = "openood")]
    OpenOod {
        /// `cifar10`, `cifar100`, `imagenet200` or `imagenet1k`.
        benchmark: String,
        root: String,
        /// Load the benchmark's OE outlier list (`train_tin597` / `train_imagenet800`).
        #[serde(default)]
        outliers: bool,
    },
    /// CIFAR-10/100 from the binary release with the far-OOD suite of a paper:
    /// `energy`/`oe` (Textures, SVHN, Places365, LSUN-C, LSUN-R, iSUN) or `palm` (SVHN,
    /// Places365, LSUN-C, iSUN, Textures), all under `root` (layout in `datasets/README.md`).
    #[serde(rename = "classic")]
    Classic {
        /// `cifar10` or `cifar100`.
        id: String,
        root: String,
        /// `energy`, `oe` or `palm`.
        suite: String,
        /// `300k` (300K Random Images `.npy`, the OE README's public replacement for 80M Tiny
        /// Images) or `none`.
        #[serde(default = "defaults::none")]
        outliers: String,
    },
    /// MixOE's fine-grained environments (METHODS §4.4, §9.9): one dataset's classes split into
    /// ID and held-out classes exactly as `np.random.RandomState(split).choice` splits them,
    /// the held-out classes' test images as the fine-grained OOD set, the other three datasets'
    /// test images (subsampled as MixOE's `eval.py` does) as the coarse-grained one, and
    /// WebVision 1.0 minus the concepts of the five ImageNet groups as outliers.
    #[serde(rename = "finegrained")]
    Finegrained {
        /// `bird`, `butterfly`, `car` or `aircraft`.
        dataset: String,
        /// The class split, MixOE's `--split` (0, 1 and 2 in the paper).
        split: u32,
        /// MixOE's `--data-dir`: `bird/images`, `butterfly/images_small`, `car/`,
        /// `aircraft/images` and `WebVision/` below it.
        root: String,
        /// MixOE's `--info-dir`: `<dataset>/{train,val,test}.txt` below it.
        info: String,
        /// `webvision` (outliers, and a WebVision validation OOD set) or `none`.
        #[serde(default = "defaults::webvision")]
        outliers: String,
    },
    /// A user's own data: every split declared by format and path.
    #[serde(rename = "custom")]
    Custom(CustomSource),
    /// Attention-MIL feature bags as AEM stores them (METHODS §7.4, §9.10): one HDF5 file of
    /// per-slide patch features and the dataset's label CSV. Trained by the MIL loop (one bag per
    /// step) with an `abmil` or `mil_mha` model.
    #[serde(rename = "bags")]
    Bags(BagSource),
    /// The built-in, file-free feature-bag set (`oodforge_data::bags::synthetic`): class-0 bags
    /// hold only background instances, a class-k bag also a few key instances of class k, as a
    /// tumour slide holds some tumour patches among normal tissue.
    #[serde(rename = "synthetic_bags")]
    SyntheticBags(SyntheticBagsConfig),
}

impl DataSource {
    /// Sources of feature bags (trained by the MIL loop) rather than images.
    pub fn is_bags(&self) -> bool {
        matches!(self, Self::Bags(_) | Self::SyntheticBags(_))
    }
}

/// `kind = "bags"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BagSource {
    /// `camelyon16`, `camelyon17` or `bracs`: picks the split rule and the label mapping of
    /// AEM's `datasets/datasets.py`.
    pub dataset: String,
    /// The feature file, `patch_feats_pretrain_<extractor>.h5`.
    pub features: String,
    /// The dataset's label CSV (`dataset_csv/<dataset>.csv` of the AEM repository).
    pub labels: String,
    /// Fraction of the non-test slides held out for model selection (AEM:
    /// `train_test_split(test_size=0.1)`; BRACS uses its CSV's `split_info` instead).
    #[serde(default = "defaults::val_fraction")]
    pub val_fraction: f64,
}

/// `kind = "synthetic_bags"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticBagsConfig {
    /// Classes; class 0 is the "normal" class whose bags hold no key instance. 2..=8.
    #[serde(default = "defaults::bag_classes")]
    pub num_classes: usize,
    #[serde(default = "defaults::train_bags")]
    pub train_bags: usize,
    #[serde(default = "defaults::eval_bags")]
    pub val_bags: usize,
    #[serde(default = "defaults::eval_bags")]
    pub test_bags: usize,
    /// Instance feature dimension.
    #[serde(default = "defaults::bag_feature_dim")]
    pub feature_dim: usize,
    /// Instances per bag, drawn uniformly from `[min, max]`.
    #[serde(default = "defaults::bag_instances")]
    pub instances: [usize; 2],
    /// Seed of the data itself (fixed across training seeds).
    #[serde(default)]
    pub data_seed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomSource {
    pub num_classes: usize,
    pub train: SetSpec,
    pub test: SetSpec,
    #[serde(default)]
    pub ood: Vec<OodSetSpec>,
    #[serde(default)]
    pub outliers: Option<SetSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OodSetSpec {
    pub name: String,
    /// `near` or `far`.
    pub group: String,
    pub set: SetSpec,
}

/// One set of images on disk, tagged by `format`. Relative paths are relative to the directory
/// the command runs in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "format", deny_unknown_fields)]
pub enum SetSpec {
    /// The extracted `cifar-10-batches-bin/` folder; `split` is `train` or `test`.
    #[serde(rename = "cifar10")]
    Cifar10 { path: String, split: String },
    /// The extracted `cifar-100-binary/` folder; `labels` is `fine` (100) or `coarse` (20).
    #[serde(rename = "cifar100")]
    Cifar100 {
        path: String,
        split: String,
        #[serde(default = "defaults::fine")]
        labels: String,
    },
    /// An SVHN `*_32x32.mat` file (MATLAB v5).
    #[serde(rename = "svhn")]
    Svhn { path: String },
    /// One sub-folder per class (torchvision `ImageFolder`, sorted class names).
    #[serde(rename = "image_folder")]
    ImageFolder { path: String },
    /// Every image under a folder, unlabelled (LSUN-C, LSUN-R, iSUN, ...).
    #[serde(rename = "flat_folder")]
    FlatFolder { path: String },
    /// An OpenOOD-style list `<relative path> <label>` over the folder `root`.
    #[serde(rename = "imglist")]
    ImgList { list: String, root: String },
    /// A MixOE `info/<ds>/{train,val,test}.txt` list (`relative/path label`; a line with more
    /// than two tokens has a path with one space: the first two tokens), over the folder `root`.
    #[serde(rename = "mixoe_list")]
    MixoeList { list: String, root: String },
    /// A NumPy uint8 array N x H x W x C, memory-mapped.
    #[serde(rename = "npy")]
    Npy { path: String },
    /// WebVision 1.0 (`google/q####/`, `flickr/q####/`, `info/synsets.txt`,
    /// `info/queries_synsets_map.txt`), read as MixOE's `utils/dataset.py::WebVision` does.
    #[serde(rename = "webvision")]
    Webvision {
        path: String,
        /// `none`, or `mixoe`: leave out the concepts of MixOE's `INET_SPLITS` (dogs, birds,
        /// cars, butterflies, aircraft), as its outlier set does.
        #[serde(default = "defaults::none")]
        exclude: String,
    },
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
pub struct NormalizeConfig {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// `[model]`: the backbone (tagged by `backbone`, its keys beside the tag), an optional
/// projection head and optional initial weights.
///
/// ```toml
/// [model]
/// backbone = "resnet34"
/// projection = { hidden = 512, dim = 128 }   # PALM's head
/// weights = { path = "resnet34.pth", reset_head = true }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    // Flattened: the backbone's variant structs deny unknown keys, so a typo in `[model]` is
    // still an error (everything not named below reaches them).
    #[serde(flatten)]
    pub backbone: Backbone,
    /// MLP projection head on the penultimate features (PALM: 512 -> 512 -> 128), L2-normalised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projection: Option<ProjectionConfig>,
    /// Initialise from a PyTorch (`.pt`/`.pth`/`.ckpt`) or safetensors checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<WeightsConfig>,
    /// Linear prediction heads on the features: 1, or 2 for A2D (NP-Mix's agree-to-disagree
    /// term needs two predictions of the same sample). The first head gives the logits that are
    /// evaluated.
    #[serde(default = "defaults::one", skip_serializing_if = "is_one")]
    pub prediction_heads: usize,
}

fn is_false(v: &bool) -> bool {
    !*v
}

fn is_one(v: &usize) -> bool {
    *v == 1
}

impl From<Backbone> for ModelConfig {
    fn from(backbone: Backbone) -> Self {
        Self {
            backbone,
            projection: None,
            weights: None,
            prediction_heads: 1,
        }
    }
}

/// PALM's projection head (`models/resnet.py::PALMResNet`, head "mlp"): Linear(feature ->
/// `hidden`) -> ReLU -> Linear(`hidden` -> `dim`), output L2-normalised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectionConfig {
    #[serde(default = "defaults::projection_hidden")]
    pub hidden: usize,
    #[serde(default = "defaults::projection_dim")]
    pub dim: usize,
}

/// Weights to start from. The layout (OpenOOD, torchvision, OE WRN, timm) is recognised from the
/// backbone and the key names; a mismatch names the missing, unexpected and mis-shaped keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsConfig {
    /// Checkpoint file; relative paths are relative to the working directory.
    pub path: String,
    /// Keep our freshly initialised classifier head instead of the checkpoint's (fine-tuning an
    /// ImageNet network on other classes, as MixOE does with torchvision's ResNet-50).
    #[serde(default)]
    pub reset_head: bool,
}

/// ResNet stem: `cifar` (3x3 stride 1, no max-pool; OpenOOD `resnet18_32x32`, PALM) or
/// `imagenet` (7x7 stride 2 + max-pool; torchvision).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResNetStem {
    #[default]
    Cifar,
    #[serde(rename = "imagenet")]
    ImageNet,
}

/// Backbones, tagged by `backbone`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "backbone", deny_unknown_fields)]
pub enum Backbone {
    /// ResNet-18 (He et al. 2016), BasicBlocks [2, 2, 2, 2]. CIFAR stem: OpenOOD
    /// `resnet18_32x32`; ImageNet stem: torchvision `resnet18`. `width` = 64 is the paper network.
    #[serde(rename = "resnet18")]
    ResNet18 {
        #[serde(default = "defaults::resnet_width")]
        width: usize,
        #[serde(default)]
        stem: ResNetStem,
    },
    /// ResNet-34, BasicBlocks [3, 4, 6, 3]. CIFAR stem: PALM's backbone (`models/resnet.py`).
    #[serde(rename = "resnet34")]
    ResNet34 {
        #[serde(default = "defaults::resnet_width")]
        width: usize,
        #[serde(default)]
        stem: ResNetStem,
    },
    /// ResNet-50, Bottlenecks [3, 4, 6, 3], 2048-d features. ImageNet stem: torchvision
    /// `resnet50`, the network MixOE fine-tunes.
    #[serde(rename = "resnet50")]
    ResNet50 {
        #[serde(default = "defaults::resnet_width")]
        width: usize,
        #[serde(default)]
        stem: ResNetStem,
    },
    /// The same ResNet with one BasicBlock per stage: a shallower network for fast CPU runs
    /// (the quickstart). Not a paper network.
    #[serde(rename = "resnet10")]
    ResNet10 {
        #[serde(default = "defaults::resnet_width")]
        width: usize,
        #[serde(default)]
        stem: ResNetStem,
    },
    /// Wide ResNet as in the OE / energy repositories (`CIFAR/models/wrn.py`): WRN-40-2 with
    /// dropout 0.3 is their network.
    #[serde(rename = "wrn")]
    Wrn {
        #[serde(default = "defaults::wrn_depth")]
        depth: usize,
        #[serde(default = "defaults::wrn_widen")]
        widen_factor: usize,
        #[serde(default = "defaults::wrn_dropout")]
        dropout: f64,
    },
    /// ViT-Tiny (timm `vit_tiny_patch16_224`: width 192, depth 12, 3 heads). `patch_size`
    /// defaults to 4 for images up to 64 px (32x32 -> 64 patches) and 16 above (224 -> 196).
    #[serde(rename = "vit_tiny")]
    VitTiny {
        #[serde(default)]
        patch_size: Option<usize>,
    },
    /// ViT-Small (timm `vit_small_patch16_224`: width 384, depth 12, 6 heads).
    #[serde(rename = "vit_small")]
    VitSmall {
        #[serde(default)]
        patch_size: Option<usize>,
    },
    /// A ViT of any shape (timm layout): `mlp_dim` defaults to 4 x `dim`.
    #[serde(rename = "vit")]
    Vit {
        patch_size: usize,
        dim: usize,
        depth: usize,
        heads: usize,
        #[serde(default)]
        mlp_dim: Option<usize>,
    },
    /// Gated-attention ABMIL over feature bags (Ilse et al. 2018; AEM `--arch abmil`,
    /// `architecture/transformer.py::ABMIL`). Needs a feature-bag data source.
    #[serde(rename = "abmil")]
    Abmil {
        /// `DimReduction` output size (AEM: 128 for `medical_ssl` 384-d features, 256 for
        /// 512-d ones).
        #[serde(default = "defaults::mil_inner")]
        d_inner: usize,
        /// Hidden size of the gated attention (`D = 128` in the official code).
        #[serde(default = "defaults::mil_attention")]
        d_attention: usize,
    },
    /// AEM's default aggregator (`--arch mha`, `transformer.py::MHA`): one learnable query,
    /// 8 heads, out-projection, dropout 0.1, LayerNorm. Needs a feature-bag data source.
    #[serde(rename = "mil_mha")]
    MilMha {
        /// `DimReduction` output size; a multiple of the 8 heads.
        #[serde(default = "defaults::mil_inner")]
        d_inner: usize,
    },
}

impl Backbone {
    /// Attention-MIL aggregators over feature bags (not image networks).
    pub fn is_mil(&self) -> bool {
        matches!(self, Self::Abmil { .. } | Self::MilMha { .. })
    }

    /// The ViT patch size for an image size when the config leaves it out.
    pub fn default_patch_size(image_size: usize) -> usize {
        if image_size <= 64 { 4 } else { 16 }
    }
}

/// Training objectives, tagged by `name`. Every hyperparameter is named for what it does; the
/// defaults are the official code's (METHODS §2-7), and each field says where a value comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", deny_unknown_fields)]
pub enum ObjectiveConfig {
    /// Plain cross-entropy on ID data.
    #[serde(rename = "ce")]
    Ce {},
    /// Outlier Exposure (Hendrycks et al. 2019, `CIFAR/oe_tune.py` L172-174): CE on ID +
    /// `oe_weight` x cross-entropy from softmax to uniform on outliers, one forward pass over
    /// `[ID; outliers]`.
    #[serde(rename = "oe")]
    Oe {
        /// lambda, hard-coded 0.5 in the official code (OpenOOD `lambda_oe` 0.5).
        #[serde(default = "defaults::oe_weight")]
        oe_weight: f64,
    },
    /// Energy-bounded OE (Liu et al. 2020, `energy_ood/CIFAR/train.py` L191-198): CE +
    /// `energy_weight` x (mean relu(E_in - m_in)^2 + mean relu(m_out - E_out)^2), E = -logsumexp.
    /// The margins have no default: the authors' `run.sh` uses -23/-5 for CIFAR-10 and -27/-5 for
    /// CIFAR-100 (argparse says -25/-7), so a config must choose.
    #[serde(rename = "energy_oe")]
    EnergyOe {
        m_in: f64,
        m_out: f64,
        /// Hard-coded 0.1 in the official code.
        #[serde(default = "defaults::energy_weight")]
        energy_weight: f64,
    },
    /// MixOE (Zhang et al. 2023, `train/train_mixoe.py` L276-304): CE on ID + `mix_weight` x
    /// soft CE on ID/outlier mixtures (ID sample i with outlier i), lambda ~ Beta(mix_beta_a,
    /// mix_beta_b). Official: Beta(a, a) with a = 1 (mixup) or 2 (cutmix), weight 5; OpenOOD:
    /// cutmix, Beta(0.1, 1.0), weight 1.
    #[serde(rename = "mixoe")]
    MixOe {
        mix_op: MixOp,
        #[serde(default = "defaults::mix_beta_a")]
        mix_beta_a: f64,
        /// Second Beta parameter; defaults to `mix_beta_a` (the official symmetric Beta(a, a)).
        #[serde(default)]
        mix_beta_b: Option<f64>,
        /// `--beta` in the official code (5.0 in `scripts/train.sh`).
        #[serde(default = "defaults::mix_weight")]
        mix_weight: f64,
    },
    /// PALM (Lu et al. 2024, `util/loss_functions.py::PALM`): mixture of `prototypes_per_class`
    /// prototypes per class on the projection head's output, Sinkhorn assignment, top-k EMA
    /// update, MLE loss + prototype contrastive loss. Needs `[model] projection` and (as the
    /// paper) `data.views = 2`. Defaults are `runner.sh`'s.
    #[serde(rename = "palm")]
    Palm {
        /// `--cache-size`.
        #[serde(default = "defaults::palm_prototypes")]
        prototypes_per_class: usize,
        /// `--k`; 0 uses the full Sinkhorn assignment.
        #[serde(default = "defaults::palm_top_k")]
        top_k: usize,
        /// `--proto_m`: EMA momentum of the prototypes (OpenOOD's port uses 0.9).
        #[serde(default = "defaults::palm_proto_momentum")]
        proto_momentum: f64,
        /// `--temp` of the MLE loss.
        #[serde(default = "defaults::palm_temperature")]
        mle_temperature: f64,
        /// `--lambda_pcon`.
        #[serde(default = "defaults::one_f64")]
        pcon_weight: f64,
        /// Hard-coded 0.5 in `proto_contra`.
        #[serde(default = "defaults::palm_pcon_temperature")]
        pcon_temperature: f64,
        /// `--epsilon` of the Sinkhorn assignment.
        #[serde(default = "defaults::palm_epsilon")]
        sinkhorn_epsilon: f64,
        #[serde(default = "defaults::palm_sinkhorn_iterations")]
        sinkhorn_iterations: usize,
    },
    /// NP-Mix (MultiOOD, Dong et al. 2024, `train_video_flow.py` L74-184) adapted to one image
    /// classifier (METHODS §6.6): per-class queues of penultimate features, mixtures of a class
    /// and one of its nearest prototype-neighbour classes, maximum normalised entropy of the
    /// classifier head on them from `start_epoch`. With `model.prediction_heads = 2` the two
    /// heads play MultiOOD's two modality heads: both trained with CE, and A2D pushes their
    /// non-label predictions (and their predictions on the outliers) apart.
    #[serde(rename = "npmix")]
    NpMix {
        /// `--ood_entropy_ratio`.
        #[serde(default = "defaults::half")]
        entropy_weight: f64,
        /// `--sample_number`: features kept per class.
        #[serde(default = "defaults::npmix_queue")]
        queue_size: usize,
        /// Candidate neighbour classes (`--nn_k` 3 minus the class itself).
        #[serde(default = "defaults::npmix_neighbours")]
        neighbour_classes: usize,
        /// `--mixup_alpha`: lambda ~ Beta(a, b).
        #[serde(default = "defaults::npmix_beta")]
        mix_beta_a: f64,
        /// Defaults to `mix_beta_a` (the official symmetric Beta(10, 10)).
        #[serde(default)]
        mix_beta_b: Option<f64>,
        /// `--start_epoch` (0-based epoch index, as `epoch_i >= start_epoch` upstream).
        #[serde(default = "defaults::npmix_start_epoch")]
        start_epoch: usize,
        /// `--a2d_ratio`: A2D on ID samples (needs `model.prediction_heads = 2`; official 0.5).
        #[serde(default)]
        a2d_weight: f64,
        /// `--a2d_ratio_ood`: A2D on the synthesised outliers (needs two heads; official 0.5).
        #[serde(default)]
        a2d_outlier_weight: f64,
        /// The discrepancy A2D maximises (`--a2d_max_hellinger` in the README recipe).
        #[serde(default)]
        a2d_distance: A2dDistance,
    },
    /// AEM (Zhang et al. 2024, `main.py::train_one_epoch`): CE + `attention_entropy_weight` x
    /// sum softmax(a) log softmax(a) of the pre-softmax attention a, i.e. CE minus the weighted
    /// attention entropy. With an attention-MIL model (`abmil`, `mil_mha`) on feature bags this is
    /// the paper's setting (the 8-head sum divided by 8). For a ViT, a is the last block's
    /// CLS-query attention, averaged over heads and images (our adaptation).
    #[serde(rename = "aem")]
    Aem {
        /// `--lamda` (README AEM command: 0.1; 0 is the baseline).
        #[serde(default = "defaults::aem_weight")]
        attention_entropy_weight: f64,
    },
}

impl ObjectiveConfig {
    /// The `name` tag.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ce {} => "ce",
            Self::Oe { .. } => "oe",
            Self::EnergyOe { .. } => "energy_oe",
            Self::MixOe { .. } => "mixoe",
            Self::Palm { .. } => "palm",
            Self::NpMix { .. } => "npmix",
            Self::Aem { .. } => "aem",
        }
    }

    /// Objectives that read an outlier batch beside the ID batch.
    pub fn uses_outliers(&self) -> bool {
        matches!(
            self,
            Self::Oe { .. } | Self::EnergyOe { .. } | Self::MixOe { .. }
        )
    }
}

/// The distance between two heads' distributions that A2D maximises (MultiOOD's flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum A2dDistance {
    /// `nn.L1Loss()` (mean over all entries).
    L1,
    /// `nn.MSELoss()`.
    L2,
    /// `mean_i ||sqrt(clamp(p, 1e-6)) - sqrt(clamp(q, 1e-6))||_2 / sqrt(2)` (the README recipe).
    #[default]
    Hellinger,
    /// The code's "Wasserstein": `(w(p, q) + w(q, p)) / 2` with
    /// `w(x, y) = mean_i min_j ||x_i - y_j||`.
    Wasserstein,
}

/// How MixOE combines an ID image with an outlier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MixOp {
    /// `lambda x + (1 - lambda) x_out`.
    #[serde(rename = "mixup")]
    Mixup,
    /// Paste an outlier box with side ratio sqrt(1 - lambda) into the ID image (CutMix).
    #[serde(rename = "cutmix")]
    Cutmix,
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
    /// AdamW as PyTorch's `torch.optim.AdamW` (decoupled decay `p -= lr * weight_decay * p`,
    /// bias-corrected moments, `eps` added to the root of the second moment). The defaults are
    /// PyTorch's; AEM uses lr 1e-4, weight decay 1e-5 (its configs set them).
    #[serde(rename = "adamw")]
    AdamW {
        #[serde(default = "defaults::adamw_lr")]
        lr: f64,
        #[serde(default = "defaults::adamw_betas")]
        betas: [f64; 2],
        #[serde(default = "defaults::adamw_epsilon")]
        epsilon: f64,
        #[serde(default = "defaults::adamw_weight_decay")]
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
            Self::Sgd { lr, .. } | Self::AdamW { lr, .. } => *lr,
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
    /// How the metrics are computed: OpenOOD v1.5 by default, or a paper's own code
    /// (METHODS §1), so that paper's numbers can be reproduced.
    #[serde(default)]
    pub convention: MetricConvention,
    /// OpenOOD's automatic parameter search (METHODS §8.5): every post-processor with a sweep
    /// takes the setting of its OpenOOD grid with the best AUROC on the ID validation set vs
    /// the validation OOD set, then scores the test sets once with it.
    #[serde(default)]
    pub aps: bool,
    /// Score histograms and ROC curves per post-processor as PNG in `plots/`.
    #[serde(default = "defaults::yes")]
    pub plots: bool,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            postprocessors: defaults::postprocessors(),
            after_training: true,
            convention: MetricConvention::default(),
            aps: false,
            plots: true,
        }
    }
}

/// The five metric conventions of the sources (METHODS §1), tagged by `name`:
/// `[eval.convention] name = "oe"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", deny_unknown_fields)]
pub enum MetricConvention {
    /// OpenOOD v1.5 (`openood/evaluators/metrics.py`): OOD positive, FPR at the first ROC point
    /// with 95% OOD recall, trapezoid AUPR, full sets.
    #[serde(rename = "openood")]
    OpenOod {},
    /// Outlier Exposure's `utils/display_results.py` with OOD positive: FPR at the ROC point whose
    /// OOD recall is *closest* to 0.95, average-precision AUPR, `ood_samples` OOD images
    /// (default: ID test size / 5) drawn `draws` times and averaged.
    #[serde(rename = "oe")]
    Oe {
        #[serde(default = "defaults::convention_draws")]
        draws: usize,
        #[serde(default)]
        ood_samples: Option<usize>,
        #[serde(default)]
        seed: u64,
    },
    /// The energy repo's `CIFAR/test.py` default: the same helpers as `oe` with **ID positive**
    /// (FPR = share of OOD accepted at 95% ID recall).
    #[serde(rename = "energy")]
    Energy {
        #[serde(default = "defaults::convention_draws")]
        draws: usize,
        #[serde(default)]
        ood_samples: Option<usize>,
        #[serde(default)]
        seed: u64,
    },
    /// PALM's `cal_metric`: FPR = share of OOD scoring above the 5th percentile of the ID
    /// scores (strict), full sets.
    #[serde(rename = "palm")]
    Palm {},
    /// MixOE's `calculate_log.py`: TNR at the TPR closest to 95% (ID positive) and its own
    /// trapezoid AUROC / AUIN / AUOUT, on `min(|ID|, |OOD|)` samples of each side drawn `draws`
    /// times without replacement; mean and standard deviation over the draws.
    #[serde(rename = "mixoe")]
    MixOe {
        #[serde(default = "defaults::convention_draws")]
        draws: usize,
        #[serde(default)]
        seed: u64,
    },
}

impl Default for MetricConvention {
    fn default() -> Self {
        Self::OpenOod {}
    }
}

impl MetricConvention {
    pub fn label(&self) -> &'static str {
        match self {
            Self::OpenOod {} => "openood",
            Self::Oe { .. } => "oe",
            Self::Energy { .. } => "energy",
            Self::Palm {} => "palm",
            Self::MixOe { .. } => "mixoe",
        }
    }

    /// The convention of `name` with its default settings (`eval --convention NAME`).
    pub fn from_name(name: &str) -> Option<Self> {
        let draws = defaults::convention_draws();
        Some(match name {
            "openood" => Self::OpenOod {},
            "oe" => Self::Oe {
                draws,
                ood_samples: None,
                seed: 0,
            },
            "energy" => Self::Energy {
                draws,
                ood_samples: None,
                seed: 0,
            },
            "palm" => Self::Palm {},
            "mixoe" => Self::MixOe { draws, seed: 0 },
            _ => return None,
        })
    }

    pub const NAMES: [&'static str; 5] = ["openood", "oe", "energy", "palm", "mixoe"];
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
    /// ODIN (Liang et al. 2018; OpenOOD `odin`): max softmax(z(x')/T) of the input perturbed
    /// against the gradient of CE(z/T, argmax), divided per channel by the normalisation std.
    #[serde(rename = "odin")]
    Odin {
        #[serde(default = "defaults::odin_temperature")]
        temperature: f64,
        #[serde(default = "defaults::odin_noise")]
        noise: f64,
    },
    /// GEN (Liu et al. 2023): -sum over the `top_m` largest probabilities of p^gamma (1-p)^gamma.
    #[serde(rename = "gen")]
    Gen {
        #[serde(default = "defaults::gen_gamma")]
        gamma: f64,
        /// OpenOOD's `M`.
        #[serde(default = "defaults::gen_top_m")]
        top_m: usize,
    },
    /// Mahalanobis (Lee et al. 2018; OpenOOD `mds`): class means and a shared covariance of the
    /// ID training features; max over classes of the negative Mahalanobis distance.
    #[serde(rename = "mds")]
    Mahalanobis {},
    /// PALM's score (METHODS §5.5, the SSD+ score): one class-agnostic Gaussian on the
    /// L2-normalised, standardised backbone feature. `double_centering = true` keeps the official
    /// code's second subtraction of the normalised-feature mean, so PALM's numbers reproduce.
    #[serde(rename = "palm_mds")]
    PalmMahalanobis {
        #[serde(default = "defaults::yes")]
        double_centering: bool,
    },
    /// KNN (Sun et al. 2022): minus the squared distance from the normalised feature to its
    /// `k`-th nearest normalised ID training feature.
    #[serde(rename = "knn")]
    Knn {
        #[serde(default = "defaults::knn_k")]
        k: usize,
    },
    /// ViM (Wang et al. 2022): energy minus alpha x the norm of the feature's residual outside
    /// the `dim`-dimensional principal space of the ID training features.
    #[serde(rename = "vim")]
    Vim {
        /// Principal dimensions kept (OpenOOD `dim`); must be below the feature dimension.
        #[serde(default = "defaults::vim_dim")]
        dim: usize,
    },
    /// ReAct (Sun et al. 2021): energy of the head applied to features clipped at the
    /// `percentile`-th percentile of the ID validation features.
    #[serde(rename = "react")]
    React {
        #[serde(default = "defaults::shaping_percentile")]
        percentile: f64,
    },
    /// ASH-B (Djurisic et al. 2023, on the pooled feature as OpenOOD): energy of the head applied
    /// to the top `100 - percentile`% activations set to the mean mass, the rest zeroed.
    #[serde(rename = "ash")]
    Ash {
        #[serde(default = "defaults::shaping_percentile")]
        percentile: f64,
    },
}

impl PostprocessorConfig {
    /// The key under which results are reported.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Msp {} => "msp",
            Self::MaxLogit {} => "maxlogit",
            Self::Energy { .. } => "energy",
            Self::Odin { .. } => "odin",
            Self::Gen { .. } => "gen",
            Self::Mahalanobis {} => "mds",
            Self::PalmMahalanobis { .. } => "palm_mds",
            Self::Knn { .. } => "knn",
            Self::Vim { .. } => "vim",
            Self::React { .. } => "react",
            Self::Ash { .. } => "ash",
        }
    }
}

pub(crate) mod defaults {
    use super::{PostprocessorConfig, TransformOp};
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
    pub fn wrn_depth() -> usize {
        40
    }
    pub fn wrn_widen() -> usize {
        2
    }
    pub fn wrn_dropout() -> f64 {
        0.3
    }
    pub fn image_size() -> usize {
        32
    }
    /// OpenOOD v1.5 CIFAR training preprocessor (`preprocessors/base_preprocessor.py`):
    /// Resize(32) -> CenterCrop(32) -> RandomHorizontalFlip -> RandomCrop(32, padding=4).
    pub fn train_transform() -> Vec<TransformOp> {
        vec![
            TransformOp::Resize { size: 32 },
            TransformOp::CenterCrop { size: 32 },
            TransformOp::HorizontalFlip { p: 0.5 },
            TransformOp::RandomCrop {
                size: 32,
                padding: 4,
            },
        ]
    }
    pub fn half() -> f64 {
        0.5
    }
    pub fn one_f64() -> f64 {
        1.0
    }
    pub fn grayscale_p() -> f64 {
        0.2
    }
    pub fn rrc_scale() -> [f64; 2] {
        [0.08, 1.0]
    }
    pub fn rrc_ratio() -> [f64; 2] {
        [3.0 / 4.0, 4.0 / 3.0]
    }
    pub fn prefetch() -> usize {
        4
    }
    pub fn webvision() -> String {
        "webvision".into()
    }
    pub fn none() -> String {
        "none".into()
    }
    pub fn fine() -> String {
        "fine".into()
    }
    pub fn yes() -> bool {
        true
    }
    /// OE / energy `--num_to_avg 10`; MixOE's 10 draws.
    pub fn convention_draws() -> usize {
        10
    }
    pub fn projection_hidden() -> usize {
        512
    }
    pub fn projection_dim() -> usize {
        128
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
    pub fn oe_weight() -> f64 {
        0.5
    }
    pub fn energy_weight() -> f64 {
        0.1
    }
    pub fn mix_beta_a() -> f64 {
        1.0
    }
    pub fn mix_weight() -> f64 {
        5.0
    }
    pub fn palm_prototypes() -> usize {
        6
    }
    pub fn palm_top_k() -> usize {
        5
    }
    pub fn palm_proto_momentum() -> f64 {
        0.999
    }
    pub fn palm_temperature() -> f64 {
        0.1
    }
    pub fn palm_pcon_temperature() -> f64 {
        0.5
    }
    pub fn palm_epsilon() -> f64 {
        0.05
    }
    pub fn palm_sinkhorn_iterations() -> usize {
        3
    }
    pub fn npmix_queue() -> usize {
        65
    }
    pub fn npmix_neighbours() -> usize {
        2
    }
    pub fn npmix_beta() -> f64 {
        10.0
    }
    pub fn npmix_start_epoch() -> usize {
        10
    }
    pub fn aem_weight() -> f64 {
        0.1
    }
    pub fn val_fraction() -> f64 {
        0.1
    }
    pub fn bag_classes() -> usize {
        2
    }
    pub fn train_bags() -> usize {
        120
    }
    pub fn eval_bags() -> usize {
        40
    }
    pub fn bag_feature_dim() -> usize {
        32
    }
    pub fn bag_instances() -> [usize; 2] {
        [16, 48]
    }
    pub fn mil_inner() -> usize {
        128
    }
    pub fn mil_attention() -> usize {
        128
    }
    pub fn adamw_lr() -> f64 {
        1e-3
    }
    pub fn adamw_betas() -> [f64; 2] {
        [0.9, 0.999]
    }
    pub fn adamw_epsilon() -> f64 {
        1e-8
    }
    pub fn adamw_weight_decay() -> f64 {
        1e-2
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
    pub fn odin_temperature() -> f64 {
        1000.0
    }
    pub fn odin_noise() -> f64 {
        0.0014
    }
    pub fn gen_gamma() -> f64 {
        0.1
    }
    pub fn gen_top_m() -> usize {
        100
    }
    pub fn knn_k() -> usize {
        50
    }
    pub fn vim_dim() -> usize {
        256
    }
    pub fn shaping_percentile() -> f64 {
        90.0
    }
    pub fn postprocessors() -> Vec<PostprocessorConfig> {
        vec![
            PostprocessorConfig::Msp {},
            PostprocessorConfig::MaxLogit {},
            PostprocessorConfig::Energy { temperature: 1.0 },
        ]
    }
}
