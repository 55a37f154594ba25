//! `recur selftest`: each GPU kernel against the CPU path on random inputs.

use anyhow::{bail, Result};

use crate::apps::selftest::{run_all, Outcome, TOLERANCE};
use crate::gpu::Gpu;

#[derive(clap::Args)]
pub struct Args {
    /// Seed of the random inputs (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
}

/// Prints one line per check (pass, FAIL, or skip with the reason the adapter cannot run
/// it); fails only if a check failed.
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
    let results = run_all(&gpu, seed);
    let (mut failed, mut skipped) = (0, 0);
    for r in &results {
        let verdict = if r.failed() { "FAIL" } else { "pass" };
        match &r.outcome {
            Outcome::Compared(e) if r.tolerance != TOLERANCE => println!(
                "  {verdict:<4} {:<54} rel error {e:.2e} (tolerance {:.2e})",
                r.name, r.tolerance
            ),
            Outcome::Compared(e) => println!("  {verdict:<4} {:<54} rel error {e:.2e}", r.name),
            Outcome::Skipped(why) => println!("  skip {:<54} {why}", r.name),
            Outcome::Error(e) => println!("  {verdict:<4} {:<54} error: {e}", r.name),
        }
        failed += usize::from(r.failed());
        skipped += usize::from(matches!(r.outcome, Outcome::Skipped(_)));
    }
    println!(
        "{} passed, {failed} failed, {skipped} skipped",
        results.len() - failed - skipped
    );
    if failed > 0 {
        bail!("{failed} kernel check(s) failed on {}", gpu.describe());
    }
    Ok(())
}
