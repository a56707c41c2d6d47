//! `bench data`: loader throughput, images/s, for the two paths a GPU can wait on:
//! CIFAR-style 32x32 augmentation (flip + pad-4 crop + normalise) from memory, and JPEG decode
//! + RandomResizedCrop(224) + flip from files. Reports single-thread and all-thread numbers.

use clap::{Parser, Subcommand};
use oodforge_core::config::TransformOp;
use oodforge_core::rng::Purpose;
use oodforge_data::formats::files::FileList;
use oodforge_data::{
    ImageSet, Normalizer, Pipeline, Prefetch, Source, epoch_batches, loader, make_batch,
};
use std::sync::Arc;
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(name = "bench", version, about = "oodforge benchmarks")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Data loader throughput (images/s).
    Data {
        /// Worker threads for the parallel run (0 = one per core).
        #[arg(long, default_value_t = 0)]
        workers: usize,
        /// CIFAR-style images per measurement.
        #[arg(long, default_value_t = 20_000)]
        cifar_images: usize,
        /// JPEG files per measurement.
        #[arg(long, default_value_t = 256)]
        jpeg_images: usize,
    },
}

const NORM: Normalizer = Normalizer {
    mean: [0.4914, 0.4822, 0.4465],
    std: [0.2470, 0.2435, 0.2616],
};

/// Images per second of one pass of the loader over `source`.
fn throughput(source: &Source, pipeline: &Pipeline, batch: usize, workers: usize) -> f64 {
    let plan = epoch_batches(source.len(), batch, 0, 0);
    let n: usize = plan.iter().map(Vec::len).sum();
    let (src, pipe) = (Source::clone(source), pipeline.clone());
    let start = Instant::now();
    let it = Prefetch::new(plan.len(), workers, 2 * workers.max(1), move |k| {
        make_batch(
            src.as_ref(),
            &plan[k],
            &pipe,
            0,
            Purpose::Augment,
            0,
            (k * batch) as u64,
        )
        .expect("in-memory benchmark data decodes")
        .images
        .len()
    });
    let floats: usize = it.sum();
    std::hint::black_box(floats);
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let Command::Data {
        workers,
        cifar_images,
        jpeg_images,
    } = Args::parse().command;
    let all = loader::default_workers(workers);

    // CIFAR path: random-looking 32x32 images in memory (as the CIFAR binary reader holds them).
    let pixels: Vec<u8> = (0..cifar_images * 3072)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let labels = (0..cifar_images).map(|i| i % 10).collect();
    let cifar: Source = Arc::new(ImageSet::new("bench", pixels, labels, 32, 32));
    let cifar_pipe = Pipeline::Train {
        ops: vec![
            TransformOp::HorizontalFlip { p: 0.5 },
            TransformOp::RandomCrop {
                size: 32,
                padding: 4,
            },
        ],
        views: 1,
        norm: NORM,
    };
    let one = throughput(&cifar, &cifar_pipe, 128, 1);
    let many = throughput(&cifar, &cifar_pipe, 128, all);
    println!(
        "cifar 32x32 flip+crop+normalise: {one:>9.0} images/s on 1 thread, {many:>9.0} on {all} threads"
    );

    // JPEG path: 500x375 JPEGs (ImageNet's typical size) written to a temporary folder.
    let dir = std::env::temp_dir().join(format!("oodforge-bench-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("c")).expect("temp dir");
    for i in 0..jpeg_images.min(64) {
        let img = image::RgbImage::from_fn(500, 375, |x, y| {
            image::Rgb([
                (x + i as u32) as u8,
                (y * 2) as u8,
                ((x ^ y) + 3 * i as u32) as u8,
            ])
        });
        img.save(dir.join(format!("c/{i:04}.jpg")))
            .expect("write jpeg");
    }
    let files = FileList::class_folders(&dir, "jpeg", "", "").expect("bench folder");
    let unique = files.files.clone();
    let mut list = files;
    // Repeat the files to reach the requested count (decoding is the cost, not the disk).
    list.files = (0..jpeg_images)
        .map(|i| unique[i % unique.len()].clone())
        .collect();
    list.labels = vec![0; jpeg_images];
    let jpeg: Source = Arc::new(list);
    let jpeg_pipe = Pipeline::Train {
        ops: vec![
            TransformOp::RandomResizedCrop {
                size: 224,
                scale: [0.08, 1.0],
                ratio: [0.75, 4.0 / 3.0],
            },
            TransformOp::HorizontalFlip { p: 0.5 },
        ],
        views: 1,
        norm: Normalizer {
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        },
    };
    let one = throughput(&jpeg, &jpeg_pipe, 32, 1);
    let many = throughput(&jpeg, &jpeg_pipe, 32, all);
    println!(
        "jpeg 500x375 decode+RandomResizedCrop(224)+flip+normalise: {one:>7.0} images/s on 1 thread, {many:>7.0} on {all} threads"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
