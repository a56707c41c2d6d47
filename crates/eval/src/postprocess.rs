//! Post-hoc OOD scores over cached logits, in f64. Every score is a confidence: higher = more
//! in-distribution (OpenOOD's convention, `openood/postprocessors/*`).

use oodforge_core::config::PostprocessorConfig;

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
        self.rows().map(argmax).collect()
    }
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

/// Confidence of every row under one post-processor.
pub fn scores(pp: &PostprocessorConfig, logits: &Logits) -> Vec<f64> {
    logits
        .rows()
        .map(|row| {
            let z: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
            score_row(pp, &z)
        })
        .collect()
}

/// Confidence of one row of logits.
pub fn score_row(pp: &PostprocessorConfig, z: &[f64]) -> f64 {
    match pp {
        PostprocessorConfig::Msp {} => msp(z),
        PostprocessorConfig::MaxLogit {} => max(z),
        PostprocessorConfig::Energy { temperature } => energy(z, *temperature),
    }
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

pub fn logsumexp(z: &[f64]) -> f64 {
    let m = max(z);
    if !m.is_finite() {
        return m;
    }
    m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}
