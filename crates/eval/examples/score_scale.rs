//! Wall time of the feature-space scores at CIFAR scale: KNN over a 50,000 x 512 bank for
//! 10,000 queries (K = 50), and Mahalanobis fit + score with 100 classes.
//! `cargo run --release -p oodforge-eval --example score_scale` (or the dev profile, whose
//! dependencies are optimised too: `target/debug/examples/score_scale`).

use oodforge_eval::postprocess::knn::KnnBank;
use oodforge_eval::postprocess::mds::Mahalanobis;
use std::time::Instant;

/// Deterministic pseudo-random features in [0, 1) (non-negative, like post-ReLU features).
fn features(n: usize, d: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_add(1442695040888963407);
    (0..n * d)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect()
}

fn main() {
    let d = 512;
    let train = features(50_000, d, 1);
    let test = features(10_000, d, 2);
    let t = Instant::now();
    let bank = KnnBank::fit(&train, d);
    let fit = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let s = bank.scores(&test, &[50]);
    println!(
        "knn: fit {fit:.2} s, 10000 queries x 50000 bank (K=50) {:.2} s (first score {:.4})",
        t.elapsed().as_secs_f64(),
        s[0][0]
    );
    let labels: Vec<usize> = (0..50_000).map(|i| i % 100).collect();
    let t = Instant::now();
    let m = Mahalanobis::fit(&train, &labels, 100, d);
    let fit = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let s = m.scores(&test);
    println!(
        "mds: fit {fit:.2} s, score 10000 x 100 classes {:.2} s (first score {:.2})",
        t.elapsed().as_secs_f64(),
        s[0]
    );
}
