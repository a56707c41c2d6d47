//! MixOE (Zhang et al., WACV 2023; METHODS §4), `train/train_mixoe.py` L276-304.
//!
//! Per iteration: `L_id = CE(f(x), y)` on the clean ID batch; one `lam ~ Beta(a, b)`; ID image i
//! mixed with outlier i (no permutation): mixup `lam x + (1 - lam) x_out`, or cutmix (an outlier
//! box pasted into the ID image, `lam` reset to the kept ID area); soft target
//! `lam onehot(y) + (1 - lam) / K`; `L = L_id + mix_weight * SoftCE(f(x_mix), target)` with a
//! second forward pass. The official recipe is Beta(a, a) (a = 1 mixup, 2 cutmix), weight 5;
//! OpenOOD's port uses cutmix with Beta(0.1, 1.0) and weight 1.

use crate::ce::cross_entropy;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};
use oodforge_core::config::MixOp;
use rand::Rng;
use rand_distr::{Beta, Distribution};

/// The random draws of one MixOE step (`np.random.beta`, then for cutmix two
/// `np.random.randint`); drawn by [`draw`] from a seeded stream, or replayed by tests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MixDraw {
    /// The Beta draw.
    pub lam: f64,
    /// Cutmix box centre: `cx = randint(size[2])` (a row, along H of NCHW) and
    /// `cy = randint(size[3])` (a column, along W).
    pub centre: Option<(usize, usize)>,
}

/// Draw one step's `lam` (and the cutmix centre for an `h x w` image) in the official order.
pub fn draw(
    op: MixOp,
    beta_a: f64,
    beta_b: f64,
    h: usize,
    w: usize,
    rng: &mut impl Rng,
) -> MixDraw {
    let beta = Beta::new(beta_a, beta_b).expect("Beta parameters validated by the config");
    let lam = beta.sample(rng);
    let centre = match op {
        MixOp::Mixup => None,
        MixOp::Cutmix => Some((rng.random_range(0..h), rng.random_range(0..w))),
    };
    MixDraw { lam, centre }
}

/// The cutmix box `(row0, row1, col0, col1)` (half-open) of `rand_bbox`: upstream names
/// `size[2]` "W", so its `bbx` runs along rows. `cut = int(side * sqrt(1 - lam))` and the box is
/// `centre -/+ cut // 2`, clipped to the image, so its side is even before clipping.
pub fn cutmix_box(
    h: usize,
    w: usize,
    lam: f64,
    centre: (usize, usize),
) -> (usize, usize, usize, usize) {
    let cut_rat = (1.0 - lam).sqrt();
    let cut_r = (h as f64 * cut_rat) as i64; // int() truncates toward zero, as Python's
    let cut_c = (w as f64 * cut_rat) as i64;
    let (cr, cc) = (centre.0 as i64, centre.1 as i64);
    let clip = |v: i64, hi: usize| v.clamp(0, hi as i64) as usize;
    (
        clip(cr - cut_r / 2, h),
        clip(cr + cut_r / 2, h),
        clip(cc - cut_c / 2, w),
        clip(cc + cut_c / 2, w),
    )
}

/// Mix the ID batch `x` with the outlier batch `x_out` (both `[b, c, h, w]`, paired row by row).
/// Returns the mixed batch and the final `lam` (for cutmix, the fraction of ID pixels kept).
pub fn mix(x: Tensor<4>, x_out: Tensor<4>, op: MixOp, draw: &MixDraw) -> (Tensor<4>, f64) {
    match op {
        MixOp::Mixup => (
            x.mul_scalar(draw.lam) + x_out.mul_scalar(1.0 - draw.lam),
            draw.lam,
        ),
        MixOp::Cutmix => {
            let [b, c, h, w] = x.dims();
            let centre = draw.centre.expect("a cutmix draw has a box centre");
            let (r0, r1, c0, c1) = cutmix_box(h, w, draw.lam, centre);
            let lam = 1.0 - ((r1 - r0) * (c1 - c0)) as f64 / (h * w) as f64;
            if r1 > r0 && c1 > c0 {
                let patch = x_out.slice([0..b, 0..c, r0..r1, c0..c1]);
                (x.slice_assign([0..b, 0..c, r0..r1, c0..c1], patch), lam)
            } else {
                (x, lam)
            }
        }
    }
}

/// `SoftCE` mean with the target `lam onehot(y) + (1 - lam) / K`:
/// `mean_i [-lam log p_{i,y_i} - (1 - lam)/K sum_k log p_ik]`.
pub fn soft_cross_entropy(logits: Tensor<2>, labels: Tensor<1, Int>, lam: f64) -> Tensor<1> {
    let [n, k] = logits.dims();
    let logp = log_softmax(logits, 1);
    let picked = logp.clone().gather(1, labels.unsqueeze_dim(1)).reshape([n]);
    let all = logp.sum_dim(1).reshape([n]);
    (picked.mul_scalar(lam) + all.mul_scalar((1.0 - lam) / k as f64))
        .mean()
        .neg()
}

/// The pieces of the MixOE loss.
pub struct MixOeTerms {
    /// CE on the clean ID batch.
    pub ce: Tensor<1>,
    /// Soft CE on the mixed batch (unweighted).
    pub mix: Tensor<1>,
    /// `ce + mix_weight * mix`.
    pub total: Tensor<1>,
}

/// The MixOE loss from the logits of the clean and of the mixed batch.
pub fn mixoe_loss(
    logits_id: Tensor<2>,
    logits_mixed: Tensor<2>,
    labels: Tensor<1, Int>,
    lam: f64,
    mix_weight: f64,
) -> MixOeTerms {
    let ce = cross_entropy(logits_id, labels.clone());
    let mix = soft_cross_entropy(logits_mixed, labels, lam);
    MixOeTerms {
        total: ce.clone() + mix.clone().mul_scalar(mix_weight),
        ce,
        mix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutmix_box_follows_rand_bbox() {
        // 8 x 6 image, lam 0.55: cut_rat = sqrt(0.45) = 0.67; rows int(8 * 0.67) = 5 -> half 2,
        // columns int(6 * 0.67) = 4 -> half 2.
        assert_eq!(cutmix_box(8, 6, 0.55, (4, 3)), (2, 6, 1, 5));
        // Clipped at the corner.
        assert_eq!(cutmix_box(8, 6, 0.2, (7, 0)), (4, 8, 0, 2));
        // lam near 1: empty box.
        assert_eq!(cutmix_box(8, 6, 0.99, (3, 2)), (3, 3, 2, 2));
    }
}
