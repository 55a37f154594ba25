//! The short path, for Keras and PyTorch users: build a model, `fit` it on
//! `[n, steps, features]` arrays, `predict`, `save`.
//!
//! ```no_run
//! use recur::prelude::*;
//! # fn main() -> recur::Result<()> {
//! # let (x, y, x_test) = (Tensor::zeros(vec![64, 20, 3]), Tensor::zeros(vec![64, 1]), Tensor::zeros(vec![8, 20, 3]));
//! let backend = Backend::auto();
//! let mut model = Model::lstm(3, 32).dense(1).mse().build(&backend)?;
//! model.fit(&x, &y, Fit::epochs(10).batch(16))?;
//! let y_hat = model.predict(&x_test)?;
//! model.save("model.safetensors")?;
//! # Ok(()) }
//! ```
//!
//! A [`Model`] is a [`SequenceModel`] (optional embedding, recurrent stack, dense head, loss)
//! and the [`Trainer`] that runs it on a backend; [`ModelBuilder`] sets it up with Keras's
//! defaults (last-step head, Adam at 1e-3).

use std::path::Path;

use crate::error::{bail, ensure, Result, ResultExt};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::checkpoint::Checkpoint;
use super::data::SequenceData;
use super::distributed::Ranks;
use super::model::{
    DropoutRates, EmbeddingSpec, Head, Inputs, Loss, ModelSpec, SequenceModel, Targets,
};
use super::trainer::{TrainConfig, Trainer};
use crate::backend::Backend;
use crate::nn::HostTensor;
use crate::ops::optim::{OptimConfig, Optimizer};
use crate::ops::recurrent::CellKind;

/// A model on a backend, ready to fit and predict.
pub struct Model {
    trainer: Trainer,
    spec: ModelSpec,
}

/// Builds a [`Model`].
#[derive(Clone, Debug)]
pub struct ModelBuilder {
    spec: ModelSpec,
    optim: OptimConfig,
    seed: u64,
}

/// How [`Model::fit`] trains: epochs, batch size, shuffling (Keras's `fit` arguments).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fit {
    /// Passes over the data.
    pub epochs: usize,
    /// Sequences per batch (the last batch of an epoch holds what is left).
    pub batch: usize,
    /// Shuffle the sequences before each epoch.
    pub shuffle: bool,
    /// Seed of the shuffles.
    pub seed: u64,
}

impl Default for Fit {
    /// Keras's defaults: 1 epoch, batches of 32, shuffled.
    fn default() -> Self {
        Self {
            epochs: 1,
            batch: 32,
            shuffle: true,
            seed: 0,
        }
    }
}

impl Fit {
    /// `epochs` passes with the other defaults.
    pub fn epochs(epochs: usize) -> Self {
        Self {
            epochs,
            ..Self::default()
        }
    }

    /// Sequences per batch.
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = batch;
        self
    }

    /// Shuffle before each epoch (on by default).
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }

    /// Seed of the shuffles.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

impl Model {
    /// A builder of an LSTM model reading `input_size` features per step into `hidden`
    /// units.
    pub fn lstm(input_size: usize, hidden: usize) -> ModelBuilder {
        Self::recurrent(CellKind::Lstm, input_size, hidden)
    }

    /// A GRU model (PyTorch's variant; see [`ModelBuilder::cell`] for the other).
    pub fn gru(input_size: usize, hidden: usize) -> ModelBuilder {
        Self::recurrent(CellKind::Gru, input_size, hidden)
    }

    /// A simple (Elman) RNN with tanh.
    pub fn rnn(input_size: usize, hidden: usize) -> ModelBuilder {
        Self::recurrent(CellKind::RnnTanh, input_size, hidden)
    }

    /// A model of any cell.
    pub fn recurrent(cell: CellKind, input_size: usize, hidden: usize) -> ModelBuilder {
        ModelBuilder {
            spec: ModelSpec {
                embedding: None,
                input_size,
                cell,
                hidden_size: hidden,
                num_layers: 1,
                bidirectional: false,
                outputs: 1,
                head: Head::LastStep,
                loss: Loss::MeanSquaredError,
                dropout: DropoutRates::default(),
            },
            optim: OptimConfig::default(),
            seed: 0,
        }
    }

    /// A model saved by [`Self::save`], on `backend` (its optimizer state too, so `fit`
    /// continues where it stopped).
    pub fn load(path: impl AsRef<Path>, backend: &Backend) -> Result<Self> {
        let ckpt = Checkpoint::load(path.as_ref())?;
        let optim = match ckpt.meta.get(OPTIM_KEY) {
            Some(json) => optim_from_json(json)?,
            None => OptimConfig::default(),
        };
        let spec = ckpt.spec.clone();
        let trainer = Trainer::resume(backend, &ckpt, TrainConfig::new(optim))?;
        Ok(Self { trainer, spec })
    }

    /// The architecture.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The backend it runs on.
    pub fn backend(&self) -> &Backend {
        self.trainer.backend()
    }

    /// The underlying trainer (for checkpoints, stateful training, custom loops).
    pub fn trainer(&mut self) -> &mut Trainer {
        &mut self.trainer
    }

    /// Trains on `x` `[n, steps, features]` (ids `[n, steps]` with an embedding) and `y`
    /// (`[n, outputs]`, or class ids `[n]` for cross-entropy; `[n, steps, ...]` with a head
    /// at every step); returns the mean training loss of each epoch.
    pub fn fit(&mut self, x: &HostTensor, y: &HostTensor, fit: Fit) -> Result<Vec<f32>> {
        ensure!(fit.epochs > 0, Invalid, "fit needs at least one epoch");
        let data = self.data(x, Some(y))?;
        let model = self.trainer.model()?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(fit.seed);
        let mut order: Vec<usize> = (0..data.n).collect();
        let mut means = Vec::with_capacity(fit.epochs);
        for _ in 0..fit.epochs {
            if fit.shuffle {
                order.shuffle(&mut rng);
            }
            let batch = fit.batch.min(data.n);
            let (mut sum, mut n) = (0.0f64, 0usize);
            if let Some(r) = self.trainer.reducer() {
                // Data-parallel: this rank's share of each batch; the loss is the batch's.
                let shares = data.epoch_share(&model, batch, &order, &Ranks::new(r))?;
                for (share, seqs) in shares.iter().zip(order.chunks(batch)) {
                    sum += self.trainer.step_share(share.as_ref())? as f64 * seqs.len() as f64;
                    n += seqs.len();
                }
            } else {
                for b in &data.epoch(&model, batch, &order)? {
                    sum += self.trainer.step(b)? as f64 * b.batch as f64;
                    n += b.batch;
                }
            }
            means.push((sum / n as f64) as f32);
        }
        Ok(means)
    }

    /// The mean loss over `x` and `y` (no training).
    pub fn evaluate(&mut self, x: &HostTensor, y: &HostTensor) -> Result<f32> {
        let data = self.data(x, Some(y))?;
        let model = self.trainer.model()?;
        let order: Vec<usize> = (0..data.n).collect();
        let (mut sum, mut n) = (0.0f64, 0usize);
        for b in data.epoch(&model, 32.min(data.n), &order)? {
            // Mean squared error is a mean over values; each batch's mean counts by its rows.
            sum += self.trainer.evaluate(&b)? as f64 * b.batch as f64;
            n += b.batch;
        }
        Ok((sum / n as f64) as f32)
    }

    /// The outputs for `x`: `[n, outputs]` for a last-step head, `[n, steps, outputs]` for a
    /// head at every step (logits for cross-entropy).
    pub fn predict(&mut self, x: &HostTensor) -> Result<HostTensor> {
        let data = self.data(x, None)?;
        let model = self.trainer.model()?;
        let order: Vec<usize> = (0..data.n).collect();
        let outputs = self.spec.outputs;
        let rows = match self.spec.head {
            Head::LastStep => 1,
            Head::EveryStep => data.steps,
        };
        let mut out = vec![0.0f32; data.n * rows * outputs];
        let mut first = 0;
        for b in data.epoch(&model, 32.min(data.n), &order)? {
            let y = self.trainer.predict(&b)?;
            // Time-major rows (t * batch + s) back to sequence-major.
            for t in 0..rows {
                for s in 0..b.batch {
                    let src = &y[(t * b.batch + s) * outputs..][..outputs];
                    out[((first + s) * rows + t) * outputs..][..outputs].copy_from_slice(src);
                }
            }
            first += b.batch;
        }
        let shape = match self.spec.head {
            Head::LastStep => vec![data.n, outputs],
            Head::EveryStep => vec![data.n, data.steps, outputs],
        };
        HostTensor::new(shape, out)
    }

    /// Saves the model (weights under PyTorch names, the architecture, the optimizer and
    /// its state) atomically to a safetensors file.
    pub fn save(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let mut ckpt = self.trainer.checkpoint()?;
        ckpt.meta.insert(
            OPTIM_KEY.into(),
            optim_to_json(&self.trainer.config().optim)?,
        );
        ckpt.save(path.as_ref())
    }

    /// `x` and `y` as sequence data for this model.
    fn data(&self, x: &HostTensor, y: Option<&HostTensor>) -> Result<SequenceData> {
        let spec = &self.spec;
        let (n, steps, inputs) = match &spec.embedding {
            Some(e) => {
                ensure!(
                    x.shape.len() == 2,
                    Shape,
                    "x has shape {:?}; a model with an embedding takes ids [n, steps]",
                    x.shape
                );
                let ids = as_ids(&x.data, e.input_dim, "x")?;
                (x.shape[0], x.shape[1], Inputs::Ids(ids))
            }
            None => {
                ensure!(
                    x.shape.len() == 3 && x.shape[2] == spec.input_size,
                    Shape,
                    "x has shape {:?}, expected [n, steps, {}] (input_size {})",
                    x.shape,
                    spec.input_size,
                    spec.input_size
                );
                if let Some(i) = x.data.iter().position(|v| !v.is_finite()) {
                    bail!(Numerics, "x holds a non-finite value at index {i}");
                }
                (x.shape[0], x.shape[1], Inputs::Values(x.data.clone()))
            }
        };
        ensure!(
            n > 0 && steps > 0,
            Shape,
            "x has shape {:?}: no sequences or no steps",
            x.shape
        );
        let rows = match spec.head {
            Head::LastStep => 1,
            Head::EveryStep => steps,
        };
        let targets = match (y, spec.loss) {
            (None, Loss::MeanSquaredError) => Targets::Values(vec![0.0; n * rows * spec.outputs]),
            (None, Loss::CrossEntropy { .. }) => Targets::Classes(vec![0; n * rows]),
            (Some(y), Loss::MeanSquaredError) => {
                ensure!(
                    y.data.len() == n * rows * spec.outputs && y.shape.first() == Some(&n),
                    Shape,
                    "y has shape {:?}, expected [{n}{}, {}]",
                    y.shape,
                    if rows > 1 {
                        format!(", {steps}")
                    } else {
                        String::new()
                    },
                    spec.outputs
                );
                Targets::Values(y.data.clone())
            }
            (Some(y), Loss::CrossEntropy { ignore_index }) => {
                ensure!(
                    y.data.len() == n * rows && y.shape.first() == Some(&n),
                    Shape,
                    "y has shape {:?}, expected class ids [{n}{}]",
                    y.shape,
                    if rows > 1 {
                        format!(", {steps}")
                    } else {
                        String::new()
                    }
                );
                let limit = match ignore_index {
                    Some(i) => spec.outputs.max(i as usize + 1),
                    None => spec.outputs,
                };
                Targets::Classes(as_ids(&y.data, limit, "y")?)
            }
        };
        Ok(SequenceData {
            n,
            steps,
            inputs,
            targets,
            lengths: None,
        })
    }
}

/// Whole numbers in `0..limit` as ids, or an error naming the first that is not.
fn as_ids(values: &[f32], limit: usize, what: &str) -> Result<Vec<u32>> {
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            ensure!(
                v.fract() == 0.0 && v >= 0.0 && (v as usize) < limit,
                Limit,
                "{what}[{i}] = {v} is not an id in 0..{limit}"
            );
            Ok(v as u32)
        })
        .collect()
}

/// The checkpoint metadata key of the optimizer configuration.
const OPTIM_KEY: &str = "optimizer";

fn optim_to_json(o: &OptimConfig) -> Result<String> {
    Ok(serde_json::to_string(o)?)
}

fn optim_from_json(s: &str) -> Result<OptimConfig> {
    let o: OptimConfig =
        serde_json::from_str(s).context("the saved optimizer configuration is not valid")?;
    o.validate()?;
    Ok(o)
}

impl ModelBuilder {
    /// The recurrent cell.
    pub fn cell(mut self, cell: CellKind) -> Self {
        self.spec.cell = cell;
        self
    }

    /// Stacked recurrent layers.
    pub fn layers(mut self, layers: usize) -> Self {
        self.spec.num_layers = layers;
        self
    }

    /// Both directions (outputs concatenated).
    pub fn bidirectional(mut self) -> Self {
        self.spec.bidirectional = true;
        self
    }

    /// An embedding of `vocab` ids into `dim` values before the recurrent stack (the input
    /// is then ids `[n, steps]`; the builder's input size is replaced by `dim`).
    pub fn embedding(mut self, vocab: usize, dim: usize) -> Self {
        self.spec.embedding = Some(EmbeddingSpec {
            input_dim: vocab,
            output_dim: dim,
            padding: None,
            trainable: true,
            init: Default::default(),
        });
        self
    }

    /// Dropout while training: on the inputs, between stacked layers, on the recurrent
    /// state (one mask per sequence).
    pub fn dropout(mut self, input: f32, between_layers: f32, recurrent: f32) -> Self {
        self.spec.dropout = DropoutRates {
            input,
            between_layers,
            recurrent,
            seed: self.spec.dropout.seed,
        };
        self
    }

    /// A dense output layer of `outputs` units on the last step (many to one).
    pub fn dense(mut self, outputs: usize) -> Self {
        self.spec.outputs = outputs;
        self
    }

    /// The dense layer at every step (many to many) instead of the last one.
    pub fn every_step(mut self) -> Self {
        self.spec.head = Head::EveryStep;
        self
    }

    /// Mean squared error (regression).
    pub fn mse(mut self) -> Self {
        self.spec.loss = Loss::MeanSquaredError;
        self
    }

    /// Softmax cross-entropy over the outputs as classes (classification); targets are
    /// class ids.
    pub fn cross_entropy(mut self) -> Self {
        self.spec.loss = Loss::CrossEntropy { ignore_index: None };
        self
    }

    /// The optimizer (Adam at 1e-3 by default).
    pub fn optimizer(mut self, optimizer: Optimizer) -> Self {
        self.optim.optimizer = optimizer;
        self
    }

    /// Clips the global gradient norm.
    pub fn clip(mut self, max_norm: f32) -> Self {
        self.optim.clip = Some(max_norm);
        self
    }

    /// Seed of the initial weights and the dropout masks.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self.spec.dropout.seed = seed;
        self
    }

    /// The architecture built so far.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The model on `backend`, with fresh weights.
    pub fn build(self, backend: &Backend) -> Result<Model> {
        let model =
            SequenceModel::new(self.spec.clone(), self.seed).context("building the model")?;
        let trainer = Trainer::new(backend, model, TrainConfig::new(self.optim))?;
        Ok(Model {
            trainer,
            spec: self.spec,
        })
    }
}
