//! The character language model: vocabulary, stream batches, a short run on each backend
//! (the same numbers on both), checkpoint, sampling, plot, and bad input.

mod common;

use std::path::PathBuf;

use recur::apps::charlm::{self, CharLmOptions, CharVocab, History, Streams};
use recur::apps::plot::loss_png;
use recur::train::model::{Inputs, Targets};
use recur::train::Checkpoint;
use recur::Backend;

fn tmp(name: &str) -> PathBuf {
    common::tmp_dir(&format!("charlm-{name}"))
}

fn tiny() -> CharLmOptions {
    CharLmOptions {
        hidden: 8,
        embed: 4,
        batch: 3,
        seq_len: 5,
        train_steps: 12,
        lr: 0.02,
        eval_every: 5,
        valid_fraction: 0.2,
        ..CharLmOptions::default()
    }
}

const TEXT: &str = "the cat sat on the mat. the dog sat on the log. a cat and a dog sat. \
                    the mat and the log are on the floor, and the cat is on the mat.";

#[test]
fn vocabulary_and_streams() {
    let v = CharVocab::from_text("banana").unwrap();
    assert_eq!(v.as_string(), "abn");
    assert_eq!(v.encode("nab").unwrap(), [2, 0, 1]);
    let err = v.encode("bat").unwrap_err();
    assert!(format!("{err:#}").contains("'t'"), "{err:#}");
    assert_eq!(CharVocab::from_string("abn").unwrap(), v);
    assert!(CharVocab::from_text("").is_err());

    // 2 streams of 10 ids; chunks of 3 steps: (10 - 1) / 3 = 3 chunks.
    let s = Streams::new((0..20).collect(), 2, 3, "training").unwrap();
    assert_eq!(s.chunks(), 3);
    let b = s.chunk(1);
    // Time-major: step t of stream s is at t * 2 + s; stream 1 starts at id 10.
    assert_eq!(b.inputs, Inputs::Ids(vec![3, 13, 4, 14, 5, 15]));
    assert_eq!(b.targets, Targets::Classes(vec![4, 14, 5, 15, 6, 16]));
    let err = Streams::new((0..7).collect(), 2, 3, "training")
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("too few"), "{err:#}");
}

#[test]
fn cpu_run_trains_checkpoints_and_samples() {
    let dir = tmp("cpu");
    let path = dir.join("model.safetensors");
    let mut opts = tiny();
    opts.train_steps = 60;
    let mut reports = 0;
    let h = charlm::train(TEXT, &opts, &path, &Backend::Cpu, |r| {
        assert!(r.loss.is_finite());
        reports += 1;
    })
    .unwrap();
    assert_eq!(reports, 60);
    assert_eq!(h.valid.len(), 12);
    let first: f32 = h.train[..5].iter().map(|x| x.1).sum::<f32>() / 5.0;
    let last: f32 = h.train[55..].iter().map(|x| x.1).sum::<f32>() / 5.0;
    assert!(
        last < 0.8 * first,
        "training bpc did not fall: {first} -> {last}"
    );

    let ckpt = Checkpoint::load(&path).unwrap();
    assert_eq!(ckpt.step, 60);
    let a = charlm::generate(&ckpt, "the ", 40, 0.5, 1).unwrap();
    let b = charlm::generate(&ckpt, "the ", 40, 0.5, 1).unwrap();
    assert_eq!(a, b, "sampling is deterministic from a seed");
    assert!(a.starts_with("the ") && a.chars().count() == 44);
    let err = charlm::generate(&ckpt, "THE", 5, 0.5, 1).unwrap_err();
    assert!(format!("{err:#}").contains("'T'"), "{err:#}");
    for t in [0.0, f32::NAN] {
        assert!(charlm::generate(&ckpt, "", 5, t, 1).is_err());
    }

    let png = dir.join("loss.png");
    loss_png(&h, "test", &png).unwrap();
    assert_eq!(&std::fs::read(&png).unwrap()[..4], b"\x89PNG");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_held_out_part_too_short_for_a_batch_means_no_validation() {
    let dir = tmp("short");
    let opts = CharLmOptions {
        valid_fraction: 0.05,
        ..tiny()
    };
    let h = charlm::train(
        TEXT,
        &opts,
        &dir.join("m.safetensors"),
        &Backend::Cpu,
        |_| {},
    )
    .unwrap();
    assert!(h.valid.is_empty());
    let why = h.no_validation.expect("the reason is reported");
    assert!(why.contains("validation text has"), "{why}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one() {
    let dir = tmp("resume");
    for backend in common::backends() {
        // Two layers and all three dropouts: the rates live in the checkpoint, and the masks
        // are keyed by the step, so the resumed run draws the same ones.
        let opts = CharLmOptions {
            train_steps: 20,
            layers: 2,
            input_dropout: 0.1,
            dropout: 0.2,
            recurrent_dropout: 0.15,
            ..tiny()
        };
        let (full, part) = (dir.join("full.safetensors"), dir.join("part.safetensors"));
        // The uninterrupted run; its checkpoint at step 10 is kept as if it had stopped there.
        let h = charlm::train(TEXT, &opts, &full, &backend, |r| {
            if r.step == 10 {
                std::fs::copy(&full, &part).unwrap();
            }
        })
        .unwrap();
        let from = Checkpoint::load(&part).unwrap();
        assert_eq!(from.step, 10);
        let resumed = dir.join("resumed.safetensors");
        let h2 = charlm::resume(TEXT, &opts, &resumed, &backend, &from, |_| {}).unwrap();
        let (a, b) = (
            Checkpoint::load(&full).unwrap(),
            Checkpoint::load(&resumed).unwrap(),
        );
        assert_eq!(a.params, b.params, "{backend:?}: resumed parameters differ");
        assert_eq!(a.optimizer, b.optimizer);
        assert_eq!(a.state, b.state, "{backend:?}: carried states differ");
        assert!(
            !a.state.is_empty(),
            "the carried state is in the checkpoint"
        );
        assert_eq!(from.spec.dropout.recurrent, 0.15);
        assert_eq!(h.train, h2.train, "the history continues");
        assert_eq!(h.valid, h2.valid);
        // Other options are refused.
        let other = CharLmOptions {
            lr: 0.03,
            ..opts.clone()
        };
        let err = charlm::resume(TEXT, &other, &resumed, &backend, &from, |_| {}).unwrap_err();
        assert!(format!("{err:#}").contains("other options"), "{err:#}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn gpu_and_cpu_runs_agree() {
    let Some(gpu) = common::gpu() else { return };
    let dir = tmp("agree");
    let run = |backend: Backend| -> History {
        let path = dir.join(format!("{}.safetensors", backend.name()));
        charlm::train(TEXT, &tiny(), &path, &backend, |_| {}).unwrap()
    };
    let (g, c) = (run(Backend::Gpu(gpu.clone())), run(Backend::Cpu));
    let again = run(Backend::Gpu(gpu));
    assert_eq!(
        g.train, again.train,
        "same seed, same adapter: the same bits"
    );
    assert_eq!(g.valid, again.valid);
    for (a, b) in g
        .train
        .iter()
        .zip(&c.train)
        .chain(g.valid.iter().zip(&c.valid))
    {
        assert_eq!(a.0, b.0);
        assert!(
            (a.1 - b.1).abs() < 1e-4 * b.1.abs(),
            "step {}: GPU {} bpc, CPU {} bpc",
            a.0,
            a.1,
            b.1
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_input_keeps_the_checkpoint() {
    let dir = tmp("bad");
    let path = dir.join("model.safetensors");
    charlm::train(TEXT, &tiny(), &path, &Backend::Cpu, |_| {}).unwrap();
    let good = std::fs::read(&path).unwrap();
    let cases: Vec<(&str, CharLmOptions, &str)> = vec![
        ("", tiny(), "empty"),
        (TEXT, CharLmOptions { lr: 0.0, ..tiny() }, "lr = 0"),
        (
            TEXT,
            CharLmOptions {
                lr: f32::NAN,
                ..tiny()
            },
            "lr = NaN",
        ),
        (
            TEXT,
            CharLmOptions {
                batch: 100,
                ..tiny()
            },
            "too few",
        ),
        (
            TEXT,
            CharLmOptions {
                recurrent_dropout: 1.0,
                ..tiny()
            },
            "dropout rate `recurrent` 1 is invalid",
        ),
    ];
    for (text, opts, want) in cases {
        let err = charlm::train(text, &opts, &path, &Backend::Cpu, |_| {}).unwrap_err();
        assert!(format!("{err:#}").contains(want), "{want}: {err:#}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            good,
            "{want}: checkpoint changed"
        );
    }
    let diverge = CharLmOptions {
        lr: 1e30,
        clip: 1e30,
        ..tiny()
    };
    // A diverging run stops with the step; the last good checkpoint stays readable.
    if let Err(e) = charlm::train(TEXT, &diverge, &path, &Backend::Cpu, |_| {}) {
        assert!(format!("{e:#}").contains("at step"), "{e:#}");
    }
    Checkpoint::load(&path).unwrap();

    let empty = dir.join("empty.txt");
    std::fs::write(&empty, b"").unwrap();
    let err = charlm::read_text(&empty).unwrap_err();
    assert!(format!("{err:#}").contains("empty"), "{err:#}");
    let binary = dir.join("binary.txt");
    std::fs::write(&binary, b"ab\xff\xfe").unwrap();
    let err = charlm::read_text(&binary).unwrap_err();
    assert!(format!("{err:#}").contains("not UTF-8"), "{err:#}");
    std::fs::remove_dir_all(&dir).ok();
}
