//! Dropout: GPU masks equal CPU masks bit for bit, the keep fraction is binomially right,
//! masks depend on every part of the key, application matches, and bad input.

mod common;

use common::{random_vec, rng};
use rand::rngs::StdRng;
use rand::Rng;
use recur::cpu;
use recur::cpu::philox::draw;
use recur::gpu::{DropoutApplyPlan, DropoutMaskPlan, Recorder};
use recur::ops::{Dropout, DropoutKey};
use recur::{Gpu, GpuTensor};

fn random_key(rng: &mut StdRng) -> DropoutKey {
    DropoutKey {
        seed: rng.random(),
        step: if rng.random_bool(0.5) {
            rng.random_range(0..1000)
        } else {
            rng.random()
        },
        stream: rng.random_range(0..4),
    }
}

fn gpu_mask(gpu: &Gpu, spec: &Dropout, key: DropoutKey) -> Vec<f32> {
    let mask = GpuTensor::filled(gpu, &[spec.rows, spec.cols], f32::NAN).unwrap();
    let mut plan = DropoutMaskPlan::new(gpu, spec, &mask).unwrap();
    let mut rec = Recorder::new(gpu);
    plan.record(&mut rec, key).unwrap();
    rec.submit().unwrap();
    mask.to_vec().unwrap()
}

#[test]
fn cpu_mask_follows_the_philox_draws() {
    let spec = Dropout::new(3, 7, 0.6);
    let key = DropoutKey {
        seed: 0x1234_5678_9abc_def0,
        step: 42,
        stream: 1,
    };
    let mut mask = vec![0.0f64; 21];
    cpu::dropout::mask(&spec, key, &mut mask).unwrap();
    for (i, &m) in mask.iter().enumerate() {
        let u = (draw(key.seed, key.step, key.stream, i as u32) >> 8) as f64 / 16777216.0;
        let want = if u < 0.6f32 as f64 {
            (1.0 / 0.6f32) as f64
        } else {
            0.0
        };
        assert_eq!(m, want, "element {i}, uniform {u}");
    }
    let mut all = vec![0.0f32; 21];
    cpu::dropout::mask(&Dropout::new(3, 7, 1.0), key, &mut all).unwrap();
    assert!(all.iter().all(|&m| m == 1.0));
}

#[test]
fn gpu_mask_equals_cpu_mask_bit_for_bit() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = rng("gpu_mask_equals_cpu_mask_bit_for_bit");
    for _ in 0..10 {
        let spec = Dropout::new(
            rng.random_range(1..100),
            rng.random_range(1..300),
            [1.0, 0.5, 0.9, rng.random_range(0.01f32..1.0)][rng.random_range(0..4)],
        );
        let key = random_key(&mut rng);
        let mut want = vec![0.0f32; spec.len()];
        cpu::dropout::mask(&spec, key, &mut want).unwrap();
        let got = gpu_mask(&gpu, &spec, key);
        let differ = got
            .iter()
            .zip(&want)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(differ, 0, "{spec:?} {key:?}: {differ} elements differ");
    }
}

#[test]
fn gpu_keep_fraction_is_within_six_sigma() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = rng("gpu_keep_fraction_is_within_six_sigma");
    for keep in [0.1f32, 0.5, 0.8, rng.random_range(0.05f32..0.95)] {
        let spec = Dropout::new(400, 500, keep);
        let mask = gpu_mask(&gpu, &spec, random_key(&mut rng));
        let kept = mask.iter().filter(|&&m| m != 0.0).count() as f64;
        assert!(mask.iter().all(|&m| m == 0.0 || m == spec.scale()));
        let n = spec.len() as f64;
        let p = spec.threshold() as f64 / 16777216.0;
        let sigma = (n * p * (1.0 - p)).sqrt();
        assert!(
            (kept - n * p).abs() < 6.0 * sigma,
            "keep {keep}: kept {kept} of {n}, expected {} +- {sigma}",
            n * p
        );
    }
}

#[test]
fn masks_depend_on_seed_step_and_stream_and_nothing_else() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = rng("masks_depend_on_seed_step_and_stream_and_nothing_else");
    let spec = Dropout::new(64, 64, 0.5);
    let key = random_key(&mut rng);
    let base = gpu_mask(&gpu, &spec, key);
    assert_eq!(base, gpu_mask(&gpu, &spec, key), "same key, same mask");
    for other in [
        DropoutKey {
            seed: key.seed ^ 1,
            ..key
        },
        DropoutKey {
            step: key.step.wrapping_add(1),
            ..key
        },
        DropoutKey {
            stream: key.stream + 1,
            ..key
        },
        DropoutKey {
            step: key.step ^ (1 << 40),
            ..key
        },
    ] {
        let m = gpu_mask(&gpu, &spec, other);
        let same = m.iter().zip(&base).filter(|(a, b)| a == b).count();
        // Independent masks at keep 0.5 agree on about half the elements.
        assert!(same < 2300, "{other:?} vs {key:?}: {same} of 4096 equal");
    }
}

#[test]
fn gpu_apply_matches_cpu_with_a_mask_per_sequence() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = rng("gpu_apply_matches_cpu_with_a_mask_per_sequence");
    for _ in 0..5 {
        let (t, b, f) = (
            rng.random_range(1..10),
            rng.random_range(1..8),
            rng.random_range(1..50),
        );
        let spec = Dropout::new(b, f, rng.random_range(0.2f32..1.0));
        let key = random_key(&mut rng);
        let mut mask = vec![0.0f32; b * f];
        cpu::dropout::mask(&spec, key, &mut mask).unwrap();
        let x = random_vec(&mut rng, t * b * f);
        let mut want = vec![0.0f32; t * b * f];
        cpu::dropout::apply(&x, &mask, &mut want).unwrap();

        let gx = GpuTensor::from_slice(&gpu, &[t, b, f], &x).unwrap();
        let gm = GpuTensor::filled(&gpu, &[b, f], f32::NAN).unwrap();
        let gy = GpuTensor::filled(&gpu, &[t, b, f], f32::NAN).unwrap();
        let mut make = DropoutMaskPlan::new(&gpu, &spec, &gm).unwrap();
        let apply = DropoutApplyPlan::new(&gpu, &gx, &gm, &gy).unwrap();
        let mut rec = Recorder::new(&gpu);
        make.record(&mut rec, key).unwrap();
        apply.record(&mut rec);
        rec.submit().unwrap();
        let got = gy.to_vec().unwrap();
        assert!(
            got.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "[{t}, {b}, {f}]"
        );
        // Every timestep sees the same mask.
        for (i, (&y, &xi)) in want.iter().zip(&x).enumerate() {
            assert_eq!(y, xi * mask[i % (b * f)]);
        }
    }
}

#[test]
fn bad_dropout_input_is_an_error_naming_the_value() {
    let key = DropoutKey {
        seed: 1,
        step: 1,
        stream: 0,
    };
    for (keep, want) in [
        (0.0f32, "keep probability = 0"),
        (1.5, "= 1.5"),
        (f32::NAN, "= NaN"),
    ] {
        let err = cpu::dropout::mask(&Dropout::new(2, 2, keep), key, &mut [0.0f32; 4])
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{err}");
    }
    let err = cpu::dropout::mask(&Dropout::new(2, 3, 0.5), key, &mut [0.0f32; 4])
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs 6 elements, got 4"), "{err}");
    let err = cpu::dropout::apply(&[1.0f32; 5], &[1.0; 2], &mut [0.0; 5])
        .unwrap_err()
        .to_string();
    assert!(err.contains("5 input elements"), "{err}");

    let Some(gpu) = common::gpu() else { return };
    let m = GpuTensor::zeros(&gpu, &[2, 2]).unwrap();
    let x = GpuTensor::zeros(&gpu, &[6]).unwrap();
    let err = DropoutApplyPlan::new(&gpu, &x, &m, &x)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("6 input elements"), "{err}");
    let x = GpuTensor::zeros(&gpu, &[8]).unwrap();
    let err = DropoutApplyPlan::new(&gpu, &x, &m, &x)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("different tensors"), "{err}");
    // Recording a plan again before its first recording is submitted is refused, in the same
    // recorder or another; after a submit (or a dropped recorder) it records again. Other
    // tests submit on this device meanwhile, which must not mask the refusal.
    let mut plan = DropoutMaskPlan::new(&gpu, &Dropout::new(2, 2, 0.5), &m).unwrap();
    let mut rec = Recorder::new(&gpu);
    plan.record(&mut rec, key).unwrap();
    let err = plan.record(&mut rec, key).unwrap_err().to_string();
    assert!(err.contains("recorded twice"), "{err}");
    let mut other = Recorder::new(&gpu);
    let err = plan.record(&mut other, key).unwrap_err().to_string();
    assert!(err.contains("recorded twice"), "{err}");
    rec.submit().unwrap();
    plan.record(&mut other, key).unwrap();
    drop(other);
    let mut rec = Recorder::new(&gpu);
    plan.record(&mut rec, key).unwrap();
    rec.submit().unwrap();
}

#[test]
fn gpu_row_mask_matches_cpu_for_both_layouts() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("gpu_row_mask_matches_cpu_for_both_layouts");
    for _ in 0..6 {
        let (batch, steps, features) = (
            rng.random_range(1..7),
            rng.random_range(1..9),
            rng.random_range(1..70),
        );
        let batch_first = rng.random_bool(0.5);
        let mask: Vec<f32> = (0..batch * features)
            .map(|_| if rng.random_bool(0.4) { 0.0 } else { 2.5 })
            .collect();
        let data = common::random_vec(&mut rng, batch * steps * features);
        let mut want = data.clone();
        recur::cpu::dropout::apply_rows(&mut want, &mask, steps, features, batch_first).unwrap();
        let gm = recur::GpuTensor::from_slice(&gpu, &[batch, features], &mask).unwrap();
        let gd = recur::GpuTensor::from_slice(&gpu, &[batch * steps * features], &data).unwrap();
        let plan =
            recur::gpu::dropout::RowMaskPlan::new(&gpu, &gm, &gd, steps, batch_first).unwrap();
        let mut rec = recur::gpu::Recorder::new(&gpu);
        plan.record(&mut rec);
        rec.submit().unwrap();
        // Multiplying by 0 or 2.5 is exact: the results agree bit for bit.
        assert_eq!(
            gd.to_vec().unwrap(),
            want,
            "batch {batch} steps {steps} features {features} batch_first {batch_first}"
        );
    }
    // A mask that does not fit the sequence is an error.
    let gm = recur::GpuTensor::from_slice(&gpu, &[2, 3], &[1.0; 6]).unwrap();
    let gd = recur::GpuTensor::zeros(&gpu, &[25]).unwrap();
    let err = recur::gpu::dropout::RowMaskPlan::new(&gpu, &gm, &gd, 4, false)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("25 elements"), "{err}");
}
