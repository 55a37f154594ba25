//! Losses: the CPU twins against hand values and finite differences (f64), the GPU kernels
//! against the CPU twins on random shapes, and bad input.

mod common;

use common::{random_vec, rng, to_f64};
use rand::rngs::StdRng;
use rand::Rng;
use recur::check::rel_error;
use recur::cpu;
use recur::gpu::loss::{upload_targets, write_targets};
use recur::gpu::{CrossEntropyPlan, MsePlan, Recorder};
use recur::ops::CrossEntropy;
use recur::GpuTensor;

#[test]
fn cpu_cross_entropy_matches_hand_values_and_is_stable() {
    let logits = [1.0f64, 2.0, 3.0, 0.5, 0.5, 0.5];
    let spec = CrossEntropy::new(2, 3);
    let mut rows = [0.0; 2];
    let mut d = [0.0; 6];
    let loss = cpu::loss::cross_entropy(&spec, &logits, &[2, 0], &mut rows, &mut d).unwrap();
    let z = 1f64.exp() + 2f64.exp() + 3f64.exp();
    let want0 = z.ln() - 3.0;
    let want1 = 3f64.ln();
    assert!((rows[0] - want0).abs() < 1e-15 && (rows[1] - want1).abs() < 1e-15);
    assert!((loss - (want0 + want1) / 2.0).abs() < 1e-15);
    assert!((d[2] - (3f64.exp() / z - 1.0) / 2.0).abs() < 1e-15);
    assert!((d[4] - (1.0 / 3.0) / 2.0).abs() < 1e-15);

    // Ignored rows count for nothing; huge logits do not overflow.
    let spec = CrossEntropy::new(2, 2).ignore_index(7);
    let mut rows = [f32::NAN; 2];
    let mut d = [f32::NAN; 4];
    let loss = cpu::loss::cross_entropy(
        &spec,
        &[1000.0f32, 0.0, 5.0, 5.0],
        &[0, 7],
        &mut rows,
        &mut d,
    )
    .unwrap();
    assert_eq!(loss, 0.0);
    assert_eq!(rows, [0.0, 0.0]);
    assert_eq!(d, [0.0, 0.0, 0.0, 0.0]);
    // Every row ignored: loss and gradient are zero, not NaN.
    let loss =
        cpu::loss::cross_entropy(&spec, &[1.0f32, 2.0, 3.0, 4.0], &[7, 7], &mut rows, &mut d)
            .unwrap();
    assert_eq!(loss, 0.0);
    assert_eq!(d, [0.0; 4]);
}

#[test]
fn cpu_cross_entropy_gradient_matches_finite_differences() {
    let mut rng = rng("cpu_cross_entropy_gradient_matches_finite_differences");
    for _ in 0..10 {
        let (n, c) = (rng.random_range(1..8), rng.random_range(1..7));
        let ignore = rng.random_range(0..c as u32 + 1);
        let spec = CrossEntropy::new(n, c).ignore_index(ignore);
        let logits: Vec<f64> = to_f64(&random_vec(&mut rng, n * c))
            .iter()
            .map(|x| 3.0 * x)
            .collect();
        let targets: Vec<u32> = (0..n)
            .map(|_| {
                if rng.random_bool(0.3) {
                    ignore
                } else {
                    rng.random_range(0..c as u32)
                }
            })
            .collect();
        let loss_of = |x: &[f64]| {
            let (mut r, mut d) = (vec![0.0; n], vec![0.0; n * c]);
            cpu::loss::cross_entropy(&spec, x, &targets, &mut r, &mut d).unwrap()
        };
        let (mut r, mut grad) = (vec![0.0; n], vec![0.0; n * c]);
        cpu::loss::cross_entropy(&spec, &logits, &targets, &mut r, &mut grad).unwrap();
        let h = 1e-6;
        let numeric: Vec<f64> = (0..n * c)
            .map(|i| {
                let (mut a, mut b) = (logits.clone(), logits.clone());
                a[i] += h;
                b[i] -= h;
                (loss_of(&a) - loss_of(&b)) / (2.0 * h)
            })
            .collect();
        if numeric.iter().all(|&x| x == 0.0) {
            assert!(grad.iter().all(|&x| x == 0.0), "{grad:?}");
            continue;
        }
        let e = rel_error(&grad, &numeric);
        assert!(e < 1e-7, "n {n} c {c}: gradient rel error {e}");
    }
}

#[test]
fn cpu_mse_matches_hand_values_and_finite_differences() {
    let mut g = [0.0f64; 2];
    let loss = cpu::loss::mse(&[1.0, 3.0], &[0.0, 1.0], &mut g).unwrap();
    assert_eq!(loss, 2.5);
    assert_eq!(g, [1.0, 2.0]);

    let mut rng = rng("cpu_mse_matches_hand_values_and_finite_differences");
    let n = rng.random_range(1..50);
    let x = to_f64(&random_vec(&mut rng, n));
    let y = to_f64(&random_vec(&mut rng, n));
    let mut grad = vec![0.0; n];
    cpu::loss::mse(&x, &y, &mut grad).unwrap();
    let h = 1e-6;
    let numeric: Vec<f64> = (0..n)
        .map(|i| {
            let (mut a, mut b) = (x.clone(), x.clone());
            a[i] += h;
            b[i] -= h;
            let mut s = vec![0.0; n];
            let la = cpu::loss::mse(&a, &y, &mut s).unwrap();
            let lb = cpu::loss::mse(&b, &y, &mut s).unwrap();
            (la - lb) / (2.0 * h)
        })
        .collect();
    let e = rel_error(&grad, &numeric);
    assert!(e < 1e-8, "gradient rel error {e}");
}

fn cross_entropy_case(
    rng: &mut StdRng,
    n: usize,
    c: usize,
    ignore: Option<u32>,
    all_ignored: bool,
) {
    let Some(gpu) = common::gpu() else { return };
    let mut spec = CrossEntropy::new(n, c);
    if let Some(i) = ignore {
        spec = spec.ignore_index(i);
    }
    let logits: Vec<f32> = random_vec(rng, n * c).iter().map(|x| 5.0 * x).collect();
    let targets: Vec<u32> = (0..n)
        .map(|_| match ignore {
            Some(i) if all_ignored || rng.random_bool(0.2) => i,
            _ => rng.random_range(0..c as u32),
        })
        .collect();
    let (mut rows, mut d) = (vec![0.0f64; n], vec![0.0f64; n * c]);
    let loss =
        cpu::loss::cross_entropy(&spec, &to_f64(&logits), &targets, &mut rows, &mut d).unwrap();
    let count = spec.validate_targets(&targets).unwrap();

    let gl = GpuTensor::from_slice(&gpu, &[n, c], &logits).unwrap();
    let gt = upload_targets(&gpu, &spec, &targets).unwrap();
    let grows = GpuTensor::filled(&gpu, &[n], f32::NAN).unwrap();
    let gd = GpuTensor::filled(&gpu, &[n, c], f32::NAN).unwrap();
    let plan = CrossEntropyPlan::new(&gpu, &spec, &gl, &gt, &grows, &gd).unwrap();
    let mut rec = Recorder::new(&gpu);
    plan.record(&mut rec);
    rec.submit().unwrap();
    let stats = plan.stats().to_vec().unwrap();
    assert_eq!(stats[1], count as f32, "count");
    let what = format!("n {n} c {c} ignore {ignore:?}");
    if all_ignored {
        assert_eq!(stats[0], 0.0, "{what}");
        assert!(gd.to_vec().unwrap().iter().all(|&x| x == 0.0), "{what}");
        return;
    }
    let e = (stats[0] as f64 - loss).abs();
    assert!(
        e <= 1e-5 * loss.abs(),
        "{what}: loss {} vs {loss}",
        stats[0]
    );
    let e = rel_error(&grows.to_vec().unwrap(), &rows);
    assert!(e < 1e-5, "{what}: row loss rel error {e}");
    let e = rel_error(&gd.to_vec().unwrap(), &d);
    assert!(e < 1e-5, "{what}: gradient rel error {e}");
}

#[test]
fn gpu_cross_entropy_matches_cpu_on_random_shapes() {
    let mut rng = rng("gpu_cross_entropy_matches_cpu_on_random_shapes");
    for _ in 0..12 {
        let n = rng.random_range(1..300);
        let c = [1, 2, 5, 63, 64, 65, 200, 1000][rng.random_range(0..8)];
        let ignore = match rng.random_range(0..3) {
            0 => None,
            1 => Some(rng.random_range(0..c as u32)),
            _ => Some(u32::MAX),
        };
        cross_entropy_case(&mut rng, n, c, ignore, false);
    }
    cross_entropy_case(&mut rng, 5, 3, Some(u32::MAX), true);
    // More rows than one grid dimension holds.
    cross_entropy_case(&mut rng, 66000, 3, Some(0), false);
}

#[test]
fn gpu_mse_matches_cpu() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = rng("gpu_mse_matches_cpu");
    for _ in 0..6 {
        let n = rng.random_range(1..20000);
        let x = random_vec(&mut rng, n);
        let y = random_vec(&mut rng, n);
        let mut g = vec![0.0f64; n];
        let loss = cpu::loss::mse(&to_f64(&x), &to_f64(&y), &mut g).unwrap();
        let gx = GpuTensor::from_slice(&gpu, &[n], &x).unwrap();
        let gy = GpuTensor::from_slice(&gpu, &[n], &y).unwrap();
        let gg = GpuTensor::filled(&gpu, &[n], f32::NAN).unwrap();
        let plan = MsePlan::new(&gpu, &gx, &gy, &gg).unwrap();
        let mut rec = Recorder::new(&gpu);
        plan.record(&mut rec);
        rec.submit().unwrap();
        let got = plan.loss().unwrap() as f64;
        assert!(
            (got - loss).abs() <= 1e-5 * loss,
            "n {n}: loss {got} vs {loss}"
        );
        let e = rel_error(&gg.to_vec().unwrap(), &g);
        assert!(e < 1e-5, "n {n}: gradient rel error {e}");
    }
}

#[test]
fn bad_loss_input_is_an_error_naming_the_value() {
    let spec = CrossEntropy::new(3, 4).ignore_index(99);
    let mut rows = [0.0f32; 3];
    let mut d = [0.0f32; 12];
    let err = cpu::loss::cross_entropy(&spec, &[0.0; 12], &[1, 4, 99], &mut rows, &mut d)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("target 4 at row 1") && err.contains("below 4") && err.contains("99"),
        "{err}"
    );
    let err = cpu::loss::cross_entropy(&spec, &[0.0; 11], &[1, 2, 3], &mut rows, &mut d)
        .unwrap_err()
        .to_string();
    assert!(err.contains("logits need 12 elements, got 11"), "{err}");
    let err = cpu::loss::cross_entropy::<f32>(&CrossEntropy::new(0, 4), &[], &[], &mut [], &mut [])
        .unwrap_err()
        .to_string();
    assert!(err.contains("rows = 0"), "{err}");
    let err = cpu::loss::mse(&[1.0f32, 2.0], &[1.0], &mut [0.0; 2])
        .unwrap_err()
        .to_string();
    assert!(err.contains("targets 1"), "{err}");

    let Some(gpu) = common::gpu() else { return };
    let err = upload_targets(&gpu, &spec, &[0, 1, 5])
        .unwrap_err()
        .to_string();
    assert!(err.contains("target 5 at row 2"), "{err}");
    let gt = upload_targets(&gpu, &spec, &[0, 1, 99]).unwrap();
    let err = write_targets(&spec, &gt, &[0, 1000, 2])
        .unwrap_err()
        .to_string();
    assert!(err.contains("target 1000 at row 1"), "{err}");
    let gl = GpuTensor::zeros(&gpu, &[3, 4]).unwrap();
    let grows = GpuTensor::zeros(&gpu, &[3]).unwrap();
    let gd = GpuTensor::zeros(&gpu, &[3, 5]).unwrap();
    let err = CrossEntropyPlan::new(&gpu, &spec, &gl, &gt, &grows, &gd)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("logit gradients need 12 elements, got 15"),
        "{err}"
    );
    let err = CrossEntropyPlan::new(&gpu, &spec, &gl, &gt, &grows, &gl)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("different tensors"), "{err}");
    // A target written behind the validation's back poisons its row, never reads outside.
    gt.write(&[0, 1000, 2]).unwrap();
    let gd = GpuTensor::zeros(&gpu, &[3, 4]).unwrap();
    let plan = CrossEntropyPlan::new(&gpu, &spec, &gl, &gt, &grows, &gd).unwrap();
    let mut rec = Recorder::new(&gpu);
    plan.record(&mut rec);
    rec.submit().unwrap();
    let rows = grows.to_vec().unwrap();
    assert!(
        rows[0].is_finite() && rows[1].is_nan() && rows[2].is_finite(),
        "{rows:?}"
    );
}

#[test]
fn gpu_cross_entropy_is_bit_reproducible() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = rng("gpu_cross_entropy_is_bit_reproducible");
    let (n, c) = (rng.random_range(500..2000), rng.random_range(2..100));
    let spec = CrossEntropy::new(n, c);
    let logits = random_vec(&mut rng, n * c);
    let targets: Vec<u32> = (0..n).map(|_| rng.random_range(0..c as u32)).collect();
    let run = || {
        let gl = GpuTensor::from_slice(&gpu, &[n, c], &logits).unwrap();
        let gt = upload_targets(&gpu, &spec, &targets).unwrap();
        let grows = GpuTensor::zeros(&gpu, &[n]).unwrap();
        let gd = GpuTensor::zeros(&gpu, &[n, c]).unwrap();
        let plan = CrossEntropyPlan::new(&gpu, &spec, &gl, &gt, &grows, &gd).unwrap();
        let mut rec = Recorder::new(&gpu);
        plan.record(&mut rec);
        rec.submit().unwrap();
        let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
        (
            bits(plan.stats().to_vec().unwrap()),
            bits(gd.to_vec().unwrap()),
        )
    };
    assert_eq!(run(), run(), "same input, same adapter: the same bits");
}
