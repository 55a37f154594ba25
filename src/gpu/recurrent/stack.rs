//! The layers of a unidirectional stack run as a wavefront: one dispatch per wave, in which
//! layer l runs step k - l for every layer, so a forward of L layers over T steps costs
//! T + L - 1 step dispatches rather than L x T.
//!
//! Layer l + 1's step t reads layer l's output at t, which the wave before wrote, so it
//! cannot take its input projection from one product over all steps: it computes
//! b_ih + W_ih x_t inside the step (`input_gates` and `SRC_INPUT` in recurrent.wgsl) from
//! copies of W_ih laid out as W_hh's. The layers share one buffer per binding, layer after
//! layer ([`SharedBuffers`], as a [`RecurrentPair`]'s directions do), their outputs included,
//! so one bind group reaches them all; each forward copies the outputs to the callers'
//! tensors after the waves. The backward runs layer by layer as the per-layer plans do,
//! from the same buffers.
//!
//! When a stack pays is the executor's rule ([`StackSchedule`]); BENCHMARKS.md (issue 12,
//! "Stacked and bidirectional layers") has the cost table it comes from.

use super::{
    Cost, DirectionSpec, Gpu, GpuTensor, Kernel, Precision, Recorder, RecurrentKernels,
    RecurrentPath, RecurrentPlan, RecurrentShape, SharedBuffers, Sharing, StepKernel, Workspace,
    TILED_FORWARD,
};
use crate::error::{ensure, err, Result};

/// How an executor records the layers of a unidirectional stack on the step path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackSchedule {
    /// Each layer's steps in their own dispatches, one layer after another.
    Layers,
    /// A [`RecurrentStack`]: one dispatch per wave of steps across the layers.
    Wavefront,
}

/// Bytes one layer's tiled forward step may read for [`StackSchedule::by_rule`] to take the
/// wavefront. Where a step reads more, its dispatch is bound by memory rather than by its
/// launch, so folding the layers' steps into one dispatch saves little, and the input
/// products the waves do in the step (which read W_ih once per tile of batch entries, where
/// the one product over all steps reads it once) cost more than that. The cost table of
/// `recur bench rnn --plan --layers 2` on an H100 puts the break-even between 39 MB (LSTM
/// H = 768, B = 32: the wavefront 2% ahead) and 43 MB (RNN H = 1024, B = 32: 1% behind);
/// BENCHMARKS.md, issue 12, "The wavefront over stacked layers".
pub const WAVEFRONT_MAX_STEP_BYTES: usize = 40_000_000;

impl StackSchedule {
    /// The rule: the wavefront where the step kernels are [`StepKernel::Tiled`] (a GPU's:
    /// on adapters that run shaders on the CPU a launch costs little beside the work), the
    /// layers take the step path ([`RecurrentPath`]: on the sequence path each layer is one
    /// dispatch already), and a layer's step reads at most [`WAVEFRONT_MAX_STEP_BYTES`]:
    /// W_hh once per tile of 16 batch entries and the state once per block of 4 units, as
    /// `forward_step_tiled` does. Elsewhere layer by layer.
    pub fn by_rule(gpu: &Gpu, kernels: RecurrentKernels, shape: &RecurrentShape) -> Self {
        let step = kernels.step.unwrap_or_else(|| StepKernel::for_adapter(gpu));
        let precision = kernels
            .precision
            .unwrap_or_else(|| Precision::for_device(gpu));
        let wanted = kernels.path.or_else(|| RecurrentPath::wanted(gpu));
        let path = RecurrentPath::resolve(gpu, shape, wanted, step, precision);
        let (units, tile) = TILED_FORWARD;
        let (h, b) = (shape.hidden, shape.batch);
        let weights = precision.weight_bytes() * shape.gate_width() * h * b.div_ceil(tile);
        let states = 4 * b * h * h.div_ceil(units);
        if step == StepKernel::Tiled
            && path == RecurrentPath::Step
            && weights + states <= WAVEFRONT_MAX_STEP_BYTES
        {
            StackSchedule::Wavefront
        } else {
            StackSchedule::Layers
        }
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
}

/// The layers of a unidirectional stack whose forward runs as a wavefront (see the module
/// docs). Every layer takes the step kernels.
pub struct RecurrentStack {
    plans: Vec<RecurrentPlan>,
    shared: SharedBuffers,
    outputs: Vec<GpuTensor>,
}

impl RecurrentStack {
    /// The layers of a stack reading `x`. Each layer above the first reads the output of the
    /// one below; all have the same cell, hidden size, batch, steps and layout, write all H
    /// columns of their outputs, and have both or neither a backward, a recurrent dropout
    /// mask and biases.
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
        let precision = kernels
            .precision
            .unwrap_or_else(|| Precision::for_device(gpu));
        ensure!(
            precision == Precision::F32,
            Unsupported,
            "a recurrent stack stores its weights in f32: with {precision:?} its layers run \
             one after the other"
        );
        let shape = head.shape;
        let sizes = Workspace::with_input(&shape, head.grads.is_some(), precision, true);
        let y = GpuTensor::zeros(gpu, &[layers.len() * shape.rows() * shape.hidden])?;
        let sharing = Sharing::Stack {
            y,
            layers: layers.len(),
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
            input = layer.y;
        }
        let outputs = layers.iter().map(|l| l.y.clone()).collect();
        Ok(Self {
            plans,
            shared,
            outputs,
        })
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
    /// built: its weights in f32 (with [`Precision::F16Storage`], the products in the steps
    /// would read W_ih rounded to f16 while the backward's read it in f32, so the gradients
    /// would not be those of the forward), and its buffers within what `gpu` binds per
    /// buffer.
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
        let outputs = layers.saturating_mul(shape.rows() * shape.hidden);
        precision == Precision::F32 && SharedBuffers::fit(gpu, sizes, layers, outputs)
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
        for p in &self.plans {
            for t in std::iter::once(&p.transpose).chain(&p.input_transpose) {
                rec.dispatch(&t.kernel, &t.group, t.grid, p.transpose_cost());
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

    /// Records layer `layer`'s backward (after a forward): its state in, its steps, its
    /// state out, then its products. Record the layers from the top down, as the program
    /// orders them.
    pub fn record_backward(&self, rec: &mut Recorder, layer: usize) -> Result<()> {
        let p = self.plans.get(layer).ok_or_else(|| {
            err!(
                Invalid,
                "a stack of {} layers has no layer {layer}",
                self.plans.len()
            )
        })?;
        let b = p
            .backward
            .as_ref()
            .ok_or_else(|| err!(Invalid, "this recurrent stack was built without gradients"))?;
        self.shared.record_copy_in(rec, &[p]);
        p.record_recurrence(rec, &[p], true);
        self.shared.record_copy_out(rec, &[p]);
        for g in &b.gemms {
            g.record(rec);
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
