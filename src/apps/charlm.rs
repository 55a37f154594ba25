//! A character-level language model: vocabulary, stream batching for truncated BPTT, the
//! training run behind `recur train`, and sampling behind `recur generate`.
//!
//! The text is cut into `batch` contiguous streams; step `k` feeds the next `steps`
//! characters of every stream and the following character as target, carrying the
//! recurrent state from one chunk to the next (stateful, no gradient across chunks). The
//! state starts afresh at zero when the streams wrap around; evaluation runs from zero
//! states without disturbing it, and checkpoints keep it, so a resumed run matches an
//! uninterrupted one.

use std::path::Path;
use std::time::Instant;

use crate::error::{bail, ensure, err, Result};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::exec::{CpuExecutor, Executor};
use crate::nn::EmbeddingInit;
use crate::ops::optim::OptimConfig;
use crate::ops::optim::Optimizer;
use crate::ops::program::ProgramBuilder;
use crate::ops::recurrent::CellKind;
use crate::ops::schedule::Schedule;
use crate::train::checkpoint::Checkpoint;
use crate::train::distributed::{check_shards, Ranks};
use crate::train::model::{
    Batch, DropoutRates, EmbeddingSpec, Head, Inputs, Loss, ModelSpec, Pass, SequenceModel, Targets,
};
use crate::train::trainer::{TrainConfig, Trainer};

/// The texts `recur train` uses without `--text` (see `data/shakespeare/SOURCE.md`).
const SHAKESPEARE: [&str; 4] = [
    include_str!("../../data/shakespeare/hamlet.txt"),
    include_str!("../../data/shakespeare/julius_caesar.txt"),
    include_str!("../../data/shakespeare/macbeth.txt"),
    include_str!("../../data/shakespeare/romeo_and_juliet.txt"),
];

/// Four Shakespeare plays, concatenated.
pub fn default_text() -> String {
    SHAKESPEARE.concat()
}

/// Reads a user's text file: it must be UTF-8 and not empty.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = crate::io::read_file(path, "text")?;
    let text = String::from_utf8(bytes).map_err(|e| {
        err!(
            Format,
            "{} is not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    ensure!(
        !text.is_empty(),
        Invalid,
        "{} is empty: nothing to train on",
        path.display()
    );
    Ok(text)
}

/// The characters of a text, sorted; a character's id is its index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CharVocab {
    chars: Vec<char>,
}

impl CharVocab {
    /// The distinct characters of `text`; an empty text is an error.
    pub fn from_text(text: &str) -> Result<Self> {
        ensure!(
            !text.is_empty(),
            Invalid,
            "the text is empty: nothing to train on"
        );
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        Ok(Self { chars })
    }

    /// Characters in the vocabulary (the model's input and output classes).
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// Whether the vocabulary has no characters (never, for one built by [`Self::from_text`]).
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// The id of every character; a character outside the vocabulary is an error.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        text.chars()
            .map(|c| {
                self.chars
                    .binary_search(&c)
                    .map(|i| i as u32)
                    .map_err(|_| err!(Invalid, "character {c:?} is not in the model's vocabulary"))
            })
            .collect()
    }

    /// The character with id `id`; `None` past the end of the vocabulary.
    pub fn char(&self, id: u32) -> Option<char> {
        self.chars.get(id as usize).copied()
    }

    /// The vocabulary as one string (kept in checkpoints).
    pub fn as_string(&self) -> String {
        self.chars.iter().collect()
    }

    /// The vocabulary [`Self::as_string`] wrote; an error unless `s` holds each character
    /// once, sorted.
    pub fn from_string(s: &str) -> Result<Self> {
        let v = Self::from_text(s)?;
        ensure!(
            v.chars.len() == s.chars().count(),
            Invalid,
            "a vocabulary string must hold each character once, sorted"
        );
        Ok(v)
    }
}

/// A text cut into `batch` streams, read `steps` characters at a time (or some of those
/// streams: a rank's share, [`Self::only`]).
pub struct Streams {
    ids: Vec<u32>,
    batch: usize,
    steps: usize,
    per_stream: usize,
    chunks: usize,
    /// The streams a chunk holds.
    streams: std::ops::Range<usize>,
}

impl Streams {
    /// Cuts `ids` into `batch` equal streams (the tail that does not divide is dropped),
    /// read `steps` characters at a time. `batch` or `steps` of 0 is an error, and so is a
    /// text shorter than `batch * (steps + 1)` (the message names it as `what`: "training",
    /// "validation").
    pub fn new(ids: Vec<u32>, batch: usize, steps: usize, what: &str) -> Result<Self> {
        ensure!(
            batch > 0 && steps > 0,
            Invalid,
            "a batch of {batch} streams of {steps} characters: expected at least 1 of each"
        );
        let per_stream = ids.len() / batch;
        let chunks = per_stream.saturating_sub(1) / steps;
        ensure!(
            chunks > 0,
            Shape,
            "the {what} text has {} characters: too few for a batch of {batch} sequences of \
             {steps} characters (needs at least {} = batch x (sequence length + 1)); use a \
             smaller batch or sequence length, or a longer text",
            ids.len(),
            batch * (steps + 1)
        );
        Ok(Self {
            ids,
            batch,
            steps,
            per_stream,
            chunks,
            streams: 0..batch,
        })
    }

    /// Keeps only `streams` (of the `batch`): chunks then hold those columns of the whole
    /// batch's chunks, in order.
    pub fn only(mut self, streams: std::ops::Range<usize>) -> Result<Self> {
        ensure!(
            !streams.is_empty() && streams.end <= self.batch,
            Invalid,
            "streams {streams:?} are not a part of the {} streams",
            self.batch
        );
        self.streams = streams;
        Ok(self)
    }

    /// Chunks per pass over the text.
    pub fn chunks(&self) -> usize {
        self.chunks
    }

    /// Chunk `k` (below [`Self::chunks`]) as a time-major batch.
    pub fn chunk(&self, k: usize) -> Batch {
        let (b, t) = (self.streams.len(), self.steps);
        let mut inputs = vec![0u32; b * t];
        let mut targets = vec![0u32; b * t];
        for s in 0..b {
            let start = (self.streams.start + s) * self.per_stream + k * t;
            for i in 0..t {
                inputs[i * b + s] = self.ids[start + i];
                targets[i * b + s] = self.ids[start + i + 1];
            }
        }
        Batch {
            batch: b,
            steps: t,
            inputs: Inputs::Ids(inputs),
            targets: Targets::Classes(targets),
            lengths: None,
        }
    }
}

/// The options of a training run (the defaults are `recur train`'s).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CharLmOptions {
    /// The recurrent cell (default LSTM).
    pub cell: CellKind,
    /// Hidden units per layer (default 192).
    pub hidden: usize,
    /// Width of the character embedding (default 32).
    pub embed: usize,
    /// Stacked recurrent layers (default 1).
    pub layers: usize,
    /// Streams per step: the global batch, split among the ranks of a distributed run
    /// (default 32).
    pub batch: usize,
    /// Characters per stream per step, the truncated-BPTT length (default 32).
    pub seq_len: usize,
    /// Training steps; also the length of the cosine learning-rate schedule (default 2000).
    pub train_steps: u64,
    /// Adam learning rate, cosine-annealed to a tenth of it over `train_steps` (default 0.02).
    pub lr: f32,
    /// Largest global gradient norm; larger gradients are scaled down to it (default 5).
    pub clip: f32,
    /// Seed of the parameter initialisation and the dropout masks (default 0).
    pub seed: u64,
    /// Share of the text held out at its end for validation, in `[0, 0.5)` (default 0.05).
    pub valid_fraction: f64,
    /// Steps between evaluations and checkpoints; the last step always has one (default 100).
    pub eval_every: u64,
    /// Dropout on the embedded characters the first layer reads (Keras `dropout`).
    #[serde(default)]
    pub input_dropout: f32,
    /// Dropout between stacked layers (PyTorch's `dropout`).
    #[serde(default)]
    pub dropout: f32,
    /// Dropout on the state the recurrent product reads (Keras `recurrent_dropout`).
    #[serde(default)]
    pub recurrent_dropout: f32,
    /// How the embedding table is drawn.
    #[serde(default)]
    pub embedding_init: EmbeddingInit,
}

impl Default for CharLmOptions {
    /// `recur train`'s recipe, chosen by measurement on a 2-core machine without a GPU
    /// (BENCHMARKS.md, "The language model's default recipe"): a 192-unit LSTM, 2000 Adam
    /// steps, PyTorch's N(0, 1) embedding.
    fn default() -> Self {
        Self {
            cell: CellKind::Lstm,
            hidden: 192,
            embed: 32,
            layers: 1,
            batch: 32,
            seq_len: 32,
            train_steps: 2000,
            lr: 0.02,
            clip: 5.0,
            seed: 0,
            valid_fraction: 0.05,
            eval_every: 100,
            input_dropout: 0.0,
            dropout: 0.0,
            recurrent_dropout: 0.0,
            embedding_init: EmbeddingInit::PyTorch,
        }
    }
}

impl CharLmOptions {
    /// The model: embedding, recurrent stack, a dense softmax at every step, over `vocab`
    /// characters.
    pub fn model_spec(&self, vocab: usize) -> ModelSpec {
        ModelSpec {
            embedding: Some(EmbeddingSpec {
                input_dim: vocab,
                output_dim: self.embed,
                padding: None,
                trainable: true,
                init: self.embedding_init,
            }),
            input_size: 0,
            cell: self.cell,
            hidden_size: self.hidden,
            num_layers: self.layers,
            bidirectional: false,
            outputs: vocab,
            head: Head::EveryStep,
            loss: Loss::CrossEntropy { ignore_index: None },
            dropout: self.dropout_rates(),
        }
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
            clip: Some(self.clip),
            schedule: Schedule::Cosine {
                t_max: self.train_steps.max(1),
                eta_min: self.lr as f64 * 0.1,
            },
        }
    }

    /// An error naming the first option out of range (sizes and counts of 0, a validation
    /// fraction outside `[0, 0.5)`, dropout rates, the learning rate or the clip).
    pub fn validate(&self) -> Result<()> {
        for (what, n) in [
            ("hidden size", self.hidden as u64),
            ("embedding size", self.embed as u64),
            ("layers", self.layers as u64),
            ("batch", self.batch as u64),
            ("sequence length", self.seq_len as u64),
            ("train_steps", self.train_steps),
            ("eval_every", self.eval_every),
        ] {
            ensure!(n > 0, Invalid, "{what} {n} is invalid: expected at least 1");
        }
        ensure!(
            self.valid_fraction.is_finite() && (0.0..0.5).contains(&self.valid_fraction),
            Invalid,
            "validation fraction {} is invalid: expected 0 <= fraction < 0.5",
            self.valid_fraction
        );
        self.dropout_rates().validate()?;
        self.optim().validate()
    }
}

/// What the run reports after each step.
#[derive(Clone, Copy, Debug)]
pub struct StepReport {
    /// The step just done, from 1.
    pub step: u64,
    /// The run's last step (`train_steps`).
    pub total: u64,
    /// Mean cross-entropy of the step in nats per character.
    pub loss: f32,
    /// Characters trained on per second since this process started (or resumed) the run.
    pub chars_per_sec: f64,
    /// Bits per character on the held-out text, when this step evaluated it.
    pub valid_bpc: Option<f32>,
}

/// Bits per character from a loss in nats.
pub fn bpc(loss: f32) -> f32 {
    loss / std::f32::consts::LN_2
}

/// The losses of a run (bits per character), for the plot.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct History {
    /// `(step, bits per character)` of every training step.
    pub train: Vec<(u64, f32)>,
    /// `(step, bits per character)` of every evaluation on the held-out text.
    pub valid: Vec<(u64, f32)>,
    /// Wall-clock seconds of training, over every resumed part of the run.
    pub seconds: f64,
    /// Characters trained on (`batch * seq_len` per step).
    pub chars: u64,
    /// Why there is no validation, where the held-out text is too short for one batch.
    pub no_validation: Option<String>,
}

/// Trains a character language model on `text`, writing a checkpoint to `checkpoint` at
/// every evaluation. Every input is checked before anything is written; a step whose loss
/// is not finite stops the run with an error naming it, leaving the last checkpoint.
pub fn train(
    text: &str,
    opts: &CharLmOptions,
    checkpoint: &Path,
    backend: &Backend,
    on_step: impl FnMut(&StepReport),
) -> Result<History> {
    train_on(
        text,
        opts,
        checkpoint,
        backend,
        None,
        &Ranks::local(),
        on_step,
    )
}

/// Continues the run that wrote `from` (same text and options; the backend may differ) up
/// to `opts.train_steps`: the same numbers as a run that never stopped.
pub fn resume(
    text: &str,
    opts: &CharLmOptions,
    checkpoint: &Path,
    backend: &Backend,
    from: &Checkpoint,
    on_step: impl FnMut(&StepReport),
) -> Result<History> {
    train_on(
        text,
        opts,
        checkpoint,
        backend,
        Some(from),
        &Ranks::local(),
        on_step,
    )
}

/// [`train`] (or, `from` a checkpoint, [`resume`]) on the ranks of a data-parallel job:
/// `opts.batch` is the global batch, its streams split among the ranks
/// ([`Ranks::share`]), so N ranks train on what one process with the same options
/// trains on. Rank 0 alone evaluates, writes the checkpoint and gets `on_step` calls; a
/// checkpoint resumes on any number of ranks (at most `opts.batch`).
pub fn train_on(
    text: &str,
    opts: &CharLmOptions,
    checkpoint: &Path,
    backend: &Backend,
    from: Option<&Checkpoint>,
    ranks: &Ranks,
    mut on_step: impl FnMut(&StepReport),
) -> Result<History> {
    opts.validate()?;
    check_shards("streams", opts.batch, ranks.count())?;
    let vocab = CharVocab::from_text(text)?;
    let ids = vocab.encode(text)?;
    let n_valid = (ids.len() as f64 * opts.valid_fraction) as usize;
    let (train_ids, valid_ids) = ids.split_at(ids.len() - n_valid);
    let train_streams = Streams::new(train_ids.to_vec(), opts.batch, opts.seq_len, "training")?
        .only(ranks.share(opts.batch))?;
    let mut history = History::default();
    let valid_streams = if n_valid > 0 {
        match Streams::new(valid_ids.to_vec(), opts.batch, opts.seq_len, "validation") {
            Ok(s) => Some(s),
            Err(e) => {
                // A short text still trains; it just has no held-out figure.
                history.no_validation = Some(e.full_message());
                None
            }
        }
    } else {
        history.no_validation = Some("no text held out (validation fraction 0)".into());
        None
    };
    let spec = opts.model_spec(vocab.len());
    let model = SequenceModel::new(spec, opts.seed)?;
    let cfg = TrainConfig::new(opts.optim()).stateful(true);
    let mut first = 1;
    if let Some(ckpt) = from {
        let saved: CharLmOptions =
            serde_json::from_str(ckpt.meta.get("options").ok_or_else(|| {
                err!(
                    Format,
                    "the checkpoint has no training options (not written by recur train)"
                )
            })?)?;
        // The backend may differ; every other option (the step count too: it shapes the
        // learning-rate schedule) must be the checkpoint's.
        let differ = option_differences(&saved, opts)?;
        ensure!(
            differ.is_empty(),
            Invalid,
            "the checkpoint was trained with other options ({}); resume with the same ones \
             (the backend may differ)",
            differ.join(", ")
        );
        ensure!(
            ckpt.meta.get("vocab").map(String::as_str) == Some(vocab.as_string().as_str()),
            Invalid,
            "the checkpoint's vocabulary differs from this text's: resume on the same text"
        );
        ensure!(
            ckpt.step < opts.train_steps,
            Invalid,
            "the checkpoint is at step {}, the run has {} steps: nothing left to train",
            ckpt.step,
            opts.train_steps
        );
        history = serde_json::from_str(
            ckpt.meta
                .get("history")
                .ok_or_else(|| err!(Format, "the checkpoint has no loss history"))?,
        )?;
        first = ckpt.step + 1;
    }
    let mut trainer = match from {
        None => Trainer::new(backend, model, cfg)?,
        Some(c) => Trainer::resume(backend, c, cfg)?,
    };
    ranks.attach(&mut trainer)?;
    let chars_per_step = (opts.batch * opts.seq_len) as u64;
    let start = Instant::now();
    let (seconds0, chars0) = (history.seconds, history.chars);
    for step in first..=opts.train_steps {
        let k = ((step - 1) % train_streams.chunks() as u64) as usize;
        if k == 0 && step > first {
            trainer.reset_state()?;
        }
        let loss = trainer.step(&train_streams.chunk(k))?;
        history.train.push((step, bpc(loss)));
        history.chars += chars_per_step;
        let mut valid_bpc = None;
        if step % opts.eval_every == 0 || step == opts.train_steps {
            // Every rank checks the replicas and gathers the carried state; rank 0 alone
            // evaluates (the whole held-out batch) and writes.
            let mut ckpt = trainer.checkpoint()?;
            if !ranks.is_root() {
                continue;
            }
            if let Some(v) = &valid_streams {
                // The whole held-out text, its streams' state carried from chunk to chunk.
                let chunks: Vec<Batch> = (0..v.chunks()).map(|i| v.chunk(i)).collect();
                let b = bpc(trainer.evaluate_stream(&chunks)?);
                history.valid.push((step, b));
                valid_bpc = Some(b);
            }
            ckpt.meta.insert("vocab".into(), vocab.as_string());
            history.seconds = seconds0 + start.elapsed().as_secs_f64();
            ckpt.meta
                .insert("history".into(), serde_json::to_string(&history)?);
            ckpt.meta
                .insert("options".into(), serde_json::to_string(opts)?);
            ckpt.save(checkpoint)?;
        }
        if !ranks.is_root() {
            continue;
        }
        let elapsed = start.elapsed().as_secs_f64();
        history.seconds = seconds0 + elapsed;
        on_step(&StepReport {
            step,
            total: opts.train_steps,
            loss,
            chars_per_sec: (history.chars - chars0) as f64 / elapsed.max(1e-9),
            valid_bpc,
        });
    }
    Ok(history)
}

/// The options (but the backend) that differ, as `name: saved -> now`.
fn option_differences(saved: &CharLmOptions, now: &CharLmOptions) -> Result<Vec<String>> {
    let (a, b) = (serde_json::to_value(saved)?, serde_json::to_value(now)?);
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        bail!(Format, "training options are not a JSON object");
    };
    Ok(a.iter()
        .filter(|(k, v)| k.as_str() != "backend" && b.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}: checkpoint {v}, now {}", b.get(k).unwrap_or(v)))
        .collect())
}

/// Samples `length` characters from a checkpoint after `prime` (on the CPU), at
/// `temperature` (> 0; lower is more conservative). Returns the prime and the sample.
pub fn generate(
    ckpt: &Checkpoint,
    prime: &str,
    length: usize,
    temperature: f32,
    seed: u64,
) -> Result<String> {
    ensure!(
        temperature.is_finite() && temperature > 0.0,
        Invalid,
        "temperature = {temperature} is invalid: expected a finite value > 0"
    );
    let vocab = CharVocab::from_string(ckpt.meta.get("vocab").ok_or_else(|| {
        err!(
            Format,
            "this checkpoint has no character vocabulary (not a language model)"
        )
    })?)?;
    let model = ckpt.model()?;
    ensure!(
        model.embedding.is_some() && model.spec.outputs == vocab.len(),
        Format,
        "this checkpoint is not a character language model"
    );
    let prime_ids = if prime.is_empty() {
        vec![vocab.encode("\n").map(|v| v[0]).unwrap_or(0)]
    } else {
        vocab.encode(prime)?
    };
    // One step of one sequence, its final states carried into the next run's initial ones.
    let mut exec = CpuExecutor::<f32>::new();
    for (name, t) in model.named_params() {
        exec.set_param(&name, &t.shape, &t.data)?;
    }
    let mut b = ProgramBuilder::new();
    let rec = model.record(&mut b, "", (1, 1), Pass::Predict, None)?;
    rec.stack.record_carry(&mut b);
    let program = exec.load(b.finish())?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = prime.to_string();
    let mut logits = Vec::new();
    let mut feed = |id: u32| -> Result<Vec<f32>> {
        let one = Batch {
            batch: 1,
            steps: 1,
            inputs: Inputs::Ids(vec![id]),
            targets: Targets::Classes(vec![0]),
            lengths: None,
        };
        model.write_batch(&mut exec, program, &rec.inputs, &one)?;
        exec.run(program, 0, 0)?;
        crate::exec::read_all(&mut exec, program, rec.output)
    };
    for &id in &prime_ids {
        logits = feed(id)?;
    }
    for _ in 0..length {
        let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let w: Vec<f64> = logits
            .iter()
            .map(|&l| (((l - m) / temperature) as f64).exp())
            .collect();
        let total: f64 = w.iter().sum();
        let mut r = rng.random_range(0.0..total);
        let mut id = w.len() - 1;
        for (i, &wi) in w.iter().enumerate() {
            if r < wi {
                id = i;
                break;
            }
            r -= wi;
        }
        out.push(
            vocab
                .char(id as u32)
                .ok_or_else(|| err!(Invalid, "sampled id outside the vocabulary"))?,
        );
        logits = feed(id as u32)?;
    }
    Ok(out)
}
