//! Copying device buffers back to the host: the only place the host waits on the GPU.

use crate::error::{err, Result};
use futures_intrusive::channel::shared::oneshot_channel;

use super::device::Gpu;

/// Reads `bytes` bytes (a multiple of 4) of `buffer` from `offset` (a multiple of 4): one
/// copy, one submit, one wait.
pub(crate) fn read_buffer(
    gpu: &Gpu,
    buffer: &wgpu::Buffer,
    offset: u64,
    bytes: u64,
) -> Result<Vec<u8>> {
    let staging = gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("recur.readback"),
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = gpu
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("recur.readback"),
        });
    encoder.copy_buffer_to_buffer(buffer, offset, &staging, 0, bytes);
    gpu.queue().submit([encoder.finish()]);
    gpu.count(|c| {
        c.submits += 1;
        c.readbacks += 1;
    });
    let data = map_and_copy(gpu, &staging)?;
    gpu.trace_readback(buffer, offset, &data);
    Ok(data)
}

/// Maps a MAP_READ buffer whose copy was already submitted, and returns its bytes.
pub(crate) fn map_and_copy(gpu: &Gpu, staging: &wgpu::Buffer) -> Result<Vec<u8>> {
    let (sender, receiver) = oneshot_channel();
    staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
        let _ = sender.send(r);
    });
    gpu.wait()?;
    pollster::block_on(receiver.receive())
        .ok_or_else(|| {
            err!(
                Adapter,
                "the GPU dropped a buffer mapping before it finished"
            )
        })?
        .map_err(|e| err!(Adapter, "mapping a buffer for readback: {e}"))?;
    let data = {
        let view = staging
            .slice(..)
            .get_mapped_range()
            .map_err(|e| err!(Adapter, "reading a mapped buffer: {e}"))?;
        view.to_vec()
    };
    staging.unmap();
    Ok(data)
}
