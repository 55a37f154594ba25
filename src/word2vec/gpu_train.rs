//! The GPU trainer: the CPU trainer's algorithm with the updates computed and applied on the
//! GPU in batches of many centre words.
//!
//! The host does what is sequential and cheap, in the order a 1-thread CPU run does it and
//! from the same random stream: it reads the corpus line by line, subsamples, shrinks the
//! window, draws the negatives or looks up the Huffman path, and lists one work item per
//! prediction (a context word predicting the centre in skip-gram, the window's mean
//! predicting it in CBOW). Every `gpu_batch` centre words it packs the items with their
//! inverse indexes, uploads them in one buffer write and records four dispatches in one
//! submit (`src/gpu/word2vec_train.rs`). The learning rate of a batch is the CPU trainer's
//! linear decay at the words read when the batch starts. The loss sums stay on the GPU and
//! are read back once every [`LOSS_SLOTS`] batches and at the end of each epoch.
//!
//! # Rows touched more than once in a batch
//!
//! A frequent word is the context, target or negative of many items in one batch, and with
//! hierarchical softmax the tree's top nodes are on nearly every item's path. The rule:
//!
//! 1. Every item's gradients are computed from the weights as they were at the start of the
//!    batch (synchronous minibatch SGD): no item sees another's update.
//! 2. A row's contributions are summed in a fixed order (the order of the items, then of
//!    their slots) through the host-built inverse index, by the one invocation that owns
//!    each element of the row, then added once. No float atomics, so a seed gives the same
//!    bits on a given adapter on every run.
//! 3. A row reached by more than `gpu_row_cap` contributions in one batch gets its summed
//!    update scaled by `gpu_row_cap / n`. word2vec.c's sequential updates self-correct:
//!    after a few steps on a row its sigmoid saturates and later steps shrink. Summed from
//!    stale weights, hundreds of contributions to one row (the root of the Huffman tree is
//!    on every path) overshoot instead. The cap bounds any row's step per batch to that of
//!    `gpu_row_cap` sequential steps; rows reached fewer times get the exact minibatch sum.
//!
//! The measurements behind the defaults (`gpu_batch`, `gpu_row_cap`) are in BENCHMARKS.md.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};

use super::corpus::LineReader;
use super::huffman::Huffman;
use super::sampling::{AliasTable, Rng};
use super::train::{learning_rate, Arch, Config, Output, TrainReport};
use super::vectors::KeyedVectors;
use super::vocab::Vocab;
use crate::gpu::{Gpu, Recorder, TrainPlan};
use crate::ops::word2vec_train::{BatchPacker, PackedBatch, TrainBatch, TrainOutput, TrainSpec};

/// Batches whose loss sums the GPU holds before the host reads them back.
pub const LOSS_SLOTS: usize = 64;

/// Scans the vocabulary of `corpus`, then trains on the GPU.
pub fn train_gpu(corpus: &Path, cfg: &Config, gpu: &Gpu) -> Result<(KeyedVectors, TrainReport)> {
    cfg.validate()?;
    let vocab = Vocab::scan(corpus, cfg.min_count, cfg.max_vocab)?;
    train_with_vocab_gpu(corpus, &vocab, cfg, gpu)
}

enum Layer {
    Negative { k: usize, table: AliasTable },
    Hierarchical(Huffman),
    Softmax,
}

/// The sizes of a run: the matrices and the largest batch `cfg` can make.
fn spec(cfg: &Config, vocab: &Vocab, layer: &Layer) -> Result<TrainSpec> {
    let v = vocab.len();
    let (out_rows, per_item, output) = match layer {
        Layer::Negative { k, .. } => (v, k + 1, TrainOutput::Sampled),
        Layer::Hierarchical(tree) => (
            tree.inner_nodes(),
            (0..v).map(|w| tree.code(w).len()).max().unwrap_or(1),
            TrainOutput::Sampled,
        ),
        Layer::Softmax => (v, 1, TrainOutput::Softmax),
    };
    let window = cfg.gpu_batch.checked_mul(2 * cfg.window).ok_or_else(|| {
        anyhow::anyhow!("GPU batch of {} centre words is too large", cfg.gpu_batch)
    })?;
    let max_items = match cfg.arch {
        Arch::SkipGram => window,
        Arch::Cbow => cfg.gpu_batch,
    };
    let max_targets = max_items.checked_mul(per_item).ok_or_else(|| {
        anyhow::anyhow!("{max_items} items of {per_item} targets are too many for one batch")
    })?;
    let spec = TrainSpec {
        in_rows: v,
        out_rows,
        dim: cfg.size,
        output,
        max_items,
        max_inputs: window,
        max_targets,
        row_cap: cfg.gpu_row_cap,
    };
    spec.validate()?;
    Ok(spec)
}

/// Trains on `corpus` on the GPU with a vocabulary already built. See the module comment
/// for what runs where and how updates to the same row combine.
pub fn train_with_vocab_gpu(
    corpus: &Path,
    vocab: &Vocab,
    cfg: &Config,
    gpu: &Gpu,
) -> Result<(KeyedVectors, TrainReport)> {
    cfg.validate()?;
    let (v, d) = (vocab.len(), cfg.size);
    let layer = match cfg.output {
        Output::Negative(k) => Layer::Negative {
            k,
            table: AliasTable::unigram(vocab.counts(), 0.75),
        },
        Output::Hierarchical => Layer::Hierarchical(Huffman::new(vocab.counts())),
        Output::Softmax => Layer::Softmax,
    };
    let spec = spec(cfg, vocab, &layer)?;
    // Before any host allocation: a vocabulary or size the adapter cannot bind is an error.
    TrainPlan::check_limits(gpu, &spec)?;
    // The CPU trainer's initialisation, from the same stream.
    let mut init = Rng::new(cfg.seed, u64::MAX);
    let syn0: Vec<f32> = (0..v * d)
        .map(|_| (init.uniform() - 0.5) / d as f32)
        .collect();
    let syn1 = vec![0.0f32; spec.out_rows * d];
    let mut plan = TrainPlan::new(gpu, &spec, &syn0, &syn1, LOSS_SLOTS)?;
    drop((syn0, syn1));

    let keep = vocab.keep_probabilities(cfg.sample);
    let total = cfg.epochs as u64 * vocab.train_words();
    let bar = progress_bar(cfg, total);
    let mut rng = Rng::new(cfg.seed, 0);
    let mut batch = TrainBatch::default();
    let mut packed = PackedBatch::default();
    let mut packer = BatchPacker::default();
    // Loss sums submitted but not yet read back: per slot, the epoch and the item count.
    let mut pending: Vec<(usize, u64)> = Vec::new();
    let mut epoch_loss = vec![0.0f64; cfg.epochs];
    let mut epoch_preds = vec![0u64; cfg.epochs];
    let (mut words_done, mut effective, mut centres) = (0u64, 0u64, 0usize);
    let mut batch_start_words = 0u64;
    let mut sentence: Vec<u32> = Vec::new();
    let mut context: Vec<u32> = Vec::new();
    let start = Instant::now();

    let mut flush = |batch: &mut TrainBatch,
                     pending: &mut Vec<(usize, u64)>,
                     epoch: usize,
                     words_at_start: u64,
                     words_now: u64,
                     force_read: bool|
     -> Result<()> {
        if !batch.is_empty() {
            packer.pack(&spec, batch, &mut packed)?;
            let alpha = learning_rate(cfg, words_at_start, total);
            plan.write_batch(&packed, alpha, pending.len())?;
            let mut rec = Recorder::new(gpu);
            plan.record(&mut rec)?;
            rec.submit()?;
            pending.push((epoch, batch.len() as u64));
            batch.clear();
        }
        bar.set_position(words_now);
        if pending.len() == LOSS_SLOTS || (force_read && !pending.is_empty()) {
            let sums = plan.loss_slots().read_range(0, pending.len())?;
            let (mut loss, mut preds) = (0.0f64, 0u64);
            for (&(e, n), &s) in pending.iter().zip(&sums) {
                epoch_loss[e] += s as f64;
                epoch_preds[e] += n;
                loss += s as f64;
                preds += n;
            }
            pending.clear();
            bar.set_message(format!(
                "{:.0} words/s  alpha {:.5}  loss {:.4}",
                words_now as f64 / start.elapsed().as_secs_f64(),
                learning_rate(cfg, words_now, total),
                loss / preds.max(1) as f64
            ));
        }
        Ok(())
    };

    for epoch in 0..cfg.epochs {
        let mut reader = LineReader::open(corpus)?;
        while let Some(line) = reader.next_line()? {
            sentence.clear();
            for token in line.split_whitespace() {
                if let Some(id) = vocab.id(token) {
                    words_done += 1;
                    let k = keep[id as usize];
                    if k >= 1.0 || k > rng.uniform() {
                        sentence.push(id);
                    }
                }
            }
            effective += sentence.len() as u64;
            let n = sentence.len();
            for i in 0..n {
                // word2vec.c's random window, drawn as the CPU trainer draws it.
                let w = cfg.window - rng.below(cfg.window);
                let (lo, hi) = (i.saturating_sub(w), (i + w + 1).min(n));
                let centre = sentence[i];
                match cfg.arch {
                    Arch::SkipGram => {
                        for j in (lo..hi).filter(|&j| j != i) {
                            push_item(&mut batch, &layer, &[sentence[j]], centre, &mut rng);
                        }
                    }
                    Arch::Cbow => {
                        context.clear();
                        context.extend((lo..hi).filter(|&j| j != i).map(|j| sentence[j]));
                        if !context.is_empty() {
                            push_item(&mut batch, &layer, &context, centre, &mut rng);
                        }
                    }
                }
                centres += 1;
                if centres == cfg.gpu_batch {
                    flush(
                        &mut batch,
                        &mut pending,
                        epoch,
                        batch_start_words,
                        words_done,
                        false,
                    )?;
                    centres = 0;
                    batch_start_words = words_done;
                }
            }
        }
        // Batches do not span epochs, so each epoch's loss is its own.
        flush(
            &mut batch,
            &mut pending,
            epoch,
            batch_start_words,
            words_done,
            true,
        )?;
        centres = 0;
        batch_start_words = words_done;
    }
    let syn0 = plan.syn0().to_vec()?;
    let seconds = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let report = TrainReport::new(vocab, total, effective, seconds, epoch_loss, &epoch_preds);
    let kv = KeyedVectors::new(vocab.words().to_vec(), d, syn0)?;
    Ok((kv, report))
}

/// Adds one prediction of `centre` from the mean of `inputs`, with its targets: the word and
/// its negatives (drawn here, as the CPU trainer draws them), the word's Huffman path, or
/// the word alone for the full softmax.
fn push_item(batch: &mut TrainBatch, layer: &Layer, inputs: &[u32], centre: u32, rng: &mut Rng) {
    match layer {
        Layer::Negative { k, table } => {
            // As word2vec.c: a draw of the target itself is skipped, not redrawn.
            let negatives = (0..*k)
                .map(|_| table.sample(rng) as u32)
                .filter(|&n| n != centre)
                .map(|n| (n, false));
            batch.push(inputs, std::iter::once((centre, true)).chain(negatives));
        }
        Layer::Hierarchical(tree) => {
            let w = centre as usize;
            // Branch 0 is predicted with sigmoid(f): label 1 - code.
            let path = tree
                .points(w)
                .iter()
                .zip(tree.code(w))
                .map(|(&p, &c)| (p, c == 0));
            batch.push(inputs, path);
        }
        Layer::Softmax => batch.push(inputs, [(centre, true)]),
    }
}

fn progress_bar(cfg: &Config, total: u64) -> ProgressBar {
    if !cfg.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {percent:>3}% {msg} (eta {eta})")
            .expect("a valid template"),
    );
    bar
}
