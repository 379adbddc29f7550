//! Long-lived tensors (weights, KV caches) placed on backend buffers.

use llama_cpp_sys_2 as sys;

use super::backend::{Buffer, BufferType};
use super::context::{Context, Element, Tensor};
use super::{GgmlError, Type};

/// Index of a tensor in a [`TensorStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StoreId(usize);

struct Group {
    buft: BufferType,
    ctx: Context,
    buffer: Option<Buffer>,
}

/// Tensors grouped by where they live; each group is one ggml context
/// allocated on one buffer type. Declare every tensor with [`add`](Self::add),
/// then [`allocate`](Self::allocate), then fill them.
pub struct TensorStore {
    groups: Vec<Group>,
    tensors: Vec<(usize, *mut sys::ggml_tensor)>,
    max_per_group: usize,
}

impl TensorStore {
    /// A store whose groups hold up to `max_per_group` tensors each.
    pub fn new(max_per_group: usize) -> TensorStore {
        TensorStore {
            groups: Vec::new(),
            tensors: Vec::new(),
            max_per_group,
        }
    }

    /// Declares a tensor that will live in `buft`.
    pub fn add(&mut self, name: &str, ty: Type, ne: &[i64], buft: BufferType) -> StoreId {
        assert!(
            self.groups.iter().all(|g| g.buffer.is_none()),
            "tensor {name} declared after allocation"
        );
        let g = match self.groups.iter().position(|g| g.buft.ptr == buft.ptr) {
            Some(g) => g,
            None => {
                self.groups.push(Group {
                    buft,
                    ctx: Context::new(self.max_per_group, false),
                    buffer: None,
                });
                self.groups.len() - 1
            }
        };
        let t = self.groups[g].ctx.new_tensor(ty, ne).named(name);
        self.tensors.push((g, t.raw()));
        StoreId(self.tensors.len() - 1)
    }

    /// Allocates every group's buffer; `weights` marks them as holding weights
    /// (so the scheduler runs ops that use them on their device).
    pub fn allocate(&mut self, weights: bool) -> Result<(), GgmlError> {
        for g in &mut self.groups {
            if g.buffer.is_some() {
                continue;
            }
            // SAFETY: a live context and a registry buffer type.
            let raw =
                unsafe { sys::ggml_backend_alloc_ctx_tensors_from_buft(g.ctx.raw(), g.buft.ptr) };
            let buffer = Buffer::from_raw(raw).ok_or_else(|| GgmlError::Alloc {
                device: g.buft.device().name(),
                // SAFETY: as above.
                bytes: unsafe {
                    sys::ggml_backend_alloc_ctx_tensors_from_buft_size(g.ctx.raw(), g.buft.ptr)
                },
                what: if weights { "weights" } else { "tensors" }.to_string(),
            })?;
            if weights {
                buffer.mark_weights();
            }
            g.buffer = Some(buffer);
        }
        Ok(())
    }

    pub fn get(&self, id: StoreId) -> Tensor<'_> {
        Tensor::from_raw(self.tensors[id.0].1)
    }

    fn allocated(&self, id: StoreId) -> Tensor<'_> {
        let (g, _) = self.tensors[id.0];
        assert!(self.groups[g].buffer.is_some(), "store not allocated");
        self.get(id)
    }

    /// Copies raw bytes (any type, quantized included) into a tensor.
    pub fn write_bytes(&self, id: StoreId, bytes: &[u8]) {
        self.allocated(id).write_bytes(bytes)
    }

    /// Copies raw bytes into a tensor from byte `offset` on (filling a
    /// stacked tensor part by part).
    pub fn write_bytes_at(&self, id: StoreId, offset: usize, bytes: &[u8]) {
        self.allocated(id).write_bytes_at(offset, bytes)
    }

    pub fn write<T: Element>(&self, id: StoreId, data: &[T]) {
        self.allocated(id).write(data)
    }

    pub fn read<T: Element>(&self, id: StoreId, out: &mut [T]) {
        self.allocated(id).read(out)
    }

    /// Fills every allocated buffer with zeros.
    pub fn clear(&self) {
        for b in self.groups.iter().filter_map(|g| g.buffer.as_ref()) {
            b.clear(0);
        }
    }
}
