//! `recur train` (a character-level language model) and `recur generate` (sampling from
//! its checkpoint): argument parsing and the progress bar; the work is in
//! `apps::charlm`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use super::distributed::Job;
use super::BackendArg;
use crate::apps::charlm::CharVocab;
use crate::apps::charlm::{self, CharLmOptions};
use crate::apps::plot::loss_png;
use crate::backend::Backend;
use crate::memory::{bytes_of, Budget};
use crate::nn::EmbeddingInit;
use crate::train::distributed::check_shards;
use crate::train::footprint::{Footprint, RunShape};
use crate::train::Checkpoint;

/// `--embedding-init`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum InitArg {
    /// Uniform in ±0.05.
    Keras,
    /// Standard normal.
    Pytorch,
}

impl From<EmbeddingInit> for InitArg {
    fn from(i: EmbeddingInit) -> Self {
        match i {
            EmbeddingInit::Keras => InitArg::Keras,
            EmbeddingInit::PyTorch => InitArg::Pytorch,
        }
    }
}

impl From<InitArg> for EmbeddingInit {
    fn from(i: InitArg) -> Self {
        match i {
            InitArg::Keras => EmbeddingInit::Keras,
            InitArg::Pytorch => EmbeddingInit::PyTorch,
        }
    }
}

#[derive(clap::Args)]
pub struct TrainArgs {
    /// A UTF-8 text to train on (default: four Shakespeare plays shipped in data/shakespeare).
    #[arg(long)]
    text: Option<PathBuf>,
    /// Where the checkpoint and the loss plot go.
    #[arg(long, default_value = "runs/charlm")]
    out: PathBuf,
    /// auto: a hardware GPU if there is one, else the CPU.
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendArg,
    /// Recurrent cell: lstm, gru, gru-reset-before, rnn-tanh, rnn-relu.
    #[arg(long, default_value = "lstm")]
    cell: crate::ops::recurrent::CellKind,
    /// Units per LSTM (or other cell) layer.
    #[arg(long, default_value_t = CharLmOptions::default().hidden)]
    hidden: usize,
    /// Width of the character embedding.
    #[arg(long, default_value_t = CharLmOptions::default().embed)]
    embed: usize,
    /// Stacked recurrent layers.
    #[arg(long, default_value_t = CharLmOptions::default().layers)]
    layers: usize,
    /// Sequences per batch.
    #[arg(long, default_value_t = CharLmOptions::default().batch)]
    batch: usize,
    /// Characters per sequence (the truncated-BPTT length).
    #[arg(long, default_value_t = CharLmOptions::default().seq_len)]
    seq_len: usize,
    /// Training steps.
    #[arg(long, default_value_t = CharLmOptions::default().train_steps)]
    steps: u64,
    /// Adam learning rate (cosine-annealed to a tenth of it).
    #[arg(long, default_value_t = CharLmOptions::default().lr)]
    lr: f32,
    /// Clip the global gradient norm to this.
    #[arg(long, default_value_t = CharLmOptions::default().clip)]
    clip: f32,
    /// Dropout on the embedded characters the first layer reads (Keras `dropout`).
    #[arg(long, default_value_t = 0.0)]
    input_dropout: f32,
    /// Dropout between stacked layers (PyTorch's `dropout`; needs --layers > 1).
    #[arg(long, default_value_t = 0.0)]
    dropout: f32,
    /// Dropout on the recurrent state, one mask per sequence (Keras `recurrent_dropout`).
    #[arg(long, default_value_t = 0.0)]
    recurrent_dropout: f32,
    /// Seed of the initial weights and the dropout masks.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// How the embedding table is drawn: keras (uniform in ±0.05) or pytorch (N(0, 1)).
    #[arg(long, value_enum, default_value_t = InitArg::from(CharLmOptions::default().embedding_init))]
    embedding_init: InitArg,
    /// Evaluate on the held-out text and write the checkpoint every this many steps.
    #[arg(long, default_value_t = CharLmOptions::default().eval_every)]
    eval_every: u64,
    /// Fraction of the text held out for validation (its end).
    #[arg(long, default_value_t = CharLmOptions::default().valid_fraction)]
    valid_fraction: f64,
    /// Continue the run whose checkpoint is in --out (same text and options) up to --steps.
    #[arg(long)]
    resume: bool,
    /// Characters to sample from the model at the end (0: none).
    #[arg(long, default_value_t = 400)]
    sample: usize,
    /// Train data-parallel on the ranks of the MPI job this was started in (`mpirun -np N`,
    /// `srun`; needs a build with `--features mpi`): --batch is the global batch, its
    /// streams split among the ranks; rank 0 prints and writes.
    #[arg(long)]
    distributed: bool,
}

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// A checkpoint written by `recur train`.
    #[arg(long, default_value = "runs/charlm/model.safetensors")]
    checkpoint: PathBuf,
    /// Sampling temperature (> 0; lower is more conservative).
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    /// Text the sample continues.
    #[arg(long, default_value = "")]
    prime: String,
    /// Characters to generate.
    #[arg(long, default_value_t = 500)]
    length: usize,
    /// Seed of the sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// `CharLmOptions`' fields, as its messages name them, and their flags.
const FLAGS: [(&str, &str); 14] = [
    ("hidden size", "--hidden"),
    ("embedding size", "--embed"),
    ("layers", "--layers"),
    ("batch", "--batch"),
    ("sequence length", "--seq-len"),
    ("train_steps", "--steps"),
    ("eval_every", "--eval-every"),
    ("validation fraction", "--valid-fraction"),
    ("Adam lr", "--lr"),
    ("learning rate lr", "--lr"),
    ("clip max_norm", "--clip"),
    super::DROPOUT_FLAGS[0],
    super::DROPOUT_FLAGS[1],
    super::DROPOUT_FLAGS[2],
];

pub fn train(args: TrainArgs) -> Result<()> {
    let job = Job::join(args.distributed)?;
    let result = train_on(args, &job);
    job.finish(result)
}

fn train_on(args: TrainArgs, job: &Job) -> Result<()> {
    let text = match &args.text {
        Some(p) => charlm::read_text(p)?,
        None => charlm::default_text(),
    };
    let opts = CharLmOptions {
        cell: args.cell,
        hidden: args.hidden,
        embed: args.embed,
        layers: args.layers,
        batch: args.batch,
        seq_len: args.seq_len,
        train_steps: args.steps,
        lr: args.lr,
        clip: args.clip,
        seed: args.seed,
        input_dropout: args.input_dropout,
        dropout: args.dropout,
        recurrent_dropout: args.recurrent_dropout,
        embedding_init: args.embedding_init.into(),
        valid_fraction: args.valid_fraction,
        eval_every: args.eval_every,
    };
    // Every option is checked before a device is opened or a file written.
    opts.validate().map_err(|e| super::name_flag(e, &FLAGS))?;
    check_shards("streams (--batch)", opts.batch, job.ranks().count())?;
    check_sample_length(args.sample, "--sample")?;
    let flags = || {
        format!(
            "--hidden {} --embed {} --layers {} --batch {} --seq-len {}",
            opts.hidden, opts.embed, opts.layers, opts.batch, opts.seq_len
        )
    };
    let footprint = Footprint::of(&opts.model_spec(CharVocab::from_text(&text)?.len()))?;
    // Each rank of a job runs its share of the global batch's streams (at most this many).
    let run = RunShape {
        batch: opts.batch.div_ceil(job.ranks().count()),
        steps: opts.seq_len,
    };
    let backend = job.backend(args.backend)?;
    // The CPU trainer keeps the training state on the host; the GPU one on the device.
    footprint
        .check_host(Some(run), matches!(backend, Backend::Cpu), &Budget::host())
        .map_err(|e| super::name_options(e, flags))?;
    if let Backend::Gpu(gpu) = &backend {
        footprint
            .check_device(run, &Budget::device_buffer(gpu))
            .map_err(|e| super::name_options(e, flags))?;
    }
    if job.is_root() {
        std::fs::create_dir_all(&args.out)
            .with_context(|| format!("creating {}", args.out.display()))?;
    }
    let ckpt_path = args.out.join("model.safetensors");
    let plot_path = args.out.join("loss.png");
    let device = backend.describe();
    if job.is_root() {
        eprintln!(
            "training a {}-layer {} ({} hidden) on {} characters, on {device}",
            opts.layers,
            opts.cell,
            opts.hidden,
            text.chars().count()
        );
    }
    let bar = match job.is_root() {
        true => ProgressBar::new(opts.train_steps),
        false => ProgressBar::hidden(),
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} step {pos}/{len} {msg} [{elapsed_precise} elapsed, {eta_precise} left]",
        )?
        .progress_chars("=> "),
    );
    let from = if args.resume {
        Some(Checkpoint::load(&ckpt_path)?)
    } else {
        None
    };
    let mut valid = String::new();
    let on_step = |r: &charlm::StepReport| {
        if let Some(v) = r.valid_bpc {
            valid = format!(" | valid {v:.3} bpc");
            if bar.is_hidden() {
                // No terminal: a log line at each evaluation instead of the bar.
                eprintln!(
                    "step {}/{}: training {:.3} bpc, validation {v:.3} bpc, {:.0} chars/s",
                    r.step,
                    r.total,
                    charlm::bpc(r.loss),
                    r.chars_per_sec
                );
            }
        }
        bar.set_message(format!(
            "loss {:.3} | {:.3} bpc{valid} | {:.0} chars/s",
            r.loss,
            charlm::bpc(r.loss),
            r.chars_per_sec
        ));
        bar.set_position(r.step);
    };
    let history = charlm::train_on(
        &text,
        &opts,
        &ckpt_path,
        &backend,
        from.as_ref(),
        job.ranks(),
        on_step,
    );
    bar.finish();
    let history = history?;
    if !job.is_root() {
        return Ok(());
    }
    if let Some(why) = &history.no_validation {
        eprintln!("no validation: {why}");
    }
    loss_png(
        &history,
        &format!(
            "{} {} x {}: bits per character",
            opts.cell, opts.layers, opts.hidden
        ),
        &plot_path,
    )?;
    println!(
        "trained {} steps in {:.1} s ({:.0} characters/s); final training {:.3} bpc{}",
        opts.train_steps,
        history.seconds,
        history.chars as f64 / history.seconds.max(1e-9),
        history.train.last().map_or(f32::NAN, |&(_, v)| v),
        history
            .valid
            .last()
            .map_or(String::new(), |&(_, v)| format!(", validation {v:.3} bpc"))
    );
    println!("checkpoint: {}", ckpt_path.display());
    println!("loss plot:  {}", plot_path.display());
    if args.sample > 0 {
        let ckpt = Checkpoint::load(&ckpt_path)?;
        let sample = charlm::generate(&ckpt, "", args.sample, 0.7, opts.seed)?;
        println!("\nsample (temperature 0.7):\n{sample}");
    }
    Ok(())
}

/// A sample of `length` characters takes up to four bytes each.
fn check_sample_length(length: usize, flag: &str) -> Result<()> {
    Budget::host().check(
        format_args!("{flag} {length} (a sample of {length} characters)"),
        bytes_of(length as u64, 4),
    )?;
    Ok(())
}

pub fn generate(args: GenerateArgs) -> Result<()> {
    check_sample_length(args.length, "--length")?;
    let ckpt = Checkpoint::load(&args.checkpoint)?;
    let text = charlm::generate(&ckpt, &args.prime, args.length, args.temperature, args.seed)?;
    println!("{text}");
    Ok(())
}
