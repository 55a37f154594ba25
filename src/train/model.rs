//! `SequenceModel`: an optional `Embedding`, a `Recurrent` stack, a `Dense` head (at every
//! step or on the last step) and a loss (softmax cross-entropy or mean squared error).
//! Parameters are named as a PyTorch module with children `embedding`, `rnn` and `fc`
//! names them (`embedding.weight`, `rnn.weight_ih_l0`, `fc.weight`, `fc.bias`).
//!
//! Batches are time-major: step `t` of sequence `b` is row `t * batch + b`.
//!
//! This file also holds the CPU forward and backward of the whole model, generic over f32
//! and f64 (the CPU trainer and the finite-difference checks use it).

use std::collections::BTreeMap;

use crate::error::{bail, ensure, err, Result};
use serde::{Deserialize, Serialize};

use super::trainer::cpu_pass;
use crate::cpu::Real;
use crate::exec::{CpuExecutor, Executor, ProgramId};
use crate::nn::recurrent::TrainKey;
use crate::nn::{
    Dense, DenseRows, Embedding, EmbeddingInit, RecordedStack, Recurrent, RecurrentConfig, Tensors,
};
use crate::ops::loss::CrossEntropy;
use crate::ops::program::{Op, ProgramBuilder, StateRegion, TensorId};
use crate::ops::recurrent::CellKind;

/// Where the dense head reads the recurrent output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Head {
    /// Every timestep (many to many): one output row per step and sequence.
    EveryStep,
    /// Only the last timestep (many to one): one output row per sequence.
    LastStep,
}

/// The training loss on the dense output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Loss {
    /// Softmax cross-entropy over the outputs as classes, targets below `outputs` (or the
    /// ignore index).
    CrossEntropy {
        /// A target class whose rows add nothing to the loss or the gradient (PyTorch's
        /// `ignore_index`); the mean is over the other rows.
        ignore_index: Option<u32>,
    },
    /// Mean squared error over every output value, as `torch.nn.MSELoss(reduction="mean")`;
    /// targets are [`Targets::Values`].
    MeanSquaredError,
}

/// The model's architecture, without its parameters (kept beside them in checkpoints).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Vocabulary size and embedding width; `None` takes `input_size` features per step.
    pub embedding: Option<EmbeddingSpec>,
    /// Features per step without an embedding (ignored with one: the embedding width is
    /// the recurrent input).
    pub input_size: usize,
    /// The recurrent cell.
    pub cell: CellKind,
    /// Hidden units per layer and direction.
    pub hidden_size: usize,
    /// Stacked recurrent layers.
    pub num_layers: usize,
    /// Whether every layer runs both directions (the head then reads `2 * hidden_size`).
    pub bidirectional: bool,
    /// Output values per row of the head: classes for cross-entropy, regression targets
    /// for mean squared error.
    pub outputs: usize,
    /// Which steps the head reads.
    pub head: Head,
    /// The training loss.
    pub loss: Loss,
    /// Dropout while training (none by default); kept in checkpoints, so a resumed run
    /// draws the same masks.
    #[serde(default)]
    pub dropout: DropoutRates,
}

/// The embedding table in front of the recurrent stack (PyTorch `nn.Embedding`, Keras
/// `Embedding`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddingSpec {
    /// Vocabulary size.
    pub input_dim: usize,
    /// Values per id.
    pub output_dim: usize,
    /// A padding id (no gradient; trailing it ends a sequence).
    pub padding: Option<u32>,
    /// Whether training updates the table.
    pub trainable: bool,
    /// How a fresh table is drawn (Keras's uniform ±0.05 unless said otherwise).
    #[serde(default)]
    pub init: EmbeddingInit,
}

/// A batch of `batch` sequences of `steps` steps, time-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Sequences in the batch.
    pub batch: usize,
    /// Time steps per sequence.
    pub steps: usize,
    /// `steps * batch` rows of inputs, time-major.
    pub inputs: Inputs,
    /// One target row per output row of the head: `steps * batch` rows (time-major) for
    /// [`Head::EveryStep`], `batch` for [`Head::LastStep`].
    pub targets: Targets,
    /// Per-sequence lengths (PyTorch packed-sequence semantics), or all `steps`. Without
    /// them, an embedding with a padding id (Keras `mask_zero`) gives each sequence the
    /// length before its first padding id ([`SequenceModel::lengths`]).
    pub lengths: Option<Vec<usize>>,
}

/// The inputs of a [`Batch`]: ids for a model with an embedding, feature values without.
#[derive(Clone, Debug, PartialEq)]
pub enum Inputs {
    /// Embedding ids [steps, batch].
    Ids(Vec<u32>),
    /// Features [steps, batch, input_size].
    Values(Vec<f32>),
}

/// The targets of a [`Batch`]: classes for [`Loss::CrossEntropy`], values for
/// [`Loss::MeanSquaredError`].
#[derive(Clone, Debug, PartialEq)]
pub enum Targets {
    /// One class per output row.
    Classes(Vec<u32>),
    /// `outputs` values per output row.
    Values(Vec<f32>),
}

/// A sequence model and its parameters.
#[derive(Clone, Debug)]
pub struct SequenceModel {
    /// The architecture the parameters below follow.
    pub spec: ModelSpec,
    /// The embedding table (`embedding.weight`), where the spec has one.
    pub embedding: Option<Embedding>,
    /// The recurrent stack (`rnn.*`).
    pub rnn: Recurrent,
    /// The dense head (`fc.weight`, `fc.bias`).
    pub dense: Dense,
}

/// Dropout in the recurrent stack while training (off in evaluation): Keras `dropout` on the
/// first layer's inputs, PyTorch's `dropout` on the inputs of the layers above, Keras
/// `recurrent_dropout` on the state the recurrent product sees; one mask per sequence,
/// drawn from `seed` and the step number, the same on the CPU and the GPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DropoutRates {
    /// Rate on the first layer's inputs (Keras `dropout`), in `[0, 1)`.
    pub input: f32,
    /// Rate on the inputs of the layers above the first (PyTorch's `dropout`), in `[0, 1)`.
    pub between_layers: f32,
    /// Rate on the state the recurrent product reads (Keras `recurrent_dropout`), in `[0, 1)`.
    pub recurrent: f32,
    /// Seed of the masks (with the step number).
    pub seed: u64,
}

impl DropoutRates {
    /// Checks every rate is in [0, 1), naming a bad one by its field (``dropout rate `input`
    /// 1.5 is invalid``; the command line adds its flag).
    pub fn validate(&self) -> Result<()> {
        for (field, rate) in [
            ("input", self.input),
            ("between_layers", self.between_layers),
            ("recurrent", self.recurrent),
        ] {
            ensure!(
                rate.is_finite() && (0.0..1.0).contains(&rate),
                Invalid,
                "dropout rate `{field}` {rate} is invalid: expected a rate in [0, 1)"
            );
        }
        Ok(())
    }

    /// `config` with these rates (checked by its `validate`).
    pub fn applied_to(&self, config: &RecurrentConfig) -> Result<RecurrentConfig> {
        let mut c = config.clone();
        c.input_dropout = self.input;
        c.dropout = self.between_layers;
        c.recurrent_dropout = self.recurrent;
        c.validate()?;
        Ok(c)
    }
}

/// Named tensors' values as `T`, by name.
pub fn tensors_as<T: Real>(t: Tensors) -> BTreeMap<String, Vec<T>> {
    t.into_iter()
        .map(|(k, v)| {
            let data = v.data.iter().map(|&x| T::from(x).unwrap_or_else(T::nan));
            (k, data.collect())
        })
        .collect()
}

/// The entries whose names start with `prefix`, under the rest of their names (a child
/// module's parameters, as PyTorch's `state_dict` nests them).
pub fn with_prefix<V: Clone>(named: &BTreeMap<String, V>, prefix: &str) -> BTreeMap<String, V> {
    named
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|s| (s.to_string(), v.clone())))
        .collect()
}

/// What a recorded pass computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// The forward to the outputs (no targets).
    Predict,
    /// The forward and the loss.
    Evaluate,
    /// Forward, loss and backward; with `dropout`, the model's dropout masks are drawn.
    Train {
        /// Draw the model's dropout masks.
        dropout: bool,
    },
}

/// A recorded pass of a model: the tensors a batch is written into, the outputs, the loss,
/// the gradients by parameter name, and the recurrent stack (its states).
#[derive(Clone, Debug)]
pub struct Recorded<I> {
    /// The model's inputs.
    pub inputs: I,
    /// The outputs `[rows, outputs]`.
    pub output: TensorId,
    /// The mean loss `[1]` (evaluation and training).
    pub loss: Option<TensorId>,
    /// Gradients of the trainable parameters by name (training).
    pub grads: BTreeMap<String, TensorId>,
    /// The recurrent stack (a decoder's, for an encoder-decoder).
    pub stack: RecordedStack,
}

/// The input tensors of a [`SequenceModel`] pass.
#[derive(Clone, Copy, Debug)]
pub struct SeqInputs {
    /// Ids (with an embedding) or features.
    pub x: TensorId,
    /// Per-sequence lengths.
    pub lengths: TensorId,
    /// A last-step head's row of each sequence.
    pub last_rows: Option<TensorId>,
    /// Class ids or values (evaluation and training).
    pub targets: Option<TensorId>,
}

/// The CPU results of one batch: the mean loss, the gradients by parameter name (when
/// asked), and the final states.
pub struct CpuPass<T> {
    /// Mean loss.
    pub loss: T,
    /// The dense outputs [rows, outputs].
    pub output: Vec<T>,
    /// Gradients by name.
    pub grads: Option<BTreeMap<String, Vec<T>>>,
    /// Final hidden states.
    pub h_n: Vec<T>,
    /// Final cell states.
    pub c_n: Vec<T>,
    /// The gradients of the initial states (with `grads`; empty otherwise, and `d_c0`
    /// without a cell state).
    pub d_h0: Vec<T>,
    /// See `d_h0`.
    pub d_c0: Vec<T>,
}

impl SequenceModel {
    /// A fresh model, every layer initialised from `seed` (dropout masks are keyed by
    /// `spec.dropout.seed`).
    pub fn new(spec: ModelSpec, seed: u64) -> Result<Self> {
        let embedding = match &spec.embedding {
            Some(e) => {
                let mut layer =
                    Embedding::with_init(e.input_dim, e.output_dim, e.init, seed ^ 0x9e37)?;
                if let Some(p) = e.padding {
                    layer = layer.with_padding(p)?;
                }
                layer.trainable = e.trainable;
                Some(layer)
            }
            None => None,
        };
        let rnn = Recurrent::new(Self::rnn_config(&spec)?, seed)?;
        let dense = Dense::new(rnn.config.output_size(), spec.outputs, seed ^ 0x51ed)?;
        let dropout = spec.dropout;
        let mut model = Self {
            spec,
            embedding,
            rnn,
            dense,
        };
        model.set_dropout(dropout)?;
        Ok(model)
    }

    fn rnn_config(spec: &ModelSpec) -> Result<RecurrentConfig> {
        let input = match &spec.embedding {
            Some(e) => e.output_dim,
            None => spec.input_size,
        };
        ensure!(
            spec.outputs > 0,
            Invalid,
            "a model needs at least one output"
        );
        let mut c = RecurrentConfig::new(spec.cell, input, spec.hidden_size);
        c.num_layers = spec.num_layers;
        c.bidirectional = spec.bidirectional;
        c.validate()?;
        Ok(c)
    }

    /// A model from its spec and named parameters (as [`Self::named_params`] gives them).
    pub fn from_params(spec: ModelSpec, params: &Tensors) -> Result<Self> {
        let mut model = Self::new(spec, 0)?;
        model.set_params(params)?;
        Ok(model)
    }

    /// Replaces every parameter by the one of the same name (all must be present, with
    /// their shapes).
    pub fn set_params(&mut self, params: &Tensors) -> Result<()> {
        for (name, t) in self.named_params() {
            let new = params.get(&name).ok_or_else(|| {
                err!(Invalid, "parameter {name} (shape {:?}) is missing", t.shape)
            })?;
            ensure!(
                new.shape == t.shape,
                Shape,
                "parameter {name} has shape {:?}, expected {:?}",
                new.shape,
                t.shape
            );
            if let Some(i) = new.data.iter().position(|v| !v.is_finite()) {
                bail!(
                    Numerics,
                    "parameter {name} holds a non-finite value at index {i}"
                );
            }
        }
        if let Some(e) = &mut self.embedding {
            e.weight = params["embedding.weight"].clone();
        }
        self.rnn.set_params(with_prefix(params, "rnn."))?;
        for (name, t) in self.dense.params.iter_mut() {
            *t = params[&format!("fc.{name}")].clone();
        }
        Ok(())
    }

    /// Every parameter under its PyTorch name.
    pub fn named_params(&self) -> Tensors {
        let mut out = Tensors::new();
        if let Some(e) = &self.embedding {
            out.insert("embedding.weight".into(), e.weight.clone());
        }
        for (k, v) in self.rnn.params() {
            out.insert(format!("rnn.{k}"), v.clone());
        }
        for (k, v) in &self.dense.params {
            out.insert(format!("fc.{k}"), v.clone());
        }
        out
    }

    /// The names of the parameters training updates (a frozen embedding is left out).
    pub fn trainable_names(&self) -> Vec<String> {
        self.named_params()
            .into_keys()
            .filter(|n| {
                n != "embedding.weight" || self.embedding.as_ref().is_some_and(|e| e.trainable)
            })
            .collect()
    }

    /// The rows the dense head reads: every row of the recurrent output, or (last step)
    /// every row of the `[batch, features]` block gathered by [`Self::last_rows`].
    pub fn head_rows(&self, batch: usize, steps: usize) -> DenseRows {
        let f = self.rnn.config.output_size();
        match self.spec.head {
            Head::EveryStep => DenseRows::all(batch * steps, f),
            Head::LastStep => DenseRows::all(batch, f),
        }
    }

    /// For a last-step head, the recurrent output row of each sequence's last valid step,
    /// `(length - 1) * batch + b` (PyTorch's `output[lengths - 1, arange(batch)]`): with
    /// per-sequence lengths the last step differs between sequences, so the head gathers
    /// these rows (and its backward scatters into them) rather than reading step T - 1.
    pub fn last_rows(&self, b: &Batch) -> Result<Option<Vec<u32>>> {
        if self.spec.head != Head::LastStep {
            return Ok(None);
        }
        let lengths = self.lengths(b)?.unwrap_or_else(|| vec![b.steps; b.batch]);
        Ok(Some(
            lengths
                .iter()
                .enumerate()
                .map(|(s, &len)| ((len.max(1) - 1) * b.batch + s) as u32)
                .collect(),
        ))
    }

    /// The row gather behind a last-step head: an embedding lookup whose table is the
    /// recurrent output `[steps * batch, features]` (the same kernel and CPU twin).
    pub fn last_step_gather(&self, batch: usize, steps: usize) -> crate::ops::Embedding {
        crate::ops::Embedding::new(batch * steps, self.rnn.config.output_size())
    }

    /// Checks a batch against the model: shapes, ids, targets, finite values.
    pub fn check_batch(&self, b: &Batch) -> Result<()> {
        ensure!(
            b.batch > 0 && b.steps > 0,
            Shape,
            "a batch needs batch > 0 and steps > 0, got {} x {}",
            b.batch,
            b.steps
        );
        let n = b.batch * b.steps;
        match (&b.inputs, &self.embedding) {
            (Inputs::Ids(ids), Some(e)) => {
                ensure!(
                    ids.len() == n,
                    Shape,
                    "batch of {} x {} steps has {} ids",
                    b.batch,
                    b.steps,
                    ids.len()
                );
                e.op().validate_ids(ids)?;
            }
            (Inputs::Values(v), None) => {
                let want = n * self.spec.input_size;
                ensure!(
                    v.len() == want,
                    Shape,
                    "batch of {} x {} steps x {} features needs {want} values, got {}",
                    b.steps,
                    b.batch,
                    self.spec.input_size,
                    v.len()
                );
                if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                    bail!(Numerics, "input holds a non-finite value at index {i}");
                }
            }
            (Inputs::Ids(_), None) => {
                bail!(Invalid, "this model has no embedding: give feature values")
            }
            (Inputs::Values(_), Some(_)) => {
                bail!(Invalid, "this model starts with an embedding: give ids")
            }
        }
        let rows = self.head_rows(b.batch, b.steps).rows;
        match (&b.targets, self.spec.loss) {
            (Targets::Classes(t), Loss::CrossEntropy { ignore_index }) => {
                let mut ce = CrossEntropy::new(rows, self.spec.outputs);
                if let Some(i) = ignore_index {
                    ce = ce.ignore_index(i);
                }
                ce.validate_targets(t)?;
            }
            (Targets::Values(t), Loss::MeanSquaredError) => {
                ensure!(
                    t.len() == rows * self.spec.outputs,
                    Shape,
                    "targets: {rows} rows x {} outputs need {} values, got {}",
                    self.spec.outputs,
                    rows * self.spec.outputs,
                    t.len()
                );
                if let Some(i) = t.iter().position(|x| !x.is_finite()) {
                    bail!(Numerics, "targets hold a non-finite value at index {i}");
                }
            }
            (Targets::Values(_), _) => bail!(Invalid, "a cross-entropy model takes class targets"),
            (Targets::Classes(_), _) => {
                bail!(Invalid, "a mean-squared-error model takes value targets")
            }
        }
        if let Some(l) = &self.lengths(b)? {
            crate::ops::recurrent::RecurrentShape::new(
                self.rnn.config.cell,
                self.rnn.config.input_size,
                self.rnn.config.hidden_size,
                b.batch,
                b.steps,
            )
            .validate(Some(l))?;
        }
        Ok(())
    }

    /// The lengths the recurrent layer uses for a batch: the batch's own, or those its
    /// padding ids give (an embedding with a padding id), or `None` (every step).
    pub fn lengths(&self, b: &Batch) -> Result<Option<Vec<usize>>> {
        if b.lengths.is_some() {
            return Ok(b.lengths.clone());
        }
        match (&b.inputs, &self.embedding) {
            (Inputs::Ids(ids), Some(e)) if e.padding.is_some() => {
                // The embedding reads sequences batch-major; the batch is time-major.
                let mut by_seq = vec![0u32; ids.len()];
                for t in 0..b.steps {
                    for s in 0..b.batch {
                        by_seq[s * b.steps + t] = ids[t * b.batch + s];
                    }
                }
                let l = e.lengths(&by_seq, b.batch, b.steps)?;
                Ok(l.filter(|l| l.iter().any(|&n| n < b.steps)))
            }
            _ => Ok(None),
        }
    }

    /// Every parameter as `T`, by name.
    pub fn params_as<T: Real>(&self) -> BTreeMap<String, Vec<T>> {
        tensors_as(self.named_params())
    }

    /// Sets the parameters from `T` values by name (the inverse of [`Self::params_as`]).
    pub fn set_params_from<T: Real>(&mut self, p: &BTreeMap<String, Vec<T>>) -> Result<()> {
        let mut t = self.named_params();
        for (name, host) in t.iter_mut() {
            let v = p
                .get(name)
                .ok_or_else(|| err!(Invalid, "parameter {name} missing"))?;
            host.data = v.iter().map(|x| x.to_f32().unwrap_or(f32::NAN)).collect();
        }
        self.set_params(&t)
    }

    /// Sets the dropout rates for training (build the trainer after this); the same as
    /// building the model with `spec.dropout = d`. Rates must be in [0, 1).
    pub fn set_dropout(&mut self, d: DropoutRates) -> Result<()> {
        self.rnn.config = d.applied_to(&self.rnn.config)?;
        self.spec.dropout = d;
        Ok(())
    }

    /// The dropout key of training step `step` (counted from 0), if the model has dropout.
    pub fn train_key(&self, step: u64) -> Option<TrainKey> {
        let c = &self.rnn.config;
        (c.input_dropout > 0.0 || c.dropout > 0.0 || c.recurrent_dropout > 0.0).then_some(
            TrainKey {
                seed: self.spec.dropout.seed,
                step,
            },
        )
    }

    /// The dropout seed of training passes, if the model has dropout.
    pub fn dropout_seed(&self) -> Option<u64> {
        self.train_key(0).map(|k| k.seed)
    }

    /// Records one pass over batches of `batch` sequences of `steps` steps, with every
    /// parameter named `prefix` + its name: the forward to the dense outputs; with
    /// [`Pass::Evaluate`] the loss too; with [`Pass::Train`] the backward too (every
    /// trainable parameter's gradient). `init` gives the stack's initial states: the final
    /// states of another stack's state tensors (an encoder's), else the `H0`, `C0` regions
    /// of its own state tensors (zero unless written).
    pub fn record(
        &self,
        b: &mut ProgramBuilder,
        prefix: &str,
        (batch, steps): (usize, usize),
        pass: Pass,
        init: Option<&[TensorId]>,
    ) -> Result<Recorded<SeqInputs>> {
        let rows = batch * steps;
        let (x, rnn_in) = match &self.embedding {
            Some(e) => {
                let ids = b.ids(&format!("{prefix}ids"), e.op(), rows);
                let out = e.record_forward(b, &format!("{prefix}embedding."), ids)?;
                (ids, out)
            }
            None => {
                let x = b.input(&format!("{prefix}input"), &[rows, self.spec.input_size]);
                (x, x)
            }
        };
        let lengths = b.lengths(&format!("{prefix}lengths"), batch);
        let seed = match pass {
            Pass::Train { dropout: true } => self.dropout_seed(),
            _ => None,
        };
        let rnn_prefix = format!("{prefix}rnn.");
        let stack = self.rnn.record_forward_from(
            b,
            &rnn_prefix,
            rnn_in,
            (batch, steps),
            Some(lengths),
            seed,
            init,
        )?;
        let (last_rows, head_in) = match self.spec.head {
            Head::EveryStep => (None, stack.output),
            Head::LastStep => {
                let spec = self.last_step_gather(batch, steps);
                let ids = b.ids(&format!("{prefix}last rows"), spec, batch);
                let gathered = b.tensor(&format!("{prefix}last step"), &[batch, spec.dim]);
                b.op(Op::Gather {
                    spec,
                    table: stack.output,
                    ids,
                    out: gathered,
                });
                (Some(ids), gathered)
            }
        };
        let head_rows = self.head_rows(batch, steps);
        let fc = format!("{prefix}fc.");
        let output = self.dense.record_forward(b, &fc, head_in, &head_rows)?;
        let mut rec = Recorded {
            inputs: SeqInputs {
                x,
                lengths,
                last_rows,
                targets: None,
            },
            output,
            loss: None,
            grads: BTreeMap::new(),
            stack,
        };
        if pass == Pass::Predict {
            return Ok(rec);
        }
        let loss = b.tensor(&format!("{prefix}loss"), &[1]);
        let d_logits = b.tensor(
            &format!("{prefix}d output"),
            &[head_rows.rows, self.spec.outputs],
        );
        let targets = match self.spec.loss {
            Loss::CrossEntropy { ignore_index } => {
                let mut spec = CrossEntropy::new(head_rows.rows, self.spec.outputs);
                if let Some(i) = ignore_index {
                    spec = spec.ignore_index(i);
                }
                let targets = b.input_u32(&format!("{prefix}targets"), &[head_rows.rows]);
                b.op(Op::CrossEntropy {
                    spec,
                    logits: output,
                    targets,
                    d_logits,
                    loss,
                });
                targets
            }
            Loss::MeanSquaredError => {
                let targets = b.input(
                    &format!("{prefix}targets"),
                    &[head_rows.rows, self.spec.outputs],
                );
                b.op(Op::Mse {
                    pred: output,
                    target: targets,
                    d_pred: d_logits,
                    loss,
                });
                targets
            }
        };
        rec.inputs.targets = Some(targets);
        rec.loss = Some(loss);
        if !matches!(pass, Pass::Train { .. }) {
            return Ok(rec);
        }
        let d_head_in = b.tensor(
            &format!("{prefix}d head input"),
            &[head_rows.rows, self.dense.in_features],
        );
        let (dw, db) =
            self.dense
                .record_backward(b, &fc, head_in, &head_rows, d_logits, Some(d_head_in))?;
        rec.grads.insert(format!("{fc}weight"), dw);
        rec.grads.insert(format!("{fc}bias"), db);
        let d_output = match (self.spec.head, last_rows) {
            (Head::LastStep, Some(ids)) => {
                let spec = self.last_step_gather(batch, steps);
                let d = b.tensor(&format!("{prefix}d rnn output"), &[rows, spec.dim]);
                b.op(Op::ScatterAdd {
                    spec,
                    ids,
                    d_out: d_head_in,
                    d_table: d,
                });
                d
            }
            _ => d_head_in,
        };
        let sg = self.rnn.record_backward(b, &rec.stack, Some(d_output))?;
        for (name, t) in sg.params {
            rec.grads.insert(format!("{rnn_prefix}{name}"), t);
        }
        if let Some(e) = &self.embedding {
            let ep = format!("{prefix}embedding.");
            if let Some(g) = e.record_backward(b, &ep, x, sg.input) {
                rec.grads.insert(format!("{ep}weight"), g);
            }
        }
        Ok(rec)
    }

    /// Writes a checked batch into a program recorded by [`Self::record`]: inputs, lengths,
    /// last-step rows and (where recorded) targets.
    pub fn write_batch<E: Executor + ?Sized>(
        &self,
        exec: &mut E,
        p: ProgramId,
        inputs: &SeqInputs,
        b: &Batch,
    ) -> Result<()> {
        match &b.inputs {
            Inputs::Ids(ids) => exec.write_u32(p, inputs.x, ids)?,
            Inputs::Values(v) => exec.write(p, inputs.x, 0, v)?,
        }
        let lengths = self.lengths(b)?.unwrap_or_else(|| vec![b.steps; b.batch]);
        let lengths: Vec<u32> = lengths.iter().map(|&l| l as u32).collect();
        exec.write_u32(p, inputs.lengths, &lengths)?;
        if let (Some(t), Some(rows)) = (inputs.last_rows, self.last_rows(b)?) {
            exec.write_u32(p, t, &rows)?;
        }
        match (inputs.targets, &b.targets) {
            (Some(t), Targets::Classes(c)) => exec.write_u32(p, t, c)?,
            (Some(t), Targets::Values(v)) => exec.write(p, t, 0, v)?,
            (None, _) => {}
        }
        Ok(())
    }

    /// Forward, loss and (with `grads`) backward of a checked batch on the CPU in `T`, with
    /// parameters `p` and initial states `h0`, `c0` (zero when `None`), without dropout:
    /// the recorded pass run by a fresh CPU executor (finite-difference checks run it in
    /// f64).
    pub fn pass_cpu<T: Real>(
        &self,
        p: &BTreeMap<String, Vec<T>>,
        b: &Batch,
        h0: Option<&[T]>,
        c0: Option<&[T]>,
        grads: bool,
    ) -> Result<CpuPass<T>> {
        self.pass_cpu_with(p, b, h0, c0, grads, None)
    }

    /// [`Self::pass_cpu`] with the dropout masks of `train` (a training step), if given.
    pub fn pass_cpu_with<T: Real>(
        &self,
        p: &BTreeMap<String, Vec<T>>,
        b: &Batch,
        h0: Option<&[T]>,
        c0: Option<&[T]>,
        grads: bool,
        train: Option<TrainKey>,
    ) -> Result<CpuPass<T>> {
        let (exec, prog, rec, grads) = cpu_pass(
            self,
            p,
            b,
            grads,
            train.map(|k| k.step),
            |exec, prog, rec| {
                let n = rec.stack.region_len();
                for (i, &state) in rec.stack.states.iter().enumerate() {
                    for (region, values) in [(StateRegion::H0, h0), (StateRegion::C0, c0)] {
                        if let Some(v) = values {
                            ensure!(
                                v.len() == n * rec.stack.states.len(),
                                Shape,
                                "initial state has {} values, expected {}",
                                v.len(),
                                n * rec.stack.states.len()
                            );
                            exec.write_real(
                                prog,
                                state,
                                rec.stack.region(region),
                                &v[i * n..][..n],
                            )?;
                        }
                    }
                }
                Ok(())
            },
        )?;
        let n = rec.stack.region_len();
        let region = |exec: &CpuExecutor<T>, r: StateRegion| -> Result<Vec<T>> {
            let mut out = Vec::new();
            for &state in &rec.stack.states {
                out.extend_from_slice(&exec.read_real(prog, state)?[rec.stack.region(r)..][..n]);
            }
            Ok(out)
        };
        let cell = self.rnn.config.cell.has_cell_state();
        let loss = rec
            .loss
            .ok_or_else(|| err!(Invalid, "an evaluation pass has a loss"))?;
        Ok(CpuPass {
            loss: exec.read_real(prog, loss)?[0],
            output: exec.read_real(prog, rec.output)?,
            h_n: region(&exec, StateRegion::HN)?,
            c_n: if cell {
                region(&exec, StateRegion::CN)?
            } else {
                Vec::new()
            },
            d_h0: if grads.is_some() {
                region(&exec, StateRegion::DH0)?
            } else {
                Vec::new()
            },
            d_c0: if grads.is_some() && cell {
                region(&exec, StateRegion::DC)?
            } else {
                Vec::new()
            },
            grads,
        })
    }

    /// The state size `[layers * directions, batch, hidden]` in elements.
    pub fn state_len(&self, batch: usize) -> usize {
        let c = &self.rnn.config;
        c.num_layers * c.directions() * batch * c.hidden_size
    }
}

impl super::trainer::Learner for SequenceModel {
    type Batch = Batch;
    type Inputs = SeqInputs;
    type Spec = ModelSpec;

    fn batch_shape(&self, b: &Batch) -> Vec<usize> {
        vec![b.batch, b.steps]
    }

    fn check_batch(&self, b: &Batch) -> Result<()> {
        SequenceModel::check_batch(self, b)
    }

    fn loss_count(&self, b: &Batch) -> Result<usize> {
        match (&b.targets, self.spec.loss) {
            (Targets::Classes(t), Loss::CrossEntropy { ignore_index }) => {
                Ok(t.iter().filter(|&&c| Some(c) != ignore_index).count())
            }
            (Targets::Values(t), Loss::MeanSquaredError) => Ok(t.len()),
            _ => bail!(Shape, "the batch's targets do not fit the model's loss"),
        }
    }

    fn record(
        &self,
        b: &mut ProgramBuilder,
        shape: &[usize],
        pass: Pass,
    ) -> Result<Recorded<SeqInputs>> {
        let [batch, steps] = shape else {
            bail!(
                Shape,
                "a sequence model's batch shape is [batch, steps], got {shape:?}"
            );
        };
        SequenceModel::record(self, b, "", (*batch, *steps), pass, None)
    }

    fn write_batch(
        &self,
        exec: &mut dyn Executor,
        p: ProgramId,
        inputs: &SeqInputs,
        b: &Batch,
    ) -> Result<()> {
        SequenceModel::write_batch(self, exec, p, inputs, b)
    }

    fn named_params(&self) -> Tensors {
        SequenceModel::named_params(self)
    }

    fn set_params(&mut self, params: &Tensors) -> Result<()> {
        SequenceModel::set_params(self, params)
    }

    fn update_order(&self) -> Vec<String> {
        // Embedding, recurrent stack, dense head: the order clipping sums the gradients in.
        let trainable = self.trainable_names();
        let mut out = Vec::with_capacity(trainable.len());
        for prefix in ["embedding.", "rnn.", "fc."] {
            out.extend(trainable.iter().filter(|n| n.starts_with(prefix)).cloned());
        }
        out
    }

    fn spec(&self) -> ModelSpec {
        self.spec.clone()
    }

    fn from_spec(spec: ModelSpec, params: &Tensors) -> Result<Self> {
        SequenceModel::from_params(spec, params)
    }

    fn can_carry_state(&self) -> bool {
        true
    }

    fn has_cell_state(&self) -> bool {
        self.rnn.config.cell.has_cell_state()
    }
}
