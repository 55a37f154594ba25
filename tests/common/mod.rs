//! Shared by the integration tests: one GPU per test binary, seeded randomness, error norms.
#![allow(dead_code)]

pub mod planted;

use std::path::PathBuf;
use std::sync::OnceLock;

use rand::rngs::StdRng;
use rand::Rng;
use recur::Gpu;

/// The GPU for this test binary, or `None` (the test then returns early) when there is no
/// adapter; each test that goes without says so on stderr, naming itself. With
/// `RECUR_REQUIRE_GPU=1` a missing adapter fails the test instead.
pub fn gpu() -> Option<Gpu> {
    static GPU: OnceLock<Result<Gpu, String>> = OnceLock::new();
    let gpu = GPU.get_or_init(|| {
        let gpu = Gpu::new().map_err(|e| format!("{e:#}"));
        if let Ok(gpu) = &gpu {
            eprintln!("GPU tests run on {}", gpu.describe());
        }
        gpu
    });
    match gpu {
        Ok(gpu) => Some(gpu.clone()),
        Err(e) => {
            if std::env::var("RECUR_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("RECUR_REQUIRE_GPU=1 but no adapter: {e}");
            }
            skipped(&format!("no GPU adapter: {e}"));
            None
        }
    }
}

/// A device of its own (its settings and counters are per device) whose recurrent plans take
/// `path` (where it applies) and `kernel`'s step kernels, each as the device chooses where
/// `None`; `None` where there is no adapter.
pub fn gpu_with(
    path: Option<recur::gpu::recurrent::RecurrentPath>,
    kernel: Option<recur::gpu::recurrent::StepKernel>,
) -> Option<Gpu> {
    gpu()?;
    let gpu = Gpu::new().unwrap();
    if let Some(p) = path {
        gpu.set_recurrent_path(p).unwrap();
    }
    if let Some(k) = kernel {
        gpu.set_step_kernel(k).unwrap();
    }
    Some(gpu)
}

/// The backends a test runs on: the CPU, and the GPU where there is an adapter.
pub fn backends() -> Vec<recur::Backend> {
    let mut out = vec![recur::Backend::Cpu];
    out.extend(gpu().map(recur::Backend::Gpu));
    out
}

/// Says, in the test run's output, that the running test did not run its checks and why.
/// The test harness captures `eprintln!` of a passing test; this writes past it, so a
/// skipped test is never silent.
pub fn skipped(why: &str) {
    use std::io::Write;
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// Runs the `recur` binary: its exit status (-1 if killed), stdout and stderr.
pub fn recur(args: &[&str]) -> (i32, String, String) {
    recur_env(args, &[])
}

/// [`recur`] with these environment variables set.
pub fn recur_env(args: &[&str], vars: &[(&str, &str)]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_recur"))
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .envs(vars.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// A fresh random generator for a test, its seed printed ([`recur::check::test_rng`]).
pub fn rng(test: &str) -> StdRng {
    recur::check::test_rng(test)
}

pub fn random_vec(rng: &mut StdRng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// The derivative at 0 of `f`, a function of a step along one coordinate, by central
/// differences with Richardson extrapolation: `R(h) = (4 D(h/2) - D(h)) / 3` with
/// `D(h) = (f(h) - f(-h)) / 2h`, whose truncation error is O(h^4) where D's is O(h^2). That
/// allows a step large enough that rounding in `f` (about ulp(f) / h) stays far below the
/// tolerances the tests check; a plain difference at h = 1e-6 carries ~1e-10 of rounding,
/// which is 1e-6 of a 1e-4 gradient.
///
/// Where `f` is not smooth across the stencil (a ReLU kink within `h` of 0), successive
/// estimates disagree; the step is then halved until two successive estimates agree, and
/// `None` is returned if they never do (the caller checks another coordinate). This
/// compares finite differences with each other, never with the gradient under test, so it
/// cannot hide a wrong gradient.
#[allow(dead_code)]
pub fn derivative(mut f: impl FnMut(f64) -> f64, h: f64) -> Option<f64> {
    let mut d = |h: f64| (f(h) - f(-h)) / (2.0 * h);
    let (mut step, mut d_prev) = (h, 0.0);
    d_prev += d(step);
    let mut r_prev: Option<f64> = None;
    // Down to h / 2^12 at most: rounding, about ulp(f) / step, is still below 1e-9 there.
    for _ in 0..12 {
        step /= 2.0;
        let d_next = d(step);
        let r = (4.0 * d_next - d_prev) / 3.0;
        if let Some(rp) = r_prev {
            if (rp - r).abs() <= 1e-9 + 1e-7 * r.abs() {
                return Some(r);
            }
        }
        (d_prev, r_prev) = (d_next, Some(r));
    }
    None
}

/// The step [`derivative`] takes in the recurrence tests.
#[allow(dead_code)]
pub const DERIVATIVE_STEP: f64 = 1e-2;

#[allow(unused_imports)]
pub use recur::check::comparable;

/// A folder of the test binary's own under the system's temporary folder,
/// `recur-<label>-<pid>`, created if missing (the process id keeps concurrent runs apart).
pub fn tmp_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("recur-{label}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The path `name` in [`tmp_dir`]`(label)`.
pub fn tmp_path(label: &str, name: &str) -> PathBuf {
    tmp_dir(label).join(name)
}
