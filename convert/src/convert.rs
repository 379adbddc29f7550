//! A whole conversion: check the checkpoint against its config, plan each
//! tensor's type, then stream rows from safetensors through the quantizer
//! into the GGUF writer(s). Outputs appear under their names only when every
//! file is complete.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use orthrus_kernels::gguf::{GgufWriter, TensorSpec};
use orthrus_kernels::quant;
use orthrus_kernels::schema::{model_tensors, Kind, TensorId};
use orthrus_kernels::GgmlType;

use crate::error::{ConvertError, Result};
use crate::hf::config::ModelConfig;
use crate::hf::safetensors::{decode_into, Checkpoint, Dtype};
use crate::hf::tokenizer::TokenizerInfo;
use crate::metadata::{self, FileRole};
use crate::names::{hf_name, hf_shape};
use crate::recipe::{tensor_type, FileType, Slot};

#[derive(Clone, Debug)]
pub struct Options {
    pub input: PathBuf,
    pub output: PathBuf,
    pub file_type: FileType,
    /// Type of the diffusion view's matrices; `None` follows the AR twins.
    pub head_type: Option<GgmlType>,
    /// Write a plain Qwen3 base file and a separate `.head.gguf`.
    pub split: bool,
    /// `general.name`; defaults to the checkpoint directory's name.
    pub name: Option<String>,
}

/// One tensor to write.
#[derive(Clone, Debug)]
pub struct Planned {
    pub id: TensorId,
    pub hf_name: String,
    pub source: Dtype,
    /// ggml order: `dims[0]` is the row length.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
}

/// What one written file holds.
#[derive(Clone, Debug)]
pub struct FileSummary {
    pub path: PathBuf,
    pub role: FileRole,
    /// File size.
    pub bytes: u64,
    /// Bytes of tensor data (the file minus metadata, tokenizer and padding).
    pub tensor_bytes: u64,
    pub params: u64,
    /// Tensor count per type.
    pub types: BTreeMap<&'static str, usize>,
}

impl FileSummary {
    pub fn bits_per_weight(&self) -> f64 {
        self.tensor_bytes as f64 * 8.0 / self.params.max(1) as f64
    }
}

/// Output rows are produced in chunks of about this many f32 bytes, which
/// bounds memory whatever the tensor size.
const CHUNK_BYTES: u64 = 64 << 20;

/// A flag that, once set (by `orthrus-convert`'s Ctrl-C handler, say),
/// stops a conversion at its next chunk: [`convert`] then returns
/// [`ConvertError::Interrupted`] and its temporary files are removed, as for
/// any other failure.
pub fn interrupt_flag() -> &'static Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(Default::default)
}

/// The head file of a `--split` conversion: `x.gguf` -> `x.head.gguf`.
pub fn head_path(base: &Path) -> PathBuf {
    let name = base
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("model.gguf");
    let stem = name.strip_suffix(".gguf").unwrap_or(name);
    base.with_file_name(format!("{stem}.head.gguf"))
}

/// Checks the checkpoint and returns the tensors to write, in file order.
pub fn plan(cfg: &ModelConfig, ck: &Checkpoint, opts: &Options) -> Result<Vec<Planned>> {
    let diffusion = cfg.orthrus.is_some();
    let ids = model_tensors(cfg.num_layers as u32, cfg.tie_word_embeddings, diffusion);
    let mut planned = Vec::with_capacity(ids.len());
    for id in ids {
        let name = hf_name(id);
        let want = hf_shape(id.kind, cfg);
        let entry = ck.get(&name).ok_or_else(|| {
            let hint = match id.kind {
                Kind::Output => " (config.json says tie_word_embeddings is false)",
                k if k.is_diffusion() => " (config.json says this is an Orthrus model)",
                _ => "",
            };
            ConvertError::tensor(&name, format!("missing from the checkpoint{hint}"))
        })?;
        if entry.shape != want {
            return Err(ConvertError::tensor(
                &name,
                format!(
                    "shape {:?} does not match config.json, which implies {want:?}",
                    entry.shape
                ),
            ));
        }
        let dims: Vec<u64> = want.iter().rev().copied().collect();
        let slot = Slot {
            kind: id.kind,
            layer: id.layer.unwrap_or(0),
            n_layers: cfg.num_layers as u32,
            tied: cfg.tie_word_embeddings,
            row_len: dims[0],
        };
        let ty = tensor_type(opts.file_type, slot, opts.head_type);
        planned.push(Planned {
            id,
            hf_name: name,
            source: entry.dtype,
            dims,
            ty,
        });
    }
    let known: std::collections::HashSet<&str> =
        planned.iter().map(|p| p.hf_name.as_str()).collect();
    if let Some(extra) = ck.names().find(|n| !known.contains(n)) {
        let hint = if extra == "lm_head.weight" {
            " (config.json says tie_word_embeddings is true)"
        } else if extra.contains("_diff.") {
            " (config.json says model_type qwen3, but this looks like an Orthrus checkpoint)"
        } else {
            ""
        };
        return Err(ConvertError::tensor(
            extra,
            format!("is not part of a Qwen3/Orthrus model{hint}"),
        ));
    }
    Ok(planned)
}

/// One output file being written.
struct Output {
    role: FileRole,
    path: PathBuf,
    writer: GgufWriter,
    tensors: Vec<Planned>,
}

/// Runs a conversion. `progress(done, total)` gets output bytes as they are written.
pub fn convert(opts: &Options, progress: &mut dyn FnMut(u64, u64)) -> Result<Vec<FileSummary>> {
    let cfg = ModelConfig::load(&opts.input)?;
    let diffusion = cfg.orthrus.is_some();
    if opts.split && !diffusion {
        return Err(ConvertError::Usage(
            "--split needs an Orthrus checkpoint; this one is plain Qwen3 (convert it without --split)".into(),
        ));
    }
    if opts.head_type.is_some() && !diffusion {
        return Err(ConvertError::Usage(
            "--head-type needs an Orthrus checkpoint; this one is plain Qwen3".into(),
        ));
    }
    let ck = Checkpoint::open(&opts.input)?;
    // The tensors first: the tokenizer's tables are sized by vocab_size,
    // which must then match the embedding.
    let planned = plan(&cfg, &ck, opts)?;
    let tok = TokenizerInfo::load(&opts.input, cfg.vocab_size)?;
    let name = opts.name.clone().unwrap_or_else(|| dir_name(&opts.input));

    let groups: Vec<(FileRole, PathBuf, Vec<Planned>)> = if opts.split {
        let (head, base): (Vec<_>, Vec<_>) =
            planned.into_iter().partition(|p| p.id.kind.is_diffusion());
        vec![
            (FileRole::Base, opts.output.clone(), base),
            (FileRole::Head, head_path(&opts.output), head),
        ]
    } else {
        vec![(FileRole::Whole, opts.output.clone(), planned)]
    };
    for (_, path, _) in &groups {
        crate::files::check_output(&opts.input, &ck.paths(), path)?;
    }
    let mut outputs = Vec::new();
    for (role, path, tensors) in groups {
        let kv = metadata::build(&cfg, &tok, opts.file_type, &name, role);
        let specs: Vec<TensorSpec> = tensors
            .iter()
            .map(|p| TensorSpec {
                name: p.id.gguf_name(),
                dims: p.dims.clone(),
                ty: p.ty,
            })
            .collect();
        let writer = GgufWriter::create(&path, &kv, &specs)?;
        outputs.push(Output {
            role,
            path,
            writer,
            tensors,
        });
    }

    let total: u64 = outputs.iter().map(|o| o.writer.total_bytes()).sum();
    let mut done_before = 0;
    for out in &mut outputs {
        for p in &out.tensors {
            write_tensor(&ck, p, &mut out.writer, &mut |w| {
                progress(done_before + w, total)
            })?;
        }
        done_before += out.writer.total_bytes();
    }
    // Rename only once every file is complete, so a failure leaves no
    // half-set of outputs behind.
    let mut summaries = Vec::new();
    for out in outputs {
        let bytes = out.writer.total_bytes();
        out.writer.finish()?;
        let mut types = BTreeMap::new();
        for p in &out.tensors {
            *types.entry(p.ty.name()).or_insert(0) += 1;
        }
        let params = out
            .tensors
            .iter()
            .map(|p| p.dims.iter().product::<u64>())
            .sum();
        let tensor_bytes = out
            .tensors
            .iter()
            .map(|p| p.ty.tensor_bytes(&p.dims).unwrap_or(0))
            .sum();
        summaries.push(FileSummary {
            path: out.path,
            role: out.role,
            bytes,
            tensor_bytes,
            params,
            types,
        });
    }
    progress(total, total);
    Ok(summaries)
}

fn dir_name(dir: &Path) -> String {
    std::fs::canonicalize(dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "model".into())
}

/// Streams one tensor, a chunk of rows at a time: a reader thread fetches
/// the next chunk while this one is quantized and written.
fn write_tensor(
    ck: &Checkpoint,
    p: &Planned,
    writer: &mut GgufWriter,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let row_len = p.dims[0];
    let n_rows: u64 = p.dims[1..].iter().product();
    let rows_per_chunk = (CHUNK_BYTES / (row_len * 4)).max(1);
    // The source already is the target type: copy the bytes untouched.
    let verbatim = matches!(
        (p.source, p.ty),
        (Dtype::BF16, GgmlType::BF16) | (Dtype::F16, GgmlType::F16) | (Dtype::F32, GgmlType::F32)
    );
    let row_bytes = (row_len * p.source.size()) as usize;
    std::thread::scope(|s| {
        // One chunk waits in the channel while the next is read: at most three in memory.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<(u64, Vec<u8>)>>(1);
        s.spawn(move || {
            let mut first = 0;
            while first < n_rows {
                let count = rows_per_chunk.min(n_rows - first);
                let mut raw = Vec::new();
                let read = ck.read_rows_raw(&p.hf_name, first, count, &mut raw);
                let failed = read.is_err();
                // A closed channel means the consumer stopped (an error, Ctrl-C).
                if tx.send(read.map(|()| (count, raw))).is_err() || failed {
                    return;
                }
                first += count;
            }
        });
        let mut out = Vec::new();
        for chunk in rx {
            if interrupt_flag().load(Ordering::Relaxed) {
                return Err(ConvertError::Interrupted);
            }
            let (count, raw) = chunk?;
            let bytes = if verbatim {
                &raw
            } else {
                out.clear();
                // Each quantizer task widens its own rows, in cache.
                let fill = |first: usize, rows: &mut [f32]| {
                    decode_into(p.source, &raw[first * row_bytes..], rows)
                };
                quant::quantize_rows_with(p.ty, row_len as usize, count as usize, &mut out, fill)
                    .map_err(|source| ConvertError::Quant {
                    name: p.hf_name.clone(),
                    source,
                })?;
                &out
            };
            writer.write_data(bytes)?;
            progress(writer.bytes_written());
        }
        Ok(())
    })
}
