//! `bench data`: loader throughput, images/s, for the two paths a GPU can wait on:
//! CIFAR-style 32x32 augmentation (flip + pad-4 crop + normalise) from memory, and JPEG decode
//! + RandomResizedCrop(224) + flip from files. Reports single-thread and all-thread numbers.
//!
//! `bench scores`: the feature-space post-processors at CIFAR scale (defaults: a 50,000 x 512
//! ID training bank, 10,000 queries, 100 classes): KNN (K = 50) fit + score, Mahalanobis fit +
//! score, ViM fit + score; the minimum and median wall time over `--repeats`.

use clap::{Parser, Subcommand};
use oodforge_core::config::TransformOp;
use oodforge_core::rng::Purpose;
use oodforge_data::formats::files::FileList;
use oodforge_data::{
    ImageSet, Normalizer, Pipeline, Prefetch, Source, epoch_batches, loader, make_batch,
};
use std::process::ExitCode;
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
    /// Training and evaluation images/s and peak memory of ResNet-18 (CIFAR), WRN-40-2 and
    /// ViT-Tiny per backend; writes bench_train.json and bench_train.md (the format of
    /// scripts/bench_pytorch.py).
    Train {
        /// Models: resnet18_cifar, wrn40_2, vit_tiny.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "resnet18_cifar,wrn40_2,vit_tiny"
        )]
        models: Vec<String>,
        #[arg(long, value_delimiter = ',', default_value = "32,128")]
        batches: Vec<usize>,
        /// Backends: flex, wgpu, ndarray, cuda, tch. Default: flex, plus wgpu when a hardware
        /// adapter is present, cuda when compiled in and a device is found, and tch when
        /// compiled in.
        #[arg(long, value_delimiter = ',')]
        backends: Vec<String>,
        /// Untimed steps before measuring (kernel autotune, allocator warm-up).
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// Timed steps; the median is reported.
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// Folder for bench_train.json and bench_train.md.
        #[arg(long, default_value = "bench")]
        out: std::path::PathBuf,
        /// Internal: measure one configuration (`backend,model,batch,mode`) in this process
        /// and print it as one JSON line.
        #[arg(long, hide = true)]
        child: Option<String>,
    },
    /// Per-layer times of ResNet-18 (CIFAR) at one batch size: each stage's 3x3 convolution,
    /// the stride-2 entries, batch norm and ReLU, forward and forward + backward; writes
    /// bench_ops.json and bench_ops.md (the format of `scripts/bench_pytorch.py --ops`).
    Ops {
        #[arg(long, default_value_t = 128)]
        batch: usize,
        /// Backend: flex, wgpu, ndarray, cuda.
        #[arg(long, default_value = "flex")]
        backend: String,
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// Folder for bench_ops.json and bench_ops.md.
        #[arg(long, default_value = "bench")]
        out: std::path::PathBuf,
    },
    /// Feature-space OOD scores (KNN, Mahalanobis, ViM) at CIFAR scale, seconds.
    Scores {
        #[arg(long, default_value_t = 50_000)]
        bank: usize,
        #[arg(long, default_value_t = 10_000)]
        queries: usize,
        #[arg(long, default_value_t = 512)]
        dim: usize,
        #[arg(long, default_value_t = 100)]
        classes: usize,
        #[arg(long, default_value_t = 50)]
        k: usize,
        #[arg(long, default_value_t = 3)]
        repeats: usize,
    },
}

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

/// Min and median seconds of `repeats` runs of `f`.
fn time<T>(repeats: usize, mut f: impl FnMut() -> T) -> (f64, f64) {
    let mut t: Vec<f64> = (0..repeats.max(1))
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            start.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    (t[0], t[t.len() / 2])
}

fn scores(bank: usize, queries: usize, dim: usize, classes: usize, k: usize, repeats: usize) {
    use oodforge_eval::postprocess::Head;
    use oodforge_eval::postprocess::knn::KnnBank;
    use oodforge_eval::postprocess::mds::Mahalanobis;
    use oodforge_eval::postprocess::vim::Vim;
    let train = features(bank, dim, 1);
    let test = features(queries, dim, 2);
    let labels: Vec<usize> = (0..bank).map(|i| i % classes).collect();
    let head = Head::new(features(classes, dim, 3), vec![0.0; classes], classes, dim);
    let show = |what: &str, (min, median): (f64, f64)| {
        println!("{what:<48} min {min:>8.3} s   median {median:>8.3} s");
    };
    println!(
        "{bank} x {dim} ID training features, {queries} queries, {classes} classes, {repeats} repeats"
    );
    let knn = KnnBank::fit(&train, dim);
    show(
        "knn: fit (normalise the bank)",
        time(repeats, || KnnBank::fit(&train, dim)),
    );
    show(
        &format!("knn: score (K = {k})"),
        time(repeats, || knn.scores(&test, &[k])),
    );
    let mds = Mahalanobis::fit(&train, &labels, classes, dim);
    show(
        "mds: fit (class means, shared precision)",
        time(repeats, || Mahalanobis::fit(&train, &labels, classes, dim)),
    );
    show("mds: score", time(repeats, || mds.scores(&test)));
    let principal = (dim / 2).max(1);
    let vim = Vim::fit(&train, &head, principal);
    show(
        &format!("vim: fit (dim = {principal})"),
        time(repeats, || Vim::fit(&train, &head, principal)),
    );
    show("vim: score", time(repeats, || vim.scores(&test, &head)));
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

fn train(
    models: &[String],
    batches: &[usize],
    backends: &[String],
    warmup: usize,
    steps: usize,
    out: &std::path::Path,
) -> ExitCode {
    use oodforge_cli::train_bench;
    use oodforge_core::backend;
    use oodforge_core::config::BackendChoice;
    let choices: Vec<BackendChoice> = if backends.is_empty() {
        let mut v = vec![BackendChoice::Flex];
        if backend::wgpu_adapters().iter().any(|a| !a.is_cpu) {
            v.push(BackendChoice::Wgpu);
        }
        if backend::select(BackendChoice::Cuda).is_ok() {
            v.push(BackendChoice::Cuda);
        }
        if backend::select(BackendChoice::Tch).is_ok() {
            v.push(BackendChoice::Tch);
        }
        v
    } else {
        match backends
            .iter()
            .map(|b| oodforge_cli::parse_backend(b))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(v) => v,
            Err(e) => {
                eprintln!("error: --backends: {e}");
                return ExitCode::from(2);
            }
        }
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: cannot find this executable to run the measurements: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut rows: Vec<train_bench::Measurement> = Vec::new();
    for choice in choices {
        if let Err(e) = backend::select(choice) {
            return oodforge_cli::report(&e);
        }
        for model in models {
            if train_bench::model_config(model).is_none() {
                eprintln!(
                    "error: --models: unknown model `{model}`, expected one of {}",
                    train_bench::MODELS.join(", ")
                );
                return ExitCode::from(2);
            }
            for &batch in batches {
                for mode in ["train", "eval"] {
                    // One process per configuration: its peak memory is its own.
                    let spec = format!("{},{model},{batch},{mode}", choice.as_str());
                    let out = std::process::Command::new(&exe)
                        .args(["train", "--child", &spec])
                        .args([
                            "--warmup",
                            &warmup.to_string(),
                            "--steps",
                            &steps.to_string(),
                        ])
                        .stderr(std::process::Stdio::inherit())
                        .output();
                    let row = out.ok().filter(|o| o.status.success()).and_then(|o| {
                        serde_json::from_slice::<train_bench::Measurement>(&o.stdout).ok()
                    });
                    let Some(r) = row else {
                        eprintln!("error: the measurement of {spec} failed (see above)");
                        return ExitCode::FAILURE;
                    };
                    println!(
                        "{:<8} {:<15} batch {:>4} {:<5} {:>9.1} images/s  peak {}",
                        r.backend,
                        r.model,
                        r.batch,
                        r.mode,
                        r.images_per_s,
                        r.peak_mib.map_or("-".into(), |p| format!("{p:.0} MiB"))
                    );
                    rows.push(r);
                }
            }
        }
    }
    let json = serde_json::json!({
        "machine": {
            "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
            "os": std::env::consts::OS,
        },
        "warmup": warmup,
        "steps": steps,
        "results": rows,
    });
    if let Err(code) = write_tables(out, "bench_train", &json, &train_bench::markdown(&rows)) {
        return code;
    }
    println!(
        "wrote {0}/bench_train.json and {0}/bench_train.md",
        out.display()
    );
    ExitCode::SUCCESS
}

fn ops(
    batch: usize,
    backend: &str,
    warmup: usize,
    steps: usize,
    out: &std::path::Path,
) -> ExitCode {
    use oodforge_cli::train_bench;
    let choice = match oodforge_cli::parse_backend(backend) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: --backend: {e}");
            return ExitCode::from(2);
        }
    };
    let selected = match oodforge_core::backend::select(choice) {
        Ok(s) => s,
        Err(e) => return oodforge_cli::report(&e),
    };
    let rows = train_bench::measure_ops(&selected, batch, warmup, steps);
    let md = train_bench::ops_markdown(&rows);
    print!("{md}");
    let json =
        serde_json::json!({ "batch": batch, "warmup": warmup, "steps": steps, "results": rows });
    match write_tables(out, "bench_ops", &json, &md) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

/// Write `<out>/<stem>.json` (pretty) and `<out>/<stem>.md`; an error names the folder.
fn write_tables(
    out: &std::path::Path,
    stem: &str,
    json: &serde_json::Value,
    md: &str,
) -> Result<(), ExitCode> {
    std::fs::create_dir_all(out)
        .and_then(|_| {
            std::fs::write(
                out.join(format!("{stem}.json")),
                serde_json::to_string_pretty(json).expect("serialisable"),
            )
        })
        .and_then(|_| std::fs::write(out.join(format!("{stem}.md")), md))
        .map_err(|e| {
            eprintln!("error: {}: {e}", out.display());
            ExitCode::FAILURE
        })
}

fn train_child(spec: &str, warmup: usize, steps: usize) -> ExitCode {
    use oodforge_cli::train_bench;
    let parts: Vec<&str> = spec.split(',').collect();
    let [backend, model, batch, mode] = parts[..] else {
        eprintln!("error: --child expects backend,model,batch,mode");
        return ExitCode::from(2);
    };
    let (Ok(choice), Ok(batch)) = (oodforge_cli::parse_backend(backend), batch.parse()) else {
        eprintln!("error: --child: bad backend or batch in `{spec}`");
        return ExitCode::from(2);
    };
    let selected = match oodforge_core::backend::select(choice) {
        Ok(s) => s,
        Err(e) => return oodforge_cli::report(&e),
    };
    match train_bench::measure(&selected, model, batch, mode, warmup, steps) {
        Ok(m) => {
            println!("{}", serde_json::to_string(&m).expect("serialisable"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    oodforge_cli::keep_freed_memory();
    let (workers, cifar_images, jpeg_images) = match Args::parse().command {
        Command::Data {
            workers,
            cifar_images,
            jpeg_images,
        } => (workers, cifar_images, jpeg_images),
        Command::Ops {
            batch,
            backend,
            warmup,
            steps,
            out,
        } => return ops(batch, &backend, warmup, steps, &out),
        Command::Scores {
            bank,
            queries,
            dim,
            classes,
            k,
            repeats,
        } => {
            scores(bank, queries, dim, classes, k, repeats);
            return ExitCode::SUCCESS;
        }
        Command::Train {
            models,
            batches,
            backends,
            warmup,
            steps,
            out,
            child,
        } => {
            return match child {
                Some(spec) => train_child(&spec, warmup, steps),
                None => train(&models, &batches, &backends, warmup, steps, &out),
            };
        }
    };
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
    ExitCode::SUCCESS
}
