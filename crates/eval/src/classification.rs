//! Slide-level classification metrics for the attention-MIL runs, as AEM reports them
//! (`main.py`, torchmetrics with `task="multiclass"`, METHODS §7.3): top-1 accuracy, macro
//! one-vs-rest AUROC on the softmax probabilities and macro F1 of the arg-max predictions.

use crate::metrics::{auc, roc_curve};
use crate::postprocess::argmax;
use serde::{Deserialize, Serialize};

/// Accuracy, macro AUROC and macro F1 of one split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassificationMetrics {
    pub accuracy: f64,
    /// `None` when no class has both positive and negative slides (e.g. a one-slide split).
    pub auroc: Option<f64>,
    pub f1: f64,
}

impl ClassificationMetrics {
    /// `probs`: one row of class probabilities per sample; `labels` in `0..num_classes`.
    pub fn compute(probs: &[Vec<f64>], labels: &[usize], num_classes: usize) -> Self {
        let pred: Vec<usize> = probs.iter().map(|p| argmax(p)).collect();
        Self {
            accuracy: crate::metrics::accuracy(&pred, labels),
            auroc: macro_auroc(probs, labels, num_classes),
            f1: macro_f1(&pred, labels, num_classes),
        }
    }

    /// AEM's model-selection score, `val_F1 + val_AUC` (`main.py`); a missing AUROC counts 0.
    pub fn selection_score(&self) -> f64 {
        self.f1 + self.auroc.unwrap_or(0.0)
    }
}

/// Unweighted mean over classes of the one-vs-rest AUROC of `probs[:, c]` against
/// `labels == c` (sklearn's trapezoidal ROC AUC per class). A class without positive or without
/// negative samples has no ROC curve; it is left out of the mean (torchmetrics warns and scores
/// such a class 0; we do not let an undefined class drag the mean down).
pub fn macro_auroc(probs: &[Vec<f64>], labels: &[usize], num_classes: usize) -> Option<f64> {
    let mut per_class = Vec::new();
    for c in 0..num_classes {
        let truth: Vec<bool> = labels.iter().map(|&l| l == c).collect();
        let pos = truth.iter().filter(|t| **t).count();
        if pos == 0 || pos == truth.len() {
            continue;
        }
        let score: Vec<f64> = probs.iter().map(|p| p[c]).collect();
        let roc = roc_curve(&truth, &score, false);
        per_class.push(auc(&roc.fpr, &roc.tpr));
    }
    (!per_class.is_empty()).then(|| per_class.iter().sum::<f64>() / per_class.len() as f64)
}

/// Macro F1 as torchmetrics' `multiclass_f1_score(average="macro")`: per class
/// `2 tp / (2 tp + fp + fn)`, averaged over the classes that occur in the labels or the
/// predictions (a class with `tp + fp + fn = 0` is left out); 0 when none does.
pub fn macro_f1(pred: &[usize], labels: &[usize], num_classes: usize) -> f64 {
    let mut sum = 0.0;
    let mut counted = 0usize;
    for c in 0..num_classes {
        let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
        for (&p, &l) in pred.iter().zip(labels) {
            match (p == c, l == c) {
                (true, true) => tp += 1,
                (true, false) => fp += 1,
                (false, true) => fn_ += 1,
                (false, false) => {}
            }
        }
        if tp + fp + fn_ > 0 {
            sum += 2.0 * tp as f64 / (2 * tp + fp + fn_) as f64;
            counted += 1;
        }
    }
    if counted == 0 {
        0.0
    } else {
        sum / counted as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    /// Values counted by hand: AUROC as the fraction of (positive, negative) pairs ordered
    /// correctly (ties 1/2), F1 from the confusion counts.
    #[test]
    fn binary_metrics_by_hand() {
        let p1 = [0.1, 0.6, 0.4, 0.8];
        let probs: Vec<Vec<f64>> = p1.iter().map(|p| vec![1.0 - p, *p]).collect();
        let m = ClassificationMetrics::compute(&probs, &[0, 0, 1, 1], 2);
        close(m.accuracy, 0.5);
        // 3 of 4 pairs ordered, for either class.
        close(m.auroc.unwrap(), 0.75);
        // Each class: tp 1, fp 1, fn 1.
        close(m.f1, 0.5);
        close(m.selection_score(), 1.25);
        // A tie between a positive and a negative counts one half.
        close(
            macro_auroc(&[vec![0.5, 0.5], vec![0.5, 0.5]], &[0, 1], 2).unwrap(),
            0.5,
        );
    }

    #[test]
    fn classes_without_samples() {
        let probs = vec![
            vec![0.7, 0.2, 0.1],
            vec![0.2, 0.3, 0.5],
            vec![0.1, 0.8, 0.1],
            vec![0.3, 0.6, 0.1],
        ];
        let labels = [0, 0, 1, 1];
        // Class 2 has no positive slide: left out of the AUROC mean (0.75 and 1.0).
        close(macro_auroc(&probs, &labels, 3).unwrap(), 0.875);
        // Class 2 is predicted once (fp 1): F1 0 counts; F1 = (2/3 + 1 + 0) / 3.
        let pred = [0, 2, 1, 1];
        close(macro_f1(&pred, &labels, 3), (2.0 / 3.0 + 1.0) / 3.0);
        // A 4th class that neither occurs nor is predicted does not count.
        let padded: Vec<Vec<f64>> = probs
            .iter()
            .map(|p| p.iter().copied().chain([0.0]).collect())
            .collect();
        let m = ClassificationMetrics::compute(&padded, &labels, 4);
        close(m.f1, (2.0 / 3.0 + 1.0) / 3.0);
        close(m.accuracy, 0.75);
        // One slide: no class has both kinds of sample.
        assert!(macro_auroc(&probs[..1], &labels[..1], 3).is_none());
    }
}
