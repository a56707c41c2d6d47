//! Batches: which samples (the epoch plan), how they are turned into normalised tensors (the
//! pipeline), and a multi-threaded ordered prefetcher that runs the pipeline ahead of training.
//!
//! Determinism: the sample order is a function of (seed, epoch); a sample's augmentation draws
//! come from `stream(seed, Augment | AugmentOutlier, epoch, position in the epoch)`. Threads only
//! decide *when* a batch is built, never *what* it contains.

use crate::error::DataError;
use crate::source::Source;
use crate::source::{ImageSource, Rgb};
use crate::transform;
use oodforge_core::config::{DataConfig, OutlierOrder, TransformOp};
use oodforge_core::rng::{Purpose, stream};
use rand::Rng;
use rand::seq::SliceRandom;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// Per-channel normalisation by ID statistics, applied to every set (METHODS §8.2).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Normalizer {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// A batch: `images` is `[views * n, 3, h, w]` row-major f32, normalised, views concatenated
/// view-major (all first views, then all second views, as `torch.cat([v0, v1])`).
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub images: Vec<f32>,
    pub labels: Vec<usize>,
    pub shape: [usize; 4],
    pub views: usize,
}

/// ID batch and, for OE-style objectives, the outlier batch trained beside it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainBatch {
    pub id: Batch,
    pub outliers: Option<Batch>,
}

/// How samples become tensors: an augmentation list (training) or the test transform, then
/// ToTensor + Normalize.
#[derive(Debug, Clone)]
pub enum Pipeline {
    Train {
        ops: Vec<TransformOp>,
        views: usize,
        norm: Normalizer,
    },
    Test {
        pre_size: usize,
        image_size: usize,
        /// `Resize((pre_size, pre_size))` instead of the shorter side (MixOE).
        square: bool,
        norm: Normalizer,
    },
}

impl Pipeline {
    fn norm(&self) -> &Normalizer {
        match self {
            Self::Train { norm, .. } | Self::Test { norm, .. } => norm,
        }
    }
}

/// Build one batch of `indices`. Sample k's augmentation draws come from
/// `stream(seed, purpose, epoch, first_position + k)`; the test pipeline draws nothing.
pub fn make_batch(
    source: &dyn ImageSource,
    indices: &[usize],
    pipeline: &Pipeline,
    seed: u64,
    purpose: Purpose,
    epoch: u64,
    first_position: u64,
) -> Result<Batch, DataError> {
    let views = match pipeline {
        Pipeline::Train { views, .. } => *views,
        Pipeline::Test { .. } => 1,
    };
    let mut per_view: Vec<Vec<Rgb>> = vec![Vec::with_capacity(indices.len()); views];
    let mut labels = Vec::with_capacity(indices.len());
    for (k, &i) in indices.iter().enumerate() {
        let img = source.load(i)?;
        match pipeline {
            Pipeline::Train { ops, .. } => {
                let mut rng = stream(seed, purpose, epoch, first_position + k as u64);
                for view in per_view.iter_mut() {
                    let mut x = img.clone();
                    for op in ops {
                        x = transform::apply(op, x, &mut rng);
                    }
                    view.push(x);
                }
            }
            Pipeline::Test {
                pre_size,
                image_size,
                square,
                ..
            } => per_view[0].push(if *square {
                transform::test_transform_square(img, *pre_size, *image_size)
            } else {
                transform::test_transform(img, *pre_size, *image_size)
            }),
        }
        labels.push(source.label(i));
    }
    let first = &per_view[0][0];
    let (h, w) = (first.height, first.width);
    let n = indices.len();
    let norm = pipeline.norm();
    let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * norm.std[c]));
    let shift: [f32; 3] = std::array::from_fn(|c| norm.mean[c] / norm.std[c]);
    let mut images = vec![0f32; views * n * 3 * h * w];
    for (v, view) in per_view.iter().enumerate() {
        for (k, img) in view.iter().enumerate() {
            if img.height != h || img.width != w {
                return Err(DataError::Config(format!(
                    "{}: {}x{} after the transform, but the batch's first image is {h}x{w}; end data.train_transform with a fixed-size crop (random_crop, center_crop or random_resized_crop)",
                    source.locate(indices[k]),
                    img.height,
                    img.width
                )));
            }
            let out = &mut images[(v * n + k) * 3 * h * w..(v * n + k + 1) * 3 * h * w];
            let (r, rest) = out.split_at_mut(h * w);
            let (g, b) = rest.split_at_mut(h * w);
            for (p, px) in img.data.chunks_exact(3).enumerate() {
                r[p] = f32::from(px[0]) * scale[0] - shift[0];
                g[p] = f32::from(px[1]) * scale[1] - shift[1];
                b[p] = f32::from(px[2]) * scale[2] - shift[2];
            }
        }
    }
    Ok(Batch {
        images,
        labels,
        shape: [views * n, 3, h, w],
        views,
    })
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

/// Outlier indices for step `k` of `epoch` (the ID loader defines the epoch; the outlier stream
/// cycles through its set).
pub fn outlier_indices(
    n: usize,
    batch_size: usize,
    order: OutlierOrder,
    seed: u64,
    epoch: usize,
    step_in_epoch: usize,
    steps_per_epoch: usize,
) -> Vec<usize> {
    match order {
        OutlierOrder::Offset => {
            // OE `oe_tune.py`: `ood_data.offset = np.random.randint(len(ood_data))` each epoch,
            // then consecutive indices with wrap-around.
            let offset = stream(seed, Purpose::ShuffleOutlier, epoch as u64, 0).random_range(0..n);
            (0..batch_size)
                .map(|j| (offset + step_in_epoch * batch_size + j) % n)
                .collect()
        }
        OutlierOrder::Shuffle => {
            // One global position per outlier drawn since the start of training; each pass over
            // the set has its own permutation.
            let start = (epoch * steps_per_epoch + step_in_epoch) * batch_size;
            let mut out = Vec::with_capacity(batch_size);
            let mut pass = usize::MAX;
            let mut perm = Vec::new();
            for p in start..start + batch_size {
                if p / n != pass {
                    pass = p / n;
                    perm = (0..n).collect();
                    perm.shuffle(&mut stream(seed, Purpose::ShuffleOutlier, pass as u64, 1));
                }
                out.push(perm[p % n]);
            }
            out
        }
    }
}

/// An ordered parallel map with bounded look-ahead: `workers` threads build items
/// `0..n_jobs` with `f`, at most `prefetch` items ahead of the consumer, and the iterator yields
/// them in job order. Dropping the iterator stops the workers.
pub struct Prefetch<T: Send + 'static> {
    shared: Arc<Shared<T>>,
    next: usize,
    n_jobs: usize,
    threads: Vec<std::thread::JoinHandle<()>>,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
    room: Condvar,
    claim: AtomicUsize,
    stop: AtomicBool,
    prefetch: usize,
}

struct State<T> {
    done: BTreeMap<usize, T>,
    consumed: usize,
}

impl<T: Send + 'static> Prefetch<T> {
    pub fn new<F>(n_jobs: usize, workers: usize, prefetch: usize, f: F) -> Self
    where
        F: Fn(usize) -> T + Send + Sync + 'static,
    {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                done: BTreeMap::new(),
                consumed: 0,
            }),
            ready: Condvar::new(),
            room: Condvar::new(),
            claim: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            prefetch: prefetch.max(1),
        });
        let f = Arc::new(f);
        let threads = (0..workers.max(1).min(n_jobs.max(1)))
            .map(|_| {
                let shared = Arc::clone(&shared);
                let f = Arc::clone(&f);
                std::thread::spawn(move || {
                    loop {
                        let job = shared.claim.fetch_add(1, Ordering::SeqCst);
                        if job >= n_jobs || shared.stop.load(Ordering::SeqCst) {
                            return;
                        }
                        // Wait until the job is within the look-ahead window.
                        {
                            let mut st = shared.state.lock().expect("loader lock");
                            while job >= st.consumed + shared.prefetch
                                && !shared.stop.load(Ordering::SeqCst)
                            {
                                st = shared.room.wait(st).expect("loader lock");
                            }
                        }
                        if shared.stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let item = f(job);
                        shared
                            .state
                            .lock()
                            .expect("loader lock")
                            .done
                            .insert(job, item);
                        shared.ready.notify_all();
                    }
                })
            })
            .collect();
        Self {
            shared,
            next: 0,
            n_jobs,
            threads,
        }
    }
}

impl<T: Send + 'static> Iterator for Prefetch<T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        if self.next >= self.n_jobs {
            return None;
        }
        let mut st = self.shared.state.lock().expect("loader lock");
        loop {
            if let Some(item) = st.done.remove(&self.next) {
                self.next += 1;
                st.consumed = self.next;
                drop(st);
                self.shared.room.notify_all();
                return Some(item);
            }
            let (guard, timeout) = self
                .shared
                .ready
                .wait_timeout(st, std::time::Duration::from_secs(1))
                .expect("loader lock");
            st = guard;
            // A worker that panicked never delivers its batch: fail loudly instead of hanging.
            if timeout.timed_out()
                && !st.done.contains_key(&self.next)
                && self.threads.iter().all(|t| t.is_finished())
            {
                panic!(
                    "a data loader thread stopped without delivering batch {}",
                    self.next
                );
            }
        }
    }
}

impl<T: Send + 'static> Drop for Prefetch<T> {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.room.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Worker count for `workers = 0`: one per available core.
pub fn default_workers(workers: usize) -> usize {
    if workers > 0 {
        workers
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// One training epoch's batches, built ahead of training on `data.loader.workers` threads: the
/// ID batches of a seeded permutation (the epoch is defined by the ID set) and, when
/// `data.outlier_batch_size > 0`, an outlier batch beside each from the cycling outlier stream
/// (OE: 128 ID + 256 outliers). Samples and augmentation draws depend on (seed, epoch, step)
/// only, never on the thread count. The first `skip` batches are left out without being built
/// (a run resumed inside an epoch).
pub fn train_epoch(
    data: &DataConfig,
    seed: u64,
    train: &Source,
    outliers: Option<&Source>,
    norm: Normalizer,
    epoch: usize,
    skip: usize,
) -> Result<Prefetch<Result<TrainBatch, DataError>>, DataError> {
    let outliers = match (data.outlier_batch_size, outliers) {
        (0, _) => None,
        (b, Some(set)) if !set.is_empty() => Some((Source::clone(set), b)),
        (_, _) => {
            return Err(DataError::Config(
                "data.outlier_batch_size > 0 but the data source declares no (non-empty) outlier set".into(),
            ));
        }
    };
    let batch_size = data.batch_size;
    let plan = epoch_batches(train.len(), batch_size, seed, epoch);
    let per_epoch = plan.len();
    let pipeline = Pipeline::Train {
        ops: data.train_transform.clone(),
        views: data.views,
        norm,
    };
    let (train, order) = (Source::clone(train), data.outlier_order);
    let workers = default_workers(data.loader.workers);
    Ok(Prefetch::new(
        per_epoch.saturating_sub(skip),
        workers,
        data.loader.prefetch,
        move |j| {
            let k = skip + j;
            let id = make_batch(
                train.as_ref(),
                &plan[k],
                &pipeline,
                seed,
                Purpose::Augment,
                epoch as u64,
                (k * batch_size) as u64,
            )?;
            let outliers = match &outliers {
                None => None,
                Some((set, b)) => {
                    let idx = outlier_indices(set.len(), *b, order, seed, epoch, k, per_epoch);
                    Some(make_batch(
                        set.as_ref(),
                        &idx,
                        &pipeline,
                        seed,
                        Purpose::AugmentOutlier,
                        epoch as u64,
                        (k * b) as u64,
                    )?)
                }
            };
            Ok(TrainBatch { id, outliers })
        },
    ))
}
