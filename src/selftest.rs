//! Each GPU kernel against its CPU twin on random inputs, on whatever adapter is in use.
//! `recur selftest` prints these; the test suite has its own, more thorough checks.

use anyhow::Result;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::check::rel_error;
use crate::gpu::{gemm as gpu_gemm, Gpu, GpuTensor};
use crate::{cpu, Gemm};

/// The largest relative error a kernel may show against the CPU path (f32 work).
pub const TOLERANCE: f64 = 1e-5;

pub struct CheckResult {
    pub name: String,
    pub rel_error: f64,
}

fn random(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

/// Runs every check; outputs are poisoned with NaN first, so an unwritten element fails.
pub fn run_all(gpu: &Gpu, seed: u64) -> Result<Vec<CheckResult>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut results = Vec::new();
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let (m, n, k) = (
            rng.random_range(1..200),
            rng.random_range(1..200),
            rng.random_range(1..200),
        );
        let spec = Gemm::new(m, n, k)
            .trans_a(ta)
            .trans_b(tb)
            .alpha(rng.random_range(0.5..2.0));
        let a = random(&mut rng, m * k);
        let b = random(&mut rng, k * n);
        let bias = random(&mut rng, n);
        let mut want = vec![0.0f64; m * n];
        let f64v = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        cpu::gemm(&spec, &f64v(&a), &f64v(&b), Some(&f64v(&bias)), &mut want)?;
        let ga = GpuTensor::from_slice(gpu, &[a.len()], &a)?;
        let gb = GpuTensor::from_slice(gpu, &[b.len()], &b)?;
        let gbias = GpuTensor::from_slice(gpu, &[n], &bias)?;
        let gc = GpuTensor::filled(gpu, &[m, n], f32::NAN)?;
        gpu_gemm(gpu, &spec, &ga, &gb, Some(&gbias), &gc)?;
        results.push(CheckResult {
            name: format!("gemm {m}x{n}x{k} trans_a={ta} trans_b={tb} +bias"),
            rel_error: rel_error(&gc.to_vec()?, &want),
        });
    }
    results.push(word2vec_top_k(gpu, &mut rng)?);
    Ok(results)
}

/// word2vec's top-k cosine scan: the CPU's best scores against the GPU's rows rescored on
/// the CPU, and the unit vectors (a near tie may swap two rows, so rows are not compared).
fn word2vec_top_k(gpu: &Gpu, rng: &mut StdRng) -> Result<CheckResult> {
    let (rows, dim, k) = (rng.random_range(1025..4000), rng.random_range(1..64), 10);
    let data = random(rng, rows * dim);
    let index =
        crate::gpu::CosineIndex::new(gpu, &crate::ops::CosineTopK::new(rows, dim, k), &data, 1)?;
    let unit = cpu::word2vec::normalize_rows(&data, dim);
    let query = unit[..dim].to_vec();
    let want: Vec<f32> = cpu::word2vec::top_k_cosine(&unit, dim, &query, k, &[0])
        .iter()
        .map(|x| x.1)
        .collect();
    let got: Vec<f32> = index
        .top_k(&query, &[0])?
        .iter()
        .map(|&(r, _)| crate::word2vec::grad::dot(&unit[r * dim..(r + 1) * dim], &query))
        .collect();
    let err = rel_error(&got, &want).max(rel_error(&index.unit().to_vec()?, &unit));
    Ok(CheckResult {
        name: format!("word2vec top-{k} cosine over {rows} rows of {dim}"),
        rel_error: err,
    })
}
