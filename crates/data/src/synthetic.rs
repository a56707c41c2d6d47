//! The built-in synthetic benchmark: 32x32 RGB images of shapes, generated deterministically
//! from a seed, with no files.
//!
//! - **ID**: up to 10 shape families (disk, square, triangle, plus, ring, diamond, X, bar,
//!   frame, star), each image with a random foreground colour, a random two-colour gradient
//!   background, scale / position / rotation jitter and pixel noise. Colour carries no class
//!   information, so the network has to learn shape.
//! - **Near-OOD** (held-out shape families, same rendering): `unseen_curved` (crescent,
//!   half-disk) and `unseen_angular` (T, L).
//! - **Far-OOD**, images with no object: `noise` (smooth value noise, or a gradient under
//!   strong pixel noise) and `textures` (full-contrast gratings, checkerboards, plaids).
//! - **Outliers** for OE-style training, disjoint from every test OOD set by generator: other
//!   shapes (hourglass, arrow, twin disks), random strokes and smooth colour blobs.
//!
//! Image `i` of split `s` is drawn from its own stream `rng::stream(data_seed, Data, s, i)`, so
//! the sets do not depend on the number of threads that generate them.

// Pixel loops index several buffers (canvas, colours) by the same channel index.
#![allow(clippy::needless_range_loop)]

use crate::images::ImageSet;
use oodforge_core::Group;
use oodforge_core::config::SyntheticConfig;
use oodforge_core::rng::{Purpose, stream};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::f32::consts::PI;

pub const SIZE: usize = 32;

/// Every shape the generator can draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Disk,
    Square,
    Triangle,
    Plus,
    Ring,
    Diamond,
    Cross,
    Bar,
    Frame,
    Star,
    // near-OOD
    Crescent,
    HalfDisk,
    Tee,
    Ell,
    // outliers
    Hourglass,
    Arrow,
    TwinDisks,
}

/// ID classes, in label order.
const ID_SHAPES: [Shape; 10] = [
    Shape::Disk,
    Shape::Square,
    Shape::Triangle,
    Shape::Plus,
    Shape::Ring,
    Shape::Diamond,
    Shape::Cross,
    Shape::Bar,
    Shape::Frame,
    Shape::Star,
];

pub const ID_CLASS_NAMES: [&str; 10] = [
    "disk", "square", "triangle", "plus", "ring", "diamond", "cross", "bar", "frame", "star",
];

/// Does the unit-scale shape cover local point (u, v), v pointing up?
fn inside(shape: Shape, u: f32, v: f32) -> bool {
    let r2 = u * u + v * v;
    let plus =
        |u: f32, v: f32| (u.abs() < 0.28 && v.abs() < 0.95) || (v.abs() < 0.28 && u.abs() < 0.95);
    match shape {
        Shape::Disk => r2 < 0.9,
        Shape::Square => u.abs().max(v.abs()) < 0.78,
        Shape::Triangle => v > -0.55 && v < 0.95 - 1.732 * u.abs(),
        Shape::Plus => plus(u, v),
        Shape::Ring => (0.30..0.90).contains(&r2),
        Shape::Diamond => u.abs() + v.abs() < 1.0,
        Shape::Cross => plus(
            (u + v) * std::f32::consts::FRAC_1_SQRT_2,
            (v - u) * std::f32::consts::FRAC_1_SQRT_2,
        ),
        Shape::Bar => (u / 0.98).powi(2) + (v / 0.38).powi(2) < 1.0,
        Shape::Frame => (0.50..0.86).contains(&u.abs().max(v.abs())),
        Shape::Star => {
            let theta = v.atan2(u) + PI / 2.0;
            r2.sqrt() < 0.48 + 0.45 * (5.0 * theta).cos()
        }
        Shape::Crescent => r2 < 0.9 && (u - 0.45).powi(2) + v * v > 0.5,
        Shape::HalfDisk => r2 < 0.9 && v > -0.1,
        Shape::Tee => {
            (u.abs() < 0.9 && (0.45..0.9).contains(&v))
                || (u.abs() < 0.22 && (-0.9..0.5).contains(&v))
        }
        Shape::Ell => {
            ((-0.85..-0.42).contains(&u) && v.abs() < 0.9)
                || ((-0.9..-0.48).contains(&v) && (-0.85..0.8).contains(&u))
        }
        Shape::Hourglass => u.abs() < v.abs() && v.abs() < 0.9,
        Shape::Arrow => {
            (v.abs() < 0.2 && (-0.9..0.2).contains(&u))
                || ((0.2..0.95).contains(&u) && v.abs() < 0.95 - u)
        }
        Shape::TwinDisks => (u + 0.48).powi(2) + v * v < 0.17 || (u - 0.48).powi(2) + v * v < 0.17,
    }
}

/// A float RGB canvas in [0, 1], HWC.
struct Canvas([f32; SIZE * SIZE * 3]);

impl Canvas {
    fn gradient(rng: &mut ChaCha8Rng) -> (Self, [f32; 3]) {
        let c0 = rgb(rng);
        let c1 = rgb(rng);
        let angle: f32 = rng.random_range(0.0..2.0 * PI);
        let (dx, dy) = (angle.cos(), angle.sin());
        let mut px = [0.0; SIZE * SIZE * 3];
        for y in 0..SIZE {
            for x in 0..SIZE {
                let t = 0.5 + 0.5 * (dx * ndc(x) + dy * ndc(y)) * std::f32::consts::FRAC_1_SQRT_2;
                for c in 0..3 {
                    px[(y * SIZE + x) * 3 + c] = c0[c] * (1.0 - t) + c1[c] * t;
                }
            }
        }
        let mean = [
            (c0[0] + c1[0]) / 2.0,
            (c0[1] + c1[1]) / 2.0,
            (c0[2] + c1[2]) / 2.0,
        ];
        (Self(px), mean)
    }

    /// An ID background: a gradient, half of the time with low-contrast clutter (a grating or
    /// blocky noise), so that the network must rely on the shape, not on the mere presence of
    /// texture or high frequencies.
    fn cluttered(rng: &mut ChaCha8Rng) -> (Self, [f32; 3]) {
        let (mut canvas, mean) = Self::gradient(rng);
        match rng.random_range(0..4) {
            0 | 1 => {}
            2 => {
                let amp: f32 = rng.random_range(0.08..0.25);
                let freq: f32 = rng.random_range(2.0..8.0);
                let angle: f32 = rng.random_range(0.0..PI);
                let phase: f32 = rng.random_range(0.0..2.0 * PI);
                let tint = rgb(rng);
                for y in 0..SIZE {
                    for x in 0..SIZE {
                        let a = (PI * freq * (angle.cos() * ndc(x) + angle.sin() * ndc(y)) + phase)
                            .sin();
                        for c in 0..3 {
                            canvas.0[(y * SIZE + x) * 3 + c] += amp * a * (0.5 + tint[c]) / 1.5;
                        }
                    }
                }
            }
            _ => {
                let amp: f32 = rng.random_range(0.08..0.25);
                let block = [2usize, 4, 8][rng.random_range(0..3)];
                let cells = SIZE / block;
                let grid: Vec<[f32; 3]> = (0..cells * cells).map(|_| rgb(rng)).collect();
                for y in 0..SIZE {
                    for x in 0..SIZE {
                        let g = grid[(y / block) * cells + x / block];
                        for c in 0..3 {
                            canvas.0[(y * SIZE + x) * 3 + c] += amp * (g[c] - 0.5);
                        }
                    }
                }
            }
        }
        (canvas, mean)
    }

    fn add_noise(&mut self, rng: &mut ChaCha8Rng, sigma: f32) {
        for v in self.0.iter_mut() {
            *v += sigma * gaussian(rng);
        }
    }

    /// CHW u8, as the rest of the pipeline stores images.
    fn to_chw_u8(&self) -> Vec<u8> {
        let mut out = vec![0u8; 3 * SIZE * SIZE];
        for y in 0..SIZE {
            for x in 0..SIZE {
                for c in 0..3 {
                    let v = self.0[(y * SIZE + x) * 3 + c].clamp(0.0, 1.0);
                    out[c * SIZE * SIZE + y * SIZE + x] = (v * 255.0).round() as u8;
                }
            }
        }
        out
    }
}

/// Pixel centre in [-1, 1].
fn ndc(i: usize) -> f32 {
    (i as f32 + 0.5) / SIZE as f32 * 2.0 - 1.0
}

fn rgb(rng: &mut ChaCha8Rng) -> [f32; 3] {
    [rng.random(), rng.random(), rng.random()]
}

fn luma(c: [f32; 3]) -> f32 {
    0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
}

/// Standard normal by Box-Muller (one of the pair; simplicity over speed).
fn gaussian(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
}

/// A foreground colour that stands out from the background.
fn contrasting(rng: &mut ChaCha8Rng, bg: [f32; 3]) -> [f32; 3] {
    let mut best = rgb(rng);
    for _ in 0..16 {
        if (luma(best) - luma(bg)).abs() > 0.3 {
            break;
        }
        best = rgb(rng);
    }
    best
}

/// One shape image: cluttered gradient background, jittered shape, 2x2 super-sampled edges, noise.
fn render_shape(shape: Shape, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let (mut canvas, bg) = Canvas::cluttered(rng);
    let fg = contrasting(rng, bg);
    let scale: f32 = rng.random_range(0.45..0.85);
    let max_shift = (1.0 - scale) * 0.8;
    let cx: f32 = rng.random_range(-max_shift..max_shift);
    let cy: f32 = rng.random_range(-max_shift..max_shift);
    let rot: f32 = rng.random_range(-0.35..0.35);
    let (s, c) = rot.sin_cos();
    for y in 0..SIZE {
        for x in 0..SIZE {
            let mut cover = 0.0;
            for (oy, ox) in [
                (-0.25f32, -0.25f32),
                (-0.25, 0.25),
                (0.25, -0.25),
                (0.25, 0.25),
            ] {
                let px = ((x as f32 + 0.5 + ox) / SIZE as f32 * 2.0 - 1.0 - cx) / scale;
                // Image rows grow downwards; shapes are defined with v pointing up.
                let py = -((y as f32 + 0.5 + oy) / SIZE as f32 * 2.0 - 1.0 - cy) / scale;
                let (u, v) = (c * px + s * py, -s * px + c * py);
                if inside(shape, u, v) {
                    cover += 0.25;
                }
            }
            if cover > 0.0 {
                for ch in 0..3 {
                    let p = &mut canvas.0[(y * SIZE + x) * 3 + ch];
                    *p = *p * (1.0 - cover) + fg[ch] * cover;
                }
            }
        }
    }
    let sigma = rng.random_range(0.02..0.10);
    canvas.add_noise(rng, sigma);
    canvas.to_chw_u8()
}

/// Far-OOD noise, with no object in it: smooth value noise (a coarse random colour grid,
/// bilinearly interpolated) or a plain gradient under strong Gaussian pixel noise.
fn render_noise(rng: &mut ChaCha8Rng) -> Vec<u8> {
    if rng.random_bool(0.5) {
        let (mut canvas, _) = Canvas::gradient(rng);
        let sigma = rng.random_range(0.10..0.30);
        canvas.add_noise(rng, sigma);
        return canvas.to_chw_u8();
    }
    let cells = [3usize, 5, 9][rng.random_range(0..3)];
    let grid: Vec<[f32; 3]> = (0..cells * cells).map(|_| rgb(rng)).collect();
    let mut px = [0.0; SIZE * SIZE * 3];
    for y in 0..SIZE {
        for x in 0..SIZE {
            let gy = y as f32 / (SIZE - 1) as f32 * (cells - 1) as f32;
            let gx = x as f32 / (SIZE - 1) as f32 * (cells - 1) as f32;
            let (y0, x0) = ((gy as usize).min(cells - 2), (gx as usize).min(cells - 2));
            let (ty, tx) = (gy - y0 as f32, gx - x0 as f32);
            for c in 0..3 {
                let at = |yy: usize, xx: usize| grid[yy * cells + xx][c];
                let top = at(y0, x0) * (1.0 - tx) + at(y0, x0 + 1) * tx;
                let bottom = at(y0 + 1, x0) * (1.0 - tx) + at(y0 + 1, x0 + 1) * tx;
                px[(y * SIZE + x) * 3 + c] = top * (1.0 - ty) + bottom * ty;
            }
        }
    }
    Canvas(px).to_chw_u8()
}

/// Far-OOD textures: sinusoidal gratings, checkerboards and plaids in two colours.
fn render_texture(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let kind = rng.random_range(0..3);
    let c0 = rgb(rng);
    let c1 = rgb(rng);
    let freq: f32 = rng.random_range(1.5..6.0);
    let angle: f32 = rng.random_range(0.0..PI);
    let phase: f32 = rng.random_range(0.0..2.0 * PI);
    let (dx, dy) = (angle.cos(), angle.sin());
    let mut px = [0.0; SIZE * SIZE * 3];
    for y in 0..SIZE {
        for x in 0..SIZE {
            let (u, v) = (ndc(x), ndc(y));
            let a = (PI * freq * (dx * u + dy * v) + phase).sin();
            let b = (PI * freq * (-dy * u + dx * v) + phase).sin();
            let t = match kind {
                0 => 0.5 + 0.5 * a,
                1 => f32::from(u8::from(a * b > 0.0)),
                _ => 0.5 + 0.25 * (a + b),
            };
            for c in 0..3 {
                px[(y * SIZE + x) * 3 + c] = c0[c] * (1.0 - t) + c1[c] * t;
            }
        }
    }
    let mut canvas = Canvas(px);
    canvas.add_noise(rng, 0.03);
    canvas.to_chw_u8()
}

/// Outliers: random strokes on a gradient.
fn render_strokes(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let (mut canvas, bg) = Canvas::gradient(rng);
    let n = rng.random_range(2..6);
    for _ in 0..n {
        let fg = contrasting(rng, bg);
        let (x0, y0, x1, y1): (f32, f32, f32, f32) =
            (rng.random(), rng.random(), rng.random(), rng.random());
        let width: f32 = rng.random_range(0.02..0.08);
        for y in 0..SIZE {
            for x in 0..SIZE {
                let p = (
                    (x as f32 + 0.5) / SIZE as f32,
                    (y as f32 + 0.5) / SIZE as f32,
                );
                if segment_distance(p, (x0, y0), (x1, y1)) < width {
                    canvas.0[(y * SIZE + x) * 3..(y * SIZE + x) * 3 + 3].copy_from_slice(&fg);
                }
            }
        }
    }
    canvas.add_noise(rng, 0.04);
    canvas.to_chw_u8()
}

fn segment_distance(p: (f32, f32), a: (f32, f32), b: (f32, f32)) -> f32 {
    let (abx, aby) = (b.0 - a.0, b.1 - a.1);
    let len2 = (abx * abx + aby * aby).max(1e-6);
    let t = (((p.0 - a.0) * abx + (p.1 - a.1) * aby) / len2).clamp(0.0, 1.0);
    let (qx, qy) = (a.0 + t * abx, a.1 + t * aby);
    ((p.0 - qx).powi(2) + (p.1 - qy).powi(2)).sqrt()
}

/// Outliers: a smooth field of a few coloured Gaussian blobs.
fn render_blobs(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let n = rng.random_range(3..7);
    let blobs: Vec<([f32; 3], f32, f32, f32)> = (0..n)
        .map(|_| {
            (
                rgb(rng),
                rng.random_range(-1.0..1.0),
                rng.random_range(-1.0..1.0),
                rng.random_range(0.2..0.7),
            )
        })
        .collect();
    let mut px = [0.0; SIZE * SIZE * 3];
    for y in 0..SIZE {
        for x in 0..SIZE {
            let (u, v) = (ndc(x), ndc(y));
            let mut acc = [0.0f32; 3];
            let mut wsum = 1e-3;
            for (col, bx, by, s) in &blobs {
                let w = (-((u - bx).powi(2) + (v - by).powi(2)) / (2.0 * s * s)).exp();
                wsum += w;
                for c in 0..3 {
                    acc[c] += w * col[c];
                }
            }
            for c in 0..3 {
                px[(y * SIZE + x) * 3 + c] = acc[c] / wsum;
            }
        }
    }
    Canvas(px).to_chw_u8()
}

/// What one split is made of.
#[derive(Debug, Clone, Copy)]
enum Generator {
    /// ID shapes; label = index % num_classes.
    Id(usize),
    Shapes(&'static [Shape]),
    Noise,
    Textures,
    Outliers,
}

fn generate(
    name: &str,
    split: u64,
    count: usize,
    data_seed: u64,
    generator: Generator,
) -> ImageSet {
    let render = |i: usize| -> (Vec<u8>, usize) {
        let mut rng = stream(data_seed, Purpose::Data, split, i as u64);
        match generator {
            Generator::Id(k) => (render_shape(ID_SHAPES[i % k], &mut rng), i % k),
            Generator::Shapes(shapes) => (render_shape(shapes[i % shapes.len()], &mut rng), 0),
            Generator::Noise => (render_noise(&mut rng), 0),
            Generator::Textures => (render_texture(&mut rng), 0),
            Generator::Outliers => match i % 5 {
                0 => (render_strokes(&mut rng), 0),
                1 => (render_blobs(&mut rng), 0),
                2 => (render_shape(Shape::Hourglass, &mut rng), 0),
                3 => (render_shape(Shape::Arrow, &mut rng), 0),
                _ => (render_shape(Shape::TwinDisks, &mut rng), 0),
            },
        }
    };
    let per = 3 * SIZE * SIZE;
    let mut images = vec![0u8; count * per];
    let mut labels = vec![0usize; count];
    // Each image has its own stream, so the split across threads cannot change the result.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let chunk = count.div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for (t, (img_chunk, lab_chunk)) in images
            .chunks_mut(chunk * per)
            .zip(labels.chunks_mut(chunk))
            .enumerate()
        {
            let render = &render;
            scope.spawn(move || {
                for (j, (img, lab)) in img_chunk
                    .chunks_mut(per)
                    .zip(lab_chunk.iter_mut())
                    .enumerate()
                {
                    let (pixels, label) = render(t * chunk + j);
                    img.copy_from_slice(&pixels);
                    *lab = label;
                }
            });
        }
    });
    ImageSet::new(name, images, labels, SIZE, SIZE)
}

/// The sets of the built-in benchmark, in memory.
#[derive(Debug, Clone)]
pub struct SyntheticSets {
    pub num_classes: usize,
    pub class_names: Vec<String>,
    pub train: ImageSet,
    pub test: ImageSet,
    /// ID validation images (as many as the test set, their own stream): ReAct's percentile and
    /// APS, as OpenOOD's `val` lists.
    pub val: ImageSet,
    /// Validation OOD images for APS (OpenOOD's `val_tin` role): outlier-style images from
    /// their own stream, disjoint from every OOD test set.
    pub val_ood: ImageSet,
    pub ood: Vec<(ImageSet, Group)>,
    pub outliers: ImageSet,
}

/// The whole built-in benchmark.
pub fn benchmark(cfg: &SyntheticConfig) -> SyntheticSets {
    let k = cfg.num_classes;
    assert!((2..=10).contains(&k), "num_classes is validated to 2..=10");
    let s = cfg.data_seed;
    SyntheticSets {
        num_classes: k,
        class_names: ID_CLASS_NAMES[..k].iter().map(|n| n.to_string()).collect(),
        train: generate("train", 0, k * cfg.train_per_class, s, Generator::Id(k)),
        test: generate("test", 1, k * cfg.test_per_class, s, Generator::Id(k)),
        val: generate("val", 2, k * cfg.test_per_class, s, Generator::Id(k)),
        val_ood: generate("val_ood", 30, cfg.ood_per_set, s, Generator::Outliers),
        ood: vec![
            (
                generate(
                    "unseen_curved",
                    10,
                    cfg.ood_per_set,
                    s,
                    Generator::Shapes(&[Shape::Crescent, Shape::HalfDisk]),
                ),
                Group::Near,
            ),
            (
                generate(
                    "unseen_angular",
                    11,
                    cfg.ood_per_set,
                    s,
                    Generator::Shapes(&[Shape::Tee, Shape::Ell]),
                ),
                Group::Near,
            ),
            (
                generate("noise", 20, cfg.ood_per_set, s, Generator::Noise),
                Group::Far,
            ),
            (
                generate("textures", 21, cfg.ood_per_set, s, Generator::Textures),
                Group::Far,
            ),
        ],
        outliers: generate("outliers", 100, cfg.outliers, s, Generator::Outliers),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SyntheticConfig {
        SyntheticConfig {
            num_classes: 10,
            train_per_class: 3,
            test_per_class: 2,
            ood_per_set: 4,
            outliers: 5,
            data_seed: 7,
        }
    }

    #[test]
    fn deterministic_balanced_and_seed_dependent() {
        let a = benchmark(&cfg());
        let b = benchmark(&cfg());
        assert_eq!(a.train.images, b.train.images);
        assert_eq!(a.train.labels.len(), 30);
        for class in 0..10 {
            assert_eq!(a.train.labels.iter().filter(|l| **l == class).count(), 3);
        }
        assert_eq!(a.ood.len(), 4);
        assert_eq!(a.ood.iter().filter(|(_, g)| *g == Group::Near).count(), 2);
        let c = benchmark(&SyntheticConfig {
            data_seed: 8,
            ..cfg()
        });
        assert_ne!(a.train.images, c.train.images);
    }

    #[test]
    fn every_shape_covers_a_sensible_area_and_shapes_differ() {
        let all = [
            Shape::Disk,
            Shape::Square,
            Shape::Triangle,
            Shape::Plus,
            Shape::Ring,
            Shape::Diamond,
            Shape::Cross,
            Shape::Bar,
            Shape::Frame,
            Shape::Star,
            Shape::Crescent,
            Shape::HalfDisk,
            Shape::Tee,
            Shape::Ell,
            Shape::Hourglass,
            Shape::Arrow,
            Shape::TwinDisks,
        ];
        let n = 64;
        let masks: Vec<Vec<bool>> = all
            .iter()
            .map(|s| {
                (0..n * n)
                    .map(|i| {
                        inside(
                            *s,
                            (i % n) as f32 / n as f32 * 2.0 - 1.0,
                            (i / n) as f32 / n as f32 * 2.0 - 1.0,
                        )
                    })
                    .collect()
            })
            .collect();
        for (s, m) in all.iter().zip(&masks) {
            let frac = m.iter().filter(|b| **b).count() as f32 / (n * n) as f32;
            assert!((0.08..0.8).contains(&frac), "{s:?} covers {frac}");
        }
        for i in 0..all.len() {
            for j in i + 1..all.len() {
                let diff = masks[i]
                    .iter()
                    .zip(&masks[j])
                    .filter(|(a, b)| a != b)
                    .count();
                assert!(
                    diff > n * n / 20,
                    "{:?} and {:?} differ in only {diff} points",
                    all[i],
                    all[j]
                );
            }
        }
    }
}
