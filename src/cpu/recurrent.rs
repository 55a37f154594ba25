//! CPU twin of `shaders/recurrent.wgsl`: one recurrent layer in one direction, forward and
//! backward through time, with the layout and semantics of [`crate::ops::recurrent`].
//!
//! The schedule is the GPU's: the input projections of all steps in one GEMM, one recurrent
//! product plus the gate work per step, and the weight gradients as GEMMs over all steps.
//! Within a step the hidden units are split among the threads (see [`super::step_parts`]):
//! each thread multiplies its units' gates and then does their gate work, so a step is one
//! parallel section (GRU reset-before: two), and the loop over steps runs on the pool.

use std::ops::Range;

use anyhow::{ensure, Result};

use super::activation::Activation;
use super::gemm::gemm_on_this_thread;
use super::step_parts::{for_each_part, on_pool, transpose_rows_into, unit_parts, Shared};
use super::{gemm, Real};
use crate::ops::recurrent::{CellKind, RecurrentShape};
use crate::ops::Gemm;

/// A layer-direction's parameters, PyTorch shapes: `w_ih` [G*H, I], `w_hh` [G*H, H],
/// biases [G*H] (absent means zero).
#[derive(Clone, Copy)]
pub struct Weights<'a, T> {
    pub w_ih: &'a [T],
    pub w_hh: &'a [T],
    pub b_ih: Option<&'a [T]>,
    pub b_hh: Option<&'a [T]>,
}

/// What the forward pass keeps for backward.
#[derive(Clone, Debug)]
pub struct Saved<T> {
    pub lengths: Vec<usize>,
    /// The state entering each step as the recurrent product sees it (times the recurrent
    /// dropout mask, if any), [rows, H].
    pub hprev: Vec<T>,
    /// With a recurrent dropout mask: the unmasked state entering each step (GRU's
    /// interpolation uses it); empty otherwise.
    pub hraw: Vec<T>,
    /// The recurrent dropout mask [B, H], if any.
    pub rmask: Vec<T>,
    /// LSTM: the cell state after each step, [rows, H] (empty otherwise).
    pub cell: Vec<T>,
    /// Per-cell activations, [rows, A*H].
    pub act: Vec<T>,
    pub h0: Vec<T>,
    pub c0: Vec<T>,
}

/// Final states of a forward pass, [B, H] each (`c_n` empty except for LSTM).
#[derive(Clone, Debug)]
pub struct FinalState<T> {
    pub h_n: Vec<T>,
    pub c_n: Vec<T>,
}

/// Gradients of one layer-direction.
#[derive(Clone, Debug)]
pub struct Grads<T> {
    /// [rows, I]
    pub dx: Vec<T>,
    pub dh0: Vec<T>,
    pub dc0: Vec<T>,
    pub dw_ih: Vec<T>,
    pub dw_hh: Vec<T>,
    pub db_ih: Vec<T>,
    pub db_hh: Vec<T>,
}

fn check_len(what: &str, have: usize, want: usize) -> Result<()> {
    ensure!(have == want, "{what} has {have} elements, expected {want}");
    Ok(())
}

/// The state a batch entry had before step `s` (from `h0` at its first step, else from the
/// output row of its previous step) — the same lookup the kernels make.
fn prev_row(shape: &RecurrentShape, s: usize, b: usize, len: usize) -> Option<usize> {
    if s == 0 {
        None
    } else {
        shape.time_at(s - 1, len).map(|t| shape.row(t, b))
    }
}

/// One part's share of a forward pass (see [`super::step_parts`]).
struct ForwardPart<T> {
    units: Range<usize>,
    /// `W_hh`'s rows of this part's units, transposed once per pass: [H, G * units], the
    /// gates one after another. In this layout the `gemm` crate's kernel reads the weights in
    /// place; given `W_hh` itself it repacked all of it at every step, which took longer than
    /// the products.
    w_hh_t: Vec<T>,
    /// `b_hh` of the same rows, [G * units] (zero without a bias).
    b_hh: Vec<T>,
    /// This step's recurrent products of the part's gates, [B, G * units]. GRU reset-before
    /// holds `W_hn (r * h) + b_hn` in its last `units` columns.
    products: Vec<T>,
    /// The part's units of the state, [B, units], and of the LSTM cell state.
    h: Vec<T>,
    c: Vec<T>,
}

impl<T: Real> ForwardPart<T> {
    fn new(
        units: Range<usize>,
        cell: CellKind,
        bsz: usize,
        h: usize,
        w: &Weights<T>,
        h0: &[T],
        c0: &[T],
    ) -> Self {
        let (g, nu, k0) = (cell.gates(), units.len(), units.start);
        let mut w_hh_t = vec![T::zero(); h * g * nu];
        for gate in 0..g {
            let rows = &w.w_hh[(gate * h + k0) * h..][..nu * h];
            transpose_rows_into(rows, nu, h, &mut w_hh_t[gate * nu..], g * nu);
        }
        let b_hh = match w.b_hh {
            Some(b) => (0..g)
                .flat_map(|gate| b[gate * h + k0..][..nu].iter().copied())
                .collect(),
            None => vec![T::zero(); g * nu],
        };
        let own = |v: &[T]| -> Vec<T> {
            if v.is_empty() {
                return Vec::new();
            }
            (0..bsz)
                .flat_map(|b| v[b * h + k0..][..nu].iter().copied())
                .collect()
        };
        Self {
            w_hh_t,
            b_hh,
            products: vec![T::zero(); bsz * g * nu],
            h: own(h0),
            c: own(c0),
            units,
        }
    }

    /// `products = lhs w_hh_t` as `spec` places it (the gate work adds `b_hh`).
    fn multiply(&mut self, spec: &Gemm, lhs: &[T]) -> Result<()> {
        gemm_on_this_thread(spec, lhs, &self.w_hh_t, None, &mut self.products)
    }
}

/// Runs the layer-direction over the batch. Writes this direction's columns of `y`
/// ([rows, out_stride]; zero past each length) and returns the final states and what
/// backward needs.
#[allow(clippy::too_many_arguments)]
pub fn forward<T: Real>(
    shape: &RecurrentShape,
    x: &[T],
    lengths: Option<&[usize]>,
    h0: Option<&[T]>,
    c0: Option<&[T]>,
    w: &Weights<T>,
    rmask: Option<&[T]>,
    y: &mut [T],
) -> Result<(FinalState<T>, Saved<T>)> {
    let lengths = shape.validate(lengths)?;
    let (bsz, h, i, gw, rows) = (
        shape.batch,
        shape.hidden,
        shape.input,
        shape.gate_width(),
        shape.rows(),
    );
    let cell = shape.cell;
    let g = cell.gates();
    let aw = cell.act_width() * h;
    shape.check_buffers(
        x.len(),
        y.len(),
        w.w_ih.len(),
        w.w_hh.len(),
        w.b_ih.map(|b| b.len()),
        w.b_hh.map(|b| b.len()),
    )?;
    let h0 = match h0 {
        Some(v) => {
            check_len("h0", v.len(), bsz * h)?;
            v.to_vec()
        }
        None => vec![T::zero(); bsz * h],
    };
    let c0 = match (cell.has_cell_state(), c0) {
        (true, Some(v)) => {
            check_len("c0", v.len(), bsz * h)?;
            v.to_vec()
        }
        (true, None) => vec![T::zero(); bsz * h],
        (false, _) => Vec::new(),
    };
    if let Some(m) = rmask {
        check_len("recurrent dropout mask", m.len(), bsz * h)?;
    }

    // Input projections of all steps at once, xw = x W_ih^T + b_ih, written where the
    // activations go: gate g of unit k at column g * H + k of `act`'s rows (act's width is at
    // least the gates'). Each step's gate work reads a gate's input projection and writes
    // its activation in the same place, so no separate [rows, G*H] buffer is made and read
    // back from memory.
    let mut act = vec![T::zero(); rows * aw];
    gemm(
        &Gemm::new(rows, gw, i).trans_b(true).leading_dims(i, i, aw),
        x,
        w.w_ih,
        w.b_ih,
        &mut act,
    )?;

    // Outputs past each sequence's length are zero.
    for (b, &len) in lengths.iter().enumerate() {
        for t in len..shape.steps {
            let at = shape.row(t, b) * shape.out_stride + shape.out_offset;
            y[at..at + h].iter_mut().for_each(|v| *v = T::zero());
        }
    }

    // The state as the recurrent product sees it (masked by recurrent dropout): this step's
    // and the next one's, which the parts fill in.
    let mut hm = h0.clone();
    if let Some(m) = rmask {
        hm.iter_mut().zip(m).for_each(|(v, &mv)| *v = *v * mv);
    }
    let mut hm_next = vec![T::zero(); bsz * h];
    let mut hraw = if rmask.is_some() {
        vec![T::zero(); rows * h]
    } else {
        Vec::new()
    };
    let mut hprev = vec![T::zero(); rows * h];
    let mut cell_after = if cell.has_cell_state() {
        vec![T::zero(); rows * h]
    } else {
        Vec::new()
    };
    // GRU reset-before: r * h, which the n gate's product needs for every unit.
    let mut rh = if cell == CellKind::GruResetBefore {
        vec![T::zero(); bsz * h]
    } else {
        Vec::new()
    };

    let mut parts: Vec<ForwardPart<T>> = unit_parts(bsz, gw, h)
        .into_iter()
        .map(|units| ForwardPart::new(units, cell, bsz, h, w, &h0, &c0))
        .collect();

    on_pool(parts.len(), || -> Result<()> {
        for s in 0..shape.steps {
            if cell == CellKind::GruResetBefore {
                // Phase one: r and z, then r * h, whose product with W_hn needs every unit.
                let (hm_now, act_now, rh_out) = (&hm, &act, Shared::new(&mut rh));
                for_each_part(&mut parts, |part| {
                    let nu = part.units.len();
                    let spec = Gemm::new(bsz, 2 * nu, h).leading_dims(h, 3 * nu, 3 * nu);
                    part.multiply(&spec, hm_now)?;
                    reset_gate_work(shape, &lengths, s, act_now, hm_now, &rh_out, part);
                    Ok(())
                })?;
            }
            let step = ForwardStep {
                shape,
                lengths: &lengths,
                step: s,
                hm: &hm,
                rh: &rh,
                rmask,
                act: Shared::new(&mut act),
                hprev: Shared::new(&mut hprev),
                hraw: Shared::new(&mut hraw),
                cell: Shared::new(&mut cell_after),
                y: Shared::new(y),
                hm_next: Shared::new(&mut hm_next),
            };
            for_each_part(&mut parts, |part| {
                let nu = part.units.len();
                let pw = g * nu;
                if cell == CellKind::GruResetBefore {
                    let spec =
                        Gemm::new(bsz, nu, h)
                            .leading_dims(h, pw, pw)
                            .offsets(0, 2 * nu, 2 * nu);
                    part.multiply(&spec, step.rh)?;
                } else {
                    part.multiply(&Gemm::new(bsz, pw, h), step.hm)?;
                }
                gate_work(&step, part);
                Ok(())
            })?;
            std::mem::swap(&mut hm, &mut hm_next);
        }
        Ok(())
    })?;

    let mut h_n = vec![T::zero(); bsz * h];
    let mut c_n = if cell.has_cell_state() {
        vec![T::zero(); bsz * h]
    } else {
        Vec::new()
    };
    for part in &parts {
        let (nu, k0) = (part.units.len(), part.units.start);
        for b in 0..bsz {
            h_n[b * h + k0..][..nu].copy_from_slice(&part.h[b * nu..][..nu]);
            if cell.has_cell_state() {
                c_n[b * h + k0..][..nu].copy_from_slice(&part.c[b * nu..][..nu]);
            }
        }
    }

    Ok((
        FinalState { h_n, c_n },
        Saved {
            lengths,
            hprev,
            hraw,
            rmask: rmask.map(|m| m.to_vec()).unwrap_or_default(),
            cell: cell_after,
            act,
            h0,
            c0,
        },
    ))
}

/// What the parts of one forward step read, and the buffers they write, each in its own
/// units' columns. `act` holds the input projections of the step's rows on entry.
struct ForwardStep<'a, T> {
    shape: &'a RecurrentShape,
    lengths: &'a [usize],
    step: usize,
    /// The state entering the step as the product sees it, [B, H].
    hm: &'a [T],
    /// GRU reset-before: r * h, [B, H].
    rh: &'a [T],
    rmask: Option<&'a [T]>,
    act: Shared<'a, T>,
    hprev: Shared<'a, T>,
    hraw: Shared<'a, T>,
    cell: Shared<'a, T>,
    y: Shared<'a, T>,
    /// The state entering the next step as its product sees it.
    hm_next: Shared<'a, T>,
}

with_avx2!(fn gate_work = gate_work_generic<T>(step: &ForwardStep<'_, T>, part: &mut ForwardPart<T>));

/// The gate work of a forward step for one part, after its recurrent products.
#[inline(always)]
fn gate_work_generic<T: Real>(step: &ForwardStep<'_, T>, part: &mut ForwardPart<T>) {
    let shape = step.shape;
    let (cell, h, g) = (shape.cell, shape.hidden, shape.cell.gates());
    let aw = cell.act_width() * h;
    let (nu, k0) = (part.units.len(), part.units.start);
    let pw = g * nu;
    for (b, &len) in step.lengths.iter().enumerate() {
        let hs = &mut part.h[b * nu..][..nu];
        if let Some(t) = shape.time_at(step.step, len) {
            let row = shape.row(t, b);
            // SAFETY (every `slice` below): each part writes only its own units' columns, and
            // no slice outlives this iteration.
            unsafe {
                step.hprev
                    .slice(row * h + k0, nu)
                    .copy_from_slice(&step.hm[b * h + k0..][..nu]);
                if step.rmask.is_some() {
                    step.hraw.slice(row * h + k0, nu).copy_from_slice(hs);
                }
            }
            let pr = &part.products[b * pw..][..pw];
            let gate_in = |gate: usize| {
                if gate < g {
                    GateInputs {
                        rec: &pr[gate * nu..][..nu],
                        bias: &part.b_hh[gate * nu..][..nu],
                    }
                } else {
                    GateInputs {
                        rec: &[],
                        bias: &[],
                    }
                }
            };
            let act_at = |j: usize| -> &mut [T] {
                if j < cell.act_width() {
                    unsafe { step.act.slice(row * aw + j * h + k0, nu) }
                } else {
                    &mut []
                }
            };
            let (cs, c_saved): (&mut [T], &mut [T]) = if cell.has_cell_state() {
                (&mut part.c[b * nu..][..nu], unsafe {
                    step.cell.slice(row * h + k0, nu)
                })
            } else {
                (&mut [], &mut [])
            };
            let rh = if cell == CellKind::GruResetBefore {
                &step.rh[b * h + k0..][..nu]
            } else {
                &[][..]
            };
            cell_step(
                cell,
                [gate_in(0), gate_in(1), gate_in(2), gate_in(3)],
                [act_at(0), act_at(1), act_at(2), act_at(3)],
                hs,
                cs,
                c_saved,
                rh,
            );
            unsafe {
                step.y
                    .slice(row * shape.out_stride + shape.out_offset + k0, nu)
                    .copy_from_slice(hs);
            }
        }
        // The next step's input to the product, for every entry (an inactive one keeps its
        // state).
        let next = unsafe { step.hm_next.slice(b * h + k0, nu) };
        match step.rmask {
            Some(m) => {
                let m = &m[b * h + k0..][..nu];
                for ((o, &v), &mv) in next.iter_mut().zip(hs.iter()).zip(m) {
                    *o = v * mv;
                }
            }
            None => next.copy_from_slice(hs),
        }
    }
}

with_avx2!(fn reset_gate_work = reset_gate_work_generic<T>(
    shape: &RecurrentShape,
    lengths: &[usize],
    s: usize,
    act: &[T],
    hm: &[T],
    rh: &Shared<'_, T>,
    part: &mut ForwardPart<T>,
));

/// GRU reset-before, phase one of a forward step for one part: `r * h` of its units from
/// the r gate's input projections (still in `act`) and products.
#[inline(always)]
fn reset_gate_work_generic<T: Real>(
    shape: &RecurrentShape,
    lengths: &[usize],
    s: usize,
    act: &[T],
    hm: &[T],
    rh: &Shared<'_, T>,
    part: &mut ForwardPart<T>,
) {
    let (h, aw) = (shape.hidden, shape.cell.act_width() * shape.hidden);
    let (nu, k0) = (part.units.len(), part.units.start);
    for (b, &len) in lengths.iter().enumerate() {
        let Some(t) = shape.time_at(s, len) else {
            continue;
        };
        let xr = &act[shape.row(t, b) * aw + k0..][..nu];
        let pr = &part.products[b * 3 * nu..][..nu];
        let br = &part.b_hh[..nu];
        let hv = &hm[b * h + k0..][..nu];
        // SAFETY: each part writes only its own units' columns.
        let out = unsafe { rh.slice(b * h + k0, nu) };
        for k in 0..nu {
            out[k] = Activation::sigmoid(xr[k] + (pr[k] + br[k])) * hv[k];
        }
    }
}

/// One step of one batch entry over a run of hidden units: from each gate's input
/// projections (in `act[g]` on entry), recurrent products and recurrent bias (`gates[g]`,
/// empty past the cell's gates), the activations saved in `act[j]`, the new state `hs` (and
/// `cs`, the LSTM's cell state, also saved in `c_saved`). GRU reset-before has `W_hn (r * h)`
/// as the n gate's product and passes `r * h` as `rh`. Short passes over equal-length slices,
/// so that the f32 path vectorizes without running out of registers.
#[inline(always)]
fn cell_step<T: Real>(
    cell: CellKind,
    gates: [GateInputs<'_, T>; 4],
    act: [&mut [T]; 4],
    hs: &mut [T],
    cs: &mut [T],
    c_saved: &mut [T],
    rh: &[T],
) {
    let n = hs.len();
    let one = T::one();
    let [a0, a1, a2, a3] = act;
    // a = f(x + (h W + b)) in place of x, the same order of additions as the GPU kernels.
    let activate = |a: &mut [T], gate: &GateInputs<'_, T>, f: fn(T) -> T| {
        let (a, r, b) = (&mut a[..n], &gate.rec[..n], &gate.bias[..n]);
        for k in 0..n {
            a[k] = f(a[k] + (r[k] + b[k]));
        }
    };
    match cell {
        CellKind::RnnTanh => {
            activate(a0, &gates[0], T::tanh_act);
            hs.copy_from_slice(&a0[..n]);
        }
        CellKind::RnnRelu => {
            activate(a0, &gates[0], |v| v.max(T::zero()));
            hs.copy_from_slice(&a0[..n]);
        }
        CellKind::Lstm => {
            activate(a0, &gates[0], T::sigmoid);
            activate(a1, &gates[1], T::sigmoid);
            activate(a2, &gates[2], T::tanh_act);
            activate(a3, &gates[3], T::sigmoid);
            let (ai, af, ag, ao) = (&a0[..n], &a1[..n], &a2[..n], &a3[..n]);
            let (cs, c_saved) = (&mut cs[..n], &mut c_saved[..n]);
            for k in 0..n {
                let c = af[k] * cs[k] + ai[k] * ag[k];
                cs[k] = c;
                c_saved[k] = c;
                hs[k] = ao[k] * c.tanh_act();
            }
        }
        CellKind::Gru | CellKind::GruResetBefore => {
            activate(a0, &gates[0], T::sigmoid);
            activate(a1, &gates[1], T::sigmoid);
            let (ar, az, an, tail) = (&a0[..n], &a1[..n], &mut a2[..n], &mut a3[..n]);
            let (rn, bn) = (&gates[2].rec[..n], &gates[2].bias[..n]);
            if cell == CellKind::Gru {
                // n = tanh(W_in x + b_in + r * (W_hn h + b_hn)); W_hn h + b_hn is saved.
                for k in 0..n {
                    let hn = rn[k] + bn[k];
                    an[k] = (an[k] + ar[k] * hn).tanh_act();
                    tail[k] = hn;
                }
            } else {
                // n = tanh(W_in x + b_in + W_hn (r * h) + b_hn); r * h is saved.
                let rh = &rh[..n];
                for k in 0..n {
                    an[k] = (an[k] + (rn[k] + bn[k])).tanh_act();
                    tail[k] = rh[k];
                }
            }
            for k in 0..n {
                hs[k] = (one - az[k]) * an[k] + az[k] * hs[k];
            }
        }
    }
}

/// One gate's recurrent inputs to [`cell_step`] over a run of units: the products and `b_hh`.
struct GateInputs<'a, T> {
    rec: &'a [T],
    bias: &'a [T],
}

/// One part's share of a backward pass (see [`super::step_parts`]).
struct BackwardPart<T> {
    units: Range<usize>,
    /// The gradient reaching the part's units of the state, [B, units], carried from step to
    /// step; and of the LSTM cell state.
    dh: Vec<T>,
    dc: Vec<T>,
    /// The gate gradients of the step after times `W_hh`'s columns of these units, [B, units]
    /// (GRU reset-before, in phase two: `dn_pre` times `W_hn`'s columns).
    through_w: Vec<T>,
    /// Zeros standing in for an absent output gradient, [units].
    zeros: Vec<T>,
}

impl<T: Real> BackwardPart<T> {
    fn new(units: Range<usize>, bsz: usize, h: usize, dh_n: &[T], dc_n: &[T]) -> Self {
        let (nu, k0) = (units.len(), units.start);
        let own = |v: &[T]| -> Vec<T> {
            (0..bsz)
                .flat_map(|b| v[b * h + k0..][..nu].iter().copied())
                .collect()
        };
        Self {
            dh: own(dh_n),
            dc: own(dc_n),
            through_w: vec![T::zero(); bsz * nu],
            zeros: vec![T::zero(); nu],
            units,
        }
    }

    /// `dh += (rec W_hh) * mask` over the part's units: the gradient the gate gradients
    /// `rec` [B, G*H] of the step after send back into the state.
    fn carry(
        &mut self,
        rec: &[T],
        w_hh: &[T],
        mask: Option<&[T]>,
        shape: &RecurrentShape,
    ) -> Result<()> {
        let (bsz, h, gw) = (shape.batch, shape.hidden, shape.gate_width());
        let (nu, k0) = (self.units.len(), self.units.start);
        let spec = Gemm::new(bsz, nu, gw)
            .leading_dims(gw, h, nu)
            .offsets(0, k0, 0);
        gemm_on_this_thread(&spec, rec, w_hh, None, &mut self.through_w)?;
        for b in 0..bsz {
            let dh = &mut self.dh[b * nu..][..nu];
            let tw = &self.through_w[b * nu..][..nu];
            match mask {
                Some(m) => {
                    let m = &m[b * h + k0..][..nu];
                    for k in 0..nu {
                        dh[k] = dh[k] + tw[k] * m[k];
                    }
                }
                None => {
                    for k in 0..nu {
                        dh[k] = dh[k] + tw[k];
                    }
                }
            }
        }
        Ok(())
    }
}

/// What the parts of one backward step read, and the buffers they write, each in its own
/// units' columns.
struct BackwardStep<'a, T> {
    shape: &'a RecurrentShape,
    lengths: &'a [usize],
    step: usize,
    saved: &'a Saved<T>,
    dy: Option<&'a [T]>,
    dxw: Shared<'a, T>,
    dhw: Shared<'a, T>,
    /// The gate gradients that flow through W_hh, [B, G*H] (zero for inactive entries).
    rec: Shared<'a, T>,
    dn_pre: Shared<'a, T>,
}

with_avx2!(fn backward_gate_work = backward_gate_work_generic<T>(
    step: &BackwardStep<'_, T>,
    part: &mut BackwardPart<T>,
));

/// The gate gradients of one backward step for one part, from the gradient reaching its
/// units of the state.
#[inline(always)]
fn backward_gate_work_generic<T: Real>(step: &BackwardStep<'_, T>, part: &mut BackwardPart<T>) {
    let (shape, saved) = (step.shape, step.saved);
    let (cell, h, gw, g) = (
        shape.cell,
        shape.hidden,
        shape.gate_width(),
        shape.cell.gates(),
    );
    let aw = cell.act_width() * h;
    let (nu, k0) = (part.units.len(), part.units.start);
    let one = T::one();
    for (b, &len) in step.lengths.iter().enumerate() {
        // SAFETY (every `slice` below): each part writes only its own units' columns, and no
        // slice outlives this iteration.
        let rec = |gate: usize| unsafe { step.rec.slice(b * gw + gate * h + k0, nu) };
        let Some(t) = shape.time_at(step.step, len) else {
            (0..g).for_each(|gate| rec(gate).fill(T::zero()));
            if cell == CellKind::GruResetBefore {
                unsafe { step.dn_pre.slice(b * h + k0, nu) }.fill(T::zero());
            }
            continue;
        };
        let row = shape.row(t, b);
        let a = |j: usize| &saved.act[row * aw + j * h + k0..][..nu];
        let dxw = |gate: usize| unsafe { step.dxw.slice(row * gw + gate * h + k0, nu) };
        let dy = match step.dy {
            Some(d) => &d[row * shape.out_stride + shape.out_offset + k0..][..nu],
            None => &part.zeros[..],
        };
        let dh = &mut part.dh[b * nu..][..nu];
        // GRU interpolates with the unmasked state.
        let hp = if saved.hraw.is_empty() {
            &saved.hprev[row * h + k0..][..nu]
        } else {
            &saved.hraw[row * h + k0..][..nu]
        };
        match cell {
            CellKind::RnnTanh | CellKind::RnnRelu => {
                let (v, d0) = (a(0), dxw(0));
                for k in 0..nu {
                    let dht = dh[k] + dy[k];
                    d0[k] = if cell == CellKind::RnnTanh {
                        dht * (one - v[k] * v[k])
                    } else if v[k] > T::zero() {
                        dht
                    } else {
                        T::zero()
                    };
                    dh[k] = T::zero();
                }
                rec(0).copy_from_slice(d0);
            }
            CellKind::Lstm => {
                let (ig, fg, gg, og) = (a(0), a(1), a(2), a(3));
                let c = &saved.cell[row * h + k0..][..nu];
                let cp = match prev_row(shape, step.step, b, len) {
                    Some(r) => &saved.cell[r * h + k0..][..nu],
                    None => &saved.c0[b * h + k0..][..nu],
                };
                let dc = &mut part.dc[b * nu..][..nu];
                let (d0, d1, d2, d3) = (dxw(0), dxw(1), dxw(2), dxw(3));
                for k in 0..nu {
                    let dht = dh[k] + dy[k];
                    let tc = c[k].tanh_act();
                    let dct = dc[k] + dht * og[k] * (one - tc * tc);
                    d0[k] = dct * gg[k] * ig[k] * (one - ig[k]);
                    d1[k] = dct * cp[k] * fg[k] * (one - fg[k]);
                    d2[k] = dct * ig[k] * (one - gg[k] * gg[k]);
                    d3[k] = dht * tc * og[k] * (one - og[k]);
                    dc[k] = dct * fg[k];
                    dh[k] = T::zero();
                }
                rec(0).copy_from_slice(d0);
                rec(1).copy_from_slice(d1);
                rec(2).copy_from_slice(d2);
                rec(3).copy_from_slice(d3);
            }
            CellKind::Gru => {
                let (r, z, n, hn) = (a(0), a(1), a(2), a(3));
                let (d0, d1, d2) = (dxw(0), dxw(1), dxw(2));
                let (e2, rec2) = (unsafe { step.dhw.slice(row * gw + 2 * h + k0, nu) }, rec(2));
                for k in 0..nu {
                    let dht = dh[k] + dy[k];
                    let dnp = dht * (one - z[k]) * (one - n[k] * n[k]);
                    d0[k] = dnp * hn[k] * r[k] * (one - r[k]);
                    d1[k] = dht * (hp[k] - n[k]) * z[k] * (one - z[k]);
                    d2[k] = dnp;
                    e2[k] = dnp * r[k];
                    rec2[k] = e2[k];
                    dh[k] = dht * z[k];
                }
                unsafe { step.dhw.slice(row * gw + k0, nu) }.copy_from_slice(d0);
                unsafe { step.dhw.slice(row * gw + h + k0, nu) }.copy_from_slice(d1);
                rec(0).copy_from_slice(d0);
                rec(1).copy_from_slice(d1);
            }
            CellKind::GruResetBefore => {
                let (z, n) = (a(1), a(2));
                let (d1, d2) = (dxw(1), dxw(2));
                let dn_pre = unsafe { step.dn_pre.slice(b * h + k0, nu) };
                for k in 0..nu {
                    let dht = dh[k] + dy[k];
                    let dnp = dht * (one - z[k]) * (one - n[k] * n[k]);
                    d1[k] = dht * (hp[k] - n[k]) * z[k] * (one - z[k]);
                    d2[k] = dnp;
                    dn_pre[k] = dnp;
                    dh[k] = dht * z[k];
                }
                // Only r and z reach h through W_hh directly (phase two fills them in); n
                // reached it through r * h.
                (0..3).for_each(|gate| rec(gate).fill(T::zero()));
            }
        }
    }
}

with_avx2!(fn reset_backward_work = reset_backward_work_generic<T>(
    shape: &RecurrentShape,
    lengths: &[usize],
    s: usize,
    saved: &Saved<T>,
    mask: Option<&[T]>,
    dxw: &Shared<'_, T>,
    rec: &Shared<'_, T>,
    part: &mut BackwardPart<T>,
));

/// GRU reset-before, phase two of a backward step for one part: with `d(r * h)` of its units
/// in `part.through_w`, the r gate's gradient, its share of the state's gradient, and the
/// gate gradients that flow through W_hh.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn reset_backward_work_generic<T: Real>(
    shape: &RecurrentShape,
    lengths: &[usize],
    s: usize,
    saved: &Saved<T>,
    mask: Option<&[T]>,
    dxw: &Shared<'_, T>,
    rec: &Shared<'_, T>,
    part: &mut BackwardPart<T>,
) {
    let (h, gw) = (shape.hidden, shape.gate_width());
    let aw = shape.cell.act_width() * h;
    let (nu, k0) = (part.units.len(), part.units.start);
    let one = T::one();
    for (b, &len) in lengths.iter().enumerate() {
        let Some(t) = shape.time_at(s, len) else {
            continue;
        };
        let row = shape.row(t, b);
        let r = &saved.act[row * aw + k0..][..nu];
        let hp = &saved.hprev[row * h + k0..][..nu];
        let drh = &part.through_w[b * nu..][..nu];
        let dh = &mut part.dh[b * nu..][..nu];
        // SAFETY: each part writes only its own units' columns, and no slice outlives this
        // iteration.
        let (dr, dz) = unsafe {
            (
                dxw.slice(row * gw + k0, nu),
                dxw.slice(row * gw + h + k0, nu),
            )
        };
        for k in 0..nu {
            dr[k] = drh[k] * hp[k] * r[k] * (one - r[k]);
        }
        match mask {
            Some(m) => {
                let m = &m[b * h + k0..][..nu];
                for k in 0..nu {
                    dh[k] = dh[k] + drh[k] * r[k] * m[k];
                }
            }
            None => {
                for k in 0..nu {
                    dh[k] = dh[k] + drh[k] * r[k];
                }
            }
        }
        unsafe {
            rec.slice(b * gw + k0, nu).copy_from_slice(dr);
            rec.slice(b * gw + h + k0, nu).copy_from_slice(dz);
        }
    }
}

/// Backward through time. `dy` has `y`'s layout (this direction's columns are read);
/// `dh_n`, `dc_n` are the gradients of the final states (absent means zero).
#[allow(clippy::too_many_arguments)]
pub fn backward<T: Real>(
    shape: &RecurrentShape,
    x: &[T],
    w: &Weights<T>,
    saved: &Saved<T>,
    dy: Option<&[T]>,
    dh_n: Option<&[T]>,
    dc_n: Option<&[T]>,
) -> Result<Grads<T>> {
    let (bsz, h, i, gw, rows) = (
        shape.batch,
        shape.hidden,
        shape.input,
        shape.gate_width(),
        shape.rows(),
    );
    let cell = shape.cell;
    let aw = cell.act_width() * h;
    let lengths = shape.validate(Some(&saved.lengths))?;
    // The output gradient stands where the output did.
    shape.check_buffers(
        x.len(),
        dy.map_or(rows * shape.out_stride, |d| d.len()),
        w.w_ih.len(),
        w.w_hh.len(),
        w.b_ih.map(|b| b.len()),
        w.b_hh.map(|b| b.len()),
    )?;
    check_len("saved activations", saved.act.len(), rows * aw)?;
    check_len("saved states", saved.hprev.len(), rows * h)?;
    check_len("saved h0", saved.h0.len(), bsz * h)?;
    if cell.has_cell_state() {
        check_len("saved cell states", saved.cell.len(), rows * h)?;
        check_len("saved c0", saved.c0.len(), bsz * h)?;
    }
    if !saved.rmask.is_empty() {
        check_len("saved recurrent dropout mask", saved.rmask.len(), bsz * h)?;
        check_len("saved unmasked states", saved.hraw.len(), rows * h)?;
    }
    let dh_n = match dh_n {
        Some(v) => {
            check_len("h_n gradient", v.len(), bsz * h)?;
            v.to_vec()
        }
        None => vec![T::zero(); bsz * h],
    };
    let dc_n = match dc_n {
        Some(v) if cell.has_cell_state() => {
            check_len("c_n gradient", v.len(), bsz * h)?;
            v.to_vec()
        }
        _ => vec![T::zero(); bsz * h],
    };

    let separate_dhw = cell == CellKind::Gru;
    let mut dxw = vec![T::zero(); rows * gw];
    let mut dhw = if separate_dhw {
        vec![T::zero(); rows * gw]
    } else {
        Vec::new()
    };
    // Gate gradients that flow through W_hh, one row per batch entry: those of the step just
    // done (`rec`), and those the parts write for the step being done.
    let mut rec = vec![T::zero(); bsz * gw];
    let mut rec_next = vec![T::zero(); bsz * gw];
    // GRU reset-before: the n gate's pre-activation gradient, which d(r * h) needs for every
    // unit.
    let mut dn_pre = if cell == CellKind::GruResetBefore {
        vec![T::zero(); bsz * h]
    } else {
        Vec::new()
    };
    // Recurrent dropout scales what flows back into the state through W_hh.
    let mask = (!saved.rmask.is_empty()).then_some(&saved.rmask[..]);
    let mut parts: Vec<BackwardPart<T>> = unit_parts(bsz, gw, h)
        .into_iter()
        .map(|units| BackwardPart::new(units, bsz, h, &dh_n, &dc_n))
        .collect();

    on_pool(parts.len(), || -> Result<()> {
        for s in (0..shape.steps).rev() {
            let carry = s + 1 < shape.steps;
            let rec_now = &rec;
            let step = BackwardStep {
                shape,
                lengths: &lengths,
                step: s,
                saved,
                dy,
                dxw: Shared::new(&mut dxw),
                dhw: Shared::new(&mut dhw),
                rec: Shared::new(&mut rec_next),
                dn_pre: Shared::new(&mut dn_pre),
            };
            for_each_part(&mut parts, |part| {
                if carry {
                    part.carry(rec_now, w.w_hh, mask, shape)?;
                }
                backward_gate_work(&step, part);
                Ok(())
            })?;
            if cell == CellKind::GruResetBefore {
                // Phase two: d(r * h) = dn_pre W_hn needs every unit's dn_pre.
                let dn_now = &dn_pre;
                let dxw_out = Shared::new(&mut dxw);
                let rec_out = Shared::new(&mut rec_next);
                for_each_part(&mut parts, |part| {
                    let (nu, k0) = (part.units.len(), part.units.start);
                    let spec =
                        Gemm::new(bsz, nu, h)
                            .leading_dims(h, h, nu)
                            .offsets(0, 2 * h * h + k0, 0);
                    gemm_on_this_thread(&spec, dn_now, w.w_hh, None, &mut part.through_w)?;
                    reset_backward_work(shape, &lengths, s, saved, mask, &dxw_out, &rec_out, part);
                    Ok(())
                })?;
            }
            std::mem::swap(&mut rec, &mut rec_next);
        }
        // What the first step's gate gradients carry back is the gradient of h0.
        for_each_part(&mut parts, |part| part.carry(&rec, w.w_hh, mask, shape))?;
        Ok(())
    })?;
    let mut dh = vec![T::zero(); bsz * h];
    let mut dc = vec![T::zero(); bsz * h];
    for part in &parts {
        let (nu, k0) = (part.units.len(), part.units.start);
        for b in 0..bsz {
            dh[b * h + k0..][..nu].copy_from_slice(&part.dh[b * nu..][..nu]);
            dc[b * h + k0..][..nu].copy_from_slice(&part.dc[b * nu..][..nu]);
        }
    }

    let dhw_ref = if separate_dhw { &dhw } else { &dxw };
    let mut dw_ih = vec![T::zero(); gw * i];
    gemm(
        &Gemm::new(gw, i, rows).trans_a(true),
        &dxw,
        x,
        None,
        &mut dw_ih,
    )?;
    let mut dw_hh = vec![T::zero(); gw * h];
    if cell == CellKind::GruResetBefore {
        // Rows r, z pair with h; rows n pair with r * h (saved in act).
        let rz = Gemm::new(2 * h, h, rows)
            .trans_a(true)
            .leading_dims(gw, h, h);
        gemm(&rz, dhw_ref, &saved.hprev, None, &mut dw_hh)?;
        let n = Gemm::new(h, h, rows)
            .trans_a(true)
            .leading_dims(gw, aw, h)
            .offsets(2 * h, 3 * h, 2 * h * h);
        gemm(&n, dhw_ref, &saved.act, None, &mut dw_hh)?;
    } else {
        gemm(
            &Gemm::new(gw, h, rows).trans_a(true),
            dhw_ref,
            &saved.hprev,
            None,
            &mut dw_hh,
        )?;
    }
    let colsum = |m: &[T]| -> Vec<T> {
        let mut out = vec![T::zero(); gw];
        for r in m.chunks_exact(gw) {
            for (o, &v) in out.iter_mut().zip(r) {
                *o = *o + v;
            }
        }
        out
    };
    let db_ih = colsum(&dxw);
    // Only GRU's recurrent gate gradients differ from the input ones.
    let db_hh = if separate_dhw {
        colsum(dhw_ref)
    } else {
        db_ih.clone()
    };
    let mut dx = vec![T::zero(); rows * i];
    gemm(&Gemm::new(rows, i, gw), &dxw, w.w_ih, None, &mut dx)?;
    let dc0 = if cell.has_cell_state() {
        dc
    } else {
        Vec::new()
    };
    Ok(Grads {
        dx,
        dh0: dh,
        dc0,
        dw_ih,
        dw_hh,
        db_ih,
        db_hh,
    })
}
