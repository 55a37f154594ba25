//! A `Recurrent` stack on the GPU for a fixed batch and sequence length: parameters,
//! activations, gradients and every plan live on the device, built once; a forward or a
//! backward is recorded and submitted once.

use std::collections::BTreeMap;

use std::sync::Mutex;

use anyhow::{Context, Result};

use super::recurrent::{
    DropoutKind, OutputStage, Recurrent, RecurrentConfig, RecurrentGrads, RecurrentOutput, TrainKey,
};
use crate::gpu::dropout::{DropoutMaskPlan, RowMaskPlan};
use crate::gpu::merge::MergePlan;
use crate::gpu::recurrent::{GpuGrads, GpuWeights, RecurrentPlan};
use crate::gpu::{Gpu, GpuTensor, Recorder};
use crate::ops::{Dropout, DropoutKey};

pub struct GpuRecurrent {
    gpu: Gpu,
    config: RecurrentConfig,
    batch: usize,
    steps: usize,
    params: BTreeMap<String, GpuTensor>,
    grads: Option<BTreeMap<String, GpuTensor>>,
    input: GpuTensor,
    /// Each layer's concatenated output [rows, directions * H].
    layer_out: Vec<GpuTensor>,
    /// The stack's output when the output stage is not the identity.
    output: Option<(GpuTensor, MergePlan)>,
    /// Gradient of each layer's input (`d_input[0]` is the stack's), and of the last
    /// layer's output.
    d_input: Vec<GpuTensor>,
    d_last: Option<GpuTensor>,
    d_output: Option<(GpuTensor, MergePlan)>,
    plans: Vec<Vec<RecurrentPlan>>,
    input_dropout: Vec<Option<InputDropout>>,
    recurrent_dropout: Vec<(DropoutKind, Mutex<DropoutMaskPlan>)>,
    train: Mutex<Option<TrainKey>>,
    _bias_scratch: GpuTensor,
}

/// A layer's input dropout: the mask, the masked copy of the input the layer reads, and
/// the plans that draw and apply it (forward, and to the input's gradient).
struct InputDropout {
    make: Mutex<DropoutMaskPlan>,
    apply: RowMaskPlan,
    apply_grad: Option<RowMaskPlan>,
    _mask: GpuTensor,
    masked: GpuTensor,
}

impl GpuRecurrent {
    /// Uploads `layer` and plans a forward (and, with `with_grads`, a backward) over batches
    /// of `batch` sequences of `steps` steps.
    pub fn new(
        gpu: &Gpu,
        layer: &Recurrent,
        batch: usize,
        steps: usize,
        with_grads: bool,
    ) -> Result<Self> {
        let c = layer.config.clone();
        let (h, dirs) = (c.hidden_size, c.directions());
        let rows = batch * steps;
        let mut params = BTreeMap::new();
        for (name, t) in &layer.params {
            params.insert(name.clone(), GpuTensor::from_slice(gpu, &t.shape, &t.data)?);
        }
        let grads = if with_grads {
            let mut g = BTreeMap::new();
            for (name, t) in &layer.params {
                g.insert(name.clone(), GpuTensor::zeros(gpu, &t.shape)?);
            }
            Some(g)
        } else {
            None
        };
        let input = GpuTensor::zeros(gpu, &[rows, c.input_size])?;
        let layer_out = (0..c.num_layers)
            .map(|_| GpuTensor::zeros(gpu, &[rows, dirs * h]))
            .collect::<Result<Vec<_>>>()?;
        let d_input = if with_grads {
            (0..c.num_layers)
                .map(|l| GpuTensor::zeros(gpu, &[rows, c.layer_input(l)]))
                .collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        let stage = OutputStage::of(&c, batch, steps);
        let last = layer_out.last().context("a stack has at least one layer")?;
        let output = if stage.is_identity() {
            None
        } else {
            let out = GpuTensor::zeros(gpu, &[rows, stage.width()])?;
            let plan = MergePlan::forward(gpu, &stage, last, &out)?;
            Some((out, plan))
        };
        let d_last = with_grads
            .then(|| GpuTensor::zeros(gpu, &[rows, dirs * h]))
            .transpose()?;
        let d_output = match (&d_last, stage.is_identity()) {
            (Some(d_last), false) => {
                let d_out = GpuTensor::zeros(gpu, &[rows, stage.width()])?;
                let plan = MergePlan::backward(gpu, &stage, last, &d_out, d_last)?;
                Some((d_out, plan))
            }
            _ => None,
        };

        let bias_scratch = GpuTensor::zeros(gpu, &[c.cell.gates() * h])?;
        let mut plans = Vec::new();
        // Input dropout: each layer with a rate reads a masked copy of its input.
        let mut input_dropout = Vec::new();
        for l in 0..c.num_layers {
            let rate = layer.dropout_rate(DropoutKind::Input(l));
            input_dropout.push(if rate > 0.0 {
                let f = c.layer_input(l);
                let mask = GpuTensor::zeros(gpu, &[batch, f])?;
                let masked = GpuTensor::zeros(gpu, &[rows, f])?;
                let make = DropoutMaskPlan::new(gpu, &Dropout::new(batch, f, 1.0 - rate), &mask)?;
                let apply = RowMaskPlan::new(gpu, &mask, &masked, steps, c.batch_first)?;
                let apply_grad = match d_input.get(l) {
                    Some(d) => Some(RowMaskPlan::new(gpu, &mask, d, steps, c.batch_first)?),
                    None => None,
                };
                Some(InputDropout {
                    make: Mutex::new(make),
                    apply,
                    apply_grad,
                    _mask: mask,
                    masked,
                })
            } else {
                None
            });
        }
        let recurrent_mask = c.recurrent_dropout > 0.0;
        for l in 0..c.num_layers {
            let x = match &input_dropout[l] {
                Some(drop) => &drop.masked,
                None if l == 0 => &input,
                None => &layer_out[l - 1],
            };
            let mut dir_plans = Vec::new();
            for d in 0..dirs {
                let s = RecurrentConfig::suffix(l, d);
                let p = |k: &str| params.get(&format!("{k}_{s}"));
                let weights = GpuWeights {
                    w_ih: p("weight_ih").context("weight_ih missing")?,
                    w_hh: p("weight_hh").context("weight_hh missing")?,
                    b_ih: p("bias_ih"),
                    b_hh: p("bias_hh"),
                };
                let plan_grads = match (&grads, &d_last) {
                    (Some(g), Some(d_last)) => {
                        let gp = |k: &str| g.get(&format!("{k}_{s}"));
                        // Without biases, the kernels' bias gradients land in a scratch buffer.
                        let db_ih = gp("bias_ih").unwrap_or(&bias_scratch);
                        let db_hh = gp("bias_hh").unwrap_or(&bias_scratch);
                        let dy = if l + 1 == c.num_layers {
                            d_last
                        } else {
                            &d_input[l + 1]
                        };
                        Some((
                            GpuGrads {
                                dx: &d_input[l],
                                accumulate_dx: d == 1,
                                dw_ih: gp("weight_ih").context("weight_ih grad missing")?,
                                dw_hh: gp("weight_hh").context("weight_hh grad missing")?,
                                db_ih,
                                db_hh,
                            },
                            Some(dy),
                        ))
                    }
                    _ => None,
                };
                let shape = layer.shape(l, d, batch, steps);
                dir_plans.push(RecurrentPlan::new(
                    gpu,
                    shape,
                    x,
                    &layer_out[l],
                    weights,
                    plan_grads,
                    recurrent_mask,
                )?);
            }
            plans.push(dir_plans);
        }
        let mut recurrent_dropout = Vec::new();
        if recurrent_mask {
            let spec = Dropout::new(batch, h, 1.0 - c.recurrent_dropout);
            for (l, ps) in plans.iter().enumerate() {
                for (d, p) in ps.iter().enumerate() {
                    let mask = p
                        .recurrent_mask()
                        .context("plan built with a recurrent mask")?;
                    recurrent_dropout.push((
                        DropoutKind::Recurrent(l, d),
                        Mutex::new(DropoutMaskPlan::new(gpu, &spec, mask)?),
                    ));
                }
            }
        }
        Ok(Self {
            gpu: gpu.clone(),
            config: c,
            batch,
            steps,
            params,
            grads,
            input,
            layer_out,
            output,
            d_input,
            d_last,
            d_output,
            plans,
            input_dropout,
            recurrent_dropout,
            train: Mutex::new(None),
            _bias_scratch: bias_scratch,
        })
    }

    /// Training mode with dropout masks keyed by `key` (seed and step) for the work recorded
    /// next, or evaluation mode (`None`: no dropout). The masks equal the CPU path's for the
    /// same key.
    pub fn set_training(&self, key: Option<TrainKey>) -> Result<()> {
        let mut train = self.train.lock().unwrap_or_else(|p| p.into_inner());
        if key.is_none() && train.is_some() {
            // Evaluation: the recurrent products see the state unmasked.
            for (_, p) in self.each_plan() {
                if let Some(m) = p.recurrent_mask() {
                    m.write(&vec![1.0; m.len()])?;
                }
            }
        }
        *train = key;
        Ok(())
    }

    fn training(&self) -> Option<TrainKey> {
        *self.train.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn config(&self) -> &RecurrentConfig {
        &self.config
    }

    /// The (batch, steps) this stack was planned for.
    pub fn batch_shape(&self) -> (usize, usize) {
        (self.batch, self.steps)
    }

    /// Copies new parameter values (same names and shapes) to the device.
    pub fn upload_params(&self, layer: &Recurrent) -> Result<()> {
        for (name, t) in &layer.params {
            self.params
                .get(name)
                .with_context(|| format!("parameter {name} is not part of this stack"))?
                .write(&t.data)?;
        }
        Ok(())
    }

    /// The device tensors of the parameters, by name.
    pub fn params(&self) -> &BTreeMap<String, GpuTensor> {
        &self.params
    }

    /// The device tensors of the parameter gradients, by name (after a backward).
    pub fn param_grads(&self) -> Option<&BTreeMap<String, GpuTensor>> {
        self.grads.as_ref()
    }

    /// The input tensor [rows, input_size] the forward reads.
    pub fn input(&self) -> &GpuTensor {
        &self.input
    }

    /// The stack's output on the device [rows, output_size].
    pub fn output(&self) -> &GpuTensor {
        match &self.output {
            Some((t, _)) => t,
            None => self
                .layer_out
                .last()
                .expect("a stack has at least one layer"),
        }
    }

    /// Where the gradient of the output goes before a backward [rows, output_size].
    pub fn output_grad(&self) -> Option<&GpuTensor> {
        match &self.d_output {
            Some((t, _)) => Some(t),
            None => self.d_last.as_ref(),
        }
    }

    /// The gradient of the input after a backward [rows, input_size].
    pub fn input_grad(&self) -> Option<&GpuTensor> {
        self.d_input.first()
    }

    fn each_plan(&self) -> impl Iterator<Item = (usize, &RecurrentPlan)> {
        let dirs = self.config.directions();
        self.plans
            .iter()
            .enumerate()
            .flat_map(move |(l, ps)| ps.iter().enumerate().map(move |(d, p)| (l * dirs + d, p)))
    }

    fn state_slice<'a>(&self, all: Option<&'a [f32]>, index: usize) -> Option<&'a [f32]> {
        let n = self.batch * self.config.hidden_size;
        all.map(|v| &v[index * n..(index + 1) * n])
    }

    /// Sets lengths and initial states (host data, written before the next submit).
    pub fn set_inputs(
        &self,
        lengths: Option<&[usize]>,
        h0: Option<&[f32]>,
        c0: Option<&[f32]>,
    ) -> Result<()> {
        for (i, plan) in self.each_plan() {
            plan.set_lengths(lengths)?;
            plan.set_initial_state(self.state_slice(h0, i), self.state_slice(c0, i))?;
        }
        Ok(())
    }

    /// Records the forward of the whole stack (with dropout in training mode, see
    /// [`Self::set_training`]). Masks are drawn on the device: record at most one forward
    /// per submit in training mode.
    pub fn record_forward(&self, rec: &mut Recorder) -> Result<()> {
        let train = self.training();
        if let Some(key) = train {
            for (kind, make) in &self.recurrent_dropout {
                let key = DropoutKey {
                    seed: key.seed,
                    step: key.step,
                    stream: kind.stream(),
                };
                make.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .record(rec, key)?;
            }
        }
        for (l, layer) in self.plans.iter().enumerate() {
            if let Some(drop) = &self.input_dropout[l] {
                let src = if l == 0 {
                    &self.input
                } else {
                    &self.layer_out[l - 1]
                };
                rec.copy(src.buffer(), 0, drop.masked.buffer(), 0, src.device_bytes());
                if let Some(key) = train {
                    let key = DropoutKey {
                        seed: key.seed,
                        step: key.step,
                        stream: DropoutKind::Input(l).stream(),
                    };
                    drop.make
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .record(rec, key)?;
                    drop.apply.record(rec);
                }
            }
            for plan in layer {
                plan.record_forward(rec);
            }
        }
        if let Some((_, merge)) = &self.output {
            merge.record(rec);
        }
        Ok(())
    }

    /// Records the backward of the whole stack (the output gradient must be in place).
    pub fn record_backward(&self, rec: &mut Recorder) -> Result<()> {
        if let Some((_, merge)) = &self.d_output {
            merge.record(rec);
        }
        let train = self.training().is_some();
        for (l, layer) in self.plans.iter().enumerate().rev() {
            for plan in layer {
                plan.record_backward(rec)?;
            }
            if let (true, Some(drop)) = (train, &self.input_dropout[l]) {
                if let Some(apply) = &drop.apply_grad {
                    apply.record(rec);
                }
            }
        }
        Ok(())
    }

    /// Records copying every layer's final states into its initial states (stateful
    /// training: the next forward continues from here, without gradients across).
    pub fn record_carry_state(&self, rec: &mut Recorder) {
        for (_, plan) in self.each_plan() {
            plan.record_carry_state(rec);
        }
    }

    /// The initial states the next forward reads, `[layers * directions, B, H]` each (c
    /// empty without a cell state): in stateful training, the carried state (readbacks).
    pub fn initial_state(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        let h = self.read_states(|p| p.h0())?;
        let c = if self.config.cell.has_cell_state() {
            self.read_states(|p| p.c0())?
        } else {
            Vec::new()
        };
        Ok((h, c))
    }

    /// Records handing this stack's final states to `next` as its initial states, layer by
    /// layer and direction by direction (an encoder's state to a decoder).
    pub fn record_state_to(&self, next: &GpuRecurrent, rec: &mut Recorder) -> Result<()> {
        self.check_handoff(next)?;
        for ((_, a), (_, b)) in self.each_plan().zip(next.each_plan()) {
            a.record_state_to(b, rec)?;
        }
        Ok(())
    }

    /// Records taking `next`'s initial-state gradients as this stack's final-state
    /// gradients (after `next`'s backward, before this one's).
    pub fn record_state_grads_from(&self, next: &GpuRecurrent, rec: &mut Recorder) -> Result<()> {
        self.check_handoff(next)?;
        for ((_, a), (_, b)) in self.each_plan().zip(next.each_plan()) {
            a.record_state_grads_from(b, rec)?;
        }
        Ok(())
    }

    fn check_handoff(&self, next: &GpuRecurrent) -> Result<()> {
        let (a, b) = (&self.config, &next.config);
        anyhow::ensure!(
            a.num_layers == b.num_layers && a.directions() == b.directions(),
            "a state handoff needs the same layers and directions: {} x {} vs {} x {}",
            a.num_layers,
            a.directions(),
            b.num_layers,
            b.directions()
        );
        Ok(())
    }

    /// Sets lengths only, keeping the initial states where they are on the device.
    pub fn set_lengths(&self, lengths: Option<&[usize]>) -> Result<()> {
        for (_, plan) in self.each_plan() {
            plan.set_lengths(lengths)?;
        }
        Ok(())
    }

    fn read_states(&self, read: impl Fn(&RecurrentPlan) -> Result<Vec<f32>>) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        for (_, plan) in self.each_plan() {
            out.extend(read(plan)?);
        }
        Ok(out)
    }

    /// Runs the forward (one submit) on checked host input ([`Recurrent::check_input`]) and
    /// reads the outputs back.
    pub fn forward(
        &self,
        input: &[f32],
        lengths: Option<&[usize]>,
        h0: Option<&[f32]>,
        c0: Option<&[f32]>,
    ) -> Result<RecurrentOutput<f32>> {
        self.input.write(input)?;
        self.set_inputs(lengths, h0, c0)?;
        let mut rec = Recorder::new(&self.gpu);
        self.record_forward(&mut rec)?;
        rec.submit()?;
        Ok(RecurrentOutput {
            output: self.output().to_vec()?,
            h_n: self.read_states(|p| p.h_n())?,
            c_n: if self.config.cell.has_cell_state() {
                self.read_states(|p| p.c_n())?
            } else {
                Vec::new()
            },
        })
    }

    /// Runs the backward (one submit) of the last forward and reads every gradient back.
    pub fn backward(
        &self,
        d_output: Option<&[f32]>,
        d_h_n: Option<&[f32]>,
        d_c_n: Option<&[f32]>,
    ) -> Result<RecurrentGrads<f32>> {
        let grads = self
            .grads
            .as_ref()
            .context("this GPU stack was built without gradients")?;
        let d_out = self
            .output_grad()
            .context("this GPU stack was built without gradients")?;
        match d_output {
            Some(d) => d_out.write(d)?,
            None => d_out.write(&vec![0.0; d_out.len()])?,
        }
        for (i, plan) in self.each_plan() {
            plan.set_final_state_grads(self.state_slice(d_h_n, i), self.state_slice(d_c_n, i))?;
        }
        let mut rec = Recorder::new(&self.gpu);
        self.record_backward(&mut rec)?;
        rec.submit()?;
        let mut params = BTreeMap::new();
        for (name, t) in grads {
            params.insert(name.clone(), t.to_vec()?);
        }
        Ok(RecurrentGrads {
            input: self.d_input[0].to_vec()?,
            h0: self.read_states(|p| p.dh0())?,
            c0: if self.config.cell.has_cell_state() {
                self.read_states(|p| p.dc0())?
            } else {
                Vec::new()
            },
            params,
        })
    }

    /// Bytes of device memory the stack holds (parameters, gradients, activations, workspace).
    pub fn device_bytes(&self) -> u64 {
        let tensors = self
            .params
            .values()
            .chain(self.grads.iter().flat_map(|g| g.values()))
            .chain(std::iter::once(&self.input))
            .chain(&self.layer_out)
            .chain(&self.d_input)
            .chain(&self.d_last)
            .chain(self.output.iter().map(|(t, _)| t))
            .chain(self.d_output.iter().map(|(t, _)| t));
        tensors.map(|t| t.device_bytes()).sum::<u64>()
            + self
                .each_plan()
                .map(|(_, p)| p.workspace_bytes())
                .sum::<u64>()
    }
}
