//! `recur selftest`: each GPU kernel against the CPU path on random inputs.

use anyhow::{bail, Result};

use crate::gpu::Gpu;
use crate::selftest::{run_all, TOLERANCE};

#[derive(clap::Args)]
pub struct Args {
    /// Seed of the random inputs (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
}

pub fn run(args: Args) -> Result<()> {
    let gpu = Gpu::new()?;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    });
    println!(
        "selftest on {} (seed {seed}, tolerance {TOLERANCE:e})",
        gpu.describe()
    );
    let results = run_all(&gpu, seed)?;
    let mut failed = 0;
    for r in &results {
        let ok = r.rel_error < TOLERANCE;
        failed += usize::from(!ok);
        println!(
            "  {:<4} {:<54} rel error {:.2e}",
            if ok { "pass" } else { "FAIL" },
            r.name,
            r.rel_error
        );
    }
    println!("{} passed, {} failed", results.len() - failed, failed);
    if failed > 0 {
        bail!("{failed} kernel check(s) failed on {}", gpu.describe());
    }
    Ok(())
}
