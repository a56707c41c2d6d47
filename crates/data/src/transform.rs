//! Image transforms with torchvision semantics, on HWC u8 images, drawing from a per-sample
//! seeded stream. The sample's stream is keyed by (seed, epoch, position in the epoch), never by
//! which thread runs it, so results do not depend on the number of loader workers.

use crate::source::Rgb;
use image::imageops::FilterType;
use oodforge_core::config::TransformOp;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Apply one op. `rng` is the sample's stream; ops that draw nothing leave it untouched.
pub fn apply(op: &TransformOp, img: Rgb, rng: &mut ChaCha8Rng) -> Rgb {
    match *op {
        TransformOp::Resize { size } => resize_shorter(img, size),
        TransformOp::ResizeSquare { size } => resize_exact(img, size, size),
        TransformOp::CenterCrop { size } => center_crop(&img, size, size),
        TransformOp::RandomCrop { size, padding } => {
            // torchvision RandomCrop: pad, then top = randint(0, H - th), left = randint(0, W - tw).
            let (h, w) = (img.height + 2 * padding, img.width + 2 * padding);
            let top = rng.random_range(0..=h.saturating_sub(size));
            let left = rng.random_range(0..=w.saturating_sub(size));
            crop(
                &img,
                top as isize - padding as isize,
                left as isize - padding as isize,
                size,
                size,
            )
        }
        TransformOp::HorizontalFlip { p } => {
            if rng.random_bool(p) {
                hflip(img)
            } else {
                img
            }
        }
        TransformOp::RandomResizedCrop { size, scale, ratio } => {
            let (top, left, h, w) = rrc_params(img.height, img.width, scale, ratio, rng);
            let c = crop(&img, top as isize, left as isize, h, w);
            resize_exact(c, size, size)
        }
        TransformOp::ColorJitter {
            brightness,
            contrast,
            saturation,
            hue,
            p,
        } => {
            if rng.random_bool(p) {
                color_jitter(img, [brightness, contrast, saturation, hue], rng)
            } else {
                img
            }
        }
        TransformOp::Grayscale { p } => {
            if rng.random_bool(p) {
                grayscale(img)
            } else {
                img
            }
        }
    }
}

/// `Resize(size)` with an int: the shorter side becomes `size`, the longer
/// `int(size * long / short)` (torchvision `_compute_resized_output_size`).
pub fn resize_shorter(img: Rgb, size: usize) -> Rgb {
    let (h, w) = (img.height, img.width);
    let (nh, nw) = if h <= w {
        (size, size * w / h)
    } else {
        (size * h / w, size)
    };
    resize_exact(img, nh, nw)
}

/// Bilinear resize with PIL-style antialiasing (a triangle filter widened by the scale factor
/// when shrinking); identity when the size already matches.
pub fn resize_exact(img: Rgb, h: usize, w: usize) -> Rgb {
    if img.height == h && img.width == w {
        return img;
    }
    let buf = image::RgbImage::from_raw(img.width as u32, img.height as u32, img.data)
        .expect("Rgb holds height * width * 3 bytes");
    Rgb::from_image(image::imageops::resize(
        &buf,
        w as u32,
        h as u32,
        FilterType::Triangle,
    ))
}

/// `CenterCrop`: top = round((H - th) / 2), left = round((W - tw) / 2) with Python's `round`
/// (ties to even: 2.5 -> 2); zero padding when the image is smaller (torchvision pads first,
/// then crops).
pub fn center_crop(img: &Rgb, th: usize, tw: usize) -> Rgb {
    if img.height == th && img.width == tw {
        return img.clone();
    }
    // Smaller than the crop: torchvision pads (crop - size) / 2 (floor) before the image.
    let offset = |size: usize, crop: usize| {
        if size < crop {
            -(((crop - size) / 2) as isize)
        } else {
            ((size as f64 - crop as f64) / 2.0).round_ties_even() as isize
        }
    };
    let (top, left) = (offset(img.height, th), offset(img.width, tw));
    crop(img, top, left, th, tw)
}

/// Crop `h x w` at (top, left); pixels outside the image are black.
pub fn crop(img: &Rgb, top: isize, left: isize, h: usize, w: usize) -> Rgb {
    let mut out = vec![0u8; h * w * 3];
    for y in 0..h {
        let sy = top + y as isize;
        if sy < 0 || sy >= img.height as isize {
            continue;
        }
        // Columns of the source row that land inside the crop.
        let x0 = (-left).clamp(0, w as isize) as usize;
        let x1 = (img.width as isize - left).clamp(0, w as isize) as usize;
        if x0 >= x1 {
            continue;
        }
        let src = (sy as usize * img.width + (left + x0 as isize) as usize) * 3;
        out[(y * w + x0) * 3..(y * w + x1) * 3]
            .copy_from_slice(&img.data[src..src + (x1 - x0) * 3]);
    }
    Rgb::new(h, w, out)
}

pub fn hflip(mut img: Rgb) -> Rgb {
    let w = img.width;
    for row in img.data.chunks_exact_mut(w * 3) {
        for x in 0..w / 2 {
            for c in 0..3 {
                row.swap(x * 3 + c, (w - 1 - x) * 3 + c);
            }
        }
    }
    img
}

/// torchvision `RandomResizedCrop.get_params`: ten attempts at an area fraction from `scale`
/// and a log-uniform aspect ratio from `ratio`, then a centre crop clamped to `ratio`.
pub fn rrc_params(
    height: usize,
    width: usize,
    scale: [f64; 2],
    ratio: [f64; 2],
    rng: &mut ChaCha8Rng,
) -> (usize, usize, usize, usize) {
    let area = (height * width) as f64;
    let (lr0, lr1) = (ratio[0].ln(), ratio[1].ln());
    for _ in 0..10 {
        let target = area * rng.random_range(scale[0]..=scale[1]);
        let aspect = if lr0 < lr1 {
            rng.random_range(lr0..lr1).exp()
        } else {
            ratio[0]
        };
        let w = (target * aspect).sqrt().round_ties_even() as usize;
        let h = (target / aspect).sqrt().round_ties_even() as usize;
        if 0 < w && w <= width && 0 < h && h <= height {
            let top = rng.random_range(0..=height - h);
            let left = rng.random_range(0..=width - w);
            return (top, left, h, w);
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < ratio[0] {
        (width, (width as f64 / ratio[0]).round_ties_even() as usize)
    } else if in_ratio > ratio[1] {
        (
            (height as f64 * ratio[1]).round_ties_even() as usize,
            height,
        )
    } else {
        (width, height)
    };
    ((height - h) / 2, (width - w) / 2, h, w)
}

/// ITU-R 601-2 luma, as PIL's `convert("L")`: (299 R + 587 G + 114 B) / 1000.
fn luma(px: &[u8]) -> f32 {
    (299.0 * f32::from(px[0]) + 587.0 * f32::from(px[1]) + 114.0 * f32::from(px[2])) / 1000.0
}

pub fn grayscale(mut img: Rgb) -> Rgb {
    for px in img.data.chunks_exact_mut(3) {
        let l = luma(px).round().clamp(0.0, 255.0) as u8;
        px.fill(l);
    }
    img
}

/// torchvision `ColorJitter`: factors brightness/contrast/saturation from
/// U[max(0, 1 - x), 1 + x], hue from U[-h, h], applied in a random order (`torch.randperm(4)`).
/// Blends follow `functional_tensor`: brightness blends with black, contrast with the mean
/// grey level, saturation with the grey image; hue rotates in HSV.
fn color_jitter(img: Rgb, amount: [f64; 4], rng: &mut ChaCha8Rng) -> Rgb {
    let mut order = [0usize, 1, 2, 3];
    // Fisher-Yates with our stream (the order is part of the sample's draws).
    for i in (1..4).rev() {
        let j = rng.random_range(0..=i);
        order.swap(i, j);
    }
    let factor = |x: f64, rng: &mut ChaCha8Rng| {
        if x > 0.0 {
            Some(rng.random_range((1.0 - x).max(0.0)..=1.0 + x) as f32)
        } else {
            None
        }
    };
    let b = factor(amount[0], rng);
    let c = factor(amount[1], rng);
    let s = factor(amount[2], rng);
    let h = (amount[3] > 0.0).then(|| rng.random_range(-amount[3]..=amount[3]) as f32);
    let mut px: Vec<f32> = img.data.iter().map(|&v| f32::from(v)).collect();
    for op in order {
        match op {
            0 => {
                if let Some(f) = b {
                    px.iter_mut().for_each(|v| *v = (*v * f).clamp(0.0, 255.0));
                }
            }
            1 => {
                if let Some(f) = c {
                    let n = (px.len() / 3) as f32;
                    let mean: f32 = px
                        .chunks_exact(3)
                        .map(|p| (0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]).floor())
                        .sum::<f32>()
                        / n;
                    px.iter_mut()
                        .for_each(|v| *v = (f * *v + (1.0 - f) * mean).clamp(0.0, 255.0));
                }
            }
            2 => {
                if let Some(f) = s {
                    for p in px.chunks_exact_mut(3) {
                        let g = (0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]).floor();
                        for v in p.iter_mut() {
                            *v = (f * *v + (1.0 - f) * g).clamp(0.0, 255.0);
                        }
                    }
                }
            }
            _ => {
                if let Some(dh) = h {
                    for p in px.chunks_exact_mut(3) {
                        let (hh, ss, vv) = rgb_to_hsv(p[0] / 255.0, p[1] / 255.0, p[2] / 255.0);
                        let (r, g, bb) = hsv_to_rgb((hh + dh).rem_euclid(1.0), ss, vv);
                        p[0] = r * 255.0;
                        p[1] = g * 255.0;
                        p[2] = bb * 255.0;
                    }
                }
            }
        }
    }
    let data = px
        .iter()
        .map(|v| v.round().clamp(0.0, 255.0) as u8)
        .collect();
    Rgb::new(img.height, img.width, data)
}

fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let d = max - min;
    let s = if max > 0.0 { d / max } else { 0.0 };
    let h = if d == 0.0 {
        0.0
    } else if max == r {
        ((g - b) / d).rem_euclid(6.0) / 6.0
    } else if max == g {
        ((b - r) / d + 2.0) / 6.0
    } else {
        ((r - g) / d + 4.0) / 6.0
    };
    (h, s, max)
}

fn hsv_to_rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    let i = (h * 6.0).floor();
    let f = h * 6.0 - i;
    let p = v * (1.0 - s);
    let q = v * (1.0 - s * f);
    let t = v * (1.0 - s * (1.0 - f));
    match (i as i32).rem_euclid(6) {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

/// The test transform (OpenOOD v1.5 `TestStandardPreProcessor`): Resize(pre_size) then
/// CenterCrop(image_size). Both steps are the identity on images that already have the size.
pub fn test_transform(img: Rgb, pre_size: usize, image_size: usize) -> Rgb {
    let r = resize_shorter(img, pre_size);
    center_crop(&r, image_size, image_size)
}

/// MixOE's test transform: `Resize((pre_size, pre_size))` then `CenterCrop(image_size)`.
pub fn test_transform_square(img: Rgb, pre_size: usize, image_size: usize) -> Rgb {
    center_crop(
        &resize_exact(img, pre_size, pre_size),
        image_size,
        image_size,
    )
}
