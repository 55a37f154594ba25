//! The device layer: adapter and device, GPU tensors, the kernel registry, the recorder,
//! readback, and the host side of each kernel family (named as its `shaders/` file).

pub mod cost;
pub mod device;
pub mod dropout;
pub mod embedding;
pub mod gemm;
pub(crate) mod launch;
pub mod loss;
pub mod merge;
pub mod optim;
pub mod readback;
pub mod recorder;
pub mod recurrent;
pub mod registry;
pub mod shaders;
pub mod tensor;
pub mod trace;
pub mod word2vec;
pub mod word2vec_train;

/// A Rust struct that mirrors a WGSL uniform struct: its size and field offsets, which a
/// unit test (`gpu::shaders`) compares with naga's layout of the shader's struct, so the
/// two cannot drift apart unnoticed.
#[cfg(test)]
pub(crate) struct UniformMirror {
    pub family: &'static str,
    pub wgsl: &'static str,
    pub size: usize,
    pub fields: &'static [(&'static str, usize)],
}

/// Declares `$name`, the [`UniformMirror`] of `$ty` (fields named as in WGSL; padding fields
/// starting with `_` are left out).
macro_rules! uniform_mirror {
    ($name:ident: $ty:ident in $family:literal as $wgsl:literal { $($field:ident),* $(,)? }) => {
        #[cfg(test)]
        pub(crate) const $name: crate::gpu::UniformMirror = crate::gpu::UniformMirror {
            family: $family,
            wgsl: $wgsl,
            size: std::mem::size_of::<$ty>(),
            fields: &[$((stringify!($field), std::mem::offset_of!($ty, $field))),*],
        };
    };
}
pub(crate) use uniform_mirror;

pub use cost::{Cost, DispatchCost, KernelCost, KernelName};
pub use device::{list_adapters, AdapterSummary, Capabilities, Gpu, LimitsMode, WorkCounters};
pub use dropout::{DropoutApplyPlan, DropoutMaskPlan};
pub use embedding::{EmbeddingBackwardPlan, EmbeddingForwardPlan, EmbeddingIds};
pub use gemm::{gemm, GemmPlan, GemmVariant, WeightGradTensors};
pub use loss::{CrossEntropyPlan, MsePlan};
pub use optim::{ClipPlan, OptimPlan};
pub use recorder::{PerDispatch, Recorder, Recording, SubmitReport};
pub use registry::{Kernel, KernelKey};
pub use tensor::GpuTensor;
pub use trace::Trace;
pub use word2vec::CosineIndex;
pub use word2vec_train::TrainPlan;

use wgpu::util::DeviceExt;

impl Gpu {
    /// A uniform buffer holding `value` (kernel parameters, written once when a plan is built).
    pub fn uniform<T: bytemuck::Pod>(&self, value: &T) -> wgpu::Buffer {
        self.device()
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("recur.params"),
                contents: bytemuck::bytes_of(value),
                // COPY_SRC: a trace (gpu::trace) reads every buffer it replays.
                usage: wgpu::BufferUsages::UNIFORM
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC,
            })
    }

    /// A bind group for `kernel` with `buffers[i]` at binding `i`.
    pub fn bind(&self, kernel: &Kernel, buffers: &[&wgpu::Buffer]) -> wgpu::BindGroup {
        let entries: Vec<(u32, wgpu::BindingResource)> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| (i as u32, b.as_entire_binding()))
            .collect();
        self.bind_resources(kernel, &entries)
    }

    /// A bind group for `kernel` with each whole buffer at the binding given (an entry
    /// point's derived layout holds only the bindings it uses, which need not be 0..k).
    pub fn bind_at(&self, kernel: &Kernel, entries: &[(u32, &wgpu::Buffer)]) -> wgpu::BindGroup {
        let resources: Vec<(u32, wgpu::BindingResource)> = entries
            .iter()
            .map(|(i, b)| (*i, b.as_entire_binding()))
            .collect();
        self.bind_resources(kernel, &resources)
    }

    /// A bind group for `kernel` with each resource (a buffer or a range of one) at the
    /// binding given.
    pub fn bind_resources(
        &self,
        kernel: &Kernel,
        entries: &[(u32, wgpu::BindingResource)],
    ) -> wgpu::BindGroup {
        let wgpu_entries: Vec<wgpu::BindGroupEntry> = entries
            .iter()
            .map(|(binding, resource)| wgpu::BindGroupEntry {
                binding: *binding,
                resource: resource.clone(),
            })
            .collect();
        let group = self.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&format!("{}::{}", kernel.key.family, kernel.key.entry)),
            layout: &kernel.layout,
            entries: &wgpu_entries,
        });
        self.trace_bind_group(&group, entries);
        group
    }

    /// The compiled pipeline for `key` (compiled on first use, then cached).
    pub fn kernel(&self, key: &KernelKey) -> crate::Result<Kernel> {
        self.inner.kernels.get(key)
    }

    /// Pipelines compiled so far on this device.
    pub fn compiled_kernels(&self) -> usize {
        self.inner.kernels.compiled_count()
    }

    /// A 4-byte storage buffer to bind where a kernel's optional input is absent.
    pub(crate) fn dummy_buffer(&self) -> &wgpu::Buffer {
        &self.inner.dummy
    }
}
