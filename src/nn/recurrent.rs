//! `Recurrent`: a stack of recurrent layers, one or two directions each, with PyTorch's
//! parameter names and semantics (plus Keras's merge modes and `go_backwards`).
//!
//! This file holds the configuration, the parameters and the CPU execution (generic over f32
//! and f64, so the whole stack can be checked by finite differences); `gpu_recurrent.rs`
//! runs the same on the GPU.

use std::collections::BTreeMap;

use anyhow::{bail, ensure, Context, Result};
use rand::{Rng, SeedableRng};

use super::params::{HostTensor, Tensors};
use crate::cpu::recurrent::{backward, forward, infer, Saved, Weights};
use crate::cpu::Real;
use crate::ops::recurrent::{CellKind, RecurrentShape};

/// How the two directions of a bidirectional stack are combined in its output (Keras
/// `merge_mode`). Between stacked layers the directions are always concatenated, as PyTorch
/// does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    Concat,
    Sum,
    Mul,
    Ave,
}

impl Merge {
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "concat" => Merge::Concat,
            "sum" => Merge::Sum,
            "mul" => Merge::Mul,
            "ave" => Merge::Ave,
            _ => bail!("unknown merge mode {s:?}; expected concat, sum, mul or ave"),
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct RecurrentConfig {
    pub cell: CellKind,
    pub input_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub bidirectional: bool,
    pub merge: Merge,
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

    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.input_size > 0 && self.hidden_size > 0 && self.num_layers > 0,
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
            ensure!((0.0..1.0).contains(&p), "{name} must be in [0, 1), got {p}");
        }
        ensure!(
            !(self.go_backwards && self.bidirectional),
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
        let w = params.get("weight_hh_l0").context(
            "weights file has no weight_hh_l0 (expected PyTorch RNN/LSTM/GRU state_dict names)",
        )?;
        ensure!(
            w.shape.len() == 2,
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
                    "weight_hh_l0 has shape {:?}: not 4H, 3H or H rows by H columns",
                    w.shape
                ),
            },
        };
        let input = params
            .get("weight_ih_l0")
            .context("weights file has no weight_ih_l0")?
            .shape
            .get(1)
            .copied()
            .context("weight_ih_l0 must have 2 dimensions")?;
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

/// A recurrent stack and its parameters.
#[derive(Clone, Debug)]
pub struct Recurrent {
    pub config: RecurrentConfig,
    pub params: Tensors,
}

/// Outputs of a forward pass. `output` is [T, B, F] ([B, T, F] with batch_first); `h_n` and
/// `c_n` are [layers * directions, B, H] (`c_n` empty except for LSTM).
#[derive(Clone, Debug)]
pub struct RecurrentOutput<T> {
    pub output: Vec<T>,
    pub h_n: Vec<T>,
    pub c_n: Vec<T>,
}

/// Gradients of a backward pass, with `params` under the parameters' names.
#[derive(Clone, Debug)]
pub struct RecurrentGrads<T> {
    pub input: Vec<T>,
    pub h0: Vec<T>,
    pub c0: Vec<T>,
    pub params: BTreeMap<String, Vec<T>>,
}

/// What a CPU forward keeps for backward.
pub struct CpuTape<T> {
    /// Inputs of each layer ([rows, layer input]), after input dropout.
    inputs: Vec<Vec<T>>,
    /// Each layer's input dropout mask [B, layer input], in training.
    input_masks: Vec<Option<Vec<T>>>,
    /// Per layer and direction.
    saved: Vec<Vec<Saved<T>>>,
    /// The last layer's concatenated output (for the merge modes' backward).
    last: Vec<T>,
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
        let want = config.param_shapes();
        for (name, shape) in &want {
            let t = params
                .get(name)
                .with_context(|| format!("parameter {name} (shape {shape:?}) is missing"))?;
            ensure!(
                &t.shape == shape,
                "parameter {name} has shape {:?}, expected {shape:?}",
                t.shape
            );
            if let Some(bad) = t.data.iter().position(|v| !v.is_finite()) {
                bail!(
                    "parameter {name} holds a non-finite value ({}) at index {bad}",
                    t.data[bad]
                );
            }
        }
        if let Some(extra) = params.keys().find(|k| !want.iter().any(|(n, _)| n == *k)) {
            bail!(
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
        Ok(Self { config, params })
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
            "input has {} features per step, the layer expects input_size = {}",
            input_shape[2],
            c.input_size
        );
        ensure!(
            steps > 0 && batch > 0,
            "input has shape {input_shape:?}: no steps or no batch"
        );
        ensure!(
            input.len() == steps * batch * c.input_size,
            "input data does not match its shape {input_shape:?}"
        );
        if let Some(i) = input.iter().position(|v| !v.is_finite()) {
            bail!("input holds a non-finite value ({}) at index {i}", input[i]);
        }
        if let Some(l) = lengths {
            ensure!(
                !c.go_backwards,
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
                    "{name} has {} elements, expected [layers * directions, batch, hidden] = [{}, {batch}, {}]",
                    s.len(),
                    c.num_layers * c.directions(),
                    c.hidden_size
                );
                if let Some(i) = s.iter().position(|v| !v.is_finite()) {
                    bail!("{name} holds a non-finite value ({}) at index {i}", s[i]);
                }
            }
        }
        ensure!(
            c0.is_none() || c.cell.has_cell_state(),
            "c0 was given but a {} has no cell state",
            c.cell.name()
        );
        Ok((batch, steps))
    }

    fn weights<'a, T>(
        &self,
        converted: &'a BTreeMap<String, Vec<T>>,
        l: usize,
        d: usize,
    ) -> Weights<'a, T> {
        let s = RecurrentConfig::suffix(l, d);
        Weights {
            w_ih: &converted[&format!("weight_ih_{s}")],
            w_hh: &converted[&format!("weight_hh_{s}")],
            b_ih: converted.get(&format!("bias_ih_{s}")).map(|v| &v[..]),
            b_hh: converted.get(&format!("bias_hh_{s}")).map(|v| &v[..]),
        }
    }

    /// The parameters converted to `T`.
    pub fn params_as<T: Real>(&self) -> BTreeMap<String, Vec<T>> {
        self.params
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.data
                        .iter()
                        .map(|&x| T::from(x).unwrap_or_else(T::zero))
                        .collect(),
                )
            })
            .collect()
    }

    /// Forward on the CPU with parameters `p` (from [`Self::params_as`]). The input is
    /// assumed checked ([`Self::check_input`]).
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

    /// [`Self::forward_cpu`] in training mode when `train` is given: dropout masks keyed by
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
        let (out, tape) = self.run_cpu(p, input, batch, steps, lengths, h0, c0, train, true)?;
        Ok((out, tape.expect("a tape is kept when asked for")))
    }

    /// Forward on the CPU for inference: [`Self::forward_cpu`]'s outputs without a tape for
    /// backward (less memory written and kept), as PyTorch's forward under `no_grad`.
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
        Ok(self
            .run_cpu(p, input, batch, steps, lengths, h0, c0, None, false)?
            .0)
    }

    /// The forward of [`Self::forward_cpu_with`], keeping a tape where `keep_tape`.
    #[allow(clippy::too_many_arguments)]
    fn run_cpu<T: Real>(
        &self,
        p: &BTreeMap<String, Vec<T>>,
        input: &[T],
        batch: usize,
        steps: usize,
        lengths: Option<&[usize]>,
        h0: Option<&[T]>,
        c0: Option<&[T]>,
        train: Option<TrainKey>,
        keep_tape: bool,
    ) -> Result<(RecurrentOutput<T>, Option<CpuTape<T>>)> {
        let c = &self.config;
        let (h, dirs) = (c.hidden_size, c.directions());
        let rows = batch * steps;
        let state = batch * h;
        let mut h_n = vec![T::zero(); c.num_layers * dirs * state];
        let mut c_n = if c.cell.has_cell_state() {
            h_n.clone()
        } else {
            Vec::new()
        };
        let mut tape = CpuTape {
            inputs: Vec::new(),
            input_masks: Vec::new(),
            saved: Vec::new(),
            last: Vec::new(),
        };
        // The layer's input: borrowed from the caller until a layer's output replaces it, or
        // input dropout or the tape needs a copy of its own.
        let mut x = std::borrow::Cow::Borrowed(input);
        for l in 0..c.num_layers {
            let features = c.layer_input(l);
            let input_mask = match train {
                Some(key) => self.dropout_mask::<T>(key, DropoutKind::Input(l), batch, features)?,
                None => None,
            };
            if let Some(m) = &input_mask {
                let x = x.to_mut();
                crate::cpu::dropout::apply_rows(x, m, steps, features, c.batch_first)?;
            }
            let mut y = vec![T::zero(); rows * dirs * h];
            let mut layer_saved = Vec::new();
            for d in 0..dirs {
                let rmask = match train {
                    Some(key) => {
                        self.dropout_mask::<T>(key, DropoutKind::Recurrent(l, d), batch, h)?
                    }
                    None => None,
                };
                let shape = self.shape(l, d, batch, steps);
                let at = (l * dirs + d) * state;
                let (h0, c0) = (
                    h0.map(|v| &v[at..at + state]),
                    c0.map(|v| &v[at..at + state]),
                );
                let w = self.weights(p, l, d);
                let fin = if keep_tape {
                    let (fin, saved) =
                        forward(&shape, &x, lengths, h0, c0, &w, rmask.as_deref(), &mut y)?;
                    layer_saved.push(saved);
                    fin
                } else {
                    infer(&shape, &x, lengths, h0, c0, &w, &mut y)?
                };
                h_n[at..at + state].copy_from_slice(&fin.h_n);
                if c.cell.has_cell_state() {
                    c_n[at..at + state].copy_from_slice(&fin.c_n);
                }
            }
            let layer_input = std::mem::replace(&mut x, std::borrow::Cow::Owned(y));
            if keep_tape {
                tape.inputs.push(layer_input.into_owned());
                tape.input_masks.push(input_mask);
                tape.saved.push(layer_saved);
            }
        }
        let stage = OutputStage::of(c, batch, steps);
        if !keep_tape {
            // Without a tape the last layer's output is the output where no merge or flip
            // changes it: moved, not copied.
            let output = if stage.is_identity() {
                x.into_owned()
            } else {
                stage.forward(&x)
            };
            return Ok((RecurrentOutput { output, h_n, c_n }, None));
        }
        let output = stage.forward(&x);
        tape.last = x.into_owned();
        Ok((RecurrentOutput { output, h_n, c_n }, Some(tape)))
    }

    /// Backward on the CPU for the forward that produced `tape`. `d_output` has the output's
    /// layout; absent gradients are zero.
    pub fn backward_cpu<T: Real>(
        &self,
        p: &BTreeMap<String, Vec<T>>,
        tape: &CpuTape<T>,
        d_output: Option<&[T]>,
        d_h_n: Option<&[T]>,
        d_c_n: Option<&[T]>,
    ) -> Result<RecurrentGrads<T>> {
        let c = &self.config;
        let (h, dirs) = (c.hidden_size, c.directions());
        let rows = tape.last.len() / (dirs * h);
        let batch = tape.saved[0][0].h0.len() / h;
        let steps = rows / batch;
        let state = batch * h;
        let mut dy = match d_output {
            Some(d) => {
                ensure!(
                    d.len() == rows * c.output_size(),
                    "output gradient has {} elements, expected {}",
                    d.len(),
                    rows * c.output_size()
                );
                OutputStage::of(c, batch, steps).backward(&tape.last, d)
            }
            None => vec![T::zero(); rows * dirs * h],
        };
        let mut grads = RecurrentGrads {
            input: Vec::new(),
            h0: vec![T::zero(); c.num_layers * dirs * state],
            c0: if c.cell.has_cell_state() {
                vec![T::zero(); c.num_layers * dirs * state]
            } else {
                Vec::new()
            },
            params: BTreeMap::new(),
        };
        for l in (0..c.num_layers).rev() {
            let x = &tape.inputs[l];
            let mut dx = vec![T::zero(); x.len()];
            for d in 0..dirs {
                let shape = self.shape(l, d, batch, steps);
                let at = (l * dirs + d) * state;
                let g = backward(
                    &shape,
                    x,
                    &self.weights(p, l, d),
                    &tape.saved[l][d],
                    Some(&dy),
                    d_h_n.map(|v| &v[at..at + state]),
                    d_c_n.map(|v| &v[at..at + state]),
                )?;
                for (a, b) in dx.iter_mut().zip(&g.dx) {
                    *a = *a + *b;
                }
                grads.h0[at..at + state].copy_from_slice(&g.dh0);
                if c.cell.has_cell_state() {
                    grads.c0[at..at + state].copy_from_slice(&g.dc0);
                }
                let s = RecurrentConfig::suffix(l, d);
                grads.params.insert(format!("weight_ih_{s}"), g.dw_ih);
                grads.params.insert(format!("weight_hh_{s}"), g.dw_hh);
                if c.bias {
                    grads.params.insert(format!("bias_ih_{s}"), g.db_ih);
                    grads.params.insert(format!("bias_hh_{s}"), g.db_hh);
                }
            }
            if let Some(m) = &tape.input_masks[l] {
                crate::cpu::dropout::apply_rows(
                    &mut dx,
                    m,
                    steps,
                    c.layer_input(l),
                    c.batch_first,
                )?;
            }
            dy = dx;
        }
        grads.input = dy;
        Ok(grads)
    }
}

/// Which mask of a training step (each has its own Philox stream).
#[derive(Clone, Copy, Debug)]
pub enum DropoutKind {
    /// On the inputs of layer l.
    Input(usize),
    /// On the recurrent state of layer l, direction d.
    Recurrent(usize, usize),
}

impl DropoutKind {
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
    pub seed: u64,
    pub step: u64,
}

impl Recurrent {
    /// The dropout probability of a mask kind.
    pub fn dropout_rate(&self, kind: DropoutKind) -> f32 {
        match kind {
            DropoutKind::Input(0) => self.config.input_dropout,
            DropoutKind::Input(_) => self.config.dropout,
            DropoutKind::Recurrent(..) => self.config.recurrent_dropout,
        }
    }

    /// A [batch, features] mask (values 0 or 1/keep) for one kind, or `None` when its
    /// rate is zero.
    pub fn dropout_mask<T: Real>(
        &self,
        key: TrainKey,
        kind: DropoutKind,
        batch: usize,
        features: usize,
    ) -> Result<Option<Vec<T>>> {
        let rate = self.dropout_rate(kind);
        if rate == 0.0 {
            return Ok(None);
        }
        let mut mask = vec![T::zero(); batch * features];
        let spec = crate::ops::Dropout::new(batch, features, 1.0 - rate);
        let dkey = crate::ops::DropoutKey {
            seed: key.seed,
            step: key.step,
            stream: kind.stream(),
        };
        crate::cpu::dropout::mask(&spec, dkey, &mut mask)?;
        Ok(Some(mask))
    }
}

/// The last step of a forward: combine the directions (merge mode) and, for
/// `go_backwards`, put the outputs in processing order (time reversed). The CPU twin of
/// `shaders/merge.wgsl`.
#[derive(Clone, Copy, Debug)]
pub struct OutputStage {
    pub merge: Merge,
    pub dirs: usize,
    pub hidden: usize,
    pub flip: bool,
    pub steps: usize,
    pub batch: usize,
    pub batch_first: bool,
}

impl OutputStage {
    pub fn of(config: &RecurrentConfig, batch: usize, steps: usize) -> Self {
        Self {
            merge: config.merge,
            dirs: config.directions(),
            hidden: config.hidden_size,
            flip: config.go_backwards,
            steps,
            batch,
            batch_first: config.batch_first,
        }
    }

    /// Whether the output differs from the concatenated directions at all.
    pub fn is_identity(&self) -> bool {
        !self.flip && (self.dirs == 1 || self.merge == Merge::Concat)
    }

    /// Output features per row.
    pub fn width(&self) -> usize {
        if self.dirs == 2 && self.merge == Merge::Concat {
            2 * self.hidden
        } else {
            self.hidden
        }
    }

    /// The concatenated row that output row `row` comes from.
    pub fn source_row(&self, row: usize) -> usize {
        if !self.flip {
            return row;
        }
        let (t, b) = if self.batch_first {
            (row % self.steps, row / self.steps)
        } else {
            (row / self.batch, row % self.batch)
        };
        let t = self.steps - 1 - t;
        if self.batch_first {
            b * self.steps + t
        } else {
            t * self.batch + b
        }
    }

    fn combine<T: Real>(&self, a: T, b: T) -> T {
        match self.merge {
            Merge::Sum => a + b,
            Merge::Mul => a * b,
            Merge::Ave => (a + b) * T::from(0.5).unwrap_or_else(T::zero),
            Merge::Concat => a,
        }
    }

    /// The output from the concatenated directions `[rows, dirs * hidden]`.
    pub fn forward<T: Real>(&self, cat: &[T]) -> Vec<T> {
        if self.is_identity() {
            return cat.to_vec();
        }
        let (h, cw, w) = (self.hidden, self.dirs * self.hidden, self.width());
        let rows = cat.len() / cw;
        let mut out = vec![T::zero(); rows * w];
        for (row, o) in out.chunks_exact_mut(w).enumerate() {
            let src = &cat[self.source_row(row) * cw..][..cw];
            if w == cw {
                o.copy_from_slice(src);
            } else {
                for k in 0..h {
                    o[k] = self.combine(src[k], src[h + k]);
                }
            }
        }
        out
    }

    /// The gradient with respect to the concatenated directions.
    pub fn backward<T: Real>(&self, cat: &[T], d_out: &[T]) -> Vec<T> {
        if self.is_identity() {
            return d_out.to_vec();
        }
        let (h, cw, w) = (self.hidden, self.dirs * self.hidden, self.width());
        let mut d_cat = vec![T::zero(); cat.len()];
        let half = T::from(0.5).unwrap_or_else(T::zero);
        for (row, g) in d_out.chunks_exact(w).enumerate() {
            let src = self.source_row(row) * cw;
            if w == cw {
                d_cat[src..src + cw].copy_from_slice(g);
                continue;
            }
            for k in 0..h {
                let (a, b) = (cat[src + k], cat[src + h + k]);
                let (da, db) = match self.merge {
                    Merge::Sum => (g[k], g[k]),
                    Merge::Mul => (g[k] * b, g[k] * a),
                    Merge::Ave => (g[k] * half, g[k] * half),
                    Merge::Concat => unreachable!("a concatenation has the full width"),
                };
                d_cat[src + k] = da;
                d_cat[src + h + k] = db;
            }
        }
        d_cat
    }
}
