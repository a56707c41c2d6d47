//! NP-Mix outlier synthesis and A2D (MultiOOD, Dong et al., NeurIPS 2024; METHODS §6),
//! `HMDB-rgb-flow/train_video_flow.py` L74-184.
//!
//! Upstream keeps a FIFO queue of the last `sample_number` (detached) embeddings of every class.
//! Once every queue is full and `epoch >= start_epoch`, each step synthesises one outlier per
//! class: the mixture `lam e_i + (1 - lam) e_j` of a random queued embedding of class i and one of
//! class j, a random one of i's `nn_k - 1` nearest classes (k-d tree over the class means),
//! `lam ~ Beta(10, 10)`. The outliers go through the prediction heads only, and the loss
//! maximises their normalised entropy (and, with two heads, their disagreement).
//!
//! **Adaptation to one image classifier (ours, METHODS §6.6):** the queued embedding is the
//! penultimate feature and the head is the classifier's linear head. A2D (Agree-to-Disagree)
//! needs two prediction heads, which an oodforge classifier does not have; its loss functions are
//! here, tested against the official numbers, for a two-head model.

use burn::tensor::activation::softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use oodforge_core::config::A2dDistance;
use rand::Rng;
use rand_distr::{Beta, Distribution};

/// Per-class FIFO queues of detached embeddings (`data_dict` / `number_dict` upstream).
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureBank {
    pub num_classes: usize,
    pub capacity: usize,
    pub dim: usize,
    /// `[num_classes][capacity * dim]`, oldest row first.
    pub queues: Vec<Vec<f64>>,
    /// Rows filled per class.
    pub counts: Vec<usize>,
}

/// The random draws that synthesise one class's outlier, in upstream call order:
/// `choice(sample_number, 1)`, `choice(neighbours)`, `choice(sample_number, 1)`, `beta`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NpMixDraw {
    /// Row of the class's own queue.
    pub own_row: usize,
    /// Position in the class's neighbour list (nearest first, the class itself excluded).
    pub neighbour: usize,
    /// Row of the neighbour's queue.
    pub neighbour_row: usize,
    pub lam: f64,
}

impl FeatureBank {
    pub fn new(num_classes: usize, capacity: usize, dim: usize) -> Self {
        Self {
            num_classes,
            capacity,
            dim,
            queues: vec![vec![0.0; capacity * dim]; num_classes],
            counts: vec![0; num_classes],
        }
    }

    /// Every queue holds `capacity` embeddings.
    pub fn is_full(&self) -> bool {
        self.counts.iter().all(|&c| c == self.capacity)
    }

    /// Add a batch (`features` row-major `[labels.len(), dim]`) in batch order. While some queue
    /// is not full, only queues with room take rows (the fill phase); afterwards every row enters
    /// its class's queue and pushes the oldest out.
    pub fn push(&mut self, features: &[f64], labels: &[usize]) {
        let full = self.is_full();
        let d = self.dim;
        for (row, &c) in features.chunks(d).zip(labels) {
            if full {
                let q = &mut self.queues[c];
                q.copy_within(d.., 0);
                q[(self.capacity - 1) * d..].copy_from_slice(row);
            } else if self.counts[c] < self.capacity {
                let at = self.counts[c] * d;
                self.queues[c][at..at + d].copy_from_slice(row);
                self.counts[c] += 1;
            }
        }
    }

    /// Mean of each queue, `[num_classes][dim]` (`id_feature_proto`).
    pub fn prototypes(&self) -> Vec<Vec<f64>> {
        self.queues
            .iter()
            .map(|q| {
                let mut m = vec![0.0; self.dim];
                for row in q.chunks(self.dim) {
                    m.iter_mut().zip(row).for_each(|(a, b)| *a += b);
                }
                m.iter_mut().for_each(|a| *a /= self.capacity as f64);
                m
            })
            .collect()
    }

    /// For each class, the `k` nearest other classes by Euclidean distance between prototypes,
    /// nearest first (scipy's `KDTree.query(proto_i, k=k+1).ind[1:]`; exact, ties by index).
    pub fn neighbours(&self, k: usize) -> Vec<Vec<usize>> {
        let protos = self.prototypes();
        let k = k.min(self.num_classes - 1);
        (0..self.num_classes)
            .map(|i| {
                let mut d: Vec<(f64, usize)> = (0..self.num_classes)
                    .filter(|&j| j != i)
                    .map(|j| {
                        let s: f64 = protos[i]
                            .iter()
                            .zip(&protos[j])
                            .map(|(a, b)| (a - b) * (a - b))
                            .sum();
                        (s, j)
                    })
                    .collect();
                d.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                d.into_iter().take(k).map(|(_, j)| j).collect()
            })
            .collect()
    }

    /// Draw one outlier's randomness per class, in upstream order.
    pub fn draw(
        &self,
        neighbours: usize,
        beta_a: f64,
        beta_b: f64,
        rng: &mut impl Rng,
    ) -> Vec<NpMixDraw> {
        let beta = Beta::new(beta_a, beta_b).expect("Beta parameters validated by the config");
        let n = neighbours.min(self.num_classes - 1);
        (0..self.num_classes)
            .map(|_| NpMixDraw {
                own_row: rng.random_range(0..self.capacity),
                neighbour: rng.random_range(0..n),
                neighbour_row: rng.random_range(0..self.capacity),
                lam: beta.sample(rng),
            })
            .collect()
    }

    /// The synthesised outliers `[num_classes][dim]`: row i mixes class i with its drawn neighbour.
    pub fn synthesize(&self, neighbours: &[Vec<usize>], draws: &[NpMixDraw]) -> Vec<Vec<f64>> {
        let d = self.dim;
        draws
            .iter()
            .enumerate()
            .map(|(i, dr)| {
                let j = neighbours[i][dr.neighbour];
                let a = &self.queues[i][dr.own_row * d..(dr.own_row + 1) * d];
                let b = &self.queues[j][dr.neighbour_row * d..(dr.neighbour_row + 1) * d];
                a.iter()
                    .zip(b)
                    .map(|(x, y)| dr.lam * x + (1.0 - dr.lam) * y)
                    .collect()
            })
            .collect()
    }
}

/// Rows as a `[n, dim]` tensor of `like`'s dtype on its device.
pub fn rows_tensor(rows: &[Vec<f64>], like: &Tensor<2>) -> Tensor<2> {
    let dim = rows.first().map_or(0, Vec::len);
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    let device: Device = like.device();
    Tensor::from_data(
        TensorData::new(flat, [rows.len(), dim]),
        (&device, like.dtype()),
    )
}

/// `-mean_i H(softmax(z_i)) / log K` with `H(p) = -sum p log(p + 1e-9)`
/// (`normalized_prediction_entropy`; upstream computes `log K` in float32).
pub fn neg_normalized_entropy(logits: Tensor<2>) -> Tensor<1> {
    let [n, k] = logits.dims();
    let p = softmax(logits, 1);
    let h = (p.clone() * p.add_scalar(1e-9).log())
        .sum_dim(1)
        .reshape([n])
        .neg();
    let log_k = f64::from((k as f32).ln());
    h.mul_scalar(1.0 / log_k).mean().neg()
}

/// The discrepancy of two `[n, k]` probability batches.
pub fn discrepancy(p: Tensor<2>, q: Tensor<2>, kind: A2dDistance) -> Tensor<1> {
    match kind {
        A2dDistance::L1 => (p - q).abs().mean(),
        A2dDistance::L2 => (p - q).square().mean(),
        A2dDistance::Hellinger => {
            let [n, _] = p.dims();
            let d = p.clamp_min(1e-6).sqrt() - q.clamp_min(1e-6).sqrt();
            // Upstream divides by `torch.sqrt(torch.tensor(2.0))`, a tensor of the default
            // dtype: the golden fixture (float64 default) matches sqrt(2) in float64.
            d.square()
                .sum_dim(1)
                .sqrt()
                .reshape([n])
                .mean()
                .mul_scalar(1.0 / std::f64::consts::SQRT_2)
        }
        A2dDistance::Wasserstein => {
            let w = |x: Tensor<2>, y: Tensor<2>| {
                let [n, k] = x.dims();
                let [m, _] = y.dims();
                let diff = x.unsqueeze_dim::<3>(1).expand([n, m, k])
                    - y.unsqueeze_dim::<3>(0).expand([n, m, k]);
                diff.square()
                    .sum_dim(2)
                    .sqrt()
                    .reshape([n, m])
                    .min_dim(1)
                    .mean()
            };
            (w(p.clone(), q.clone()) + w(q, p)).mul_scalar(1.0 / 2.0)
        }
    }
}

/// The logits without each sample's ground-truth column, `[n, k - 1]` (A2D on ID samples).
pub fn drop_label_column(logits: Tensor<2>, labels: &[usize]) -> Tensor<2> {
    let [n, k] = logits.dims();
    let idx: Vec<i64> = labels
        .iter()
        .flat_map(|&y| (0..k).filter(move |&c| c != y).map(|c| c as i64))
        .collect();
    let device: Device = logits.device();
    logits.gather(
        1,
        Tensor::<2, Int>::from_data(TensorData::new(idx, [n, k - 1]), &device),
    )
}

/// A2D on ID samples: `-D(softmax(a without y), softmax(b without y))`.
pub fn a2d_loss(
    logits_a: Tensor<2>,
    logits_b: Tensor<2>,
    labels: &[usize],
    kind: A2dDistance,
) -> Tensor<1> {
    let p = softmax(drop_label_column(logits_a, labels), 1);
    let q = softmax(drop_label_column(logits_b, labels), 1);
    discrepancy(p, q, kind).neg()
}

/// A2D on synthesised outliers: `-D(softmax(a), softmax(b))` over all classes.
pub fn a2d_outlier_loss(logits_a: Tensor<2>, logits_b: Tensor<2>, kind: A2dDistance) -> Tensor<1> {
    discrepancy(softmax(logits_a, 1), softmax(logits_b, 1), kind).neg()
}
