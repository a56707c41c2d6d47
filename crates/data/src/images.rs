//! In-memory image sets (u8, CHW) behind burn-dataset's `Dataset` trait.

use burn::data::dataset::{Dataset, DatasetError};
use sha2::{Digest, Sha256};

/// One image and its label (0 for OOD sets and outliers, where it is unused).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageItem {
    /// CHW, u8.
    pub image: Vec<u8>,
    pub label: usize,
}

/// A set of equally sized RGB images, stored contiguously as u8 CHW.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    pub name: String,
    pub images: Vec<u8>,
    pub labels: Vec<usize>,
    pub height: usize,
    pub width: usize,
}

impl ImageSet {
    pub fn new(
        name: &str,
        images: Vec<u8>,
        labels: Vec<usize>,
        height: usize,
        width: usize,
    ) -> Self {
        assert_eq!(
            images.len(),
            labels.len() * 3 * height * width,
            "{name}: one CHW image per label"
        );
        Self {
            name: name.to_owned(),
            images,
            labels,
            height,
            width,
        }
    }

    pub fn pixels_per_image(&self) -> usize {
        3 * self.height * self.width
    }

    pub fn image(&self, index: usize) -> &[u8] {
        let n = self.pixels_per_image();
        &self.images[index * n..(index + 1) * n]
    }

    /// SHA-256 over labels and pixels: the set's identity in a run manifest.
    pub fn content_hash(&self) -> String {
        let mut h = Sha256::new();
        h.update((self.height as u64).to_le_bytes());
        h.update((self.width as u64).to_le_bytes());
        for l in &self.labels {
            h.update((*l as u64).to_le_bytes());
        }
        h.update(&self.images);
        oodforge_core::config::hex(&h.finalize())
    }

    /// Save image `index` as PNG (for looking at the data).
    pub fn save_png(&self, index: usize, path: &std::path::Path) -> image::ImageResult<()> {
        let (h, w) = (self.height, self.width);
        let chw = self.image(index);
        let mut img = image::RgbImage::new(w as u32, h as u32);
        for y in 0..h {
            for x in 0..w {
                let p = [
                    chw[y * w + x],
                    chw[h * w + y * w + x],
                    chw[2 * h * w + y * w + x],
                ];
                img.put_pixel(x as u32, y as u32, image::Rgb(p));
            }
        }
        img.save(path)
    }
}

impl Dataset<ImageItem> for ImageSet {
    /// Panics when `index >= len()`, as the trait documents; in memory, nothing else can fail.
    fn get(&self, index: usize) -> Result<ImageItem, DatasetError> {
        Ok(ImageItem {
            image: self.image(index).to_vec(),
            label: self.labels[index],
        })
    }

    fn len(&self) -> usize {
        self.labels.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_round_trip_keeps_pixels_and_channel_order() {
        // 2x3 image whose channels differ, CHW.
        let chw: Vec<u8> = (0..18u8).map(|v| v * 10).collect();
        let set = ImageSet::new("t", chw.clone(), vec![4], 2, 3);
        let dir = std::env::temp_dir().join(format!("oodforge-png-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.png");
        set.save_png(0, &path).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(img.dimensions(), (3, 2));
        for y in 0..2 {
            for x in 0..3 {
                let p = img.get_pixel(x as u32, y as u32).0;
                assert_eq!(p, [chw[y * 3 + x], chw[6 + y * 3 + x], chw[12 + y * 3 + x]]);
            }
        }
        assert_eq!(
            set.get(0).unwrap(),
            ImageItem {
                image: chw,
                label: 4
            }
        );
        assert_eq!(set.len(), 1);
    }
}
