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

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use crate::cpu::{self, Real};
use crate::nn::recurrent::TrainKey;
use crate::nn::{Dense, DenseRows, Embedding, Recurrent, RecurrentConfig, Tensors};
use crate::ops::loss::CrossEntropy;
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
        ignore_index: Option<u32>,
    },
    MeanSquaredError,
}

/// The model's architecture, without its parameters (kept beside them in checkpoints).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Vocabulary size and embedding width; `None` takes `input_size` features per step.
    pub embedding: Option<EmbeddingSpec>,
    pub input_size: usize,
    pub cell: String,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub bidirectional: bool,
    pub outputs: usize,
    pub head: Head,
    pub loss: Loss,
    /// Dropout while training (none by default); kept in checkpoints, so a resumed run
    /// draws the same masks.
    #[serde(default)]
    pub dropout: DropoutRates,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddingSpec {
    pub input_dim: usize,
    pub output_dim: usize,
    pub padding: Option<u32>,
    pub trainable: bool,
}

/// A batch of `batch` sequences of `steps` steps, time-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub batch: usize,
    pub steps: usize,
    pub inputs: Inputs,
    pub targets: Targets,
    /// Per-sequence lengths (PyTorch packed-sequence semantics), or all `steps`. Without
    /// them, an embedding with a padding id (Keras `mask_zero`) gives each sequence the
    /// length before its first padding id ([`SequenceModel::lengths`]).
    pub lengths: Option<Vec<usize>>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Inputs {
    /// Embedding ids [steps, batch].
    Ids(Vec<u32>),
    /// Features [steps, batch, input_size].
    Values(Vec<f32>),
}

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
    pub spec: ModelSpec,
    pub embedding: Option<Embedding>,
    pub rnn: Recurrent,
    pub dense: Dense,
}

/// Dropout in the recurrent stack while training (off in evaluation): Keras `dropout` on the
/// first layer's inputs, PyTorch's `dropout` on the inputs of the layers above, Keras
/// `recurrent_dropout` on the state the recurrent product sees; one mask per sequence,
/// drawn from `seed` and the step number, the same on the CPU and the GPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DropoutRates {
    pub input: f32,
    pub between_layers: f32,
    pub recurrent: f32,
    pub seed: u64,
}

impl DropoutRates {
    /// Checks every rate is in [0, 1), naming a bad one by the flag `recur train` and
    /// `recur fit` take it from.
    pub fn validate(&self) -> Result<()> {
        for (flag, rate) in [
            ("--input-dropout", self.input),
            ("--dropout", self.between_layers),
            ("--recurrent-dropout", self.recurrent),
        ] {
            ensure!(
                rate.is_finite() && (0.0..1.0).contains(&rate),
                "{flag} {rate} is invalid: expected a rate in [0, 1)"
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

/// The CPU results of one batch: the mean loss, the gradients by parameter name (when
/// asked), and the final states.
pub struct CpuPass<T> {
    pub loss: T,
    /// The dense outputs [rows, outputs].
    pub output: Vec<T>,
    pub grads: Option<BTreeMap<String, Vec<T>>>,
    pub h_n: Vec<T>,
    pub c_n: Vec<T>,
    /// The gradients of the initial states (with `grads`; empty otherwise, and `d_c0`
    /// without a cell state).
    pub d_h0: Vec<T>,
    pub d_c0: Vec<T>,
}

impl SequenceModel {
    /// A fresh model, every layer initialised from `seed` (dropout masks are keyed by
    /// `spec.dropout.seed`).
    pub fn new(spec: ModelSpec, seed: u64) -> Result<Self> {
        let embedding = match &spec.embedding {
            Some(e) => {
                let mut layer = Embedding::new(e.input_dim, e.output_dim, seed ^ 0x9e37)?;
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
        ensure!(spec.outputs > 0, "a model needs at least one output");
        let mut c = RecurrentConfig::new(CellKind::parse(&spec.cell)?, input, spec.hidden_size);
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
            let new = params
                .get(&name)
                .with_context(|| format!("parameter {name} (shape {:?}) is missing", t.shape))?;
            ensure!(
                new.shape == t.shape,
                "parameter {name} has shape {:?}, expected {:?}",
                new.shape,
                t.shape
            );
            if let Some(i) = new.data.iter().position(|v| !v.is_finite()) {
                bail!("parameter {name} holds a non-finite value at index {i}");
            }
        }
        if let Some(e) = &mut self.embedding {
            e.weight = params["embedding.weight"].clone();
        }
        for (name, t) in self.rnn.params.iter_mut() {
            *t = params[&format!("rnn.{name}")].clone();
        }
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
        for (k, v) in &self.rnn.params {
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
            "a batch needs batch > 0 and steps > 0, got {} x {}",
            b.batch,
            b.steps
        );
        let n = b.batch * b.steps;
        match (&b.inputs, &self.embedding) {
            (Inputs::Ids(ids), Some(e)) => {
                ensure!(
                    ids.len() == n,
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
                    "batch of {} x {} steps x {} features needs {want} values, got {}",
                    b.steps,
                    b.batch,
                    self.spec.input_size,
                    v.len()
                );
                if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                    bail!("input holds a non-finite value at index {i}");
                }
            }
            (Inputs::Ids(_), None) => bail!("this model has no embedding: give feature values"),
            (Inputs::Values(_), Some(_)) => bail!("this model starts with an embedding: give ids"),
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
                    "targets: {rows} rows x {} outputs need {} values, got {}",
                    self.spec.outputs,
                    rows * self.spec.outputs,
                    t.len()
                );
                if let Some(i) = t.iter().position(|x| !x.is_finite()) {
                    bail!("targets hold a non-finite value at index {i}");
                }
            }
            (Targets::Values(_), _) => bail!("a cross-entropy model takes class targets"),
            (Targets::Classes(_), _) => bail!("a mean-squared-error model takes value targets"),
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
                .with_context(|| format!("parameter {name} missing"))?;
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

    /// Forward, loss and (with `grads`) backward of a checked batch on the CPU, with
    /// parameters `p` and initial states `h0`, `c0` (zero when `None`), without dropout.
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
        let (batch, steps) = (b.batch, b.steps);
        let x: Vec<T> = match (&b.inputs, &self.embedding) {
            (Inputs::Ids(ids), Some(e)) => {
                e.forward_cpu(&p["embedding.weight"], ids, steps, batch)?
            }
            (Inputs::Values(v), _) => v
                .iter()
                .map(|&x| T::from(x).unwrap_or_else(T::nan))
                .collect(),
            _ => bail!("inputs do not match the model (check_batch first)"),
        };
        let rnn_p = with_prefix(p, "rnn.");
        let lengths = self.lengths(b)?;
        // Without gradients (evaluation, prediction) no tape is kept.
        let (out, tape) = if grads || train.is_some() {
            let (out, tape) = self.rnn.forward_cpu_with(
                &rnn_p,
                &x,
                batch,
                steps,
                lengths.as_deref(),
                h0,
                c0,
                train,
            )?;
            (out, Some(tape))
        } else {
            let out = self
                .rnn
                .infer_cpu(&rnn_p, &x, batch, steps, lengths.as_deref(), h0, c0)?;
            (out, None)
        };
        let rows = self.head_rows(batch, steps);
        let last = self
            .last_rows(b)?
            .map(|ids| (self.last_step_gather(batch, steps), ids));
        let gathered = match &last {
            Some((gather, ids)) => {
                let mut g = vec![T::zero(); ids.len() * gather.dim];
                cpu::embedding::forward(gather, &out.output, ids, &mut g)?;
                Some(g)
            }
            None => None,
        };
        let head_in = gathered.as_deref().unwrap_or(&out.output);
        let (w, bias) = (&p["fc.weight"], &p["fc.bias"]);
        let y = self.dense.forward_cpu(w, bias, head_in, &rows)?;
        let mut dy = vec![T::zero(); y.len()];
        let loss = match (&b.targets, self.spec.loss) {
            (Targets::Classes(t), Loss::CrossEntropy { ignore_index }) => {
                let mut ce = CrossEntropy::new(rows.rows, self.spec.outputs);
                if let Some(i) = ignore_index {
                    ce = ce.ignore_index(i);
                }
                let mut row_loss = vec![T::zero(); rows.rows];
                cpu::loss::cross_entropy(&ce, &y, t, &mut row_loss, &mut dy)?
            }
            (Targets::Values(t), Loss::MeanSquaredError) => {
                let t: Vec<T> = t
                    .iter()
                    .map(|&x| T::from(x).unwrap_or_else(T::nan))
                    .collect();
                cpu::loss::mse(&y, &t, &mut dy)?
            }
            _ => bail!("targets do not match the loss (check_batch first)"),
        };
        let (mut d_h0, mut d_c0) = (Vec::new(), Vec::new());
        let grads = if grads {
            let mut g = BTreeMap::new();
            let dg = self.dense.backward_cpu(w, head_in, &rows, &dy)?;
            g.insert("fc.weight".to_string(), dg.weight);
            g.insert("fc.bias".to_string(), dg.bias);
            let d_output = match &last {
                Some((gather, ids)) => {
                    let mut d = vec![T::zero(); out.output.len()];
                    cpu::embedding::backward(gather, ids, &dg.input, &mut d)?;
                    d
                }
                None => dg.input,
            };
            let tape = tape.context("a forward with gradients keeps a tape")?;
            let rg = self
                .rnn
                .backward_cpu(&rnn_p, &tape, Some(&d_output), None, None)?;
            for (k, v) in rg.params {
                g.insert(format!("rnn.{k}"), v);
            }
            (d_h0, d_c0) = (rg.h0, rg.c0);
            if let (Inputs::Ids(ids), Some(e)) = (&b.inputs, &self.embedding) {
                if e.trainable {
                    g.insert(
                        "embedding.weight".to_string(),
                        e.backward_cpu(ids, &rg.input)?,
                    );
                }
            }
            Some(g)
        } else {
            None
        };
        Ok(CpuPass {
            loss,
            output: y,
            grads,
            h_n: out.h_n,
            c_n: out.c_n,
            d_h0,
            d_c0,
        })
    }

    /// The state size `[layers * directions, batch, hidden]` in elements.
    pub fn state_len(&self, batch: usize) -> usize {
        let c = &self.rnn.config;
        c.num_layers * c.directions() * batch * c.hidden_size
    }
}
