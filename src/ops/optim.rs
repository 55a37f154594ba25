//! Optimizer updates and gradient clipping by global norm: the description shared by the
//! GPU kernels (`shaders/optim.wgsl`) and their CPU twins (`src/cpu/optim.rs`).
//!
//! The formulas are those torch.optim documents (`maximize = False`, no `amsgrad`), with the
//! step number `t` counted from 1:
//! - SGD: `g += wd * p`; with momentum `b = g` at `t = 1`, else `b = mu * b + (1 - dampening) * g`,
//!   then `g = g + mu * b` (Nesterov) or `g = b`; `p -= lr * g`.
//! - RMSprop: `g += wd * p`; `v = alpha * v + (1 - alpha) * g^2`; centered: `ga = alpha * ga +
//!   (1 - alpha) * g`, `v~ = v - ga^2`; with momentum `b = mu * b + g / (sqrt(v~) + eps)`,
//!   `p -= lr * b`, else `p -= lr * g / (sqrt(v~) + eps)`.
//! - Adam: `g += wd * p` (AdamW instead `p *= 1 - lr * wd`); `m = b1 * m + (1 - b1) * g`;
//!   `v = b2 * v + (1 - b2) * g^2`; `p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)`.
//!
//! Layout: one flat parameter buffer `p[n]`, its gradient `g[n]`, and one state buffer of
//! `slots() * n` elements holding each state vector as a contiguous plane, in this order:
//! SGD `[momentum_buffer]` (none without momentum); RMSprop `[square_avg, momentum_buffer
//! (if momentum > 0), grad_avg (if centered)]`; Adam `[exp_avg, exp_avg_sq]`. State starts
//! at zero. One buffer rather than one per state keeps every kernel at 4 storage bindings.
//!
//! Clipping follows `torch.nn.utils.clip_grad_norm_`: `norm = sqrt(sum of g^2 over every
//! gradient)`, `scale = min(1, max_norm / (norm + 1e-6))`. The gradients are not rewritten;
//! the optimizer multiplies each gradient element by `scale` as it reads it, which gives the
//! same update with no extra pass and no host round trip. An infinite norm gives scale 0, as
//! in PyTorch; with a NaN norm the scale is unspecified (1 on the CPU), but the NaN gradient
//! reaches the parameters either way, so read the norm back where that can happen.

use crate::error::{bail, ensure, Result};

use super::schedule::Schedule;

/// One optimizer and its hyperparameters. The constructors give PyTorch's defaults.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Optimizer {
    /// Stochastic gradient descent, with optional momentum, dampening, Nesterov and weight decay.
    Sgd {
        /// Learning rate.
        lr: f32,
        /// Momentum factor `mu`; 0 keeps no momentum buffer.
        momentum: f32,
        /// Dampening of the gradient added to the momentum buffer.
        dampening: f32,
        /// L2 penalty added to the gradient (`g += wd * p`).
        weight_decay: f32,
        /// Nesterov momentum (`g = g + mu * b` instead of `g = b`); needs `momentum > 0` and
        /// `dampening == 0`.
        nesterov: bool,
    },
    /// RMSprop, with optional momentum and centering.
    RmsProp {
        /// Learning rate.
        lr: f32,
        /// Smoothing constant of the running mean of `g^2`.
        alpha: f32,
        /// Added to the denominator's square root.
        eps: f32,
        /// L2 penalty added to the gradient (`g += wd * p`).
        weight_decay: f32,
        /// Momentum factor; 0 keeps no momentum buffer.
        momentum: f32,
        /// Centered: subtract the squared running mean of `g` from `v` (keeps a `grad_avg`
        /// plane).
        centered: bool,
    },
    /// Adam, or AdamW when `decoupled` (weight decay applied to the parameter, not the
    /// gradient).
    Adam {
        /// Learning rate.
        lr: f32,
        /// Decay of the first-moment (mean) estimate.
        beta1: f32,
        /// Decay of the second-moment (uncentered variance) estimate.
        beta2: f32,
        /// Added to the denominator's square root.
        eps: f32,
        /// Weight decay: L2 penalty on the gradient, or on the parameter when `decoupled`.
        weight_decay: f32,
        /// AdamW: `p *= 1 - lr * wd` instead of `g += wd * p`.
        decoupled: bool,
    },
}

/// The epsilon `clip_grad_norm_` adds to the norm before dividing.
pub const CLIP_EPS: f32 = 1e-6;

impl Optimizer {
    /// Plain SGD (no momentum, no weight decay).
    pub fn sgd(lr: f32) -> Self {
        Self::Sgd {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        }
    }

    /// RMSprop with PyTorch's defaults (alpha 0.99, eps 1e-8).
    pub fn rmsprop(lr: f32) -> Self {
        Self::RmsProp {
            lr,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
        }
    }

    /// Adam with PyTorch's defaults (betas 0.9, 0.999, eps 1e-8, no weight decay).
    pub fn adam(lr: f32) -> Self {
        Self::Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
        }
    }

    /// AdamW with PyTorch's defaults (betas 0.9, 0.999, eps 1e-8, weight decay 0.01).
    pub fn adamw(lr: f32) -> Self {
        Self::Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            decoupled: true,
        }
    }

    /// The optimizer's name as PyTorch spells it: `SGD`, `RMSprop`, `Adam` or `AdamW`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Sgd { .. } => "SGD",
            Self::RmsProp { .. } => "RMSprop",
            Self::Adam {
                decoupled: false, ..
            } => "Adam",
            Self::Adam {
                decoupled: true, ..
            } => "AdamW",
        }
    }

    /// The learning rate (before any schedule).
    pub fn lr(&self) -> f32 {
        match *self {
            Self::Sgd { lr, .. } | Self::RmsProp { lr, .. } | Self::Adam { lr, .. } => lr,
        }
    }

    /// The same optimizer with another learning rate (for schedules).
    pub fn with_lr(mut self, new_lr: f32) -> Self {
        match &mut self {
            Self::Sgd { lr, .. } | Self::RmsProp { lr, .. } | Self::Adam { lr, .. } => *lr = new_lr,
        }
        self
    }

    /// State vectors kept per parameter (planes of the state buffer).
    pub fn slots(&self) -> usize {
        match *self {
            Self::Sgd { momentum, .. } => (momentum != 0.0) as usize,
            Self::RmsProp {
                momentum, centered, ..
            } => 1 + (momentum > 0.0) as usize + centered as usize,
            Self::Adam { .. } => 2,
        }
    }

    /// Checks the hyperparameters (the ranges torch.optim accepts, and finiteness).
    pub fn validate(&self) -> Result<()> {
        let name = self.name();
        let check = |what: &str, v: f32, ok: bool, want: &str| -> Result<()> {
            ensure!(
                v.is_finite() && ok,
                Invalid,
                "{name} {what} = {v} is invalid: expected {want}"
            );
            Ok(())
        };
        match *self {
            Self::Sgd {
                lr,
                momentum,
                dampening,
                weight_decay,
                nesterov,
            } => {
                check("lr", lr, lr >= 0.0, "a finite value >= 0")?;
                check("momentum", momentum, momentum >= 0.0, "a finite value >= 0")?;
                check("dampening", dampening, true, "a finite value")?;
                check("weight_decay", weight_decay, weight_decay >= 0.0, ">= 0")?;
                if nesterov && (momentum <= 0.0 || dampening != 0.0) {
                    bail!(
                        Invalid, "SGD nesterov needs momentum > 0 and dampening = 0, got momentum = {momentum}, dampening = {dampening}"
                    );
                }
            }
            Self::RmsProp {
                lr,
                alpha,
                eps,
                weight_decay,
                momentum,
                ..
            } => {
                check("lr", lr, lr >= 0.0, "a finite value >= 0")?;
                check(
                    "alpha",
                    alpha,
                    (0.0..=1.0).contains(&alpha),
                    "0 <= alpha <= 1",
                )?;
                check("eps", eps, eps >= 0.0, "a finite value >= 0")?;
                check("weight_decay", weight_decay, weight_decay >= 0.0, ">= 0")?;
                check("momentum", momentum, momentum >= 0.0, "a finite value >= 0")?;
            }
            Self::Adam {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
                ..
            } => {
                check("lr", lr, lr >= 0.0, "a finite value >= 0")?;
                check(
                    "beta1",
                    beta1,
                    (0.0..1.0).contains(&beta1),
                    "0 <= beta1 < 1",
                )?;
                check(
                    "beta2",
                    beta2,
                    (0.0..1.0).contains(&beta2),
                    "0 <= beta2 < 1",
                )?;
                check("eps", eps, eps >= 0.0, "a finite value >= 0")?;
                check("weight_decay", weight_decay, weight_decay >= 0.0, ">= 0")?;
            }
        }
        Ok(())
    }

    /// Checks the hyperparameters, the step number and the buffer lengths of one update.
    pub fn validate_step(&self, step: u64, param: usize, grad: usize, state: usize) -> Result<()> {
        self.validate()?;
        let name = self.name();
        ensure!(
            step >= 1,
            Invalid,
            "{name} step numbers count from 1, got {step}"
        );
        ensure!(
            param > 0,
            Shape,
            "{name} needs a non-empty parameter buffer"
        );
        ensure!(
            grad == param,
            Shape,
            "{name}: the gradient has {grad} elements, the parameters {param}"
        );
        let want = self.slots() * param;
        ensure!(
            state == want,
            Shape, "{name} keeps {} state vector(s) of {param} elements: the state buffer needs {want} elements, it has {state}",
            self.slots()
        );
        Ok(())
    }
}

/// Checks a clipping threshold and the gradient lengths.
pub fn validate_clip(max_norm: f32, grads: &[usize]) -> Result<()> {
    ensure!(
        max_norm.is_finite() && max_norm > 0.0,
        Invalid,
        "clip max_norm = {max_norm} is invalid: expected a finite value > 0"
    );
    ensure!(
        !grads.is_empty(),
        Invalid,
        "clipping needs at least one gradient"
    );
    for (i, &len) in grads.iter().enumerate() {
        ensure!(len > 0, Shape, "clipping: gradient {i} is empty");
    }
    Ok(())
}

/// `min(1, max_norm / (norm + 1e-6))`, as `clip_grad_norm_` computes its coefficient.
pub fn clip_scale(norm: f64, max_norm: f64) -> f64 {
    (max_norm / (norm + CLIP_EPS as f64)).min(1.0)
}

/// What an optimizer does each step: the update rule, the clipping threshold and the
/// learning-rate schedule (applied to the rule's learning rate).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OptimConfig {
    /// The update rule.
    pub optimizer: Optimizer,
    /// Clip the global gradient norm to this value.
    pub clip: Option<f32>,
    /// How the learning rate changes over the steps.
    pub schedule: Schedule,
}

impl Default for OptimConfig {
    /// Adam at PyTorch's default learning rate 1e-3, no clipping, a constant rate.
    fn default() -> Self {
        Self {
            optimizer: Optimizer::adam(1e-3),
            clip: None,
            schedule: Schedule::Constant,
        }
    }
}

impl OptimConfig {
    /// `optimizer` without clipping, at a constant rate.
    pub fn new(optimizer: Optimizer) -> Self {
        Self {
            optimizer,
            ..Self::default()
        }
    }

    /// Clips the global gradient norm to `max_norm`.
    pub fn clip(mut self, max_norm: f32) -> Self {
        self.clip = Some(max_norm);
        self
    }

    /// Applies `schedule` to the learning rate.
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }

    /// Checks the rule, the learning rate, the clipping threshold and the schedule.
    pub fn validate(&self) -> Result<()> {
        self.optimizer.validate()?;
        ensure!(
            self.optimizer.lr() > 0.0,
            Invalid,
            "learning rate lr = {} is invalid: expected a finite value > 0",
            self.optimizer.lr()
        );
        if let Some(c) = self.clip {
            validate_clip(c, &[1])?;
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
