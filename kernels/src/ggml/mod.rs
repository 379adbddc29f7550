//! Safe ggml: graphs built in [`Context`]s, weights and caches held in
//! [`TensorStore`]s on backend buffers, graphs run by a [`Scheduler`] over one
//! or more [`Backend`]s (CPU, CUDA, Metal, ...).
//!
//! ggml aborts the process on a failed internal assertion, so every operation
//! here checks ggml's preconditions first and panics with a message instead:
//! such a panic is a bug in the graph builder, never a reaction to user input
//! (files are validated before any graph is built).

mod backend;
mod context;
mod sched;
mod store;

pub use backend::{
    load_backends, orthrus_cuda, set_cuda_matmul, Backend, Buffer, BufferType, CudaMatmul, Device,
    DeviceKind, ThreadPool,
};
pub use context::{Context, Element, OwnedGraph, Tensor};
pub use sched::{Input, Output, Scheduler};
pub use store::{StoreId, TensorStore};

#[derive(Debug, thiserror::Error)]
pub enum GgmlError {
    #[error("no ggml device named {name:?} (available: {available})")]
    NoDevice { name: String, available: String },
    #[error("could not start a ggml backend on device {0}")]
    BackendInit(String),
    #[error("could not allocate {bytes} bytes on {device} for {what}")]
    Alloc {
        device: String,
        bytes: usize,
        what: String,
    },
    #[error("the scheduler could not allocate the graph's buffers")]
    GraphAlloc,
    #[error("graph computation failed (ggml status {0})")]
    Compute(i32),
}

/// Tensor element types used in graphs. Weights may be any [`crate::GgmlType`].
pub use crate::types::GgmlType as Type;
