//! `recur fit`: many-to-one classification and one-step forecasting reach a stated
//! accuracy / error, the GPU and CPU agree, and bad data files are clear errors.

mod common;

use rand::Rng;
use recur::train::charlm::Backend;
use recur::train::fit::{
    fit_classifier, fit_forecaster, parse_table, FitOptions, FitReport, Table,
};

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

fn opts(backend: Backend) -> FitOptions {
    FitOptions {
        hidden: 12,
        batch: 8,
        epochs: 15,
        lr: 0.02,
        window: 10,
        backend,
        ..FitOptions::default()
    }
}

#[test]
fn classifier_reaches_90_percent_on_both_backends() {
    let mut rng = common::rng("classifier_reaches_90_percent_on_both_backends");
    let (train, test) = (ramps(&mut rng, 48, 12), ramps(&mut rng, 24, 12));
    let mut losses = Vec::new();
    let gpu = common::gpu();
    for backend in [Backend::Cpu, Backend::Gpu] {
        if backend == Backend::Gpu && gpu.is_none() {
            continue;
        }
        let r = fit_classifier(&train, &test, &opts(backend), gpu.as_ref(), |_, _| {}).unwrap();
        let FitReport::Classifier {
            classes,
            test_accuracy,
            train_loss,
            test_count,
        } = r
        else {
            panic!("not a classifier report")
        };
        assert_eq!(classes, [1.0, 2.0]);
        assert_eq!(test_count, 24);
        assert!(
            test_accuracy >= 0.9,
            "{backend:?}: accuracy {test_accuracy}"
        );
        losses.push(train_loss);
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
    let r = fit_forecaster(&train, &test, &opts(Backend::Gpu), Some(&gpu), |_, _| {}).unwrap();
    let FitReport::Forecaster {
        test_rmse,
        naive_rmse,
        test_count,
        ..
    } = r
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
        backend: Backend::Cpu,
        ..FitOptions::default()
    };
    let err = fit_classifier(&train, &test, &o, None, |_, _| {}).unwrap_err();
    assert!(
        format!("{err:#}").contains("label 3 is not a training class"),
        "{err:#}"
    );
    let big = FitOptions {
        batch: 5,
        ..o.clone()
    };
    let err = fit_classifier(&train, &train, &big, None, |_, _| {}).unwrap_err();
    assert!(
        format!("{err:#}").contains("larger than the 2 training"),
        "{err:#}"
    );
    let lr0 = FitOptions {
        lr: 0.0,
        ..o.clone()
    };
    let err = fit_classifier(&train, &train, &lr0, None, |_, _| {}).unwrap_err();
    assert!(format!("{err:#}").contains("lr = 0"), "{err:#}");
    let err = fit_forecaster(&sine(0, 5), &sine(0, 30), &o, None, |_, _| {}).unwrap_err();
    assert!(format!("{err:#}").contains("too few"), "{err:#}");
}
