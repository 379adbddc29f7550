//! Loading a Qwen3 / Orthrus GGUF into backend buffers.

use std::path::Path;

use orthrus_kernels::ggml::{load_backends, BufferType, Device, DeviceKind, StoreId, TensorStore};
use orthrus_kernels::gguf::GgufFile;
use orthrus_kernels::schema::{keys, limits, Kind, Layout, TensorId, TYPE_HEAD};
use orthrus_kernels::GgmlType;

use crate::hparams::Hparams;
use crate::tokenizer::{GgmlVocab, Tokenizer};
use crate::EngineError;

/// Where the weights go.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// A ggml device name (`CPU`, `CUDA0`, `Metal`, ...); default: the first GPU, else the CPU.
    pub device: Option<String>,
    /// Layers kept on the GPU, counted from the last; `n_layer + 1` also puts
    /// the output layer there (llama.cpp's `-ngl`). Default: everything.
    pub n_gpu_layers: Option<usize>,
    /// A Qwen3 base file plus this head file holding the diffusion view.
    pub head: Option<std::path::PathBuf>,
    /// Keep CPU weights in ggml's plain layout: its repacked layouts'
    /// kernels sum a row differently by batch size, which exact decoding
    /// cannot have (see [`crate::Session::set_exact`]).
    pub exact: bool,
}

/// Projections that read the same input: one matrix whose rows are the
/// parts' rows one after the other (one matmul per pass instead of one per
/// part; a decoding pass is bound by per-kernel latency), or the parts apart
/// when their weight types differ (Q4_K_M gives some `attn_v` Q6_K).
#[derive(Clone, Copy, Debug)]
pub enum Stacked<const N: usize> {
    Fused(StoreId),
    Apart([StoreId; N]),
}

impl<const N: usize> Stacked<N> {
    /// The tensors: the one matrix, or the parts.
    fn ids(&self) -> Vec<StoreId> {
        match self {
            Stacked::Fused(id) => vec![*id],
            Stacked::Apart(parts) => parts.to_vec(),
        }
    }
}

/// q, k and v of one view of one layer: stacked as far as their weight
/// types allow.
#[derive(Clone, Copy, Debug)]
pub enum Qkv {
    /// `[q; k; v]`, or each apart.
    Stacked(Stacked<3>),
    /// `[q; k]` and v apart: Q4_K_M gives `attn_v` Q6_K in about half the
    /// layers, where q and k would otherwise be apart too (a matmul and a
    /// quantizing of its input more per pass).
    QkThenV { qk: StoreId, v: StoreId },
}

impl Qkv {
    fn ids(&self) -> Vec<StoreId> {
        match self {
            Qkv::Stacked(s) => s.ids(),
            Qkv::QkThenV { qk, v } => vec![*qk, *v],
        }
    }
}

/// The attention projections of one view of one layer.
#[derive(Clone, Copy, Debug)]
pub struct Attention {
    pub qkv: Qkv,
    pub o: StoreId,
    pub q_norm: StoreId,
    pub k_norm: StoreId,
}

#[derive(Clone, Copy, Debug)]
pub struct Layer {
    pub attn_norm: StoreId,
    pub ar: Attention,
    /// The diffusion view's projections (`_diff` tensors); `None` in plain Qwen3.
    pub diffusion: Option<Attention>,
    pub ffn_norm: StoreId,
    /// gate, up.
    pub ffn_gate_up: Stacked<2>,
    pub ffn_down: StoreId,
    /// Index into [`Model::devices`] of the device holding this layer.
    pub device: usize,
}

/// A loaded model: hyperparameters, weights on their devices, tokenizer data.
pub struct Model {
    pub hparams: Hparams,
    /// The path of the model file, as errors name it.
    pub file_name: String,
    pub(crate) weights: TensorStore,
    pub(crate) tok_embd: StoreId,
    pub(crate) output_norm: StoreId,
    pub(crate) output: StoreId,
    /// The LM head is the token embedding (tied), `output` on the head's
    /// device: a lookup there needs no copy from the CPU.
    pub(crate) output_is_embd: bool,
    pub(crate) layers: Vec<Layer>,
    /// The devices in use, in the scheduler's order (the CPU last).
    pub devices: Vec<Device>,
    /// `tokenizer.huggingface.json`, when the file has it.
    pub tokenizer_json: Option<String>,
    /// The `tokenizer.ggml.*` arrays, used when the file has no tokenizer JSON.
    pub vocab: Option<GgmlVocab>,
    /// The BOS id, when `tokenizer.ggml.add_bos_token` puts it before prompts.
    pub bos_prefix: Option<u32>,
    pub chat_template: Option<String>,
    /// Type of the attention weights (for reports).
    pub weight_type: GgmlType,
    /// Whether some weights sit in a CPU layout repacked for its SIMD or AMX
    /// kernels (llama.cpp's "extra buffer types"), as they do unless loaded
    /// with [`LoadOptions::exact`].
    pub repacked: bool,
    /// Loaded with [`LoadOptions::exact`].
    pub exact: bool,
    /// Every layer and the output layer sit on a GPU: the CPU only looks up
    /// the tokens' embeddings.
    pub fully_offloaded: bool,
}

fn open(path: &Path) -> Result<GgufFile, EngineError> {
    GgufFile::open(path).map_err(|e| EngineError::Model(e.to_string()))
}

impl Model {
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Model, EngineError> {
        let name = path.display().to_string();
        let file = open(path)?;
        if file.get(keys::TYPE).and_then(|v| v.as_str()) == Some(TYPE_HEAD) {
            return Err(EngineError::Model(format!(
                "{name} is an Orthrus head file; pass the Qwen3 base with -m and this file with --head"
            )));
        }
        let mut hp = Hparams::read(&file, &name)?;
        let head = match &opts.head {
            Some(head_path) => {
                let head_name = head_path.display().to_string();
                let head = open(head_path)?;
                let hh = Hparams::read(&head, &head_name)?;
                let same = (hh.n_layer, hh.n_embd, hh.n_head, hh.n_head_kv, hh.head_dim)
                    == (hp.n_layer, hp.n_embd, hp.n_head, hp.n_head_kv, hp.head_dim);
                if !same || hh.orthrus.is_none() {
                    return Err(EngineError::Model(format!(
                        "head {head_name} does not match {name}: head has {} layers, {} wide, {}/{} heads of {}; base has {} layers, {} wide, {}/{} heads of {}{}",
                        hh.n_layer, hh.n_embd, hh.n_head, hh.n_head_kv, hh.head_dim,
                        hp.n_layer, hp.n_embd, hp.n_head, hp.n_head_kv, hp.head_dim,
                        if hh.orthrus.is_none() { " (and it has no block size or mask token)" } else { "" }
                    )));
                }
                if hp.orthrus.is_some() && file.tensor("blk.0.attn_q_diff.weight").is_some() {
                    return Err(EngineError::Model(format!(
                        "{name} already has a diffusion view; drop --head"
                    )));
                }
                hp.orthrus = hh.orthrus;
                // A base that lists no end ids of its own (llama.cpp writes
                // none) takes the head's list, which is the checkpoint's.
                let (head_eos, head_listed) =
                    crate::hparams::eos_ids(&head, &head_name, hp.n_vocab)?;
                if head_listed && !crate::hparams::eos_ids(&file, &name, hp.n_vocab)?.1 {
                    hp.eos_ids = head_eos;
                    if let Some(id) = file.get(keys::EOS_ID).and_then(|v| v.as_u64()) {
                        if !hp.eos_ids.contains(&(id as u32)) {
                            hp.eos_ids.push(id as u32);
                        }
                    }
                } else if hp.eos_ids.is_empty() {
                    hp.eos_ids = head_eos;
                }
                Some((head, head_name))
            }
            None => None,
        };
        if let Some(o) = hp.orthrus {
            if o.mask_token as usize >= hp.n_vocab {
                return Err(EngineError::Model(format!(
                    "{name}: mask token {} is outside the {}-row embedding",
                    o.mask_token, hp.n_vocab
                )));
            }
        }

        load_backends(
            std::env::current_exe()
                .ok()
                .as_deref()
                .and_then(Path::parent),
        );
        let cpu = Device::cpu();
        let gpu = match opts.device.as_deref() {
            None => Device::first_gpu(),
            Some(n) => Some(Device::by_name(n)?).filter(|d| d.kind() != DeviceKind::Cpu),
        };
        let n_layer = hp.n_layer;
        let ngl = match (gpu, opts.n_gpu_layers) {
            (_, Some(n)) if n > n_layer + 1 => {
                return Err(EngineError::Usage(format!(
                    "-ngl {n} is beyond this model's {n_layer} layers (+1 for the output layer)"
                )))
            }
            (None, _) => 0,
            (Some(_), n) => n.unwrap_or(n_layer + 1),
        };
        let devices: Vec<Device> = gpu.into_iter().chain([cpu]).collect();
        let cpu_idx = devices.len() - 1;
        let layer_dev = |il: usize| {
            if ngl > 0 && il + ngl.min(n_layer) >= n_layer {
                0
            } else {
                cpu_idx
            }
        };
        let out_dev = if ngl > n_layer { 0 } else { cpu_idx };

        let diff_file = head
            .as_ref()
            .map(|(f, n)| (f, n.as_str()))
            .unwrap_or((&file, name.as_str()));
        let has_diff = diff_file.0.tensor("blk.0.attn_q_diff.weight").is_some();
        if hp.orthrus.is_some() != has_diff {
            return Err(EngineError::Model(format!(
                "{}: the block size and mask token keys and the _diff tensors must come together (keys: {}, tensors: {})",
                diff_file.1,
                hp.orthrus.is_some(),
                has_diff
            )));
        }
        // Every layer has its tensors in the files: a layer count beyond
        // them is refused before anything is sized by it.
        let n_tensors = file.tensors().len() + head.as_ref().map_or(0, |(h, _)| h.tensors().len());
        let per_layer = Kind::AR_LAYER.len() + if has_diff { Kind::DIFF_LAYER.len() } else { 0 };
        if n_layer * per_layer > n_tensors {
            return Err(EngineError::Model(format!(
                "{name}: key {} says {n_layer} layers, but the file holds {n_tensors} tensors ({per_layer} per layer)",
                block_count_key(&file)
            )));
        }
        let tied = file.tensor("output.weight").is_none();
        // Every tensor the model needs: its id, GGUF name, and the file holding it.
        let mut expected: Vec<(TensorId, String, &GgufFile, &str)> = Vec::new();
        for id in orthrus_kernels::schema::model_tensors(n_layer as u32, tied, false) {
            expected.push((id, id.gguf_name(), &file, &name));
        }
        if has_diff {
            for il in 0..n_layer as u32 {
                for k in Kind::DIFF_LAYER {
                    let id = TensorId::layer(il, k);
                    expected.push((id, id.gguf_name(), diff_file.0, diff_file.1));
                }
            }
        }
        let wanted: std::collections::HashSet<(*const GgufFile, &str)> = expected
            .iter()
            .map(|(_, tname, f, _)| (*f as *const GgufFile, tname.as_str()))
            .collect();
        for (f, n) in std::iter::once((&file, name.as_str()))
            .chain(head.as_ref().map(|(f, n)| (f, n.as_str())))
        {
            if let Some(t) = f
                .tensors()
                .iter()
                .find(|t| !wanted.contains(&(f as *const GgufFile, t.name.as_str())))
            {
                return Err(EngineError::Model(format!(
                    "{n}: unexpected tensor {}",
                    t.name
                )));
            }
        }

        // Validate every tensor first, then lay them out on their devices.
        let mut found = std::collections::HashMap::new();
        let mut weight_type = GgmlType::F32;
        for &(id, ref tname, f, fname) in &expected {
            let info = f
                .tensor(tname)
                .ok_or_else(|| EngineError::Model(format!("{fname}: missing tensor {tname}")))?;
            let want = expected_shape(&hp, id.kind);
            if info.dims != want {
                return Err(EngineError::Model(format!(
                    "{fname}: tensor {tname} has shape {:?}, expected {want:?}",
                    info.dims
                )));
            }
            if !id.kind.is_norm() && !limits::is_weight_type(info.ty) {
                return Err(EngineError::Model(format!(
                    "{fname}: tensor {tname} is {}, which ggml cannot multiply by",
                    info.ty.name()
                )));
            }
            if id.kind.is_norm() && info.ty != GgmlType::F32 {
                return Err(EngineError::Model(format!(
                    "{fname}: norm tensor {tname} is {}, expected f32",
                    info.ty.name()
                )));
            }
            if id.kind == Kind::AttnQ {
                weight_type = info.ty;
            }
            found.insert(
                id,
                (
                    tname.as_str(),
                    info.ty,
                    info.dims.clone(),
                    f.tensor_data(info),
                ),
            );
        }
        let device_of = |id: TensorId| match (id.layer, id.kind) {
            (Some(il), _) => layer_dev(il as usize),
            (None, Kind::TokenEmbd) => cpu_idx,
            (None, _) => out_dev,
        };
        let mut l = Placement {
            store: TensorStore::new(expected.len() + 2),
            writes: Vec::new(),
            found: &found,
            devices: &devices,
            device_of: &device_of,
            extra: devices
                .iter()
                .map(|d| {
                    if opts.exact {
                        Vec::new()
                    } else {
                        d.extra_buffer_types()
                    }
                })
                .collect(),
            repacked: false,
        };
        let mut layers = Vec::with_capacity(n_layer);
        for il in 0..n_layer {
            let lid = |k| TensorId::layer(il as u32, k);
            let attention = |l: &mut Placement, kinds: [Kind; 6], suffix: &str| Attention {
                qkv: l.qkv([lid(kinds[0]), lid(kinds[1]), lid(kinds[2])], il, suffix),
                o: l.add(lid(kinds[3])),
                q_norm: l.add(lid(kinds[4])),
                k_norm: l.add(lid(kinds[5])),
            };
            // The AR projections are the diffusion ones' twins, in the same order.
            let ar_kinds = Kind::DIFF_LAYER.map(|k| k.ar_twin().expect("a diffusion kind"));
            layers.push(Layer {
                attn_norm: l.add(lid(Kind::AttnNorm)),
                ar: attention(&mut l, ar_kinds, ""),
                diffusion: has_diff.then(|| attention(&mut l, Kind::DIFF_LAYER, "_diff")),
                ffn_norm: l.add(lid(Kind::FfnNorm)),
                ffn_gate_up: l.stacked(
                    [lid(Kind::FfnGate), lid(Kind::FfnUp)],
                    &format!("blk.{il}.ffn_gate_up.weight"),
                ),
                ffn_down: l.add(lid(Kind::FfnDown)),
                device: layer_dev(il),
            });
        }
        let embd = l.add(TensorId::global(Kind::TokenEmbd));
        let output_norm = l.add(TensorId::global(Kind::OutputNorm));
        // Tied embeddings feed both the input lookup (CPU) and the LM head;
        // when the head sits on the GPU it needs its own copy there.
        let output = if !tied {
            l.add(TensorId::global(Kind::Output))
        } else if out_dev != cpu_idx {
            l.place("output.weight", TensorId::global(Kind::TokenEmbd), out_dev)
        } else {
            embd
        };
        let Placement {
            mut store,
            writes,
            repacked,
            ..
        } = l;
        store.allocate(true)?;
        for (sid, parts) in writes {
            if let [data] = parts[..] {
                store.write_bytes(sid, data);
            } else {
                // A repacking buffer takes a tensor in one write only.
                store.write_bytes(sid, &parts.concat());
            }
        }

        let tokenizer_json = file
            .get(keys::HF_JSON)
            .and_then(|v| v.as_str())
            .map(str::to_string);
        let vocab = match tokenizer_json {
            Some(_) => None,
            None => {
                GgmlVocab::read(&file).map_err(|e| EngineError::Model(format!("{name}: {e}")))?
            }
        };
        let bos_prefix = match file.get(keys::ADD_BOS).and_then(|v| v.as_bool()) {
            Some(true) => match file.get(keys::BOS_ID) {
                None => None,
                Some(v) => Some(
                    v.as_u64()
                        .and_then(|id| u32::try_from(id).ok())
                        .filter(|&id| (id as usize) < hp.n_vocab)
                        .ok_or_else(|| {
                            EngineError::Model(format!(
                                "{name}: key {} holds {v}, which is not a token id of this {}-token vocabulary",
                                keys::BOS_ID,
                                hp.n_vocab
                            ))
                        })?,
                ),
            },
            _ => None,
        };
        Ok(Model {
            tok_embd: embd,
            output_norm,
            output,
            output_is_embd: tied,
            layers,
            devices,
            tokenizer_json,
            vocab,
            bos_prefix,
            chat_template: file
                .get(keys::CHAT_TEMPLATE)
                .and_then(|v| v.as_str())
                .map(str::to_string),
            weight_type,
            repacked,
            exact: opts.exact,
            fully_offloaded: gpu.is_some() && ngl > n_layer,
            weights: store,
            hparams: hp,
            file_name: name,
        })
    }

    /// The tokenizer stored in the file: its Hugging Face JSON when it has
    /// one (our converter's files), else llama.cpp's `tokenizer.ggml.*` arrays.
    pub fn tokenizer(&self) -> Result<Tokenizer, EngineError> {
        let name = &self.file_name;
        let tok = match (&self.tokenizer_json, &self.vocab) {
            (Some(json), _) => Tokenizer::from_json(json).map_err(|e| match e {
                EngineError::Tokenizer(e) => EngineError::Tokenizer(format!(
                    "{name}: key {} is not a valid tokenizer JSON ({e})",
                    keys::HF_JSON
                )),
                e => e,
            }),
            (None, Some(vocab)) => Tokenizer::from_ggml(vocab).map_err(|e| match e {
                EngineError::Tokenizer(e) => EngineError::Tokenizer(format!("{name}: {e}")),
                e => e,
            }),
            (None, None) => Err(EngineError::Tokenizer(format!(
                "{name} has no tokenizer: neither {} nor {}",
                keys::HF_JSON,
                keys::TOKENS
            ))),
        }?;
        Ok(tok.with_bos_prefix(self.bos_prefix))
    }

    /// Whether our batch-invariant CUDA matmul (`CudaMatmul::BatchInvariant`)
    /// takes every weight product: all of Q4_K, Q6_K, Q8_0 and Q4_0, rows a
    /// multiple of 256 values.
    pub fn matmuls_batch_invariant(&self) -> bool {
        let mut ids = vec![self.output];
        for l in &self.layers {
            for a in std::iter::once(&l.ar).chain(l.diffusion.as_ref()) {
                ids.extend(a.qkv.ids());
                ids.push(a.o);
            }
            ids.extend(l.ffn_gate_up.ids());
            ids.push(l.ffn_down);
        }
        ids.iter().all(|&id| {
            let t = self.weights.get(id);
            matches!(
                t.ty(),
                GgmlType::Q4_K | GgmlType::Q6_K | GgmlType::Q8_0 | GgmlType::Q4_0
            ) && t.ne()[0] % 256 == 0
        })
    }

    pub fn is_orthrus(&self) -> bool {
        self.hparams.orthrus.is_some()
    }
}

/// A validated tensor: GGUF name, type, dims, data.
type Found<'f> = (&'f str, GgmlType, Vec<u64>, &'f [u8]);

/// Declares the model's tensors on their devices and remembers what to copy
/// into them once the buffers exist.
struct Placement<'a, 'f> {
    store: TensorStore,
    /// (tensor, its bytes in parts one after the other).
    writes: Vec<(StoreId, Vec<&'f [u8]>)>,
    found: &'a std::collections::HashMap<TensorId, Found<'f>>,
    devices: &'a [Device],
    device_of: &'a dyn Fn(TensorId) -> usize,
    /// Each device's extra buffer types, tried in order for matmul weights.
    extra: Vec<Vec<BufferType>>,
    /// Whether a weight went into one of them.
    repacked: bool,
}

impl<'f> Placement<'_, 'f> {
    /// Tensor `id` from the file, on its device.
    fn add(&mut self, id: TensorId) -> StoreId {
        let name = self.found[&id].0;
        self.place(name, id, (self.device_of)(id))
    }

    /// The data of tensor `id` under `name` on device `dev`.
    fn place(&mut self, name: &str, id: TensorId, dev: usize) -> StoreId {
        let (_, ty, ref dims, data) = self.found[&id];
        let ne: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
        // Norms are vectors, and the embedding is read by row lookups.
        let buft = match id.kind.is_norm() || id.kind == Kind::TokenEmbd {
            false => self.weight_buffer(dev, ty, ne[0], ne[1]),
            true => self.devices[dev].buffer_type(),
        };
        let sid = self.store.add(name, ty, &ne, buft);
        self.writes.push((sid, vec![data]));
        sid
    }

    /// Where a weight that only matmuls read goes on device `dev`: the
    /// first extra buffer type whose kernels take it (as llama.cpp places
    /// them), else the device's memory.
    fn weight_buffer(&mut self, dev: usize, ty: GgmlType, k: i64, n: i64) -> BufferType {
        match self.extra[dev].iter().find(|b| b.takes_matmul(ty, k, n)) {
            Some(&b) => {
                self.repacked = true;
                b
            }
            None => self.devices[dev].buffer_type(),
        }
    }

    /// Matrices with the same input, stacked row-wise into one tensor `name`
    /// when they share a weight type (quantized rows are self-contained, so
    /// the stack is the files' bytes one after the other), else apart.
    fn stacked<const N: usize>(&mut self, parts: [TensorId; N], name: &str) -> Stacked<N> {
        let (_, ty, ref dims, _) = self.found[&parts[0]];
        if parts.iter().any(|p| self.found[p].1 != ty) {
            return Stacked::Apart(parts.map(|p| self.add(p)));
        }
        let rows: u64 = parts.iter().map(|p| self.found[p].2[1]).sum();
        let ne = [dims[0] as i64, rows as i64];
        let buft = self.weight_buffer((self.device_of)(parts[0]), ty, ne[0], ne[1]);
        let sid = self.store.add(name, ty, &ne, buft);
        let data = parts.iter().map(|p| self.found[p].3).collect();
        self.writes.push((sid, data));
        Stacked::Fused(sid)
    }

    /// q, k and v of layer `il` (`suffix`: the view's tensor names'),
    /// stacked as far as their types allow.
    fn qkv(&mut self, [q, k, v]: [TensorId; 3], il: usize, suffix: &str) -> Qkv {
        let ty = |p: &TensorId| self.found[p].1;
        if ty(&q) == ty(&k) && ty(&k) != ty(&v) {
            let qk = self.stacked([q, k], &format!("blk.{il}.attn_qk{suffix}.weight"));
            let v = self.add(v);
            return match qk {
                Stacked::Fused(qk) => Qkv::QkThenV { qk, v },
                Stacked::Apart([q, k]) => Qkv::Stacked(Stacked::Apart([q, k, v])),
            };
        }
        Qkv::Stacked(self.stacked([q, k, v], &format!("blk.{il}.attn_qkv{suffix}.weight")))
    }
}

/// The key holding `file`'s layer count.
fn block_count_key(file: &GgufFile) -> String {
    let arch = file.get(keys::ARCHITECTURE).and_then(|v| v.as_str());
    arch.and_then(Layout::of)
        .unwrap_or(Layout::QWEN3)
        .key(keys::BLOCK_COUNT)
}

/// The shape (ggml order) a tensor of `kind` must have.
fn expected_shape(hp: &Hparams, kind: Kind) -> Vec<u64> {
    let kind = kind.ar_twin().unwrap_or(kind);
    let (e, q, kv, ff, v) = (
        hp.n_embd as u64,
        (hp.n_head * hp.head_dim) as u64,
        (hp.n_head_kv * hp.head_dim) as u64,
        hp.n_ff as u64,
        hp.n_vocab as u64,
    );
    match kind {
        Kind::TokenEmbd | Kind::Output => vec![e, v],
        Kind::OutputNorm | Kind::AttnNorm | Kind::FfnNorm => vec![e],
        Kind::AttnQ => vec![e, q],
        Kind::AttnK | Kind::AttnV => vec![e, kv],
        Kind::AttnOutput => vec![q, e],
        Kind::AttnQNorm | Kind::AttnKNorm => vec![hp.head_dim as u64],
        Kind::FfnGate | Kind::FfnUp => vec![e, ff],
        Kind::FfnDown => vec![ff, e],
        _ => unreachable!("diffusion kinds map to their AR twin"),
    }
}
