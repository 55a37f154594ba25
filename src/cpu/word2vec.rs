//! CPU twins of the word2vec kernels: `shaders/word2vec.wgsl` (unit rows and the top-k
//! cosine scan) and `shaders/word2vec_train.wgsl` (one batch of training updates, functions
//! named as the kernels' entry points; a gradient kernel's `_per_item` variant has the same
//! twin; the batch layout is `src/ops/word2vec_train.rs`).

use super::Real;
use crate::ops::word2vec_train::{PackedBatch, TrainOutput, TrainSpec};

/// `a . b` over the shorter length, in eight lanes so the compiler vectorises it. The order
/// of the sums is fixed, so a caller compiled for AVX-512, AVX2 or the baseline (as the
/// word2vec trainer is) gets the same bits from each.
#[inline(always)]
pub fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [T::zero(); 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] = acc[k] + x[k] * y[k];
        }
    }
    let mut tail = T::zero();
    for (x, y) in ra.iter().zip(rb) {
        tail = tail + *x * *y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// Every `dim`-long row of `data` scaled to unit length; zero rows stay zero.
pub fn normalize_rows(data: &[f32], dim: usize) -> Vec<f32> {
    let mut u = data.to_vec();
    for row in u.chunks_exact_mut(dim) {
        let n = dot(row, row).sqrt();
        if n > 0.0 {
            row.iter_mut().for_each(|x| *x /= n);
        }
    }
    u
}

/// The `k` rows of `unit` with the largest dot product with `query`, `exclude` skipped:
/// (row, score) best first, ties to the lower row. Fewer if fewer rows remain.
pub fn top_k_cosine(
    unit: &[f32],
    dim: usize,
    query: &[f32],
    k: usize,
    exclude: &[usize],
) -> Vec<(usize, f32)> {
    let mut scored: Vec<(usize, f32)> = unit
        .chunks_exact(dim)
        .enumerate()
        .filter(|(i, _)| !exclude.contains(i))
        .map(|(i, row)| (i, dot(row, query)))
        .collect();
    let order = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    let k = k.min(scored.len());
    if k == 0 {
        return Vec::new();
    }
    if k < scored.len() {
        scored.select_nth_unstable_by(k - 1, order);
        scored.truncate(k);
    }
    scored.sort_by(order);
    scored
}

// ---------------------------------------------------------------- training (word2vec_train)

fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// `ln(sigmoid(x))` by the kernel's formula.
fn log_sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        -(1.0 + (-x).exp()).ln()
    } else {
        x - (1.0 + x.exp()).ln()
    }
}

/// The update scale of a row reached by `n` contributions (the kernel's `cap_scale`).
fn cap_scale(spec: &TrainSpec, n: usize) -> f32 {
    if spec.row_cap == 0 || n <= spec.row_cap as usize {
        1.0
    } else {
        spec.row_cap as f32 / n as f32
    }
}

/// `hidden[b]` = the mean of item `b`'s input rows of `syn0`.
fn write_hidden(spec: &TrainSpec, batch: &PackedBatch, b: usize, syn0: &[f32], hidden: &mut [f32]) {
    let d = spec.dim;
    let inputs = batch.inputs(b);
    let h = &mut hidden[b * d..(b + 1) * d];
    h.fill(0.0);
    for &r in inputs {
        for (x, &w) in h.iter_mut().zip(&syn0[r as usize * d..][..d]) {
            *x += w;
        }
    }
    let inv = 1.0 / inputs.len() as f32;
    h.iter_mut().for_each(|x| *x *= inv);
}

/// A gradient kernel's twin: (spec, batch, alpha, syn0, syn1, hidden, hidden_grad, grads,
/// item_loss).
pub type GradientsFn = fn(
    &TrainSpec,
    &PackedBatch,
    f32,
    &[f32],
    &[f32],
    &mut [f32],
    &mut [f32],
    &mut [f32],
    &mut [f32],
);

/// An apply kernel's twin: (spec, batch, grads, hidden, hidden_grad, item_loss, syn0, syn1),
/// returning the batch's loss sum.
pub type ApplyFn =
    fn(&TrainSpec, &PackedBatch, &[f32], &[f32], &[f32], &[f32], &mut [f32], &mut [f32]) -> f32;

/// The twin of the gradient kernel for `output`.
pub fn gradients_for(output: TrainOutput) -> GradientsFn {
    match output {
        TrainOutput::Sampled => sampled_gradients,
        TrainOutput::Softmax => softmax_gradients,
    }
}

/// The twin of the apply kernel for `output`.
pub fn apply_for(output: TrainOutput) -> ApplyFn {
    match output {
        TrainOutput::Sampled => apply_sparse,
        TrainOutput::Softmax => apply_dense,
    }
}

/// Negative sampling and hierarchical softmax: for every item, its hidden vector, each
/// target slot's `alpha * (label - sigmoid(f))`, the hidden layer's update and the loss,
/// all from the weights as given.
#[allow(clippy::too_many_arguments)]
pub fn sampled_gradients(
    spec: &TrainSpec,
    batch: &PackedBatch,
    alpha: f32,
    syn0: &[f32],
    syn1: &[f32],
    hidden: &mut [f32],
    hidden_grad: &mut [f32],
    grads: &mut [f32],
    item_loss: &mut [f32],
) {
    let d = spec.dim;
    for b in 0..batch.items() {
        write_hidden(spec, batch, b, syn0, hidden);
        let h = &hidden[b * d..(b + 1) * d];
        let e = &mut hidden_grad[b * d..(b + 1) * d];
        e.fill(0.0);
        let mut loss = 0.0;
        for (slot, row, label) in batch.targets(b) {
            let o = &syn1[row as usize * d..][..d];
            let f = dot(h, o);
            loss -= if label == 1 {
                log_sigmoid(f)
            } else {
                log_sigmoid(-f)
            };
            let g = alpha * (label as f32 - sigmoid(f));
            grads[slot] = g;
            for (x, &w) in e.iter_mut().zip(o) {
                *x += g * w;
            }
        }
        item_loss[b] = loss;
    }
}

/// The full softmax: for every item, its hidden vector, `alpha * ([r == word] - softmax_r)`
/// for every output row r at `grads[b * out_rows + r]`, the hidden layer's update and the
/// loss, all from the weights as given.
#[allow(clippy::too_many_arguments)]
pub fn softmax_gradients(
    spec: &TrainSpec,
    batch: &PackedBatch,
    alpha: f32,
    syn0: &[f32],
    syn1: &[f32],
    hidden: &mut [f32],
    hidden_grad: &mut [f32],
    grads: &mut [f32],
    item_loss: &mut [f32],
) {
    let (d, v) = (spec.dim, spec.out_rows);
    for b in 0..batch.items() {
        write_hidden(spec, batch, b, syn0, hidden);
        let h = &hidden[b * d..(b + 1) * d];
        let word = batch.targets(b).next().map_or(0, |t| t.1 as usize);
        let g = &mut grads[b * v..(b + 1) * v];
        for (r, s) in g.iter_mut().enumerate() {
            *s = dot(h, &syn1[r * d..(r + 1) * d]);
        }
        let top = g.iter().copied().fold(f32::MIN, f32::max);
        let sum: f32 = g.iter().map(|s| (s - top).exp()).sum();
        item_loss[b] = sum.ln() - (g[word] - top);
        for (r, s) in g.iter_mut().enumerate() {
            let q = (*s - top).exp() / sum;
            *s = alpha * (if r == word { 1.0 } else { 0.0 } - q);
        }
        let e = &mut hidden_grad[b * d..(b + 1) * d];
        e.fill(0.0);
        for (r, &gr) in g.iter().enumerate() {
            for (x, &w) in e.iter_mut().zip(&syn1[r * d..(r + 1) * d]) {
                *x += gr * w;
            }
        }
    }
}

/// Negative sampling and hierarchical softmax: both matrices' updates from a gradient
/// kernel's results (see the private functions below), and the batch's loss sum.
#[allow(clippy::too_many_arguments)]
pub fn apply_sparse(
    spec: &TrainSpec,
    batch: &PackedBatch,
    grads: &[f32],
    hidden: &[f32],
    hidden_grad: &[f32],
    item_loss: &[f32],
    syn0: &mut [f32],
    syn1: &mut [f32],
) -> f32 {
    apply_output(spec, batch, grads, hidden, syn1);
    apply_input(spec, batch, hidden_grad, syn0);
    sum_loss(batch, item_loss)
}

/// The full softmax: as [`apply_sparse`], every output row updated.
#[allow(clippy::too_many_arguments)]
pub fn apply_dense(
    spec: &TrainSpec,
    batch: &PackedBatch,
    grads: &[f32],
    hidden: &[f32],
    hidden_grad: &[f32],
    item_loss: &[f32],
    syn0: &mut [f32],
    syn1: &mut [f32],
) -> f32 {
    apply_output_dense(spec, batch, grads, hidden, syn1);
    apply_input(spec, batch, hidden_grad, syn0);
    sum_loss(batch, item_loss)
}

/// `syn1[row] += sum of grads[slot] * hidden[item]` over each distinct output row's index
/// entries, in index order.
fn apply_output(
    spec: &TrainSpec,
    batch: &PackedBatch,
    grads: &[f32],
    hidden: &[f32],
    syn1: &mut [f32],
) {
    let d = spec.dim;
    let mut sum = vec![0.0f32; d];
    for seg in batch.out_segments() {
        sum.fill(0.0);
        for e in seg.start..seg.end {
            let (slot, item) = batch.out_entry(e);
            for (s, &h) in sum.iter_mut().zip(&hidden[item * d..(item + 1) * d]) {
                *s += grads[slot] * h;
            }
        }
        let scale = cap_scale(spec, seg.end - seg.start);
        for (w, &s) in syn1[seg.row as usize * d..][..d].iter_mut().zip(&sum) {
            *w += s * scale;
        }
    }
}

/// The full softmax's output update: `syn1[r] += sum over items b of
/// grads[b * out_rows + r] * hidden[b]`, in item order.
fn apply_output_dense(
    spec: &TrainSpec,
    batch: &PackedBatch,
    grads: &[f32],
    hidden: &[f32],
    syn1: &mut [f32],
) {
    let (d, v, n) = (spec.dim, spec.out_rows, batch.items());
    let scale = cap_scale(spec, n);
    for r in 0..v {
        for j in 0..d {
            let mut s = 0.0f32;
            for b in 0..n {
                s += grads[b * v + r] * hidden[b * d + j];
            }
            syn1[r * d + j] += s * scale;
        }
    }
}

/// `syn0[row] += sum of hidden_grad[item]` over each distinct input row's index entries.
fn apply_input(spec: &TrainSpec, batch: &PackedBatch, hidden_grad: &[f32], syn0: &mut [f32]) {
    let d = spec.dim;
    let mut sum = vec![0.0f32; d];
    for seg in batch.in_segments() {
        sum.fill(0.0);
        for e in seg.start..seg.end {
            let item = batch.in_entry(e);
            for (s, &g) in sum.iter_mut().zip(&hidden_grad[item * d..(item + 1) * d]) {
                *s += g;
            }
        }
        let scale = cap_scale(spec, seg.end - seg.start);
        for (w, &s) in syn0[seg.row as usize * d..][..d].iter_mut().zip(&sum) {
            *w += s * scale;
        }
    }
}

/// The batch's loss: the sum of `item_loss` over its items.
fn sum_loss(batch: &PackedBatch, item_loss: &[f32]) -> f32 {
    item_loss[..batch.items()].iter().sum()
}
