//! Loading a Qwen3 / Orthrus GGUF into backend buffers.

use std::path::Path;

use orthrus_kernels::ggml::{load_backends, Device, DeviceKind, StoreId, TensorStore};
use orthrus_kernels::gguf::GgufFile;
use orthrus_kernels::schema::{keys, Kind, TensorId, TYPE_HEAD};
use orthrus_kernels::GgmlType;

use crate::hparams::Hparams;
use crate::tokenizer::Tokenizer;
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
}

/// The attention projections of one view of one layer.
#[derive(Clone, Copy, Debug)]
pub struct Attention {
    pub q: StoreId,
    pub k: StoreId,
    pub v: StoreId,
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
    pub ffn_gate: StoreId,
    pub ffn_up: StoreId,
    pub ffn_down: StoreId,
    /// Index into [`Model::devices`] of the device holding this layer.
    pub device: usize,
}

/// A loaded model: hyperparameters, weights on their devices, tokenizer data.
pub struct Model {
    pub hparams: Hparams,
    pub(crate) weights: TensorStore,
    pub(crate) tok_embd: StoreId,
    pub(crate) output_norm: StoreId,
    pub(crate) output: StoreId,
    pub(crate) layers: Vec<Layer>,
    /// The devices in use, in the scheduler's order (the CPU last).
    pub devices: Vec<Device>,
    /// `tokenizer.huggingface.json`, when the file has it.
    pub tokenizer_json: Option<String>,
    pub chat_template: Option<String>,
    /// Type of the attention weights (for reports).
    pub weight_type: GgmlType,
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
                        if hh.orthrus.is_none() { " (and it has no orthrus.block_size)" } else { "" }
                    )));
                }
                if hp.orthrus.is_some() && file.tensor("blk.0.attn_q_diff.weight").is_some() {
                    return Err(EngineError::Model(format!(
                        "{name} already has a diffusion view; drop --head"
                    )));
                }
                hp.orthrus = hh.orthrus;
                if hp.eos_ids.is_empty() {
                    hp.eos_ids = hh.eos_ids.clone();
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
                "{}: orthrus.* keys and _diff tensors must come together (keys: {}, tensors: {})",
                diff_file.1,
                hp.orthrus.is_some(),
                has_diff
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

        let mut store = TensorStore::new(expected.len() + 2);
        let mut ids = std::collections::HashMap::new();
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
            if id.kind.is_norm() && info.ty != GgmlType::F32 {
                return Err(EngineError::Model(format!(
                    "{fname}: norm tensor {tname} is {}, expected f32",
                    info.ty.name()
                )));
            }
            if id.kind == Kind::AttnQ {
                weight_type = info.ty;
            }
            let dev = match (id.layer, id.kind) {
                (Some(il), _) => layer_dev(il as usize),
                (None, Kind::TokenEmbd) => cpu_idx,
                (None, _) => out_dev,
            };
            let ne: Vec<i64> = info.dims.iter().map(|&d| d as i64).collect();
            let sid = store.add(tname, info.ty, &ne, devices[dev].buffer_type());
            ids.insert(id, (sid, f.tensor_data(info)));
        }
        // Tied embeddings feed both the input lookup (CPU) and the LM head;
        // when the head sits on the GPU it needs its own copy there.
        let embd = ids[&TensorId::global(Kind::TokenEmbd)];
        let output = if tied && out_dev != cpu_idx {
            let info = file.tensor("token_embd.weight").expect("checked above");
            let ne: Vec<i64> = info.dims.iter().map(|&d| d as i64).collect();
            let sid = store.add(
                "output.weight",
                info.ty,
                &ne,
                devices[out_dev].buffer_type(),
            );
            Some((sid, embd.1))
        } else {
            None
        };
        store.allocate(true)?;
        for (sid, data) in ids.values().copied().chain(output) {
            store.write_bytes(sid, data);
        }

        let id = |kind: Kind, layer: Option<usize>| {
            ids[&TensorId {
                kind,
                layer: layer.map(|l| l as u32),
            }]
                .0
        };
        let attention = |il: usize, kinds: [Kind; 6]| Attention {
            q: id(kinds[0], Some(il)),
            k: id(kinds[1], Some(il)),
            v: id(kinds[2], Some(il)),
            o: id(kinds[3], Some(il)),
            q_norm: id(kinds[4], Some(il)),
            k_norm: id(kinds[5], Some(il)),
        };
        let layers = (0..n_layer)
            .map(|il| Layer {
                attn_norm: id(Kind::AttnNorm, Some(il)),
                // The AR projections are the diffusion ones' twins, in the same order.
                ar: attention(
                    il,
                    Kind::DIFF_LAYER.map(|k| k.ar_twin().expect("a diffusion kind")),
                ),
                diffusion: has_diff.then(|| attention(il, Kind::DIFF_LAYER)),
                ffn_norm: id(Kind::FfnNorm, Some(il)),
                ffn_gate: id(Kind::FfnGate, Some(il)),
                ffn_up: id(Kind::FfnUp, Some(il)),
                ffn_down: id(Kind::FfnDown, Some(il)),
                device: layer_dev(il),
            })
            .collect();
        let output = match output {
            Some((sid, _)) => sid,
            None if tied => embd.0,
            None => id(Kind::Output, None),
        };
        Ok(Model {
            tok_embd: embd.0,
            output_norm: id(Kind::OutputNorm, None),
            output,
            layers,
            devices,
            tokenizer_json: file
                .get(keys::HF_JSON)
                .and_then(|v| v.as_str())
                .map(str::to_string),
            chat_template: file
                .get(keys::CHAT_TEMPLATE)
                .and_then(|v| v.as_str())
                .map(str::to_string),
            weight_type,
            weights: store,
            hparams: hp,
        })
    }

    /// The tokenizer stored in the file.
    pub fn tokenizer(&self) -> Result<Tokenizer, EngineError> {
        let json = self.tokenizer_json.as_deref().ok_or_else(|| {
            EngineError::Tokenizer("the model has no tokenizer.huggingface.json".into())
        })?;
        Tokenizer::from_json(json)
    }

    pub fn is_orthrus(&self) -> bool {
        self.hparams.orthrus.is_some()
    }
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
