//! Batches as float buffers ready for a tensor: epoch order, augmentation, normalisation.
//!
//! Training transform (OpenOOD CIFAR `train` preprocessor order): horizontal flip, random crop
//! with zero padding (torchvision `RandomCrop(32, padding=4)` pads the image with black before
//! `ToTensor`), then `Normalize(mean, std)`. Test transform: normalise only. All draws come from
//! `rng::stream(seed, Shuffle, epoch, 0)` and `rng::stream(seed, Augment, epoch, step)`.

use crate::images::ImageSet;
use burn::data::dataset::Dataset;
use oodforge_core::config::AugmentConfig;
use oodforge_core::rng::{Purpose, stream};
use rand::Rng;
use rand::seq::SliceRandom;

/// Per-channel normalisation by ID statistics, applied to every set (METHODS §8.2).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Normalizer {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalizer {
    /// Channel mean and (population) standard deviation of a set's pixels in [0, 1].
    pub fn from_images(set: &ImageSet) -> Self {
        let hw = set.height * set.width;
        let mut sum = [0f64; 3];
        let mut sq = [0f64; 3];
        for img in set.images.chunks_exact(3 * hw) {
            for c in 0..3 {
                for &p in &img[c * hw..(c + 1) * hw] {
                    let v = f64::from(p) / 255.0;
                    sum[c] += v;
                    sq[c] += v * v;
                }
            }
        }
        let n = (set.len() * hw) as f64;
        let mut mean = [0f32; 3];
        let mut std = [0f32; 3];
        for c in 0..3 {
            let m = sum[c] / n;
            mean[c] = m as f32;
            std[c] = ((sq[c] / n - m * m).max(1e-12)).sqrt() as f32;
        }
        Self { mean, std }
    }
}

/// A batch: `images` is `[n, 3, h, w]` row-major f32, normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub images: Vec<f32>,
    pub labels: Vec<usize>,
    pub shape: [usize; 4],
}

/// The batches of one training epoch as index lists: a seeded permutation cut into
/// `batch_size` pieces. The last partial batch is kept (PyTorch `DataLoader` default,
/// `drop_last=False`) unless it has a single sample, which BatchNorm cannot train on.
pub fn epoch_batches(n: usize, batch_size: usize, seed: u64, epoch: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut stream(seed, Purpose::Shuffle, epoch as u64, 0));
    order
        .chunks(batch_size)
        .filter(|c| c.len() > 1 || n == 1)
        .map(<[usize]>::to_vec)
        .collect()
}

/// Number of training steps per epoch (what `epoch_batches` yields).
pub fn steps_per_epoch(n: usize, batch_size: usize) -> usize {
    let full = n / batch_size;
    let rest = n % batch_size;
    full + usize::from(rest > 1 || (n == 1 && rest == 1))
}

/// An augmented, normalised training batch. `step` is the global step, which keys the draws.
pub fn train_batch(
    set: &ImageSet,
    indices: &[usize],
    augment: &AugmentConfig,
    norm: &Normalizer,
    seed: u64,
    epoch: usize,
    step: usize,
) -> Batch {
    let mut rng = stream(seed, Purpose::Augment, epoch as u64, step as u64);
    let (h, w) = (set.height, set.width);
    let pad = augment.random_crop_padding;
    let mut images = Vec::with_capacity(indices.len() * 3 * h * w);
    let mut labels = Vec::with_capacity(indices.len());
    for &i in indices {
        let item = set.get(i).expect("batch indices come from the set");
        // Flip first, then crop (OpenOOD: RandomHorizontalFlip before RandomCrop).
        let flip = augment.horizontal_flip && rng.random_bool(0.5);
        let (dy, dx) = if pad > 0 {
            (rng.random_range(0..=2 * pad), rng.random_range(0..=2 * pad))
        } else {
            (0, 0)
        };
        for c in 0..3 {
            let plane = &item.image[c * h * w..(c + 1) * h * w];
            for y in 0..h {
                for x in 0..w {
                    let sy = (y + dy) as isize - pad as isize;
                    let sx = (x + dx) as isize - pad as isize;
                    let raw = if sy < 0 || sx < 0 || sy >= h as isize || sx >= w as isize {
                        0
                    } else {
                        let sx = if flip {
                            w - 1 - sx as usize
                        } else {
                            sx as usize
                        };
                        plane[sy as usize * w + sx]
                    };
                    images.push((f32::from(raw) / 255.0 - norm.mean[c]) / norm.std[c]);
                }
            }
        }
        labels.push(item.label);
    }
    Batch {
        images,
        labels,
        shape: [indices.len(), 3, h, w],
    }
}

/// A normalised evaluation batch of `range` (no augmentation).
pub fn eval_batch(set: &ImageSet, range: std::ops::Range<usize>, norm: &Normalizer) -> Batch {
    let (h, w) = (set.height, set.width);
    let hw = h * w;
    let n = range.len();
    let mut images = Vec::with_capacity(n * 3 * hw);
    for i in range.clone() {
        let img = set.image(i);
        for c in 0..3 {
            images.extend(
                img[c * hw..(c + 1) * hw]
                    .iter()
                    .map(|&p| (f32::from(p) / 255.0 - norm.mean[c]) / norm.std[c]),
            );
        }
    }
    Batch {
        images,
        labels: set.labels[range].to_vec(),
        shape: [n, 3, h, w],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> ImageSet {
        // Two 2x3 images whose pixel value encodes (image, channel, y, x).
        let mut images = Vec::new();
        for i in 0..2u8 {
            for c in 0..3u8 {
                for y in 0..2u8 {
                    for x in 0..3u8 {
                        images.push(100 * i + 30 * c + 10 * y + x);
                    }
                }
            }
        }
        ImageSet::new("t", images, vec![0, 1], 2, 3)
    }

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_batches(10, 4, 1, 0);
        assert_eq!(a, epoch_batches(10, 4, 1, 0));
        assert_ne!(a, epoch_batches(10, 4, 1, 1));
        let mut all: Vec<usize> = a.concat();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(a.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 4, 2]);
        // A trailing single sample is dropped.
        assert_eq!(epoch_batches(9, 4, 1, 0).len(), 2);
        assert_eq!(steps_per_epoch(9, 4), 2);
        assert_eq!(steps_per_epoch(10, 4), 3);
    }

    #[test]
    fn no_augmentation_is_plain_normalisation() {
        let s = set();
        let norm = Normalizer {
            mean: [0.0; 3],
            std: [1.0 / 255.0; 3],
        };
        let aug = AugmentConfig {
            random_crop_padding: 0,
            horizontal_flip: false,
        };
        let b = train_batch(&s, &[1, 0], &aug, &norm, 0, 0, 0);
        assert_eq!(b.shape, [2, 3, 2, 3]);
        assert_eq!(b.labels, vec![1, 0]);
        let want: Vec<f32> = s
            .image(1)
            .iter()
            .chain(s.image(0))
            .map(|&p| f32::from(p))
            .collect();
        for (g, w) in b.images.iter().zip(&want) {
            assert!((g - w).abs() < 1e-3, "{g} vs {w}");
        }
        assert_eq!(eval_batch(&s, 0..2, &norm).images.len(), 36);
    }

    #[test]
    fn crop_pads_with_black_and_flip_mirrors() {
        let s = set();
        let norm = Normalizer {
            mean: [0.0; 3],
            std: [1.0 / 255.0; 3],
        };
        let aug = AugmentConfig {
            random_crop_padding: 1,
            horizontal_flip: true,
        };
        let mut saw_zero = false;
        let mut saw_flip = false;
        for step in 0..50 {
            let b = train_batch(&s, &[0], &aug, &norm, 3, 0, step);
            let px: Vec<u8> = b.images.iter().map(|v| v.round() as u8).collect();
            saw_zero |= px.contains(&0) && px[..6].iter().filter(|p| **p == 0).count() < 6;
            // Row 0 of channel 0 is [0, 1, 2] unflipped; a flip without shift gives [2, 1, 0].
            saw_flip |= px[..3] == [2, 1, 0];
            // Every non-zero value is a pixel of image 0.
            assert!(px.iter().all(|p| *p == 0 || s.image(0).contains(p)));
        }
        assert!(saw_zero && saw_flip);
    }

    #[test]
    fn normalizer_measures_channel_statistics() {
        let images: Vec<u8> = [[0u8; 4], [255; 4], [0, 255, 0, 255]].concat();
        let s = ImageSet::new("n", images, vec![0], 2, 2);
        let n = Normalizer::from_images(&s);
        assert_eq!(n.mean, [0.0, 1.0, 0.5]);
        assert!((n.std[2] - 0.5).abs() < 1e-6 && n.std[0] < 1e-5);
    }
}
