//! GEN, the generalized entropy score (Liu et al., CVPR 2023; OpenOOD
//! `postprocessors/gen_postprocessor.py`): `-sum over the M largest softmax probabilities of
//! p^gamma (1 - p)^gamma`.

use super::softmax;

/// `gamma` (OpenOOD default 0.1) and `m` (100; with fewer classes than M every class counts).
pub fn score(z: &[f64], gamma: f64, m: usize) -> f64 {
    let mut p = softmax(z);
    // `torch.sort(probs)[0][:, -M:]`: the M largest, in ascending order.
    p.sort_by(f64::total_cmp);
    let top = &p[p.len().saturating_sub(m)..];
    -top.iter()
        .map(|p| p.powf(gamma) * (1.0 - p).powf(gamma))
        .sum::<f64>()
}
