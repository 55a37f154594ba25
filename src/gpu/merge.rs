//! Host side of `shaders/merge.wgsl`: the output stage of a recurrent stack (merge modes and
//! go_backwards' time reversal). CPU twin: `OutputStage` in `src/nn/recurrent.rs`.

use crate::error::{ensure, Result};
use bytemuck::{Pod, Zeroable};

use super::launch::grid_rows;
use super::{Cost, Gpu, GpuTensor, Kernel, KernelKey, Recorder};
use crate::ops::merge::{Merge, OutputStage};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct MergeParams {
    rows: u32,
    hidden: u32,
    dirs: u32,
    mode: u32,
    flip: u32,
    steps: u32,
    batch: u32,
    batch_first: u32,
}

super::uniform_mirror!(UNIFORM_MIRROR: MergeParams in "merge" as "MergeParams" {
    rows, hidden, dirs, mode, flip, steps, batch, batch_first,
});

/// One direction of the output stage bound to its tensors.
pub struct MergePlan {
    kernel: Kernel,
    group: wgpu::BindGroup,
    groups: [u32; 3],
    cost: Cost,
    _params: wgpu::Buffer,
}

impl MergePlan {
    fn build(
        gpu: &Gpu,
        stage: &OutputStage,
        entry: &'static str,
        cat: &GpuTensor,
        upstream: Option<&GpuTensor>,
        out: &GpuTensor,
    ) -> Result<Self> {
        let rows = stage.steps * stage.batch;
        let cw = stage.dirs * stage.hidden;
        ensure!(
            cat.len() == rows * cw,
            Shape,
            "concatenated output has {} elements, expected {}",
            cat.len(),
            rows * cw
        );
        let params = MergeParams {
            rows: rows as u32,
            hidden: stage.hidden as u32,
            dirs: stage.dirs as u32,
            mode: match stage.merge {
                Merge::Concat => 0,
                Merge::Sum => 1,
                Merge::Mul => 2,
                Merge::Ave => 3,
            },
            flip: stage.flip as u32,
            steps: stage.steps as u32,
            batch: stage.batch as u32,
            batch_first: stage.batch_first as u32,
        };
        let kernel = gpu.kernel(&KernelKey::new("merge", entry))?;
        let uniform = gpu.uniform(&params);
        // merge_forward does not read binding 2, so its layout has no such entry.
        let mut entries = vec![(0, &uniform), (1, cat.buffer())];
        if let Some(u) = upstream {
            entries.push((2, u.buffer()));
        }
        entries.push((3, out.buffer()));
        let group = gpu.bind_at(&kernel, &entries);
        // 64 columns by 4 rows per workgroup.
        let groups = grid_rows(gpu, stage.width().div_ceil(64), rows.div_ceil(4), "merge")?;
        // One invocation per output element (row, k). merge_forward reads 4 bytes (a copy)
        // or 8 (two directions combined, one operation) and writes 4; merge_backward reads
        // the upstream gradient (4), and both directions (8) where they were combined, and
        // writes 4 per direction.
        let combined = stage.width() != cw;
        let per = match (entry, combined) {
            ("merge_forward", false) => Cost::new(0.0, 4.0, 4.0),
            ("merge_forward", true) => Cost::new(1.0, 8.0, 4.0),
            (_, false) => Cost::new(0.0, 4.0, 4.0),
            (_, true) => Cost::new(2.0, 12.0, 8.0),
        };
        let items = rows * stage.width();
        Ok(Self {
            kernel,
            group,
            groups,
            cost: Cost::per_item(items, per.flops, per.bytes_read, per.bytes_written),
            _params: uniform,
        })
    }

    /// `out` [rows, width] from the concatenated directions `cat`.
    pub fn forward(
        gpu: &Gpu,
        stage: &OutputStage,
        cat: &GpuTensor,
        out: &GpuTensor,
    ) -> Result<Self> {
        let rows = stage.steps * stage.batch;
        ensure!(
            out.len() == rows * stage.width(),
            Shape,
            "output has {} elements, expected {}",
            out.len(),
            rows * stage.width()
        );
        Self::build(gpu, stage, "merge_forward", cat, None, out)
    }

    /// `d_cat` [rows, dirs * hidden] from `d_out` [rows, width] (and `cat`, for mul).
    pub fn backward(
        gpu: &Gpu,
        stage: &OutputStage,
        cat: &GpuTensor,
        d_out: &GpuTensor,
        d_cat: &GpuTensor,
    ) -> Result<Self> {
        let rows = stage.steps * stage.batch;
        ensure!(
            d_out.len() == rows * stage.width(),
            Shape,
            "output gradient has {} elements, expected {}",
            d_out.len(),
            rows * stage.width()
        );
        ensure!(
            d_cat.len() == cat.len(),
            Shape,
            "gradient of the directions has {} elements, expected {}",
            d_cat.len(),
            cat.len()
        );
        Self::build(gpu, stage, "merge_backward", cat, Some(d_out), d_cat)
    }

    /// Records the dispatch.
    pub fn record(&self, rec: &mut Recorder) {
        rec.dispatch(&self.kernel, &self.group, self.groups, self.cost);
    }
}
