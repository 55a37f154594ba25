//! The trainer: one training step (forward, loss, backward, clip, update) of a
//! [`SequenceModel`] on a batch, on the GPU in one submit that reads back only the loss, or
//! on the CPU with the twins. Stateful training (and truncated BPTT over a long stream)
//! carries each step's final states into the next step's initial states without carrying
//! gradients across; evaluation runs forward and loss only.
//!
//! A step whose loss is not finite is an error naming the step (the parameters are then
//! spoiled: keep the last checkpoint). Evaluation and checkpoints start the carried state
//! afresh at zero, so a run resumed from a checkpoint sees the same states as one that
//! never stopped.

use std::collections::BTreeMap;

use anyhow::{bail, ensure, Context, Result};

use super::checkpoint::Checkpoint;
use super::model::{Batch, Head, Inputs, Loss, SequenceModel, Targets};
use super::optimizer::{CpuOptimizer, GpuOptimizer, OptimConfig};
use crate::gpu::loss::{write_targets, CrossEntropyPlan, MsePlan};
use crate::gpu::{EmbeddingBackwardPlan, EmbeddingForwardPlan, EmbeddingIds};
use crate::gpu::{Gpu, GpuTensor, Recorder};
use crate::nn::{GpuDense, GpuEmbedding, GpuRecurrent};
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
    /// Forward and loss only (the carried state is reset).
    fn evaluate(&mut self, batch: &Batch) -> Result<f32>;
    /// Forward only from zero states: the dense outputs [rows, outputs] (the targets are
    /// checked but unused).
    fn predict(&mut self, batch: &Batch) -> Result<Vec<f32>>;
    /// Starts the carried state afresh at zero.
    fn reset_state(&mut self) -> Result<()>;
    /// Steps taken.
    fn steps_done(&self) -> u64;
    /// The model with its current parameters (a readback on the GPU).
    fn model(&self) -> Result<SequenceModel>;
    /// Parameters, optimizer state and step (the carried state is reset).
    fn checkpoint(&mut self) -> Result<Checkpoint>;
    fn config(&self) -> &TrainConfig;
}

fn check_loss(loss: f32, step: u64) -> Result<f32> {
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

enum GpuLoss {
    CrossEntropy {
        spec: CrossEntropy,
        targets: GpuTensor<u32>,
        plan: CrossEntropyPlan,
        _rows: GpuTensor,
    },
    Mse {
        targets: GpuTensor,
        plan: MsePlan,
    },
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
            Loss::CrossEntropy { ignore_index } => {
                let mut spec = CrossEntropy::new(rows.rows, model.spec.outputs);
                if let Some(i) = ignore_index {
                    spec = spec.ignore_index(i);
                }
                let targets = GpuTensor::<u32>::zeros(gpu, &[rows.rows])?;
                let row_loss = GpuTensor::zeros(gpu, &[rows.rows])?;
                let plan = CrossEntropyPlan::new(
                    gpu,
                    &spec,
                    dense.output(),
                    &targets,
                    &row_loss,
                    d_logits,
                )?;
                GpuLoss::CrossEntropy {
                    spec,
                    targets,
                    plan,
                    _rows: row_loss,
                }
            }
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
        let staging = gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("recur.trainer.loss"),
            size: 4,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
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
            (Targets::Classes(t), GpuLoss::CrossEntropy { spec, targets, .. }) => {
                write_targets(spec, targets, t)?
            }
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
            GpuLoss::CrossEntropy { plan, .. } => plan.record(rec),
            GpuLoss::Mse { plan, .. } => plan.record(rec),
        }
        Ok(())
    }

    /// Records copying the mean loss to the staging buffer, submits, and reads it: the
    /// step's only submit and only readback.
    fn submit_and_read_loss(&self, mut rec: Recorder) -> Result<f32> {
        let stats = match &self.loss {
            GpuLoss::CrossEntropy { plan, .. } => plan.stats(),
            GpuLoss::Mse { plan, .. } => plan.stats(),
        };
        rec.copy(stats.buffer(), 0, &self.staging, 0, 4);
        rec.submit()?;
        self.gpu.count(|c| c.readbacks += 1);
        let bytes = crate::gpu::readback::map_and_copy(&self.gpu, &self.staging)?;
        Ok(f32::from_le_bytes(
            bytes[..4]
                .try_into()
                .context("the loss readback is 4 bytes")?,
        ))
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
        let lengths = self.model.lengths(b)?;
        self.rnn.set_inputs(lengths.as_deref(), None, None)?;
        self.rnn.set_training(None)?;
        let mut rec = Recorder::new(&self.gpu);
        self.record_forward_loss(&mut rec)?;
        self.submit_and_read_loss(rec)
    }

    fn predict(&mut self, b: &Batch) -> Result<Vec<f32>> {
        self.evaluate(b)?;
        self.dense.output().to_vec()
    }

    fn reset_state(&mut self) -> Result<()> {
        self.rnn.set_inputs(None, None, None)
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
        self.reset_state()?;
        Ok(Checkpoint {
            spec: self.model.spec.clone(),
            params: self.model()?.named_params(),
            optimizer: self.optim.state()?,
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
        self.state = None;
        Ok(self
            .model
            .pass_cpu(&self.params, b, None, None, false)?
            .loss)
    }

    fn predict(&mut self, b: &Batch) -> Result<Vec<f32>> {
        check_shape(&self.cfg, b)?;
        self.model.check_batch(b)?;
        self.state = None;
        Ok(self
            .model
            .pass_cpu(&self.params, b, None, None, false)?
            .output)
    }

    fn reset_state(&mut self) -> Result<()> {
        self.state = None;
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
        self.state = None;
        Ok(Checkpoint {
            spec: self.model.spec.clone(),
            params: self.model()?.named_params(),
            optimizer: self.optim.state(),
            step: self.optim.steps(),
            meta: BTreeMap::new(),
        })
    }

    fn config(&self) -> &TrainConfig {
        &self.cfg
    }
}
