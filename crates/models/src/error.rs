//! Errors of the models crate: loading weights.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read checkpoint {path}: {problem}")]
    Read { path: PathBuf, problem: String },

    /// The checkpoint does not fit the network. Names are the checkpoint's (PyTorch) keys; each
    /// list is cut after a few entries with a count of the rest.
    #[error(
        "checkpoint {path} does not fit the {network} network:{}{}{}\n  (the network was built from [model]; check `backbone`, `width`, the number of classes, or set `model.weights.reset_head = true` to keep a fresh classifier head)",
        list("missing (the network needs, the checkpoint lacks)", missing),
        list("unexpected (in the checkpoint, not in the network)", unexpected),
        list("mis-shaped", mismatched)
    )]
    Mismatch {
        path: PathBuf,
        network: String,
        missing: Vec<String>,
        unexpected: Vec<String>,
        /// `key: checkpoint [a, b] vs network [c, d]`
        mismatched: Vec<String>,
    },
}

fn list(what: &str, keys: &[String]) -> String {
    const SHOWN: usize = 12;
    if keys.is_empty() {
        return String::new();
    }
    let mut s = format!("\n  {} {what}:", keys.len());
    for k in keys.iter().take(SHOWN) {
        s.push_str(&format!("\n    {k}"));
    }
    if keys.len() > SHOWN {
        s.push_str(&format!("\n    ... and {} more", keys.len() - SHOWN));
    }
    s
}
