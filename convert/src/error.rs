use std::path::PathBuf;

use orthrus_kernels::gguf::GgufError;
#[cfg(feature = "ggml")]
use orthrus_kernels::quant::QuantError;

/// Everything that can stop a conversion. Each message names the file, key or
/// tensor at fault and, where it helps, what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The I/O error's text is in the message, not a `source`: printed as
    /// a chain (`{:#}`), it would appear twice.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {msg}")]
    BadFile { path: PathBuf, msg: String },
    #[error("tensor {name}: {msg}")]
    Tensor { name: String, msg: String },
    #[cfg(feature = "ggml")]
    #[error("tensor {name}: {source}")]
    Quant { name: String, source: QuantError },
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{0}")]
    Usage(String),
    /// [`crate::convert::interrupt_flag`] was set (Ctrl-C): the outputs were left alone.
    #[error("interrupted; no output written")]
    Interrupted,
}

impl ConvertError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ConvertError::Io {
            path: path.into(),
            error: source,
        }
    }

    pub(crate) fn bad_file(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        ConvertError::BadFile {
            path: path.into(),
            msg: msg.into(),
        }
    }

    pub(crate) fn tensor(name: impl Into<String>, msg: impl Into<String>) -> Self {
        ConvertError::Tensor {
            name: name.into(),
            msg: msg.into(),
        }
    }
}

pub type Result<T, E = ConvertError> = std::result::Result<T, E>;
