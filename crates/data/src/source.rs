//! Indexable image sources: what every format opens to. A source knows its length and labels
//! up front and decodes one image at a time, so ImageNet-sized lists and the 900 MB outlier
//! array never have to sit in memory; small binary sets (CIFAR, SVHN) are held decoded.

use crate::error::DataError;
use crate::images::ImageSet;
use std::sync::Arc;

/// A decoded RGB image, HWC u8 (the layout of PIL, `image` and `.npy` files).
#[derive(Debug, Clone, PartialEq)]
pub struct Rgb {
    pub height: usize,
    pub width: usize,
    /// `height * width * 3` bytes, row-major, RGB interleaved.
    pub data: Vec<u8>,
}

impl Rgb {
    pub fn new(height: usize, width: usize, data: Vec<u8>) -> Self {
        debug_assert_eq!(data.len(), height * width * 3);
        Self {
            height,
            width,
            data,
        }
    }

    /// From a planar CHW buffer (CIFAR binaries, `ImageSet`).
    pub fn from_chw(height: usize, width: usize, chw: &[u8]) -> Self {
        let hw = height * width;
        let mut data = vec![0u8; hw * 3];
        for (p, px) in data.chunks_exact_mut(3).enumerate() {
            px[0] = chw[p];
            px[1] = chw[hw + p];
            px[2] = chw[2 * hw + p];
        }
        Self::new(height, width, data)
    }

    pub fn from_image(img: image::RgbImage) -> Self {
        let (w, h) = img.dimensions();
        Self::new(h as usize, w as usize, img.into_raw())
    }
}

/// One set of images with labels. Implementations must be cheap to share between loader
/// threads (`Send + Sync`); `load` is called concurrently.
pub trait ImageSource: Send + Sync {
    /// Short name used in logs, reports and the run manifest (`cifar10/test`, `svhn`, ...).
    fn name(&self) -> &str;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Class label of sample `index` (0 for OOD sets and outliers, where it is unused).
    fn label(&self, index: usize) -> usize;
    /// Decode sample `index`. Errors name the file and what is wrong with it.
    fn load(&self, index: usize) -> Result<Rgb, DataError>;
    /// A stable identity of the set's content or listing (SHA-256 hex), for the manifest.
    fn fingerprint(&self) -> String;
    /// Where sample `index` comes from, for error messages: its file where it has one.
    fn locate(&self, index: usize) -> String {
        format!("{} sample {index}", self.name())
    }
}

pub type Source = Arc<dyn ImageSource>;

impl ImageSource for ImageSet {
    fn name(&self) -> &str {
        &self.name
    }
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn label(&self, index: usize) -> usize {
        self.labels[index]
    }
    fn load(&self, index: usize) -> Result<Rgb, DataError> {
        Ok(Rgb::from_chw(self.height, self.width, self.image(index)))
    }
    fn fingerprint(&self) -> String {
        self.content_hash()
    }
}

/// Any source behind burn-dataset's `Dataset` trait (items are decoded HWC images with labels),
/// for use with burn's own dataset combinators and data loader.
pub struct SourceDataset(pub Source);

/// One decoded sample.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbItem {
    pub image: Rgb,
    pub label: usize,
}

impl burn::data::dataset::Dataset<RgbItem, DataError> for SourceDataset {
    /// Errors keep their type: the file, offset and what was expected.
    fn get(&self, index: usize) -> Result<RgbItem, DataError> {
        let image = self.0.load(index)?;
        Ok(RgbItem {
            image,
            label: self.0.label(index),
        })
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}
