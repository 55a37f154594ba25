//! Embedding: the CPU twin against hand values and finite differences (f64), the GPU
//! kernels against the CPU twin with repeated ids, and bad input.

mod common;

use common::{random_vec, rng, to_f64};
use rand::rngs::StdRng;
use rand::Rng;
use recur::check::rel_error;
use recur::cpu;
use recur::gpu::device::LLVMPIPE_LOOP_BUDGET;
use recur::gpu::{EmbeddingBackwardPlan, EmbeddingForwardPlan, EmbeddingIds, Recorder};
use recur::ops::Embedding;
use recur::GpuTensor;

#[test]
fn cpu_embedding_gathers_and_scatters_by_hand() {
    let spec = Embedding::new(3, 2).padding_idx(1);
    let table = [1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0];
    let ids = [2u32, 0, 2, 1];
    let mut out = [0.0; 8];
    cpu::embedding::forward(&spec, &table, &ids, &mut out).unwrap();
    assert_eq!(out, [5.0, 6.0, 1.0, 2.0, 5.0, 6.0, 3.0, 4.0]);
    let dout = [1.0, 10.0, 100.0, 1000.0, 0.5, 0.25, 7.0, 7.0];
    let mut dtable = [f64::NAN; 6];
    cpu::embedding::backward(&spec, &ids, &dout, &mut dtable).unwrap();
    // Row 0 from position 1, row 1 is padding (no gradient), row 2 from positions 0 and 2.
    assert_eq!(dtable, [100.0, 1000.0, 0.0, 0.0, 1.5, 10.25]);

    let index = spec.inverse_index(&ids).unwrap();
    assert_eq!(index.offsets, [0, 1, 2, 4]);
    assert_eq!(index.positions, [1, 3, 0, 2]);
}

#[test]
fn cpu_embedding_gradient_matches_finite_differences() {
    let mut rng = rng("cpu_embedding_gradient_matches_finite_differences");
    let (v, d, n) = (
        rng.random_range(1..6),
        rng.random_range(1..4),
        rng.random_range(1..10),
    );
    let mut spec = Embedding::new(v, d);
    if rng.random_bool(0.5) {
        spec = spec.padding_idx(rng.random_range(0..v as u32));
    }
    let table = to_f64(&random_vec(&mut rng, v * d));
    let ids: Vec<u32> = (0..n).map(|_| rng.random_range(0..v as u32)).collect();
    // loss = sum(out * w), so dout = w.
    let w = to_f64(&random_vec(&mut rng, n * d));
    let loss = |t: &[f64]| {
        let mut out = vec![0.0; n * d];
        cpu::embedding::forward(&spec, t, &ids, &mut out).unwrap();
        out.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>()
    };
    let mut grad = vec![0.0; v * d];
    cpu::embedding::backward(&spec, &ids, &w, &mut grad).unwrap();
    let h = 1e-6;
    let numeric: Vec<f64> = (0..v * d)
        .map(|i| {
            if spec.padding_idx == Some((i / d) as u32) {
                return 0.0; // PyTorch: the padding row gets no gradient by definition
            }
            let (mut a, mut b) = (table.clone(), table.clone());
            a[i] += h;
            b[i] -= h;
            (loss(&a) - loss(&b)) / (2.0 * h)
        })
        .collect();
    let e = rel_error(&grad, &numeric);
    assert!(e < 1e-8, "{spec:?} ids {ids:?}: gradient rel error {e}");
}

fn embedding_case(rng: &mut StdRng, v: usize, d: usize, n: usize) {
    let Some(gpu) = common::gpu() else { return };
    let mut spec = Embedding::new(v, d);
    if rng.random_bool(0.5) {
        spec = spec.padding_idx(rng.random_range(0..v as u32));
    }
    // Few distinct ids, so most rows repeat many times.
    let distinct = rng.random_range(1..=v.min(8));
    let pool: Vec<u32> = (0..distinct)
        .map(|_| rng.random_range(0..v as u32))
        .collect();
    let ids: Vec<u32> = (0..n)
        .map(|_| {
            if rng.random_bool(0.8) {
                pool[rng.random_range(0..distinct)]
            } else {
                rng.random_range(0..v as u32)
            }
        })
        .collect();
    let table = random_vec(rng, v * d);
    let dout = random_vec(rng, n * d);
    let mut out = vec![0.0f32; n * d];
    cpu::embedding::forward(&spec, &table, &ids, &mut out).unwrap();
    let mut dtable = vec![0.0f64; v * d];
    cpu::embedding::backward(&spec, &ids, &to_f64(&dout), &mut dtable).unwrap();

    let gt = GpuTensor::from_slice(&gpu, &[v, d], &table).unwrap();
    let gids = EmbeddingIds::new(&gpu, &spec, n).unwrap();
    gids.write(&ids).unwrap();
    let gout = GpuTensor::filled(&gpu, &[n, d], f32::NAN).unwrap();
    let gdout = GpuTensor::from_slice(&gpu, &[n, d], &dout).unwrap();
    let gdt = GpuTensor::filled(&gpu, &[v, d], f32::NAN).unwrap();
    let fwd = EmbeddingForwardPlan::new(&gpu, &spec, &gt, &gids, &gout).unwrap();
    let bwd = EmbeddingBackwardPlan::new(&gpu, &spec, &gids, &gdout, &gdt).unwrap();
    let mut rec = Recorder::new(&gpu);
    fwd.record(&mut rec);
    bwd.record(&mut rec);
    rec.submit().unwrap();
    let what = format!("{spec:?} n {n}");
    assert_eq!(gout.to_vec().unwrap(), out, "{what}: forward is a copy");
    let got = gdt.to_vec().unwrap();
    let e = rel_error(&got, &dtable);
    assert!(e < 1e-5, "{what}: dtable rel error {e}");
    if let Some(p) = spec.padding_idx {
        assert!(
            got[p as usize * d..][..d].iter().all(|&x| x == 0.0),
            "{what}"
        );
    }
}

#[test]
fn gpu_embedding_matches_cpu_with_repeated_ids() {
    let mut rng = rng("gpu_embedding_matches_cpu_with_repeated_ids");
    for _ in 0..10 {
        let v = rng.random_range(1..60);
        let d = [1, 3, 16, 33, 70][rng.random_range(0..5)];
        let n = rng.random_range(1..500);
        embedding_case(&mut rng, v, d, n);
    }
    // A table larger than one 1D grid (65535 workgroups of 256).
    embedding_case(&mut rng, 70000, 250, 300);
}

#[test]
fn an_id_repeated_past_llvmpipes_loop_budget_is_an_error_there() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = rng("an_id_repeated_past_llvmpipes_loop_budget_is_an_error_there");
    // The backward walks each id's positions in one loop: 70,000 of id 2 would stop early on
    // llvmpipe. The padding id is never walked, so it may repeat.
    let (v, n) = (4, 70_000);
    let spec = Embedding::new(v, 1).padding_idx(3);
    let ids = EmbeddingIds::new(&gpu, &spec, n).unwrap();
    let repeated = vec![2u32; n];
    let written = ids.write(&repeated);
    if gpu.is_llvmpipe() {
        let text = written.expect_err("an id past the budget").to_string();
        assert!(text.contains("id 2 occurs 70000 times"), "{text}");
    } else {
        written.unwrap();
    }
    ids.write(&vec![3u32; n]).unwrap();
    // Within the budget everywhere, checked against the CPU.
    let ids: Vec<u32> = (0..n).map(|_| rng.random_range(0..2)).collect();
    assert!(ids.iter().filter(|&&i| i == 0).count() <= LLVMPIPE_LOOP_BUDGET);
    let spec = Embedding::new(v, 1);
    let dout = random_vec(&mut rng, n);
    let mut want = vec![0.0f64; v];
    cpu::embedding::backward(&spec, &ids, &to_f64(&dout), &mut want).unwrap();
    let gids = EmbeddingIds::upload(&gpu, &spec, &ids).unwrap();
    let gdout = GpuTensor::from_slice(&gpu, &[n, 1], &dout).unwrap();
    let gdt = GpuTensor::filled(&gpu, &[v, 1], f32::NAN).unwrap();
    let bwd = EmbeddingBackwardPlan::new(&gpu, &spec, &gids, &gdout, &gdt).unwrap();
    let mut rec = Recorder::new(&gpu);
    bwd.record(&mut rec);
    rec.submit().unwrap();
    // Each row is a sum of about 35,000 terms that largely cancel (seed 1796020102408023115
    // on SwiftShader: relative error 1.6e-5), so its f32 error is judged against the sum of
    // the terms' magnitudes, as the weight-gradient sums in tests/gemm.rs are.
    let mut scale = vec![0.0f64; v];
    let abs_dout: Vec<f64> = dout.iter().map(|&x| (x as f64).abs()).collect();
    cpu::embedding::backward(&spec, &ids, &abs_dout, &mut scale).unwrap();
    let got = gdt.to_vec().unwrap();
    let diff: f64 = got
        .iter()
        .zip(&want)
        .map(|(&g, w)| (g as f64 - w).powi(2))
        .sum();
    let e = (diff / scale.iter().map(|x| x * x).sum::<f64>()).sqrt();
    assert!(e < 1e-6, "dtable error {e} of the magnitudes' sums");
}

#[test]
fn gpu_embedding_ids_can_be_rewritten_between_steps() {
    let Some(gpu) = common::gpu() else { return };
    let spec = Embedding::new(4, 2);
    let table =
        GpuTensor::from_slice(&gpu, &[4, 2], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]).unwrap();
    let ids = EmbeddingIds::upload(&gpu, &spec, &[3, 3, 0]).unwrap();
    let out = GpuTensor::zeros(&gpu, &[3, 2]).unwrap();
    let dout = GpuTensor::filled(&gpu, &[3, 2], 1.0f32).unwrap();
    let dt = GpuTensor::zeros(&gpu, &[4, 2]).unwrap();
    let fwd = EmbeddingForwardPlan::new(&gpu, &spec, &table, &ids, &out).unwrap();
    let bwd = EmbeddingBackwardPlan::new(&gpu, &spec, &ids, &dout, &dt).unwrap();
    for (batch, want_out, want_dt) in [
        (
            [3u32, 3, 0],
            [6.0f32, 7.0, 6.0, 7.0, 0.0, 1.0],
            [1.0f32, 1.0, 0.0, 0.0, 0.0, 0.0, 2.0, 2.0],
        ),
        (
            [1, 2, 1],
            [2.0, 3.0, 4.0, 5.0, 2.0, 3.0],
            [0.0, 0.0, 2.0, 2.0, 1.0, 1.0, 0.0, 0.0],
        ),
    ] {
        ids.write(&batch).unwrap();
        let mut rec = Recorder::new(&gpu);
        fwd.record(&mut rec);
        bwd.record(&mut rec);
        rec.submit().unwrap();
        assert_eq!(out.to_vec().unwrap(), want_out);
        assert_eq!(dt.to_vec().unwrap(), want_dt);
    }
}

#[test]
fn bad_embedding_input_is_an_error_naming_the_value() {
    let spec = Embedding::new(5, 2);
    let table = vec![0.0f32; 10];
    let mut out = vec![0.0f32; 6];
    let err = cpu::embedding::forward(&spec, &table, &[0, 7, 1], &mut out)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("id 7 at position 1") && err.contains("5 rows"),
        "{err}"
    );
    let err = cpu::embedding::forward(&spec, &table[..9], &[0, 1, 1], &mut out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs 10 elements, got 9"), "{err}");
    let err = cpu::embedding::backward(&spec.padding_idx(5), &[0, 1, 1], &out, &mut [0.0; 10])
        .unwrap_err()
        .to_string();
    assert!(err.contains("padding_idx = 5"), "{err}");

    let Some(gpu) = common::gpu() else { return };
    let err = EmbeddingIds::upload(&gpu, &spec, &[4, 4, 5])
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("id 5 at position 2"), "{err}");
    let ids = EmbeddingIds::upload(&gpu, &spec, &[4, 4, 0]).unwrap();
    let err = ids.write(&[1, 2]).unwrap_err().to_string();
    assert!(err.contains("room for 3, got 2"), "{err}");
    let gt = GpuTensor::zeros(&gpu, &[5, 2]).unwrap();
    let gout = GpuTensor::zeros(&gpu, &[3, 3]).unwrap();
    let err = EmbeddingForwardPlan::new(&gpu, &spec, &gt, &ids, &gout)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("needs 6 output elements, got 9"), "{err}");
    let other = Embedding::new(6, 2);
    let gt6 = GpuTensor::zeros(&gpu, &[6, 2]).unwrap();
    let gout = GpuTensor::zeros(&gpu, &[3, 2]).unwrap();
    let err = EmbeddingForwardPlan::new(&gpu, &other, &gt6, &ids, &gout)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("prepared for"), "{err}");
}
