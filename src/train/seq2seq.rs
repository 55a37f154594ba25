//! An encoder-decoder (sequence to sequence; Sutskever et al. 2014, and Keras' "encoder
//! LSTM with `return_state=True`, decoder LSTM with `initial_state=encoder_states`"): an
//! encoder (embedding and recurrent stack) reads the source; its final states are the
//! initial states of a decoder (embedding, a recurrent stack of the same cell and sizes,
//! and a dense softmax at every step), which reads the target shifted right behind a start
//! token (teacher forcing) and learns to predict the target. Source and target lengths
//! differ. The gradient of the decoder's initial states flows back into the encoder.
//!
//! Parameters carry the names a PyTorch module with children `encoder` (`embedding`, `rnn`)
//! and `decoder` (`embedding`, `rnn`, `fc`, as in [`SequenceModel`]) gives them. Batches
//! are time-major: step `t` of sequence `b` is row `t * batch + b`. Sources of different
//! lengths are padded and carry their lengths ([`Seq2SeqBatch::padded`]): the encoder hands on
//! each source's state at its last valid step (PyTorch's packed sequences), and targets are
//! padded with the model's `ignore_index`. Dropout (`Seq2SeqSpec::dropout`, the rates of
//! [`SequenceModel`]) applies to both stacks in training, with masks of their own.

use std::collections::BTreeMap;

use anyhow::{bail, ensure, Context, Result};

use super::model::{
    tensors_as, with_prefix, Batch, DropoutRates, EmbeddingSpec, Head, Inputs, Loss, ModelSpec,
    SequenceModel, Targets,
};
use super::optimizer::{CpuOptimizer, GpuOptimizer, OptimConfig};
use super::trainer::{check_loss, loss_staging, submit_and_read_loss, GpuCrossEntropy};
use crate::cpu::Real;
use crate::gpu::{Gpu, GpuTensor, Recorder};
use crate::nn::recurrent::{CpuTape, TrainKey};
use crate::nn::{
    Embedding, GpuDense, GpuEmbedding, GpuRecurrent, Recurrent, RecurrentConfig, Tensors,
};
use crate::ops::recurrent::CellKind;

/// The architecture of an encoder-decoder.
#[derive(Clone, Debug, PartialEq)]
pub struct Seq2SeqSpec {
    pub source_vocab: usize,
    /// The decoder's input and output vocabulary (the start token included).
    pub target_vocab: usize,
    /// Embedding width of both sides.
    pub embed: usize,
    pub cell: String,
    pub hidden_size: usize,
    pub num_layers: usize,
    /// A target id that counts for nothing (e.g. padding after an end marker).
    pub ignore_index: Option<u32>,
    /// Dropout of both stacks in training: on what each stack reads (its embeddings),
    /// between stacked layers, and on the recurrent state (one mask per sequence).
    pub dropout: DropoutRates,
}

/// A batch of `batch` source sequences of `source_steps` ids and their targets of
/// `target_steps` ids, all time-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Seq2SeqBatch {
    pub batch: usize,
    pub source_steps: usize,
    pub source: Vec<u32>,
    /// Each source's length when they differ (the rest of its steps is padding), else
    /// `None`: every source is `source_steps` long.
    pub source_lengths: Option<Vec<usize>>,
    pub target_steps: usize,
    /// What the decoder reads: the start token, then the targets but the last.
    pub decoder_input: Vec<u32>,
    pub targets: Vec<u32>,
}

impl Seq2SeqBatch {
    /// A teacher-forced batch from per-sequence sources and targets (each side of one
    /// length), the decoder reading `start` first.
    pub fn teacher_forced(sources: &[Vec<u32>], targets: &[Vec<u32>], start: u32) -> Result<Self> {
        check_pairs(sources, targets)?;
        let (ts, tt) = (sources[0].len(), targets[0].len());
        for (b, (s, t)) in sources.iter().zip(targets).enumerate() {
            ensure!(
                s.len() == ts && t.len() == tt,
                "sequence {b}: source of {} ids and target of {} ids, the batch has {ts} and {tt} \
                 (Seq2SeqBatch::padded takes sequences of different lengths)",
                s.len(),
                t.len()
            );
        }
        Self::padded(sources, targets, start, 0, 0)
    }

    /// A teacher-forced batch from sources and targets of any lengths (at least one id
    /// each): sources are padded with `source_pad` to the longest and keep their lengths;
    /// targets (and what the decoder reads) are padded with `target_pad`, which should be the
    /// model's `ignore_index` so that padding counts for nothing in the loss.
    pub fn padded(
        sources: &[Vec<u32>],
        targets: &[Vec<u32>],
        start: u32,
        source_pad: u32,
        target_pad: u32,
    ) -> Result<Self> {
        check_pairs(sources, targets)?;
        let longest = |seqs: &[Vec<u32>]| seqs.iter().map(Vec::len).max().unwrap_or(0);
        let (ts, tt) = (longest(sources), longest(targets));
        let batch = sources.len();
        let mut source = vec![source_pad; ts * batch];
        let mut decoder_input = vec![target_pad; tt * batch];
        let mut target = vec![target_pad; tt * batch];
        for (b, (s, t)) in sources.iter().zip(targets).enumerate() {
            ensure!(
                !s.is_empty() && !t.is_empty(),
                "sequence {b}: source of {} ids and target of {} ids, each needs at least one",
                s.len(),
                t.len()
            );
            for (i, &id) in s.iter().enumerate() {
                source[i * batch + b] = id;
            }
            for (i, &id) in t.iter().enumerate() {
                target[i * batch + b] = id;
                decoder_input[i * batch + b] = if i == 0 { start } else { t[i - 1] };
            }
        }
        let lengths: Vec<usize> = sources.iter().map(Vec::len).collect();
        Ok(Self {
            batch,
            source_steps: ts,
            source,
            source_lengths: lengths.iter().any(|&l| l < ts).then_some(lengths),
            target_steps: tt,
            decoder_input,
            targets: target,
        })
    }

    /// The decoder's part as a [`Batch`] of its own.
    fn decoder_batch(&self) -> Batch {
        Batch {
            batch: self.batch,
            steps: self.target_steps,
            inputs: Inputs::Ids(self.decoder_input.clone()),
            targets: Targets::Classes(self.targets.clone()),
            lengths: None,
        }
    }
}

fn check_pairs(sources: &[Vec<u32>], targets: &[Vec<u32>]) -> Result<()> {
    ensure!(
        !sources.is_empty() && sources.len() == targets.len(),
        "a batch needs as many targets as sources (> 0), got {} sources and {} targets",
        sources.len(),
        targets.len()
    );
    Ok(())
}

/// XORed into the dropout seed for the encoder's masks.
const ENCODER_SEED_OFFSET: u64 = 0x9e37_79b9_7f4a_7c15;

/// What the CPU encoder hands on: final states (c empty without a cell state), and what
/// its backward needs.
struct Encoded<T> {
    h_n: Vec<T>,
    c_n: Vec<T>,
    tape: CpuTape<T>,
    /// The encoder stack's parameters under their own names.
    params: BTreeMap<String, Vec<T>>,
}

/// An encoder-decoder and its parameters.
#[derive(Clone, Debug)]
pub struct Seq2Seq {
    pub spec: Seq2SeqSpec,
    pub encoder_embedding: Embedding,
    pub encoder: Recurrent,
    /// Embedding, recurrent stack and dense softmax head at every step.
    pub decoder: SequenceModel,
}

/// The CPU results of one batch: the mean loss, the decoder's dense outputs
/// [target_steps * batch, target_vocab], and (when asked) the gradients by name.
pub struct Seq2SeqPass<T> {
    pub loss: T,
    pub output: Vec<T>,
    pub grads: Option<BTreeMap<String, Vec<T>>>,
}

impl Seq2Seq {
    /// A fresh model, every layer initialised from `seed`.
    pub fn new(spec: Seq2SeqSpec, seed: u64) -> Result<Self> {
        let encoder_embedding = Embedding::new(spec.source_vocab, spec.embed, seed ^ 0x2545)?;
        let mut c =
            RecurrentConfig::new(CellKind::parse(&spec.cell)?, spec.embed, spec.hidden_size);
        c.num_layers = spec.num_layers;
        let encoder = Recurrent::new(spec.dropout.applied_to(&c)?, seed ^ 0x7f4a)?;
        let decoder = SequenceModel::new(
            ModelSpec {
                embedding: Some(EmbeddingSpec {
                    input_dim: spec.target_vocab,
                    output_dim: spec.embed,
                    padding: None,
                    trainable: true,
                }),
                input_size: 0,
                cell: spec.cell.clone(),
                hidden_size: spec.hidden_size,
                num_layers: spec.num_layers,
                bidirectional: false,
                outputs: spec.target_vocab,
                head: Head::EveryStep,
                loss: Loss::CrossEntropy {
                    ignore_index: spec.ignore_index,
                },
                dropout: spec.dropout,
            },
            seed,
        )?;
        Ok(Self {
            spec,
            encoder_embedding,
            encoder,
            decoder,
        })
    }

    /// The dropout keys of training step `step` (counted from 0) for the encoder and the
    /// decoder, if the model has dropout: the encoder's seed is offset so that layers of the
    /// same shape on the two sides draw different masks.
    pub fn train_keys(&self, step: u64) -> (Option<TrainKey>, Option<TrainKey>) {
        let decoder = self.decoder.train_key(step);
        let encoder = decoder.map(|k| TrainKey {
            seed: k.seed ^ ENCODER_SEED_OFFSET,
            step: k.step,
        });
        (encoder, decoder)
    }

    /// Every parameter under its PyTorch name.
    pub fn named_params(&self) -> Tensors {
        let mut out = Tensors::new();
        out.insert(
            "encoder.embedding.weight".into(),
            self.encoder_embedding.weight.clone(),
        );
        for (k, v) in &self.encoder.params {
            out.insert(format!("encoder.rnn.{k}"), v.clone());
        }
        for (k, v) in self.decoder.named_params() {
            out.insert(format!("decoder.{k}"), v);
        }
        out
    }

    /// Every parameter as `T`, by name.
    pub fn params_as<T: Real>(&self) -> BTreeMap<String, Vec<T>> {
        tensors_as(self.named_params())
    }

    /// Sets every parameter from `T` values by name (all must be present, finite, with
    /// their sizes).
    pub fn set_params_from<T: Real>(&mut self, p: &BTreeMap<String, Vec<T>>) -> Result<()> {
        let mut named = self.named_params();
        for (name, t) in named.iter_mut() {
            let v = p
                .get(name)
                .with_context(|| format!("parameter {name} is missing"))?;
            ensure!(
                v.len() == t.data.len(),
                "parameter {name} has {} values, expected {}",
                v.len(),
                t.data.len()
            );
            t.data = v.iter().map(|x| x.to_f32().unwrap_or(f32::NAN)).collect();
            if let Some(i) = t.data.iter().position(|x| !x.is_finite()) {
                bail!("parameter {name} holds a non-finite value at index {i}");
            }
        }
        self.encoder_embedding.weight = named["encoder.embedding.weight"].clone();
        for (k, v) in self.encoder.params.iter_mut() {
            *v = named[&format!("encoder.rnn.{k}")].clone();
        }
        self.decoder.set_params(&with_prefix(&named, "decoder."))
    }

    /// Checks a batch against the model: shapes and ids on both sides, and the targets.
    pub fn check_batch(&self, b: &Seq2SeqBatch) -> Result<()> {
        ensure!(
            b.batch > 0 && b.source_steps > 0 && b.target_steps > 0,
            "a batch needs batch, source steps and target steps > 0, got {} x {} and {}",
            b.batch,
            b.source_steps,
            b.target_steps
        );
        ensure!(
            b.source.len() == b.batch * b.source_steps,
            "{} source steps x batch {} need {} ids, got {}",
            b.source_steps,
            b.batch,
            b.batch * b.source_steps,
            b.source.len()
        );
        self.encoder_embedding.op().validate_ids(&b.source)?;
        if let Some(lengths) = &b.source_lengths {
            self.encoder
                .shape(0, 0, b.batch, b.source_steps)
                .validate(Some(lengths))
                .context("source lengths")?;
        }
        self.decoder.check_batch(&b.decoder_batch())
    }

    /// Runs the encoder: its final states are the decoder's initial states.
    fn encode_cpu<T: Real>(
        &self,
        p: &BTreeMap<String, Vec<T>>,
        b: &Seq2SeqBatch,
        train: Option<TrainKey>,
    ) -> Result<Encoded<T>> {
        let x = self.encoder_embedding.forward_cpu(
            &p["encoder.embedding.weight"],
            &b.source,
            b.source_steps,
            b.batch,
        )?;
        let params = with_prefix(p, "encoder.rnn.");
        let lengths = b.source_lengths.as_deref();
        let (out, tape) = self.encoder.forward_cpu_with(
            &params,
            &x,
            b.batch,
            b.source_steps,
            lengths,
            None,
            None,
            train,
        )?;
        Ok(Encoded {
            h_n: out.h_n,
            c_n: out.c_n,
            tape,
            params,
        })
    }

    /// Forward, loss and (with `grads`) backward of a checked batch on the CPU, without
    /// dropout.
    pub fn pass_cpu<T: Real>(
        &self,
        p: &BTreeMap<String, Vec<T>>,
        b: &Seq2SeqBatch,
        grads: bool,
    ) -> Result<Seq2SeqPass<T>> {
        self.pass_cpu_with(p, b, grads, None)
    }

    /// [`Self::pass_cpu`] as training step `step` (counted from 0) if given: with the
    /// dropout masks of [`Self::train_keys`], the same the GPU trainer draws.
    pub fn pass_cpu_with<T: Real>(
        &self,
        p: &BTreeMap<String, Vec<T>>,
        b: &Seq2SeqBatch,
        grads: bool,
        step: Option<u64>,
    ) -> Result<Seq2SeqPass<T>> {
        let (enc_key, dec_key) = step.map_or((None, None), |s| self.train_keys(s));
        let enc = self.encode_cpu(p, b, enc_key)?;
        let lstm = self.encoder.config.cell.has_cell_state();
        let dec_p = with_prefix(p, "decoder.");
        let pass = self.decoder.pass_cpu_with(
            &dec_p,
            &b.decoder_batch(),
            Some(&enc.h_n),
            lstm.then_some(&enc.c_n[..]),
            grads,
            dec_key,
        )?;
        let grads = match pass.grads {
            Some(dec_grads) => {
                let mut g: BTreeMap<String, Vec<T>> = dec_grads
                    .into_iter()
                    .map(|(k, v)| (format!("decoder.{k}"), v))
                    .collect();
                let eg = self.encoder.backward_cpu(
                    &enc.params,
                    &enc.tape,
                    None,
                    Some(&pass.d_h0),
                    lstm.then_some(&pass.d_c0[..]),
                )?;
                for (k, v) in eg.params {
                    g.insert(format!("encoder.rnn.{k}"), v);
                }
                g.insert(
                    "encoder.embedding.weight".into(),
                    self.encoder_embedding.backward_cpu(&b.source, &eg.input)?,
                );
                Some(g)
            }
            None => None,
        };
        Ok(Seq2SeqPass {
            loss: pass.loss,
            output: pass.output,
            grads,
        })
    }

    /// Greedy decoding on the CPU: encodes one source sequence, then feeds the decoder its
    /// own most likely token, starting from `start`, for `length` tokens.
    pub fn translate_cpu(&self, source: &[u32], start: u32, length: usize) -> Result<Vec<u32>> {
        let one = Seq2SeqBatch::teacher_forced(&[source.to_vec()], &[vec![start]], start)?;
        self.check_batch(&one)?;
        let p = self.params_as::<f32>();
        let enc = self.encode_cpu(&p, &one, None)?;
        let (mut h, mut c) = (enc.h_n, enc.c_n);
        let lstm = self.encoder.config.cell.has_cell_state();
        let dec_p = with_prefix(&p, "decoder.");
        let mut token = start;
        let mut out = Vec::with_capacity(length);
        for _ in 0..length {
            let step = Batch {
                batch: 1,
                steps: 1,
                inputs: Inputs::Ids(vec![token]),
                targets: Targets::Classes(vec![0]),
                lengths: None,
            };
            let pass =
                self.decoder
                    .pass_cpu(&dec_p, &step, Some(&h), lstm.then_some(&c[..]), false)?;
            let best = (0..pass.output.len())
                .max_by(|&a, &b| pass.output[a].total_cmp(&pass.output[b]))
                .context("the decoder has no outputs")?;
            token = best as u32;
            out.push(token);
            (h, c) = (pass.h_n, pass.c_n);
        }
        Ok(out)
    }

    /// The parameter names in the order both trainers clip and update them.
    fn update_order(&self) -> Vec<String> {
        let names: Vec<String> = self.named_params().into_keys().collect();
        let mut order: Vec<String> = names
            .iter()
            .filter(|n| n.starts_with("encoder."))
            .cloned()
            .collect();
        order.extend(names.iter().filter(|n| n.starts_with("decoder.")).cloned());
        order
    }
}

/// The batch shape a trainer is planned for, and its optimizer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Seq2SeqTrainConfig {
    pub batch: usize,
    pub source_steps: usize,
    pub target_steps: usize,
    pub optim: OptimConfig,
}

fn check_shape(cfg: &Seq2SeqTrainConfig, b: &Seq2SeqBatch) -> Result<()> {
    ensure!(
        (b.batch, b.source_steps, b.target_steps)
            == (cfg.batch, cfg.source_steps, cfg.target_steps),
        "batch of {} sequences, {} source and {} target steps; the trainer was planned for \
         {}, {} and {}",
        b.batch,
        b.source_steps,
        b.target_steps,
        cfg.batch,
        cfg.source_steps,
        cfg.target_steps
    );
    Ok(())
}

/// The GPU trainer of an encoder-decoder: a step (both sides forward, the state handed
/// over on the device, loss, both sides backward with the state gradient handed back,
/// clipping, update) is one submit that reads back only the loss.
pub struct GpuSeq2SeqTrainer {
    gpu: Gpu,
    cfg: Seq2SeqTrainConfig,
    model: Seq2Seq,
    encoder_embedding: GpuEmbedding,
    encoder: GpuRecurrent,
    decoder_embedding: GpuEmbedding,
    decoder: GpuRecurrent,
    dense: GpuDense,
    loss: GpuCrossEntropy,
    optim: GpuOptimizer,
    staging: wgpu::Buffer,
}

impl GpuSeq2SeqTrainer {
    pub fn new(gpu: &Gpu, model: Seq2Seq, cfg: Seq2SeqTrainConfig) -> Result<Self> {
        cfg.optim.validate()?;
        let (b, ts, tt) = (cfg.batch, cfg.source_steps, cfg.target_steps);
        ensure!(
            b > 0 && ts > 0 && tt > 0,
            "a trainer needs batch, source steps and target steps > 0"
        );
        let encoder = GpuRecurrent::new(gpu, &model.encoder, b, ts, true)?;
        let encoder_embedding = GpuEmbedding::new(
            gpu,
            &model.encoder_embedding,
            b * ts,
            encoder.input(),
            encoder.input_grad(),
        )?;
        let decoder = GpuRecurrent::new(gpu, &model.decoder.rnn, b, tt, true)?;
        let decoder_embedding = GpuEmbedding::new(
            gpu,
            model
                .decoder
                .embedding
                .as_ref()
                .context("decoder embedding")?,
            b * tt,
            decoder.input(),
            decoder.input_grad(),
        )?;
        let rows = model.decoder.head_rows(b, tt);
        let dense = GpuDense::new(
            gpu,
            &model.decoder.dense,
            decoder.output(),
            rows,
            decoder.output_grad(),
            true,
        )?;
        let loss = GpuCrossEntropy::new(
            gpu,
            rows.rows,
            model.spec.target_vocab,
            model.spec.ignore_index,
            dense.output(),
            dense.output_grad().context("dense gradients")?,
        )?;
        let mut named: BTreeMap<String, (&GpuTensor, &GpuTensor)> = BTreeMap::new();
        let sides = [
            ("encoder", &encoder_embedding, &encoder),
            ("decoder", &decoder_embedding, &decoder),
        ];
        for (side, emb, rnn) in sides {
            let g = emb.table_grad().context("embedding gradient")?;
            named.insert(format!("{side}.embedding.weight"), (emb.table(), g));
            let grads = rnn.param_grads().context("recurrent gradients")?;
            for (name, p) in rnn.params() {
                named.insert(format!("{side}.rnn.{name}"), (p, &grads[name]));
            }
        }
        let dense_grads = dense.param_grads().context("dense gradients")?;
        for ((name, p), (_, g)) in dense.params().into_iter().zip(dense_grads) {
            named.insert(format!("decoder.fc.{name}"), (p, g));
        }
        let ordered: Vec<(String, &GpuTensor, &GpuTensor)> = model
            .update_order()
            .into_iter()
            .map(|n| {
                let (p, g) = named[&n];
                (n, p, g)
            })
            .collect();
        let optim = GpuOptimizer::new(gpu, cfg.optim, &ordered)?;
        let staging = loss_staging(gpu);
        Ok(Self {
            gpu: gpu.clone(),
            cfg,
            model,
            encoder_embedding,
            encoder,
            decoder_embedding,
            decoder,
            dense,
            loss,
            optim,
            staging,
        })
    }

    fn write_batch(&self, b: &Seq2SeqBatch) -> Result<()> {
        check_shape(&self.cfg, b)?;
        self.model.check_batch(b)?;
        self.encoder.set_lengths(b.source_lengths.as_deref())?;
        self.encoder_embedding.write_ids(&b.source)?;
        self.decoder_embedding.write_ids(&b.decoder_input)?;
        self.loss.write_targets(&b.targets)
    }

    fn record_forward_loss(&self, rec: &mut Recorder) -> Result<()> {
        self.encoder_embedding.record_forward(rec);
        self.encoder.record_forward(rec)?;
        self.encoder.record_state_to(&self.decoder, rec)?;
        self.decoder_embedding.record_forward(rec);
        self.decoder.record_forward(rec)?;
        self.dense.record_forward(rec);
        self.loss.plan.record(rec);
        Ok(())
    }

    /// Training mode for the next step's dropout masks, or evaluation (`None`).
    fn set_training(&self, step: Option<u64>) -> Result<()> {
        let (enc_key, dec_key) = step.map_or((None, None), |s| self.model.train_keys(s));
        self.encoder.set_training(enc_key)?;
        self.decoder.set_training(dec_key)
    }

    /// One training step; returns the batch's mean loss before the update.
    pub fn step(&mut self, b: &Seq2SeqBatch) -> Result<f32> {
        self.write_batch(b)?;
        self.set_training(Some(self.optim.steps()))?;
        let mut rec = Recorder::new(&self.gpu);
        self.record_forward_loss(&mut rec)?;
        self.dense.record_backward(&mut rec)?;
        self.decoder.record_backward(&mut rec)?;
        self.decoder_embedding.record_backward(&mut rec);
        // The encoder's outputs feed nothing but its final state: their gradient is zero.
        let d_enc_out = self.encoder.output_grad().context("encoder gradients")?;
        rec.clear(d_enc_out.buffer());
        self.encoder
            .record_state_grads_from(&self.decoder, &mut rec)?;
        self.encoder.record_backward(&mut rec)?;
        self.encoder_embedding.record_backward(&mut rec);
        self.optim.record(&mut rec)?;
        let loss = submit_and_read_loss(&self.gpu, rec, self.loss.plan.stats(), &self.staging)?;
        check_loss(loss, self.optim.steps())
    }

    /// Forward and loss only (teacher forced).
    pub fn evaluate(&mut self, b: &Seq2SeqBatch) -> Result<f32> {
        self.write_batch(b)?;
        self.set_training(None)?;
        let mut rec = Recorder::new(&self.gpu);
        self.record_forward_loss(&mut rec)?;
        submit_and_read_loss(&self.gpu, rec, self.loss.plan.stats(), &self.staging)
    }

    /// The decoder's dense outputs [target_steps * batch, target_vocab], teacher forced.
    pub fn predict(&mut self, b: &Seq2SeqBatch) -> Result<Vec<f32>> {
        self.evaluate(b)?;
        self.dense.output().to_vec()
    }

    pub fn steps_done(&self) -> u64 {
        self.optim.steps()
    }

    /// The model with its current parameters (readbacks).
    pub fn model(&self) -> Result<Seq2Seq> {
        let mut p: BTreeMap<String, Vec<f32>> = BTreeMap::new();
        let sides = [
            ("encoder", &self.encoder_embedding, &self.encoder),
            ("decoder", &self.decoder_embedding, &self.decoder),
        ];
        for (side, emb, rnn) in sides {
            p.insert(format!("{side}.embedding.weight"), emb.table().to_vec()?);
            for (name, t) in rnn.params() {
                p.insert(format!("{side}.rnn.{name}"), t.to_vec()?);
            }
        }
        for (name, t) in self.dense.params() {
            p.insert(format!("decoder.fc.{name}"), t.to_vec()?);
        }
        let mut m = self.model.clone();
        m.set_params_from(&p)?;
        Ok(m)
    }
}

/// The CPU twin of [`GpuSeq2SeqTrainer`], in f32.
pub struct CpuSeq2SeqTrainer {
    cfg: Seq2SeqTrainConfig,
    model: Seq2Seq,
    params: BTreeMap<String, Vec<f32>>,
    order: Vec<String>,
    optim: CpuOptimizer,
}

impl CpuSeq2SeqTrainer {
    pub fn new(model: Seq2Seq, cfg: Seq2SeqTrainConfig) -> Result<Self> {
        let params = model.params_as::<f32>();
        let order = model.update_order();
        let sizes: Vec<(String, usize)> =
            order.iter().map(|n| (n.clone(), params[n].len())).collect();
        let optim = CpuOptimizer::new(cfg.optim, &sizes)?;
        Ok(Self {
            cfg,
            model,
            params,
            order,
            optim,
        })
    }

    /// One training step; returns the batch's mean loss before the update.
    pub fn step(&mut self, b: &Seq2SeqBatch) -> Result<f32> {
        check_shape(&self.cfg, b)?;
        self.model.check_batch(b)?;
        let step = Some(self.optim.steps());
        let pass = self.model.pass_cpu_with(&self.params, b, true, step)?;
        let grads = pass.grads.context("gradients")?;
        self.optim.step(&self.order, &mut self.params, &grads)?;
        check_loss(pass.loss, self.optim.steps())
    }

    /// Forward and loss only (teacher forced).
    pub fn evaluate(&mut self, b: &Seq2SeqBatch) -> Result<f32> {
        check_shape(&self.cfg, b)?;
        self.model.check_batch(b)?;
        Ok(self.model.pass_cpu(&self.params, b, false)?.loss)
    }

    pub fn steps_done(&self) -> u64 {
        self.optim.steps()
    }

    /// The model with its current parameters.
    pub fn model(&self) -> Result<Seq2Seq> {
        let mut m = self.model.clone();
        m.set_params_from(&self.params)?;
        Ok(m)
    }
}
