//! One recurrent layer in one direction over a padded batch: the description shared by the
//! GPU kernels (`shaders/recurrent.wgsl`, `src/gpu/recurrent.rs`) and the CPU twin
//! (`src/cpu/recurrent.rs`).
//!
//! Cells and gate order are PyTorch's: RNN `h' = f(W_ih x + b_ih + W_hh h + b_hh)`; LSTM gates
//! `i, f, g, o`; GRU gates `r, z, n`, with the reset gate applied after the recurrent product
//! (PyTorch, cuDNN) or before it (the classic formula, Keras `reset_after=False`).
//!
//! Layout. A sequence tensor has one row per (time t, batch b): row `t * B + b` (time-major)
//! or `b * T + t` (batch-first). Every per-(t, b) buffer below uses the same rows:
//! - `x` [rows, I], `xw` [rows, G*H] (input projections plus `b_ih`),
//! - `y` [rows, out_stride] (the output occupies columns `out_offset .. out_offset + H`, so
//!   the two directions of a bidirectional layer write one concatenated buffer),
//! - saved for backward: `hprev` [rows, H] (the state entering each step), `cell` [rows, H]
//!   (LSTM: the cell state after each step), `act` [rows, A*H] (see [`CellKind::act_width`]).
//!
//! Variable lengths follow PyTorch's packed sequences: batch entry `b` has `len[b]` valid
//! steps; its outputs past that are zero and its state stops changing. The forward direction
//! processes time `t = s` at step `s`, the reverse direction `t = len[b] - 1 - s`, so it starts
//! at each sequence's own last valid step.

use crate::error::{bail, ensure, err, Result};

/// The recurrent cell. Serialised and parsed by its name ("lstm", "gru",
/// "gru-reset-before", "rnn-tanh", "rnn-relu"; "rnn" is read as "rnn-tanh").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum CellKind {
    /// Elman RNN with tanh: `h' = tanh(W_ih x + b_ih + W_hh h + b_hh)`.
    RnnTanh,
    /// Elman RNN with ReLU.
    RnnRelu,
    /// LSTM, gates `i, f, g, o`.
    Lstm,
    /// Reset gate applied after the recurrent product: `n = tanh(W_in x + b_in + r * (W_hn h + b_hn))`.
    Gru,
    /// Reset gate applied before it: `n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)`.
    GruResetBefore,
}

impl CellKind {
    /// Every cell, in the order of [`Self::code`].
    pub const ALL: [CellKind; 5] = [
        CellKind::RnnTanh,
        CellKind::RnnRelu,
        CellKind::Lstm,
        CellKind::Gru,
        CellKind::GruResetBefore,
    ];

    /// Gates per hidden unit: the rows of `W_ih` and `W_hh` are `gates * H`.
    pub fn gates(self) -> usize {
        match self {
            CellKind::RnnTanh | CellKind::RnnRelu => 1,
            CellKind::Lstm => 4,
            CellKind::Gru | CellKind::GruResetBefore => 3,
        }
    }

    /// Values per unit saved for backward in `act`: RNN the output `h`; LSTM the activated
    /// gates `i, f, g, o`; GRU `r, z, n` and `W_hn h + b_hn`; GRU reset-before `r, z, n` and
    /// `r * h`.
    pub fn act_width(self) -> usize {
        match self {
            CellKind::RnnTanh | CellKind::RnnRelu => 1,
            CellKind::Lstm | CellKind::Gru | CellKind::GruResetBefore => 4,
        }
    }

    /// Whether the cell carries a cell state `c` besides `h` (LSTM only).
    pub fn has_cell_state(self) -> bool {
        self == CellKind::Lstm
    }

    /// The index the kernels use for this cell (`override CELL` in `recurrent.wgsl`).
    pub fn code(self) -> u32 {
        match self {
            CellKind::RnnTanh => 0,
            CellKind::RnnRelu => 1,
            CellKind::Lstm => 2,
            CellKind::Gru => 3,
            CellKind::GruResetBefore => 4,
        }
    }

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            CellKind::RnnTanh => "rnn-tanh",
            CellKind::RnnRelu => "rnn-relu",
            CellKind::Lstm => "lstm",
            CellKind::Gru => "gru",
            CellKind::GruResetBefore => "gru-reset-before",
        }
    }

    /// The cell of a name ([`Self::name`]; "rnn" is "rnn-tanh", as PyTorch's `nn.RNN`).
    pub fn parse(name: &str) -> Result<Self> {
        if name == "rnn" {
            return Ok(CellKind::RnnTanh);
        }
        Self::ALL
            .into_iter()
            .find(|c| c.name() == name)
            .ok_or_else(|| err!(Invalid, "unknown cell {name:?}; expected one of lstm, gru, gru-reset-before, rnn-tanh, rnn-relu"))
    }
}

impl std::str::FromStr for CellKind {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl std::fmt::Display for CellKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl TryFrom<String> for CellKind {
    type Error = crate::Error;
    fn try_from(s: String) -> Result<Self> {
        Self::parse(&s)
    }
}

impl From<CellKind> for String {
    fn from(c: CellKind) -> String {
        c.name().to_string()
    }
}

/// Marks a step at which a batch entry is past its length (in [`RecurrentShape::step_map`]).
pub const STEP_INACTIVE: u32 = 1 << 31;
/// Marks the last valid step of a batch entry, where its final state is written.
pub const STEP_LAST: u32 = 1 << 30;
/// The time index inside a step-map entry.
pub const STEP_TIME_MASK: u32 = (1 << 30) - 1;

/// One layer, one direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecurrentShape {
    /// The recurrent cell.
    pub cell: CellKind,
    /// Input features `I`: the columns of `x` and of `W_ih`.
    pub input: usize,
    /// Hidden units `H`.
    pub hidden: usize,
    /// Batch entries `B`.
    pub batch: usize,
    /// Steps `T` of the padded sequence.
    pub steps: usize,
    /// Process each sequence from its last valid step to its first.
    pub reverse: bool,
    /// Rows are `b * T + t` instead of `t * B + b`.
    pub batch_first: bool,
    /// Row stride of `y` and `dy` (H for a single direction, 2H for a concatenated pair).
    pub out_stride: usize,
    /// First column of this direction's output in `y`.
    pub out_offset: usize,
}

impl RecurrentShape {
    /// A forward-direction, time-major shape writing a packed `[rows, H]` output.
    pub fn new(cell: CellKind, input: usize, hidden: usize, batch: usize, steps: usize) -> Self {
        Self {
            cell,
            input,
            hidden,
            batch,
            steps,
            reverse: false,
            batch_first: false,
            out_stride: hidden,
            out_offset: 0,
        }
    }

    /// Whether `second` can run beside this shape as the other direction of one layer: the
    /// same cell, sizes and layout, its output columns after this shape's.
    pub fn pairs_with(&self, second: &RecurrentShape) -> bool {
        let sizes = |s: &RecurrentShape| {
            (
                s.cell,
                s.input,
                s.hidden,
                s.batch,
                s.steps,
                s.batch_first,
                s.out_stride,
            )
        };
        sizes(self) == sizes(second) && second.out_offset >= self.out_offset + self.hidden
    }

    /// Sets whether the direction runs from each sequence's last valid step to its first.
    pub fn reverse(mut self, reverse: bool) -> Self {
        self.reverse = reverse;
        self
    }

    /// Sets whether the rows are batch-first (`b * T + t`) rather than time-major.
    pub fn batch_first(mut self, batch_first: bool) -> Self {
        self.batch_first = batch_first;
        self
    }

    /// Writes the output into columns `offset .. offset + H` of rows `stride` wide.
    pub fn output_columns(mut self, stride: usize, offset: usize) -> Self {
        self.out_stride = stride;
        self.out_offset = offset;
        self
    }

    /// Rows of every sequence tensor: T * B.
    pub fn rows(&self) -> usize {
        self.steps * self.batch
    }

    /// `gates * H`.
    pub fn gate_width(&self) -> usize {
        self.cell.gates() * self.hidden
    }

    /// The row of (time t, batch b).
    pub fn row(&self, t: usize, b: usize) -> usize {
        if self.batch_first {
            b * self.steps + t
        } else {
            t * self.batch + b
        }
    }

    /// Floating-point operations of one forward pass (multiply and add counted apart),
    /// counting the matrix products and ignoring the elementwise gate work.
    pub fn forward_flops(&self) -> f64 {
        let (rows, gw) = (self.rows() as f64, self.gate_width() as f64);
        2.0 * rows * gw * (self.input as f64 + self.hidden as f64)
    }

    /// Checks sizes and lengths; returns the lengths to use (all T when none are given).
    pub fn validate(&self, lengths: Option<&[usize]>) -> Result<Vec<usize>> {
        let s = self;
        if s.input == 0 || s.hidden == 0 || s.batch == 0 || s.steps == 0 {
            bail!(
                Shape, "recurrent layer needs non-zero sizes, got input = {}, hidden = {}, batch = {}, steps = {}",
                s.input,
                s.hidden,
                s.batch,
                s.steps
            );
        }
        ensure!(
            s.out_offset + s.hidden <= s.out_stride,
            Shape,
            "output columns {}..{} do not fit rows of {}",
            s.out_offset,
            s.out_offset + s.hidden,
            s.out_stride
        );
        ensure!(
            s.steps <= STEP_TIME_MASK as usize,
            Limit,
            "{} steps are more than the kernels can index",
            s.steps
        );
        let lengths = match lengths {
            None => vec![s.steps; s.batch],
            Some(l) => {
                ensure!(
                    l.len() == s.batch,
                    Shape,
                    "lengths has {} entries, expected one per batch entry ({})",
                    l.len(),
                    s.batch
                );
                if let Some((b, &len)) = l
                    .iter()
                    .enumerate()
                    .find(|(_, &len)| len == 0 || len > s.steps)
                {
                    bail!(
                        Shape, "lengths[{b}] = {len} is outside 1..={} (a sequence needs at least one step and at most T)",
                        s.steps
                    );
                }
                l.to_vec()
            }
        };
        Ok(lengths)
    }

    /// Checks the element counts of the input, the output and the parameters (biases
    /// optional), naming what does not fit.
    pub fn check_buffers(
        &self,
        x: usize,
        y: usize,
        w_ih: usize,
        w_hh: usize,
        b_ih: Option<usize>,
        b_hh: Option<usize>,
    ) -> Result<()> {
        let (gw, rows) = (self.gate_width(), self.rows());
        let check = |what: &str, have: usize, want: usize| -> Result<()> {
            ensure!(
                have == want,
                Shape,
                "{what} has {have} elements, expected {want}"
            );
            Ok(())
        };
        check("input", x, rows * self.input)?;
        check("output", y, rows * self.out_stride)?;
        check("weight_ih", w_ih, gw * self.input)?;
        check("weight_hh", w_hh, gw * self.hidden)?;
        if let Some(b) = b_ih {
            check("bias_ih", b, gw)?;
        }
        if let Some(b) = b_hh {
            check("bias_hh", b, gw)?;
        }
        Ok(())
    }

    /// The time index batch entry `b` (of length `len`) processes at step `s`, if any.
    pub fn time_at(&self, step: usize, len: usize) -> Option<usize> {
        if step >= len {
            None
        } else if self.reverse {
            Some(len - 1 - step)
        } else {
            Some(step)
        }
    }

    /// For every step s and batch entry b, at `s * B + b`: the time index processed, or
    /// [`STEP_INACTIVE`]; [`STEP_LAST`] is set on each entry's last valid step. The kernels
    /// read this instead of the lengths.
    pub fn step_map(&self, lengths: &[usize]) -> Vec<u32> {
        let mut map = Vec::with_capacity(self.rows());
        for s in 0..self.steps {
            for &len in lengths {
                map.push(match self.time_at(s, len) {
                    None => STEP_INACTIVE,
                    Some(t) => t as u32 | if s + 1 == len { STEP_LAST } else { 0 },
                });
            }
        }
        map
    }
}

// Which saved activations f16 storage keeps in f16: one rule for the kernels
// (`shaders/recurrent.wgsl`), their host side (`gpu::recurrent::Precision`) and the CPU twin
// (`cpu::precision`).

/// How many of `cell`'s saved activations ([`crate::cpu::recurrent::Saved::act`]) f16 storage
/// keeps in f16 ([`is_f16_activation`] says which): LSTM's i, f, g, o and GRU's r, z, n,
/// W_hn h + b_hn, which one invocation writes at once as two pairs; GRU reset-before's r and
/// n, one pair written by the step's two dispatches in turn. Reset-before's z stays f32: the
/// step's second dispatch reads it to compute h, so a rounded z would move the forward; and
/// so does r * h, an operand of products. RNN saves none on the GPU: its backward reads its
/// output.
pub fn f16_activations(cell: CellKind) -> usize {
    match cell {
        CellKind::Lstm | CellKind::Gru => 4,
        CellKind::GruResetBefore => 2,
        CellKind::RnnTanh | CellKind::RnnRelu => 0,
    }
}

/// How many of `cell`'s activations 0 .. `a` f16 storage keeps in f16 (`f16_below` in
/// `shaders/recurrent.wgsl`): for GRU reset-before the even ones, r and n; else the first
/// [`f16_activations`].
pub fn f16_below(cell: CellKind, a: usize) -> usize {
    let below = match cell {
        CellKind::GruResetBefore => a.div_ceil(2),
        _ => a,
    };
    below.min(f16_activations(cell))
}

/// Whether f16 storage keeps `cell`'s activation `a` in f16.
pub fn is_f16_activation(cell: CellKind, a: usize) -> bool {
    f16_below(cell, a + 1) > f16_below(cell, a)
}
