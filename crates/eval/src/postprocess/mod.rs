//! Post-hoc OOD scores over cached logits, in f64. Every score is a confidence: higher = more
//! in-distribution (OpenOOD's convention, `openood/postprocessors/*`).

pub mod fitted;
pub mod generalized_entropy;
pub mod knn;
pub mod mds;
pub mod palm_mahalanobis;
pub mod react;
pub mod vim;

use oodforge_core::config::PostprocessorConfig;

/// The classifier head `z = W f + b` (`W [classes, dim]`, PyTorch's Linear layout), which ReAct,
/// ASH and ViM apply to (modified) features.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    pub w: Vec<f64>,
    pub b: Vec<f64>,
    pub classes: usize,
    pub dim: usize,
}

impl Head {
    pub fn new(w: Vec<f64>, b: Vec<f64>, classes: usize, dim: usize) -> Self {
        assert_eq!(w.len(), classes * dim, "W is [classes, dim]");
        assert_eq!(b.len(), classes, "b is [classes]");
        Self { w, b, classes, dim }
    }

    /// `W f + b`.
    pub fn apply(&self, f: &[f64]) -> Vec<f64> {
        self.w
            .chunks_exact(self.dim)
            .zip(&self.b)
            .map(|(row, b)| b + row.iter().zip(f).map(|(w, x)| w * x).sum::<f64>())
            .collect()
    }
}

/// Network outputs of one dataset: row-major logits `[n, num_classes]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Logits {
    pub data: Vec<f32>,
    pub num_classes: usize,
}

impl Logits {
    pub fn new(data: Vec<f32>, num_classes: usize) -> Self {
        assert!(
            num_classes > 0 && data.len().is_multiple_of(num_classes),
            "logits must be [n, num_classes]"
        );
        Self { data, num_classes }
    }

    pub fn len(&self) -> usize {
        self.data.len() / self.num_classes
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn rows(&self) -> impl Iterator<Item = &[f32]> {
        self.data.chunks_exact(self.num_classes)
    }

    /// Predicted class per row (first maximum, as `torch.max`).
    pub fn argmax(&self) -> Vec<usize> {
        self.rows().map(argmax::<f32>).collect()
    }
}

/// Index of the first maximum (`torch.argmax` / `torch.max` pick the first on ties).
pub fn argmax<T: PartialOrd>(row: &[T]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

/// Confidence of every row under a post-processor that reads only the logits (see
/// [`score_row`]); the others are scored through [`fitted::Fitted`].
pub fn scores(pp: &PostprocessorConfig, logits: &Logits) -> Vec<f64> {
    logits
        .rows()
        .map(|row| {
            let z: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
            score_row(pp, &z).expect("a logit-only post-processor")
        })
        .collect()
}

/// Confidence of one row of logits, for the post-processors that read nothing else (MSP,
/// MaxLogit, Energy, GEN); `None` for those that need features, statistics or the network.
pub fn score_row(pp: &PostprocessorConfig, z: &[f64]) -> Option<f64> {
    Some(match pp {
        PostprocessorConfig::Msp {} => msp(z),
        PostprocessorConfig::MaxLogit {} => max(z),
        PostprocessorConfig::Energy { temperature } => energy(z, *temperature),
        PostprocessorConfig::Gen { gamma, top_m } => generalized_entropy::score(z, *gamma, *top_m),
        _ => return None,
    })
}

/// max_k softmax(z)_k (OpenOOD `BasePostprocessor`: `torch.max(torch.softmax(output, 1), 1)`).
pub fn msp(z: &[f64]) -> f64 {
    let m = max(z);
    let sum: f64 = z.iter().map(|v| (v - m).exp()).sum();
    1.0 / sum
}

/// max_k z_k (OpenOOD `MaxLogitPostprocessor`).
pub fn max(z: &[f64]) -> f64 {
    z.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// T·logsumexp(z/T) (OpenOOD `EBOPostprocessor`: `temperature * torch.logsumexp(output /
/// temperature, dim=1)`); the negative free energy of Liu et al. 2020.
pub fn energy(z: &[f64], temperature: f64) -> f64 {
    let scaled: Vec<f64> = z.iter().map(|v| v / temperature).collect();
    temperature * logsumexp(&scaled)
}

/// `softmax(z)`.
pub fn softmax(z: &[f64]) -> Vec<f64> {
    let m = max(z);
    let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

pub fn logsumexp(z: &[f64]) -> f64 {
    let m = max(z);
    if !m.is_finite() {
        return m;
    }
    m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}
