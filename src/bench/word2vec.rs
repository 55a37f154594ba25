//! word2vec training speed: words per second of the CPU trainer on a corpus file.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use super::Stats;
use crate::word2vec::{train_with_vocab, Config, Vocab};

#[derive(Clone, Debug, Serialize)]
pub struct Word2VecCase {
    pub vocab_size: usize,
    /// Corpus words in the vocabulary, per epoch.
    pub train_words: u64,
    pub threads: usize,
    /// Training time per run (vocabulary scan excluded).
    pub seconds: Stats,
    /// Words read per second (in the vocabulary, before subsampling), from the median time.
    pub words_per_sec: f64,
    /// Words trained on per second (after subsampling), from the median time.
    pub effective_words_per_sec: f64,
}

/// Trains `reps` times on `corpus` with `cfg` (the vocabulary scanned once, untimed) and
/// returns the median speed.
pub fn measure(corpus: &Path, cfg: &Config, reps: usize) -> Result<Word2VecCase> {
    cfg.validate()?;
    let vocab = Vocab::scan(corpus, cfg.min_count, cfg.max_vocab)?;
    let cfg = Config {
        progress: false,
        ..cfg.clone()
    };
    let mut secs = Vec::new();
    let mut effective = 0;
    for _ in 0..reps.max(1) {
        let (_, report) = train_with_vocab(corpus, &vocab, &cfg)?;
        secs.push(report.seconds);
        effective = report.effective_words;
    }
    let seconds = Stats::from_samples(&mut secs).expect("at least one run");
    let words = cfg.epochs as u64 * vocab.train_words();
    Ok(Word2VecCase {
        vocab_size: vocab.len(),
        train_words: vocab.train_words(),
        threads: cfg.threads,
        seconds,
        words_per_sec: words as f64 / seconds.median,
        effective_words_per_sec: effective as f64 / seconds.median,
    })
}

/// Writes a corpus of `words` tokens drawn from a Zipf distribution over `vocab` words
/// (`w0`, `w1`, ...), 20 to a line: a stand-in for natural text when no corpus is given.
pub fn synthetic_corpus(path: &Path, words: usize, vocab: usize, seed: u64) -> Result<()> {
    use crate::word2vec::sampling::{AliasTable, Rng};
    anyhow::ensure!(
        vocab > 0,
        "a synthetic corpus needs a vocabulary of at least 1 word"
    );
    let weights: Vec<f64> = (1..=vocab).map(|r| 1.0 / r as f64).collect();
    let table = AliasTable::new(&weights);
    let mut rng = Rng::new(seed, 0);
    let mut text = String::with_capacity(words * 6);
    for i in 0..words {
        text.push('w');
        text.push_str(&table.sample(&mut rng).to_string());
        text.push(if i % 20 == 19 { '\n' } else { ' ' });
    }
    text.push('\n');
    crate::io::write_atomic(path, text.as_bytes())
}
