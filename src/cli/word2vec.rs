//! `recur word2vec`, `recur similar`, `recur analogy`, `recur evaluate`: parsing and printing.

use std::path::PathBuf;

use anyhow::{bail, ensure, Result};

use super::distributed::Job;

use super::BackendArg;
use crate::gpu::Gpu;
use crate::memory::{bytes_of, Budget};
use crate::word2vec::{self, Arch, Config, Output, Vocab};

/// `word2vec::Config`'s fields, as its messages name them, and their flags.
const FLAGS: [(&str, &str); 11] = [
    ("vector size", "--size"),
    ("window", "--window"),
    ("epochs", "--epochs"),
    ("threads", "--threads"),
    ("GPU batch", "--gpu-batch"),
    ("learning rate", "--alpha"),
    ("minimum learning rate", "--min-alpha"),
    ("sample", "--sample"),
    ("max vocabulary size", "--max-vocab"),
    ("sync_words", "--sync-words"),
    ("0 negative samples", "--negative"),
];

#[derive(clap::Args)]
pub struct TrainArgs {
    /// The corpus: a text file, one sentence a line, tokens separated by whitespace.
    #[arg(long)]
    corpus: PathBuf,
    /// Where to write the vectors.
    #[arg(long)]
    out: PathBuf,
    /// CBOW: the mean of the context vectors predicts the centre word (the default).
    #[arg(long, conflicts_with = "skipgram")]
    cbow: bool,
    /// Skip-gram: each context word predicts the centre word.
    #[arg(long)]
    skipgram: bool,
    /// Negative sampling with K negatives (the default, K = 5).
    #[arg(long, value_name = "K", conflicts_with_all = ["hs", "softmax"])]
    negative: Option<usize>,
    /// Hierarchical softmax.
    #[arg(long, conflicts_with = "softmax")]
    hs: bool,
    /// Full softmax over the vocabulary (slow; small vocabularies only).
    #[arg(long)]
    softmax: bool,
    /// Vector size.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Maximum context distance.
    #[arg(long, default_value_t = 5)]
    window: usize,
    /// Drop words seen fewer times.
    #[arg(long, default_value_t = 5)]
    min_count: u64,
    /// Keep at most this many words (the most frequent).
    #[arg(long)]
    max_vocab: Option<usize>,
    /// Subsampling threshold for frequent words (0: off).
    #[arg(long, default_value_t = 1e-3)]
    sample: f64,
    /// Passes over the corpus.
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    /// Starting learning rate.
    #[arg(long, default_value_t = 0.025)]
    alpha: f32,
    /// The learning rate's floor.
    #[arg(long, default_value_t = 0.0001)]
    min_alpha: f32,
    /// Seed of the initial vectors and of the random draws (subsampling, window sizes,
    /// negative samples).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where to train: auto (a hardware GPU if there is one, else the CPU), the CPU
    /// (multithreaded, lock-free) or the GPU in batches (repeatable for a seed on a given
    /// adapter).
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendArg,
    /// CPU training threads (default: all cores; 1 is repeatable for a seed).
    #[arg(long)]
    threads: Option<usize>,
    /// GPU: centre words per batch.
    #[arg(long, default_value_t = Config::default().gpu_batch)]
    gpu_batch: usize,
    /// GPU: contributions to one row per batch beyond which its summed update is scaled
    /// down to this many (0: never).
    #[arg(long, default_value_t = Config::default().gpu_row_cap)]
    gpu_row_cap: u32,
    /// Write word2vec's binary format instead of text.
    #[arg(long)]
    binary: bool,
    /// Train data-parallel on the ranks of the MPI job this was started in (`mpirun -np N`,
    /// `srun`; needs a build with `--features mpi`; CPU backend): each rank trains on its
    /// byte range of the corpus with --threads threads; rank 0 writes the vectors.
    #[arg(long)]
    distributed: bool,
    /// With --distributed: each rank's words between two averages of the ranks' matrices.
    #[arg(long, default_value_t = Config::default().sync_words)]
    sync_words: u64,
}

pub fn train(a: TrainArgs) -> Result<()> {
    let job = Job::join(a.distributed)?;
    let result = train_on(a, &job);
    job.finish(result)
}

fn train_on(a: TrainArgs, job: &Job) -> Result<()> {
    let defaults = Config::default();
    let cfg = Config {
        arch: if a.skipgram {
            Arch::SkipGram
        } else {
            Arch::Cbow
        },
        output: if a.hs {
            Output::Hierarchical
        } else if a.softmax {
            Output::Softmax
        } else {
            Output::Negative(a.negative.unwrap_or(5))
        },
        size: a.size,
        window: a.window,
        min_count: a.min_count,
        max_vocab: a.max_vocab,
        sample: a.sample,
        epochs: a.epochs,
        alpha: a.alpha,
        min_alpha: a.min_alpha,
        seed: a.seed,
        threads: a.threads.unwrap_or(defaults.threads),
        gpu_batch: a.gpu_batch,
        gpu_row_cap: a.gpu_row_cap,
        progress: true,
        sync_words: a.sync_words,
    };
    cfg.validate().map_err(|e| super::name_flag(e, &FLAGS))?;
    ensure!(
        cfg.threads <= MAX_THREADS,
        "--threads {}: expected at most {MAX_THREADS}",
        cfg.threads
    );
    // Every run keeps a loss per epoch for each thread.
    let per_epoch = bytes_of((cfg.threads as u64 + 1).saturating_mul(16), cfg.epochs);
    Budget::host().check(
        format_args!("--epochs {} (a loss per epoch and thread)", cfg.epochs),
        per_epoch,
    )?;
    let vocab = Vocab::scan(&a.corpus, cfg.min_count, cfg.max_vocab)?;
    check_matrices(vocab.len(), cfg.size)?;
    // Data-parallel word2vec is the CPU trainer's (each rank with its --threads).
    let backend = match (a.backend, a.distributed) {
        (BackendArg::Gpu, true) => bail!(
            "--distributed --backend gpu: data-parallel word2vec trains on the CPU (--backend \
             cpu or auto), each rank with its --threads"
        ),
        (_, true) => crate::Backend::Cpu,
        (arg, false) => arg.open()?,
    };
    let (kv, report) = match backend {
        crate::Backend::Cpu => word2vec::train_with_vocab_on(&a.corpus, &vocab, &cfg, job.ranks())?,
        crate::Backend::Gpu(gpu) => word2vec::train_with_vocab_gpu(&a.corpus, &vocab, &cfg, &gpu)?,
    };
    if !job.is_root() {
        return Ok(());
    }
    if a.binary {
        word2vec::save_binary(&kv, &a.out)?;
    } else {
        word2vec::save_text(&kv, &a.out)?;
    }
    println!(
        "{} words in the vocabulary, {} corpus words per epoch, {} epochs in {:.1} s: {:.0} words/s ({:.0} after subsampling)",
        report.vocab_size,
        report.train_words,
        cfg.epochs,
        report.seconds,
        report.words_per_sec,
        report.effective_words_per_sec
    );
    let losses: Vec<String> = report
        .epoch_loss
        .iter()
        .map(|l| format!("{l:.4}"))
        .collect();
    println!("loss per epoch: {}", losses.join(" "));
    if job.ranks().count() > 1 {
        println!(
            "{} ranks averaged their vectors {} time{} (every {} words each); the ranks ended \
             identical",
            job.ranks().count(),
            report.averages,
            if report.averages == 1 { "" } else { "s" },
            cfg.sync_words
        );
    }
    println!("wrote {}", a.out.display());
    Ok(())
}

/// More training threads than this is a mistake (the corpus is cut into one range each).
const MAX_THREADS: usize = 1024;

/// The input and output matrices (`vocabulary x size` each) must fit in memory.
fn check_matrices(vocab: usize, size: usize) -> Result<()> {
    let values = (vocab as u64).checked_mul(size as u64);
    Budget::host().check(
        format_args!("--size {size} with {vocab} words (two matrices of {vocab} x {size} values)"),
        values.and_then(|v| bytes_of(v, 8)),
    )?;
    Ok(())
}

#[derive(clap::Args)]
pub struct SimilarArgs {
    /// A vectors file (word2vec text or binary).
    vectors: PathBuf,
    /// The word whose neighbours to list.
    word: String,
    /// How many neighbours.
    #[arg(short, default_value_t = 10)]
    k: usize,
    /// Scan the vocabulary on the GPU.
    #[arg(long)]
    gpu: bool,
}

fn print_list(list: &[(String, f32)]) {
    for (w, s) in list {
        println!("{s:.4}  {w}");
    }
}

pub fn similar(a: SimilarArgs) -> Result<()> {
    let kv = word2vec::load(&a.vectors)?;
    let list = if a.gpu {
        let index = kv.gpu_index(&Gpu::new()?, a.k.min(kv.len() - 1).max(1))?;
        kv.most_similar_gpu(&index, &[&a.word], &[])?
    } else {
        kv.most_similar(&[&a.word], &[], a.k)?
    };
    print_list(&list);
    Ok(())
}

#[derive(clap::Args)]
pub struct AnalogyArgs {
    /// A vectors file (word2vec text or binary).
    vectors: PathBuf,
    /// A, in "A is to B as C is to ?".
    a: String,
    /// B.
    b: String,
    /// C.
    c: String,
    /// How many answers to print.
    #[arg(short, default_value_t = 5)]
    k: usize,
    /// Scan the vocabulary on the GPU.
    #[arg(long)]
    gpu: bool,
}

pub fn analogy(a: AnalogyArgs) -> Result<()> {
    let kv = word2vec::load(&a.vectors)?;
    let list = if a.gpu {
        let index = kv.gpu_index(&Gpu::new()?, a.k.min(kv.len().saturating_sub(3)).max(1))?;
        kv.most_similar_gpu(&index, &[&a.b, &a.c], &[&a.a])?
    } else {
        kv.analogy(&a.a, &a.b, &a.c, a.k)?
    };
    print_list(&list);
    Ok(())
}

#[derive(clap::Args)]
pub struct EvaluateArgs {
    /// A vectors file (word2vec text or binary).
    vectors: PathBuf,
    /// Word pairs with human scores: `word1<TAB>word2<TAB>score` lines.
    #[arg(long, required_unless_present = "analogies")]
    pairs: Option<PathBuf>,
    /// Analogy questions in the questions-words.txt format.
    #[arg(long)]
    analogies: Option<PathBuf>,
    /// Run the analogies' scans over the vocabulary on the GPU.
    #[arg(long)]
    gpu: bool,
}

pub fn evaluate(a: EvaluateArgs) -> Result<()> {
    let kv = word2vec::load(&a.vectors)?;
    if let Some(p) = &a.pairs {
        let r = word2vec::evaluate_pairs(&kv, p)?;
        println!(
            "Spearman {:.4}  Pearson {:.4}  ({} pairs, {} out of vocabulary: {:.1}%)",
            r.spearman,
            r.pearson,
            r.pairs,
            r.oov,
            100.0 * r.oov_ratio
        );
    }
    if let Some(p) = &a.analogies {
        let r = if a.gpu {
            word2vec::evaluate_analogies_gpu(&kv, &Gpu::new()?, p)?
        } else {
            word2vec::evaluate_analogies(&kv, p)?
        };
        for s in r.sections.iter().chain([&r.overall]) {
            println!(
                "{:>30}: {:6.2}%  ({}/{}, {} skipped)",
                s.name,
                100.0 * s.accuracy(),
                s.correct,
                s.total,
                s.skipped
            );
        }
    }
    Ok(())
}
