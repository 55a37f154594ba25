//! The GEMM: the CPU path against a plain triple loop, each GPU kernel (the adapter's own,
//! the tiled one, split-K, the weight-gradient product) against the CPU path, and bad input. CI runs this
//! file with RECUR_GEMM=tiled as well, so the plain tests cover both variants there.

mod common;

use common::{random_vec, rng, to_f64};
use rand::rngs::StdRng;
use rand::Rng;
use recur::check::rel_error;
use recur::cpu::WeightGradOutputs;
use recur::gpu::gemm::split_k_rule;
use recur::gpu::{gemm as gpu_gemm, GemmPlan, GemmVariant, Recorder, WeightGradTensors};
use recur::ops::WeightGrads;
use recur::{cpu, Gemm, Gpu, GpuTensor};

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

/// How a test builds the GPU plan for a product: as `GemmPlan::new` chooses, or the tiled
/// kernel split into this many chunks of K (at most k).
#[derive(Clone, Copy)]
enum Build {
    Chosen,
    Splits(usize),
}

fn check_gpu_against_cpu(rng: &mut StdRng, cases: usize, max_dim: usize) {
    let Some(gpu) = common::gpu() else { return };
    check_plans(&gpu, rng, cases, max_dim, Build::Chosen);
}

/// `cases` random products (see `random_spec`) through `build`, against the CPU path in
/// f64. C is poisoned with NaN where beta == 0; elements of C's buffer outside the product
/// must come back untouched.
fn check_plans(gpu: &Gpu, rng: &mut StdRng, cases: usize, max_dim: usize, build: Build) {
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
        // The same product of the magnitudes: the scale of each element's rounding error.
        let abs = |v: &[f32]| v.iter().map(|x| (*x as f64).abs()).collect::<Vec<_>>();
        let mut scale = abs(&c0);
        let magnitudes = Gemm {
            alpha: spec.alpha.abs(),
            beta: spec.beta.abs(),
            ..spec
        };
        cpu::gemm(
            &magnitudes,
            &abs(&a),
            &abs(&b),
            bias.as_deref().map(abs).as_deref(),
            &mut scale,
        )
        .unwrap();

        let ga = GpuTensor::from_slice(gpu, &[la], &a).unwrap();
        let gb = GpuTensor::from_slice(gpu, &[lb], &b).unwrap();
        let gbias = bias
            .as_ref()
            .map(|v| GpuTensor::from_slice(gpu, &[spec.n], v).unwrap());
        let gc = GpuTensor::from_slice(gpu, &[lc], &c0).unwrap();
        let plan = match build {
            Build::Chosen => GemmPlan::new(gpu, &spec, &ga, &gb, gbias.as_ref(), &gc),
            Build::Splits(s) => {
                GemmPlan::with_splits(gpu, &spec, &ga, &gb, gbias.as_ref(), &gc, s.min(spec.k))
            }
        }
        .unwrap();
        let mut rec = Recorder::new(gpu);
        plan.record(&mut rec);
        rec.submit().unwrap();
        let got = gc.to_vec().unwrap();

        // Compare the elements of the product; padding elements must be what they were.
        let mut got_in = Vec::new();
        let mut want_in = Vec::new();
        let mut scale_in = Vec::new();
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
                scale_in.push(scale[idx]);
            } else {
                assert!(
                    got[idx].to_bits() == c0[idx].to_bits(),
                    "{spec:?}: element {idx} outside C was changed"
                );
            }
        }
        // Judged against the magnitudes' product: an element whose terms cancel (seed
        // 1537878713877: m = n = 1, k = 200) is small next to a rounding error that is as
        // small as f32 can make it.
        let e = error_of_magnitudes(&got_in, &want_in, &scale_in);
        assert!(
            e < 1e-5,
            "{spec:?}: GPU error {e} of the magnitudes' product"
        );
    }
}

/// ||got - want|| / ||scale||, `scale` being the same sums over the terms' magnitudes: the
/// error relative to the size of the rounding a sum of those terms can have, which does not
/// blow up where the terms cancel (the plain relative error does).
fn error_of_magnitudes(got: &[f32], want: &[f64], scale: &[f64]) -> f64 {
    let diff = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).powi(2))
        .sum::<f64>();
    (diff / scale.iter().map(|x| x * x).sum::<f64>()).sqrt()
}

/// A device of its own whose plans use `variant` whatever the adapter and RECUR_GEMM.
fn device_with(variant: GemmVariant) -> Option<Gpu> {
    common::gpu()?;
    let gpu = Gpu::new().unwrap();
    gpu.set_gemm_variant(variant).unwrap();
    Some(gpu)
}

#[test]
fn tiled_kernel_matches_cpu_on_random_shapes_whatever_the_adapter() {
    let Some(gpu) = device_with(GemmVariant::Tiled) else {
        return;
    };
    let mut rng = rng("tiled_kernel_matches_cpu_on_random_shapes_whatever_the_adapter");
    // Up to 300: interior tiles (128 x 64) and edge tiles in both directions.
    check_plans(&gpu, &mut rng, 30, 300, Build::Splits(1));
}

#[test]
fn cpu_adapter_kernel_matches_cpu_on_random_shapes_whatever_the_adapter() {
    let Some(gpu) = device_with(GemmVariant::CpuAdapter) else {
        return;
    };
    let mut rng = rng("cpu_adapter_kernel_matches_cpu_on_random_shapes_whatever_the_adapter");
    check_plans(&gpu, &mut rng, 20, 150, Build::Chosen);
}

#[test]
fn split_k_matches_cpu_on_random_shapes_and_splits() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = rng("split_k_matches_cpu_on_random_shapes_and_splits");
    for _ in 0..25 {
        let splits = rng.random_range(2..=9);
        check_plans(&gpu, &mut rng, 1, 200, Build::Splits(splits));
    }
}

#[test]
fn split_k_is_chosen_for_weight_gradients_and_is_deterministic() {
    // The rule: the weight gradients of an LSTM at 256 x 32 x 100 (K = 3200, 32 tiles) split
    // toward 256 workgroups in chunks of at least 256; its input projection (400 tiles), dx
    // (100 tiles) and short K do not.
    assert_eq!(split_k_rule(&Gemm::new(1024, 256, 3200).trans_a(true)), 8);
    assert_eq!(split_k_rule(&Gemm::new(3200, 1024, 256).trans_b(true)), 1);
    assert_eq!(split_k_rule(&Gemm::new(3200, 256, 1024)), 1);
    assert_eq!(split_k_rule(&Gemm::new(64, 64, 511)), 1);
    assert_eq!(split_k_rule(&Gemm::new(64, 64, 512)), 2);
    assert_eq!(split_k_rule(&Gemm::new(64, 64, 1 << 20)), 64);
    assert_eq!(split_k_rule(&Gemm::new(512, 512, 1 << 20)), 8);
    let Some(gpu) = device_with(GemmVariant::Tiled) else {
        return;
    };
    let mut rng = rng("split_k_is_chosen_for_weight_gradients_and_is_deterministic");
    let (m, n, k) = (70, 37, 2100);
    let spec = Gemm::new(m, n, k).trans_a(true).beta(0.5);
    let a = random_vec(&mut rng, k * m);
    let b = random_vec(&mut rng, k * n);
    let c0 = random_vec(&mut rng, m * n);
    let ga = GpuTensor::from_slice(&gpu, &[k * m], &a).unwrap();
    let gb = GpuTensor::from_slice(&gpu, &[k * n], &b).unwrap();
    let gc = GpuTensor::from_slice(&gpu, &[m * n], &c0).unwrap();
    let plan = GemmPlan::new(&gpu, &spec, &ga, &gb, None, &gc).unwrap();
    assert_eq!(plan.dispatches(), 2, "split into products and their sum");
    let mut runs = Vec::new();
    for _ in 0..2 {
        gc.write(&c0).unwrap();
        let mut rec = Recorder::new(&gpu);
        plan.record(&mut rec);
        rec.submit().unwrap();
        runs.push(gc.to_vec().unwrap());
    }
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&runs[0]), bits(&runs[1]), "same plan, same bits");
    let mut want = to_f64(&c0);
    cpu::gemm(&spec, &to_f64(&a), &to_f64(&b), None, &mut want).unwrap();
    let e = rel_error(&runs[0], &want);
    assert!(e < 1e-5, "rel error {e}");
}

#[test]
fn a_grid_past_65535_workgroups_is_folded() {
    let Some(gpu) = device_with(GemmVariant::Tiled) else {
        return;
    };
    // 65,600 workgroups take about a minute on a CPU adapter: there, only the run with
    // RECUR_GEMM=tiled (CI's second run of this file) does it.
    let software = gpu.info().device_type == wgpu::DeviceType::Cpu;
    if software && std::env::var("RECUR_GEMM").as_deref() != Ok("tiled") {
        eprintln!("skipping on a CPU adapter without RECUR_GEMM=tiled");
        return;
    }
    // 65,600 one-tile products: 65,600 workgroups, more than one grid dimension holds.
    let batch = 65_600;
    let spec = Gemm::new(1, 1, 2).batch(batch);
    let a: Vec<f32> = (0..2 * batch).map(|i| (i % 7) as f32).collect();
    let b: Vec<f32> = (0..2 * batch).map(|i| (i % 5) as f32).collect();
    let ga = GpuTensor::from_slice(&gpu, &[2 * batch], &a).unwrap();
    let gb = GpuTensor::from_slice(&gpu, &[2 * batch], &b).unwrap();
    let gc = GpuTensor::filled(&gpu, &[batch], f32::NAN).unwrap();
    gpu_gemm(&gpu, &spec, &ga, &gb, None, &gc).unwrap();
    let want: Vec<f32> = (0..batch)
        .map(|i| a[2 * i] * b[2 * i] + a[2 * i + 1] * b[2 * i + 1])
        .collect();
    assert_eq!(gc.to_vec().unwrap(), want);
}

/// The weight-gradient product by its definition, in f64: `out1` through [`naive`], `out2`
/// element by element (row j pairs `A2` or `A`'s column j with `B3` from B3's row on, else
/// with `B2`), the column sums of `a` one at a time.
fn naive_weight_grads(
    spec: &WeightGrads,
    a: &[f64],
    b1: &[f64],
    b2: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut out1 = vec![0.0; spec.m * spec.n1];
    naive(&spec.first(), a, b1, None, &mut out1);
    let mut out2 = vec![0.0; spec.m * spec.n2];
    let a2 = spec.offset_a2.unwrap_or(spec.offset_a);
    for j in 0..spec.m {
        let (ld, offset) = match spec.b3 {
            Some(b3) if j >= b3.row => (b3.ld, b3.offset),
            _ => (spec.ldb2, spec.offset_b2),
        };
        for c in 0..spec.n2 {
            out2[j * spec.n2 + c] = (0..spec.rows)
                .map(|r| a[a2 + r * spec.lda + j] * b2[offset + r * ld + c])
                .sum();
        }
    }
    let sums_from = |offset: usize| -> Vec<f64> {
        (0..spec.m)
            .map(|j| (0..spec.rows).map(|r| a[offset + r * spec.lda + j]).sum())
            .collect()
    };
    let sums2 = sums_from(spec.offset_a2.unwrap_or(spec.offset_a));
    (out1, out2, sums_from(spec.offset_a), sums2)
}

#[test]
fn weight_grads_match_the_definition_on_cpu_and_gpu() {
    let gpu = common::gpu();
    let mut rng = rng("weight_grads_match_the_definition_on_cpu_and_gpu");
    for case in 0..30 {
        let pick = |rng: &mut StdRng, from: &[usize]| from[rng.random_range(0..from.len())];
        let rows = pick(&mut rng, &[1, 2, 7, 63, 257, 1000, 3200]).min(if case % 2 == 0 {
            3200
        } else {
            300
        });
        let m = pick(&mut rng, &[1, 3, 64, 65, 130, 300]);
        let n1 = pick(&mut rng, &[1, 5, 64, 67]);
        let n2 = pick(&mut rng, &[0, 1, 7, 64, 65]);
        let mut spec = WeightGrads::new(rows, m, n1, n2);
        let pad = |rng: &mut StdRng| {
            if rng.random_bool(0.5) {
                rng.random_range(0..5)
            } else {
                0
            }
        };
        spec = spec
            .a_at(m + pad(&mut rng), pad(&mut rng))
            .b1_at(n1 + pad(&mut rng), pad(&mut rng))
            .b2_at(n2 + pad(&mut rng), pad(&mut rng));
        let extent = |ld: usize, off: usize, cols: usize| off + (rows - 1) * ld + cols.max(1);
        // B2 paired with an A2 after A in the same buffer (GRU's dhw after dxw).
        if n2 > 0 && rng.random_bool(0.4) {
            spec = spec.a2_at(extent(spec.lda, spec.offset_a, m) + pad(&mut rng));
        }
        // Rows of out2 from a random row on paired with a B3 after B2 in B2's buffer (GRU
        // reset-before's n rows with r * h); at times on a tile boundary (128), so without a
        // gap of rows.
        if n2 > 0 && m > 1 && rng.random_bool(0.4) {
            let row = if m > 128 && rng.random_bool(0.3) {
                128
            } else {
                rng.random_range(1..m)
            };
            let ld = n2 + pad(&mut rng);
            spec = spec.b3_from(
                row,
                ld,
                extent(spec.ldb2, spec.offset_b2, n2) + pad(&mut rng),
            );
        }
        let b2_end = match spec.b3 {
            Some(b3) => extent(b3.ld, b3.offset, n2),
            None => extent(spec.ldb2, spec.offset_b2, n2),
        };
        let a_end = match spec.offset_a2 {
            Some(offset) => extent(spec.lda, offset, m),
            None => extent(spec.lda, spec.offset_a, m),
        };
        let a = random_vec(&mut rng, a_end);
        let b1 = random_vec(&mut rng, extent(spec.ldb1, spec.offset_b1, n1));
        let b2 = random_vec(&mut rng, b2_end);
        let (a64, b1_64, b2_64) = (to_f64(&a), to_f64(&b1), to_f64(&b2));
        let (want1, want2, want_sums, want_sums2) = naive_weight_grads(&spec, &a64, &b1_64, &b2_64);
        // The sums' f32 errors are judged against the sums of the terms' magnitudes (see
        // `error_of_magnitudes`): columns whose terms cancel have small sums.
        let abs = |v: &[f64]| -> Vec<f64> { v.iter().map(|x| x.abs()).collect() };
        let abs_a = abs(&a64);
        let (_, _, scale, scale2) = naive_weight_grads(&spec, &abs_a, &b1_64, &b2_64);
        let (scale_out1, scale_out2, _, _) =
            naive_weight_grads(&spec, &abs_a, &abs(&b1_64), &abs(&b2_64));
        let b2_of = |n2: usize| (n2 > 0).then_some(());

        let mut cpu1 = vec![f64::NAN; m * n1];
        let mut cpu2 = vec![f64::NAN; m * n2];
        let (mut cpu_sums, mut cpu_sums2) = (vec![f64::NAN; m], vec![f64::NAN; m]);
        cpu::weight_grads(
            &spec,
            &a64,
            &b1_64,
            b2_of(n2).map(|_| &b2_64[..]),
            WeightGradOutputs {
                out1: &mut cpu1,
                out2: b2_of(n2).map(|_| &mut cpu2[..]),
                sums: &mut cpu_sums,
                sums2: Some(&mut cpu_sums2),
            },
        )
        .unwrap();
        for (got, want, what) in [
            (&cpu1, &want1, "out1"),
            (&cpu2, &want2, "out2"),
            (&cpu_sums, &want_sums, "sums"),
            (&cpu_sums2, &want_sums2, "sums2"),
        ] {
            let e = rel_error(got, want);
            assert!(
                e < 1e-12 || want.is_empty(),
                "{spec:?}: CPU f64 {what} rel error {e}"
            );
        }

        let Some(gpu) = &gpu else { continue };
        let tensor = |v: &[f32]| GpuTensor::from_slice(gpu, &[v.len()], v).unwrap();
        let nans = |n: usize| GpuTensor::filled(gpu, &[n.max(1)], f32::NAN).unwrap();
        let (ga, gb1, gb2) = (tensor(&a), tensor(&b1), tensor(&b2));
        let (out1, out2, sums, sums2) = (nans(m * n1), nans(m * n2), nans(m), nans(m));
        let second = rng.random_bool(0.5);
        let t = WeightGradTensors {
            a: &ga,
            b1: &gb1,
            b2: b2_of(n2).map(|_| &gb2),
            out1: &out1,
            out2: b2_of(n2).map(|_| &out2),
            sums: &sums,
            sums2: second.then_some(&sums2),
        };
        let splits = rng
            .random_bool(0.5)
            .then(|| rng.random_range(1..=rows.min(40)));
        let plan = GemmPlan::weight_grads(gpu, &spec, t, splits).unwrap();
        assert_eq!(plan.dispatches(), 2);
        let mut rec = Recorder::new(gpu);
        plan.record(&mut rec);
        rec.submit().unwrap();
        let ctx = format!("{spec:?}, splits {splits:?}");
        // The products' f32 errors are judged against the products of the terms' magnitudes
        // too: a column pair whose terms cancel has a small sum, and at m = n = 1 the whole
        // output is one such sum (seed 1796013945104749789: relative error 1.6e-5, 1.3e-8 of
        // the magnitudes). Where the output is not that ill-conditioned (its norm at least a
        // hundredth of the magnitudes'), the relative error is held to 1e-5 as well.
        for (what, got, want, scale) in [
            ("out1", &out1, &want1, &scale_out1),
            ("out2", &out2, &want2, &scale_out2),
        ] {
            if want.is_empty() {
                continue;
            }
            let got = got.to_vec().unwrap();
            let e = error_of_magnitudes(&got, want, scale);
            assert!(
                e < 1e-6,
                "{ctx}: GPU {what} error {e} of the magnitudes' products"
            );
            let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm(want) >= norm(scale) / 100.0 {
                let e = rel_error(&to_f64(&got), want);
                assert!(e < 1e-5, "{ctx}: GPU {what} rel error {e}");
            }
        }
        let got_sums = sums.to_vec().unwrap();
        let e = error_of_magnitudes(&got_sums, &want_sums, &scale);
        assert!(
            e < 1e-5,
            "{ctx}: GPU sums error {e} of the magnitudes' sums"
        );
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let got_sums2 = sums2.to_vec().unwrap();
        if second && spec.offset_a2.is_some() {
            let e = error_of_magnitudes(&got_sums2, &want_sums2, &scale2);
            assert!(
                e < 1e-5,
                "{ctx}: GPU sums2 error {e} of the magnitudes' sums"
            );
        } else if second {
            assert_eq!(bits(&got_sums2), bits(&got_sums), "{ctx}: second sums");
        } else {
            assert!(
                got_sums2.iter().all(|x| x.is_nan()),
                "{ctx}: sums2 written unasked"
            );
        }
    }
}

#[test]
fn bad_weight_grads_are_errors_naming_the_sizes() {
    let a = vec![0.0f32; 10];
    let (mut out1, mut out2, mut sums) = (vec![0.0f32; 12], vec![0.0f32; 12], vec![0.0f32; 4]);
    // The CPU twin's error for `spec` over `a` (B2 = `a` where `with_b2`), outputs `out`.
    fn refused_by(
        spec: WeightGrads,
        a: &[f32],
        with_b2: bool,
        out: WeightGradOutputs<f32>,
    ) -> String {
        cpu::weight_grads(&spec, a, a, with_b2.then_some(a), out)
            .unwrap_err()
            .to_string()
    }
    fn outputs<'a>(
        out1: &'a mut [f32],
        out2: Option<&'a mut [f32]>,
        sums: &'a mut [f32],
        sums2: Option<&'a mut [f32]>,
    ) -> WeightGradOutputs<'a, f32> {
        WeightGradOutputs {
            out1,
            out2,
            sums,
            sums2,
        }
    }
    let spec = WeightGrads::new(3, 4, 3, 0);
    let err = refused_by(spec, &a, false, outputs(&mut out1, None, &mut sums, None));
    assert!(err.contains("needs 12") && err.contains("has 10"), "{err}");
    let spec = WeightGrads::new(2, 4, 3, 0);
    let err = refused_by(
        spec,
        &a,
        false,
        outputs(&mut out1, None, &mut sums[..3], None),
    );
    assert!(err.contains("sums output of 4"), "{err}");
    let spec = WeightGrads::new(2, 4, 3, 2);
    let err = refused_by(spec, &a, false, outputs(&mut out1, None, &mut sums, None));
    assert!(err.contains("n2 = 2") && err.contains("B2: false"), "{err}");
    let spec = WeightGrads::new(2, 4, 0, 0);
    let err = refused_by(
        spec,
        &a,
        false,
        outputs(&mut out1, Some(&mut out2), &mut sums, None),
    );
    assert!(err.contains("n1 = 0"), "{err}");
    // An A2 needs a B2, and must lie within A's buffer.
    let spec = WeightGrads::new(2, 4, 3, 0).a2_at(0);
    let err = refused_by(spec, &a, false, outputs(&mut out1, None, &mut sums, None));
    assert!(err.contains("A2") && err.contains("n2 = 0"), "{err}");
    let spec = WeightGrads::new(2, 4, 3, 3).a2_at(4);
    let err = refused_by(
        spec,
        &a,
        true,
        outputs(&mut out1, Some(&mut out2), &mut sums, None),
    );
    assert!(err.contains("needs 12") && err.contains("has 10"), "{err}");
    let spec = WeightGrads::new(2, 4, 3, 0);
    let short = Some(&mut out2[..3]);
    let err = refused_by(spec, &a, false, outputs(&mut out1, None, &mut sums, short));
    assert!(err.contains("second sums output of 4"), "{err}");
    // A B3 needs a B2 and a row inside A's columns, and must lie within B2's buffer.
    let spec = WeightGrads::new(2, 4, 3, 0).b3_from(2, 3, 0);
    let err = refused_by(spec, &a, false, outputs(&mut out1, None, &mut sums, None));
    assert!(err.contains("B3") && err.contains("n2 = 0"), "{err}");
    for (row, offset, wanted) in [
        (0, 0, ["B3 from row 0", "m = 4"]),
        (4, 0, ["B3 from row 4", "m = 4"]),
        (2, 6, ["needs 12", "has 10"]),
    ] {
        let spec = WeightGrads::new(2, 4, 3, 3).b3_from(row, 3, offset);
        let err = refused_by(
            spec,
            &a,
            true,
            outputs(&mut out1, Some(&mut out2), &mut sums, None),
        );
        assert!(wanted.iter().all(|w| err.contains(w)), "{err}");
    }
    let Some(gpu) = common::gpu() else { return };
    let ga = GpuTensor::<f32>::zeros(&gpu, &[16]).unwrap();
    let (g1, gs) = (
        GpuTensor::<f32>::zeros(&gpu, &[12]).unwrap(),
        GpuTensor::<f32>::zeros(&gpu, &[4]).unwrap(),
    );
    let t = WeightGradTensors {
        a: &ga,
        b1: &ga,
        b2: None,
        out1: &g1,
        out2: None,
        sums: &gs,
        sums2: None,
    };
    let spec = WeightGrads::new(2, 4, 3, 0);
    let refused = |t, splits| {
        GemmPlan::weight_grads(&gpu, &spec, t, splits)
            .err()
            .expect("refused")
            .to_string()
    };
    let err = refused(WeightGradTensors { out1: &ga, ..t }, None);
    assert!(err.contains("neither an operand"), "{err}");
    let err = refused(WeightGradTensors { sums: &g1, ..t }, None);
    assert!(err.contains("another output"), "{err}");
    let err = refused(t, Some(3));
    assert!(err.contains("1 to 2 chunks"), "{err}");
    // One tensor given as both sums outputs (a layer without biases shares one scratch
    // gradient) gets the sums once.
    let a: Vec<f32> = (0..8).map(|i| i as f32).collect();
    let ga = GpuTensor::from_slice(&gpu, &[8], &a).unwrap();
    let t = WeightGradTensors {
        a: &ga,
        b1: &ga,
        sums2: Some(&gs),
        ..t
    };
    let spec = WeightGrads::new(2, 4, 1, 0).b1_at(4, 0);
    let plan = GemmPlan::weight_grads(&gpu, &spec, t, None).unwrap();
    let mut rec = Recorder::new(&gpu);
    plan.record(&mut rec);
    rec.submit().unwrap();
    assert_eq!(gs.to_vec().unwrap(), vec![4.0, 6.0, 8.0, 10.0]);
    // B1 is A's column 0 read as a 2 x 1 matrix of leading dimension 4, [0, 4], so
    // out1[j] = A[0][j] * 0 + A[1][j] * 4.
    assert_eq!(g1.to_vec().unwrap()[..4], [16.0, 20.0, 24.0, 28.0]);
    // With an A2 (here A's second row, [4, 5, 6, 7]) it gets A's sums, and A2's are not
    // written: one dispatch's two writers of one element would race.
    let g2 = GpuTensor::<f32>::zeros(&gpu, &[4]).unwrap();
    let t = WeightGradTensors {
        b2: Some(&ga),
        out2: Some(&g2),
        ..t
    };
    let spec = WeightGrads::new(1, 4, 1, 1)
        .b1_at(4, 0)
        .b2_at(4, 1)
        .a2_at(4);
    let plan = GemmPlan::weight_grads(&gpu, &spec, t, None).unwrap();
    let mut rec = Recorder::new(&gpu);
    plan.record(&mut rec);
    rec.submit().unwrap();
    assert_eq!(gs.to_vec().unwrap(), vec![0.0, 1.0, 2.0, 3.0]);
    // out2[j] = A2[0][j] * B2[0][0], and B2[0][0] = a[1] = 1.
    assert_eq!(g2.to_vec().unwrap(), vec![4.0, 5.0, 6.0, 7.0]);
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

#[test]
fn products_deeper_than_llvmpipes_loop_limit_are_right() {
    // llvmpipe stops an invocation's loops after about 65,535 iterations (main_cpu left
    // K = 66,000 unwritten), so there a product this deep runs split into chunks of at most
    // LLVMPIPE_MAX_DEPTH; elsewhere as the rule says. Either way the result must be right.
    let mut rng = rng("products_deeper_than_llvmpipes_loop_limit_are_right");
    let k = 70_000;
    let (m, n) = (3, 5);
    let a = random_vec(&mut rng, m * k);
    let b = random_vec(&mut rng, k * n);
    let spec = Gemm::new(m, n, k);
    let mut want = vec![0.0; m * n];
    naive(&spec, &to_f64(&a), &to_f64(&b), None, &mut want);
    let abs = |v: &[f32]| v.iter().map(|x| x.abs() as f64).collect::<Vec<_>>();
    let mut scale = vec![0.0; m * n];
    naive(&spec, &abs(&a), &abs(&b), None, &mut scale);
    for variant in [GemmVariant::CpuAdapter, GemmVariant::Tiled] {
        let Some(gpu) = device_with(variant) else {
            return;
        };
        let ga = GpuTensor::from_slice(&gpu, &[a.len()], &a).unwrap();
        let gb = GpuTensor::from_slice(&gpu, &[b.len()], &b).unwrap();
        let gc = GpuTensor::filled(&gpu, &[m * n], f32::NAN).unwrap();
        let plan = GemmPlan::new(&gpu, &spec, &ga, &gb, None, &gc).unwrap();
        if gpu.is_llvmpipe() {
            assert_eq!(plan.dispatches(), 2, "{variant:?}: split on llvmpipe");
        }
        let mut rec = Recorder::new(&gpu);
        plan.record(&mut rec);
        rec.submit().unwrap();
        let e = error_of_magnitudes(&gc.to_vec().unwrap(), &want, &scale);
        assert!(
            e < 1e-5,
            "{variant:?}: error {e} of the magnitudes' product"
        );
    }
    // The weight-gradient product over as many rows: A [k, 3], B1 [k, 2], B2 [k, 1].
    let Some(gpu) = common::gpu() else { return };
    let wg = WeightGrads::new(k, m, 2, 1);
    let (b1, b2) = (random_vec(&mut rng, 2 * k), random_vec(&mut rng, k));
    let (want1, want2, want_sums, _) =
        naive_weight_grads(&wg, &to_f64(&a), &to_f64(&b1), &to_f64(&b2));
    let (s1, s2, s_sums, _) = naive_weight_grads(&wg, &abs(&a), &abs(&b1), &abs(&b2));
    let tensor = |v: &[f32]| GpuTensor::from_slice(&gpu, &[v.len()], v).unwrap();
    let (ga, gb1, gb2) = (tensor(&a), tensor(&b1), tensor(&b2));
    let nans = |len: usize| GpuTensor::filled(&gpu, &[len], f32::NAN).unwrap();
    let (out1, out2, sums) = (nans(m * 2), nans(m), nans(m));
    let t = WeightGradTensors {
        a: &ga,
        b1: &gb1,
        b2: Some(&gb2),
        out1: &out1,
        out2: Some(&out2),
        sums: &sums,
        sums2: None,
    };
    let plan = GemmPlan::weight_grads(&gpu, &wg, t, None).unwrap();
    let mut rec = Recorder::new(&gpu);
    plan.record(&mut rec);
    rec.submit().unwrap();
    for (what, got, want, scale) in [
        ("out1", &out1, &want1, &s1),
        ("out2", &out2, &want2, &s2),
        ("sums", &sums, &want_sums, &s_sums),
    ] {
        let e = error_of_magnitudes(&got.to_vec().unwrap(), want, scale);
        assert!(
            e < 1e-5,
            "weight gradients {what}: error {e} of the magnitudes"
        );
    }
}
