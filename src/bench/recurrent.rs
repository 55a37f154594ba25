//! Recurrent layers: forward and forward + backward per batch, CPU path against GPU path.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Result;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::{time_reps, Stats};
use crate::gpu::optim::OptimPlan;
use crate::gpu::{Gpu, GpuTensor, Recorder};
use crate::nn::{GpuRecurrent, Recurrent, RecurrentConfig};
use crate::ops::recurrent::CellKind;
use crate::ops::Optimizer;

/// One case: a cell and a shape.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct RecurrentCase {
    #[serde(serialize_with = "cell_name")]
    pub cell: CellKind,
    pub input: usize,
    pub hidden: usize,
    pub batch: usize,
    pub steps: usize,
    pub layers: usize,
    pub bidirectional: bool,
}

fn cell_name<S: serde::Serializer>(c: &CellKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(c.name())
}

impl RecurrentCase {
    pub fn with_layers(mut self, layers: usize, bidirectional: bool) -> Self {
        self.layers = layers;
        self.bidirectional = bidirectional;
        self
    }

    /// A short label: cell, H x B x T, and layers / directions where not 1.
    pub fn label(&self) -> String {
        let mut s = format!(
            "{} {}x{}x{}",
            self.cell.name(),
            self.hidden,
            self.batch,
            self.steps
        );
        if self.layers > 1 {
            s.push_str(&format!(" L{}", self.layers));
        }
        if self.bidirectional {
            s.push_str(" bi");
        }
        s
    }

    pub fn new(cell: CellKind, hidden: usize, batch: usize, steps: usize) -> Self {
        Self {
            cell,
            input: hidden,
            hidden,
            batch,
            steps,
            layers: 1,
            bidirectional: false,
        }
    }

    /// The layer configuration of this case (input = hidden unless set otherwise).
    pub fn config(&self) -> RecurrentConfig {
        let mut c = RecurrentConfig::new(self.cell, self.input, self.hidden);
        c.num_layers = self.layers;
        c.bidirectional = self.bidirectional;
        c
    }

    /// Matrix-product FLOPs of one forward (input projections and recurrent products).
    pub fn forward_flops(&self) -> f64 {
        let c = self.config();
        let g = (self.cell.gates() * self.hidden) as f64;
        let rows = (self.batch * self.steps) as f64;
        (0..self.layers)
            .map(|l| {
                2.0 * rows * g * (c.layer_input(l) + self.hidden) as f64 * c.directions() as f64
            })
            .sum()
    }

    /// Backward does about twice the forward's products (input and weight gradients).
    pub fn train_flops(&self) -> f64 {
        3.0 * self.forward_flops()
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct SideResult {
    pub forward: Stats,
    pub forward_backward: Stats,
    /// Forward, backward and an Adam update of every parameter: a whole training step
    /// (not measured by quick runs).
    pub train_step: Option<Stats>,
    pub forward_gflops: f64,
    pub train_gflops: f64,
    /// GPU only: timestamps (device time), dispatches and submits per batch, device bytes.
    pub forward_device: Option<Stats>,
    pub forward_backward_device: Option<Stats>,
    pub dispatches_forward: Option<u64>,
    pub dispatches_backward: Option<u64>,
    pub submits_per_step: Option<u64>,
    pub device_bytes: Option<u64>,
    /// GPU only: host time to record and submit a training step (median).
    pub encode: Option<Stats>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RecurrentResult {
    pub case: RecurrentCase,
    pub cpu: Option<SideResult>,
    pub gpu: Option<SideResult>,
}

fn data(case: &RecurrentCase) -> (Recurrent, Vec<f32>, Vec<f32>) {
    let layer = Recurrent::new(case.config(), 11).expect("benchmark configuration is valid");
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let rows = case.batch * case.steps;
    let x = (0..rows * case.input)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let dy = (0..rows * layer.config.output_size())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    (layer, x, dy)
}

pub fn measure_cpu(
    case: &RecurrentCase,
    warmup: usize,
    reps: usize,
    with_train: bool,
) -> Result<SideResult> {
    let (layer, x, dy) = data(case);
    let p = layer.params_as::<f32>();
    let (b, t) = (case.batch, case.steps);
    // Untimed passes that touch everything a training step allocates: in a fresh process the
    // first passes run 1.5-2x slower while the allocator grows its heap (page faults), which
    // the warm-up of each measurement alone did not cover for the first case of a run.
    for _ in 0..warmup.max(1) {
        let (_, tape) = layer.forward_cpu(&p, &x, b, t, None, None, None)?;
        layer.backward_cpu(&p, &tape, Some(&dy), None, None)?;
    }
    // Forward alone is inference (no tape), as PyTorch's figure is under `no_grad`.
    let fwd = time_reps(warmup, reps, || {
        layer.infer_cpu(&p, &x, b, t, None, None, None)?;
        Ok(None)
    })?;
    let both = time_reps(warmup, reps, || {
        let (_, tape) = layer.forward_cpu(&p, &x, b, t, None, None, None)?;
        layer.backward_cpu(&p, &tape, Some(&dy), None, None)?;
        Ok(None)
    })?;
    let opt = Optimizer::adam(1e-3);
    let mut params = p.clone();
    let mut states: BTreeMap<String, Vec<f32>> = p
        .iter()
        .map(|(k, v)| (k.clone(), vec![0.0; opt.slots() * v.len()]))
        .collect();
    let mut step = 0u64;
    let train = with_train
        .then(|| {
            time_reps(warmup, reps, || {
                let (_, tape) = layer.forward_cpu(&params, &x, b, t, None, None, None)?;
                let g = layer.backward_cpu(&params, &tape, Some(&dy), None, None)?;
                step += 1;
                for (name, grad) in &g.params {
                    let state = states.get_mut(name).expect("a state per parameter");
                    let param = params.get_mut(name).expect("a gradient per parameter");
                    crate::cpu::optim::step(&opt, step, param, grad, state, 1.0)?;
                }
                Ok(None)
            })
        })
        .transpose()?;
    Ok(SideResult {
        forward_gflops: case.forward_flops() / fwd.wall.median / 1e9,
        train_gflops: case.train_flops() / both.wall.median / 1e9,
        forward: fwd.wall,
        forward_backward: both.wall,
        train_step: train.map(|t| t.wall),
        forward_device: None,
        forward_backward_device: None,
        dispatches_forward: None,
        dispatches_backward: None,
        submits_per_step: None,
        device_bytes: None,
        encode: None,
    })
}

pub fn measure_gpu(
    gpu: &Gpu,
    case: &RecurrentCase,
    warmup: usize,
    reps: usize,
    with_train: bool,
) -> Result<SideResult> {
    let (layer, x, dy) = data(case);
    let stack = GpuRecurrent::new(gpu, &layer, case.batch, case.steps, true)?;
    stack.input().write(&x)?;
    stack.set_inputs(None, None, None)?;
    stack
        .output_grad()
        .expect("planned with gradients")
        .write(&dy)?;
    // Dispatches are counted as recorded; the recording is dropped unsubmitted.
    let count = |f: &dyn Fn(&mut Recorder) -> Result<()>| -> Result<u64> {
        let mut rec = Recorder::new(gpu);
        f(&mut rec)?;
        Ok(rec.dispatches())
    };
    let dispatches_forward = count(&|rec| stack.record_forward(rec))?;
    let dispatches_backward = count(&|rec| stack.record_backward(rec))?;
    let fwd = time_reps(warmup, reps, || {
        let mut rec = Recorder::timed(gpu);
        stack.record_forward(&mut rec)?;
        let r = rec.submit()?;
        gpu.wait()?;
        Ok(r.gpu_seconds)
    })?;
    let before = gpu.counters();
    let both = time_reps(warmup, reps, || {
        let mut rec = Recorder::timed(gpu);
        stack.record_forward(&mut rec)?;
        stack.record_backward(&mut rec)?;
        let r = rec.submit()?;
        gpu.wait()?;
        Ok(r.gpu_seconds)
    })?;
    let after = gpu.counters();
    let runs = (warmup + reps.max(1)) as u64;
    // A whole training step: forward, backward, Adam on every parameter, one submit.
    let opt = Optimizer::adam(1e-3);
    let grads = stack.param_grads().expect("planned with gradients");
    let mut states = Vec::new();
    let mut plans = Vec::new();
    for (name, param) in stack.params() {
        let state = GpuTensor::zeros(gpu, &[opt.slots() * param.len()])?;
        plans.push(OptimPlan::new(
            gpu,
            &opt,
            param,
            &grads[name],
            Some(&state),
            None,
        )?);
        states.push(state);
    }
    let mut encode = Vec::new();
    let train = with_train
        .then(|| {
            time_reps(warmup, reps, || {
                let start = Instant::now();
                let mut rec = Recorder::new(gpu);
                stack.record_forward(&mut rec)?;
                stack.record_backward(&mut rec)?;
                for plan in plans.iter_mut() {
                    plan.record(&mut rec)?;
                }
                rec.submit()?;
                encode.push(start.elapsed().as_secs_f64());
                gpu.wait()?;
                Ok(None)
            })
        })
        .transpose()?;
    Ok(SideResult {
        forward_gflops: case.forward_flops() / fwd.wall.median / 1e9,
        train_gflops: case.train_flops() / both.wall.median / 1e9,
        forward: fwd.wall,
        forward_backward: both.wall,
        train_step: train.map(|t| t.wall),
        encode: Stats::from_samples(&mut encode),
        forward_device: fwd.device,
        forward_backward_device: both.device,
        dispatches_forward: Some(dispatches_forward),
        dispatches_backward: Some(dispatches_backward),
        submits_per_step: Some((after.submits - before.submits) / runs),
        device_bytes: Some(stack.device_bytes()),
    })
}
