//! A GPU tensor: a shape and the storage buffer that holds its elements.

use std::marker::PhantomData;

use crate::error::{ensure, err, Result};
use bytemuck::Pod;
use wgpu::util::DeviceExt;

use super::device::Gpu;
use super::readback::read_buffer;

/// A dense, row-major tensor of `T` (f32 unless said otherwise) in a device storage buffer.
pub struct GpuTensor<T: Pod = f32> {
    gpu: Gpu,
    buffer: wgpu::Buffer,
    shape: Vec<usize>,
    len: usize,
    _elem: PhantomData<T>,
}

/// Another handle to the same device buffer (not a copy of its contents): plans and
/// executors that bind one tensor in several places hold handles.
impl<T: Pod> Clone for GpuTensor<T> {
    fn clone(&self) -> Self {
        Self {
            gpu: self.gpu.clone(),
            buffer: self.buffer.clone(),
            shape: self.shape.clone(),
            len: self.len,
            _elem: PhantomData,
        }
    }
}

/// Element count of a shape, or an error if it overflows.
fn element_count(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            err!(
                Limit,
                "tensor shape {shape:?} has more elements than can be counted"
            )
        })
}

impl<T: Pod> GpuTensor<T> {
    fn usage() -> wgpu::BufferUsages {
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST
    }

    /// Bytes the buffer for `len` elements takes (wgpu copies work in 4-byte units, and a
    /// buffer is never empty).
    fn buffer_bytes(gpu: &Gpu, shape: &[usize]) -> Result<(usize, u64)> {
        let len = element_count(shape)?;
        let bytes = (len as u64)
            .checked_mul(std::mem::size_of::<T>() as u64)
            .ok_or_else(|| err!(Limit, "tensor shape {shape:?} is too large"))?;
        let padded = bytes.div_ceil(4).max(1) * 4;
        let max = gpu.max_binding_bytes();
        ensure!(
            padded <= max,
            Limit, "tensor of shape {shape:?} needs {padded} bytes, but adapter {:?} binds at most {max} bytes \
             per storage buffer (max_storage_buffer_binding_size / max_buffer_size)",
            gpu.info().name
        );
        Ok((len, padded))
    }

    /// A tensor whose elements are all zero bits.
    pub fn zeros(gpu: &Gpu, shape: &[usize]) -> Result<Self> {
        let (len, bytes) = Self::buffer_bytes(gpu, shape)?;
        // wgpu zero-initialises new buffers.
        let buffer = gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("recur.tensor"),
            size: bytes,
            usage: Self::usage(),
            mapped_at_creation: false,
        });
        Ok(Self::wrap(gpu, buffer, shape, len))
    }

    /// A tensor holding `data`, which must have as many elements as `shape` says.
    pub fn from_slice(gpu: &Gpu, shape: &[usize], data: &[T]) -> Result<Self> {
        let (len, bytes) = Self::buffer_bytes(gpu, shape)?;
        ensure!(
            data.len() == len,
            Shape,
            "tensor of shape {shape:?} needs {len} elements, {} were given",
            data.len()
        );
        let mut contents = bytemuck::cast_slice::<T, u8>(data).to_vec();
        contents.resize(bytes as usize, 0);
        let buffer = gpu
            .device()
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("recur.tensor"),
                contents: &contents,
                usage: Self::usage(),
            });
        Ok(Self::wrap(gpu, buffer, shape, len))
    }

    /// A tensor with every element equal to `value` (e.g. NaN, to catch unwritten outputs).
    pub fn filled(gpu: &Gpu, shape: &[usize], value: T) -> Result<Self> {
        let len = element_count(shape)?;
        Self::from_slice(gpu, shape, &vec![value; len])
    }

    fn wrap(gpu: &Gpu, buffer: wgpu::Buffer, shape: &[usize], len: usize) -> Self {
        Self {
            gpu: gpu.clone(),
            buffer,
            shape: shape.to_vec(),
            len,
            _elem: PhantomData,
        }
    }

    /// Overwrites the contents with `data` (same element count); ordered before any later
    /// submit on this device.
    pub fn write(&self, data: &[T]) -> Result<()> {
        ensure!(
            data.len() == self.len,
            Shape,
            "tensor of shape {:?} holds {} elements, {} were given",
            self.shape,
            self.len,
            data.len()
        );
        if self.len > 0 {
            let bytes = bytemuck::cast_slice::<T, u8>(data);
            if bytes.len().is_multiple_of(4) {
                self.gpu.queue().write_buffer(&self.buffer, 0, bytes);
            } else {
                let mut padded = bytes.to_vec();
                padded.resize(bytes.len().div_ceil(4) * 4, 0);
                self.gpu.queue().write_buffer(&self.buffer, 0, &padded);
            }
        }
        Ok(())
    }

    /// Copies the elements back to the host (one submit and one wait).
    pub fn to_vec(&self) -> Result<Vec<T>> {
        let bytes = (self.len * std::mem::size_of::<T>()) as u64;
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let raw = read_buffer(&self.gpu, &self.buffer, 0, bytes.div_ceil(4) * 4)?;
        let elems = &raw[..bytes as usize];
        Ok(bytemuck::pod_collect_to_vec(elems))
    }

    /// Copies `len` elements starting at element `start` back to the host.
    pub fn read_range(&self, start: usize, len: usize) -> Result<Vec<T>> {
        let size = std::mem::size_of::<T>();
        ensure!(
            start.checked_add(len).is_some_and(|end| end <= self.len),
            Shape,
            "range {start}..{} is outside a tensor of {} elements",
            start.saturating_add(len),
            self.len
        );
        ensure!(
            (start * size).is_multiple_of(4) && (len * size).is_multiple_of(4),
            Invalid,
            "a partial readback must start and end on 4-byte boundaries"
        );
        if len == 0 {
            return Ok(Vec::new());
        }
        let raw = read_buffer(
            &self.gpu,
            &self.buffer,
            (start * size) as u64,
            (len * size) as u64,
        )?;
        Ok(bytemuck::pod_collect_to_vec(&raw))
    }

    /// Writes `data` at element `start`, ordered before any later submit.
    pub fn write_range(&self, start: usize, data: &[T]) -> Result<()> {
        let size = std::mem::size_of::<T>();
        ensure!(
            start
                .checked_add(data.len())
                .is_some_and(|end| end <= self.len),
            Shape,
            "range {start}..{} is outside a tensor of {} elements",
            start.saturating_add(data.len()),
            self.len
        );
        let bytes = bytemuck::cast_slice::<T, u8>(data);
        ensure!(
            (start * size).is_multiple_of(4) && bytes.len().is_multiple_of(4),
            Invalid,
            "a partial write must start and end on 4-byte boundaries"
        );
        if !bytes.is_empty() {
            self.gpu
                .queue()
                .write_buffer(&self.buffer, (start * size) as u64, bytes);
        }
        Ok(())
    }

    /// The tensor's shape (row-major, last dimension fastest).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Elements (of `T`), the product of the shape.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The underlying wgpu buffer, for binding it or copying to and from it.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// The device the tensor lives on.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Bytes of device memory this tensor holds.
    pub fn device_bytes(&self) -> u64 {
        self.buffer.size()
    }

    /// The same buffer seen with another shape of the same element count.
    pub fn reshape(self, shape: &[usize]) -> Result<Self> {
        let len = element_count(shape)?;
        ensure!(
            len == self.len,
            Shape,
            "cannot reshape a tensor of shape {:?} ({} elements) to {shape:?} ({len} elements)",
            self.shape,
            self.len
        );
        Ok(Self {
            shape: shape.to_vec(),
            ..self
        })
    }
}

impl<T: Pod> std::fmt::Debug for GpuTensor<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GpuTensor<{}>{:?}",
            std::any::type_name::<T>(),
            self.shape
        )
    }
}
