//! Criterion benchmarks of the evaluation hot paths that run on every `eval`: the OpenOOD
//! metrics (AUROC, AUPR in/out, FPR@95) over 100,000 scores, and the feature-space scores
//! KNN (fit = normalise the bank, score = top-K cosine distance) and Mahalanobis (fit = class
//! means + shared precision, score = min distance over classes).
//!
//! Sizes are a tenth of CIFAR's bank (5,000 x 512 per fit, 1,000 queries) so a sample takes well
//! under a second; `bench scores` in the cli runs the full CIFAR scale (50,000 x 512 bank,
//! 10,000 queries) once. `cargo bench -p oodforge-eval --bench scores`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use oodforge_eval::metrics::ood_metrics;
use oodforge_eval::postprocess::knn::KnnBank;
use oodforge_eval::postprocess::mds::Mahalanobis;
use std::hint::black_box;

/// Deterministic pseudo-random values in [0, 1) (non-negative, like post-ReLU features).
fn uniform(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_add(1_442_695_040_888_963_407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect()
}

fn metrics(c: &mut Criterion) {
    // Overlapping ID / OOD confidences with ties (rounded to 1e-4), as softmax scores have.
    let round = |v: Vec<f64>, shift: f64| -> Vec<f64> {
        v.into_iter()
            .map(|x| ((x + shift) * 1e4).round() / 1e4)
            .collect()
    };
    let id = round(uniform(50_000, 1), 0.3);
    let ood = round(uniform(50_000, 2), 0.0);
    let mut group = c.benchmark_group("metrics");
    group.throughput(Throughput::Elements(100_000));
    group.bench_function("ood_metrics_100k", |b| {
        b.iter(|| black_box(ood_metrics(&id, &ood)))
    });
    group.finish();
}

const DIM: usize = 512;
const BANK: usize = 5_000;
const QUERIES: usize = 1_000;
const CLASSES: usize = 100;

fn knn(c: &mut Criterion) {
    let train = uniform(BANK * DIM, 3);
    let test = uniform(QUERIES * DIM, 4);
    let bank = KnnBank::fit(&train, DIM);
    let mut group = c.benchmark_group("knn");
    group.sample_size(20);
    group.bench_function(BenchmarkId::new("fit", format!("{BANK}x{DIM}")), |b| {
        b.iter(|| black_box(KnnBank::fit(&train, DIM)))
    });
    group.throughput(Throughput::Elements(QUERIES as u64));
    for k in [1, 50] {
        group.bench_function(BenchmarkId::new("score_k", k), |b| {
            b.iter(|| black_box(bank.scores(&test, &[k])))
        });
    }
    group.finish();
}

fn mahalanobis(c: &mut Criterion) {
    let train = uniform(BANK * DIM, 5);
    let labels: Vec<usize> = (0..BANK).map(|i| i % CLASSES).collect();
    let test = uniform(QUERIES * DIM, 6);
    let mds = Mahalanobis::fit(&train, &labels, CLASSES, DIM);
    let mut group = c.benchmark_group("mahalanobis");
    group.sample_size(10);
    group.bench_function(BenchmarkId::new("fit", format!("{BANK}x{DIM}")), |b| {
        b.iter(|| black_box(Mahalanobis::fit(&train, &labels, CLASSES, DIM)))
    });
    group.throughput(Throughput::Elements(QUERIES as u64));
    group.bench_function(
        BenchmarkId::new("score", format!("{CLASSES}_classes")),
        |b| b.iter(|| black_box(mds.scores(&test))),
    );
    group.finish();
}

criterion_group!(benches, metrics, knn, mahalanobis);
criterion_main!(benches);
