//! `recur fit`: a many-to-one classifier or a one-step forecaster trained from data files.
//!
//! - Classification (UCR/UEA style): one sequence per line, the label first, then the
//!   values, separated by commas or tabs (or else spaces). Every row has the same length. Labels are
//!   numbers; the classes are the distinct training labels, sorted.
//! - Forecasting: a single column, one value per line. Windows of `window` values predict
//!   the next value; values are standardised with the training mean and deviation.
//!
//! The model is a recurrent stack over one feature per step with a dense head on its last
//! step: softmax cross-entropy for classes, mean squared error for forecasts.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::charlm::Backend;
use super::model::{Batch, Head, Inputs, Loss, ModelSpec, SequenceModel, Targets};
use super::optimizer::OptimConfig;
use super::schedule::Schedule;
use super::trainer::{CpuTrainer, GpuTrainer, TrainConfig, Trainer};
use crate::gpu::Gpu;
use crate::ops::optim::Optimizer;

/// Rows of numbers read from a data file.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub rows: Vec<Vec<f32>>,
}

/// Reads a table of numbers: every row the same length, every field a finite number.
pub fn read_table(path: &Path) -> Result<Table> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{} is not a UTF-8 text file", path.display()))?;
    parse_table(&text).with_context(|| format!("in {}", path.display()))
}

/// Parses a table (see [`read_table`]); blank lines are skipped.
pub fn parse_table(text: &str) -> Result<Table> {
    let mut rows: Vec<Vec<f32>> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = if line.contains([',', '\t']) {
            line.split([',', '\t']).map(str::trim).collect()
        } else {
            line.split_whitespace().collect()
        };
        let mut row = Vec::with_capacity(fields.len());
        for (j, f) in fields.iter().enumerate() {
            if f.is_empty() {
                if j == 0 {
                    bail!("line {}: the first field (the label) is missing", i + 1);
                }
                bail!("line {}: field {} is empty", i + 1, j + 1);
            }
            let v: f32 = f.parse().map_err(|_| {
                anyhow::anyhow!("line {}: field {} ({f:?}) is not a number", i + 1, j + 1)
            })?;
            ensure!(
                v.is_finite(),
                "line {}: field {} ({f}) is not a finite number",
                i + 1,
                j + 1
            );
            row.push(v);
        }
        if let Some(first) = rows.first() {
            ensure!(
                row.len() == first.len(),
                "line {} has {} fields, the first row has {} (rows must all be the same length)",
                i + 1,
                row.len(),
                first.len()
            );
        }
        rows.push(row);
    }
    ensure!(!rows.is_empty(), "no data rows");
    Ok(Table { rows })
}

/// Options of `recur fit`.
#[derive(Clone, Debug, PartialEq)]
pub struct FitOptions {
    pub cell: String,
    pub hidden: usize,
    pub batch: usize,
    pub epochs: usize,
    pub lr: f32,
    pub seed: u64,
    /// Forecasting window (values per input sequence).
    pub window: usize,
    pub backend: Backend,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            cell: "lstm".into(),
            hidden: 32,
            batch: 16,
            epochs: 20,
            lr: 0.01,
            seed: 0,
            window: 16,
            backend: Backend::Gpu,
        }
    }
}

/// The outcome of a fit.
#[derive(Clone, Debug, PartialEq)]
pub enum FitReport {
    Classifier {
        classes: Vec<f32>,
        train_loss: f32,
        test_accuracy: f32,
        test_count: usize,
    },
    Forecaster {
        train_loss: f32,
        /// Root mean squared error of one-step forecasts, in the data's units.
        test_rmse: f32,
        /// The same error for the naive forecast (the last value), for comparison.
        naive_rmse: f32,
        test_count: usize,
    },
}

/// Examples as sequences of one feature and their targets.
struct Examples {
    seqs: Vec<Vec<f32>>,
    targets: Vec<f32>,
}

fn make_trainer(
    spec: ModelSpec,
    opts: &FitOptions,
    steps: usize,
    gpu: Option<&Gpu>,
) -> Result<Box<dyn Trainer>> {
    let model = SequenceModel::new(spec, opts.seed)?;
    let cfg = TrainConfig {
        batch: opts.batch,
        steps,
        optim: OptimConfig {
            optimizer: Optimizer::adam(opts.lr),
            clip: Some(1.0),
            schedule: Schedule::Constant,
        },
        stateful: false,
    };
    Ok(match (opts.backend, gpu) {
        (Backend::Gpu, Some(gpu)) => Box::new(GpuTrainer::new(gpu, model, cfg)?),
        (Backend::Gpu, None) => bail!("the GPU backend needs a GPU (or use --backend cpu)"),
        (Backend::Cpu, _) => Box::new(CpuTrainer::new(model, cfg)?),
    })
}

/// A time-major batch of the examples at `idx`.
fn batch_of(ex: &Examples, idx: &[usize], classes: bool) -> Batch {
    let steps = ex.seqs[0].len();
    let b = idx.len();
    let mut inputs = vec![0.0f32; steps * b];
    for (j, &i) in idx.iter().enumerate() {
        for (t, &v) in ex.seqs[i].iter().enumerate() {
            inputs[t * b + j] = v;
        }
    }
    let targets = if classes {
        Targets::Classes(idx.iter().map(|&i| ex.targets[i] as u32).collect())
    } else {
        Targets::Values(idx.iter().map(|&i| ex.targets[i]).collect())
    };
    Batch {
        batch: b,
        steps,
        inputs: Inputs::Values(inputs),
        targets,
        lengths: None,
    }
}

/// Trains for `opts.epochs` passes (shuffled from the seed) and returns the mean loss of
/// the last epoch.
fn train_epochs(
    t: &mut dyn Trainer,
    ex: &Examples,
    opts: &FitOptions,
    classes: bool,
    mut on_epoch: impl FnMut(usize, f32),
) -> Result<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed);
    let n = ex.seqs.len();
    let per_epoch = n.div_ceil(opts.batch);
    let mut last = f32::NAN;
    for epoch in 1..=opts.epochs {
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        // A last partial batch is filled from the start of the order.
        let mut sum = 0.0;
        for k in 0..per_epoch {
            let idx: Vec<usize> = (0..opts.batch)
                .map(|j| order[(k * opts.batch + j) % n])
                .collect();
            sum += t.step(&batch_of(ex, &idx, classes))?;
        }
        last = sum / per_epoch as f32;
        on_epoch(epoch, last);
    }
    Ok(last)
}

/// The predictions for every example (batches padded by repeating the last example).
fn predict_all(
    t: &mut dyn Trainer,
    ex: &Examples,
    batch: usize,
    classes: bool,
) -> Result<Vec<Vec<f32>>> {
    let n = ex.seqs.len();
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(batch) {
        let idx: Vec<usize> = (0..batch).map(|j| (start + j).min(n - 1)).collect();
        let y = t.predict(&batch_of(ex, &idx, classes))?;
        let width = y.len() / batch;
        for j in 0..batch.min(n - start) {
            out.push(y[j * width..(j + 1) * width].to_vec());
        }
    }
    Ok(out)
}

fn check_batch(opts: &FitOptions, n: usize) -> Result<()> {
    ensure!(
        opts.batch > 0 && opts.epochs > 0,
        "--batch and --epochs must be > 0"
    );
    ensure!(
        opts.batch <= n,
        "a batch of {} is larger than the {n} training examples",
        opts.batch
    );
    Ok(())
}

/// Trains a many-to-one classifier on `train` (label first in each row) and reports its
/// accuracy on `test`.
pub fn fit_classifier(
    train: &Table,
    test: &Table,
    opts: &FitOptions,
    gpu: Option<&Gpu>,
    on_epoch: impl FnMut(usize, f32),
) -> Result<FitReport> {
    let width = train.rows[0].len();
    ensure!(
        width >= 2,
        "classification rows need a label and at least one value; for a single-column \
         series use forecasting"
    );
    ensure!(
        test.rows[0].len() == width,
        "test rows have {} fields, training rows {width}",
        test.rows[0].len()
    );
    let mut classes: Vec<f32> = train.rows.iter().map(|r| r[0]).collect();
    classes.sort_by(f32::total_cmp);
    classes.dedup();
    ensure!(
        classes.len() >= 2,
        "the training file has a single class ({})",
        classes[0]
    );
    let examples = |t: &Table, what: &str| -> Result<Examples> {
        let mut ex = Examples {
            seqs: Vec::new(),
            targets: Vec::new(),
        };
        for (i, r) in t.rows.iter().enumerate() {
            let c = classes.iter().position(|&c| c == r[0]).with_context(|| {
                format!(
                    "{what} row {}: label {} is not a training class",
                    i + 1,
                    r[0]
                )
            })?;
            ex.seqs.push(r[1..].to_vec());
            ex.targets.push(c as f32);
        }
        Ok(ex)
    };
    let (tr, te) = (examples(train, "training")?, examples(test, "test")?);
    check_batch(opts, tr.seqs.len())?;
    let spec = ModelSpec {
        embedding: None,
        input_size: 1,
        cell: opts.cell.clone(),
        hidden_size: opts.hidden,
        num_layers: 1,
        bidirectional: false,
        outputs: classes.len(),
        head: Head::LastStep,
        loss: Loss::CrossEntropy { ignore_index: None },
        dropout: Default::default(),
    };
    let mut t = make_trainer(spec, opts, width - 1, gpu)?;
    let train_loss = train_epochs(t.as_mut(), &tr, opts, true, on_epoch)?;
    let preds = predict_all(t.as_mut(), &te, opts.batch, true)?;
    let correct = preds
        .iter()
        .zip(&te.targets)
        .filter(|(p, &c)| {
            let best = p
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i);
            best == c as usize
        })
        .count();
    Ok(FitReport::Classifier {
        classes,
        train_loss,
        test_accuracy: correct as f32 / te.seqs.len() as f32,
        test_count: te.seqs.len(),
    })
}

/// Trains a one-step forecaster on a single-column `train` series and reports the error
/// of its forecasts over `test`.
pub fn fit_forecaster(
    train: &Table,
    test: &Table,
    opts: &FitOptions,
    gpu: Option<&Gpu>,
    on_epoch: impl FnMut(usize, f32),
) -> Result<FitReport> {
    for (t, what) in [(train, "training"), (test, "test")] {
        ensure!(
            t.rows[0].len() == 1,
            "forecasting takes a single column; the {what} file has {} per row",
            t.rows[0].len()
        );
    }
    let w = opts.window;
    ensure!(w > 0, "--window must be > 0");
    let series = |t: &Table| -> Vec<f32> { t.rows.iter().map(|r| r[0]).collect() };
    let (s_train, s_test) = (series(train), series(test));
    for (s, what) in [(&s_train, "training"), (&s_test, "test")] {
        ensure!(
            s.len() > w,
            "the {what} series has {} values: too few for a window of {w} and a next value",
            s.len()
        );
    }
    let n = s_train.len() as f64;
    let mean = s_train.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = s_train
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    let std = var.sqrt().max(1e-12);
    let norm = |v: f32| ((v as f64 - mean) / std) as f32;
    let windows = |s: &[f32]| -> Examples {
        let mut ex = Examples {
            seqs: Vec::new(),
            targets: Vec::new(),
        };
        for i in 0..s.len() - w {
            ex.seqs.push(s[i..i + w].iter().map(|&v| norm(v)).collect());
            ex.targets.push(norm(s[i + w]));
        }
        ex
    };
    let (tr, te) = (windows(&s_train), windows(&s_test));
    check_batch(opts, tr.seqs.len())?;
    let spec = ModelSpec {
        embedding: None,
        input_size: 1,
        cell: opts.cell.clone(),
        hidden_size: opts.hidden,
        num_layers: 1,
        bidirectional: false,
        outputs: 1,
        head: Head::LastStep,
        loss: Loss::MeanSquaredError,
        dropout: Default::default(),
    };
    let mut t = make_trainer(spec, opts, w, gpu)?;
    let train_loss = train_epochs(t.as_mut(), &tr, opts, false, on_epoch)?;
    let preds = predict_all(t.as_mut(), &te, opts.batch, false)?;
    let (mut se, mut naive) = (0.0f64, 0.0f64);
    for (i, p) in preds.iter().enumerate() {
        let truth = s_test[i + w] as f64;
        let forecast = p[0] as f64 * std + mean;
        se += (forecast - truth).powi(2);
        naive += (s_test[i + w - 1] as f64 - truth).powi(2);
    }
    let m = preds.len() as f64;
    Ok(FitReport::Forecaster {
        train_loss,
        test_rmse: (se / m).sqrt() as f32,
        naive_rmse: (naive / m).sqrt() as f32,
        test_count: preds.len(),
    })
}
