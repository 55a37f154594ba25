//! Recurrent layers: forward and forward + backward per batch, CPU path against GPU path.

use crate::error::Result;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::{time_reps, Stats};
use crate::backend::Backend;
use crate::exec::{Executor, ProgramId};
use crate::gpu::Gpu;
use crate::nn::{Recurrent, RecurrentConfig};
use crate::ops::optim::OptimConfig;
use crate::ops::program::{Op, ProgramBuilder};
use crate::ops::recurrent::CellKind;
use crate::ops::Optimizer;

/// One case: a cell and a shape.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct RecurrentCase {
    /// The cell (serialised by its name, e.g. "lstm").
    #[serde(serialize_with = "cell_name")]
    pub cell: CellKind,
    /// Features per time step of the first layer's input (`hidden` from [`RecurrentCase::new`]).
    pub input: usize,
    /// Hidden units per layer and direction (H).
    pub hidden: usize,
    /// Sequences per batch (B).
    pub batch: usize,
    /// Time steps per sequence (T).
    pub steps: usize,
    /// Stacked layers (1 from [`RecurrentCase::new`]).
    pub layers: usize,
    /// Whether every layer runs both directions (false from [`RecurrentCase::new`]).
    pub bidirectional: bool,
    /// Dropout between stacked layers (PyTorch's `dropout`), for the cost table: its
    /// programs are recorded as a training step's (0 from [`RecurrentCase::new`]).
    pub dropout: f32,
}

fn cell_name<S: serde::Serializer>(c: &CellKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(c.name())
}

impl RecurrentCase {
    /// The same case with `layers` stacked layers, bidirectional or not.
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
        if self.dropout > 0.0 {
            s.push_str(&format!(" dropout {}", self.dropout));
        }
        s
    }

    /// The same case with `dropout` between its stacked layers.
    pub fn with_dropout(mut self, dropout: f32) -> Self {
        self.dropout = dropout;
        self
    }

    /// One unidirectional layer of `hidden` units with input size `hidden`, at batch `batch`
    /// and `steps` time steps.
    pub fn new(cell: CellKind, hidden: usize, batch: usize, steps: usize) -> Self {
        Self {
            cell,
            input: hidden,
            hidden,
            batch,
            steps,
            layers: 1,
            bidirectional: false,
            dropout: 0.0,
        }
    }

    /// The layer configuration of this case (input = hidden unless set otherwise).
    pub fn config(&self) -> RecurrentConfig {
        let mut c = RecurrentConfig::new(self.cell, self.input, self.hidden);
        c.num_layers = self.layers;
        c.bidirectional = self.bidirectional;
        c.dropout = self.dropout;
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

/// The timings of one case on one backend (the CPU or the GPU), in seconds per batch.
/// GFLOP/s use the median wall time.
#[derive(Clone, Debug, Serialize)]
pub struct SideResult {
    /// A forward alone (inference: nothing kept for a backward).
    pub forward: Stats,
    /// A forward and a backward with every gradient, in one run.
    pub forward_backward: Stats,
    /// Forward, backward and an Adam update of every parameter: a whole training step
    /// (not measured by quick runs).
    pub train_step: Option<Stats>,
    /// GFLOP/s of the forward ([`RecurrentCase::forward_flops`] over the `forward` median).
    pub forward_gflops: f64,
    /// GFLOP/s of forward + backward ([`RecurrentCase::train_flops`] over the
    /// `forward_backward` median).
    pub train_gflops: f64,
    /// GPU only: timestamps (device time), dispatches and submits per batch, device bytes.
    pub forward_device: Option<Stats>,
    /// GPU only: device time of forward + backward, where the adapter has timestamps.
    pub forward_backward_device: Option<Stats>,
    /// GPU only: compute dispatches of one forward.
    pub dispatches_forward: Option<u64>,
    /// GPU only: compute dispatches of the backward (those of forward + backward less the
    /// forward's).
    pub dispatches_backward: Option<u64>,
    /// GPU only: queue submits per forward + backward run.
    pub submits_per_step: Option<u64>,
    /// GPU only: bytes the executor holds on the device for parameters, programs and their
    /// workspace.
    pub device_bytes: Option<u64>,
    /// GPU only: host time to record and submit a training step (median).
    pub encode: Option<Stats>,
}

/// One case measured on the CPU and the GPU.
#[derive(Clone, Debug, Serialize)]
pub struct RecurrentResult {
    /// The cell and shape measured.
    pub case: RecurrentCase,
    /// The CPU's timings; `None` where they were not measured.
    pub cpu: Option<SideResult>,
    /// The GPU's timings; `None` without a GPU.
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

/// The programs a measurement runs: a forward (inference: no backward reads it), a
/// forward and backward in one run, and a training step (forward, backward, an Adam update
/// of every parameter) in one run.
struct Programs {
    forward: ProgramId,
    forward_backward: ProgramId,
    train: ProgramId,
}

fn programs(
    exec: &mut dyn Executor,
    case: &RecurrentCase,
    layer: &Recurrent,
    x: &[f32],
    dy: &[f32],
) -> Result<Programs> {
    for (name, t) in layer.params() {
        exec.set_param(name, &t.shape, &t.data)?;
    }
    let (b, t) = (case.batch, case.steps);
    let c = &layer.config;
    let build = |exec: &mut dyn Executor, grads: bool, update: bool| -> Result<ProgramId> {
        let mut p = ProgramBuilder::new();
        let input = p.input("input", &[b * t, c.input_size]);
        let rec = layer.record_forward(&mut p, "", input, b, t, None, None)?;
        let d_out = p.input("output gradient", &[b * t, c.output_size()]);
        if grads {
            let g = layer.record_backward(&mut p, &rec, Some(d_out))?;
            if update {
                let params = g
                    .params
                    .iter()
                    .map(|(name, &grad)| {
                        let shape = &layer.params()[name].shape;
                        Ok((name.clone(), p.param(name, shape)?, grad))
                    })
                    .collect::<Result<Vec<_>>>()?;
                p.op(Op::Optimize {
                    config: OptimConfig::new(Optimizer::adam(1e-3)),
                    params,
                });
            }
        }
        let id = exec.load(p.finish())?;
        exec.write(id, input, 0, x)?;
        exec.write(id, d_out, 0, dy)?;
        Ok(id)
    };
    Ok(Programs {
        forward: build(exec, false, false)?,
        forward_backward: build(exec, true, false)?,
        train: build(exec, true, true)?,
    })
}

/// Measures a case on one backend: the same programs on either executor.
pub fn measure(
    backend: &Backend,
    case: &RecurrentCase,
    warmup: usize,
    reps: usize,
    with_train: bool,
) -> Result<SideResult> {
    let (layer, x, dy) = data(case);
    let mut exec = backend.executor();
    let progs = programs(exec.as_mut(), case, &layer, &x, &dy)?;
    let gpu = backend.as_gpu();
    // Untimed runs of every timed program: in a fresh process the first passes run 1.5-2x
    // slower while the allocator grows its heap (page faults). They must have finished
    // before the clock starts: without the wait, the first timed forward's wall time took
    // in the last warm-up's forward + backward still running on the GPU (lavapipe, LSTM
    // 128x1x1000: a forward of 1.86 s wall against 0.53 s of device time).
    for _ in 0..warmup.max(1) {
        exec.run(progs.forward, 0, 0)?;
        exec.run(progs.forward_backward, 0, 0)?;
    }
    if let Some(g) = gpu {
        g.wait()?;
    }
    let run = |exec: &mut dyn Executor, p: ProgramId, step: u64| -> Result<Option<f64>> {
        exec.run(p, 0, step)?;
        if let Some(g) = gpu {
            g.wait()?;
        }
        Ok(exec.last_run().device_seconds)
    };
    exec.set_timing(true);
    let fwd = time_reps(warmup, reps, || run(exec.as_mut(), progs.forward, 0))?;
    let dispatches_forward = exec.last_run().dispatches;
    let before = gpu.map(|g| g.counters());
    let both = time_reps(warmup, reps, || {
        run(exec.as_mut(), progs.forward_backward, 0)
    })?;
    let after = gpu.map(|g| g.counters());
    let dispatches_both = exec.last_run().dispatches;
    exec.set_timing(false);
    let runs = (warmup + reps.max(1)) as u64;
    let mut encode = Vec::new();
    let mut step = 0;
    let train = with_train
        .then(|| {
            time_reps(warmup, reps, || {
                run(exec.as_mut(), progs.train, step)?;
                step += 1;
                encode.push(exec.last_run().encode_seconds);
                Ok(None)
            })
        })
        .transpose()?;
    let on_gpu = gpu.is_some();
    Ok(SideResult {
        forward_gflops: case.forward_flops() / fwd.wall.median / 1e9,
        train_gflops: case.train_flops() / both.wall.median / 1e9,
        forward: fwd.wall,
        forward_backward: both.wall,
        train_step: train.map(|t| t.wall),
        encode: on_gpu.then(|| Stats::from_samples(&mut encode)).flatten(),
        forward_device: fwd.device,
        forward_backward_device: both.device,
        dispatches_forward: on_gpu.then_some(dispatches_forward),
        dispatches_backward: on_gpu.then_some(dispatches_both.saturating_sub(dispatches_forward)),
        submits_per_step: match (before, after) {
            (Some(b), Some(a)) => Some((a.submits - b.submits) / runs),
            _ => None,
        },
        device_bytes: on_gpu.then(|| exec.memory_bytes()),
    })
}

/// [`measure`] on the CPU.
pub fn measure_cpu(
    case: &RecurrentCase,
    warmup: usize,
    reps: usize,
    with_train: bool,
) -> Result<SideResult> {
    measure(&Backend::Cpu, case, warmup, reps, with_train)
}

/// [`measure`] on a GPU.
pub fn measure_gpu(
    gpu: &Gpu,
    case: &RecurrentCase,
    warmup: usize,
    reps: usize,
    with_train: bool,
) -> Result<SideResult> {
    measure(&Backend::Gpu(gpu.clone()), case, warmup, reps, with_train)
}
