//! The trainer: one for every model ([`Learner`]: the sequence model, the encoder-decoder)
//! and both executors. A training step (forward, loss, backward, clipping, the optimizer
//! update) is one recorded program, run as one submit on the GPU that reads back only the
//! loss; evaluation and prediction are programs of their own, planned once per batch shape.
//!
//! Stateful training (truncated BPTT over a long stream) carries each step's final states
//! into the next step's initial states on the device, without carrying gradients across.
//! Evaluation and prediction run from zero states and leave the carried state alone;
//! checkpoints keep it, so a run resumed from a checkpoint sees the same states as one that
//! never stopped. A step whose loss is not finite is an error naming the step (the
//! parameters are then spoiled: keep the last checkpoint).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::rc::Rc;

use crate::error::{bail, ensure, err, Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::checkpoint::Checkpoint;
use super::distributed::{self, GradientReducer};
use super::model::{Pass, Recorded, SequenceModel};
use crate::backend::Backend;
use crate::cpu::Real;
use crate::exec::{CpuExecutor, Executor, ProgramId};
use crate::nn::{HostTensor, Tensors};
use crate::ops::optim::OptimConfig;
use crate::ops::program::{Op, ProgramBuilder, StateRegion};

/// How a trainer trains: the optimizer, and whether the recurrent state carries from one
/// step to the next.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TrainConfig {
    /// Update rule, clipping, learning-rate schedule.
    pub optim: OptimConfig,
    /// Carry the final states of each step into the next (truncated BPTT over a stream).
    pub stateful: bool,
}

impl TrainConfig {
    /// Training with `optim`, not stateful.
    pub fn new(optim: OptimConfig) -> Self {
        Self {
            optim,
            stateful: false,
        }
    }

    /// Carries the state from step to step.
    pub fn stateful(mut self, stateful: bool) -> Self {
        self.stateful = stateful;
        self
    }
}

/// A model a [`Trainer`] trains: it records its passes into programs and writes its
/// batches into them.
pub trait Learner: Clone {
    /// A batch of training data.
    type Batch;
    /// The tensors a batch is written into.
    type Inputs: Clone + Debug;
    /// The architecture, kept in checkpoints.
    type Spec: Clone + Debug + PartialEq + Serialize + DeserializeOwned;

    /// The sizes that decide a program (a batch of another shape needs another program).
    fn batch_shape(&self, b: &Self::Batch) -> Vec<usize>;
    /// Checks a batch: sizes, ids, targets, finite values.
    fn check_batch(&self, b: &Self::Batch) -> Result<()>;
    /// What a checked batch's mean loss divides by: the cross-entropy rows whose target is
    /// not the ignore index, every value for mean squared error (data-parallel training
    /// weighs each rank's gradient by it).
    fn loss_count(&self, b: &Self::Batch) -> Result<usize>;
    /// Records one pass for batches of `shape`.
    fn record(
        &self,
        b: &mut ProgramBuilder,
        shape: &[usize],
        pass: Pass,
    ) -> Result<Recorded<Self::Inputs>>;
    /// Writes a checked batch into a recorded program.
    fn write_batch(
        &self,
        exec: &mut dyn Executor,
        p: ProgramId,
        inputs: &Self::Inputs,
        b: &Self::Batch,
    ) -> Result<()>;
    /// Every parameter under its PyTorch name.
    fn named_params(&self) -> Tensors;
    /// Replaces every parameter by the one of the same name.
    fn set_params(&mut self, params: &Tensors) -> Result<()>;
    /// The trainable parameters, in the order clipping sums them and updates run.
    fn update_order(&self) -> Vec<String>;
    /// The architecture.
    fn spec(&self) -> Self::Spec;
    /// A model of `spec` with `params`.
    fn from_spec(spec: Self::Spec, params: &Tensors) -> Result<Self>;
    /// Whether its state can carry from step to step (stateful training).
    fn can_carry_state(&self) -> bool;
    /// Whether its recurrent cell has a cell state (LSTM).
    fn has_cell_state(&self) -> bool;
}

/// The recurrent state carried from one training step to the next: `h` and (LSTM) `c`,
/// each `[layers * directions, batch, hidden]` (`c` empty for cells without one).
#[derive(Clone, Debug, PartialEq)]
pub struct CarriedState {
    /// Hidden states.
    pub h: Vec<f32>,
    /// Cell states (LSTM).
    pub c: Vec<f32>,
}

impl CarriedState {
    /// Checkpoint tensor names.
    const H: &'static str = "state.h";
    const C: &'static str = "state.c";

    /// From a checkpoint's state tensors; `None` when it has none (not stateful).
    fn from_checkpoint<S>(ckpt: &Checkpoint<S>) -> Option<Self> {
        let h = ckpt.state.get(Self::H)?.data.clone();
        let c = ckpt
            .state
            .get(Self::C)
            .map(|t| t.data.clone())
            .unwrap_or_default();
        Some(Self { h, c })
    }
}

/// A program planned for one batch shape.
struct Planned<I> {
    program: ProgramId,
    shape: Vec<usize>,
    rec: Recorded<I>,
}

/// Trains a model on a backend.
pub struct Trainer<M: Learner = SequenceModel> {
    backend: Backend,
    exec: Box<dyn Executor>,
    model: M,
    cfg: TrainConfig,
    step: u64,
    train: Option<Planned<M::Inputs>>,
    eval: HashMap<Vec<usize>, Planned<M::Inputs>>,
    predict: HashMap<Vec<usize>, Planned<M::Inputs>>,
    /// A carried state set before the training program exists (resume), applied when it
    /// is planned.
    pending_state: Option<CarriedState>,
    /// The other ranks of a data-parallel job (see `distributed`).
    reducer: Option<Rc<dyn GradientReducer>>,
    /// The evaluation program of [`Self::evaluate_stream`], which carries its own state.
    stream_eval: Option<Planned<M::Inputs>>,
}

pub(super) fn check_loss(loss: f32, step: u64) -> Result<f32> {
    ensure!(
        loss.is_finite(),
        Numerics,
        "the loss became {loss} at step {step}: training stopped (try a lower learning rate \
         or gradient clipping); the last checkpoint is kept"
    );
    Ok(loss)
}

impl<M: Learner> Trainer<M> {
    /// A trainer of `model` on `backend` (its parameters uploaded once).
    pub fn new(backend: &Backend, model: M, cfg: TrainConfig) -> Result<Self> {
        cfg.optim.validate()?;
        ensure!(
            !cfg.stateful || model.can_carry_state(),
            Invalid,
            "this model does not carry its state between steps: stateful training is not \
             available for it"
        );
        ensure!(
            !model.update_order().is_empty(),
            Invalid,
            "nothing to optimize: the model has no trainable parameters"
        );
        let mut exec = backend.executor();
        for (name, t) in model.named_params() {
            exec.set_param(&name, &t.shape, &t.data)?;
        }
        Ok(Self {
            backend: backend.clone(),
            exec,
            model,
            cfg,
            step: 0,
            train: None,
            eval: HashMap::new(),
            predict: HashMap::new(),
            pending_state: None,
            reducer: None,
            stream_eval: None,
        })
    }

    /// Trains data-parallel with the ranks of `reducer`: from now on each rank's
    /// [`Self::step`] takes its own share of the global batch, and the ranks' gradients
    /// are summed before every update (see `train::distributed`). Checks that every rank
    /// starts from the same weights. Set it before the first step.
    pub fn set_reducer(&mut self, reducer: Rc<dyn GradientReducer>) -> Result<()> {
        ensure!(
            self.train.is_none(),
            Invalid,
            "set the gradient reducer before the first training step"
        );
        self.reducer = Some(reducer);
        self.verify_replicas()
    }

    /// The reducer of a data-parallel job of more than one rank.
    pub fn reducer(&self) -> Option<Rc<dyn GradientReducer>> {
        self.reducer.clone().filter(|r| r.ranks() > 1)
    }

    /// Fails, naming the step, unless every rank holds the same weights and optimizer
    /// state bit for bit (a no-op in one process). Every rank must call it.
    pub fn verify_replicas(&mut self) -> Result<()> {
        let Some(r) = self.reducer() else {
            return Ok(());
        };
        let local = self.local_checkpoint(false);
        let local = local.map(|c| distributed::checkpoint_fingerprint(&c.params, &c.optimizer));
        distributed::verify_identical(r.as_ref(), local, self.step)
    }

    /// A trainer continuing from a checkpoint: its parameters, optimizer state, step and
    /// (stateful training) carried state.
    pub fn resume(backend: &Backend, ckpt: &Checkpoint<M::Spec>, cfg: TrainConfig) -> Result<Self> {
        let model = M::from_spec(ckpt.spec.clone(), &ckpt.params)?;
        let mut t = Self::new(backend, model, cfg)?;
        let mut state = BTreeMap::new();
        for (name, tensor) in &ckpt.optimizer {
            let param = name
                .strip_prefix(OPTIMIZER_PREFIX)
                .ok_or_else(|| err!(Format, "checkpoint tensor {name} is not optimizer state"))?;
            let n = t
                .model
                .named_params()
                .get(param)
                .map(|p| p.data.len())
                .ok_or_else(|| {
                    err!(
                        Format,
                        "optimizer state {name} names no parameter of the model"
                    )
                })?;
            let want = t.cfg.optim.optimizer.slots() * n;
            ensure!(
                tensor.data.len() == want,
                Shape,
                "optimizer state {name} has {} values, expected {want}",
                tensor.data.len()
            );
            state.insert(param.to_string(), tensor.data.clone());
        }
        t.exec.set_optimizer_state(&state)?;
        t.step = ckpt.step;
        if let (true, Some(s)) = (cfg.stateful, CarriedState::from_checkpoint(ckpt)) {
            t.pending_state = Some(s);
        }
        Ok(t)
    }

    /// The backend it runs on.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// Steps taken.
    pub fn steps_done(&self) -> u64 {
        self.step
    }

    /// Bytes the executor holds (parameters, optimizer state, every planned program).
    pub fn memory_bytes(&self) -> u64 {
        self.exec.memory_bytes()
    }

    fn plan(&mut self, shape: &[usize], pass: Pass) -> Result<Planned<M::Inputs>> {
        let mut b = ProgramBuilder::new();
        let rec = self.model.record(&mut b, shape, pass)?;
        if let Pass::Train { .. } = pass {
            let named = self.model.named_params();
            let mut params = Vec::new();
            for name in self.model.update_order() {
                let t = named
                    .get(&name)
                    .ok_or_else(|| err!(Invalid, "parameter {name}"))?;
                let p = b.param(&name, &t.shape)?;
                let g = *rec
                    .grads
                    .get(&name)
                    .ok_or_else(|| err!(Invalid, "the pass records no gradient for {name}"))?;
                params.push((name, p, g));
            }
            if self.reducer().is_some() {
                // Data-parallel: the gradients go to the host between backward and the
                // update (phase 0 reads them and the loss back; phase 1 updates).
                if let Some(loss) = rec.loss {
                    b.read_back(loss);
                }
                for (_, _, g) in &params {
                    b.read_back(*g);
                }
                b.next_phase();
            }
            b.op(Op::Optimize {
                config: self.cfg.optim,
                params,
            });
            if self.cfg.stateful {
                rec.stack.record_carry(&mut b);
            }
        }
        let split = matches!(pass, Pass::Train { .. }) && self.reducer().is_some();
        if let (Some(loss), false) = (rec.loss, split) {
            b.read_back(loss);
        }
        let program = self.exec.load(b.finish())?;
        Ok(Planned {
            program,
            shape: shape.to_vec(),
            rec,
        })
    }

    /// One training step; returns the batch's mean loss before the update. In a
    /// data-parallel job ([`Self::set_reducer`]) `batch` is this rank's share of the global
    /// batch, and the loss is the global batch's.
    pub fn step(&mut self, batch: &M::Batch) -> Result<f32> {
        if let Some(r) = self.reducer() {
            return self.step_reduced(r.as_ref(), Some(batch));
        }
        let (p, inputs, loss) = self.train_program(batch)?;
        self.model
            .write_batch(self.exec.as_mut(), p, &inputs, batch)?;
        self.exec.run(p, 0, self.step)?;
        self.step += 1;
        let loss = self.exec.read(
            p,
            loss.ok_or_else(|| err!(Invalid, "a training pass has a loss"))?,
            0,
            1,
        )?[0];
        check_loss(loss, self.step)
    }

    /// A data-parallel step where this rank's share may be empty (`None`: a last batch with
    /// fewer sequences than ranks); the rank still takes part in the reduction and update.
    /// In one process, `None` is an error.
    pub fn step_share(&mut self, batch: Option<&M::Batch>) -> Result<f32> {
        match (self.reducer(), batch) {
            (Some(r), b) => self.step_reduced(r.as_ref(), b),
            (None, Some(b)) => self.step(b),
            (None, None) => bail!(Shape, "a training step needs a batch"),
        }
    }

    /// A step of a data-parallel job: see `train::distributed`.
    fn step_reduced(&mut self, r: &dyn GradientReducer, batch: Option<&M::Batch>) -> Result<f32> {
        let local = self.forward_backward(r, batch);
        let (status, mut grads) = match local {
            Ok((count, loss, grads)) => (Ok((count, loss)), grads),
            Err(e) => (Err(e), Vec::new()),
        };
        let shares = distributed::agree_step(r, status, self.step + 1)?;
        grads.iter_mut().for_each(|g| *g *= shares.weight);
        r.sum(&mut grads)?;
        let p = self
            .train
            .as_ref()
            .ok_or_else(|| err!(Invalid, "the training program"))?
            .program;
        let mut at = 0;
        for g in self.grad_tensors()? {
            let n = self.exec.program(p).tensor(g).len();
            self.exec.write(p, g, 0, &grads[at..at + n])?;
            at += n;
        }
        self.exec.run(p, 1, self.step)?;
        self.step += 1;
        // The global loss: every rank sees the same one.
        check_loss(shares.loss, self.step).map_err(|e| Error::EveryRank(Box::new(e)))
    }

    /// Phase 0 of a data-parallel step on this rank's share: its counted rows, mean loss
    /// and gradients (one flat buffer in update order; zeros for an empty share).
    fn forward_backward(
        &mut self,
        r: &dyn GradientReducer,
        batch: Option<&M::Batch>,
    ) -> Result<(usize, f32, Vec<f32>)> {
        let (count, loss) = match batch {
            Some(batch) => {
                let (p, inputs, loss) = self.train_program(batch)?;
                self.model
                    .write_batch(self.exec.as_mut(), p, &inputs, batch)?;
                // Each rank draws its own dropout masks (the step's key spread over ranks).
                let key = self.step * r.ranks() as u64 + r.rank() as u64;
                self.exec.run(p, 0, key)?;
                let loss = self.exec.read(
                    p,
                    loss.ok_or_else(|| err!(Invalid, "a training pass has a loss"))?,
                    0,
                    1,
                )?[0];
                (self.model.loss_count(batch)?, loss)
            }
            None => {
                ensure!(
                    self.train.is_some(),
                    Shape,
                    "rank {} has no share of the first batch: every rank needs at least one \
                     sequence to plan its training program",
                    r.rank()
                );
                (0, 0.0)
            }
        };
        let p = self
            .train
            .as_ref()
            .ok_or_else(|| err!(Invalid, "the training program"))?
            .program;
        let mut grads = Vec::new();
        for g in self.grad_tensors()? {
            match batch {
                Some(_) => grads.extend(crate::exec::read_all(self.exec.as_mut(), p, g)?),
                None => grads.resize(grads.len() + self.exec.program(p).tensor(g).len(), 0.0),
            }
        }
        Ok((count, loss, grads))
    }

    /// The gradient tensors of the training program, in update order.
    fn grad_tensors(&self) -> Result<Vec<crate::ops::program::TensorId>> {
        let t = self
            .train
            .as_ref()
            .ok_or_else(|| err!(Invalid, "the training program"))?;
        self.model
            .update_order()
            .iter()
            .map(|name| {
                t.rec
                    .grads
                    .get(name)
                    .copied()
                    .ok_or_else(|| err!(Invalid, "the pass records no gradient for {name}"))
            })
            .collect()
    }

    /// The training program for `batch` (checked), planned when its shape is new.
    #[allow(clippy::type_complexity)]
    fn train_program(
        &mut self,
        batch: &M::Batch,
    ) -> Result<(ProgramId, M::Inputs, Option<crate::ops::program::TensorId>)> {
        self.model.check_batch(batch)?;
        let shape = self.model.batch_shape(batch);
        let replan = match &self.train {
            Some(t) if t.shape == shape => false,
            Some(t) if self.cfg.stateful => bail!(
                Shape,
                "stateful training carries the state of batches of shape {:?}; this batch has \
                 shape {shape:?}",
                t.shape
            ),
            _ => true,
        };
        if replan {
            self.train = Some(self.plan(&shape, Pass::Train { dropout: true })?);
            if let Some(s) = self.pending_state.take() {
                let s = self.local_share_of(s)?;
                self.set_carried_state(&s)?;
            }
        }
        let t = self
            .train
            .as_ref()
            .ok_or_else(|| err!(Invalid, "the training program"))?;
        Ok((t.program, t.rec.inputs.clone(), t.rec.loss))
    }

    /// A checkpoint's carried state as this rank's share (the state of its streams), in a
    /// data-parallel job whose checkpoint holds every rank's streams.
    fn local_share_of(&self, s: CarriedState) -> Result<CarriedState> {
        let (Some(r), Some(t)) = (self.reducer(), &self.train) else {
            return Ok(s);
        };
        let stack = &t.rec.stack;
        if s.h.len() == stack.region_len() * stack.states.len() {
            // Already this rank's (set by hand before the first step).
            return Ok(s);
        }
        distributed::slice_state(
            &s,
            (stack.states.len(), stack.hidden),
            (r.rank(), r.ranks()),
            stack.batch,
        )
    }

    fn planned(
        &mut self,
        batch: &M::Batch,
        pass: Pass,
    ) -> Result<(ProgramId, Recorded<M::Inputs>)> {
        self.model.check_batch(batch)?;
        let shape = self.model.batch_shape(batch);
        let cached = match pass {
            Pass::Predict => self.predict.get(&shape),
            _ => self.eval.get(&shape),
        };
        let planned = match cached {
            Some(p) => (p.program, p.rec.clone()),
            None => {
                let p = self.plan(&shape, pass)?;
                let out = (p.program, p.rec.clone());
                match pass {
                    Pass::Predict => self.predict.insert(shape, p),
                    _ => self.eval.insert(shape, p),
                };
                out
            }
        };
        self.model
            .write_batch(self.exec.as_mut(), planned.0, &planned.1.inputs, batch)?;
        self.exec.run(planned.0, 0, self.step)?;
        Ok(planned)
    }

    /// Forward and loss only, from zero states, without dropout (the carried state is
    /// kept for the next training step).
    pub fn evaluate(&mut self, batch: &M::Batch) -> Result<f32> {
        let (p, rec) = self.planned(batch, Pass::Evaluate)?;
        Ok(self.exec.read(
            p,
            rec.loss
                .ok_or_else(|| err!(Invalid, "an evaluation has a loss"))?,
            0,
            1,
        )?[0])
    }

    /// The mean loss over consecutive chunks of streams (a held-out text cut as the
    /// training streams are), the state carried from each chunk into the next from zero at
    /// the first, as a language model is scored; the training state is left alone.
    pub fn evaluate_stream(&mut self, chunks: &[M::Batch]) -> Result<f32> {
        ensure!(!chunks.is_empty(), Invalid, "no chunks to evaluate");
        let mut sum = 0.0f64;
        for (i, chunk) in chunks.iter().enumerate() {
            self.model.check_batch(chunk)?;
            let shape = self.model.batch_shape(chunk);
            if self.stream_eval.as_ref().is_none_or(|s| s.shape != shape) {
                let mut b = ProgramBuilder::new();
                let rec = self.model.record(&mut b, &shape, Pass::Evaluate)?;
                rec.stack.record_carry(&mut b);
                b.read_back(
                    rec.loss
                        .ok_or_else(|| err!(Invalid, "an evaluation has a loss"))?,
                );
                let program = self.exec.load(b.finish())?;
                self.stream_eval = Some(Planned {
                    program,
                    shape: shape.clone(),
                    rec,
                });
            }
            let s = self
                .stream_eval
                .as_ref()
                .ok_or_else(|| err!(Invalid, "the stream program"))?;
            let (p, rec) = (s.program, s.rec.clone());
            if i == 0 {
                let n = rec.stack.region_len();
                for &state in &rec.stack.states {
                    for r in [StateRegion::H0, StateRegion::C0] {
                        self.exec
                            .write(p, state, rec.stack.region(r), &vec![0.0; n])?;
                    }
                }
            }
            self.model
                .write_batch(self.exec.as_mut(), p, &rec.inputs, chunk)?;
            self.exec.run(p, 0, self.step)?;
            let loss = rec
                .loss
                .ok_or_else(|| err!(Invalid, "an evaluation has a loss"))?;
            sum += self.exec.read(p, loss, 0, 1)?[0] as f64;
        }
        Ok((sum / chunks.len() as f64) as f32)
    }

    /// Forward only from zero states: the outputs `[rows, outputs]` (the targets are
    /// checked but unused; the carried state is kept).
    pub fn predict(&mut self, batch: &M::Batch) -> Result<Vec<f32>> {
        let (p, rec) = self.planned(batch, Pass::Predict)?;
        crate::exec::read_all(self.exec.as_mut(), p, rec.output)
    }

    /// Trains `epochs` passes over `batches` (Keras' `fit`), calling `on_epoch` with the
    /// epoch (from 1) and its mean training loss; returns those means.
    pub fn fit(
        &mut self,
        batches: &[M::Batch],
        epochs: usize,
        mut on_epoch: impl FnMut(usize, f32),
    ) -> Result<Vec<f32>> {
        ensure!(!batches.is_empty(), Shape, "fit: no batches to train on");
        if let Some(r) = self.reducer() {
            distributed::check_same_count(r.as_ref(), "batches", batches.len())?;
        }
        let mut means = Vec::with_capacity(epochs);
        for epoch in 1..=epochs {
            let mut sum = 0.0f64;
            for b in batches {
                sum += self.step(b)? as f64;
            }
            let mean = (sum / batches.len() as f64) as f32;
            on_epoch(epoch, mean);
            means.push(mean);
        }
        Ok(means)
    }

    /// The model with its current parameters (a readback on the GPU).
    pub fn model(&mut self) -> Result<M> {
        let mut named = self.model.named_params();
        for (name, t) in named.iter_mut() {
            t.data = self.exec.param(name)?;
        }
        let mut m = self.model.clone();
        m.set_params(&named)?;
        Ok(m)
    }

    /// Parameters, optimizer state, step and (stateful training) the carried state. In a
    /// data-parallel job every rank must call it: it checks that the ranks' weights are
    /// identical (an error naming the step if not) and holds the carried state of every
    /// rank's streams, so a run resumes with another number of ranks.
    pub fn checkpoint(&mut self) -> Result<Checkpoint<M::Spec>> {
        let Some(r) = self.reducer() else {
            return self.local_checkpoint(true);
        };
        let local = self.local_checkpoint(false);
        let fp = local
            .as_ref()
            .map(|c| distributed::checkpoint_fingerprint(&c.params, &c.optimizer))
            // Only the message travels to the other ranks, and this rank stops with the
            // `RankFailed` that comes back.
            .map_err(|e| Error::RankFailed {
                rank: r.rank(),
                message: e.full_message(),
            });
        distributed::verify_identical(r.as_ref(), fp, self.step)?;
        let mut ckpt = local?;
        if self.cfg.stateful && self.train.is_none() {
            // Resumed and not stepped yet: the checkpoint's state, every rank's streams.
            ckpt.state = self.carried_state_tensors()?;
        }
        if self.cfg.stateful && self.train.is_some() {
            let (blocks, width) = {
                let stack = &self
                    .train
                    .as_ref()
                    .ok_or_else(|| err!(Invalid, "the training program"))?
                    .rec
                    .stack;
                (stack.states.len(), stack.hidden)
            };
            let local = self.carried_state();
            let global = distributed::gather_state(r.as_ref(), local, blocks)?;
            let batch = global.h.len() / (blocks * width).max(1);
            let shape = vec![blocks, batch, width];
            ckpt.state = Tensors::new();
            ckpt.state.insert(
                CarriedState::H.into(),
                HostTensor::new(shape.clone(), global.h)?,
            );
            if !global.c.is_empty() {
                ckpt.state
                    .insert(CarriedState::C.into(), HostTensor::new(shape, global.c)?);
            }
        }
        Ok(ckpt)
    }

    /// This rank's checkpoint; with `state`, the carried state too (stateful training).
    fn local_checkpoint(&mut self, state: bool) -> Result<Checkpoint<M::Spec>> {
        let model = self.model()?;
        let state = match self.cfg.stateful && state {
            true => self.carried_state_tensors()?,
            false => Tensors::new(),
        };
        let saved = self.exec.optimizer_state()?;
        let named = model.named_params();
        let slots = self.cfg.optim.optimizer.slots();
        let mut optimizer = Tensors::new();
        if slots > 0 {
            for name in model.update_order() {
                let n = named[&name].data.len() * slots;
                let data = saved.get(&name).cloned().unwrap_or_else(|| vec![0.0; n]);
                optimizer.insert(
                    format!("{OPTIMIZER_PREFIX}{name}"),
                    HostTensor::new(vec![n], data)?,
                );
            }
        }
        Ok(Checkpoint {
            spec: model.spec(),
            params: named,
            optimizer,
            state,
            step: self.step,
            meta: BTreeMap::new(),
        })
    }
}

/// One pass of a checked batch on a fresh CPU executor in `T` (f64 for finite-difference
/// checks), with parameters `p`: a training pass with `grads` or a training step's dropout
/// (`step`), else an evaluation. `prepare` runs after the batch is written, before the
/// run (e.g. to set initial states). Returns the executor after the run, the program, the
/// recording and the gradients by name (training passes).
#[allow(clippy::type_complexity)]
pub fn cpu_pass<M: Learner, T: Real>(
    model: &M,
    p: &BTreeMap<String, Vec<T>>,
    batch: &M::Batch,
    grads: bool,
    step: Option<u64>,
    prepare: impl FnOnce(&mut CpuExecutor<T>, ProgramId, &Recorded<M::Inputs>) -> Result<()>,
) -> Result<(
    CpuExecutor<T>,
    ProgramId,
    Recorded<M::Inputs>,
    Option<BTreeMap<String, Vec<T>>>,
)> {
    model.check_batch(batch)?;
    let mut exec = CpuExecutor::<T>::new();
    for (name, t) in model.named_params() {
        let v = p
            .get(&name)
            .ok_or_else(|| err!(Invalid, "parameter {name} missing"))?;
        exec.set_param_real(&name, &t.shape, v)?;
    }
    let pass = match (grads, step) {
        (_, Some(_)) => Pass::Train { dropout: true },
        (true, None) => Pass::Train { dropout: false },
        (false, None) => Pass::Evaluate,
    };
    let mut b = ProgramBuilder::new();
    let rec = model.record(&mut b, &model.batch_shape(batch), pass)?;
    let prog = exec.load(b.finish())?;
    model.write_batch(&mut exec, prog, &rec.inputs, batch)?;
    prepare(&mut exec, prog, &rec)?;
    exec.run(prog, 0, step.unwrap_or(0))?;
    let grads = match pass {
        Pass::Train { .. } => {
            let mut g = BTreeMap::new();
            for (name, &t) in &rec.grads {
                g.insert(name.clone(), exec.read_real(prog, t)?);
            }
            Some(g)
        }
        _ => None,
    };
    Ok((exec, prog, rec, grads))
}

/// Optimizer state tensors in checkpoints are named this + the parameter's name.
pub const OPTIMIZER_PREFIX: &str = "optimizer.";

impl<M: Learner> Trainer<M> {
    /// The state the next training step starts from, `[layers * directions, batch,
    /// hidden]` each: in stateful training the carried state, otherwise zeros. Before the
    /// first step it is the state set by [`Self::set_carried_state`] (or a checkpoint), else
    /// an error (the batch size is not known yet).
    pub fn carried_state(&mut self) -> Result<CarriedState> {
        let Some(t) = &self.train else {
            return self.pending_state.clone().ok_or_else(|| {
                err!(
                    Invalid,
                    "no training step yet: the carried state has no batch size"
                )
            });
        };
        let (p, stack) = (t.program, t.rec.stack.clone());
        let n = stack.region_len();
        let (mut h, mut c) = (Vec::new(), Vec::new());
        for &state in &stack.states {
            h.extend(self.exec.read(p, state, stack.region(StateRegion::H0), n)?);
            if self.model.has_cell_state() {
                c.extend(self.exec.read(p, state, stack.region(StateRegion::C0), n)?);
            }
        }
        Ok(CarriedState { h, c })
    }

    /// Sets the state the next training step starts from (stateful training).
    pub fn set_carried_state(&mut self, state: &CarriedState) -> Result<()> {
        let Some(t) = &self.train else {
            self.pending_state = Some(state.clone());
            return Ok(());
        };
        let (p, stack) = (t.program, t.rec.stack.clone());
        let n = stack.region_len();
        let want = n * stack.states.len();
        let cell = self.model.has_cell_state();
        for (what, have, want) in [
            ("h", &state.h, want),
            ("c", &state.c, if cell { want } else { 0 }),
        ] {
            ensure!(
                have.len() == want,
                Shape,
                "carried state {what} has {} values, expected {want} = layers x directions x \
                 batch x hidden = {} x {} x {}",
                have.len(),
                stack.states.len(),
                stack.batch,
                stack.hidden
            );
            if let Some(i) = have.iter().position(|v| !v.is_finite()) {
                bail!(
                    Numerics,
                    "carried state {what} holds a non-finite value at index {i}"
                );
            }
        }
        for (i, &s) in stack.states.iter().enumerate() {
            self.exec
                .write(p, s, stack.region(StateRegion::H0), &state.h[i * n..][..n])?;
            if cell {
                self.exec
                    .write(p, s, stack.region(StateRegion::C0), &state.c[i * n..][..n])?;
            }
        }
        Ok(())
    }

    /// Starts the carried state afresh at zero.
    pub fn reset_state(&mut self) -> Result<()> {
        self.pending_state = None;
        let Some(t) = &self.train else {
            return Ok(());
        };
        let stack = &t.rec.stack;
        let zeros = CarriedState {
            h: vec![0.0; stack.region_len() * stack.states.len()],
            c: if self.model.has_cell_state() {
                vec![0.0; stack.region_len() * stack.states.len()]
            } else {
                Vec::new()
            },
        };
        self.set_carried_state(&zeros)
    }

    fn carried_state_tensors(&mut self) -> Result<Tensors> {
        if self.train.is_none() && self.pending_state.is_none() {
            return Ok(Tensors::new());
        }
        let s = self.carried_state()?;
        let shape = match &self.train {
            Some(t) => vec![
                t.rec.stack.states.len(),
                t.rec.stack.batch,
                t.rec.stack.hidden,
            ],
            None => vec![s.h.len()],
        };
        let mut out = Tensors::new();
        out.insert(CarriedState::H.into(), HostTensor::new(shape.clone(), s.h)?);
        if !s.c.is_empty() {
            out.insert(CarriedState::C.into(), HostTensor::new(shape, s.c)?);
        }
        Ok(out)
    }
}
