//! The device layer: adapter and device, GPU tensors, the kernel registry, the recorder,
//! readback, and the host side of each kernel family (named as its `shaders/` file).

pub mod device;
pub mod gemm;
pub mod readback;
pub mod recorder;
pub mod registry;
pub mod shaders;
pub mod tensor;
pub mod word2vec;

pub use device::{list_adapters, AdapterSummary, Capabilities, Gpu, WorkCounters};
pub use gemm::{gemm, GemmPlan};
pub use recorder::{Recorder, SubmitReport};
pub use registry::{Kernel, KernelKey};
pub use tensor::GpuTensor;
pub use word2vec::CosineIndex;

use wgpu::util::DeviceExt;

impl Gpu {
    /// A uniform buffer holding `value` (kernel parameters, written once when a plan is built).
    pub fn uniform<T: bytemuck::Pod>(&self, value: &T) -> wgpu::Buffer {
        self.device()
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("recur.params"),
                contents: bytemuck::bytes_of(value),
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            })
    }

    /// A bind group for `kernel` with `buffers[i]` at binding `i`.
    pub fn bind(&self, kernel: &Kernel, buffers: &[&wgpu::Buffer]) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        self.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&format!("{}::{}", kernel.key.family, kernel.key.entry)),
            layout: &kernel.layout,
            entries: &entries,
        })
    }

    /// The compiled pipeline for `key` (compiled on first use, then cached).
    pub fn kernel(&self, key: &KernelKey) -> anyhow::Result<Kernel> {
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
