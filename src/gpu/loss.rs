//! Host side of `shaders/loss.wgsl`: softmax cross-entropy and mean squared error, loss and
//! gradient on the GPU with fixed-order reductions. CPU twin: `src/cpu/loss.rs`; formulas:
//! `src/ops/loss.rs`.

use crate::error::Result;
use bytemuck::{Pod, Zeroable};

use super::launch::{ensure_distinct, grid};
use super::{Cost, Gpu, GpuTensor, Kernel, KernelKey, Recorder};
use crate::ops::loss::{validate_mse, CrossEntropy};

/// Elements one `mse_partial` workgroup handles (`MSE_CHUNK` in the shader).
const MSE_CHUNK: usize = 4096;

/// Mirrors `LossParams` in `shaders/loss.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct LossParams {
    rows: u32,
    classes: u32,
    ignore: u32,
    has_ignore: u32,
    partials: u32,
    _pad: [u32; 3],
}

super::uniform_mirror!(UNIFORM_MIRROR: LossParams in "loss" as "LossParams" {
    rows, classes, ignore, has_ignore, partials,
});

/// Validates `targets` for `spec` (each a class or the ignore index) and uploads them.
pub fn upload_targets(gpu: &Gpu, spec: &CrossEntropy, targets: &[u32]) -> Result<GpuTensor<u32>> {
    spec.validate_targets(targets)?;
    GpuTensor::from_slice(gpu, &[targets.len()], targets)
}

/// Validates `targets` for `spec` and writes them into an existing target tensor.
pub fn write_targets(spec: &CrossEntropy, tensor: &GpuTensor<u32>, targets: &[u32]) -> Result<()> {
    spec.validate_targets(targets)?;
    tensor.write(targets)
}

/// A cross-entropy bound to its logits, targets and outputs: three dispatches per record.
pub struct CrossEntropyPlan {
    kernels: [Kernel; 3],
    groups: [wgpu::BindGroup; 3],
    row_grid: [u32; 3],
    costs: [Cost; 3],
    stats: GpuTensor,
}

impl CrossEntropyPlan {
    /// `targets` should come from [`upload_targets`] / [`write_targets`], which validate
    /// them; a target written past that check gives NaN for its row, never a stray read.
    pub fn new(
        gpu: &Gpu,
        spec: &CrossEntropy,
        logits: &GpuTensor,
        targets: &GpuTensor<u32>,
        row_loss: &GpuTensor,
        dlogits: &GpuTensor,
    ) -> Result<Self> {
        spec.validate(logits.len(), targets.len(), row_loss.len(), dlogits.len())?;
        ensure_distinct(
            "cross-entropy",
            &[
                ("logits", logits.buffer()),
                ("row losses", row_loss.buffer()),
                ("logit gradients", dlogits.buffer()),
            ],
        )?;
        let stats = GpuTensor::zeros(gpu, &[2])?;
        let uniform = gpu.uniform(&LossParams {
            rows: spec.rows as u32,
            classes: spec.classes as u32,
            ignore: spec.ignore_index.unwrap_or(0),
            has_ignore: spec.ignore_index.is_some() as u32,
            partials: 0,
            _pad: [0; 3],
        });
        let k = |e| gpu.kernel(&KernelKey::new("loss", e));
        let kernels = [k("ce_count")?, k("ce_rows")?, k("ce_reduce")?];
        let (u, s) = (&uniform, stats.buffer());
        let groups = [
            gpu.bind_at(&kernels[0], &[(0, u), (2, targets.buffer()), (5, s)]),
            gpu.bind_at(
                &kernels[1],
                &[
                    (0, u),
                    (1, logits.buffer()),
                    (2, targets.buffer()),
                    (3, dlogits.buffer()),
                    (4, row_loss.buffer()),
                    (5, s),
                ],
            ),
            gpu.bind_at(&kernels[2], &[(0, u), (4, row_loss.buffer()), (5, s)]),
        ];
        let (rows, classes) = (spec.rows, spec.classes);
        let costs = [
            // ce_count: each row's target read (4 bytes), the count written (4).
            Cost::new(rows as f64, 4.0 * rows as f64, 4.0),
            // ce_rows, per row: its target (4 bytes) and three passes over its logits (12
            // bytes per class: maximum, sum of exponentials, gradient), its gradient (4 per
            // class) and loss (4) written; about 8 operations per class.
            Cost::per_item(rows, 8.0 * classes as f64, 4.0 + 12.0 * classes as f64, 4.0)
                + Cost::per_item(rows * classes, 0.0, 0.0, 4.0),
            // ce_reduce: each row's loss read (4 bytes), the mean written (4).
            Cost::new(rows as f64, 4.0 * rows as f64 + 4.0, 4.0),
        ];
        Ok(Self {
            kernels,
            groups,
            row_grid: grid(gpu, spec.rows, "cross-entropy")?,
            costs,
            stats,
        })
    }

    /// Records the loss and gradient computation (three dispatches).
    pub fn record(&self, rec: &mut Recorder) {
        rec.dispatch(&self.kernels[0], &self.groups[0], [1, 1, 1], self.costs[0]);
        rec.dispatch(
            &self.kernels[1],
            &self.groups[1],
            self.row_grid,
            self.costs[1],
        );
        rec.dispatch(&self.kernels[2], &self.groups[2], [1, 1, 1], self.costs[2]);
    }

    /// `[mean loss, rows counted]` on the GPU.
    pub fn stats(&self) -> &GpuTensor {
        &self.stats
    }

    /// Reads the mean loss back (one readback).
    pub fn loss(&self) -> Result<f32> {
        Ok(self.stats.to_vec()?[0])
    }
}

/// A mean squared error bound to its predictions, targets and gradient: two dispatches.
pub struct MsePlan {
    kernels: [Kernel; 2],
    groups: [wgpu::BindGroup; 2],
    partial_grid: [u32; 3],
    costs: [Cost; 2],
    stats: GpuTensor,
    _partials: GpuTensor,
}

impl MsePlan {
    /// Plans the loss of `pred` against `target` and its gradient into `grad` (all `n` elements,
    /// distinct buffers).
    pub fn new(gpu: &Gpu, pred: &GpuTensor, target: &GpuTensor, grad: &GpuTensor) -> Result<Self> {
        validate_mse(pred.len(), target.len(), grad.len())?;
        ensure_distinct(
            "mean squared error",
            &[
                ("predictions", pred.buffer()),
                ("targets", target.buffer()),
                ("gradient", grad.buffer()),
            ],
        )?;
        let n = pred.len();
        let partial_count = n.div_ceil(MSE_CHUNK);
        let partials = GpuTensor::zeros(gpu, &[partial_count])?;
        let stats = GpuTensor::zeros(gpu, &[1])?;
        let uniform = gpu.uniform(&LossParams {
            rows: n as u32,
            classes: 0,
            ignore: 0,
            has_ignore: 0,
            partials: partial_count as u32,
            _pad: [0; 3],
        });
        let k = |e| gpu.kernel(&KernelKey::new("loss", e));
        let kernels = [k("mse_partial")?, k("mse_reduce")?];
        let groups = [
            gpu.bind_at(
                &kernels[0],
                &[
                    (0, &uniform),
                    (1, pred.buffer()),
                    (3, grad.buffer()),
                    (6, target.buffer()),
                    (7, partials.buffer()),
                ],
            ),
            gpu.bind_at(
                &kernels[1],
                &[(0, &uniform), (5, stats.buffer()), (7, partials.buffer())],
            ),
        ];
        let costs = [
            // mse_partial, per element: prediction and target read (8 bytes), gradient
            // written (4), 4 operations; one partial sum written per workgroup.
            Cost::per_item(n, 4.0, 8.0, 4.0) + Cost::per_item(partial_count, 0.0, 0.0, 4.0),
            // mse_reduce: the partials read in order, the loss written.
            Cost::new(partial_count as f64, 4.0 * partial_count as f64, 4.0),
        ];
        Ok(Self {
            kernels,
            groups,
            partial_grid: grid(gpu, partial_count, "mean squared error")?,
            costs,
            stats,
            _partials: partials,
        })
    }

    /// Records the loss and gradient computation (two dispatches).
    pub fn record(&self, rec: &mut Recorder) {
        rec.dispatch(
            &self.kernels[0],
            &self.groups[0],
            self.partial_grid,
            self.costs[0],
        );
        rec.dispatch(&self.kernels[1], &self.groups[1], [1, 1, 1], self.costs[1]);
    }

    /// `[mean loss]` on the GPU.
    pub fn stats(&self) -> &GpuTensor {
        &self.stats
    }

    /// Reads the loss back (one readback).
    pub fn loss(&self) -> Result<f32> {
        Ok(self.stats.to_vec()?[0])
    }
}
