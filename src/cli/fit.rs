//! `recur fit`: a many-to-one classifier (UCR/UEA-style rows, label first) or a one-step
//! forecaster (a single-column series) from data files, optionally saved (`--out`); or a
//! saved model tested on a file (`--model`). The work is in `apps::fit`.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Result};

use super::distributed::Job;
use super::BackendArg;

use crate::apps::fit::{self, FitModel, FitOptions, FitReport};
use crate::train::distributed::check_shards;

#[derive(clap::Args)]
pub struct FitArgs {
    /// Training data: one sequence per line, label first (classification), or one value per
    /// line (forecasting).
    #[arg(long)]
    train: Option<PathBuf>,
    /// Test data in the same format: accuracy or forecast error is reported on it.
    #[arg(long)]
    test: PathBuf,
    /// A model saved by `recur fit --out`, tested on --test instead of training one (it
    /// brings its own training options: they conflict with this).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Save the trained model (one checkpoint file) for `recur fit --model`.
    #[arg(long, conflicts_with = "model")]
    out: Option<PathBuf>,
    /// auto: a hardware GPU if there is one, else the CPU.
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendArg,
    /// Recurrent cell: lstm, gru, gru-reset-before, rnn-tanh, rnn-relu.
    #[arg(long, default_value = "lstm", conflicts_with = "model")]
    cell: crate::ops::recurrent::CellKind,
    /// Units per recurrent layer.
    #[arg(long, default_value_t = FitOptions::default().hidden, conflicts_with = "model")]
    hidden: usize,
    /// Stacked recurrent layers.
    #[arg(long, default_value_t = FitOptions::default().layers, conflicts_with = "model")]
    layers: usize,
    /// Read each sequence both ways (the head sees both directions' outputs).
    #[arg(long, conflicts_with = "model")]
    bidirectional: bool,
    /// Sequences per batch.
    #[arg(long, default_value_t = FitOptions::default().batch, conflicts_with = "model")]
    batch: usize,
    /// Passes over the training rows.
    #[arg(long, default_value_t = FitOptions::default().epochs, conflicts_with = "model")]
    epochs: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = FitOptions::default().lr, conflicts_with = "model")]
    lr: f32,
    /// Forecasting: values per input window.
    #[arg(long, default_value_t = FitOptions::default().window, conflicts_with = "model")]
    window: usize,
    /// Dropout on the values the first layer reads (Keras `dropout`).
    #[arg(long, default_value_t = 0.0, conflicts_with = "model")]
    input_dropout: f32,
    /// Dropout between stacked layers (PyTorch's `dropout`; needs --layers > 1).
    #[arg(long, default_value_t = 0.0, conflicts_with = "model")]
    dropout: f32,
    /// Dropout on the recurrent state, one mask per sequence (Keras `recurrent_dropout`).
    #[arg(long, default_value_t = 0.0, conflicts_with = "model")]
    recurrent_dropout: f32,
    /// Seed of the initial weights, the batch order and the dropout masks.
    #[arg(long, default_value_t = 0, conflicts_with = "model")]
    seed: u64,
    /// Train data-parallel on the ranks of the MPI job this was started in (`mpirun -np N`,
    /// `srun`; needs a build with `--features mpi`): each rank reads both files and trains
    /// on its share of every batch of --batch; rank 0 prints and saves.
    #[arg(long, conflicts_with = "model")]
    distributed: bool,
}

impl FitArgs {
    /// The options that size the model, as given.
    fn size_flags(&self) -> String {
        format!(
            "--hidden {} --layers {}{} --batch {}",
            self.hidden,
            self.layers,
            if self.bidirectional {
                " --bidirectional"
            } else {
                ""
            },
            self.batch
        )
    }

    fn options(&self) -> FitOptions {
        FitOptions {
            cell: self.cell,
            hidden: self.hidden,
            layers: self.layers,
            bidirectional: self.bidirectional,
            batch: self.batch,
            epochs: self.epochs,
            lr: self.lr,
            seed: self.seed,
            window: self.window,
            input_dropout: self.input_dropout,
            dropout: self.dropout,
            recurrent_dropout: self.recurrent_dropout,
        }
    }
}

pub fn run(args: FitArgs) -> Result<()> {
    match (&args.train, &args.model) {
        (Some(train), None) => {
            let job = Job::join(args.distributed)?;
            let result = train_and_test(&args, train, &job);
            job.finish(result)
        }
        (None, Some(model)) => test_saved(&args, model),
        (Some(train), Some(model)) => bail!(
            "--train {} and --model {} were both given: expected --train to fit a new model, \
             or --model to test a saved one",
            train.display(),
            model.display()
        ),
        (None, None) => {
            bail!("no model: expected --train FILE to fit one, or --model FILE to test a saved one")
        }
    }
}

/// `FitOptions`' fields and their flags.
const FLAGS: [(&str, &str); 10] = [
    ("hidden", "--hidden"),
    ("layers", "--layers"),
    ("batch", "--batch"),
    ("epochs", "--epochs"),
    ("Adam lr", "--lr"),
    ("learning rate lr", "--lr"),
    ("window", "--window"),
    super::DROPOUT_FLAGS[0],
    super::DROPOUT_FLAGS[1],
    super::DROPOUT_FLAGS[2],
];

fn train_and_test(args: &FitArgs, train_path: &Path, job: &Job) -> Result<()> {
    let opts = args.options();
    // Every option and both files are checked before a device is opened or training starts.
    opts.validate()
        .map_err(|e| super::name_flag(e, &FLAGS))
        .map_err(|e| super::name_options(e, || args.size_flags()))?;
    check_shards(
        "sequences per batch (--batch)",
        opts.batch,
        job.ranks().count(),
    )?;
    if let Some(out) = &args.out {
        check_out_dir(out)?;
    }
    let train = fit::read_table(train_path)?;
    let test = fit::read_table(&args.test)?;
    let backend = job.backend(args.backend)?;
    let log = |epoch: usize, loss: f32| eprintln!("epoch {epoch}: training loss {loss:.4}");
    let ranks = job.ranks();
    let fitted = if train.rows[0].len() == 1 {
        fit::fit_forecaster_on(&train, &test, &opts, &backend, ranks, log)
    } else {
        fit::fit_classifier_on(&train, &test, &opts, &backend, ranks, log)
    }
    .map_err(|e| super::name_options(e, || args.size_flags()))?;
    if !job.is_root() {
        return Ok(());
    }
    print_report(&fitted.report);
    if let Some(out) = &args.out {
        fitted.model.save(out)?;
        println!("model: {}", out.display());
    }
    Ok(())
}

fn test_saved(args: &FitArgs, model_path: &Path) -> Result<()> {
    let model = FitModel::load(model_path)?;
    let test = fit::read_table(&args.test)?;
    let backend = args.backend.open()?;
    print_report(&model.test(&test, &backend)?);
    Ok(())
}

/// The folder `--out` writes into must exist: found out before training, not after it.
fn check_out_dir(out: &Path) -> Result<()> {
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    ensure!(
        dir.is_dir(),
        "--out {}: expected a file in an existing folder ({} is not one)",
        out.display(),
        dir.display()
    );
    Ok(())
}

fn print_report(report: &FitReport) {
    match report {
        FitReport::Classifier {
            classes,
            test_accuracy,
            test_count,
        } => println!(
            "{} classes; test accuracy {:.2}% on {test_count} sequences",
            classes.len(),
            100.0 * test_accuracy
        ),
        FitReport::Forecaster {
            test_rmse,
            naive_rmse,
            test_count,
        } => println!(
            "one-step forecast RMSE {test_rmse:.4} on {test_count} windows (repeating the last \
             value: {naive_rmse:.4})"
        ),
    }
}
