//! The GPU executor: each op of a program is lowered, when the program is loaded, to a plan
//! of the device layer (`src/gpu`), with every tensor, uniform and bind group made then. A
//! run records a phase's plans into one recorder, copies the tensors the phase reads back
//! into staging buffers, and submits once; the only wait is for those readbacks.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{bail, ensure, err, Result, ResultExt};

use super::check::{self, U32Check};
use super::{Executor, ProgramId, RunReport};
use crate::gpu::dropout::RowMaskPlan;
use crate::gpu::loss::{CrossEntropyPlan, MsePlan};
use crate::gpu::merge::MergePlan;
use crate::gpu::recurrent::{
    DirectionSpec, GpuGrads, GpuWeights, InputMask, RecurrentKernels, RecurrentPair, RecurrentPlan,
    RecurrentStack, StackLayer, StackSchedule,
};
use crate::gpu::{
    ClipPlan, DispatchCost, DropoutMaskPlan, EmbeddingBackwardPlan, EmbeddingForwardPlan,
    EmbeddingIds, GemmPlan, Gpu, GpuTensor, OptimPlan, Recorder,
};
use crate::ops::optim::OptimConfig;
use crate::ops::program::{DType, Kind, Op, OpId, Program, RecurrentForward, TensorId};
use crate::ops::DropoutKey;

/// The dispatches one op of a phase records ([`GpuExecutor::phase_costs_by_op`]).
#[derive(Clone, Debug)]
pub struct OpCosts {
    /// The op.
    pub op: OpId,
    /// What the what-if schedules need of a recurrent op (forward or backward).
    pub recurrent: Option<RecurrentOpCosts>,
    /// Its dispatches, in recorded order.
    pub dispatches: Vec<DispatchCost>,
}

/// A recurrent op's part in [`OpCosts`].
#[derive(Clone, Copy, Debug)]
pub struct RecurrentOpCosts {
    /// The layer-direction's shape.
    pub shape: crate::ops::recurrent::RecurrentShape,
    /// Whether the op is the backward through time.
    pub backward: bool,
    /// One step's input side done in the step ([`RecurrentPlan::in_step_input_cost`]).
    pub in_step_input: crate::gpu::Cost,
}

/// A tensor's storage on the device.
enum Slot {
    Float(GpuTensor),
    U32(GpuTensor<u32>),
    Ids(EmbeddingIds),
    /// Lengths stay on the host: the recurrent plans turn them into their step maps.
    Lengths {
        lengths: Vec<usize>,
        version: u64,
    },
    Param(String),
}

/// An op lowered to its plan(s).
enum Lowered {
    Gemm(GemmPlan),
    Recurrent {
        plan: Box<RecurrentPlan>,
        lengths: Option<TensorId>,
        /// The lengths version last written into the plan.
        applied: Option<u64>,
    },
    RecurrentBackward(OpId),
    /// Both directions of a bidirectional layer in one plan, lowered at the second
    /// direction's forward op (see [`pairs`]); the first's lowers to `PairedForward`.
    Pair {
        pair: Box<RecurrentPair>,
        lengths: Option<TensorId>,
        applied: Option<u64>,
    },
    /// The first direction's forward of a pair: recorded with the pair.
    PairedForward,
    /// The first of a pair's two backward ops: records the pair's backward, the products of
    /// direction `products_first` first (this op's).
    PairBackward {
        pair: OpId,
        products_first: usize,
    },
    /// The second of a pair's backward ops: recorded with the first.
    PairedBackward,
    /// The layers of a unidirectional stack as a wavefront, lowered at the top layer's
    /// forward op (see [`stacks`]); the layers below lower to `StackedForward`.
    Stack {
        stack: Box<RecurrentStack>,
        lengths: Option<TensorId>,
        applied: Option<u64>,
        /// The ops recorded right after the stack's forward (`Deferred`, in order): the
        /// copies and row masks of the dropout between its layers.
        after: Vec<usize>,
    },
    /// A forward op of a stack's layer below the top: recorded with the stack.
    StackedForward,
    /// An op recorded after a stack's forward rather than in its place (see `Stack`).
    Deferred(Box<Lowered>),
    /// The first (in program order) of the backward ops of the stack lowered at op `stack`:
    /// records the backward of every layer.
    StackBackward(OpId),
    /// The other backward ops of a stack, and the row masks between them (which its waves
    /// apply): recorded with the first.
    StackedBackward,
    Merge(MergePlan),
    Dropout {
        plan: DropoutMaskPlan,
        seed: u64,
        stream: u32,
    },
    RowMask(RowMaskPlan),
    Gather(EmbeddingForwardPlan),
    Scatter(EmbeddingBackwardPlan),
    CrossEntropy {
        plan: CrossEntropyPlan,
        loss: wgpu::Buffer,
        _row_loss: GpuTensor,
    },
    Mse {
        plan: MsePlan,
        loss: wgpu::Buffer,
    },
    Copy {
        src: wgpu::Buffer,
        src_offset: u64,
        dst: wgpu::Buffer,
        dst_offset: u64,
        bytes: u64,
    },
    Zero(wgpu::Buffer),
    Optimize(GpuOptimizer),
}

/// One optimizer step: clipping, then one plan per parameter.
struct GpuOptimizer {
    config: OptimConfig,
    clip: Option<ClipPlan>,
    plans: Vec<OptimPlan>,
}

struct Loaded {
    program: Program,
    slots: Vec<Slot>,
    lowered: Vec<Lowered>,
    u32_checks: BTreeMap<TensorId, U32Check>,
    /// Per phase: staging buffers of the tensors it reads back.
    staging: BTreeMap<usize, Vec<(TensorId, wgpu::Buffer)>>,
    /// What the last run read back.
    staged: BTreeMap<TensorId, Vec<f32>>,
    /// Scratch for recurrent ops without biases (their bias gradients land here).
    _scratch: Vec<GpuTensor>,
}

/// Runs programs on a GPU.
pub struct GpuExecutor {
    gpu: Gpu,
    params: BTreeMap<String, GpuTensor>,
    /// Optimizer state by parameter name (shared by the programs that update it).
    optim: BTreeMap<String, GpuTensor>,
    programs: Vec<Loaded>,
    timed: bool,
    last: RunReport,
    recurrent_kernels: RecurrentKernels,
}

impl GpuExecutor {
    /// An executor on `gpu`.
    pub fn new(gpu: &Gpu) -> Self {
        Self {
            gpu: gpu.clone(),
            params: BTreeMap::new(),
            optim: BTreeMap::new(),
            programs: Vec::new(),
            timed: false,
            last: RunReport::default(),
            recurrent_kernels: RecurrentKernels::default(),
        }
    }

    /// Makes the recurrent plans of programs loaded from now on record `kernels` rather than
    /// the kernels the device chooses (where they apply).
    pub fn set_recurrent_kernels(&mut self, kernels: RecurrentKernels) {
        self.recurrent_kernels = kernels;
    }

    /// The device.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    fn loaded(&self, p: ProgramId) -> Result<&Loaded> {
        self.programs
            .get(p.0)
            .ok_or_else(|| err!(Invalid, "program {} was not loaded here", p.0))
    }

    /// The dispatches a run of `phase` records, with their costs, recorded but never
    /// submitted (the cost table of `recur bench rnn --plan`).
    pub fn phase_costs(&mut self, p: ProgramId, phase: usize) -> Result<Vec<DispatchCost>> {
        let mut rec = Recorder::new(&self.gpu.clone());
        self.record_phase(p, phase, 0, &mut rec, None)?;
        Ok(rec.costs().to_vec())
    }

    /// The dispatches of [`Self::phase_costs`] grouped by the op that records them, in the
    /// phase's order, each recurrent op with its shape and the cost of its input side done
    /// step by step (the what-if schedules of `recur bench rnn --plan`).
    pub fn phase_costs_by_op(&mut self, p: ProgramId, phase: usize) -> Result<Vec<OpCosts>> {
        let mut rec = Recorder::new(&self.gpu.clone());
        let mut marks = Vec::new();
        self.record_phase(p, phase, 0, &mut rec, Some(&mut marks))?;
        let costs = rec.costs();
        let l = self.loaded(p)?;
        let mut out = Vec::with_capacity(marks.len());
        for (k, &(op, start)) in marks.iter().enumerate() {
            let end = marks.get(k + 1).map_or(costs.len(), |m| m.1);
            let recurrent = match &l.lowered[op.0] {
                Lowered::Recurrent { plan, .. } => Some((plan, false)),
                Lowered::RecurrentBackward(forward) => match &l.lowered[forward.0] {
                    Lowered::Recurrent { plan, .. } => Some((plan, true)),
                    _ => None,
                },
                _ => None,
            }
            .map(|(plan, backward)| RecurrentOpCosts {
                shape: *plan.shape(),
                backward,
                in_step_input: plan.in_step_input_cost(backward),
            });
            out.push(OpCosts {
                op,
                recurrent,
                dispatches: costs[start..end].to_vec(),
            });
        }
        Ok(out)
    }

    /// Records the ops of `phase` into `rec` (the staging copies of its readbacks are the
    /// caller's), after the lengths written since the last run reach the recurrent plans.
    fn record_phase(
        &mut self,
        p: ProgramId,
        phase: usize,
        step: u64,
        rec: &mut Recorder,
        mut marks: Option<&mut Vec<(OpId, usize)>>,
    ) -> Result<()> {
        let l = self
            .programs
            .get_mut(p.0)
            .ok_or_else(|| err!(Invalid, "program not loaded"))?;
        l.staged.clear();
        let ops: Vec<OpId> = l.program.phase(phase)?.map(|(id, _)| id).collect();
        // Lengths written since the last run go into the recurrent plans' step maps.
        for &id in &ops {
            let (t, applied) = match &l.lowered[id.0] {
                Lowered::Recurrent {
                    lengths: Some(t),
                    applied,
                    ..
                }
                | Lowered::Pair {
                    lengths: Some(t),
                    applied,
                    ..
                }
                | Lowered::Stack {
                    lengths: Some(t),
                    applied,
                    ..
                } => (*t, *applied),
                _ => continue,
            };
            let Slot::Lengths { lengths, version } = &l.slots[t.0] else {
                continue;
            };
            if applied == Some(*version) {
                continue;
            }
            ensure!(
                *version > 0,
                Invalid,
                "the lengths were not written before the run"
            );
            match &mut l.lowered[id.0] {
                Lowered::Recurrent { plan, applied, .. } => {
                    plan.set_lengths(Some(lengths))?;
                    *applied = Some(*version);
                }
                Lowered::Pair { pair, applied, .. } => {
                    pair.set_lengths(Some(lengths))?;
                    *applied = Some(*version);
                }
                Lowered::Stack { stack, applied, .. } => {
                    stack.set_lengths(Some(lengths))?;
                    *applied = Some(*version);
                }
                _ => {}
            }
        }
        for &id in &ops {
            if matches!(l.lowered[id.0], Lowered::Deferred(_)) {
                continue; // recorded after its stack's forward, below
            }
            if let Some(m) = marks.as_deref_mut() {
                m.push((id, rec.costs().len()));
            }
            if let Lowered::RecurrentBackward(forward) = &l.lowered[id.0] {
                match &l.lowered[forward.0] {
                    Lowered::Recurrent { plan, .. } => plan.record_backward(rec)?,
                    _ => bail!(
                        Invalid,
                        "a recurrent backward names op {} as its forward",
                        forward.0
                    ),
                }
                continue;
            }
            match &mut l.lowered[id.0] {
                Lowered::Gemm(plan) => plan.record(rec),
                Lowered::Recurrent { plan, .. } => plan.record_forward(rec),
                Lowered::Pair { pair, .. } => pair.record_forward(rec),
                Lowered::Stack { stack, .. } => stack.record_forward(rec),
                Lowered::StackBackward(stack) => {
                    let stack = *stack;
                    match &l.lowered[stack.0] {
                        Lowered::Stack { stack, .. } => stack.record_backward(rec)?,
                        _ => bail!(Invalid, "op {} is not a recurrent stack", stack.0),
                    }
                }
                Lowered::PairBackward {
                    pair,
                    products_first,
                } => {
                    let (pair, first) = (*pair, *products_first);
                    match &l.lowered[pair.0] {
                        Lowered::Pair { pair, .. } => pair.record_backward(rec, first)?,
                        _ => bail!(Invalid, "op {} is not a recurrent pair", pair.0),
                    }
                }
                Lowered::RecurrentBackward(_)
                | Lowered::PairedForward
                | Lowered::PairedBackward
                | Lowered::StackedForward
                | Lowered::StackedBackward
                | Lowered::Deferred(_) => {}
                Lowered::Merge(plan) => plan.record(rec),
                Lowered::Dropout { plan, seed, stream } => {
                    let key = DropoutKey {
                        seed: *seed,
                        step,
                        stream: *stream,
                    };
                    plan.record(rec, key)?
                }
                low @ (Lowered::RowMask(_) | Lowered::Copy { .. }) => {
                    low.record_copy_or_row_mask(rec)?
                }
                Lowered::Gather(plan) => plan.record(rec),
                Lowered::Scatter(plan) => plan.record(rec),
                Lowered::CrossEntropy { plan, loss, .. } => {
                    plan.record(rec);
                    rec.copy(plan.stats().buffer(), 0, loss, 0, 4);
                }
                Lowered::Mse { plan, loss } => {
                    plan.record(rec);
                    rec.copy(plan.stats().buffer(), 0, loss, 0, 4);
                }
                Lowered::Zero(buf) => rec.clear(buf),
                Lowered::Optimize(opt) => {
                    // `step` updates were taken before this one.
                    let lr = opt.config.lr_at(step + 1)?;
                    if let Some(c) = &opt.clip {
                        c.record(rec);
                    }
                    for plan in &mut opt.plans {
                        plan.set_steps(step)?;
                        plan.set_lr(lr)?;
                        plan.record(rec)?;
                    }
                }
            }
            let after: &[usize] = match &l.lowered[id.0] {
                Lowered::Stack { after, .. } => after,
                _ => &[],
            };
            for &k in after {
                if let Some(m) = marks.as_deref_mut() {
                    m.push((OpId(k), rec.costs().len()));
                }
                match &l.lowered[k] {
                    Lowered::Deferred(low) => low.record_copy_or_row_mask(rec)?,
                    _ => bail!(
                        Invalid,
                        "a stack defers op {k}, which was not lowered as deferred"
                    ),
                }
            }
        }
        Ok(())
    }

    /// The device tensor behind a float tensor of a loaded program (for benchmarks and
    /// tests that look at device buffers).
    pub fn tensor(&self, p: ProgramId, t: TensorId) -> Result<&GpuTensor> {
        float(&self.params, &self.loaded(p)?.slots, t)
    }

    fn lower(
        &mut self,
        program: &Program,
        slots: &[Slot],
        scratch: &mut Vec<GpuTensor>,
    ) -> Result<Vec<Lowered>> {
        let gpu = self.gpu.clone();
        let backwards = program.recurrent_backwards();
        let pairs = if self.recurrent_kernels.separate_directions || separate_by_env() {
            Pairs::default()
        } else {
            let fits = |op: usize, fw: &RecurrentForward| {
                let grads = backwards.contains_key(&OpId(op));
                RecurrentPair::fits(&self.gpu, self.recurrent_kernels, &fw.shape, grads)
            };
            pairs(program, fits)
        };
        let stacks = stacks(program, |fw, grads, layers| {
            let kernels = self.recurrent_kernels;
            let wanted = kernels
                .stack
                .or_else(StackSchedule::from_env)
                .unwrap_or_else(|| {
                    StackSchedule::by_rule(&self.gpu, kernels, &fw.shape, grads, layers)
                });
            wanted == StackSchedule::Wavefront
                && RecurrentStack::fits(&self.gpu, kernels, &fw.shape, grads, layers)
        });
        let mut lowered = Vec::with_capacity(program.ops().len());
        for (i, op) in program.ops().iter().enumerate() {
            let f = |t: TensorId| float(&self.params, slots, t);
            if let Some(stack) = stacks.top.get(&i) {
                lowered.push(self.stack_lowered(program, stack, slots, scratch)?);
                continue;
            }
            if stacks.below.contains(&i) {
                lowered.push(Lowered::StackedForward);
                continue;
            }
            if let Some(&top) = stacks.first_backward.get(&i) {
                lowered.push(Lowered::StackBackward(OpId(top)));
                continue;
            }
            if stacks.other_backward.contains(&i) {
                lowered.push(Lowered::StackedBackward);
                continue;
            }
            if pairs.first_forward.contains(&i) {
                lowered.push(Lowered::PairedForward);
                continue;
            }
            if let Some(&(pair, products_first)) = pairs.first_backward.get(&i) {
                lowered.push(Lowered::PairBackward {
                    pair: OpId(pair),
                    products_first,
                });
                continue;
            }
            if pairs.second_backward.contains(&i) {
                lowered.push(Lowered::PairedBackward);
                continue;
            }
            let low = match op {
                Op::Gemm {
                    spec,
                    a,
                    b,
                    bias,
                    c,
                } => Lowered::Gemm(GemmPlan::new(
                    &gpu,
                    spec,
                    f(*a)?,
                    f(*b)?,
                    bias.map(f).transpose()?,
                    f(*c)?,
                )?),
                Op::RecurrentForward(fw) => {
                    let mut directions = vec![(fw, backwards.get(&OpId(i)).copied())];
                    if let Some(&first) = pairs.second_forward.get(&i) {
                        let other = program.recurrent_forward(OpId(first))?;
                        directions.insert(0, (other, backwards.get(&OpId(first)).copied()));
                    }
                    self.recurrent_lowered(&directions, slots, scratch)?
                }
                Op::RecurrentBackward(b) => Lowered::RecurrentBackward(b.forward),
                Op::Merge { stage, cat, out } => {
                    Lowered::Merge(MergePlan::forward(&gpu, stage, f(*cat)?, f(*out)?)?)
                }
                Op::MergeBackward {
                    stage,
                    cat,
                    d_out,
                    d_cat,
                } => Lowered::Merge(MergePlan::backward(
                    &gpu,
                    stage,
                    f(*cat)?,
                    f(*d_out)?,
                    f(*d_cat)?,
                )?),
                Op::DropoutMask {
                    spec,
                    seed,
                    stream,
                    mask,
                } => Lowered::Dropout {
                    plan: DropoutMaskPlan::new(&gpu, spec, f(*mask)?)?,
                    seed: *seed,
                    stream: *stream,
                },
                Op::RowMask {
                    mask,
                    x,
                    steps,
                    batch_first,
                } => Lowered::RowMask(RowMaskPlan::new(
                    &gpu,
                    f(*mask)?,
                    f(*x)?,
                    *steps,
                    *batch_first,
                )?),
                Op::Gather {
                    spec,
                    table,
                    ids,
                    out,
                } => Lowered::Gather(EmbeddingForwardPlan::new(
                    &gpu,
                    spec,
                    f(*table)?,
                    ids_of(slots, *ids)?,
                    f(*out)?,
                )?),
                Op::ScatterAdd {
                    spec,
                    ids,
                    d_out,
                    d_table,
                } => Lowered::Scatter(EmbeddingBackwardPlan::new(
                    &gpu,
                    spec,
                    ids_of(slots, *ids)?,
                    f(*d_out)?,
                    f(*d_table)?,
                )?),
                Op::CrossEntropy {
                    spec,
                    logits,
                    targets,
                    d_logits,
                    loss,
                } => {
                    let row_loss = GpuTensor::zeros(&gpu, &[spec.rows])?;
                    let targets = match &slots[targets.0] {
                        Slot::U32(t) => t,
                        _ => bail!(Invalid, "cross-entropy targets must be a u32 input"),
                    };
                    let plan = CrossEntropyPlan::new(
                        &gpu,
                        spec,
                        f(*logits)?,
                        targets,
                        &row_loss,
                        f(*d_logits)?,
                    )?;
                    Lowered::CrossEntropy {
                        plan,
                        loss: f(*loss)?.buffer().clone(),
                        _row_loss: row_loss,
                    }
                }
                Op::Mse {
                    pred,
                    target,
                    d_pred,
                    loss,
                } => Lowered::Mse {
                    plan: MsePlan::new(&gpu, f(*pred)?, f(*target)?, f(*d_pred)?)?,
                    loss: f(*loss)?.buffer().clone(),
                },
                Op::Copy {
                    src,
                    src_offset,
                    dst,
                    dst_offset,
                    len,
                } => Lowered::Copy {
                    src: f(*src)?.buffer().clone(),
                    src_offset: *src_offset as u64 * 4,
                    dst: f(*dst)?.buffer().clone(),
                    dst_offset: *dst_offset as u64 * 4,
                    bytes: *len as u64 * 4,
                },
                Op::Zero { dst } => Lowered::Zero(f(*dst)?.buffer().clone()),
                Op::Optimize { config, params } => {
                    let clip = match config.clip {
                        Some(max) => {
                            let grads = params
                                .iter()
                                .map(|(_, _, g)| f(*g))
                                .collect::<Result<Vec<_>>>()?;
                            Some(ClipPlan::new(&gpu, &grads, max)?)
                        }
                        None => None,
                    };
                    let slots_per = config.optimizer.slots();
                    let mut plans = Vec::new();
                    for (name, p, g) in params {
                        let param = f(*p)?;
                        let state = match (slots_per, self.optim.get(name)) {
                            (0, _) => None,
                            (_, Some(s)) if s.len() == slots_per * param.len() => Some(s.clone()),
                            _ => Some(GpuTensor::zeros(&gpu, &[slots_per * param.len()])?),
                        };
                        let plan = OptimPlan::new(
                            &gpu,
                            &config.optimizer,
                            param,
                            f(*g)?,
                            state.as_ref(),
                            clip.as_ref(),
                        )
                        .with_context(|| format!("planning the update of {name}"))?;
                        if let Some(s) = state {
                            self.optim.insert(name.clone(), s);
                        }
                        plans.push(plan);
                    }
                    Lowered::Optimize(GpuOptimizer {
                        config: *config,
                        clip,
                        plans,
                    })
                }
            };
            lowered.push(low);
        }
        // The copies and row masks of the dropout between a stack's layers are lowered as
        // they are, but recorded after the stack's forward: they read the outputs it writes.
        let deferred = stacks
            .top
            .values()
            .flat_map(|s| &s.dropout)
            .flat_map(|d| d.ops);
        for k in deferred {
            let low = std::mem::replace(&mut lowered[k], Lowered::StackedForward);
            lowered[k] = Lowered::Deferred(Box::new(low));
        }
        Ok(lowered)
    }

    /// A stack's forward ops (bottom first) lowered to a [`RecurrentStack`].
    fn stack_lowered(
        &self,
        program: &Program,
        stack: &StackOps,
        slots: &[Slot],
        scratch: &mut Vec<GpuTensor>,
    ) -> Result<Lowered> {
        let backwards = program.recurrent_backwards();
        let layers = &stack.layers;
        let ops = layers
            .iter()
            .map(|&i| {
                let fw = program.recurrent_forward(OpId(i))?;
                Ok((fw, backwards.get(&OpId(i)).copied()))
            })
            .collect::<Result<Vec<_>>>()?;
        let bias_scratch = self.bias_scratch(&ops)?;
        let parts = self.direction_specs(&ops, slots, &bias_scratch)?;
        let f = |t: TensorId| float(&self.params, slots, t);
        let stack_layers = ops
            .iter()
            .zip(parts)
            .enumerate()
            .map(|(l, ((fw, _), direction))| {
                let input_mask = match l.checked_sub(1).and_then(|k| stack.dropout.get(k)) {
                    Some(d) => Some(InputMask {
                        mask: f(d.mask)?,
                        masked: f(d.masked)?,
                    }),
                    None => None,
                };
                Ok(StackLayer {
                    direction,
                    y: f(fw.y)?,
                    input_mask,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let (first, _) = ops[0];
        let built = RecurrentStack::new(
            &self.gpu,
            self.recurrent_kernels,
            f(first.x)?,
            &stack_layers,
        )?;
        scratch.extend(bias_scratch.into_iter().flatten());
        Ok(Lowered::Stack {
            stack: Box::new(built),
            lengths: first.lengths,
            applied: None,
            after: stack.dropout.iter().flat_map(|d| d.ops).collect(),
        })
    }

    /// Scratch for the bias gradients of each of `directions` that has no biases (keep it
    /// alive with the plans).
    fn bias_scratch(&self, directions: &[Direction]) -> Result<Vec<Option<GpuTensor>>> {
        directions
            .iter()
            .map(|(fw, backward)| match backward {
                Some(b) if b.db_ih.is_none() => {
                    GpuTensor::zeros(&self.gpu, &[fw.shape.gate_width()]).map(Some)
                }
                _ => Ok(None),
            })
            .collect()
    }

    /// What the plan of each of `directions` takes; bias gradients without a tensor land in
    /// `bias_scratch` ([`Self::bias_scratch`]).
    fn direction_specs<'a>(
        &'a self,
        directions: &[Direction],
        slots: &'a [Slot],
        bias_scratch: &'a [Option<GpuTensor>],
    ) -> Result<Vec<DirectionSpec<'a>>> {
        let f = |t: TensorId| float(&self.params, slots, t);
        let mut parts = Vec::with_capacity(directions.len());
        for ((fw, backward), bias_scratch) in directions.iter().zip(bias_scratch) {
            let weights = GpuWeights {
                w_ih: f(fw.w_ih)?,
                w_hh: f(fw.w_hh)?,
                b_ih: fw.b_ih.map(f).transpose()?,
                b_hh: fw.b_hh.map(f).transpose()?,
            };
            let grads = match backward {
                Some(b) => {
                    let db = |t: Option<TensorId>| -> Result<&GpuTensor> {
                        match t {
                            Some(t) => f(t),
                            None => bias_scratch
                                .as_ref()
                                .ok_or_else(|| err!(Invalid, "bias gradient scratch")),
                        }
                    };
                    Some((
                        GpuGrads {
                            dx: f(b.dx)?,
                            accumulate_dx: b.accumulate_dx,
                            dw_ih: f(b.dw_ih)?,
                            dw_hh: f(b.dw_hh)?,
                            db_ih: db(b.db_ih)?,
                            db_hh: db(b.db_hh)?,
                        },
                        b.dy.map(f).transpose()?,
                    ))
                }
                None => None,
            };
            parts.push(DirectionSpec {
                shape: fw.shape,
                weights,
                grads,
                state: f(fw.state)?,
                recurrent_mask: fw.recurrent_mask.map(f).transpose()?,
            });
        }
        Ok(parts)
    }

    /// A recurrent forward op lowered: one direction to a plan, or a pair's two directions
    /// (first direction first) to a [`RecurrentPair`].
    fn recurrent_lowered(
        &self,
        directions: &[Direction],
        slots: &[Slot],
        scratch: &mut Vec<GpuTensor>,
    ) -> Result<Lowered> {
        let f = |t: TensorId| float(&self.params, slots, t);
        let bias_scratch = self.bias_scratch(directions)?;
        let parts = self.direction_specs(directions, slots, &bias_scratch)?;
        let (fw, _) = directions[0];
        let low = match parts[..] {
            [p] => Lowered::Recurrent {
                plan: Box::new(RecurrentPlan::new(
                    &self.gpu,
                    self.recurrent_kernels,
                    p.shape,
                    f(fw.x)?,
                    f(fw.y)?,
                    p.weights,
                    p.grads,
                    p.state,
                    p.recurrent_mask,
                )?),
                lengths: fw.lengths,
                applied: None,
            },
            [a, b] => Lowered::Pair {
                pair: Box::new(RecurrentPair::new(
                    &self.gpu,
                    self.recurrent_kernels,
                    f(fw.x)?,
                    f(fw.y)?,
                    [a, b],
                )?),
                lengths: fw.lengths,
                applied: None,
            },
            _ => bail!(Invalid, "a recurrent op lowers one or two directions"),
        };
        scratch.extend(bias_scratch.into_iter().flatten());
        Ok(low)
    }
}

/// A recurrent forward op and its backward op, if any.
type Direction<'p> = (
    &'p RecurrentForward,
    Option<&'p crate::ops::program::RecurrentBackward>,
);

/// Whether `RECUR_DIRECTIONS=separate` asks for each direction of a bidirectional layer to
/// run on its own (for comparisons; [`RecurrentKernels::separate_directions`] in code).
fn separate_by_env() -> bool {
    std::env::var("RECUR_DIRECTIONS").is_ok_and(|v| v == "separate")
}

/// The bidirectional layers of a program whose two directions run as one
/// [`RecurrentPair`], by op index.
#[derive(Default)]
struct Pairs {
    /// The first direction's forward ops (each lowers to `PairedForward`).
    first_forward: BTreeSet<usize>,
    /// Second direction's forward op -> first's.
    second_forward: BTreeMap<usize, usize>,
    /// The first of a pair's backward ops -> (the second forward op, which lowers the pair;
    /// the direction of this op's forward: 0 or 1).
    first_backward: BTreeMap<usize, (usize, usize)>,
    /// The second of a pair's backward ops (each lowers to `PairedBackward`).
    second_backward: BTreeSet<usize>,
}

/// Finds the pairs: two forward ops of one layer's directions, as `nn::Recurrent` records
/// them. They read the same input and lengths and write the same output, the second's
/// columns after the first's, with the same cell, sizes and dropout; only the second
/// direction's initial-state copies and dropout mask may stand between them, since the pair
/// runs both at the second op. Their backward ops, if any, are adjacent, in either order,
/// and read the same output gradient and write the same input gradient. And the pair's
/// buffers, twice a direction's, must `fit` the device.
fn pairs(program: &Program, fits: impl Fn(usize, &RecurrentForward) -> bool) -> Pairs {
    let ops = program.ops();
    let backwards = program.recurrent_backwards();
    let mut out = Pairs::default();
    let mut i = 0;
    while i < ops.len() {
        let Op::RecurrentForward(a) = &ops[i] else {
            i += 1;
            continue;
        };
        let Some((j, b, None)) = next_forward(ops, i) else {
            i += 1;
            continue;
        };
        let forwards_pair = fits(i, a)
            && program.phase_of(OpId(i)) == program.phase_of(OpId(j))
            && (a.x, a.y, a.lengths) == (b.x, b.y, b.lengths)
            && a.state != b.state
            && a.shape.pairs_with(&b.shape)
            && a.recurrent_mask.is_some() == b.recurrent_mask.is_some();
        // The backward ops: both or neither, adjacent, the same gradients in and out.
        let position = |f: usize| backward_position(ops, f);
        let backward = match (backwards.get(&OpId(i)), backwards.get(&OpId(j))) {
            (None, None) => Some(None),
            (Some(ba), Some(bb)) if (ba.dy, ba.dx) == (bb.dy, bb.dx) => {
                match (position(i), position(j)) {
                    (Some(p), Some(q)) if p + 1 == q => Some(Some((p, q, 0))),
                    (Some(p), Some(q)) if q + 1 == p => Some(Some((q, p, 1))),
                    _ => None,
                }
            }
            _ => None,
        };
        match (forwards_pair, backward) {
            (true, Some(backward)) => {
                out.first_forward.insert(i);
                out.second_forward.insert(j, i);
                if let Some((first, second, direction)) = backward {
                    out.first_backward.insert(first, (j, direction));
                    out.second_backward.insert(second);
                }
                i = j + 1;
            }
            _ => i += 1,
        }
    }
    out
}

fn float<'a>(
    params: &'a BTreeMap<String, GpuTensor>,
    slots: &'a [Slot],
    t: TensorId,
) -> Result<&'a GpuTensor> {
    match &slots[t.0] {
        Slot::Float(g) => Ok(g),
        Slot::Param(name) => params
            .get(name)
            .ok_or_else(|| err!(Invalid, "parameter {name} is not on the device")),
        _ => bail!(Shape, "tensor {} does not hold float values", t.0),
    }
}

fn ids_of(slots: &[Slot], t: TensorId) -> Result<&EmbeddingIds> {
    match &slots[t.0] {
        Slot::Ids(ids) => Ok(ids),
        _ => bail!(Invalid, "tensor {} is not declared as ids", t.0),
    }
}

impl Executor for GpuExecutor {
    fn describe(&self) -> String {
        let info = self.gpu.info();
        format!("{} ({:?})", info.name, info.backend)
    }

    fn load(&mut self, program: Program) -> Result<ProgramId> {
        check::check(&program)?;
        let gpu = self.gpu.clone();
        let mut slots = Vec::with_capacity(program.tensors().len());
        for t in program.tensors() {
            let slot = match (&t.kind, t.dtype) {
                (Kind::Param(name), _) => {
                    match self.params.get(name) {
                        Some(have) => ensure!(
                            have.shape() == t.shape.as_slice(),
                            Shape,
                            "parameter {name} has shape {:?}, the program declares {:?}",
                            have.shape(),
                            t.shape
                        ),
                        None => {
                            let z = GpuTensor::zeros(&gpu, &t.shape)
                                .with_context(|| format!("parameter {name}"))?;
                            self.params.insert(name.clone(), z);
                        }
                    }
                    Slot::Param(name.clone())
                }
                (Kind::Ids(spec), _) => Slot::Ids(EmbeddingIds::new(&gpu, spec, t.len())?),
                (Kind::Lengths, _) => Slot::Lengths {
                    lengths: Vec::new(),
                    version: 0,
                },
                (_, DType::U32) => Slot::U32(GpuTensor::zeros(&gpu, &t.shape)?),
                (Kind::Const(v), DType::Float) => {
                    Slot::Float(GpuTensor::filled(&gpu, &t.shape, *v)?)
                }
                (_, DType::Float) => {
                    Slot::Float(GpuTensor::zeros(&gpu, &t.shape).with_context(|| t.label.clone())?)
                }
            };
            slots.push(slot);
        }
        let mut scratch = Vec::new();
        let lowered = self.lower(&program, &slots, &mut scratch)?;
        let mut staging = BTreeMap::new();
        for phase in 0..program.phases() {
            let bufs = program
                .readbacks(phase)
                .iter()
                .map(|&t| {
                    let bytes = (program.tensor(t).len().max(1) * 4) as u64;
                    let buf = gpu.device().create_buffer(&wgpu::BufferDescriptor {
                        label: Some("recur.exec.readback"),
                        size: bytes,
                        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: false,
                    });
                    (t, buf)
                })
                .collect();
            staging.insert(phase, bufs);
        }
        self.programs.push(Loaded {
            u32_checks: check::u32_checks(&program),
            program,
            slots,
            lowered,
            staging,
            staged: BTreeMap::new(),
            _scratch: scratch,
        });
        Ok(ProgramId(self.programs.len() - 1))
    }

    fn program(&self, p: ProgramId) -> &Program {
        &self.programs[p.0].program
    }

    fn write(&mut self, p: ProgramId, t: TensorId, offset: usize, data: &[f32]) -> Result<()> {
        let l = self.loaded(p)?;
        let tensor = float(&self.params, &l.slots, t)?;
        ensure!(
            offset + data.len() <= tensor.len(),
            Shape,
            "writing {} values at {offset} into {} of {}",
            data.len(),
            l.program.tensor(t).label,
            tensor.len()
        );
        tensor.write_range(offset, data)
    }

    fn write_u32(&mut self, p: ProgramId, t: TensorId, data: &[u32]) -> Result<()> {
        let l = self
            .programs
            .get_mut(p.0)
            .ok_or_else(|| err!(Invalid, "program not loaded"))?;
        let decl = l.program.tensor(t);
        let check = l.u32_checks.get(&t).copied().unwrap_or(U32Check::None);
        check::check_u32(decl, check, data)?;
        match &mut l.slots[t.0] {
            Slot::U32(g) => g.write(data),
            Slot::Ids(ids) => ids.write(data),
            Slot::Lengths { lengths, version } => {
                *lengths = data.iter().map(|&v| v as usize).collect();
                *version += 1;
                Ok(())
            }
            _ => bail!(Shape, "tensor {} does not hold u32 values", decl.label),
        }
    }

    fn run(&mut self, p: ProgramId, phase: usize, step: u64) -> Result<()> {
        let gpu = self.gpu.clone();
        let started = std::time::Instant::now();
        let mut rec = if self.timed {
            Recorder::timed(&gpu)
        } else {
            Recorder::new(&gpu)
        };
        self.record_phase(p, phase, step, &mut rec, None)?;
        let l = self
            .programs
            .get_mut(p.0)
            .ok_or_else(|| err!(Invalid, "program not loaded"))?;
        let staging = l.staging.get(&phase).map(Vec::as_slice).unwrap_or(&[]);
        for (t, buf) in staging {
            let src = float(&self.params, &l.slots, *t)?;
            rec.copy(src.buffer(), 0, buf, 0, buf.size());
        }
        let report = rec.submit()?;
        self.last = RunReport {
            dispatches: report.dispatches,
            submits: 1,
            device_seconds: report.gpu_seconds,
            encode_seconds: started.elapsed().as_secs_f64(),
        };
        for (t, buf) in staging {
            gpu.count(|c| c.readbacks += 1);
            let bytes = crate::gpu::readback::map_and_copy(&gpu, buf)?;
            let n = l.program.tensor(*t).len();
            let values: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes[..n * 4]);
            l.staged.insert(*t, values);
        }
        Ok(())
    }

    fn read(&mut self, p: ProgramId, t: TensorId, offset: usize, len: usize) -> Result<Vec<f32>> {
        let l = self.loaded(p)?;
        if let Some(v) = l.staged.get(&t) {
            ensure!(
                offset + len <= v.len(),
                Shape,
                "reading past the end of a tensor"
            );
            return Ok(v[offset..offset + len].to_vec());
        }
        let tensor = float(&self.params, &l.slots, t)?;
        ensure!(
            offset + len <= tensor.len(),
            Shape,
            "reading {len} values at {offset} from {} of {}",
            l.program.tensor(t).label,
            tensor.len()
        );
        tensor.read_range(offset, len)
    }

    fn set_param(&mut self, name: &str, shape: &[usize], data: &[f32]) -> Result<()> {
        match self.params.get(name) {
            Some(t) => {
                ensure!(
                    t.shape() == shape,
                    Shape,
                    "parameter {name} has shape {:?}, not {shape:?}",
                    t.shape()
                );
                t.write(data)
            }
            None => {
                let t = GpuTensor::from_slice(&self.gpu, shape, data)?;
                self.params.insert(name.to_string(), t);
                Ok(())
            }
        }
    }

    fn param(&mut self, name: &str) -> Result<Vec<f32>> {
        self.params
            .get(name)
            .ok_or_else(|| err!(Invalid, "no parameter {name}"))?
            .to_vec()
    }

    fn optimizer_state(&mut self) -> Result<BTreeMap<String, Vec<f32>>> {
        self.optim
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.to_vec()?)))
            .collect()
    }

    fn set_optimizer_state(&mut self, state: &BTreeMap<String, Vec<f32>>) -> Result<()> {
        for (k, v) in state {
            match self.optim.get(k) {
                Some(t) => t.write(v)?,
                None => {
                    let t = GpuTensor::from_slice(&self.gpu, &[v.len()], v)?;
                    self.optim.insert(k.clone(), t);
                }
            }
        }
        Ok(())
    }

    fn memory_bytes(&self) -> u64 {
        let params: u64 = self.params.values().map(|t| t.device_bytes()).sum();
        let optim: u64 = self.optim.values().map(|t| t.device_bytes()).sum();
        let work: u64 = self
            .programs
            .iter()
            .flat_map(|l| &l.slots)
            .map(|s| match s {
                Slot::Float(t) => t.device_bytes(),
                Slot::U32(t) => t.device_bytes(),
                _ => 0,
            })
            .sum();
        let plans: u64 = self
            .programs
            .iter()
            .flat_map(|l| &l.lowered)
            .map(|low| match low {
                Lowered::Recurrent { plan, .. } => plan.workspace_bytes(),
                Lowered::Pair { pair, .. } => pair.workspace_bytes(),
                Lowered::Stack { stack, .. } => stack.workspace_bytes(),
                _ => 0,
            })
            .sum();
        params + optim + work + plans
    }

    fn last_run(&self) -> RunReport {
        self.last
    }

    fn set_timing(&mut self, on: bool) {
        self.timed = on;
    }
}

impl Lowered {
    /// Records a copy or a row mask: the ops a stack may defer to after its forward.
    fn record_copy_or_row_mask(&self, rec: &mut Recorder) -> Result<()> {
        match self {
            Lowered::Copy {
                src,
                src_offset,
                dst,
                dst_offset,
                bytes,
            } => rec.copy(src, *src_offset, dst, *dst_offset, *bytes),
            Lowered::RowMask(plan) => plan.record(rec),
            _ => bail!(
                Invalid,
                "only copies and row masks are recorded after a stack"
            ),
        }
        Ok(())
    }
}

/// The unidirectional stacks of a program whose layers run as one [`RecurrentStack`], by op
/// index.
#[derive(Default)]
struct Stacks {
    /// The top layer's forward op -> the stack.
    top: BTreeMap<usize, StackOps>,
    /// The forward ops of the layers below the top (each lowers to `StackedForward`).
    below: BTreeSet<usize>,
    /// The first of a stack's backward ops -> the top forward op, which lowers the stack.
    first_backward: BTreeMap<usize, usize>,
    /// The other backward ops of the stacks, and the row masks between them, which the
    /// stack's waves apply (each lowers to `StackedBackward`).
    other_backward: BTreeSet<usize>,
}

/// One stack's forward ops, bottom first, and the dropout before each layer above the first
/// (all or none).
struct StackOps {
    layers: Vec<usize>,
    dropout: Vec<InputDropout>,
}

/// Finds the stacks: runs of two or more forward ops of unidirectional layers, as
/// `nn::Recurrent` records them, each reading the output of the one before
/// ([`RecurrentStack::stacks_on`]), directly or through a dropout row mask (every layer above
/// the first or none), in the same phase with the same lengths, both or neither a recurrent
/// dropout mask, biases and a backward. Only a layer's initial-state copies, recurrent
/// dropout mask and that input dropout may stand between two of them ([`next_forward`]),
/// since the stack runs every layer at the top one's op; the copies and row masks of the
/// input dropout are recorded after it. Their backward ops, if any, must be as
/// [`stack_backward`] says: the stack runs all of them at the first. `wanted` says whether a
/// run of that many layers of the first one's shape (with a backward where its second
/// argument) should be a stack at all.
fn stacks(program: &Program, wanted: impl Fn(&RecurrentForward, bool, usize) -> bool) -> Stacks {
    let ops = program.ops();
    let backwards = program.recurrent_backwards();
    let whole =
        |fw: &RecurrentForward| fw.shape.out_offset == 0 && fw.shape.out_stride == fw.shape.hidden;
    // The forward op that continues a stack from op i, if any, and the dropout before it.
    let next = |i: usize,
                a: &RecurrentForward|
     -> Option<(usize, &RecurrentForward, Option<InputDropout>)> {
        let (j, b, dropout) = next_forward(ops, i)?;
        let continues = whole(b)
            && (dropout.is_some() || b.x == a.y)
            && RecurrentStack::stacks_on(&b.shape, &a.shape)
            && program.phase_of(OpId(i)) == program.phase_of(OpId(j))
            && a.lengths == b.lengths
            && a.recurrent_mask.is_some() == b.recurrent_mask.is_some()
            && (a.b_ih.is_some(), a.b_hh.is_some()) == (b.b_ih.is_some(), b.b_hh.is_some())
            && backwards.contains_key(&OpId(i)) == backwards.contains_key(&OpId(j));
        continues.then_some((j, b, dropout))
    };
    let mut out = Stacks::default();
    let mut i = 0;
    while i < ops.len() {
        let Op::RecurrentForward(a) = &ops[i] else {
            i += 1;
            continue;
        };
        if !whole(a) {
            i += 1;
            continue;
        }
        let mut layers = vec![i];
        let mut dropout: Vec<Option<InputDropout>> = Vec::new();
        let mut last = a;
        while let Some((j, b, d)) = next(*layers.last().expect("one layer"), last) {
            // Every layer above the first through dropout, or none: the waves apply one
            // rule to all.
            if dropout
                .first()
                .is_some_and(|first| first.is_some() != d.is_some())
            {
                break;
            }
            layers.push(j);
            dropout.push(d);
            last = b;
        }
        let dropout: Vec<InputDropout> = dropout.into_iter().flatten().collect();
        let top = *layers.last().expect("one layer");
        let backward = stack_backward(program, &layers, &dropout);
        if layers.len() >= 2
            && backward.is_some()
            && wanted(a, backwards.contains_key(&OpId(i)), layers.len())
        {
            if let Some(Some((first, others))) = backward {
                out.first_backward.insert(first, top);
                out.other_backward.extend(others);
            }
            out.below.extend(layers[..layers.len() - 1].iter().copied());
            out.top.insert(top, StackOps { layers, dropout });
        }
        i = top + 1;
    }
    out
}

/// The backward ops of the stack whose forward ops are `layers` (bottom first), with
/// `dropout` before each layer above the first (or none): `Some(None)` where there are none;
/// `Some(Some((first, others)))` where they are adjacent, the top layer's first and each
/// below it next (with `dropout`, each but the first layer's followed by the row mask over
/// its input gradient: the waves write that gradient masked, so these row masks are among
/// `others`), each layer below the top reading as its output gradient the input gradient of
/// the one above, which no layer adds to; `None` otherwise (the layers then run one by one).
fn stack_backward(
    program: &Program,
    layers: &[usize],
    dropout: &[InputDropout],
) -> Option<Option<(usize, Vec<usize>)>> {
    let ops = program.ops();
    let backwards = program.recurrent_backwards();
    let position = |f: usize| backward_position(ops, f);
    if !layers.iter().any(|&f| backwards.contains_key(&OpId(f))) {
        return Some(None);
    }
    let top_first: Vec<usize> = layers
        .iter()
        .rev()
        .map(|&f| position(f))
        .collect::<Option<_>>()?;
    let mut others = Vec::new();
    // Top first: the layer at top_first[k] is layers[len - 1 - k], whose input dropout (if
    // any) is dropout[len - 2 - k].
    for (k, w) in top_first.windows(2).enumerate() {
        let above = layers[layers.len() - 1 - k];
        let row_mask = match dropout.get(layers.len() - 2 - k) {
            None => None,
            Some(d) => {
                let dx = backwards.get(&OpId(above))?.dx;
                let at = w[0] + 1;
                match &ops[at] {
                    Op::RowMask { mask, x, .. } if *mask == d.mask && *x == dx => Some(at),
                    _ => return None,
                }
            }
        };
        let next = row_mask.map_or(w[0] + 1, |r| r + 1);
        if w[1] != next {
            return None;
        }
        others.extend(row_mask);
        others.push(w[1]);
    }
    let chained = layers.windows(2).all(|w| {
        let (below, above) = (backwards.get(&OpId(w[0])), backwards.get(&OpId(w[1])));
        matches!((below, above), (Some(b), Some(a)) if b.dy == Some(a.dx) && !a.accumulate_dx)
    });
    chained.then(|| Some((top_first[0], others)))
}

/// The dropout between two layers of a stack, as `nn::Recurrent` records it before the upper
/// layer's forward: a mask, a copy of the lower layer's output, and a row mask over the copy.
#[derive(Clone, Copy, Debug, PartialEq)]
struct InputDropout {
    /// `[B, features]`.
    mask: TensorId,
    /// The upper layer's input: the copy the row mask is applied to.
    masked: TensorId,
    /// The copy and the row mask, which a stack records after its forward.
    ops: [usize; 2],
}

/// The recurrent forward op after op `i` that only its own initial-state copies, recurrent
/// dropout mask and input dropout stand between (the ops `nn::Recurrent` records before a
/// layer-direction's forward), with its index and that input dropout, if any (its copy then
/// reads op `i`'s output); `None` where another op comes first.
fn next_forward(ops: &[Op], i: usize) -> Option<(usize, &RecurrentForward, Option<InputDropout>)> {
    let Some(Op::RecurrentForward(a)) = ops.get(i) else {
        return None;
    };
    let mut j = i + 1;
    while j < ops.len()
        && matches!(
            ops[j],
            Op::Copy { .. } | Op::DropoutMask { .. } | Op::RowMask { .. }
        )
    {
        j += 1;
    }
    let Some(Op::RecurrentForward(b)) = ops.get(j) else {
        return None;
    };
    // The row mask over b's input, and the copy that fills that input from a's output.
    let row_mask = (i + 1..j).find_map(|k| match &ops[k] {
        Op::RowMask {
            mask,
            x,
            steps,
            batch_first,
        } if *x == b.x && *steps == b.shape.steps && *batch_first == b.shape.batch_first => {
            Some((k, *mask))
        }
        _ => None,
    });
    let whole = b.shape.rows() * b.shape.input;
    let input_copy = (i + 1..j).find(|&k| {
        matches!(&ops[k], Op::Copy { src, src_offset: 0, dst, dst_offset: 0, len }
            if *src == a.y && *dst == b.x && *len == whole)
    });
    let dropout = match (row_mask, input_copy) {
        (Some((r, mask)), Some(c)) if c < r => Some(InputDropout {
            mask,
            masked: b.x,
            ops: [c, r],
        }),
        _ => None,
    };
    let between_serves_b = (i + 1..j).all(|k| match &ops[k] {
        Op::Copy { dst, .. } if *dst == b.state => true,
        Op::DropoutMask { mask, .. } => {
            Some(*mask) == b.recurrent_mask || dropout.is_some_and(|d| d.mask == *mask)
        }
        _ => dropout.is_some_and(|d| d.ops.contains(&k)),
    });
    between_serves_b.then_some((j, b, dropout))
}

/// Where the backward op of forward op `f` stands in `ops`, if it has one.
fn backward_position(ops: &[Op], f: usize) -> Option<usize> {
    ops.iter()
        .position(|op| matches!(op, Op::RecurrentBackward(r) if r.forward == OpId(f)))
}
