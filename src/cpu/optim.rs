//! CPU twin of `shaders/optim.wgsl`: optimizer updates and the global gradient norm.
//! The formulas and the state layout are described in `src/ops/optim.rs`.

use crate::error::Result;

use super::Real;
use crate::ops::optim::{clip_scale, validate_clip, Optimizer};

fn real<T: Real>(x: f32) -> T {
    T::from(x).unwrap_or_else(T::nan)
}

/// One update of step `step` (from 1): `param` and `state` change in place. Each gradient
/// element is multiplied by `grad_scale` as it is read (1 without clipping; the scale of
/// [`clip`] with it).
pub fn step<T: Real>(
    opt: &Optimizer,
    step: u64,
    param: &mut [T],
    grad: &[T],
    state: &mut [T],
    grad_scale: T,
) -> Result<()> {
    opt.validate_step(step, param.len(), grad.len(), state.len())?;
    let n = param.len();
    let one = T::one();
    match *opt {
        Optimizer::Sgd {
            lr,
            momentum,
            dampening,
            weight_decay,
            nesterov,
        } => {
            let (lr, mu, damp, wd) = (
                real::<T>(lr),
                real::<T>(momentum),
                real::<T>(dampening),
                real::<T>(weight_decay),
            );
            for i in 0..n {
                let mut g = grad[i] * grad_scale;
                if weight_decay != 0.0 {
                    g = g + wd * param[i];
                }
                if momentum != 0.0 {
                    let b = if step == 1 {
                        g
                    } else {
                        mu * state[i] + (one - damp) * g
                    };
                    state[i] = b;
                    g = if nesterov { g + mu * b } else { b };
                }
                param[i] = param[i] - lr * g;
            }
        }
        Optimizer::RmsProp {
            lr,
            alpha,
            eps,
            weight_decay,
            momentum,
            centered,
        } => {
            let (lr, a, eps, wd, mu) = (
                real::<T>(lr),
                real::<T>(alpha),
                real::<T>(eps),
                real::<T>(weight_decay),
                real::<T>(momentum),
            );
            let (sq, rest) = state.split_at_mut(n);
            let (mom, avg) = if momentum > 0.0 {
                let (m, r) = rest.split_at_mut(n);
                (Some(m), r)
            } else {
                (None, rest)
            };
            let mut avg = centered.then_some(avg);
            let mut mom = mom;
            for i in 0..n {
                let mut g = grad[i] * grad_scale;
                if weight_decay != 0.0 {
                    g = g + wd * param[i];
                }
                sq[i] = a * sq[i] + (one - a) * g * g;
                let mut v = sq[i];
                if let Some(avg) = avg.as_deref_mut() {
                    avg[i] = a * avg[i] + (one - a) * g;
                    v = v - avg[i] * avg[i];
                }
                let denom = v.sqrt() + eps;
                match mom.as_deref_mut() {
                    Some(b) => {
                        b[i] = mu * b[i] + g / denom;
                        param[i] = param[i] - lr * b[i];
                    }
                    None => param[i] = param[i] - lr * g / denom,
                }
            }
        }
        Optimizer::Adam {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
            decoupled,
        } => {
            let (lr, b1, b2, eps, wd) = (
                real::<T>(lr),
                real::<T>(beta1),
                real::<T>(beta2),
                real::<T>(eps),
                real::<T>(weight_decay),
            );
            let t = T::from(step).unwrap_or_else(T::nan);
            let bc1 = one - b1.powf(t);
            let bc2 = one - b2.powf(t);
            let (m, v) = state.split_at_mut(n);
            for i in 0..n {
                let mut g = grad[i] * grad_scale;
                if weight_decay != 0.0 {
                    if decoupled {
                        param[i] = param[i] * (one - lr * wd);
                    } else {
                        g = g + wd * param[i];
                    }
                }
                m[i] = b1 * m[i] + (one - b1) * g;
                v[i] = b2 * v[i] + (one - b2) * g * g;
                let m_hat = m[i] / bc1;
                let v_hat = v[i] / bc2;
                param[i] = param[i] - lr * m_hat / (v_hat.sqrt() + eps);
            }
        }
    }
    Ok(())
}

/// The global norm of all `grads` and the clipping scale `min(1, max_norm / (norm + 1e-6))`,
/// returned as `(norm, scale)`. The gradients are left as they are.
pub fn clip<T: Real>(grads: &[&[T]], max_norm: f32) -> Result<(T, T)> {
    let lens: Vec<usize> = grads.iter().map(|g| g.len()).collect();
    validate_clip(max_norm, &lens)?;
    let mut sum = T::zero();
    for g in grads {
        for &x in g.iter() {
            sum = sum + x * x;
        }
    }
    let norm = sum.sqrt();
    let scale = T::from(clip_scale(
        norm.to_f64().unwrap_or(f64::NAN),
        max_norm as f64,
    ))
    .unwrap_or_else(T::nan);
    Ok((norm, scale))
}
