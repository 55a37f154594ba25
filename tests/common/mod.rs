//! Shared by the integration tests: one GPU per test binary, seeded randomness, error norms.
#![allow(dead_code)]

pub mod planted;

use std::sync::OnceLock;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use recur::Gpu;

/// The GPU for this test binary, or `None` (the test then returns early) when there is no
/// adapter. With `RECUR_REQUIRE_GPU=1` a missing adapter fails the test instead.
pub fn gpu() -> Option<Gpu> {
    static GPU: OnceLock<Option<Gpu>> = OnceLock::new();
    GPU.get_or_init(|| match Gpu::new() {
        Ok(gpu) => {
            eprintln!("GPU tests run on {}", gpu.describe());
            Some(gpu)
        }
        Err(e) => {
            if std::env::var("RECUR_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("RECUR_REQUIRE_GPU=1 but no adapter: {e:#}");
            }
            eprintln!("skipping GPU test, no adapter: {e:#}");
            None
        }
    })
    .clone()
}

/// A fresh random generator for a test, seeded from the clock unless `RECUR_TEST_SEED` is
/// set; the seed is printed so a failure can be replayed.
pub fn rng(test: &str) -> StdRng {
    let seed = std::env::var("RECUR_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        });
    eprintln!("{test}: RECUR_TEST_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

pub fn random_vec(rng: &mut StdRng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}
