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

use crate::error::{bail, ensure, err, Result, ResultExt};

use serde::{Deserialize, Serialize};

use super::model::{
    tensors_as, with_prefix, Batch, DropoutRates, EmbeddingSpec, Head, Inputs, Loss, ModelSpec,
    Pass, Recorded, SeqInputs, SequenceModel, Targets,
};
use super::trainer::{cpu_pass, Learner};
use crate::backend::Backend;
use crate::cpu::Real;
use crate::exec::{Executor, ProgramId};
use crate::nn::{Embedding, Recurrent, RecurrentConfig, Tensors};
use crate::ops::program::{ProgramBuilder, StateRegion, TensorId};
use crate::ops::recurrent::CellKind;

/// The architecture of an encoder-decoder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Seq2SeqSpec {
    /// The encoder's input vocabulary: source ids are below it.
    pub source_vocab: usize,
    /// The decoder's input and output vocabulary (the start token included).
    pub target_vocab: usize,
    /// Embedding width of both sides.
    pub embed: usize,
    /// The cell of both stacks.
    pub cell: CellKind,
    /// Hidden units per layer of both stacks.
    pub hidden_size: usize,
    /// Stacked layers of both stacks (the decoder's layer `l` starts from the encoder's).
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
    /// Sequence pairs in the batch.
    pub batch: usize,
    /// Steps of the longest source.
    pub source_steps: usize,
    /// Source ids, `source_steps * batch`, time-major, padded past each source's length.
    pub source: Vec<u32>,
    /// Each source's length when they differ (the rest of its steps is padding), else
    /// `None`: every source is `source_steps` long.
    pub source_lengths: Option<Vec<usize>>,
    /// Steps of the longest target.
    pub target_steps: usize,
    /// What the decoder reads: the start token, then the targets but the last.
    pub decoder_input: Vec<u32>,
    /// Target ids, `target_steps * batch`, time-major, padded past each target's length.
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
                Shape,
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
                Invalid,
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
        Shape,
        "a batch needs as many targets as sources (> 0), got {} sources and {} targets",
        sources.len(),
        targets.len()
    );
    Ok(())
}

/// XORed into the dropout seed for the encoder's masks.
const ENCODER_SEED_OFFSET: u64 = 0x9e37_79b9_7f4a_7c15;

/// An encoder-decoder and its parameters.
#[derive(Clone, Debug)]
pub struct Seq2Seq {
    /// The architecture the parameters below follow.
    pub spec: Seq2SeqSpec,
    /// The source embedding (`encoder.embedding.weight`).
    pub encoder_embedding: Embedding,
    /// The encoder's recurrent stack (`encoder.rnn.*`); its final states start the decoder.
    pub encoder: Recurrent,
    /// Embedding, recurrent stack and dense softmax head at every step.
    pub decoder: SequenceModel,
}

/// The CPU results of one batch: the mean loss, the decoder's dense outputs
/// [target_steps * batch, target_vocab], and (when asked) the gradients by name.
pub struct Seq2SeqPass<T> {
    /// Mean cross-entropy (nats) over the target ids that are not the ignore index.
    pub loss: T,
    /// The decoder's logits, `[target_steps * batch, target_vocab]`, time-major.
    pub output: Vec<T>,
    /// The loss's gradient of every parameter, by its PyTorch name; `None` when not asked.
    pub grads: Option<BTreeMap<String, Vec<T>>>,
}

impl Seq2Seq {
    /// A fresh model, every layer initialised from `seed`.
    pub fn new(spec: Seq2SeqSpec, seed: u64) -> Result<Self> {
        let encoder_embedding = Embedding::new(spec.source_vocab, spec.embed, seed ^ 0x2545)?;
        let mut c = RecurrentConfig::new(spec.cell, spec.embed, spec.hidden_size);
        c.num_layers = spec.num_layers;
        let encoder = Recurrent::new(spec.dropout.applied_to(&c)?, seed ^ 0x7f4a)?;
        let decoder = SequenceModel::new(
            ModelSpec {
                embedding: Some(EmbeddingSpec {
                    input_dim: spec.target_vocab,
                    output_dim: spec.embed,
                    padding: None,
                    trainable: true,
                    init: Default::default(),
                }),
                input_size: 0,
                cell: spec.cell,
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

    /// Every parameter under its PyTorch name.
    pub fn named_params(&self) -> Tensors {
        let mut out = Tensors::new();
        out.insert(
            "encoder.embedding.weight".into(),
            self.encoder_embedding.weight.clone(),
        );
        for (k, v) in self.encoder.params() {
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
                .ok_or_else(|| err!(Invalid, "parameter {name} is missing"))?;
            ensure!(
                v.len() == t.data.len(),
                Shape,
                "parameter {name} has {} values, expected {}",
                v.len(),
                t.data.len()
            );
            t.data = v.iter().map(|x| x.to_f32().unwrap_or(f32::NAN)).collect();
            if let Some(i) = t.data.iter().position(|x| !x.is_finite()) {
                bail!(
                    Numerics,
                    "parameter {name} holds a non-finite value at index {i}"
                );
            }
        }
        self.encoder_embedding.weight = named["encoder.embedding.weight"].clone();
        self.encoder
            .set_params(with_prefix(&named, "encoder.rnn."))?;
        self.decoder.set_params(&with_prefix(&named, "decoder."))
    }

    /// Checks a batch against the model: shapes and ids on both sides, and the targets.
    pub fn check_batch(&self, b: &Seq2SeqBatch) -> Result<()> {
        ensure!(
            b.batch > 0 && b.source_steps > 0 && b.target_steps > 0,
            Shape,
            "a batch needs batch, source steps and target steps > 0, got {} x {} and {}",
            b.batch,
            b.source_steps,
            b.target_steps
        );
        ensure!(
            b.source.len() == b.batch * b.source_steps,
            Shape,
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

    /// The dropout seed of the encoder's masks, offset from the decoder's so that layers of
    /// the same shape on the two sides draw different masks.
    fn encoder_seed(&self, pass: Pass) -> Option<u64> {
        match pass {
            Pass::Train { dropout: true } => {
                self.decoder.dropout_seed().map(|s| s ^ ENCODER_SEED_OFFSET)
            }
            _ => None,
        }
    }

    /// Records one pass over batches of `batch` pairs of `source_steps` and `target_steps`
    /// ids: the encoder, the handoff of its final states, the decoder with its loss, and in
    /// training the decoder's backward, the state gradients handed back, and the encoder's
    /// backward.
    pub fn record(
        &self,
        b: &mut ProgramBuilder,
        (batch, source_steps, target_steps): (usize, usize, usize),
        pass: Pass,
    ) -> Result<Recorded<Seq2SeqInputs>> {
        let source = b.ids(
            "encoder.ids",
            self.encoder_embedding.op(),
            batch * source_steps,
        );
        let embedded = self
            .encoder_embedding
            .record_forward(b, "encoder.embedding.", source)?;
        let source_lengths = b.lengths("encoder.lengths", batch);
        let enc = self.encoder.record_forward(
            b,
            "encoder.rnn.",
            embedded,
            batch,
            source_steps,
            Some(source_lengths),
            self.encoder_seed(pass),
        )?;
        let mut dec = self.decoder.record(
            b,
            "decoder.",
            (batch, target_steps),
            pass,
            Some(&enc.states),
        )?;
        if let Pass::Train { .. } = pass {
            self.decoder
                .rnn
                .record_state_grads_to(b, &dec.stack, &enc)?;
            // The encoder's outputs feed nothing but its final state: no output gradient.
            let eg = self.encoder.record_backward(b, &enc, None)?;
            for (name, t) in eg.params {
                dec.grads.insert(format!("encoder.rnn.{name}"), t);
            }
            if let Some(g) =
                self.encoder_embedding
                    .record_backward(b, "encoder.embedding.", source, eg.input)
            {
                dec.grads.insert("encoder.embedding.weight".into(), g);
            }
        }
        Ok(Recorded {
            inputs: Seq2SeqInputs {
                source,
                source_lengths,
                decoder: dec.inputs,
            },
            output: dec.output,
            loss: dec.loss,
            grads: dec.grads,
            stack: dec.stack,
        })
    }

    /// Writes a checked batch into a program recorded by [`Self::record`].
    pub fn write_batch<E: Executor + ?Sized>(
        &self,
        exec: &mut E,
        p: ProgramId,
        inputs: &Seq2SeqInputs,
        b: &Seq2SeqBatch,
    ) -> Result<()> {
        exec.write_u32(p, inputs.source, &b.source)?;
        let lengths = match &b.source_lengths {
            Some(l) => l.iter().map(|&v| v as u32).collect(),
            None => vec![b.source_steps as u32; b.batch],
        };
        exec.write_u32(p, inputs.source_lengths, &lengths)?;
        self.decoder
            .write_batch(exec, p, &inputs.decoder, &b.decoder_batch())
    }

    /// Forward, loss and (with `grads`) backward of a checked batch on the CPU in `T`,
    /// without dropout: the recorded pass run by a fresh CPU executor.
    pub fn pass_cpu<T: Real>(
        &self,
        p: &BTreeMap<String, Vec<T>>,
        b: &Seq2SeqBatch,
        grads: bool,
    ) -> Result<Seq2SeqPass<T>> {
        self.pass_cpu_with(p, b, grads, None)
    }

    /// [`Self::pass_cpu`] as training step `step` (counted from 0) if given: with the
    /// dropout masks the trainer draws at that step.
    pub fn pass_cpu_with<T: Real>(
        &self,
        p: &BTreeMap<String, Vec<T>>,
        b: &Seq2SeqBatch,
        grads: bool,
        step: Option<u64>,
    ) -> Result<Seq2SeqPass<T>> {
        let (exec, prog, rec, grads) = cpu_pass(self, p, b, grads, step, |_, _, _| Ok(()))?;
        let loss = rec
            .loss
            .ok_or_else(|| err!(Invalid, "an evaluation pass has a loss"))?;
        Ok(Seq2SeqPass {
            loss: exec.read_real(prog, loss)?[0],
            output: exec.read_real(prog, rec.output)?,
            grads,
        })
    }

    /// Greedy decoding on the CPU: encodes one source sequence, then feeds the decoder its
    /// own most likely token, starting from `start`, for `length` tokens.
    pub fn translate_cpu(&self, source: &[u32], start: u32, length: usize) -> Result<Vec<u32>> {
        self.translate(&Backend::Cpu, source, start, length)
    }

    /// Greedy decoding on `backend`: encodes one source sequence, then feeds the decoder
    /// its own most likely token, starting from `start`, for `length` tokens (one run per
    /// token, the decoder's state carried on the device).
    pub fn translate(
        &self,
        backend: &Backend,
        source: &[u32],
        start: u32,
        length: usize,
    ) -> Result<Vec<u32>> {
        let one = Seq2SeqBatch::teacher_forced(&[source.to_vec()], &[vec![start]], start)?;
        self.check_batch(&one)?;
        let mut exec = backend.executor();
        for (name, t) in self.named_params() {
            exec.set_param(&name, &t.shape, &t.data)?;
        }
        // The encoder, then its final states read back.
        let mut b = ProgramBuilder::new();
        let ids = b.ids("encoder.ids", self.encoder_embedding.op(), source.len());
        let x = self
            .encoder_embedding
            .record_forward(&mut b, "encoder.embedding.", ids)?;
        let enc =
            self.encoder
                .record_forward(&mut b, "encoder.rnn.", x, 1, source.len(), None, None)?;
        let encoder = exec.load(b.finish())?;
        exec.write_u32(encoder, ids, source)?;
        exec.run(encoder, 0, 0)?;
        // One decoder step at a time, its state carried from run to run.
        let mut b = ProgramBuilder::new();
        let dec = self
            .decoder
            .record(&mut b, "decoder.", (1, 1), Pass::Predict, None)?;
        dec.stack.record_carry(&mut b);
        let decoder = exec.load(b.finish())?;
        let n = enc.region_len();
        let mut regions = vec![(StateRegion::HN, StateRegion::H0)];
        if self.encoder.config.cell.has_cell_state() {
            regions.push((StateRegion::CN, StateRegion::C0));
        }
        for (&from, &to) in enc.states.iter().zip(&dec.stack.states) {
            for (a, z) in &regions {
                let v = exec.read(encoder, from, enc.region(*a), n)?;
                exec.write(decoder, to, dec.stack.region(*z), &v)?;
            }
        }
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
            self.decoder
                .write_batch(exec.as_mut(), decoder, &dec.inputs, &step)?;
            exec.run(decoder, 0, 0)?;
            let logits = crate::exec::read_all(exec.as_mut(), decoder, dec.output)?;
            let best = (0..logits.len())
                .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
                .ok_or_else(|| err!(Invalid, "the decoder has no outputs"))?;
            token = best as u32;
            out.push(token);
        }
        Ok(out)
    }

    /// The parameter names in the order both trainers clip and update them.
    pub fn update_order(&self) -> Vec<String> {
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

/// The input tensors of an encoder-decoder pass.
#[derive(Clone, Copy, Debug)]
pub struct Seq2SeqInputs {
    /// Source ids.
    pub source: TensorId,
    /// Source lengths.
    pub source_lengths: TensorId,
    /// The decoder's inputs and targets.
    pub decoder: SeqInputs,
}

impl Learner for Seq2Seq {
    type Batch = Seq2SeqBatch;
    type Inputs = Seq2SeqInputs;
    type Spec = Seq2SeqSpec;

    fn batch_shape(&self, b: &Seq2SeqBatch) -> Vec<usize> {
        vec![b.batch, b.source_steps, b.target_steps]
    }

    fn check_batch(&self, b: &Seq2SeqBatch) -> Result<()> {
        Seq2Seq::check_batch(self, b)
    }

    fn loss_count(&self, b: &Seq2SeqBatch) -> Result<usize> {
        let ignore = self.spec.ignore_index;
        Ok(b.targets.iter().filter(|&&c| Some(c) != ignore).count())
    }

    fn record(
        &self,
        b: &mut ProgramBuilder,
        shape: &[usize],
        pass: Pass,
    ) -> Result<Recorded<Seq2SeqInputs>> {
        let [batch, source, target] = shape else {
            bail!(Shape, "an encoder-decoder's batch shape is [batch, source steps, target steps], got {shape:?}");
        };
        Seq2Seq::record(self, b, (*batch, *source, *target), pass)
    }

    fn write_batch(
        &self,
        exec: &mut dyn Executor,
        p: ProgramId,
        inputs: &Seq2SeqInputs,
        b: &Seq2SeqBatch,
    ) -> Result<()> {
        Seq2Seq::write_batch(self, exec, p, inputs, b)
    }

    fn named_params(&self) -> Tensors {
        Seq2Seq::named_params(self)
    }

    fn set_params(&mut self, params: &Tensors) -> Result<()> {
        let p: BTreeMap<String, Vec<f32>> = params
            .iter()
            .map(|(k, v)| (k.clone(), v.data.clone()))
            .collect();
        self.set_params_from(&p)
    }

    fn update_order(&self) -> Vec<String> {
        Seq2Seq::update_order(self)
    }

    fn spec(&self) -> Seq2SeqSpec {
        self.spec.clone()
    }

    fn from_spec(spec: Seq2SeqSpec, params: &Tensors) -> Result<Self> {
        let mut m = Seq2Seq::new(spec, 0)?;
        Learner::set_params(&mut m, params)?;
        Ok(m)
    }

    fn can_carry_state(&self) -> bool {
        false
    }

    fn has_cell_state(&self) -> bool {
        self.encoder.config.cell.has_cell_state()
    }
}
