//! oodforge experiments: hyperparameter sweeps run by local workers or as a SLURM array job,
//! and reports that put our numbers beside a paper's.

pub mod report;
pub mod sweep;

pub use report::{Ours, Report, ReportError, TableSpec};
pub use sweep::{Sweep, SweepError, SweepRun};
