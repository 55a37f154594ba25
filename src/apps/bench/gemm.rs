//! GEMM throughput: the GPU kernel and the CPU path on the same shapes, in one run.

use crate::error::Result;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::{time_reps, Stats};
use crate::gpu::{GemmPlan, Gpu, GpuTensor, Recorder};
use crate::{cpu, Gemm};

/// The shapes `recur bench gemm` measures by default (m, n, k): a large square product, an
/// LSTM's input projections for T * B = 3200, one LSTM step's recurrent product at B = 32,
/// and a mid-sized square.
pub const DEFAULT_SHAPES: [(usize, usize, usize); 4] = [
    (1024, 1024, 1024),
    (3200, 1024, 256),
    (32, 1024, 256),
    (256, 256, 256),
];

/// The timings of one GEMM shape, `C (m x n) = A (m x k) * B (k x n)`, on the CPU and the
/// GPU. GFLOP/s count `2 * m * n * k` operations and use the median time.
#[derive(Clone, Debug, Serialize)]
pub struct GemmCase {
    /// Rows of `A` and `C`.
    pub m: usize,
    /// Columns of `B` and `C`.
    pub n: usize,
    /// The inner (reduction) dimension.
    pub k: usize,
    /// CPU seconds per product.
    pub cpu: Stats,
    /// CPU GFLOP/s.
    pub cpu_gflops: f64,
    /// GPU wall-clock seconds per product (record, submit, wait); `None` without a GPU.
    pub gpu_wall: Option<Stats>,
    /// GPU GFLOP/s from the wall-clock time; `None` without a GPU.
    pub gpu_wall_gflops: Option<f64>,
    /// GPU time from timestamp queries, where the adapter has them.
    pub gpu_device: Option<Stats>,
    /// GPU GFLOP/s from the timestamp-query time, where the adapter has them.
    pub gpu_device_gflops: Option<f64>,
}

fn gflops(flops: f64, seconds: f64) -> f64 {
    flops / seconds / 1e9
}

/// Measures one shape on the CPU and, when given, on the GPU.
pub fn measure(
    gpu: Option<&Gpu>,
    (m, n, k): (usize, usize, usize),
    warmup: usize,
    reps: usize,
) -> Result<GemmCase> {
    let spec = Gemm::new(m, n, k);
    let flops = spec.flops();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
    let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let mut c = vec![0.0f32; m * n];
    let cpu_t = time_reps(warmup, reps, || {
        cpu::gemm(&spec, &a, &b, None, &mut c)?;
        Ok(None)
    })?;
    let mut case = GemmCase {
        m,
        n,
        k,
        cpu: cpu_t.wall,
        cpu_gflops: gflops(flops, cpu_t.wall.median),
        gpu_wall: None,
        gpu_wall_gflops: None,
        gpu_device: None,
        gpu_device_gflops: None,
    };
    if let Some(gpu) = gpu {
        let ga = GpuTensor::from_slice(gpu, &[m, k], &a)?;
        let gb = GpuTensor::from_slice(gpu, &[k, n], &b)?;
        let gc = GpuTensor::zeros(gpu, &[m, n])?;
        let plan = GemmPlan::new(gpu, &spec, &ga, &gb, None, &gc)?;
        // Wall time: record, submit, wait for completion. Device time: the pass timestamps.
        let t = time_reps(warmup.max(1), reps, || {
            let mut rec = Recorder::timed(gpu);
            plan.record(&mut rec);
            let report = rec.submit()?;
            gpu.wait()?;
            Ok(report.gpu_seconds)
        })?;
        case.gpu_wall_gflops = Some(gflops(flops, t.wall.median));
        case.gpu_wall = Some(t.wall);
        case.gpu_device_gflops = t.device.map(|d| gflops(flops, d.median));
        case.gpu_device = t.device;
    }
    Ok(case)
}
