//! CPU twin of `shaders/loss.wgsl`: softmax cross-entropy and mean squared error, each with
//! its gradient. Formulas: `src/ops/loss.rs`.

use crate::error::Result;

use super::Real;
use crate::ops::loss::{validate_mse, CrossEntropy};

/// Writes each row's loss (0 where ignored) and the gradient of the mean loss into
/// `dlogits`; returns the mean loss.
pub fn cross_entropy<T: Real>(
    spec: &CrossEntropy,
    logits: &[T],
    targets: &[u32],
    row_loss: &mut [T],
    dlogits: &mut [T],
) -> Result<T> {
    spec.validate(logits.len(), targets.len(), row_loss.len(), dlogits.len())?;
    let count = spec.validate_targets(targets)?;
    let c = spec.classes;
    let inv = if count > 0 {
        T::one() / T::from(count).unwrap_or_else(T::nan)
    } else {
        T::zero()
    };
    let mut total = T::zero();
    for (row, &t) in targets.iter().enumerate() {
        let x = &logits[row * c..][..c];
        let d = &mut dlogits[row * c..][..c];
        if Some(t) == spec.ignore_index {
            row_loss[row] = T::zero();
            d.fill(T::zero());
            continue;
        }
        let m = x.iter().fold(T::neg_infinity(), |a, &b| a.max(b));
        let s: T = x.iter().map(|&v| (v - m).exp()).sum();
        let t = t as usize;
        row_loss[row] = m + s.ln() - x[t];
        total = total + row_loss[row];
        for (j, (dj, &xj)) in d.iter_mut().zip(x).enumerate() {
            let onehot = if j == t { T::one() } else { T::zero() };
            *dj = ((xj - m).exp() / s - onehot) * inv;
        }
    }
    Ok(total * inv)
}

/// Writes the gradient `2 (pred - target) / n` into `grad`; returns `mean((pred - target)^2)`.
pub fn mse<T: Real>(pred: &[T], target: &[T], grad: &mut [T]) -> Result<T> {
    validate_mse(pred.len(), target.len(), grad.len())?;
    let n = T::from(pred.len()).unwrap_or_else(T::nan);
    let two = T::one() + T::one();
    let mut sum = T::zero();
    for ((g, &x), &y) in grad.iter_mut().zip(pred).zip(target) {
        let d = x - y;
        *g = two * d / n;
        sum = sum + d * d;
    }
    Ok(sum / n)
}
