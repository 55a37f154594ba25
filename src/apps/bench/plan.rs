//! `recur bench rnn --plan`: the cost table of a recurrent stack's forward and backward,
//! summed from the dispatches its plans record (see `src/gpu/cost.rs`), with the roofline
//! time of each kernel on a named GPU (`src/apps/bench/roofline.rs`). Nothing is submitted.

use crate::error::Result;
use serde::Serialize;

use super::recurrent::RecurrentCase;
use super::roofline::{GpuPeak, LAUNCH_SECONDS};
use crate::exec::{Executor, GpuExecutor};
use crate::gpu::{cost, DispatchCost, Gpu, KernelCost};
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
pub fn plan_table(gpu: &Gpu, case: &RecurrentCase, peak: &GpuPeak) -> Result<PlanTable> {
    let layer = Recurrent::new(case.config(), 11)?;
    let mut exec = GpuExecutor::new(gpu);
    for (name, t) in layer.params() {
        exec.set_param(name, &t.shape, &t.data)?;
    }
    // Phase 0 the forward, phase 1 the backward with every gradient.
    let (b, t, c) = (case.batch, case.steps, &layer.config);
    let mut p = ProgramBuilder::new();
    let input = p.input("input", &[b * t, c.input_size]);
    let rec = layer.record_forward(&mut p, "", input, b, t, None, None)?;
    p.next_phase();
    let d_out = p.input("output gradient", &[b * t, c.output_size()]);
    layer.record_backward(&mut p, &rec, Some(d_out))?;
    let program = exec.load(p.finish())?;
    let forward = phase(&exec.phase_costs(program, 0)?, peak);
    let backward = phase(&exec.phase_costs(program, 1)?, peak);
    Ok(PlanTable {
        case: *case,
        gpu: *peak,
        launch_seconds: LAUNCH_SECONDS,
        forward,
        backward,
    })
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
        s
    }
}
