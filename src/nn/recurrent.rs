//! `Recurrent`: a stack of recurrent layers, one or two directions each, with PyTorch's
//! parameter names and semantics (plus Keras's merge modes and `go_backwards`).
//!
//! The stack is written once: it records its forward and backward into a program
//! ([`Recurrent::record_forward`], [`Recurrent::record_backward`]) that either executor
//! runs (`crate::exec`); [`StackRun`] plans one batch shape on an executor and moves host
//! data in and out.

use std::collections::BTreeMap;

use crate::error::{bail, ensure, err, Result};
use rand::{Rng, SeedableRng};

use super::params::{HostTensor, Tensors};
use crate::cpu::Real;
use crate::exec::{CpuExecutor, HostData, ProgramId};
pub use crate::ops::merge::{Merge, OutputStage};
use crate::ops::program::{
    Op, OpId, ProgramBuilder, RecurrentBackward, RecurrentForward, StateRegion, TensorId,
    STATE_REGIONS,
};
use crate::ops::recurrent::{CellKind, RecurrentShape};
use crate::ops::Dropout;

/// The shape and options of a [`Recurrent`] stack, named as PyTorch's `nn.RNN`/`nn.LSTM`/
/// `nn.GRU` arguments, plus Keras's merge modes, dropouts and `go_backwards`.
#[derive(Clone, Debug, PartialEq)]
pub struct RecurrentConfig {
    /// The recurrent cell of every layer.
    pub cell: CellKind,
    /// Features per step of the input.
    pub input_size: usize,
    /// Hidden units `H` per layer and direction.
    pub hidden_size: usize,
    /// Layers stacked, each reading the outputs of the one below.
    pub num_layers: usize,
    /// Two directions per layer: one forward in time, one reversed.
    pub bidirectional: bool,
    /// How the two directions are combined in the stack's output (bidirectional only).
    pub merge: Merge,
    /// Whether the layers have the biases `b_ih` and `b_hh`.
    pub bias: bool,
    /// Sequences are [B, T, F] instead of [T, B, F].
    pub batch_first: bool,
    /// Dropout probability on the inputs of every layer but the first (the outputs of the
    /// layers below, PyTorch's `dropout`), in training.
    pub dropout: f32,
    /// Dropout probability on the first layer's inputs (Keras `dropout`), in training.
    pub input_dropout: f32,
    /// Dropout probability on the recurrent state as the recurrent product sees it (Keras
    /// `recurrent_dropout`), every layer and direction, in training.
    pub recurrent_dropout: f32,
    /// Keras `go_backwards`: process the input from its last step to its first and return
    /// the outputs in that (reversed) order. Single direction, no lengths.
    pub go_backwards: bool,
}

impl RecurrentConfig {
    /// One unidirectional layer of `cell` with biases, no dropout, time-major sequences.
    pub fn new(cell: CellKind, input_size: usize, hidden_size: usize) -> Self {
        Self {
            cell,
            input_size,
            hidden_size,
            num_layers: 1,
            bidirectional: false,
            merge: Merge::Concat,
            bias: true,
            batch_first: false,
            dropout: 0.0,
            input_dropout: 0.0,
            recurrent_dropout: 0.0,
            go_backwards: false,
        }
    }

    /// Directions per layer: 2 when bidirectional, else 1.
    pub fn directions(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }

    /// Features per step of the output.
    pub fn output_size(&self) -> usize {
        match (self.bidirectional, self.merge) {
            (true, Merge::Concat) => 2 * self.hidden_size,
            _ => self.hidden_size,
        }
    }

    /// Input features of layer `l`.
    pub fn layer_input(&self, l: usize) -> usize {
        if l == 0 {
            self.input_size
        } else {
            self.directions() * self.hidden_size
        }
    }

    /// Rejects non-positive sizes, dropout probabilities outside `[0, 1)`, and `go_backwards`
    /// with `bidirectional`.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.input_size > 0 && self.hidden_size > 0 && self.num_layers > 0,
            Invalid,
            "input_size, hidden_size and num_layers must be positive, got {}, {}, {}",
            self.input_size,
            self.hidden_size,
            self.num_layers
        );
        for (name, p) in [
            ("dropout", self.dropout),
            ("input_dropout", self.input_dropout),
            ("recurrent_dropout", self.recurrent_dropout),
        ] {
            ensure!(
                (0.0..1.0).contains(&p),
                Invalid,
                "{name} must be in [0, 1), got {p}"
            );
        }
        ensure!(
            !(self.go_backwards && self.bidirectional),
            Invalid,
            "go_backwards applies to a single direction; a bidirectional layer already has one"
        );
        Ok(())
    }

    /// PyTorch's name suffix of layer `l`, direction `d`.
    pub fn suffix(l: usize, d: usize) -> String {
        if d == 0 {
            format!("l{l}")
        } else {
            format!("l{l}_reverse")
        }
    }

    /// Parameter names and shapes, in PyTorch's order.
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let gw = self.cell.gates() * self.hidden_size;
        let mut out = Vec::new();
        for l in 0..self.num_layers {
            for d in 0..self.directions() {
                let s = Self::suffix(l, d);
                out.push((format!("weight_ih_{s}"), vec![gw, self.layer_input(l)]));
                out.push((format!("weight_hh_{s}"), vec![gw, self.hidden_size]));
                if self.bias {
                    out.push((format!("bias_ih_{s}"), vec![gw]));
                    out.push((format!("bias_hh_{s}"), vec![gw]));
                }
            }
        }
        out
    }

    /// Reads the configuration from PyTorch state_dict names and shapes. The cell is taken
    /// from `cell` when given, else from the row count (4H: LSTM, 3H: GRU, H: RNN tanh).
    pub fn from_params(params: &Tensors, cell: Option<CellKind>) -> Result<Self> {
        let w = params.get("weight_hh_l0").ok_or_else(|| {
            err!(
                Format,
                "weights file has no weight_hh_l0 (expected PyTorch RNN/LSTM/GRU state_dict names)"
            )
        })?;
        ensure!(
            w.shape.len() == 2,
            Shape,
            "weight_hh_l0 has shape {:?}, expected 2 dimensions",
            w.shape
        );
        let (rows, hidden) = (w.shape[0], w.shape[1]);
        let cell = match cell {
            Some(c) => c,
            None => match rows / hidden.max(1) {
                4 if rows == 4 * hidden => CellKind::Lstm,
                3 if rows == 3 * hidden => CellKind::Gru,
                1 if rows == hidden => CellKind::RnnTanh,
                _ => bail!(
                    Shape,
                    "weight_hh_l0 has shape {:?}: not 4H, 3H or H rows by H columns",
                    w.shape
                ),
            },
        };
        let input = params
            .get("weight_ih_l0")
            .ok_or_else(|| err!(Format, "weights file has no weight_ih_l0"))?
            .shape
            .get(1)
            .copied()
            .ok_or_else(|| err!(Format, "weight_ih_l0 must have 2 dimensions"))?;
        let mut num_layers = 0;
        while params.contains_key(&format!("weight_hh_l{num_layers}")) {
            num_layers += 1;
        }
        let mut cfg = RecurrentConfig::new(cell, input, hidden);
        cfg.num_layers = num_layers;
        cfg.bidirectional = params.contains_key("weight_hh_l0_reverse");
        cfg.bias = params.contains_key("bias_ih_l0");
        Ok(cfg)
    }
}

/// A recurrent stack and its parameters (PyTorch names, without a module prefix).
#[derive(Clone, Debug)]
pub struct Recurrent {
    /// The architecture.
    pub config: RecurrentConfig,
    params: Tensors,
}

/// Outputs of a forward pass. `output` is [T, B, F] ([B, T, F] with batch_first); `h_n` and
/// `c_n` are [layers * directions, B, H] (`c_n` empty except for LSTM).
#[derive(Clone, Debug)]
pub struct RecurrentOutput<T> {
    /// The last layer's output at every step (after the merge mode).
    pub output: Vec<T>,
    /// Final hidden state of every layer and direction.
    pub h_n: Vec<T>,
    /// Final cell state (LSTM).
    pub c_n: Vec<T>,
}

/// Gradients of a backward pass, with `params` under the parameters' names.
#[derive(Clone, Debug)]
pub struct RecurrentGrads<T> {
    /// Of the input.
    pub input: Vec<T>,
    /// Of the initial hidden states.
    pub h0: Vec<T>,
    /// Of the initial cell states (LSTM).
    pub c0: Vec<T>,
    /// Of every parameter, by name.
    pub params: BTreeMap<String, Vec<T>>,
}

/// The tensors and ops of a recorded stack forward, for its backward and for callers that
/// hand states on or read them.
#[derive(Clone, Debug)]
pub struct RecordedStack {
    /// `[rows, output_size]`.
    pub output: TensorId,
    /// The state tensor of each layer-direction (`l * directions + d`), `[STATE_REGIONS, B,
    /// H]` (see [`StateRegion`]).
    pub states: Vec<TensorId>,
    /// Sequences.
    pub batch: usize,
    /// Steps per sequence.
    pub steps: usize,
    /// Units per direction.
    pub hidden: usize,
    prefix: String,
    /// What each layer reads (after input dropout).
    layer_in: Vec<TensorId>,
    /// Each layer's concatenated directions `[rows, dirs * H]`.
    layer_out: Vec<TensorId>,
    input_masks: Vec<Option<TensorId>>,
    forwards: Vec<OpId>,
}

impl RecordedStack {
    /// Elements of one state region (`batch * hidden`).
    pub fn region_len(&self) -> usize {
        self.batch * self.hidden
    }

    /// Element offset of `region` in a state tensor.
    pub fn region(&self, region: StateRegion) -> usize {
        region.offset(self.batch, self.hidden)
    }

    /// Records copying every final state into the initial state the next run starts from
    /// (stateful training, sampling), on the device: through a scratch tensor, since a
    /// tensor is not copied onto itself. The gradient does not flow across.
    pub fn record_carry(&self, b: &mut ProgramBuilder) {
        let n = self.region_len();
        let scratch = b.tensor(&format!("{}carried state", self.prefix), &[n]);
        for &state in &self.states {
            for (from, to) in [
                (StateRegion::HN, StateRegion::H0),
                (StateRegion::CN, StateRegion::C0),
            ] {
                b.op(Op::Copy {
                    src: state,
                    src_offset: self.region(from),
                    dst: scratch,
                    dst_offset: 0,
                    len: n,
                });
                b.op(Op::Copy {
                    src: scratch,
                    src_offset: 0,
                    dst: state,
                    dst_offset: self.region(to),
                    len: n,
                });
            }
        }
    }
}

/// The tensors a recorded stack backward writes.
#[derive(Clone, Debug)]
pub struct StackGrads {
    /// Gradient of the stack's input `[rows, input_size]`.
    pub input: TensorId,
    /// Gradient of each parameter, by its name without the prefix.
    pub params: BTreeMap<String, TensorId>,
}

/// Which mask of a training step (each has its own random stream).
#[derive(Clone, Copy, Debug)]
pub enum DropoutKind {
    /// On the inputs of layer l.
    Input(usize),
    /// On the recurrent state of layer l, direction d.
    Recurrent(usize, usize),
}

impl DropoutKind {
    /// The mask's random stream.
    pub fn stream(self) -> u32 {
        match self {
            DropoutKind::Input(l) => 4 * l as u32,
            DropoutKind::Recurrent(l, d) => 4 * l as u32 + 1 + d as u32,
        }
    }
}

/// The seed and step that key a training step's dropout masks; the same key gives the
/// same masks on the CPU and on any adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrainKey {
    /// The dropout seed.
    pub seed: u64,
    /// The training step.
    pub step: u64,
}

impl Recurrent {
    /// A stack with PyTorch's initialisation: every parameter uniform in ±1/sqrt(hidden).
    pub fn new(config: RecurrentConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let bound = 1.0 / (config.hidden_size as f32).sqrt();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut params = Tensors::new();
        for (name, shape) in config.param_shapes() {
            let n = shape.iter().product();
            let data = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
            params.insert(name, HostTensor { shape, data });
        }
        Ok(Self { config, params })
    }

    /// A stack from named parameters, which must be exactly those `config` has.
    pub fn from_params(config: RecurrentConfig, params: Tensors) -> Result<Self> {
        config.validate()?;
        check_params(&config, &params)?;
        Ok(Self { config, params })
    }

    /// The parameters by name.
    pub fn params(&self) -> &Tensors {
        &self.params
    }

    /// Replaces the parameters, which must be exactly those the configuration has.
    pub fn set_params(&mut self, params: Tensors) -> Result<()> {
        check_params(&self.config, &params)?;
        self.params = params;
        Ok(())
    }

    /// The parameters converted to `T`.
    pub fn params_as<T: Real>(&self) -> BTreeMap<String, Vec<T>> {
        self.params
            .iter()
            .map(|(k, v)| {
                let data = v.data.iter().map(|&x| T::from(x).unwrap_or_else(T::nan));
                (k.clone(), data.collect())
            })
            .collect()
    }

    /// The shape of layer `l`, direction `d`, for a batch.
    pub fn shape(&self, l: usize, d: usize, batch: usize, steps: usize) -> RecurrentShape {
        let c = &self.config;
        let dirs = c.directions();
        RecurrentShape::new(c.cell, c.layer_input(l), c.hidden_size, batch, steps)
            .reverse(d == 1 || c.go_backwards)
            .batch_first(c.batch_first)
            .output_columns(dirs * c.hidden_size, d * c.hidden_size)
    }

    /// Checks an input batch: sizes, lengths, finite values. Returns (batch, steps).
    pub fn check_input(
        &self,
        input: &[f32],
        input_shape: &[usize],
        lengths: Option<&[usize]>,
        h0: Option<&[f32]>,
        c0: Option<&[f32]>,
    ) -> Result<(usize, usize)> {
        let c = &self.config;
        ensure!(
            input_shape.len() == 3,
            Shape,
            "input has shape {input_shape:?}, expected 3 dimensions ({})",
            if c.batch_first {
                "[batch, time, features]"
            } else {
                "[time, batch, features]"
            }
        );
        let (steps, batch) = if c.batch_first {
            (input_shape[1], input_shape[0])
        } else {
            (input_shape[0], input_shape[1])
        };
        ensure!(
            input_shape[2] == c.input_size,
            Shape,
            "input has {} features per step, the layer expects input_size = {}",
            input_shape[2],
            c.input_size
        );
        ensure!(
            steps > 0 && batch > 0,
            Shape,
            "input has shape {input_shape:?}: no steps or no batch"
        );
        ensure!(
            input.len() == steps * batch * c.input_size,
            Shape,
            "input data does not match its shape {input_shape:?}"
        );
        if let Some(i) = input.iter().position(|v| !v.is_finite()) {
            bail!(
                Numerics,
                "input holds a non-finite value ({}) at index {i}",
                input[i]
            );
        }
        if let Some(l) = lengths {
            ensure!(
                !c.go_backwards,
                Invalid,
                "go_backwards does not take per-sequence lengths"
            );
            RecurrentShape::new(c.cell, c.input_size, c.hidden_size, batch, steps)
                .validate(Some(l))?;
        }
        let state_len = c.num_layers * c.directions() * batch * c.hidden_size;
        for (name, s) in [("h0", h0), ("c0", c0)] {
            if let Some(s) = s {
                ensure!(
                    s.len() == state_len,
                    Shape, "{name} has {} elements, expected [layers * directions, batch, hidden] = [{}, {batch}, {}]",
                    s.len(),
                    c.num_layers * c.directions(),
                    c.hidden_size
                );
                if let Some(i) = s.iter().position(|v| !v.is_finite()) {
                    bail!(
                        Numerics,
                        "{name} holds a non-finite value ({}) at index {i}",
                        s[i]
                    );
                }
            }
        }
        ensure!(
            c0.is_none() || c.cell.has_cell_state(),
            Invalid,
            "c0 was given but a {} has no cell state",
            c.cell.name()
        );
        Ok((batch, steps))
    }

    /// The dropout probability of a mask kind.
    pub fn dropout_rate(&self, kind: DropoutKind) -> f32 {
        match kind {
            DropoutKind::Input(0) => self.config.input_dropout,
            DropoutKind::Input(_) => self.config.dropout,
            DropoutKind::Recurrent(..) => self.config.recurrent_dropout,
        }
    }

    /// Records the forward of the whole stack over `input` (`[rows, input_size]`), with
    /// parameters `prefix` + their names. With `dropout_seed` (training), the masks of the
    /// configured rates are drawn at each run from the seed and the run's step.
    #[allow(clippy::too_many_arguments)]
    pub fn record_forward(
        &self,
        b: &mut ProgramBuilder,
        prefix: &str,
        input: TensorId,
        batch: usize,
        steps: usize,
        lengths: Option<TensorId>,
        dropout_seed: Option<u64>,
    ) -> Result<RecordedStack> {
        self.record_forward_from(
            b,
            prefix,
            input,
            (batch, steps),
            lengths,
            dropout_seed,
            None,
        )
    }

    /// [`Self::record_forward`] starting from the final states of another stack's state
    /// tensors `init` (one per layer-direction, as [`RecordedStack::states`]), copied into
    /// this stack's initial states before each layer-direction runs: an encoder's state
    /// handed to a decoder. The gradient flows back through [`Self::record_state_grads_to`].
    #[allow(clippy::too_many_arguments)]
    pub fn record_forward_from(
        &self,
        b: &mut ProgramBuilder,
        prefix: &str,
        input: TensorId,
        (batch, steps): (usize, usize),
        lengths: Option<TensorId>,
        dropout_seed: Option<u64>,
        init: Option<&[TensorId]>,
    ) -> Result<RecordedStack> {
        if let Some(init) = init {
            ensure!(
                init.len() == self.config.num_layers * self.config.directions(),
                Shape,
                "initial states from {} state tensors, the stack has {} layer-directions",
                init.len(),
                self.config.num_layers * self.config.directions()
            );
        }
        let c = &self.config;
        let (h, dirs, rows) = (c.hidden_size, c.directions(), batch * steps);
        let mut rec = RecordedStack {
            output: input,
            states: Vec::new(),
            batch,
            steps,
            hidden: h,
            prefix: prefix.to_string(),
            layer_in: Vec::new(),
            layer_out: Vec::new(),
            input_masks: Vec::new(),
            forwards: Vec::new(),
        };
        let drop = |kind: DropoutKind| dropout_seed.filter(|_| self.dropout_rate(kind) > 0.0);
        let mut x = input;
        for l in 0..c.num_layers {
            let features = c.layer_input(l);
            let mask = match drop(DropoutKind::Input(l)) {
                Some(seed) => {
                    let mask = b.tensor(&format!("{prefix}input mask l{l}"), &[batch, features]);
                    let spec = Dropout::new(
                        batch,
                        features,
                        1.0 - self.dropout_rate(DropoutKind::Input(l)),
                    );
                    b.op(Op::DropoutMask {
                        spec,
                        seed,
                        stream: DropoutKind::Input(l).stream(),
                        mask,
                    });
                    let masked = b.tensor(&format!("{prefix}masked input l{l}"), &[rows, features]);
                    b.op(Op::Copy {
                        src: x,
                        src_offset: 0,
                        dst: masked,
                        dst_offset: 0,
                        len: rows * features,
                    });
                    b.op(Op::RowMask {
                        mask,
                        x: masked,
                        steps,
                        batch_first: c.batch_first,
                    });
                    x = masked;
                    Some(mask)
                }
                None => None,
            };
            let y = b.tensor(&format!("{prefix}output l{l}"), &[rows, dirs * h]);
            for d in 0..dirs {
                let s = RecurrentConfig::suffix(l, d);
                let param = |b: &mut ProgramBuilder, k: &str| -> Result<TensorId> {
                    let name = format!("{k}_{s}");
                    let shape = &self
                        .params
                        .get(&name)
                        .ok_or_else(|| err!(Invalid, "parameter {name}"))?
                        .shape;
                    b.param(&format!("{prefix}{name}"), shape)
                };
                let w_ih = param(b, "weight_ih")?;
                let w_hh = param(b, "weight_hh")?;
                let (b_ih, b_hh) = if c.bias {
                    (Some(param(b, "bias_ih")?), Some(param(b, "bias_hh")?))
                } else {
                    (None, None)
                };
                let state = b.tensor(&format!("{prefix}state {s}"), &[STATE_REGIONS, batch, h]);
                if let Some(init) = init {
                    let n = batch * h;
                    let mut regions = vec![(StateRegion::HN, StateRegion::H0)];
                    if c.cell.has_cell_state() {
                        regions.push((StateRegion::CN, StateRegion::C0));
                    }
                    for (from, to) in regions {
                        b.op(Op::Copy {
                            src: init[l * dirs + d],
                            src_offset: from.offset(batch, h),
                            dst: state,
                            dst_offset: to.offset(batch, h),
                            len: n,
                        });
                    }
                }
                let recurrent_mask = match drop(DropoutKind::Recurrent(l, d)) {
                    Some(seed) => {
                        let mask = b.tensor(&format!("{prefix}recurrent mask {s}"), &[batch, h]);
                        let keep = 1.0 - c.recurrent_dropout;
                        b.op(Op::DropoutMask {
                            spec: Dropout::new(batch, h, keep),
                            seed,
                            stream: DropoutKind::Recurrent(l, d).stream(),
                            mask,
                        });
                        Some(mask)
                    }
                    None => None,
                };
                let id = b.op(Op::RecurrentForward(RecurrentForward {
                    shape: self.shape(l, d, batch, steps),
                    x,
                    y,
                    w_ih,
                    w_hh,
                    b_ih,
                    b_hh,
                    state,
                    lengths,
                    recurrent_mask,
                }));
                rec.forwards.push(id);
                rec.states.push(state);
            }
            rec.layer_in.push(x);
            rec.layer_out.push(y);
            rec.input_masks.push(mask);
            x = y;
        }
        let stage = self.output_stage(batch, steps);
        rec.output = if stage.is_identity() {
            x
        } else {
            let out = b.tensor(&format!("{prefix}output"), &[rows, stage.width()]);
            b.op(Op::Merge { stage, cat: x, out });
            out
        };
        Ok(rec)
    }

    /// Records the backward of a recorded forward: `d_output` (the output's layout; absent
    /// means zero) back to the input and every parameter. The final-state gradients are
    /// what regions `DHN`, `DCN` of each state tensor hold (zero unless written); the
    /// initial-state gradients land in `DH0` and `DC`.
    pub fn record_backward(
        &self,
        b: &mut ProgramBuilder,
        fwd: &RecordedStack,
        d_output: Option<TensorId>,
    ) -> Result<StackGrads> {
        let c = &self.config;
        let (h, dirs, rows) = (c.hidden_size, c.directions(), fwd.batch * fwd.steps);
        let prefix = &fwd.prefix;
        let last = *fwd
            .layer_out
            .last()
            .ok_or_else(|| err!(Invalid, "a stack has at least one layer"))?;
        let stage = self.output_stage(fwd.batch, fwd.steps);
        let mut dy = match d_output {
            Some(d) if !stage.is_identity() => {
                let d_cat = b.tensor(
                    &format!("{prefix}d output l{}", c.num_layers - 1),
                    &[rows, dirs * h],
                );
                b.op(Op::MergeBackward {
                    stage,
                    cat: last,
                    d_out: d,
                    d_cat,
                });
                Some(d_cat)
            }
            other => other,
        };
        let mut params = BTreeMap::new();
        let mut d_input = None;
        for l in (0..c.num_layers).rev() {
            let dx = b.tensor(&format!("{prefix}d input l{l}"), &[rows, c.layer_input(l)]);
            for d in 0..dirs {
                let s = RecurrentConfig::suffix(l, d);
                let mut grad = |b: &mut ProgramBuilder, k: &str| {
                    let name = format!("{k}_{s}");
                    let t = b.tensor(&format!("{prefix}grad {name}"), &self.params[&name].shape);
                    params.insert(name, t);
                    t
                };
                let dw_ih = grad(b, "weight_ih");
                let dw_hh = grad(b, "weight_hh");
                let (db_ih, db_hh) = if c.bias {
                    (Some(grad(b, "bias_ih")), Some(grad(b, "bias_hh")))
                } else {
                    (None, None)
                };
                b.op(Op::RecurrentBackward(RecurrentBackward {
                    forward: fwd.forwards[l * dirs + d],
                    dy,
                    dx,
                    accumulate_dx: d == 1,
                    dw_ih,
                    dw_hh,
                    db_ih,
                    db_hh,
                }));
            }
            if let Some(mask) = fwd.input_masks[l] {
                b.op(Op::RowMask {
                    mask,
                    x: dx,
                    steps: fwd.steps,
                    batch_first: c.batch_first,
                });
            }
            dy = Some(dx);
            d_input = Some(dx);
        }
        Ok(StackGrads {
            input: d_input.ok_or_else(|| err!(Invalid, "a stack has at least one layer"))?,
            params,
        })
    }

    /// Records handing the initial-state gradients of `this` (after its backward) to the
    /// final-state gradients of `source`, the stack whose final states `this` started from
    /// ([`Self::record_forward_from`]); record it before `source`'s backward.
    pub fn record_state_grads_to(
        &self,
        b: &mut ProgramBuilder,
        this: &RecordedStack,
        source: &RecordedStack,
    ) -> Result<()> {
        ensure!(
            this.states.len() == source.states.len() && this.region_len() == source.region_len(),
            Shape,
            "a state handoff needs the same layers, directions, batch and hidden size"
        );
        let mut regions = vec![(StateRegion::DH0, StateRegion::DHN)];
        if self.config.cell.has_cell_state() {
            // After a backward the running cell-state gradient is dc0.
            regions.push((StateRegion::DC, StateRegion::DCN));
        }
        for (&from, &to) in this.states.iter().zip(&source.states) {
            for (a, z) in &regions {
                b.op(Op::Copy {
                    src: from,
                    src_offset: this.region(*a),
                    dst: to,
                    dst_offset: source.region(*z),
                    len: this.region_len(),
                });
            }
        }
        Ok(())
    }

    /// The output stage of a batch shape.
    pub fn output_stage(&self, batch: usize, steps: usize) -> OutputStage {
        let c = &self.config;
        OutputStage {
            merge: c.merge,
            dirs: c.directions(),
            hidden: c.hidden_size,
            flip: c.go_backwards,
            steps,
            batch,
            batch_first: c.batch_first,
        }
    }

    /// Plans the stack for one batch shape on `exec` (uploading the parameters): the
    /// forward as phase 0 and, with `opts.grads`, the backward as phase 1.
    pub fn plan<E: HostData<f32> + ?Sized>(
        &self,
        exec: &mut E,
        batch: usize,
        steps: usize,
        opts: StackOptions,
    ) -> Result<StackRun> {
        let params = self.params_as::<f32>();
        self.plan_with(exec, &params, batch, steps, opts)
    }

    /// [`Self::plan`] with parameter values of type `T` (the CPU executor in f64).
    pub fn plan_with<T, E: HostData<T> + ?Sized>(
        &self,
        exec: &mut E,
        params: &BTreeMap<String, Vec<T>>,
        batch: usize,
        steps: usize,
        opts: StackOptions,
    ) -> Result<StackRun> {
        for (name, t) in &self.params {
            let v = params
                .get(name)
                .ok_or_else(|| err!(Invalid, "parameter {name} missing"))?;
            exec.set_param_values(name, &t.shape, v)?;
        }
        let c = &self.config;
        let mut b = ProgramBuilder::new();
        let input = b.input("input", &[batch * steps, c.input_size]);
        let lengths = opts.lengths.then(|| b.lengths("lengths", batch));
        let rec =
            self.record_forward(&mut b, "", input, batch, steps, lengths, opts.dropout_seed)?;
        let grads = if opts.grads {
            b.next_phase();
            let d_output = b.input("output gradient", &[batch * steps, c.output_size()]);
            Some((
                d_output,
                self.record_backward(&mut b, &rec, Some(d_output))?,
            ))
        } else {
            None
        };
        let program = exec.load(b.finish())?;
        Ok(StackRun {
            program,
            config: c.clone(),
            input,
            lengths,
            rec,
            grads,
        })
    }

    /// Forward on the CPU in `T` with parameters `p` (from [`Self::params_as`]), keeping
    /// what a backward needs. The input is assumed checked ([`Self::check_input`]).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_cpu<T: Real>(
        &self,
        p: &BTreeMap<String, Vec<T>>,
        input: &[T],
        batch: usize,
        steps: usize,
        lengths: Option<&[usize]>,
        h0: Option<&[T]>,
        c0: Option<&[T]>,
    ) -> Result<(RecurrentOutput<T>, CpuTape<T>)> {
        self.forward_cpu_with(p, input, batch, steps, lengths, h0, c0, None)
    }

    /// [`Self::forward_cpu`] in training mode when `train` is given: the dropout masks of
    /// its seed and step, the same masks the GPU draws.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_cpu_with<T: Real>(
        &self,
        p: &BTreeMap<String, Vec<T>>,
        input: &[T],
        batch: usize,
        steps: usize,
        lengths: Option<&[usize]>,
        h0: Option<&[T]>,
        c0: Option<&[T]>,
        train: Option<TrainKey>,
    ) -> Result<(RecurrentOutput<T>, CpuTape<T>)> {
        let mut exec = CpuExecutor::<T>::new();
        let opts = StackOptions {
            grads: true,
            lengths: lengths.is_some(),
            dropout_seed: train.map(|k| k.seed),
        };
        let run = self.plan_with(&mut exec, p, batch, steps, opts)?;
        let step = train.map_or(0, |k| k.step);
        let out = run.forward(&mut exec, input, lengths, h0, c0, step)?;
        Ok((out, CpuTape { exec, run, step }))
    }

    /// Forward on the CPU for inference: [`Self::forward_cpu`]'s outputs without a tape
    /// (less memory written and kept), as PyTorch's forward under `no_grad`.
    #[allow(clippy::too_many_arguments)]
    pub fn infer_cpu<T: Real>(
        &self,
        p: &BTreeMap<String, Vec<T>>,
        input: &[T],
        batch: usize,
        steps: usize,
        lengths: Option<&[usize]>,
        h0: Option<&[T]>,
        c0: Option<&[T]>,
    ) -> Result<RecurrentOutput<T>> {
        let mut exec = CpuExecutor::<T>::new();
        let opts = StackOptions {
            grads: false,
            lengths: lengths.is_some(),
            dropout_seed: None,
        };
        let run = self.plan_with(&mut exec, p, batch, steps, opts)?;
        run.forward(&mut exec, input, lengths, h0, c0, 0)
    }

    /// Backward on the CPU for the forward that produced `tape`. `d_output` has the
    /// output's layout; absent gradients are zero.
    pub fn backward_cpu<T: Real>(
        &self,
        tape: &mut CpuTape<T>,
        d_output: Option<&[T]>,
        d_h_n: Option<&[T]>,
        d_c_n: Option<&[T]>,
    ) -> Result<RecurrentGrads<T>> {
        tape.run
            .backward(&mut tape.exec, d_output, d_h_n, d_c_n, tape.step)
    }
}

fn check_params(config: &RecurrentConfig, params: &Tensors) -> Result<()> {
    let want = config.param_shapes();
    for (name, shape) in &want {
        let t = params
            .get(name)
            .ok_or_else(|| err!(Invalid, "parameter {name} (shape {shape:?}) is missing"))?;
        ensure!(
            &t.shape == shape,
            Shape,
            "parameter {name} has shape {:?}, expected {shape:?}",
            t.shape
        );
        ensure!(
            t.data.len() == shape.iter().product::<usize>(),
            Shape,
            "parameter {name} holds {} values for shape {shape:?}",
            t.data.len()
        );
        if let Some(bad) = t.data.iter().position(|v| !v.is_finite()) {
            bail!(
                Numerics,
                "parameter {name} holds a non-finite value ({}) at index {bad}",
                t.data[bad]
            );
        }
    }
    if let Some(extra) = params.keys().find(|k| !want.iter().any(|(n, _)| n == *k)) {
        bail!(
            Invalid,
            "parameter {extra} does not belong to a {}-layer {} {} (expected {:?})",
            config.num_layers,
            if config.bidirectional {
                "bidirectional"
            } else {
                "unidirectional"
            },
            config.cell.name(),
            want.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>()
        );
    }
    Ok(())
}

/// What a [`StackRun`] is planned for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackOptions {
    /// Plan the backward too.
    pub grads: bool,
    /// Sequences carry their own lengths.
    pub lengths: bool,
    /// Training: draw the configured dropout masks from this seed.
    pub dropout_seed: Option<u64>,
}

impl StackOptions {
    /// Forward and backward, every sequence the full length, no dropout.
    pub fn with_grads() -> Self {
        Self {
            grads: true,
            ..Self::default()
        }
    }
}

/// A recurrent stack planned for one batch shape on an executor.
#[derive(Clone, Debug)]
pub struct StackRun {
    /// The loaded program.
    pub program: ProgramId,
    config: RecurrentConfig,
    input: TensorId,
    lengths: Option<TensorId>,
    rec: RecordedStack,
    grads: Option<(TensorId, StackGrads)>,
}

impl StackRun {
    /// The recorded forward's tensors.
    pub fn recorded(&self) -> &RecordedStack {
        &self.rec
    }

    /// The tensors the backward writes the parameter gradients into, by name.
    pub fn param_grads(&self) -> Result<&BTreeMap<String, TensorId>> {
        Ok(&self
            .grads
            .as_ref()
            .ok_or_else(|| err!(Invalid, "this stack was planned without gradients"))?
            .1
            .params)
    }

    /// The tensor the forward reads its input from.
    pub fn input(&self) -> TensorId {
        self.input
    }

    /// The tensor the backward writes the input's gradient into.
    pub fn input_grad(&self) -> Result<TensorId> {
        Ok(self
            .grads
            .as_ref()
            .ok_or_else(|| err!(Invalid, "this stack was planned without gradients"))?
            .1
            .input)
    }

    fn write_states<T: Copy + num_traits::Zero, E: HostData<T> + ?Sized>(
        &self,
        exec: &mut E,
        regions: [StateRegion; 2],
        h: Option<&[T]>,
        c: Option<&[T]>,
    ) -> Result<()> {
        let n = self.rec.region_len();
        let zeros = vec![T::zero(); n];
        for (i, &state) in self.rec.states.iter().enumerate() {
            for (region, values) in regions.into_iter().zip([h, c]) {
                let v = match values {
                    Some(v) => {
                        ensure!(
                            v.len() == n * self.rec.states.len(),
                            Shape, "state has {} elements, expected [layers * directions, batch, hidden] = {}",
                            v.len(),
                            n * self.rec.states.len()
                        );
                        &v[i * n..(i + 1) * n]
                    }
                    None => &zeros[..],
                };
                exec.write_values(self.program, state, self.rec.region(region), v)?;
            }
        }
        Ok(())
    }

    fn read_states<T: Copy, E: HostData<T> + ?Sized>(
        &self,
        exec: &mut E,
        region: StateRegion,
    ) -> Result<Vec<T>> {
        let n = self.rec.region_len();
        let mut out = Vec::with_capacity(n * self.rec.states.len());
        for &state in &self.rec.states {
            let all = exec.read_values(self.program, state)?;
            let at = self.rec.region(region);
            out.extend_from_slice(&all[at..at + n]);
        }
        Ok(out)
    }

    /// Runs the forward (one submit on the GPU) on checked input
    /// ([`Recurrent::check_input`]) as training step `step` (it keys the dropout masks).
    pub fn forward<T: Copy + num_traits::Zero, E: HostData<T> + ?Sized>(
        &self,
        exec: &mut E,
        input: &[T],
        lengths: Option<&[usize]>,
        h0: Option<&[T]>,
        c0: Option<&[T]>,
        step: u64,
    ) -> Result<RecurrentOutput<T>> {
        exec.write_values(self.program, self.input, 0, input)?;
        match (self.lengths, lengths) {
            (Some(t), Some(l)) => {
                let l: Vec<u32> = l.iter().map(|&v| v.min(u32::MAX as usize) as u32).collect();
                exec.write_u32(self.program, t, &l)?;
            }
            (None, None) => {}
            (Some(_), None) => bail!(Invalid, "this stack was planned for per-sequence lengths"),
            (None, Some(_)) => bail!(
                Invalid,
                "this stack was planned without per-sequence lengths"
            ),
        }
        self.write_states(exec, [StateRegion::H0, StateRegion::C0], h0, c0)?;
        exec.run(self.program, 0, step)?;
        Ok(RecurrentOutput {
            output: exec.read_values(self.program, self.rec.output)?,
            h_n: self.read_states(exec, StateRegion::HN)?,
            c_n: if self.config.cell.has_cell_state() {
                self.read_states(exec, StateRegion::CN)?
            } else {
                Vec::new()
            },
        })
    }

    /// Runs the backward of the last forward (one submit on the GPU) and reads every
    /// gradient back.
    pub fn backward<T: Copy + num_traits::Zero, E: HostData<T> + ?Sized>(
        &self,
        exec: &mut E,
        d_output: Option<&[T]>,
        d_h_n: Option<&[T]>,
        d_c_n: Option<&[T]>,
        step: u64,
    ) -> Result<RecurrentGrads<T>> {
        let (d_out, grads) = self
            .grads
            .as_ref()
            .ok_or_else(|| err!(Invalid, "this stack was planned without gradients"))?;
        let n = exec.program(self.program).tensor(*d_out).len();
        match d_output {
            Some(d) => {
                ensure!(
                    d.len() == n,
                    Shape,
                    "output gradient has {} elements, expected {n}",
                    d.len()
                );
                exec.write_values(self.program, *d_out, 0, d)?
            }
            None => exec.write_values(self.program, *d_out, 0, &vec![T::zero(); n])?,
        }
        self.write_states(exec, [StateRegion::DHN, StateRegion::DCN], d_h_n, d_c_n)?;
        exec.run(self.program, 1, step)?;
        let mut params = BTreeMap::new();
        for (name, &t) in &grads.params {
            params.insert(name.clone(), exec.read_values(self.program, t)?);
        }
        Ok(RecurrentGrads {
            input: exec.read_values(self.program, grads.input)?,
            h0: self.read_states(exec, StateRegion::DH0)?,
            c0: if self.config.cell.has_cell_state() {
                self.read_states(exec, StateRegion::DC)?
            } else {
                Vec::new()
            },
            params,
        })
    }
}

/// A CPU forward kept for its backward: the executor holding the program and its
/// activations.
pub struct CpuTape<T: Real> {
    exec: CpuExecutor<T>,
    run: StackRun,
    step: u64,
}

impl<T: Real> CpuTape<T> {
    /// Rounds the saved gate activations as the GPU's f16 storage keeps them
    /// ([`crate::cpu::precision::round_saved_activations`]), so that the backward computes
    /// what a GPU plan with `Precision::F16Storage` computes. The outputs are unchanged:
    /// only the backward reads the activations.
    pub fn store_activations_in_f16(&mut self) {
        self.exec.round_saved_activations();
    }
}
