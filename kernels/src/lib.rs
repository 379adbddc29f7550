//! Safe Rust over ggml: the only crate of the workspace with `unsafe`.
//!
//! - [`types`]: ggml tensor types and their block layout.
//! - [`gguf`]: GGUF files, read over mmap (never trusting the file) and written by streaming.
//! - [`quant`]: ggml's own quantizers and dequantizers, rows split across cores.
//! - [`schema`]: the metadata keys and tensor names of Qwen3 / Orthrus GGUF files.

#[cfg(feature = "ggml")]
pub mod ggml;
pub mod gguf;
#[cfg(feature = "ggml")]
pub mod quant;
pub mod schema;
pub mod types;

pub use types::GgmlType;
