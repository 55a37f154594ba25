//! `recur bench`: the GPU path against the CPU path, side by side in one run.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde::Serialize;

use crate::bench::{cpu_name, gemm};
use crate::cpu;
use crate::gpu::Gpu;

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
    }
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
