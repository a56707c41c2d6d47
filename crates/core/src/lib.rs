//! oodforge core: the experiment config schema and loader, backend selection and seeded random
//! streams, shared by every other crate.

pub mod backend;
pub mod config;
mod group;
pub mod rng;

pub use backend::{BackendError, SelectedBackend};
pub use config::{ConfigError, ExperimentConfig, ResolvedConfig};
pub use group::Group;
