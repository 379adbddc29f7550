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
    /// CPU threads (default: the physical cores, or 1 with every layer on
    /// the GPU; at most the logical cores).
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
    /// kernels, so Orthrus output equals AR output bit for bit (without it,
    /// the two can part where the AR top-2 logits are within the kernels'
    /// batch-size rounding). Slower; needs an f32 cache.
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
            exact: self.exact,
        };
        let model = Model::load(&self.model, &opts)?;
        let n_ctx = self
            .ctx_size
            .unwrap_or_else(|| 4096.min(model.hparams.context_length));
        let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = match self.threads {
            // With every layer on a GPU the CPU's part of a pass is the
            // embedding lookup, too small to share; a pool's workers, which
            // spin between passes, took the cores from the thread that
            // drives the GPU and stalled its passes.
            None if model.fully_offloaded => 1,
            None => physical_cores().unwrap_or(logical).min(logical),
            Some(t) if (1..=logical).contains(&t) => t,
            Some(t) => {
                return Err(EngineError::Usage(format!(
                    "-t {t}: use 1 to {logical} threads (the logical cores of this machine)"
                )))
            }
        };
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

/// Physical cores (llama.cpp's default thread count: a second hyperthread
/// of a core adds little to matmuls and makes threads wait at barriers), as
/// Linux lists them: distinct sets of sibling threads.
fn physical_cores() -> Option<usize> {
    let cpus = std::fs::read_dir("/sys/devices/system/cpu").ok()?;
    let mut cores = std::collections::HashSet::new();
    for cpu in cpus.flatten() {
        let name = cpu.file_name();
        let name = name.to_string_lossy();
        if name
            .strip_prefix("cpu")
            .is_none_or(|n| n.parse::<u32>().is_err())
        {
            continue;
        }
        if let Ok(siblings) =
            std::fs::read_to_string(cpu.path().join("topology/thread_siblings_list"))
        {
            cores.insert(siblings.trim().to_string());
        }
    }
    (!cores.is_empty()).then_some(cores.len())
}

/// The command line with llama.cpp's spelling `-ngl N` accepted for `--ngl N`.
pub fn llama_style_args() -> Vec<OsString> {
    std::env::args_os()
        .map(|a| if a == "-ngl" { "--ngl".into() } else { a })
        .collect()
}
