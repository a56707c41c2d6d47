//! Data errors. Every variant names the file (or folder) it is about; corrupt-file errors also
//! name the byte offset, line or entry and say what was expected, so a user can find the problem
//! without a debugger.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or folder the config or benchmark needs is not there.
    #[error(
        "{}: not found ({what})\n  expected layout:\n{layout}\n  how to get it: {hint}",
        path.display()
    )]
    Missing {
        path: PathBuf,
        what: String,
        layout: String,
        hint: String,
    },
    /// The file exists but its content is not what the format says.
    #[error("{}: {location}: {problem}", path.display())]
    Corrupt {
        path: PathBuf,
        /// "byte offset 30729", "line 12", "element `X`", "image 17".
        location: String,
        problem: String,
    },
    /// An image file that the image decoder cannot read.
    #[error("{}: cannot decode image: {message}", path.display())]
    Decode { path: PathBuf, message: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A configuration that cannot describe a dataset (unknown benchmark, bad path, ...).
    #[error("{0}")]
    Config(String),
}

impl DataError {
    pub fn corrupt(path: &Path, location: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Corrupt {
            path: path.to_owned(),
            location: location.into(),
            problem: problem.into(),
        }
    }

    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// A missing path, with the layout the format expects and where the data comes from.
    pub fn missing(path: &Path, what: &str, layout: &str, hint: &str) -> Self {
        Self::Missing {
            path: path.to_owned(),
            what: what.to_owned(),
            layout: layout
                .lines()
                .map(|l| format!("    {l}"))
                .collect::<Vec<_>>()
                .join("\n"),
            hint: hint.to_owned(),
        }
    }
}

/// Read a whole file, turning "not found" into `DataError::Missing` with the given layout.
pub fn read_file(path: &Path, what: &str, layout: &str, hint: &str) -> Result<Vec<u8>, DataError> {
    match std::fs::read(path) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(DataError::missing(path, what, layout, hint))
        }
        Err(e) => Err(DataError::io(path, e)),
    }
}

/// A file's bytes as UTF-8 text; otherwise an error naming the byte offset where it stops being so.
pub fn utf8_text(path: &Path, bytes: Vec<u8>) -> Result<String, DataError> {
    String::from_utf8(bytes).map_err(|e| {
        DataError::corrupt(
            path,
            format!("byte offset {}", e.utf8_error().valid_up_to()),
            "not UTF-8 text",
        )
    })
}
