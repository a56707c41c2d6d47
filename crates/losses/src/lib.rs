//! oodforge objectives. Each method is one file of plain tensor functions plus one variant of
//! [`Objective`]; the training loop calls [`Objective::loss`] and knows nothing of the method.

pub mod ce;

use burn::tensor::{Int, Tensor};
use oodforge_core::config::ObjectiveConfig;
use oodforge_models::Output;

/// The loss of one step and its named terms (logged to metrics.jsonl).
pub struct LossTerms {
    pub total: Tensor<1>,
    pub terms: Vec<(&'static str, Tensor<1>)>,
}

/// Every objective.
#[derive(Debug, Clone)]
pub enum Objective {
    /// Cross-entropy on ID data.
    Ce,
}

impl Objective {
    pub fn from_config(config: &ObjectiveConfig) -> Self {
        match config {
            ObjectiveConfig::Ce {} => Self::Ce,
        }
    }

    /// Loss of one ID batch.
    pub fn loss(&self, output: &Output, labels: Tensor<1, Int>) -> LossTerms {
        match self {
            Self::Ce => {
                let ce = ce::cross_entropy(output.logits.clone(), labels);
                LossTerms {
                    total: ce.clone(),
                    terms: vec![("ce", ce)],
                }
            }
        }
    }
}
