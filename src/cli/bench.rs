//! `recur bench`: the GPU path against the CPU path, side by side in one run.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde::Serialize;

use crate::bench::{cpu_name, gemm, recurrent, Stats};
use crate::cpu;
use crate::gpu::Gpu;
use crate::ops::recurrent::CellKind;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
    /// Fewer repetitions: a run of under a minute on a software adapter.
    #[arg(long, global = true)]
    quick: bool,
    /// Also write the results as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// Skip the GPU (CPU figures only).
    #[arg(long, global = true)]
    cpu_only: bool,
    /// Skip PyTorch's figures even where PyTorch is installed.
    #[arg(long, global = true)]
    no_torch: bool,
}

#[derive(Subcommand)]
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
        /// Shapes as HxBxT (input = hidden), comma-separated (default: 256x32x100, 64x8x100,
        /// 1024x64x100).
        #[arg(long, value_delimiter = ',')]
        shapes: Vec<String>,
        /// Also run shapes above 10 GFLOP per forward on a software adapter (minutes each).
        #[arg(long)]
        all: bool,
    },
    /// Training steps and characters per second of `recur train`'s language model, GPU
    /// against CPU (defaults: `recur train`'s model and batch).
    Charlm {
        #[arg(long, default_value_t = crate::train::charlm::CharLmOptions::default().hidden)]
        hidden: usize,
        #[arg(long, default_value_t = crate::train::charlm::CharLmOptions::default().batch)]
        batch: usize,
        #[arg(long, default_value_t = crate::train::charlm::CharLmOptions::default().seq_len)]
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

fn parse_shape(s: &str) -> Result<(usize, usize, usize)> {
    let dims: Vec<usize> = s
        .split('x')
        .map(|d| d.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("shape {s:?} is not MxNxK"))?;
    match dims[..] {
        [m, n, k] if m > 0 && n > 0 && k > 0 => Ok((m, n, k)),
        _ => bail!("shape {s:?} is not MxNxK with three positive sizes"),
    }
}

/// The script that measures PyTorch, next to the sources or in the working directory.
fn torch_script() -> Option<PathBuf> {
    [
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/torch_bench.py"),
        PathBuf::from("tools/torch_bench.py"),
    ]
    .into_iter()
    .find(|p| p.exists())
}

/// PyTorch's JSON lines for `args`, or `None` (with the reason on stderr) if it cannot run.
fn run_torch(args: &[String]) -> Option<Vec<serde_json::Value>> {
    let script = torch_script()?;
    let out = Command::new("python3")
        .arg(&script)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "PyTorch comparison skipped: {}",
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
    crate::io::write_atomic(path, text.as_bytes())
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
    let (warmup, reps) = if args.quick { (1, 5) } else { (3, 15) };
    match &args.what {
        What::Gemm { shapes } => {
            let shapes: Vec<_> = if shapes.is_empty() {
                gemm::DEFAULT_SHAPES.to_vec()
            } else {
                shapes
                    .iter()
                    .map(|s| parse_shape(s))
                    .collect::<Result<_>>()?
            };
            bench_gemm(gpu.as_ref(), &shapes, warmup, reps, &args, head)
        }
        What::Rnn { cells, shapes, all } => {
            let cells: Vec<CellKind> = if cells.is_empty() {
                vec![CellKind::Lstm, CellKind::Gru, CellKind::RnnTanh]
            } else {
                cells
                    .iter()
                    .map(|c| CellKind::parse(c))
                    .collect::<Result<_>>()?
            };
            let shapes: Vec<(usize, usize, usize)> = if shapes.is_empty() {
                vec![(256, 32, 100), (64, 8, 100), (1024, 64, 100)]
            } else {
                shapes
                    .iter()
                    .map(|s| parse_shape(s))
                    .collect::<Result<_>>()?
            };
            let (warmup, reps) = if args.quick { (1, 3) } else { (2, 7) };
            bench_rnn(
                gpu.as_ref(),
                &cells,
                &shapes,
                *all,
                warmup,
                reps,
                &args,
                head,
            )
        }
        What::Charlm {
            hidden,
            batch,
            seq_len,
        } => {
            let opts = crate::train::charlm::CharLmOptions {
                hidden: *hidden,
                batch: *batch,
                seq_len: *seq_len,
                ..Default::default()
            };
            let (warmup, reps) = if args.quick { (1, 5) } else { (2, 15) };
            let results = crate::bench::charlm::bench(gpu.as_ref(), &opts, warmup, reps)?;
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
                write_json(
                    path,
                    &serde_json::json!({ "header": head, "results": results }),
                )?;
            }
            Ok(())
        }
    }
}

#[derive(Serialize)]
struct RnnReport {
    header: Header,
    results: Vec<recurrent::RecurrentResult>,
    torch: Vec<serde_json::Value>,
}

/// Forward FLOPs above which a software adapter is skipped unless asked (about a minute a run).
const SOFTWARE_FLOP_LIMIT: f64 = 10e9;

#[allow(clippy::too_many_arguments)]
fn bench_rnn(
    gpu: Option<&Gpu>,
    cells: &[CellKind],
    shapes: &[(usize, usize, usize)],
    all: bool,
    warmup: usize,
    reps: usize,
    args: &Args,
    header: Header,
) -> Result<()> {
    let software = gpu.is_some_and(|g| g.info().device_type == wgpu::DeviceType::Cpu);
    let ms = |s: &Stats| format!("{:.2}", s.median * 1e3);
    let opt_ms = |s: Option<&Stats>| s.map_or("-".to_string(), ms);
    println!(
        "{:>9} {:>13} | {:>17} | {:>17} | {:>17} {:>9} | {:>7} {:>7} | {:>9} {:>9}",
        "cell",
        "H x B x T",
        "CPU fwd / f+b ms",
        "torch fwd / f+b",
        "GPU fwd / f+b ms",
        "GPU dev",
        "CPU/trc",
        "GPU/CPU",
        "dispatch",
        "GPU MiB"
    );
    let mut results = Vec::new();
    let mut torch_all = Vec::new();
    for &(h, b, t) in shapes {
        for &cell in cells {
            let case = recurrent::RecurrentCase::new(cell, h, b, t);
            let cpu = recurrent::measure_cpu(&case, warmup, reps)?;
            let run_gpu =
                gpu.filter(|_| all || !software || case.forward_flops() <= SOFTWARE_FLOP_LIMIT);
            let gpu_r = run_gpu
                .map(|g| recurrent::measure_gpu(g, &case, warmup.min(1), reps.min(3)))
                .transpose()?;
            let torch = if args.no_torch || cell == CellKind::GruResetBefore {
                None
            } else {
                let torch_cell = match cell {
                    CellKind::Lstm => "lstm",
                    CellKind::Gru => "gru",
                    _ => "rnn",
                };
                run_torch(&[
                    "rnn".into(),
                    "--cell".into(),
                    torch_cell.into(),
                    "--hidden".into(),
                    h.to_string(),
                    "--batch".into(),
                    b.to_string(),
                    "--steps".into(),
                    t.to_string(),
                    "--warmup".into(),
                    warmup.to_string(),
                    "--reps".into(),
                    reps.to_string(),
                ])
                .and_then(|v| v.into_iter().find(|x| x["kind"] == "rnn"))
            };
            let torch_ms = |key: &str| {
                torch
                    .as_ref()
                    .and_then(|v| v[key]["median"].as_f64())
                    .map(|s| s * 1e3)
            };
            let (tf, tb) = (torch_ms("forward"), torch_ms("forward_backward"));
            let pair = |a: String, b: String| format!("{a} / {b}");
            println!(
                "{:>9} {:>13} | {:>17} | {:>17} | {:>17} {:>9} | {:>7} {:>7} | {:>9} {:>9}",
                cell.name(),
                format!("{h}x{b}x{t}"),
                pair(ms(&cpu.forward), ms(&cpu.forward_backward)),
                pair(
                    tf.map_or("-".into(), |v| format!("{v:.2}")),
                    tb.map_or("-".into(), |v| format!("{v:.2}"))
                ),
                gpu_r.as_ref().map_or("skipped".into(), |g| pair(
                    ms(&g.forward),
                    ms(&g.forward_backward)
                )),
                gpu_r
                    .as_ref()
                    .map_or("-".into(), |g| opt_ms(g.forward_backward_device.as_ref())),
                tb.map_or("-".into(), |v| format!(
                    "{:.2}",
                    cpu.forward_backward.median * 1e3 / v
                )),
                gpu_r.as_ref().map_or("-".into(), |g| format!(
                    "{:.2}",
                    cpu.forward_backward.median / g.forward_backward.median
                )),
                gpu_r.as_ref().map_or("-".into(), |g| format!(
                    "{}+{}",
                    g.dispatches_forward.unwrap_or(0),
                    g.dispatches_backward.unwrap_or(0)
                )),
                gpu_r
                    .as_ref()
                    .and_then(|g| g.device_bytes)
                    .map_or("-".into(), |b| format!(
                        "{:.1}",
                        b as f64 / (1 << 20) as f64
                    )),
            );
            torch_all.extend(torch);
            results.push(recurrent::RecurrentResult {
                case,
                cpu: Some(cpu),
                gpu: gpu_r,
            });
        }
    }
    println!(
        "(medians per batch; CPU/trc = recur CPU f+b over PyTorch CPU f+b; GPU/CPU = CPU f+b time over GPU f+b time; \
         GPU dev = device time of f+b from timestamps; dispatch = forward+backward dispatches, 1 submit each)"
    );
    if let Some(path) = &args.json {
        write_json(
            path,
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
struct GemmReport {
    header: Header,
    cases: Vec<gemm::GemmCase>,
    torch: Option<Vec<serde_json::Value>>,
}

fn bench_gemm(
    gpu: Option<&Gpu>,
    shapes: &[(usize, usize, usize)],
    warmup: usize,
    reps: usize,
    args: &Args,
    header: Header,
) -> Result<()> {
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
