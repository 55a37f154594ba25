//! The CPU trainer: word2vec.c's algorithm. Each thread reads its own byte range of the
//! corpus file every epoch (lines are sentences), drops frequent words by subsampling,
//! shrinks the window at random per centre word, and updates the shared weights with SGD at
//! a learning rate falling linearly with the words done, to a floor.
//!
//! Threads update the shared weight matrices without locks, as word2vec.c and gensim do
//! (Hogwild, Recht et al. 2011): two threads may touch the same row at the same time and one
//! update may be partly lost, which SGD tolerates. So a run with several threads is not
//! repeatable bit for bit; a 1-thread run is, for a given seed.
//!
//! Across processes ([`train_with_vocab_on`], the ranks of an MPI job), the corpus is split
//! into byte ranges, one per rank (its threads split it further), and the ranks average
//! their input and output matrices every `sync_words` words each (periodic model
//! averaging, as Spark MLlib's word2vec does): every rank stops its threads at the same
//! fractions of its own words, the matrices are summed in rank order and scaled (the
//! same bits on every rank), and the threads go on. The last average comes after the last
//! word, so the ranks end identical.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::{bail, err, Error, Result};

use super::corpus::{file_len, LineReader};
use super::grad::{self, axpy, Table};
use super::huffman::Huffman;
use super::sampling::{AliasTable, Rng};
use super::vectors::KeyedVectors;
use super::vocab::Vocab;
use crate::train::distributed::{self, Ranks};

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
    /// CBOW or skip-gram (default CBOW: word2vec.c's `-cbow 1`, gensim's `sg=0`).
    pub arch: Arch,
    /// The output layer (default negative sampling with 5 negatives: `-negative 5 -hs 0`).
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
    /// Passes over the corpus (default 5: word2vec.c's `-iter`, gensim's `epochs`).
    pub epochs: usize,
    /// Starting learning rate.
    pub alpha: f32,
    /// The floor the learning rate falls to.
    pub min_alpha: f32,
    /// Seed of the initial vectors and of every thread's sampling stream (default 1, as
    /// gensim's).
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
    /// Data-parallel runs: each rank's words between two averages of the ranks' matrices.
    pub sync_words: u64,
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
            sync_words: 1_000_000,
        }
    }
}

impl Config {
    /// Rejects settings that cannot train, naming the value.
    pub fn validate(&self) -> Result<()> {
        if self.size == 0 {
            bail!(Invalid, "vector size 0: expected at least 1");
        }
        if self.window == 0 {
            bail!(Invalid, "window 0: expected at least 1");
        }
        if self.epochs == 0 {
            bail!(Invalid, "epochs 0: expected at least 1");
        }
        if self.threads == 0 {
            bail!(Invalid, "threads 0: expected at least 1");
        }
        if self.gpu_batch == 0 {
            bail!(Invalid, "GPU batch of 0 centre words: expected at least 1");
        }
        if self.output == Output::Negative(0) {
            bail!(
                Invalid,
                "0 negative samples: expected at least 1 (or hierarchical or full softmax)"
            );
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            bail!(
                Invalid,
                "learning rate {}: expected a positive number",
                self.alpha
            );
        }
        if !(self.min_alpha.is_finite() && self.min_alpha >= 0.0 && self.min_alpha <= self.alpha) {
            bail!(
                Invalid,
                "minimum learning rate {}: expected a number in [0, {}]",
                self.min_alpha,
                self.alpha
            );
        }
        if !(self.sample.is_finite() && self.sample >= 0.0) {
            bail!(
                Invalid,
                "sample {}: expected a non-negative number",
                self.sample
            );
        }
        if self.max_vocab == Some(0) {
            bail!(Invalid, "max vocabulary size 0: expected at least 1");
        }
        if self.sync_words == 0 {
            bail!(
                Invalid,
                "sync_words 0: expected at least 1 word between averages"
            );
        }
        Ok(())
    }
}

/// What a training run did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TrainReport {
    /// Words in the vocabulary.
    pub vocab_size: usize,
    /// Corpus words in the vocabulary, per epoch.
    pub train_words: u64,
    /// Words read over all epochs (in the vocabulary, before subsampling).
    pub words: u64,
    /// Words trained on over all epochs (after subsampling).
    pub effective_words: u64,
    /// Training time (the vocabulary scan excluded).
    pub seconds: f64,
    /// `words / seconds`.
    pub words_per_sec: f64,
    /// `effective_words / seconds`.
    pub effective_words_per_sec: f64,
    /// Mean loss per prediction in each epoch.
    pub epoch_loss: Vec<f64>,
    /// Averages of the ranks' matrices (data-parallel runs; 0 in one process).
    pub averages: u64,
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
            averages: 0,
        }
    }
}

/// Scans the vocabulary of `corpus`, then trains on it.
pub fn train(corpus: &Path, cfg: &Config) -> Result<(KeyedVectors, TrainReport)> {
    train_on(corpus, cfg, &Ranks::local())
}

/// [`train`] on the ranks of a data-parallel job (see [`train_with_vocab_on`]); every
/// rank scans the whole corpus for the same vocabulary.
pub fn train_on(corpus: &Path, cfg: &Config, ranks: &Ranks) -> Result<(KeyedVectors, TrainReport)> {
    cfg.validate()?;
    let vocab = Vocab::scan(corpus, cfg.min_count, cfg.max_vocab)?;
    train_with_vocab_on(corpus, &vocab, cfg, ranks)
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
    /// This rank's bytes of the corpus (all of it in one process).
    range: (u64, u64),
    /// Words this rank reads over all epochs (the learning rate falls over them).
    total: u64,
    /// Offsets the threads' random streams on this rank.
    stream0: u64,
    words_done: AtomicU64,
    stop: AtomicBool,
    /// Set while the ranks average: threads wait at [`Job::hold`].
    pause: AtomicBool,
    parked: AtomicUsize,
    /// Averages done; a parked thread waits for it to move.
    gate: Mutex<u64>,
    resume: Condvar,
    /// The first error of a thread, for the other ranks.
    failed: Mutex<Option<String>>,
    slots: Vec<Slot>,
    avx2: bool,
}

impl Job<'_> {
    /// Waits while the ranks average the matrices.
    fn hold(&self) {
        if !self.pause.load(Ordering::Acquire) {
            return;
        }
        let mut gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        let seen = *gate;
        self.parked.fetch_add(1, Ordering::AcqRel);
        while self.pause.load(Ordering::Acquire) && *gate == seen {
            gate = self.resume.wait(gate).unwrap_or_else(|p| p.into_inner());
        }
        self.parked.fetch_sub(1, Ordering::AcqRel);
    }
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
    train_with_vocab_on(corpus, vocab, cfg, &Ranks::local())
}

/// The words of `vocab` in the lines that start in `range` of `corpus`.
fn words_in(corpus: &Path, vocab: &Vocab, (start, end): (u64, u64)) -> Result<u64> {
    let mut reader = LineReader::open_range(corpus, start, end)?;
    let mut n = 0;
    while let Some(line) = reader.next_line()? {
        n += line
            .split_whitespace()
            .filter(|t| vocab.id(t).is_some())
            .count() as u64;
    }
    Ok(n)
}

/// How a data-parallel run averages: after each of `rounds` equal parts of every rank's
/// words.
struct Averaging<'a> {
    ranks: &'a Ranks,
    rounds: u64,
    done: u64,
}

impl Averaging<'_> {
    /// Averages the matrices over the ranks, or stops every rank with a failed rank's error.
    fn average(&mut self, job: &Job, failed: Option<String>) -> Result<()> {
        let Some(r) = self.ranks.reducer() else {
            return Ok(());
        };
        let status = match failed {
            // The failed thread's message: it travels to the other ranks as it is.
            Some(message) => Err(Error::RankFailed {
                rank: r.rank(),
                message,
            }),
            None => Ok(Vec::new()),
        };
        r.exchange(status)?;
        // SAFETY: every thread of this rank is parked or finished (see `Job::hold`).
        let (syn0, out) = unsafe { (job.syn0.slice(), job.out.slice()) };
        distributed::average(r.as_ref(), syn0)?;
        distributed::average(r.as_ref(), out)?;
        self.done += 1;
        Ok(())
    }

    /// Words this rank has read when the next average is due (`None`: only the last one,
    /// after every word, is left).
    fn next_due(&self, total: u64) -> Option<u64> {
        (self.done + 1 < self.rounds)
            .then(|| (total as u128 * (self.done + 1) as u128 / self.rounds as u128) as u64)
    }
}

/// [`train_with_vocab`] on the ranks of a data-parallel job: rank `r` of `N` trains on the
/// lines that start in bytes `[len r / N, len (r + 1) / N)` with `cfg.threads` threads, and
/// the ranks average their matrices every `cfg.sync_words` words each (see the module
/// comment); every rank returns the same vectors, and a report of the whole job (words
/// and losses summed over the ranks; this rank's time).
pub fn train_with_vocab_on(
    corpus: &Path,
    vocab: &Vocab,
    cfg: &Config,
    ranks: &Ranks,
) -> Result<(KeyedVectors, TrainReport)> {
    cfg.validate()?;
    let file_len = file_len(corpus)?;
    let share = distributed::shard_range(file_len as usize, ranks.count(), ranks.rank());
    let range = (share.start as u64, share.end as u64);
    let (total, rounds) = match ranks.reducer() {
        None => (cfg.epochs as u64 * vocab.train_words(), 1),
        Some(r) => {
            let local = words_in(corpus, vocab, range).map(|n| n.to_le_bytes().to_vec());
            let words: Vec<u64> = r
                .exchange(local)?
                .iter()
                .map(distributed::u64_of)
                .collect::<Result<_>>()?;
            if let Some(empty) = words.iter().position(|&n| n == 0) {
                let bytes = distributed::shard_range(file_len as usize, ranks.count(), empty);
                return Err(Error::EveryRank(Box::new(err!(
                    Invalid,
                    "rank {empty} of {} has no word of the vocabulary in its part of the corpus \
                     (bytes {bytes:?} of {file_len}; words by rank: {words:?}): use fewer \
                     ranks or a larger corpus",
                    ranks.count()
                ))));
            }
            let most = words.iter().max().copied().unwrap_or(0) * cfg.epochs as u64;
            (
                cfg.epochs as u64 * words[ranks.rank()],
                most.div_ceil(cfg.sync_words).max(1),
            )
        }
    };
    let mut averaging = Averaging {
        ranks,
        rounds,
        done: 0,
    };
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
        range,
        total,
        stream0: (ranks.rank() * cfg.threads) as u64,
        words_done: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        pause: AtomicBool::new(false),
        parked: AtomicUsize::new(0),
        gate: Mutex::new(0),
        resume: Condvar::new(),
        failed: Mutex::new(None),
        slots: (0..cfg.threads).map(|_| Slot::default()).collect(),
        #[cfg(target_arch = "x86_64")]
        avx2: std::is_x86_feature_detected!("avx2"),
        #[cfg(not(target_arch = "x86_64"))]
        avx2: false,
    };
    let bar = super::progress::Progress::new(cfg.progress && ranks.is_root(), total);
    let start = Instant::now();
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..cfg.threads)
            .map(|t| {
                let job = &job;
                scope.spawn(move || {
                    let r = worker(job, t);
                    if let Err(e) = &r {
                        job.stop.store(true, Ordering::Relaxed);
                        let mut failed = job.failed.lock().unwrap_or_else(|p| p.into_inner());
                        failed.get_or_insert_with(|| e.full_message());
                    }
                    r
                })
            })
            .collect();
        let mut sync_error = None;
        let (mut last_loss, mut last_preds, mut last_shown) = (0.0, 0, Instant::now());
        // The mean loss per prediction since the last refresh that saw new predictions.
        let mut recent = f64::NAN;
        while !handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(5));
            let due = averaging.next_due(total);
            if sync_error.is_none()
                && due.is_some_and(|d| job.words_done.load(Ordering::Relaxed) >= d)
            {
                job.pause.store(true, Ordering::Release);
                let running = || handles.iter().filter(|h| !h.is_finished()).count();
                while job.parked.load(Ordering::Acquire) < running() {
                    std::thread::sleep(Duration::from_micros(200));
                }
                let failed = job.failed.lock().unwrap_or_else(|p| p.into_inner()).clone();
                if let Err(e) = averaging.average(&job, failed) {
                    job.stop.store(true, Ordering::Relaxed);
                    sync_error = Some(e);
                }
                let mut gate = job.gate.lock().unwrap_or_else(|p| p.into_inner());
                *gate += 1;
                job.pause.store(false, Ordering::Release);
                job.resume.notify_all();
            }
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
        let results: Vec<Result<ThreadResult>> = handles
            .into_iter()
            .map(|h| {
                // A panic is a bug, not an error of the run: carry it on to the caller.
                h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
            })
            .collect();
        (results, sync_error)
    });
    let (results, sync_error) = results;
    if let Some(e) = sync_error {
        return Err(e);
    }
    // The averages still due (at least the last, after every word): every rank takes the
    // same number.
    let failed = job.failed.lock().unwrap_or_else(|p| p.into_inner()).clone();
    while averaging.done < averaging.rounds && ranks.reducer().is_some() {
        averaging.average(&job, failed.clone())?;
    }
    if let Some(r) = ranks.reducer() {
        // SAFETY: the threads have ended.
        let (syn0, out) = unsafe { (job.syn0.slice(), job.out.slice()) };
        let names = ["syn0".to_string(), "out".to_string()];
        let mine = distributed::fingerprint([(&names[0], &*syn0), (&names[1], &*out)]);
        let all = r.exchange(Ok(mine.to_le_bytes().to_vec()))?;
        if all.iter().any(|p| p.as_slice() != mine.to_le_bytes()) {
            return Err(Error::EveryRank(Box::new(err!(
                Numerics,
                "the ranks' vectors differ after their last average (fingerprints: {all:?})"
            ))));
        }
    }
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
    let (words, effective) = match ranks.reducer() {
        None => (total, effective),
        Some(r) => {
            // The job's totals, summed in rank order.
            let mut mine = vec![total as f64, effective as f64];
            mine.extend(&epoch_loss);
            mine.extend(epoch_preds.iter().map(|&p| p as f64));
            let bytes = mine.iter().flat_map(|v| v.to_le_bytes()).collect();
            let mut sums = vec![0.0f64; mine.len()];
            for p in r.exchange(Ok(bytes))? {
                for (s, c) in sums.iter_mut().zip(p.chunks_exact(8)) {
                    *s += f64::from_le_bytes(c.try_into().expect("8 bytes"));
                }
            }
            let e = cfg.epochs;
            epoch_loss.copy_from_slice(&sums[2..2 + e]);
            for (p, s) in epoch_preds.iter_mut().zip(&sums[2 + e..]) {
                *p = *s as u64;
            }
            (sums[0] as u64, sums[1] as u64)
        }
    };
    let mut report = TrainReport::new(vocab, words, effective, seconds, epoch_loss, &epoch_preds);
    report.averages = averaging.done;
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
    let total = job.total;
    let (lo, len) = (job.range.0 as u128, (job.range.1 - job.range.0) as u128);
    let start = (lo + len * t as u128 / threads) as u64;
    let end = (lo + len * (t as u128 + 1) / threads) as u64;
    // SAFETY: lock-free shared updates, see the module comment.
    let (syn0, out) = unsafe { (job.syn0.slice(), job.out.slice()) };
    let mut rng = Rng::new(cfg.seed, job.stream0 + t as u64);
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
            job.hold();
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
/// layout of `cpu::word2vec::dot` is fixed, so every path gives the same bits.
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
