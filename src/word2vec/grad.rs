//! The output layers' loss and SGD update for one prediction, shared by the trainer (f32,
//! sigmoid from a table) and the finite-difference tests (f64, exact sigmoid).
//!
//! Each function takes the hidden vector `h` (a context word's vector in skip-gram, the mean
//! of the context vectors in CBOW), adds `-alpha * dL/dh` into `neu1e`, applies
//! `out_row -= alpha * dL/d(out_row)` to the output rows it touches, and returns the loss L
//! before the update. `neu1e` takes each row's contribution before that row changes, so with
//! distinct rows the updates are exact gradient steps (word2vec.c's order).

use crate::cpu::word2vec::dot;
use crate::cpu::Real;

/// Where the sigmoid comes from.
pub trait Sigmoid<T> {
    /// `1 / (1 + exp(-x))` (or the implementation's approximation of it).
    fn sigmoid(&self, x: T) -> T;
    /// `ln(sigmoid(x))`.
    fn log_sigmoid(&self, x: T) -> T;
}

/// The exact functions (for gradient checks).
pub struct Exact;

impl<T: Real> Sigmoid<T> for Exact {
    fn sigmoid(&self, x: T) -> T {
        T::one() / (T::one() + (-x).exp())
    }
    fn log_sigmoid(&self, x: T) -> T {
        // -ln(1 + e^-x), stable for both signs.
        if x >= T::zero() {
            -(-x).exp().ln_1p()
        } else {
            x - x.exp().ln_1p()
        }
    }
}

/// word2vec.c's precomputed table over [-MAX, MAX]; outside it the sigmoid is 0 or 1 and
/// `ln(sigmoid(x))` is `min(x, 0)`.
pub struct Table {
    sig: Vec<f32>,
    log_sig: Vec<f32>,
}

const TABLE_MAX: f32 = 6.0;
const TABLE_SIZE: usize = 1024;

impl Default for Table {
    fn default() -> Self {
        let at = |i: usize| {
            -TABLE_MAX as f64 + (i as f64 + 0.5) * 2.0 * TABLE_MAX as f64 / TABLE_SIZE as f64
        };
        Self {
            sig: (0..TABLE_SIZE)
                .map(|i| Sigmoid::<f64>::sigmoid(&Exact, at(i)) as f32)
                .collect(),
            log_sig: (0..TABLE_SIZE)
                .map(|i| Sigmoid::<f64>::log_sigmoid(&Exact, at(i)) as f32)
                .collect(),
        }
    }
}

impl Table {
    #[inline]
    fn index(x: f32) -> usize {
        (((x + TABLE_MAX) * (TABLE_SIZE as f32 / (2.0 * TABLE_MAX))) as usize).min(TABLE_SIZE - 1)
    }
}

impl Sigmoid<f32> for Table {
    #[inline]
    fn sigmoid(&self, x: f32) -> f32 {
        if x >= TABLE_MAX {
            1.0
        } else if x <= -TABLE_MAX {
            0.0
        } else {
            self.sig[Self::index(x)]
        }
    }
    #[inline]
    fn log_sigmoid(&self, x: f32) -> f32 {
        if x >= TABLE_MAX {
            0.0
        } else if x <= -TABLE_MAX {
            x
        } else {
            self.log_sig[Self::index(x)]
        }
    }
}

/// `y += alpha * x`.
#[inline(always)]
pub fn axpy<T: Real>(alpha: T, x: &[T], y: &mut [T]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y = *y + alpha * *x;
    }
}

/// Negative sampling: `targets[0]` is the word to predict (label 1), the rest are negatives
/// (label 0). L = -ln s(h.o_t) - sum_neg ln s(-h.o_n).
#[inline(always)]
pub fn negative<T: Real, S: Sigmoid<T>>(
    s: &S,
    h: &[T],
    neu1e: &mut [T],
    out: &mut [T],
    targets: &[u32],
    alpha: T,
) -> T {
    let d = h.len();
    let mut loss = T::zero();
    for (k, &t) in targets.iter().enumerate() {
        let row = &mut out[t as usize * d..(t as usize + 1) * d];
        let f = dot(h, row);
        let g = if k == 0 {
            loss = loss - s.log_sigmoid(f);
            T::one() - s.sigmoid(f)
        } else {
            loss = loss - s.log_sigmoid(-f);
            -s.sigmoid(f)
        };
        let ga = g * alpha;
        axpy(ga, row, neu1e);
        axpy(ga, h, row);
    }
    loss
}

/// Hierarchical softmax along a Huffman path: at inner node `points[i]` the branch is
/// `codes[i]`, predicted with probability s(h.o) for branch 0 and s(-h.o) for branch 1.
#[inline(always)]
pub fn hierarchical<T: Real, S: Sigmoid<T>>(
    s: &S,
    h: &[T],
    neu1e: &mut [T],
    out: &mut [T],
    points: &[u32],
    codes: &[u8],
    alpha: T,
) -> T {
    let d = h.len();
    let mut loss = T::zero();
    for (&p, &c) in points.iter().zip(codes) {
        let row = &mut out[p as usize * d..(p as usize + 1) * d];
        let f = dot(h, row);
        let g = if c == 0 {
            loss = loss - s.log_sigmoid(f);
            T::one() - s.sigmoid(f)
        } else {
            loss = loss - s.log_sigmoid(-f);
            -s.sigmoid(f)
        };
        let ga = g * alpha;
        axpy(ga, row, neu1e);
        axpy(ga, h, row);
    }
    loss
}

/// Full softmax over every row of `out`: L = -ln(e^{h.o_t} / sum_j e^{h.o_j}). `scores` is
/// scratch space of one entry per row.
pub fn softmax<T: Real>(
    h: &[T],
    neu1e: &mut [T],
    out: &mut [T],
    scores: &mut [T],
    target: u32,
    alpha: T,
) -> T {
    let d = h.len();
    let mut max = T::neg_infinity();
    for (j, sc) in scores.iter_mut().enumerate() {
        *sc = dot(h, &out[j * d..(j + 1) * d]);
        max = max.max(*sc);
    }
    let logit = scores[target as usize] - max;
    let mut sum = T::zero();
    for sc in scores.iter_mut() {
        *sc = (*sc - max).exp();
        sum = sum + *sc;
    }
    let loss = sum.ln() - logit;
    for (j, &e) in scores.iter().enumerate() {
        let p = e / sum;
        let g = if j == target as usize {
            T::one() - p
        } else {
            -p
        };
        let ga = g * alpha;
        let row = &mut out[j * d..(j + 1) * d];
        axpy(ga, row, neu1e);
        axpy(ga, h, row);
    }
    loss
}
