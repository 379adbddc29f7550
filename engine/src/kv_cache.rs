//! The one KV cache both views share.

use orthrus_kernels::ggml::{StoreId, TensorStore};
use orthrus_kernels::GgmlType;

use crate::model::Model;
use crate::EngineError;

/// Slots are allocated in multiples of this many, zeroed: the exact
/// attention path (`graph::Shape::exact`) reads whole windows of this size,
/// whatever the context size, and its zero weights must meet finite values.
pub const SLOT_ALIGN: usize = 1024;

/// Per layer, K (after k_norm and RoPE) and V of every position, each a
/// `[head_dim * n_head_kv, slots]` matrix on the layer's device, `slots`
/// being `n_ctx` rounded up to [`SLOT_ALIGN`]. Allocated once. Slot `p`
/// holds position `p`; which slots are committed is the session's business
/// (the diffusion pass writes scratch rows past the committed ones, which
/// the verify pass then overwrites). An f32 cache, which only the plain
/// attention paths read, keeps V transposed (`v_trans`): `[slots, head_dim *
/// n_head_kv]`, each head dimension's values of all slots in a row, so the
/// product with the attention weights reads the cache as it lies.
pub struct KvCache {
    pub(crate) store: TensorStore,
    pub(crate) k: Vec<StoreId>,
    pub(crate) v: Vec<StoreId>,
    /// Positions a sequence may fill.
    pub n_ctx: usize,
    /// Slots allocated (attention may read past `n_ctx`, up to here).
    pub slots: usize,
    pub ty: GgmlType,
    /// V is stored transposed (an f32 cache).
    pub v_trans: bool,
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
        let slots = n_ctx.next_multiple_of(SLOT_ALIGN);
        let v_trans = ty == GgmlType::F32;
        let mut store = TensorStore::new(2 * hp.n_layer);
        let (mut k, mut v) = (Vec::new(), Vec::new());
        for (il, layer) in model.layers.iter().enumerate() {
            let buft = model.devices[layer.device].buffer_type();
            k.push(store.add(
                &format!("cache_k_l{il}"),
                ty,
                &[row as i64, slots as i64],
                buft,
            ));
            let v_shape = if v_trans { [slots, row] } else { [row, slots] };
            v.push(store.add(
                &format!("cache_v_l{il}"),
                ty,
                &v_shape.map(|n| n as i64),
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
            slots,
            ty,
            v_trans,
        })
    }
}
