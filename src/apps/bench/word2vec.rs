//! word2vec training speed: words per second of the CPU and GPU trainers on a corpus file,
//! with the last epoch's mean loss as a like-for-like quality score (same objective, same
//! corpus, same settings).

use std::path::Path;

use crate::error::Result;
use serde::Serialize;

use super::Stats;
use crate::gpu::Gpu;
use crate::word2vec::gpu_train::{KernelTotals, PlannedRun};
use crate::word2vec::{
    plan_run, train_with_vocab, train_with_vocab_gpu_using, Config, GpuTrainOptions, TrainReport,
    Vocab,
};

/// One trainer's speed on one corpus, over repeated runs.
#[derive(Clone, Debug, Serialize)]
pub struct Word2VecCase {
    /// Words in the vocabulary (after `min_count` and `max_vocab`).
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

/// As [`measure`], with the GPU trainer run with `options`.
pub fn measure_gpu(
    corpus: &Path,
    cfg: &Config,
    gpu: &Gpu,
    options: &GpuTrainOptions,
    reps: usize,
) -> Result<Word2VecCase> {
    let trainer = format!(
        "GPU {}, batch {}, {:?} gradient kernel, {} batch(es) per submit",
        gpu.describe(),
        cfg.gpu_batch,
        options.gradient_kernel,
        options.batches_per_submit
    );
    measure_with(corpus, cfg, reps, trainer, |vocab, cfg| {
        train_with_vocab_gpu_using(corpus, vocab, cfg, gpu, options).map(|r| r.1)
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

/// A GPU's peak figures and the overheads the cost model adds: stated assumptions, not
/// measurements.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct GpuModel {
    /// The GPU's name, for table headers.
    pub name: &'static str,
    /// Memory bandwidth, bytes per second.
    pub bytes_per_sec: f64,
    /// FP32 throughput, FLOPs per second.
    pub flops_per_sec: f64,
    /// Streaming multiprocessors (compute units).
    pub sms: u32,
    /// Invocations an SM holds at once.
    pub threads_per_sm: u32,
    /// Launch overhead of one dispatch, seconds.
    pub launch_sec: f64,
    /// Overhead of one submit, seconds: the low and the high end of the range assumed.
    pub submit_sec: [f64; 2],
}

/// NVIDIA H100 SXM: 3.35 TB/s HBM3, 67 TFLOP/s FP32 (non-tensor), 132 SMs of 2,048 resident
/// threads; about 5 us of launch per dispatch and 20-50 us per submit through wgpu
/// (assumed).
pub const H100_SXM: GpuModel = GpuModel {
    name: "H100 SXM",
    bytes_per_sec: 3.35e12,
    flops_per_sec: 67e12,
    sms: 132,
    threads_per_sm: 2048,
    launch_sec: 5e-6,
    submit_sec: [20e-6, 50e-6],
};

/// One kernel's line of the cost table: per dispatch on average, and its modelled time.
#[derive(Clone, Debug, Serialize)]
pub struct KernelLine {
    /// The kernel's name.
    pub kernel: &'static str,
    /// Dispatches of the kernel over the whole run.
    pub dispatches: u64,
    /// Workgroups of a mean dispatch.
    pub workgroups: f64,
    /// Invocations per workgroup.
    pub invocations: u32,
    /// Invocations of a mean dispatch over what the GPU holds at once: below 1 the memory
    /// system is not kept busy and the roofline time is optimistic.
    pub fill: f64,
    /// FLOPs of a mean dispatch.
    pub flops: f64,
    /// Bytes a mean dispatch reads.
    pub bytes_read: f64,
    /// Bytes a mean dispatch writes.
    pub bytes_written: f64,
    /// max(FLOPs / peak, bytes / bandwidth) of a mean dispatch, seconds.
    pub roofline_sec: f64,
}

/// The cost model of a GPU training run: its kernels' lines and the modelled time and
/// speed on `gpu`.
#[derive(Clone, Debug, Serialize)]
pub struct ModelledRun {
    /// What was modelled, for the table's header.
    pub label: String,
    /// The GPU the times are modelled on.
    pub gpu: GpuModel,
    /// The run's batches, submits and dispatch costs, from its host side.
    pub planned: PlannedRun,
    /// Dispatches per batch (2 now; 4 before the apply kernels and the loss sum were fused).
    pub dispatches_per_batch: u64,
    /// One line per kernel: the gradient kernel, then the apply kernel.
    pub kernels: Vec<KernelLine>,
    /// Seconds on the GPU: kernels at their roofline time, then launches, then submits (at
    /// the low and the high end of the submit overhead).
    pub kernel_sec: f64,
    /// Seconds of launch overhead: every batch's dispatches at [`GpuModel::launch_sec`].
    pub launch_sec: f64,
    /// Seconds of submit overhead, at the low and the high end of [`GpuModel::submit_sec`].
    pub submit_sec: [f64; 2],
    /// Corpus words per second the model predicts (submit overhead high, low).
    pub words_per_sec: [f64; 2],
    /// Corpus words per second of the host side alone (reading, sampling, packing), as
    /// measured here on all of rayon's threads and on one: the trainer cannot go faster than
    /// its host.
    pub host_words_per_sec: f64,
    /// Threads `host_words_per_sec` was measured on (rayon's pool).
    pub host_threads: usize,
    /// Corpus words per second of the host side on one thread.
    pub host_words_per_sec_one_thread: f64,
}

impl ModelledRun {
    /// Models `planned` on `gpu`, with `dispatches_per_batch` launches per batch (the kernels'
    /// work is the same however it is split).
    /// `one_thread` is the same run's host side on one thread.
    pub fn new(
        label: String,
        planned: PlannedRun,
        one_thread: &PlannedRun,
        gpu: &GpuModel,
        dispatches_per_batch: u64,
    ) -> Self {
        let line = |k: &KernelTotals| {
            let n = k.dispatches.max(1) as f64;
            let c = &k.cost;
            let (flops, read, written) = (
                c.flops as f64 / n,
                c.bytes_read as f64 / n,
                c.bytes_written as f64 / n,
            );
            KernelLine {
                kernel: c.kernel,
                dispatches: k.dispatches,
                workgroups: c.workgroups as f64 / n,
                invocations: c.invocations,
                fill: c.workgroups as f64 / n * c.invocations as f64
                    / (gpu.sms as f64 * gpu.threads_per_sm as f64),
                flops,
                bytes_read: read,
                bytes_written: written,
                roofline_sec: (flops / gpu.flops_per_sec).max((read + written) / gpu.bytes_per_sec),
            }
        };
        let kernels: Vec<KernelLine> = planned.kernels.iter().map(line).collect();
        let kernel_sec: f64 = kernels
            .iter()
            .map(|k| k.roofline_sec * k.dispatches as f64)
            .sum();
        let launch_sec = (planned.batches * dispatches_per_batch) as f64 * gpu.launch_sec;
        let submit_sec = gpu.submit_sec.map(|s| planned.submits as f64 * s);
        let words = planned.words as f64;
        let words_per_sec = [
            words / (kernel_sec + launch_sec + submit_sec[1]),
            words / (kernel_sec + launch_sec + submit_sec[0]),
        ];
        Self {
            label,
            gpu: *gpu,
            host_words_per_sec: words / planned.host_seconds,
            host_threads: rayon::current_num_threads(),
            host_words_per_sec_one_thread: words / one_thread.host_seconds,
            planned,
            dispatches_per_batch,
            kernels,
            kernel_sec,
            launch_sec,
            submit_sec,
            words_per_sec,
        }
    }

    /// The model as a Markdown table, then its totals.
    pub fn table(&self) -> String {
        let p = &self.planned;
        let mut t = format!(
            "{} on {} (modelled): {} batches, {} submits, {} dispatches per batch\n\
             | kernel | dispatches | workgroups x invocations | fill | MFLOP | MB read | MB written | roofline us |\n\
             |---|---|---|---|---|---|---|---|\n",
            self.label, self.gpu.name, p.batches, p.submits, self.dispatches_per_batch
        );
        for k in &self.kernels {
            t += &format!(
                "| {} | {} | {:.0} x {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
                k.kernel,
                k.dispatches,
                k.workgroups,
                k.invocations,
                k.fill,
                k.flops / 1e6,
                k.bytes_read / 1e6,
                k.bytes_written / 1e6,
                k.roofline_sec * 1e6
            );
        }
        let per_batch = |s: f64| s / p.batches.max(1) as f64 * 1e6;
        t += &format!(
            "per batch: kernels {:.2} us + launches {:.2} us + submits {:.2}-{:.2} us; \
             {:.2}-{:.2}M words/s modelled; {:.0} KB uploaded per batch ({:.2} GB/s at that \
             speed); the host alone (measured here) {:.2}M words/s on {} threads, {:.2}M on 1",
            per_batch(self.kernel_sec),
            per_batch(self.launch_sec),
            per_batch(self.submit_sec[0]),
            per_batch(self.submit_sec[1]),
            self.words_per_sec[0] / 1e6,
            self.words_per_sec[1] / 1e6,
            p.upload_bytes as f64 / p.batches.max(1) as f64 / 1e3,
            p.upload_bytes as f64 / p.words as f64 * self.words_per_sec[1] / 1e9,
            self.host_words_per_sec / 1e6,
            self.host_threads,
            self.host_words_per_sec_one_thread / 1e6
        );
        t
    }
}

/// The cost model of the GPU trainer on `corpus` with `cfg` and `options` (its host side
/// run once, no GPU needed).
pub fn model_gpu(
    corpus: &Path,
    cfg: &Config,
    options: &GpuTrainOptions,
    label: String,
    dispatches_per_batch: u64,
    gpu: &GpuModel,
) -> Result<ModelledRun> {
    let vocab = Vocab::scan(corpus, cfg.min_count, cfg.max_vocab)?;
    let planned = plan_run(corpus, &vocab, cfg, options)?;
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .map_err(|e| crate::error::err!(Limit, "a thread pool of 1 thread: {e}"))?
        .install(|| plan_run(corpus, &vocab, cfg, options))?;
    Ok(ModelledRun::new(
        label,
        planned,
        &one_thread,
        gpu,
        dispatches_per_batch,
    ))
}

/// Writes a corpus of `words` tokens drawn from a Zipf distribution over `vocab` words
/// (`w0`, `w1`, ...), 20 to a line: a stand-in for natural text when no corpus is given.
pub fn synthetic_corpus(path: &Path, words: usize, vocab: usize, seed: u64) -> Result<()> {
    use crate::word2vec::sampling::{AliasTable, Rng};
    crate::error::ensure!(
        vocab > 0,
        Invalid,
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
    /// Vectors scanned.
    pub rows: usize,
    /// Dimensions per vector.
    pub dim: usize,
    /// Nearest neighbours returned per query.
    pub k: usize,
    /// Seconds per query of the CPU scan.
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
