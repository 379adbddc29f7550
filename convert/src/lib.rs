//! `orthrus-convert`: Hugging Face Orthrus (and plain Qwen3) checkpoints to
//! one GGUF file, or with `--split` a llama.cpp-loadable base file plus a
//! diffusion-view head file.
//!
//! - [`hf`]: reading the checkpoint (config, safetensors, tokenizer).
//! - [`recipe`]: the ggml type of each tensor for a file type.
//! - [`names`] and [`metadata`]: what the GGUF file calls things.
//! - [`convert`]: the streaming pipeline.
//! - [`files`]: only regular files read, side files size-limited, inputs never overwritten.

#![forbid(unsafe_code)]

#[cfg(feature = "ggml")]
pub mod convert;
pub mod error;
pub mod files;
pub mod hf;
pub mod metadata;
pub mod names;
pub mod recipe;

#[cfg(feature = "ggml")]
pub use convert::{convert, Options};
pub use error::ConvertError;
pub use recipe::FileType;
