//! Host side of `shaders/dropout.wgsl`: dropout masks (Philox, bit for bit as the CPU twin
//! `src/cpu/dropout.rs`) and their application. Semantics: `src/ops/dropout.rs`.
//!
//! The key (seed, step, stream) goes into the mask plan's uniform buffer with
//! `queue.write_buffer` when a mask is recorded, so a mask plan is recorded at most once per
//! submit (one plan per mask a step needs).

use crate::error::{ensure, Result};
use bytemuck::{Pod, Zeroable};

use super::launch::{ensure_distinct, grid, WG};
use super::{Cost, Gpu, GpuTensor, Kernel, KernelKey, Recorder, Recording};
use crate::ops::dropout::{validate_apply, Dropout, DropoutKey};

/// Mirrors `DropoutParams` in `shaders/dropout.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct DropoutParams {
    n: u32,
    threshold: u32,
    seed_lo: u32,
    seed_hi: u32,
    step_lo: u32,
    step_hi: u32,
    stream: u32,
    scale: f32,
    mask_len: u32,
    _pad: [u32; 3],
}

super::uniform_mirror!(DROPOUT_MIRROR: DropoutParams in "dropout" as "DropoutParams" {
    n, threshold, seed_lo, seed_hi, step_lo, step_hi, stream, scale, mask_len,
});

/// Makes a `[rows, cols]` mask for a given key: one dispatch.
pub struct DropoutMaskPlan {
    gpu: Gpu,
    kernel: Kernel,
    bind_group: wgpu::BindGroup,
    uniform: wgpu::Buffer,
    groups: [u32; 3],
    cost: Cost,
    spec: Dropout,
    /// The recorder it was last recorded into.
    recorded_in: Option<Recording>,
}

impl DropoutMaskPlan {
    /// Plans making a mask of `spec`'s shape and keep probability into `mask`.
    pub fn new(gpu: &Gpu, spec: &Dropout, mask: &GpuTensor) -> Result<Self> {
        spec.validate(mask.len())?;
        let kernel = gpu.kernel(&KernelKey::new("dropout", "make_mask"))?;
        let uniform = gpu.uniform(&DropoutParams::zeroed());
        let bind_group = gpu.bind_at(&kernel, &[(0, &uniform), (1, mask.buffer())]);
        Ok(Self {
            gpu: gpu.clone(),
            kernel,
            bind_group,
            uniform,
            groups: grid(gpu, spec.len().div_ceil(WG), "dropout mask")?,
            // make_mask, per element: one Philox draw (integer work), a 4-byte mask store.
            cost: Cost::per_item(spec.len(), 0.0, 0.0, 4.0),
            spec: *spec,
            recorded_in: None,
        })
    }

    /// Records making the mask for `key` and writes the key into the uniform buffer.
    pub fn record(&mut self, rec: &mut Recorder, key: DropoutKey) -> Result<()> {
        ensure!(
            !self.recorded_in.as_ref().is_some_and(Recording::is_open),
            Invalid,
            "dropout mask plan recorded twice without a submit in between: its key lives in \
             one uniform buffer, so use one plan per mask of a step"
        );
        let p = DropoutParams {
            n: self.spec.len() as u32,
            threshold: self.spec.threshold(),
            seed_lo: key.seed as u32,
            seed_hi: (key.seed >> 32) as u32,
            step_lo: key.step as u32,
            step_hi: (key.step >> 32) as u32,
            stream: key.stream,
            scale: self.spec.scale(),
            mask_len: 0,
            _pad: [0; 3],
        };
        self.gpu
            .queue()
            .write_buffer(&self.uniform, 0, bytemuck::bytes_of(&p));
        rec.dispatch(&self.kernel, &self.bind_group, self.groups, self.cost);
        self.recorded_in = Some(rec.recording());
        Ok(())
    }
}

/// `y[i] = x[i] * mask[i % mask_len]`: one dispatch (forward with `x`, backward with `dy`).
pub struct DropoutApplyPlan {
    kernel: Kernel,
    bind_group: wgpu::BindGroup,
    groups: [u32; 3],
    cost: Cost,
}

impl DropoutApplyPlan {
    /// Plans `y = x * mask` (the mask repeated along `x`); `x`, `mask` and `y` must be distinct
    /// buffers, with `x.len()` a multiple of `mask.len()`.
    pub fn new(gpu: &Gpu, x: &GpuTensor, mask: &GpuTensor, y: &GpuTensor) -> Result<Self> {
        validate_apply(x.len(), mask.len(), y.len())?;
        ensure_distinct(
            "dropout",
            &[
                ("input", x.buffer()),
                ("mask", mask.buffer()),
                ("output", y.buffer()),
            ],
        )?;
        let kernel = gpu.kernel(&KernelKey::new("dropout", "apply"))?;
        let uniform = gpu.uniform(&DropoutParams {
            n: x.len() as u32,
            mask_len: mask.len() as u32,
            ..DropoutParams::zeroed()
        });
        let bind_group = gpu.bind_at(
            &kernel,
            &[
                (0, &uniform),
                (2, x.buffer()),
                (3, mask.buffer()),
                (4, y.buffer()),
            ],
        );
        Ok(Self {
            kernel,
            bind_group,
            groups: grid(gpu, x.len().div_ceil(WG), "dropout")?,
            // apply, per element: x and mask read (8 bytes), y written (4), one multiply.
            cost: Cost::per_item(x.len(), 1.0, 8.0, 4.0),
        })
    }

    /// Records the dispatch.
    pub fn record(&self, rec: &mut Recorder) {
        rec.dispatch(&self.kernel, &self.bind_group, self.groups, self.cost);
    }
}

/// Mirrors `RowMaskParams` in `dropout.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct RowMaskParams {
    rows: u32,
    features: u32,
    batch: u32,
    steps: u32,
    batch_first: u32,
    _pad: [u32; 3],
}

super::uniform_mirror!(ROW_MASK_MIRROR: RowMaskParams in "dropout" as "RowMaskParams" {
    rows, features, batch, steps, batch_first,
});

/// One mask per sequence, in place: every row (t, b) of a [rows, features] sequence tensor
/// times `mask[b]` ([batch, features]). CPU twin: `cpu::dropout::apply_rows`.
pub struct RowMaskPlan {
    kernel: Kernel,
    bind_group: wgpu::BindGroup,
    groups: [u32; 3],
    cost: Cost,
    _uniform: wgpu::Buffer,
}

impl RowMaskPlan {
    /// Plans multiplying `data` (`[rows, features]`, `steps` x batch rows, time-major or
    /// `batch_first`) in place by the `[batch, features]` `mask`, row `(t, b)` by `mask[b]`.
    pub fn new(
        gpu: &Gpu,
        mask: &GpuTensor,
        data: &GpuTensor,
        steps: usize,
        batch_first: bool,
    ) -> Result<Self> {
        let features = mask.shape().last().copied().unwrap_or(0);
        let batch = mask.len().checked_div(features).unwrap_or(0);
        crate::ops::dropout::validate_rows(data.len(), batch, steps, features)?;
        ensure_distinct(
            "sequence dropout",
            &[("mask", mask.buffer()), ("data", data.buffer())],
        )?;
        let kernel = gpu.kernel(&KernelKey::new("dropout", "apply_rows"))?;
        let uniform = gpu.uniform(&RowMaskParams {
            rows: (batch * steps) as u32,
            features: features as u32,
            batch: batch as u32,
            steps: steps as u32,
            batch_first: batch_first as u32,
            _pad: [0; 3],
        });
        let bind_group = gpu.bind_at(
            &kernel,
            &[(5, &uniform), (6, mask.buffer()), (7, data.buffer())],
        );
        Ok(Self {
            kernel,
            bind_group,
            groups: grid(gpu, data.len().div_ceil(WG), "sequence dropout")?,
            // apply_rows, per element: data and mask read (8 bytes), data written (4).
            cost: Cost::per_item(data.len(), 1.0, 8.0, 4.0),
            _uniform: uniform,
        })
    }

    /// Records the dispatch.
    pub fn record(&self, rec: &mut Recorder) {
        rec.dispatch(&self.kernel, &self.bind_group, self.groups, self.cost);
    }
}
