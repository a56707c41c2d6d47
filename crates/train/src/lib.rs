//! oodforge training: the loop, schedules, checkpoints, run folders and evaluation of runs.

pub mod checkpoint;
pub mod error;
pub mod evaluate;
pub mod mil;
pub mod odin;
mod parallel;
pub mod run;
pub mod schedule;
pub mod stop;
pub mod trainer;

pub use error::TrainError;
pub use evaluate::{
    EvalOptions, OutputCache, evaluate_run, evaluate_run_with, evaluate_runs, evaluate_weights,
    evaluate_weights_with,
};
pub use stop::StopRequest;
pub use trainer::{SAFE_ON_RESUME, Stopped, TrainOptions, TrainOutcome, resume, train};
