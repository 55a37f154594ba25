//! Sizes from file headers, tensor shapes, checkpoint specs and options are checked before
//! anything is allocated: each case here once aborted the process ("memory allocation of
//! ... bytes failed") or could have, and now gives exit status 1 and a message naming the
//! value, the bytes needed and the limit.

mod common;

use std::path::{Path, PathBuf};

use recur::apps::fit::{fit_classifier, FitModel, FitOptions, Table};
use recur::memory::{is_limit, Budget};
use recur::nn::{parse_safetensors, save_safetensors, HostTensor, Tensors};
use recur::train::footprint::{Footprint, RunShape};
use recur::train::{Checkpoint, EmbeddingSpec, Head, Loss, ModelSpec, SequenceModel};

fn tmp(name: &str) -> PathBuf {
    common::tmp_path("limits", name)
}

fn write(name: &str, bytes: &[u8]) -> String {
    let p = tmp(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_string_lossy().into_owned()
}

/// Runs the binary and checks it refused with exit status 1 and every one of `want` in its
/// message (never an abort, 134, or a panic, 101).
fn refuses(args: &[&str], want: &[&str]) -> String {
    let (code, _, err) = common::recur(args);
    assert_eq!(code, 1, "{args:?} should fail with status 1: {err}");
    assert!(!err.contains("memory allocation"), "{args:?}: {err}");
    for w in want {
        assert!(err.contains(w), "{args:?}: expected {w:?} in\n{err}");
    }
    err
}

/// The machine's memory is below `bytes` (the tests of sizes beyond memory need that; on a
/// larger machine they say so and skip).
fn memory_below(bytes: u64) -> bool {
    let host = Budget::host();
    if host.bytes() >= bytes {
        eprintln!("skipped: {host}, not less than {bytes} bytes");
        return false;
    }
    true
}

#[test]
fn vectors_headers_beyond_the_file_are_refused_before_allocating() {
    // The issue's seven aborts: `999999999999 8` and `1 999999999999` over a one-line body.
    let words = write("many-words.txt", b"999999999999 8\nthe 1 2 3 4 5 6 7 8\n");
    let dims = write("many-dims.txt", b"1 999999999999\nthe 1 2 3\n");
    let mut bin = b"999999999999 8\nthe ".to_vec();
    bin.extend((0..8).flat_map(|i| (i as f32).to_le_bytes()));
    bin.push(b'\n');
    let words_bin = write("many-words.bin", &bin);
    let mut bin = b"1 999999999999\nthe ".to_vec();
    bin.extend((0..8).flat_map(|i| (i as f32).to_le_bytes()));
    let dims_bin = write("many-dims.bin", &bin);
    let cases = [
        (&words, "the header declares 999999999999 words of 8 values"),
        (&dims, "the header declares 1 word of 999999999999 values"),
        (
            &words_bin,
            "the header declares 999999999999 words of 8 values",
        ),
        (
            &dims_bin,
            "the header declares 1 word of 999999999999 values",
        ),
    ];
    for (file, want) in cases {
        for extra in [&[][..], &["--gpu"][..], &["-k", "0"][..]] {
            let mut args = vec!["similar", file.as_str(), "the"];
            args.extend_from_slice(extra);
            refuses(&args, &[want, "bytes after its header"]);
        }
        refuses(&["analogy", file, "a", "b", "c"], &[want]);
    }
    // The library readers of each format say the same, and name the bytes held.
    let e = recur::word2vec::load_text(Path::new(&words)).unwrap_err();
    assert!(
        format!("{e:#}").contains(
            "whose values alone take at least 15999999999984 bytes in the text format; the \
             file holds 20 bytes after its header"
        ),
        "{e:#}"
    );
    let e = recur::word2vec::load_binary(Path::new(&dims_bin)).unwrap_err();
    assert!(
        format!("{e:#}").contains(
            "whose values alone take at least 3999999999996 bytes in the binary format; the \
             file holds 36 bytes"
        ),
        "{e:#}"
    );
    // Counts that overflow when multiplied are refused the same way.
    let huge = write(
        "huge.txt",
        b"18446744073709551615 18446744073709551615\na 1\n",
    );
    refuses(&["similar", &huge, "a"], &["more than 2^64 bytes"]);
}

#[test]
fn a_header_the_file_holds_still_loads() {
    let ok = write("ok.txt", b"2 3\nthe 1 2 3\ncat 1 2 3.5\n");
    let kv = recur::word2vec::load(Path::new(&ok)).unwrap();
    assert_eq!((kv.len(), kv.dim()), (2, 3));
    // A header that says fewer words than the file holds is still an error of its own.
    let short = write("short.txt", b"3 3\nthe 1 2 3\ncat 1 2 3.5\n");
    let e = recur::word2vec::load(Path::new(&short)).unwrap_err();
    assert!(format!("{e:#}").contains("the file ends early"), "{e:#}");
}

fn rows(n: usize, steps: usize) -> String {
    (0..n)
        .map(|i| {
            let values: Vec<String> = (0..steps).map(|t| ((i + t) % 7).to_string()).collect();
            format!("{},{}\n", i % 2, values.join(","))
        })
        .collect()
}

#[test]
fn fit_refuses_a_hidden_size_beyond_memory() {
    if !memory_below(160_000_000_000) {
        return;
    }
    let data = write("fit.csv", rows(40, 10).as_bytes());
    let fit = |size: &[&'static str]| {
        let d = data.as_str();
        let mut args = vec!["fit", "--train", d, "--test", d, "--backend", "cpu"];
        args.extend_from_slice(size);
        args
    };
    refuses(
        &fit(&["--hidden", "100000"]),
        &[
            "--hidden 100000",
            "hidden_size 100000 (rnn.weight_hh_l0 [400000, 100000] alone) needs 149.0 GiB \
             (160000000000 bytes)",
            "of memory",
        ],
    );
    // Layers count too.
    refuses(
        &fit(&["--hidden", "100", "--layers", "1000000000000"]),
        &[
            "--layers 1000000000000",
            "num_layers 1000000000000",
            "needs",
        ],
    );
}

#[test]
fn train_and_generate_refuse_sizes_beyond_memory() {
    if !memory_below(160_000_000_000) {
        return;
    }
    let out = tmp("charlm").to_string_lossy().into_owned();
    for (flag, value, want) in [
        ("--hidden", "100000", "hidden_size 100000"),
        ("--embed", "1000000000000", "input size 1000000000000"),
        ("--layers", "100000000", "num_layers 100000000"),
        (
            "--batch",
            "1000000000000",
            "batches of 1000000000000 x 32 steps",
        ),
    ] {
        refuses(
            &["train", "--backend", "cpu", "--out", &out, flag, value],
            &[&format!("{flag} {value}"), want, "needs", "of memory"],
        );
    }
    refuses(
        &["generate", "--length", "100000000000000"],
        &["--length 100000000000000", "needs 363.8 TiB"],
    );
}

#[test]
fn word2vec_refuses_a_vector_size_beyond_memory() {
    let corpus = write("corpus.txt", "a b c a b c a b a\n".repeat(20).as_bytes());
    let out = tmp("w2v.txt").to_string_lossy().into_owned();
    let base = [
        "word2vec",
        "--corpus",
        &corpus,
        "--out",
        &out,
        "--min-count",
        "1",
    ];
    let mut args = base.to_vec();
    args.extend(["--size", "1000000000000000"]);
    refuses(&args, &["--size 1000000000000000 with 3 words", "needs"]);
    let mut args = base.to_vec();
    args.extend(["--threads", "100000"]);
    refuses(&args, &["--threads 100000: expected at most 1024"]);
    let mut args = base.to_vec();
    args.extend(["--epochs", "1000000000000000"]);
    refuses(&args, &["--epochs 1000000000000000", "needs"]);
}

fn small_spec() -> ModelSpec {
    ModelSpec {
        embedding: Some(EmbeddingSpec {
            input_dim: 5,
            output_dim: 3,
            padding: None,
            trainable: true,
            init: Default::default(),
        }),
        input_size: 0,
        cell: recur::ops::recurrent::CellKind::Lstm,
        hidden_size: 4,
        num_layers: 1,
        bidirectional: false,
        outputs: 5,
        head: Head::EveryStep,
        loss: Loss::CrossEntropy { ignore_index: None },
        dropout: Default::default(),
    }
}

fn checkpoint_of(spec: ModelSpec) -> Checkpoint {
    let model = SequenceModel::new(spec.clone(), 1).unwrap();
    Checkpoint {
        spec,
        params: model.named_params(),
        optimizer: Tensors::new(),
        state: Tensors::new(),
        step: 1,
        meta: Default::default(),
    }
}

#[test]
fn a_checkpoint_whose_spec_outgrows_its_tensors_is_refused_before_a_model_is_built() {
    let good = tmp("good.safetensors");
    checkpoint_of(small_spec()).save(&good).unwrap();
    assert!(Checkpoint::load(&good).is_ok());
    // Forged specs: the same tensors, a spec far larger (each would allocate terabytes).
    for (field, forge) in [
        ("hidden_size 1000000000", {
            let mut s = small_spec();
            s.hidden_size = 1_000_000_000;
            s
        }),
        ("num_layers 1000000000000", {
            let mut s = small_spec();
            s.num_layers = 1_000_000_000_000;
            s
        }),
        ("embedding input_dim 1000000000000", {
            let mut s = small_spec();
            s.embedding.as_mut().unwrap().input_dim = 1_000_000_000_000;
            s
        }),
        ("outputs 18446744073709551615", {
            let mut s = small_spec();
            s.outputs = usize::MAX;
            s
        }),
    ] {
        let mut ckpt = checkpoint_of(small_spec());
        ckpt.spec = forge;
        let path = tmp("forged.safetensors");
        ckpt.save(&path).unwrap();
        let e = format!("{:#}", Checkpoint::load(&path).unwrap_err());
        assert!(
            e.contains("does not fit its model")
                && e.contains("parameter values, but the file holds"),
            "{field}: {e}"
        );
        let name = field.split(' ').next().unwrap();
        assert!(e.contains(name), "{field}: {e}");
        let path = path.to_string_lossy().into_owned();
        refuses(
            &["generate", "--checkpoint", &path],
            &["parameter values, but the file holds"],
        );
    }
}

#[test]
fn a_fit_model_whose_batch_is_beyond_memory_is_refused_on_loading() {
    let table = |n| Table {
        rows: (0..n)
            .map(|i| {
                let mut r = vec![(i % 2) as f32];
                r.extend((0..4).map(|t| ((i * t) % 5) as f32));
                r
            })
            .collect(),
    };
    let opts = FitOptions {
        hidden: 4,
        batch: 4,
        epochs: 1,
        ..Default::default()
    };
    let fit = fit_classifier(&table(8), &table(8), &opts, &recur::Backend::Cpu, |_, _| {}).unwrap();
    let path = tmp("fit-model.safetensors");
    let mut ckpt = fit.model.checkpoint.clone();
    ckpt.meta.insert(
        "fit".into(),
        r#"{"task":"classifier","classes":[0.0,1.0],"steps":4,"batch":1000000000000000}"#.into(),
    );
    ckpt.save(&path).unwrap();
    let e = FitModel::load(&path).unwrap_err();
    assert!(is_limit(&e), "{e:#}");
    let msg = format!("{e:#}");
    assert!(
        msg.contains("batches of 1000000000000000 x 4 steps"),
        "{msg}"
    );
    assert!(msg.contains("the model cannot run here"), "{msg}");
}

/// A safetensors file from its JSON header and data bytes.
fn safetensors_bytes(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

#[test]
fn safetensors_shapes_are_checked_against_the_file() {
    // An empty tensor may not declare a dimension larger than the file: a later step would
    // allocate for it (an output of that many rows).
    let b = safetensors_bytes(
        r#"{"weight_hh_l0":{"dtype":"F32","shape":[0,1000000000000000000],"data_offsets":[0,0]}}"#,
        &[],
    );
    let e = format!("{:#}", parse_safetensors(&b).unwrap_err());
    assert!(
        e.contains("dimension 1000000000000000000 is larger than the whole file"),
        "{e}"
    );
    // A shape whose product overflows, and offsets past the end: the format's own checks.
    for header in [
        r#"{"x":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}}"#,
        r#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,400000000000]}}"#,
    ] {
        let b = safetensors_bytes(header, &[0; 4]);
        let e = format!("{:#}", parse_safetensors(&b).unwrap_err());
        assert!(e.contains("not a valid safetensors file"), "{header}: {e}");
    }
    // `recur forward` with such weights and a forged --cell.
    let w = write("empty-hh.safetensors", &b);
    let mut x = Tensors::new();
    x.insert(
        "input".into(),
        HostTensor::new(vec![2, 1, 1], vec![0.5, 0.5]).unwrap(),
    );
    let input = tmp("x.safetensors");
    save_safetensors(&input, &x).unwrap();
    let input = input.to_string_lossy().into_owned();
    let forged = safetensors_bytes(
        r#"{"weight_hh_l0":{"dtype":"F32","shape":[0,1000000000000000000],"data_offsets":[0,0]},"weight_ih_l0":{"dtype":"F32","shape":[0,1],"data_offsets":[0,0]}}"#,
        &[],
    );
    let w2 = write("forged-w.safetensors", &forged);
    let out = tmp("y.safetensors").to_string_lossy().into_owned();
    for weights in [&w, &w2] {
        refuses(
            &[
                "forward",
                "--weights",
                weights,
                "--input",
                &input,
                "--out",
                &out,
                "--cell",
                "lstm",
                "--backend",
                "cpu",
            ],
            &["is larger than the whole file"],
        );
    }
}

#[test]
fn forward_refuses_a_run_whose_outputs_outgrow_memory() {
    // LSTM weights of hidden 1024 (16 MiB) over 2^22 input rows (16 MiB): the gates alone
    // take 2^22 x 4096 values (64 GiB).
    let needed: u64 = (1 << 22) * 4096 * 4;
    if !memory_below(needed) {
        return;
    }
    let layer = recur::nn::Recurrent::new(
        recur::nn::RecurrentConfig::new(recur::ops::recurrent::CellKind::Lstm, 1, 1024),
        3,
    )
    .unwrap();
    let w = tmp("big-w.safetensors");
    save_safetensors(&w, layer.params()).unwrap();
    let mut x = Tensors::new();
    x.insert(
        "input".into(),
        HostTensor::new(vec![1 << 22, 1, 1], vec![0.25; 1 << 22]).unwrap(),
    );
    let input = tmp("big-x.safetensors");
    save_safetensors(&input, &x).unwrap();
    let (w, input) = (
        w.to_string_lossy().into_owned(),
        input.to_string_lossy().into_owned(),
    );
    let out = tmp("big-y.safetensors").to_string_lossy().into_owned();
    refuses(
        &[
            "forward",
            "--weights",
            &w,
            "--input",
            &input,
            "--out",
            &out,
            "--backend",
            "cpu",
        ],
        &[
            "--weights",
            "run on 4194304 rows",
            "hidden_size 1024",
            "needs",
        ],
    );
}

#[test]
fn footprints_name_the_field_the_bytes_and_the_limit() {
    let mut spec = small_spec();
    spec.hidden_size = 1000;
    let fp = Footprint::of(&spec).unwrap();
    // 4 gates x 1000 x 1000 f32: 16 MB for W_hh alone.
    let small = Budget::stated(8 << 20, "the test's budget");
    let e = fp.check_host(None, false, &small).unwrap_err();
    assert!(is_limit(&e));
    assert_eq!(
        e.to_string(),
        "hidden_size 1000 (rnn.weight_hh_l0 [4000, 1000] alone) needs 15.3 MiB (16000000 bytes); \
         the test's budget allows 8.0 MiB"
    );
    // The whole: parameters, and four copies of them when training.
    let params = fp.params().unwrap();
    let exact = Budget::stated(params * 4, "exact");
    assert!(fp.check_host(None, false, &exact).is_ok());
    assert!(fp.check_host(None, true, &exact).is_err());
    assert!(fp
        .check_host(None, true, &Budget::stated(params * 16, "four copies"))
        .is_ok());
    // A batch adds its activations; a device buffer takes the largest of them.
    let run = RunShape {
        batch: 64,
        steps: 1000,
    };
    let acts = fp.activations(run).unwrap();
    assert!(fp
        .check_host(
            Some(run),
            true,
            &Budget::stated(params * 16 + acts * 4 - 1, "one short")
        )
        .is_err());
    assert!(fp
        .check_host(
            Some(run),
            true,
            &Budget::stated(params * 16 + acts * 4, "enough")
        )
        .is_ok());
    let e = fp
        .check_device(run, &Budget::stated(64 << 20, "a device"))
        .unwrap_err();
    assert!(e.to_string().contains("largest activation buffer"), "{e}");
    // Sizes that overflow 64 bits are errors, not wraps.
    spec.hidden_size = usize::MAX / 2;
    let fp = Footprint::of(&spec).unwrap();
    assert_eq!(fp.params(), None);
    let e = fp.check_host(None, false, &Budget::host()).unwrap_err();
    assert!(e.to_string().contains("more than 2^64 bytes"), "{e}");
}
