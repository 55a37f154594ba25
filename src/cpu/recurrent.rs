//! CPU twin of `shaders/recurrent.wgsl`: one recurrent layer in one direction, forward and
//! backward through time, with the layout and semantics of [`crate::ops::recurrent`].
//!
//! The schedule is the GPU's: the input projections of all steps in one GEMM, one recurrent
//! product plus the gate work per step, and the weight gradients as GEMMs over all steps.
//! Within a step the hidden units are split among the threads (see [`super::step_parts`]):
//! each thread multiplies its units' gates and then does their gate work, so a step is one
//! parallel section (GRU reset-before: two), and the loop over steps runs on the pool.
//!
//! [`infer`] (no backward to follow) differs in one place: it keeps no activations, so each
//! thread projects its units' inputs a block of steps at a time, just before the block runs,
//! instead of all steps up front (see `run`). [`infer_prepared`] is [`infer`] over weights
//! prepared once for many passes ([`InferWeights`]).

use std::ops::Range;

use crate::error::{ensure, Result};

use super::activation::Activation;
use super::packed_gemm::PackedOperands;
use super::step_parts::{for_each_part, on_pool, transpose_rows_into, unit_parts, Shared};
use super::{gemm, Real};
use crate::ops::recurrent::{CellKind, RecurrentShape};
use crate::ops::Gemm;

/// A layer-direction's parameters, PyTorch shapes: `w_ih` `[G*H, I]`, `w_hh` `[G*H, H]`,
/// biases `[G*H]` (absent means zero).
#[derive(Clone, Copy)]
pub struct Weights<'a, T> {
    /// Input weights `[G*H, I]`.
    pub w_ih: &'a [T],
    /// Recurrent weights `[G*H, H]`.
    pub w_hh: &'a [T],
    /// Input bias `[G*H]`, if any.
    pub b_ih: Option<&'a [T]>,
    /// Recurrent bias `[G*H]`, if any.
    pub b_hh: Option<&'a [T]>,
}

/// What the forward pass keeps for backward.
#[derive(Clone, Debug)]
pub struct Saved<T> {
    /// Valid steps per batch entry (all `T` when the caller gave none).
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
    /// The initial hidden state `[B, H]` (zeros when the caller gave none).
    pub h0: Vec<T>,
    /// LSTM: the initial cell state `[B, H]` (empty otherwise).
    pub c0: Vec<T>,
}

/// Final states of a forward pass, [B, H] each (`c_n` empty except for LSTM).
#[derive(Clone, Debug)]
pub struct FinalState<T> {
    /// The final hidden state of each batch entry, at its last valid step.
    pub h_n: Vec<T>,
    /// LSTM: the final cell state (empty otherwise).
    pub c_n: Vec<T>,
}

/// Gradients of one layer-direction.
#[derive(Clone, Debug)]
pub struct Grads<T> {
    /// Gradient of the input `x`, `[rows, I]`.
    pub dx: Vec<T>,
    /// Gradient of the initial hidden state, `[B, H]`.
    pub dh0: Vec<T>,
    /// LSTM: gradient of the initial cell state, `[B, H]` (empty otherwise).
    pub dc0: Vec<T>,
    /// Gradient of `W_ih`, `[G*H, I]`.
    pub dw_ih: Vec<T>,
    /// Gradient of `W_hh`, `[G*H, H]`.
    pub dw_hh: Vec<T>,
    /// Gradient of `b_ih`, `[G*H]` (computed whether or not the layer has the bias).
    pub db_ih: Vec<T>,
    /// Gradient of `b_hh`, `[G*H]` (computed whether or not the layer has the bias).
    pub db_hh: Vec<T>,
}

fn check_len(what: &str, have: usize, want: usize) -> Result<()> {
    ensure!(
        have == want,
        Shape,
        "{what} has {have} elements, expected {want}"
    );
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

/// One part's weights in the layouts its products read (see [`super::step_parts`]): made
/// once per pass, or once for many inference passes ([`InferWeights`]).
struct PartWeights<T> {
    units: Range<usize>,
    /// `W_hh`'s rows of this part's units, transposed: [H, G * units], the gates one after
    /// another. In this layout the `gemm` crate's kernel reads the weights in place; given
    /// `W_hh` itself it repacked all of it at every step, which took longer than the products.
    w_hh_t: Vec<T>,
    /// Packed copies of `w_hh_t`'s blocks for the products of every step, and of `w_ih_t`
    /// for inference's projections (see [`super::packed_gemm`]), each made on first use.
    packed_hh: PackedOperands,
    packed_ih: PackedOperands,
    /// `b_ih` and `b_hh` of the same rows, [G * units] each (zero without a bias).
    b_ih: Vec<T>,
    b_hh: Vec<T>,
    /// Inference: `W_ih`'s rows of this part's units, transposed as `w_hh_t`: [I, G * units].
    w_ih_t: Vec<T>,
}

impl<T: Real> PartWeights<T> {
    /// The part of `units`; `infer` keeps `W_ih` too, for inference's block projections.
    fn new(units: Range<usize>, shape: &RecurrentShape, w: &Weights<T>, infer: bool) -> Self {
        let (cell, h, i) = (shape.cell, shape.hidden, shape.input);
        let (g, nu, k0) = (cell.gates(), units.len(), units.start);
        // Gate g's rows of the part's units of `weights` ([G*H, cols]) as columns.
        let own_columns = |weights: &[T], cols: usize| {
            let mut t = vec![T::zero(); cols * g * nu];
            for gate in 0..g {
                let rows = &weights[(gate * h + k0) * cols..][..nu * cols];
                transpose_rows_into(rows, nu, cols, &mut t[gate * nu..], g * nu);
            }
            t
        };
        let own_bias = |bias: Option<&[T]>| match bias {
            Some(b) => (0..g)
                .flat_map(|gate| b[gate * h + k0..][..nu].iter().copied())
                .collect(),
            None => vec![T::zero(); g * nu],
        };
        Self {
            w_hh_t: own_columns(w.w_hh, h),
            w_ih_t: if infer {
                own_columns(w.w_ih, i)
            } else {
                Vec::new()
            },
            packed_hh: PackedOperands::new(),
            packed_ih: PackedOperands::new(),
            b_ih: own_bias(w.b_ih),
            b_hh: own_bias(w.b_hh),
            units,
        }
    }
}

/// A layer-direction's weights prepared for [`infer_prepared`]: split among the threads,
/// transposed and packed once for every pass that uses them. [`infer`] prepares them at each
/// call, which costs as much as the products of a few steps: for one step at a time (a
/// language model sampling one character per pass) it was nearly all the time.
pub struct InferWeights<T> {
    /// The shape the weights were prepared for; passes may differ in steps, direction and
    /// layout, not in cell, sizes or batch (the batch decides the split among threads).
    shape: RecurrentShape,
    /// Elements of `W_ih`, `W_hh` and the biases they were made from.
    lens: (usize, usize, Option<usize>, Option<usize>),
    parts: Vec<PartWeights<T>>,
}

impl<T: Real> InferWeights<T> {
    /// Prepares `w` for inference passes of `shape`'s cell, sizes and batch.
    pub fn new(shape: &RecurrentShape, w: &Weights<T>) -> Result<Self> {
        let (gw, i) = (shape.gate_width(), shape.input);
        // Sizes only: the input and output are the passes'.
        shape.check_buffers(
            shape.rows() * i,
            shape.rows() * shape.out_stride,
            w.w_ih.len(),
            w.w_hh.len(),
            w.b_ih.map(|b| b.len()),
            w.b_hh.map(|b| b.len()),
        )?;
        let parts = unit_parts(shape.batch, gw, shape.hidden)
            .into_iter()
            .map(|units| PartWeights::new(units, shape, w, true))
            .collect();
        Ok(Self {
            shape: *shape,
            lens: (
                w.w_ih.len(),
                w.w_hh.len(),
                w.b_ih.map(|b| b.len()),
                w.b_hh.map(|b| b.len()),
            ),
            parts,
        })
    }

    /// Bytes held: the transposed copies, the biases and the packed copies made so far.
    pub fn bytes(&self) -> u64 {
        let size = std::mem::size_of::<T>();
        self.parts
            .iter()
            .map(|p| {
                let own = p.w_hh_t.len() + p.w_ih_t.len() + p.b_ih.len() + p.b_hh.len();
                (own * size + p.packed_hh.bytes() + p.packed_ih.bytes()) as u64
            })
            .sum()
    }

    /// Whether a pass of `shape` may use these weights (same cell, sizes and batch).
    pub fn fits(&self, shape: &RecurrentShape) -> bool {
        let key = |s: &RecurrentShape| (s.cell, s.input, s.hidden, s.batch);
        key(&self.shape) == key(shape)
    }
}

/// The weights a forward pass reads: as given, or prepared for inference.
enum PassWeights<'a, T> {
    Given(&'a Weights<'a, T>),
    Prepared(&'a mut InferWeights<T>),
}

/// One part's share of a forward pass: its weights and the state it carries.
struct ForwardPart<'w, T> {
    units: Range<usize>,
    w: &'w mut PartWeights<T>,
    /// This step's recurrent products of the part's gates, [B, G * units]. GRU reset-before
    /// holds `W_hn (r * h) + b_hn` in its last `units` columns.
    products: Vec<T>,
    /// The part's units of the state, [B, units], and of the LSTM cell state.
    h: Vec<T>,
    c: Vec<T>,
    /// Where the LSTM's cell state goes instead of the saved one in inference, [units].
    c_scratch: Vec<T>,
    /// Inference: the input projections, then activations, of a block of steps for the
    /// part's units, [block * B, A * units] (gate g of unit k at column g * units + k).
    block: Vec<T>,
}

impl<'w, T: Real> ForwardPart<'w, T> {
    /// The part that `w` holds the weights of; `block` is inference's steps per block of
    /// input projections.
    fn new(
        w: &'w mut PartWeights<T>,
        shape: &RecurrentShape,
        h0: &[T],
        c0: &[T],
        block: Option<usize>,
    ) -> Self {
        let (cell, bsz, h) = (shape.cell, shape.batch, shape.hidden);
        let units = w.units.clone();
        let (g, nu, k0) = (cell.gates(), units.len(), units.start);
        let own = |v: &[T]| -> Vec<T> {
            if v.is_empty() {
                return Vec::new();
            }
            (0..bsz)
                .flat_map(|b| v[b * h + k0..][..nu].iter().copied())
                .collect()
        };
        Self {
            products: vec![T::zero(); bsz * g * nu],
            h: own(h0),
            c: own(c0),
            c_scratch: vec![T::zero(); nu],
            block: match block {
                Some(n) => vec![T::zero(); n * bsz * cell.act_width() * nu],
                None => Vec::new(),
            },
            units,
            w,
        }
    }

    /// `products = lhs w_hh_t` as `spec` places it (the gate work adds `b_hh`).
    fn multiply(&mut self, spec: &Gemm, lhs: &[T]) -> Result<()> {
        self.w
            .packed_hh
            .gemm(spec, lhs, &self.w.w_hh_t, &mut self.products)
    }

    /// Inference: the input projections of a block's rows `xs` ([rows, I], from
    /// [`block_inputs`]) for the part's units, into `block` (the gate work adds `b_ih`).
    fn project(&mut self, xs: &[T], cell: CellKind) -> Result<()> {
        let (gnu, nu) = (self.w.b_ih.len(), self.units.len());
        let i = self.w.w_ih_t.len() / gnu;
        let spec = Gemm::new(xs.len() / i, gnu, i).leading_dims(i, gnu, cell.act_width() * nu);
        self.w
            .packed_ih
            .gemm(&spec, xs, &self.w.w_ih_t, &mut self.block)
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
    run(
        shape,
        x,
        lengths,
        h0,
        c0,
        PassWeights::Given(w),
        rmask,
        y,
        true,
    )
}

/// [`forward`] for inference: the same outputs and final states, without keeping what
/// backward needs (the state entering each step and the LSTM's cell states are not written
/// out), as PyTorch's forward under `no_grad`.
pub fn infer<T: Real>(
    shape: &RecurrentShape,
    x: &[T],
    lengths: Option<&[usize]>,
    h0: Option<&[T]>,
    c0: Option<&[T]>,
    w: &Weights<T>,
    y: &mut [T],
) -> Result<FinalState<T>> {
    Ok(run(
        shape,
        x,
        lengths,
        h0,
        c0,
        PassWeights::Given(w),
        None,
        y,
        false,
    )?
    .0)
}

/// [`infer`] with weights prepared once for many passes ([`InferWeights::new`] from the
/// layer-direction's weights). `prepared` must fit `shape` ([`InferWeights::fits`]). It is a
/// copy: after the weights change, prepare them again (the CPU executor does so whenever a
/// parameter is written).
pub fn infer_prepared<T: Real>(
    shape: &RecurrentShape,
    x: &[T],
    lengths: Option<&[usize]>,
    h0: Option<&[T]>,
    c0: Option<&[T]>,
    prepared: &mut InferWeights<T>,
    y: &mut [T],
) -> Result<FinalState<T>> {
    ensure!(
        prepared.fits(shape),
        Shape,
        "weights prepared for {:?} with I = {}, H = {}, B = {} given a pass of {:?} with \
         I = {}, H = {}, B = {}",
        prepared.shape.cell,
        prepared.shape.input,
        prepared.shape.hidden,
        prepared.shape.batch,
        shape.cell,
        shape.input,
        shape.hidden,
        shape.batch
    );
    let weights = PassWeights::Prepared(prepared);
    Ok(run(shape, x, lengths, h0, c0, weights, None, y, false)?.0)
}

/// [`forward`], keeping what backward needs where `save` (else `Saved`'s per-step buffers
/// are empty).
#[allow(clippy::too_many_arguments)]
fn run<T: Real>(
    shape: &RecurrentShape,
    x: &[T],
    lengths: Option<&[usize]>,
    h0: Option<&[T]>,
    c0: Option<&[T]>,
    mut weights: PassWeights<'_, T>,
    rmask: Option<&[T]>,
    y: &mut [T],
    save: bool,
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
    let (w_ih, w_hh, b_ih, b_hh) = match &weights {
        PassWeights::Given(w) => (
            w.w_ih.len(),
            w.w_hh.len(),
            w.b_ih.map(|b| b.len()),
            w.b_hh.map(|b| b.len()),
        ),
        PassWeights::Prepared(p) => p.lens,
    };
    shape.check_buffers(x.len(), y.len(), w_ih, w_hh, b_ih, b_hh)?;
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

    // Input projections xw = x W_ih^T, written where the activations go: gate g of unit k at
    // column g * H + k of `act`'s rows (act's width is at least the gates'). Each step's gate
    // work reads a gate's input projection, adds `b_ih` (as `(xw + b_ih) + (hW + b_hh)`, the
    // GPU's order of additions) and writes its activation in the same place, so no separate
    // [rows, G*H] buffer is made and read back from memory, and no pass over all of it adds
    // the bias. Training projects all steps in one product, as the GPU does, and keeps the
    // activations for backward. Inference keeps none: each part projects its own units for
    // a block of steps into a buffer of its own just before the block runs (one product per
    // block and part, `ForwardPart::project`). Projected all at once, a step's rows were
    // evicted from the caches long before the step ran, and the gate work spent most of its
    // time waiting on memory.
    let block = (!save).then(|| infer_block(shape, aw * std::mem::size_of::<T>()));
    let mut act = if save {
        vec![T::zero(); rows * aw]
    } else {
        Vec::new()
    };
    let mut block_x = Vec::new();
    if save {
        let PassWeights::Given(w) = &weights else {
            crate::error::bail!(
                Invalid,
                "a forward that keeps activations given prepared weights"
            );
        };
        gemm(
            &Gemm::new(rows, gw, i).trans_b(true).leading_dims(i, i, aw),
            x,
            w.w_ih,
            None,
            &mut act,
        )?;
    }

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
    let per_step = |keep: bool| {
        if save && keep {
            vec![T::zero(); rows * h]
        } else {
            Vec::new()
        }
    };
    let mut hraw = per_step(rmask.is_some());
    let mut hprev = per_step(true);
    let mut cell_after = per_step(cell.has_cell_state());
    // GRU reset-before: r * h, which the n gate's product needs for every unit.
    let mut rh = if cell == CellKind::GruResetBefore {
        vec![T::zero(); bsz * h]
    } else {
        Vec::new()
    };

    let mut own_weights;
    let part_weights = match &mut weights {
        PassWeights::Given(w) => {
            own_weights = unit_parts(bsz, gw, h)
                .into_iter()
                .map(|units| PartWeights::new(units, shape, w, !save))
                .collect::<Vec<_>>();
            &mut own_weights[..]
        }
        PassWeights::Prepared(p) => &mut p.parts[..],
    };
    let mut parts: Vec<ForwardPart<T>> = part_weights
        .iter_mut()
        .map(|pw| ForwardPart::new(pw, shape, &h0, &c0, block))
        .collect();

    on_pool(parts.len(), || -> Result<()> {
        for s in 0..shape.steps {
            // Inference, at the start of a block: the rows its projections read, which each
            // part projects in the step's first parallel section.
            let xs = match block.filter(|n| s % n == 0) {
                Some(n) => {
                    let steps = s..(s + n).min(shape.steps);
                    Some(block_inputs(shape, &lengths, x, steps, &mut block_x))
                }
                None => None,
            };
            let project = |part: &mut ForwardPart<T>| match xs {
                Some(xs) => part.project(xs, cell),
                None => Ok(()),
            };
            if cell == CellKind::GruResetBefore {
                // Phase one: r and z, then r * h, whose product with W_hn needs every unit.
                let (hm_now, act_now, rh_out) = (&hm, &act, Shared::new(&mut rh));
                for_each_part(&mut parts, |part| {
                    project(part)?;
                    let nu = part.units.len();
                    let spec = Gemm::new(bsz, 2 * nu, h).leading_dims(h, 3 * nu, 3 * nu);
                    part.multiply(&spec, hm_now)?;
                    reset_gate_work(shape, &lengths, s, block, act_now, hm_now, &rh_out, part);
                    Ok(())
                })?;
            }
            let step = ForwardStep {
                shape,
                lengths: &lengths,
                step: s,
                save,
                block,
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
                    project(part)?;
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

/// The size of an inference block of input projections (all parts together): about an L2
/// cache, so that a step's rows are still cached when it runs.
const INFER_BLOCK_BYTES: usize = 1 << 20;

/// The fewest steps in an inference block: each block's product reads all of `W_ih`, which
/// at large sizes (1024 x 1024 and more) is the product's main cost; blocks of one step ran
/// 15% slower than one product over all steps at 1024 x 64 x 100, blocks of four 7% faster.
const INFER_BLOCK_MIN_STEPS: usize = 4;

/// Inference: the steps projected at a time (see [`run`]).
fn infer_block(shape: &RecurrentShape, row_bytes: usize) -> usize {
    (INFER_BLOCK_BYTES / (shape.batch * row_bytes).max(1))
        .max(INFER_BLOCK_MIN_STEPS)
        .clamp(1, shape.steps.max(1))
}

/// Inference: the rows of `x` that the steps `steps` read, in the order the block's
/// projections are laid out (row `(s - steps.start) * B + b`). Time-major and forward in
/// time they are a run of `x` already; otherwise they are gathered into `block_x`. Rows of
/// steps past a sequence's length are left as they are: no step reads their projections.
fn block_inputs<'a, T: Real>(
    shape: &RecurrentShape,
    lengths: &[usize],
    x: &'a [T],
    steps: Range<usize>,
    block_x: &'a mut Vec<T>,
) -> &'a [T] {
    let (bsz, i) = (shape.batch, shape.input);
    let m = steps.len() * bsz;
    if !shape.reverse && !shape.batch_first {
        return &x[steps.start * bsz * i..][..m * i];
    }
    block_x.resize(m * i, T::zero());
    for s in steps.clone() {
        for (b, &len) in lengths.iter().enumerate() {
            if let Some(t) = shape.time_at(s, len) {
                let at = ((s - steps.start) * bsz + b) * i;
                block_x[at..at + i].copy_from_slice(&x[shape.row(t, b) * i..][..i]);
            }
        }
    }
    block_x
}

/// What the parts of one forward step read, and the buffers they write, each in its own
/// units' columns. `act` holds the input projections of the step's rows on entry.
struct ForwardStep<'a, T> {
    shape: &'a RecurrentShape,
    lengths: &'a [usize],
    step: usize,
    /// Whether to write what backward needs (`hprev`, `hraw`, `cell`).
    save: bool,
    /// Inference: the steps per block of input projections, which are then in the parts'
    /// `block` buffers instead of `act`.
    block: Option<usize>,
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

with_simd!(fn gate_work = gate_work_generic<T>(step: &ForwardStep<'_, T>, part: &mut ForwardPart<T>));

/// The gate work of a forward step for one part, after its recurrent products.
#[inline(always)]
fn gate_work_generic<T: Real, const FUSED: bool>(
    step: &ForwardStep<'_, T>,
    part: &mut ForwardPart<T>,
) {
    let shape = step.shape;
    let (cell, h, g) = (shape.cell, shape.hidden, shape.cell.gates());
    let aw = cell.act_width() * h;
    let (nu, k0) = (part.units.len(), part.units.start);
    let (pw, aw_part) = (g * nu, cell.act_width() * nu);
    let block_rows = Shared::new(&mut part.block);
    for (b, &len) in step.lengths.iter().enumerate() {
        let hs = &mut part.h[b * nu..][..nu];
        if let Some(t) = shape.time_at(step.step, len) {
            let row = shape.row(t, b);
            // SAFETY (every `slice` below): each part writes only its own units' columns, and
            // no slice outlives this iteration.
            if step.save {
                unsafe {
                    step.hprev
                        .slice(row * h + k0, nu)
                        .copy_from_slice(&step.hm[b * h + k0..][..nu]);
                    if step.rmask.is_some() {
                        step.hraw.slice(row * h + k0, nu).copy_from_slice(hs);
                    }
                }
            }
            let pr = &part.products[b * pw..][..pw];
            let gate_in = |gate: usize| {
                if gate < g {
                    GateInputs {
                        rec: &pr[gate * nu..][..nu],
                        input_bias: &part.w.b_ih[gate * nu..][..nu],
                        bias: &part.w.b_hh[gate * nu..][..nu],
                    }
                } else {
                    GateInputs {
                        rec: &[],
                        input_bias: &[],
                        bias: &[],
                    }
                }
            };
            let act_at = |j: usize| -> &mut [T] {
                if j >= cell.act_width() {
                    &mut []
                } else if let Some(n) = step.block {
                    let at = ((step.step % n) * step.shape.batch + b) * aw_part + j * nu;
                    unsafe { block_rows.slice(at, nu) }
                } else {
                    unsafe { step.act.slice(row * aw + j * h + k0, nu) }
                }
            };
            let (cs, c_saved): (&mut [T], &mut [T]) = match (cell.has_cell_state(), step.save) {
                (true, true) => (&mut part.c[b * nu..][..nu], unsafe {
                    step.cell.slice(row * h + k0, nu)
                }),
                (true, false) => (&mut part.c[b * nu..][..nu], &mut part.c_scratch),
                (false, _) => (&mut [], &mut []),
            };
            let rh = if cell == CellKind::GruResetBefore {
                &step.rh[b * h + k0..][..nu]
            } else {
                &[][..]
            };
            cell_step::<T, FUSED>(
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

with_simd!(fn reset_gate_work = reset_gate_work_generic<T>(
    shape: &RecurrentShape,
    lengths: &[usize],
    s: usize,
    block: Option<usize>,
    act: &[T],
    hm: &[T],
    rh: &Shared<'_, T>,
    part: &mut ForwardPart<T>,
));

/// GRU reset-before, phase one of a forward step for one part: `r * h` of its units from
/// the r gate's input projections (still in `act`) and products.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn reset_gate_work_generic<T: Real, const FUSED: bool>(
    shape: &RecurrentShape,
    lengths: &[usize],
    s: usize,
    block: Option<usize>,
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
        let xr = match block {
            Some(n) => {
                let aw_part = shape.cell.act_width() * nu;
                &part.block[((s % n) * shape.batch + b) * aw_part..][..nu]
            }
            None => &act[shape.row(t, b) * aw + k0..][..nu],
        };
        let pr = &part.products[b * 3 * nu..][..nu];
        let (bir, br) = (&part.w.b_ih[..nu], &part.w.b_hh[..nu]);
        let hv = &hm[b * h + k0..][..nu];
        // SAFETY: each part writes only its own units' columns.
        let out = unsafe { rh.slice(b * h + k0, nu) };
        for k in 0..nu {
            out[k] = Activation::sigmoid::<FUSED>((xr[k] + bir[k]) + (pr[k] + br[k])) * hv[k];
        }
    }
}

/// One step of one batch entry over a run of hidden units: from each gate's input
/// projections without bias (in `act[g]` on entry), biases and recurrent products
/// (`gates[g]`, empty past the cell's gates), the activations saved in `act[j]`, the new state `hs` (and
/// `cs`, the LSTM's cell state, also saved in `c_saved`). GRU reset-before has `W_hn (r * h)`
/// as the n gate's product and passes `r * h` as `rh`. Short passes over equal-length slices,
/// so that the f32 path vectorizes without running out of registers.
#[inline(always)]
fn cell_step<T: Real, const FUSED: bool>(
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
    // a = f((x W_ih + b_ih) + (h W_hh + b_hh)) in place of x W_ih, the same order of
    // additions as the GPU kernels.
    let activate = |a: &mut [T], gate: &GateInputs<'_, T>, f: fn(T) -> T| {
        let (a, bi) = (&mut a[..n], &gate.input_bias[..n]);
        let (r, b) = (&gate.rec[..n], &gate.bias[..n]);
        for k in 0..n {
            a[k] = f((a[k] + bi[k]) + (r[k] + b[k]));
        }
    };
    match cell {
        CellKind::RnnTanh => {
            activate(a0, &gates[0], T::tanh_act::<FUSED>);
            hs.copy_from_slice(&a0[..n]);
        }
        CellKind::RnnRelu => {
            activate(a0, &gates[0], |v| v.max(T::zero()));
            hs.copy_from_slice(&a0[..n]);
        }
        CellKind::Lstm => {
            activate(a0, &gates[0], T::sigmoid::<FUSED>);
            activate(a1, &gates[1], T::sigmoid::<FUSED>);
            activate(a2, &gates[2], T::tanh_act::<FUSED>);
            activate(a3, &gates[3], T::sigmoid::<FUSED>);
            let (ai, af, ag, ao) = (&a0[..n], &a1[..n], &a2[..n], &a3[..n]);
            let (cs, c_saved) = (&mut cs[..n], &mut c_saved[..n]);
            for k in 0..n {
                let c = af[k] * cs[k] + ai[k] * ag[k];
                cs[k] = c;
                c_saved[k] = c;
                hs[k] = ao[k] * c.tanh_act::<FUSED>();
            }
        }
        CellKind::Gru | CellKind::GruResetBefore => {
            activate(a0, &gates[0], T::sigmoid::<FUSED>);
            activate(a1, &gates[1], T::sigmoid::<FUSED>);
            let (ar, az, an, tail) = (&a0[..n], &a1[..n], &mut a2[..n], &mut a3[..n]);
            let (rn, bn) = (&gates[2].rec[..n], &gates[2].bias[..n]);
            let bin = &gates[2].input_bias[..n];
            if cell == CellKind::Gru {
                // n = tanh(W_in x + b_in + r * (W_hn h + b_hn)); W_hn h + b_hn is saved.
                for k in 0..n {
                    let hn = rn[k] + bn[k];
                    an[k] = ((an[k] + bin[k]) + ar[k] * hn).tanh_act::<FUSED>();
                    tail[k] = hn;
                }
            } else {
                // n = tanh(W_in x + b_in + W_hn (r * h) + b_hn); r * h is saved.
                let rh = &rh[..n];
                for k in 0..n {
                    an[k] = ((an[k] + bin[k]) + (rn[k] + bn[k])).tanh_act::<FUSED>();
                    tail[k] = rh[k];
                }
            }
            for k in 0..n {
                hs[k] = (one - az[k]) * an[k] + az[k] * hs[k];
            }
        }
    }
}

/// One gate's inputs to [`cell_step`] over a run of units besides its input projection:
/// `b_ih`, the recurrent products and `b_hh`.
struct GateInputs<'a, T> {
    rec: &'a [T],
    input_bias: &'a [T],
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
    /// Packed copies of the part's columns of `W_hh` for the products of every step (see
    /// [`super::packed_gemm`]).
    packed: PackedOperands,
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
            packed: PackedOperands::new(),
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
        self.packed.gemm(&spec, rec, w_hh, &mut self.through_w)?;
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

with_simd!(fn backward_gate_work = backward_gate_work_generic<T>(
    step: &BackwardStep<'_, T>,
    part: &mut BackwardPart<T>,
));

/// The gate gradients of one backward step for one part, from the gradient reaching its
/// units of the state.
#[inline(always)]
fn backward_gate_work_generic<T: Real, const FUSED: bool>(
    step: &BackwardStep<'_, T>,
    part: &mut BackwardPart<T>,
) {
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
                    let tc = c[k].tanh_act::<FUSED>();
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

with_simd!(fn reset_backward_work = reset_backward_work_generic<T>(
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
fn reset_backward_work_generic<T: Real, const FUSED: bool>(
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
                    part.packed
                        .gemm(&spec, dn_now, w.w_hh, &mut part.through_w)?;
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
