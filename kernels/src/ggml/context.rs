//! Contexts, tensor handles and the graph operations the engine uses.

use std::cell::{Cell, RefCell};
use std::ffi::{CStr, CString};
use std::marker::PhantomData;
use std::ptr::NonNull;

use llama_cpp_sys_2 as sys;

use super::Type;

/// Holds tensor and graph metadata; never tensor data (ggml's `no_alloc`
/// mode): data lives in backend buffers. Tensors created here are
/// [`Tensor<'ctx>`] handles that cannot outlive the context.
pub struct Context {
    ptr: NonNull<sys::ggml_context>,
    capacity: usize,
    used: Cell<usize>,
    /// Tensors put into a graph before its results (see [`Self::expand_first`]).
    first: RefCell<Vec<NonNull<sys::ggml_tensor>>>,
}

impl Context {
    /// A context for up to `max_tensors` tensors and, when `graph` is true, one
    /// graph of as many nodes.
    pub fn new(max_tensors: usize, graph: bool) -> Context {
        let capacity = max_tensors.max(1);
        // SAFETY: pure size computations.
        let mut mem = capacity * unsafe { sys::ggml_tensor_overhead() };
        if graph {
            mem += unsafe { sys::ggml_graph_overhead_custom(capacity, false) };
        }
        let params = sys::ggml_init_params {
            mem_size: mem,
            mem_buffer: std::ptr::null_mut(),
            no_alloc: true,
        };
        // SAFETY: ggml allocates its own pool of `mem` bytes.
        let ptr = NonNull::new(unsafe { sys::ggml_init(params) })
            .expect("ggml_init could not allocate a context");
        Context {
            ptr,
            capacity,
            used: Cell::new(0),
            first: RefCell::new(Vec::new()),
        }
    }

    pub(crate) fn raw(&self) -> *mut sys::ggml_context {
        self.ptr.as_ptr()
    }

    /// Counts one more tensor, panicking before ggml would abort on a full pool.
    fn reserve(&self, what: &str) {
        let used = self.used.get() + 1;
        assert!(
            used <= self.capacity,
            "ggml context full: {what} would be tensor {used} of {}",
            self.capacity
        );
        self.used.set(used);
    }

    /// Puts `t` (and what it is computed from) into the graph [`OwnedGraph::build`]
    /// builds before the results, so that its node comes before theirs: a
    /// backend fuses only consecutive nodes, and a view that two sibling
    /// operations read (e.g. halves of one weight) would otherwise sit between
    /// them in the node order.
    pub fn expand_first(&self, t: Tensor<'_>) {
        self.first.borrow_mut().push(t.ptr);
    }

    /// A new tensor of type `ty` and shape `ne` (ggml order, 1 to 4 dims).
    pub fn new_tensor(&self, ty: Type, ne: &[i64]) -> Tensor<'_> {
        assert!(
            (1..=4).contains(&ne.len()) && ne.iter().all(|&n| n > 0),
            "bad tensor shape {ne:?}"
        );
        if ty.block_size() > 1 {
            assert!(
                (ne[0] as u64).is_multiple_of(ty.block_size()),
                "rows of {} elements do not divide into {} blocks",
                ne[0],
                ty.name()
            );
        }
        self.reserve("new tensor");
        // SAFETY: shape checked above; the context has room for the header.
        let t = unsafe {
            sys::ggml_new_tensor(
                self.raw(),
                ty.id() as sys::ggml_type,
                ne.len() as i32,
                ne.as_ptr(),
            )
        };
        Tensor::from_raw(t)
    }

    /// An input tensor: its data is written before each run (ids, positions, masks).
    pub fn input(&self, name: &str, ty: Type, ne: &[i64]) -> Tensor<'_> {
        let t = self.new_tensor(ty, ne).named(name);
        // SAFETY: a valid tensor of this context.
        unsafe { sys::ggml_set_input(t.ptr.as_ptr()) };
        t
    }

    /// Rows `ids` (I32) of matrix `a`; or, `a` of `n` matrices and `ids`
    /// `[k, n]`, rows `ids[.., i]` of matrix `i` (`[a.ne[0], k, n]`).
    pub fn get_rows<'a>(&'a self, a: Tensor<'a>, ids: Tensor<'a>) -> Tensor<'a> {
        let [_, _, n, batches] = a.ne();
        assert!(
            ids.ty() == Type::I32 && ids.dims() <= 2 && ids.ne()[1] == n && batches == 1,
            "get_rows: ids {:?} for a {:?}",
            ids.ne(),
            a.ne()
        );
        self.op("get_rows", |c| unsafe {
            sys::ggml_get_rows(c, a.raw(), ids.raw())
        })
    }

    /// RMS norm over each row (no weight).
    pub fn rms_norm<'a>(&'a self, a: Tensor<'a>, eps: f32) -> Tensor<'a> {
        assert!(a.ty() == Type::F32, "rms_norm wants f32");
        self.op("rms_norm", |c| unsafe {
            sys::ggml_rms_norm(c, a.raw(), eps)
        })
    }

    /// `a * b`, `b` broadcast over `a`.
    pub fn mul<'a>(&'a self, a: Tensor<'a>, b: Tensor<'a>) -> Tensor<'a> {
        check_repeat("mul", b, a);
        self.op("mul", |c| unsafe { sys::ggml_mul(c, a.raw(), b.raw()) })
    }

    /// `a + b`, `b` broadcast over `a`.
    pub fn add<'a>(&'a self, a: Tensor<'a>, b: Tensor<'a>) -> Tensor<'a> {
        check_repeat("add", b, a);
        self.op("add", |c| unsafe { sys::ggml_add(c, a.raw(), b.raw()) })
    }

    /// `b a^T` in matrix terms: `a` is `[k, m, ...]` (weights, rows of length
    /// k), `b` is `[k, n, ...]`; the result is `[m, n, ...]` f32. `a`'s dims 2
    /// and 3 broadcast over `b`'s (grouped-query attention).
    pub fn mul_mat<'a>(&'a self, a: Tensor<'a>, b: Tensor<'a>) -> Tensor<'a> {
        let (x, y) = (a.ne(), b.ne());
        assert!(
            x[0] == y[0] && y[2] % x[2] == 0 && y[3] % x[3] == 0,
            "mul_mat: cannot multiply {} {x:?} by {} {y:?}",
            a.name(),
            b.name()
        );
        assert!(a.nb()[0] <= a.nb()[1], "mul_mat: a must not be transposed");
        self.op("mul_mat", |c| unsafe {
            sys::ggml_mul_mat(c, a.raw(), b.raw())
        })
    }

    /// `a` with shape `ne` (same element count; `a` must be contiguous).
    pub fn reshape<'a>(&'a self, a: Tensor<'a>, ne: &[i64]) -> Tensor<'a> {
        assert!(a.is_contiguous(), "reshape of a non-contiguous tensor");
        assert!(
            ne.iter().product::<i64>() == a.n_elements() && (1..=4).contains(&ne.len()),
            "reshape {:?} to {ne:?}: element counts differ",
            a.ne()
        );
        let r = a.raw();
        self.op("reshape", |c| unsafe {
            match *ne {
                [n0] => sys::ggml_reshape_1d(c, r, n0),
                [n0, n1] => sys::ggml_reshape_2d(c, r, n0, n1),
                [n0, n1, n2] => sys::ggml_reshape_3d(c, r, n0, n1, n2),
                [n0, n1, n2, n3] => sys::ggml_reshape_4d(c, r, n0, n1, n2, n3),
                _ => unreachable!(),
            }
        })
    }

    /// A strided view of `a`: shape `ne`, byte strides `nb` of dims 1.. (the
    /// element stride is the type's), starting `offset` bytes into `a`.
    pub fn view<'a>(
        &'a self,
        a: Tensor<'a>,
        ne: [i64; 3],
        nb: [usize; 2],
        offset: usize,
    ) -> Tensor<'a> {
        let row = a
            .ty()
            .row_bytes(ne[0] as u64)
            .expect("view rows must be whole blocks") as usize;
        let extent = offset + row + (ne[1] as usize - 1) * nb[0] + (ne[2] as usize - 1) * nb[1];
        assert!(
            ne.iter().all(|&n| n > 0) && extent <= a.nbytes(),
            "view {ne:?}/{nb:?}+{offset} reaches byte {extent} of a {}-byte tensor",
            a.nbytes()
        );
        self.op("view", |c| unsafe {
            sys::ggml_view_3d(c, a.raw(), ne[0], ne[1], ne[2], nb[0], nb[1], offset)
        })
    }

    /// Dimension `i` of `a` becomes dimension `axes[i]` of the result.
    pub fn permute<'a>(&'a self, a: Tensor<'a>, axes: [i32; 4]) -> Tensor<'a> {
        let mut seen = [false; 4];
        for &x in &axes {
            assert!(
                (0..4).contains(&x) && !seen[x as usize],
                "bad permutation {axes:?}"
            );
            seen[x as usize] = true;
        }
        self.op("permute", |c| unsafe {
            sys::ggml_permute(c, a.raw(), axes[0], axes[1], axes[2], axes[3])
        })
    }

    /// A contiguous copy of `a`.
    pub fn cont<'a>(&'a self, a: Tensor<'a>) -> Tensor<'a> {
        self.op("cont", |c| unsafe { sys::ggml_cont(c, a.raw()) })
    }

    /// `a` converted to `ty`.
    pub fn cast<'a>(&'a self, a: Tensor<'a>, ty: Type) -> Tensor<'a> {
        self.op("cast", |c| unsafe {
            sys::ggml_cast(c, a.raw(), ty.id() as sys::ggml_type)
        })
    }

    /// NEOX-style (rotate-half) rotary embedding of `a` `[head_dim, heads, T]`
    /// at positions `pos` (I32, `[T]`).
    pub fn rope_neox<'a>(&'a self, a: Tensor<'a>, pos: Tensor<'a>, freq_base: f32) -> Tensor<'a> {
        let ne = a.ne();
        assert!(
            pos.ty() == Type::I32 && pos.dims() == 1 && pos.ne()[0] == ne[2] && ne[0] % 2 == 0,
            "rope: positions {:?} do not match {ne:?}",
            pos.ne()
        );
        const NEOX: i32 = 2;
        self.op("rope", |c| unsafe {
            sys::ggml_rope_ext(
                c,
                a.raw(),
                pos.raw(),
                std::ptr::null_mut(),
                ne[0] as i32,
                NEOX,
                // YaRN is off (ext_factor 0); its parameters get llama.cpp's
                // finite defaults so no backend computes with NaNs.
                4096,
                freq_base,
                1.0,
                0.0,
                1.0,
                32.0,
                1.0,
            )
        })
    }

    /// Writes the rows of `src` (`[n, T]`) into rows `idx` (I64, `[T]`) of
    /// `dst` (`[n, rows]`), converting to `dst`'s type; returns the updated `dst`.
    /// With a third dimension (`[n, T, m]` into `[n, rows, m]`), each of the
    /// `m` matrices the same way.
    pub fn set_rows<'a>(&'a self, dst: Tensor<'a>, src: Tensor<'a>, idx: Tensor<'a>) -> Tensor<'a> {
        let (d, s, i) = (dst.ne(), src.ne(), idx.ne());
        assert!(
            d[0] == s[0]
                && d[2] == s[2]
                && d[3] == 1
                && s[3] == 1
                && i[0] == s[1]
                && idx.dims() == 1,
            "set_rows: {s:?} into {d:?} at {i:?}"
        );
        assert!(idx.ty() == Type::I64, "set_rows wants I64 indices");
        assert!(
            matches!(src.ty(), Type::F32 | Type::F16),
            "set_rows wants f32 or f16 rows"
        );
        self.op("set_rows", |c| unsafe {
            sys::ggml_set_rows(c, dst.raw(), src.raw(), idx.raw())
        })
    }

    /// Fused attention: `q` `[d, T, H]`, `k` `[d, n_kv, H_kv]`, `v` `[d, n_kv,
    /// H_kv]` (f16 or quantized), `mask` f16 `[n_kv, T]`; result `[d, H, T]`.
    /// Accumulates in f32.
    pub fn flash_attn<'a>(
        &'a self,
        q: Tensor<'a>,
        k: Tensor<'a>,
        v: Tensor<'a>,
        mask: Tensor<'a>,
        scale: f32,
    ) -> Tensor<'a> {
        let (qn, kn, vn, mn) = (q.ne(), k.ne(), v.ne(), mask.ne());
        assert!(
            qn[0] == kn[0] && kn[1] == vn[1] && kn[2] == vn[2] && qn[2] % kn[2] == 0,
            "flash_attn: q {qn:?}, k {kn:?}, v {vn:?}"
        );
        assert!(
            mask.ty() == Type::F16 && mask.is_contiguous() && mn[0] == kn[1] && mn[1] >= qn[1],
            "flash_attn: mask {mn:?} ({}) for {} keys and {} queries",
            mask.ty().name(),
            kn[1],
            qn[1]
        );
        let t = self.op("flash_attn", |c| unsafe {
            sys::ggml_flash_attn_ext(c, q.raw(), k.raw(), v.raw(), mask.raw(), scale, 0.0, 0.0)
        });
        // SAFETY: a flash-attention node of this context.
        unsafe { sys::ggml_prec_set_acc(t.raw(), sys::GGML_PREC_F32) };
        t
    }

    /// `softmax(a * scale + mask)` over rows; `mask` f32 or f16 `[a.ne0, >= a.ne1]`.
    pub fn soft_max<'a>(&'a self, a: Tensor<'a>, mask: Tensor<'a>, scale: f32) -> Tensor<'a> {
        let (an, mn) = (a.ne(), mask.ne());
        assert!(
            a.is_contiguous() && mask.is_contiguous() && mn[0] == an[0] && mn[1] >= an[1],
            "soft_max: {an:?} with mask {mn:?}"
        );
        self.op("soft_max", |c| unsafe {
            sys::ggml_soft_max_ext(c, a.raw(), mask.raw(), scale, 0.0)
        })
    }

    /// `silu(gate) * up`.
    pub fn swiglu<'a>(&'a self, gate: Tensor<'a>, up: Tensor<'a>) -> Tensor<'a> {
        assert!(
            gate.ne() == up.ne(),
            "swiglu: {:?} vs {:?}",
            gate.ne(),
            up.ne()
        );
        self.op("swiglu", |c| unsafe {
            sys::ggml_swiglu_split(c, gate.raw(), up.raw())
        })
    }

    /// `silu(gate) * up` where `gate_up` holds the gate in the first half of
    /// each row and up in the second.
    pub fn swiglu_halves<'a>(&'a self, gate_up: Tensor<'a>) -> Tensor<'a> {
        assert!(
            gate_up.ne()[0] % 2 == 0,
            "swiglu: odd row {:?}",
            gate_up.ne()
        );
        self.op("swiglu", |c| unsafe { sys::ggml_swiglu(c, gate_up.raw()) })
    }

    /// `a - b`, `b` broadcast over `a`, written over `a`.
    pub fn sub_in_place<'a>(&'a self, a: Tensor<'a>, b: Tensor<'a>) -> Tensor<'a> {
        check_repeat("sub", b, a);
        self.op("sub", |c| unsafe {
            sys::ggml_sub_inplace(c, a.raw(), b.raw())
        })
    }

    /// `a` repeated to shape `ne` (each dimension a multiple of `a`'s).
    pub fn repeat<'a>(&'a self, a: Tensor<'a>, ne: [i64; 4]) -> Tensor<'a> {
        let x = a.ne();
        assert!(
            (0..4).all(|i| ne[i] % x[i] == 0),
            "repeat: {x:?} does not tile {ne:?}"
        );
        self.op("repeat", |c| unsafe {
            sys::ggml_repeat_4d(c, a.raw(), ne[0], ne[1], ne[2], ne[3])
        })
    }

    /// `[start, start + step, ...]` below `stop`, f32.
    pub fn arange(&self, start: f32, stop: f32, step: f32) -> Tensor<'_> {
        assert!(
            step > 0.0 && stop > start,
            "arange({start}, {stop}, {step})"
        );
        self.op("arange", |c| unsafe {
            sys::ggml_arange(c, start, stop, step)
        })
    }

    /// `a * s`, written over `a`.
    pub fn scale_in_place<'a>(&'a self, a: Tensor<'a>, s: f32) -> Tensor<'a> {
        self.op("scale", |c| unsafe {
            sys::ggml_scale_inplace(c, a.raw(), s)
        })
    }

    /// Each value of `a` clamped to `[min, max]`, written over `a`.
    pub fn clamp_in_place<'a>(&'a self, a: Tensor<'a>, min: f32, max: f32) -> Tensor<'a> {
        self.op("clamp", |c| unsafe {
            sys::ggml_clamp_inplace(c, a.raw(), min, max)
        })
    }

    /// `a` and `b` joined along dimension `dim` (their other dimensions equal).
    pub fn concat<'a>(&'a self, a: Tensor<'a>, b: Tensor<'a>, dim: usize) -> Tensor<'a> {
        let (x, y) = (a.ne(), b.ne());
        assert!(
            dim < 4 && a.ty() == b.ty() && (0..4).all(|i| i == dim || x[i] == y[i]),
            "concat along {dim}: {x:?} and {y:?}"
        );
        self.op("concat", |c| unsafe {
            sys::ggml_concat(c, a.raw(), b.raw(), dim as i32)
        })
    }

    /// Indices of the `k` largest values of each row of f32 matrix `a`, in
    /// no order (I32 `[k, rows]`).
    pub fn top_k<'a>(&'a self, a: Tensor<'a>, k: usize) -> Tensor<'a> {
        let [n, _, one, _] = a.ne();
        assert!(
            a.ty() == Type::F32 && a.is_contiguous() && one == 1 && (1..=n).contains(&(k as i64)),
            "top_k {k} of {:?}",
            a.ne()
        );
        self.op("top_k", |c| unsafe {
            sys::ggml_top_k(c, a.raw(), k as i32)
        })
    }

    /// Index of the largest value of each row of matrix `a` (I32 `[rows]`).
    pub fn argmax<'a>(&'a self, a: Tensor<'a>) -> Tensor<'a> {
        assert!(a.ne()[2] == 1 && a.ne()[3] == 1, "argmax wants a matrix");
        self.op("argmax", |c| unsafe { sys::ggml_argmax(c, a.raw()) })
    }

    fn op<'a>(
        &'a self,
        what: &str,
        f: impl FnOnce(*mut sys::ggml_context) -> *mut sys::ggml_tensor,
    ) -> Tensor<'a> {
        self.reserve(what);
        Tensor::from_raw(f(self.raw()))
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: created by ggml_init, freed once.
        unsafe { sys::ggml_free(self.ptr.as_ptr()) }
    }
}

fn check_repeat(op: &str, b: Tensor<'_>, a: Tensor<'_>) {
    let (x, y) = (b.ne(), a.ne());
    assert!(
        (0..4).all(|i| y[i] % x[i] == 0),
        "{op}: {x:?} does not broadcast over {y:?}"
    );
}

/// A handle to a tensor of a [`Context`] (or of a [`super::TensorStore`]).
#[derive(Clone, Copy)]
pub struct Tensor<'a> {
    ptr: NonNull<sys::ggml_tensor>,
    _ctx: PhantomData<&'a Context>,
}

/// Element types that tensor data can be read into or written from.
pub trait Element: Copy + 'static {
    const TYPE: Type;
}
impl Element for f32 {
    const TYPE: Type = Type::F32;
}
impl Element for i32 {
    const TYPE: Type = Type::I32;
}
impl Element for i64 {
    const TYPE: Type = Type::I64;
}
impl Element for half::f16 {
    const TYPE: Type = Type::F16;
}

impl<'a> Tensor<'a> {
    pub(crate) fn from_raw(ptr: *mut sys::ggml_tensor) -> Tensor<'a> {
        Tensor {
            ptr: NonNull::new(ptr).expect("ggml returned a null tensor"),
            _ctx: PhantomData,
        }
    }

    fn header(&self) -> &sys::ggml_tensor {
        // SAFETY: the tensor lives as long as its context ('a).
        unsafe { self.ptr.as_ref() }
    }

    pub(crate) fn raw(&self) -> *mut sys::ggml_tensor {
        self.ptr.as_ptr()
    }

    /// Shape in ggml order (`ne[0]` is the row length).
    pub fn ne(&self) -> [i64; 4] {
        self.header().ne
    }

    /// Byte strides.
    pub fn nb(&self) -> [usize; 4] {
        self.header().nb
    }

    /// Number of dimensions, ignoring trailing ones.
    pub fn dims(&self) -> usize {
        let ne = self.ne();
        (1..4).rev().find(|&i| ne[i] > 1).map_or(1, |i| i + 1)
    }

    pub fn ty(&self) -> Type {
        Type::from_id(self.header().type_).expect("tensor of a type this crate does not know")
    }

    pub fn n_elements(&self) -> i64 {
        self.ne().iter().product()
    }

    pub fn nbytes(&self) -> usize {
        // SAFETY: valid tensor header.
        unsafe { sys::ggml_nbytes(self.raw()) }
    }

    pub fn is_contiguous(&self) -> bool {
        // SAFETY: valid tensor header.
        unsafe { sys::ggml_is_contiguous(self.raw()) }
    }

    pub fn name(&self) -> String {
        // SAFETY: ggml keeps the name NUL-terminated.
        unsafe { CStr::from_ptr(self.header().name.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    }

    /// Sets the name (truncated by ggml to 63 bytes) and returns the tensor.
    pub fn named(self, name: &str) -> Tensor<'a> {
        let c = CString::new(name).expect("tensor names have no NUL");
        // SAFETY: ggml copies the string.
        unsafe { sys::ggml_set_name(self.raw(), c.as_ptr()) };
        self
    }

    /// Marks the tensor as a graph output, so the allocator keeps its data.
    pub fn output(self) -> Tensor<'a> {
        // SAFETY: valid tensor.
        unsafe { sys::ggml_set_output(self.raw()) };
        self
    }

    fn check_allocated(&self) {
        assert!(
            !self.header().buffer.is_null(),
            "tensor {} has no buffer",
            self.name()
        );
    }

    fn check_data<T: Element>(&self, len: usize) {
        self.check_allocated();
        assert!(
            self.ty() == T::TYPE && self.is_contiguous() && len as i64 == self.n_elements(),
            "tensor {} is {} {:?}; cannot transfer {len} {} values",
            self.name(),
            self.ty().name(),
            self.ne(),
            T::TYPE.name()
        );
    }

    /// Copies `data` into the tensor's backend memory. Only called while the
    /// tensor's buffer is known to be alive (stores, or inside a scheduler run).
    pub(crate) fn write<T: Element>(&self, data: &[T]) {
        self.check_data::<T>(data.len());
        // SAFETY: size and type checked; the buffer is alive (caller's contract).
        unsafe {
            sys::ggml_backend_tensor_set(
                self.raw(),
                data.as_ptr().cast(),
                0,
                std::mem::size_of_val(data),
            )
        }
    }

    /// Copies raw bytes (any type, e.g. quantized weights) into the tensor.
    pub(crate) fn write_bytes(&self, bytes: &[u8]) {
        assert!(
            bytes.len() == self.nbytes(),
            "tensor {}: {} bytes given, {} expected",
            self.name(),
            bytes.len(),
            self.nbytes()
        );
        self.write_bytes_at(0, bytes)
    }

    /// Copies raw bytes into the tensor from byte `offset` on.
    pub(crate) fn write_bytes_at(&self, offset: usize, bytes: &[u8]) {
        self.check_allocated();
        assert!(
            self.is_contiguous()
                && offset
                    .checked_add(bytes.len())
                    .is_some_and(|end| end <= self.nbytes()),
            "tensor {}: {} bytes at {offset} do not fit its {}",
            self.name(),
            bytes.len(),
            self.nbytes()
        );
        // SAFETY: range checked; the buffer is alive (caller's contract).
        unsafe {
            sys::ggml_backend_tensor_set(self.raw(), bytes.as_ptr().cast(), offset, bytes.len())
        }
    }

    pub(crate) fn read<T: Element>(&self, out: &mut [T]) {
        self.check_data::<T>(out.len());
        // SAFETY: size and type checked; the buffer is alive (caller's contract).
        unsafe {
            sys::ggml_backend_tensor_get(
                self.raw(),
                out.as_mut_ptr().cast(),
                0,
                std::mem::size_of_val(out),
            )
        }
    }
}

/// A graph together with the context that holds its nodes. It may reference
/// tensors of other contexts (weights, caches) that live at least `'w`.
pub struct OwnedGraph<'w> {
    ctx: Context,
    graph: NonNull<sys::ggml_cgraph>,
    /// Each node's sources as built: ggml's scheduler rewrites sources to its
    /// own cross-device copies (freed on its next reset), so a reused graph
    /// gets them back before every run.
    sources: Vec<[*mut sys::ggml_tensor; 10]>,
    /// Unique for the life of the process (schedulers recognise a graph they
    /// allocated by it, never by address).
    id: u64,
    _refs: PhantomData<&'w ()>,
}

impl<'w> OwnedGraph<'w> {
    /// Builds a graph of at most `max_nodes` tensors over tensors held by
    /// `weights` and `state` (e.g. a model and its cache), which must outlive
    /// the graph: `build` creates the nodes and returns the results to compute
    /// (marked as outputs). It can only use tensors reached through its
    /// arguments, which is what ties the graph's lifetime to theirs.
    pub fn build<A: ?Sized, B: ?Sized, F>(
        max_nodes: usize,
        weights: &'w A,
        state: &'w B,
        build: F,
    ) -> OwnedGraph<'w>
    where
        F: for<'c> FnOnce(&'c Context, &'c A, &'c B) -> Vec<Tensor<'c>>,
    {
        let ctx = Context::new(max_nodes, true);
        // SAFETY: the context was sized for a graph of max_nodes nodes.
        let graph =
            NonNull::new(unsafe { sys::ggml_new_graph_custom(ctx.raw(), max_nodes, false) })
                .expect("ggml_new_graph_custom failed");
        let results = build(&ctx, weights, state);
        for t in ctx.first.take() {
            let n = unsafe { sys::ggml_graph_n_nodes(graph.as_ptr()) } as usize;
            assert!(n < max_nodes, "graph larger than {max_nodes} nodes");
            // SAFETY: a tensor of this context (or one it views); ggml checks the node count.
            unsafe { sys::ggml_build_forward_expand(graph.as_ptr(), t.as_ptr()) };
        }
        for t in results {
            t.output();
            // SAFETY: graph and tensor belong to live contexts; ggml checks the node count.
            let n = unsafe { sys::ggml_graph_n_nodes(graph.as_ptr()) } as usize;
            assert!(n < max_nodes, "graph larger than {max_nodes} nodes");
            unsafe { sys::ggml_build_forward_expand(graph.as_ptr(), t.raw()) };
        }
        // SAFETY: reading the node list of the graph just built.
        let sources = unsafe {
            (0..sys::ggml_graph_n_nodes(graph.as_ptr()))
                .map(|i| (*sys::ggml_graph_node(graph.as_ptr(), i)).src)
                .collect()
        };
        OwnedGraph {
            ctx,
            graph,
            sources,
            id: {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            },
            _refs: PhantomData,
        }
    }

    pub(crate) fn raw(&self) -> *mut sys::ggml_cgraph {
        self.graph.as_ptr()
    }

    /// The graph's nodes' operations in the order a backend computes them
    /// (ggml's names: "MUL_MAT", "GLU", "SET_ROWS", ...).
    pub fn ops(&self) -> Vec<String> {
        self.nodes().into_iter().map(|(op, _)| op).collect()
    }

    /// The graph's nodes in the order a backend computes them: each one's
    /// operation (as [`Self::ops`]) and tensor name.
    pub fn nodes(&self) -> Vec<(String, String)> {
        // SAFETY: reading the node list of the graph built; ggml's names are static strings.
        unsafe {
            (0..sys::ggml_graph_n_nodes(self.graph.as_ptr()))
                .map(|i| {
                    let node = sys::ggml_graph_node(self.graph.as_ptr(), i);
                    let op = CStr::from_ptr(sys::ggml_op_name((*node).op))
                        .to_string_lossy()
                        .into_owned();
                    (op, Tensor::from_raw(node).name())
                })
                .collect()
        }
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Returns the graph to its state as built, so a reused graph is split
    /// and allocated afresh: the scheduler may have freed or regrown the
    /// buffers its tensors pointed into, and it replaced sources that cross
    /// devices with copies that live only until its next reset. Tensors of
    /// other contexts (weights, caches) are untouched.
    pub(crate) fn clear_allocation(&self) {
        // SAFETY: walks the tensor headers of this graph's own context and
        // its node list, which building fixed.
        unsafe {
            for (i, src) in self.sources.iter().enumerate() {
                (*sys::ggml_graph_node(self.graph.as_ptr(), i as i32)).src = *src;
            }
            let mut t = sys::ggml_get_first_tensor(self.ctx.raw());
            while !t.is_null() {
                (*t).buffer = std::ptr::null_mut();
                (*t).data = std::ptr::null_mut();
                (*t).extra = std::ptr::null_mut();
                t = sys::ggml_get_next_tensor(self.ctx.raw(), t);
            }
        }
    }

    /// Whether the graph has a node or leaf named `name`.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.tensor(name).is_some()
    }

    /// The graph's tensor named `name` (inputs and outputs are named).
    pub(crate) fn tensor(&self, name: &str) -> Option<Tensor<'_>> {
        let c = CString::new(name).ok()?;
        // SAFETY: the graph lives in self.ctx.
        let t = unsafe { sys::ggml_graph_get_tensor(self.graph.as_ptr(), c.as_ptr()) };
        (!t.is_null()).then(|| Tensor::from_raw(t))
    }
}
