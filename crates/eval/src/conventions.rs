//! The papers' own metric code (METHODS §1.2-1.5), so a paper's table can be reproduced with the
//! convention its numbers were produced with. OpenOOD v1.5 (`metrics.rs`) stays the default.
//!
//! | convention | positive | FPR / TNR rule | AUPR | samples |
//! |---|---|---|---|---|
//! | `oe` | OOD | ROC point with OOD recall *closest* to 0.95 | average precision | ID test / 5 OOD images, 10 draws |
//! | `energy` | ID | ROC point with ID recall closest to 0.95 | average precision | as `oe` |
//! | `palm` | ID | OOD above the 5th percentile of ID (strict) | OpenOOD trapezoid | full sets |
//! | `mixoe` | ID | TNR at the TPR closest to 0.95, its own curve | its AUIN / AUOUT | min(ID, OOD) of each, 10 draws |
//!
//! Every convention fills the same four fields (`OodMetrics`); `fpr95` is always the fraction
//! the paper calls FPR (MixOE prints TNR = 1 - fpr95). The draws are seeded ChaCha streams: the
//! same *rule and size* as the official loaders (a shuffled PyTorch loader, Python's
//! `random.sample`), not the same images, so a single draw differs; the 10-draw mean is what
//! the papers report.

use crate::aggregate::MetricsMeanStd;
use crate::metrics::{OodMetrics, auc, binary_clf_curve, ood_metrics, pairwise_sum, roc_curve};
use crate::postprocess::react::percentile;
use oodforge_core::config::MetricConvention;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The metrics of one (ID, OOD) pair under a convention: the mean over the draws, and their
/// standard deviation (population, `np.std`) when there is more than one draw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConventionMetrics {
    pub mean: OodMetrics,
    pub std: Option<OodMetrics>,
}

/// `conf_*`: scores, higher = more in-distribution.
pub fn convention_metrics(
    convention: &MetricConvention,
    conf_id: &[f64],
    conf_ood: &[f64],
) -> ConventionMetrics {
    let single = |m| ConventionMetrics { mean: m, std: None };
    match convention {
        MetricConvention::OpenOod {} => single(ood_metrics(conf_id, conf_ood)),
        MetricConvention::Palm {} => single(palm_metrics(conf_id, conf_ood)),
        MetricConvention::Oe {
            draws,
            ood_samples,
            seed,
        }
        | MetricConvention::Energy {
            draws,
            ood_samples,
            seed,
        } => {
            let ood_positive = matches!(convention, MetricConvention::Oe { .. });
            // OE `CIFAR/test.py`: `ood_num_examples = len(test_data) // 5` OOD images per draw.
            let m = ood_samples.unwrap_or(conf_id.len() / 5).min(conf_ood.len());
            let mut rng = ChaCha8Rng::seed_from_u64(*seed);
            let runs: Vec<OodMetrics> = (0..*draws)
                .map(|_| {
                    let out = draw(&mut rng, conf_ood, m);
                    hendrycks_metrics(conf_id, &out, ood_positive)
                })
                .collect();
            summarise(&runs)
        }
        MetricConvention::MixOe { draws, seed } => {
            let n = conf_id.len().min(conf_ood.len());
            let mut rng = ChaCha8Rng::seed_from_u64(*seed);
            let runs: Vec<OodMetrics> = (0..*draws)
                .map(|_| {
                    let known = draw(&mut rng, conf_id, n);
                    let novel = draw(&mut rng, conf_ood, n);
                    mixoe_metrics(&known, &novel)
                })
                .collect();
            summarise(&runs)
        }
    }
}

/// `m` of `values` without replacement (all of them, in order, when `m` covers the set).
fn draw(rng: &mut ChaCha8Rng, values: &[f64], m: usize) -> Vec<f64> {
    if m >= values.len() {
        return values.to_vec();
    }
    rand::seq::index::sample(rng, values.len(), m)
        .into_iter()
        .map(|i| values[i])
        .collect()
}

fn summarise(runs: &[OodMetrics]) -> ConventionMetrics {
    let refs: Vec<&OodMetrics> = runs.iter().collect();
    let m = MetricsMeanStd::of(&refs);
    ConventionMetrics {
        mean: OodMetrics {
            auroc: m.auroc.mean,
            fpr95: m.fpr95.mean,
            aupr_in: m.aupr_in.mean,
            aupr_out: m.aupr_out.mean,
        },
        std: (runs.len() > 1).then_some(OodMetrics {
            auroc: m.auroc.std,
            fpr95: m.fpr95.std,
            aupr_in: m.aupr_in.std,
            aupr_out: m.aupr_out.std,
        }),
    }
}

/// OE / energy `get_measures` on one draw. OE calls it with OOD positive on the anomaly score
/// `-conf`; energy (default, no `--out_as_pos`) with ID positive on `conf`. AUROC is the same
/// either way; the reported AUPR is the average precision of the positive side (`aupr_out` for
/// OE, `aupr_in` for energy), and the other side's is computed by the same rule.
pub fn hendrycks_metrics(conf_id: &[f64], conf_ood: &[f64], ood_positive: bool) -> OodMetrics {
    let mut conf = conf_id.to_vec();
    conf.extend_from_slice(conf_ood);
    let is_ood: Vec<bool> = (0..conf.len()).map(|i| i >= conf_id.len()).collect();
    let is_id: Vec<bool> = is_ood.iter().map(|o| !o).collect();
    let neg: Vec<f64> = conf.iter().map(|c| -c).collect();
    let roc = roc_curve(&is_ood, &neg, true);
    let fpr95 = if ood_positive {
        fpr_at_recall_closest(&is_ood, &neg, 0.95)
    } else {
        fpr_at_recall_closest(&is_id, &conf, 0.95)
    };
    OodMetrics {
        auroc: auc(&roc.fpr, &roc.tpr),
        fpr95,
        aupr_in: average_precision(&is_id, &conf),
        aupr_out: average_precision(&is_ood, &neg),
    }
}

/// sklearn `average_precision_score` (binary): `-sum(diff(recall) * precision[:-1])` over
/// `precision_recall_curve`, the step rule (not the trapezoid of OpenOOD's AUPR).
pub fn average_precision(y_true: &[bool], y_score: &[f64]) -> f64 {
    let (precision, recall) = crate::metrics::precision_recall_curve(y_true, y_score);
    let terms: Vec<f64> = recall
        .windows(2)
        .zip(&precision)
        .map(|(r, p)| (r[1] - r[0]) * p)
        .collect();
    -pairwise_sum(&terms)
}

/// OE `utils/display_results.py::fpr_and_fdr_at_recall`: the curve of distinct thresholds is
/// cut at the first point recalling every positive, reversed, and `(recall 1, fps 0)` appended;
/// the operating point is the *first* one whose recall is closest to `level`
/// (`argmin |recall - level|`); returns its false positives over all negatives.
pub fn fpr_at_recall_closest(y_true: &[bool], y_score: &[f64], level: f64) -> f64 {
    let (fps, tps, _) = binary_clf_curve(y_true, y_score);
    let negatives = y_true.iter().filter(|t| !**t).count() as f64;
    let Some(&total) = tps.last() else {
        return f64::NAN;
    };
    if total == 0.0 {
        return f64::NAN;
    }
    // `tps.searchsorted(tps[-1])`: the first index reaching the final count.
    let last = tps
        .iter()
        .position(|t| *t >= total)
        .unwrap_or(tps.len() - 1);
    let mut points: Vec<(f64, f64)> = (0..=last).rev().map(|i| (tps[i] / total, fps[i])).collect();
    points.push((1.0, 0.0));
    let mut best = 0;
    for (i, (r, _)) in points.iter().enumerate() {
        if (r - level).abs() < (points[best].0 - level).abs() {
            best = i;
        }
    }
    points[best].1 / negatives
}

/// PALM `cal_metric` (METHODS §1.4): ID positive; FPR = share of OOD scores strictly above the
/// linear-interpolated 5th percentile of the ID scores. AUROC is `roc_auc_score` (the same
/// value as OpenOOD's). PALM reports no AUPR; the AUPR fields keep OpenOOD's trapezoid rule.
pub fn palm_metrics(conf_id: &[f64], conf_ood: &[f64]) -> OodMetrics {
    let mut m = ood_metrics(conf_id, conf_ood);
    let threshold = percentile(conf_id, 5.0);
    let above = conf_ood.iter().filter(|c| **c > threshold).count();
    m.fpr95 = above as f64 / conf_ood.len() as f64;
    m
}

/// The counts curve of MixOE's `utils/calculate_log.py::get_curve` (from the Mahalanobis
/// detector's code): both sets sorted, the threshold swept upwards one sample at a time; on a
/// tie the ID sample is dropped first (no tie grouping). `tp[i]` / `fp[i]`: ID / OOD samples
/// still at or above the threshold after `i` steps.
pub fn mahalanobis_curve(known: &[f64], novel: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let mut known = known.to_vec();
    let mut novel = novel.to_vec();
    known.sort_by(f64::total_cmp);
    novel.sort_by(f64::total_cmp);
    let (nk, nn) = (known.len(), novel.len());
    let mut tp = Vec::with_capacity(nk + nn + 1);
    let mut fp = Vec::with_capacity(nk + nn + 1);
    let (mut t, mut f) = (nk, nn);
    tp.push(t as f64);
    fp.push(f as f64);
    let (mut k, mut n) = (0, 0);
    while k < nk || n < nn {
        if k < nk && (n == nn || novel[n] >= known[k]) {
            k += 1;
            t -= 1;
        } else {
            n += 1;
            f -= 1;
        }
        tp.push(t as f64);
        fp.push(f as f64);
    }
    (tp, fp)
}

/// `np.trapz(y, x)`.
fn trapz(y: &[f64], x: &[f64]) -> f64 {
    let terms: Vec<f64> = x
        .windows(2)
        .zip(y.windows(2))
        .map(|(x, y)| (x[1] - x[0]) * (y[1] + y[0]) / 2.0)
        .collect();
    pairwise_sum(&terms)
}

/// MixOE's `metric()` on one draw: TNR at the TPR closest to 0.95 (reported here as
/// `fpr95 = 1 - TNR`), AUROC `-trapz(1 - fpr, tpr)`, AUIN and AUOUT on the padded curve.
pub fn mixoe_metrics(known: &[f64], novel: &[f64]) -> OodMetrics {
    let (tp, fp) = mahalanobis_curve(known, novel);
    let (tp0, fp0) = (tp[0], fp[0]);
    let mut best = 0;
    for (i, t) in tp.iter().enumerate() {
        if (t / tp0 - 0.95).abs() < (tp[best] / tp0 - 0.95).abs() {
            best = i;
        }
    }
    let tnr = 1.0 - fp[best] / fp0;
    let pad = |first: f64, v: Vec<f64>, last: f64| {
        let mut out = vec![first];
        out.extend(v);
        out.push(last);
        out
    };
    let tpr = pad(1.0, tp.iter().map(|t| t / tp0).collect(), 0.0);
    let fpr = pad(1.0, fp.iter().map(|f| f / fp0).collect(), 0.0);
    let one_minus_fpr: Vec<f64> = fpr.iter().map(|f| 1.0 - f).collect();
    let auroc = -trapz(&one_minus_fpr, &tpr);
    // AUIN: precision of ID, points with no sample above the threshold left out.
    let keep_in = pad(
        1.0,
        tp.iter()
            .zip(&fp)
            .map(|(t, f)| f64::from(t + f > 0.0))
            .collect(),
        1.0,
    );
    let pin = pad(
        0.5,
        tp.iter()
            .zip(&fp)
            .map(|(t, f)| if t + f > 0.0 { t / (t + f) } else { 0.0 })
            .collect(),
        0.0,
    );
    let (x, y) = select(&tpr, &pin, &keep_in);
    let auin = -trapz(&y, &x);
    // AUOUT: precision of OOD below the threshold.
    let below: Vec<f64> = tp.iter().zip(&fp).map(|(t, f)| tp0 - t + fp0 - f).collect();
    let keep_out = pad(
        1.0,
        below.iter().map(|d| f64::from(*d > 0.0)).collect(),
        1.0,
    );
    let pout = pad(
        0.0,
        fp.iter()
            .zip(&below)
            .map(|(f, d)| if *d > 0.0 { (fp0 - f) / d } else { 0.0 })
            .collect(),
        0.5,
    );
    let (x, y) = select(&one_minus_fpr, &pout, &keep_out);
    let auout = trapz(&y, &x);
    OodMetrics {
        auroc,
        fpr95: 1.0 - tnr,
        aupr_in: auin,
        aupr_out: auout,
    }
}

fn select(x: &[f64], y: &[f64], keep: &[f64]) -> (Vec<f64>, Vec<f64>) {
    x.iter()
        .zip(y)
        .zip(keep)
        .filter(|(_, k)| **k > 0.0)
        .map(|((x, y), _)| (*x, *y))
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_recall_rule_picks_the_nearest_recall_at_its_lowest_threshold() {
        // 15 positives scored 15..1 and one negative. Recall steps of 1/15: 14/15 (distance
        // 0.0167) is closer to 0.95 than 15/15 (0.05).
        let case = |negative: f64| {
            let mut score: Vec<f64> = (1..=15).rev().map(f64::from).collect();
            let mut truth = vec![true; 15];
            score.push(negative);
            truth.push(false);
            fpr_at_recall_closest(&truth, &score, 0.95)
        };
        // Tied with the last positive: recall 14/15 is reached without it (OpenOOD's "first
        // recall >= 0.95" would need recall 1 and count it: FPR 1).
        assert_eq!(case(1.0), 0.0);
        // Between the 14th and 15th positive: the reversed curve meets recall 14/15 first at
        // the lowest threshold, which already admits the negative.
        assert_eq!(case(1.5), 1.0);
        assert_eq!(case(0.5), 0.0);
        assert_eq!(case(2.5), 1.0);
    }

    #[test]
    fn average_precision_by_hand() {
        // Ranking: P N P (scores 3 2 1): precision at recall 1/2 = 1, at recall 1 = 2/3.
        // AP = 0.5 * 1 + 0.5 * 2/3.
        let ap = average_precision(&[true, false, true], &[3.0, 2.0, 1.0]);
        assert!((ap - (0.5 + 1.0 / 3.0)).abs() < 1e-15, "{ap}");
    }

    #[test]
    fn palm_fpr_is_the_share_of_ood_above_the_fifth_percentile() {
        // ID 0..=100: the 5th percentile is exactly 5. OOD 4, 5, 6, 7: strictly above -> 6, 7.
        let id: Vec<f64> = (0..=100).map(f64::from).collect();
        let m = palm_metrics(&id, &[4.0, 5.0, 6.0, 7.0]);
        assert_eq!(m.fpr95, 0.5);
        assert_eq!(m.auroc, ood_metrics(&id, &[4.0, 5.0, 6.0, 7.0]).auroc);
    }

    #[test]
    fn mahalanobis_curve_counts_and_ties_drop_id_first() {
        // known 1, 3; novel 2, 3 (a tie at 3).
        let (tp, fp) = mahalanobis_curve(&[3.0, 1.0], &[3.0, 2.0]);
        // Sweep: drop known 1, novel 2, known 3 (tie: ID first), novel 3.
        assert_eq!(tp, vec![2.0, 1.0, 1.0, 0.0, 0.0]);
        assert_eq!(fp, vec![2.0, 2.0, 1.0, 1.0, 0.0]);
    }

    #[test]
    fn mixoe_metrics_by_hand() {
        // 20 ID scores 11..30 above 10 OOD scores 1..10. The sweep drops the 10 OOD first
        // (tp 20, fp 10..0), then the ID (tp 19..0, fp 0): TPR 19/20 first meets fp 0.
        let known: Vec<f64> = (11..=30).map(f64::from).collect();
        let novel: Vec<f64> = (1..=10).map(f64::from).collect();
        let m = mixoe_metrics(&known, &novel);
        assert_eq!(m.fpr95, 0.0, "TNR 1");
        assert_eq!(m.auroc, 1.0);
        // AUIN: precision 1 from TPR 1 down to 1/20, then the padded (0, 0) end: 0.95 + 0.025.
        assert!((m.aupr_in - 0.975).abs() < 1e-12, "{m:?}");
        // AUOUT: the padded (0, 0) start to (0.1, 1), then precision 1 up to 1: 0.05 + 0.9.
        assert!((m.aupr_out - 0.95).abs() < 1e-12, "{m:?}");
        // Inverted: the ID are dropped first, with every OOD still above: TNR 0, AUROC 0.
        let m = mixoe_metrics(&novel, &known);
        assert_eq!(m.auroc, 0.0);
        assert_eq!(m.fpr95, 1.0);
        // Two ID samples only: TPR 1 (the first point) is as close to 0.95 as any, so the
        // official rule reads TNR at the lowest threshold: 0, even with perfect separation.
        assert_eq!(mixoe_metrics(&[3.0, 4.0], &[1.0, 2.0]).fpr95, 1.0);
    }

    #[test]
    fn mixoe_auroc_equals_mann_whitney_without_ties() {
        let id = [0.9, 0.1, 0.5, 0.7, 0.35, 0.8];
        let ood = [0.2, 0.6, 0.05, 0.4, 0.3];
        let m = mixoe_metrics(&id, &ood);
        let openood = ood_metrics(&id, &ood);
        assert!((m.auroc - openood.auroc).abs() < 1e-12, "{m:?} {openood:?}");
    }

    #[test]
    fn draws_average_and_cover_the_set_when_it_is_small() {
        let id: Vec<f64> = (0..50).map(|i| f64::from(i) / 10.0).collect();
        let ood: Vec<f64> = (0..8).map(|i| f64::from(i) / 3.0).collect();
        // ID/5 = 10 > 8 OOD samples: every draw is the whole set, so no spread.
        let c = convention_metrics(&MetricConvention::from_name("oe").unwrap(), &id, &ood);
        let once = hendrycks_metrics(&id, &ood, true);
        assert!((c.mean.fpr95 - once.fpr95).abs() < 1e-12, "{c:?} {once:?}");
        assert!((c.mean.auroc - once.auroc).abs() < 1e-12, "{c:?} {once:?}");
        assert!(c.std.unwrap().auroc < 1e-12, "{c:?}");
        // MixOE: 8 of the 50 ID scores per draw -> the draws differ.
        let c = convention_metrics(&MetricConvention::from_name("mixoe").unwrap(), &id, &ood);
        assert!(c.std.unwrap().auroc > 0.0, "{c:?}");
        let again = convention_metrics(&MetricConvention::from_name("mixoe").unwrap(), &id, &ood);
        assert_eq!(c, again, "seeded");
    }
}
