//! Host side of `shaders/gemm.wgsl`. CPU twin: `src/cpu/gemm.rs`.

use anyhow::{ensure, Result};
use bytemuck::{Pod, Zeroable};

use super::{Cost, Gpu, GpuTensor, Kernel, KernelKey, Recorder};
use crate::ops::Gemm;

/// Rows and columns of C one workgroup covers: 64 for the tiled kernel, 32 for `main_cpu`.
const TILE: usize = 64;
const CPU_TILE: usize = 32;

/// Which GEMM kernel runs: the tiled one for GPUs, or the one for adapters that run shaders
/// on the CPU (see `main_cpu` in gemm.wgsl for why). [`Gpu::set_gemm_variant`] or
/// `RECUR_GEMM=tiled|cpu` overrides the choice, so the tests cover both on any adapter and a
/// cost table can show what a GPU would run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmVariant {
    Tiled,
    CpuAdapter,
}

impl GemmVariant {
    pub fn for_adapter(gpu: &Gpu) -> Self {
        if let Some(v) = gpu.inner.gemm_variant.get() {
            return *v;
        }
        match std::env::var("RECUR_GEMM").as_deref() {
            Ok("tiled") => GemmVariant::Tiled,
            Ok("cpu") => GemmVariant::CpuAdapter,
            _ if gpu.info().device_type == wgpu::DeviceType::Cpu => GemmVariant::CpuAdapter,
            _ => GemmVariant::Tiled,
        }
    }
}

impl Gpu {
    /// Makes every GEMM planned on this device from now on use `variant`. Once per device:
    /// an error if it was set to another variant before.
    pub fn set_gemm_variant(&self, variant: GemmVariant) -> Result<()> {
        let set = *self.inner.gemm_variant.get_or_init(|| variant);
        ensure!(
            set == variant,
            "the GEMM variant of this device is already {set:?}, cannot make it {variant:?}"
        );
        Ok(())
    }
}

/// Mirrors `GemmParams` in `shaders/gemm.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    flags: u32,
    lda: u32,
    ldb: u32,
    ldc: u32,
    batch: u32,
    offset_a: u32,
    offset_b: u32,
    offset_c: u32,
    _pad0: u32,
    stride_a: u32,
    stride_b: u32,
    stride_c: u32,
    _pad1: u32,
    alpha: f32,
    beta: f32,
    _pad2: [u32; 2],
}

/// A matrix product bound to its tensors: built once, recorded as often as needed.
pub struct GemmPlan {
    kernel: Kernel,
    bind_group: wgpu::BindGroup,
    groups: [u32; 3],
    cost: Cost,
    spec: Gemm,
    role: &'static str,
}

impl GemmPlan {
    pub fn new(
        gpu: &Gpu,
        spec: &Gemm,
        a: &GpuTensor,
        b: &GpuTensor,
        bias: Option<&GpuTensor>,
        c: &GpuTensor,
    ) -> Result<Self> {
        spec.validate(a.len(), b.len(), c.len(), bias.map(|t| t.len()))?;
        // A storage buffer may not be written and read through two bindings of one dispatch.
        for (name, t) in [("A", Some(a)), ("B", Some(b)), ("bias", bias)] {
            if let Some(t) = t {
                ensure!(
                    t.buffer() != c.buffer(),
                    "gemm output C must not be the same tensor as {name}"
                );
            }
        }
        let variant = GemmVariant::for_adapter(gpu);
        let tile = match variant {
            GemmVariant::Tiled => TILE,
            GemmVariant::CpuAdapter => CPU_TILE,
        };
        let groups = [spec.n.div_ceil(tile), spec.m.div_ceil(tile), spec.batch];
        let max = gpu.limits().max_compute_workgroups_per_dimension as usize;
        ensure!(
            groups.iter().all(|&g| g <= max),
            "gemm of m = {}, n = {}, batch = {} needs {groups:?} workgroups; adapter allows {max} per dimension",
            spec.m,
            spec.n,
            spec.batch
        );
        let flags = spec.trans_a as u32
            | (spec.trans_b as u32) << 1
            | (bias.is_some() as u32) << 2
            | ((spec.beta != 0.0) as u32) << 3;
        // `validate` bounded every index below u32::MAX, so these casts are exact.
        let params = GemmParams {
            m: spec.m as u32,
            n: spec.n as u32,
            k: spec.k as u32,
            flags,
            lda: spec.lda() as u32,
            ldb: spec.ldb() as u32,
            ldc: spec.ldc() as u32,
            batch: spec.batch as u32,
            offset_a: spec.offset_a as u32,
            offset_b: spec.offset_b as u32,
            offset_c: spec.offset_c as u32,
            _pad0: 0,
            stride_a: spec.stride_a() as u32,
            stride_b: spec.stride_b() as u32,
            stride_c: spec.stride_c() as u32,
            _pad1: 0,
            alpha: spec.alpha,
            beta: spec.beta,
            _pad2: [0; 2],
        };
        let key = match variant {
            GemmVariant::Tiled => KernelKey::new("gemm", "main"),
            GemmVariant::CpuAdapter => KernelKey::new("gemm", "main_cpu")
                .with("TRANS_A", spec.trans_a as u32 as f64)
                .with("TRANS_B", spec.trans_b as u32 as f64),
        };
        let kernel = gpu.kernel(&key)?;
        let uniform = gpu.uniform(&params);
        let bias_buffer = bias.map_or(gpu.dummy_buffer(), |t| t.buffer());
        let bind_group = gpu.bind(
            &kernel,
            &[&uniform, a.buffer(), b.buffer(), bias_buffer, c.buffer()],
        );
        Ok(Self {
            kernel,
            bind_group,
            groups: groups.map(|g| g as u32),
            cost: cost(spec, variant, bias.is_some()),
            spec: *spec,
            role: "",
        })
    }

    /// Names the product's role in its plan (`dx`, `dW_ih`, ...) for cost tables.
    pub fn named(mut self, role: &'static str) -> Self {
        self.role = role;
        self
    }

    /// Records the product (one dispatch).
    pub fn record(&self, rec: &mut Recorder) {
        rec.dispatch_as(
            self.role,
            &self.kernel,
            &self.bind_group,
            self.groups,
            self.cost,
        );
    }

    pub fn spec(&self) -> &Gemm {
        &self.spec
    }
}

/// The cost of one product: 2mnk operations per batch item; A's elements are read once per
/// column tile and B's once per row tile; C is written once (and read when beta != 0) and
/// the bias read once per element of C.
fn cost(spec: &Gemm, variant: GemmVariant, bias: bool) -> Cost {
    // `main`: per invocation per 16-deep K tile, 4 elements of A and 4 of B (32 bytes),
    // 16 of C written. `main_cpu`: per invocation per k, 4 elements of A and 4 of B (32
    // bytes, no tiles), 16 of C written.
    let (tile_m, tile_n) = match variant {
        GemmVariant::Tiled => (TILE, TILE),
        GemmVariant::CpuAdapter => (4, 4),
    };
    let (m, n, k, b) = (
        spec.m as f64,
        spec.n as f64,
        spec.k as f64,
        spec.batch as f64,
    );
    let row_tiles = spec.m.div_ceil(tile_m) as f64;
    let col_tiles = spec.n.div_ceil(tile_n) as f64;
    let read = 4.0 * b * (m * k * col_tiles + n * k * row_tiles);
    let beta = (spec.beta != 0.0) as u8 as f64;
    let extra = 4.0 * b * m * n * (beta + bias as u8 as f64);
    let unique = 4.0 * b * (m * k + n * k + m * n * beta) + 4.0 * n * bias as u8 as f64;
    Cost::new(spec.flops(), read + extra, 4.0 * b * m * n).with_unique_read(unique)
}

/// `C = alpha * op(A) * op(B) + beta * C + bias` on the GPU: one dispatch, one submit.
pub fn gemm(
    gpu: &Gpu,
    spec: &Gemm,
    a: &GpuTensor,
    b: &GpuTensor,
    bias: Option<&GpuTensor>,
    c: &GpuTensor,
) -> Result<()> {
    let plan = GemmPlan::new(gpu, spec, a, b, bias, c)?;
    let mut rec = Recorder::new(gpu);
    plan.record(&mut rec);
    rec.submit()?;
    Ok(())
}
