//! oodforge evaluation: OOD scores over cached network outputs and OpenOOD v1.5 metrics, in
//! plain Rust on the CPU (DESIGN §3: run the network once, score many times).

pub mod aggregate;
pub mod aps;
pub mod cache;
pub mod classification;
pub mod conventions;
pub mod linalg;
pub mod metrics;
pub mod plots;
pub mod postprocess;
pub mod report;

pub use classification::ClassificationMetrics;
pub use metrics::{OodMetrics, ood_metrics};
pub use oodforge_core::Group;
pub use postprocess::Logits;
pub use postprocess::fitted::{Fitted, Reference, SetOutputs};
pub use report::{EvalError, OodOutputs, Results, evaluate};
