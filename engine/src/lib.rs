//! The Orthrus engine: a Qwen3 model with its diffusion view on ggml
//! backends, one shared KV cache, and lossless dual-view decoding.
//!
//! - [`model`]: loading a GGUF (or a Qwen3 base plus a head file) onto devices.
//! - [`kv_cache`]: the cache both views share.
//! - [`graph`]: the forward pass of both views, written once;
//!   [`backend_layout`]: how it is laid out for ggml's backends' kernels.
//! - [`session`]: forward passes over a model and cache on a scheduler.
//! - [`decode`]: AR and Orthrus generation, greedy and sampled; [`sampling`];
//!   [`draft_policy`]: the draft length of each step in auto mode.
//! - [`tokenizer`], [`chat`]: text in and out; [`template`] and
//!   [`template_process`]: the chat template, bounded.
//! - [`options`]: the model options of the command-line tools;
//!   [`switches`]: the environment switches, all of them.

#![forbid(unsafe_code)]

pub mod backend_layout;
pub mod chat;
pub mod decode;
pub mod draft_policy;
pub mod graph;
pub mod hparams;
pub mod kv_cache;
pub mod model;
pub mod options;
pub mod sampling;
pub mod session;
pub mod switches;
pub mod template;
pub mod template_process;
pub mod tokenizer;

pub use decode::{generate, Finish, GenerateParams, Generation, Mode, Stats, Step};
pub use graph::{Logits, View};
pub use kv_cache::KvCache;
pub use model::{LoadOptions, Model};
pub use sampling::SamplingParams;
pub use session::Session;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The model file(s) cannot be used; the message names the file.
    #[error("{0}")]
    Model(String),
    /// A setting or argument is out of range.
    #[error("{0}")]
    Usage(String),
    #[error("the prompt needs {needed} positions but the context holds {n_ctx} (raise -c)")]
    ContextFull { needed: usize, n_ctx: usize },
    #[error(transparent)]
    Ggml(#[from] orthrus_kernels::ggml::GgmlError),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
}

impl From<template::TemplateError> for EngineError {
    fn from(e: template::TemplateError) -> EngineError {
        EngineError::Template(e.0)
    }
}
