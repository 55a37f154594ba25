//! `recur bench`: the GPU path against the CPU path, side by side in one run.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use clap::Subcommand;
use serde::Serialize;

use super::BackendArg;
use crate::apps::bench::{cpu_name, gemm, recurrent, soak, Stats};
use crate::apps::charlm::CharLmOptions;
use crate::cpu;
use crate::gpu::Gpu;
use crate::memory::{bytes_of, product, sum, Budget};
use crate::ops::recurrent::CellKind;
use crate::train::footprint::{check_stack_run, Footprint, RunShape, StackShape};

#[derive(clap::Args)]
pub struct Args {
    /// What to measure; without it, everything (the GEMM, the recurrent layers, word2vec).
    #[command(subcommand)]
    what: Option<What>,
    /// Fewer repetitions: a run of under a minute on a software adapter.
    #[arg(long, global = true)]
    quick: bool,
    /// Also write the results as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// Skip the GPU (CPU figures only).
    #[arg(long, global = true)]
    cpu_only: bool,
    /// Skip PyTorch's and gensim's figures even where they are installed.
    #[arg(long, global = true)]
    no_torch: bool,
}

#[derive(Subcommand, Clone)]
enum What {
    /// Matrix products: GFLOP/s of the GPU kernel and of the CPU path (and PyTorch's CPU
    /// matmul where installed).
    Gemm {
        /// Shapes as MxNxK, comma-separated (default: 1024^3, 3200x1024x256, 32x1024x256, 256^3).
        #[arg(long, value_delimiter = ',')]
        shapes: Vec<String>,
    },
    /// Recurrent layers: forward and forward + backward per batch, CPU against GPU (and
    /// PyTorch's CPU RNNs where installed).
    Rnn {
        /// Cells, comma-separated (default: lstm, gru, rnn-tanh).
        #[arg(long, value_delimiter = ',')]
        cells: Vec<String>,
        /// Shapes as HxBxT (input = hidden), comma-separated (default: a grid around the
        /// reference 256x32x100, hidden 64 to 1024, batch 1 to 128, T 10 to 500).
        #[arg(long, value_delimiter = ',')]
        shapes: Vec<String>,
        /// Layers of the stack for --shapes.
        #[arg(long, default_value_t = 1)]
        layers: usize,
        /// Two directions, for --shapes.
        #[arg(long)]
        bidirectional: bool,
        /// Dropout between the stacked layers (PyTorch's `dropout`), for --plan: the cost
        /// table of a training step's forward and backward.
        #[arg(long, default_value_t = 0.0)]
        dropout: f32,
        /// Also run shapes above 10 GFLOP per forward on a software adapter (minutes each).
        #[arg(long)]
        all: bool,
        /// Print the cost table instead of timing: per kernel of a forward and a backward,
        /// dispatches, workgroups, FLOPs, bytes, and the roofline time on --gpu, counted
        /// from the recorded plans (with the GEMM kernel GPUs run). Nothing is submitted.
        #[arg(long)]
        plan: bool,
        /// GPUs for --plan, comma-separated (h100, h200, a100, rtx4090, mi300x, m2).
        #[arg(long, value_delimiter = ',', default_value = "h100")]
        gpu: Vec<String>,
    },
    /// word2vec: training speed (skip-gram, negative sampling, size 100, window 5) and the
    /// last epoch's loss of recur's CPU and GPU trainers, and gensim's speed where installed,
    /// on the same corpus; and the most_similar scan, CPU against the GPU kernel.
    Word2vec {
        /// The corpus (default: a synthetic Zipf corpus of 2M words, written to a temporary
        /// file).
        #[arg(long)]
        corpus: Option<PathBuf>,
    },
    /// Memory over long runs of `recur train` (its model, evaluations and checkpoints):
    /// resident memory and the device memory wgpu holds for buffers, sampled every
    /// --every steps, must not grow by more than --tolerance percent after the warm-up.
    /// 10,000 steps on the CPU and 2,000 on the GPU (--quick: 1,000 and 200).
    Soak {
        /// CPU training steps (0: no CPU run).
        #[arg(long)]
        cpu_steps: Option<u64>,
        /// GPU training steps (0: no GPU run).
        #[arg(long)]
        gpu_steps: Option<u64>,
        /// Steps between samples (default 100; --quick: 20).
        #[arg(long)]
        every: Option<u64>,
        /// The warm-up, as a fraction of each run's steps (rounded up to a sample).
        #[arg(long, default_value_t = 0.2)]
        warmup: f64,
        /// Largest growth allowed after the warm-up, in percent.
        #[arg(long, default_value_t = 1.0)]
        tolerance: f64,
        /// Hidden units of the model (default: `recur train`'s; --quick: 64).
        #[arg(long)]
        hidden: Option<usize>,
        /// Evaluations of the held-out text (each followed by a checkpoint) in each run;
        /// the warm-up lasts at least until the first, whose programs are built then.
        #[arg(long, default_value_t = 10)]
        evaluations: u64,
    },
    /// Training steps and characters per second of `recur train`'s language model, GPU
    /// against CPU (defaults: `recur train`'s model and batch).
    Charlm {
        /// What to time beside the CPU: `auto` a hardware GPU if there is one (it says why
        /// not otherwise), `gpu` the GPU adapter recur picks, software ones included, `cpu`
        /// nothing (the CPU alone).
        #[arg(long, value_enum, default_value = "auto")]
        backend: BackendArg,
        /// LSTM units (the default is `recur train`'s).
        #[arg(long, default_value_t = crate::apps::charlm::CharLmOptions::default().hidden)]
        hidden: usize,
        /// Sequences per batch.
        #[arg(long, default_value_t = crate::apps::charlm::CharLmOptions::default().batch)]
        batch: usize,
        /// Characters per sequence.
        #[arg(long, default_value_t = crate::apps::charlm::CharLmOptions::default().seq_len)]
        seq_len: usize,
    },
}

#[derive(Serialize)]
struct Header {
    cpu: String,
    cpu_threads: usize,
    adapter: Option<String>,
    date: String,
}

fn header(gpu: Option<&Gpu>) -> Header {
    let date = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    Header {
        cpu: cpu_name(),
        cpu_threads: cpu::threads(),
        adapter: gpu.map(|g| g.describe()),
        date,
    }
}

/// Three positive sizes written `AxBxC`; `form` names them in messages (`MxNxK`).
fn parse_shape(s: &str, form: &str) -> Result<(usize, usize, usize)> {
    let dims: Vec<usize> = s
        .split('x')
        .map(|d| d.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--shapes {s:?} is not {form}"))?;
    match dims[..] {
        [a, b, c] if a > 0 && b > 0 && c > 0 => Ok((a, b, c)),
        _ => bail!("--shapes {s:?} is not {form} with three positive sizes"),
    }
}

/// A comparison script in `tools/`, next to the sources or in the working directory.
fn tool_script(name: &str) -> Option<PathBuf> {
    [
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tools")
            .join(name),
        Path::new("tools").join(name),
    ]
    .into_iter()
    .find(|p| p.exists())
}

/// PyTorch's JSON lines for `args`, or `None` (with the reason on stderr) if it cannot run.
fn run_torch(args: &[String]) -> Option<Vec<serde_json::Value>> {
    run_script("torch_bench.py", args)
}

/// A comparison script's JSON lines, or `None` (with the reason on stderr) if it cannot run.
fn run_script(name: &str, args: &[String]) -> Option<Vec<serde_json::Value>> {
    let script = tool_script(name)?;
    let out = Command::new("python3")
        .arg(&script)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "{name} comparison skipped: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
    )
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    Ok(crate::io::write_atomic(path, text.as_bytes())?)
}

pub fn run(args: Args) -> Result<()> {
    let gpu = if args.cpu_only {
        None
    } else {
        Some(Gpu::new()?)
    };
    let head = header(gpu.as_ref());
    println!(
        "{} | CPU: {} ({} threads) | GPU: {}",
        head.date,
        head.cpu,
        head.cpu_threads,
        head.adapter.as_deref().unwrap_or("not used")
    );
    let software = gpu
        .as_ref()
        .is_some_and(|g| g.info().device_type == wgpu::DeviceType::Cpu);
    let what = args.what.clone();
    match what {
        None => {
            bench_gemm(gpu.as_ref(), &gemm_shapes(&[], args.quick)?, &args, &head)?;
            bench_rnn(
                gpu.as_ref(),
                &rnn_cases(&[], &[], 1, false, args.quick)?,
                false,
                software,
                &args,
                &head,
            )?;
            bench_word2vec(gpu.as_ref(), None, &args, &head)
        }
        Some(What::Gemm { shapes }) => bench_gemm(
            gpu.as_ref(),
            &gemm_shapes(&shapes, args.quick)?,
            &args,
            &head,
        ),
        Some(What::Rnn {
            cells,
            shapes,
            layers,
            bidirectional,
            dropout,
            all,
            plan,
            gpu: models,
        }) => {
            ensure!(
                (0.0..1.0).contains(&dropout) && (dropout == 0.0 || plan),
                "--dropout {dropout}: a probability in [0, 1), and only with --plan"
            );
            let cases: Vec<_> = rnn_cases(&cells, &shapes, layers, bidirectional, args.quick)?
                .into_iter()
                .map(|c| c.with_dropout(dropout))
                .collect();
            if plan {
                ensure!(!args.cpu_only, "--plan builds the plans on a GPU adapter");
                drop(gpu);
                return plan_rnn(&Gpu::new_for_cost_model()?, &cases, &models, &args, &head);
            }
            bench_rnn(gpu.as_ref(), &cases, all, software, &args, &head)
        }
        Some(What::Word2vec { corpus }) => {
            bench_word2vec(gpu.as_ref(), corpus.as_deref(), &args, &head)
        }
        Some(What::Charlm {
            backend,
            hidden,
            batch,
            seq_len,
        }) => {
            let gpu = charlm_gpu(gpu, backend, args.cpu_only)?;
            bench_charlm(gpu.as_ref(), hidden, batch, seq_len, &args, &head)
        }
        Some(What::Soak {
            cpu_steps,
            gpu_steps,
            every,
            warmup,
            tolerance,
            hidden,
            evaluations,
        }) => {
            let (cpu_default, gpu_default, every_default, hidden_default) = if args.quick {
                (1_000, 200, 10, 64)
            } else {
                (10_000, 2_000, 100, CharLmOptions::default().hidden)
            };
            let plan = SoakPlan {
                cpu_steps: cpu_steps.unwrap_or(cpu_default),
                gpu_steps: gpu_steps.unwrap_or(gpu_default),
                every: every.unwrap_or(every_default),
                warmup,
                tolerance,
                hidden: hidden.unwrap_or(hidden_default),
                evaluations,
            };
            bench_soak(gpu.as_ref(), &plan, &args, &head)
        }
    }
}

struct SoakPlan {
    cpu_steps: u64,
    gpu_steps: u64,
    every: u64,
    warmup: f64,
    tolerance: f64,
    hidden: usize,
    evaluations: u64,
}

fn bench_soak(gpu: Option<&Gpu>, plan: &SoakPlan, args: &Args, head: &Header) -> Result<()> {
    ensure!(
        plan.warmup.is_finite() && (0.0..1.0).contains(&plan.warmup),
        "--warmup {}: expected a fraction in [0, 1)",
        plan.warmup
    );
    ensure!(
        plan.tolerance.is_finite() && plan.tolerance >= 0.0,
        "--tolerance {}: expected a percentage >= 0",
        plan.tolerance
    );
    ensure!(plan.every > 0, "--every 0: expected at least 1 step");
    ensure!(
        plan.evaluations > 0,
        "--evaluations 0: expected at least 1 (the run's evaluations and checkpoints are \
         part of what the soak watches)"
    );
    let mut runs = Vec::new();
    // The CPU run, then the GPU run where there is a GPU (not --cpu-only).
    let backends = [(None, plan.cpu_steps, false), (gpu, plan.gpu_steps, true)];
    for (device, steps, on_gpu) in backends {
        if steps == 0 || (on_gpu && device.is_none()) {
            continue;
        }
        // Evaluations at multiples of the sample interval, so that a sample follows each;
        // the warm-up lasts until the first has built its programs (a one-time cost).
        let eval_every = steps.div_ceil(plan.evaluations).div_ceil(plan.every) * plan.every;
        let warmup = ((steps as f64 * plan.warmup) as u64).div_ceil(plan.every) * plan.every;
        let warmup = warmup.max(eval_every);
        ensure!(
            warmup < steps,
            "a soak of {steps} steps sampled every {} steps with {} evaluations has no steps \
             after its warm-up (step {warmup}): expected more steps",
            plan.every,
            plan.evaluations
        );
        let opts = soak::SoakOptions {
            charlm: CharLmOptions {
                train_steps: steps,
                hidden: plan.hidden,
                eval_every,
                ..Default::default()
            },
            every: plan.every,
            warmup,
            tolerance: plan.tolerance / 100.0,
        };
        let name = device.map_or("CPU".to_string(), |g| g.describe());
        println!(
            "soak on {name}: {steps} steps of `recur train`'s model with {} units, an \
             evaluation and checkpoint every {eval_every} steps, memory every {} steps, \
             judged after step {warmup}",
            plan.hidden, plan.every
        );
        println!(
            "{:>7} {:>12} {:>12} {:>9}",
            "step", "resident", "device", "seconds"
        );
        let mb = |b: Option<u64>| {
            b.map_or("-".to_string(), |b| {
                format!("{:.2} MiB", b as f64 / 1048576.0)
            })
        };
        let run = soak::soak(device, &opts, |s| {
            println!(
                "{:>7} {:>12} {:>12} {:>9.1}",
                s.step,
                mb(s.resident),
                mb(s.device),
                s.seconds
            );
        })?;
        for (what, g) in [("resident", run.resident), ("device", run.device)] {
            match g {
                Some(g) => println!(
                    "{what}: {} at step {}, then {} to {} (largest at step {}), last {}: {:+.3}%",
                    mb(Some(g.baseline)),
                    g.baseline_step,
                    mb(Some(g.min_after)),
                    mb(Some(g.max_after)),
                    g.max_step,
                    mb(Some(g.last)),
                    100.0 * g.growth
                ),
                None => println!("{what}: not measured here"),
            }
        }
        println!("{} steps in {:.1} s", run.steps, run.seconds);
        runs.push(run);
    }
    if let Some(path) = &args.json {
        let path = json_path(path, "soak");
        write_json(&path, &serde_json::json!({ "header": head, "runs": runs }))?;
        println!("wrote {}", path.display());
    }
    for run in &runs {
        run.check()?;
    }
    println!("memory flat within {}% after the warm-up", plan.tolerance);
    Ok(())
}

fn gemm_shapes(shapes: &[String], quick: bool) -> Result<Vec<(usize, usize, usize)>> {
    if !shapes.is_empty() {
        return shapes
            .iter()
            .map(|s| {
                let (m, n, k) = parse_shape(s, "MxNxK")?;
                // A, B and the two results (CPU and GPU) of the comparison.
                let values = sum([
                    product(&[m, k]),
                    product(&[k, n]),
                    product(&[m, n]).and_then(|c| c.checked_mul(2)),
                ]);
                Budget::host().check(
                    format_args!("--shapes {s} (A, B and two results)"),
                    values.and_then(|v| bytes_of(v, 4)),
                )?;
                Ok((m, n, k))
            })
            .collect();
    }
    Ok(if quick {
        vec![(256, 256, 256), (32, 1024, 256)]
    } else {
        gemm::DEFAULT_SHAPES.to_vec()
    })
}

/// The recurrent cases: the given cells and shapes, or the default grid (quick: the
/// reference shape I = H = 256, B = 32, T = 100 for LSTM, GRU and RNN).
fn rnn_cases(
    cells: &[String],
    shapes: &[String],
    layers: usize,
    bidirectional: bool,
    quick: bool,
) -> Result<Vec<recurrent::RecurrentCase>> {
    let cells: Vec<CellKind> = if cells.is_empty() {
        vec![CellKind::Lstm, CellKind::Gru, CellKind::RnnTanh]
    } else {
        cells
            .iter()
            .map(|c| CellKind::parse(c))
            .collect::<crate::Result<_>>()?
    };
    if !shapes.is_empty() {
        let mut cases = Vec::new();
        for s in shapes {
            let (h, b, t) = parse_shape(s, "HxBxT (hidden x batch x steps)")?;
            for &cell in &cells {
                let stack = StackShape {
                    cell,
                    input_size: h,
                    hidden_size: h,
                    num_layers: layers.max(1),
                    directions: if bidirectional { 2 } else { 1 },
                };
                let rows = (t as u64).saturating_mul(b as u64);
                check_stack_run(&stack, rows, true, &Budget::host()).map_err(|e| {
                    super::name_options(e, || format!("--shapes {s} --layers {layers}"))
                })?;
                cases.push(
                    recurrent::RecurrentCase::new(cell, h, b, t).with_layers(layers, bidirectional),
                );
            }
        }
        return Ok(cases);
    }
    let mut cases: Vec<_> = cells
        .iter()
        .map(|&c| recurrent::RecurrentCase::new(c, 256, 32, 100))
        .collect();
    if !quick {
        for &c in &cells {
            cases.push(recurrent::RecurrentCase::new(c, 64, 8, 100));
            cases.push(recurrent::RecurrentCase::new(c, 1024, 64, 100));
        }
        let lstm = CellKind::Lstm;
        cases.extend([
            recurrent::RecurrentCase::new(lstm, 256, 1, 100),
            recurrent::RecurrentCase::new(lstm, 256, 128, 10),
            recurrent::RecurrentCase::new(lstm, 128, 32, 500),
            recurrent::RecurrentCase::new(lstm, 256, 32, 100).with_layers(3, false),
            recurrent::RecurrentCase::new(lstm, 256, 32, 100).with_layers(1, true),
        ]);
    }
    Ok(cases)
}

#[derive(Serialize)]
struct RnnReport<'a> {
    header: &'a Header,
    results: Vec<recurrent::RecurrentResult>,
    torch: Vec<serde_json::Value>,
}

/// Forward FLOPs above which a software adapter is skipped unless asked (about a minute a run).
const SOFTWARE_FLOP_LIMIT: f64 = 10e9;

fn bench_rnn(
    gpu: Option<&Gpu>,
    cases: &[recurrent::RecurrentCase],
    all: bool,
    software: bool,
    args: &Args,
    header: &Header,
) -> Result<()> {
    // A software adapter takes seconds per case: fewer runs there (one, in a quick run).
    let (warmup, reps) = match (args.quick, software) {
        (true, true) => (0, 1),
        (true, false) | (false, true) => (1, 3),
        (false, false) => (2, 7),
    };
    let ms = |s: &Stats| format!("{:.1}", s.median * 1e3);
    let dash = || "-".to_string();
    println!(
        "{:>24} | {:>22} | {:>15} | {:>22} {:>8} {:>7} | {:>7} {:>7} | {:>8} {:>7}",
        "case (H x B x T)",
        "CPU fwd/f+b/train ms",
        "torch fwd/f+b",
        "GPU fwd/f+b/train ms",
        "dev f+b",
        "encode",
        "CPU/trc",
        "GPU/CPU",
        "dispatch",
        "MiB"
    );
    let mut results = Vec::new();
    let mut torch_all = Vec::new();
    let mut beyond_limits = Vec::new();
    for case in cases {
        let cpu = recurrent::measure_cpu(case, warmup, reps, !args.quick)?;
        let run_gpu =
            gpu.filter(|_| all || !software || case.forward_flops() <= SOFTWARE_FLOP_LIMIT);
        // A case beyond the adapter's limits (a buffer larger than it binds) is skipped with
        // the reason, so the other cases of the run still go ahead; any other error ends it.
        let gpu_r =
            match run_gpu.map(|g| recurrent::measure_gpu(g, case, warmup, reps, !args.quick)) {
                Some(Err(e)) if matches!(e.kind(), crate::Error::Limit(_)) => {
                    beyond_limits.push(format!("{}: {e}", case.label()));
                    None
                }
                other => other.transpose()?,
            };
        let torch = if args.no_torch || case.cell == CellKind::GruResetBefore {
            None
        } else {
            let torch_cell = match case.cell {
                CellKind::Lstm => "lstm",
                CellKind::Gru => "gru",
                _ => "rnn",
            };
            let mut targs: Vec<String> = [
                "rnn",
                "--cell",
                torch_cell,
                "--hidden",
                &case.hidden.to_string(),
                "--batch",
                &case.batch.to_string(),
                "--steps",
                &case.steps.to_string(),
                "--layers",
                &case.layers.to_string(),
                "--warmup",
                &warmup.max(1).to_string(),
                "--reps",
                &reps.max(3).to_string(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if case.bidirectional {
                targs.push("--bidirectional".into());
            }
            run_torch(&targs).and_then(|v| v.into_iter().find(|x| x["kind"] == "rnn"))
        };
        let torch_ms = |key: &str| {
            torch
                .as_ref()
                .and_then(|v| v[key]["median"].as_f64())
                .map(|s| s * 1e3)
        };
        let (tf, tb) = (torch_ms("forward"), torch_ms("forward_backward"));
        let gpu_col = gpu_r.as_ref().map_or("skipped".to_string(), |g| {
            format!(
                "{}/{}/{}",
                ms(&g.forward),
                ms(&g.forward_backward),
                g.train_step.as_ref().map_or_else(dash, ms)
            )
        });
        println!(
            "{:>24} | {:>22} | {:>15} | {:>22} {:>8} {:>7} | {:>7} {:>7} | {:>8} {:>7}",
            case.label(),
            format!(
                "{}/{}/{}",
                ms(&cpu.forward),
                ms(&cpu.forward_backward),
                cpu.train_step.as_ref().map_or_else(dash, ms)
            ),
            match (tf, tb) {
                (Some(f), Some(b)) => format!("{f:.1}/{b:.1}"),
                _ => dash(),
            },
            gpu_col,
            gpu_r
                .as_ref()
                .and_then(|g| g.forward_backward_device.as_ref())
                .map_or_else(dash, ms),
            gpu_r
                .as_ref()
                .and_then(|g| g.encode.as_ref())
                .map_or_else(dash, ms),
            tb.map_or_else(dash, |v| format!(
                "{:.2}",
                cpu.forward_backward.median * 1e3 / v
            )),
            gpu_r.as_ref().map_or_else(dash, |g| format!(
                "{:.2}",
                cpu.forward_backward.median / g.forward_backward.median
            )),
            gpu_r.as_ref().map_or_else(dash, |g| {
                format!(
                    "{}+{}",
                    g.dispatches_forward.unwrap_or(0),
                    g.dispatches_backward.unwrap_or(0)
                )
            }),
            gpu_r
                .as_ref()
                .and_then(|g| g.device_bytes)
                .map_or_else(dash, |b| format!("{:.1}", b as f64 / (1 << 20) as f64)),
        );
        torch_all.extend(torch);
        results.push(recurrent::RecurrentResult {
            case: *case,
            cpu: Some(cpu),
            gpu: gpu_r,
        });
    }
    println!(
        "(medians of {reps} run(s) after {warmup} warm-up(s), per batch; train = forward + backward + Adam; \
         CPU/trc = recur CPU f+b time over PyTorch CPU f+b time; GPU/CPU = CPU f+b time over GPU f+b time; \
         dev f+b = GPU time from timestamps; encode = host time to record and submit a training step; \
         dispatch = forward+backward dispatches, one submit each; MiB = device memory of the stack)"
    );
    for why in &beyond_limits {
        println!("GPU skipped, beyond the adapter's limits: {why}");
    }
    if let Some(path) = &args.json {
        let path = json_path(path, "rnn");
        write_json(
            &path,
            &RnnReport {
                header,
                results,
                torch: torch_all,
            },
        )?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

#[derive(Serialize)]
struct PlanReport<'a> {
    header: &'a Header,
    tables: Vec<crate::apps::bench::plan::PlanTable>,
}

/// `recur bench rnn --plan`: the cost table of each case on each named GPU.
fn plan_rnn(
    gpu: &Gpu,
    cases: &[recurrent::RecurrentCase],
    models: &[String],
    args: &Args,
    header: &Header,
) -> Result<()> {
    use crate::apps::bench::{plan, roofline};
    let peaks = models
        .iter()
        .map(|m| roofline::find(m))
        .collect::<crate::Result<Vec<_>>>()?;
    let mut tables = Vec::new();
    for case in cases {
        for peak in &peaks {
            let table = plan::plan_table(gpu, case, peak)?;
            println!("\n{}", table.markdown());
            tables.push(table);
        }
    }
    if let Err(e) = gpu.take_device_error() {
        println!(
            "\n(the adapter here, {}, reported bindings beyond its limits: the plans were \
             recorded, not run; {e})",
            gpu.describe()
        );
    }
    println!(
        "Counted from the recorded plans; modelled time per dispatch = {:.0} us launch + \
         max(FLOPs / peak FLOP/s, distinct bytes / DRAM bandwidth, all bytes / ({} x DRAM \
         bandwidth)) / u, u = the share of the GPU's units and lanes the dispatch's workgroups \
         can fill; bytes are global loads and stores before caches, distinct bytes count each \
         element read once (see src/apps/bench/roofline.rs). Peaks:",
        roofline::LAUNCH_SECONDS * 1e6,
        roofline::CACHE_FACTOR
    );
    for p in &peaks {
        println!(
            "  {}: {:.2} TB/s, {:.1} TFLOP/s FP32, {} units x {} lanes ({})",
            p.name,
            p.bandwidth / 1e12,
            p.flops / 1e12,
            p.units,
            p.lanes,
            p.source
        );
    }
    if let Some(path) = &args.json {
        let path = json_path(path, "rnn-plan");
        write_json(&path, &PlanReport { header, tables })?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

#[derive(Serialize)]
struct Word2VecReport<'a> {
    header: &'a Header,
    recur: crate::apps::bench::word2vec::Word2VecCase,
    /// The GPU trainer's variants side by side (empty without a GPU).
    recur_gpu: Vec<crate::apps::bench::word2vec::Word2VecCase>,
    /// The cost model of the GPU trainer before and after on an H100 (no GPU needed).
    gpu_model: Vec<crate::apps::bench::word2vec::ModelledRun>,
    gensim: Option<serde_json::Value>,
    top_k: crate::apps::bench::word2vec::TopKCase,
}

fn bench_word2vec(
    gpu: Option<&Gpu>,
    corpus: Option<&Path>,
    args: &Args,
    header: &Header,
) -> Result<()> {
    use crate::apps::bench::word2vec::{
        measure, measure_gpu, measure_top_k, model_gpu, synthetic_corpus, H100_SXM,
    };
    use crate::gpu::word2vec_train::GradientKernel;
    use crate::word2vec::{Config, GpuTrainOptions};
    let tmp;
    let corpus = match corpus {
        Some(c) => c.to_path_buf(),
        None => {
            tmp =
                std::env::temp_dir().join(format!("recur-bench-corpus-{}.txt", std::process::id()));
            let words = if args.quick { 300_000 } else { 2_000_000 };
            synthetic_corpus(&tmp, words, 20_000, 1)?;
            tmp.clone()
        }
    };
    let cfg = Config {
        arch: crate::word2vec::Arch::SkipGram,
        threads: cpu::threads(),
        epochs: if args.quick { 1 } else { 3 },
        ..Config::default()
    };
    let reps = if args.quick { 1 } else { 3 };
    let recur = measure(&corpus, &cfg, reps)?;
    // The GPU trainer as it was (the per-item gradient kernel, one submit per batch) and as
    // it is, in this run: one run each, as on a software adapter the GPU trainer takes
    // minutes where the CPU takes seconds.
    let variants = [
        (GradientKernel::PerItem, 1),
        (
            GradientKernel::PerItem,
            crate::word2vec::gpu_train::BATCHES_PER_SUBMIT,
        ),
        (
            GradientKernel::Rows,
            crate::word2vec::gpu_train::BATCHES_PER_SUBMIT,
        ),
    ];
    let mut recur_gpu = Vec::new();
    if let Some(g) = gpu {
        for (gradient_kernel, batches_per_submit) in variants {
            let options = GpuTrainOptions {
                gradient_kernel,
                batches_per_submit,
            };
            recur_gpu.push(measure_gpu(&corpus, &cfg, g, &options, 1)?);
        }
    }
    let gpu_model = vec![
        model_gpu(
            &corpus,
            &cfg,
            &GpuTrainOptions {
                gradient_kernel: GradientKernel::PerItem,
                batches_per_submit: 1,
            },
            "before: per-item gradient kernel, 4 dispatches and 1 submit per batch".into(),
            4,
            &H100_SXM,
        )?,
        model_gpu(
            &corpus,
            &cfg,
            &GpuTrainOptions {
                gradient_kernel: GradientKernel::Rows,
                batches_per_submit: crate::word2vec::gpu_train::BATCHES_PER_SUBMIT,
            },
            format!(
                "after: row-parallel gradient kernel, 2 dispatches per batch, {} batches per submit",
                crate::word2vec::gpu_train::BATCHES_PER_SUBMIT
            ),
            2,
            &H100_SXM,
        )?,
    ];
    let gensim = if args.no_torch {
        None
    } else {
        run_script(
            "gensim_bench.py",
            &[
                "--corpus".into(),
                corpus.display().to_string(),
                "--sg".into(),
                "1".into(),
                "--negative".into(),
                "5".into(),
                "--size".into(),
                cfg.size.to_string(),
                "--window".into(),
                cfg.window.to_string(),
                "--min-count".into(),
                cfg.min_count.to_string(),
                "--sample".into(),
                cfg.sample.to_string(),
                "--epochs".into(),
                cfg.epochs.to_string(),
                "--threads".into(),
                cfg.threads.to_string(),
                "--reps".into(),
                reps.to_string(),
            ],
        )
        .and_then(|v| v.into_iter().find(|x| x["kind"] == "word2vec"))
    };
    println!(
        "word2vec skip-gram, negative 5, size {}, window {}, sample {}, {} epoch(s), vocabulary {}, \
         {} words an epoch:\n  recur {}: {:.0} words/s, last-epoch loss {:.4}\n{}  gensim {}",
        cfg.size,
        cfg.window,
        cfg.sample,
        cfg.epochs,
        recur.vocab_size,
        recur.train_words,
        recur.trainer,
        recur.words_per_sec,
        recur.final_loss,
        if recur_gpu.is_empty() {
            "  recur GPU: not used\n".to_string()
        } else {
            recur_gpu
                .iter()
                .map(|g| {
                    format!(
                        "  recur {}: {:.0} words/s, last-epoch loss {:.4}\n",
                        g.trainer, g.words_per_sec, g.final_loss
                    )
                })
                .collect::<String>()
        },
        gensim
            .as_ref()
            .and_then(|g| g["words_per_sec"].as_f64())
            .map_or("not installed".to_string(), |w| format!("{w:.0} words/s"))
    );
    for m in &gpu_model {
        println!("{}", m.table());
    }
    let rows = if args.quick { 20_000 } else { 100_000 };
    let top_k = measure_top_k(gpu, rows, 100, 10, if args.quick { 3 } else { 10 })?;
    println!(
        "most_similar (top 10 by cosine) over {} vectors of {}: CPU {:.2} ms, GPU {} per query",
        top_k.rows,
        top_k.dim,
        top_k.cpu.median * 1e3,
        top_k
            .gpu
            .as_ref()
            .map_or("not used".to_string(), |g| format!(
                "{:.2} ms (upload, scan, select, readback)",
                g.median * 1e3
            ))
    );
    if let Some(path) = &args.json {
        let path = json_path(path, "word2vec");
        write_json(
            &path,
            &Word2VecReport {
                header,
                recur,
                recur_gpu,
                gpu_model,
                gensim,
                top_k,
            },
        )?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The GPU `recur bench charlm --backend` times beside the CPU, if any, saying on stderr
/// why where `auto` leaves it out.
fn charlm_gpu(gpu: Option<Gpu>, backend: BackendArg, cpu_only: bool) -> Result<Option<Gpu>> {
    match (backend, gpu) {
        (BackendArg::Cpu, _) => Ok(None),
        (BackendArg::Gpu, None) => bail!("--backend gpu and --cpu-only contradict each other"),
        (BackendArg::Gpu, gpu) => Ok(gpu),
        (BackendArg::Auto, None) => {
            if !cpu_only {
                eprintln!("no GPU adapter; timing the CPU only");
            }
            Ok(None)
        }
        (BackendArg::Auto, Some(gpu)) if gpu.info().device_type == wgpu::DeviceType::Cpu => {
            eprintln!(
                "no hardware GPU found (only {}, a software adapter); timing the CPU only; \
                 --backend gpu adds it",
                gpu.info().name
            );
            Ok(None)
        }
        (BackendArg::Auto, Some(gpu)) => {
            eprintln!("hardware GPU found: {}", gpu.describe());
            Ok(Some(gpu))
        }
    }
}

fn bench_charlm(
    gpu: Option<&Gpu>,
    hidden: usize,
    batch: usize,
    seq_len: usize,
    args: &Args,
    head: &Header,
) -> Result<()> {
    let opts = crate::apps::charlm::CharLmOptions {
        hidden,
        batch,
        seq_len,
        ..Default::default()
    };
    let (warmup, reps) = if args.quick { (1, 5) } else { (2, 15) };
    // Both trainers at once, on the shipped text's characters.
    let text = crate::apps::charlm::default_text();
    let vocab = crate::apps::charlm::CharVocab::from_text(&text)?.len();
    let footprint = Footprint::of(&opts.model_spec(vocab))?;
    let run = RunShape {
        batch,
        steps: seq_len,
    };
    let flags = || format!("--hidden {hidden} --batch {batch} --seq-len {seq_len}");
    footprint
        .check_host(Some(run), true, &Budget::host())
        .map_err(|e| super::name_options(e, flags))?;
    if let Some(gpu) = gpu {
        footprint
            .check_device(run, &Budget::device_buffer(gpu))
            .map_err(|e| super::name_options(e, flags))?;
    }
    let results = crate::apps::bench::charlm::bench(gpu, &opts, warmup, reps)?;
    println!(
        "character LSTM language model: hidden {hidden}, batch {batch} x {seq_len} characters, \
         median of {reps} steps after {warmup} warm-up"
    );
    for r in &results {
        println!(
            "{:<60} {:>8.1} ms/step {:>8.2} steps/s {:>9.0} chars/s",
            r.backend,
            1e3 * r.step.median,
            r.steps_per_sec,
            r.chars_per_sec
        );
    }
    if let Some(path) = &args.json {
        let path = json_path(path, "charlm");
        write_json(
            &path,
            &serde_json::json!({ "header": head, "results": results }),
        )?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// `--json FILE` with several reports: FILE gets the part's name before its extension.
fn json_path(path: &Path, part: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    path.with_file_name(format!("{stem}-{part}{ext}"))
}

#[derive(Serialize)]
struct GemmReport<'a> {
    header: &'a Header,
    cases: Vec<gemm::GemmCase>,
    torch: Option<Vec<serde_json::Value>>,
}

fn bench_gemm(
    gpu: Option<&Gpu>,
    shapes: &[(usize, usize, usize)],
    args: &Args,
    header: &Header,
) -> Result<()> {
    let (warmup, reps) = if args.quick { (1, 5) } else { (3, 15) };
    let torch = if args.no_torch {
        None
    } else {
        let list: Vec<String> = shapes
            .iter()
            .map(|(m, n, k)| format!("{m}x{n}x{k}"))
            .collect();
        run_torch(&[
            "gemm".into(),
            "--shapes".into(),
            list.join(","),
            "--warmup".into(),
            warmup.to_string(),
            "--reps".into(),
            reps.to_string(),
        ])
    };
    let torch_gflops = |m: usize, n: usize, k: usize| -> Option<f64> {
        torch.as_ref()?.iter().find_map(|v| {
            let same = v["kind"] == "gemm" && v["m"] == m && v["n"] == n && v["k"] == k;
            same.then(|| v["gflops"].as_f64()).flatten()
        })
    };
    if let Some(meta) = torch
        .as_ref()
        .and_then(|t| t.iter().find(|v| v["kind"] == "meta"))
    {
        println!(
            "PyTorch {} on the CPU, {} threads, measured in this run",
            meta["torch"], meta["threads"]
        );
    }
    println!(
        "{:>18} | {:>12} {:>12} {:>8} | {:>14} {:>14} {:>8}",
        "m x n x k", "CPU GFLOP/s", "torch", "CPU/torch", "GPU wall", "GPU device", "GPU/CPU"
    );
    let mut cases = Vec::new();
    for &shape in shapes {
        let case = gemm::measure(gpu, shape, warmup, reps)?;
        let (m, n, k) = shape;
        let tg = torch_gflops(m, n, k);
        let opt = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.1}"));
        let ratio = |x: Option<f64>, y: f64| x.map_or("-".to_string(), |v| format!("{:.2}", v / y));
        println!(
            "{:>18} | {:>12.1} {:>12} {:>8} | {:>14} {:>14} {:>8}",
            format!("{m}x{n}x{k}"),
            case.cpu_gflops,
            opt(tg),
            tg.map_or("-".to_string(), |t| format!(
                "{:.0}%",
                100.0 * case.cpu_gflops / t
            )),
            opt(case.gpu_wall_gflops),
            opt(case.gpu_device_gflops),
            ratio(case.gpu_wall_gflops, case.cpu_gflops),
        );
        cases.push(case);
    }
    println!("(GFLOP/s from the median of {reps} runs after {warmup} warm-up runs; GPU wall = submit to completion)");
    if let Some(path) = &args.json {
        write_json(
            path,
            &GemmReport {
                header,
                cases,
                torch,
            },
        )?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
