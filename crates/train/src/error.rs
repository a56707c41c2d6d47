use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] oodforge_core::ConfigError),
    #[error(transparent)]
    Backend(#[from] oodforge_core::BackendError),
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    #[error(transparent)]
    Eval(#[from] oodforge_eval::EvalError),
    /// A command-line option that cannot apply (names the flag and what is allowed).
    #[error("{0}")]
    Options(String),
    #[error(transparent)]
    Plot(#[from] oodforge_eval::plots::PlotError),
    #[error(transparent)]
    Cache(#[from] oodforge_eval::cache::CacheError),
    #[error(transparent)]
    Data(#[from] oodforge_data::DataError),
    #[error(transparent)]
    Model(#[from] oodforge_models::ModelError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error(
        "{path} already holds a run (it has {what}); nothing was overwritten\n  hint: `train --resume {path}` continues it, `--out DIR` starts a new run elsewhere"
    )]
    RunExists { path: PathBuf, what: String },
    #[error("{path}: {message}")]
    Resume { path: PathBuf, message: String },
    /// A NaN or infinite loss or gradient norm: the step, the loss pieces and the checkpoint
    /// to go back to.
    #[error(
        "the {what} became {value} at epoch {epoch}, step {step} (loss pieces: {pieces}); training stopped. {checkpoint}\n  hint: lower optim.lr or check the data"
    )]
    NonFinite {
        /// "loss" or "gradient norm".
        what: &'static str,
        value: f32,
        epoch: usize,
        step: usize,
        pieces: String,
        /// Which checkpoint is the last good one, and how to continue from it.
        checkpoint: String,
    },
    #[error(
        "{path}: `eval --config` evaluates the weights named by `model.weights`, and this config has none\n  hint: add `weights = {{ path = \"model.ckpt\" }}` to [model], or `--set model.weights.path=FILE`"
    )]
    NoWeights { path: PathBuf },
    #[error("{path}: the run has no finished checkpoint to evaluate")]
    NothingToEvaluate { path: PathBuf },
}
