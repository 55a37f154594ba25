//! Host side of `shaders/recurrent.wgsl`: one recurrent layer in one direction on the GPU.
//! CPU twin: `src/cpu/recurrent.rs`; layout and semantics: `src/ops/recurrent.rs`.
//!
//! A [`RecurrentPlan`] is built once for a shape and a set of tensors: it allocates the
//! workspace and creates its bind groups, one of which serves every step ([`StepIndex`] says
//! how a dispatch learns its step). Recording a forward then costs 3 dispatches on the
//! sequence path (weight transpose, input-projection GEMM, the whole-sequence kernel; see
//! [`RecurrentPath`] for when it applies), else T + 2 (one per step instead of the sequence
//! kernel). A backward costs one dispatch on the sequence path where its tile fits (the
//! sequence kernel, dh0 included), else T + 1 (one per step, one for dh0), then the
//! gradient products: dx (one dispatch, two where split along K) and the weight and bias
//! gradients as one product and its reduction (every cell). GRU with the reset gate before
//! the recurrent product takes two dispatches per step. Nothing is allocated or compiled per
//! call, and nothing is read back unless asked.
//!
//! A [`RecurrentPair`] runs the two directions of a bidirectional layer: each step (or
//! sequence) dispatch covers both, so the layer's recurrence costs the dispatches of one
//! direction; transposes and products stay per direction.

use crate::error::{bail, ensure, err, Result};
use bytemuck::{Pod, Zeroable};

use super::device::LLVMPIPE_LOOP_BUDGET;
use super::shaders::{BindingKind, SharedLayout};
use super::{
    Cost, GemmPlan, Gpu, GpuTensor, Kernel, KernelKey, PerDispatch, Recorder, WeightGradTensors,
};
use crate::ops::recurrent::{
    f16_activations, f16_below, is_f16_activation, CellKind, RecurrentShape,
};
use crate::ops::{Gemm, WeightGrads};

mod stack;
pub use stack::{
    InputMask, RecurrentStack, StackLayer, StackSchedule, WAVEFRONT_MAX_INPUT_BYTES,
    WAVEFRONT_MIN_SEQUENCE_WEIGHT_BYTES,
};

/// Mirrors `Config` in `recurrent.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Config {
    batch: u32,
    hidden: u32,
    steps: u32,
    gate_width: u32,
    act_width: u32,
    out_stride: u32,
    out_offset: u32,
    batch_first: u32,
    off_cell: u32,
    off_act: u32,
    has_dy: u32,
    has_bias_hh: u32,
    off_c0: u32,
    off_hn: u32,
    off_cn: u32,
    off_dhn: u32,
    off_dcn: u32,
    off_dh: u32,
    off_dc: u32,
    off_dh0: u32,
    hp: u32,
    off_wp: u32,
    off_dhw: u32,
    dir_first: u32,
    dir_gates: u32,
    dir_wt: u32,
    dir_smap: u32,
    dir_saved: u32,
    dir_state: u32,
    dir_rmask: u32,
    dir_out: u32,
    dir_y: u32,
    wave: u32,
    off_wi: u32,
    wt_write: u32,
    wt_copy: u32,
    off_imask: u32,
    wt_f32: u32,
    saves: u32,
    /// A uniform struct's size is a multiple of 16 bytes in WGSL.
    _pad: [u32; 1],
}

super::uniform_mirror!(UNIFORM_MIRROR: Config in "recurrent" as "Config" {
    batch, hidden, steps, gate_width, act_width, out_stride, out_offset, batch_first, off_cell, off_act, has_dy, has_bias_hh, off_c0, off_hn, off_cn, off_dhn, off_dcn, off_dh, off_dc, off_dh0, hp, off_wp, off_dhw, dir_first, dir_gates, dir_wt, dir_smap, dir_saved, dir_state, dir_rmask, dir_out, dir_y, wave, off_wi, wt_write, wt_copy, off_imask, wt_f32, saves,
});

/// Regions of the `state` buffer, each B * H, in this order.
#[derive(Clone, Copy)]
enum Region {
    H0 = 0,
    C0,
    Hn,
    Cn,
    Dhn,
    Dcn,
    Dh,
    Dc,
    Dh0,
}
const REGIONS: usize = 9;

/// Workgroup of the step kernels: 256 units (64 invocations of 4) of one batch entry.
const WG_UNITS: usize = 256;
const WG_BATCH: usize = 1;

/// Workgroups of the tiled step kernels (`FT_*`, `BT_*` in `shaders/recurrent.wgsl`): units
/// by batch entries, 128 invocations each (two per unit and entry, one per half of each K
/// chunk of `TILED_K` elements; `TK` there).
const TILED_FORWARD: (usize, usize) = (4, 16);
const TILED_BACKWARD: (usize, usize) = (8, 8);
const TILED_K: usize = 64;

/// Which step kernels a plan records: one workgroup per 256 units of one batch entry
/// (`forward_step`, ...: state reads that are one address for the whole workgroup, what
/// adapters that run shaders on the CPU want), or the batch-tiled ones for GPUs
/// (`forward_step_tiled`, ...: each workgroup a small GEMM over a block of units and a tile
/// of batch entries, so a weight is loaded once per tile rather than once per entry). Adapters
/// of type CPU (lavapipe, llvmpipe, SwiftShader) take `Entry`, every other `Tiled`;
/// `RECUR_STEP_KERNEL=entry|tiled` or [`Gpu::set_step_kernel`] overrides that, so the tests
/// run both on any adapter and a cost table shows what a GPU would run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepKernel {
    /// One workgroup per 256 units of one batch entry (`forward_step`, ...).
    Entry,
    /// Batch-tiled workgroups (`forward_step_tiled`, ...).
    Tiled,
}

impl StepKernel {
    /// The step kernels plans on `gpu` record: its override ([`Gpu::set_step_kernel`]), else
    /// `RECUR_STEP_KERNEL`'s, else `Entry` on a CPU adapter and `Tiled` on any other.
    pub fn for_adapter(gpu: &Gpu) -> Self {
        gpu.variant(
            gpu.inner.step_kernel.get(),
            "RECUR_STEP_KERNEL",
            &[("entry", StepKernel::Entry), ("tiled", StepKernel::Tiled)],
            StepKernel::Entry,
            StepKernel::Tiled,
        )
    }

    /// The entry point of step kernel `entry` (as named for `Entry`) in this variant.
    fn entry(self, entry: &'static str) -> &'static str {
        match (self, entry) {
            (StepKernel::Entry, _) => entry,
            (StepKernel::Tiled, "forward_step") => "forward_step_tiled",
            (StepKernel::Tiled, "forward_gru_n") => "forward_gru_n_tiled",
            (StepKernel::Tiled, "backward_step") => "backward_step_tiled",
            (StepKernel::Tiled, "backward_gru_n") => "backward_gru_n_tiled",
            (StepKernel::Tiled, "backward_finish") => "backward_finish_tiled",
            (StepKernel::Tiled, other) => other,
        }
    }
}

/// How a plan stores the copies of W_hh and b_hh its recurrent products read every step
/// (`wt` in `shaders/recurrent.wgsl`), and the gate activations it saves for backward
/// (override `F16_STORAGE`). The parameters themselves, the input projection, the states,
/// the outputs and every gradient stay f32, and every product accumulates in f32.
///
/// `F16Storage` halves the bytes of the recurrent products, the traffic that grows with
/// H x H every step, and most of the memory of the saved gate activations
/// ([`Precision::f16_activations`]): LSTM's i, f, g, o, GRU's r, z, n and W_hn h + b_hn, and
/// GRU reset-before's r and n (a row of `saved` drops from 6H words to 4H for LSTM, from 5H
/// to 3H for GRU, from 5H to 4H for reset-before, whose z the step's second dispatch reads to
/// compute h, and whose r * h is an operand of products). RNN saves no activation in either
/// precision: its backward reads its output. It decodes with
/// `unpack2x16float`, which is core WGSL, so it runs on every adapter, with or without
/// `SHADER_F16`.
///
/// What it computes: the forward is exactly the f32 layer's with W_hh and b_hh rounded to
/// f16 ([`crate::cpu::precision`]); the backward is that layer's backward given the saved
/// activations as stored (each within 2^-11 of itself), and its gradients are applied to the
/// f32 parameters (mixed precision with f32 master weights). Each weight is off by up to
/// 2^-11 of itself (magnitudes below 2^-14 become 0), so outputs and gradients move by about
/// that times the recurrence's conditioning; `tests/recurrent_gpu.rs` states the bound it
/// holds to. `F32`, the default, keeps the GPU within 1e-5 of the CPU path and of PyTorch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// W_hh, b_hh and the saved activations in f32, as the parameters.
    #[default]
    F32,
    /// W_hh and b_hh rounded to f16 for the recurrent products, and the saved gate
    /// activations of [`Precision::f16_activations`] stored in f16; all else f32.
    F16Storage,
}

impl Precision {
    /// The precision plans on `gpu` use: its setting ([`Gpu::set_recurrent_precision`]),
    /// else `RECUR_PRECISION=f32|f16`'s, else `F32`.
    pub fn for_device(gpu: &Gpu) -> Self {
        gpu.variant(
            gpu.inner.recurrent_precision.get(),
            "RECUR_PRECISION",
            &[("f32", Precision::F32), ("f16", Precision::F16Storage)],
            Precision::F32,
            Precision::F32,
        )
    }

    /// Bytes of one stored weight.
    pub fn weight_bytes(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::F16Storage => 2,
        }
    }

    /// 32-bit words a row of the saved activations (`act` in `shaders/recurrent.wgsl`) takes
    /// per hidden unit: one per activation ([`CellKind::act_width`]), except that f16
    /// storage keeps [`f16_activations`] of them as pairs of f16, one word a pair, and that
    /// RNN saves none (its backward reads its output).
    pub fn activation_words(self, cell: CellKind) -> usize {
        if matches!(cell, CellKind::RnnTanh | CellKind::RnnRelu) {
            return 0;
        }
        let paired = self.f16_activations(cell);
        paired.div_ceil(2) + cell.act_width() - paired
    }

    /// The word column (of H words) where activation `a` of a row of `act` starts
    /// (`activation_at` in `shaders/recurrent.wgsl`): the pairs of f16 first, in order,
    /// then the f32 activations.
    pub fn activation_column(self, cell: CellKind, a: usize) -> usize {
        let below = self.f16_below(cell, a);
        if self.is_f16_activation(cell, a) {
            below / 2
        } else {
            self.f16_activations(cell).div_ceil(2) + a - below
        }
    }

    /// Which half of its word activation `a` takes where it is kept in f16: 0 the low half,
    /// 1 the high one.
    pub fn activation_half(self, cell: CellKind, a: usize) -> usize {
        self.f16_below(cell, a) % 2
    }

    /// How many of `cell`'s saved activations this precision keeps in f16.
    pub fn f16_activations(self, cell: CellKind) -> usize {
        match self {
            Precision::F32 => 0,
            Precision::F16Storage => f16_activations(cell),
        }
    }

    /// Whether this precision keeps `cell`'s activation `a` in f16.
    pub fn is_f16_activation(self, cell: CellKind, a: usize) -> bool {
        self == Precision::F16Storage && is_f16_activation(cell, a)
    }

    /// How many of `cell`'s activations 0 .. `a` this precision keeps in f16.
    fn f16_below(self, cell: CellKind, a: usize) -> usize {
        match self {
            Precision::F32 => 0,
            Precision::F16Storage => f16_below(cell, a),
        }
    }

    /// The `F16_STORAGE` override of `shaders/recurrent.wgsl`.
    fn code(self) -> f64 {
        match self {
            Precision::F32 => 0.0,
            Precision::F16Storage => 1.0,
        }
    }
}

/// How the step kernels get the index of the step a dispatch runs (`step` in
/// `shaders/recurrent.wgsl`). Either way a plan binds one bind group for all its dispatches
/// (it had one per step, T of them, before): what changes per dispatch is 16 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepIndex {
    /// Immediate data (wgpu's `IMMEDIATES`, push constants in Vulkan): set in the command
    /// stream, no buffer. Pipelines are built from the family's immediates variant
    /// ([`super::shaders::ImmediateVariant`]).
    Immediate,
    /// A uniform buffer of every step's index, one per `min_uniform_buffer_offset_alignment`
    /// slot, bound at a dynamic offset. Core WebGPU: every adapter has it.
    Offset,
}

impl StepIndex {
    /// How plans on `gpu` pass the step index: `Offset` if `RECUR_STEP_INDEX=offset`, else
    /// `Immediate` where the device offers immediates (the feature and at least 16 bytes of
    /// them) and `Offset` elsewhere. While the device traces (for replay in a browser, whose
    /// WebGPU has no immediates) always `Offset`.
    pub fn for_device(gpu: &Gpu) -> Self {
        let forced_offset = std::env::var("RECUR_STEP_INDEX").as_deref() == Ok("offset");
        if !forced_offset && Self::immediates_possible(gpu) {
            StepIndex::Immediate
        } else {
            StepIndex::Offset
        }
    }

    /// Whether plans on `gpu` can take [`StepIndex::Immediate`].
    pub fn immediates_possible(gpu: &Gpu) -> bool {
        gpu.capabilities().immediates
            && gpu.limits().max_immediate_size >= super::shaders::PER_DISPATCH_BYTES
            && !gpu.is_tracing()
    }
}

/// Floats of the sequence kernels' workgroup memory (`TILE_STATE` in
/// `shaders/recurrent.wgsl`): 16 KiB, WebGPU's default limit. The forward keeps two copies
/// of the tile's state in it (TILE x H each), the backward one step's gate gradients.
const SEQUENCE_STATE_FLOATS: usize = 4096;
/// The batch tiles the sequence kernel is compiled for (its `TILE` override), largest first.
pub const SEQUENCE_TILES: [usize; 4] = [8, 4, 2, 1];

/// The most W_hh (bytes as stored: G x H x H x 4, or x 2 in [`Precision::F16Storage`]) the
/// rule lets one workgroup stream each step, where the step kernels are [`StepKernel::Entry`].
pub const SEQUENCE_MAX_WEIGHT_BYTES: usize = 1 << 20;
/// The same where the step kernels are [`StepKernel::Tiled`], for a cell whose step path
/// runs one dispatch a step; twice that for GRU reset-before, whose step path runs two
/// ([`RecurrentPath`]).
pub const SEQUENCE_MAX_WEIGHT_BYTES_TILED: usize = 96 << 10;

/// Invocations per workgroup of the sequence kernels (`SEQ_QUADS` in recurrent.wgsl), each
/// owning quads of 4 units.
const SEQUENCE_QUADS: usize = 64;
/// Loop iterations counted per pass over a product for the loops around it (over the gates,
/// the tile's entries and the 4 units of a quad, where the compiler does not unroll them).
const LOOP_OVERHEAD: usize = 16;

/// Dispatches the step path runs a step: two for GRU with the reset gate before the product
/// (the n product reads r * h, and WGSL has no barrier across workgroups to wait for every
/// unit's r), else one.
fn step_dispatches(cell: CellKind) -> usize {
    match cell {
        CellKind::GruResetBefore => 2,
        _ => 1,
    }
}

/// How a plan records the forward's recurrence.
///
/// The rule ([`RecurrentPath::by_rule`]) takes the sequence kernel where
/// - it applies: the adapter gives a workgroup at least the kernel's 16 KiB of workgroup
///   memory (every WebGPU adapter does) and the state of one batch entry, twice (the previous
///   step's and the new one), fits in it: 2 x H x 4 bytes <= 16 KiB, so H <= 2048; and
/// - W_hh is at most [`SEQUENCE_MAX_WEIGHT_BYTES`] (1 MiB: LSTM H <= 256, GRU H <= 295,
///   RNN H <= 512) with the [`StepKernel::Entry`] step kernels, at most
///   [`SEQUENCE_MAX_WEIGHT_BYTES_TILED`] (96 KiB: LSTM H <= 78, GRU H <= 90, RNN H <= 156)
///   with the [`StepKernel::Tiled`] ones. Every workgroup of the sequence kernel reads all of
///   W_hh each step on one compute unit, while the step kernels spread each step over the
///   machine at the price of a launch per step. Against the entry kernels the stream through
///   one unit costs more than the launch beyond about 1 MiB (the cost table in BENCHMARKS.md,
///   issue 12: LSTM at H = 256, B = 32 is modelled about even, 4.7 against 5.0 ms; at
///   H = 1024, B = 64 the sequence kernel loses, 67 against 19 ms; at H = 128, B = 1,
///   T = 1000 it wins, 11 against 27 ms). The tiled kernels cost little more than their
///   launch (LSTM, H = 256, B = 32, T = 100: 0.58 ms for 100 steps against 4.7 ms), so the
///   sequence kernel wins only on small weights: modelled on an H100, LSTM forward at
///   B = 32, T = 100 it wins at H = 72 (0.49 against 0.54 ms) and loses at H = 78 (0.57
///   against 0.54), RNN breaks even at H = 156; at B = 1, T = 1000 LSTM it wins at H = 80
///   (4.3 against 5.2 ms) and loses at H = 96 (6.1 against 5.3). What the cap buys is the
///   launches the sequence kernel saves, and GRU reset-before's step path launches two
///   dispatches a step (its n product reads r * h, which needs every unit's r), so with the
///   tiled kernels its cap is twice the others' (192 KiB: H <= 128). Modelled, reset-before
///   forward + backward, sequence against step: 1.80 against 2.15 ms at H = 112, B = 32,
///   T = 100; 2.25 against 2.17 at H = 128 (and 1.93 against 2.14 at B = 4); 16.4 against
///   20.8 at H = 128, B = 1, T = 1000; 20.6 against 20.9 at H = 144 there. The entry kernels'
///   cap is not scaled: the cost model does not plan them.
///
/// The sizes above are for f32 weights; the rule counts the bytes as stored, so with
/// [`Precision::F16Storage`] it takes the sequence kernel up to 2x the elements of W_hh (LSTM
/// H <= 362 and H <= 110 with the two kinds of step kernels).
///
/// Elsewhere the step kernels. The sequence kernel's batch tile is the largest of 8, 4, 2, 1
/// entries whose state fits (2 x tile x H <= 4096 floats) and that does not exceed the batch
/// rounded up to a power of two.
///
/// On the sequence path the backward runs as one dispatch too (`backward_sequence`) where
/// one step's gate gradients of a batch tile fit the same 16 KiB: tile x R <= 4096 floats,
/// R being the rows of W_hh the state's gradient flows through (G x H; 2 x H for GRU with
/// the reset gate before the product), so LSTM H <= 1024, GRU H <= 1365, RNN H <= 4096
/// (H <= 2048 from the forward's rule) and GRU reset-before H <= 2048
/// ([`RecurrentPath::backward_sequence_tile`]). Beyond that the backward takes the step
/// kernels after the sequence kernel's forward, which saves the same activations. `RECUR_RECURRENT=step|sequence` or
/// [`Gpu::set_recurrent_path`] overrides the rule: `sequence` then takes the sequence kernel
/// wherever it applies, whatever the size of W_hh, so the tests cover both paths on any
/// adapter. On llvmpipe each sequence kernel applies only where an invocation's loops stay
/// within [`LLVMPIPE_LOOP_BUDGET`] ([`RecurrentPath::loops_fit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecurrentPath {
    /// One dispatch per step (two for GRU with the reset gate before the product).
    Step,
    /// One dispatch for every step of a layer-direction (`forward_sequence`).
    Sequence,
}

impl RecurrentPath {
    /// The path a plan for `shape` on `gpu` takes: an override if one is set, else the rule
    /// ([`Self::by_rule`]), except on llvmpipe, which takes the step kernels
    /// ([`Gpu::is_llvmpipe`]).
    pub fn choose(gpu: &Gpu, shape: &RecurrentShape) -> Self {
        Self::resolve(
            gpu,
            shape,
            Self::wanted(gpu),
            StepKernel::for_adapter(gpu),
            Precision::for_device(gpu),
        )
    }

    /// The device's override, or `RECUR_RECURRENT`'s.
    fn wanted(gpu: &Gpu) -> Option<Self> {
        match gpu.inner.recurrent_path.get() {
            Some(p) => Some(*p),
            None => match std::env::var("RECUR_RECURRENT").as_deref() {
                Ok("step") => Some(RecurrentPath::Step),
                Ok("sequence") => Some(RecurrentPath::Sequence),
                _ => None,
            },
        }
    }

    /// `wanted` where it applies, else the rule for `step` kernels.
    fn resolve(
        gpu: &Gpu,
        shape: &RecurrentShape,
        wanted: Option<Self>,
        step: StepKernel,
        precision: Precision,
    ) -> Self {
        match wanted {
            // llvmpipe stops an invocation's loops after about 65,535 iterations
            // ([`Gpu::is_llvmpipe`]), and a sequence kernel loops over every step: the LSTM
            // forward stopped after T = 65,535 / (H + 11) steps (H = 64, 128, 256), its
            // outputs beyond left unwritten. So there the device's choice is the step
            // kernels, and the sequence kernels run only where asked (`RECUR_RECURRENT`, as
            // the tests do) and within the loop budget (`loops_fit`).
            None if gpu.is_llvmpipe() => RecurrentPath::Step,
            None => Self::rule_for(gpu, shape, step, precision),
            Some(RecurrentPath::Sequence)
                if Self::sequence_tile(gpu, shape).is_some_and(|tile| {
                    Self::loops_fit(gpu, Self::forward_sequence_iterations(shape, tile))
                }) =>
            {
                RecurrentPath::Sequence
            }
            Some(_) => RecurrentPath::Step,
        }
    }

    /// The path the rule picks for `shape` on `gpu`, overrides aside (see [`RecurrentPath`]).
    pub fn by_rule(gpu: &Gpu, shape: &RecurrentShape) -> Self {
        Self::rule_for(
            gpu,
            shape,
            StepKernel::for_adapter(gpu),
            Precision::for_device(gpu),
        )
    }

    fn rule_for(gpu: &Gpu, shape: &RecurrentShape, step: StepKernel, precision: Precision) -> Self {
        let weight_bytes = precision.weight_bytes() * shape.gate_width() * shape.hidden;
        let most = match step {
            StepKernel::Entry => SEQUENCE_MAX_WEIGHT_BYTES,
            StepKernel::Tiled => SEQUENCE_MAX_WEIGHT_BYTES_TILED * step_dispatches(shape.cell),
        };
        match Self::sequence_tile(gpu, shape) {
            Some(_) if weight_bytes <= most => RecurrentPath::Sequence,
            _ => RecurrentPath::Step,
        }
    }

    /// The sequence kernel's batch tile for `shape` on `gpu`, or `None` where the state of
    /// one batch entry does not fit its workgroup memory (see [`RecurrentPath`]).
    pub fn sequence_tile(gpu: &Gpu, shape: &RecurrentShape) -> Option<usize> {
        Self::tile_for(gpu, shape, 2 * shape.hidden)
    }

    /// The backward sequence kernel's batch tile for `shape` on `gpu` (where the plan takes
    /// the sequence path), or `None` where one step's gate gradients of one batch entry do
    /// not fit its workgroup memory (see [`RecurrentPath`]).
    pub fn backward_sequence_tile(gpu: &Gpu, shape: &RecurrentShape) -> Option<usize> {
        Self::sequence_tile(gpu, shape)?;
        Self::tile_for(gpu, shape, direct_rows(shape))
    }

    /// Whether a kernel whose invocations loop `iterations` times runs right on `gpu`: on
    /// llvmpipe only within [`LLVMPIPE_LOOP_BUDGET`] ([`Gpu::is_llvmpipe`]). A plan takes
    /// the sequence kernels only where this holds ([`Self::forward_sequence_iterations`],
    /// [`Self::backward_sequence_iterations`]), else the step kernels.
    pub fn loops_fit(gpu: &Gpu, iterations: usize) -> bool {
        !gpu.is_llvmpipe() || iterations <= LLVMPIPE_LOOP_BUDGET
    }

    /// An upper estimate of the loop iterations one invocation of `forward_sequence` runs
    /// (llvmpipe stops counting at about 65,535; [`Gpu::is_llvmpipe`]): staging h0, then
    /// per step and quad of units it owns the product's walk over H state units (GRU
    /// reset-before: and over H for its n gate), with 16 iterations for the loops
    /// around it. Measured on lavapipe, the LSTM forward stopped after 65,535 / (H + 11)
    /// steps at H = 64, 128 and 256 (one quad each), within this estimate.
    pub fn forward_sequence_iterations(shape: &RecurrentShape, tile: usize) -> usize {
        let h = shape.hidden;
        let quads = h.div_ceil(4 * SEQUENCE_QUADS);
        let products = if shape.cell == CellKind::GruResetBefore {
            2
        } else {
            1
        };
        (tile * h).div_ceil(SEQUENCE_QUADS) + shape.steps * products * quads * (h + LOOP_OVERHEAD)
    }

    /// An upper estimate of the loop iterations one invocation of `backward_sequence` runs:
    /// per step and quad, the product over the R direct rows of W_hh and staging the tile's
    /// R gate gradients (GRU reset-before: the same over its H n rows), and after step 0 the
    /// product for dh0, each with 16 iterations for the loops around it.
    pub fn backward_sequence_iterations(shape: &RecurrentShape, tile: usize) -> usize {
        let h = shape.hidden;
        let quads = h.div_ceil(4 * SEQUENCE_QUADS);
        let rows = direct_rows(shape);
        let pass = |width: usize| {
            quads * (width + LOOP_OVERHEAD) + (tile * width).div_ceil(SEQUENCE_QUADS)
        };
        let mut step = pass(rows);
        if shape.cell == CellKind::GruResetBefore {
            step += pass(h);
        }
        shape.steps * step + pass(rows)
    }

    /// The largest tile of [`SEQUENCE_TILES`] within the batch rounded up to a power of two
    /// whose `floats_per_entry` fit the sequence kernels' workgroup memory.
    fn tile_for(gpu: &Gpu, shape: &RecurrentShape, floats_per_entry: usize) -> Option<usize> {
        let limit = gpu.limits().max_compute_workgroup_storage_size as usize;
        if limit < SEQUENCE_STATE_FLOATS * 4 {
            return None;
        }
        let batch = shape.batch.next_power_of_two();
        SEQUENCE_TILES
            .into_iter()
            .find(|&t| t <= batch && t * floats_per_entry <= SEQUENCE_STATE_FLOATS)
    }
}

/// Rows of W_hh through which the state's gradient flows directly: every gate's, but for
/// GRU with the reset gate before the product, whose n rows reach the state through r * h
/// (`direct_rows` in recurrent.wgsl).
/// Elements of each workspace buffer one layer-direction needs (`wt` in 16-byte words); or,
/// [`Workspace::times`] d, where direction d's part of a pair's shared buffer starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Workspace {
    gates: usize,
    /// Both weight copies of W_hh, and in a [`RecurrentStack`] W_ih's after them.
    wt_words: usize,
    smap: usize,
    saved: usize,
    state: usize,
    rmask: usize,
}

impl Workspace {
    fn of(shape: &RecurrentShape, grads: bool, precision: Precision) -> Self {
        Self::with_input(shape, grads, precision, false)
    }

    /// [`Workspace::of`], with room for W_ih's copies where `in_step_input` (a stack's
    /// layers: [`WeightCopies`]).
    fn with_input(
        shape: &RecurrentShape,
        grads: bool,
        precision: Precision,
        in_step_input: bool,
    ) -> Self {
        let (h, b, gw, rows) = (shape.hidden, shape.batch, shape.gate_width(), shape.rows());
        let cell = shape.cell;
        // GRU's backward appends dhw to the gate values.
        let gate_rows = if grads && cell == CellKind::Gru {
            2 * rows
        } else {
            rows
        };
        Self {
            gates: gate_rows * gw,
            wt_words: WeightCopies::of(shape, precision).words(in_step_input),
            smap: shape.steps * b,
            saved: SavedLayout::of(shape, grads, precision).len,
            state: REGIONS * b * h,
            // A stack's layers keep their input dropout mask after the recurrent one
            // (`off_imask` in recurrent.wgsl).
            rmask: if in_step_input { 2 * b * h } else { b * h },
        }
    }

    /// Every size times `d`: where direction `d`'s part of each shared buffer starts.
    fn times(self, d: usize) -> Self {
        Self {
            gates: d * self.gates,
            wt_words: d * self.wt_words,
            smap: d * self.smap,
            saved: d * self.saved,
            state: d * self.state,
            rmask: d * self.rmask,
        }
    }
}

/// Where the regions of one layer-direction's `saved` lie (`saved` and `saved_row` in
/// recurrent.wgsl), in words: h_prev at 0, then LSTM's cell states at `off_cell`, then the
/// activations at `off_act`, [`Precision::activation_words`] x H words a row.
///
/// A plan with a backward keeps a row of each per output row (T x B rows): the weight
/// gradients read h_prev, the backward the cell states and activations. A forward-only plan
/// keeps one row per batch entry of what its forward reads back itself, overwritten every step:
/// LSTM's cell state (the next step's c_prev) and GRU reset-before's activations (the step's
/// second dispatch reads z and r * h); nothing for the other cells. As PyTorch's forward
/// under `no_grad`, it then takes memory independent of the sequence's length: LSTM
/// 256x32x100 in f32 keeps 32 KiB instead of 18.8 MiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SavedLayout {
    off_cell: usize,
    off_act: usize,
    /// Words in all, at least 1 (a binding cannot be empty).
    len: usize,
}

impl SavedLayout {
    fn of(shape: &RecurrentShape, grads: bool, precision: Precision) -> Self {
        let (h, rows, cell) = (shape.hidden, shape.rows(), shape.cell);
        let kept = if grads { rows } else { shape.batch };
        let hprev_rows = if grads { rows } else { 0 };
        let cell_rows = if cell.has_cell_state() { kept } else { 0 };
        let act_rows = if grads || cell == CellKind::GruResetBefore {
            kept
        } else {
            0
        };
        let off_cell = hprev_rows * h;
        let off_act = off_cell + cell_rows * h;
        let len = off_act + act_rows * precision.activation_words(cell) * h;
        Self {
            off_cell,
            off_act,
            len: len.max(1),
        }
    }
}

/// Where the weight copies of one layer-direction lie in `wt`: W_hh^T with b_hh as its last
/// row, then W_hh with padded rows (see `wt` in recurrent.wgsl); in a [`RecurrentStack`], the
/// same two copies of W_ih and b_ih after them, in f32 whatever the precision of W_hh's.
#[derive(Clone, Copy)]
struct WeightCopies {
    precision: Precision,
    /// vec4s of W_hh's two copies, in the f32 layout the kernels index.
    vec4s: usize,
}

impl WeightCopies {
    fn of(shape: &RecurrentShape, precision: Precision) -> Self {
        let (h, gw) = (shape.hidden, shape.gate_width());
        let hp = h.div_ceil(4) * 4;
        let elements = (h + 1) * shape.cell.gates() * hp + gw * hp;
        Self {
            precision,
            vec4s: elements / 4,
        }
    }

    /// 16-byte words of `vec4s` vec4s as stored.
    fn words_of(&self, vec4s: usize) -> usize {
        match self.precision {
            Precision::F32 => vec4s,
            Precision::F16Storage => vec4s.div_ceil(2),
        }
    }

    /// Words the transposition of W_hh writes.
    fn copy_words(&self) -> usize {
        self.words_of(self.vec4s)
    }

    /// The word where W_ih's copies start (`off_wi` in recurrent.wgsl), right after W_hh's.
    fn input_word(&self) -> usize {
        self.copy_words()
    }

    /// Words the transposition of W_ih writes: f32 whatever the precision, since the
    /// products over all steps that read W_ih (the first layer's input projection, the
    /// input and weight gradients) read it in f32 too.
    fn input_words(&self) -> usize {
        self.vec4s
    }

    /// Words of a layer-direction's part of `wt`.
    fn words(&self, in_step_input: bool) -> usize {
        if in_step_input {
            self.input_word() + self.input_words()
        } else {
            self.copy_words()
        }
    }
}

/// How the layer-directions that share [`SharedBuffers`] are arranged.
enum Sharing {
    /// The directions of a [`RecurrentPair`]: direction 0's first column of y, and the
    /// columns from it to direction 1's.
    Pair { out_offset: usize, dir_out: usize },
    /// The layers of a [`RecurrentStack`]: their outputs in `y`, layer after layer, each
    /// `rows * H`; the step index of a wave runs to `steps + layers - 1`. With
    /// `input_masks`, the layers above the first see their input through a dropout mask.
    Stack {
        y: GpuTensor,
        layers: usize,
        input_masks: bool,
    },
}

/// The buffers the layer-directions of a [`RecurrentPair`] or a [`RecurrentStack`] bind,
/// each holding part d one [`Workspace`] after part d - 1's.
struct SharedBuffers {
    sizes: Workspace,
    gates: GpuTensor,
    wt: GpuTensor,
    smap: GpuTensor<u32>,
    saved: GpuTensor,
    state: GpuTensor,
    rmask: GpuTensor,
    sharing: Sharing,
}

impl SharedBuffers {
    /// Buffers for `parts` workspaces of `sizes`.
    fn new(gpu: &Gpu, sizes: Workspace, parts: usize, sharing: Sharing) -> Result<Self> {
        Ok(Self {
            sizes,
            gates: GpuTensor::zeros(gpu, &[parts * sizes.gates])?,
            wt: GpuTensor::zeros(gpu, &[parts * 4 * sizes.wt_words])?,
            smap: GpuTensor::zeros(gpu, &[parts * sizes.smap])?,
            saved: GpuTensor::zeros(gpu, &[parts * sizes.saved])?,
            state: GpuTensor::zeros(gpu, &[parts * sizes.state])?,
            rmask: GpuTensor::filled(gpu, &[parts * sizes.rmask], 1.0f32)?,
            sharing,
        })
    }

    /// Whether `parts` workspaces of `sizes` (and `extra` more floats in one buffer) stay
    /// within what `gpu` binds per buffer.
    fn fit(gpu: &Gpu, sizes: Workspace, parts: usize, extra: usize) -> bool {
        let w = sizes;
        let largest = [w.gates, 4 * w.wt_words, w.smap, w.saved, w.state, w.rmask]
            .into_iter()
            .max()
            .unwrap_or(0);
        largest
            .checked_mul(parts)
            .and_then(|n| n.max(extra).checked_mul(4))
            .is_some_and(|bytes| bytes as u64 <= gpu.max_binding_bytes())
    }

    /// Copies the callers' states (and recurrent dropout masks) of `plans` into the shared
    /// buffers.
    fn record_copy_in(&self, rec: &mut Recorder, plans: &[&RecurrentPlan]) {
        for p in plans {
            let bytes = 4 * self.sizes.state as u64;
            let at = 4 * p.offsets.state as u64;
            rec.copy(p.state.buffer(), 0, self.state.buffer(), at, bytes);
            if let Some(m) = &p.source_mask {
                let bytes = 4 * (p.shape.batch * p.shape.hidden) as u64;
                let at = 4 * p.offsets.rmask as u64;
                rec.copy(m.buffer(), 0, self.rmask.buffer(), at, bytes);
            }
        }
    }

    /// Copies the states of `plans` back to the callers' state tensors.
    fn record_copy_out(&self, rec: &mut Recorder, plans: &[&RecurrentPlan]) {
        for p in plans {
            let bytes = 4 * self.sizes.state as u64;
            let at = 4 * p.offsets.state as u64;
            rec.copy(self.state.buffer(), at, p.state.buffer(), 0, bytes);
        }
    }
}

/// A product blocked as the tiled step kernels block theirs ([`tiled_cost`]).
struct TiledProduct {
    /// Units and batch entries per workgroup.
    block: (usize, usize),
    /// Output units (each with `outs` outputs) and batch entries.
    units: usize,
    batch: usize,
    outs: usize,
    /// K, padded to a multiple of 4, and its elements that are not padding.
    depth: usize,
    valid: usize,
    /// Bytes of one source element and of one weight.
    source_bytes: f64,
    weight_bytes: f64,
    /// Whether a bias is added per output, unit and entry.
    bias: bool,
}

/// The cost of a tiled product: each of the ceil(units / block units) x ceil(B / tile)
/// workgroups loads, per chunk of K, its tile's sources (one step-map code per entry first)
/// and `outs` x its units' rows of weights; a bias adds one weight per output, unit and
/// entry. Every invocation runs its half of every chunk, padding included (2 operations per
/// output and element of K), so the operations count the padded tile. So each weight is
/// loaded ceil(B / tile) times, each source element ceil(units / block units) times;
/// distinct, each once.
fn tiled_cost(p: TiledProduct) -> Cost {
    let (block_units, tile) = p.block;
    let (unit_blocks, tiles) = (p.units.div_ceil(block_units), p.batch.div_ceil(tile));
    let chunks = p.depth.div_ceil(TILED_K);
    let flops = 2.0 * (unit_blocks * block_units * tiles * tile * p.outs * chunks * TILED_K) as f64;
    let weights = p.weight_bytes * (p.outs * p.units * p.depth) as f64;
    let sources = (p.batch * p.valid) as f64 * p.source_bytes + 4.0 * p.batch as f64;
    let bias = if p.bias {
        p.weight_bytes * (p.outs * p.units * p.batch) as f64
    } else {
        0.0
    };
    Cost::new(
        flops,
        tiles as f64 * weights + unit_blocks as f64 * sources + bias,
        0.0,
    )
    .with_unique_read(weights + sources + p.weight_bytes * (p.outs * p.units) as f64)
}

fn direct_rows(shape: &RecurrentShape) -> usize {
    match shape.cell {
        CellKind::GruResetBefore => 2 * shape.hidden,
        _ => shape.gate_width(),
    }
}

impl Gpu {
    /// Makes every recurrent plan built on this device from now on record `kernel`'s step
    /// kernels ([`StepKernel`]). Once per device: an error if it was set to another before.
    pub fn set_step_kernel(&self, kernel: StepKernel) -> Result<()> {
        let set = *self.inner.step_kernel.get_or_init(|| kernel);
        ensure!(
            set == kernel,
            Invalid,
            "the step kernels of this device are already {set:?}, cannot make them {kernel:?}"
        );
        Ok(())
    }

    /// Makes every recurrent plan built on this device from now on store its recurrent
    /// weights in `precision` ([`Precision`]). Once per device: an error if it was set to
    /// another before.
    pub fn set_recurrent_precision(&self, precision: Precision) -> Result<()> {
        let set = *self.inner.recurrent_precision.get_or_init(|| precision);
        ensure!(
            set == precision,
            Invalid,
            "the recurrent precision of this device is already {set:?}, cannot make it {precision:?}"
        );
        Ok(())
    }

    /// Makes every recurrent plan built on this device from now on take `path` (where it
    /// applies; see [`RecurrentPath`]). Once per device: an error if it was set to another
    /// path before.
    pub fn set_recurrent_path(&self, path: RecurrentPath) -> Result<()> {
        let set = *self.inner.recurrent_path.get_or_init(|| path);
        ensure!(
            set == path,
            Invalid,
            "the recurrent path of this device is already {set:?}, cannot make it {path:?}"
        );
        Ok(())
    }
}

/// The kernels a plan records where its caller chooses them rather than the device
/// ([`RecurrentPlan::new`], `GpuExecutor::set_recurrent_kernels`; `recur selftest`
/// checks both step kernels on every adapter this way). `None`: as the device chooses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecurrentKernels {
    /// The forward's path; `None`: the device's choice ([`RecurrentPath::choose`]).
    pub path: Option<RecurrentPath>,
    /// The step kernels; `None`: the device's choice ([`StepKernel::for_adapter`]).
    pub step: Option<StepKernel>,
    /// The recurrent weights' storage; `None`: the device's ([`Precision::for_device`]).
    pub precision: Option<Precision>,
    /// How the step index reaches the kernels; `None`: the device's
    /// ([`StepIndex::for_device`]). `Immediate` where the device cannot is an error.
    pub step_index: Option<StepIndex>,
    /// Run the two directions of a bidirectional layer one after the other rather than as a
    /// [`RecurrentPair`] (an executor's choice; `RECUR_DIRECTIONS=separate` too).
    pub separate_directions: bool,
    /// How an executor records a unidirectional stack's layers; `None`: its rule
    /// ([`StackSchedule::by_rule`]), or `RECUR_STACK`.
    pub stack: Option<StackSchedule>,
}

/// The parameters of one layer-direction on the device (PyTorch shapes).
#[derive(Clone, Copy)]
pub struct GpuWeights<'a> {
    /// Input weights `[G*H, I]`.
    pub w_ih: &'a GpuTensor,
    /// Recurrent weights `[G*H, H]`.
    pub w_hh: &'a GpuTensor,
    /// Input bias `[G*H]`, if any.
    pub b_ih: Option<&'a GpuTensor>,
    /// Recurrent bias `[G*H]`, if any.
    pub b_hh: Option<&'a GpuTensor>,
}

/// Where backward writes the parameter and input gradients (overwritten, except `dx` when
/// `accumulate_dx` is set, as for the shared input of a bidirectional layer).
#[derive(Clone, Copy)]
pub struct GpuGrads<'a> {
    /// Gradient of the input `x`, `[rows, I]`.
    pub dx: &'a GpuTensor,
    /// Add into `dx` rather than overwrite it.
    pub accumulate_dx: bool,
    /// Gradient of `W_ih`, `[G*H, I]`.
    pub dw_ih: &'a GpuTensor,
    /// Gradient of `W_hh`, `[G*H, H]`.
    pub dw_hh: &'a GpuTensor,
    /// Gradient of `b_ih`, `[G*H]` (written even where the layer has no bias).
    pub db_ih: &'a GpuTensor,
    /// Gradient of `b_hh`, `[G*H]` (written even where the layer has no bias).
    pub db_hh: &'a GpuTensor,
}

/// One recurrent layer-direction planned on the device for a fixed [`RecurrentShape`] and
/// fixed tensors: workspace, uniforms and bind groups made once, so recording a forward or
/// backward allocates and compiles nothing (see the module doc).
pub struct RecurrentPlan {
    gpu: Gpu,
    shape: RecurrentShape,
    smap: GpuTensor<u32>,
    /// The caller's state tensor: what [`Self::h_n`] and the state copies read and write.
    state: GpuTensor,
    /// In a pair, the caller's recurrent dropout mask, which the pair copies into `rmask`.
    source_mask: Option<GpuTensor>,
    /// The mask the kernels bind (ones without recurrent dropout).
    rmask: GpuTensor,
    has_rmask: bool,
    /// Where this direction's part of each workspace buffer starts (zeros but in a pair or
    /// a stack).
    offsets: Workspace,
    /// How many layer-directions share the workspace buffers: 2 in a pair, a stack's layers,
    /// else 1.
    parts: usize,
    carry_scratch: GpuTensor,
    xw_gemm: GemmPlan,
    transpose: Transpose,
    /// In a [`RecurrentStack`], above the first layer: the transposition of W_ih and b_ih.
    input_transpose: Option<Transpose>,
    precision: Precision,
    /// The copies of W_hh and b_hh the products read (see `wt` in recurrent.wgsl).
    wt: GpuTensor,
    forward_step: Kernel,
    forward_gru_n: Option<Kernel>,
    /// The sequence kernel and its batch tile, where the plan takes that path.
    forward_sequence: Option<(Kernel, usize)>,
    backward: Option<Backward>,
    /// The bind group of every step, sequence and finishing dispatch.
    step_group: wgpu::BindGroup,
    step_index: StepIndex,
    /// Bytes between consecutive steps' indices in the step buffer ([`StepIndex::Offset`]).
    step_stride: u32,
    // Kept alive for the bind groups.
    workspace: Vec<GpuTensor>,
    /// `saved` (hprev, cell states, activations): a handle on the buffer `workspace` holds,
    /// or this direction's stride of a shared one (`offsets.saved`).
    saved: GpuTensor,
    /// The kernels' uniforms, for a [`RecurrentStack`]'s backward bind group.
    cfg: Config,
    /// Every step's index at its dynamic offset ([`StepIndex::Offset`]).
    step_buffer: Option<wgpu::Buffer>,
    _uniforms: Vec<wgpu::Buffer>,
}

/// Both directions of a bidirectional layer, run side by side: each step (or the sequence
/// kernel) is one dispatch whose workgroups at z = 0 run the first direction and at z = 1
/// the second, so a layer's steps cost one launch each rather than two. The two directions
/// share one buffer per binding (gate values, weight copies, step map, saved activations,
/// state, recurrent mask), each holding the second direction's part right after the first's;
/// the kernels add that stride (`enter_direction` in `shaders/recurrent.wgsl`), so the
/// dispatch stays within 8 storage buffers. The callers' state tensors stay where the
/// states live between recordings: each recording copies them (and the dropout masks) in
/// first and the states out last, 9 x B x H floats a direction each way.
pub struct RecurrentPair {
    plans: [RecurrentPlan; 2],
    shared: SharedBuffers,
}

/// What the plan of one layer-direction takes besides the input and output (the arguments of
/// [`RecurrentPlan::new`]); a [`RecurrentPair`] takes two.
#[derive(Clone, Copy)]
pub struct DirectionSpec<'a> {
    /// The direction's sizes, direction and output columns.
    pub shape: RecurrentShape,
    /// Its parameters.
    pub weights: GpuWeights<'a>,
    /// Where its backward writes, and the output gradient it reads; `None`: no backward.
    pub grads: Option<(GpuGrads<'a>, Option<&'a GpuTensor>)>,
    /// Its state tensor (see [`RecurrentPlan::new`]).
    pub state: &'a GpuTensor,
    /// Its recurrent dropout mask, if any.
    pub recurrent_mask: Option<&'a GpuTensor>,
}

impl RecurrentPair {
    /// The two directions of a layer reading `x` and writing their columns of `y`. They
    /// must have the same cell and sizes, the second's columns after the first's, and both
    /// or neither a backward and a recurrent dropout mask.
    pub fn new(
        gpu: &Gpu,
        kernels: RecurrentKernels,
        x: &GpuTensor,
        y: &GpuTensor,
        directions: [DirectionSpec; 2],
    ) -> Result<Self> {
        let [a, b] = directions;
        ensure!(
            a.shape.pairs_with(&b.shape),
            Shape,
            "the directions of a pair need the same cell, sizes and layout, the second's \
             columns after the first's: {:?} and {:?}",
            a.shape,
            b.shape
        );
        ensure!(
            a.grads.is_some() == b.grads.is_some()
                && a.recurrent_mask.is_some() == b.recurrent_mask.is_some(),
            Invalid,
            "the directions of a pair need both or neither a backward and a recurrent mask"
        );
        let precision = kernels
            .precision
            .unwrap_or_else(|| Precision::for_device(gpu));
        let sizes = Workspace::of(&a.shape, a.grads.is_some(), precision);
        let sharing = Sharing::Pair {
            out_offset: a.shape.out_offset,
            dir_out: b.shape.out_offset - a.shape.out_offset,
        };
        let shared = SharedBuffers::new(gpu, sizes, 2, sharing)?;
        let kernels = RecurrentKernels {
            precision: Some(precision),
            ..kernels
        };
        let plan = |d: usize, p| RecurrentPlan::build(gpu, kernels, x, y, p, Some((&shared, d)));
        let plans = [plan(0, a)?, plan(1, b)?];
        Ok(Self { plans, shared })
    }

    /// Whether the shared buffers of a pair of `shape`'s directions (with a backward where
    /// `grads`) stay within what `gpu` binds per buffer. Where they do not, the directions
    /// run one after the other, each in buffers half the size.
    pub fn fits(gpu: &Gpu, kernels: RecurrentKernels, shape: &RecurrentShape, grads: bool) -> bool {
        let precision = kernels
            .precision
            .unwrap_or_else(|| Precision::for_device(gpu));
        SharedBuffers::fit(gpu, Workspace::of(shape, grads, precision), 2, 0)
    }

    /// The two directions' plans, for what they hold (states, shape, kernels); record
    /// through the pair.
    pub fn plans(&self) -> &[RecurrentPlan; 2] {
        &self.plans
    }

    /// Sets the per-sequence lengths of both directions.
    pub fn set_lengths(&self, lengths: Option<&[usize]>) -> Result<()> {
        for p in &self.plans {
            p.set_lengths(lengths)?;
        }
        Ok(())
    }

    /// Copies the callers' states (and recurrent dropout masks) into the pair's buffers.
    fn record_copy_in(&self, rec: &mut Recorder) {
        let [a, b] = &self.plans;
        self.shared.record_copy_in(rec, &[a, b]);
    }

    /// Copies the pair's states back to the callers' state tensors.
    fn record_copy_out(&self, rec: &mut Recorder) {
        let [a, b] = &self.plans;
        self.shared.record_copy_out(rec, &[a, b]);
    }

    /// Records both directions' forward: the states in, each direction's weight copies and
    /// input projection, then its steps side by side, and the states out.
    pub fn record_forward(&self, rec: &mut Recorder) {
        self.record_copy_in(rec);
        for p in &self.plans {
            let t = &p.transpose;
            rec.dispatch(&t.kernel, &t.group, t.grid, p.transpose_cost());
            p.xw_gemm.record(rec);
        }
        let [first, second] = &self.plans;
        first.record_recurrence(rec, &[first, second], false);
        self.record_copy_out(rec);
    }

    /// Records both directions' backward (after their forward): the states in, the steps
    /// side by side, the states out, then each direction's products, direction
    /// `products_first` first (the one whose input gradient overwrites rather than adds).
    pub fn record_backward(&self, rec: &mut Recorder, products_first: usize) -> Result<()> {
        ensure!(
            products_first < 2,
            Invalid,
            "a pair has directions 0 and 1, not {products_first}"
        );
        let gemms = |d: usize| -> Result<&[GemmPlan]> {
            Ok(&self.plans[d]
                .backward
                .as_ref()
                .ok_or_else(|| err!(Invalid, "this recurrent pair was built without gradients"))?
                .gemms)
        };
        let order = [gemms(products_first)?, gemms(1 - products_first)?];
        self.record_copy_in(rec);
        let [first, second] = &self.plans;
        first.record_recurrence(rec, &[first, second], true);
        self.record_copy_out(rec);
        for g in order.into_iter().flatten() {
            g.record(rec);
        }
        Ok(())
    }

    /// Device bytes of the pair's workspace, the callers' state tensors included.
    pub fn workspace_bytes(&self) -> u64 {
        let [a, b] = &self.plans;
        // a's workspace holds the shared gates, saved, weight copies and step map.
        a.workspace_bytes()
            + b.state.device_bytes()
            + b.workspace
                .iter()
                .skip(2)
                .map(|t| t.device_bytes())
                .sum::<u64>()
            + self.shared.state.device_bytes()
            + self.shared.rmask.device_bytes()
    }
}

/// The recurrent weights a plan's products read ([`RecurrentPlan::stored_recurrent_weights`]).
#[derive(Clone, Debug, PartialEq)]
pub struct StoredWeights {
    /// W_hh `[G*H, H]`, from the transposed copy (the forward's).
    pub w_hh: Vec<f32>,
    /// b_hh `[G*H]`, the transposed copy's bias row.
    pub b_hh: Vec<f32>,
    /// W_hh `[G*H, H]`, from the padded copy (the backward's).
    pub w_hh_padded: Vec<f32>,
}

/// transpose_weights, its bind group and grid.
struct Transpose {
    kernel: Kernel,
    group: wgpu::BindGroup,
    grid: [u32; 3],
}

struct Backward {
    step: Kernel,
    gru_n: Option<Kernel>,
    finish: Kernel,
    /// The backward sequence kernel and its batch tile, where the plan takes that path.
    sequence: Option<(Kernel, usize)>,
    gemms: Vec<GemmPlan>,
}

/// The bind group layout the step kernels of `recurrent.wgsl` share (binding numbers as
/// declared there), so one bind group serves them all and every step: 8 storage buffers,
/// WebGPU's default limit. `transpose_weights` reads W_hh and b_hh besides and has its own.
pub(crate) const STEP_LAYOUT: SharedLayout = SharedLayout {
    name: "recurrent",
    bindings: &[
        (0, BindingKind::Uniform),         // config
        (1, BindingKind::PerDispatch),     // step index (dynamic offset or immediates)
        (2, BindingKind::Storage),         // gate values: xw, then dxw and dhw
        (3, BindingKind::ReadOnlyStorage), // wt (transpose_weights writes it as binding 12)
        (4, BindingKind::ReadOnlyStorage), // step map
        (5, BindingKind::Storage),         // y
        (6, BindingKind::Storage),         // saved
        (7, BindingKind::Storage),         // state
        (8, BindingKind::ReadOnlyStorage), // dy
        (9, BindingKind::ReadOnlyStorage), // recurrent dropout mask
    ],
};

impl RecurrentPlan {
    /// A plan for `shape` reading `x` ([rows, I]) and writing this direction's columns of `y`.
    /// With `grads`, backward is planned too, reading `dy` (`y`'s layout; `None` for a loss on
    /// the final state only). `state` holds the initial and final states and their
    /// gradients (`ops::program::StateRegion`). With `recurrent_mask`, the recurrent products see the state
    /// times a [B, H] mask ([`Self::recurrent_mask`]) the caller fills: recurrent dropout.
    /// `kernels` names the kernels where the caller rather than the device chooses them
    /// (`RecurrentKernels::default()`: the device's choice).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        kernels: RecurrentKernels,
        shape: RecurrentShape,
        x: &GpuTensor,
        y: &GpuTensor,
        w: GpuWeights,
        grads: Option<(GpuGrads, Option<&GpuTensor>)>,
        state: &GpuTensor,
        recurrent_mask: Option<&GpuTensor>,
    ) -> Result<Self> {
        let direction = DirectionSpec {
            shape,
            weights: w,
            grads,
            state,
            recurrent_mask,
        };
        Self::build(gpu, kernels, x, y, direction, None)
    }

    /// [`Self::new`], or with `shared`, part `d` of a [`RecurrentPair`] or a [`RecurrentStack`]:
    /// its workspace at `d` strides into the shared buffers, and the kernels' state a copy
    /// the pair or stack moves in and out of `state`. A stack's plans write their outputs
    /// into its shared `y`, not `y`, which the stack copies them to.
    fn build(
        gpu: &Gpu,
        kernels: RecurrentKernels,
        x: &GpuTensor,
        y: &GpuTensor,
        direction: DirectionSpec,
        shared: Option<(&SharedBuffers, usize)>,
    ) -> Result<Self> {
        let DirectionSpec {
            shape,
            weights: w,
            grads,
            state,
            recurrent_mask,
        } = direction;
        shape.validate(None)?;
        let (bsz, h, i, gw, rows) = (
            shape.batch,
            shape.hidden,
            shape.input,
            shape.gate_width(),
            shape.rows(),
        );
        let cell = shape.cell;
        let expect = |what: &str, t: &GpuTensor, n: usize| -> Result<()> {
            ensure!(
                t.len() == n,
                Shape,
                "{what} has {} elements, expected {n} (shape {:?})",
                t.len(),
                t.shape()
            );
            Ok(())
        };
        shape.check_buffers(
            x.len(),
            y.len(),
            w.w_ih.len(),
            w.w_hh.len(),
            w.b_ih.map(|t| t.len()),
            w.b_hh.map(|t| t.len()),
        )?;
        let max_storage = gpu.limits().max_storage_buffers_per_shader_stage;
        let needed = STEP_LAYOUT.storage_buffers();
        if max_storage < needed {
            bail!(
                Unsupported,
                "the recurrent kernels need {needed} storage buffers per stage, adapter {:?} allows {max_storage}",
                gpu.info().name
            );
        }
        let step_kernel = kernels.step.unwrap_or_else(|| StepKernel::for_adapter(gpu));
        let precision = kernels
            .precision
            .unwrap_or_else(|| Precision::for_device(gpu));
        // Words of a row of the saved activations.
        let aw = precision.activation_words(cell) * h;
        let path = RecurrentPath::resolve(
            gpu,
            &shape,
            kernels.path.or_else(|| RecurrentPath::wanted(gpu)),
            step_kernel,
            precision,
        );
        let max_groups = gpu.limits().max_compute_workgroups_per_dimension as usize;
        let grids = [
            Self::step_grid(&shape, step_kernel.entry("backward_finish")),
            Self::step_grid(&shape, step_kernel.entry("forward_step")),
            Self::step_grid(&shape, step_kernel.entry("backward_step")),
        ];
        for groups in grids {
            ensure!(
                groups.iter().all(|&g| g as usize <= max_groups),
                Limit, "hidden size {h} and batch {bsz} need {groups:?} workgroups; adapter allows {max_groups} per dimension"
            );
        }

        // The input projections xw [rows, G*H], overwritten by backward with the gate
        // gradients dxw; GRU's gradients on the recurrent side, dhw, follow them.
        let gru_grads = grads.is_some() && cell == CellKind::Gru;
        let stack = match shared.map(|(p, _)| &p.sharing) {
            Some(Sharing::Stack {
                y,
                layers,
                input_masks,
            }) => Some((y, *layers, *input_masks)),
            _ => None,
        };
        let copies = WeightCopies::of(&shape, precision);
        let sizes = Workspace::with_input(&shape, grads.is_some(), precision, stack.is_some());
        let Workspace {
            gates: gates_len,
            wt_words,
            smap: smap_len,
            saved: saved_len,
            state: state_len,
            rmask: rmask_len,
        } = sizes;
        let off_dhw = if gru_grads { rows * gw } else { 0 };
        // W_hh^T with the bias row, then W_hh, both with gate blocks padded to hp (a multiple
        // of 4) so the kernels read them as vec4: in f32 one 16-byte word per vec4, in f16
        // one per two (the last word padded).
        let hp = h.div_ceil(4) * 4;
        let wt_len = (h + 1) * cell.gates() * hp;
        let transpose_grid =
            super::launch::grid(gpu, copies.copy_words().div_ceil(256), "transpose_weights")?;
        let SavedLayout {
            off_cell, off_act, ..
        } = SavedLayout::of(&shape, grads.is_some(), precision);
        expect("state", state, state_len)?;
        if let Some(m) = recurrent_mask {
            expect("recurrent dropout mask", m, bsz * h)?;
        }
        // This direction's workspace: buffers of its own, or its stride of a pair's or stack's.
        let (gates, wt, smap, saved, kernel_state, rmask, dir) = match shared {
            None => (
                GpuTensor::zeros(gpu, &[gates_len])?,
                GpuTensor::zeros(gpu, &[4 * wt_words])?,
                GpuTensor::<u32>::zeros(gpu, &[smap_len])?,
                GpuTensor::zeros(gpu, &[saved_len])?,
                state.clone(),
                // The recurrent dropout mask, ones until a training step draws one.
                match recurrent_mask {
                    Some(m) => m.clone(),
                    None => GpuTensor::filled(gpu, &[rmask_len], 1.0f32)?,
                },
                None,
            ),
            Some((p, d)) => {
                ensure!(
                    p.sizes == sizes,
                    Invalid,
                    "shared buffers were sized for {:?}, direction {d} needs {sizes:?}",
                    p.sizes
                );
                (
                    p.gates.clone(),
                    p.wt.clone(),
                    p.smap.clone(),
                    p.saved.clone(),
                    p.state.clone(),
                    p.rmask.clone(),
                    Some(d),
                )
            }
        };
        let d = dir.unwrap_or(0);
        let offsets = sizes.times(d);
        let parts = match shared.map(|(p, _)| &p.sharing) {
            None => 1,
            Some(Sharing::Pair { .. }) => 2,
            Some(Sharing::Stack { layers, .. }) => *layers,
        };
        let state = state.clone();
        // Stand-ins for absent optional inputs: each binding gets a buffer of its own, since
        // one buffer may not be bound read-only and writable in one dispatch.
        let zero_bias = GpuTensor::zeros(gpu, &[gw])?;
        let no_dy = GpuTensor::zeros(gpu, &[1])?;
        // Each direction's y columns from the pair's first (out_offset) on, dir_out apart; a
        // stack's layers one after the other in its own y.
        let (out_offset, dir_out) = match shared.map(|(p, _)| &p.sharing) {
            Some(Sharing::Pair {
                out_offset,
                dir_out,
            }) => (*out_offset, *dir_out),
            _ => (shape.out_offset, 0),
        };
        if stack.is_some() {
            ensure!(
                (shape.out_offset, shape.out_stride) == (0, h) && (d == 0 || shape.input == h),
                Shape,
                "a stack's layers write all {h} columns of their output, and those above the \
                 first read {h} inputs: layer {d} has {:?}",
                shape
            );
        }
        let y = match stack {
            Some((shared_y, ..)) => shared_y,
            None => y,
        };
        let stride = |n: usize| if shared.is_some() { n as u32 } else { 0 };

        let region = |r: Region| (r as usize * bsz * h) as u32;
        let has_dy = grads.as_ref().is_some_and(|(_, dy)| dy.is_some());
        let cfg = Config {
            batch: bsz as u32,
            hidden: h as u32,
            steps: shape.steps as u32,
            gate_width: gw as u32,
            act_width: aw as u32,
            out_stride: shape.out_stride as u32,
            out_offset: out_offset as u32,
            batch_first: shape.batch_first as u32,
            off_cell: off_cell as u32,
            off_act: off_act as u32,
            has_dy: has_dy as u32,
            has_bias_hh: w.b_hh.is_some() as u32,
            off_c0: region(Region::C0),
            off_hn: region(Region::Hn),
            off_cn: region(Region::Cn),
            off_dhn: region(Region::Dhn),
            off_dcn: region(Region::Dcn),
            off_dh: region(Region::Dh),
            off_dc: region(Region::Dc),
            off_dh0: region(Region::Dh0),
            hp: hp as u32,
            off_wp: (wt_len / 4) as u32,
            off_dhw: off_dhw as u32,
            dir_first: d as u32,
            dir_gates: stride(gates_len),
            dir_wt: stride(wt_words),
            dir_smap: stride(smap_len),
            dir_saved: stride(saved_len),
            dir_state: stride(state_len),
            dir_rmask: stride(rmask_len),
            dir_out: stride(dir_out),
            dir_y: if stack.is_some() {
                (rows * h) as u32
            } else {
                0
            },
            wave: stack.map_or(0, |(_, layers, _)| layers as u32),
            off_wi: if stack.is_some() {
                copies.input_word() as u32
            } else {
                0
            },
            wt_write: 0,
            wt_copy: copies.copy_words() as u32,
            off_imask: match stack {
                Some((_, _, true)) => (bsz * h) as u32,
                _ => 0,
            },
            wt_f32: 0,
            saves: grads.is_some() as u32,
            _pad: [0; 1],
        };
        let cfg_buffer = gpu.uniform(&cfg);
        // A stack's layers above the first take their input projection in the step, from
        // copies of W_ih and b_ih that a second transposition writes after W_hh's.
        let input_cfg = (stack.is_some() && d > 0).then(|| {
            gpu.uniform(&Config {
                wt_write: copies.input_word() as u32,
                wt_copy: copies.input_words() as u32,
                wt_f32: 1,
                has_bias_hh: w.b_ih.is_some() as u32,
                ..cfg
            })
        });
        let input_grid =
            super::launch::grid(gpu, copies.input_words().div_ceil(256), "transpose_weights")?;
        let step_index = match kernels.step_index {
            Some(StepIndex::Immediate) if !StepIndex::immediates_possible(gpu) => bail!(
                Unsupported,
                "adapter {:?} cannot take the step index as immediates (IMMEDIATES: {}, \
                 max_immediate_size {} of the {} bytes needed{})",
                gpu.info().name,
                gpu.capabilities().immediates,
                gpu.limits().max_immediate_size,
                super::shaders::PER_DISPATCH_BYTES,
                if gpu.is_tracing() {
                    ", and the device is tracing"
                } else {
                    ""
                }
            ),
            Some(chosen) => chosen,
            None => StepIndex::for_device(gpu),
        };
        // StepIndex::Offset: one 16-byte step index per uniform-offset slot.
        let step_stride = gpu.limits().min_uniform_buffer_offset_alignment.max(16);
        // A stack's waves run to steps + layers - 1.
        let slots = shape.steps + stack.map_or(0, |(_, layers, _)| layers - 1);
        let step_buffer = (step_index == StepIndex::Offset).then(|| {
            let stride = step_stride as usize;
            let mut bytes = vec![0u8; slots * stride];
            for s in 0..slots {
                bytes[s * stride..][..4].copy_from_slice(&(s as u32).to_le_bytes());
            }
            wgpu::util::DeviceExt::create_buffer_init(
                gpu.device(),
                &wgpu::util::BufferInitDescriptor {
                    label: Some("recur.recurrent.steps"),
                    contents: &bytes,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_SRC,
                },
            )
        });
        let immediates = step_index == StepIndex::Immediate;

        let has_rmask = recurrent_mask.is_some() as u32 as f64;
        let key = |entry: &'static str| {
            KernelKey::new("recurrent", entry)
                .with("CELL", cell.code() as f64)
                .with("RECURRENT_DROPOUT", has_rmask)
                .with("F16_STORAGE", precision.code())
                .with_immediates(immediates)
        };
        let step_key = |entry: &'static str| key(step_kernel.entry(entry));
        let forward_step = gpu.kernel(&step_key("forward_step"))?;
        let forward_sequence = match path {
            RecurrentPath::Step => None,
            RecurrentPath::Sequence => {
                let tile = RecurrentPath::sequence_tile(gpu, &shape)
                    .expect("the sequence path is chosen only where a tile fits");
                let key = key("forward_sequence").with("TILE", tile as f64);
                Some((gpu.kernel(&key)?, tile))
            }
        };
        let forward_gru_n = match cell {
            CellKind::GruResetBefore => Some(gpu.kernel(&step_key("forward_gru_n"))?),
            _ => None,
        };
        let transpose_kernel = gpu.kernel(
            &KernelKey::new("recurrent", "transpose_weights")
                .with("CELL", cell.code() as f64)
                .with("F16_STORAGE", precision.code()),
        )?;
        let dy_buffer = grads.as_ref().and_then(|(_, dy)| *dy);
        if let Some(dy) = dy_buffer {
            expect("output gradient", dy, rows * shape.out_stride)?;
        }
        fn whole(t: &GpuTensor) -> wgpu::BindingResource<'_> {
            t.buffer().as_entire_binding()
        }
        let mut step_entries = vec![
            (0, cfg_buffer.as_entire_binding()),
            (2, whole(&gates)),
            (3, whole(&wt)),
            (4, smap.buffer().as_entire_binding()),
            (5, whole(y)),
            (6, whole(&saved)),
            (7, whole(&kernel_state)),
            (8, whole(dy_buffer.unwrap_or(&no_dy))),
            (9, whole(&rmask)),
        ];
        if let Some(buffer) = &step_buffer {
            let range = wgpu::BufferBinding {
                buffer,
                offset: 0,
                size: std::num::NonZeroU64::new(super::shaders::PER_DISPATCH_BYTES as u64),
            };
            step_entries.push((1, wgpu::BindingResource::Buffer(range)));
        }
        let step_group = gpu.bind_resources(&forward_step, &step_entries);
        let transpose_group = gpu.bind_resources(
            &transpose_kernel,
            &[
                (0, cfg_buffer.as_entire_binding()),
                (12, whole(&wt)),
                (10, whole(w.w_hh)),
                (11, whole(w.b_hh.unwrap_or(&zero_bias))),
            ],
        );
        let input_transpose = input_cfg.as_ref().map(|c| Transpose {
            group: gpu.bind_resources(
                &transpose_kernel,
                &[
                    (0, c.as_entire_binding()),
                    (12, whole(&wt)),
                    (10, whole(w.w_ih)),
                    (11, whole(w.b_ih.unwrap_or(&zero_bias))),
                ],
            ),
            kernel: transpose_kernel.clone(),
            grid: input_grid,
        });
        let transpose = Transpose {
            kernel: transpose_kernel,
            group: transpose_group,
            grid: transpose_grid,
        };

        let xw_gemm = GemmPlan::new(
            gpu,
            &Gemm::new(rows, gw, i)
                .trans_b(true)
                .offsets(0, 0, offsets.gates),
            x,
            w.w_ih,
            w.b_ih,
            &gates,
        )?
        .named("x W_ih^T + b_ih");

        let backward = match grads {
            None => None,
            Some((g, _)) => {
                expect("input gradient", g.dx, rows * i)?;
                expect("weight_ih gradient", g.dw_ih, gw * i)?;
                expect("weight_hh gradient", g.dw_hh, gw * h)?;
                expect("bias_ih gradient", g.db_ih, gw)?;
                expect("bias_hh gradient", g.db_hh, gw)?;
                // dxw is `gates` from 0; dhw starts at off_dhw, which is 0 (dhw is dxw) but
                // for GRU.
                let dxw = &gates;
                let hprev = &saved; // hprev is the first region of `saved`
                let mut gemms = vec![GemmPlan::new(
                    gpu,
                    &Gemm::new(rows, i, gw)
                        .beta(if g.accumulate_dx { 1.0 } else { 0.0 })
                        .offsets(offsets.gates, 0, 0),
                    dxw,
                    w.w_ih,
                    None,
                    g.dx,
                )?
                .named("dx")];
                // The weight and bias gradients in one product: dW_ih = dxw^T x with db_ih,
                // dxw's column sums; and where the recurrent side's gate gradients are dxw
                // (LSTM, RNN) dW_hh = dxw^T hprev in the same product, db_hh = db_ih. GRU's
                // recurrent gate gradients dhw differ: dW_hh = dhw^T hprev and db_hh, dhw's
                // column sums, come from the same product with dhw as its A2. GRU
                // reset-before's n rows of dW_hh pair with r * h (in `saved`'s activations),
                // not h: its product's B3 (db_hh = db_ih there).
                let weight_grads = match cell {
                    // dhw follows dxw in `gates`: the product's A2.
                    CellKind::Gru => WeightGrads::new(rows, gw, i, h).a2_at(off_dhw),
                    CellKind::GruResetBefore => {
                        let rh = precision.activation_column(cell, 3);
                        WeightGrads::new(rows, gw, i, h).b3_from(2 * h, aw, off_act + rh * h)
                    }
                    _ => WeightGrads::new(rows, gw, i, h),
                };
                let role = match cell {
                    CellKind::Gru => "dW_ih, db_ih; dW_hh, db_hh",
                    _ => "dW_ih, dW_hh, db_ih = db_hh",
                };
                // A (dxw), B2 (hprev) and B3 at this direction's offsets.
                let mut spec = weight_grads;
                spec.offset_a += offsets.gates;
                spec.offset_a2 = spec.offset_a2.map(|a2| a2 + offsets.gates);
                spec.offset_b2 += offsets.saved;
                if let Some(b3) = &mut spec.b3 {
                    b3.offset += offsets.saved;
                }
                let t = WeightGradTensors {
                    a: dxw,
                    b1: x,
                    b2: Some(hprev),
                    out1: g.dw_ih,
                    out2: Some(g.dw_hh),
                    sums: g.db_ih,
                    sums2: Some(g.db_hh),
                };
                gemms.push(GemmPlan::weight_grads(gpu, &spec, t, None)?.named(role));
                Some(Backward {
                    step: gpu.kernel(&step_key("backward_step"))?,
                    gru_n: match cell {
                        CellKind::GruResetBefore => Some(gpu.kernel(&step_key("backward_gru_n"))?),
                        _ => None,
                    },
                    finish: gpu.kernel(&step_key("backward_finish"))?,
                    sequence: forward_sequence
                        .as_ref()
                        .and_then(|_| RecurrentPath::backward_sequence_tile(gpu, &shape))
                        .filter(|&tile| {
                            let iterations =
                                RecurrentPath::backward_sequence_iterations(&shape, tile);
                            RecurrentPath::loops_fit(gpu, iterations)
                        })
                        .map(|tile| {
                            let key = key("backward_sequence").with("TILE", tile as f64);
                            Ok::<_, crate::Error>((gpu.kernel(&key)?, tile))
                        })
                        .transpose()?,
                    gemms,
                })
            }
        };
        let buffers = vec![gates, saved.clone(), zero_bias, no_dy];
        let plan = Self {
            gpu: gpu.clone(),
            shape,
            smap,
            state,
            source_mask: shared.and(recurrent_mask.cloned()),
            rmask,
            has_rmask: recurrent_mask.is_some(),
            offsets,
            parts,
            carry_scratch: GpuTensor::zeros(gpu, &[2, bsz, h])?,
            xw_gemm,
            transpose,
            input_transpose,
            precision,
            wt,
            forward_step,
            forward_gru_n,
            forward_sequence,
            backward,
            step_group,
            step_index,
            step_stride,
            workspace: buffers,
            saved,
            cfg,
            step_buffer: step_buffer.clone(),
            _uniforms: [Some(cfg_buffer), step_buffer, input_cfg]
                .into_iter()
                .flatten()
                .collect(),
        };
        plan.set_lengths(None)?;
        Ok(plan)
    }

    /// The shape the plan was built for.
    pub fn shape(&self) -> &RecurrentShape {
        &self.shape
    }

    /// The step kernels this plan records ([`StepKernel`]).
    pub fn step_kernel(&self) -> StepKernel {
        match self.forward_step.key.entry {
            "forward_step" => StepKernel::Entry,
            _ => StepKernel::Tiled,
        }
    }

    /// How this plan stores its recurrent weights.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The path this plan's forward takes.
    pub fn path(&self) -> RecurrentPath {
        match self.forward_sequence {
            Some(_) => RecurrentPath::Sequence,
            None => RecurrentPath::Step,
        }
    }

    /// Sets the per-sequence lengths (all T when `None`) for the next recorded work.
    pub fn set_lengths(&self, lengths: Option<&[usize]>) -> Result<()> {
        let lengths = self.shape.validate(lengths)?;
        self.smap
            .write_range(self.offsets.smap, &self.shape.step_map(&lengths))
    }

    fn region(&self, r: Region) -> usize {
        r as usize * self.shape.batch * self.shape.hidden
    }

    fn write_region(&self, r: Region, what: &str, data: Option<&[f32]>) -> Result<()> {
        let n = self.shape.batch * self.shape.hidden;
        match data {
            Some(d) => {
                ensure!(
                    d.len() == n,
                    Shape,
                    "{what} has {} elements, expected batch x hidden = {n}",
                    d.len()
                );
                self.state.write_range(self.region(r), d)
            }
            None => self.state.write_range(self.region(r), &vec![0.0; n]),
        }
    }

    /// Sets the initial state (zero when `None`).
    pub fn set_initial_state(&self, h0: Option<&[f32]>, c0: Option<&[f32]>) -> Result<()> {
        self.write_region(Region::H0, "h0", h0)?;
        self.write_region(Region::C0, "c0", c0)
    }

    /// Sets the gradients of the final states (zero when `None`) for the next backward.
    pub fn set_final_state_grads(&self, dh_n: Option<&[f32]>, dc_n: Option<&[f32]>) -> Result<()> {
        self.write_region(Region::Dhn, "h_n gradient", dh_n)?;
        self.write_region(Region::Dcn, "c_n gradient", dc_n)
    }

    /// The grid of step kernel `entry`: blocks of units across, batch entries (or tiles of
    /// them) down.
    fn step_grid(shape: &RecurrentShape, entry: &str) -> [u32; 3] {
        let (units, tile) = Self::step_block(entry);
        [
            shape.hidden.div_ceil(units) as u32,
            shape.batch.div_ceil(tile) as u32,
            1,
        ]
    }

    /// Units and batch entries a workgroup of step kernel `entry` covers.
    fn step_block(entry: &str) -> (usize, usize) {
        match entry {
            "forward_step_tiled" | "forward_gru_n_tiled" => TILED_FORWARD,
            "backward_step_tiled" | "backward_gru_n_tiled" | "backward_finish_tiled" => {
                TILED_BACKWARD
            }
            _ => (WG_UNITS, WG_BATCH),
        }
    }

    /// How this plan passes the step index to its kernels.
    pub fn step_index(&self) -> StepIndex {
        self.step_index
    }

    /// The per-dispatch value that gives a step kernel step `s`.
    fn step_value(&self, s: usize) -> PerDispatch {
        match self.step_index {
            StepIndex::Immediate => PerDispatch::Immediate([s as u32, 0, 0, 0]),
            StepIndex::Offset => PerDispatch::Offset(s as u32 * self.step_stride),
        }
    }

    /// Records the forward pass.
    pub fn record_forward(&self, rec: &mut Recorder) {
        let t = &self.transpose;
        rec.dispatch(&t.kernel, &t.group, t.grid, self.transpose_cost());
        self.xw_gemm.record(rec);
        self.record_recurrence(rec, &[self], false);
    }

    /// Records the recurrence of a forward (`backward` false: the steps or the sequence
    /// kernel) or of a backward (the steps and dh0, or the sequence kernel), for `directions`
    /// side by side: workgroups at z = d run `directions[d]`, through this plan's bind group
    /// (in a pair, `self` is direction 0 and the buffers hold both). Each dispatch costs what
    /// the directions' dispatches would.
    fn record_recurrence(&self, rec: &mut Recorder, directions: &[&RecurrentPlan], backward: bool) {
        let z = directions.len() as u32;
        let summed = |cost: &dyn Fn(&RecurrentPlan) -> Cost| {
            directions.iter().fold(Cost::ZERO, |c, p| c + cost(p))
        };
        let mut dispatch = |kernel: &Kernel, [x, y]: [u32; 2], s: usize, cost: Cost| {
            let grid = [x, y, z];
            rec.dispatch_with("", kernel, &self.step_group, self.step_value(s), grid, cost);
        };
        let tiles = |tile: usize| [self.shape.batch.div_ceil(tile) as u32, 1];
        let mut step = |kernel: &Kernel, s: usize| {
            let [x, y, _] = Self::step_grid(&self.shape, kernel.key.entry);
            dispatch(kernel, [x, y], s, summed(&|p| p.step_cost(kernel, s)));
        };
        match (backward, &self.backward) {
            (false, _) => {
                if let Some((kernel, tile)) = &self.forward_sequence {
                    let cost = summed(&|p| p.sequence_cost(*tile));
                    return dispatch(kernel, tiles(*tile), 0, cost);
                }
                for s in 0..self.shape.steps {
                    step(&self.forward_step, s);
                    if let Some(n) = &self.forward_gru_n {
                        step(n, s);
                    }
                }
            }
            (true, Some(b)) => {
                if let Some((kernel, tile)) = &b.sequence {
                    let cost = summed(&|p| p.backward_sequence_cost(*tile));
                    return dispatch(kernel, tiles(*tile), 0, cost);
                }
                for s in (0..self.shape.steps).rev() {
                    step(&b.step, s);
                    if let Some(n) = &b.gru_n {
                        step(n, s);
                    }
                }
                step(&b.finish, 0);
            }
            (true, None) => {}
        }
    }

    /// Records the backward pass (after a forward in the same or an earlier submit).
    pub fn record_backward(&self, rec: &mut Recorder) -> Result<()> {
        let b = self
            .backward
            .as_ref()
            .ok_or_else(|| err!(Invalid, "this recurrent plan was built without gradients"))?;
        self.record_recurrence(rec, &[self], true);
        for g in &b.gemms {
            g.record(rec);
        }
        Ok(())
    }

    /// Records copying the final states into the initial states, so the next forward
    /// continues where this one stopped (stateful training, truncated BPTT). The gradient
    /// does not flow across: the next backward treats them as constants.
    pub fn record_carry_state(&self, rec: &mut Recorder) {
        let n = (self.shape.batch * self.shape.hidden * 4) as u64;
        let at = |r: Region| (self.region(r) * 4) as u64;
        let buf = self.state.buffer();
        let scratch = self.carry_scratch.buffer();
        // A buffer cannot be copied onto itself in one copy: go through a scratch buffer.
        rec.copy(buf, at(Region::Hn), scratch, 0, n);
        rec.copy(buf, at(Region::Cn), scratch, n, n);
        rec.copy(scratch, 0, buf, at(Region::H0), n);
        rec.copy(scratch, n, buf, at(Region::C0), n);
    }

    /// The recurrent dropout mask [B, H] the kernels read (values 0 or 1/keep; ones when
    /// not training), if the plan was built with one.
    pub fn recurrent_mask(&self) -> Option<&GpuTensor> {
        match &self.source_mask {
            Some(m) => Some(m),
            None => self.has_rmask.then_some(&self.rmask),
        }
    }

    fn read_region(&self, r: Region) -> Result<Vec<f32>> {
        self.state
            .read_range(self.region(r), self.shape.batch * self.shape.hidden)
    }

    /// The recurrent weights as the last forward's products read them, decoded from the
    /// plan's copies (a readback, for tests and debugging): W_hh `[G*H, H]` and b_hh `[G*H]`
    /// from the transposed copy the forward reads, and W_hh from the padded copy the
    /// backward reads. With [`Precision::F16Storage`] each is the parameter passed through
    /// [`crate::cpu::precision::f16_storage_value`]; b_hh is zeros where the layer has none.
    pub fn stored_recurrent_weights(&self) -> Result<StoredWeights> {
        let (h, gw, g) = (
            self.shape.hidden,
            self.shape.gate_width(),
            self.shape.cell.gates(),
        );
        let hp = h.div_ceil(4) * 4;
        let words = self
            .wt
            .read_range(4 * self.offsets.wt_words, self.wt.len() / self.parts)?;
        let element = |e: usize| -> f32 {
            match self.precision {
                Precision::F32 => words[e],
                Precision::F16Storage => {
                    let word = words[e / 2].to_bits();
                    let bits = (word >> (16 * (e % 2))) as u16;
                    half::f16::from_bits(bits).to_f32()
                }
            }
        };
        let wp = (h + 1) * g * hp;
        let transposed = |r: usize, j: usize| element(j * g * hp + (r / h) * hp + r % h);
        Ok(StoredWeights {
            w_hh: (0..gw * h).map(|e| transposed(e / h, e % h)).collect(),
            b_hh: (0..gw).map(|r| transposed(r, h)).collect(),
            w_hh_padded: (0..gw * h)
                .map(|e| element(wp + (e / h) * hp + e % h))
                .collect(),
        })
    }

    /// The gate activations the last forward saved for backward, as the backward reads them
    /// (a readback, for tests and debugging): `[rows, A*H]` in the layout of
    /// [`crate::cpu::recurrent::Saved::act`], A = [`CellKind::act_width`]. With
    /// [`Precision::F16Storage`], those kept in f16 ([`Precision::f16_activations`]) are
    /// decoded from their pairs, each the f32 activation rounded by
    /// [`crate::cpu::precision::f16_storage_bits`]. Empty for RNN, which saves none. Rows
    /// past a sequence's length hold whatever the buffer held. An error for a plan without a
    /// backward, which keeps none.
    pub fn saved_activations(&self) -> Result<Vec<f32>> {
        let (h, rows, cell) = (self.shape.hidden, self.shape.rows(), self.shape.cell);
        ensure!(
            self.backward.is_some(),
            Invalid,
            "this {} plan has no backward, so its forward saves no activations",
            cell.name()
        );
        let words = self.precision.activation_words(cell);
        if words == 0 {
            return Ok(Vec::new());
        }
        let off_act = self.offsets.saved + self.cfg.off_act as usize;
        let stored = self.saved.read_range(off_act, rows * words * h)?;
        let (values, p) = (cell.act_width(), self.precision);
        Ok((0..rows * values * h)
            .map(|e| {
                let (row, a, k) = (e / (values * h), e / h % values, e % h);
                let word = stored[row * words * h + p.activation_column(cell, a) * h + k];
                if !p.is_f16_activation(cell, a) {
                    return word;
                }
                let bits = (word.to_bits() >> (16 * p.activation_half(cell, a))) as u16;
                half::f16::from_bits(bits).to_f32()
            })
            .collect())
    }

    /// The final hidden state [B, H] of the last forward (a readback).
    pub fn h_n(&self) -> Result<Vec<f32>> {
        self.read_region(Region::Hn)
    }

    /// The final cell state [B, H] (LSTM) of the last forward (a readback).
    pub fn c_n(&self) -> Result<Vec<f32>> {
        self.read_region(Region::Cn)
    }

    /// The initial state [B, H] the next forward reads (a readback): after
    /// [`Self::record_carry_state`], the state carried from the last forward.
    pub fn h0(&self) -> Result<Vec<f32>> {
        self.read_region(Region::H0)
    }

    /// The initial cell state [B, H] (LSTM) the next forward reads (a readback).
    pub fn c0(&self) -> Result<Vec<f32>> {
        self.read_region(Region::C0)
    }

    /// The gradient of h0 from the last backward (a readback).
    pub fn dh0(&self) -> Result<Vec<f32>> {
        self.read_region(Region::Dh0)
    }

    /// The gradient of c0 from the last backward (a readback).
    pub fn dc0(&self) -> Result<Vec<f32>> {
        self.read_region(Region::Dc)
    }

    /// Bytes of device memory the plan holds beyond the caller's tensors.
    pub fn workspace_bytes(&self) -> u64 {
        self.workspace.iter().map(|t| t.device_bytes()).sum::<u64>()
            + self.wt.device_bytes()
            + self.smap.device_bytes()
            + self.state.device_bytes()
    }

    /// The device the plan runs on.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }
}

/// Costs of the recurrent kernels, from the shape and what `shaders/recurrent.wgsl` reads and
/// writes (4 bytes an element, 2 for a weight of `wt` in f16 storage; all sequences full
/// length). Byte counts below are for f32 weights.
impl RecurrentPlan {
    /// Bytes of one element of `wt` as stored (see [`Precision`]).
    fn weight_bytes(&self) -> f64 {
        self.precision.weight_bytes() as f64
    }

    /// transpose_weights, per element of W_hh: one read, two writes (W_hh^T and the padded
    /// W_hh); per element of b_hh: one read, one write.
    fn transpose_cost(&self) -> Cost {
        self.transpose_cost_at(self.weight_bytes())
    }

    /// The same for a stack's copies of W_ih (I = H), which are f32.
    fn input_transpose_cost(&self) -> Cost {
        self.transpose_cost_at(4.0)
    }

    fn transpose_cost_at(&self, bytes: f64) -> Cost {
        let (gw, h) = (self.shape.gate_width() as f64, self.shape.hidden as f64);
        Cost::new(0.0, 4.0 * gw * (h + 1.0), bytes * gw * (2.0 * h + 1.0))
    }

    /// One dispatch of step kernel `kernel` at step `s`. Each invocation owns 4 units of one
    /// batch entry (B * ceil(H / 4) invocations do work). Its product reads, per row of the
    /// product, the source element (4 bytes, the same address across the workgroup) and one
    /// vec4 of weights per gate (16 bytes), 8 operations per vec4; the recurrent dropout
    /// mask adds 4 bytes a row where there is one. Then each unit reads and writes:
    ///
    /// | kernel | cell | read | written |
    /// |---|---|---|---|
    /// | forward_step | LSTM | step map 4, h_prev 8, 4 gates of xw 16, c_prev 8 | h_prev 4, c 4, 4 gates 16, y 4 |
    /// | | GRU | step map 4, h_prev 8, xw 12 | h_prev 4, 4 activations 16, y 4 |
    /// | | RNN | step map 4, h_prev 8, xw 4 | h_prev 4, y 4 |
    /// | | GRU reset-before | step map 4, h_prev 8, xw 8 | h_prev 4, r, z, r * h 12 |
    /// | forward_gru_n | | step map 4, xw 4, z 4, h_prev 8 | n 4, y 4 |
    /// | backward_step | LSTM | dh, dc 8, step map 4, dy 4, gates 16, c 4, c_prev 8 | 4 gate gradients 16, dc 4, dh 4 |
    /// | | GRU | dh, dc 8, step map 4, dy 4, activations 16, h_prev 8 | 3 + 3 gate gradients 24, dh 4 |
    /// | | RNN | dh, dc 8, step map 4, dy 4, y 4 | gate gradient 4, dh 4 |
    /// | | GRU reset-before | dh, dc 8, step map 4, dy 4, z, n 8, h_prev 8 | 2 gate gradients 8, dh 4 |
    /// | backward_gru_n | | step map 4, r 4, h_prev 4, dh 4 | r's gradient 4, dh 4 |
    /// | backward_finish | | dh 4 | dh0 4 |
    ///
    /// (dy is counted as read whether or not the plan has one; a mask adds 4 bytes read;
    /// f16 storage stores LSTM's and GRU's four activations in two words, and GRU
    /// reset-before's r and n in one, which forward_gru_n reads back to add n; a plan
    /// without a backward writes no h_prev, no activations but GRU reset-before's z and
    /// r * h, and no n.)
    fn step_cost(&self, kernel: &Kernel, s: usize) -> Cost {
        let sh = &self.shape;
        let (h, b) = (sh.hidden, sh.batch);
        let invocations = b * h.div_ceil(4);
        let units = b * h;
        let mask = if self.has_rmask { 4.0 } else { 0.0 };
        let gates = sh.cell.gates();
        let direct_rows = direct_rows(sh);
        // A product over `rows` rows reading `gate_vec4s` weight vec4s per row (each
        // invocation), after `fixed` bytes read once per invocation. Distinct: each weight
        // vec4 and each source element once (the workgroups of the B batch entries share
        // the weights, each entry has its own source row).
        let hp = h.div_ceil(4) * 4;
        let wb = self.weight_bytes();
        let product = |rows: usize, gate_vec4s: usize, fixed: f64| {
            let issued = Cost::per_item(
                invocations * rows,
                8.0 * gate_vec4s as f64,
                4.0 + mask + 4.0 * wb * gate_vec4s as f64,
                0.0,
            ) + Cost::per_item(invocations, 0.0, fixed, 0.0);
            let unique = wb * (rows * gate_vec4s * hp) as f64
                + (b * rows) as f64 * (4.0 + mask)
                + fixed * h.div_ceil(4) as f64;
            issued.with_unique_read(unique)
        };
        let unit = |entry: &str| self.unit_cost(entry, units);
        match kernel.key.entry {
            "forward_step" => {
                let count = match sh.cell {
                    CellKind::GruResetBefore => 2,
                    _ => gates,
                };
                product(h, count, 4.0 * wb * count as f64) + unit("forward_step")
            }
            "forward_gru_n" => product(h, 1, 4.0 * wb + 4.0) + unit("forward_gru_n"),
            "backward_step" => {
                // The last step has no next step's gradients to carry back.
                let carried = if s + 1 < sh.steps {
                    product(direct_rows, 1, 4.0)
                } else {
                    Cost::ZERO
                };
                carried + unit("backward_step")
            }
            "backward_gru_n" => product(h, 1, 4.0) + unit("backward_gru_n"),
            "backward_finish" => product(direct_rows, 1, 4.0) + unit("backward_finish"),
            tiled => {
                // Outputs per unit, K (padded) and K's valid elements, source bytes.
                let direct = (1, direct_rows / h * hp, direct_rows, 4.0);
                let (product, cell) = match tiled {
                    "forward_step_tiled" => {
                        let count = match sh.cell {
                            CellKind::GruResetBefore => 2,
                            _ => gates,
                        };
                        (Some((count, hp, h, 4.0 + mask)), "forward_step")
                    }
                    "forward_gru_n_tiled" => (Some((1, hp, h, 4.0)), "forward_gru_n"),
                    // The last step has no next step's gradients to carry back.
                    "backward_step_tiled" => {
                        ((s + 1 < sh.steps).then_some(direct), "backward_step")
                    }
                    "backward_finish_tiled" => (Some(direct), "backward_finish"),
                    "backward_gru_n_tiled" => (Some((1, hp, h, 4.0)), "backward_gru_n"),
                    _ => return Cost::ZERO,
                };
                let product = product.map_or(Cost::ZERO, |(outs, depth, valid, bytes)| {
                    self.tiled_product_cost(tiled, outs, depth, valid, bytes)
                });
                product + unit(cell)
            }
        }
    }

    /// The product of a tiled step kernel (`tiled_product` in recurrent.wgsl): `outs` outputs
    /// per unit over K = `depth` (a multiple of 4; `valid` of them not padding), a source
    /// element costing `source_bytes` (the mask with it in forward); see [`tiled_cost`].
    fn tiled_product_cost(
        &self,
        entry: &str,
        outs: usize,
        depth: usize,
        valid: usize,
        source_bytes: f64,
    ) -> Cost {
        let sh = &self.shape;
        tiled_cost(TiledProduct {
            block: Self::step_block(entry),
            units: sh.hidden,
            batch: sh.batch,
            outs,
            depth,
            valid,
            source_bytes,
            weight_bytes: self.weight_bytes(),
            bias: entry.starts_with("forward"),
        })
    }

    /// What a step kernel of a layer-wavefront schedule would add to each of its steps to
    /// compute the layer's input side in the step rather than in one product for all steps,
    /// for the cost table's what-if schedules (`recur bench rnn --plan`; no kernel runs this).
    /// Forward: the gates' input projection of one step, `x_t W_ih^T + b_ih` (all G gates
    /// over K = I), blocked as `forward_step_tiled` blocks its recurrent product. Backward:
    /// the input gradient of one step, `dxw_t W_ih` (I outputs over K = G x H), blocked as
    /// `backward_step_tiled`, added into the layer below's output gradient. W_ih is f32.
    /// With an input dropout mask (a stack's `off_imask`), forward reads it with each source
    /// element and backward once per element written.
    pub fn in_step_input_cost(&self, backward: bool) -> Cost {
        let sh = &self.shape;
        let (i, b, gw) = (sh.input, sh.batch, sh.gate_width());
        let mask = if self.cfg.off_imask != 0 { 4.0 } else { 0.0 };
        if backward {
            let depth = gw.div_ceil(4) * 4;
            let written = 4.0 * (b * i) as f64;
            let mask_read = mask * (b * i) as f64;
            tiled_cost(TiledProduct {
                block: TILED_BACKWARD,
                units: i,
                batch: b,
                outs: 1,
                depth,
                valid: gw,
                source_bytes: 4.0,
                weight_bytes: 4.0,
                bias: false,
            }) + Cost::new(0.0, written + mask_read, written)
        } else {
            tiled_cost(TiledProduct {
                block: TILED_FORWARD,
                units: sh.hidden,
                batch: b,
                outs: sh.cell.gates(),
                depth: i.div_ceil(4) * 4,
                valid: i,
                source_bytes: 4.0 + mask,
                weight_bytes: 4.0,
                bias: true,
            })
        }
    }

    /// The per-unit work of `entry` (the table above) for `units` units: the cell code
    /// after the product.
    fn unit_cost(&self, entry: &str, units: usize) -> Cost {
        let mask = if self.has_rmask { 4.0 } else { 0.0 };
        let cell = self.shape.cell;
        let (flops, read, written) = match (entry, cell) {
            ("forward_step", CellKind::Lstm) => (20.0, 36.0, 28.0),
            ("forward_step", CellKind::Gru) => (15.0, 24.0, 24.0),
            ("forward_step", CellKind::GruResetBefore) => (10.0, 20.0, 16.0),
            ("forward_step", _) => (3.0, 16.0, 8.0),
            ("forward_gru_n", _) => (6.0, 20.0, 8.0),
            ("backward_step", CellKind::Lstm) => (25.0, 44.0, 24.0),
            ("backward_step", CellKind::Gru) => (20.0, 40.0, 28.0),
            ("backward_step", CellKind::GruResetBefore) => (12.0, 32.0, 12.0),
            ("backward_step", _) => (4.0, 20.0, 8.0),
            ("backward_gru_n", _) => (5.0, 16.0, 8.0),
            ("backward_finish", _) => (2.0, 4.0, 4.0),
            _ => (0.0, 0.0, 0.0),
        };
        // f16 storage writes two activations in 4 bytes, not 8 (LSTM's and GRU's four), and
        // the backward reads them so. GRU reset-before's r and n share a word: the step's
        // first half writes it with r, the second reads it back to add n.
        let f16 = self.precision.f16_activations(cell) as f64;
        let (pairs, shared_word) = match cell {
            CellKind::GruResetBefore => (0.0, if f16 > 0.0 { 4.0 } else { 0.0 }),
            _ => (f16 / 2.0, 0.0),
        };
        // Without a backward the forward writes no h_prev, and of the activations only GRU
        // reset-before's z and r * h, which its second half reads (SavedLayout).
        let backward_only = match cell {
            CellKind::Lstm | CellKind::Gru => 16.0,
            CellKind::GruResetBefore => 4.0,
            _ => 0.0,
        };
        let (read, written) = match entry {
            "forward_step" if self.cfg.saves == 0 => (read, written - 4.0 - backward_only),
            "forward_step" => (read, written - 4.0 * pairs),
            "forward_gru_n" if self.cfg.saves == 0 => (read, written - 4.0),
            "forward_gru_n" => (read + shared_word, written),
            "backward_step" => (read - 4.0 * pairs, written),
            _ => (read, written),
        };
        Cost::per_item(units, flops, read + mask, written)
    }

    /// forward_sequence with a batch tile of `tile` entries: ceil(B / tile) workgroups of 64
    /// invocations, each running all T steps of its tile. Bytes per invocation and step: for
    /// each quad of units it owns, (H + 1) x G vec4s of `wt` (16 bytes each; the bias row
    /// included; GRU reset-before: 2 gates, then the n gate), each applied to all `tile`
    /// entries (8 operations per vec4 and entry); then per unit and entry what forward_step's
    /// cell code reads and writes (and forward_gru_n's), as in the table above. The tile's
    /// state moves through workgroup memory and is not counted; h0 (and the mask) are read
    /// once. So each element of W_hh is read ceil(B / tile) times a step across the dispatch
    /// (once per workgroup), every read serving `tile` batch entries; the step kernels read it
    /// B times a step, each read serving one.
    fn sequence_cost(&self, tile: usize) -> Cost {
        let sh = &self.shape;
        let (h, b, t) = (sh.hidden, sh.batch, sh.steps);
        let hp = h.div_ceil(4) * 4;
        let mask = if self.has_rmask { 4.0 } else { 0.0 };
        let gate_blocks = sh.cell.gates();
        let w_bytes = self.weight_bytes() * ((h + 1) * gate_blocks * hp) as f64;
        let groups = b.div_ceil(tile);
        let weights = Cost::new(
            2.0 * (groups * tile * t * gate_blocks * h * hp) as f64,
            (groups * t) as f64 * w_bytes,
            0.0,
        )
        .with_unique_read(w_bytes);
        let mut cells = self.unit_cost("forward_step", b * h * t);
        if sh.cell == CellKind::GruResetBefore {
            cells += self.unit_cost("forward_gru_n", b * h * t);
        }
        weights + cells + Cost::per_item(b * h, 0.0, 4.0 + mask, 0.0)
    }

    /// backward_sequence with a batch tile of `tile` entries: ceil(B / tile) workgroups of 64
    /// invocations, each running all T steps of its tile backward. Per workgroup, for each
    /// quad of units, the product through the R = G x H direct rows of the padded W_hh (2 x H
    /// for GRU reset-before) at every step but the last one run (nothing flows back into it)
    /// and once more after step 0 for dh0, and GRU reset-before's product through its H n
    /// rows at every step: one vec4 of weights (16 bytes) per row, applied to all `tile`
    /// entries (8 operations per vec4 and entry). Staging the rows of a product reads
    /// tile x rows gate gradients plus a step-map code each. Then per unit and entry what
    /// backward_step's cell code reads and writes (and backward_gru_n's), and once what
    /// backward_finish's does, as in the table above. The staged gradients in workgroup
    /// memory are not counted. So each
    /// element of W_hh is read ceil(B / tile) times a step across the dispatch, each read
    /// serving `tile` entries.
    fn backward_sequence_cost(&self, tile: usize) -> Cost {
        let sh = &self.shape;
        let (h, b, t) = (sh.hidden, sh.batch, sh.steps);
        let hp = h.div_ceil(4) * 4;
        let groups = b.div_ceil(tile);
        // (rows of W_hh, products through them): steps 1 .. T feed the step before, step 0
        // feeds dh0.
        let mut products = vec![(direct_rows(sh), t)];
        if sh.cell == CellKind::GruResetBefore {
            products.push((h, t));
        }
        let mut weights = Cost::ZERO;
        for (rows, steps) in products.into_iter().filter(|&(_, steps)| steps > 0) {
            let w_bytes = self.weight_bytes() * (rows * hp) as f64;
            weights += Cost::new(
                2.0 * (groups * tile * steps * rows * hp) as f64,
                (groups * steps) as f64 * w_bytes + 8.0 * (groups * tile * steps * rows) as f64,
                0.0,
            )
            .with_unique_read(w_bytes + 4.0 * (b * steps * rows) as f64);
        }
        let mut cells =
            self.unit_cost("backward_step", b * h * t) + self.unit_cost("backward_finish", b * h);
        if sh.cell == CellKind::GruResetBefore {
            cells += self.unit_cost("backward_gru_n", b * h * t);
        }
        weights + cells
    }
}
