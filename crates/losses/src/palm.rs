//! PALM (Lu et al., ICLR 2024; METHODS §5), `util/loss_functions.py::PALM`.
//!
//! Each class has `M` prototypes in the (L2-normalised) projection space; prototype `j` belongs
//! to class `j % C`. One step on the `N` embeddings of a batch (all views, view-major):
//! 1. Sinkhorn assignment `Q` of the (detached) embeddings to the prototypes.
//! 2. EMA update: `w = mask * Q` (own-class prototypes), top-k per sample, L1 rows then L1
//!    columns; `P' = normalize(m P + (1 - m) w^T F)`. `P'` keeps the link to this batch's `F`.
//! 3. `Q2` = Sinkhorn with `P'`; loss weights `mask * Q2` on the same top-k support (upstream
//!    takes `topk(update_mask)`), L1 rows.
//! 4. MLE loss `-mean_i [sum_j w2_ij z_i.p_j / tau - log sum_j exp(z_i.p_j / tau)]` with `P'`
//!    detached.
//! 5. Prototype contrastive loss on `normalize(P')` (not detached) at temperature 0.5, positives
//!    the other prototypes of the same class.
//! 6. `L = L_mle + pcon_weight L_pc`; the new prototypes are stored detached.

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use rand::Rng;

/// PALM's hyperparameters (`[objective] name = "palm"`).
#[derive(Debug, Clone, PartialEq)]
pub struct PalmParams {
    pub num_classes: usize,
    /// `--cache-size` (M).
    pub prototypes_per_class: usize,
    /// `--k`; 0 uses the whole own-class assignment.
    pub top_k: usize,
    /// `--proto_m`.
    pub proto_momentum: f64,
    /// `--temp`.
    pub mle_temperature: f64,
    /// `--lambda_pcon`.
    pub pcon_weight: f64,
    /// Hard-coded 0.5 in `proto_contra`.
    pub pcon_temperature: f64,
    /// `--epsilon`.
    pub sinkhorn_epsilon: f64,
    pub sinkhorn_iterations: usize,
}

impl PalmParams {
    pub fn num_prototypes(&self) -> usize {
        self.num_classes * self.prototypes_per_class
    }
}

/// What one PALM step computed: the loss, its pieces and every intermediate the golden fixture
/// records (useful when a number moves).
pub struct PalmStep {
    pub total: Tensor<1>,
    pub mle: Tensor<1>,
    /// The prototype contrastive loss, unweighted.
    pub pcon: Tensor<1>,
    /// The updated prototypes, detached: the state for the next step.
    pub prototypes: Tensor<2>,
    pub q_before_update: Tensor<2>,
    pub update_mask: Tensor<2>,
    pub update_features: Tensor<2>,
    pub q_after_update: Tensor<2>,
    pub mle_logits: Tensor<2>,
    pub loss_mask: Tensor<2>,
}

/// Initial prototypes as upstream: `torch.rand(n, dim)` rows, L2-normalised; row-major `[n, dim]`.
pub fn initial_prototypes(n: usize, dim: usize, rng: &mut impl Rng) -> Vec<f32> {
    let mut p: Vec<f32> = (0..n * dim).map(|_| rng.random::<f32>()).collect();
    for row in p.chunks_mut(dim) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= norm);
    }
    p
}

/// `F.normalize(x, p=1, dim)`: divide by `max(sum |x|, 1e-12)` along `dim` (entries here are >= 0).
fn l1_normalize(x: Tensor<2>, dim: usize) -> Tensor<2> {
    let s = x.clone().abs().sum_dim(dim).clamp_min(1e-12);
    x / s
}

/// `F.normalize(x, dim=1)`: rows divided by `max(||x||_2, 1e-12)`.
fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let n = x.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
    x / n
}

/// `PALM.sinkhorn`: the `[N, P]` soft assignment of the embeddings to the prototypes, each
/// sample's weights summing to 1. Computed without gradient.
///
/// The scores are shifted by their maximum before `exp`: the first normalisation divides the
/// shift out again, and `exp(z.p / epsilon)` no longer overflows float32 for small epsilon
/// (upstream's `exp(1 / 0.01)` would be infinite; its fallback re-normalises the prototypes,
/// which does not help there).
pub fn sinkhorn(
    features: Tensor<2>,
    prototypes: Tensor<2>,
    epsilon: f64,
    iterations: usize,
) -> Tensor<2> {
    let [n, _] = features.dims();
    let [p, _] = prototypes.dims();
    let out = features.detach().matmul(prototypes.detach().transpose());
    let scaled = out.div_scalar(epsilon);
    let top = scaled.clone().max().reshape([1, 1]);
    let mut q = (scaled - top).exp().transpose(); // [P, N]
    q = q.clone() / q.clone().sum().reshape([1, 1]);
    for _ in 0..iterations {
        q = l1_normalize(q, 1).div_scalar(p as f64);
        q = l1_normalize(q, 0).div_scalar(n as f64);
    }
    q.mul_scalar(n as f64).transpose()
}

/// `mask[i, j] = labels[i] == j % C`, `[N, P]`.
fn class_mask(labels: Tensor<1, Int>, num_classes: usize, num_protos: usize) -> Tensor<2, Bool> {
    let [n] = labels.dims();
    let device = labels.device();
    let proto_class: Vec<i64> = (0..num_protos).map(|j| (j % num_classes) as i64).collect();
    let proto_class = Tensor::<1, Int>::from_data(
        TensorData::new(proto_class, [num_protos]),
        (&device, labels.dtype()),
    );
    labels
        .unsqueeze_dim::<2>(1)
        .expand([n, num_protos])
        .equal(proto_class.unsqueeze_dim::<2>(0).expand([n, num_protos]))
}

/// The `k` largest entries of each row (`torch.topk(x, k, dim=1)` scattered into a mask); with
/// no ties, as upstream.
fn top_k_support(x: Tensor<2>, k: usize) -> Tensor<2, Bool> {
    let [n, p] = x.dims();
    let kth = x.clone().topk(k, 1).narrow(1, k - 1, 1); // [n, 1]
    x.greater_equal(kth.expand([n, p]))
}

/// One PALM step. `features`: `[N, D]` unit embeddings of all views, view-major
/// (`cat(unbind(features, 1), 0)` upstream); `labels`: `[N]`; `prototypes`: `[C M, D]` (state).
pub fn palm_loss(
    features: Tensor<2>,
    labels: Tensor<1, Int>,
    prototypes: Tensor<2>,
    p: &PalmParams,
) -> PalmStep {
    let [n, _] = features.dims();
    let np = p.num_prototypes();
    let mask = class_mask(labels, p.num_classes, np);
    let not_own = mask.clone().bool_not();

    // Prototype update (`mle_loss`, first half).
    let q_before_update = sinkhorn(
        features.clone(),
        prototypes.clone(),
        p.sinkhorn_epsilon,
        p.sinkhorn_iterations,
    );
    let own = q_before_update.clone().mask_fill(not_own.clone(), 0.0);
    let (update_mask, support) = if p.top_k > 0 {
        let support = top_k_support(own.clone(), p.top_k);
        let kept = own.mask_fill(support.clone().bool_not(), 0.0);
        (l1_normalize(l1_normalize(kept, 1), 0), Some(support))
    } else {
        (l1_normalize(l1_normalize(own, 1), 0), None)
    };
    let update_features = update_mask.clone().transpose().matmul(features.clone()); // [P, D]
    let updated = l2_normalize(
        prototypes.mul_scalar(p.proto_momentum)
            + update_features.clone().mul_scalar(1.0 - p.proto_momentum),
    );

    // MLE loss with the updated prototypes (detached).
    let q_after_update = sinkhorn(
        features.clone(),
        updated.clone(),
        p.sinkhorn_epsilon,
        p.sinkhorn_iterations,
    );
    let own2 = q_after_update.clone().mask_fill(not_own, 0.0);
    let loss_mask = match support {
        Some(s) => l1_normalize(own2.mask_fill(s.bool_not(), 0.0), 1),
        None => l1_normalize(own2, 1),
    };
    let mle_logits = features
        .matmul(updated.clone().detach().transpose())
        .mul_scalar(1.0 / p.mle_temperature);
    let pos = (loss_mask.clone() * mle_logits.clone())
        .sum_dim(1)
        .reshape([n]);
    let neg = crate::ce::logsumexp(mle_logits.clone());
    let mle = (pos - neg).mean().neg();

    let pcon = proto_contra(updated.clone(), p);
    PalmStep {
        total: mle.clone() + pcon.clone().mul_scalar(p.pcon_weight),
        mle,
        pcon,
        prototypes: updated.detach(),
        q_before_update,
        update_mask,
        update_features,
        q_after_update,
        mle_logits,
        loss_mask,
    }
}

/// `PALM.proto_contra`: for each prototype, the other prototypes of its class are positives
/// (weights `1 / (M - 1)`), all other prototypes negatives; similarities `p_a.p_b / 0.5` less the
/// (detached) row maximum; the prototype itself is left out.
fn proto_contra(prototypes: Tensor<2>, p: &PalmParams) -> Tensor<1> {
    let np = p.num_prototypes();
    let device: Device = prototypes.device();
    let protos = l2_normalize(prototypes);
    let s = protos
        .clone()
        .matmul(protos.transpose())
        .mul_scalar(1.0 / p.pcon_temperature);
    let logits = s.clone() - s.max_dim(1).detach();
    let class = |j: usize| j % p.num_classes;
    let m = p.prototypes_per_class as f64;
    let mut pos_w = vec![0f64; np * np];
    let mut others = vec![true; np * np];
    for a in 0..np {
        others[a * np + a] = false;
        for b in 0..np {
            if a != b && class(a) == class(b) {
                pos_w[a * np + b] = 1.0 / (m - 1.0);
            }
        }
    }
    let dtype = logits.dtype();
    let pos_w = Tensor::<2>::from_data(TensorData::new(pos_w, [np, np]), (&device, dtype));
    let others = Tensor::<2, Bool>::from_data(TensorData::new(others, [np, np]), &device);
    let pos = (pos_w * logits.clone()).sum_dim(1).reshape([np]);
    let neg = logits
        .exp()
        .mask_fill(others.bool_not(), 0.0)
        .sum_dim(1)
        .log()
        .reshape([np]);
    (pos - neg).mean().neg()
}
