//! The CPU executor: each op of a program runs its CPU twin (`src/cpu`), in `T` (f32, or
//! f64 for finite-difference checks). CPU-only fast paths are lowerings here: a recurrent
//! forward that no backward reads runs the inference forward (no tape).

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{bail, ensure, err, Result};

use super::{Executor, ProgramId};
use crate::cpu::recurrent::{InferWeights, Saved, Weights};
use crate::cpu::{self, Real};
use crate::ops::program::{
    DType, Kind, Op, OpId, Program, RecurrentBackward, RecurrentForward, StateRegion, TensorId,
};
use crate::ops::DropoutKey;

/// A tensor's storage on the CPU.
enum Data<T> {
    Float(Vec<T>),
    U32(Vec<u32>),
    /// A parameter: stored by the executor under its name.
    Param(String),
}

struct Loaded<T> {
    program: Program,
    data: Vec<Data<T>>,
    /// Recurrent forwards whose tape a backward reads.
    taped: BTreeSet<OpId>,
    u32_checks: BTreeMap<TensorId, super::check::U32Check>,
    tapes: BTreeMap<OpId, Saved<T>>,
}

/// Runs programs with the CPU twins in `T`.
pub struct CpuExecutor<T: Real = f32> {
    params: BTreeMap<String, (Vec<usize>, Vec<T>)>,
    /// Raised whenever any parameter may change: what was prepared from the parameters at
    /// an earlier count is stale.
    param_epoch: u64,
    /// Recurrent weights prepared for inference, by program and op, with the `param_epoch`
    /// they were prepared at: a program run again and again between updates (sampling a
    /// language model one character at a time) prepares them once.
    prepared: BTreeMap<(usize, OpId), (u64, InferWeights<T>)>,
    optim: BTreeMap<String, Vec<T>>,
    programs: Vec<Loaded<T>>,
}

impl<T: Real> Default for CpuExecutor<T> {
    fn default() -> Self {
        Self::new()
    }
}

fn to_t<T: Real>(x: f32) -> T {
    T::from(x).unwrap_or_else(T::nan)
}

fn to_f32<T: Real>(x: T) -> f32 {
    x.to_f32().unwrap_or(f32::NAN)
}

impl<T: Real> CpuExecutor<T> {
    /// An executor with no parameters or programs.
    pub fn new() -> Self {
        Self {
            params: BTreeMap::new(),
            param_epoch: 0,
            prepared: BTreeMap::new(),
            optim: BTreeMap::new(),
            programs: Vec::new(),
        }
    }

    fn loaded(&self, p: ProgramId) -> Result<&Loaded<T>> {
        self.programs
            .get(p.0)
            .ok_or_else(|| err!(Invalid, "program {} was not loaded here", p.0))
    }

    fn float(&self, p: ProgramId, t: TensorId) -> Result<&[T]> {
        let l = self.loaded(p)?;
        match &l.data[t.0] {
            Data::Float(v) => Ok(v),
            Data::Param(name) => Ok(&self.params[name].1),
            Data::U32(_) => bail!(
                Shape,
                "tensor {} holds u32 values",
                l.program.tensor(t).label
            ),
        }
    }

    fn u32s(&self, p: ProgramId, t: TensorId) -> Result<&[u32]> {
        let l = self.loaded(p)?;
        match &l.data[t.0] {
            Data::U32(v) => Ok(v),
            _ => bail!(
                Shape,
                "tensor {} holds float values",
                l.program.tensor(t).label
            ),
        }
    }

    /// Takes a float tensor out to write it (put it back with [`Self::put`]).
    fn take(&mut self, p: ProgramId, t: TensorId) -> Result<Vec<T>> {
        let l = &mut self.programs[p.0];
        match &mut l.data[t.0] {
            Data::Float(v) => Ok(std::mem::take(v)),
            Data::Param(name) => Ok(std::mem::take({
                self.param_epoch += 1;
                &mut self
                    .params
                    .get_mut(name)
                    .ok_or_else(|| err!(Invalid, "parameter"))?
                    .1
            })),
            Data::U32(_) => bail!(
                Shape,
                "tensor {} holds u32 values",
                l.program.tensor(t).label
            ),
        }
    }

    fn put(&mut self, p: ProgramId, t: TensorId, v: Vec<T>) {
        let l = &mut self.programs[p.0];
        match &mut l.data[t.0] {
            Data::Float(slot) => *slot = v,
            Data::Param(name) => {
                self.param_epoch += 1;
                if let Some(slot) = self.params.get_mut(name) {
                    slot.1 = v;
                }
            }
            Data::U32(_) => {}
        }
    }

    /// Runs `f` on the tensor `t` taken out for writing, putting it back afterwards even
    /// when `f` fails.
    fn with_out<R>(
        &mut self,
        p: ProgramId,
        t: TensorId,
        f: impl FnOnce(&Self, &mut Vec<T>) -> Result<R>,
    ) -> Result<R> {
        let mut v = self.take(p, t)?;
        let r = f(self, &mut v);
        self.put(p, t, v);
        r
    }

    /// Writes `T` values into a float tensor (f64 programs, e.g. gradient checks).
    pub fn write_real(
        &mut self,
        p: ProgramId,
        t: TensorId,
        offset: usize,
        data: &[T],
    ) -> Result<()> {
        self.with_out(p, t, |_, v| {
            ensure!(
                offset + data.len() <= v.len(),
                Shape,
                "writing {} values at {offset} into a tensor of {}",
                data.len(),
                v.len()
            );
            v[offset..offset + data.len()].copy_from_slice(data);
            Ok(())
        })
    }

    /// A float tensor's values in `T`.
    pub fn read_real(&self, p: ProgramId, t: TensorId) -> Result<Vec<T>> {
        Ok(self.float(p, t)?.to_vec())
    }

    /// Sets a parameter in `T`.
    pub fn set_param_real(&mut self, name: &str, shape: &[usize], data: &[T]) -> Result<()> {
        let n: usize = shape.iter().product();
        ensure!(
            data.len() == n,
            Shape,
            "parameter {name}: {} values for shape {shape:?}",
            data.len()
        );
        if let Some((have, _)) = self.params.get(name) {
            ensure!(
                have == shape,
                Shape,
                "parameter {name} has shape {have:?}, not {shape:?}"
            );
        }
        self.param_epoch += 1;
        self.params
            .insert(name.to_string(), (shape.to_vec(), data.to_vec()));
        Ok(())
    }

    /// A parameter's values in `T`.
    pub fn param_real(&self, name: &str) -> Result<Vec<T>> {
        Ok(self
            .params
            .get(name)
            .ok_or_else(|| err!(Invalid, "no parameter {name}"))?
            .1
            .clone())
    }

    fn run_op(&mut self, p: ProgramId, id: OpId, op: &Op, step: u64) -> Result<()> {
        match op {
            Op::Gemm {
                spec,
                a,
                b,
                bias,
                c,
            } => self.with_out(p, *c, |s, out| {
                let bias = bias.map(|t| s.float(p, t)).transpose()?;
                cpu::gemm(spec, s.float(p, *a)?, s.float(p, *b)?, bias, out)
            }),
            Op::RecurrentForward(f) => self.recurrent_forward(p, id, f),
            Op::RecurrentBackward(b) => self.recurrent_backward(p, b),
            Op::Merge { stage, cat, out } => self.with_out(p, *out, |s, out| {
                cpu::merge::forward(stage, s.float(p, *cat)?, out);
                Ok(())
            }),
            Op::MergeBackward {
                stage,
                cat,
                d_out,
                d_cat,
            } => self.with_out(p, *d_cat, |s, d| {
                cpu::merge::backward(stage, s.float(p, *cat)?, s.float(p, *d_out)?, d);
                Ok(())
            }),
            Op::DropoutMask {
                spec,
                seed,
                stream,
                mask,
            } => self.with_out(p, *mask, |_, m| {
                let key = DropoutKey {
                    seed: *seed,
                    step,
                    stream: *stream,
                };
                cpu::dropout::mask(spec, key, m)
            }),
            Op::RowMask {
                mask,
                x,
                steps,
                batch_first,
            } => self.with_out(p, *x, |s, x| {
                let m = s.float(p, *mask)?;
                let features = *s
                    .loaded(p)?
                    .program
                    .tensor(*mask)
                    .shape
                    .last()
                    .unwrap_or(&1);
                cpu::dropout::apply_rows(x, m, *steps, features, *batch_first)
            }),
            Op::Gather {
                spec,
                table,
                ids,
                out,
            } => self.with_out(p, *out, |s, out| {
                cpu::embedding::forward(spec, s.float(p, *table)?, s.u32s(p, *ids)?, out)
            }),
            Op::ScatterAdd {
                spec,
                ids,
                d_out,
                d_table,
            } => self.with_out(p, *d_table, |s, d| {
                cpu::embedding::backward(spec, s.u32s(p, *ids)?, s.float(p, *d_out)?, d)
            }),
            Op::CrossEntropy {
                spec,
                logits,
                targets,
                d_logits,
                loss,
            } => {
                let mean = self.with_out(p, *d_logits, |s, d| {
                    let mut rows = vec![T::zero(); spec.rows];
                    cpu::loss::cross_entropy(
                        spec,
                        s.float(p, *logits)?,
                        s.u32s(p, *targets)?,
                        &mut rows,
                        d,
                    )
                })?;
                self.write_real(p, *loss, 0, &[mean])
            }
            Op::Mse {
                pred,
                target,
                d_pred,
                loss,
            } => {
                let mean = self.with_out(p, *d_pred, |s, d| {
                    cpu::loss::mse(s.float(p, *pred)?, s.float(p, *target)?, d)
                })?;
                self.write_real(p, *loss, 0, &[mean])
            }
            Op::Copy {
                src,
                src_offset,
                dst,
                dst_offset,
                len,
            } => self.with_out(p, *dst, |s, d| {
                let from = s.float(p, *src)?;
                d[*dst_offset..*dst_offset + len].copy_from_slice(&from[*src_offset..][..*len]);
                Ok(())
            }),
            Op::Zero { dst } => self.with_out(p, *dst, |_, d| {
                d.fill(T::zero());
                Ok(())
            }),
            Op::Optimize { config, params } => {
                // `step` updates were taken before this one.
                let t = step + 1;
                let opt = config.optimizer.with_lr(config.lr_at(t)?);
                let scale = match config.clip {
                    Some(max) => {
                        let gs = params
                            .iter()
                            .map(|(_, _, g)| self.float(p, *g))
                            .collect::<Result<Vec<_>>>()?;
                        cpu::optim::clip(&gs, max)?.1
                    }
                    None => T::one(),
                };
                let slots = config.optimizer.slots();
                for (name, param, grad) in params {
                    let mut state = self.optim.remove(name).unwrap_or_default();
                    let r = self.with_out(p, *param, |s, w| {
                        state.resize(slots * w.len(), T::zero());
                        cpu::optim::step(&opt, t, w, s.float(p, *grad)?, &mut state, scale)
                    });
                    self.optim.insert(name.clone(), state);
                    r?;
                }
                Ok(())
            }
        }
    }

    fn recurrent_forward(&mut self, p: ProgramId, id: OpId, f: &RecurrentForward) -> Result<()> {
        let shape = f.shape;
        let n = shape.batch * shape.hidden;
        let at = |r: StateRegion| r.offset(shape.batch, shape.hidden);
        let taped = self.loaded(p)?.taped.contains(&id);
        // Inference over weights that only parameter writes change: their prepared copies,
        // if still current, else prepared now and kept.
        let epoch = self.param_epoch;
        let cacheable = !taped && f.recurrent_mask.is_none() && {
            let l = self.loaded(p)?;
            [Some(f.w_ih), Some(f.w_hh), f.b_ih, f.b_hh]
                .into_iter()
                .flatten()
                .all(|t| matches!(l.data[t.0], Data::Param(_)))
        };
        let mut prepared = match cacheable {
            true => self
                .prepared
                .remove(&(p.0, id))
                .filter(|(at, w)| *at == epoch && w.fits(&shape))
                .map(|(_, w)| w),
            false => None,
        };
        let mut y = self.take(p, f.y)?;
        let result = (|| -> Result<_> {
            let lengths: Option<Vec<usize>> = match f.lengths {
                Some(l) => Some(self.u32s(p, l)?.iter().map(|&v| v as usize).collect()),
                None => None,
            };
            let state = self.float(p, f.state)?;
            let h0 = &state[at(StateRegion::H0)..][..n];
            let c0 = &state[at(StateRegion::C0)..][..n];
            let c0 = shape.cell.has_cell_state().then_some(c0);
            let w = Weights {
                w_ih: self.float(p, f.w_ih)?,
                w_hh: self.float(p, f.w_hh)?,
                b_ih: f.b_ih.map(|t| self.float(p, t)).transpose()?,
                b_hh: f.b_hh.map(|t| self.float(p, t)).transpose()?,
            };
            let rmask = f.recurrent_mask.map(|t| self.float(p, t)).transpose()?;
            let x = self.float(p, f.x)?;
            if taped || rmask.is_some() {
                let (fin, saved) = cpu::recurrent::forward(
                    &shape,
                    x,
                    lengths.as_deref(),
                    Some(h0),
                    c0,
                    &w,
                    rmask,
                    &mut y,
                )?;
                Ok((fin, taped.then_some(saved)))
            } else if cacheable {
                let w = match prepared.as_mut() {
                    Some(w) => w,
                    None => prepared.insert(InferWeights::new(&shape, &w)?),
                };
                let fin = cpu::recurrent::infer_prepared(
                    &shape,
                    x,
                    lengths.as_deref(),
                    Some(h0),
                    c0,
                    w,
                    &mut y,
                )?;
                Ok((fin, None))
            } else {
                let fin =
                    cpu::recurrent::infer(&shape, x, lengths.as_deref(), Some(h0), c0, &w, &mut y)?;
                Ok((fin, None))
            }
        })();
        if let Some(w) = prepared {
            self.prepared.insert((p.0, id), (epoch, w));
        }
        self.put(p, f.y, y);
        let (fin, saved) = result?;
        self.with_out(p, f.state, |_, state| {
            state[at(StateRegion::HN)..][..n].copy_from_slice(&fin.h_n);
            if shape.cell.has_cell_state() {
                state[at(StateRegion::CN)..][..n].copy_from_slice(&fin.c_n);
            }
            Ok(())
        })?;
        if let Some(saved) = saved {
            self.programs[p.0].tapes.insert(id, saved);
        }
        Ok(())
    }

    /// Rounds every saved recurrent forward's gate activations as f16 storage keeps them
    /// ([`cpu::precision::round_saved_activations`]): the twin of a GPU executor whose plans
    /// store them in f16.
    pub fn round_saved_activations(&mut self) {
        for l in &mut self.programs {
            for (id, saved) in &mut l.tapes {
                if let Ok(f) = l.program.recurrent_forward(*id) {
                    let (cell, hidden) = (f.shape.cell, f.shape.hidden);
                    cpu::precision::round_saved_activations(cell, hidden, &mut saved.act);
                }
            }
        }
    }

    fn recurrent_backward(&mut self, p: ProgramId, b: &RecurrentBackward) -> Result<()> {
        let f = self
            .loaded(p)?
            .program
            .recurrent_forward(b.forward)?
            .clone();
        let shape = f.shape;
        let n = shape.batch * shape.hidden;
        let at = |r: StateRegion| r.offset(shape.batch, shape.hidden);
        let g = {
            let l = self.loaded(p)?;
            let saved = l
                .tapes
                .get(&b.forward)
                .ok_or_else(|| err!(Invalid, "a recurrent backward ran before its forward"))?;
            let state = self.float(p, f.state)?;
            let w = Weights {
                w_ih: self.float(p, f.w_ih)?,
                w_hh: self.float(p, f.w_hh)?,
                b_ih: f.b_ih.map(|t| self.float(p, t)).transpose()?,
                b_hh: f.b_hh.map(|t| self.float(p, t)).transpose()?,
            };
            let dy = b.dy.map(|t| self.float(p, t)).transpose()?;
            let dcn = &state[at(StateRegion::DCN)..][..n];
            cpu::recurrent::backward(
                &shape,
                self.float(p, f.x)?,
                &w,
                saved,
                dy,
                Some(&state[at(StateRegion::DHN)..][..n]),
                shape.cell.has_cell_state().then_some(dcn),
            )?
        };
        let accumulate = b.accumulate_dx;
        self.with_out(p, b.dx, |_, dx| {
            ensure!(dx.len() == g.dx.len(), Shape, "input gradient size");
            if accumulate {
                for (a, v) in dx.iter_mut().zip(&g.dx) {
                    *a = *a + *v;
                }
            } else {
                dx.copy_from_slice(&g.dx);
            }
            Ok(())
        })?;
        let mut outs = vec![(b.dw_ih, &g.dw_ih), (b.dw_hh, &g.dw_hh)];
        outs.extend(b.db_ih.map(|t| (t, &g.db_ih)));
        outs.extend(b.db_hh.map(|t| (t, &g.db_hh)));
        for (t, v) in outs {
            self.write_real(p, t, 0, v)?;
        }
        self.with_out(p, f.state, |_, state| {
            state[at(StateRegion::DH0)..][..n].copy_from_slice(&g.dh0);
            if shape.cell.has_cell_state() {
                state[at(StateRegion::DC)..][..n].copy_from_slice(&g.dc0);
            }
            Ok(())
        })
    }
}

impl<T: Real> Executor for CpuExecutor<T> {
    fn describe(&self) -> String {
        format!(
            "cpu ({} threads, {})",
            cpu::threads(),
            std::any::type_name::<T>()
        )
    }

    fn load(&mut self, program: Program) -> Result<ProgramId> {
        super::check::check(&program)?;
        let mut data = Vec::with_capacity(program.tensors().len());
        for t in program.tensors() {
            let n = super::check::elements(&t.label, &t.shape)?;
            data.push(match (&t.kind, t.dtype) {
                (Kind::Param(name), _) => {
                    match self.params.get(name) {
                        Some((shape, _)) => ensure!(
                            shape == &t.shape,
                            Shape,
                            "parameter {name} has shape {shape:?}, the program declares {:?}",
                            t.shape
                        ),
                        None => {
                            let zeros = super::check::zeroed::<T>(&t.label, n)?;
                            self.param_epoch += 1;
                            self.params.insert(name.clone(), (t.shape.clone(), zeros));
                        }
                    }
                    Data::Param(name.clone())
                }
                (_, DType::U32) => Data::U32(super::check::zeroed::<u32>(&t.label, n)?),
                (Kind::Const(v), DType::Float) => {
                    let mut d = super::check::zeroed::<T>(&t.label, n)?;
                    d.fill(to_t(*v));
                    Data::Float(d)
                }
                (_, DType::Float) => Data::Float(super::check::zeroed::<T>(&t.label, n)?),
            });
        }
        let taped = program.recurrent_backwards().keys().copied().collect();
        self.programs.push(Loaded {
            u32_checks: super::check::u32_checks(&program),
            program,
            data,
            taped,
            tapes: BTreeMap::new(),
        });
        Ok(ProgramId(self.programs.len() - 1))
    }

    fn program(&self, p: ProgramId) -> &Program {
        &self.programs[p.0].program
    }

    fn write(&mut self, p: ProgramId, t: TensorId, offset: usize, data: &[f32]) -> Result<()> {
        let data: Vec<T> = data.iter().map(|&x| to_t(x)).collect();
        self.write_real(p, t, offset, &data)
    }

    fn write_u32(&mut self, p: ProgramId, t: TensorId, data: &[u32]) -> Result<()> {
        let l = self
            .programs
            .get_mut(p.0)
            .ok_or_else(|| err!(Invalid, "program not loaded"))?;
        let decl = l.program.tensor(t).clone();
        let check = l
            .u32_checks
            .get(&t)
            .copied()
            .unwrap_or(super::check::U32Check::None);
        super::check::check_u32(&decl, check, data)?;
        match &mut l.data[t.0] {
            Data::U32(v) => {
                v.copy_from_slice(data);
                Ok(())
            }
            _ => bail!(Shape, "tensor {} does not hold u32 values", decl.label),
        }
    }

    fn run(&mut self, p: ProgramId, phase: usize, step: u64) -> Result<()> {
        let ops: Vec<(OpId, Op)> = self
            .loaded(p)?
            .program
            .phase(phase)?
            .map(|(id, op)| (id, op.clone()))
            .collect();
        for (id, op) in &ops {
            self.run_op(p, *id, op, step)?;
        }
        Ok(())
    }

    fn read(&mut self, p: ProgramId, t: TensorId, offset: usize, len: usize) -> Result<Vec<f32>> {
        let v = self.float(p, t)?;
        ensure!(
            offset + len <= v.len(),
            Shape,
            "reading {len} values at {offset} from a tensor of {}",
            v.len()
        );
        Ok(v[offset..offset + len].iter().map(|&x| to_f32(x)).collect())
    }

    fn set_param(&mut self, name: &str, shape: &[usize], data: &[f32]) -> Result<()> {
        let data: Vec<T> = data.iter().map(|&x| to_t(x)).collect();
        self.set_param_real(name, shape, &data)
    }

    fn param(&mut self, name: &str) -> Result<Vec<f32>> {
        Ok(self.param_real(name)?.into_iter().map(to_f32).collect())
    }

    fn optimizer_state(&mut self) -> Result<BTreeMap<String, Vec<f32>>> {
        Ok(self
            .optim
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().map(|&x| to_f32(x)).collect()))
            .collect())
    }

    fn set_optimizer_state(&mut self, state: &BTreeMap<String, Vec<f32>>) -> Result<()> {
        for (k, v) in state {
            self.optim
                .insert(k.clone(), v.iter().map(|&x| to_t(x)).collect());
        }
        Ok(())
    }

    fn memory_bytes(&self) -> u64 {
        let size = std::mem::size_of::<T>() as u64;
        let params: u64 = self.params.values().map(|(_, v)| v.len() as u64).sum();
        let optim: u64 = self.optim.values().map(|v| v.len() as u64).sum();
        let work: u64 = self
            .programs
            .iter()
            .flat_map(|l| &l.data)
            .map(|d| match d {
                Data::Float(v) => v.len() as u64 * size,
                Data::U32(v) => v.len() as u64 * 4,
                Data::Param(_) => 0,
            })
            .sum();
        let prepared: u64 = self.prepared.values().map(|(_, w)| w.bytes()).sum();
        (params + optim) * size + work + prepared
    }
}
