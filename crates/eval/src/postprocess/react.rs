//! Activation shaping before the head: ReAct (Sun et al., NeurIPS 2021; OpenOOD
//! `react_postprocessor.py`) clips the penultimate features at a percentile of the ID validation
//! features; ASH-B (Djurisic et al., ICLR 2023; OpenOOD `ash_postprocessor.py`, applied to the
//! pooled vector) binarises the largest activations. Both score the energy (T = 1) of the head
//! applied to the shaped features.

use super::{Head, logsumexp};

/// `np.percentile(values, percentile)` with numpy's default linear interpolation.
pub fn percentile(values: &[f64], percentile: f64) -> f64 {
    assert!(!values.is_empty(), "percentile of an empty set");
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = percentile / 100.0 * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    let t = pos - lo as f64;
    // numpy `_lerp`: a + (b - a) t, computed from the upper end when t >= 0.5.
    let d = v[hi] - v[lo];
    if t >= 0.5 {
        v[hi] - d * (1.0 - t)
    } else {
        v[lo] + d * t
    }
}

/// ReAct's threshold: the `p`-th percentile of every entry of the ID validation features
/// (`np.percentile(activation_log.flatten(), p)`; OpenOOD default p = 90).
pub fn react_threshold(val_features: &[f64], p: f64) -> f64 {
    percentile(val_features, p)
}

/// `logsumexp(min(f, threshold) @ W^T + b)`.
pub fn react(feature: &[f64], threshold: f64, head: &Head) -> f64 {
    let clipped: Vec<f64> = feature.iter().map(|v| v.min(threshold)).collect();
    logsumexp(&head.apply(&clipped))
}

/// ASH-B of one pooled feature vector (`ash_b` in OpenOOD's `ash_postprocessor.py`): keep the
/// `k = n - round(n p / 100)` largest activations (numpy rounds half to even), set each to
/// `sum(f) / k` and zero the rest.
pub fn ash_b(feature: &[f64], p: f64) -> Vec<f64> {
    let n = feature.len();
    let k = n - ((n as f64 * p / 100.0).round_ties_even() as usize).min(n);
    let mut out = vec![0.0; n];
    if k == 0 {
        return out;
    }
    let fill = feature.iter().sum::<f64>() / k as f64;
    let mut order: Vec<usize> = (0..n).collect();
    // `torch.topk`: the k largest; ties broken by the lower index.
    order.sort_by(|&i, &j| feature[j].total_cmp(&feature[i]).then(i.cmp(&j)));
    for &i in &order[..k] {
        out[i] = fill;
    }
    out
}

/// `logsumexp(ash_b(f) @ W^T + b)` (OpenOOD default p = 90).
pub fn ash(feature: &[f64], p: f64, head: &Head) -> f64 {
    logsumexp(&head.apply(&ash_b(feature, p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_percentile_and_ash_b_by_hand() {
        // np.percentile([1, 2, 3, 4], 90) = 3.7; 50 -> 2.5; 0 / 100 -> the ends.
        let v = [4.0, 1.0, 3.0, 2.0];
        assert!((percentile(&v, 90.0) - 3.7).abs() < 1e-15);
        assert_eq!(percentile(&v, 50.0), 2.5);
        assert_eq!((percentile(&v, 0.0), percentile(&v, 100.0)), (1.0, 4.0));
        // n = 5, p = 90: k = 5 - round(4.5) = 5 - 4 (half to even) = 1: the largest keeps the
        // whole mass 1 + 5 + 2 + 0 + 2 = 10.
        assert_eq!(
            ash_b(&[1.0, 5.0, 2.0, 0.0, 2.0], 90.0),
            [0.0, 10.0, 0.0, 0.0, 0.0]
        );
        // p = 50: round(2.5) = 2 -> k = 3; the tie between the two 2.0 goes to the lower index.
        let a = ash_b(&[1.0, 5.0, 2.0, 0.0, 2.0], 50.0);
        let f = 10.0 / 3.0;
        assert_eq!(a, [0.0, f, f, 0.0, f]);
        // The energy of the head on the shaped feature.
        let head = Head::new(vec![1.0, 0.0, 0.0, 1.0], vec![0.0, 1.0], 2, 2);
        let e = ash(&[3.0, 1.0], 50.0, &head);
        // k = 2 - round(1.0) = 1: [4, 0] -> logits [4, 1].
        assert!((e - (4f64.exp() + 1f64.exp()).ln()).abs() < 1e-14);
        assert!((react(&[3.0, 1.0], 2.0, &head) - (2f64.exp() + 2f64.exp()).ln()).abs() < 1e-14);
    }
}
