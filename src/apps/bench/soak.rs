//! The soak: `recur train`'s language model trained for many steps (the whole run: steps,
//! evaluations, checkpoints), with the process's resident memory and the device memory
//! wgpu holds for buffers sampled at a fixed interval. After a warm-up, neither may grow by
//! more than a tolerance over its value at the end of the warm-up: a leak of a buffer, a
//! bind group or a host vector per step shows as steady growth.

use std::path::PathBuf;

use crate::error::{bail, ensure, IoResultExt, Result, ResultExt};
use serde::Serialize;

use crate::apps::charlm::{self, CharLmOptions};
use crate::backend::Backend;
use crate::gpu::Gpu;
use crate::memory::{device_buffer_bytes, human, resident_bytes};

/// One soak run's settings.
#[derive(Clone, Debug)]
pub struct SoakOptions {
    /// The model and run (`recur train`'s defaults unless changed); its `train_steps` is
    /// the soak's length.
    pub charlm: CharLmOptions,
    /// Steps between samples.
    pub every: u64,
    /// Steps before the baseline sample; growth is judged after it.
    pub warmup: u64,
    /// Largest relative growth allowed after the warm-up (0.01: 1%).
    pub tolerance: f64,
}

/// Memory at one step.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Sample {
    /// Training steps done when it was taken (0: before the first).
    pub step: u64,
    /// Resident memory of the process, in bytes.
    pub resident: Option<u64>,
    /// Device memory wgpu holds for buffers (GPU runs on backends that count it).
    pub device: Option<u64>,
    /// Seconds since the run started.
    pub seconds: f64,
}

/// How one series moved after the warm-up.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Growth {
    /// The value at the end of the warm-up (the first sample at or after it), in bytes.
    pub baseline: u64,
    /// The step of `baseline`.
    pub baseline_step: u64,
    /// The smallest value from the baseline on.
    pub min_after: u64,
    /// The largest value from the baseline on.
    pub max_after: u64,
    /// The step of `max_after` (the latest, where several samples share it).
    pub max_step: u64,
    /// The last value.
    pub last: u64,
    /// `(max_after - baseline) / baseline`.
    pub growth: f64,
}

impl Growth {
    /// The series' growth after `warmup`, or `None` without a value at or after it.
    fn of(samples: &[(u64, u64)], warmup: u64) -> Option<Self> {
        let i = samples.iter().position(|&(step, _)| step >= warmup)?;
        let (baseline_step, baseline) = samples[i];
        let after = &samples[i..];
        let &(max_step, max_after) = after.iter().max_by_key(|&&(s, v)| (v, s))?;
        let min_after = after.iter().map(|&(_, v)| v).min()?;
        let last = after.last()?.1;
        Some(Self {
            baseline,
            baseline_step,
            min_after,
            max_after,
            max_step,
            last,
            growth: (max_after as f64 - baseline as f64) / baseline.max(1) as f64,
        })
    }
}

/// A finished soak on one backend.
#[derive(Clone, Debug, Serialize)]
pub struct SoakRun {
    /// The backend: "CPU", or "GPU (...)" with the adapter's description.
    pub backend: String,
    /// Training steps run (the options' `train_steps`).
    pub steps: u64,
    /// Wall-clock seconds of the whole run.
    pub seconds: f64,
    /// Every sample, in step order, the first at step 0.
    pub samples: Vec<Sample>,
    /// The resident memory's growth; `None` where the platform does not report it.
    pub resident: Option<Growth>,
    /// The device memory's growth; `None` on the CPU or where wgpu does not count it.
    pub device: Option<Growth>,
    /// Largest relative growth allowed, as in [`SoakOptions::tolerance`].
    pub tolerance: f64,
}

impl SoakRun {
    /// An error naming the series that grew past the tolerance, if one did.
    pub fn check(&self) -> Result<()> {
        for (name, g) in [
            ("resident memory", self.resident),
            ("device memory", self.device),
        ] {
            if let Some(g) = g {
                if g.growth > self.tolerance {
                    bail!(
                        Limit,
                        "{}: {name} grew {:.2}% after the warm-up, from {} at step {} to {} at \
                         step {}: more than the {:.2}% allowed",
                        self.backend,
                        100.0 * g.growth,
                        human(g.baseline),
                        g.baseline_step,
                        human(g.max_after),
                        g.max_step,
                        100.0 * self.tolerance
                    );
                }
            }
        }
        Ok(())
    }
}

/// Trains the language model for `opts.charlm.train_steps` steps on `gpu` (or the CPU),
/// sampling memory every `opts.every` steps (`on_sample` sees each sample as it comes).
/// The checkpoints go to a temporary folder, removed afterwards.
pub fn soak(
    gpu: Option<&Gpu>,
    opts: &SoakOptions,
    mut on_sample: impl FnMut(&Sample),
) -> Result<SoakRun> {
    ensure!(
        opts.every > 0 && opts.warmup < opts.charlm.train_steps,
        Invalid,
        "a soak samples every {} steps with a warm-up of {} in {} steps: expected a sample \
         interval > 0 and a warm-up shorter than the run",
        opts.every,
        opts.warmup,
        opts.charlm.train_steps
    );
    let charlm_opts = opts.charlm.clone();
    let run_on = gpu.map_or(Backend::Cpu, |g| Backend::Gpu(g.clone()));
    let backend = gpu.map_or_else(|| "CPU".to_string(), |g| format!("GPU ({})", g.describe()));
    let dir = TempDir::new()?;
    let text = charlm::default_text();
    let start = std::time::Instant::now();
    let mut samples = Vec::new();
    let mut take = |step: u64| {
        let s = Sample {
            step,
            resident: resident_bytes(),
            device: gpu.and_then(device_buffer_bytes),
            seconds: start.elapsed().as_secs_f64(),
        };
        on_sample(&s);
        samples.push(s);
    };
    take(0);
    charlm::train(
        &text,
        &charlm_opts,
        &dir.0.join("model.safetensors"),
        &run_on,
        |r| {
            if r.step % opts.every == 0 {
                take(r.step);
            }
        },
    )
    .with_context(|| format!("the soak's training run on {backend}"))?;
    let series = |f: fn(&Sample) -> Option<u64>| -> Option<Growth> {
        let s: Vec<(u64, u64)> = samples
            .iter()
            .filter_map(|x| Some((x.step, f(x)?)))
            .collect();
        Growth::of(&s, opts.warmup)
    };
    let resident = series(|s| s.resident);
    let device = series(|s| s.device);
    Ok(SoakRun {
        backend,
        steps: opts.charlm.train_steps,
        seconds: start.elapsed().as_secs_f64(),
        samples,
        resident,
        device,
        tolerance: opts.tolerance,
    })
}

/// A folder of its own under the system's temporary folder, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("recur-soak-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).io(&dir, || format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_judged_from_the_end_of_the_warm_up() {
        let s = [(0, 50), (100, 100), (200, 101), (300, 100), (400, 99)];
        let g = Growth::of(&s, 100).unwrap();
        assert_eq!((g.baseline, g.baseline_step), (100, 100));
        assert_eq!(
            (g.max_after, g.max_step, g.min_after, g.last),
            (101, 200, 99, 99)
        );
        assert!((g.growth - 0.01).abs() < 1e-12);
        assert!(Growth::of(&s, 500).is_none());
    }

    #[test]
    fn a_run_that_grows_fails_its_check() {
        let run = |last: u64| SoakRun {
            backend: "CPU".into(),
            steps: 300,
            seconds: 1.0,
            samples: Vec::new(),
            resident: Growth::of(&[(100, 1000), (200, 1005), (300, last)], 100),
            device: None,
            tolerance: 0.01,
        };
        assert!(run(1010).check().is_ok());
        let e = run(1011).check().unwrap_err().to_string();
        assert!(e.contains("resident memory grew 1.10%"), "{e}");
    }
}
