//! The library's errors by kind: a caller matches on `recur::Error`'s variants through the
//! public API, and context added on the way up keeps the variant.

use std::path::PathBuf;

use recur::memory::{is_limit, Budget};
use recur::nn::{load_safetensors, parse_safetensors, HostTensor};
use recur::ops::recurrent::CellKind;
use recur::train::footprint::Footprint;
use recur::train::Model;
use recur::train::{Checkpoint, DropoutRates, Loss, ModelSpec};
use recur::Backend;
use recur::Error;

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("recur-errors-{}-{name}", std::process::id()))
}

/// A model reading three features per step, on the CPU.
fn small_model() -> Model {
    Model::lstm(3, 4)
        .dense(1)
        .mse()
        .build(&Backend::Cpu)
        .unwrap()
}

#[test]
fn a_tensor_whose_data_does_not_fit_its_shape_is_a_shape_error() {
    let e = HostTensor::new(vec![2, 3], vec![0.0; 5]).unwrap_err();
    assert!(
        matches!(&e, Error::Shape(m) if m.contains("[2, 3]")),
        "{e:?}"
    );
}

#[test]
fn a_model_given_inputs_of_the_wrong_shape_is_a_shape_error() {
    let mut model = small_model();
    // Two features per step where the model reads three.
    let x = HostTensor::zeros(vec![2, 5, 2]);
    let e = model.predict(&x).unwrap_err();
    assert!(matches!(e, Error::Shape(_)), "{e:?}");
}

#[test]
fn corrupt_safetensors_and_checkpoints_are_format_errors() {
    let e = parse_safetensors(b"not a safetensors file at all").unwrap_err();
    assert!(matches!(e, Error::Format(_)), "{e:?}");

    let path = tmp("corrupt.safetensors");
    std::fs::write(&path, b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":1}").unwrap();
    let e = Checkpoint::load(&path).unwrap_err();
    assert!(
        matches!(&e, Error::Format(m) if m.contains("safetensors")),
        "{e:?}"
    );
    std::fs::remove_file(&path).ok();
}

#[test]
fn a_missing_file_is_an_io_error_naming_the_path() {
    let path = tmp("no-such-file.safetensors");
    let e = load_safetensors(&path).unwrap_err();
    match &e {
        Error::Io {
            path: p, source, ..
        } => {
            assert_eq!(p, &path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        e => panic!("expected an Io error, got {e:?}"),
    }
    // The message names the file; the operating system's reason is its source.
    assert!(e.to_string().contains("no-such-file"), "{e}");
    assert!(std::error::Error::source(&e).is_some());
    assert!(e.full_message().contains(": "), "{}", e.full_message());

    let e = Checkpoint::load(&path).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
}

#[test]
fn saving_onto_a_directory_is_an_invalid_argument_and_leaves_nothing_behind() {
    let mut model = small_model();
    let dir = tmp("a-directory");
    std::fs::create_dir_all(&dir).unwrap();
    let e = model.save(&dir).unwrap_err();
    assert!(
        matches!(&e, Error::Invalid(m) if m.contains("a-directory is a directory")),
        "{e:?}"
    );
    let parent = dir.parent().unwrap();
    let left: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("a-directory.tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_out_of_range_rate_is_an_invalid_argument_naming_the_field() {
    let rates = DropoutRates {
        input: 1.5,
        ..Default::default()
    };
    let e = rates.validate().unwrap_err();
    assert!(
        matches!(&e, Error::Invalid(m)
            if m == "dropout rate `input` 1.5 is invalid: expected a rate in [0, 1)"),
        "{e:?}"
    );
    let e = Model::lstm(3, 4)
        .dense(1)
        .dropout(0.0, 0.0, -0.5)
        .mse()
        .build(&Backend::Cpu)
        .err()
        .expect("a recurrent dropout of -0.5 is refused");
    assert!(matches!(e, Error::Invalid(_)), "{e:?}");
}

#[test]
fn a_size_beyond_a_budget_is_a_limit_error() {
    let spec = ModelSpec {
        embedding: None,
        input_size: 8,
        cell: CellKind::Lstm,
        hidden_size: 1000,
        num_layers: 1,
        bidirectional: false,
        outputs: 1,
        head: recur::train::Head::LastStep,
        loss: Loss::MeanSquaredError,
        dropout: Default::default(),
    };
    let small = Budget::stated(1 << 20, "the test's budget");
    let e = Footprint::of(&spec)
        .unwrap()
        .check_host(None, false, &small)
        .unwrap_err();
    assert!(
        matches!(&e, Error::Limit(m) if m.contains("hidden_size 1000")),
        "{e:?}"
    );
    assert!(is_limit(&e));
}

#[test]
fn context_keeps_the_kind_through_anyhow_too() {
    let e = HostTensor::new(vec![4], vec![]).unwrap_err();
    let any: anyhow::Error = e.into();
    assert!(matches!(any.downcast_ref::<Error>(), Some(Error::Shape(_))));
    assert!(!is_limit(any.as_ref()));
}
