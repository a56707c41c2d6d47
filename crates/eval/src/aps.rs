//! APS, OpenOOD's automatic parameter search (`evaluation_api/evaluator.py::hyperparam_search`,
//! METHODS §8.5): every combination of a post-processor's sweep is scored on the ID validation
//! list against the validation OOD list (TIN for CIFAR, OpenImage-O for ImageNet) by AUROC
//! (§1.1); the first combination with the strictly highest AUROC is kept and the test sets are
//! scored once with it. Statistics fitted on training features are fitted before the search.

use oodforge_core::config::PostprocessorConfig as P;
use serde::{Deserialize, Serialize};

/// One setting tried and its validation AUROC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApsTrial {
    pub setting: P,
    pub val_auroc: f64,
}

/// What the search chose, and everything it tried, in order (for `results.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApsRecord {
    pub chosen: P,
    pub val_auroc: f64,
    pub tried: Vec<ApsTrial>,
}

/// OpenOOD's sweep of `pp` (`configs/postprocessors/*.yml`, METHODS §8.4), in its iteration
/// order (`itertools.product` over the keys as listed: the first key varies slowest). Settings
/// that cannot be fitted here are left out: ViM `dim` at or above the feature dimension, KNN `K`
/// above the number of training features. A post-processor without a sweep gives its own
/// setting only.
pub fn grid(pp: &P, feature_dim: usize, train_count: usize) -> Vec<P> {
    match pp {
        P::Odin { .. } => [1.0, 10.0, 100.0, 1000.0]
            .iter()
            .flat_map(|&temperature| [0.0014, 0.0028].map(|noise| P::Odin { temperature, noise }))
            .collect(),
        P::Gen { .. } => [0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0]
            .iter()
            .flat_map(|&gamma| [10, 50, 100, 200, 500, 1000].map(|top_m| P::Gen { gamma, top_m }))
            .collect(),
        P::Knn { .. } => [50, 100, 200, 500, 1000]
            .into_iter()
            .filter(|k| *k <= train_count)
            .map(|k| P::Knn { k })
            .collect(),
        P::Vim { .. } => [256, 1000]
            .into_iter()
            .filter(|d| *d < feature_dim)
            .map(|dim| P::Vim { dim })
            .collect(),
        P::React { .. } => [85.0, 90.0, 95.0, 99.0]
            .map(|percentile| P::React { percentile })
            .to_vec(),
        P::Ash { .. } => [65.0, 70.0, 75.0, 80.0, 85.0, 90.0, 95.0]
            .map(|percentile| P::Ash { percentile })
            .to_vec(),
        // Energy's sweep is T in {1}; MSP, MaxLogit, MDS and PALM's score have none.
        P::Energy { .. } => vec![P::Energy { temperature: 1.0 }],
        other => vec![other.clone()],
    }
}

/// The search itself: `val_auroc` scores one setting. The first strictly best wins ties
/// (`if auroc > max_auroc`); an empty grid falls back to `fallback`.
pub fn search<E>(
    grid: Vec<P>,
    fallback: &P,
    mut val_auroc: impl FnMut(&P) -> Result<f64, E>,
) -> Result<ApsRecord, E> {
    let mut tried = Vec::with_capacity(grid.len());
    let mut best: Option<(P, f64)> = None;
    for setting in grid {
        let auroc = val_auroc(&setting)?;
        if best.as_ref().is_none_or(|(_, b)| auroc > *b) {
            best = Some((setting.clone(), auroc));
        }
        tried.push(ApsTrial {
            setting,
            val_auroc: auroc,
        });
    }
    let (chosen, val_auroc) = best.unwrap_or((fallback.clone(), f64::NAN));
    Ok(ApsRecord {
        chosen,
        val_auroc,
        tried,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_follow_openood_and_drop_what_cannot_be_fitted() {
        let odin = grid(
            &P::Odin {
                temperature: 1000.0,
                noise: 0.0014,
            },
            512,
            50_000,
        );
        assert_eq!(odin.len(), 8);
        assert_eq!(
            odin[1],
            P::Odin {
                temperature: 1.0,
                noise: 0.0028
            },
            "the first key varies slowest"
        );
        assert_eq!(
            grid(
                &P::Gen {
                    gamma: 0.1,
                    top_m: 100
                },
                512,
                10
            )
            .len(),
            42
        );
        assert_eq!(
            grid(&P::Knn { k: 50 }, 512, 300),
            [P::Knn { k: 50 }, P::Knn { k: 100 }, P::Knn { k: 200 }]
        );
        assert_eq!(grid(&P::Vim { dim: 256 }, 512, 10), [P::Vim { dim: 256 }]);
        assert!(grid(&P::Vim { dim: 256 }, 64, 10).is_empty());
        assert_eq!(grid(&P::Ash { percentile: 90.0 }, 512, 10).len(), 7);
        assert_eq!(grid(&P::Msp {}, 512, 10), [P::Msp {}]);
    }

    #[test]
    fn search_keeps_the_first_strict_maximum() {
        let g = grid(&P::React { percentile: 90.0 }, 8, 10);
        let aurocs = [0.7, 0.9, 0.9, 0.8];
        let mut i = 0;
        let r = search::<()>(g, &P::React { percentile: 90.0 }, |_| {
            i += 1;
            Ok(aurocs[i - 1])
        })
        .unwrap();
        assert_eq!(r.chosen, P::React { percentile: 90.0 });
        assert_eq!(r.val_auroc, 0.9);
        assert_eq!(r.tried.len(), 4);
        assert_eq!(r.tried[3].val_auroc, 0.8);
        let empty = search::<()>(Vec::new(), &P::Vim { dim: 9 }, |_| Ok(1.0)).unwrap();
        assert_eq!(empty.chosen, P::Vim { dim: 9 });
    }
}
