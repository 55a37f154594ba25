//! `recur bench rnn --plan`: the cost table of a recurrent stack's forward and backward,
//! summed from the dispatches its plans record (see `src/gpu/cost.rs`), with the roofline
//! time of each kernel on a named GPU (`src/apps/bench/roofline.rs`). Nothing is submitted.

use crate::error::Result;
use serde::Serialize;

use super::recurrent::RecurrentCase;
use super::roofline::{GpuPeak, LAUNCH_SECONDS};
use crate::exec::{Executor, GpuExecutor, OpCosts};
use crate::gpu::recurrent::{RecurrentKernels, StackSchedule};
use crate::gpu::{cost, Cost, DispatchCost, Gpu, KernelCost};
use crate::nn::Recurrent;
use crate::ops::program::ProgramBuilder;

/// One row of a cost table: a kernel (or a total) with its counts and modelled time.
#[derive(Clone, Debug, Serialize)]
pub struct PlanRow {
    /// The kernel's name, dispatches, workgroups and summed FLOPs and bytes (flattened into
    /// the row when serialised).
    #[serde(flatten)]
    pub counts: KernelCost,
    /// Modelled seconds on the table's GPU.
    pub seconds: f64,
    /// What most of the modelled time is: "launch", "memory" or "compute".
    pub limit: &'static str,
}

/// The kernels of one phase (forward or backward) and their total.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseTable {
    /// One row per kernel, in the order each first appears in the phase.
    pub rows: Vec<PlanRow>,
    /// Every dispatch of the phase summed, under the kernel name "total".
    pub total: PlanRow,
}

/// Forward and backward of one case on one GPU.
#[derive(Clone, Debug, Serialize)]
pub struct PlanTable {
    /// The recurrent stack and shape modelled.
    pub case: RecurrentCase,
    /// The GPU whose peak figures the times are modelled on.
    pub gpu: GpuPeak,
    /// The launch cost assumed per dispatch, in seconds ([`LAUNCH_SECONDS`]).
    pub launch_seconds: f64,
    /// The forward's kernels.
    pub forward: PhaseTable,
    /// The backward's kernels (every input and weight gradient).
    pub backward: PhaseTable,
    /// A forward planned without a backward (inference, as under PyTorch's `no_grad`): the
    /// same kernels, writing only what the forward itself reads back.
    pub inference: PhaseTable,
    /// The same work under other schedules ([`schedules`]), "as recorded" first.
    pub schedules: Vec<ScheduleRow>,
}

/// One schedule of a case's work: dispatches and modelled seconds per phase.
#[derive(Clone, Debug, Serialize)]
pub struct ScheduleRow {
    /// What the schedule does ([`ScheduleRow::AS_RECORDED`], [`ScheduleRow::DIRECTIONS`],
    /// [`ScheduleRow::WAVEFRONT`]).
    pub schedule: &'static str,
    /// The forward's dispatches and modelled seconds.
    pub forward: (u64, f64),
    /// The backward's.
    pub backward: (u64, f64),
}

impl ScheduleRow {
    /// The plans' dispatches as recorded (a bidirectional layer's directions together unless
    /// `RECUR_DIRECTIONS=separate`; a unidirectional stack's layers as a wavefront where the
    /// rule or `RECUR_STACK` says so, else one after another).
    pub const AS_RECORDED: &'static str = "as recorded";
    /// The plans recorded layer by layer, where the recording is a wavefront: what the
    /// schedules after it regroup.
    pub const LAYERS: &'static str = "layer by layer";
    /// Both directions of each bidirectional layer in one dispatch per step, where the
    /// plans ran them apart (`RECUR_DIRECTIONS=separate`); by default they are already one.
    pub const DIRECTIONS: &'static str = "both directions of a layer in one dispatch";
    /// A wavefront over the layers of a unidirectional stack.
    pub const WAVEFRONT: &'static str = "wavefront: layer l's step t beside layer l+1's step t-1";
}

fn row(kernel: String, dispatches: &[&DispatchCost], peak: &GpuPeak) -> PlanRow {
    let (mut launch, mut memory, mut compute) = (0.0, 0.0, 0.0);
    for d in dispatches {
        let busy = peak.dispatch_seconds(d) - LAUNCH_SECONDS;
        launch += LAUNCH_SECONDS;
        if peak.memory_bound(d) {
            memory += busy;
        } else {
            compute += busy;
        }
    }
    let limit = if launch >= memory && launch >= compute {
        "launch"
    } else if memory >= compute {
        "memory"
    } else {
        "compute"
    };
    PlanRow {
        counts: KernelCost::sum(kernel, dispatches.iter().copied()),
        seconds: launch + memory + compute,
        limit,
    }
}

/// Rows per kernel (in the order each first appears) and the total of `dispatches`.
pub fn phase(dispatches: &[DispatchCost], peak: &GpuPeak) -> PhaseTable {
    let rows = cost::group_by_kernel(dispatches)
        .into_iter()
        .map(|(name, list)| row(name.to_string(), &list, peak))
        .collect();
    let all: Vec<&DispatchCost> = dispatches.iter().collect();
    PhaseTable {
        rows,
        total: row("total".into(), &all, peak),
    }
}

/// Builds the case's stack on `gpu` (as the benchmark does, with gradients), records a
/// forward and a backward without submitting them, and models them on `peak`.
///
/// The other schedules are regroupings of the stack recorded layer by layer
/// ([`StackSchedule::Layers`]). Where the plans record a wavefront instead, the schedules
/// start with the plans "as recorded", then that recording as "layer by layer".
pub fn plan_table(gpu: &Gpu, case: &RecurrentCase, peak: &GpuPeak) -> Result<PlanTable> {
    let (forward_ops, backward_ops) = op_costs(gpu, case, None, true)?;
    let (forward, backward) = (recorded(&forward_ops), recorded(&backward_ops));
    let inference = recorded(&op_costs(gpu, case, None, false)?.0);
    let (layer_forward, layer_backward) = op_costs(gpu, case, Some(StackSchedule::Layers), true)?;
    let mut rows = schedules(&layer_forward, &layer_backward, peak);
    if (forward.len(), backward.len()) != (rows[0].forward.0 as usize, rows[0].backward.0 as usize)
    {
        rows[0].schedule = ScheduleRow::LAYERS;
        rows.insert(
            0,
            ScheduleRow {
                schedule: ScheduleRow::AS_RECORDED,
                forward: (forward.len() as u64, seconds(&forward, peak)),
                backward: (backward.len() as u64, seconds(&backward, peak)),
            },
        );
    }
    Ok(PlanTable {
        case: *case,
        gpu: *peak,
        launch_seconds: LAUNCH_SECONDS,
        forward: phase(&forward, peak),
        backward: phase(&backward, peak),
        inference: phase(&inference, peak),
        schedules: rows,
    })
}

/// The dispatches of the case's forward and backward by op, recorded (never submitted) on
/// `gpu` with the stack schedule `stack` (`None`: the executor's rule). Without `backward`,
/// the forward of a program that has none (no dropout either), and no backward dispatches.
fn op_costs(
    gpu: &Gpu,
    case: &RecurrentCase,
    stack: Option<StackSchedule>,
    backward: bool,
) -> Result<(Vec<OpCosts>, Vec<OpCosts>)> {
    let layer = Recurrent::new(case.config(), 11)?;
    let mut exec = GpuExecutor::new(gpu);
    exec.set_recurrent_kernels(RecurrentKernels {
        stack,
        ..Default::default()
    });
    for (name, t) in layer.params() {
        exec.set_param(name, &t.shape, &t.data)?;
    }
    // Phase 0 the forward, phase 1 the backward with every gradient.
    let (b, t, c) = (case.batch, case.steps, &layer.config);
    let mut p = ProgramBuilder::new();
    let input = p.input("input", &[b * t, c.input_size]);
    // With dropout, a training step's program (any seed: the masks' values cost nothing).
    let seed = (backward && case.dropout > 0.0).then_some(1);
    let rec = layer.record_forward(&mut p, "", input, b, t, None, seed)?;
    if !backward {
        let program = exec.load(p.finish())?;
        return Ok((exec.phase_costs_by_op(program, 0)?, Vec::new()));
    }
    p.next_phase();
    let d_out = p.input("output gradient", &[b * t, c.output_size()]);
    layer.record_backward(&mut p, &rec, Some(d_out))?;
    let program = exec.load(p.finish())?;
    Ok((
        exec.phase_costs_by_op(program, 0)?,
        exec.phase_costs_by_op(program, 1)?,
    ))
}

impl PlanTable {
    /// The table as Markdown: one section per phase, then forward + backward.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "{} on {} (modelled; {:.0} us launch per dispatch)\n\n\
             | kernel | dispatches | workgroups x invocations | GFLOP | MB read | MB distinct read | MB written | modelled ms | limit |\n\
             |---|---:|---|---:|---:|---:|---:|---:|---|\n",
            self.case.label(),
            self.gpu.name,
            self.launch_seconds * 1e6
        );
        let line = |row: &PlanRow, phase: &str| {
            let r = &row.counts;
            let wg = if r.workgroups_min == r.workgroups_max {
                r.workgroups_min.to_string()
            } else {
                format!("{}-{}", r.workgroups_min, r.workgroups_max)
            };
            let inv = r.invocations.map_or("-".to_string(), |i| i.to_string());
            let name = if r.kernel == "total" {
                format!("**{phase} total**")
            } else {
                format!("{phase}: {}", r.kernel)
            };
            format!(
                "| {name} | {} | {wg} x {inv} | {:.3} | {:.2} | {:.2} | {:.2} | {:.3} | {} |\n",
                r.dispatches,
                r.cost.flops / 1e9,
                r.cost.bytes_read / 1e6,
                r.cost.unique_read / 1e6,
                r.cost.bytes_written / 1e6,
                row.seconds * 1e3,
                row.limit
            )
        };
        for (name, p) in [("forward", &self.forward), ("backward", &self.backward)] {
            for r in &p.rows {
                s.push_str(&line(r, name));
            }
            s.push_str(&line(&p.total, name));
        }
        let (f, b) = (&self.forward.total, &self.backward.total);
        let cost = f.counts.cost + b.counts.cost;
        s.push_str(&format!(
            "| **forward + backward** | {} | | {:.3} | {:.2} | {:.2} | {:.2} | {:.3} | |\n",
            f.counts.dispatches + b.counts.dispatches,
            cost.flops / 1e9,
            cost.bytes_read / 1e6,
            cost.unique_read / 1e6,
            cost.bytes_written / 1e6,
            (f.seconds + b.seconds) * 1e3
        ));
        s.push_str(&line(
            &self.inference.total,
            "inference (forward without a backward)",
        ));
        if self.schedules.len() > 1 {
            s.push_str(
                "\nThe same work under other schedules (modelled as above; see `schedules` in \
                 src/apps/bench/plan.rs for what each assumes):\n\n\
                 | schedule | forward dispatches | forward ms | f+b dispatches | f+b ms |\n\
                 |---|---:|---:|---:|---:|\n",
            );
            for r in &self.schedules {
                s.push_str(&format!(
                    "| {} | {} | {:.3} | {} | {:.3} |\n",
                    r.schedule,
                    r.forward.0,
                    r.forward.1 * 1e3,
                    r.forward.0 + r.backward.0,
                    (r.forward.1 + r.backward.1) * 1e3
                ));
            }
        }
        s
    }
}

/// Modelled seconds of `dispatches`, one after another.
fn seconds(dispatches: &[DispatchCost], peak: &GpuPeak) -> f64 {
    dispatches.iter().map(|d| peak.dispatch_seconds(d)).sum()
}

/// Whether `d` is one of a recurrent op's step, finishing or sequence dispatches: the ones a
/// fused schedule merges.
fn is_step(d: &DispatchCost) -> bool {
    d.kernel.family == "recurrent" && d.kernel.entry != "transpose_weights"
}

/// One dispatch doing `parts` side by side, in workgroups of their own: workgroups and costs
/// summed.
fn side_by_side(parts: &[DispatchCost]) -> DispatchCost {
    let mut d = parts[0];
    for p in &parts[1..] {
        d.workgroups += p.workgroups;
        d.cost += p.cost;
        if d.invocations != p.invocations {
            d.invocations = None;
        }
    }
    d
}

/// One dispatch doing `parts` in turn within the same workgroups (a sequence kernel that
/// runs every layer of its batch tile): the most workgroups of any part, costs summed.
fn in_turn(parts: &[DispatchCost]) -> DispatchCost {
    let mut d = side_by_side(parts);
    d.workgroups = parts.iter().map(|p| p.workgroups).max().unwrap_or(0);
    d
}

/// `op`'s step dispatches in groups, one per step in recorded order (one group holding the
/// sequence kernel on that path), and its finishing dispatch (backward on the step path).
/// `None` where the dispatches do not fall into `steps` equal groups.
fn step_groups(op: &OpCosts, steps: usize) -> Option<(Vec<Vec<DispatchCost>>, Vec<DispatchCost>)> {
    let all: Vec<DispatchCost> = op.dispatches.iter().copied().filter(is_step).collect();
    if all.len() == 1 && all[0].kernel.entry.ends_with("sequence") {
        return Some((vec![all], Vec::new()));
    }
    let (body, finish) = match all.last() {
        Some(d) if d.kernel.entry.starts_with("backward_finish") => {
            (&all[..all.len() - 1], vec![all[all.len() - 1]])
        }
        _ => (&all[..], Vec::new()),
    };
    if steps == 0 || body.is_empty() || body.len() % steps != 0 {
        return None;
    }
    let per = body.len() / steps;
    Some((body.chunks(per).map(<[_]>::to_vec).collect(), finish))
}

/// The modelled totals of a case's forward and backward under each schedule that applies,
/// from the dispatches each op records. Every schedule is modelled dispatch by dispatch as
/// the cost table is, and sums the same work; only which work shares a dispatch differs:
/// - **as recorded**: today's plans.
/// - **both directions in one dispatch** (bidirectional layers recorded one direction after
///   the other, as with `RECUR_DIRECTIONS=separate`): a layer's two directions are
///   independent until their outputs meet, so each step's dispatches of the two run as one,
///   side by side (direction as a third grid dimension; a sequence kernel's two as one too).
///   Transposes and products stay as recorded. This is what
///   [`crate::gpu::recurrent::RecurrentPair`] records by default.
/// - **wavefront** (unidirectional stacks of two or more layers; in a bidirectional stack
///   layer l+1 needs every step of layer l's reverse direction before its first step): wave
///   k runs layer l's step k - l (forward) for every layer side by side. A layer above the
///   first then cannot take its input projection from one product over all steps: each of
///   its steps adds its own ([`crate::gpu::recurrent::RecurrentPlan::in_step_input_cost`])
///   and the product is dropped; in backward, each step of a layer below the top adds the
///   input gradient of the layer above at that step, and that layer's `dx` product is
///   dropped. Where every layer takes the sequence path, the wavefront is one dispatch in
///   which each workgroup runs every layer of its batch tile in turn (no workgroup may wait
///   on another), so its steps do not overlap across layers.
pub fn schedules(forward: &[OpCosts], backward: &[OpCosts], peak: &GpuPeak) -> Vec<ScheduleRow> {
    let row = |schedule, f: &[DispatchCost], b: &[DispatchCost]| ScheduleRow {
        schedule,
        forward: (f.len() as u64, seconds(f, peak)),
        backward: (b.len() as u64, seconds(b, peak)),
    };
    let mut rows = vec![row(
        ScheduleRow::AS_RECORDED,
        &recorded(forward),
        &recorded(backward),
    )];
    let others: [(&'static str, Regroup); 2] = [
        (ScheduleRow::DIRECTIONS, directions_fused),
        (ScheduleRow::WAVEFRONT, wavefront),
    ];
    for (name, schedule) in others {
        if let (Some(f), Some(b)) = (schedule(forward), schedule(backward)) {
            rows.push(row(name, &f, &b));
        }
    }
    rows
}

/// A schedule other than the recorded one: a phase's dispatches regrouped, or `None` where
/// it does not apply.
type Regroup = fn(&[OpCosts]) -> Option<Vec<DispatchCost>>;

/// Every dispatch of `ops`, in recorded order.
fn recorded(ops: &[OpCosts]) -> Vec<DispatchCost> {
    ops.iter()
        .flat_map(|o| o.dispatches.iter().copied())
        .collect()
}

/// The phase with each bidirectional layer's two directions side by side ([`schedules`]);
/// `None` where the phase has no bidirectional layer or its directions' steps differ.
fn directions_fused(ops: &[OpCosts]) -> Option<Vec<DispatchCost>> {
    let mut out = Vec::new();
    let mut fused_any = false;
    let mut i = 0;
    while i < ops.len() {
        let pair = ops.get(i + 1).and_then(|next| {
            let (a, b) = (ops[i].recurrent?, next.recurrent?);
            let paired = a.shape.out_stride == 2 * a.shape.hidden
                && a.shape.reverse != b.shape.reverse
                && a.backward == b.backward
                && (
                    a.shape.cell,
                    a.shape.input,
                    a.shape.hidden,
                    a.shape.batch,
                    a.shape.steps,
                ) == (
                    b.shape.cell,
                    b.shape.input,
                    b.shape.hidden,
                    b.shape.batch,
                    b.shape.steps,
                );
            paired.then_some(next)
        });
        let Some(next) = pair else {
            out.extend(ops[i].dispatches.iter().copied());
            i += 1;
            continue;
        };
        let steps = |o: &OpCosts| -> Vec<DispatchCost> {
            o.dispatches.iter().copied().filter(is_step).collect()
        };
        let (sa, sb) = (steps(&ops[i]), steps(next));
        if sa.len() != sb.len() || sa.iter().zip(&sb).any(|(a, b)| a.kernel != b.kernel) {
            return None;
        }
        for o in [&ops[i], next] {
            out.extend(o.dispatches.iter().copied().filter(|d| !is_step(d)));
        }
        out.extend(sa.iter().zip(&sb).map(|(a, b)| side_by_side(&[*a, *b])));
        fused_any = true;
        i += 2;
    }
    fused_any.then_some(out)
}

/// The phase as a wavefront over its layers ([`schedules`]); `None` where it does not apply:
/// fewer than two recurrent layers, a bidirectional one, or layers on different paths.
fn wavefront(ops: &[OpCosts]) -> Option<Vec<DispatchCost>> {
    let layers: Vec<(&OpCosts, crate::exec::RecurrentOpCosts)> = ops
        .iter()
        .filter_map(|o| o.recurrent.map(|r| (o, r)))
        .collect();
    if layers.len() < 2
        || layers
            .iter()
            .any(|(_, r)| r.shape.out_stride != r.shape.hidden || r.shape.reverse)
    {
        return None;
    }
    let backward = layers[0].1.backward;
    let steps = layers[0].1.shape.steps;
    // Stack order, bottom first: a backward records the top layer first.
    let mut stack = layers.clone();
    if backward {
        stack.reverse();
    }
    let top = stack.len() - 1;
    // What each layer adds to every step, and the product it no longer needs.
    let extra: Vec<Cost> = (0..stack.len())
        .map(|l| match (backward, l) {
            (false, 0) => Cost::ZERO,
            (false, l) => stack[l].1.in_step_input,
            (true, l) if l == top => Cost::ZERO,
            (true, l) => stack[l + 1].1.in_step_input,
        })
        .collect();
    let dropped = |l: usize, d: &DispatchCost| {
        l >= 1 && d.kernel.role == if backward { "dx" } else { "x W_ih^T + b_ih" }
    };
    let mut out: Vec<DispatchCost> = ops
        .iter()
        .filter(|o| o.recurrent.is_none())
        .flat_map(|o| o.dispatches.iter().copied())
        .collect();
    let mut groups = Vec::with_capacity(stack.len());
    for (l, (op, _)) in stack.iter().enumerate() {
        out.extend(
            op.dispatches
                .iter()
                .copied()
                .filter(|d| !is_step(d) && !dropped(l, d)),
        );
        groups.push(step_groups(op, steps)?);
    }
    let on_sequence_path = |(g, _): &(Vec<Vec<DispatchCost>>, Vec<DispatchCost>)| {
        g.len() == 1 && g[0].len() == 1 && g[0][0].kernel.entry.ends_with("sequence")
    };
    if groups.iter().all(on_sequence_path) {
        // One dispatch: each workgroup runs every layer of its tile, step by step.
        let parts: Vec<DispatchCost> = groups
            .iter()
            .zip(&extra)
            .map(|((g, _), e)| {
                let mut d = g[0][0];
                d.cost += e.times(steps as f64);
                d
            })
            .collect();
        out.push(in_turn(&parts));
        return Some(out);
    }
    let per = groups[0].0[0].len();
    if groups
        .iter()
        .any(|(g, _)| g.len() != steps || g.iter().any(|s| s.len() != per))
    {
        return None;
    }
    // Wave k runs group k - lag(l) of layer l, where the bottom layer leads in forward and
    // the top one in backward.
    let lag = |l: usize| if backward { top - l } else { l };
    for k in 0..steps + top {
        for j in 0..per {
            let parts: Vec<DispatchCost> = (0..stack.len())
                .filter_map(|l| {
                    let i = k.checked_sub(lag(l)).filter(|&i| i < steps)?;
                    let mut d = groups[l].0[i][j];
                    if j == 0 {
                        d.cost += extra[l];
                    }
                    Some(d)
                })
                .collect();
            out.push(side_by_side(&parts));
        }
    }
    let finishes: Vec<DispatchCost> = groups.iter().flat_map(|(_, f)| f.iter().copied()).collect();
    if !finishes.is_empty() {
        out.push(side_by_side(&finishes));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::RecurrentOpCosts;
    use crate::gpu::KernelName;
    use crate::ops::program::OpId;
    use crate::ops::recurrent::{CellKind, RecurrentShape};

    fn dispatch(
        entry: &'static str,
        role: &'static str,
        workgroups: u64,
        flops: f64,
    ) -> DispatchCost {
        let family = if entry == "main" { "gemm" } else { "recurrent" };
        DispatchCost {
            kernel: KernelName {
                family,
                entry,
                role,
            },
            workgroups,
            invocations: Some(128),
            cost: Cost::new(flops, 0.0, 0.0),
        }
    }

    /// A forward (or backward) op of a layer-direction on the step path: its transpose and
    /// projection (or gradient products), then `t` steps whose flops name the layer and step.
    fn op(layer: usize, t: usize, backward: bool, reverse: bool, bidirectional: bool) -> OpCosts {
        let mut shape = RecurrentShape::new(CellKind::Lstm, 8, 8, 2, t).reverse(reverse);
        if bidirectional {
            shape.out_stride = 16;
            shape.out_offset = if reverse { 8 } else { 0 };
        }
        let mut d = Vec::new();
        if backward {
            for s in (0..t).rev() {
                d.push(dispatch(
                    "backward_step_tiled",
                    "",
                    10,
                    (1000 * layer + s) as f64,
                ));
            }
            d.push(dispatch("backward_finish_tiled", "", 10, 1.0));
            d.push(dispatch("main", "dx", 50, 1e6));
            d.push(dispatch("main", "dW_ih, dW_hh, db_ih = db_hh", 50, 1e6));
        } else {
            d.push(dispatch("transpose_weights", "", 4, 0.0));
            d.push(dispatch("main", "x W_ih^T + b_ih", 50, 1e6));
            for s in 0..t {
                d.push(dispatch(
                    "forward_step_tiled",
                    "",
                    10,
                    (1000 * layer + s) as f64,
                ));
            }
        }
        OpCosts {
            op: OpId(layer),
            recurrent: Some(RecurrentOpCosts {
                shape,
                backward,
                in_step_input: Cost::new(0.5, 0.0, 0.0),
            }),
            dispatches: d,
        }
    }

    fn flops(ds: &[DispatchCost]) -> f64 {
        ds.iter().map(|d| d.cost.flops).sum()
    }

    #[test]
    fn a_wavefront_runs_layer_l_step_t_beside_layer_l_plus_1_step_t_minus_1() {
        let t = 4;
        let fwd: Vec<OpCosts> = (0..3).map(|l| op(l, t, false, false, false)).collect();
        let out = wavefront(&fwd).unwrap();
        // 3 transposes and layer 0's projection; T + L - 1 waves.
        assert_eq!(out.len(), 3 + 1 + t + 2);
        let waves: Vec<&DispatchCost> = out.iter().filter(|d| is_step(d)).collect();
        assert_eq!(waves.len(), t + 2);
        // Wave 1: layer 0 step 1 (flops 1) and layer 1 step 0 (1000, plus its in-step
        // projection 0.5), side by side.
        assert_eq!(waves[1].cost.flops, 1.0 + 1000.5);
        assert_eq!(waves[1].workgroups, 20);
        // Wave 2: all three layers.
        assert_eq!(waves[2].cost.flops, 2.0 + 1001.5 + 2000.5);
        assert_eq!(waves[2].workgroups, 30);
        // The last wave: layer 2's last step alone.
        assert_eq!(waves[t + 1].cost.flops, 2003.5);
        // The work is the recorded work, less two projections, plus 2 x T in-step ones.
        let recorded: Vec<DispatchCost> = fwd.iter().flat_map(|o| o.dispatches.clone()).collect();
        assert_eq!(flops(&out), flops(&recorded) - 2e6 + 0.5 * (2 * t) as f64);
    }

    #[test]
    fn a_backward_wavefront_starts_from_the_top_layer() {
        let t = 3;
        // A backward records the top layer first.
        let bwd: Vec<OpCosts> = (0..2).rev().map(|l| op(l, t, true, false, false)).collect();
        let out = wavefront(&bwd).unwrap();
        let waves: Vec<&DispatchCost> = out
            .iter()
            .filter(|d| d.kernel.entry == "backward_step_tiled")
            .collect();
        assert_eq!(waves.len(), t + 1);
        // Wave 0: the top layer's last step alone (its first group), no in-step product
        // (nothing above it).
        assert_eq!(waves[0].cost.flops, 1002.0);
        // Wave 1: the top layer's step 1 beside layer 0's step 2, which adds the input
        // gradient of the layer above.
        assert_eq!(waves[1].cost.flops, 1001.0 + 2.5);
        // One finishing dispatch for both layers; the top layer's dx product is dropped.
        let finishes = out
            .iter()
            .filter(|d| d.kernel.entry == "backward_finish_tiled");
        assert_eq!(finishes.count(), 1);
        let dx = out.iter().filter(|d| d.kernel.role == "dx");
        assert_eq!(dx.count(), 1);
    }

    #[test]
    fn both_directions_share_each_steps_dispatch() {
        let t = 5;
        let ops = vec![op(0, t, false, false, true), op(0, t, false, true, true)];
        let out = directions_fused(&ops).unwrap();
        // Two transposes, two projections, T fused steps.
        assert_eq!(out.len(), 4 + t);
        let recorded: Vec<DispatchCost> = ops.iter().flat_map(|o| o.dispatches.clone()).collect();
        assert_eq!(flops(&out), flops(&recorded));
        assert!(out
            .iter()
            .filter(|d| is_step(d))
            .all(|d| d.workgroups == 20));
        // Not a wavefront: layer l + 1 needs all of layer l's reverse direction first.
        assert!(wavefront(&ops).is_none());
        // And nothing to fuse in one direction alone.
        assert!(directions_fused(&ops[..1]).is_none());
    }

    #[test]
    fn a_stack_of_sequence_kernels_is_one_dispatch_with_layers_in_turn() {
        let t = 7;
        let seq = |layer: usize| {
            let mut o = op(layer, t, false, false, false);
            o.dispatches.truncate(2);
            o.dispatches
                .push(dispatch("forward_sequence", "", 4, 100.0));
            o
        };
        let out = wavefront(&[seq(0), seq(1)]).unwrap();
        let kernel: Vec<&DispatchCost> = out.iter().filter(|d| is_step(d)).collect();
        assert_eq!(kernel.len(), 1);
        // The same 4 workgroups run both layers, the second with T in-step projections.
        assert_eq!(kernel[0].workgroups, 4);
        assert_eq!(kernel[0].cost.flops, 200.0 + 0.5 * t as f64);
        // Layers on different paths are not modelled.
        assert!(wavefront(&[seq(0), op(1, t, false, false, false)]).is_none());
    }
}
