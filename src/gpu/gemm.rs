//! Host side of `shaders/gemm.wgsl`: matrix products (tiled for GPUs, split-K where a
//! product has few tiles and a long K, or the variant for CPU adapters) and the
//! weight-gradient product (a layer's dW_ih, dW_hh and bias gradient in one product).
//! CPU twins: `src/cpu/gemm.rs`.

use crate::error::{ensure, err, Result};
use bytemuck::{Pod, Zeroable};

use super::launch::grid;
use super::{Cost, Gpu, GpuTensor, Kernel, KernelKey, Recorder};
use crate::ops::{Gemm, WeightGrads};

/// Rows, columns and depth of the tile one workgroup of `main` computes per K step.
const TILE_M: usize = 128;
const TILE_N: usize = 64;
const TILE_K: usize = 8;
/// Rows and columns of C a workgroup of `main_cpu` covers.
const CPU_TILE: usize = 32;
/// Columns of A one workgroup of a weight-gradient product's column sums covers.
const SUM_COLUMNS: usize = 64;
/// Invocations per workgroup of `reduce_splits` and `reduce_weight_grads`.
const REDUCE_WG: usize = 256;

/// Workgroups a dispatch should have to fill a large GPU: about two per SM of an H100 (132
/// SMs), one per CU of an MI300X (304). Products split along K toward this many.
const TARGET_WORKGROUPS: usize = 256;
/// Products with more tiles than this fill at least half of a 128-unit GPU unsplit; a split
/// would gain less there than its second dispatch (a launch, the partials' traffic) costs.
const MAX_SPLIT_TILES: usize = 64;
/// The shallowest K chunk of a split: 256 deep (32 steps of 8). Each tile of a split reads
/// (128 + 64) x 256 x 4 = 192 KiB of A and B and writes a 32 KiB partial that the reduction
/// reads back, so the partials add at most a third to the product's traffic.
const MIN_SPLIT_DEPTH: usize = 256;
const MAX_SPLITS: usize = 64;
/// The deepest K chunk one invocation walks on llvmpipe, whose invocations stop looping after
/// about 65,535 iterations in all ([`Gpu::is_llvmpipe`]): `main_cpu` at K = 66,000 left its
/// outputs unwritten (60,000 was right), and `main` makes 9 iterations per 8 of K. Deeper
/// products run split there.
pub const LLVMPIPE_MAX_DEPTH: usize = super::device::LLVMPIPE_LOOP_BUDGET;

/// Which GEMM kernel runs: the tiled one for GPUs, or the one for adapters that run shaders
/// on the CPU (see `main_cpu` in gemm.wgsl for why). [`Gpu::set_gemm_variant`] or
/// `RECUR_GEMM=tiled|cpu` overrides the choice, so the tests cover both on any adapter and a
/// cost table can show what a GPU would run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmVariant {
    /// The tiled kernel (`main`), for GPUs.
    Tiled,
    /// The kernel for adapters that run shaders on the CPU (`main_cpu`).
    CpuAdapter,
}

impl GemmVariant {
    /// The variant plans on `gpu` use: its override ([`Gpu::set_gemm_variant`]), else
    /// `RECUR_GEMM`'s, else `CpuAdapter` on a CPU adapter and `Tiled` on any other.
    pub fn for_adapter(gpu: &Gpu) -> Self {
        gpu.variant(
            gpu.inner.gemm_variant.get(),
            "RECUR_GEMM",
            &[
                ("tiled", GemmVariant::Tiled),
                ("cpu", GemmVariant::CpuAdapter),
            ],
            GemmVariant::CpuAdapter,
            GemmVariant::Tiled,
        )
    }
}

impl Gpu {
    /// Makes every GEMM planned on this device from now on use `variant`. Once per device:
    /// an error if it was set to another variant before.
    pub fn set_gemm_variant(&self, variant: GemmVariant) -> Result<()> {
        let set = *self.inner.gemm_variant.get_or_init(|| variant);
        ensure!(
            set == variant,
            Invalid,
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
    tiles_n: u32,
    stride_a: u32,
    stride_b: u32,
    stride_c: u32,
    tiles_m: u32,
    alpha: f32,
    beta: f32,
    splits: u32,
    k_chunk: u32,
    n_b1: u32,
    offset_b2: u32,
    ldb2: u32,
    sum_chunks: u32,
    sum_depth: u32,
    offset_a2: u32,
    b2_col: u32,
    a_cols: u32,
    gap_begin: u32,
    gap_end: u32,
    offset_b3: u32,
    ldb3: u32,
}

super::uniform_mirror!(UNIFORM_MIRROR: GemmParams in "gemm" as "GemmParams" {
    m, n, k, flags, lda, ldb, ldc, batch, offset_a, offset_b, offset_c, tiles_n, stride_a, stride_b, stride_c, tiles_m, alpha, beta, splits, k_chunk, n_b1, offset_b2, ldb2, sum_chunks, sum_depth, offset_a2, b2_col, a_cols, gap_begin, gap_end, offset_b3, ldb3,
});

const FLAG_TRANS_A: u32 = 1;
const FLAG_TRANS_B: u32 = 2;
const FLAG_BIAS: u32 = 4;
const FLAG_READ_C: u32 = 8;
const FLAG_SECOND: u32 = 16;
const FLAG_JOINED: u32 = 32;
const FLAG_A2: u32 = 64;

impl GemmParams {
    /// The product's sizes, layout and scaling, one chunk of all of K, one tile each way.
    fn of(spec: &Gemm, bias: bool) -> Self {
        let flags = if spec.trans_a { FLAG_TRANS_A } else { 0 }
            | if spec.trans_b { FLAG_TRANS_B } else { 0 }
            | if bias { FLAG_BIAS } else { 0 }
            | if spec.beta != 0.0 { FLAG_READ_C } else { 0 };
        // `validate` bounded every index below u32::MAX, so these casts are exact.
        Self {
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
            tiles_n: 1,
            stride_a: spec.stride_a() as u32,
            stride_b: spec.stride_b() as u32,
            stride_c: spec.stride_c() as u32,
            tiles_m: 1,
            alpha: spec.alpha,
            beta: spec.beta,
            splits: 1,
            k_chunk: spec.k as u32,
            n_b1: spec.n as u32,
            offset_b2: 0,
            ldb2: 0,
            sum_chunks: 0,
            sum_depth: 0,
            offset_a2: 0,
            b2_col: 0,
            a_cols: spec.m as u32,
            // No gap: every row of op(A) is a row of the product (see `weight_grads`).
            gap_begin: u32::MAX,
            gap_end: u32::MAX,
            offset_b3: 0,
            ldb3: 0,
        }
    }

    fn chunks(mut self, splits: usize, k_chunk: usize) -> Self {
        self.splits = splits as u32;
        self.k_chunk = k_chunk as u32;
        self
    }
}

/// How many chunks `main` splits K into for `spec`: 1 (no split) unless the product has at
/// most `MAX_SPLIT_TILES` tiles and K holds at least two chunks of `MIN_SPLIT_DEPTH`;
/// then as many chunks as bring the workgroups toward `TARGET_WORKGROUPS`, no shallower
/// than `MIN_SPLIT_DEPTH`, at most `MAX_SPLITS`. Weight gradients (M and N a layer's
/// sizes, K = steps x batch) are the products this picks; input projections and dx (M =
/// steps x batch) have tiles enough.
pub fn split_k_rule(spec: &Gemm) -> usize {
    let tiles = spec.m.div_ceil(TILE_M) * spec.n.div_ceil(TILE_N) * spec.batch;
    if tiles > MAX_SPLIT_TILES {
        return 1;
    }
    TARGET_WORKGROUPS
        .div_ceil(tiles)
        .min(spec.k / MIN_SPLIT_DEPTH)
        .clamp(1, MAX_SPLITS)
}

/// The fewest chunks a product of depth `k` runs in on `gpu`: 1, except on llvmpipe
/// ([`LLVMPIPE_MAX_DEPTH`]).
fn needed_splits(gpu: &Gpu, k: usize) -> usize {
    if gpu.is_llvmpipe() {
        k.div_ceil(LLVMPIPE_MAX_DEPTH)
    } else {
        1
    }
}

/// `splits` chunks of K as the kernels take them: the depth of each (a multiple of the K
/// step) and how many that makes (no chunk empty).
fn k_chunks(k: usize, splits: usize, step: usize) -> (usize, usize) {
    let depth = k.div_ceil(splits).div_ceil(step) * step;
    (k.div_ceil(depth), depth)
}

/// One dispatch of a plan.
struct Stage {
    kernel: Kernel,
    bind_group: wgpu::BindGroup,
    groups: [u32; 3],
    cost: Cost,
}

/// A matrix product (or a weight-gradient product, [`Self::weight_grads`]) bound to its
/// tensors: built once, recorded as often as needed. One dispatch, or two for a split product
/// (the split products, then their fixed-order sum).
pub struct GemmPlan {
    stages: Vec<Stage>,
    spec: Gemm,
    role: &'static str,
    // Kept alive for the bind groups: the partial products, stand-ins for absent outputs.
    _buffers: Vec<GpuTensor>,
}

/// The tensors of one product.
#[derive(Clone, Copy)]
struct Operands<'a> {
    a: &'a GpuTensor,
    b: &'a GpuTensor,
    bias: Option<&'a GpuTensor>,
    c: &'a GpuTensor,
}

impl<'a> Operands<'a> {
    /// Checks the tensors against `spec`.
    fn checked(
        spec: &Gemm,
        a: &'a GpuTensor,
        b: &'a GpuTensor,
        bias: Option<&'a GpuTensor>,
        c: &'a GpuTensor,
    ) -> Result<Self> {
        spec.validate(a.len(), b.len(), c.len(), bias.map(|t| t.len()))?;
        // A storage buffer may not be written and read through two bindings of one dispatch.
        for (name, t) in [("A", Some(a)), ("B", Some(b)), ("bias", bias)] {
            if let Some(t) = t {
                ensure!(
                    t.buffer() != c.buffer(),
                    Invalid,
                    "gemm output C must not be the same tensor as {name}"
                );
            }
        }
        Ok(Self { a, b, bias, c })
    }

    fn bias_buffer(&self, gpu: &'a Gpu) -> &'a wgpu::Buffer {
        self.bias.map_or(gpu.dummy_buffer(), |t| t.buffer())
    }
}

/// The tensors of a weight-gradient product ([`GemmPlan::weight_grads`]): operands `a`,
/// `b1` and `b2`, outputs `out1`, `out2` and `sums` as [`WeightGrads`] names them, and
/// `sums2`, where given, a second copy of the sums (db_hh where it equals db_ih).
#[derive(Clone, Copy)]
pub struct WeightGradTensors<'a> {
    /// The gate gradients `A`.
    pub a: &'a GpuTensor,
    /// The layer's inputs `B1`.
    pub b1: &'a GpuTensor,
    /// The layer's previous states `B2`, where the product has them.
    pub b2: Option<&'a GpuTensor>,
    /// `A^T B1`.
    pub out1: &'a GpuTensor,
    /// `A^T B2`, where the product has `B2`.
    pub out2: Option<&'a GpuTensor>,
    /// `A`'s column sums.
    pub sums: &'a GpuTensor,
    /// A second copy of the sums, where wanted.
    pub sums2: Option<&'a GpuTensor>,
}

impl GemmPlan {
    /// `C = alpha * op(A) * op(B) + beta * C + bias` with the kernel the adapter gets
    /// ([`GemmVariant`]), split along K where [`split_k_rule`] says so (tiled kernel only).
    pub fn new(
        gpu: &Gpu,
        spec: &Gemm,
        a: &GpuTensor,
        b: &GpuTensor,
        bias: Option<&GpuTensor>,
        c: &GpuTensor,
    ) -> Result<Self> {
        let ops = Operands::checked(spec, a, b, bias, c)?;
        let needed = needed_splits(gpu, spec.k);
        let splits = match GemmVariant::for_adapter(gpu) {
            GemmVariant::CpuAdapter if needed == 1 => return Self::cpu_adapter(gpu, spec, ops),
            GemmVariant::CpuAdapter => needed,
            GemmVariant::Tiled => split_k_rule(spec).max(needed),
        };
        // A split whose partials would not fit one binding runs in as few chunks as it may.
        let partial_bytes = |splits: usize| (splits * spec.batch * spec.m * spec.n * 4) as u64;
        let fits = |splits: usize| splits == 1 || partial_bytes(splits) <= gpu.max_binding_bytes();
        let splits = if fits(splits) { splits } else { needed };
        ensure!(
            fits(splits),
            Limit,
            "a product of depth k = {} runs in {needed} chunks on {:?}, whose partial sums \
             ({} bytes) exceed the {} bytes it binds",
            spec.k,
            gpu.info().name,
            partial_bytes(needed),
            gpu.max_binding_bytes()
        );
        Self::tiled(gpu, spec, ops, splits)
    }

    /// The product with the tiled kernel split into `splits` chunks of K, whatever the
    /// adapter and the rule (1: not split).
    pub fn with_splits(
        gpu: &Gpu,
        spec: &Gemm,
        a: &GpuTensor,
        b: &GpuTensor,
        bias: Option<&GpuTensor>,
        c: &GpuTensor,
        splits: usize,
    ) -> Result<Self> {
        let ops = Operands::checked(spec, a, b, bias, c)?;
        ensure!(
            (1..=spec.k).contains(&splits),
            Invalid,
            "a product of k = {} splits into 1 to {} chunks, not {splits}",
            spec.k,
            spec.k
        );
        Self::tiled(gpu, spec, ops, splits)
    }

    fn plan(spec: &Gemm, stages: Vec<Stage>, buffers: Vec<GpuTensor>) -> Self {
        Self {
            stages,
            spec: *spec,
            role: "",
            _buffers: buffers,
        }
    }

    /// `main_cpu`: per invocation, per k, 4 elements of A and 4 of B (32 bytes; no tiles,
    /// so A is read once per 4 columns of C and B once per 4 rows), 16 multiply-adds; 16
    /// elements of C written (and read with beta != 0), a bias element each.
    fn cpu_adapter(gpu: &Gpu, spec: &Gemm, ops: Operands) -> Result<Self> {
        let groups = [
            spec.n.div_ceil(CPU_TILE),
            spec.m.div_ceil(CPU_TILE),
            spec.batch,
        ];
        let max = gpu.limits().max_compute_workgroups_per_dimension as usize;
        ensure!(
            groups.iter().all(|&g| g <= max),
            Limit, "gemm of m = {}, n = {}, batch = {} needs {groups:?} workgroups; adapter allows {max} per dimension",
            spec.m,
            spec.n,
            spec.batch
        );
        let key = KernelKey::new("gemm", "main_cpu")
            .with("TRANS_A", spec.trans_a as u32 as f64)
            .with("TRANS_B", spec.trans_b as u32 as f64);
        let kernel = gpu.kernel(&key)?;
        let uniform = gpu.uniform(&GemmParams::of(spec, ops.bias.is_some()));
        let bind_group = gpu.bind(
            &kernel,
            &[
                &uniform,
                ops.a.buffer(),
                ops.b.buffer(),
                ops.bias_buffer(gpu),
                ops.c.buffer(),
            ],
        );
        let cost = operand_reads(spec, 4, 4) + output_cost(spec, ops.bias.is_some());
        let stage = Stage {
            kernel,
            bind_group,
            groups: groups.map(|g| g as u32),
            cost,
        };
        Ok(Self::plan(spec, vec![stage], Vec::new()))
    }

    /// `main` over `splits` chunks of K: per invocation, per 8-deep K step, 8 elements of A
    /// and 4 of B (48 bytes), 64 multiply-adds; at the end 64 elements of C written (and
    /// read with beta != 0), a bias element each. A is read once per column tile (64
    /// wide), B once per row tile (128). Split (SPLIT): the 64 raw sums go to the split's
    /// partial instead, and `reduce_splits` follows.
    fn tiled(gpu: &Gpu, spec: &Gemm, ops: Operands, splits: usize) -> Result<Self> {
        let (splits, depth) = k_chunks(spec.k, splits, TILE_K);
        let (tiles_m, tiles_n) = (spec.m.div_ceil(TILE_M), spec.n.div_ceil(TILE_N));
        let workgroups = tiles_m
            .checked_mul(tiles_n * splits)
            .and_then(|t| t.checked_mul(spec.batch))
            .filter(|&t| t <= u32::MAX as usize)
            .ok_or_else(|| err!(Limit, "gemm of {spec:?} has too many tiles to address"))?;
        let mut params = GemmParams::of(spec, ops.bias.is_some()).chunks(splits, depth);
        params.tiles_m = tiles_m as u32;
        params.tiles_n = tiles_n as u32;
        let split = splits > 1;
        let elements = spec.batch * spec.m * spec.n;
        // Unsplit, the partial binding gets a stand-in the kernel never touches.
        let partial = GpuTensor::zeros(gpu, &[if split { splits * elements } else { 1 }])?;
        let key = KernelKey::new("gemm", "main")
            .with("TRANS_A", spec.trans_a as u32 as f64)
            .with("TRANS_B", spec.trans_b as u32 as f64)
            .with("SPLIT", split as u32 as f64);
        let kernel = gpu.kernel(&key)?;
        let uniform = gpu.uniform(&params);
        let bind_group = gpu.bind_at(
            &kernel,
            &[
                (0, &uniform),
                (1, ops.a.buffer()),
                (2, ops.b.buffer()),
                (3, ops.bias_buffer(gpu)),
                (4, ops.c.buffer()),
                (5, partial.buffer()),
                (7, gpu.dummy_buffer()),
            ],
        );
        let cost = operand_reads(spec, TILE_M, TILE_N)
            + if split {
                Cost::per_item(splits * elements, 0.0, 0.0, 4.0)
            } else {
                output_cost(spec, ops.bias.is_some())
            };
        let products = Stage {
            kernel,
            bind_group,
            groups: grid(gpu, workgroups, "gemm")?,
            cost,
        };
        if !split {
            return Ok(Self::plan(spec, vec![products], vec![partial]));
        }
        let reduce = reduce_stage(gpu, &params, &partial, ops.bias, ops.c, elements)?;
        Ok(Self::plan(spec, vec![products, reduce], vec![partial]))
    }

    /// The weight-gradient product `spec` into `t`'s outputs: `main` over the joined B
    /// (split along K into `splits` chunks; `None`: as [`split_k_rule`] says for the
    /// product), its column-sum workgroups in the same dispatch, then `reduce_weight_grads`.
    /// Two dispatches on every adapter: the split products and the sums meet only in the
    /// reduction.
    pub fn weight_grads(
        gpu: &Gpu,
        spec: &WeightGrads,
        t: WeightGradTensors,
        splits: Option<usize>,
    ) -> Result<Self> {
        // One tensor given as both sums outputs (a layer without biases shares one scratch
        // gradient) gets A's sums, once; with an A2, A2's sums are then not written.
        let sums2 = t.sums2.filter(|s| s.buffer() != t.sums.buffer());
        let t = WeightGradTensors { sums2, ..t };
        spec.validate(
            t.a.len(),
            t.b1.len(),
            t.b2.map(|b| b.len()),
            t.out1.len(),
            t.out2.map(|o| o.len()),
            t.sums.len(),
        )?;
        spec.validate_sums2(t.sums2.map(|s| s.len()))?;
        let inputs = [Some(t.a), Some(t.b1), t.b2];
        let outputs = [Some(t.out1), t.out2, Some(t.sums), t.sums2];
        for (i, out) in outputs.iter().enumerate() {
            let Some(out) = out else { continue };
            ensure!(
                inputs.iter().flatten().all(|x| x.buffer() != out.buffer())
                    && outputs[..i]
                        .iter()
                        .flatten()
                        .all(|o| o.buffer() != out.buffer()),
                Invalid,
                "each output of the weight-gradient product must be a tensor of its own, \
                 neither an operand nor another output"
            );
        }
        let (m, rows) = (spec.m, spec.rows);
        // With an A2, B2's block starts on a tile boundary, so each tile reads one A; the
        // columns between are zeros that the reduction drops.
        let b2_col = match spec.offset_a2 {
            Some(_) => spec.n1.next_multiple_of(TILE_N),
            None => spec.n1,
        };
        let sum_sets = 1 + spec.offset_a2.is_some() as usize;
        let n = b2_col + spec.n2;
        // With a B3, the product's rows from B3's row on start on a tile boundary too, so
        // each tile reads one of B2 and B3: rows gap_begin .. gap_end are zeros that the
        // reduction drops, and product row r >= gap_end is op(A)'s row r - (gap_end -
        // gap_begin).
        let (gap_begin, gap_end) = match spec.b3 {
            Some(b3) => (b3.row, b3.row.next_multiple_of(TILE_M)),
            None => (m, m),
        };
        let m_product = m + gap_end - gap_begin;
        let product = Gemm::new(m_product, n, rows)
            .trans_a(true)
            .leading_dims(spec.lda, spec.ldb1, n)
            .offsets(spec.offset_a, spec.offset_b1, 0);
        let needed = needed_splits(gpu, rows);
        let wanted = splits.unwrap_or_else(|| split_k_rule(&product).max(needed));
        ensure!(
            (1..=rows).contains(&wanted),
            Invalid,
            "a product of k = {rows} splits into 1 to {rows} chunks, not {wanted}"
        );
        let sum_chunks = (rows / MIN_SPLIT_DEPTH).clamp(1, MAX_SPLITS).max(needed);
        let (sum_chunks, sum_depth) = k_chunks(rows, sum_chunks, 1);
        let partial_len = |splits: usize| splits * m_product * n + sum_sets * sum_chunks * m;
        // Under the rule, a split whose partials would not fit one binding runs in as few
        // chunks as the adapter allows (1, but on llvmpipe).
        let fits = |splits: usize| (partial_len(splits) * 4) as u64 <= gpu.max_binding_bytes();
        let wanted = if splits.is_none() && !fits(wanted) {
            needed
        } else {
            wanted
        };
        let (splits, depth) = k_chunks(rows, wanted, TILE_K);
        ensure!(
            fits(splits),
            Limit,
            "the weight-gradient product of {m} x {n} over {rows} rows in {splits} chunks \
             needs {} bytes of partial sums; adapter {:?} binds at most {}",
            partial_len(splits) * 4,
            gpu.info().name,
            gpu.max_binding_bytes()
        );
        let (tiles_m, tiles_n) = (m_product.div_ceil(TILE_M), n.div_ceil(TILE_N));
        let sum_groups = m.div_ceil(SUM_COLUMNS) * sum_chunks * sum_sets;
        let workgroups = tiles_m * tiles_n * splits + sum_groups;
        let mut params = GemmParams::of(&product, false).chunks(splits, depth);
        params.flags |= FLAG_JOINED | if t.sums2.is_some() { FLAG_SECOND } else { 0 };
        if let Some(offset) = spec.offset_a2 {
            params.flags |= FLAG_A2;
            params.offset_a2 = offset as u32;
        }
        params.b2_col = b2_col as u32;
        params.a_cols = m as u32;
        if let Some(b3) = spec.b3 {
            params.gap_begin = gap_begin as u32;
            params.gap_end = gap_end as u32;
            params.offset_b3 = b3.offset as u32;
            params.ldb3 = b3.ld as u32;
        }
        params.tiles_m = tiles_m as u32;
        params.tiles_n = tiles_n as u32;
        params.n_b1 = spec.n1 as u32;
        params.offset_b2 = spec.offset_b2 as u32;
        params.ldb2 = spec.ldb2 as u32;
        params.sum_chunks = sum_chunks as u32;
        params.sum_depth = sum_depth as u32;
        let partial = GpuTensor::zeros(gpu, &[partial_len(splits)])?;
        let stand_ins = [
            GpuTensor::zeros(gpu, &[1])?,
            GpuTensor::zeros(gpu, &[1])?,
            GpuTensor::zeros(gpu, &[1])?,
        ];
        let key = KernelKey::new("gemm", "main")
            .with("TRANS_A", 1.0)
            .with("TRANS_B", 0.0)
            .with("SPLIT", 1.0);
        let kernel = gpu.kernel(&key)?;
        let uniform = gpu.uniform(&params);
        let bind_group = gpu.bind_at(
            &kernel,
            &[
                (0, &uniform),
                (1, t.a.buffer()),
                (2, t.b1.buffer()),
                (3, gpu.dummy_buffer()),
                (4, stand_ins[0].buffer()),
                (5, partial.buffer()),
                (7, t.b2.map_or(gpu.dummy_buffer(), |b| b.buffer())),
            ],
        );
        // The product as `main` computes it, its partials written; the sum workgroups read
        // each element of A (and A2) once (an addition each) and write a partial per chunk.
        let cost = operand_reads(&product, TILE_M, TILE_N)
            + Cost::per_item(splits * m_product * n, 0.0, 0.0, 4.0)
            + Cost::per_item(sum_sets * rows * m, 1.0, 4.0, 0.0)
            + Cost::per_item(sum_sets * sum_chunks * m, 0.0, 0.0, 4.0);
        let products = Stage {
            kernel,
            bind_group,
            groups: grid(gpu, workgroups, "weight-gradient product")?,
            cost,
        };
        let kernel = gpu.kernel(&KernelKey::new("gemm", "reduce_weight_grads"))?;
        let bind_group = gpu.bind_at(
            &kernel,
            &[
                (0, &uniform),
                (4, t.out1.buffer()),
                (5, partial.buffer()),
                (6, t.out2.unwrap_or(&stand_ins[1]).buffer()),
                (8, t.sums.buffer()),
                (9, t.sums2.unwrap_or(&stand_ins[2]).buffer()),
            ],
        );
        let sum_outputs = if t.sums2.is_some() { 8.0 } else { 4.0 };
        let reduce = Stage {
            kernel,
            bind_group,
            groups: grid(
                gpu,
                (m_product * n + sum_sets * m).div_ceil(REDUCE_WG),
                "weight-gradient reduction",
            )?,
            cost: Cost::per_item(m * n, splits as f64, 4.0 * splits as f64, 4.0)
                + Cost::per_item(
                    sum_sets * m,
                    sum_chunks as f64,
                    4.0 * sum_chunks as f64,
                    0.0,
                )
                + Cost::per_item(m, 0.0, 0.0, sum_outputs),
        };
        let mut buffers = vec![partial];
        buffers.extend(stand_ins);
        Ok(Self::plan(&product, vec![products, reduce], buffers))
    }

    /// Names the product's role in its plan (`dx`, `dW_ih`, ...) for cost tables.
    pub fn named(mut self, role: &'static str) -> Self {
        self.role = role;
        self
    }

    /// Records the product: one dispatch, or two (split, weight gradients).
    pub fn record(&self, rec: &mut Recorder) {
        for s in &self.stages {
            rec.dispatch_as(self.role, &s.kernel, &s.bind_group, s.groups, s.cost);
        }
    }

    /// The product (for weight gradients, the product over the joined B).
    pub fn spec(&self) -> &Gemm {
        &self.spec
    }

    /// Dispatches one recording takes.
    pub fn dispatches(&self) -> usize {
        self.stages.len()
    }
}

/// `reduce_splits` for `params` (already chunked): `elements` invocations, writing `c`.
fn reduce_stage(
    gpu: &Gpu,
    params: &GemmParams,
    partial: &GpuTensor,
    bias: Option<&GpuTensor>,
    c: &GpuTensor,
    elements: usize,
) -> Result<Stage> {
    let kernel = gpu.kernel(&KernelKey::new("gemm", "reduce_splits"))?;
    let uniform = gpu.uniform(params);
    let bind_group = gpu.bind_at(
        &kernel,
        &[
            (0, &uniform),
            (3, bias.map_or(gpu.dummy_buffer(), |t| t.buffer())),
            (4, c.buffer()),
            (5, partial.buffer()),
        ],
    );
    let splits = params.splits as f64;
    let extra = (params.flags & FLAG_READ_C != 0) as u8 as f64 + bias.is_some() as u8 as f64;
    let cost = Cost::per_item(elements, splits + 2.0, 4.0 * (splits + extra), 4.0);
    Ok(Stage {
        kernel,
        bind_group,
        groups: grid(gpu, elements.div_ceil(REDUCE_WG), "gemm reduction")?,
        cost,
    })
}

/// FLOPs and operand reads of a product computed in tiles of `tile_m x tile_n` of C: A's
/// elements are read once per column tile, B's once per row tile; each element of A and B
/// is distinct data once.
fn operand_reads(spec: &Gemm, tile_m: usize, tile_n: usize) -> Cost {
    let (m, n, k, b) = (
        spec.m as f64,
        spec.n as f64,
        spec.k as f64,
        spec.batch as f64,
    );
    let read =
        4.0 * b * k * (m * spec.n.div_ceil(tile_n) as f64 + n * spec.m.div_ceil(tile_m) as f64);
    Cost::new(spec.flops(), read, 0.0).with_unique_read(4.0 * b * k * (m + n))
}

/// C written, read where beta != 0, and the bias read per element.
fn output_cost(spec: &Gemm, bias: bool) -> Cost {
    let elements = spec.batch * spec.m * spec.n;
    let c_read = if spec.beta != 0.0 { 4.0 } else { 0.0 };
    let bias_read = if bias { 4.0 } else { 0.0 };
    let unique = c_read * elements as f64 + bias_read * spec.n as f64;
    Cost::per_item(elements, 0.0, c_read + bias_read, 4.0).with_unique_read(unique)
}

/// `C = alpha * op(A) * op(B) + beta * C + bias` on the GPU: one submit.
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
