//! Dense and Embedding layers: CPU by finite differences (f64), GPU against the CPU twin
//! with NaN-poisoned outputs, Keras shapes and bad input.

mod common;

use common::{random_vec, rng, to_f64};
use rand::Rng;
use recur::check::rel_error;
use recur::exec::{CpuExecutor, Executor, GpuExecutor, HostData, ProgramId};
use recur::nn::{Dense, DenseRows, Embedding, HostTensor};
use recur::ops::program::{ProgramBuilder, TensorId};

/// A dense layer's forward and backward over `rows` of an input of `len` elements, as one
/// program: (program, [input, output gradient], [output, weight grad, bias grad, input grad]).
fn dense_program(
    exec: &mut dyn Executor,
    layer: &Dense,
    rows: &DenseRows,
    len: usize,
) -> (ProgramId, [TensorId; 2], [TensorId; 4]) {
    let (w, b) = layer.params_as::<f32>();
    exec.set_param("fc.weight", &[layer.out_features, layer.in_features], &w)
        .unwrap();
    exec.set_param("fc.bias", &[layer.out_features], &b)
        .unwrap();
    let mut p = ProgramBuilder::new();
    let x = p.input("x", &[len]);
    let y = layer.record_forward(&mut p, "fc.", x, rows).unwrap();
    let dy = p.input("dy", &[rows.rows, layer.out_features]);
    let dx = p.tensor("dx", &[len]);
    let (dw, db) = layer
        .record_backward(&mut p, "fc.", x, rows, dy, Some(dx))
        .unwrap();
    (exec.load(p.finish()).unwrap(), [x, dy], [y, dw, db, dx])
}

fn random_rows(rng: &mut impl Rng, features: usize) -> (DenseRows, usize) {
    let (batch, steps) = (rng.random_range(1..6), rng.random_range(1..5));
    if rng.random_bool(0.5) {
        (
            DenseRows::all(batch * steps, features),
            batch * steps * features,
        )
    } else {
        let batch_first = rng.random_bool(0.5);
        (
            DenseRows::last_step(batch, steps, features, batch_first),
            batch * steps * features,
        )
    }
}

#[test]
fn dense_gradients_match_finite_differences() {
    let mut rng = rng("dense_gradients_match_finite_differences");
    for _ in 0..4 {
        let (inp, out) = (rng.random_range(1..6), rng.random_range(1..5));
        let layer = Dense::new(inp, out, rng.random()).unwrap();
        let (rows, len) = random_rows(&mut rng, inp);
        let x = to_f64(&random_vec(&mut rng, len));
        let (w, b) = layer.params_as::<f64>();
        let r = to_f64(&random_vec(&mut rng, rows.rows * out));
        // loss = sum(y * r), so dy = r.
        let mut exec = CpuExecutor::<f64>::new();
        let mut loss = |w: &[f64], b: &[f64], x: &[f64]| -> f64 {
            let (y, _) = layer.run(&mut exec, (w, b), x, &rows, None).unwrap();
            y.iter().zip(&r).map(|(a, c)| a * c).sum()
        };
        let g = {
            let mut exec = CpuExecutor::<f64>::new();
            layer
                .run(&mut exec, (&w, &b), &x, &rows, Some(&r))
                .unwrap()
                .1
                .unwrap()
        };
        let h = 1e-6;
        let numeric = |v: &[f64], f: &mut dyn FnMut(&[f64]) -> f64| -> Vec<f64> {
            (0..v.len())
                .map(|i| {
                    let (mut p, mut m) = (v.to_vec(), v.to_vec());
                    p[i] += h;
                    m[i] -= h;
                    (f(&p) - f(&m)) / (2.0 * h)
                })
                .collect()
        };
        let nw = numeric(&w, &mut |v| loss(v, &b, &x));
        let nb = numeric(&b, &mut |v| loss(&w, v, &x));
        let nx = numeric(&x, &mut |v| loss(&w, &b, v));
        for (what, a, n) in [
            ("weight", &g.weight, &nw),
            ("bias", &g.bias, &nb),
            ("input", &g.input, &nx),
        ] {
            let e = rel_error(a, n);
            assert!(e < 1e-7, "dense {what} gradient: rel error {e} ({rows:?})");
        }
    }
}

#[test]
fn gpu_dense_matches_cpu() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = rng("gpu_dense_matches_cpu");
    for _ in 0..4 {
        let (inp, out) = (rng.random_range(1..40), rng.random_range(1..30));
        let layer = Dense::new(inp, out, rng.random()).unwrap();
        let (rows, len) = random_rows(&mut rng, inp);
        let x = random_vec(&mut rng, len);
        let dy = random_vec(&mut rng, rows.rows * out);
        // The same program on the GPU (outputs poisoned with NaN first) and on the CPU.
        let mut results = Vec::new();
        let mut gexec = GpuExecutor::new(&gpu);
        let mut cexec = CpuExecutor::<f32>::new();
        for exec in [&mut gexec as &mut dyn Executor, &mut cexec] {
            let (p, [gx, gdy], outs) = dense_program(exec, &layer, &rows, len);
            for t in outs {
                let n = exec.program(p).tensor(t).len();
                exec.write(p, t, 0, &vec![f32::NAN; n]).unwrap();
            }
            exec.write(p, gx, 0, &x).unwrap();
            exec.write(p, gdy, 0, &dy).unwrap();
            exec.run(p, 0, 0).unwrap();
            results.push(outs.map(|t| recur::exec::read_all(exec, p, t).unwrap()));
        }
        let names = ["output", "weight grad", "bias grad", "input grad"];
        for (what, (gpu_v, cpu_v)) in names.iter().zip(results[0].iter().zip(&results[1])) {
            assert!(
                cpu_v.iter().all(|v| v.is_finite()),
                "CPU {what} not all written"
            );
            let e = rel_error(gpu_v, cpu_v);
            assert!(e < 1e-5, "GPU dense {what}: rel error {e} ({rows:?})");
        }
    }
}

#[test]
fn dense_rejects_bad_input() {
    let layer = Dense::new(3, 2, 1).unwrap();
    let (w, b) = layer.params_as::<f32>();
    let mut exec = CpuExecutor::<f32>::new();
    let err = layer
        .run(&mut exec, (&w, &b), &[0.0; 5], &DenseRows::all(2, 3), None)
        .unwrap_err();
    assert!(format!("{err:#}").contains("holds 5 elements"), "{err:#}");
    assert!(Dense::new(0, 2, 1).is_err());
    let mut bad = layer.params.clone();
    bad.get_mut("bias").unwrap().data[1] = f32::NAN;
    let err = Dense::from_params(bad).unwrap_err();
    assert!(format!("{err:#}").contains("non-finite"), "{err:#}");
}

#[test]
fn keras_embedding_shape_and_lookup() {
    // Embedding(input_dim=1000, output_dim=64, input_length=10) on a (32, 10) batch.
    let mut rng = rng("keras_embedding_shape_and_lookup");
    let layer = Embedding::new(1000, 64, 7).unwrap();
    let ids: Vec<u32> = (0..320).map(|_| rng.random_range(0..1000)).collect();
    let out = layer.forward_cpu(&layer.weight.data, &ids, 32, 10).unwrap();
    assert_eq!(out.len(), 32 * 10 * 64);
    for (pos, &id) in ids.iter().enumerate() {
        assert_eq!(
            &out[pos * 64..][..64],
            &layer.weight.data[id as usize * 64..][..64]
        );
    }
    assert!(layer.weight.data.iter().all(|v| v.abs() <= 0.05));
    if let Some(gpu) = common::gpu() {
        let g = layer.forward_gpu(&gpu, &ids, 32, 10).unwrap();
        assert_eq!(g, out, "the GPU lookup copies rows exactly");
    }
}

#[test]
fn gpu_embedding_layer_matches_cpu() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = rng("gpu_embedding_layer_matches_cpu");
    let (v, d, n) = (
        rng.random_range(1..30),
        rng.random_range(1..20),
        rng.random_range(1..60),
    );
    let mut layer = Embedding::new(v, d, rng.random()).unwrap();
    if rng.random_bool(0.5) {
        layer = layer.with_padding(rng.random_range(0..v as u32)).unwrap();
    }
    let ids: Vec<u32> = (0..n).map(|_| rng.random_range(0..v as u32)).collect();
    let dout = random_vec(&mut rng, n * d);
    // The lookup and its gradient as one program, on the GPU with NaN-poisoned outputs.
    let mut exec = GpuExecutor::new(&gpu);
    exec.set_param("weight", &[v, d], &layer.weight.data)
        .unwrap();
    let mut p = ProgramBuilder::new();
    let id_t = p.ids("ids", layer.op(), n);
    let out = layer.record_forward(&mut p, "", id_t).unwrap();
    let d_out = p.input("d out", &[n, d]);
    let grad = layer.record_backward(&mut p, "", id_t, d_out).unwrap();
    let prog = exec.load(p.finish()).unwrap();
    exec.write(prog, out, 0, &vec![f32::NAN; n * d]).unwrap();
    exec.write(prog, grad, 0, &vec![f32::NAN; v * d]).unwrap();
    exec.write_u32(prog, id_t, &ids).unwrap();
    exec.write(prog, d_out, 0, &dout).unwrap();
    exec.run(prog, 0, 0).unwrap();
    let cpu_out = layer.forward_cpu(&layer.weight.data, &ids, 1, n).unwrap();
    let cpu_grad = layer.backward_cpu(&ids, &dout).unwrap();
    assert_eq!(exec.read_values(prog, out).unwrap(), cpu_out);
    let e = rel_error(&exec.read_values(prog, grad).unwrap(), &cpu_grad);
    assert!(e < 1e-6, "embedding table gradient: rel error {e}");
}

#[test]
fn embedding_from_vectors_frozen_and_padding() {
    let vectors = HostTensor::new(vec![3, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let layer = Embedding::from_vectors(vectors, false)
        .unwrap()
        .mask_zero()
        .unwrap();
    assert!(!layer.trainable);
    assert_eq!(
        layer
            .forward_cpu(&layer.weight.data, &[2, 1], 1, 2)
            .unwrap(),
        [5.0, 6.0, 3.0, 4.0]
    );
    // Row 0 is padding: no gradient.
    let g = layer
        .backward_cpu(&[0, 2], &[1.0f32, 1.0, 2.0, 3.0])
        .unwrap();
    assert_eq!(g, [0.0, 0.0, 0.0, 0.0, 2.0, 3.0]);
    // mask_zero shortens each sequence at its first 0.
    let lengths = layer.lengths(&[1, 2, 0, 2, 0, 0], 2, 3).unwrap();
    assert_eq!(lengths, Some(vec![2, 1]));
    let mut p = ProgramBuilder::new();
    let ids = p.ids("ids", layer.op(), 2);
    let d = p.input("d", &[2, 2]);
    assert!(
        layer.record_backward(&mut p, "", ids, d).is_none(),
        "a frozen table has no gradient"
    );
}

#[test]
fn embedding_rejects_bad_input() {
    let layer = Embedding::new(10, 4, 1).unwrap().mask_zero().unwrap();
    let err = layer
        .forward_cpu(&layer.weight.data, &[1, 10], 1, 2)
        .unwrap_err();
    assert!(format!("{err:#}").contains("id 10"), "{err:#}");
    let err = layer.lengths(&[1, 0, 3], 1, 3).unwrap_err();
    assert!(format!("{err:#}").contains("after padding"), "{err:#}");
    let err = layer.check_ids(&[1, 2, 3], 2, 2).unwrap_err();
    assert!(format!("{err:#}").contains("batch = 2"), "{err:#}");
    assert!(Embedding::new(10, 4, 1).unwrap().with_padding(10).is_err());
    let nan = HostTensor::new(vec![1, 2], vec![0.0, f32::NAN]).unwrap();
    assert!(Embedding::from_vectors(nan, true).is_err());
    if let Some(gpu) = common::gpu() {
        let err = layer.forward_gpu(&gpu, &[3, 99], 1, 2).unwrap_err();
        assert!(format!("{err:#}").contains("99"), "{err:#}");
    }
}
