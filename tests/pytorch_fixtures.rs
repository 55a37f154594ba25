//! Agreement with PyTorch: golden values computed by PyTorch (tools/make_fixtures.py) for
//! LSTM, GRU (both variants), RNN (tanh, ReLU), stacked, bidirectional, batch_first and packed
//! sequences, checked on the CPU and on the GPU without PyTorch installed.

mod common;

use std::path::PathBuf;

use recur::apps::interop::{forward_tensors, vjp_tensors, FileOptions};
use recur::check::rel_error;
use recur::nn::{load_safetensors, Tensors};
use recur::ops::recurrent::CellKind;
use recur::Backend;

const TOL: f64 = 1e-5;

fn fixtures() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    assert!(files.len() >= 7, "fixtures missing: {files:?}");
    files
}

fn options(path: &PathBuf) -> FileOptions {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    FileOptions {
        cell: Some(CellKind::parse(&meta["cell"]).unwrap()),
        batch_first: meta["batch_first"] == "true",
    }
}

/// Weights, inputs, output gradients, expected outputs and expected gradients.
fn split(all: &Tensors) -> (Tensors, Tensors, Tensors, Tensors, Tensors) {
    let (mut w, mut inp, mut g, mut out, mut grads) = (
        Tensors::new(),
        Tensors::new(),
        Tensors::new(),
        Tensors::new(),
        Tensors::new(),
    );
    for (k, v) in all {
        let v = v.clone();
        if let Some(name) = k.strip_prefix("grad.") {
            grads.insert(name.to_string(), v);
        } else if let Some(name) = k.strip_prefix("grad_") {
            g.insert(name.to_string(), v);
        } else if k.starts_with("weight_") || k.starts_with("bias_") {
            w.insert(k.clone(), v);
        } else if ["input", "h0", "c0", "lengths"].contains(&k.as_str()) {
            inp.insert(k.clone(), v);
        } else {
            out.insert(k.clone(), v);
        }
    }
    (w, inp, g, out, grads)
}

fn check_backend(backend: &Backend) {
    for path in fixtures() {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let all = load_safetensors(&path).unwrap();
        let opts = options(&path);
        let (w, inp, g, want_out, want_grads) = split(&all);
        let got = forward_tensors(w.clone(), &inp, opts, backend).unwrap();
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want_out.keys().collect::<Vec<_>>(),
            "{name}"
        );
        for (k, want) in &want_out {
            assert_eq!(got[k].shape, want.shape, "{name}: {k} shape");
            let e = rel_error(&got[k].data, &want.data);
            assert!(
                e < TOL,
                "{name} on {backend:?}: {k} differs from PyTorch by {e}"
            );
        }
        let got = vjp_tensors(w, &inp, &g, opts, backend).unwrap();
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want_grads.keys().collect::<Vec<_>>(),
            "{name}"
        );
        for (k, want) in &want_grads {
            assert_eq!(got[k].shape, want.shape, "{name}: gradient of {k} shape");
            let e = rel_error(&got[k].data, &want.data);
            assert!(
                e < TOL,
                "{name} on {backend:?}: gradient of {k} differs from PyTorch by {e}"
            );
        }
    }
}

#[test]
fn cpu_matches_pytorch_golden_values() {
    check_backend(&Backend::Cpu);
}

#[test]
fn gpu_matches_pytorch_golden_values() {
    let Some(gpu) = common::gpu() else { return };
    check_backend(&Backend::Gpu(gpu));
}

#[test]
fn gpu_matches_pytorch_golden_values_on_each_recurrent_path() {
    use recur::gpu::recurrent::RecurrentPath;
    if common::gpu().is_none() {
        return;
    }
    for path in [RecurrentPath::Step, RecurrentPath::Sequence] {
        let gpu = recur::Gpu::new().unwrap();
        gpu.set_recurrent_path(path).unwrap();
        check_backend(&Backend::Gpu(gpu));
    }
}
