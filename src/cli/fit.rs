//! `recur fit`: a many-to-one classifier (UCR/UEA-style rows, label first) or a one-step
//! forecaster (a single-column series) from data files; the work is in `train::fit`.

use std::path::PathBuf;

use anyhow::Result;

use super::train::BackendArg;
use crate::gpu::Gpu;
use crate::train::charlm::Backend;
use crate::train::fit::{self, FitOptions, FitReport};

#[derive(clap::Args)]
pub struct FitArgs {
    /// Training data: one sequence per line, label first (classification), or one value per
    /// line (forecasting).
    #[arg(long)]
    train: PathBuf,
    /// Test data in the same format: accuracy or forecast error is reported on it.
    #[arg(long)]
    test: PathBuf,
    #[arg(long, value_enum, default_value = "gpu")]
    backend: BackendArg,
    #[arg(long, default_value = "lstm")]
    cell: String,
    #[arg(long, default_value_t = FitOptions::default().hidden)]
    hidden: usize,
    #[arg(long, default_value_t = FitOptions::default().batch)]
    batch: usize,
    #[arg(long, default_value_t = FitOptions::default().epochs)]
    epochs: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = FitOptions::default().lr)]
    lr: f32,
    /// Forecasting: values per input window.
    #[arg(long, default_value_t = FitOptions::default().window)]
    window: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: FitArgs) -> Result<()> {
    let train = fit::read_table(&args.train)?;
    let test = fit::read_table(&args.test)?;
    let opts = FitOptions {
        cell: args.cell,
        hidden: args.hidden,
        batch: args.batch,
        epochs: args.epochs,
        lr: args.lr,
        seed: args.seed,
        window: args.window,
        backend: match args.backend {
            BackendArg::Gpu => Backend::Gpu,
            BackendArg::Cpu => Backend::Cpu,
        },
    };
    let gpu = match opts.backend {
        Backend::Gpu => Some(Gpu::new()?),
        Backend::Cpu => None,
    };
    let log = |epoch: usize, loss: f32| eprintln!("epoch {epoch}: training loss {loss:.4}");
    let report = if train.rows[0].len() == 1 {
        fit::fit_forecaster(&train, &test, &opts, gpu.as_ref(), log)?
    } else {
        fit::fit_classifier(&train, &test, &opts, gpu.as_ref(), log)?
    };
    match report {
        FitReport::Classifier {
            classes,
            test_accuracy,
            test_count,
            ..
        } => println!(
            "{} classes; test accuracy {:.2}% on {test_count} sequences",
            classes.len(),
            100.0 * test_accuracy
        ),
        FitReport::Forecaster {
            test_rmse,
            naive_rmse,
            test_count,
            ..
        } => println!(
            "one-step forecast RMSE {test_rmse:.4} on {test_count} windows (repeating the last \
             value: {naive_rmse:.4})"
        ),
    }
    Ok(())
}
