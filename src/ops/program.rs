//! A recorded program: the op set as a vocabulary. A layer or model records its forward,
//! backward and update once per batch shape into a [`ProgramBuilder`]; an executor
//! (`crate::exec`: the GPU one lowers each op to a plan and runs a phase in one submit, the
//! CPU one runs each op's CPU twin in f32 or f64) runs the resulting [`Program`] as often as
//! needed. Composites are written once, against this vocabulary; what differs between the
//! GPU and the CPU is only how each op is lowered.
//!
//! A program declares its tensors ([`TensorDecl`]): parameters (shared by every program of
//! an executor under their names), inputs the caller writes before a run, and work tensors
//! (activations, gradients, states) that the program's ops write and read, kept between its
//! runs. Ops run in the order recorded; a program is cut into phases (e.g. forward, then
//! backward), each run on its own: one submit per phase on the GPU.

use std::collections::BTreeMap;

use crate::error::{bail, ensure, Result};

use super::dropout::Dropout;
use super::embedding::Embedding;
use super::gemm::Gemm;
use super::loss::CrossEntropy;
use super::merge::OutputStage;
use super::optim::OptimConfig;
use super::recurrent::RecurrentShape;

/// A tensor of a program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(pub(crate) usize);

impl TensorId {
    /// The tensor's index in its program's declarations.
    pub fn index(self) -> usize {
        self.0
    }
}

/// An op of a program (its index in recording order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub(crate) usize);

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    /// Values (f32 on the GPU; f32 or f64 on the CPU).
    Float,
    /// Indices: ids, class targets, lengths.
    U32,
}

/// What a tensor is for, which decides who writes it and how long it lives.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// A model parameter, shared by every program of an executor under this name.
    Param(String),
    /// Host data the caller writes before a run (features, targets, initial states).
    Input,
    /// Ids gathered by [`Op::Gather`] and scattered by [`Op::ScatterAdd`]: written by the
    /// caller, validated against the table's vocabulary on write.
    Ids(Embedding),
    /// Per-sequence lengths `[batch]` of the recurrent ops that read them, validated on
    /// write (packed-sequence semantics).
    Lengths,
    /// Written and read by the program's ops; zero at first, kept between runs.
    Work,
    /// Every element `value`, set once.
    Const(f32),
}

/// A tensor's declaration.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorDecl {
    /// What it is called in errors and reports.
    pub label: String,
    /// Its shape (row-major); the element count is the product.
    pub shape: Vec<usize>,
    /// Element type.
    pub dtype: DType,
    /// Role.
    pub kind: Kind,
}

impl TensorDecl {
    /// Elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One layer-direction of a recurrent stack over a whole sequence: reads `x`, the weights,
/// the initial states (regions `H0`, `C0` of `state`), the lengths and the recurrent
/// dropout mask; writes its columns of `y` and the final states (`HN`, `CN`). What backward
/// needs is kept by the executor for the [`RecurrentBackward`] that names this op.
#[derive(Clone, Debug, PartialEq)]
pub struct RecurrentForward {
    /// Sizes, direction and output columns.
    pub shape: RecurrentShape,
    /// `[rows, input]`.
    pub x: TensorId,
    /// `[rows, out_stride]`; this direction writes columns `out_offset..out_offset + H`.
    pub y: TensorId,
    /// `[G*H, input]`.
    pub w_ih: TensorId,
    /// `[G*H, H]`.
    pub w_hh: TensorId,
    /// `[G*H]`, absent meaning zero.
    pub b_ih: Option<TensorId>,
    /// `[G*H]`, absent meaning zero.
    pub b_hh: Option<TensorId>,
    /// `[STATE_REGIONS, B, H]`: see [`StateRegion`].
    pub state: TensorId,
    /// `[B]` lengths ([`Kind::Lengths`]); absent meaning every step.
    pub lengths: Option<TensorId>,
    /// `[B, H]` recurrent dropout mask (values 0 or 1/keep), absent meaning none.
    pub recurrent_mask: Option<TensorId>,
}

/// Backward through time of a [`RecurrentForward`] (run after it, in the same run or a
/// later phase): reads the output gradient `dy` (absent meaning zero) and the final-state
/// gradients (regions `DHN`, `DCN` of the forward's `state`); writes `dx` (added to what is
/// there when `accumulate_dx`, as for the shared input of a bidirectional layer), the
/// parameter gradients, and the initial-state gradients (`DH0`, and `DC`, which holds
/// `dc0` after a backward).
#[derive(Clone, Debug, PartialEq)]
pub struct RecurrentBackward {
    /// The forward op.
    pub forward: OpId,
    /// `[rows, out_stride]`, the forward's `y` layout.
    pub dy: Option<TensorId>,
    /// `[rows, input]`.
    pub dx: TensorId,
    /// Add to `dx` instead of overwriting it.
    pub accumulate_dx: bool,
    /// `[G*H, input]`.
    pub dw_ih: TensorId,
    /// `[G*H, H]`.
    pub dw_hh: TensorId,
    /// `[G*H]`, when the forward has biases.
    pub db_ih: Option<TensorId>,
    /// `[G*H]`, when the forward has biases.
    pub db_hh: Option<TensorId>,
}

/// Regions of a recurrent op's state tensor `[STATE_REGIONS, B, H]`, in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateRegion {
    /// Initial hidden state (read by the forward).
    H0 = 0,
    /// Initial cell state (LSTM).
    C0,
    /// Final hidden state (written by the forward).
    HN,
    /// Final cell state (LSTM).
    CN,
    /// Gradient of the final hidden state (read by the backward).
    DHN,
    /// Gradient of the final cell state.
    DCN,
    /// The running hidden-state gradient (backward's scratch).
    DH,
    /// The running cell-state gradient; `dc0` after a backward.
    DC,
    /// Gradient of the initial hidden state (written by the backward).
    DH0,
}

/// Regions of a recurrent state tensor.
pub const STATE_REGIONS: usize = 9;

impl StateRegion {
    /// Element offset of this region in a state tensor of `batch` x `hidden` regions.
    pub fn offset(self, batch: usize, hidden: usize) -> usize {
        self as usize * batch * hidden
    }
}

/// One operation of a program. Each names its tensors; the executor checks their sizes when
/// the program is loaded.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// `c = alpha * op(a) * op(b) + beta * c (+ bias per column)`.
    Gemm {
        /// Sizes, transposes, leading dimensions, offsets.
        spec: Gemm,
        /// Left operand.
        a: TensorId,
        /// Right operand.
        b: TensorId,
        /// Added to every row of the product.
        bias: Option<TensorId>,
        /// Result.
        c: TensorId,
    },
    /// See [`RecurrentForward`].
    RecurrentForward(RecurrentForward),
    /// See [`RecurrentBackward`].
    RecurrentBackward(RecurrentBackward),
    /// A recurrent stack's output from its last layer's concatenated directions.
    Merge {
        /// The stage.
        stage: OutputStage,
        /// `[rows, dirs * hidden]`.
        cat: TensorId,
        /// `[rows, width]`.
        out: TensorId,
    },
    /// The gradient of [`Op::Merge`] with respect to `cat`.
    MergeBackward {
        /// The stage.
        stage: OutputStage,
        /// The forward's input (the product mode needs it).
        cat: TensorId,
        /// Output gradient `[rows, width]`.
        d_out: TensorId,
        /// `[rows, dirs * hidden]`, overwritten.
        d_cat: TensorId,
    },
    /// A dropout mask of 0 and `1/keep`, drawn at each run from (seed, the run's step,
    /// stream): the same on every executor.
    DropoutMask {
        /// Sizes and keep probability.
        spec: Dropout,
        /// The dropout seed.
        seed: u64,
        /// Which mask of the step (each has its own stream).
        stream: u32,
        /// `[rows, features]` of the spec.
        mask: TensorId,
    },
    /// `x[(t, b), :] *= mask[b, :]` in place, one mask per sequence.
    RowMask {
        /// `[batch, features]`.
        mask: TensorId,
        /// `[steps * batch, features]`.
        x: TensorId,
        /// Steps per sequence.
        steps: usize,
        /// Rows are `[B, T]`.
        batch_first: bool,
    },
    /// `out[n, :] = table[ids[n], :]`.
    Gather {
        /// Vocabulary, width, padding.
        spec: Embedding,
        /// `[vocab, dim]`.
        table: TensorId,
        /// `[n]` ([`Kind::Ids`]).
        ids: TensorId,
        /// `[n, dim]`.
        out: TensorId,
    },
    /// `d_table[v, :] = sum of d_out[n, :] over n with ids[n] = v` (zero for unused rows
    /// and the padding row), overwriting `d_table`, in a fixed order.
    ScatterAdd {
        /// Vocabulary, width, padding.
        spec: Embedding,
        /// `[n]`.
        ids: TensorId,
        /// `[n, dim]`.
        d_out: TensorId,
        /// `[vocab, dim]`.
        d_table: TensorId,
    },
    /// Softmax cross-entropy of `logits` against class `targets`: writes the gradient of
    /// the mean loss into `d_logits` and the mean loss into `loss[0]`.
    CrossEntropy {
        /// Rows, classes, ignore index.
        spec: CrossEntropy,
        /// `[rows, classes]`.
        logits: TensorId,
        /// `[rows]` class ids (u32).
        targets: TensorId,
        /// `[rows, classes]`.
        d_logits: TensorId,
        /// `[1]`.
        loss: TensorId,
    },
    /// Mean squared error of `pred` against `target`: writes the gradient into `d_pred`
    /// and the mean loss into `loss[0]`.
    Mse {
        /// Predictions.
        pred: TensorId,
        /// Targets, the same size.
        target: TensorId,
        /// Gradient, the same size.
        d_pred: TensorId,
        /// `[1]`.
        loss: TensorId,
    },
    /// Copies `len` elements from `src[src_offset..]` to `dst[dst_offset..]`.
    Copy {
        /// Source.
        src: TensorId,
        /// First source element.
        src_offset: usize,
        /// Destination (another tensor).
        dst: TensorId,
        /// First destination element.
        dst_offset: usize,
        /// Elements.
        len: usize,
    },
    /// Sets every element of `dst` to zero.
    Zero {
        /// The tensor.
        dst: TensorId,
    },
    /// One optimizer step over `(name, parameter, gradient)` triples: clipping by the
    /// global norm over every gradient in this order, then each update, at the run's step
    /// (counted from 1). The optimizer state (moments) belongs to the executor, under the
    /// parameters' names.
    Optimize {
        /// Rule, clipping and learning-rate schedule.
        config: OptimConfig,
        /// What it updates, in clipping order.
        params: Vec<(String, TensorId, TensorId)>,
    },
}

/// A program: tensor declarations, ops, phase boundaries, and the tensors each phase hands
/// back to the host.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Program {
    tensors: Vec<TensorDecl>,
    ops: Vec<Op>,
    /// The first op of each phase after the first.
    phase_starts: Vec<usize>,
    /// Tensors read back after each phase (in the same submit on the GPU).
    readbacks: BTreeMap<usize, Vec<TensorId>>,
}

impl Program {
    /// The declarations, indexed by [`TensorId::index`].
    pub fn tensors(&self) -> &[TensorDecl] {
        &self.tensors
    }

    /// One declaration.
    pub fn tensor(&self, id: TensorId) -> &TensorDecl {
        &self.tensors[id.0]
    }

    /// Every op in recording order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Phases.
    pub fn phases(&self) -> usize {
        self.phase_starts.len() + 1
    }

    /// The phase op `op` belongs to.
    pub fn phase_of(&self, op: OpId) -> usize {
        self.phase_starts.iter().filter(|&&s| s <= op.0).count()
    }

    /// The ops of phase `phase`, with their ids.
    pub fn phase(&self, phase: usize) -> Result<impl Iterator<Item = (OpId, &Op)>> {
        ensure!(
            phase < self.phases(),
            Invalid,
            "phase {phase} does not exist: the program has {}",
            self.phases()
        );
        let start = if phase == 0 {
            0
        } else {
            self.phase_starts[phase - 1]
        };
        let end = self
            .phase_starts
            .get(phase)
            .copied()
            .unwrap_or(self.ops.len());
        Ok(self.ops[start..end]
            .iter()
            .enumerate()
            .map(move |(i, op)| (OpId(start + i), op)))
    }

    /// The tensors read back after `phase`.
    pub fn readbacks(&self, phase: usize) -> &[TensorId] {
        self.readbacks.get(&phase).map_or(&[], Vec::as_slice)
    }

    /// The names and shapes of the parameters the program uses.
    pub fn params(&self) -> impl Iterator<Item = (&str, &TensorDecl)> {
        self.tensors.iter().filter_map(|t| match &t.kind {
            Kind::Param(name) => Some((name.as_str(), t)),
            _ => None,
        })
    }

    /// The backward op of each recurrent forward that has one.
    pub fn recurrent_backwards(&self) -> BTreeMap<OpId, &RecurrentBackward> {
        self.ops
            .iter()
            .filter_map(|op| match op {
                Op::RecurrentBackward(b) => Some((b.forward, b)),
                _ => None,
            })
            .collect()
    }

    /// The recurrent forward op `id`.
    pub fn recurrent_forward(&self, id: OpId) -> Result<&RecurrentForward> {
        match self.ops.get(id.0) {
            Some(Op::RecurrentForward(f)) => Ok(f),
            _ => bail!(Invalid, "op {} is not a recurrent forward", id.0),
        }
    }
}

/// Records a [`Program`].
#[derive(Debug, Default)]
pub struct ProgramBuilder {
    program: Program,
    params: BTreeMap<String, TensorId>,
}

impl ProgramBuilder {
    /// An empty program.
    pub fn new() -> Self {
        Self::default()
    }

    fn declare(&mut self, label: &str, shape: &[usize], dtype: DType, kind: Kind) -> TensorId {
        self.program.tensors.push(TensorDecl {
            label: label.to_string(),
            shape: shape.to_vec(),
            dtype,
            kind,
        });
        TensorId(self.program.tensors.len() - 1)
    }

    /// The parameter `name` (declared once; a second call with the same shape returns the
    /// same tensor).
    pub fn param(&mut self, name: &str, shape: &[usize]) -> Result<TensorId> {
        if let Some(&id) = self.params.get(name) {
            let have = &self.program.tensors[id.0].shape;
            ensure!(
                have == shape,
                Shape,
                "parameter {name} is declared with shapes {have:?} and {shape:?}"
            );
            return Ok(id);
        }
        let id = self.declare(name, shape, DType::Float, Kind::Param(name.to_string()));
        self.params.insert(name.to_string(), id);
        Ok(id)
    }

    /// A float input the caller writes before a run.
    pub fn input(&mut self, label: &str, shape: &[usize]) -> TensorId {
        self.declare(label, shape, DType::Float, Kind::Input)
    }

    /// A u32 input (class targets).
    pub fn input_u32(&mut self, label: &str, shape: &[usize]) -> TensorId {
        self.declare(label, shape, DType::U32, Kind::Input)
    }

    /// `n` ids into the table `spec` describes.
    pub fn ids(&mut self, label: &str, spec: Embedding, n: usize) -> TensorId {
        self.declare(label, &[n], DType::U32, Kind::Ids(spec))
    }

    /// Lengths of `batch` sequences.
    pub fn lengths(&mut self, label: &str, batch: usize) -> TensorId {
        self.declare(label, &[batch], DType::U32, Kind::Lengths)
    }

    /// A work tensor (zero at first).
    pub fn tensor(&mut self, label: &str, shape: &[usize]) -> TensorId {
        self.declare(label, shape, DType::Float, Kind::Work)
    }

    /// A tensor of `value`s.
    pub fn constant(&mut self, label: &str, shape: &[usize], value: f32) -> TensorId {
        self.declare(label, shape, DType::Float, Kind::Const(value))
    }

    /// Records an op.
    pub fn op(&mut self, op: Op) -> OpId {
        self.program.ops.push(op);
        OpId(self.program.ops.len() - 1)
    }

    /// Ends the current phase: the ops recorded next run in the next one.
    pub fn next_phase(&mut self) {
        self.program.phase_starts.push(self.program.ops.len());
    }

    /// Reads `t` back after the current phase.
    pub fn read_back(&mut self, t: TensorId) {
        let phase = self.program.phase_starts.len();
        self.program.readbacks.entry(phase).or_default().push(t);
    }

    /// The declaration of `t`.
    pub fn decl(&self, t: TensorId) -> &TensorDecl {
        &self.program.tensors[t.0]
    }

    /// The finished program.
    pub fn finish(self) -> Program {
        self.program
    }
}
