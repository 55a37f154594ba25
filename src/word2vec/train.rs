//! The CPU trainer: word2vec.c's algorithm. Each thread reads its own byte range of the
//! corpus file every epoch (lines are sentences), drops frequent words by subsampling,
//! shrinks the window at random per centre word, and updates the shared weights with SGD at
//! a learning rate falling linearly with the words done, to a floor.
//!
//! Threads update the shared weight matrices without locks, as word2vec.c and gensim do
//! (Hogwild, Recht et al. 2011): two threads may touch the same row at the same time and one
//! update may be partly lost, which SGD tolerates. So a run with several threads is not
//! repeatable bit for bit; a 1-thread run is, for a given seed.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::corpus::{file_len, LineReader};
use super::grad::{self, axpy, Table};
use super::huffman::Huffman;
use super::sampling::{AliasTable, Rng};
use super::vectors::KeyedVectors;
use super::vocab::Vocab;

/// How the hidden layer is formed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// The mean of the context vectors predicts the centre word.
    Cbow,
    /// Each context word's vector predicts the centre word (word2vec.c's pairing).
    SkipGram,
}

/// The output layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Negative sampling with this many negatives from the unigram distribution ^ 0.75.
    Negative(usize),
    /// Hierarchical softmax over a Huffman tree.
    Hierarchical,
    /// The full softmax over the vocabulary (slow: for small vocabularies).
    Softmax,
}

/// Training settings; the defaults are word2vec.c's and gensim's.
#[derive(Clone, Debug)]
pub struct Config {
    pub arch: Arch,
    pub output: Output,
    /// Vector size.
    pub size: usize,
    /// Maximum distance between the centre word and a context word.
    pub window: usize,
    /// Words seen fewer times are dropped.
    pub min_count: u64,
    /// Keep at most this many words (the most frequent).
    pub max_vocab: Option<usize>,
    /// Subsampling threshold (0 turns it off).
    pub sample: f64,
    pub epochs: usize,
    /// Starting learning rate.
    pub alpha: f32,
    /// The floor the learning rate falls to.
    pub min_alpha: f32,
    pub seed: u64,
    /// CPU trainer threads.
    pub threads: usize,
    /// GPU trainer: centre words per batch.
    pub gpu_batch: usize,
    /// GPU trainer: a row reached by more contributions than this in one batch has its
    /// summed update scaled down to this many (0: never). See `gpu_train.rs`.
    pub gpu_row_cap: u32,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            arch: Arch::Cbow,
            output: Output::Negative(5),
            size: 100,
            window: 5,
            min_count: 5,
            max_vocab: None,
            sample: 1e-3,
            epochs: 5,
            alpha: 0.025,
            min_alpha: 0.0001,
            seed: 1,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            gpu_batch: 256,
            gpu_row_cap: 64,
            progress: false,
        }
    }
}

impl Config {
    /// Rejects settings that cannot train, naming the value.
    pub fn validate(&self) -> Result<()> {
        if self.size == 0 {
            bail!("vector size 0: expected at least 1");
        }
        if self.window == 0 {
            bail!("window 0: expected at least 1");
        }
        if self.epochs == 0 {
            bail!("epochs 0: expected at least 1");
        }
        if self.threads == 0 {
            bail!("threads 0: expected at least 1");
        }
        if self.gpu_batch == 0 {
            bail!("GPU batch of 0 centre words: expected at least 1");
        }
        if self.output == Output::Negative(0) {
            bail!("0 negative samples: expected at least 1 (or hierarchical or full softmax)");
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            bail!("learning rate {}: expected a positive number", self.alpha);
        }
        if !(self.min_alpha.is_finite() && self.min_alpha >= 0.0 && self.min_alpha <= self.alpha) {
            bail!(
                "minimum learning rate {}: expected a number in [0, {}]",
                self.min_alpha,
                self.alpha
            );
        }
        if !(self.sample.is_finite() && self.sample >= 0.0) {
            bail!("sample {}: expected a non-negative number", self.sample);
        }
        if self.max_vocab == Some(0) {
            bail!("max vocabulary size 0: expected at least 1");
        }
        Ok(())
    }
}

/// What a training run did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TrainReport {
    pub vocab_size: usize,
    /// Corpus words in the vocabulary, per epoch.
    pub train_words: u64,
    /// Words read over all epochs (in the vocabulary, before subsampling).
    pub words: u64,
    /// Words trained on over all epochs (after subsampling).
    pub effective_words: u64,
    /// Training time (the vocabulary scan excluded).
    pub seconds: f64,
    pub words_per_sec: f64,
    pub effective_words_per_sec: f64,
    /// Mean loss per prediction in each epoch.
    pub epoch_loss: Vec<f64>,
}

impl TrainReport {
    /// The report of a run: `epoch_loss` holds each epoch's summed loss and `epoch_preds`
    /// its number of predictions (the report keeps their ratio).
    pub(super) fn new(
        vocab: &Vocab,
        words: u64,
        effective_words: u64,
        seconds: f64,
        mut epoch_loss: Vec<f64>,
        epoch_preds: &[u64],
    ) -> Self {
        for (l, &p) in epoch_loss.iter_mut().zip(epoch_preds) {
            *l /= p.max(1) as f64;
        }
        Self {
            vocab_size: vocab.len(),
            train_words: vocab.train_words(),
            words,
            effective_words,
            seconds,
            words_per_sec: words as f64 / seconds,
            effective_words_per_sec: effective_words as f64 / seconds,
            epoch_loss,
        }
    }
}

/// Scans the vocabulary of `corpus`, then trains on it.
pub fn train(corpus: &Path, cfg: &Config) -> Result<(KeyedVectors, TrainReport)> {
    cfg.validate()?;
    let vocab = Vocab::scan(corpus, cfg.min_count, cfg.max_vocab)?;
    train_with_vocab(corpus, &vocab, cfg)
}

enum Layer {
    Negative { k: usize, table: AliasTable },
    Hierarchical(Huffman),
    Softmax,
}

/// A weight matrix the threads share without locks (see the module comment).
struct Shared(*mut f32, usize);

// SAFETY: the pointer outlives the threads (they are scoped); concurrent unsynchronised
// writes are word2vec.c's lock-free SGD, accepted on purpose.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    #[allow(clippy::mut_from_ref)]
    /// SAFETY: see the impls above; the caller keeps the Vec alive and unmoved.
    unsafe fn slice(&self) -> &mut [f32] {
        std::slice::from_raw_parts_mut(self.0, self.1)
    }
}

/// One thread's running totals, written only by that thread, read by the progress bar.
#[derive(Default)]
struct Slot {
    loss_bits: AtomicU64,
    predictions: AtomicU64,
}

struct Job<'a> {
    corpus: &'a Path,
    vocab: &'a Vocab,
    cfg: &'a Config,
    keep: Vec<f32>,
    layer: Layer,
    table: Table,
    syn0: Shared,
    out: Shared,
    file_len: u64,
    words_done: AtomicU64,
    stop: AtomicBool,
    slots: Vec<Slot>,
    avx2: bool,
}

#[derive(Default)]
struct ThreadResult {
    epoch_loss: Vec<f64>,
    epoch_predictions: Vec<u64>,
    effective_words: u64,
}

/// Trains on `corpus` with a vocabulary already built (`cfg.min_count` and `max_vocab` are
/// then not used).
pub fn train_with_vocab(
    corpus: &Path,
    vocab: &Vocab,
    cfg: &Config,
) -> Result<(KeyedVectors, TrainReport)> {
    cfg.validate()?;
    let (v, d) = (vocab.len(), cfg.size);
    let mut init = Rng::new(cfg.seed, u64::MAX);
    // word2vec.c's initialisation: input vectors uniform in [-0.5/d, 0.5/d], outputs zero.
    let mut syn0: Vec<f32> = (0..v * d)
        .map(|_| (init.uniform() - 0.5) / d as f32)
        .collect();
    let layer = match cfg.output {
        Output::Negative(k) => Layer::Negative {
            k,
            table: AliasTable::unigram(vocab.counts(), 0.75),
        },
        Output::Hierarchical => Layer::Hierarchical(Huffman::new(vocab.counts())),
        Output::Softmax => Layer::Softmax,
    };
    let out_rows = match &layer {
        Layer::Hierarchical(h) => h.inner_nodes(),
        _ => v,
    };
    let mut out = vec![0.0f32; out_rows * d];
    let job = Job {
        corpus,
        vocab,
        cfg,
        keep: vocab.keep_probabilities(cfg.sample),
        layer,
        table: Table::default(),
        syn0: Shared(syn0.as_mut_ptr(), syn0.len()),
        out: Shared(out.as_mut_ptr(), out.len()),
        file_len: file_len(corpus)?,
        words_done: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        slots: (0..cfg.threads).map(|_| Slot::default()).collect(),
        #[cfg(target_arch = "x86_64")]
        avx2: std::is_x86_feature_detected!("avx2"),
        #[cfg(not(target_arch = "x86_64"))]
        avx2: false,
    };
    let total = cfg.epochs as u64 * vocab.train_words();
    let bar = super::progress::Progress::new(cfg.progress, total);
    let start = Instant::now();
    let results: Vec<Result<ThreadResult>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..cfg.threads)
            .map(|t| {
                let job = &job;
                scope.spawn(move || {
                    let r = worker(job, t);
                    if r.is_err() {
                        job.stop.store(true, Ordering::Relaxed);
                    }
                    r
                })
            })
            .collect();
        let (mut last_loss, mut last_preds, mut last_shown) = (0.0, 0, Instant::now());
        // The mean loss per prediction since the last refresh that saw new predictions.
        let mut recent = f64::NAN;
        while !handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(5));
            if !cfg.progress || last_shown.elapsed() < Duration::from_millis(200) {
                continue;
            }
            last_shown = Instant::now();
            let done = job.words_done.load(Ordering::Relaxed);
            let (loss, preds) = job.slots.iter().fold((0.0, 0), |(l, p), s| {
                (
                    l + f64::from_bits(s.loss_bits.load(Ordering::Relaxed)),
                    p + s.predictions.load(Ordering::Relaxed),
                )
            });
            if preds > last_preds {
                recent = (loss - last_loss) / (preds - last_preds) as f64;
                (last_loss, last_preds) = (loss, preds);
            }
            bar.set_position(done);
            bar.set_message(|| {
                format!(
                    "{:.0} words/s  alpha {:.5}  loss {:.4}",
                    done as f64 / start.elapsed().as_secs_f64(),
                    learning_rate(cfg, done, total),
                    recent
                )
            });
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| bail!("a training thread panicked"))
            })
            .collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    bar.finish();
    let mut epoch_loss = vec![0.0; cfg.epochs];
    let mut epoch_preds = vec![0u64; cfg.epochs];
    let mut effective = 0;
    for r in results {
        let r = r?;
        for e in 0..cfg.epochs {
            epoch_loss[e] += r.epoch_loss[e];
            epoch_preds[e] += r.epoch_predictions[e];
        }
        effective += r.effective_words;
    }
    drop(job);
    let report = TrainReport::new(vocab, total, effective, seconds, epoch_loss, &epoch_preds);
    let kv = KeyedVectors::new(vocab.words().to_vec(), d, syn0)?;
    Ok((kv, report))
}

/// The learning rate after `done` of `total` words: linear decay to `min_alpha`.
pub fn learning_rate(cfg: &Config, done: u64, total: u64) -> f32 {
    let progress = done as f64 / (total as f64 + 1.0);
    ((cfg.alpha as f64 * (1.0 - progress)) as f32).max(cfg.min_alpha)
}

/// How often (in words read) a thread publishes its count and refreshes its learning rate.
const REPORT_EVERY: u64 = 10_000;

fn worker(job: &Job, t: usize) -> Result<ThreadResult> {
    let cfg = job.cfg;
    let (d, epochs, threads) = (cfg.size, cfg.epochs, cfg.threads as u128);
    let total = epochs as u64 * job.vocab.train_words();
    let start = (job.file_len as u128 * t as u128 / threads) as u64;
    let end = (job.file_len as u128 * (t as u128 + 1) / threads) as u64;
    // SAFETY: lock-free shared updates, see the module comment.
    let (syn0, out) = unsafe { (job.syn0.slice(), job.out.slice()) };
    let mut rng = Rng::new(cfg.seed, t as u64);
    let mut scratch = Scratch {
        neu1: vec![0.0; d],
        neu1e: vec![0.0; d],
        targets: Vec::new(),
        scores: if matches!(job.layer, Layer::Softmax) {
            vec![0.0; job.vocab.len()]
        } else {
            Vec::new()
        },
    };
    let mut result = ThreadResult {
        epoch_loss: vec![0.0; epochs],
        epoch_predictions: vec![0; epochs],
        effective_words: 0,
    };
    let mut sentence: Vec<u32> = Vec::new();
    let (mut alpha, mut unreported, mut loss_total, mut preds_total) =
        (cfg.alpha, 0u64, 0.0f64, 0u64);
    for epoch in 0..epochs {
        let mut reader = LineReader::open_range(job.corpus, start, end)?;
        loop {
            if job.stop.load(Ordering::Relaxed) {
                return Ok(result);
            }
            let Some(line) = reader.next_line()? else {
                break;
            };
            sentence.clear();
            for token in line.split_whitespace() {
                if let Some(id) = job.vocab.id(token) {
                    unreported += 1;
                    let keep = job.keep[id as usize];
                    if keep >= 1.0 || keep > rng.uniform() {
                        sentence.push(id);
                    }
                }
            }
            if unreported >= REPORT_EVERY {
                let done = job.words_done.fetch_add(unreported, Ordering::Relaxed) + unreported;
                unreported = 0;
                alpha = learning_rate(cfg, done, total);
                let slot = &job.slots[t];
                slot.loss_bits
                    .store(loss_total.to_bits(), Ordering::Relaxed);
                slot.predictions.store(preds_total, Ordering::Relaxed);
            }
            result.effective_words += sentence.len() as u64;
            let (loss, preds) =
                train_sentence(job, &sentence, syn0, out, alpha, &mut rng, &mut scratch);
            result.epoch_loss[epoch] += loss;
            result.epoch_predictions[epoch] += preds;
            loss_total += loss;
            preds_total += preds;
        }
    }
    job.words_done.fetch_add(unreported, Ordering::Relaxed);
    Ok(result)
}

struct Scratch {
    neu1: Vec<f32>,
    neu1e: Vec<f32>,
    targets: Vec<u32>,
    scores: Vec<f32>,
}

/// One prediction of `target` from the hidden vector `h`; returns its loss.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn predict(
    job: &Job,
    h: &[f32],
    neu1e: &mut [f32],
    out: &mut [f32],
    target: u32,
    alpha: f32,
    rng: &mut Rng,
    targets: &mut Vec<u32>,
    scores: &mut [f32],
) -> f32 {
    match &job.layer {
        Layer::Negative { k, table } => {
            targets.clear();
            targets.push(target);
            for _ in 0..*k {
                // As word2vec.c: a draw of the target itself is skipped, not redrawn.
                let n = table.sample(rng) as u32;
                if n != target {
                    targets.push(n);
                }
            }
            grad::negative(&job.table, h, neu1e, out, targets, alpha)
        }
        Layer::Hierarchical(tree) => {
            let w = target as usize;
            grad::hierarchical(
                &job.table,
                h,
                neu1e,
                out,
                tree.points(w),
                tree.code(w),
                alpha,
            )
        }
        Layer::Softmax => grad::softmax(h, neu1e, out, scores, target, alpha),
    }
}

/// Trains on one sentence with the widest vector instructions the CPU has. The lane
/// layout of `grad::dot` is fixed, so every path gives the same bits.
fn train_sentence(
    job: &Job,
    sentence: &[u32],
    syn0: &mut [f32],
    out: &mut [f32],
    alpha: f32,
    rng: &mut Rng,
    s: &mut Scratch,
) -> (f64, u64) {
    #[cfg(target_arch = "x86_64")]
    if job.avx2 {
        // SAFETY: the CPU has AVX2 (checked when the job was made).
        return unsafe { train_sentence_avx2(job, sentence, syn0, out, alpha, rng, s) };
    }
    train_sentence_generic(job, sentence, syn0, out, alpha, rng, s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn train_sentence_avx2(
    job: &Job,
    sentence: &[u32],
    syn0: &mut [f32],
    out: &mut [f32],
    alpha: f32,
    rng: &mut Rng,
    s: &mut Scratch,
) -> (f64, u64) {
    train_sentence_generic(job, sentence, syn0, out, alpha, rng, s)
}

/// Trains on one sentence; returns the summed loss and the number of predictions.
#[inline(always)]
fn train_sentence_generic(
    job: &Job,
    sentence: &[u32],
    syn0: &mut [f32],
    out: &mut [f32],
    alpha: f32,
    rng: &mut Rng,
    s: &mut Scratch,
) -> (f64, u64) {
    let d = job.cfg.size;
    let n = sentence.len();
    let (mut loss, mut preds) = (0.0f64, 0u64);
    for i in 0..n {
        // word2vec.c's random window: b in 0..window, effective window = window - b.
        let w = job.cfg.window - rng.below(job.cfg.window);
        let (lo, hi) = (i.saturating_sub(w), (i + w + 1).min(n));
        let centre = sentence[i];
        match job.cfg.arch {
            Arch::SkipGram => {
                for j in (lo..hi).filter(|&j| j != i) {
                    let c = sentence[j] as usize;
                    s.neu1e.fill(0.0);
                    let h = &syn0[c * d..(c + 1) * d];
                    loss += predict(
                        job,
                        h,
                        &mut s.neu1e,
                        out,
                        centre,
                        alpha,
                        rng,
                        &mut s.targets,
                        &mut s.scores,
                    ) as f64;
                    axpy(1.0, &s.neu1e, &mut syn0[c * d..(c + 1) * d]);
                    preds += 1;
                }
            }
            Arch::Cbow => {
                s.neu1.fill(0.0);
                let mut count = 0;
                for j in (lo..hi).filter(|&j| j != i) {
                    let c = sentence[j] as usize;
                    axpy(1.0, &syn0[c * d..(c + 1) * d], &mut s.neu1);
                    count += 1;
                }
                if count == 0 {
                    continue;
                }
                let inv = 1.0 / count as f32;
                s.neu1.iter_mut().for_each(|x| *x *= inv);
                s.neu1e.fill(0.0);
                loss += predict(
                    job,
                    &s.neu1,
                    &mut s.neu1e,
                    out,
                    centre,
                    alpha,
                    rng,
                    &mut s.targets,
                    &mut s.scores,
                ) as f64;
                // word2vec.c and gensim (cbow_mean) add the hidden layer's whole update to
                // every context vector, not the 1/count share the chain rule gives.
                for j in (lo..hi).filter(|&j| j != i) {
                    let c = sentence[j] as usize;
                    axpy(1.0, &s.neu1e, &mut syn0[c * d..(c + 1) * d]);
                }
                preds += 1;
            }
        }
    }
    (loss, preds)
}
