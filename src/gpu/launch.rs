//! Dispatch helpers shared by the elementwise and reduction kernel families (optim, loss,
//! embedding, dropout).

use crate::error::{ensure, Result};

use super::Gpu;

/// Invocations per workgroup of the elementwise and reduction kernels (WGSL `WG`).
pub(crate) const WG: usize = 256;

/// A grid of at least `groups` workgroups. A 1D grid stops at 65535 workgroups (16.7M
/// elements at 256 per group), so larger counts wrap into y; kernels compute their group
/// index as `wg.y * num_workgroups.x + wg.x` and return past the end.
pub(crate) fn grid(gpu: &Gpu, groups: usize, what: &str) -> Result<[u32; 3]> {
    let max = gpu.limits().max_compute_workgroups_per_dimension as usize;
    let x = groups.clamp(1, max);
    let y = groups.div_ceil(x).max(1);
    ensure!(
        y <= max,
        Limit,
        "{what} needs {groups} workgroups, more than the adapter's {max} x {max} grid"
    );
    Ok([x as u32, y as u32, 1])
}

/// A grid of `x` workgroups across and at least `rows` down. Rows past the per-dimension limit
/// wrap into z; kernels compute their row group as `wg.z * num_workgroups.y + wg.y` and
/// return past the end.
pub(crate) fn grid_rows(gpu: &Gpu, x: usize, rows: usize, what: &str) -> Result<[u32; 3]> {
    let max = gpu.limits().max_compute_workgroups_per_dimension as usize;
    ensure!(
        x <= max,
        Limit,
        "{what} needs {x} workgroups across, more than the adapter's {max}"
    );
    let [y, z, _] = grid(gpu, rows, what)?;
    Ok([x.max(1) as u32, y, z])
}

/// Errors unless every buffer in `buffers` is distinct: a storage buffer may not be written
/// through one binding of a dispatch and read through another.
pub(crate) fn ensure_distinct(what: &str, buffers: &[(&str, &wgpu::Buffer)]) -> Result<()> {
    for (i, (na, a)) in buffers.iter().enumerate() {
        for (nb, b) in &buffers[i + 1..] {
            ensure!(
                a != b,
                Invalid,
                "{what}: {na} and {nb} must be different tensors"
            );
        }
    }
    Ok(())
}
