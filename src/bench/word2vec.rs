//! word2vec training speed: words per second of the CPU and GPU trainers on a corpus file,
//! with the last epoch's mean loss as a like-for-like quality score (same objective, same
//! corpus, same settings).

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use super::Stats;
use crate::gpu::Gpu;
use crate::word2vec::{train_with_vocab, train_with_vocab_gpu, Config, TrainReport, Vocab};

#[derive(Clone, Debug, Serialize)]
pub struct Word2VecCase {
    pub vocab_size: usize,
    /// Corpus words in the vocabulary, per epoch.
    pub train_words: u64,
    /// Which trainer ran: the CPU and its threads, or the GPU's adapter and batch.
    pub trainer: String,
    /// Training time per run (vocabulary scan excluded).
    pub seconds: Stats,
    /// Words read per second (in the vocabulary, before subsampling), from the median time.
    pub words_per_sec: f64,
    /// Words trained on per second (after subsampling), from the median time.
    pub effective_words_per_sec: f64,
    /// Mean loss per prediction in the last epoch (of the last run).
    pub final_loss: f64,
}

/// Trains `reps` times on `corpus` with `cfg` on the CPU (the vocabulary scanned once,
/// untimed) and returns the median speed.
pub fn measure(corpus: &Path, cfg: &Config, reps: usize) -> Result<Word2VecCase> {
    let trainer = format!("CPU, {} threads", cfg.threads);
    measure_with(corpus, cfg, reps, trainer, |vocab, cfg| {
        train_with_vocab(corpus, vocab, cfg).map(|r| r.1)
    })
}

/// As [`measure`], with the GPU trainer.
pub fn measure_gpu(corpus: &Path, cfg: &Config, gpu: &Gpu, reps: usize) -> Result<Word2VecCase> {
    let trainer = format!("GPU {}, batch {}", gpu.describe(), cfg.gpu_batch);
    measure_with(corpus, cfg, reps, trainer, |vocab, cfg| {
        train_with_vocab_gpu(corpus, vocab, cfg, gpu).map(|r| r.1)
    })
}

fn measure_with(
    corpus: &Path,
    cfg: &Config,
    reps: usize,
    trainer: String,
    train: impl Fn(&Vocab, &Config) -> Result<TrainReport>,
) -> Result<Word2VecCase> {
    cfg.validate()?;
    let vocab = Vocab::scan(corpus, cfg.min_count, cfg.max_vocab)?;
    let cfg = Config {
        progress: false,
        ..cfg.clone()
    };
    let mut secs = Vec::new();
    let (mut effective, mut final_loss) = (0, f64::NAN);
    for _ in 0..reps.max(1) {
        let report = train(&vocab, &cfg)?;
        secs.push(report.seconds);
        effective = report.effective_words;
        final_loss = report.epoch_loss.last().copied().unwrap_or(f64::NAN);
    }
    let seconds = Stats::from_samples(&mut secs).expect("at least one run");
    let words = cfg.epochs as u64 * vocab.train_words();
    Ok(Word2VecCase {
        vocab_size: vocab.len(),
        train_words: vocab.train_words(),
        trainer,
        seconds,
        words_per_sec: words as f64 / seconds.median,
        effective_words_per_sec: effective as f64 / seconds.median,
        final_loss,
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

/// The cosine top-k scan (`most_similar`): one query against `rows` unit vectors.
#[derive(Clone, Debug, Serialize)]
pub struct TopKCase {
    pub rows: usize,
    pub dim: usize,
    pub k: usize,
    pub cpu: Stats,
    /// Wall time of one GPU query: upload, scan, select, readback.
    pub gpu: Option<Stats>,
}

/// Times the top-k cosine scan on the CPU twin and, when given, on the GPU kernel, for the
/// same random vectors and queries.
pub fn measure_top_k(
    gpu: Option<&crate::gpu::Gpu>,
    rows: usize,
    dim: usize,
    k: usize,
    reps: usize,
) -> Result<TopKCase> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let vectors: Vec<f32> = (0..rows * dim)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let unit = crate::cpu::word2vec::normalize_rows(&vectors, dim);
    let query: Vec<f32> = unit[..dim].to_vec();
    let cpu = super::time_reps(1, reps, || {
        crate::cpu::word2vec::top_k_cosine(&unit, dim, &query, k, &[0]);
        Ok(None)
    })?;
    let gpu_t = match gpu {
        Some(gpu) => {
            let spec = crate::ops::word2vec::CosineTopK::new(rows, dim, k);
            let index = crate::gpu::word2vec::CosineIndex::new(gpu, &spec, &vectors, 4)?;
            Some(
                super::time_reps(1, reps, || {
                    index.top_k(&query, &[0])?;
                    Ok(None)
                })?
                .wall,
            )
        }
        None => None,
    };
    Ok(TopKCase {
        rows,
        dim,
        k,
        cpu: cpu.wall,
        gpu: gpu_t,
    })
}
