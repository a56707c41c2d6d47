//! OOD detection metrics with the OpenOOD v1.5 conventions (`openood/evaluators/metrics.py`,
//! METHODS §1.1), reproducing scikit-learn 1.9's curve construction step by step so ties,
//! all-equal scores and degenerate inputs give the same numbers:
//!
//! - OOD is the positive class: ROC of `is_ood` against `-conf` (`conf` higher = more ID).
//! - AUROC: trapezoid area under that ROC (`sklearn.metrics.auc`).
//! - FPR@95: FPR at the first ROC point with TPR >= 0.95 (`fpr_list[argmax(tpr >= 0.95)]`).
//! - AUPR-In / AUPR-Out: trapezoid area under `precision_recall_curve` with ID (score `conf`)
//!   or OOD (score `-conf`) positive, including sklearn's appended (recall 0, precision 1) point.
//!   Not `average_precision_score`.
//!
//! Sums use NumPy's pairwise summation so 10k-sample areas agree to ~1e-15.

/// The four OpenOOD numbers for one (ID, OOD) pair, as fractions.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OodMetrics {
    pub auroc: f64,
    pub fpr95: f64,
    pub aupr_in: f64,
    pub aupr_out: f64,
}

/// A ROC curve as sklearn's `roc_curve(drop_intermediate=True)` returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct RocCurve {
    pub fpr: Vec<f64>,
    pub tpr: Vec<f64>,
    pub thresholds: Vec<f64>,
}

/// OpenOOD `compute_all_metrics` minus accuracy: `conf_id` / `conf_ood` are the scores of the ID
/// test set and one OOD set.
pub fn ood_metrics(conf_id: &[f64], conf_ood: &[f64]) -> OodMetrics {
    let (conf, is_ood) = concat(conf_id, conf_ood);
    ood_metrics_labeled(&conf, &is_ood)
}

/// The same from one score array and an OOD indicator per sample.
pub fn ood_metrics_labeled(conf: &[f64], is_ood: &[bool]) -> OodMetrics {
    let neg: Vec<f64> = conf.iter().map(|c| -c).collect();
    let roc = roc_curve(is_ood, &neg, true);
    let fpr95 = first_at_least(&roc.tpr, 0.95).map_or(f64::NAN, |i| roc.fpr[i]);
    let auroc = auc(&roc.fpr, &roc.tpr);
    let is_id: Vec<bool> = is_ood.iter().map(|o| !o).collect();
    let (p_in, r_in) = precision_recall_curve(&is_id, conf);
    let (p_out, r_out) = precision_recall_curve(is_ood, &neg);
    OodMetrics {
        auroc,
        fpr95,
        aupr_in: auc(&r_in, &p_in),
        aupr_out: auc(&r_out, &p_out),
    }
}

/// OpenOOD `fpr_recall(conf, label, 0.95)`: ID positive, ROC of `is_id` against `conf`; the FPR
/// (fraction of OOD accepted) and threshold at the first point recalling `recall` of the ID set.
pub fn fpr_at_id_recall(conf: &[f64], is_ood: &[bool], recall: f64) -> (f64, f64) {
    let is_id: Vec<bool> = is_ood.iter().map(|o| !o).collect();
    let roc = roc_curve(&is_id, conf, true);
    let i = first_at_least(&roc.tpr, recall).unwrap_or(0);
    (roc.fpr[i], roc.thresholds[i])
}

/// Top-1 accuracy over ID samples.
pub fn accuracy(pred: &[usize], label: &[usize]) -> f64 {
    assert_eq!(pred.len(), label.len(), "one prediction per label");
    let hits = pred.iter().zip(label).filter(|(p, l)| p == l).count();
    hits as f64 / label.len() as f64
}

fn concat(conf_id: &[f64], conf_ood: &[f64]) -> (Vec<f64>, Vec<bool>) {
    let mut conf = Vec::with_capacity(conf_id.len() + conf_ood.len());
    conf.extend_from_slice(conf_id);
    conf.extend_from_slice(conf_ood);
    let mut is_ood = vec![false; conf_id.len()];
    is_ood.resize(conf.len(), true);
    (conf, is_ood)
}

/// `np.argmax(x >= t)`: the first index where it holds, 0 when it never does (NumPy returns 0
/// for an all-false array; that is what makes FPR@95 = 0 when there is no OOD sample).
fn first_at_least(x: &[f64], t: f64) -> Option<usize> {
    if x.is_empty() {
        return None;
    }
    Some(x.iter().position(|v| *v >= t).unwrap_or(0))
}

/// sklearn `_binary_clf_curve`: cumulative false and true positives at each distinct score,
/// scores in decreasing order. Returns (fps, tps, thresholds).
pub(crate) fn binary_clf_curve(y_true: &[bool], y_score: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    assert_eq!(y_true.len(), y_score.len(), "one label per score");
    let mut order: Vec<usize> = (0..y_score.len()).collect();
    // Descending; NaN scores are rejected by the callers' inputs (network outputs are checked).
    order.sort_by(|&a, &b| y_score[b].total_cmp(&y_score[a]));
    let mut fps = Vec::new();
    let mut tps = Vec::new();
    let mut thresholds = Vec::new();
    let mut tp = 0.0f64;
    for (rank, &i) in order.iter().enumerate() {
        if y_true[i] {
            tp += 1.0;
        }
        let last_of_value = rank + 1 == order.len() || y_score[order[rank + 1]] != y_score[i];
        if last_of_value {
            tps.push(tp);
            fps.push(1.0 + rank as f64 - tp);
            thresholds.push(y_score[i]);
        }
    }
    (fps, tps, thresholds)
}

/// sklearn `roc_curve(y_true, y_score, drop_intermediate)`.
pub fn roc_curve(y_true: &[bool], y_score: &[f64], drop_intermediate: bool) -> RocCurve {
    let (mut fps, mut tps, mut thresholds) = binary_clf_curve(y_true, y_score);
    if drop_intermediate && fps.len() > 2 {
        // Keep the ends and every point where either second difference is non-zero.
        let n = fps.len();
        let keep: Vec<usize> = (0..n)
            .filter(|&i| {
                i == 0
                    || i == n - 1
                    || (fps[i + 1] - fps[i]) - (fps[i] - fps[i - 1]) != 0.0
                    || (tps[i + 1] - tps[i]) - (tps[i] - tps[i - 1]) != 0.0
            })
            .collect();
        fps = keep.iter().map(|&i| fps[i]).collect();
        tps = keep.iter().map(|&i| tps[i]).collect();
        thresholds = keep.iter().map(|&i| thresholds[i]).collect();
    }
    fps.insert(0, 0.0);
    tps.insert(0, 0.0);
    thresholds.insert(0, f64::INFINITY);
    let fp_total = *fps.last().expect("at least the prepended point");
    let tp_total = *tps.last().expect("at least the prepended point");
    // sklearn warns and returns NaN rates when a class is absent.
    let fpr = fps
        .iter()
        .map(|f| {
            if fp_total <= 0.0 {
                f64::NAN
            } else {
                f / fp_total
            }
        })
        .collect();
    let tpr = tps
        .iter()
        .map(|t| {
            if tp_total <= 0.0 {
                f64::NAN
            } else {
                t / tp_total
            }
        })
        .collect();
    RocCurve {
        fpr,
        tpr,
        thresholds,
    }
}

/// sklearn `precision_recall_curve(y_true, probas_pred)` (drop_intermediate=False): returns
/// (precision, recall) with recall decreasing and the final (recall 0, precision 1) point.
pub fn precision_recall_curve(y_true: &[bool], y_score: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let (fps, tps, _) = binary_clf_curve(y_true, y_score);
    let tp_total = tps.last().copied().unwrap_or(0.0);
    let mut precision: Vec<f64> = fps
        .iter()
        .zip(&tps)
        .rev()
        .map(|(f, t)| if t + f != 0.0 { t / (t + f) } else { 0.0 })
        .collect();
    let mut recall: Vec<f64> = tps
        .iter()
        .rev()
        .map(|t| if tp_total == 0.0 { 1.0 } else { t / tp_total })
        .collect();
    precision.push(1.0);
    recall.push(0.0);
    (precision, recall)
}

/// sklearn `metrics.auc(x, y)`: trapezoid rule, `x` monotone (either direction).
pub fn auc(x: &[f64], y: &[f64]) -> f64 {
    assert_eq!(x.len(), y.len(), "auc needs one y per x");
    if x.len() < 2 {
        return f64::NAN;
    }
    let dx: Vec<f64> = x.windows(2).map(|w| w[1] - w[0]).collect();
    let direction = if dx.iter().any(|d| *d < 0.0) {
        if dx.iter().all(|d| *d <= 0.0) {
            -1.0
        } else {
            // sklearn raises here; our curves are monotone by construction.
            return f64::NAN;
        }
    } else {
        1.0
    };
    let terms: Vec<f64> = dx
        .iter()
        .zip(y.windows(2))
        .map(|(d, w)| d * (w[1] + w[0]) / 2.0)
        .collect();
    direction * pairwise_sum(&terms)
}

/// NumPy's pairwise summation (`numpy/_core/src/umath/loops_utils.h.src`, `pairwise_sum`):
/// blocks of 128 summed with 8 accumulators, halves above that.
pub fn pairwise_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        // NumPy starts from -0.0 so that a sum of negative zeros stays -0.0.
        let mut res = -0.0;
        for v in a {
            res += v;
        }
        res
    } else if n <= 128 {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - (n % 8) {
            for (k, rk) in r.iter_mut().enumerate() {
                *rk += a[i + k];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for v in &a[i..] {
            res += v;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum(&a[..n2]) + pairwise_sum(&a[n2..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairwise_sum_matches_plain_sum_on_exact_values() {
        let v: Vec<f64> = (0..1000).map(|i| i as f64).collect();
        assert_eq!(pairwise_sum(&v), 499500.0);
        assert_eq!(pairwise_sum(&v[..5]), 10.0);
        assert_eq!(pairwise_sum(&v[..100]), 4950.0);
    }

    #[test]
    fn perfect_separation() {
        let m = ood_metrics(&[3.0, 2.0], &[1.0, 0.0]);
        assert_eq!(
            (m.auroc, m.fpr95, m.aupr_in, m.aupr_out),
            (1.0, 0.0, 1.0, 1.0)
        );
    }
}
