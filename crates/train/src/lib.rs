//! oodforge training: the loop, schedules, checkpoints, run folders and evaluation of runs.

pub mod checkpoint;
pub mod error;
pub mod evaluate;
pub mod mil;
pub mod odin;
pub mod run;
pub mod schedule;
pub mod trainer;

pub use error::TrainError;
pub use evaluate::{evaluate_run, evaluate_weights};
pub use trainer::{TrainOptions, TrainOutcome, resume, train};
