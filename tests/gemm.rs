//! The GEMM: the CPU path against a plain triple loop, the GPU kernel against the CPU path,
//! and bad input.

mod common;

use common::{random_vec, rng, to_f64};
use rand::rngs::StdRng;
use rand::Rng;
use recur::check::rel_error;
use recur::gpu::{gemm as gpu_gemm, GemmPlan, Recorder};
use recur::{cpu, Gemm, GpuTensor};

/// The definition, one element at a time, in f64: the reference for the CPU path.
fn naive(spec: &Gemm, a: &[f64], b: &[f64], bias: Option<&[f64]>, c: &mut [f64]) {
    for item in 0..spec.batch {
        let (oa, ob, oc) = (
            spec.offset_a + item * spec.stride_a(),
            spec.offset_b + item * spec.stride_b(),
            spec.offset_c + item * spec.stride_c(),
        );
        for i in 0..spec.m {
            for j in 0..spec.n {
                let mut s = 0.0;
                for p in 0..spec.k {
                    let x = if spec.trans_a {
                        a[oa + p * spec.lda() + i]
                    } else {
                        a[oa + i * spec.lda() + p]
                    };
                    let y = if spec.trans_b {
                        b[ob + j * spec.ldb() + p]
                    } else {
                        b[ob + p * spec.ldb() + j]
                    };
                    s += x * y;
                }
                let at = oc + i * spec.ldc() + j;
                let old = if spec.beta != 0.0 {
                    spec.beta as f64 * c[at]
                } else {
                    0.0
                };
                c[at] = spec.alpha as f64 * s + old + bias.map_or(0.0, |b| b[j]);
            }
        }
    }
}

/// A random product: any sizes (1, primes, tile non-multiples), transposes, alpha, beta, a
/// bias, batches with padded leading dimensions and offsets. Returns the spec and the buffer
/// lengths it needs.
fn random_spec(rng: &mut StdRng, max_dim: usize) -> (Gemm, usize, usize, usize) {
    let dim = |rng: &mut StdRng| match rng.random_range(0..4) {
        0 => 1,
        1 => [2, 3, 5, 7, 13, 31, 61, 67, 127][rng.random_range(0..9)].min(max_dim),
        _ => rng.random_range(1..=max_dim),
    };
    let (m, n, k) = (dim(rng), dim(rng), dim(rng));
    let mut spec = Gemm::new(m, n, k)
        .trans_a(rng.random_bool(0.5))
        .trans_b(rng.random_bool(0.5))
        .alpha(rng.random_range(-2.0..2.0))
        .beta(if rng.random_bool(0.5) {
            0.0
        } else {
            rng.random_range(-1.5..1.5)
        })
        .batch(rng.random_range(1..=3));
    if rng.random_bool(0.5) {
        let pad = |rng: &mut StdRng| rng.random_range(0..4);
        spec = spec.leading_dims(
            spec.stored_a().1 + pad(rng),
            spec.stored_b().1 + pad(rng),
            n + pad(rng),
        );
        spec = spec.offsets(pad(rng), pad(rng), pad(rng));
    }
    if spec.batch > 1 && rng.random_bool(0.3) {
        // One shared B for the whole batch (stride 0), as a layer's weights are.
        spec = spec.strides(spec.stride_a(), 0, spec.stride_c() + 1);
    }
    let len = |rows: usize, cols: usize, ld: usize, off: usize, stride: usize| {
        off + (spec.batch - 1) * stride + (rows - 1) * ld + cols + 2
    };
    let (ra, ca) = spec.stored_a();
    let (rb, cb) = spec.stored_b();
    let la = len(ra, ca, spec.lda(), spec.offset_a, spec.stride_a());
    let lb = len(rb, cb, spec.ldb(), spec.offset_b, spec.stride_b());
    let lc = len(m, n, spec.ldc(), spec.offset_c, spec.stride_c());
    (spec, la, lb, lc)
}

#[test]
fn cpu_gemm_matches_the_definition_in_f32_and_f64() {
    let mut rng = rng("cpu_gemm_matches_the_definition_in_f32_and_f64");
    for _ in 0..60 {
        let (spec, la, lb, lc) = random_spec(&mut rng, 80);
        let a = random_vec(&mut rng, la);
        let b = random_vec(&mut rng, lb);
        let c0 = random_vec(&mut rng, lc);
        let bias = rng.random_bool(0.5).then(|| random_vec(&mut rng, spec.n));
        let mut want = to_f64(&c0);
        naive(
            &spec,
            &to_f64(&a),
            &to_f64(&b),
            bias.as_deref().map(to_f64).as_deref(),
            &mut want,
        );

        let mut c64 = to_f64(&c0);
        cpu::gemm(
            &spec,
            &to_f64(&a),
            &to_f64(&b),
            bias.as_deref().map(to_f64).as_deref(),
            &mut c64,
        )
        .unwrap();
        let e64 = rel_error(&c64, &want);
        assert!(e64 < 1e-12, "f64 {spec:?}: rel error {e64}");

        let mut c32 = c0.clone();
        cpu::gemm(&spec, &a, &b, bias.as_deref(), &mut c32).unwrap();
        let e32 = rel_error(&c32, &want);
        assert!(e32 < 1e-5, "f32 {spec:?}: rel error {e32}");
    }
}

#[test]
fn cpu_gemm_with_zero_beta_overwrites_nan() {
    let spec = Gemm::new(3, 4, 5);
    let a = vec![1.0f32; 15];
    let b = vec![2.0f32; 20];
    let mut c = vec![f32::NAN; 12];
    cpu::gemm(&spec, &a, &b, None, &mut c).unwrap();
    assert!(c.iter().all(|&x| x == 10.0), "{c:?}");
}

fn check_gpu_against_cpu(rng: &mut StdRng, cases: usize, max_dim: usize) {
    let Some(gpu) = common::gpu() else { return };
    for _ in 0..cases {
        let (spec, la, lb, lc) = random_spec(rng, max_dim);
        let a = random_vec(rng, la);
        let b = random_vec(rng, lb);
        let bias = rng.random_bool(0.5).then(|| random_vec(rng, spec.n));
        // Where beta == 0 the kernel must overwrite C: poison it. Otherwise C is an input,
        // and the elements outside the product (padding) must come back untouched.
        let c0: Vec<f32> = if spec.beta == 0.0 {
            vec![f32::NAN; lc]
        } else {
            random_vec(rng, lc)
        };
        let mut want = to_f64(&c0);
        cpu::gemm(
            &spec,
            &to_f64(&a),
            &to_f64(&b),
            bias.as_deref().map(to_f64).as_deref(),
            &mut want,
        )
        .unwrap();

        let ga = GpuTensor::from_slice(&gpu, &[la], &a).unwrap();
        let gb = GpuTensor::from_slice(&gpu, &[lb], &b).unwrap();
        let gbias = bias
            .as_ref()
            .map(|v| GpuTensor::from_slice(&gpu, &[spec.n], v).unwrap());
        let gc = GpuTensor::from_slice(&gpu, &[lc], &c0).unwrap();
        gpu_gemm(&gpu, &spec, &ga, &gb, gbias.as_ref(), &gc).unwrap();
        let got = gc.to_vec().unwrap();

        // Compare the elements of the product; padding elements must be what they were.
        let mut got_in = Vec::new();
        let mut want_in = Vec::new();
        let mut inside = vec![false; lc];
        for item in 0..spec.batch {
            for i in 0..spec.m {
                for j in 0..spec.n {
                    inside[spec.offset_c + item * spec.stride_c() + i * spec.ldc() + j] = true;
                }
            }
        }
        for (idx, &is_in) in inside.iter().enumerate() {
            if is_in {
                got_in.push(got[idx]);
                want_in.push(want[idx]);
            } else {
                assert!(
                    got[idx].to_bits() == c0[idx].to_bits(),
                    "{spec:?}: element {idx} outside C was changed"
                );
            }
        }
        let e = rel_error(&got_in, &want_in);
        assert!(e < 1e-5, "{spec:?}: GPU against CPU rel error {e}");
    }
}

#[test]
fn gpu_gemm_matches_cpu_on_random_shapes() {
    let mut rng = rng("gpu_gemm_matches_cpu_on_random_shapes");
    check_gpu_against_cpu(&mut rng, 40, 150);
}

#[test]
fn gpu_gemm_matches_cpu_on_large_shapes() {
    let mut rng = rng("gpu_gemm_matches_cpu_on_large_shapes");
    check_gpu_against_cpu(&mut rng, 3, 700);
}

#[test]
fn gpu_gemm_plan_records_many_times_and_compiles_once() {
    if common::gpu().is_none() {
        return;
    }
    // A device of its own: the work counters are per device and other tests run alongside.
    let gpu = recur::Gpu::new().unwrap();
    let mut rng = rng("gpu_gemm_plan_records_many_times_and_compiles_once");
    let (m, n, k) = (33, 17, 29);
    let a = random_vec(&mut rng, m * k);
    let b = random_vec(&mut rng, k * n);
    let ga = GpuTensor::from_slice(&gpu, &[m, k], &a).unwrap();
    let gb = GpuTensor::from_slice(&gpu, &[k, n], &b).unwrap();
    let gc = GpuTensor::zeros(&gpu, &[m, n]).unwrap();
    // C += A * B, three times in one submit: 3 * A * B.
    let spec = Gemm::new(m, n, k).beta(1.0);
    let plan = GemmPlan::new(&gpu, &spec, &ga, &gb, None, &gc).unwrap();
    let compiled = gpu.compiled_kernels();
    let before = gpu.counters();
    let mut rec = Recorder::new(&gpu);
    for _ in 0..3 {
        plan.record(&mut rec);
    }
    rec.submit().unwrap();
    let after = gpu.counters();
    assert_eq!(after.submits - before.submits, 1);
    assert_eq!(after.dispatches - before.dispatches, 3);
    let _again = GemmPlan::new(&gpu, &spec, &ga, &gb, None, &gc).unwrap();
    assert_eq!(
        gpu.compiled_kernels(),
        compiled,
        "a second plan recompiled the kernel"
    );

    let mut want = vec![0.0f64; m * n];
    cpu::gemm(
        &Gemm::new(m, n, k).alpha(3.0),
        &to_f64(&a),
        &to_f64(&b),
        None,
        &mut want,
    )
    .unwrap();
    let e = rel_error(&gc.to_vec().unwrap(), &want);
    assert!(e < 1e-5, "rel error {e}");
}

#[test]
fn bad_gemm_input_is_an_error_naming_the_sizes() {
    let a = vec![0.0f32; 6];
    let b = vec![0.0f32; 6];
    let mut c = vec![0.0f32; 4];
    // A is 2 x 3 but B claims k = 4.
    let err = cpu::gemm(&Gemm::new(2, 2, 4), &a, &b, None, &mut c)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("needs 8 elements") && err.contains("has 6"),
        "{err}"
    );
    let err = cpu::gemm(&Gemm::new(0, 2, 3), &a, &b, None, &mut c)
        .unwrap_err()
        .to_string();
    assert!(err.contains("m = 0"), "{err}");
    let err = cpu::gemm(&Gemm::new(2, 2, 3), &a, &b, Some(&[1.0]), &mut c)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bias needs 2"), "{err}");
    let err = cpu::gemm(&Gemm::new(2, 2, 3).alpha(f32::NAN), &a, &b, None, &mut c)
        .unwrap_err()
        .to_string();
    assert!(err.contains("finite"), "{err}");
    let err = cpu::gemm(
        &Gemm::new(2, 2, 3).leading_dims(2, 2, 2),
        &a,
        &b,
        None,
        &mut c,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("lda = 2"), "{err}");

    let Some(gpu) = common::gpu() else { return };
    let ga = GpuTensor::from_slice(&gpu, &[2, 3], &a).unwrap();
    let gb = GpuTensor::from_slice(&gpu, &[2, 3], &b).unwrap();
    let gc = GpuTensor::zeros(&gpu, &[2, 2]).unwrap();
    let err = gpu_gemm(&gpu, &Gemm::new(2, 2, 4), &ga, &gb, None, &gc)
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs 8 elements"), "{err}");
    let err = gpu_gemm(&gpu, &Gemm::new(2, 2, 3).trans_b(true), &ga, &gb, None, &ga)
        .unwrap_err()
        .to_string();
    assert!(err.contains("must not be the same tensor"), "{err}");
    // A tensor larger than one storage binding may hold.
    let too_big = gpu.max_binding_bytes() / 4 + 1;
    let err = GpuTensor::<f32>::zeros(&gpu, &[too_big as usize])
        .unwrap_err()
        .to_string();
    assert!(err.contains("binds at most"), "{err}");
    // The device is still healthy afterwards.
    gpu_gemm(&gpu, &Gemm::new(2, 2, 3).trans_b(true), &ga, &gb, None, &gc).unwrap();
    assert_eq!(gc.to_vec().unwrap(), vec![0.0; 4]);
}
