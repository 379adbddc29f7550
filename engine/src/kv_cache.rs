//! The one KV cache both views share.

use orthrus_kernels::ggml::{StoreId, TensorStore};
use orthrus_kernels::GgmlType;

use crate::model::Model;
use crate::EngineError;

/// Per layer, K (after k_norm and RoPE) and V of every position, each a
/// `[head_dim * n_head_kv, n_ctx]` matrix on the layer's device. Allocated
/// once. Slot `p` holds position `p`; which slots are committed is the
/// session's business (the diffusion pass writes scratch rows past the
/// committed ones, which the verify pass then overwrites).
pub struct KvCache {
    pub(crate) store: TensorStore,
    pub(crate) k: Vec<StoreId>,
    pub(crate) v: Vec<StoreId>,
    pub n_ctx: usize,
    pub ty: GgmlType,
}

impl KvCache {
    /// A cache of `n_ctx` positions of type `ty` (f32, f16 or q8_0).
    pub fn new(model: &Model, n_ctx: usize, ty: GgmlType) -> Result<KvCache, EngineError> {
        let hp = &model.hparams;
        let row = hp.head_dim * hp.n_head_kv;
        if !matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::Q8_0) {
            return Err(EngineError::Usage(format!(
                "cache type {} is not supported (use f16, q8_0 or f32)",
                ty.name()
            )));
        }
        if ty.row_bytes(row as u64).is_none() || ty.row_bytes(hp.head_dim as u64).is_none() {
            return Err(EngineError::Usage(format!(
                "cache type {} needs head size {} to be a multiple of {}",
                ty.name(),
                hp.head_dim,
                ty.block_size()
            )));
        }
        if n_ctx == 0 || n_ctx > 1 << 22 {
            return Err(EngineError::Usage(format!(
                "context size {n_ctx} is out of range"
            )));
        }
        let mut store = TensorStore::new(2 * hp.n_layer);
        let (mut k, mut v) = (Vec::new(), Vec::new());
        for (il, layer) in model.layers.iter().enumerate() {
            let buft = model.devices[layer.device].buffer_type();
            k.push(store.add(
                &format!("cache_k_l{il}"),
                ty,
                &[row as i64, n_ctx as i64],
                buft,
            ));
            v.push(store.add(
                &format!("cache_v_l{il}"),
                ty,
                &[row as i64, n_ctx as i64],
                buft,
            ));
        }
        store.allocate(false)?;
        store.clear();
        Ok(KvCache {
            store,
            k,
            v,
            n_ctx,
            ty,
        })
    }
}
