//! Checks shared by both executors: a program's op sizes when it is loaded, and u32 inputs
//! (ids, lengths, class targets) when they are written, so both reject the same programs
//! and the same data with the same errors.

use std::collections::BTreeMap;

use crate::error::{bail, ensure, err, Result, ResultExt};

use crate::ops::embedding::Embedding;
use crate::ops::loss::{validate_mse, CrossEntropy};
use crate::ops::program::{DType, Kind, Op, Program, TensorDecl, TensorId, STATE_REGIONS};

/// Element count of a tensor's shape, or an error naming it when the count overflows.
pub(crate) fn elements(label: &str, shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            err!(
                Limit,
                "tensor {label} of shape {shape:?} has more elements than can be counted"
            )
        })
}

/// A zeroed vector of `n` elements, or an error naming the tensor when the memory is not
/// there (never an abort).
pub(crate) fn zeroed<T: Clone + Default>(label: &str, n: usize) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        err!(
            Limit,
            "tensor {label} needs {} bytes of memory, which could not be allocated",
            n as u128 * std::mem::size_of::<T>() as u128
        )
    })?;
    v.resize(n, T::default());
    Ok(v)
}

/// How a u32 tensor's data is checked when written.
#[derive(Clone, Copy, Debug)]
pub(crate) enum U32Check {
    Ids(Embedding),
    Lengths { steps: usize },
    Targets(CrossEntropy),
    None,
}

/// The check of every u32 tensor of a program, from its kind and the ops that read it.
pub(crate) fn u32_checks(program: &Program) -> BTreeMap<TensorId, U32Check> {
    let mut out = BTreeMap::new();
    for (i, t) in program.tensors().iter().enumerate() {
        if t.dtype != DType::U32 {
            continue;
        }
        let check = match &t.kind {
            Kind::Ids(spec) => U32Check::Ids(*spec),
            _ => U32Check::None,
        };
        out.insert(TensorId(i), check);
    }
    for op in program.ops() {
        match op {
            Op::RecurrentForward(f) => {
                if let Some(l) = f.lengths {
                    out.insert(
                        l,
                        U32Check::Lengths {
                            steps: f.shape.steps,
                        },
                    );
                }
            }
            Op::CrossEntropy { spec, targets, .. } => {
                out.insert(*targets, U32Check::Targets(*spec));
            }
            _ => {}
        }
    }
    out
}

/// Checks u32 data for a tensor before it is written.
pub(crate) fn check_u32(decl: &TensorDecl, check: U32Check, data: &[u32]) -> Result<()> {
    ensure!(
        data.len() == decl.len(),
        Shape,
        "{} takes {} values, got {}",
        decl.label,
        decl.len(),
        data.len()
    );
    match check {
        U32Check::Ids(spec) => spec.validate_ids(data).with_context(|| decl.label.clone()),
        U32Check::Lengths { steps } => {
            if let Some((b, &len)) = data
                .iter()
                .enumerate()
                .find(|(_, &l)| l == 0 || l as usize > steps)
            {
                bail!(
                    Shape,
                    "{}[{b}] = {len} is outside 1..={steps} (a sequence needs at least one step \
                     and at most {steps})",
                    decl.label
                );
            }
            Ok(())
        }
        U32Check::Targets(spec) => spec.validate_targets(data).map(|_| ()),
        U32Check::None => Ok(()),
    }
}

/// Checks every op's tensors: element types and sizes.
pub(crate) fn check(program: &Program) -> Result<()> {
    for (i, t) in program.tensors().iter().enumerate() {
        elements(&t.label, &t.shape).with_context(|| format!("tensor {i}"))?;
    }
    for (i, op) in program.ops().iter().enumerate() {
        check_op(program, op).with_context(|| format!("op {i} of the program ({})", name(op)))?;
    }
    Ok(())
}

/// The op's name in errors.
pub(crate) fn name(op: &Op) -> &'static str {
    match op {
        Op::Gemm { .. } => "gemm",
        Op::RecurrentForward(_) => "recurrent forward",
        Op::RecurrentBackward(_) => "recurrent backward",
        Op::Merge { .. } => "merge",
        Op::MergeBackward { .. } => "merge backward",
        Op::DropoutMask { .. } => "dropout mask",
        Op::RowMask { .. } => "row mask",
        Op::Gather { .. } => "gather",
        Op::ScatterAdd { .. } => "scatter-add",
        Op::CrossEntropy { .. } => "cross-entropy",
        Op::Mse { .. } => "mean squared error",
        Op::Copy { .. } => "copy",
        Op::Zero { .. } => "zero",
        Op::Optimize { .. } => "optimizer step",
    }
}

fn check_op(program: &Program, op: &Op) -> Result<()> {
    let len = |t: TensorId| program.tensor(t).len();
    let float = |ts: &[TensorId]| -> Result<()> {
        for &t in ts {
            let d = program.tensor(t);
            ensure!(
                d.dtype == DType::Float,
                Shape,
                "{} must hold float values",
                d.label
            );
        }
        Ok(())
    };
    let u32s = |t: TensorId| -> Result<()> {
        let d = program.tensor(t);
        ensure!(
            d.dtype == DType::U32,
            Shape,
            "{} must hold u32 values",
            d.label
        );
        Ok(())
    };
    let distinct = |ts: &[TensorId]| -> Result<()> {
        for (i, a) in ts.iter().enumerate() {
            for b in &ts[i + 1..] {
                ensure!(
                    a != b,
                    Invalid,
                    "{} appears twice where distinct tensors are needed",
                    program.tensor(*a).label
                );
            }
        }
        Ok(())
    };
    match op {
        Op::Gemm {
            spec,
            a,
            b,
            bias,
            c,
        } => {
            float(&[*a, *b, *c])?;
            distinct(&[*a, *c])?;
            distinct(&[*b, *c])?;
            spec.validate(len(*a), len(*b), len(*c), bias.map(len))
        }
        Op::RecurrentForward(f) => {
            let s = f.shape;
            s.validate(None)?;
            float(&[f.x, f.y, f.w_ih, f.w_hh, f.state])?;
            s.check_buffers(
                len(f.x),
                len(f.y),
                len(f.w_ih),
                len(f.w_hh),
                f.b_ih.map(len),
                f.b_hh.map(len),
            )?;
            let n = s.batch * s.hidden;
            ensure!(
                len(f.state) == STATE_REGIONS * n,
                Shape,
                "state has {} elements, expected {STATE_REGIONS} x batch x hidden = {}",
                len(f.state),
                STATE_REGIONS * n
            );
            if let Some(l) = f.lengths {
                u32s(l)?;
                ensure!(
                    len(l) == s.batch,
                    Shape,
                    "lengths: {} for a batch of {}",
                    len(l),
                    s.batch
                );
            }
            if let Some(m) = f.recurrent_mask {
                ensure!(
                    len(m) == n,
                    Shape,
                    "recurrent mask: {} elements, expected {n}",
                    len(m)
                );
            }
            distinct(&[f.x, f.y, f.state])
        }
        Op::RecurrentBackward(b) => {
            let f = program.recurrent_forward(b.forward)?;
            let (s, gw) = (f.shape, f.shape.gate_width());
            if let Some(dy) = b.dy {
                ensure!(
                    len(dy) == len(f.y),
                    Shape,
                    "output gradient: {} elements, the output {}",
                    len(dy),
                    len(f.y)
                );
            }
            ensure!(
                len(b.dx) == len(f.x),
                Shape,
                "input gradient: {} elements, the input {}",
                len(b.dx),
                len(f.x)
            );
            ensure!(
                len(b.dw_ih) == gw * s.input,
                Shape,
                "weight_ih gradient size"
            );
            ensure!(
                len(b.dw_hh) == gw * s.hidden,
                Shape,
                "weight_hh gradient size"
            );
            ensure!(
                b.db_ih.is_some() == f.b_ih.is_some() && b.db_hh.is_some() == f.b_hh.is_some(),
                Invalid,
                "bias gradients exactly where the forward has biases"
            );
            for db in b.db_ih.iter().chain(&b.db_hh) {
                ensure!(len(*db) == gw, Shape, "bias gradient size");
            }
            Ok(())
        }
        Op::Merge { stage, cat, out } => {
            ensure!(
                len(*cat) == stage.rows() * stage.dirs * stage.hidden,
                Shape,
                "merge input size"
            );
            ensure!(
                len(*out) == stage.rows() * stage.width(),
                Shape,
                "merge output size"
            );
            distinct(&[*cat, *out])
        }
        Op::MergeBackward {
            stage,
            cat,
            d_out,
            d_cat,
        } => {
            ensure!(
                len(*cat) == stage.rows() * stage.dirs * stage.hidden,
                Shape,
                "merge input size"
            );
            ensure!(len(*d_cat) == len(*cat), Shape, "merge input gradient size");
            ensure!(
                len(*d_out) == stage.rows() * stage.width(),
                Shape,
                "merge output gradient size"
            );
            distinct(&[*cat, *d_out, *d_cat])
        }
        Op::DropoutMask { spec, mask, .. } => spec.validate(len(*mask)),
        Op::RowMask { mask, x, steps, .. } => {
            let features = *program.tensor(*mask).shape.last().unwrap_or(&0);
            let batch = len(*mask).checked_div(features).unwrap_or(0);
            crate::ops::dropout::validate_rows(len(*x), batch, *steps, features)?;
            distinct(&[*mask, *x])
        }
        Op::Gather {
            spec,
            table,
            ids,
            out,
        } => {
            u32s(*ids)?;
            spec.validate(len(*table), len(*ids), len(*out))?;
            distinct(&[*table, *out])
        }
        Op::ScatterAdd {
            spec,
            ids,
            d_out,
            d_table,
        } => {
            u32s(*ids)?;
            spec.validate(len(*d_table), len(*ids), len(*d_out))?;
            distinct(&[*d_out, *d_table])
        }
        Op::CrossEntropy {
            spec,
            logits,
            targets,
            d_logits,
            loss,
        } => {
            u32s(*targets)?;
            spec.validate(len(*logits), len(*targets), spec.rows, len(*d_logits))?;
            ensure!(len(*loss) >= 1, Shape, "the loss needs one element");
            distinct(&[*logits, *d_logits, *loss])
        }
        Op::Mse {
            pred,
            target,
            d_pred,
            loss,
        } => {
            validate_mse(len(*pred), len(*target), len(*d_pred))?;
            ensure!(len(*loss) >= 1, Shape, "the loss needs one element");
            distinct(&[*pred, *d_pred, *loss])
        }
        Op::Copy {
            src,
            src_offset,
            dst,
            dst_offset,
            len: n,
        } => {
            ensure!(src != dst, Invalid, "a copy needs two tensors");
            ensure!(
                src_offset.checked_add(*n).is_some_and(|e| e <= len(*src))
                    && dst_offset.checked_add(*n).is_some_and(|e| e <= len(*dst)),
                Shape,
                "copy of {n} elements at {src_offset} -> {dst_offset} runs past {} or {}",
                program.tensor(*src).label,
                program.tensor(*dst).label
            );
            Ok(())
        }
        Op::Zero { dst } => float(&[*dst]),
        Op::Optimize { config, params } => {
            config.validate()?;
            ensure!(
                !params.is_empty(),
                Invalid,
                "nothing to optimize: no trainable parameters"
            );
            for (name, p, g) in params {
                ensure!(
                    matches!(&program.tensor(*p).kind, Kind::Param(n) if n == name),
                    Invalid,
                    "{name} is not a parameter of the program"
                );
                ensure!(
                    len(*p) == len(*g),
                    Shape,
                    "{name}: gradient size differs from the parameter's"
                );
            }
            Ok(())
        }
    }
}
