//! CPU twin of `shaders/dropout.wgsl`: dropout masks from Philox, bit for bit as the GPU
//! makes them, and their application. Semantics: `src/ops/dropout.rs`.

use crate::error::Result;

use super::philox::draw;
use super::Real;
use crate::ops::dropout::{validate_apply, Dropout, DropoutKey};

/// Fills `mask` with 0 or `1 / keep` for `key`.
pub fn mask<T: Real>(spec: &Dropout, key: DropoutKey, mask: &mut [T]) -> Result<()> {
    spec.validate(mask.len())?;
    let threshold = spec.threshold();
    let scale = T::from(spec.scale()).unwrap_or_else(T::nan);
    for (i, m) in mask.iter_mut().enumerate() {
        let keep = (draw(key.seed, key.step, key.stream, i as u32) >> 8) < threshold;
        *m = if keep { scale } else { T::zero() };
    }
    Ok(())
}

/// `y[i] = x[i] * mask[i % mask.len()]` (forward with `x`, backward with `dy`).
pub fn apply<T: Real>(x: &[T], mask: &[T], y: &mut [T]) -> Result<()> {
    validate_apply(x.len(), mask.len(), y.len())?;
    for (i, (yi, &xi)) in y.iter_mut().zip(x).enumerate() {
        *yi = xi * mask[i % mask.len()];
    }
    Ok(())
}

/// CPU twin of `apply_rows`: every row (t, b) of a [rows, features] sequence tensor times
/// `mask[b]` ([batch, features]), in place; rows are `t * batch + b`, or `b * steps + t`
/// when `batch_first`.
pub fn apply_rows<T: Real>(
    data: &mut [T],
    mask: &[T],
    steps: usize,
    features: usize,
    batch_first: bool,
) -> Result<()> {
    let batch = mask.len().checked_div(features).unwrap_or(0);
    crate::ops::dropout::validate_rows(data.len(), batch, steps, features)?;
    for (row, xr) in data.chunks_exact_mut(features).enumerate() {
        let b = if batch_first {
            row / steps
        } else {
            row % batch
        };
        for (v, &m) in xr.iter_mut().zip(&mask[b * features..][..features]) {
            *v = *v * m;
        }
    }
    Ok(())
}
