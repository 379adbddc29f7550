//! The model options both binaries (`orthrus`, `orthrus-server`) take, and
//! loading a model with them.

use std::ffi::OsString;
use std::path::PathBuf;

use orthrus_kernels::GgmlType;

use crate::{EngineError, LoadOptions, Model};

#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    /// GGUF model (from orthrus-convert, or a plain Qwen3 GGUF with --head).
    #[arg(short, long)]
    pub model: PathBuf,
    /// Diffusion-view head file (`.head.gguf`) for a plain Qwen3 model.
    #[arg(long)]
    pub head: Option<PathBuf>,
    /// Device: CPU, CUDA0, Metal, ... (default: the first GPU, else the CPU).
    #[arg(long)]
    pub device: Option<String>,
    /// Layers on the GPU, counted from the last (layers + 1 includes the output layer).
    #[arg(long = "n-gpu-layers", visible_alias = "ngl")]
    pub n_gpu_layers: Option<usize>,
    /// CPU threads (default: all cores).
    #[arg(short, long)]
    pub threads: Option<usize>,
    /// Context size in tokens (default: 4096, at most the model's).
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx_size: Option<usize>,
    /// Largest batch of prompt tokens per forward pass.
    #[arg(short = 'b', long = "batch-size", default_value_t = 512)]
    pub batch_size: usize,
    /// KV cache type: f16, q8_0 or f32 (default: f16; f32 with --exact).
    #[arg(long = "cache-type")]
    pub cache_type: Option<String>,
    /// Exact decoding: AR steps and verify passes run batch-invariant
    /// kernels, so Orthrus output equals AR output bit for bit on a GPU too
    /// (on the CPU it always does). Slower on a GPU; needs an f32 cache.
    #[arg(long)]
    pub exact: bool,
}

/// A model loaded with [`ModelArgs`], and the settings for its sessions.
pub struct Loaded {
    pub model: Model,
    pub cache_type: GgmlType,
    pub n_ctx: usize,
    pub threads: usize,
    pub batch: usize,
    /// Sessions decode in exact mode (`Session::set_exact`).
    pub exact: bool,
}

impl ModelArgs {
    pub fn load(&self) -> Result<Loaded, EngineError> {
        let default = if self.exact { "f32" } else { "f16" };
        let cache_type = match self.cache_type.as_deref().unwrap_or(default) {
            "f16" => GgmlType::F16,
            "f32" => GgmlType::F32,
            "q8_0" => GgmlType::Q8_0,
            other => {
                return Err(EngineError::Usage(format!(
                    "--cache-type {other}: use f16, q8_0 or f32"
                )))
            }
        };
        if self.exact && cache_type != GgmlType::F32 {
            return Err(EngineError::Usage(format!(
                "--exact needs --cache-type f32, not {}",
                cache_type.name()
            )));
        }
        let opts = LoadOptions {
            device: self.device.clone(),
            n_gpu_layers: self.n_gpu_layers,
            head: self.head.clone(),
        };
        let model = Model::load(&self.model, &opts)?;
        let n_ctx = self
            .ctx_size
            .unwrap_or_else(|| 4096.min(model.hparams.context_length));
        let threads = self
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(4, |n| n.get()));
        Ok(Loaded {
            model,
            cache_type,
            n_ctx,
            threads,
            batch: self.batch_size,
            exact: self.exact,
        })
    }
}

/// The command line with llama.cpp's spelling `-ngl N` accepted for `--ngl N`.
pub fn llama_style_args() -> Vec<OsString> {
    std::env::args_os()
        .map(|a| if a == "-ngl" { "--ngl".into() } else { a })
        .collect()
}
