//! `recur fit`: many-to-one classification and one-step forecasting reach a stated
//! accuracy / error (stacked, bidirectional and with dropout too), the GPU and CPU agree, a
//! saved model reports the same figures when loaded, and bad data files, options and model
//! files are clear errors.

mod common;

use std::path::{Path, PathBuf};

use common::recur;
use rand::Rng;
use recur::apps::fit::{
    fit_classifier, fit_forecaster, parse_table, Fit, FitModel, FitOptions, FitReport, Table,
};
use recur::Backend;

/// Rising series are class 1, falling ones class 2, each with noise.
fn ramps(rng: &mut impl Rng, n: usize, len: usize) -> Table {
    let rows = (0..n)
        .map(|i| {
            let up = i % 2 == 0;
            let mut row = vec![if up { 1.0 } else { 2.0 }];
            let slope = rng.random_range(0.05..0.15) * if up { 1.0 } else { -1.0 };
            let start = rng.random_range(-0.5..0.5);
            row.extend((0..len).map(|t| start + slope * t as f32 + rng.random_range(-0.1..0.1)));
            row
        })
        .collect();
    Table { rows }
}

fn sine(from: usize, n: usize) -> Table {
    Table {
        rows: (from..from + n)
            .map(|i| vec![3.0 + 2.0 * (i as f32 * std::f32::consts::TAU / 20.0).sin()])
            .collect(),
    }
}

fn opts() -> FitOptions {
    FitOptions {
        hidden: 12,
        batch: 8,
        epochs: 15,
        lr: 0.02,
        window: 10,
        ..FitOptions::default()
    }
}

#[test]
fn classifier_reaches_90_percent_on_both_backends() {
    let mut rng = common::rng("classifier_reaches_90_percent_on_both_backends");
    let (train, test) = (ramps(&mut rng, 48, 12), ramps(&mut rng, 24, 12));
    let mut losses = Vec::new();
    for backend in common::backends() {
        let fit = fit_classifier(&train, &test, &opts(), &backend, |_, _| {}).unwrap();
        let FitReport::Classifier {
            classes,
            test_accuracy,
            test_count,
        } = fit.report
        else {
            panic!("not a classifier report")
        };
        assert_eq!(classes, [1.0, 2.0]);
        assert_eq!(test_count, 24);
        assert!(
            test_accuracy >= 0.9,
            "{backend:?}: accuracy {test_accuracy}"
        );
        losses.push(fit.train_loss);
    }
    if losses.len() == 2 {
        let e = (losses[0] - losses[1]).abs() / losses[0].abs();
        assert!(e < 1e-3, "CPU and GPU training losses differ: {losses:?}");
    }
}

#[test]
fn forecaster_beats_repeating_the_last_value() {
    let Some(gpu) = common::gpu() else { return };
    let (train, test) = (sine(0, 200), sine(200, 60));
    let fit = fit_forecaster(&train, &test, &opts(), &Backend::Gpu(gpu), |_, _| {}).unwrap();
    let FitReport::Forecaster {
        test_rmse,
        naive_rmse,
        test_count,
    } = fit.report
    else {
        panic!("not a forecaster report")
    };
    assert_eq!(test_count, 50);
    assert!(
        test_rmse < 0.5 * naive_rmse,
        "forecast RMSE {test_rmse} vs naive {naive_rmse}"
    );
}

#[test]
fn bad_data_files_are_clear_errors() {
    let cases = [
        ("1,2,3\n2,3\n", "line 2 has 2 fields"),
        ("1,2,x\n", "(\"x\") is not a number"),
        (",2,3\n", "label) is missing"),
        ("1,2,nan\n", "not a finite number"),
        ("\n\n", "no data rows"),
    ];
    for (text, want) in cases {
        let err = parse_table(text).unwrap_err();
        assert!(format!("{err:#}").contains(want), "{want}: {err:#}");
    }
    assert_eq!(
        parse_table("1 2 3\n4\t5\t6\n").unwrap().rows,
        [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    );
    let train = parse_table("1,0.1,0.2\n2,0.3,0.4\n").unwrap();
    let test = parse_table("3,0.1,0.2\n").unwrap();
    let o = FitOptions {
        batch: 2,
        ..FitOptions::default()
    };
    let err = fit_classifier(&train, &test, &o, &Backend::Cpu, |_, _| {}).unwrap_err();
    assert!(
        format!("{err:#}").contains("label 3 is not a training class"),
        "{err:#}"
    );
    let big = FitOptions {
        batch: 5,
        ..o.clone()
    };
    let err = fit_classifier(&train, &train, &big, &Backend::Cpu, |_, _| {}).unwrap_err();
    assert!(
        format!("{err:#}").contains("larger than the 2 training"),
        "{err:#}"
    );
    let lr0 = FitOptions {
        lr: 0.0,
        ..o.clone()
    };
    let err = fit_classifier(&train, &train, &lr0, &Backend::Cpu, |_, _| {}).unwrap_err();
    assert!(format!("{err:#}").contains("lr = 0"), "{err:#}");
    let err = fit_forecaster(&sine(0, 5), &sine(0, 30), &o, &Backend::Cpu, |_, _| {}).unwrap_err();
    assert!(format!("{err:#}").contains("too few"), "{err:#}");
}

/// 2 layers, both directions, every dropout.
fn stacked() -> FitOptions {
    FitOptions {
        layers: 2,
        bidirectional: true,
        input_dropout: 0.1,
        dropout: 0.2,
        recurrent_dropout: 0.1,
        ..opts()
    }
}

#[test]
fn stacked_bidirectional_classifier_with_dropout_reaches_90_percent() {
    let mut rng = common::rng("stacked_bidirectional_classifier_with_dropout_reaches_90_percent");
    let (train, test) = (ramps(&mut rng, 48, 12), ramps(&mut rng, 24, 12));
    let fit = fit_classifier(&train, &test, &stacked(), &Backend::Cpu, |_, _| {}).unwrap();
    let spec = &fit.model.checkpoint.spec;
    assert_eq!((spec.num_layers, spec.bidirectional), (2, true));
    assert_eq!(
        (
            spec.dropout.input,
            spec.dropout.between_layers,
            spec.dropout.recurrent
        ),
        (0.1, 0.2, 0.1)
    );
    let FitReport::Classifier { test_accuracy, .. } = fit.report else {
        panic!("not a classifier report")
    };
    assert!(test_accuracy >= 0.9, "accuracy {test_accuracy}");
}

fn tmp(name: &str) -> PathBuf {
    common::tmp_path("fit-test", name)
}

/// Saves the fitted model, loads it and checks that it is the same model and reports the
/// same figures, to the bit, on the same backend.
fn assert_reloads_the_same(fit: &Fit, test: &Table, path: &Path, backend: Backend) {
    fit.model.save(path).unwrap();
    let loaded = FitModel::load(path).unwrap();
    assert_eq!(loaded, fit.model);
    let report = loaded.test(test, &backend).unwrap();
    assert_eq!(report, fit.report);
}

/// `ramps` with labels that are not small integers (they must read back exactly).
fn relabelled(t: Table) -> Table {
    let rows = t
        .rows
        .into_iter()
        .map(|mut r| {
            r[0] = if r[0] == 1.0 { -0.3 } else { 2.7 };
            r
        })
        .collect();
    Table { rows }
}

fn small() -> FitOptions {
    FitOptions {
        hidden: 6,
        epochs: 2,
        window: 6,
        ..stacked()
    }
}

#[test]
fn saved_classifier_and_forecaster_report_the_same_bits() {
    let mut rng = common::rng("saved_classifier_and_forecaster_report_the_same_bits");
    let (train, test) = (
        relabelled(ramps(&mut rng, 16, 8)),
        relabelled(ramps(&mut rng, 11, 8)),
    );
    let fit = fit_classifier(&train, &test, &small(), &Backend::Cpu, |_, _| {}).unwrap();
    let FitReport::Classifier { classes, .. } = &fit.report else {
        panic!("not a classifier report")
    };
    assert_eq!(classes, &[-0.3, 2.7]);
    assert_reloads_the_same(&fit, &test, &tmp("classifier.safetensors"), Backend::Cpu);

    let (train, test) = (sine(0, 40), sine(40, 21));
    let fit = fit_forecaster(&train, &test, &small(), &Backend::Cpu, |_, _| {}).unwrap();
    assert_reloads_the_same(&fit, &test, &tmp("forecaster.safetensors"), Backend::Cpu);
}

#[test]
fn saved_model_reports_the_same_bits_on_the_gpu() {
    let Some(gpu) = common::gpu() else { return };
    let (train, test) = (sine(0, 40), sine(40, 21));
    let backend = Backend::Gpu(gpu);
    let fit = fit_forecaster(&train, &test, &small(), &backend, |_, _| {}).unwrap();
    assert_reloads_the_same(&fit, &test, &tmp("gpu.safetensors"), backend);
}

#[test]
fn the_same_seed_trains_the_same_parameters_with_dropout() {
    let mut rng = common::rng("the_same_seed_trains_the_same_parameters_with_dropout");
    let (train, test) = (ramps(&mut rng, 16, 8), ramps(&mut rng, 8, 8));
    let params = |o: &FitOptions| {
        let fit = fit_classifier(&train, &test, o, &Backend::Cpu, |_, _| {}).unwrap();
        fit.model.checkpoint.params
    };
    let o = small();
    let first = params(&o);
    assert_eq!(params(&o), first);
    // The masks take part: without them the same seed trains other parameters.
    let no_dropout = FitOptions {
        input_dropout: 0.0,
        dropout: 0.0,
        recurrent_dropout: 0.0,
        ..o
    };
    assert_ne!(params(&no_dropout), first);
}

fn err_of<T: std::fmt::Debug>(r: recur::Result<T>) -> String {
    format!("{:#}", r.unwrap_err())
}

#[test]
fn bad_options_are_refused_naming_the_value() {
    let mut rng = common::rng("bad_options_are_refused_naming_the_value");
    let (train, test) = (ramps(&mut rng, 8, 4), ramps(&mut rng, 4, 4));
    let cases = [
        (
            FitOptions {
                layers: 0,
                ..small()
            },
            "layers 0 is invalid: expected at least 1 layer",
        ),
        (
            FitOptions {
                hidden: 0,
                ..small()
            },
            "hidden 0 is invalid: expected a hidden size of at least 1",
        ),
        (
            FitOptions {
                dropout: 1.0,
                ..small()
            },
            "dropout rate `between_layers` 1 is invalid: expected a rate in [0, 1)",
        ),
        (
            FitOptions {
                input_dropout: -0.1,
                ..small()
            },
            "dropout rate `input` -0.1 is invalid: expected a rate in [0, 1)",
        ),
        (
            FitOptions {
                recurrent_dropout: f32::NAN,
                ..small()
            },
            "dropout rate `recurrent` NaN is invalid: expected a rate in [0, 1)",
        ),
    ];
    for (o, want) in cases {
        let err = err_of(fit_classifier(&train, &test, &o, &Backend::Cpu, |_, _| {}));
        assert!(err.contains(want), "{want}: {err}");
        let err = err_of(fit_forecaster(
            &sine(0, 30),
            &sine(0, 30),
            &o,
            &Backend::Cpu,
            |_, _| {},
        ));
        assert!(err.contains(want), "{want}: {err}");
    }
}

#[test]
fn files_that_are_not_fit_models_are_refused_naming_them() {
    let mut rng = common::rng("files_that_are_not_fit_models_are_refused_naming_them");
    let (train, test) = (ramps(&mut rng, 8, 4), ramps(&mut rng, 4, 4));
    let o = FitOptions {
        batch: 4,
        ..small()
    };
    let fit = fit_classifier(&train, &test, &o, &Backend::Cpu, |_, _| {}).unwrap();
    let good = tmp("good.safetensors");
    fit.model.save(&good).unwrap();

    // A recur checkpoint without fit's metadata (as `recur train` writes).
    let plain = tmp("plain.safetensors");
    fit.model.checkpoint.save(&plain).unwrap();
    let err = err_of(FitModel::load(&plain));
    assert!(
        err.contains(&format!(
            "{} is a recur checkpoint but not a `recur fit` model",
            plain.display()
        )),
        "{err}"
    );

    // Fit metadata that is not JSON, or does not match the model.
    for (meta, want) in [
        ("{oops", "the `fit` metadata is not valid"),
        (
            r#"{"task":"classifier","classes":[1.0,2.0,3.0],"steps":4,"batch":4}"#,
            "the model's outputs (2) and loss (cross-entropy) do not match its classifier \
             metadata (expected 3 and cross-entropy)",
        ),
        (
            r#"{"task":"forecaster","window":4,"mean":0.0,"std":1.0,"batch":4}"#,
            "the model's outputs (2) and loss (cross-entropy) do not match its forecaster \
             metadata (expected 1 and mean-squared-error)",
        ),
        (
            r#"{"task":"classifier","classes":[2.0,1.0],"steps":4,"batch":4}"#,
            "class labels [2.0, 1.0] are invalid",
        ),
        (
            r#"{"task":"classifier","classes":[1.0,2.0],"steps":4,"batch":0}"#,
            "batch 0 is invalid",
        ),
    ] {
        let mut ckpt = fit.model.checkpoint.clone();
        ckpt.meta.insert("fit".into(), meta.into());
        let path = tmp("tampered.safetensors");
        ckpt.save(&path).unwrap();
        let err = err_of(FitModel::load(&path));
        assert!(
            err.contains(&path.display().to_string()) && err.contains(want),
            "{want}: {err}"
        );
    }

    // A recur checkpoint of another kind of model, with fit metadata.
    let mut other = fit.model.checkpoint.clone();
    other.spec.head = recur::train::Head::EveryStep;
    other.meta.insert(
        "fit".into(),
        r#"{"task":"classifier","classes":[1.0,2.0],"steps":4,"batch":4}"#.into(),
    );
    let path = tmp("every-step.safetensors");
    other.save(&path).unwrap();
    let err = err_of(FitModel::load(&path));
    assert!(
        err.contains(
            "head EveryStep) is not a fit model: expected no embedding, 1 input \
             feature and head LastStep"
        ),
        "{err}"
    );

    // A truncated file, and a file that is not a checkpoint at all.
    let bytes = std::fs::read(&good).unwrap();
    let cut = tmp("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = err_of(FitModel::load(&cut));
    assert!(
        err.contains(&format!("{} is not a safetensors file", cut.display())),
        "{err}"
    );
    let text = tmp("text.safetensors");
    std::fs::write(&text, "1,2,3\n").unwrap();
    let err = err_of(FitModel::load(&text));
    assert!(
        err.contains(&format!("{} is not a safetensors file", text.display())),
        "{err}"
    );

    // The good file still loads and tests.
    let loaded = FitModel::load(&good).unwrap();
    assert_eq!(loaded.test(&test, &Backend::Cpu).unwrap(), fit.report);
    // Test rows of another length than the model's are refused, naming both.
    let err = err_of(loaded.test(&ramps(&mut rng, 4, 5), &Backend::Cpu));
    assert!(
        err.contains("test rows have 6 fields, the model's 5"),
        "{err}"
    );
}

fn write_table(t: &Table, name: &str) -> String {
    let text: String = t
        .rows
        .iter()
        .map(|r| {
            let fields: Vec<String> = r.iter().map(|v| v.to_string()).collect();
            fields.join(",") + "\n"
        })
        .collect();
    let path = tmp(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn cli_saves_a_model_that_reports_the_same_when_loaded() {
    let mut rng = common::rng("cli_saves_a_model_that_reports_the_same_when_loaded");
    let train = write_table(&ramps(&mut rng, 16, 8), "cli-train.csv");
    let test = write_table(&ramps(&mut rng, 8, 8), "cli-test.csv");
    let model = tmp("cli-model.safetensors").to_string_lossy().into_owned();
    let (code, trained, err) = recur(&[
        "fit",
        "--train",
        &train,
        "--test",
        &test,
        "--backend",
        "cpu",
        "--hidden",
        "6",
        "--layers",
        "2",
        "--bidirectional",
        "--batch",
        "8",
        "--epochs",
        "2",
        "--input-dropout",
        "0.1",
        "--dropout",
        "0.2",
        "--recurrent-dropout",
        "0.1",
        "--out",
        &model,
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, loaded, err) = recur(&[
        "fit",
        "--model",
        &model,
        "--test",
        &test,
        "--backend",
        "cpu",
    ]);
    assert_eq!(code, 0, "{err}");
    let report = trained.lines().next().unwrap();
    assert!(report.contains("test accuracy"), "{trained}");
    assert_eq!(loaded.trim_end(), report);
    assert!(trained.contains(&format!("model: {model}")), "{trained}");

    // Bad input: exit status 1 and a message naming the value, never a panic.
    let cases: [(&[&str], String); 4] = [
        (
            &["fit", "--train", &train, "--model", &model, "--test", &test],
            format!("--train {train} and --model {model} were both given"),
        ),
        (
            &["fit", "--train", &train, "--test", &test, "--layers", "0"],
            "--layers: layers 0 is invalid".into(),
        ),
        (
            &[
                "fit",
                "--train",
                &train,
                "--test",
                &test,
                "--dropout",
                "1.5",
            ],
            "--dropout: dropout rate `between_layers` 1.5 is invalid: expected a rate in [0, 1)"
                .into(),
        ),
        (
            &[
                "fit",
                "--model",
                &train,
                "--test",
                &test,
                "--backend",
                "cpu",
            ],
            format!("{train} is not a safetensors file"),
        ),
    ];
    for (args, want) in cases {
        let (code, _, err) = recur(args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains(&want), "{want}: {err}");
    }
}
