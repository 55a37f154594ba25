//! The GPU trainer: the CPU trainer's algorithm with the updates computed and applied on the
//! GPU in batches of many centre words.
//!
//! The host lists the work (`src/word2vec/gpu_batches.rs`): it reads the corpus line by
//! line, subsamples, cuts the centre words into batches of `gpu_batch`, and then, a group of
//! batches at a time on all cores, draws each centre's window and each item's negatives (or
//! looks up the Huffman path) and lists one work item per prediction (a context word
//! predicting the centre in skip-gram, the window's mean predicting it in CBOW), packed with
//! its inverse indexes. Each batch goes into a slot of the plan (one buffer write) and its
//! two dispatches are recorded (`src/gpu/word2vec_train.rs`); a submit carries
//! [`GpuTrainOptions::batches_per_submit`] batches, which the GPU runs in order while the
//! host builds the next group. The learning rate of a batch is the CPU trainer's linear
//! decay at the words read when the batch starts. The loss sums stay on the GPU and are read
//! back once every [`LOSS_SLOTS`] batches and at the end of each epoch.
//!
//! # Rows touched more than once in a batch
//!
//! A frequent word is the context, target or negative of many items in one batch, and with
//! hierarchical softmax the tree's top nodes are on nearly every item's path. The rule:
//!
//! 1. Every item's gradients are computed from the weights as they were at the start of the
//!    batch (synchronous minibatch SGD): no item sees another's update in the same batch;
//!    every batch sees all updates of the batches before it, whichever submit they were in.
//! 2. A row's contributions are summed in a fixed order (the order of the items, then of
//!    their slots) through the host-built inverse index, by the one invocation that owns
//!    each element of the row, then added once. No float atomics, so a seed gives the same
//!    bits on a given adapter (and gradient kernel) on every run, however many batches go
//!    in one submit or how many threads build the batches.
//! 3. A row reached by more than `gpu_row_cap` contributions in one batch gets its summed
//!    update scaled by `gpu_row_cap / n`. word2vec.c's sequential updates self-correct:
//!    after a few steps on a row its sigmoid saturates and later steps shrink. Summed from
//!    stale weights, hundreds of contributions to one row (the root of the Huffman tree is
//!    on every path) overshoot instead. The cap bounds any row's step per batch to that of
//!    `gpu_row_cap` sequential steps; rows reached fewer times get the exact minibatch sum.
//!
//! The measurements behind the defaults (`gpu_batch`, `gpu_row_cap`) and the cost model of
//! the kernels ([`plan_run`]) are in BENCHMARKS.md.

use std::path::Path;
use std::time::Instant;

use super::progress::Progress;
use crate::error::Result;

use super::gpu_batches::{HostBatches, Layer};
use super::sampling::Rng;
use super::train::{learning_rate, Config, TrainReport};
use super::vectors::KeyedVectors;
use super::vocab::Vocab;
use crate::gpu::word2vec_train::{batch_costs, DispatchCost, GradientKernel, PlanOptions};
use crate::gpu::{Gpu, Recorder, TrainPlan};
use crate::ops::word2vec_train::TrainSpec;

/// Batches whose loss sums the GPU holds before the host reads them back (reading waits for
/// the GPU to finish, so it is done rarely).
pub const LOSS_SLOTS: usize = 256;

/// Batches recorded into one submit by default. A submit costs some 20-50 us on a real GPU,
/// a batch's two dispatches some 10 us of launch: 32 batches make the submit's share small.
pub const BATCHES_PER_SUBMIT: usize = 32;

/// How the GPU trainer runs (its results depend on the gradient kernel's order of summation,
/// never on the batches per submit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuTrainOptions {
    /// The gradient kernel: [`GradientKernel::Rows`] for GPUs, [`GradientKernel::PerItem`]
    /// for adapters that run shaders on the CPU ([`Self::for_adapter`] picks).
    pub gradient_kernel: GradientKernel,
    /// Batches recorded into one submit (fewer if their slots would take more than the
    /// plan's memory budget for them).
    pub batches_per_submit: usize,
}

impl GpuTrainOptions {
    /// The gradient kernel made for `gpu`'s kind of adapter, [`BATCHES_PER_SUBMIT`] batches
    /// per submit.
    pub fn for_adapter(gpu: &Gpu) -> Self {
        Self {
            gradient_kernel: GradientKernel::for_adapter(gpu),
            batches_per_submit: BATCHES_PER_SUBMIT,
        }
    }

    /// As [`Self::for_adapter`], with the gradient kernel for a run of `spec`
    /// ([`GradientKernel::for_spec`]).
    pub fn for_spec(gpu: &Gpu, spec: &TrainSpec) -> Self {
        Self {
            gradient_kernel: GradientKernel::for_spec(gpu, spec),
            ..Self::for_adapter(gpu)
        }
    }
}

/// Scans the vocabulary of `corpus`, then trains on the GPU.
pub fn train_gpu(corpus: &Path, cfg: &Config, gpu: &Gpu) -> Result<(KeyedVectors, TrainReport)> {
    cfg.validate()?;
    let vocab = Vocab::scan(corpus, cfg.min_count, cfg.max_vocab)?;
    train_with_vocab_gpu(corpus, &vocab, cfg, gpu)
}

/// When the trainer submits and reads the loss sums back: a submit when the batch slots are
/// all used or the losses are due, the losses when their slots are full or an epoch ends.
struct Schedule {
    slots: usize,
    used: usize,
    pending: usize,
}

impl Schedule {
    /// After a batch (recorded into a slot if `recorded`): whether to submit now, and
    /// whether to read the losses after that.
    fn after_batch(&mut self, recorded: bool, ends_epoch: bool) -> (bool, bool) {
        if recorded {
            self.used += 1;
            self.pending += 1;
        }
        let read = self.pending > 0 && (ends_epoch || self.pending == LOSS_SLOTS);
        let submit = self.used > 0 && (self.used == self.slots || read || ends_epoch);
        if submit {
            self.used = 0;
        }
        if read {
            self.pending = 0;
        }
        (submit, read)
    }
}

/// Trains on `corpus` on the GPU with a vocabulary already built, with the options made for
/// `gpu`'s kind of adapter. See the module comment for what runs where and how updates to
/// the same row combine.
pub fn train_with_vocab_gpu(
    corpus: &Path,
    vocab: &Vocab,
    cfg: &Config,
    gpu: &Gpu,
) -> Result<(KeyedVectors, TrainReport)> {
    cfg.validate()?;
    let spec = Layer::new(cfg, vocab).spec(cfg, vocab)?;
    let options = GpuTrainOptions::for_spec(gpu, &spec);
    train_with_vocab_gpu_using(corpus, vocab, cfg, gpu, &options)
}

/// As [`train_with_vocab_gpu`], with the gradient kernel and the batches per submit given.
pub fn train_with_vocab_gpu_using(
    corpus: &Path,
    vocab: &Vocab,
    cfg: &Config,
    gpu: &Gpu,
    options: &GpuTrainOptions,
) -> Result<(KeyedVectors, TrainReport)> {
    cfg.validate()?;
    let (v, d) = (vocab.len(), cfg.size);
    let layer = Layer::new(cfg, vocab);
    let spec = layer.spec(cfg, vocab)?;
    // Before any host allocation: a vocabulary or size the adapter cannot bind is an error.
    TrainPlan::check_limits(gpu, &spec)?;
    // The CPU trainer's initialisation, from the same stream.
    let mut init = Rng::new(cfg.seed, u64::MAX);
    let syn0: Vec<f32> = (0..v * d)
        .map(|_| (init.uniform() - 0.5) / d as f32)
        .collect();
    let syn1 = vec![0.0f32; spec.out_rows * d];
    let plan_options = PlanOptions {
        gradient_kernel: options.gradient_kernel,
        batch_slots: options.batches_per_submit,
        loss_slots: LOSS_SLOTS,
    };
    let mut plan = TrainPlan::new(gpu, &spec, &syn0, &syn1, &plan_options)?;
    drop((syn0, syn1));

    let total = cfg.epochs as u64 * vocab.train_words();
    let bar = Progress::new(cfg.progress, total);
    let slots = plan.options().batch_slots;
    let mut host = HostBatches::new(corpus, vocab, cfg, &layer, spec);
    let mut schedule = Schedule {
        slots,
        used: 0,
        pending: 0,
    };
    let mut rec: Option<Recorder> = None;
    // Loss sums submitted but not yet read back: per slot, the epoch and the item count.
    let mut pending: Vec<(usize, u64)> = Vec::new();
    let mut epoch_loss = vec![0.0f64; cfg.epochs];
    let mut epoch_preds = vec![0u64; cfg.epochs];
    let start = Instant::now();
    // The GPU runs one group's submit while the host builds the next group.
    loop {
        let group = host.next_group(slots)?;
        if group.is_empty() {
            break;
        }
        for b in group {
            let info = b.info();
            let recorded = b.items() > 0;
            if recorded {
                let alpha = learning_rate(cfg, info.words_at_start, total);
                plan.write_batch(schedule.used, &b.packed, alpha, pending.len())?;
                plan.record(schedule.used, rec.get_or_insert_with(|| Recorder::new(gpu)))?;
                pending.push((info.epoch, b.items() as u64));
            }
            let (submit, read) = schedule.after_batch(recorded, info.ends_epoch);
            if submit {
                if let Some(r) = rec.take() {
                    r.submit()?;
                }
            }
            bar.set_position(info.words_now);
            if read {
                let sums = plan.loss_slots().read_range(0, pending.len())?;
                let (mut loss, mut preds) = (0.0f64, 0u64);
                for (&(e, n), &s) in pending.iter().zip(&sums) {
                    epoch_loss[e] += s as f64;
                    epoch_preds[e] += n;
                    loss += s as f64;
                    preds += n;
                }
                pending.clear();
                bar.set_message(|| {
                    format!(
                        "{:.0} words/s  alpha {:.5}  loss {:.4}",
                        info.words_now as f64 / start.elapsed().as_secs_f64(),
                        learning_rate(cfg, info.words_now, total),
                        loss / preds.max(1) as f64
                    )
                });
            }
        }
    }
    let syn0 = plan.syn0().to_vec()?;
    let seconds = start.elapsed().as_secs_f64();
    bar.finish();
    let report = TrainReport::new(
        vocab,
        total,
        host.source.effective,
        seconds,
        epoch_loss,
        &epoch_preds,
    );
    let kv = KeyedVectors::new(vocab.words().to_vec(), d, syn0)?;
    Ok((kv, report))
}

/// The dispatches of one kernel over a whole run, summed.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct KernelTotals {
    /// Dispatches of the kernel over the run.
    pub dispatches: u64,
    /// Workgroups, FLOPs and bytes summed over the dispatches.
    pub cost: DispatchCost,
}

/// What the GPU trainer would do for a run, from its host side alone (no GPU needed): the
/// batches, submits and dispatches, each dispatch's cost as the kernels' comments give it,
/// and how long the host took to build and pack the batches.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PlannedRun {
    /// Corpus words read (in the vocabulary, before subsampling), over all epochs.
    pub words: u64,
    /// Words trained on (after subsampling): the centre words.
    pub effective_words: u64,
    /// Batches recorded, over all epochs.
    pub batches: u64,
    /// Queue submits (each of up to `batches_per_submit` batches).
    pub submits: u64,
    /// Bytes written to the GPU for the batches (packed words and parameters).
    pub upload_bytes: u64,
    /// The gradient kernel, then the apply kernel.
    pub kernels: [KernelTotals; 2],
    /// Seconds the host spent reading, sampling and packing (on rayon's threads, as the
    /// trainer).
    pub host_seconds: f64,
}

/// Runs the GPU trainer's host side over `corpus` with `cfg` and `options`, batch for batch
/// and submit for submit as [`train_with_vocab_gpu_using`] would (with all the batches per
/// submit asked for: a plan may grant fewer where their slots would take too much memory),
/// and sums the cost of every dispatch it would record.
pub fn plan_run(
    corpus: &Path,
    vocab: &Vocab,
    cfg: &Config,
    options: &GpuTrainOptions,
) -> Result<PlannedRun> {
    cfg.validate()?;
    let layer = Layer::new(cfg, vocab);
    let spec = layer.spec(cfg, vocab)?;
    let slots = options.batches_per_submit.max(1);
    let mut host = HostBatches::new(corpus, vocab, cfg, &layer, spec);
    let mut schedule = Schedule {
        slots,
        used: 0,
        pending: 0,
    };
    let mut kernels = [KernelTotals::default(); 2];
    let (mut batches, mut submits, mut upload_bytes) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    loop {
        let group = host.next_group(slots)?;
        if group.is_empty() {
            break;
        }
        for b in group {
            let recorded = b.items() > 0;
            if recorded {
                batches += 1;
                upload_bytes += 4 * b.packed.words.len() as u64 + TrainPlan::PARAM_BYTES;
                for (total, c) in kernels.iter_mut().zip(batch_costs(
                    &spec,
                    &b.packed.layout,
                    options.gradient_kernel,
                )) {
                    let t = &mut total.cost;
                    total.dispatches += 1;
                    t.kernel = c.kernel;
                    t.invocations = c.invocations;
                    t.workgroups += c.workgroups;
                    t.flops += c.flops;
                    t.bytes_read += c.bytes_read;
                    t.bytes_written += c.bytes_written;
                }
            }
            submits += schedule.after_batch(recorded, b.info().ends_epoch).0 as u64;
        }
    }
    Ok(PlannedRun {
        words: cfg.epochs as u64 * vocab.train_words(),
        effective_words: host.source.effective,
        batches,
        submits,
        upload_bytes,
        kernels,
        host_seconds: start.elapsed().as_secs_f64(),
    })
}
