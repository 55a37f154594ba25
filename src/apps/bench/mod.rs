//! Benchmark harness shared by `recur bench` and `benches/`: warm-up, repetitions, medians.

pub mod charlm;
pub mod gemm;
pub mod plan;
pub mod recurrent;
pub mod roofline;
pub mod soak;
pub mod word2vec;

use std::time::Instant;

use crate::error::Result;
use serde::Serialize;

/// Median, minimum and maximum of repeated timings, in seconds.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Stats {
    /// The median sample (the mean of the middle two for an even count).
    pub median: f64,
    /// The fastest sample.
    pub min: f64,
    /// The slowest sample.
    pub max: f64,
    /// How many samples the statistics summarise.
    pub reps: usize,
}

impl Stats {
    /// Sorts `samples` in place and summarises them; `None` when there are none.
    pub fn from_samples(samples: &mut [f64]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_by(f64::total_cmp);
        let n = samples.len();
        let median = if n % 2 == 1 {
            samples[n / 2]
        } else {
            0.5 * (samples[n / 2 - 1] + samples[n / 2])
        };
        Some(Self {
            median,
            min: samples[0],
            max: samples[n - 1],
            reps: n,
        })
    }
}

/// Wall-clock timings of `run`, and the device timings it reports (GPU seconds, where the
/// adapter has timestamps), after `warmup` untimed runs.
pub struct Timings {
    /// Host wall-clock seconds per call of `run`.
    pub wall: Stats,
    /// Device seconds per call, from the calls that reported some; `None` when none did.
    pub device: Option<Stats>,
}

/// Calls `run` `warmup` times untimed, then `reps` times (at least once) timed. `run`
/// returns the device seconds it measured, if any. The first error from `run` is returned.
pub fn time_reps(
    warmup: usize,
    reps: usize,
    mut run: impl FnMut() -> Result<Option<f64>>,
) -> Result<Timings> {
    for _ in 0..warmup {
        run()?;
    }
    let mut wall = Vec::with_capacity(reps);
    let mut device = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let start = Instant::now();
        let dev = run()?;
        wall.push(start.elapsed().as_secs_f64());
        device.extend(dev);
    }
    Ok(Timings {
        wall: Stats::from_samples(&mut wall).expect("at least one repetition"),
        device: Stats::from_samples(&mut device),
    })
}

/// The CPU model name, for benchmark headers.
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}
