//! The recorder: many dispatches in one command encoder and one compute pass, one submit.
//!
//! Work is recorded, then submitted once; nothing is read back unless the caller asks for
//! host data. Every dispatch comes with its [`Cost`], counted by the plan that records it, so
//! a recording can be summed into a cost table ([`Recorder::costs`]). A timed recorder also
//! brackets each compute pass with GPU timestamps (where the adapter has TIMESTAMP_QUERY), so
//! a benchmark can tell GPU time from host time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{ensure, err, Result};

use super::cost::{Cost, DispatchCost, KernelName};
use super::device::Gpu;
use super::readback::map_and_copy;
use super::registry::Kernel;
use super::trace::PendingCommand;

/// Timestamp pairs (one per compute pass) in one query set. A recording with more passes
/// gets another query set of the same size, as many as it needs, so every pass is timed.
const PASSES_PER_QUERY_SET: u32 = 64;

/// One query set with its resolve and readback buffers.
struct Timestamps {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    staging: wgpu::Buffer,
    used: u32,
}

impl Timestamps {
    fn new(device: &wgpu::Device) -> Self {
        let count = 2 * PASSES_PER_QUERY_SET;
        let bytes = count as u64 * 8;
        Self {
            queries: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("recur.timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count,
            }),
            resolve: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("recur.timestamps.resolve"),
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            staging: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("recur.timestamps.staging"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            used: 0,
        }
    }
}

/// Records the work of many plans into one command encoder for one submit ([`Self::submit`]),
/// keeping each dispatch's cost. Dropping it unsubmitted discards the work.
pub struct Recorder {
    gpu: Gpu,
    encoder: wgpu::CommandEncoder,
    pass: Option<wgpu::ComputePass<'static>>,
    dispatches: u64,
    costs: Vec<DispatchCost>,
    /// `None` when untimed; otherwise the query sets so far, the last one being filled.
    timestamps: Option<Vec<Timestamps>>,
    open: OpenFlag,
    /// The commands recorded, kept while the device is tracing (see `gpu::trace`).
    traced: Option<Vec<PendingCommand>>,
}

/// Whether a recorder is still open: neither submitted nor dropped. A plan that writes its
/// uniform buffer when it records keeps this to refuse a second recording while the first
/// has not gone to the queue: both dispatches would read the second write. It is the
/// recorder's own state, so other threads' submits on the same device do not mask it (a
/// count of the device's submits did).
#[derive(Clone, Debug)]
pub struct Recording(Arc<AtomicBool>);

impl Recording {
    /// Whether the recorder is neither submitted nor dropped yet.
    pub fn is_open(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Marks its recorder closed when the recorder goes, by `submit` or by being dropped.
struct OpenFlag(Arc<AtomicBool>);

impl Drop for OpenFlag {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The per-dispatch value of a kernel whose layout has one
/// ([`super::shaders::BindingKind::PerDispatch`]): the recurrent step kernels' step index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PerDispatch {
    /// The kernel has none.
    None,
    /// The byte offset of the value in the uniform buffer the bind group holds at the
    /// per-dispatch binding (a dynamic offset).
    Offset(u32),
    /// The value, as immediate data (a pipeline built with
    /// [`super::KernelKey::with_immediates`]).
    Immediate([u32; 4]),
}

/// What a submit did, for benchmarks.
#[derive(Clone, Copy, Debug, Default)]
pub struct SubmitReport {
    /// Dispatches the submit carried.
    pub dispatches: u64,
    /// Seconds the GPU spent inside the recorded compute passes (every pass), where
    /// timestamps were on.
    pub gpu_seconds: Option<f64>,
    /// Compute passes timed (copies and clears between dispatches end a pass).
    pub timed_passes: u32,
}

impl Recorder {
    /// An untimed recorder on `gpu`.
    pub fn new(gpu: &Gpu) -> Self {
        let encoder = gpu
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("recur.recorder"),
            });
        Self {
            gpu: gpu.clone(),
            encoder,
            pass: None,
            dispatches: 0,
            costs: Vec::new(),
            timestamps: None,
            open: OpenFlag(Arc::new(AtomicBool::new(true))),
            traced: gpu.is_tracing().then(Vec::new),
        }
    }

    /// A recorder that measures GPU time per compute pass, if the adapter can.
    pub fn timed(gpu: &Gpu) -> Self {
        let mut rec = Self::new(gpu);
        if gpu.capabilities().timestamp_query {
            rec.timestamps = Some(Vec::new());
        }
        rec
    }

    fn pass(&mut self) -> &mut wgpu::ComputePass<'static> {
        if self.pass.is_none() {
            let timestamp_writes = match &mut self.timestamps {
                Some(sets) => {
                    if sets.last().is_none_or(|t| t.used == PASSES_PER_QUERY_SET) {
                        sets.push(Timestamps::new(self.gpu.device()));
                    }
                    let t = sets.last_mut().expect("a query set was just ensured");
                    let i = t.used;
                    t.used += 1;
                    Some(wgpu::ComputePassTimestampWrites {
                        query_set: &t.queries,
                        beginning_of_pass_write_index: Some(2 * i),
                        end_of_pass_write_index: Some(2 * i + 1),
                    })
                }
                None => None,
            };
            let pass = self
                .encoder
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("recur.pass"),
                    timestamp_writes,
                });
            self.pass = Some(pass.forget_lifetime());
        }
        self.pass.as_mut().expect("pass was just created")
    }

    fn end_pass(&mut self) {
        self.pass = None;
    }

    /// Records one dispatch of `kernel` with `bind_group` over `groups` workgroups, which
    /// costs `cost` (see [`Cost`]).
    pub fn dispatch(
        &mut self,
        kernel: &Kernel,
        bind_group: &wgpu::BindGroup,
        groups: [u32; 3],
        cost: Cost,
    ) {
        self.dispatch_as("", kernel, bind_group, groups, cost);
    }

    /// [`Self::dispatch`] with the role this dispatch plays in the plan (`dx`, `dW_ih`, ...),
    /// for kernels that serve several: cost tables list each role apart.
    pub fn dispatch_as(
        &mut self,
        role: &'static str,
        kernel: &Kernel,
        bind_group: &wgpu::BindGroup,
        groups: [u32; 3],
        cost: Cost,
    ) {
        self.dispatch_with(role, kernel, bind_group, PerDispatch::None, groups, cost);
    }

    /// [`Self::dispatch_as`] for a kernel with a per-dispatch value ([`PerDispatch`]).
    pub fn dispatch_with(
        &mut self,
        role: &'static str,
        kernel: &Kernel,
        bind_group: &wgpu::BindGroup,
        value: PerDispatch,
        groups: [u32; 3],
        cost: Cost,
    ) {
        let pass = self.pass();
        pass.set_pipeline(&kernel.pipeline);
        match value {
            PerDispatch::None => pass.set_bind_group(0, bind_group, &[]),
            PerDispatch::Offset(offset) => pass.set_bind_group(0, bind_group, &[offset]),
            PerDispatch::Immediate(words) => {
                pass.set_bind_group(0, bind_group, &[]);
                pass.set_immediates(0, bytemuck::cast_slice(&words));
            }
        }
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        self.dispatches += 1;
        if let Some(t) = &mut self.traced {
            t.push(PendingCommand::Dispatch {
                kernel: kernel.key.clone(),
                group: bind_group.clone(),
                value,
                groups,
            });
        }
        self.costs.push(DispatchCost {
            kernel: KernelName {
                family: kernel.key.family,
                entry: kernel.key.entry,
                role,
            },
            workgroups: groups.iter().map(|&g| g as u64).product(),
            invocations: kernel.invocations,
            cost,
        });
    }

    /// Records a buffer-to-buffer copy (this ends the current compute pass).
    pub fn copy(
        &mut self,
        src: &wgpu::Buffer,
        src_offset: u64,
        dst: &wgpu::Buffer,
        dst_offset: u64,
        bytes: u64,
    ) {
        self.end_pass();
        self.encoder
            .copy_buffer_to_buffer(src, src_offset, dst, dst_offset, bytes);
        if let Some(t) = &mut self.traced {
            // A copy into a mappable buffer is how a plan reads back; the trace records
            // it as a readback of the source.
            if dst.usage().contains(wgpu::BufferUsages::MAP_READ) {
                t.push(PendingCommand::Readback {
                    src: src.clone(),
                    offset: src_offset,
                    bytes,
                });
                return;
            }
            t.push(PendingCommand::Copy {
                src: src.clone(),
                src_offset,
                dst: dst.clone(),
                dst_offset,
                bytes,
            });
        }
    }

    /// Records zero-filling a whole buffer (this ends the current compute pass).
    pub fn clear(&mut self, buffer: &wgpu::Buffer) {
        self.end_pass();
        self.encoder.clear_buffer(buffer, 0, None);
        if let Some(t) = &mut self.traced {
            t.push(PendingCommand::Clear {
                buffer: buffer.clone(),
            });
        }
    }

    /// Dispatches recorded so far.
    pub fn dispatches(&self) -> u64 {
        self.dispatches
    }

    /// Every dispatch recorded so far with its workgroups and cost, in recording order
    /// ([`super::cost::by_kernel`] sums them per kernel).
    pub fn costs(&self) -> &[DispatchCost] {
        &self.costs
    }

    /// This recorder's open state, for plans that must not be recorded twice into work not
    /// yet submitted.
    pub fn recording(&self) -> Recording {
        Recording(self.open.0.clone())
    }

    /// Submits everything recorded, in one submit. Does not wait for the GPU unless the
    /// recorder is timed, in which case it waits and reads back the timestamps.
    pub fn submit(mut self) -> Result<SubmitReport> {
        ensure!(
            !self.gpu.is_cost_model(),
            Invalid,
            "this device records plans for cost tables only; it does not run them"
        );
        self.end_pass();
        let traced = match self.traced.take() {
            Some(commands) => self.gpu.trace_before_submit(&commands)?,
            None => None,
        };
        let timestamps = self.timestamps.take().unwrap_or_default();
        for t in &timestamps {
            self.encoder
                .resolve_query_set(&t.queries, 0..2 * t.used, &t.resolve, 0);
            self.encoder
                .copy_buffer_to_buffer(&t.resolve, 0, &t.staging, 0, 2 * t.used as u64 * 8);
        }
        self.gpu.queue().submit([self.encoder.finish()]);
        let dispatches = self.dispatches;
        self.gpu.count(|c| {
            c.submits += 1;
            c.dispatches += dispatches;
        });
        self.gpu.take_device_error()?;
        if let Some(t) = traced {
            self.gpu.trace_after_submit(t)?;
        }
        let mut gpu_seconds = None;
        for t in &timestamps {
            *gpu_seconds.get_or_insert(0.0) += Self::read_timestamps(&self.gpu, t)?;
        }
        Ok(SubmitReport {
            dispatches,
            gpu_seconds,
            timed_passes: timestamps.iter().map(|t| t.used).sum(),
        })
    }

    fn read_timestamps(gpu: &Gpu, t: &Timestamps) -> Result<f64> {
        let bytes = map_and_copy(gpu, &t.staging)?;
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&bytes);
        let period_ns = gpu.queue().get_timestamp_period() as f64;
        let mut total = 0.0;
        for pair in ticks[..2 * t.used as usize].chunks_exact(2) {
            let d = pair[1].checked_sub(pair[0]).ok_or_else(|| {
                err!(
                    Adapter,
                    "GPU timestamps went backwards ({} then {})",
                    pair[0],
                    pair[1]
                )
            })?;
            total += d as f64 * period_ns * 1e-9;
        }
        Ok(total)
    }
}
