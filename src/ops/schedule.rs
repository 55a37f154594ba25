//! Learning-rate schedules with PyTorch's closed forms (`torch.optim.lr_scheduler`), as a
//! function of the scheduler step `epoch` (PyTorch's `last_epoch`, 0 before the first
//! `scheduler.step()`):
//! - constant: `base_lr`;
//! - step decay (`StepLR`): `base_lr * gamma^floor(epoch / step_size)`;
//! - exponential (`ExponentialLR`): `base_lr * gamma^epoch`;
//! - cosine annealing (`CosineAnnealingLR`): `eta_min + (base_lr - eta_min) *
//!   (1 + cos(pi * epoch / t_max)) / 2`, which past `t_max` rises again with period
//!   `2 * t_max`, as PyTorch's recursive form does.
//!
//! A closed form rather than PyTorch's chained updates: the rate at any step is known
//! without replaying the earlier ones, e.g. when resuming from a checkpoint.

use crate::error::{ensure, Result};

/// A learning-rate schedule: the rate as a closed-form function of the scheduler step (see
/// the module doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Schedule {
    /// The base rate throughout.
    #[default]
    Constant,
    /// `StepLR`: `base_lr * gamma^floor(epoch / step_size)`.
    Step {
        /// Scheduler steps between decays; must be > 0.
        step_size: u64,
        /// Factor applied at each decay; finite and > 0.
        gamma: f64,
    },
    /// `ExponentialLR`: `base_lr * gamma^epoch`.
    Exponential {
        /// Factor applied each scheduler step; finite and > 0.
        gamma: f64,
    },
    /// `CosineAnnealingLR`: from `base_lr` down to `eta_min` over `t_max` steps, then back up.
    Cosine {
        /// Scheduler steps of a half period; must be > 0.
        t_max: u64,
        /// The lowest rate; finite and >= 0.
        eta_min: f64,
    },
}

impl Schedule {
    /// Rejects parameters outside their ranges (the error names the value).
    pub fn validate(&self) -> Result<()> {
        match *self {
            Self::Constant => {}
            Self::Step { step_size, gamma } => {
                ensure!(
                    step_size > 0,
                    Invalid,
                    "step decay needs step_size > 0, got 0"
                );
                ensure!(
                    gamma.is_finite() && gamma > 0.0,
                    Invalid,
                    "step decay gamma = {gamma} is invalid: expected a finite value > 0"
                );
            }
            Self::Exponential { gamma } => ensure!(
                gamma.is_finite() && gamma > 0.0,
                Invalid,
                "exponential decay gamma = {gamma} is invalid: expected a finite value > 0"
            ),
            Self::Cosine { t_max, eta_min } => {
                ensure!(
                    t_max > 0,
                    Invalid,
                    "cosine annealing needs t_max > 0, got 0"
                );
                ensure!(
                    eta_min.is_finite() && eta_min >= 0.0,
                    Invalid,
                    "cosine annealing eta_min = {eta_min} is invalid: expected a finite value >= 0"
                );
            }
        }
        Ok(())
    }

    /// The learning rate after `epoch` scheduler steps from `base_lr`.
    pub fn lr(&self, base_lr: f64, epoch: u64) -> Result<f64> {
        self.validate()?;
        ensure!(
            base_lr.is_finite() && base_lr >= 0.0,
            Invalid,
            "base learning rate = {base_lr} is invalid: expected a finite value >= 0"
        );
        Ok(match *self {
            Self::Constant => base_lr,
            Self::Step { step_size, gamma } => base_lr * gamma.powf((epoch / step_size) as f64),
            Self::Exponential { gamma } => base_lr * gamma.powf(epoch as f64),
            Self::Cosine { t_max, eta_min } => {
                let phase = std::f64::consts::PI * epoch as f64 / t_max as f64;
                eta_min + (base_lr - eta_min) * (1.0 + phase.cos()) / 2.0
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Schedule;

    #[test]
    fn step_decay_matches_the_pytorch_example() {
        // The StepLR docs: lr = 0.05 for epochs < 30, 0.005 for 30 <= epoch < 60, ...
        let s = Schedule::Step {
            step_size: 30,
            gamma: 0.1,
        };
        for (epoch, want) in [
            (0, 0.05),
            (29, 0.05),
            (30, 0.005),
            (59, 0.005),
            (60, 0.0005),
        ] {
            let got = s.lr(0.05, epoch).unwrap();
            assert!((got - want).abs() < 1e-15, "epoch {epoch}: {got} vs {want}");
        }
        assert_eq!(Schedule::Constant.lr(0.3, 1000).unwrap(), 0.3);
        let e = Schedule::Exponential { gamma: 0.5 };
        assert_eq!(e.lr(0.8, 3).unwrap(), 0.1);
    }

    #[test]
    fn cosine_closed_form_matches_pytorch_recursive_form() {
        let (base, eta_min, t_max) = (0.1f64, 0.001f64, 7u64);
        let s = Schedule::Cosine { t_max, eta_min };
        assert_eq!(s.lr(base, 0).unwrap(), base);
        assert!((s.lr(base, t_max).unwrap() - eta_min).abs() < 1e-15);
        assert!((s.lr(base, 2 * t_max).unwrap() - base).abs() < 1e-15);
        // CosineAnnealingLR.get_lr, step by step from the previous rate.
        let pi = std::f64::consts::PI;
        let t = t_max as f64;
        let mut lr = base;
        for epoch in 1..=3 * t_max {
            let e = epoch as f64;
            lr = if (epoch as i64 - 1 - t_max as i64).rem_euclid(2 * t_max as i64) == 0 {
                lr + (base - eta_min) * (1.0 - (pi / t).cos()) / 2.0
            } else {
                (1.0 + (pi * e / t).cos()) / (1.0 + (pi * (e - 1.0) / t).cos()) * (lr - eta_min)
                    + eta_min
            };
            let got = s.lr(base, epoch).unwrap();
            assert!((got - lr).abs() < 1e-12, "epoch {epoch}: {got} vs {lr}");
        }
    }

    #[test]
    fn bad_schedules_are_errors_naming_the_value() {
        let err = Schedule::Step {
            step_size: 0,
            gamma: 0.1,
        }
        .lr(0.1, 1)
        .unwrap_err()
        .to_string();
        assert!(err.contains("step_size > 0"), "{err}");
        let err = Schedule::Cosine {
            t_max: 5,
            eta_min: f64::NAN,
        }
        .lr(0.1, 1)
        .unwrap_err()
        .to_string();
        assert!(err.contains("eta_min = NaN"), "{err}");
        let err = Schedule::Constant.lr(-1.0, 0).unwrap_err().to_string();
        assert!(err.contains("= -1"), "{err}");
    }
}
