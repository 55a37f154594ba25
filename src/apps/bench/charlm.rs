//! Training throughput of the character language model (`recur train`'s model): steps and
//! characters per second, GPU against CPU, on the shipped text.

use crate::error::Result;
use serde::Serialize;

use super::{time_reps, Stats};
use crate::apps::charlm::{default_text, CharLmOptions, CharVocab, Streams};
use crate::backend::Backend;
use crate::gpu::Gpu;
use crate::ops::optim::OptimConfig;
use crate::ops::optim::Optimizer;
use crate::train::model::SequenceModel;
use crate::train::trainer::{TrainConfig, Trainer};

/// One backend's training throughput for the character language model.
#[derive(Clone, Debug, Serialize)]
pub struct CharLmResult {
    /// The backend, as [`Backend::describe`] names it.
    pub backend: String,
    /// Hidden units per layer.
    pub hidden: usize,
    /// Parallel streams per step.
    pub batch: usize,
    /// Characters per stream per step (the truncated-BPTT length).
    pub seq_len: usize,
    /// Seconds per training step (forward, loss, backward, clip, update; the loss read back).
    pub step: Stats,
    /// Training steps per second, from the median step time.
    pub steps_per_sec: f64,
    /// Characters trained on per second (`batch * seq_len` per step), from the median step time.
    pub chars_per_sec: f64,
}

/// Times `reps` training steps (after `warmup`) of the model `opts` describes on each
/// backend: the GPU where `gpu` is given, and the CPU.
pub fn bench(
    gpu: Option<&Gpu>,
    opts: &CharLmOptions,
    warmup: usize,
    reps: usize,
) -> Result<Vec<CharLmResult>> {
    opts.validate()?;
    let text = default_text();
    let vocab = CharVocab::from_text(&text)?;
    let streams = Streams::new(vocab.encode(&text)?, opts.batch, opts.seq_len, "training")?;
    let spec = opts.model_spec(vocab.len());
    let model = SequenceModel::new(spec, opts.seed)?;
    let optim = OptimConfig::new(Optimizer::adam(opts.lr)).clip(opts.clip);
    let cfg = TrainConfig::new(optim).stateful(true);
    let mut backends = Vec::new();
    if let Some(gpu) = gpu {
        backends.push(Backend::Gpu(gpu.clone()));
    }
    backends.push(Backend::Cpu);
    let mut trainers = Vec::new();
    for backend in backends {
        trainers.push((
            backend.describe(),
            Trainer::new(&backend, model.clone(), cfg)?,
        ));
    }
    let chars = (opts.batch * opts.seq_len) as f64;
    let mut out = Vec::new();
    for (name, mut t) in trainers {
        let mut k = 0;
        let timings = time_reps(warmup, reps, || {
            t.step(&streams.chunk(k % streams.chunks()))?;
            k += 1;
            Ok(None)
        })?;
        let s = timings.wall.median;
        out.push(CharLmResult {
            backend: name,
            hidden: opts.hidden,
            batch: opts.batch,
            seq_len: opts.seq_len,
            step: timings.wall,
            steps_per_sec: 1.0 / s,
            chars_per_sec: chars / s,
        });
    }
    Ok(out)
}
