//! The GPU trainer's host side: the corpus cut into batches of `gpu_batch` centre words,
//! each batch's items listed and packed for the kernels.
//!
//! Two stages, so that the host keeps up with a GPU:
//! 1. [`CentreSource`], in order: reads the corpus a block of lines at a time, looks the
//!    block's words up in the vocabulary on all of rayon's threads, then on one thread
//!    subsamples (one random stream for the run) and cuts the centre words into
//!    [`BatchText`]s, each with the words its windows may reach.
//! 2. [`HostBatches::next_group`], a group of texts at a time on all of rayon's threads:
//!    draws each centre's window and each item's negatives from the batch's own random
//!    stream (keyed by the batch's index in the run), lists the items and packs them.
//!
//! Stage 2 depends only on the text and the batch index, so the batches come out the same
//! bits for any number of threads.

use crate::error::err;
use std::collections::VecDeque;
use std::path::Path;

use crate::error::Result;
use rayon::prelude::*;

use super::corpus::LineReader;
use super::huffman::Huffman;
use super::sampling::{AliasTable, Rng};
use super::train::{Arch, Config, Output};
use super::vocab::Vocab;
use crate::ops::word2vec_train::{BatchPacker, PackedBatch, TrainBatch, TrainOutput, TrainSpec};

/// How an item's targets are found.
pub(super) enum Layer {
    Negative { k: usize, table: AliasTable },
    Hierarchical(Huffman),
    Softmax,
}

impl Layer {
    pub(super) fn new(cfg: &Config, vocab: &Vocab) -> Self {
        match cfg.output {
            Output::Negative(k) => Layer::Negative {
                k,
                table: AliasTable::unigram(vocab.counts(), 0.75),
            },
            Output::Hierarchical => Layer::Hierarchical(Huffman::new(vocab.counts())),
            Output::Softmax => Layer::Softmax,
        }
    }

    /// The sizes of a run: the matrices and the largest batch `cfg` can make.
    pub(super) fn spec(&self, cfg: &Config, vocab: &Vocab) -> Result<TrainSpec> {
        let v = vocab.len();
        let (out_rows, per_item, output) = match self {
            Layer::Negative { k, .. } => (v, k + 1, TrainOutput::Sampled),
            Layer::Hierarchical(tree) => (
                tree.inner_nodes(),
                (0..v).map(|w| tree.code(w).len()).max().unwrap_or(1),
                TrainOutput::Sampled,
            ),
            Layer::Softmax => (v, 1, TrainOutput::Softmax),
        };
        let window = cfg.gpu_batch.checked_mul(2 * cfg.window).ok_or_else(|| {
            err!(
                Limit,
                "GPU batch of {} centre words is too large",
                cfg.gpu_batch
            )
        })?;
        let max_items = match cfg.arch {
            Arch::SkipGram => window,
            Arch::Cbow => cfg.gpu_batch,
        };
        let max_targets = max_items.checked_mul(per_item).ok_or_else(|| {
            err!(
                Limit,
                "{max_items} items of {per_item} targets are too many for one batch"
            )
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
}

/// Where a batch stands in the run: its epoch, the words read when it started (its learning
/// rate's) and when it ended, and whether it ends its epoch (batches do not span epochs, so
/// each epoch's loss is its own; the last batch of an epoch may be empty).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct BatchInfo {
    pub epoch: usize,
    pub words_at_start: u64,
    pub words_now: u64,
    pub ends_epoch: bool,
}

/// A batch's text: its centre words with the words their windows may reach.
#[derive(Clone, Debug, Default)]
pub(super) struct BatchText {
    /// The batch's index in the run: its random stream.
    index: u64,
    words: Vec<u32>,
    /// Per run of centres from one sentence: the sentence's part in `words` (the centres and
    /// up to `window` words each side) and the centres' part.
    runs: Vec<[usize; 4]>,
    info: BatchInfo,
}

/// Lines whose words stage 1 looks up together, and the most bytes of text they may hold
/// (a longer line is a block of its own).
const BLOCK_LINES: usize = 4096;
const BLOCK_BYTES: usize = 1 << 20;

/// Stage 1: the corpus read in order, subsampled, cut into batch texts.
pub(super) struct CentreSource<'a> {
    corpus: &'a Path,
    vocab: &'a Vocab,
    cfg: &'a Config,
    keep: Vec<f32>,
    rng: Rng,
    reader: Option<LineReader>,
    /// The block of lines read and not yet subsampled, as vocabulary ids (words outside the
    /// vocabulary dropped), and the text they were read into.
    lines: VecDeque<Vec<u32>>,
    text: String,
    ends: Vec<usize>,
    epoch: usize,
    sentence: Vec<u32>,
    /// The next centre word's position in `sentence`.
    next_centre: usize,
    batches: u64,
    words_done: u64,
    /// Words trained on (after subsampling) so far.
    pub effective: u64,
    batch_start_words: u64,
}

impl<'a> CentreSource<'a> {
    pub(super) fn new(corpus: &'a Path, vocab: &'a Vocab, cfg: &'a Config) -> Self {
        Self {
            corpus,
            vocab,
            cfg,
            keep: vocab.keep_probabilities(cfg.sample),
            rng: Rng::new(cfg.seed, 0),
            reader: None,
            lines: VecDeque::new(),
            text: String::new(),
            ends: Vec::new(),
            epoch: 0,
            sentence: Vec::new(),
            next_centre: 0,
            batches: 0,
            words_done: 0,
            effective: 0,
            batch_start_words: 0,
        }
    }

    /// Fills `text` with the next batch's; false after the last epoch.
    fn next_text(&mut self, text: &mut BatchText) -> Result<bool> {
        text.words.clear();
        text.runs.clear();
        let mut centres = 0;
        while self.epoch < self.cfg.epochs {
            let n = self.sentence.len();
            if self.next_centre < n {
                let (from, w) = (self.next_centre, self.cfg.window);
                let to = (from + self.cfg.gpu_batch - centres).min(n);
                let (lo, hi) = (from.saturating_sub(w), (to + w).min(n));
                let at = text.words.len();
                text.words.extend_from_slice(&self.sentence[lo..hi]);
                text.runs
                    .push([at, at + hi - lo, at + from - lo, at + to - lo]);
                centres += to - from;
                self.next_centre = to;
                if centres == self.cfg.gpu_batch {
                    self.cut(text, false);
                    return Ok(true);
                }
                continue;
            }
            if self.lines.is_empty() {
                self.read_block()?;
            }
            match self.lines.pop_front() {
                Some(ids) => {
                    self.sentence.clear();
                    for id in ids {
                        self.words_done += 1;
                        let k = self.keep[id as usize];
                        if k >= 1.0 || k > self.rng.uniform() {
                            self.sentence.push(id);
                        }
                    }
                    self.effective += self.sentence.len() as u64;
                    self.next_centre = 0;
                }
                None => {
                    self.reader = None;
                    self.cut(text, true);
                    self.epoch += 1;
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Reads the next block of lines and looks their words up; none at the end of the
    /// corpus (the reader then starts over for the next epoch).
    fn read_block(&mut self) -> Result<()> {
        if self.reader.is_none() {
            self.reader = Some(LineReader::open(self.corpus)?);
        }
        let reader = self.reader.as_mut().expect("opened above");
        self.text.clear();
        self.ends.clear();
        while self.ends.len() < BLOCK_LINES && self.text.len() < BLOCK_BYTES {
            let Some(line) = reader.next_line()? else {
                break;
            };
            self.text.push_str(line);
            self.ends.push(self.text.len());
        }
        let (text, vocab) = (&self.text, self.vocab);
        let ids: Vec<Vec<u32>> = (0..self.ends.len())
            .into_par_iter()
            .map(|i| {
                let start = if i == 0 { 0 } else { self.ends[i - 1] };
                text[start..self.ends[i]]
                    .split_whitespace()
                    .filter_map(|t| vocab.id(t))
                    .collect()
            })
            .collect();
        self.lines.extend(ids);
        Ok(())
    }

    fn cut(&mut self, text: &mut BatchText, ends_epoch: bool) {
        text.index = self.batches;
        text.info = BatchInfo {
            epoch: self.epoch,
            words_at_start: self.batch_start_words,
            words_now: self.words_done,
            ends_epoch,
        };
        self.batches += 1;
        self.batch_start_words = self.words_done;
    }
}

/// One batch on its way: its text, its items, its packed form.
#[derive(Default)]
pub(super) struct HostBatch {
    text: BatchText,
    items: TrainBatch,
    pub packed: PackedBatch,
}

impl HostBatch {
    pub(super) fn info(&self) -> BatchInfo {
        self.text.info
    }

    /// Items (predictions) in the batch.
    pub(super) fn items(&self) -> usize {
        self.items.len()
    }
}

/// Both stages: groups of batches, their buffers kept from group to group.
pub(super) struct HostBatches<'a> {
    pub source: CentreSource<'a>,
    cfg: &'a Config,
    layer: &'a Layer,
    spec: TrainSpec,
    group: Vec<HostBatch>,
}

impl<'a> HostBatches<'a> {
    pub(super) fn new(
        corpus: &'a Path,
        vocab: &'a Vocab,
        cfg: &'a Config,
        layer: &'a Layer,
        spec: TrainSpec,
    ) -> Self {
        Self {
            source: CentreSource::new(corpus, vocab, cfg),
            cfg,
            layer,
            spec,
            group: Vec::new(),
        }
    }

    /// The next (up to) `n` batches, listed and packed; empty after the last epoch.
    pub(super) fn next_group(&mut self, n: usize) -> Result<&[HostBatch]> {
        self.group.resize_with(n.max(1), HostBatch::default);
        let mut filled = 0;
        while filled < self.group.len() && self.source.next_text(&mut self.group[filled].text)? {
            filled += 1;
        }
        let (cfg, layer, spec) = (self.cfg, self.layer, &self.spec);
        self.group[..filled].par_iter_mut().try_for_each_init(
            BatchPacker::default,
            |packer, b| {
                list_items(&b.text, cfg, layer, &mut b.items);
                packer.pack(spec, &b.items, &mut b.packed)
            },
        )?;
        Ok(&self.group[..filled])
    }
}

/// Stage 2: the items of a batch text, with word2vec.c's random window per centre and the
/// negatives drawn from the batch's own stream.
fn list_items(text: &BatchText, cfg: &Config, layer: &Layer, items: &mut TrainBatch) {
    items.clear();
    let mut rng = Rng::new(cfg.seed, 1 + text.index);
    let mut context = Vec::with_capacity(2 * cfg.window);
    let s = &text.words;
    for &[start, end, from, to] in &text.runs {
        for i in from..to {
            let w = cfg.window - rng.below(cfg.window);
            let (lo, hi) = (i.saturating_sub(w).max(start), (i + w + 1).min(end));
            let centre = s[i];
            match cfg.arch {
                Arch::SkipGram => {
                    for j in (lo..hi).filter(|&j| j != i) {
                        push_item(items, layer, &[s[j]], centre, &mut rng);
                    }
                }
                Arch::Cbow => {
                    context.clear();
                    context.extend((lo..hi).filter(|&j| j != i).map(|j| s[j]));
                    if !context.is_empty() {
                        push_item(items, layer, &context, centre, &mut rng);
                    }
                }
            }
        }
    }
}

/// Adds one prediction of `centre` from the mean of `inputs`, with its targets: the word and
/// its negatives, the word's Huffman path, or the word alone for the full softmax.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines of unique words `l{line}w{position}` (random lengths, some longer than a batch,
    /// a word outside the vocabulary here and there), cut into batches: the centres come out
    /// in corpus order, `gpu_batch` to a batch but at an epoch's end, each run carries its
    /// sentence up to `window` words each side, and every item's context lies in its
    /// centre's sentence within the window.
    #[test]
    fn batches_keep_the_corpus_order_and_the_sentences_windows() {
        let mut rng = Rng::new(7, 0);
        let lines: Vec<usize> = (0..300).map(|_| 1 + rng.below(90)).collect();
        let word = |l: usize, p: usize| format!("l{l}w{p}");
        let mut text = String::new();
        for (l, &n) in lines.iter().enumerate() {
            let words: Vec<String> = (0..n).map(|p| word(l, p)).collect();
            text += &(words.join(" ") + " unknown\n");
        }
        let dir = std::env::temp_dir().join(format!("recur-gpu-batches-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let corpus = dir.join("lines.txt");
        std::fs::write(&corpus, text).unwrap();
        let pairs = lines
            .iter()
            .enumerate()
            .flat_map(|(l, &n)| (0..n).map(move |p| (word(l, p), 1)));
        let vocab = Vocab::from_counts(pairs, 1, None).unwrap();
        let (l_of, p_of) = {
            let mut l_of = vec![0; vocab.len()];
            let mut p_of = vec![0; vocab.len()];
            for (l, &n) in lines.iter().enumerate() {
                for p in 0..n {
                    let id = vocab.id(&word(l, p)).unwrap() as usize;
                    (l_of[id], p_of[id]) = (l, p);
                }
            }
            (l_of, p_of)
        };
        for arch in [Arch::SkipGram, Arch::Cbow] {
            let cfg = Config {
                arch,
                output: Output::Negative(2),
                window: 4,
                sample: 0.0,
                epochs: 2,
                gpu_batch: 37,
                ..Config::default()
            };
            let layer = Layer::new(&cfg, &vocab);
            let spec = layer.spec(&cfg, &vocab).unwrap();
            let mut host = HostBatches::new(&corpus, &vocab, &cfg, &layer, spec);
            let mut centres = Vec::new();
            let mut epochs_ended = 0;
            loop {
                let group = host.next_group(5).unwrap();
                if group.is_empty() {
                    break;
                }
                for b in group {
                    let t = &b.text;
                    let n: usize = t.runs.iter().map(|r| r[3] - r[2]).sum();
                    assert!(n == cfg.gpu_batch || t.info.ends_epoch, "{n} centres");
                    epochs_ended += t.info.ends_epoch as usize;
                    for &[start, end, from, to] in &t.runs {
                        let (l, p0) = (l_of[t.words[from] as usize], p_of[t.words[from] as usize]);
                        // The run's part of the sentence: the centres and `window` words each
                        // side where the sentence has them.
                        assert_eq!(from - start, p0.min(cfg.window));
                        assert_eq!(end - to, (lines[l] - (p0 + to - from)).min(cfg.window));
                        for (k, &id) in t.words[start..end].iter().enumerate() {
                            assert_eq!(l_of[id as usize], l);
                            assert_eq!(p_of[id as usize], p0 + k - (from - start));
                        }
                        centres.extend(t.words[from..to].iter().map(|&id| id as usize));
                    }
                    // Every item's inputs: the centre's sentence, within the window.
                    let (items, packed) = (&b.items, &b.packed);
                    for i in 0..items.len() {
                        let (_, centre, _) = packed.targets(i).next().unwrap();
                        for &c in packed.inputs(i) {
                            let (c, centre) = (c as usize, centre as usize);
                            assert_eq!(l_of[c], l_of[centre]);
                            assert!(p_of[c] != p_of[centre]);
                            assert!(p_of[c].abs_diff(p_of[centre]) <= cfg.window);
                        }
                    }
                }
            }
            assert_eq!(epochs_ended, 2);
            let vocab = &vocab;
            let corpus_order: Vec<usize> = (0..2)
                .flat_map(|_| lines.iter().enumerate())
                .flat_map(|(l, &n)| (0..n).map(move |p| vocab.id(&word(l, p)).unwrap() as usize))
                .collect();
            assert_eq!(centres, corpus_order, "{arch:?}");
            assert_eq!(host.source.effective, corpus_order.len() as u64);
        }
    }
}
