//! Criterion benchmarks of the data path a GPU waits on: one training batch built from memory
//! (load, augment, normalise into the f32 NCHW buffer), for CIFAR-style 32x32 images and for
//! ImageNet-style RandomResizedCrop(224); the test transform (Resize(256) + CenterCrop(224)) of
//! one ImageNet-sized image; one JPEG decode + RandomResizedCrop batch from files.
//!
//! `cargo bench -p oodforge-data --bench augment` (a release build; `bench data` in the cli gives
//! the end-to-end loader throughput with its worker threads).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use oodforge_core::config::TransformOp;
use oodforge_core::rng::Purpose;
use oodforge_data::formats::files::FileList;
use oodforge_data::{ImageSet, Normalizer, Pipeline, Rgb, Source, make_batch, transform};
use std::hint::black_box;
use std::sync::Arc;

const CIFAR_NORM: Normalizer = Normalizer {
    mean: [0.4914, 0.4822, 0.4465],
    std: [0.2470, 0.2435, 0.2616],
};
const IMAGENET_NORM: Normalizer = Normalizer {
    mean: [0.485, 0.456, 0.406],
    std: [0.229, 0.224, 0.225],
};

/// Deterministic, non-constant pixels (a constant image would let branches be predicted).
fn pixels(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

fn in_memory(n: usize, height: usize, width: usize) -> Source {
    let labels = (0..n).map(|i| i % 10).collect();
    Arc::new(ImageSet::new(
        "bench",
        pixels(n * 3 * height * width),
        labels,
        height,
        width,
    ))
}

fn rrc_pipeline() -> Pipeline {
    Pipeline::Train {
        ops: vec![
            TransformOp::RandomResizedCrop {
                size: 224,
                scale: [0.08, 1.0],
                ratio: [0.75, 4.0 / 3.0],
            },
            TransformOp::HorizontalFlip { p: 0.5 },
        ],
        views: 1,
        norm: IMAGENET_NORM,
    }
}

fn batch(c: &mut Criterion, name: &str, source: &Source, pipeline: &Pipeline, size: usize) {
    let indices: Vec<usize> = (0..size).collect();
    let mut group = c.benchmark_group("train_batch");
    group.throughput(Throughput::Elements(size as u64));
    let mut epoch = 0u64;
    group.bench_function(BenchmarkId::new(name, size), |b| {
        b.iter(|| {
            // A new epoch each time: fresh draws, as in training.
            epoch += 1;
            let out = make_batch(
                source.as_ref(),
                &indices,
                pipeline,
                0,
                Purpose::Augment,
                epoch,
                0,
            )
            .expect("in-memory images decode");
            black_box(out.images.len())
        })
    });
    group.finish();
}

fn cifar_batch(c: &mut Criterion) {
    let source = in_memory(128, 32, 32);
    let pipeline = Pipeline::Train {
        ops: vec![
            TransformOp::HorizontalFlip { p: 0.5 },
            TransformOp::RandomCrop {
                size: 32,
                padding: 4,
            },
        ],
        views: 1,
        norm: CIFAR_NORM,
    };
    batch(c, "cifar32_flip_crop_normalise", &source, &pipeline, 128);
}

fn imagenet_batch(c: &mut Criterion) {
    // 500x375: ImageNet's typical image size.
    let source = in_memory(32, 375, 500);
    batch(c, "rrc224_flip_normalise", &source, &rrc_pipeline(), 32);
}

fn test_transform(c: &mut Criterion) {
    let img = Rgb::new(375, 500, pixels(375 * 500 * 3));
    let mut group = c.benchmark_group("test_transform");
    group.throughput(Throughput::Elements(1));
    group.bench_function("resize256_centercrop224", |b| {
        b.iter(|| black_box(transform::test_transform(img.clone(), 256, 224)))
    });
    group.finish();
}

fn jpeg_batch(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("c")).expect("class folder");
    for i in 0..8u32 {
        let img = image::RgbImage::from_fn(500, 375, |x, y| {
            image::Rgb([(x + i) as u8, (y * 2) as u8, ((x ^ y) + 3 * i) as u8])
        });
        img.save(dir.path().join(format!("c/{i:02}.jpg")))
            .expect("write jpeg");
    }
    let files = FileList::class_folders(dir.path(), "jpeg", "", "").expect("bench folder");
    let source: Source = Arc::new(files);
    batch(
        c,
        "jpeg_decode_rrc224_flip_normalise",
        &source,
        &rrc_pipeline(),
        8,
    );
}

criterion_group!(
    benches,
    cifar_batch,
    imagenet_batch,
    test_transform,
    jpeg_batch
);
criterion_main!(benches);
