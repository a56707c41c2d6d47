//! Weight import from PyTorch checkpoints as the official code saves them
//! (`torch.save(model.state_dict(), path)`: a zip or legacy pickle `.pt`/`.pth`/`.ckpt`) and from
//! safetensors files (timm, Hugging Face). The file kind is recognised from its first bytes.
//!
//! Key layouts understood (the PyTorch names are mapped onto our module paths; burn-store's
//! `PyTorchToBurnAdapter` transposes Linear weights and renames norm `weight`/`bias` to
//! `gamma`/`beta`):
//! - ResNet: OpenOOD `resnet18_32x32` (`layerN.i.shortcut.{0,1}`) and torchvision
//!   `resnet18/34/50` (`layerN.i.downsample.{0,1}`) -> `stages.(N-1).i.shortcut.{conv,bn}`;
//! - WRN: hendrycks/outlier-exposure `wrn.py` (`blockN.layer.i.convShortcut`, final `bn1`) ->
//!   `groups.(N-1).i.shortcut`, `bn`;
//! - ViT: timm names, unchanged;
//! - attention MIL: AEM's `attention.attention_V.0` / `attention_U.0` -> `attention_v` /
//!   `attention_u`.
//!
//! A `module.` prefix (checkpoints saved from `nn.DataParallel`) is stripped, and BatchNorm's
//! `num_batches_tracked` counters (no burn counterpart; unused in eval and by momentum BN) are
//! ignored. Anything else that does not fit is an error naming the keys.

use crate::error::ModelError;
use crate::mil::MilModel;
use crate::{Backbone, Classifier};
use burn::module::Module;
use burn_store::{
    ApplyError, ApplyResult, KeyRemapper, ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore,
    SafetensorsStore,
};
use std::io::Read;
use std::path::{Path, PathBuf};

/// What an import did.
#[derive(Debug, Clone)]
pub struct ImportReport {
    pub path: PathBuf,
    /// Tensors copied into the network.
    pub loaded: usize,
    /// Checkpoint keys deliberately not used (`num_batches_tracked`, a reset head).
    pub ignored: Vec<String>,
}

/// One rename rule: a regex over the checkpoint's key and its replacement in our module.
type Rule = (&'static str, &'static str);

const COMMON: &[Rule] = &[(r"^module\.", "")];

const RESNET: &[Rule] = &[
    (r"^layer1\.", "stages.0."),
    (r"^layer2\.", "stages.1."),
    (r"^layer3\.", "stages.2."),
    (r"^layer4\.", "stages.3."),
    (r"\.(shortcut|downsample)\.0\.", ".shortcut.conv."),
    (r"\.(shortcut|downsample)\.1\.", ".shortcut.bn."),
];

const WRN: &[Rule] = &[
    (r"^block1\.layer\.", "groups.0."),
    (r"^block2\.layer\.", "groups.1."),
    (r"^block3\.layer\.", "groups.2."),
    (r"\.convShortcut\.", ".shortcut."),
    (r"^bn1\.", "bn."),
];

const MIL: &[Rule] = &[
    (r"^attention\.attention_V\.0\.", "attention.attention_v."),
    (r"^attention\.attention_U\.0\.", "attention.attention_u."),
];

/// Our module path -> the PyTorch name, for messages. `torchvision` picks `downsample` over
/// OpenOOD's `shortcut` for ResNet shortcuts.
fn torch_name(path: &str, family: Family, torchvision: bool) -> String {
    let mut s = path.replace(".gamma", ".weight").replace(".beta", ".bias");
    let rules: &[(&str, String)] = match family {
        Family::ResNet => &[
            (r"^stages\.0\.", "layer1.".into()),
            (r"^stages\.1\.", "layer2.".into()),
            (r"^stages\.2\.", "layer3.".into()),
            (r"^stages\.3\.", "layer4.".into()),
            (
                r"\.shortcut\.conv\.",
                format!(
                    ".{}.0.",
                    if torchvision {
                        "downsample"
                    } else {
                        "shortcut"
                    }
                ),
            ),
            (
                r"\.shortcut\.bn\.",
                format!(
                    ".{}.1.",
                    if torchvision {
                        "downsample"
                    } else {
                        "shortcut"
                    }
                ),
            ),
        ],
        Family::Wrn => &[
            (r"^groups\.0\.", "block1.layer.".into()),
            (r"^groups\.1\.", "block2.layer.".into()),
            (r"^groups\.2\.", "block3.layer.".into()),
            (r"\.shortcut\.", ".convShortcut.".into()),
            (r"^bn\.", "bn1.".into()),
        ],
        Family::Vit => &[],
        Family::Mil => &[
            (
                r"^attention\.attention_v\.",
                "attention.attention_V.0.".into(),
            ),
            (
                r"^attention\.attention_u\.",
                "attention.attention_U.0.".into(),
            ),
        ],
    };
    for (from, to) in rules {
        s = regex_replace(from, &s, to);
    }
    s
}

fn regex_replace(pattern: &str, s: &str, to: &str) -> String {
    // Patterns are constants of this file; a bad one is a bug the tests catch.
    let re = regex::Regex::new(pattern).expect("valid constant regex");
    re.replace_all(s, to).into_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    ResNet,
    Wrn,
    Vit,
    Mil,
}

impl Family {
    fn rules(self) -> &'static [Rule] {
        match self {
            Self::ResNet => RESNET,
            Self::Wrn => WRN,
            Self::Vit => &[],
            Self::Mil => MIL,
        }
    }

    /// Filter that keeps everything but the classifier head (`reset_head`).
    fn without_head(self) -> fn(&str, &str) -> bool {
        match self {
            Self::ResNet | Self::Wrn => |path, _| !path.starts_with("fc."),
            Self::Vit => |path, _| !path.starts_with("head."),
            Self::Mil => |path, _| !path.starts_with("classifier."),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::ResNet => "ResNet",
            Self::Wrn => "WideResNet",
            Self::Vit => "ViT",
            Self::Mil => "attention-MIL",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Pytorch,
    Safetensors,
}

fn file_kind(path: &Path) -> Result<FileKind, ModelError> {
    let read_err = |problem: String| ModelError::Read {
        path: path.to_owned(),
        problem,
    };
    let mut f = std::fs::File::open(path).map_err(|e| read_err(e.to_string()))?;
    let mut head = Vec::with_capacity(262);
    f.by_ref()
        .take(262)
        .read_to_end(&mut head)
        .map_err(|e| read_err(e.to_string()))?;
    // torch.save's zip container (PyTorch >= 1.6), the legacy pickle stream (0.1.10 - 1.5,
    // pickle protocol 2+ starts 0x80, as the OE repository's 2018 snapshots), or the TAR
    // container of the earliest releases (`ustar` at byte 257).
    let tar = head.len() >= 262 && &head[257..262] == b"ustar";
    if head.starts_with(b"PK\x03\x04") || head.first() == Some(&0x80) || tar {
        return Ok(FileKind::Pytorch);
    }
    if head.len() >= 9 && head[8] == b'{' {
        // safetensors: u64 little-endian header length, then the JSON header.
        return Ok(FileKind::Safetensors);
    }
    let shown = &head[..head.len().min(9)];
    Err(read_err(format!(
        "not a PyTorch checkpoint (zip, pickle or tar) or a safetensors file: first bytes {shown:02x?}"
    )))
}

/// Load a checkpoint into a classifier's backbone and linear head (not the projection head).
/// With `reset_head`, the checkpoint's classifier head is ignored and ours kept.
pub fn load_weights(
    model: &mut Classifier,
    path: &Path,
    reset_head: bool,
) -> Result<ImportReport, ModelError> {
    match model.backbone_mut() {
        Backbone::ResNet(m) => load_into(m, Family::ResNet, path, reset_head),
        Backbone::Wrn(m) => load_into(m, Family::Wrn, path, reset_head),
        Backbone::Vit(m) => load_into(m, Family::Vit, path, reset_head),
    }
}

/// Load an AEM checkpoint (or any state dict with AEM's names) into an attention-MIL aggregator.
pub fn load_mil_weights(model: &mut MilModel, path: &Path) -> Result<ImportReport, ModelError> {
    match model {
        MilModel::Abmil(m) => load_into(m, Family::Mil, path, false),
        MilModel::Mha(m) => load_into(m, Family::Mil, path, false),
    }
}

fn load_into<M: Module + ModuleSnapshot>(
    module: &mut M,
    family: Family,
    path: &Path,
    reset_head: bool,
) -> Result<ImportReport, ModelError> {
    let rules = COMMON.iter().chain(family.rules()).copied();
    let remapper = KeyRemapper::from_patterns(rules.collect()).expect("valid constant regexes");
    let read_err = |problem: String| ModelError::Read {
        path: path.to_owned(),
        problem,
    };
    // The two stores are different types with the same builder methods.
    let result: ApplyResult = match file_kind(path)? {
        FileKind::Pytorch => {
            let mut store = PytorchStore::from_file(path)
                .remap(remapper)
                .allow_partial(true)
                .validate(false)
                .map_indices_contiguous(false);
            if reset_head {
                store = store.with_predicate(family.without_head());
            }
            module
                .load_from(&mut store)
                .map_err(|e| read_err(e.to_string()))?
        }
        FileKind::Safetensors => {
            let mut store = SafetensorsStore::from_file(path)
                .with_from_adapter(PyTorchToBurnAdapter)
                .remap(remapper)
                .allow_partial(true)
                .validate(false)
                .map_indices_contiguous(false);
            if reset_head {
                store = store.with_predicate(family.without_head());
            }
            module
                .load_from(&mut store)
                .map_err(|e| read_err(e.to_string()))?
        }
    };
    report(result, family, path, reset_head)
}

fn report(
    result: ApplyResult,
    family: Family,
    path: &Path,
    reset_head: bool,
) -> Result<ImportReport, ModelError> {
    let torchvision = result
        .unused
        .iter()
        .chain(&result.applied)
        .any(|k| k.contains("downsample"));
    let name = |p: &str| torch_name(p, family, torchvision);
    // With `reset_head` the head is filtered out: burn-store lists it as skipped.
    let mut ignored: Vec<String> = result.skipped.iter().map(|k| name(k)).collect();
    let mut unexpected = Vec::new();
    for key in &result.unused {
        let head = reset_head && !family.without_head()(key, "");
        if key.ends_with("num_batches_tracked") || head {
            ignored.push(name(key));
        } else {
            unexpected.push(name(key));
        }
    }
    let missing: Vec<String> = result.missing.iter().map(|(p, _)| name(p)).collect();
    let mut mismatched = Vec::new();
    for e in &result.errors {
        mismatched.push(match e {
            ApplyError::ShapeMismatch {
                path,
                expected,
                found,
            } => format!(
                "{}: checkpoint {:?} vs network {:?}",
                name(path),
                torch_shape(path, found.as_slice()),
                torch_shape(path, expected.as_slice())
            ),
            other => other.to_string(),
        });
    }
    if !missing.is_empty() || !unexpected.is_empty() || !mismatched.is_empty() {
        return Err(ModelError::Mismatch {
            path: path.to_owned(),
            network: family.name().into(),
            missing,
            unexpected,
            mismatched,
        });
    }
    Ok(ImportReport {
        path: path.to_owned(),
        loaded: result.applied.len(),
        ignored,
    })
}

/// Shapes in messages use PyTorch's layout: burn's Linear weight `[in, out]` is shown
/// `[out, in]`, as the user sees it in `state_dict()`.
fn torch_shape(path: &str, dims: &[usize]) -> Vec<usize> {
    let linear = dims.len() == 2 && path.ends_with(".weight");
    let mut d = dims.to_vec();
    if linear {
        d.reverse();
    }
    d
}
