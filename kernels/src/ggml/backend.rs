//! Devices, backends and backend buffers.

use std::ffi::CStr;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::Arc;

use llama_cpp_sys_2 as sys;

use super::context::Context;
use super::{GgmlError, Type};

/// Loads ggml's backend modules (`libggml-cuda.so`, CPU variants, ...) from
/// `dir` in builds with the `dynamic-backends` feature; built-in backends need
/// no loading, so elsewhere this does nothing. Call once, before [`Device::all`].
pub fn load_backends(dir: Option<&Path>) {
    quiet_logs();
    register_linked();
    #[cfg(feature = "dynamic-backends")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            match dir.and_then(|d| std::ffi::CString::new(d.as_os_str().as_encoded_bytes()).ok()) {
                // SAFETY: a NUL-terminated path; ggml skips files it cannot load.
                Some(d) => unsafe { sys::ggml_backend_load_all_from_path(d.as_ptr()) },
                None => unsafe { sys::ggml_backend_load_all() },
            }
        });
    }
    #[cfg(not(feature = "dynamic-backends"))]
    let _ = dir;
}

/// Registers the backends this program links itself rather than through
/// llama-cpp-sys-2, whose ggml registers only what it was built with: with the
/// `cuda` feature, ggml-cuda with our kernels (built by build.rs). Once per
/// process; every way to a device comes through here.
fn register_linked() {
    #[cfg(feature = "cuda")]
    {
        extern "C" {
            // ggml-cuda.h; in libggml-cuda.a, which build.rs links.
            fn ggml_backend_cuda_reg() -> sys::ggml_backend_reg_t;
        }
        static ONCE: std::sync::Once = std::sync::Once::new();
        // SAFETY: ggml_backend_cuda_reg returns ggml-cuda's static registry
        // (it finds no GPU rather than failing), registered once.
        ONCE.call_once(|| unsafe { sys::ggml_backend_register(ggml_backend_cuda_reg()) });
    }
}

/// Sends ggml's warnings and errors to stderr and drops its debug and info
/// lines (one per repacked tensor, per graph, ...), as llama.cpp's tools do
/// by default; without a callback ggml prints them all.
fn quiet_logs() {
    use std::sync::atomic::{AtomicU32, Ordering};
    // The level a GGML_LOG_LEVEL_CONT line continues.
    static LAST: AtomicU32 = AtomicU32::new(sys::GGML_LOG_LEVEL_NONE);
    unsafe extern "C" fn log(
        level: sys::ggml_log_level,
        text: *const std::ffi::c_char,
        _: *mut std::ffi::c_void,
    ) {
        let level = match level {
            sys::GGML_LOG_LEVEL_CONT => LAST.load(Ordering::Relaxed),
            l => {
                LAST.store(l, Ordering::Relaxed);
                l
            }
        };
        if level >= sys::GGML_LOG_LEVEL_WARN && !text.is_null() {
            // SAFETY: ggml passes a NUL-terminated message.
            eprint!("{}", unsafe { CStr::from_ptr(text) }.to_string_lossy());
        }
    }
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: a callback of ggml_log_callback's signature that lives for the process.
    ONCE.call_once(|| unsafe { sys::ggml_log_set(Some(log), std::ptr::null_mut()) });
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    Gpu,
    IntegratedGpu,
    Accelerator,
}

/// A device of ggml's registry (static for the life of the process).
#[derive(Clone, Copy)]
pub struct Device {
    ptr: sys::ggml_backend_dev_t,
}

// SAFETY: registry devices are immutable, process-wide objects.
unsafe impl Send for Device {}
unsafe impl Sync for Device {}

impl Device {
    /// Every device ggml knows, in registry order (GPUs before the CPU).
    pub fn all() -> Vec<Device> {
        register_linked();
        // SAFETY: plain registry queries.
        let n = unsafe { sys::ggml_backend_dev_count() };
        (0..n)
            .map(|i| Device {
                ptr: unsafe { sys::ggml_backend_dev_get(i) },
            })
            .collect()
    }

    /// The device called `name` (case-insensitive), e.g. `CPU`, `CUDA0`.
    pub fn by_name(name: &str) -> Result<Device, GgmlError> {
        let all = Device::all();
        all.iter()
            .copied()
            .find(|d| d.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| GgmlError::NoDevice {
                name: name.to_string(),
                available: all.iter().map(|d| d.name()).collect::<Vec<_>>().join(", "),
            })
    }

    /// The first GPU-like device, if any.
    pub fn first_gpu() -> Option<Device> {
        Device::all().into_iter().find(Device::is_gpu)
    }

    /// The CPU device (always present).
    pub fn cpu() -> Device {
        Device::all()
            .into_iter()
            .find(|d| d.kind() == DeviceKind::Cpu)
            .expect("ggml has no CPU device")
    }

    /// A function the device's registry exports under `name`, if any.
    ///
    /// # Safety
    /// The caller transmutes the pointer to the signature ggml documents for `name`.
    unsafe fn proc_address(&self, name: &CStr) -> Option<*mut std::ffi::c_void> {
        // SAFETY: registry lookups on a live device.
        let f = unsafe {
            let reg = sys::ggml_backend_dev_backend_reg(self.ptr);
            sys::ggml_backend_reg_get_proc_address(reg, name.as_ptr())
        };
        (!f.is_null()).then_some(f)
    }

    pub fn name(&self) -> String {
        // SAFETY: registry strings live for the process.
        unsafe { CStr::from_ptr(sys::ggml_backend_dev_name(self.ptr)) }
            .to_string_lossy()
            .into_owned()
    }

    pub fn description(&self) -> String {
        // SAFETY: as above.
        unsafe { CStr::from_ptr(sys::ggml_backend_dev_description(self.ptr)) }
            .to_string_lossy()
            .into_owned()
    }

    pub fn kind(&self) -> DeviceKind {
        // SAFETY: registry query.
        match unsafe { sys::ggml_backend_dev_type(self.ptr) } {
            sys::GGML_BACKEND_DEVICE_TYPE_CPU => DeviceKind::Cpu,
            sys::GGML_BACKEND_DEVICE_TYPE_GPU => DeviceKind::Gpu,
            sys::GGML_BACKEND_DEVICE_TYPE_IGPU => DeviceKind::IntegratedGpu,
            _ => DeviceKind::Accelerator,
        }
    }

    /// Whether it is a GPU, discrete or integrated.
    pub fn is_gpu(&self) -> bool {
        matches!(self.kind(), DeviceKind::Gpu | DeviceKind::IntegratedGpu)
    }

    /// Starts a backend (a stream/queue) on this device.
    pub fn init(&self) -> Result<Backend, GgmlError> {
        // SAFETY: registry device; null params means defaults.
        let ptr = unsafe { sys::ggml_backend_dev_init(self.ptr, std::ptr::null()) };
        NonNull::new(ptr)
            .map(|ptr| Backend {
                ptr,
                device: *self,
                pool: None,
            })
            .ok_or_else(|| GgmlError::BackendInit(self.name()))
    }

    /// The device's extra buffer types, in ggml's order of preference: on the
    /// CPU, weight layouts repacked for its SIMD or AMX matmul kernels (what
    /// llama.cpp loads weights into); none on other devices.
    pub fn extra_buffer_types(&self) -> Vec<BufferType> {
        // SAFETY: `ggml_backend_dev_get_extra_bufts_t` returns a static,
        // NULL-terminated array of buffer types.
        let Some(f) = (unsafe { self.proc_address(c"ggml_backend_dev_get_extra_bufts") }) else {
            return Vec::new();
        };
        let f: unsafe extern "C" fn(
            sys::ggml_backend_dev_t,
        ) -> *mut sys::ggml_backend_buffer_type_t = unsafe { std::mem::transmute(f) };
        let mut out = Vec::new();
        // SAFETY: walks the array up to its NULL.
        unsafe {
            let mut p = f(self.ptr);
            while !p.is_null() && !(*p).is_null() {
                out.push(BufferType {
                    ptr: *p,
                    device: *self,
                });
                p = p.add(1);
            }
        }
        out
    }

    /// Host memory this device copies to and from directly (a GPU's pinned
    /// memory), if it has such a buffer type.
    pub fn host_buffer_type(&self) -> Option<BufferType> {
        // SAFETY: registry query; buffer types are static.
        let ptr = unsafe { sys::ggml_backend_dev_host_buffer_type(self.ptr) };
        (!ptr.is_null()).then_some(BufferType { ptr, device: *self })
    }

    /// The device's default buffer type (device memory).
    pub fn buffer_type(&self) -> BufferType {
        // SAFETY: registry query; buffer types are static.
        BufferType {
            ptr: unsafe { sys::ggml_backend_dev_buffer_type(self.ptr) },
            device: *self,
        }
    }
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.description())
    }
}

/// A running backend on one device.
pub struct Backend {
    ptr: NonNull<sys::ggml_backend>,
    device: Device,
    /// The CPU workers it computes on; dropped after the backend (fields
    /// drop after `Drop::drop`).
    pool: Option<Arc<ThreadPool>>,
}

impl Backend {
    pub(crate) fn raw(&self) -> sys::ggml_backend_t {
        self.ptr.as_ptr()
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Sets the worker threads of a CPU backend; a no-op on backends without threads.
    pub fn set_threads(&self, n: usize) {
        // SAFETY: the registry hands out this name with ggml's documented
        // `ggml_backend_set_n_threads_t` signature.
        if let Some(f) = unsafe { self.proc_address(c"ggml_backend_set_n_threads") } {
            let f: unsafe extern "C" fn(sys::ggml_backend_t, i32) =
                unsafe { std::mem::transmute(f) };
            // SAFETY: a live backend of the registry that exported `f`.
            unsafe { f(self.raw(), n.max(1) as i32) };
        }
    }

    /// Makes a CPU backend compute on `pool`'s threads (at most its count)
    /// instead of starting and joining threads for every graph; a no-op on
    /// other backends. Backends may share a pool as long as they do not
    /// compute at the same time.
    pub fn set_thread_pool(&mut self, pool: &Arc<ThreadPool>) {
        if self.device.kind() != DeviceKind::Cpu {
            return;
        }
        // SAFETY: exported by the CPU registry as
        // `void ggml_backend_cpu_set_threadpool(ggml_backend_t, ggml_threadpool_t)`.
        if let Some(f) = unsafe { self.proc_address(c"ggml_backend_cpu_set_threadpool") } {
            let f: unsafe extern "C" fn(sys::ggml_backend_t, sys::ggml_threadpool_t) =
                unsafe { std::mem::transmute(f) };
            // SAFETY: a live CPU backend and a live pool, which `self` keeps
            // alive until the backend is freed.
            unsafe { f(self.raw(), pool.ptr.as_ptr()) };
            self.pool = Some(Arc::clone(pool));
        }
    }

    /// On a CPU backend, whether ops run through ggml's reference kernels:
    /// no GEMM tiling (llamafile), no tiled or KV-split flash attention, no
    /// op fusion. Each output row of a reference kernel is computed the same
    /// way whatever the batch size, so row `i` of a batched pass is
    /// bit-identical to a one-token pass over the same cache; the fast
    /// kernels sum in batch-dependent orders. A no-op on other backends.
    pub fn set_reference_kernels(&self, on: bool) {
        if self.device.kind() != DeviceKind::Cpu {
            return;
        }
        // SAFETY: exported by the CPU registry as
        // `void ggml_backend_cpu_set_use_ref(ggml_backend_t, bool)`.
        if let Some(f) = unsafe { self.proc_address(c"ggml_backend_cpu_set_use_ref") } {
            let f: unsafe extern "C" fn(sys::ggml_backend_t, bool) =
                unsafe { std::mem::transmute(f) };
            // SAFETY: a live CPU backend (checked above), as the function asserts.
            unsafe { f(self.raw(), on) };
        }
    }

    /// A function the backend's registry exports under `name`, if any.
    ///
    /// # Safety
    /// As [`Device::proc_address`].
    unsafe fn proc_address(&self, name: &CStr) -> Option<*mut std::ffi::c_void> {
        // SAFETY: the caller's.
        unsafe { self.device.proc_address(name) }
    }
}

/// Which kernels ggml-cuda multiplies quantized weights with, where it is
/// built with our matmul (`kernels/cuda/`, compiled in by kernels/cuda/CMakeLists.txt).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CudaMatmul {
    /// ggml's own kernels everywhere.
    Ggml,
    /// The default: ours for Q4_K and Q6_K times 3 to 16 columns.
    Default,
    /// Ours for Q4_K, Q6_K and Q8_0 times 1 to 64 columns (16 at a time),
    /// and no fused one-column products: each column is summed as it is
    /// alone, whatever the batch.
    BatchInvariant,
}

/// ggml-cuda's setter of our matmul mode on `d`, where its ggml-cuda has our
/// patches (`kernels/cuda/patches/`).
fn mmv_mode_setter(d: &Device) -> Option<unsafe extern "C" fn(i32) -> i32> {
    // SAFETY: exported by kernels/cuda/ggml-hook.cu as `int (int)`.
    let f = unsafe { d.proc_address(c"ggml_backend_cuda_orthrus_set_mmv_mode") }?;
    Some(unsafe {
        std::mem::transmute::<*mut std::ffi::c_void, unsafe extern "C" fn(i32) -> i32>(f)
    })
}

/// Whether there is a GPU among `devices` and every one is ggml-cuda with
/// this project's patches: then, among other things, it keeps its most
/// recently used CUDA graphs however long idle.
pub fn orthrus_cuda(devices: &[Device]) -> bool {
    let mut gpus = devices.iter().filter(|d| d.is_gpu()).peekable();
    gpus.peek().is_some() && gpus.all(|d| mmv_mode_setter(d).is_some())
}

/// Sets the matmul of every GPU among `devices` (process-wide, for graphs
/// computed from now on) and returns the one now in effect on all of them:
/// `None` when one lacks our matmul (another backend, or a ggml-cuda without
/// it), when they differ, or when there is no GPU.
pub fn set_cuda_matmul(devices: &[Device], want: CudaMatmul) -> Option<CudaMatmul> {
    let mut now = None;
    for d in devices.iter().filter(|d| d.is_gpu()) {
        let f = mmv_mode_setter(d)?;
        // SAFETY: sets an atomic in the loaded ggml-cuda.
        let mode = match unsafe { f(want as i32) } {
            0 => CudaMatmul::Ggml,
            1 => CudaMatmul::Default,
            2 => CudaMatmul::BatchInvariant,
            _ => return None,
        };
        if now.is_some_and(|m| m != mode) {
            return None;
        }
        now = Some(mode);
    }
    now
}

impl Drop for Backend {
    fn drop(&mut self) {
        // SAFETY: created by ggml_backend_dev_init, freed once.
        unsafe { sys::ggml_backend_free(self.ptr.as_ptr()) }
    }
}

/// Worker threads for CPU backends, kept from one graph to the next.
/// Without a pool ggml-cpu starts and joins its threads for every graph;
/// those fresh threads often waited a whole scheduler tick for a core (a
/// pass of 0.3 ms took 4-40 ms at times on a 2-core machine). Between graphs
/// the workers spin a while (ggml's default polling, as llama.cpp's tools
/// use), then sleep.
pub struct ThreadPool {
    ptr: NonNull<sys::ggml_threadpool>,
    free: unsafe extern "C" fn(sys::ggml_threadpool_t),
}

// SAFETY: ggml's pool is driven by whichever thread computes a graph on it;
// `Backend::set_thread_pool` leaves it to one graph at a time.
unsafe impl Send for ThreadPool {}
unsafe impl Sync for ThreadPool {}

impl ThreadPool {
    /// A pool of `threads` (the computing thread among them) from the CPU
    /// device's registry; None where it exports no pools.
    pub fn new(threads: usize) -> Option<Arc<ThreadPool>> {
        let cpu = Device::cpu();
        // SAFETY: the CPU registry exports these names with the signatures
        // of ggml-cpu.h.
        let (new, free) = unsafe {
            (
                cpu.proc_address(c"ggml_threadpool_new")?,
                cpu.proc_address(c"ggml_threadpool_free")?,
            )
        };
        let new: unsafe extern "C" fn(*mut sys::ggml_threadpool_params) -> sys::ggml_threadpool_t =
            unsafe { std::mem::transmute(new) };
        let free: unsafe extern "C" fn(sys::ggml_threadpool_t) =
            unsafe { std::mem::transmute(free) };
        // SAFETY: ggml-base fills the parameters; the pool copies them.
        let mut params = unsafe { sys::ggml_threadpool_params_default(threads.max(1) as i32) };
        let ptr = NonNull::new(unsafe { new(&mut params) })?;
        Some(Arc::new(ThreadPool { ptr, free }))
    }

    /// The pool as ggml's handle (for llama.cpp's `llama_attach_threadpool`).
    pub fn raw(&self) -> sys::ggml_threadpool_t {
        self.ptr.as_ptr()
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        // SAFETY: made by ggml_threadpool_new, freed once, after every
        // backend holding it (each holds an Arc).
        unsafe { (self.free)(self.ptr.as_ptr()) }
    }
}

/// Where a buffer's memory lives (a device's memory, host memory, ...).
#[derive(Clone, Copy)]
pub struct BufferType {
    pub(crate) ptr: sys::ggml_backend_buffer_type_t,
    device: Device,
}

impl BufferType {
    pub fn device(&self) -> Device {
        self.device
    }

    /// Whether the device multiplies a weight of type `ty` and shape
    /// `[k, n]` held in this buffer type by f32 activations (an extra buffer
    /// type's layout serves only some types and shapes).
    pub fn takes_matmul(&self, ty: Type, k: i64, n: i64) -> bool {
        if ty.block_size() > 1 && k % ty.block_size() as i64 != 0 {
            return false;
        }
        let ctx = Context::new(3, false);
        let w = ctx.new_tensor(ty, &[k, n]);
        let op = ctx.mul_mat(w, ctx.new_tensor(Type::F32, &[k, 1]));
        // SAFETY: a zero-size buffer of this type stands for where the
        // weight would live, as llama.cpp probes it; the device only reads the
        // op's metadata, and the buffer is freed before the tensors' context.
        unsafe {
            let buf = sys::ggml_backend_buft_alloc_buffer(self.ptr, 0);
            if buf.is_null() {
                return false;
            }
            (*w.raw()).buffer = buf;
            let ok = sys::ggml_backend_dev_supports_op(self.device.ptr, op.raw());
            (*w.raw()).buffer = std::ptr::null_mut();
            sys::ggml_backend_buffer_free(buf);
            ok
        }
    }
}

/// A backend buffer holding the data of some context's tensors.
pub struct Buffer {
    ptr: NonNull<sys::ggml_backend_buffer>,
}

impl Buffer {
    pub(crate) fn from_raw(ptr: sys::ggml_backend_buffer_t) -> Option<Buffer> {
        NonNull::new(ptr).map(|ptr| Buffer { ptr })
    }

    /// Fills the whole buffer with `byte`.
    pub fn clear(&self, byte: u8) {
        // SAFETY: live buffer.
        unsafe { sys::ggml_backend_buffer_clear(self.ptr.as_ptr(), byte) }
    }

    /// Tells the scheduler these are weights, so ops on them run on this device.
    pub(crate) fn mark_weights(&self) {
        // SAFETY: live buffer.
        unsafe {
            sys::ggml_backend_buffer_set_usage(
                self.ptr.as_ptr(),
                sys::GGML_BACKEND_BUFFER_USAGE_WEIGHTS,
            )
        }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: allocated by ggml, freed once.
        unsafe { sys::ggml_backend_buffer_free(self.ptr.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_device_is_always_there() {
        load_backends(None);
        let cpu = Device::cpu();
        assert_eq!(cpu.kind(), DeviceKind::Cpu);
        assert_eq!(Device::by_name("cpu").unwrap().name(), cpu.name());
        let err = Device::by_name("NoSuchGPU7").unwrap_err().to_string();
        assert!(
            err.contains("NoSuchGPU7") && err.contains(&cpu.name()),
            "{err}"
        );
        let backend = cpu.init().unwrap();
        backend.set_threads(2);
    }
}
