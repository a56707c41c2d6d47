//! Post-processors with their statistics fitted once per model (OpenOOD's `setup`) and reused
//! for every dataset: class means and precision (MDS), the normalised training bank (KNN), the
//! principal space (ViM), the clipping threshold (ReAct).

use super::knn::KnnBank;
use super::mds::Mahalanobis;
use super::palm_mahalanobis::PalmMahalanobis;
use super::vim::Vim;
use super::{Head, Logits, react};
use crate::report::EvalError;
use oodforge_core::config::PostprocessorConfig;

/// The ID data the fitted scores learn from. Features are `[n, head.dim]` row-major.
pub struct Reference<'a> {
    pub head: &'a Head,
    pub train_features: &'a [f64],
    pub train_labels: &'a [usize],
    /// ReAct's percentile is taken over the ID validation features (OpenOOD); the caller passes
    /// the training features when the benchmark has no validation split, and says so.
    pub val_features: &'a [f64],
}

/// The outputs of the network on one dataset.
#[derive(Debug, Clone)]
pub struct SetOutputs {
    pub logits: Logits,
    /// Penultimate features `[n, dim]`; empty when no configured score reads them.
    pub features: Vec<f64>,
    /// Scores computed beside the network (ODIN), by post-processor label.
    pub external: Vec<(String, Vec<f64>)>,
    /// The projection head's L2-normalised embeddings `[n, dim]` (PALM and other contrastive
    /// models), kept with the features in the output cache; no built-in score reads them.
    pub embeddings: Vec<f32>,
}

impl SetOutputs {
    pub fn from_logits(logits: Logits) -> Self {
        Self {
            logits,
            features: Vec::new(),
            external: Vec::new(),
            embeddings: Vec::new(),
        }
    }
}

/// One configured post-processor, ready to score.
#[derive(Debug, Clone)]
pub enum Fitted {
    /// A function of the logits alone (MSP, MaxLogit, Energy, GEN).
    Logits(PostprocessorConfig),
    Mds(Mahalanobis),
    PalmMds(PalmMahalanobis),
    /// The bank is shared between the K values APS tries.
    Knn(std::sync::Arc<KnnBank>, usize),
    Vim(Vim, Head),
    React(f64, Head),
    Ash(f64, Head),
    /// Scored beside the network (ODIN); the scores come with each set's outputs.
    External(&'static str),
}

/// Scores that read the penultimate features: the fitted ones and ASH.
pub fn needs_features(pp: &PostprocessorConfig) -> bool {
    needs_train_features(pp) || matches!(pp, PostprocessorConfig::Ash { .. })
}

/// Scores fitted on the ID training features.
pub fn needs_train_features(pp: &PostprocessorConfig) -> bool {
    matches!(
        pp,
        PostprocessorConfig::Mahalanobis {}
            | PostprocessorConfig::PalmMahalanobis { .. }
            | PostprocessorConfig::Knn { .. }
            | PostprocessorConfig::Vim { .. }
            | PostprocessorConfig::React { .. }
    )
}

impl Fitted {
    /// Fit `pp`; `reference` must be given when [`needs_features`] holds.
    /// `fit`, reusing what `previous` (the same score at another setting) already holds: the
    /// KNN bank does not depend on K.
    pub fn refit(
        previous: Option<&Fitted>,
        pp: &PostprocessorConfig,
        reference: Option<&Reference>,
    ) -> Result<Self, EvalError> {
        if let (Some(Self::Knn(bank, _)), PostprocessorConfig::Knn { k }) = (previous, pp)
            && *k <= bank.len()
        {
            return Ok(Self::Knn(bank.clone(), *k));
        }
        Self::fit(pp, reference)
    }

    pub fn fit(pp: &PostprocessorConfig, reference: Option<&Reference>) -> Result<Self, EvalError> {
        let need = || reference.expect("feature-space scores are fitted with a reference");
        Ok(match pp {
            PostprocessorConfig::Msp {}
            | PostprocessorConfig::MaxLogit {}
            | PostprocessorConfig::Energy { .. }
            | PostprocessorConfig::Gen { .. } => Self::Logits(pp.clone()),
            PostprocessorConfig::Odin { .. } => Self::External(pp.label()),
            PostprocessorConfig::Mahalanobis {} => {
                let r = need();
                let classes = r.head.classes;
                if let Some(missing) = (0..classes).find(|c| !r.train_labels.contains(c)) {
                    return Err(EvalError::Fit {
                        postprocessor: "mds",
                        message: format!(
                            "class {missing} has no training sample, so it has no mean"
                        ),
                    });
                }
                Self::Mds(Mahalanobis::fit(
                    r.train_features,
                    r.train_labels,
                    classes,
                    r.head.dim,
                ))
            }
            PostprocessorConfig::PalmMahalanobis { double_centering } => {
                let r = need();
                Self::PalmMds(PalmMahalanobis::fit(
                    r.train_features,
                    r.head.dim,
                    *double_centering,
                ))
            }
            PostprocessorConfig::Knn { k } => {
                let r = need();
                let bank = KnnBank::fit(r.train_features, r.head.dim);
                if *k > bank.len() {
                    return Err(EvalError::Fit {
                        postprocessor: "knn",
                        message: format!(
                            "k = {k} exceeds the {} training features in the bank",
                            bank.len()
                        ),
                    });
                }
                Self::Knn(std::sync::Arc::new(bank), *k)
            }
            PostprocessorConfig::Vim { dim } => {
                let r = need();
                if *dim >= r.head.dim {
                    return Err(EvalError::Fit {
                        postprocessor: "vim",
                        message: format!(
                            "dim = {dim} must be below the feature dimension {} (the residual space would be empty)",
                            r.head.dim
                        ),
                    });
                }
                Self::Vim(Vim::fit(r.train_features, r.head, *dim), r.head.clone())
            }
            PostprocessorConfig::React { percentile } => {
                let r = need();
                Self::React(
                    react::react_threshold(r.val_features, *percentile),
                    r.head.clone(),
                )
            }
            PostprocessorConfig::Ash { percentile } => Self::Ash(*percentile, need().head.clone()),
        })
    }

    /// The confidence of every sample of a set (higher = more in-distribution).
    pub fn score(&self, set: &SetOutputs) -> Vec<f64> {
        let rows = |f: &dyn Fn(&[f64]) -> f64| -> Vec<f64> {
            let d = set.features.len() / set.logits.len().max(1);
            set.features.chunks_exact(d.max(1)).map(f).collect()
        };
        match self {
            Self::Logits(pp) => super::scores(pp, &set.logits),
            Self::Mds(m) => m.scores(&set.features),
            Self::PalmMds(m) => m.scores(&set.features),
            Self::Knn(bank, k) => bank.scores(&set.features, &[*k]).pop().expect("one K"),
            Self::Vim(v, head) => v.scores(&set.features, head),
            Self::React(t, head) => rows(&|f| react::react(f, *t, head)),
            Self::Ash(p, head) => rows(&|f| react::ash(f, *p, head)),
            Self::External(label) => set
                .external
                .iter()
                .find(|(l, _)| l == label)
                .map(|(_, s)| s.clone())
                .expect("externally scored post-processors come with their scores"),
        }
    }
}
