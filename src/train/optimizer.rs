//! An optimizer over named parameters: one optimizer plan per parameter tensor, gradient
//! clipping by the global norm over all gradients, a learning-rate schedule. The GPU one
//! records everything (clip, then every update) without a host round trip; the CPU one is
//! its twin, with the same state layout (`src/ops/optim.rs`).
//!
//! State is exported as tensors named `optimizer.<parameter name>` of `slots * n` values
//! (the planes of the state buffer), for checkpoints.

use std::collections::BTreeMap;

use anyhow::{ensure, Context, Result};

use super::schedule::Schedule;
use crate::cpu;
use crate::gpu::{ClipPlan, Gpu, GpuTensor, OptimPlan, Recorder};
use crate::nn::{HostTensor, Tensors};
use crate::ops::optim::Optimizer;

/// What an optimizer does each step: the update rule, the clipping threshold and the
/// learning-rate schedule (applied to the rule's learning rate).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptimConfig {
    pub optimizer: Optimizer,
    /// Clip the global gradient norm to this value.
    pub clip: Option<f32>,
    pub schedule: Schedule,
}

impl OptimConfig {
    pub fn validate(&self) -> Result<()> {
        self.optimizer.validate()?;
        ensure!(
            self.optimizer.lr() > 0.0,
            "learning rate lr = {} is invalid: expected a finite value > 0",
            self.optimizer.lr()
        );
        if let Some(c) = self.clip {
            crate::ops::optim::validate_clip(c, &[1])?;
        }
        self.schedule.validate()
    }

    /// The learning rate of step `step` (counted from 1).
    pub fn lr_at(&self, step: u64) -> Result<f32> {
        Ok(self
            .schedule
            .lr(self.optimizer.lr() as f64, step.saturating_sub(1))? as f32)
    }
}

/// The state tensor name of a parameter.
pub fn state_name(param: &str) -> String {
    format!("optimizer.{param}")
}

/// The optimizer on the GPU, bound to parameter and gradient tensors.
pub struct GpuOptimizer {
    config: OptimConfig,
    clip: Option<ClipPlan>,
    plans: Vec<(String, OptimPlan, Option<GpuTensor>)>,
    step: u64,
}

impl GpuOptimizer {
    /// `params` are (name, parameter, gradient), in the order the clipping norm sums them.
    pub fn new(
        gpu: &Gpu,
        config: OptimConfig,
        params: &[(String, &GpuTensor, &GpuTensor)],
    ) -> Result<Self> {
        config.validate()?;
        ensure!(
            !params.is_empty(),
            "nothing to optimize: no trainable parameters"
        );
        let clip = match config.clip {
            Some(max) => {
                let grads: Vec<&GpuTensor> = params.iter().map(|(_, _, g)| *g).collect();
                Some(ClipPlan::new(gpu, &grads, max)?)
            }
            None => None,
        };
        let slots = config.optimizer.slots();
        let mut plans = Vec::new();
        for (name, p, g) in params {
            let state = (slots > 0)
                .then(|| GpuTensor::zeros(gpu, &[slots * p.len()]))
                .transpose()?;
            let plan = OptimPlan::new(gpu, &config.optimizer, p, g, state.as_ref(), clip.as_ref())
                .with_context(|| format!("planning the update of {name}"))?;
            plans.push((name.clone(), plan, state));
        }
        Ok(Self {
            config,
            clip,
            plans,
            step: 0,
        })
    }

    /// Records the clipping norm and every update of the next step (once per submit).
    pub fn record(&mut self, rec: &mut Recorder) -> Result<()> {
        let step = self.step + 1;
        let lr = self.config.lr_at(step)?;
        if let Some(c) = &self.clip {
            c.record(rec);
        }
        for (_, plan, _) in &mut self.plans {
            plan.set_lr(lr)?;
            plan.record(rec)?;
        }
        self.step = step;
        Ok(())
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The global gradient norm of the last step (one readback; clipping only).
    pub fn last_norm(&self) -> Result<Option<f32>> {
        self.clip.as_ref().map(|c| c.norm()).transpose()
    }

    /// The state tensors (one readback each).
    pub fn state(&self) -> Result<Tensors> {
        let mut out = Tensors::new();
        for (name, _, state) in &self.plans {
            if let Some(s) = state {
                out.insert(
                    state_name(name),
                    HostTensor::new(vec![s.len()], s.to_vec()?)?,
                );
            }
        }
        Ok(out)
    }

    /// Continues from a saved state after `step` steps.
    pub fn load_state(&mut self, state: &Tensors, step: u64) -> Result<()> {
        for (name, plan, s) in &mut self.plans {
            if let Some(s) = s {
                let key = state_name(name);
                let t = state
                    .get(&key)
                    .with_context(|| format!("optimizer state {key} is missing"))?;
                ensure!(
                    t.data.len() == s.len(),
                    "optimizer state {key} has {} values, expected {}",
                    t.data.len(),
                    s.len()
                );
                s.write(&t.data)?;
            }
            plan.set_steps(step)?;
        }
        self.step = step;
        Ok(())
    }
}

/// The CPU twin of [`GpuOptimizer`] over named host parameters.
pub struct CpuOptimizer {
    config: OptimConfig,
    state: BTreeMap<String, Vec<f32>>,
    step: u64,
}

impl CpuOptimizer {
    /// `params` are (name, element count) of the trainable parameters.
    pub fn new(config: OptimConfig, params: &[(String, usize)]) -> Result<Self> {
        config.validate()?;
        ensure!(
            !params.is_empty(),
            "nothing to optimize: no trainable parameters"
        );
        let slots = config.optimizer.slots();
        let state = params
            .iter()
            .map(|(n, len)| (n.clone(), vec![0.0; slots * len]))
            .collect();
        Ok(Self {
            config,
            state,
            step: 0,
        })
    }

    /// One step: clips over all of `grads` (in `order`) and updates `params` in place.
    pub fn step(
        &mut self,
        order: &[String],
        params: &mut BTreeMap<String, Vec<f32>>,
        grads: &BTreeMap<String, Vec<f32>>,
    ) -> Result<()> {
        let step = self.step + 1;
        let opt = self.config.optimizer.with_lr(self.config.lr_at(step)?);
        let gs: Vec<&[f32]> = order
            .iter()
            .map(|n| {
                grads
                    .get(n)
                    .map(|g| &g[..])
                    .with_context(|| format!("no gradient for {n}"))
            })
            .collect::<Result<_>>()?;
        let scale = match self.config.clip {
            Some(max) => cpu::optim::clip(&gs, max)?.1,
            None => 1.0,
        };
        for (name, g) in order.iter().zip(gs) {
            let p = params
                .get_mut(name)
                .with_context(|| format!("no parameter {name}"))?;
            let s = self
                .state
                .get_mut(name)
                .context("optimizer state missing")?;
            cpu::optim::step(&opt, step, p, g, s, scale)?;
        }
        self.step = step;
        Ok(())
    }

    pub fn steps(&self) -> u64 {
        self.step
    }

    pub fn state(&self) -> Tensors {
        self.state
            .iter()
            .filter(|(_, s)| !s.is_empty())
            .map(|(n, s)| {
                (
                    state_name(n),
                    HostTensor {
                        shape: vec![s.len()],
                        data: s.clone(),
                    },
                )
            })
            .collect()
    }

    pub fn load_state(&mut self, state: &Tensors, step: u64) -> Result<()> {
        for (name, s) in self.state.iter_mut() {
            if s.is_empty() {
                continue;
            }
            let key = state_name(name);
            let t = state
                .get(&key)
                .with_context(|| format!("optimizer state {key} is missing"))?;
            ensure!(
                t.data.len() == s.len(),
                "optimizer state {key} has {} values, expected {}",
                t.data.len(),
                s.len()
            );
            s.copy_from_slice(&t.data);
        }
        self.step = step;
        Ok(())
    }
}
