//! CPU twin of `shaders/recurrent.wgsl`: one recurrent layer in one direction, forward and
//! backward through time, with the layout and semantics of [`crate::ops::recurrent`].
//!
//! The schedule is the GPU's: the input projections of all steps in one GEMM, one recurrent
//! product plus the gate work per step, and the weight gradients as GEMMs over all steps.

use anyhow::{ensure, Result};

use super::activation::Activation;
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

    // Input projections of all steps at once: xw = x W_ih^T + b_ih.
    let mut xw = vec![T::zero(); rows * gw];
    gemm(
        &Gemm::new(rows, gw, i).trans_b(true),
        x,
        w.w_ih,
        w.b_ih,
        &mut xw,
    )?;

    // Outputs past each sequence's length are zero.
    for (b, &len) in lengths.iter().enumerate() {
        for t in len..shape.steps {
            let at = shape.row(t, b) * shape.out_stride + shape.out_offset;
            y[at..at + h].iter_mut().for_each(|v| *v = T::zero());
        }
    }

    if let Some(m) = rmask {
        check_len("recurrent dropout mask", m.len(), bsz * h)?;
    }
    let mut state_h = h0.clone();
    // The state as the recurrent product sees it (masked by recurrent dropout).
    let mut masked_h = h0.clone();
    let mut hraw = if rmask.is_some() {
        vec![T::zero(); rows * h]
    } else {
        Vec::new()
    };
    let mut state_c = c0.clone();
    let mut hprev = vec![T::zero(); rows * h];
    let mut cell_after = if cell.has_cell_state() {
        vec![T::zero(); rows * h]
    } else {
        Vec::new()
    };
    let mut act = vec![T::zero(); rows * aw];
    let mut hw = vec![T::zero(); bsz * gw];
    let mut rh = vec![T::zero(); bsz * h];
    let mut hn = vec![T::zero(); bsz * h];

    for s in 0..shape.steps {
        // The recurrent product of all batch rows (inactive rows are computed and ignored),
        // on the state as recurrent dropout leaves it.
        masked_h.copy_from_slice(&state_h);
        if let Some(m) = rmask {
            masked_h.iter_mut().zip(m).for_each(|(v, &mv)| *v = *v * mv);
        }
        let hm = &masked_h;
        gemm(
            &Gemm::new(bsz, gw, h).trans_b(true),
            hm,
            w.w_hh,
            w.b_hh,
            &mut hw,
        )?;
        if cell == CellKind::GruResetBefore {
            // Phase one: r and z, then r * h, whose product with W_hn needs every unit.
            for (b, &len) in lengths.iter().enumerate() {
                let Some(t) = shape.time_at(s, len) else {
                    continue;
                };
                let row = shape.row(t, b);
                for k in 0..h {
                    let r = Activation::sigmoid(xw[row * gw + k] + hw[b * gw + k]);
                    rh[b * h + k] = r * hm[b * h + k];
                }
            }
            let n_rows = Gemm::new(bsz, h, h).trans_b(true).offsets(0, 2 * h * h, 0);
            gemm(&n_rows, &rh, w.w_hh, None, &mut hn)?;
            if let Some(bhh) = w.b_hh {
                for row in hn.chunks_exact_mut(h) {
                    for (v, &bias) in row.iter_mut().zip(&bhh[2 * h..]) {
                        *v = *v + bias;
                    }
                }
            }
        }
        for (b, &len) in lengths.iter().enumerate() {
            let Some(t) = shape.time_at(s, len) else {
                continue;
            };
            let row = shape.row(t, b);
            let xr = &xw[row * gw..][..gw];
            let hr = &hw[b * gw..][..gw];
            let a = &mut act[row * aw..][..aw];
            hprev[row * h..][..h].copy_from_slice(&hm[b * h..][..h]);
            if rmask.is_some() {
                hraw[row * h..][..h].copy_from_slice(&state_h[b * h..][..h]);
            }
            let hs = &mut state_h[b * h..][..h];
            let cs = if cell.has_cell_state() {
                &mut state_c[b * h..][..h]
            } else {
                &mut [][..]
            };
            let cell_row = if cell.has_cell_state() {
                &mut cell_after[row * h..][..h]
            } else {
                &mut [][..]
            };
            let extra = match cell {
                CellKind::GruResetBefore => Some((&hn[b * h..][..h], &rh[b * h..][..h])),
                _ => None,
            };
            cell_step(cell, h, xr, hr, a, hs, cs, cell_row, extra);
            y[row * shape.out_stride + shape.out_offset..][..h].copy_from_slice(hs);
        }
    }

    Ok((
        FinalState {
            h_n: state_h,
            c_n: state_c,
        },
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

/// One step of one batch entry: the gate activations (saved in `a`) and the new state `hs`
/// (and `cs`, the LSTM's cell state, also saved in `cell_row`), from the input projections
/// `xr` and recurrent products `hr`. GRU reset-before passes its `W_hn (r * h) + b_hn` and
/// `r * h` as `extra`. Written as passes over slices, so that the f32 path vectorizes.
#[allow(clippy::too_many_arguments)]
fn cell_step<T: Real>(
    cell: CellKind,
    h: usize,
    xr: &[T],
    hr: &[T],
    a: &mut [T],
    hs: &mut [T],
    cs: &mut [T],
    cell_row: &mut [T],
    extra: Option<(&[T], &[T])>,
) {
    let one = T::one();
    match cell {
        CellKind::RnnTanh | CellKind::RnnRelu => {
            for ((v, &x), &r) in a.iter_mut().zip(xr).zip(hr) {
                let pre = x + r;
                *v = if cell == CellKind::RnnTanh {
                    pre.tanh_act()
                } else {
                    pre.max(T::zero())
                };
            }
            hs.copy_from_slice(&a[..h]);
        }
        CellKind::Lstm => {
            for ((v, &x), &r) in a.iter_mut().zip(xr).zip(hr) {
                *v = x + r;
            }
            let (ifg, rest) = a.split_at_mut(2 * h);
            let (gg, og) = rest.split_at_mut(h);
            ifg.iter_mut().for_each(|v| *v = v.sigmoid());
            gg.iter_mut().for_each(|v| *v = v.tanh_act());
            og.iter_mut().for_each(|v| *v = v.sigmoid());
            let (ig, fg) = ifg.split_at(h);
            for ((c, ((&i, &f), &g)), cr) in cs
                .iter_mut()
                .zip(ig.iter().zip(fg).zip(gg.iter()))
                .zip(cell_row.iter_mut())
            {
                *c = f * *c + i * g;
                *cr = *c;
            }
            for ((hv, &o), &c) in hs.iter_mut().zip(og.iter()).zip(cs.iter()) {
                *hv = o * c.tanh_act();
            }
        }
        CellKind::Gru | CellKind::GruResetBefore => {
            let (rz, rest) = a.split_at_mut(2 * h);
            let (n, tail) = rest.split_at_mut(h);
            for ((v, &x), &r) in rz.iter_mut().zip(&xr[..2 * h]).zip(&hr[..2 * h]) {
                *v = (x + r).sigmoid();
            }
            let (r, z) = rz.split_at(h);
            match extra {
                // n = tanh(W_in x + b_in + r * (W_hn h + b_hn)); W_hn h + b_hn is saved.
                None => {
                    for k in 0..h {
                        let hn = hr[2 * h + k];
                        n[k] = (xr[2 * h + k] + r[k] * hn).tanh_act();
                        tail[k] = hn;
                    }
                }
                // n = tanh(W_in x + b_in + W_hn (r * h) + b_hn); r * h is saved.
                Some((hn, rh)) => {
                    for k in 0..h {
                        n[k] = (xr[2 * h + k] + hn[k]).tanh_act();
                        tail[k] = rh[k];
                    }
                }
            }
            for ((hv, &zk), &nk) in hs.iter_mut().zip(z).zip(n.iter()) {
                *hv = (one - zk) * nk + zk * *hv;
            }
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
    let mut dh = match dh_n {
        Some(v) => {
            check_len("h_n gradient", v.len(), bsz * h)?;
            v.to_vec()
        }
        None => vec![T::zero(); bsz * h],
    };
    let mut dc = match dc_n {
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
    // Gate gradients of the step just done, one row per batch entry, that flow through W_hh.
    let mut rec = vec![T::zero(); bsz * gw];
    let mut dn_pre = vec![T::zero(); bsz * h];
    let mut drh = vec![T::zero(); bsz * h];
    let mut through_w = vec![T::zero(); bsz * h];
    // Recurrent dropout scales what flows back into the state through W_hh.
    let mask_at = |i: usize| saved.rmask.get(i).copied().unwrap_or_else(T::one);

    for s in (0..shape.steps).rev() {
        rec.iter_mut().for_each(|v| *v = T::zero());
        for (b, &len) in lengths.iter().enumerate() {
            let Some(t) = shape.time_at(s, len) else {
                continue;
            };
            let row = shape.row(t, b);
            let a = &saved.act[row * aw..][..aw];
            // GRU interpolates with the unmasked state.
            let hp = if saved.hraw.is_empty() {
                &saved.hprev[row * h..][..h]
            } else {
                &saved.hraw[row * h..][..h]
            };
            let cprev_row = prev_row(shape, s, b, len);
            for k in 0..h {
                let dyv = dy.map_or(T::zero(), |d| {
                    d[row * shape.out_stride + shape.out_offset + k]
                });
                let dht = dh[b * h + k] + dyv;
                let g = &mut dxw[row * gw..][..gw];
                match cell {
                    CellKind::RnnTanh => {
                        let v = a[k];
                        g[k] = dht * (T::one() - v * v);
                        dh[b * h + k] = T::zero();
                    }
                    CellKind::RnnRelu => {
                        g[k] = if a[k] > T::zero() { dht } else { T::zero() };
                        dh[b * h + k] = T::zero();
                    }
                    CellKind::Lstm => {
                        let (ig, fg, gg, og) = (a[k], a[h + k], a[2 * h + k], a[3 * h + k]);
                        let c = saved.cell[row * h + k];
                        let cp = match cprev_row {
                            Some(r) => saved.cell[r * h + k],
                            None => saved.c0[b * h + k],
                        };
                        let tc = c.tanh_act();
                        let dct = dc[b * h + k] + dht * og * (T::one() - tc * tc);
                        g[k] = dct * gg * ig * (T::one() - ig);
                        g[h + k] = dct * cp * fg * (T::one() - fg);
                        g[2 * h + k] = dct * ig * (T::one() - gg * gg);
                        g[3 * h + k] = dht * tc * og * (T::one() - og);
                        dc[b * h + k] = dct * fg;
                        dh[b * h + k] = T::zero();
                    }
                    CellKind::Gru => {
                        let (r, z, n, hnk) = (a[k], a[h + k], a[2 * h + k], a[3 * h + k]);
                        let dnp = dht * (T::one() - z) * (T::one() - n * n);
                        let drp = dnp * hnk * r * (T::one() - r);
                        let dzp = dht * (hp[k] - n) * z * (T::one() - z);
                        g[k] = drp;
                        g[h + k] = dzp;
                        g[2 * h + k] = dnp;
                        let gh = &mut dhw[row * gw..][..gw];
                        gh[k] = drp;
                        gh[h + k] = dzp;
                        gh[2 * h + k] = dnp * r;
                        dh[b * h + k] = dht * z;
                    }
                    CellKind::GruResetBefore => {
                        let (z, n) = (a[h + k], a[2 * h + k]);
                        let dnp = dht * (T::one() - z) * (T::one() - n * n);
                        g[h + k] = dht * (hp[k] - n) * z * (T::one() - z);
                        g[2 * h + k] = dnp;
                        dn_pre[b * h + k] = dnp;
                        dh[b * h + k] = dht * z;
                    }
                }
            }
            if cell == CellKind::GruResetBefore {
                continue;
            }
            let src = if separate_dhw { &dhw } else { &dxw };
            rec[b * gw..][..gw].copy_from_slice(&src[row * gw..][..gw]);
        }
        if cell == CellKind::GruResetBefore {
            // Phase two: d(r * h) = dn_pre W_hn needs every unit's dn_pre.
            for (b, &len) in lengths.iter().enumerate() {
                if shape.time_at(s, len).is_none() {
                    dn_pre[b * h..][..h].iter_mut().for_each(|v| *v = T::zero());
                }
            }
            gemm(
                &Gemm::new(bsz, h, h).offsets(0, 2 * h * h, 0),
                &dn_pre,
                w.w_hh,
                None,
                &mut drh,
            )?;
            for (b, &len) in lengths.iter().enumerate() {
                let Some(t) = shape.time_at(s, len) else {
                    continue;
                };
                let row = shape.row(t, b);
                let a = &saved.act[row * aw..][..aw];
                let hp = &saved.hprev[row * h..][..h];
                for k in 0..h {
                    let r = a[k];
                    let d = drh[b * h + k];
                    dxw[row * gw + k] = d * hp[k] * r * (T::one() - r);
                    dh[b * h + k] = dh[b * h + k] + d * r * mask_at(b * h + k);
                }
                // Only r and z reach h through W_hh directly; n reached it through r * h.
                rec[b * gw..][..2 * h].copy_from_slice(&dxw[row * gw..][..2 * h]);
            }
        }
        // dh (carry into the previous step) += (rec W_hh) * mask; rows of inactive entries
        // are zero.
        gemm(&Gemm::new(bsz, h, gw), &rec, w.w_hh, None, &mut through_w)?;
        for (i, (d, &v)) in dh.iter_mut().zip(&through_w).enumerate() {
            *d = *d + v * mask_at(i);
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
    let db_hh = colsum(dhw_ref);
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
