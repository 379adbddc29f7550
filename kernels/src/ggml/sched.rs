//! Running graphs across backends.

use std::ptr::NonNull;

use llama_cpp_sys_2 as sys;

use super::backend::{Backend, DeviceKind};
use super::context::{Element, OwnedGraph, Tensor};
use super::GgmlError;

/// Data for one named input tensor of a graph.
pub enum Input<'d> {
    F32(&'d str, &'d [f32]),
    F16(&'d str, &'d [half::f16]),
    I32(&'d str, &'d [i32]),
    I64(&'d str, &'d [i64]),
}

/// Where to copy one named output tensor of a graph after a run.
pub enum Output<'d> {
    F32(&'d str, &'d mut [f32]),
    I32(&'d str, &'d mut [i32]),
}

/// ggml's scheduler over an ordered list of backends (the CPU last): each
/// node runs on the first backend that holds its weights and supports it.
pub struct Scheduler {
    ptr: NonNull<sys::ggml_backend_sched>,
    /// Owned so they outlive the scheduler, which `Drop` frees first.
    backends: Vec<Backend>,
    /// Id of the graph allocated by the last run: running it again skips
    /// splitting and allocation (and lets CUDA replay its captured graph).
    allocated: Option<u64>,
    /// Whether the CPU backends run ggml's reference kernels now.
    reference: bool,
}

impl Scheduler {
    /// `backends` in order of preference; the last one must be the CPU.
    pub fn new(backends: Vec<Backend>, max_nodes: usize) -> Scheduler {
        assert!(
            backends
                .last()
                .is_some_and(|b| b.device().kind() == DeviceKind::Cpu),
            "the scheduler's last backend must be the CPU"
        );
        let mut raw: Vec<sys::ggml_backend_t> = backends.iter().map(|b| b.raw()).collect();
        // With a GPU, the CPU's compute buffers (where the graph's inputs
        // live, and what the CPU computes for the GPU) in its pinned host
        // memory, as llama.cpp has them: the copies between the two then
        // need no staging. Otherwise every backend's default.
        let pinned = backends
            .iter()
            .map(|b| b.device())
            .find(|d| d.is_gpu())
            .and_then(|gpu| gpu.host_buffer_type());
        let mut bufts: Option<Vec<sys::ggml_backend_buffer_type_t>> = pinned.map(|host| {
            backends
                .iter()
                .map(|b| match b.device().kind() {
                    DeviceKind::Cpu => host.ptr,
                    // SAFETY: a live backend's default buffer type (static).
                    _ => unsafe { sys::ggml_backend_get_default_buffer_type(b.raw()) },
                })
                .collect()
        });
        let bufts_ptr = bufts
            .as_mut()
            .map_or(std::ptr::null_mut(), |b| b.as_mut_ptr());
        // SAFETY: live backends, kept alive in self; buffer types static (or
        // null: the defaults), one per backend.
        let ptr = unsafe {
            sys::ggml_backend_sched_new(
                raw.as_mut_ptr(),
                bufts_ptr,
                raw.len() as i32,
                max_nodes,
                false,
                true,
            )
        };
        Scheduler {
            ptr: NonNull::new(ptr).expect("ggml_backend_sched_new failed"),
            backends,
            allocated: None,
            reference: false,
        }
    }

    /// Whether the next runs use the CPU's reference kernels, whose rows do
    /// not depend on the batch size (see [`Backend::set_reference_kernels`]).
    pub fn set_reference_kernels(&mut self, on: bool) {
        if self.reference != on {
            for b in &self.backends {
                b.set_reference_kernels(on);
            }
            self.reference = on;
        }
    }

    /// Sizes the compute buffers for `graph`, the largest this scheduler is
    /// to run, so that smaller ones fit without regrowing them: a regrown
    /// buffer moves every tensor of the graphs allocated in it, and CUDA
    /// must then capture each of them anew.
    pub fn reserve(&mut self, graph: &OwnedGraph<'_>) -> Result<(), GgmlError> {
        self.allocated = None;
        graph.clear_allocation();
        // SAFETY: live scheduler and graph; reserving only measures the graph.
        let ok = unsafe {
            let ok = sys::ggml_backend_sched_reserve(self.ptr.as_ptr(), graph.raw());
            sys::ggml_backend_sched_reset(self.ptr.as_ptr());
            ok
        };
        graph.clear_allocation();
        if ok {
            Ok(())
        } else {
            Err(GgmlError::GraphAlloc)
        }
    }

    /// Whether `graph` is the one allocated by the last run: running it
    /// again skips splitting and allocating it, host work that on a GPU
    /// took a step of the bundled model 0.2 ms longer a pass.
    pub fn holds(&self, graph: &OwnedGraph<'_>) -> bool {
        self.allocated == Some(graph.id())
    }

    /// Bytes of its compute buffers on devices other than the CPU, whose
    /// tensors a GPU's captured graphs point at (the graph's inputs, on the
    /// CPU, are copied over before a captured graph runs).
    fn device_buffer_bytes(&self) -> usize {
        self.backends
            .iter()
            .filter(|b| b.device().kind() != DeviceKind::Cpu)
            // SAFETY: live scheduler; the backend is one of its own.
            .map(|b| unsafe { sys::ggml_backend_sched_get_buffer_size(self.ptr.as_ptr(), b.raw()) })
            .sum()
    }

    /// Allocates `graph`, writes `inputs`, computes, and reads `outputs`.
    /// Graph tensors are only touched inside this call, while their memory
    /// (the scheduler's compute buffers) is known to be theirs. Returns
    /// whether allocating it grew a device's compute buffer, which moved the
    /// tensors of every graph allocated here before (see [`Self::reserve`]).
    pub fn run(
        &mut self,
        graph: &OwnedGraph<'_>,
        inputs: &[Input<'_>],
        outputs: &mut [Output<'_>],
    ) -> Result<bool, GgmlError> {
        let s = self.ptr.as_ptr();
        let mut grew = false;
        if self.allocated != Some(graph.id()) {
            self.allocated = None;
            graph.clear_allocation();
            let before = self.device_buffer_bytes();
            // SAFETY: live scheduler and graph; the graph's tensors live in its context.
            unsafe {
                sys::ggml_backend_sched_reset(s);
                if !sys::ggml_backend_sched_alloc_graph(s, graph.raw()) {
                    return Err(GgmlError::GraphAlloc);
                }
            }
            self.allocated = Some(graph.id());
            grew = self.device_buffer_bytes() > before;
        }
        for input in inputs {
            match input {
                Input::F32(name, d) => write(graph, name, d),
                Input::F16(name, d) => write(graph, name, d),
                Input::I32(name, d) => write(graph, name, d),
                Input::I64(name, d) => write(graph, name, d),
            }
        }
        // SAFETY: allocated above.
        let status = unsafe { sys::ggml_backend_sched_graph_compute(s, graph.raw()) };
        if status != sys::GGML_STATUS_SUCCESS {
            return Err(GgmlError::Compute(status as i32));
        }
        for output in outputs.iter_mut() {
            match output {
                Output::F32(name, d) => node(graph, name).read(d),
                Output::I32(name, d) => node(graph, name).read(d),
            }
        }
        Ok(grew)
    }
}

fn node<'g>(graph: &'g OwnedGraph<'_>, name: &str) -> Tensor<'g> {
    graph
        .tensor(name)
        .unwrap_or_else(|| panic!("the graph has no tensor named {name}"))
}

fn write<T: Element>(graph: &OwnedGraph<'_>, name: &str, data: &[T]) {
    node(graph, name).write(data)
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        // SAFETY: created by ggml_backend_sched_new, freed once, before the backends.
        unsafe { sys::ggml_backend_sched_free(self.ptr.as_ptr()) }
    }
}
