//! Host side of `shaders/optim.wgsl`: optimizer updates and gradient clipping by global
//! norm. CPU twin: `src/cpu/optim.rs`; formulas and state layout: `src/ops/optim.rs`.
//!
//! A plan is built once per parameter buffer; each step writes the step number and the
//! hyperparameters into the plan's uniform buffer (`queue.write_buffer`) and records one
//! dispatch. Because that write lands before the next submit, a plan is recorded at most
//! once per submit.

use crate::error::{ensure, Result};
use bytemuck::{Pod, Zeroable};

use super::launch::{ensure_distinct, grid, WG};
use super::{Cost, Gpu, GpuTensor, Kernel, KernelKey, Recorder, Recording};
use crate::ops::optim::{validate_clip, Optimizer};

/// Elements one `clip_partial` workgroup sums (`CLIP_CHUNK` in the shader).
const CLIP_CHUNK: usize = 4096;

/// Mirrors `OptimParams` in `shaders/optim.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct OptimParams {
    n: u32,
    step: u32,
    flags: u32,
    _pad0: u32,
    lr: f32,
    weight_decay: f32,
    momentum: f32,
    dampening: f32,
    alpha: f32,
    eps: f32,
    beta1: f32,
    beta2: f32,
    bias1: f32,
    bias2: f32,
    _pad1: [u32; 2],
}

super::uniform_mirror!(OPTIM_MIRROR: OptimParams in "optim" as "OptimParams" {
    n, step, flags, lr, weight_decay, momentum, dampening, alpha, eps, beta1, beta2, bias1, bias2,
});

/// Mirrors `ClipParams` in `shaders/optim.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ClipParams {
    n: u32,
    offset: u32,
    _pad0: [u32; 2],
    max_norm: f32,
    _pad1: [u32; 3],
}

super::uniform_mirror!(CLIP_MIRROR: ClipParams in "optim" as "ClipParams" {
    n, offset, max_norm,
});

const FLAG_NESTEROV: u32 = 1;
const FLAG_CENTERED: u32 = 2;
const FLAG_DECOUPLED: u32 = 4;
const FLAG_CLIP: u32 = 8;
const FLAG_MOMENTUM: u32 = 16;
const FLAG_WEIGHT_DECAY: u32 = 32;

fn params(opt: &Optimizer, n: usize, step: u64, clip: bool) -> OptimParams {
    let mut p = OptimParams::zeroed();
    p.n = n as u32;
    p.step = step.min(u32::MAX as u64) as u32;
    p.flags = if clip { FLAG_CLIP } else { 0 };
    match *opt {
        Optimizer::Sgd {
            lr,
            momentum,
            dampening,
            weight_decay,
            nesterov,
        } => {
            p.lr = lr;
            p.momentum = momentum;
            p.dampening = dampening;
            p.weight_decay = weight_decay;
            p.flags |= if nesterov { FLAG_NESTEROV } else { 0 }
                | if momentum != 0.0 { FLAG_MOMENTUM } else { 0 }
                | if weight_decay != 0.0 {
                    FLAG_WEIGHT_DECAY
                } else {
                    0
                };
        }
        Optimizer::RmsProp {
            lr,
            alpha,
            eps,
            weight_decay,
            momentum,
            centered,
        } => {
            p.lr = lr;
            p.alpha = alpha;
            p.eps = eps;
            p.weight_decay = weight_decay;
            p.momentum = momentum;
            p.flags |= if centered { FLAG_CENTERED } else { 0 }
                | if momentum > 0.0 { FLAG_MOMENTUM } else { 0 }
                | if weight_decay != 0.0 {
                    FLAG_WEIGHT_DECAY
                } else {
                    0
                };
        }
        Optimizer::Adam {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
            decoupled,
        } => {
            p.lr = lr;
            p.beta1 = beta1;
            p.beta2 = beta2;
            p.eps = eps;
            p.weight_decay = weight_decay;
            // Bias corrections in f64 on the host: beta^t in f32 on the GPU would lose digits.
            let t = step as f64;
            p.bias1 = (1.0 - (beta1 as f64).powf(t)) as f32;
            p.bias2 = (1.0 - (beta2 as f64).powf(t)) as f32;
            p.flags |= if decoupled { FLAG_DECOUPLED } else { 0 }
                | if weight_decay != 0.0 {
                    FLAG_WEIGHT_DECAY
                } else {
                    0
                };
        }
    }
    p
}

/// The global gradient norm and clipping scale over several gradient buffers, computed on
/// the GPU into a 2-element tensor `[norm, scale]` that optimizer plans read directly.
pub struct ClipPlan {
    gpu: Gpu,
    partial: Kernel,
    final_: Kernel,
    partial_groups: Vec<(wgpu::BindGroup, [u32; 3], Cost)>,
    final_group: wgpu::BindGroup,
    final_uniform: wgpu::Buffer,
    partial_count: usize,
    result: GpuTensor,
    _partials: GpuTensor,
}

impl ClipPlan {
    /// Plans the norm and scale over `grads` (in that order) for clipping to `max_norm`.
    pub fn new(gpu: &Gpu, grads: &[&GpuTensor], max_norm: f32) -> Result<Self> {
        let lens: Vec<usize> = grads.iter().map(|g| g.len()).collect();
        validate_clip(max_norm, &lens)?;
        let partial = gpu.kernel(&KernelKey::new("optim", "clip_partial"))?;
        let final_ = gpu.kernel(&KernelKey::new("optim", "clip_final"))?;
        let counts: Vec<usize> = lens.iter().map(|l| l.div_ceil(CLIP_CHUNK)).collect();
        let partial_count: usize = counts.iter().sum();
        let partials = GpuTensor::zeros(gpu, &[partial_count])?;
        let result = GpuTensor::zeros(gpu, &[2])?;
        let mut partial_groups = Vec::new();
        let mut offset = 0usize;
        for ((g, &len), &count) in grads.iter().zip(&lens).zip(&counts) {
            ensure!(
                len <= u32::MAX as usize,
                Limit,
                "clipping: a gradient of {len} elements is too large to address"
            );
            let uniform = gpu.uniform(&ClipParams {
                n: len as u32,
                offset: offset as u32,
                _pad0: [0; 2],
                max_norm,
                _pad1: [0; 3],
            });
            let bg = gpu.bind_at(
                &partial,
                &[(2, g.buffer()), (5, &uniform), (6, partials.buffer())],
            );
            // clip_partial, per gradient element: one read (4 bytes), a multiply-add; one
            // partial sum written per workgroup.
            let cost = Cost::per_item(len, 2.0, 4.0, 0.0) + Cost::per_item(count, 0.0, 0.0, 4.0);
            partial_groups.push((bg, grid(gpu, count, "gradient clipping")?, cost));
            offset += count;
        }
        let final_uniform = gpu.uniform(&Self::final_params(partial_count, max_norm));
        let final_group = gpu.bind_at(
            &final_,
            &[
                (5, &final_uniform),
                (6, partials.buffer()),
                (7, result.buffer()),
            ],
        );
        Ok(Self {
            gpu: gpu.clone(),
            partial,
            final_,
            partial_groups,
            final_group,
            final_uniform,
            partial_count,
            result,
            _partials: partials,
        })
    }

    fn final_params(partials: usize, max_norm: f32) -> ClipParams {
        ClipParams {
            n: partials as u32,
            offset: 0,
            _pad0: [0; 2],
            max_norm,
            _pad1: [0; 3],
        }
    }

    /// Changes the threshold for the next submit.
    pub fn set_max_norm(&mut self, max_norm: f32) -> Result<()> {
        validate_clip(max_norm, &[1])?;
        let p = Self::final_params(self.partial_count, max_norm);
        self.gpu
            .queue()
            .write_buffer(&self.final_uniform, 0, bytemuck::bytes_of(&p));
        Ok(())
    }

    /// Records the norm computation: one dispatch per gradient, then one for the total.
    pub fn record(&self, rec: &mut Recorder) {
        for (bg, groups, cost) in &self.partial_groups {
            rec.dispatch(&self.partial, bg, *groups, *cost);
        }
        rec.dispatch(
            &self.final_,
            &self.final_group,
            [1, 1, 1],
            self.final_cost(),
        );
    }

    /// `[norm, scale]` on the GPU, as the last recorded computation left them.
    /// clip_final: every partial sum read in order, the norm and the factor written.
    fn final_cost(&self) -> Cost {
        let n = self.partial_count as f64;
        Cost::new(n + 2.0, 4.0 * n, 8.0)
    }

    /// The 2-element tensor `[norm, scale]` the last recorded computation leaves, which
    /// optimizer plans read.
    pub fn result(&self) -> &GpuTensor {
        &self.result
    }

    /// Reads the global norm back (one readback; for logging, not needed for the update).
    pub fn norm(&self) -> Result<f32> {
        Ok(self.result.to_vec()?[0])
    }
}

/// One optimizer bound to a parameter buffer, its gradient and its state.
pub struct OptimPlan {
    gpu: Gpu,
    kernel: Kernel,
    bind_group: wgpu::BindGroup,
    uniform: wgpu::Buffer,
    groups: [u32; 3],
    cost: Cost,
    optimizer: Optimizer,
    n: usize,
    clip: bool,
    step: u64,
    /// The recorder it was last recorded into.
    recorded_in: Option<Recording>,
    _placeholder: GpuTensor,
}

impl OptimPlan {
    /// `state` must hold `optimizer.slots() * param.len()` zeros (or a saved state), and may
    /// be `None` only where `slots() == 0`. With `clip`, each gradient element is scaled by
    /// the clip plan's scale as it is read.
    pub fn new(
        gpu: &Gpu,
        optimizer: &Optimizer,
        param: &GpuTensor,
        grad: &GpuTensor,
        state: Option<&GpuTensor>,
        clip: Option<&ClipPlan>,
    ) -> Result<Self> {
        let n = param.len();
        optimizer.validate_step(1, n, grad.len(), state.map_or(0, |s| s.len()))?;
        ensure!(
            n <= u32::MAX as usize,
            Limit,
            "{}: {n} parameters are too many to address",
            optimizer.name()
        );
        let mut buffers = vec![("parameters", param.buffer()), ("gradient", grad.buffer())];
        if let Some(s) = state {
            buffers.push(("state", s.buffer()));
        }
        ensure_distinct(optimizer.name(), &buffers)?;
        let entry = match optimizer {
            Optimizer::Sgd { .. } => "sgd",
            Optimizer::RmsProp { .. } => "rmsprop",
            Optimizer::Adam { .. } => "adam",
        };
        let kernel = gpu.kernel(&KernelKey::new("optim", entry))?;
        let uniform = gpu.uniform(&params(optimizer, n, 1, clip.is_some()));
        // An absent state gets a placeholder of its own: the shared dummy may already be
        // bound read-only (as the absent clip), and one buffer may not be both in a dispatch.
        let placeholder = GpuTensor::<f32>::zeros(gpu, &[1])?;
        let state_buffer = state.map_or(placeholder.buffer(), |s| s.buffer());
        let clip_buffer = clip.map_or(gpu.dummy_buffer(), |c| c.result().buffer());
        let bind_group = gpu.bind(
            &kernel,
            &[
                &uniform,
                param.buffer(),
                grad.buffer(),
                state_buffer,
                clip_buffer,
            ],
        );
        Ok(Self {
            gpu: gpu.clone(),
            kernel,
            bind_group,
            uniform,
            groups: grid(gpu, n.div_ceil(WG), optimizer.name())?,
            // Per parameter: the parameter, its gradient and its state slots read and the
            // parameter and slots written, 4 bytes each (the clip factor is one cached
            // element); SGD about 4 operations, RMSprop about 10, Adam about 12.
            cost: {
                let slots = optimizer.slots() as f64;
                let flops = match optimizer {
                    Optimizer::Sgd { .. } => 4.0,
                    Optimizer::RmsProp { .. } => 10.0,
                    Optimizer::Adam { .. } => 12.0,
                };
                Cost::per_item(n, flops, 4.0 * (2.0 + slots), 4.0 * (1.0 + slots))
            },
            optimizer: *optimizer,
            n,
            clip: clip.is_some(),
            step: 0,
            recorded_in: None,
            _placeholder: placeholder,
        })
    }

    /// Records the next step's update (one dispatch) and writes its uniform data.
    pub fn record(&mut self, rec: &mut Recorder) -> Result<()> {
        ensure!(
            !self.recorded_in.as_ref().is_some_and(Recording::is_open),
            Invalid,
            "{} plan recorded twice without a submit in between: each step's hyperparameters \
             are written to one uniform buffer, so submit after each step",
            self.optimizer.name()
        );
        let step = self.step + 1;
        self.optimizer
            .validate_step(step, self.n, self.n, self.optimizer.slots() * self.n)?;
        let p = params(&self.optimizer, self.n, step, self.clip);
        self.gpu
            .queue()
            .write_buffer(&self.uniform, 0, bytemuck::bytes_of(&p));
        rec.dispatch(&self.kernel, &self.bind_group, self.groups, self.cost);
        self.step = step;
        self.recorded_in = Some(rec.recording());
        Ok(())
    }

    /// Changes the learning rate from the next step on.
    pub fn set_lr(&mut self, lr: f32) -> Result<()> {
        let next = self.optimizer.with_lr(lr);
        next.validate()?;
        self.optimizer = next;
        Ok(())
    }

    /// Steps taken so far (the next recorded step is `steps() + 1`).
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Continues from `steps` steps already taken (when resuming from a checkpoint).
    pub fn set_steps(&mut self, steps: u64) -> Result<()> {
        ensure!(
            steps < u32::MAX as u64,
            Limit,
            "{} step count {steps} is too large",
            self.optimizer.name()
        );
        self.step = steps;
        Ok(())
    }

    /// The update rule and hyperparameters the plan applies.
    pub fn optimizer(&self) -> &Optimizer {
        &self.optimizer
    }
}
