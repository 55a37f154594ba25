//! The layers of a unidirectional stack run as a wavefront: one dispatch per wave, in which
//! layer l runs step k - l for every layer, so a forward of L layers over T steps costs
//! T + L - 1 step dispatches rather than L x T; the backward runs its waves from the top
//! (layer l at the step that is k - (L - 1 - l) from the last), as many again.
//!
//! Layer l + 1's step t reads layer l's output at t, which the wave before wrote, so it
//! cannot take its input projection from one product over all steps: it computes
//! b_ih + W_ih x_t inside the step (`input_gates` and `SRC_INPUT` in recurrent.wgsl) from
//! copies of W_ih laid out as W_hh's, in f32 whatever the precision of W_hh's copies (the
//! products over all steps read W_ih in f32 too). In the backward, layer l's step t needs
//! the input gradient of layer l + 1 at t, whose gate gradients the wave before wrote: it
//! computes dxw W_ih in the step (`output_grads`, `SRC_UPPER_GRADS`) into an output-gradient
//! row of its own. The layers share one buffer per binding, layer after layer
//! ([`SharedBuffers`], as a [`RecurrentPair`]'s directions do), their outputs and output
//! gradients included, so one bind group reaches them all. Each forward copies the outputs to the callers' tensors
//! after the waves, and each backward the input gradients of the layers above the first.
//!
//! When a stack pays is the executor's rule ([`StackSchedule::by_rule`]); BENCHMARKS.md
//! (issue 12, "The wavefront over stacked layers" and "Stacks on the sequence path") has the
//! cost tables it comes from.

use super::{
    Config, Cost, DirectionSpec, Gpu, GpuTensor, Kernel, Precision, Recorder, RecurrentKernels,
    RecurrentPath, RecurrentPlan, RecurrentShape, SharedBuffers, Sharing, StepKernel, Workspace,
    TILED_BACKWARD, TILED_FORWARD,
};
use crate::error::{bail, ensure, err, Result};

/// How an executor records the layers of a unidirectional stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackSchedule {
    /// Each layer's steps in their own dispatches, one layer after another.
    Layers,
    /// A [`RecurrentStack`]: one dispatch per wave of steps across the layers.
    Wavefront,
}

/// Bytes the products a wave does in the step for one layer above the first (forward: its
/// input projection; backward: the input gradient it hands the layer below) may read per
/// step and phase for [`StackSchedule::by_rule`] to take the wavefront. They read W_ih once
/// per tile of batch entries where the one product over all steps reads it once, and their
/// source row once per block of units. Beyond this they cost more than the launch each wave
/// saves. The cost table of `recur bench rnn --plan --layers 2` on an H100 (LSTM, GRU and
/// RNN tanh, H = 256 to 2048, B = 1 to 64) puts the break-even at 38 to 42 MB for the
/// forward alone and 80 to 84 MB for forward and backward together, where the two schedules
/// differ by under 2%; BENCHMARKS.md, issue 12, "The wavefront over stacked layers".
pub const WAVEFRONT_MAX_INPUT_BYTES: usize = 40_000_000;

/// The W_hh bytes (as stored) per wave dispatch that the layers of a stack on the sequence
/// path must stream each step, together, for [`StackSchedule::by_rule`] to take the wavefront
/// there. A layer's sequence kernel runs its steps in turn on a few workgroups (one per tile
/// of batch entries), each re-reading W_hh every step, and the layers run one after
/// another: a step of the stack costs about L streams of W_hh on a few compute units. A
/// wave costs a launch per step dispatch (two for GRU reset-before) and spreads the layers'
/// steps over the whole GPU. The cost table of `recur bench rnn --plan --layers 2|3|4|8` on
/// an H100 (every cell, H = 16 to 192 where the layers take the sequence path, B = 1 to 512,
/// T = 10 to 1,000; 2,640 cases) puts the break-even here: the rule's forward + backward is
/// on average 1.0% above the better schedule's (layer by layer always: 22.6%), at worst 1.41x
/// (GRU 48x1x1000, 3 layers). With W_hh in f16 (bytes as stored; 2,964 cases) the same
/// threshold gives 2.3% (layer by layer always: 22.8%); BENCHMARKS.md, issue 12, "Stacks on
/// the sequence path" and "f16 weights in a wavefront".
pub const WAVEFRONT_MIN_SEQUENCE_WEIGHT_BYTES: usize = 80 * 1024;

impl StackSchedule {
    /// The rule, for a stack of `layers` layers of `shape`: the wavefront where the step
    /// kernels are [`StepKernel::Tiled`] (a GPU's: on adapters that run shaders on the CPU a
    /// launch costs little beside the work), and
    /// - where the layers take the step path ([`RecurrentPath`]), the products the waves do
    ///   in the step read at most [`WAVEFRONT_MAX_INPUT_BYTES`] per phase and step (the
    ///   forward's, and with `grads` the backward's: twice that for the two);
    /// - where they take the sequence path (one dispatch per layer, its steps in turn), the
    ///   layers' W_hh together come to at least [`WAVEFRONT_MIN_SEQUENCE_WEIGHT_BYTES`] per
    ///   step dispatch of a wave.
    ///
    /// Elsewhere layer by layer.
    pub fn by_rule(
        gpu: &Gpu,
        kernels: RecurrentKernels,
        shape: &RecurrentShape,
        grads: bool,
        layers: usize,
    ) -> Self {
        let step = kernels.step.unwrap_or_else(|| StepKernel::for_adapter(gpu));
        let precision = kernels
            .precision
            .unwrap_or_else(|| Precision::for_device(gpu));
        let wanted = kernels.path.or_else(|| RecurrentPath::wanted(gpu));
        let path = RecurrentPath::resolve(gpu, shape, wanted, step, precision);
        let pays = match path {
            RecurrentPath::Step => {
                let (phases, bytes) = if grads {
                    (
                        2,
                        Self::input_bytes(shape, false) + Self::input_bytes(shape, true),
                    )
                } else {
                    (1, Self::input_bytes(shape, false))
                };
                bytes <= phases * WAVEFRONT_MAX_INPUT_BYTES
            }
            RecurrentPath::Sequence => {
                Self::sequence_weight_bytes(shape, layers, precision)
                    >= WAVEFRONT_MIN_SEQUENCE_WEIGHT_BYTES
            }
        };
        if step == StepKernel::Tiled && pays {
            StackSchedule::Wavefront
        } else {
            StackSchedule::Layers
        }
    }

    /// The W_hh bytes (as stored: f16 halves what a sequence kernel streams) of `layers`
    /// layers of `shape`, per step dispatch of a wave: what
    /// [`WAVEFRONT_MIN_SEQUENCE_WEIGHT_BYTES`] bounds.
    fn sequence_weight_bytes(shape: &RecurrentShape, layers: usize, precision: Precision) -> usize {
        let layer = precision.weight_bytes() * shape.gate_width() * shape.hidden;
        layers.saturating_mul(layer) / super::step_dispatches(shape.cell)
    }

    /// Bytes one step's in-step product of a layer above the first reads (f32, H inputs),
    /// blocked as the tiled kernels block it: forward (`forward_step_tiled`), W_ih once per
    /// 16 batch entries and the input once per 4 units; backward (`backward_step_tiled`),
    /// W_ih once per 8 entries and the gate gradients once per 8 units.
    fn input_bytes(shape: &RecurrentShape, backward: bool) -> usize {
        let (h, b, gw) = (shape.hidden, shape.batch, shape.gate_width());
        let (units, tile) = if backward {
            TILED_BACKWARD
        } else {
            TILED_FORWARD
        };
        let source = if backward { gw } else { h };
        4 * gw * h * b.div_ceil(tile) + 4 * b * source * h.div_ceil(units)
    }

    /// `RECUR_STACK=layers|wavefront`, if set.
    pub fn from_env() -> Option<Self> {
        match std::env::var("RECUR_STACK").as_deref() {
            Ok("layers") => Some(StackSchedule::Layers),
            Ok("wavefront") => Some(StackSchedule::Wavefront),
            _ => None,
        }
    }
}

/// One layer of a [`RecurrentStack`]: what its plan takes, and the caller's tensor for its
/// output (`[rows, H]`, the next layer's input).
#[derive(Clone, Copy)]
pub struct StackLayer<'a> {
    /// The layer's shape, parameters, gradients, state and recurrent dropout mask.
    pub direction: DirectionSpec<'a>,
    /// Where its outputs go.
    pub y: &'a GpuTensor,
    /// A layer above the first whose input is the output below through dropout (PyTorch's
    /// `dropout` between layers): the mask and the caller's masked copy.
    pub input_mask: Option<InputMask<'a>>,
}

/// The dropout between two layers of a stack, one mask per sequence as `nn::Recurrent`
/// records it (a row mask: every step of batch entry b times row b).
#[derive(Clone, Copy)]
pub struct InputMask<'a> {
    /// `[B, H]`: 0 or 1 / keep per batch entry and feature.
    pub mask: &'a GpuTensor,
    /// `[rows, H]`: the layer's input, the output below times the mask. The caller fills it
    /// after the stack's forward (the steps apply the mask themselves); the layer's weight
    /// gradient reads it.
    pub masked: &'a GpuTensor,
}

/// The layers of a unidirectional stack whose forward and backward run as wavefronts (see
/// the module docs). Every layer takes the step kernels.
pub struct RecurrentStack {
    plans: Vec<RecurrentPlan>,
    shared: SharedBuffers,
    outputs: Vec<GpuTensor>,
    /// The input dropout masks of the layers above the first, where they have them.
    input_masks: Vec<GpuTensor>,
    backward: Option<StackBackward>,
}

/// What a stack's backward waves bind and write besides the layers' plans.
struct StackBackward {
    /// The first layer's bind group, but for the top layer's output gradient and `has_dy`.
    group: wgpu::BindGroup,
    /// The input gradients of the layers above the first, which the waves leave in the
    /// output-gradient rows of the layers below (in the shared `y`).
    dx: Vec<GpuTensor>,
    _uniforms: wgpu::Buffer,
    _no_dy: GpuTensor,
}

impl RecurrentStack {
    /// The layers of a stack reading `x`. Each layer above the first reads the output of the
    /// one below; all have the same cell, hidden size, batch, steps and layout, write all H
    /// columns of their outputs, and have both or neither a backward, a recurrent dropout
    /// mask and biases. The layers above the first all have an input mask ([`InputMask`]) or
    /// none; the first has none (dropout on the stack's input is the caller's). With a
    /// backward, each layer below the top reads as its output gradient the input gradient of
    /// the one above, which that layer writes rather than adds to; with input masks, that
    /// gradient is the masked one (what a row mask over the layer above's input gradient
    /// leaves), which the waves write.
    pub fn new(
        gpu: &Gpu,
        kernels: RecurrentKernels,
        x: &GpuTensor,
        layers: &[StackLayer],
    ) -> Result<Self> {
        let (first, rest) = layers
            .split_first()
            .ok_or_else(|| err!(Invalid, "a stack needs at least one layer"))?;
        let head = first.direction;
        for (l, layer) in rest.iter().enumerate() {
            let d = layer.direction;
            ensure!(
                Self::stacks_on(&d.shape, &head.shape),
                Shape,
                "layer {} of a stack must take the first's cell, sizes and layout with H = {} \
                 inputs: {:?} on {:?}",
                l + 1,
                head.shape.hidden,
                d.shape,
                head.shape
            );
            ensure!(
                d.grads.is_some() == head.grads.is_some()
                    && d.recurrent_mask.is_some() == head.recurrent_mask.is_some()
                    && d.weights.b_ih.is_some() == head.weights.b_ih.is_some()
                    && d.weights.b_hh.is_some() == head.weights.b_hh.is_some(),
                Invalid,
                "the layers of a stack need both or neither a backward, a recurrent mask and \
                 biases; layer {} differs from the first",
                l + 1
            );
        }
        let (b, h) = (head.shape.batch, head.shape.hidden);
        ensure!(
            layers.len() <= Self::max_layers(gpu),
            Limit,
            "a wave runs each of a stack's {} layers in a workgroup row of its own; the adapter \
             allows {} per dimension",
            layers.len(),
            Self::max_layers(gpu)
        );
        ensure!(
            first.input_mask.is_none(),
            Invalid,
            "the first layer of a stack takes its input as given (mask it before the stack)"
        );
        let masked = rest.first().is_some_and(|l| l.input_mask.is_some());
        for (l, layer) in rest.iter().enumerate() {
            ensure!(
                layer.input_mask.is_some() == masked,
                Invalid,
                "the layers above the first of a stack all have an input dropout mask or none \
                 does; layer {} differs from layer 1",
                l + 1
            );
            if let Some(m) = layer.input_mask {
                ensure!(
                    m.mask.len() == b * h && m.masked.len() == head.shape.rows() * h,
                    Shape,
                    "layer {}'s input dropout mask and masked input must hold {} and {} \
                     elements, not {} and {}",
                    l + 1,
                    b * h,
                    head.shape.rows() * h,
                    m.mask.len(),
                    m.masked.len()
                );
            }
        }
        // With f16 storage W_hh's copies are f16 and W_ih's stay f32 (`WeightCopies`).
        let precision = kernels
            .precision
            .unwrap_or_else(|| Precision::for_device(gpu));
        let shape = head.shape;
        let sizes = Workspace::with_input(&shape, head.grads.is_some(), precision, true);
        // Each layer's outputs, then each layer's output gradients.
        let y_len = (2 * layers.len())
            .checked_mul(shape.rows() * shape.hidden)
            .ok_or_else(|| err!(Limit, "a stack of {} layers of {shape:?}", layers.len()))?;
        let y = GpuTensor::zeros(gpu, &[y_len])?;
        let sharing = Sharing::Stack {
            y,
            layers: layers.len(),
            input_masks: masked,
        };
        let shared = SharedBuffers::new(gpu, sizes, layers.len(), sharing)?;
        let kernels = RecurrentKernels {
            precision: Some(precision),
            path: Some(RecurrentPath::Step),
            ..kernels
        };
        let mut plans = Vec::with_capacity(layers.len());
        let mut input = x;
        for (l, layer) in layers.iter().enumerate() {
            let shared = Some((&shared, l));
            plans.push(RecurrentPlan::build(
                gpu,
                kernels,
                input,
                layer.y,
                layer.direction,
                shared,
            )?);
            // The next layer reads this one's output, or the caller's masked copy of it.
            input = match layers.get(l + 1).and_then(|n| n.input_mask) {
                Some(m) => m.masked,
                None => layer.y,
            };
        }
        let outputs = layers.iter().map(|l| l.y.clone()).collect();
        let input_masks = rest
            .iter()
            .filter_map(|l| l.input_mask.map(|m| m.mask.clone()))
            .collect();
        let backward = Self::backward_group(gpu, &plans, &shared, layers)?;
        Ok(Self {
            plans,
            shared,
            outputs,
            input_masks,
            backward,
        })
    }

    /// The bind group of the backward waves: the first layer's, with the top layer's output
    /// gradient and its `has_dy`; `None` without a backward.
    fn backward_group(
        gpu: &Gpu,
        plans: &[RecurrentPlan],
        shared: &SharedBuffers,
        layers: &[StackLayer],
    ) -> Result<Option<StackBackward>> {
        let (Some(first), Some(top)) = (plans.first(), layers.last()) else {
            return Ok(None);
        };
        let Some((_, top_dy)) = top.direction.grads else {
            return Ok(None);
        };
        let Sharing::Stack { y, .. } = &shared.sharing else {
            return Ok(None);
        };
        let cfg = Config {
            has_dy: top_dy.is_some() as u32,
            ..first.cfg
        };
        let uniforms = gpu.uniform(&cfg);
        let no_dy = GpuTensor::zeros(gpu, &[1])?;
        fn whole(t: &GpuTensor) -> wgpu::BindingResource<'_> {
            t.buffer().as_entire_binding()
        }
        let mut entries = vec![
            (0, uniforms.as_entire_binding()),
            (2, whole(&shared.gates)),
            (3, whole(&shared.wt)),
            (4, shared.smap.buffer().as_entire_binding()),
            (5, whole(y)),
            (6, whole(&shared.saved)),
            (7, whole(&shared.state)),
            (8, whole(top_dy.unwrap_or(&no_dy))),
            (9, whole(&shared.rmask)),
        ];
        if let Some(buffer) = &first.step_buffer {
            let range = wgpu::BufferBinding {
                buffer,
                offset: 0,
                size: std::num::NonZeroU64::new(crate::gpu::shaders::PER_DISPATCH_BYTES as u64),
            };
            entries.push((1, wgpu::BindingResource::Buffer(range)));
        }
        let group = gpu.bind_resources(&first.forward_step, &entries);
        let mut dx = Vec::with_capacity(layers.len() - 1);
        for (l, pair) in layers.windows(2).enumerate() {
            let (Some((_, below_dy)), Some((above, _))) =
                (pair[0].direction.grads, pair[1].direction.grads)
            else {
                bail!(Invalid, "the layers of a stack all have a backward or none");
            };
            ensure!(
                below_dy.is_some_and(|d| d.buffer() == above.dx.buffer()) && !above.accumulate_dx,
                Invalid,
                "layer {l} of a stack must read as its output gradient the input gradient that \
                 layer {} writes (not adds to)",
                l + 1
            );
            dx.push(above.dx.clone());
        }
        Ok(Some(StackBackward {
            group,
            dx,
            _uniforms: uniforms,
            _no_dy: no_dy,
        }))
    }

    /// Whether `upper` can run on `lower` in a stack: the same cell, hidden size, batch,
    /// steps, layout and direction, H inputs, and both writing all H columns of their
    /// outputs.
    pub fn stacks_on(upper: &RecurrentShape, lower: &RecurrentShape) -> bool {
        let h = lower.hidden;
        let whole = |s: &RecurrentShape| s.out_offset == 0 && s.out_stride == s.hidden;
        upper.input == h
            && whole(upper)
            && whole(lower)
            && RecurrentShape {
                input: lower.input,
                ..*upper
            } == *lower
    }

    /// Whether a stack of `layers` layers of `shape` (with a backward where `grads`) can be
    /// built: at most one layer per workgroup row the adapter allows (a wave's z), and its
    /// buffers within what `gpu` binds per buffer.
    pub fn fits(
        gpu: &Gpu,
        kernels: RecurrentKernels,
        shape: &RecurrentShape,
        grads: bool,
        layers: usize,
    ) -> bool {
        let precision = kernels
            .precision
            .unwrap_or_else(|| Precision::for_device(gpu));
        let sizes = Workspace::with_input(shape, grads, precision, true);
        let outputs = layers.saturating_mul(2 * shape.rows() * shape.hidden);
        layers <= Self::max_layers(gpu) && SharedBuffers::fit(gpu, sizes, layers, outputs)
    }

    /// The most layers a wave can run: one workgroup row (z) each.
    fn max_layers(gpu: &Gpu) -> usize {
        gpu.limits().max_compute_workgroups_per_dimension as usize
    }

    /// The layers' plans, for what they hold (states, shape, kernels); record through the
    /// stack.
    pub fn plans(&self) -> &[RecurrentPlan] {
        &self.plans
    }

    /// Sets the per-sequence lengths of every layer.
    pub fn set_lengths(&self, lengths: Option<&[usize]>) -> Result<()> {
        for p in &self.plans {
            p.set_lengths(lengths)?;
        }
        Ok(())
    }

    /// Records the forward: the states in; every layer's weight copies; the first layer's
    /// input projection; the waves; the states and outputs out.
    pub fn record_forward(&self, rec: &mut Recorder) {
        let plans: Vec<&RecurrentPlan> = self.plans.iter().collect();
        self.shared.record_copy_in(rec, &plans);
        self.record_input_masks(rec);
        for p in &self.plans {
            let t = &p.transpose;
            rec.dispatch(&t.kernel, &t.group, t.grid, p.transpose_cost());
            if let Some(t) = &p.input_transpose {
                rec.dispatch(&t.kernel, &t.group, t.grid, p.input_transpose_cost());
            }
        }
        self.plans[0].xw_gemm.record(rec);
        self.record_waves(rec);
        self.shared.record_copy_out(rec, &plans);
        if let Sharing::Stack { y, .. } = &self.shared.sharing {
            let bytes = 4 * (self.plans[0].shape.rows() * self.plans[0].shape.hidden) as u64;
            for (l, out) in self.outputs.iter().enumerate() {
                rec.copy(y.buffer(), l as u64 * bytes, out.buffer(), 0, bytes);
            }
        }
    }

    /// Copies the input dropout masks of the layers above the first into their parts of the
    /// shared `rmask`, after each one's recurrent mask (`off_imask` in recurrent.wgsl).
    fn record_input_masks(&self, rec: &mut Recorder) {
        for (m, p) in self.input_masks.iter().zip(&self.plans[1..]) {
            let at = 4 * (p.offsets.rmask + p.cfg.off_imask as usize) as u64;
            rec.copy(
                m.buffer(),
                0,
                self.shared.rmask.buffer(),
                at,
                4 * m.len() as u64,
            );
        }
    }

    /// The waves: dispatch k runs layer l's step k - l, through the first layer's bind
    /// group (its uniforms say `wave`, so the kernels take workgroup z as the layer and lag
    /// it by z steps). Each costs what its layers' steps would, plus the input side of those
    /// above the first.
    fn record_waves(&self, rec: &mut Recorder) {
        let first = &self.plans[0];
        let (steps, n) = (first.shape.steps, self.plans.len());
        let kernels: Vec<&Kernel> = std::iter::once(&first.forward_step)
            .chain(&first.forward_gru_n)
            .collect();
        for k in 0..steps + n - 1 {
            for (i, kernel) in kernels.iter().enumerate() {
                let mut cost = Cost::ZERO;
                for (l, p) in self.plans.iter().enumerate() {
                    if k < l || k - l >= steps {
                        continue;
                    }
                    cost += p.step_cost(kernel, k - l);
                    if l > 0 && i == 0 {
                        cost += p.in_step_input_cost(false);
                    }
                }
                let [x, y, _] = RecurrentPlan::step_grid(&first.shape, kernel.key.entry);
                let grid = [x, y, n as u32];
                let step = first.step_value(k);
                rec.dispatch_with("", kernel, &first.step_group, step, grid, cost);
            }
        }
    }

    /// Records the backward of every layer (after a forward): the states in; the waves from
    /// the top, in which each layer below the top takes its output gradient from the layer
    /// above's gate gradients of the same step; every layer's dh0; the states out; each
    /// layer's weight-gradient product and the first layer's input gradient; and the input
    /// gradients of the layers above the first, copied from where the waves left them.
    pub fn record_backward(&self, rec: &mut Recorder) -> Result<()> {
        let no_grads = || err!(Invalid, "this recurrent stack was built without gradients");
        let sb = self.backward.as_ref().ok_or_else(no_grads)?;
        let first = &self.plans[0];
        let b = first.backward.as_ref().ok_or_else(no_grads)?;
        let plans: Vec<&RecurrentPlan> = self.plans.iter().collect();
        let (steps, n) = (first.shape.steps, self.plans.len());
        self.shared.record_copy_in(rec, &plans);
        self.record_input_masks(rec);
        let kernels: Vec<&Kernel> = std::iter::once(&b.step).chain(&b.gru_n).collect();
        for k in 0..steps + n - 1 {
            for (i, kernel) in kernels.iter().enumerate() {
                let mut cost = Cost::ZERO;
                for (l, p) in self.plans.iter().enumerate() {
                    let lag = n - 1 - l;
                    if k < lag || k - lag >= steps {
                        continue;
                    }
                    cost += p.step_cost(kernel, steps - 1 - (k - lag));
                    if l + 1 < n && i == 0 {
                        cost += p.in_step_input_cost(true);
                    }
                }
                let [x, y, _] = RecurrentPlan::step_grid(&first.shape, kernel.key.entry);
                let step = first.step_value(k);
                rec.dispatch_with("", kernel, &sb.group, step, [x, y, n as u32], cost);
            }
        }
        let cost = self
            .plans
            .iter()
            .fold(Cost::ZERO, |c, p| c + p.step_cost(&b.finish, 0));
        let [x, y, _] = RecurrentPlan::step_grid(&first.shape, b.finish.key.entry);
        let step = first.step_value(0);
        rec.dispatch_with("", &b.finish, &sb.group, step, [x, y, n as u32], cost);
        self.shared.record_copy_out(rec, &plans);
        for (l, p) in self.plans.iter().enumerate() {
            let gemms = &p.backward.as_ref().ok_or_else(no_grads)?.gemms;
            // gemms[0] is the dx product: above the first layer the waves did it.
            for g in gemms.iter().skip(if l == 0 { 0 } else { 1 }) {
                g.record(rec);
            }
        }
        if let Sharing::Stack { y, .. } = &self.shared.sharing {
            let bytes = 4 * (first.shape.rows() * first.shape.hidden) as u64;
            // Layer l's output gradient is layer l + 1's input gradient.
            for (l, dx) in sb.dx.iter().enumerate() {
                rec.copy(y.buffer(), (n + l) as u64 * bytes, dx.buffer(), 0, bytes);
            }
        }
        Ok(())
    }

    /// Device bytes of the stack's workspace, the callers' state tensors included.
    pub fn workspace_bytes(&self) -> u64 {
        let (first, rest) = self.plans.split_first().expect("a stack has layers");
        // The first plan's workspace holds the shared gates, saved, weight copies and step
        // map; the others add their own state tensor and stand-ins.
        let shared_y = match &self.shared.sharing {
            Sharing::Stack { y, .. } => y.device_bytes(),
            Sharing::Pair { .. } => 0,
        };
        first.workspace_bytes()
            + rest
                .iter()
                .map(|p| {
                    p.state.device_bytes()
                        + p.workspace
                            .iter()
                            .skip(2)
                            .map(|t| t.device_bytes())
                            .sum::<u64>()
                })
                .sum::<u64>()
            + self.shared.state.device_bytes()
            + self.shared.rmask.device_bytes()
            + shared_y
    }
}
