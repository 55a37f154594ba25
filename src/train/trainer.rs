//! The trainer: one training step (forward, loss, backward, clip, update) of a
//! [`SequenceModel`] on a batch, on the GPU in one submit that reads back only the loss, or
//! on the CPU with the twins. Stateful training (and truncated BPTT over a long stream)
//! carries each step's final states into the next step's initial states without carrying
//! gradients across; evaluation runs forward and loss only.
//!
//! A step whose loss is not finite is an error naming the step (the parameters are then
//! spoiled: keep the last checkpoint). Evaluation and prediction run from zero states and
//! leave the carried state alone; checkpoints keep it, so a run resumed from a checkpoint
//! sees the same states as one that never stopped.

use std::collections::BTreeMap;

use anyhow::{bail, ensure, Context, Result};

use super::checkpoint::Checkpoint;
use super::model::{Batch, Head, Inputs, Loss, SequenceModel, Targets};
use super::optimizer::{CpuOptimizer, GpuOptimizer, OptimConfig};
use crate::gpu::loss::{write_targets, CrossEntropyPlan, MsePlan};
use crate::gpu::{EmbeddingBackwardPlan, EmbeddingForwardPlan, EmbeddingIds};
use crate::gpu::{Gpu, GpuTensor, Recorder};
use crate::nn::{GpuDense, GpuEmbedding, GpuRecurrent, HostTensor, Tensors};
use crate::ops::loss::CrossEntropy;

/// How a trainer runs: the batch shape it is planned for, the optimizer, and whether the
/// recurrent state carries from one step to the next.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainConfig {
    pub batch: usize,
    pub steps: usize,
    pub optim: OptimConfig,
    pub stateful: bool,
}

/// A training loop's view of a trainer, on either backend.
pub trait Trainer {
    /// One training step; returns the batch's mean loss before the update.
    fn step(&mut self, batch: &Batch) -> Result<f32>;
    /// Forward and loss only, from zero states, without dropout (the carried state is
    /// kept for the next training step).
    fn evaluate(&mut self, batch: &Batch) -> Result<f32>;
    /// Forward only from zero states: the dense outputs [rows, outputs] (the targets are
    /// checked but unused; the carried state is kept).
    fn predict(&mut self, batch: &Batch) -> Result<Vec<f32>>;
    /// Starts the carried state afresh at zero.
    fn reset_state(&mut self) -> Result<()>;
    /// The state the next training step starts from (stateful training; zeros otherwise).
    fn carried_state(&self) -> Result<CarriedState>;
    /// Sets the state the next training step starts from (stateful training).
    fn set_carried_state(&mut self, state: &CarriedState) -> Result<()>;
    /// Steps taken.
    fn steps_done(&self) -> u64;
    /// The model with its current parameters (a readback on the GPU).
    fn model(&self) -> Result<SequenceModel>;
    /// Parameters, optimizer state, step and (stateful training) the carried state.
    fn checkpoint(&mut self) -> Result<Checkpoint>;
    fn config(&self) -> &TrainConfig;

    /// Trains `epochs` passes over `batches` (Keras' `fit`; see
    /// [`SequenceData::batches`](super::SequenceData::batches)), calling `on_epoch` with the
    /// epoch (from 1) and its mean training loss; returns those means.
    fn fit(
        &mut self,
        batches: &[Batch],
        epochs: usize,
        mut on_epoch: impl FnMut(usize, f32),
    ) -> Result<Vec<f32>>
    where
        Self: Sized,
    {
        ensure!(!batches.is_empty(), "fit: no batches to train on");
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
}

/// The recurrent state carried from one training step to the next: `h` and (LSTM) `c`,
/// each `[layers * directions, batch, hidden]` (`c` empty for cells without one).
#[derive(Clone, Debug, PartialEq)]
pub struct CarriedState {
    pub h: Vec<f32>,
    pub c: Vec<f32>,
}

impl CarriedState {
    /// Checkpoint tensor names.
    const H: &'static str = "state.h";
    const C: &'static str = "state.c";

    fn zeros(model: &SequenceModel, batch: usize) -> Self {
        let n = model.state_len(batch);
        let c = if model.rnn.config.cell.has_cell_state() {
            vec![0.0; n]
        } else {
            Vec::new()
        };
        Self { h: vec![0.0; n], c }
    }

    /// Checks the sizes against a model and batch, and that every value is finite.
    fn check(&self, model: &SequenceModel, batch: usize) -> Result<()> {
        let want = Self::zeros(model, batch);
        let cfg = &model.rnn.config;
        for (what, have, want) in [("h", &self.h, &want.h), ("c", &self.c, &want.c)] {
            ensure!(
                have.len() == want.len(),
                "carried state {what} has {} values, expected {} = layers x directions x \
                 batch x hidden = {} x {} x {batch} x {}",
                have.len(),
                want.len(),
                cfg.num_layers,
                cfg.directions(),
                cfg.hidden_size
            );
            if let Some(i) = have.iter().position(|v| !v.is_finite()) {
                bail!("carried state {what} holds a non-finite value at index {i}");
            }
        }
        Ok(())
    }

    /// As checkpoint tensors (`state.h`, `state.c`).
    fn to_tensors(&self, model: &SequenceModel, batch: usize) -> Tensors {
        let cfg = &model.rnn.config;
        let shape = vec![cfg.num_layers * cfg.directions(), batch, cfg.hidden_size];
        let mut t = Tensors::new();
        t.insert(
            Self::H.into(),
            HostTensor {
                shape: shape.clone(),
                data: self.h.clone(),
            },
        );
        if !self.c.is_empty() {
            t.insert(
                Self::C.into(),
                HostTensor {
                    shape,
                    data: self.c.clone(),
                },
            );
        }
        t
    }

    /// From a checkpoint's state tensors; `None` when it has none (not stateful).
    fn from_checkpoint(ckpt: &Checkpoint) -> Option<Self> {
        let h = ckpt.state.get(Self::H)?.data.clone();
        let c = ckpt
            .state
            .get(Self::C)
            .map(|t| t.data.clone())
            .unwrap_or_default();
        Some(Self { h, c })
    }
}

/// Restores a checkpoint's carried state into a stateful trainer.
fn restore_state(t: &mut dyn Trainer, ckpt: &Checkpoint) -> Result<()> {
    if let (true, Some(s)) = (t.config().stateful, CarriedState::from_checkpoint(ckpt)) {
        t.set_carried_state(&s)
            .context("the checkpoint's carried state does not fit this trainer")?;
    }
    Ok(())
}

pub(super) fn check_loss(loss: f32, step: u64) -> Result<f32> {
    ensure!(
        loss.is_finite(),
        "the loss became {loss} at step {step}: training stopped (try a lower learning rate \
         or gradient clipping); the last checkpoint is kept"
    );
    Ok(loss)
}

fn check_shape(cfg: &TrainConfig, b: &Batch) -> Result<()> {
    ensure!(
        b.batch == cfg.batch && b.steps == cfg.steps,
        "batch of {} sequences x {} steps, the trainer was planned for {} x {}",
        b.batch,
        b.steps,
        cfg.batch,
        cfg.steps
    );
    Ok(())
}

/// Softmax cross-entropy on the device: the class targets it reads and its plan.
pub(super) struct GpuCrossEntropy {
    pub spec: CrossEntropy,
    pub targets: GpuTensor<u32>,
    pub plan: CrossEntropyPlan,
    _row_loss: GpuTensor,
}

impl GpuCrossEntropy {
    /// Over `rows` rows of `classes` logits, writing their gradient to `d_logits`.
    pub fn new(
        gpu: &Gpu,
        rows: usize,
        classes: usize,
        ignore_index: Option<u32>,
        logits: &GpuTensor,
        d_logits: &GpuTensor,
    ) -> Result<Self> {
        let mut spec = CrossEntropy::new(rows, classes);
        if let Some(i) = ignore_index {
            spec = spec.ignore_index(i);
        }
        let targets = GpuTensor::<u32>::zeros(gpu, &[rows])?;
        let row_loss = GpuTensor::zeros(gpu, &[rows])?;
        let plan = CrossEntropyPlan::new(gpu, &spec, logits, &targets, &row_loss, d_logits)?;
        Ok(Self {
            spec,
            targets,
            plan,
            _row_loss: row_loss,
        })
    }

    /// Validates and writes the next targets.
    pub fn write_targets(&self, t: &[u32]) -> Result<()> {
        write_targets(&self.spec, &self.targets, t)
    }
}

enum GpuLoss {
    CrossEntropy(GpuCrossEntropy),
    Mse { targets: GpuTensor, plan: MsePlan },
}

/// A last-step head's input on the device: each sequence's last valid output row,
/// gathered (and its gradient scattered back) by the embedding kernels with the recurrent
/// output as the table (see [`SequenceModel::last_rows`]).
struct GpuLastStep {
    rows: EmbeddingIds,
    gathered: GpuTensor,
    d_gathered: GpuTensor,
    gather: EmbeddingForwardPlan,
    scatter: Option<EmbeddingBackwardPlan>,
}

impl GpuLastStep {
    fn new(
        gpu: &Gpu,
        model: &SequenceModel,
        cfg: &TrainConfig,
        rnn: &GpuRecurrent,
    ) -> Result<Self> {
        let spec = model.last_step_gather(cfg.batch, cfg.steps);
        let rows = EmbeddingIds::new(gpu, &spec, cfg.batch)?;
        let gathered = GpuTensor::zeros(gpu, &[cfg.batch, spec.dim])?;
        let d_gathered = GpuTensor::zeros(gpu, &[cfg.batch, spec.dim])?;
        let gather = EmbeddingForwardPlan::new(gpu, &spec, rnn.output(), &rows, &gathered)?;
        let scatter = match rnn.output_grad() {
            Some(d_out) => Some(EmbeddingBackwardPlan::new(
                gpu,
                &spec,
                &rows,
                &d_gathered,
                d_out,
            )?),
            None => None,
        };
        Ok(Self {
            rows,
            gathered,
            d_gathered,
            gather,
            scatter,
        })
    }
}

/// A 4-byte buffer a step copies its mean loss into, to be mapped after the submit.
pub(super) fn loss_staging(gpu: &Gpu) -> wgpu::Buffer {
    gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("recur.trainer.loss"),
        size: 4,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

/// Records copying the mean loss (the first value of a loss plan's `stats`) to `staging`,
/// submits, and reads it: a step's only submit and only readback.
pub(super) fn submit_and_read_loss(
    gpu: &Gpu,
    mut rec: Recorder,
    stats: &GpuTensor,
    staging: &wgpu::Buffer,
) -> Result<f32> {
    rec.copy(stats.buffer(), 0, staging, 0, 4);
    rec.submit()?;
    gpu.count(|c| c.readbacks += 1);
    let bytes = crate::gpu::readback::map_and_copy(gpu, staging)?;
    Ok(f32::from_le_bytes(
        bytes[..4]
            .try_into()
            .context("the loss readback is 4 bytes")?,
    ))
}

/// The GPU trainer: every tensor and plan built once for (batch, steps).
pub struct GpuTrainer {
    gpu: Gpu,
    cfg: TrainConfig,
    model: SequenceModel,
    embedding: Option<GpuEmbedding>,
    rnn: GpuRecurrent,
    last_step: Option<GpuLastStep>,
    dense: GpuDense,
    loss: GpuLoss,
    optim: GpuOptimizer,
    /// Where each submit copies the mean loss, to be mapped after it (no second submit).
    staging: wgpu::Buffer,
}

impl GpuTrainer {
    pub fn new(gpu: &Gpu, model: SequenceModel, cfg: TrainConfig) -> Result<Self> {
        cfg.optim.validate()?;
        ensure!(
            cfg.batch > 0 && cfg.steps > 0,
            "a trainer needs batch > 0 and steps > 0"
        );
        let rnn = GpuRecurrent::new(gpu, &model.rnn, cfg.batch, cfg.steps, true)?;
        let embedding = match &model.embedding {
            Some(e) => Some(GpuEmbedding::new(
                gpu,
                e,
                cfg.batch * cfg.steps,
                rnn.input(),
                rnn.input_grad(),
            )?),
            None => None,
        };
        let last_step = match model.spec.head {
            Head::LastStep => Some(GpuLastStep::new(gpu, &model, &cfg, &rnn)?),
            Head::EveryStep => None,
        };
        let rows = model.head_rows(cfg.batch, cfg.steps);
        let (head_in, d_head_in) = match &last_step {
            Some(l) => (&l.gathered, Some(&l.d_gathered)),
            None => (rnn.output(), rnn.output_grad()),
        };
        let dense = GpuDense::new(gpu, &model.dense, head_in, rows, d_head_in, true)?;
        let d_logits = dense.output_grad().context("dense gradients")?;
        let loss = match model.spec.loss {
            Loss::CrossEntropy { ignore_index } => GpuLoss::CrossEntropy(GpuCrossEntropy::new(
                gpu,
                rows.rows,
                model.spec.outputs,
                ignore_index,
                dense.output(),
                d_logits,
            )?),
            Loss::MeanSquaredError => {
                let targets = GpuTensor::zeros(gpu, &[rows.rows * model.spec.outputs])?;
                let plan = MsePlan::new(gpu, dense.output(), &targets, d_logits)?;
                GpuLoss::Mse { targets, plan }
            }
        };
        let mut named: Vec<(String, &GpuTensor, &GpuTensor)> = Vec::new();
        if let Some(e) = &embedding {
            if let Some(g) = e.table_grad() {
                named.push(("embedding.weight".into(), e.table(), g));
            }
        }
        let rnn_grads = rnn.param_grads().context("recurrent gradients")?;
        for (name, p) in rnn.params() {
            named.push((format!("rnn.{name}"), p, &rnn_grads[name]));
        }
        let dense_grads = dense.param_grads().context("dense gradients")?;
        for ((name, p), (_, g)) in dense.params().into_iter().zip(dense_grads) {
            named.push((format!("fc.{name}"), p, g));
        }
        let optim = GpuOptimizer::new(gpu, cfg.optim, &named)?;
        let staging = loss_staging(gpu);
        Ok(Self {
            gpu: gpu.clone(),
            cfg,
            model,
            embedding,
            rnn,
            last_step,
            dense,
            loss,
            optim,
            staging,
        })
    }

    /// A trainer continuing from a checkpoint (same spec; the checkpoint's step and state).
    pub fn resume(gpu: &Gpu, ckpt: &Checkpoint, cfg: TrainConfig) -> Result<Self> {
        let model = ckpt.model()?;
        let mut t = Self::new(gpu, model, cfg)?;
        t.optim.load_state(&ckpt.optimizer, ckpt.step)?;
        restore_state(&mut t, ckpt)?;
        Ok(t)
    }

    fn write_batch(&self, b: &Batch) -> Result<()> {
        check_shape(&self.cfg, b)?;
        self.model.check_batch(b)?;
        match (&b.inputs, &self.embedding) {
            (Inputs::Ids(ids), Some(e)) => e.write_ids(ids)?,
            (Inputs::Values(v), None) => self.rnn.input().write(v)?,
            _ => bail!("inputs do not match the model"),
        }
        match (&b.targets, &self.loss) {
            (Targets::Classes(t), GpuLoss::CrossEntropy(ce)) => ce.write_targets(t)?,
            (Targets::Values(t), GpuLoss::Mse { targets, .. }) => targets.write(t)?,
            _ => bail!("targets do not match the loss"),
        }
        if let (Some(l), Some(rows)) = (&self.last_step, self.model.last_rows(b)?) {
            l.rows.write(&rows)?;
        }
        Ok(())
    }

    fn record_forward_loss(&self, rec: &mut Recorder) -> Result<()> {
        if let Some(e) = &self.embedding {
            e.record_forward(rec);
        }
        self.rnn.record_forward(rec)?;
        if let Some(l) = &self.last_step {
            l.gather.record(rec);
        }
        self.dense.record_forward(rec);
        match &self.loss {
            GpuLoss::CrossEntropy(ce) => ce.plan.record(rec),
            GpuLoss::Mse { plan, .. } => plan.record(rec),
        }
        Ok(())
    }

    fn submit_and_read_loss(&self, rec: Recorder) -> Result<f32> {
        let stats = match &self.loss {
            GpuLoss::CrossEntropy(ce) => ce.plan.stats(),
            GpuLoss::Mse { plan, .. } => plan.stats(),
        };
        submit_and_read_loss(&self.gpu, rec, stats, &self.staging)
    }

    /// The device the trainer runs on.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }
}

impl Trainer for GpuTrainer {
    fn step(&mut self, b: &Batch) -> Result<f32> {
        self.write_batch(b)?;
        let lengths = self.model.lengths(b)?;
        if self.cfg.stateful {
            self.rnn.set_lengths(lengths.as_deref())?;
        } else {
            self.rnn.set_inputs(lengths.as_deref(), None, None)?;
        }
        self.rnn
            .set_training(self.model.train_key(self.optim.steps()))?;
        let mut rec = Recorder::new(&self.gpu);
        self.record_forward_loss(&mut rec)?;
        self.dense.record_backward(&mut rec)?;
        if let Some(l) = &self.last_step {
            l.scatter
                .as_ref()
                .context("last-step gradients")?
                .record(&mut rec);
        }
        self.rnn.record_backward(&mut rec)?;
        if let Some(e) = &self.embedding {
            e.record_backward(&mut rec);
        }
        self.optim.record(&mut rec)?;
        if self.cfg.stateful {
            self.rnn.record_carry_state(&mut rec);
        }
        let loss = self.submit_and_read_loss(rec)?;
        check_loss(loss, self.optim.steps())
    }

    fn evaluate(&mut self, b: &Batch) -> Result<f32> {
        self.write_batch(b)?;
        // Evaluation starts from zero states on the same device buffers: keep the carried
        // state on the host meanwhile (evaluation is rare; a step never reads back).
        let carried = match self.cfg.stateful {
            true => Some(self.carried_state()?),
            false => None,
        };
        let lengths = self.model.lengths(b)?;
        self.rnn.set_inputs(lengths.as_deref(), None, None)?;
        self.rnn.set_training(None)?;
        let mut rec = Recorder::new(&self.gpu);
        self.record_forward_loss(&mut rec)?;
        let loss = self.submit_and_read_loss(rec);
        if let Some(s) = carried {
            self.set_carried_state(&s)?;
        }
        loss
    }

    fn predict(&mut self, b: &Batch) -> Result<Vec<f32>> {
        self.evaluate(b)?;
        self.dense.output().to_vec()
    }

    fn reset_state(&mut self) -> Result<()> {
        self.rnn.set_inputs(None, None, None)
    }

    fn carried_state(&self) -> Result<CarriedState> {
        let (h, c) = self.rnn.initial_state()?;
        Ok(CarriedState { h, c })
    }

    fn set_carried_state(&mut self, state: &CarriedState) -> Result<()> {
        state.check(&self.model, self.cfg.batch)?;
        let c = (!state.c.is_empty()).then_some(&state.c[..]);
        self.rnn.set_inputs(None, Some(&state.h), c)
    }

    fn steps_done(&self) -> u64 {
        self.optim.steps()
    }

    fn model(&self) -> Result<SequenceModel> {
        let mut m = self.model.clone();
        let mut t = m.named_params();
        if let Some(e) = &self.embedding {
            t.get_mut("embedding.weight")
                .context("embedding weight")?
                .data = e.table().to_vec()?;
        }
        for (name, p) in self.rnn.params() {
            t.get_mut(&format!("rnn.{name}")).context("rnn param")?.data = p.to_vec()?;
        }
        for (name, p) in self.dense.params() {
            t.get_mut(&format!("fc.{name}")).context("fc param")?.data = p.to_vec()?;
        }
        m.set_params(&t)?;
        Ok(m)
    }

    fn checkpoint(&mut self) -> Result<Checkpoint> {
        let state = match self.cfg.stateful {
            true => self
                .carried_state()?
                .to_tensors(&self.model, self.cfg.batch),
            false => Tensors::new(),
        };
        Ok(Checkpoint {
            spec: self.model.spec.clone(),
            params: self.model()?.named_params(),
            optimizer: self.optim.state()?,
            state,
            step: self.optim.steps(),
            meta: BTreeMap::new(),
        })
    }

    fn config(&self) -> &TrainConfig {
        &self.cfg
    }
}

/// The CPU trainer, the twin of [`GpuTrainer`] in f32.
pub struct CpuTrainer {
    cfg: TrainConfig,
    model: SequenceModel,
    params: BTreeMap<String, Vec<f32>>,
    order: Vec<String>,
    optim: CpuOptimizer,
    state: Option<(Vec<f32>, Vec<f32>)>,
}

impl CpuTrainer {
    pub fn new(model: SequenceModel, cfg: TrainConfig) -> Result<Self> {
        cfg.optim.validate()?;
        ensure!(
            cfg.batch > 0 && cfg.steps > 0,
            "a trainer needs batch > 0 and steps > 0"
        );
        let params = model.params_as::<f32>();
        let order = gpu_order(&model);
        let sizes: Vec<(String, usize)> =
            order.iter().map(|n| (n.clone(), params[n].len())).collect();
        let optim = CpuOptimizer::new(cfg.optim, &sizes)?;
        Ok(Self {
            cfg,
            model,
            params,
            order,
            optim,
            state: None,
        })
    }

    pub fn resume(ckpt: &Checkpoint, cfg: TrainConfig) -> Result<Self> {
        let mut t = Self::new(ckpt.model()?, cfg)?;
        t.optim.load_state(&ckpt.optimizer, ckpt.step)?;
        restore_state(&mut t, ckpt)?;
        Ok(t)
    }
}

/// The order the GPU trainer clips and updates in (embedding, recurrent, dense).
fn gpu_order(model: &SequenceModel) -> Vec<String> {
    let trainable = model.trainable_names();
    let mut out: Vec<String> = trainable
        .iter()
        .filter(|n| n.starts_with("embedding."))
        .cloned()
        .collect();
    out.extend(trainable.iter().filter(|n| n.starts_with("rnn.")).cloned());
    out.extend(trainable.iter().filter(|n| n.starts_with("fc.")).cloned());
    out
}

impl Trainer for CpuTrainer {
    fn step(&mut self, b: &Batch) -> Result<f32> {
        check_shape(&self.cfg, b)?;
        self.model.check_batch(b)?;
        let (h0, c0) = match (&self.state, self.cfg.stateful) {
            (Some((h, c)), true) => (Some(&h[..]), (!c.is_empty()).then_some(&c[..])),
            _ => (None, None),
        };
        let key = self.model.train_key(self.optim.steps());
        let pass = self
            .model
            .pass_cpu_with(&self.params, b, h0, c0, true, key)?;
        let grads = pass.grads.context("gradients")?;
        self.optim.step(&self.order, &mut self.params, &grads)?;
        if self.cfg.stateful {
            self.state = Some((pass.h_n, pass.c_n));
        }
        check_loss(pass.loss, self.optim.steps())
    }

    fn evaluate(&mut self, b: &Batch) -> Result<f32> {
        check_shape(&self.cfg, b)?;
        self.model.check_batch(b)?;
        Ok(self
            .model
            .pass_cpu(&self.params, b, None, None, false)?
            .loss)
    }

    fn predict(&mut self, b: &Batch) -> Result<Vec<f32>> {
        check_shape(&self.cfg, b)?;
        self.model.check_batch(b)?;
        Ok(self
            .model
            .pass_cpu(&self.params, b, None, None, false)?
            .output)
    }

    fn reset_state(&mut self) -> Result<()> {
        self.state = None;
        Ok(())
    }

    fn carried_state(&self) -> Result<CarriedState> {
        Ok(match &self.state {
            Some((h, c)) => CarriedState {
                h: h.clone(),
                c: c.clone(),
            },
            None => CarriedState::zeros(&self.model, self.cfg.batch),
        })
    }

    fn set_carried_state(&mut self, state: &CarriedState) -> Result<()> {
        state.check(&self.model, self.cfg.batch)?;
        self.state = Some((state.h.clone(), state.c.clone()));
        Ok(())
    }

    fn steps_done(&self) -> u64 {
        self.optim.steps()
    }

    fn model(&self) -> Result<SequenceModel> {
        let mut m = self.model.clone();
        m.set_params_from(&self.params)?;
        Ok(m)
    }

    fn checkpoint(&mut self) -> Result<Checkpoint> {
        let state = match self.cfg.stateful {
            true => self
                .carried_state()?
                .to_tensors(&self.model, self.cfg.batch),
            false => Tensors::new(),
        };
        Ok(Checkpoint {
            spec: self.model.spec.clone(),
            params: self.model()?.named_params(),
            optimizer: self.optim.state(),
            state,
            step: self.optim.steps(),
            meta: BTreeMap::new(),
        })
    }

    fn config(&self) -> &TrainConfig {
        &self.cfg
    }
}
