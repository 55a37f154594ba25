//! CPU twin of `shaders/merge.wgsl`: the output stage of a recurrent stack (description:
//! `src/ops/merge.rs`).

use super::Real;
use crate::ops::merge::{Merge, OutputStage};

fn combine<T: Real>(merge: Merge, a: T, b: T) -> T {
    match merge {
        Merge::Sum => a + b,
        Merge::Mul => a * b,
        Merge::Ave => (a + b) * T::from(0.5).unwrap_or_else(T::zero),
        Merge::Concat => a,
    }
}

/// Writes the output `[rows, width]` from the concatenated directions `cat`
/// `[rows, dirs * hidden]`.
pub fn forward<T: Real>(stage: &OutputStage, cat: &[T], out: &mut [T]) {
    let (h, cw, w) = (stage.hidden, stage.dirs * stage.hidden, stage.width());
    for (row, o) in out.chunks_exact_mut(w).enumerate() {
        let src = &cat[stage.source_row(row) * cw..][..cw];
        if w == cw {
            o.copy_from_slice(src);
        } else {
            for k in 0..h {
                o[k] = combine(stage.merge, src[k], src[h + k]);
            }
        }
    }
}

/// Writes the gradient with respect to the concatenated directions `d_cat` from the output
/// gradient `d_out` (and `cat`, which the product mode needs).
pub fn backward<T: Real>(stage: &OutputStage, cat: &[T], d_out: &[T], d_cat: &mut [T]) {
    let (h, cw, w) = (stage.hidden, stage.dirs * stage.hidden, stage.width());
    d_cat.fill(T::zero());
    let half = T::from(0.5).unwrap_or_else(T::zero);
    for (row, g) in d_out.chunks_exact(w).enumerate() {
        let src = stage.source_row(row) * cw;
        if w == cw {
            d_cat[src..src + cw].copy_from_slice(g);
            continue;
        }
        for k in 0..h {
            let (a, b) = (cat[src + k], cat[src + h + k]);
            let (da, db) = match stage.merge {
                Merge::Sum => (g[k], g[k]),
                Merge::Mul => (g[k] * b, g[k] * a),
                Merge::Ave => (g[k] * half, g[k] * half),
                Merge::Concat => (g[k], g[h + k]),
            };
            d_cat[src + k] = da;
            d_cat[src + h + k] = db;
        }
    }
}
