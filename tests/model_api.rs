//! The short library path (`recur::prelude`): a regressor and a classifier built, fitted,
//! used to predict, saved and loaded, on every backend there is.

mod common;

use rand::rngs::StdRng;
use rand::Rng;
use recur::prelude::*;

/// Sequences of 3 features; the target is the mean of the first feature.
fn regression(rng: &mut StdRng, n: usize, steps: usize) -> (Tensor, Tensor) {
    let x: Vec<f32> = (0..n * steps * 3)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let y = (0..n)
        .map(|s| (0..steps).map(|t| x[(s * steps + t) * 3]).sum::<f32>() / steps as f32)
        .collect();
    (
        Tensor::new(vec![n, steps, 3], x).unwrap(),
        Tensor::new(vec![n, 1], y).unwrap(),
    )
}

fn mse(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape, b.shape);
    a.data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f32>()
        / a.data.len() as f32
}

#[test]
fn a_regressor_in_five_lines_learns_saves_and_loads() {
    let mut rng = common::rng("a_regressor_in_five_lines_learns_saves_and_loads");
    // 250 sequences: batches of 16 leave a partial last batch, which trains too.
    let (x, y) = regression(&mut rng, 250, 12);
    let (x_test, y_test) = regression(&mut rng, 40, 12);
    let baseline = mse(&Tensor::zeros(y_test.shape.clone()), &y_test);
    for backend in common::backends() {
        let mut model = Model::lstm(3, 24)
            .dense(1)
            .mse()
            .optimizer(Optimizer::adam(0.01))
            .build(&backend)
            .unwrap();
        let losses = model.fit(&x, &y, Fit::epochs(6).batch(16)).unwrap();
        assert_eq!(losses.len(), 6);
        assert!(
            losses[5] < 0.5 * losses[0],
            "{}: {losses:?}",
            backend.describe()
        );
        let y_hat = model.predict(&x_test).unwrap();
        assert_eq!(y_hat.shape, [40, 1]);
        let e = mse(&y_hat, &y_test);
        assert!(
            e < 0.3 * baseline,
            "{}: test mse {e} vs {baseline}",
            backend.describe()
        );
        let eval = model.evaluate(&x_test, &y_test).unwrap();
        assert!(
            (eval - e).abs() <= 1e-4 * e.max(1e-6) + 1e-6,
            "evaluate {eval} vs {e}"
        );

        let path = std::env::temp_dir().join(format!(
            "recur-model-api-{}-{}.safetensors",
            std::process::id(),
            backend.name()
        ));
        model.save(&path).unwrap();
        let mut loaded = Model::load(&path, &backend).unwrap();
        assert_eq!(loaded.spec(), model.spec());
        assert_eq!(
            loaded.predict(&x_test).unwrap(),
            y_hat,
            "the same bits after loading"
        );
        // Training continues from the saved optimizer state: the same step either way.
        let a = model.fit(&x, &y, Fit::epochs(1).batch(16).seed(9)).unwrap();
        let b = loaded
            .fit(&x, &y, Fit::epochs(1).batch(16).seed(9))
            .unwrap();
        assert_eq!(a, b, "a loaded model trains on as the saved one would");
        std::fs::remove_file(&path).ok();
    }
}

#[test]
fn a_classifier_over_ids_and_a_tagger_at_every_step() {
    let mut rng = common::rng("a_classifier_over_ids_and_a_tagger_at_every_step");
    // Class: whether id 1 occurs in the sequence.
    let (n, steps) = (192, 6);
    let ids: Vec<f32> = (0..n * steps)
        .map(|_| rng.random_range(0..4) as f32)
        .collect();
    let y: Vec<f32> = (0..n)
        .map(|s| ids[s * steps..(s + 1) * steps].contains(&1.0) as u8 as f32)
        .collect();
    let x = Tensor::new(vec![n, steps], ids.clone()).unwrap();
    let y = Tensor::new(vec![n], y).unwrap();
    let backend = Backend::Cpu;
    let mut model = Model::gru(0, 16)
        .embedding(4, 8)
        .dense(2)
        .cross_entropy()
        .optimizer(Optimizer::adam(0.02))
        .build(&backend)
        .unwrap();
    model.fit(&x, &y, Fit::epochs(25).batch(32)).unwrap();
    let logits = model.predict(&x).unwrap();
    assert_eq!(logits.shape, [n, 2]);
    let correct = (0..n)
        .filter(|&s| {
            let pick = (logits.data[2 * s + 1] > logits.data[2 * s]) as u8 as f32;
            pick == y.data[s]
        })
        .count();
    assert!(correct as f32 >= 0.9 * n as f32, "accuracy {correct}/{n}");

    // A tagger: the output at every step is [n, steps, outputs].
    let mut tagger = Model::lstm(0, 8)
        .embedding(4, 4)
        .dense(3)
        .every_step()
        .cross_entropy()
        .build(&backend)
        .unwrap();
    let tags = Tensor::new(vec![n, steps], ids.iter().map(|v| v % 3.0).collect()).unwrap();
    tagger.fit(&x, &tags, Fit::epochs(1)).unwrap();
    assert_eq!(tagger.predict(&x).unwrap().shape, [n, steps, 3]);
}

#[test]
fn bad_arrays_are_errors_naming_the_shape() {
    let backend = Backend::Cpu;
    let mut model = Model::lstm(3, 4).dense(2).mse().build(&backend).unwrap();
    let x = Tensor::zeros(vec![5, 4, 3]);
    let err = |r: recur::Result<Vec<f32>>| format!("{:#}", r.unwrap_err());
    let e = err(model.fit(
        &Tensor::zeros(vec![5, 4, 2]),
        &Tensor::zeros(vec![5, 2]),
        Fit::default(),
    ));
    assert!(e.contains("[5, 4, 2]") && e.contains("input_size 3"), "{e}");
    let e = err(model.fit(&x, &Tensor::zeros(vec![5, 3]), Fit::default()));
    assert!(e.contains("[5, 3]"), "{e}");
    let mut bad = x.clone();
    bad.data[7] = f32::NAN;
    let e = err(model.fit(&bad, &Tensor::zeros(vec![5, 2]), Fit::default()));
    assert!(e.contains("non-finite") && e.contains('7'), "{e}");
    let mut classifier = Model::lstm(3, 4)
        .dense(2)
        .cross_entropy()
        .build(&backend)
        .unwrap();
    let e = err(classifier.fit(
        &x,
        &Tensor::new(vec![5], vec![0.0, 1.0, 2.0, 0.0, 1.0]).unwrap(),
        Fit::default(),
    ));
    assert!(e.contains("y[2] = 2") && e.contains("0..2"), "{e}");
    let e = err(model.fit(&x, &Tensor::zeros(vec![5, 2]), Fit::epochs(0)));
    assert!(e.contains("epoch"), "{e}");
}
