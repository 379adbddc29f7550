//! GGUF files (version 3, also reads 2): read over mmap, written by streaming.
//!
//! Layout (little endian): magic `GGUF`, u32 version, u64 tensor count, u64
//! metadata count, the metadata pairs (string key, u32 type, value), the tensor
//! infos (name, u32 n_dims, n_dims × u64 ne, u32 ggml type, u64 offset relative
//! to the data section), zero padding to `general.alignment`, then the data
//! section, each tensor padded to the alignment as llama.cpp does.
//!
//! The reader treats the file as hostile: every length, count and offset is
//! checked against the bytes that remain before anything is allocated, so a
//! corrupt or malicious file gives a [`GgufError::Malformed`] saying what is
//! wrong and where, never a panic or an out-of-memory abort.

mod reader;
mod value;
mod writer;

use std::path::PathBuf;

pub use reader::{GgufFile, TensorInfo};
pub use value::{GgufType, GgufValue};
pub use writer::{GgufWriter, TensorSpec};

/// Alignment of tensor data when the file has no `general.alignment` key.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// Metadata key that overrides [`DEFAULT_ALIGNMENT`] (a u32 power of two).
pub const ALIGNMENT_KEY: &str = "general.alignment";

/// Deepest nesting of arrays the reader accepts and the writer writes: deep
/// enough for any real metadata, shallow enough that recursion cannot
/// exhaust the stack on a hostile file.
pub const MAX_ARRAY_DEPTH: usize = 8;

/// Longest tensor name ggml can hold (`GGML_MAX_NAME` minus the NUL); the
/// writer refuses longer names because llama.cpp would refuse the file.
pub const MAX_TENSOR_NAME: usize = 63;

/// The magic bytes at the start of every GGUF file.
pub const MAGIC: [u8; 4] = *b"GGUF";

/// The version this crate writes.
pub const VERSION: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The operating system refused a read, write, sync or rename.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid GGUF; the message says what and where (and, for
    /// [`GgufFile::open`], starts with the path).
    #[error("malformed GGUF: {0}")]
    Malformed(String),
    /// The writer was given something it cannot write (duplicate names, bad
    /// shapes, too many or too few data bytes, ...).
    #[error("invalid GGUF contents: {0}")]
    Invalid(String),
}

impl GgufError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> GgufError {
        GgufError::Io {
            path: path.into(),
            source,
        }
    }
}

/// `n` rounded up to a multiple of `align` (a power of two); `None` on overflow.
pub(crate) fn align_up(n: u64, align: u64) -> Option<u64> {
    debug_assert!(align.is_power_of_two());
    Some(n.checked_add(align - 1)? & !(align - 1))
}
