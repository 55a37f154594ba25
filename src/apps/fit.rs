//! `recur fit`: a many-to-one classifier or a one-step forecaster trained from data files.
//!
//! - Classification (UCR/UEA style): one sequence per line, the label first, then the
//!   values, separated by commas or tabs (or else spaces). Every row has the same length. Labels are
//!   numbers; the classes are the distinct training labels, sorted.
//! - Forecasting: a single column, one value per line. Windows of `window` values predict
//!   the next value; values are standardised with the training mean and deviation.
//!
//! The model is a recurrent stack (stacked, bidirectional and with dropout as asked) over one
//! feature per step with a dense head on its last step: softmax cross-entropy for classes,
//! mean squared error for forecasts.
//!
//! A fitted model ([`FitModel`]) is a [`Checkpoint`] whose metadata holds, under `fit`, what
//! reading its outputs needs ([`FitTask`]: the class labels or the window and scaling), so a
//! saved model reports the same test figures when loaded.

use std::path::Path;

use crate::error::{bail, ensure, err, Result, ResultExt};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::memory::Budget;
use crate::ops::optim::OptimConfig;
use crate::ops::optim::Optimizer;
use crate::ops::recurrent::CellKind;
use crate::ops::schedule::Schedule;
use crate::train::checkpoint::Checkpoint;
use crate::train::distributed::{check_shards, Ranks};
use crate::train::footprint::{Footprint, RunShape};
use crate::train::model::{
    Batch, DropoutRates, Head, Inputs, Loss, ModelSpec, SequenceModel, Targets,
};
use crate::train::trainer::{TrainConfig, Trainer};

/// Rows of numbers read from a data file.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// The rows in file order, all the same length (at least one).
    pub rows: Vec<Vec<f32>>,
}

/// Reads a table of numbers: every row the same length, every field a finite number.
pub fn read_table(path: &Path) -> Result<Table> {
    let bytes = crate::io::read_file(path, "data file")?;
    let text = String::from_utf8(bytes)
        .map_err(|_| err!(Format, "{} is not a UTF-8 text file", path.display()))?;
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
                    bail!(
                        Format,
                        "line {}: the first field (the label) is missing",
                        i + 1
                    );
                }
                bail!(Format, "line {}: field {} is empty", i + 1, j + 1);
            }
            let v: f32 = f.parse().map_err(|_| {
                err!(
                    Format,
                    "line {}: field {} ({f:?}) is not a number",
                    i + 1,
                    j + 1
                )
            })?;
            ensure!(
                v.is_finite(),
                Format,
                "line {}: field {} ({f}) is not a finite number",
                i + 1,
                j + 1
            );
            row.push(v);
        }
        if let Some(first) = rows.first() {
            ensure!(
                row.len() == first.len(),
                Format,
                "line {} has {} fields, the first row has {} (rows must all be the same length)",
                i + 1,
                row.len(),
                first.len()
            );
        }
        rows.push(row);
    }
    ensure!(!rows.is_empty(), Format, "no data rows");
    Ok(Table { rows })
}

/// Options of `recur fit`.
#[derive(Clone, Debug, PartialEq)]
pub struct FitOptions {
    /// The recurrent cell (default LSTM).
    pub cell: CellKind,
    /// Hidden units per layer and direction (default 32).
    pub hidden: usize,
    /// Stacked recurrent layers.
    pub layers: usize,
    /// Whether every layer reads the sequence both ways (default false).
    pub bidirectional: bool,
    /// Sequences per batch (default 16).
    pub batch: usize,
    /// Passes over the training data, shuffled each time (default 20).
    pub epochs: usize,
    /// Adam learning rate, constant; gradients are clipped to norm 1 (default 0.01).
    pub lr: f32,
    /// Seed of the initialisation, the shuffles and the dropout masks (default 0).
    pub seed: u64,
    /// Forecasting window (values per input sequence).
    pub window: usize,
    /// Dropout on the values the first layer reads (Keras `dropout`).
    pub input_dropout: f32,
    /// Dropout between stacked layers (PyTorch's `dropout`; needs `layers > 1`).
    pub dropout: f32,
    /// Dropout on the state the recurrent product reads (Keras `recurrent_dropout`).
    pub recurrent_dropout: f32,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            cell: CellKind::Lstm,
            hidden: 32,
            layers: 1,
            bidirectional: false,
            batch: 16,
            epochs: 20,
            lr: 0.01,
            seed: 0,
            window: 16,
            input_dropout: 0.0,
            dropout: 0.0,
            recurrent_dropout: 0.0,
        }
    }
}

impl FitOptions {
    /// Checks every option that does not depend on the data, naming a bad one by its
    /// field (`hidden 0 is invalid`; the command line adds its flag).
    pub fn validate(&self) -> Result<()> {
        for (field, value, expected) in [
            ("hidden", self.hidden, "a hidden size of at least 1"),
            ("layers", self.layers, "at least 1 layer"),
            ("batch", self.batch, "at least 1 sequence per batch"),
            ("epochs", self.epochs, "at least 1 epoch"),
            ("window", self.window, "at least 1 value per window"),
        ] {
            ensure!(
                value > 0,
                Invalid,
                "{field} {value} is invalid: expected {expected}"
            );
        }
        self.dropout_rates().validate()?;
        self.optim().validate()?;
        // The smallest model these options can make (one output, one step): a hidden size
        // or a stack beyond memory is refused before any file is read.
        let smallest = FitTask::Forecaster {
            window: 1,
            mean: 0.0,
            std: 1.0,
        };
        let run = RunShape {
            batch: self.batch,
            steps: 1,
        };
        Footprint::of(&self.model_spec(&smallest))?.check_host(Some(run), true, &Budget::host())
    }

    fn dropout_rates(&self) -> DropoutRates {
        DropoutRates {
            input: self.input_dropout,
            between_layers: self.dropout,
            recurrent: self.recurrent_dropout,
            seed: self.seed,
        }
    }

    fn optim(&self) -> OptimConfig {
        OptimConfig {
            optimizer: Optimizer::adam(self.lr),
            clip: Some(1.0),
            schedule: Schedule::Constant,
        }
    }

    /// The model for `task`: one feature per step, the dense head on the last step.
    fn model_spec(&self, task: &FitTask) -> ModelSpec {
        ModelSpec {
            embedding: None,
            input_size: 1,
            cell: self.cell,
            hidden_size: self.hidden,
            num_layers: self.layers,
            bidirectional: self.bidirectional,
            outputs: task.outputs(),
            head: Head::LastStep,
            loss: task.loss(),
            dropout: self.dropout_rates(),
        }
    }
}

/// The test figures of a fitted model (the same after training and for the saved model).
#[derive(Clone, Debug, PartialEq)]
pub enum FitReport {
    /// A classifier's figures.
    Classifier {
        /// The class labels, sorted (output unit `i` is `classes[i]`).
        classes: Vec<f32>,
        /// Share of test sequences classified correctly, in `[0, 1]`.
        test_accuracy: f32,
        /// Test sequences.
        test_count: usize,
    },
    /// A forecaster's figures.
    Forecaster {
        /// Root mean squared error of one-step forecasts, in the data's units.
        test_rmse: f32,
        /// The same error for the naive forecast (the last value), for comparison.
        naive_rmse: f32,
        /// One-step forecasts made: the test series' length less the window.
        test_count: usize,
    },
}

/// What a fitted model predicts and how its outputs read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum FitTask {
    /// Output unit `i` is the training label `classes[i]` (sorted); rows hold the label and
    /// `steps` values.
    Classifier {
        /// The distinct training labels, sorted.
        #[serde(with = "labels_as_f64")]
        classes: Vec<f32>,
        /// Values per sequence (every row's length less the label).
        steps: usize,
    },
    /// Windows of `window` values, standardised as `(v - mean) / std` with the training
    /// series' mean and deviation, predict the next value.
    Forecaster {
        /// Values per input window.
        window: usize,
        /// The training series' mean.
        mean: f64,
        /// The training series' standard deviation.
        std: f64,
    },
}

/// Labels kept as f64, which holds every f32 exactly, so they read back bit for bit
/// (serde_json writes an f32 as its shortest f32 decimal, which then rounds twice).
mod labels_as_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[f32], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|&x| x as f64))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
        Ok(Vec::<f64>::deserialize(d)?
            .into_iter()
            .map(|x| x as f32)
            .collect())
    }
}

impl FitTask {
    fn outputs(&self) -> usize {
        match self {
            Self::Classifier { classes, .. } => classes.len(),
            Self::Forecaster { .. } => 1,
        }
    }

    fn loss(&self) -> Loss {
        match self {
            Self::Classifier { .. } => Loss::CrossEntropy { ignore_index: None },
            Self::Forecaster { .. } => Loss::MeanSquaredError,
        }
    }

    /// Time steps per input sequence.
    fn steps(&self) -> usize {
        match self {
            Self::Classifier { steps, .. } => *steps,
            Self::Forecaster { window, .. } => *window,
        }
    }

    /// The examples of a data file (`what`: "training" or "test"), checked against the task.
    fn examples(&self, t: &Table, what: &str) -> Result<Examples> {
        match self {
            Self::Classifier { classes, steps } => class_examples(t, classes, *steps, what),
            Self::Forecaster { window, mean, std } => {
                let s = single_column(t, what)?;
                ensure!(
                    s.len() > *window,
                    Shape,
                    "the {what} series has {} values: too few for a window of {window} and a \
                     next value",
                    s.len()
                );
                let norm = |v: f32| ((v as f64 - mean) / std) as f32;
                Ok(Examples {
                    seqs: (0..s.len() - window)
                        .map(|i| s[i..i + window].iter().map(|&v| norm(v)).collect())
                        .collect(),
                    targets: s[*window..].iter().map(|&v| norm(v)).collect(),
                    classes: false,
                })
            }
        }
    }

    /// The report from the predictions for the test examples `ex` of `test`.
    fn report(&self, preds: &[Vec<f32>], ex: &Examples, test: &Table) -> FitReport {
        match self {
            Self::Classifier { classes, .. } => {
                let correct = preds
                    .iter()
                    .zip(&ex.targets)
                    .filter(|(p, &c)| argmax(p) == c as usize)
                    .count();
                FitReport::Classifier {
                    classes: classes.clone(),
                    test_accuracy: correct as f32 / preds.len() as f32,
                    test_count: preds.len(),
                }
            }
            Self::Forecaster { window, mean, std } => {
                let s: Vec<f32> = test.rows.iter().map(|r| r[0]).collect();
                let (mut se, mut naive) = (0.0f64, 0.0f64);
                for (i, p) in preds.iter().enumerate() {
                    let truth = s[i + window] as f64;
                    let forecast = p[0] as f64 * std + mean;
                    se += (forecast - truth).powi(2);
                    naive += (s[i + window - 1] as f64 - truth).powi(2);
                }
                let m = preds.len() as f64;
                FitReport::Forecaster {
                    test_rmse: (se / m).sqrt() as f32,
                    naive_rmse: (naive / m).sqrt() as f32,
                    test_count: preds.len(),
                }
            }
        }
    }

    /// Checks the task against the model it reads and against itself (a loaded file).
    fn check(&self, spec: &ModelSpec) -> Result<()> {
        ensure!(
            spec.embedding.is_none() && spec.input_size == 1 && spec.head == Head::LastStep,
            Invalid,
            "the model (embedding: {}, {} input features, head {:?}) is not a fit model: \
             expected no embedding, 1 input feature and head LastStep",
            spec.embedding.is_some(),
            spec.input_size,
            spec.head
        );
        ensure!(
            spec.loss == self.loss() && spec.outputs == self.outputs(),
            Format,
            "the model's outputs ({}) and loss ({}) do not match its {} metadata (expected {} \
             and {})",
            spec.outputs,
            loss_name(spec.loss),
            self.name(),
            self.outputs(),
            loss_name(self.loss())
        );
        ensure!(
            self.steps() > 0,
            Shape,
            "{} values per sequence: expected at least 1",
            self.steps()
        );
        match self {
            Self::Classifier { classes, .. } => ensure!(
                classes.len() >= 2
                    && classes.iter().all(|c| c.is_finite())
                    && classes.windows(2).all(|w| w[0] < w[1]),
                Format,
                "class labels {classes:?} are invalid: expected two or more finite labels, \
                 sorted and distinct"
            ),
            Self::Forecaster { mean, std, .. } => ensure!(
                mean.is_finite() && std.is_finite() && *std > 0.0,
                Format,
                "scaling mean {mean}, deviation {std} is invalid: expected finite values, \
                 the deviation > 0"
            ),
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Classifier { .. } => "classifier",
            Self::Forecaster { .. } => "forecaster",
        }
    }
}

fn loss_name(loss: Loss) -> &'static str {
    match loss {
        Loss::CrossEntropy { .. } => "cross-entropy",
        Loss::MeanSquaredError => "mean-squared-error",
    }
}

fn argmax(p: &[f32]) -> usize {
    p.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

/// A classification file's examples: rows of a label (one of `classes`) and `steps` values.
fn class_examples(t: &Table, classes: &[f32], steps: usize, what: &str) -> Result<Examples> {
    let width = t.rows[0].len();
    ensure!(
        width >= 2,
        Shape,
        "classification rows need a label and at least one value; for a single-column \
         series use forecasting"
    );
    ensure!(
        width == steps + 1,
        Shape,
        "{what} rows have {width} fields, the model's {} (a label and {steps} values)",
        steps + 1
    );
    let mut ex = Examples {
        seqs: Vec::new(),
        targets: Vec::new(),
        classes: true,
    };
    for (i, r) in t.rows.iter().enumerate() {
        let c = classes.iter().position(|&c| c == r[0]).ok_or_else(|| {
            err!(
                Invalid,
                "{what} row {}: label {} is not a training class",
                i + 1,
                r[0]
            )
        })?;
        ex.seqs.push(r[1..].to_vec());
        ex.targets.push(c as f32);
    }
    Ok(ex)
}

/// The values of a single-column file.
fn single_column(t: &Table, what: &str) -> Result<Vec<f32>> {
    ensure!(
        t.rows[0].len() == 1,
        Invalid,
        "forecasting takes a single column; the {what} file has {} per row",
        t.rows[0].len()
    );
    Ok(t.rows.iter().map(|r| r[0]).collect())
}

/// A trained model and what reading its outputs needs; saved as one checkpoint file.
#[derive(Clone, Debug, PartialEq)]
pub struct FitModel {
    /// The model's spec (dropout rates included), parameters and optimizer state.
    pub checkpoint: Checkpoint,
    /// What the outputs mean: the class labels, or the window and scaling.
    pub task: FitTask,
    /// The batch predictions run in: the training batch, so a loaded model computes the
    /// same batches, and the same bits, as the model right after training.
    pub batch: usize,
}

/// The checkpoint metadata key holding a [`FitMeta`] (JSON).
const META_KEY: &str = "fit";

#[derive(Serialize, Deserialize)]
struct FitMeta {
    #[serde(flatten)]
    task: FitTask,
    batch: usize,
}

impl FitModel {
    /// Writes the model as a checkpoint (atomically), with the task in its metadata.
    pub fn save(&self, path: &Path) -> Result<()> {
        let meta = FitMeta {
            task: self.task.clone(),
            batch: self.batch,
        };
        let mut ckpt = self.checkpoint.clone();
        ckpt.meta
            .insert(META_KEY.into(), serde_json::to_string(&meta)?);
        ckpt.save(path)
    }

    /// Reads a model written by [`Self::save`], checking it is one.
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_bytes(&crate::io::read_file(path, "model file")?, path)
    }

    /// A model from a file's bytes (`path` names it in messages), checked as [`Self::load`]
    /// checks it.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let mut checkpoint = Checkpoint::from_bytes(bytes, path)?;
        // Kept as `task` and `batch` here; `save` writes them back.
        let json = checkpoint.meta.remove(META_KEY).ok_or_else(|| {
            err!(
                Format,
                "{} is a recur checkpoint but not a `recur fit` model (no `{META_KEY}` \
                 metadata; expected a file written by `recur fit --out`)",
                path.display()
            )
        })?;
        let meta: FitMeta = serde_json::from_str(&json).with_context(|| {
            format!("{}: the `{META_KEY}` metadata is not valid", path.display())
        })?;
        ensure!(
            meta.batch > 0,
            Invalid,
            "{}: batch {} is invalid: expected at least 1",
            path.display(),
            meta.batch
        );
        meta.task
            .check(&checkpoint.spec)
            .with_context(|| format!("{} is not a usable `recur fit` model", path.display()))?;
        // The batch and steps come from the file too: checked before a trainer is made.
        let run = RunShape {
            batch: meta.batch,
            steps: meta.task.steps(),
        };
        Footprint::of(&checkpoint.spec)?
            .check_host(Some(run), true, &Budget::host())
            .with_context(|| format!("{}: the model cannot run here", path.display()))?;
        Ok(Self {
            checkpoint,
            task: meta.task,
            batch: meta.batch,
        })
    }

    /// The model's figures on `test`, computed on `backend`.
    pub fn test(&self, test: &Table, backend: &Backend) -> Result<FitReport> {
        let ex = self.task.examples(test, "test")?;
        // A trainer needs an optimizer; prediction never steps it.
        let optim = FitOptions::default().optim();
        let model = self.checkpoint.model()?;
        let mut t = Trainer::new(backend, model, TrainConfig::new(optim))?;
        self.report(&mut t, &ex, test)
    }

    fn report(&self, t: &mut Trainer, ex: &Examples, test: &Table) -> Result<FitReport> {
        let preds = predict_all(t, ex, self.batch)?;
        Ok(self.task.report(&preds, ex, test))
    }
}

/// A fit: the model, the mean training loss of its last epoch, its test figures.
#[derive(Clone, Debug, PartialEq)]
pub struct Fit {
    /// The trained model, ready to save.
    pub model: FitModel,
    /// Mean loss of the last epoch: cross-entropy in nats, or the squared error of the
    /// standardised values.
    pub train_loss: f32,
    /// The model's figures on the test data.
    pub report: FitReport,
}

/// Examples as sequences of one feature and their targets (class indices or values).
struct Examples {
    seqs: Vec<Vec<f32>>,
    targets: Vec<f32>,
    classes: bool,
}

/// A time-major batch of the examples at `idx`.
fn batch_of(ex: &Examples, idx: &[usize]) -> Batch {
    let steps = ex.seqs[0].len();
    let b = idx.len();
    let mut inputs = vec![0.0f32; steps * b];
    for (j, &i) in idx.iter().enumerate() {
        for (t, &v) in ex.seqs[i].iter().enumerate() {
            inputs[t * b + j] = v;
        }
    }
    let targets = if ex.classes {
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
    t: &mut Trainer,
    ex: &Examples,
    opts: &FitOptions,
    ranks: &Ranks,
    mut on_epoch: impl FnMut(usize, f32),
) -> Result<f32> {
    // Every rank draws the same order; each trains on its share of every batch.
    let share = ranks.share(opts.batch);
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
            let idx: Vec<usize> = share
                .clone()
                .map(|j| order[(k * opts.batch + j) % n])
                .collect();
            sum += t.step(&batch_of(ex, &idx))?;
        }
        last = sum / per_epoch as f32;
        if ranks.is_root() {
            on_epoch(epoch, last);
        }
    }
    Ok(last)
}

/// The predictions for every example (batches padded by repeating the last example).
fn predict_all(t: &mut Trainer, ex: &Examples, batch: usize) -> Result<Vec<Vec<f32>>> {
    let n = ex.seqs.len();
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(batch) {
        let idx: Vec<usize> = (0..batch).map(|j| (start + j).min(n - 1)).collect();
        let y = t.predict(&batch_of(ex, &idx))?;
        let width = y.len() / batch;
        for j in 0..batch.min(n - start) {
            out.push(y[j * width..(j + 1) * width].to_vec());
        }
    }
    Ok(out)
}

/// Trains a model for `task` on `train` and reports its figures on `test` (both files are
/// checked before training).
fn fit_task(
    task: FitTask,
    (train, test): (&Table, &Table),
    opts: &FitOptions,
    backend: &Backend,
    ranks: &Ranks,
    on_epoch: impl FnMut(usize, f32),
) -> Result<Fit> {
    let (tr, te) = (
        task.examples(train, "training")?,
        task.examples(test, "test")?,
    );
    ensure!(
        opts.batch <= tr.seqs.len(),
        Shape,
        "a batch of {} is larger than the {} training examples",
        opts.batch,
        tr.seqs.len()
    );
    check_shards("sequences per batch", opts.batch, ranks.count())?;
    let spec = opts.model_spec(&task);
    // Each rank runs its share of every batch (at most this many sequences).
    let run = RunShape {
        batch: opts.batch.div_ceil(ranks.count()),
        steps: task.steps(),
    };
    // Checked before the model's parameters are drawn.
    let footprint = Footprint::of(&spec)?;
    footprint.check_host(Some(run), matches!(backend, Backend::Cpu), &Budget::host())?;
    if let Backend::Gpu(gpu) = backend {
        footprint.check_device(run, &Budget::device_buffer(gpu))?;
    }
    let model = SequenceModel::new(spec, opts.seed)?;
    let mut t = Trainer::new(backend, model, TrainConfig::new(opts.optim()))?;
    ranks.attach(&mut t)?;
    let train_loss = train_epochs(&mut t, &tr, opts, ranks, on_epoch)?;
    let model = FitModel {
        checkpoint: t.checkpoint()?,
        task,
        batch: opts.batch,
    };
    let report = model.report(&mut t, &te, test)?;
    Ok(Fit {
        model,
        train_loss,
        report,
    })
}

/// Trains a many-to-one classifier on `train` (label first in each row) and reports its
/// accuracy on `test`.
pub fn fit_classifier(
    train: &Table,
    test: &Table,
    opts: &FitOptions,
    backend: &Backend,
    on_epoch: impl FnMut(usize, f32),
) -> Result<Fit> {
    fit_classifier_on(train, test, opts, backend, &Ranks::local(), on_epoch)
}

/// [`fit_classifier`] on the ranks of a data-parallel job: every rank reads the same data
/// and trains on its share of each batch of `opts.batch` (the global batch), so N ranks
/// train what one process does; `on_epoch` is called on rank 0 only.
pub fn fit_classifier_on(
    train: &Table,
    test: &Table,
    opts: &FitOptions,
    backend: &Backend,
    ranks: &Ranks,
    on_epoch: impl FnMut(usize, f32),
) -> Result<Fit> {
    opts.validate()?;
    let mut classes: Vec<f32> = train.rows.iter().map(|r| r[0]).collect();
    classes.sort_by(f32::total_cmp);
    classes.dedup();
    ensure!(
        classes.len() >= 2,
        Invalid,
        "the training file has a single class ({})",
        classes[0]
    );
    let steps = train.rows[0].len().saturating_sub(1);
    fit_task(
        FitTask::Classifier { classes, steps },
        (train, test),
        opts,
        backend,
        ranks,
        on_epoch,
    )
}

/// Trains a one-step forecaster on a single-column `train` series and reports the error
/// of its forecasts over `test`.
pub fn fit_forecaster(
    train: &Table,
    test: &Table,
    opts: &FitOptions,
    backend: &Backend,
    on_epoch: impl FnMut(usize, f32),
) -> Result<Fit> {
    fit_forecaster_on(train, test, opts, backend, &Ranks::local(), on_epoch)
}

/// [`fit_forecaster`] on the ranks of a data-parallel job (as [`fit_classifier_on`]).
pub fn fit_forecaster_on(
    train: &Table,
    test: &Table,
    opts: &FitOptions,
    backend: &Backend,
    ranks: &Ranks,
    on_epoch: impl FnMut(usize, f32),
) -> Result<Fit> {
    opts.validate()?;
    let s = single_column(train, "training")?;
    let n = s.len() as f64;
    let mean = s.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = s.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let task = FitTask::Forecaster {
        window: opts.window,
        mean,
        std: var.sqrt().max(1e-12),
    };
    fit_task(task, (train, test), opts, backend, ranks, on_epoch)
}
