//! `Embedding` with Keras semantics: `input_dim` (vocabulary size) rows of `output_dim`
//! values; integer ids of shape (batch, input_length) give (batch, input_length,
//! output_dim). The table is PyTorch's `weight` [input_dim, output_dim].
//!
//! Options: a padding id (PyTorch `padding_idx`; Keras `mask_zero` is padding id 0) whose
//! row gets no gradient and which, trailing a sequence, shortens it for the recurrent layer
//! ([`Embedding::lengths`]); initialisation from given vectors; a frozen (not trainable)
//! table. An id outside the vocabulary is an error, never a clamped read.
//!
//! The lookup and its scatter-add are the `embedding` kernels (`src/gpu/embedding.rs`) and
//! their CPU twins (`src/cpu/embedding.rs`); this file adds the layer around them.

use anyhow::{bail, ensure, Context, Result};
use rand::{Rng, SeedableRng};

use super::params::HostTensor;
use crate::cpu::{self, Real};
use crate::gpu::Recorder;
use crate::gpu::{EmbeddingBackwardPlan, EmbeddingForwardPlan, EmbeddingIds, Gpu, GpuTensor};
use crate::ops::embedding::Embedding as EmbeddingOp;

/// An embedding table and its options.
#[derive(Clone, Debug)]
pub struct Embedding {
    pub input_dim: usize,
    pub output_dim: usize,
    /// The padding id (Keras `mask_zero` is `Some(0)`).
    pub padding: Option<u32>,
    /// Whether training updates the table.
    pub trainable: bool,
    /// `weight` [input_dim, output_dim].
    pub weight: HostTensor,
}

impl Embedding {
    /// Keras's default initialisation: uniform in ±0.05.
    pub fn new(input_dim: usize, output_dim: usize, seed: u64) -> Result<Self> {
        EmbeddingOp::new(input_dim, output_dim).validate(
            input_dim.saturating_mul(output_dim),
            1,
            output_dim,
        )?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let data = (0..input_dim * output_dim)
            .map(|_| rng.random_range(-0.05f32..0.05))
            .collect();
        Ok(Self {
            input_dim,
            output_dim,
            padding: None,
            trainable: true,
            weight: HostTensor::new(vec![input_dim, output_dim], data)?,
        })
    }

    /// A table initialised from given vectors (e.g. word vectors), `trainable` or frozen.
    pub fn from_vectors(weight: HostTensor, trainable: bool) -> Result<Self> {
        ensure!(
            weight.shape.len() == 2 && weight.shape[0] > 0 && weight.shape[1] > 0,
            "embedding vectors have shape {:?}, expected [input_dim, output_dim]",
            weight.shape
        );
        if let Some(i) = weight.data.iter().position(|v| !v.is_finite()) {
            bail!(
                "embedding vectors hold a non-finite value ({}) at row {}",
                weight.data[i],
                i / weight.shape[1]
            );
        }
        Ok(Self {
            input_dim: weight.shape[0],
            output_dim: weight.shape[1],
            padding: None,
            trainable,
            weight,
        })
    }

    /// Sets the padding id (its row gets no gradient; trailing it ends a sequence).
    pub fn with_padding(mut self, id: u32) -> Result<Self> {
        ensure!(
            (id as usize) < self.input_dim,
            "embedding padding id {id} is out of range: input_dim = {}",
            self.input_dim
        );
        self.padding = Some(id);
        Ok(self)
    }

    /// Keras `mask_zero = True`: id 0 is padding.
    pub fn mask_zero(self) -> Result<Self> {
        self.with_padding(0)
    }

    /// The kernel description.
    pub fn op(&self) -> EmbeddingOp {
        let op = EmbeddingOp::new(self.input_dim, self.output_dim);
        match self.padding {
            Some(p) => op.padding_idx(p),
            None => op,
        }
    }

    /// Checks ids of shape (batch, input_length): every id in the vocabulary.
    pub fn check_ids(&self, ids: &[u32], batch: usize, input_length: usize) -> Result<()> {
        ensure!(
            batch > 0 && input_length > 0 && ids.len() == batch * input_length,
            "embedding input of {} ids does not have shape (batch = {batch}, input_length = {input_length})",
            ids.len()
        );
        self.op().validate_ids(ids)
    }

    /// The sequence lengths the padding id gives ids (batch, input_length): each sequence
    /// ends before its first padding id, and only padding may follow. `None` without a
    /// padding id.
    pub fn lengths(
        &self,
        ids: &[u32],
        batch: usize,
        input_length: usize,
    ) -> Result<Option<Vec<usize>>> {
        self.check_ids(ids, batch, input_length)?;
        let Some(pad) = self.padding else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(batch);
        for (b, row) in ids.chunks_exact(input_length).enumerate() {
            let len = row.iter().position(|&i| i == pad).unwrap_or(input_length);
            if let Some(t) = row[len..].iter().position(|&i| i != pad) {
                bail!(
                    "sequence {b} has id {} at step {} after padding at step {len}: padding \
                     (id {pad}) must come at the end",
                    row[len + t],
                    len + t
                );
            }
            ensure!(len > 0, "sequence {b} is all padding (id {pad})");
            out.push(len);
        }
        Ok(Some(out))
    }

    /// The table as `T`.
    pub fn weight_as<T: Real>(&self) -> Vec<T> {
        self.weight
            .data
            .iter()
            .map(|&x| T::from(x).unwrap_or_else(T::nan))
            .collect()
    }

    /// Looks up ids of shape (batch, input_length): (batch, input_length, output_dim).
    pub fn forward_cpu<T: Real>(
        &self,
        table: &[T],
        ids: &[u32],
        batch: usize,
        input_length: usize,
    ) -> Result<Vec<T>> {
        self.check_ids(ids, batch, input_length)?;
        let mut out = vec![T::zero(); ids.len() * self.output_dim];
        cpu::embedding::forward(&self.op(), table, ids, &mut out)?;
        Ok(out)
    }

    /// The table's gradient for the output gradient `d_out` (ids.len(), output_dim).
    pub fn backward_cpu<T: Real>(&self, ids: &[u32], d_out: &[T]) -> Result<Vec<T>> {
        let mut d_table = vec![T::zero(); self.input_dim * self.output_dim];
        cpu::embedding::backward(&self.op(), ids, d_out, &mut d_table)?;
        Ok(d_table)
    }

    /// Runs the lookup on the GPU (one submit) and reads the output back:
    /// (batch, input_length, output_dim).
    pub fn forward_gpu(
        &self,
        gpu: &Gpu,
        ids: &[u32],
        batch: usize,
        input_length: usize,
    ) -> Result<Vec<f32>> {
        self.check_ids(ids, batch, input_length)?;
        let out = GpuTensor::zeros(gpu, &[ids.len(), self.output_dim])?;
        let layer = GpuEmbedding::new(gpu, self, ids.len(), &out, None)?;
        layer.write_ids(ids)?;
        let mut rec = Recorder::new(gpu);
        layer.record_forward(&mut rec);
        rec.submit()?;
        out.to_vec()
    }
}

/// An embedding on the GPU for a fixed number of ids, writing its output into a given
/// tensor (e.g. a recurrent stack's input) and, when trainable and given the output
/// gradient, its table gradient.
pub struct GpuEmbedding {
    table: GpuTensor,
    ids: EmbeddingIds,
    forward: EmbeddingForwardPlan,
    backward: Option<(GpuTensor, EmbeddingBackwardPlan)>,
}

impl GpuEmbedding {
    pub fn new(
        gpu: &Gpu,
        layer: &Embedding,
        n: usize,
        out: &GpuTensor,
        d_out: Option<&GpuTensor>,
    ) -> Result<Self> {
        let op = layer.op();
        let table = GpuTensor::from_slice(
            gpu,
            &[layer.input_dim, layer.output_dim],
            &layer.weight.data,
        )?;
        let ids = EmbeddingIds::new(gpu, &op, n)?;
        let forward = EmbeddingForwardPlan::new(gpu, &op, &table, &ids, out)
            .context("planning the embedding lookup")?;
        let backward = match (layer.trainable, d_out) {
            (true, Some(d_out)) => {
                let d_table = GpuTensor::zeros(gpu, &[layer.input_dim, layer.output_dim])?;
                let plan = EmbeddingBackwardPlan::new(gpu, &op, &ids, d_out, &d_table)?;
                Some((d_table, plan))
            }
            _ => None,
        };
        Ok(Self {
            table,
            ids,
            forward,
            backward,
        })
    }

    /// Validates and writes the next ids (in the order the output rows should have).
    pub fn write_ids(&self, ids: &[u32]) -> Result<()> {
        self.ids.write(ids)
    }

    pub fn table(&self) -> &GpuTensor {
        &self.table
    }

    /// The table gradient (trainable tables planned with an output gradient).
    pub fn table_grad(&self) -> Option<&GpuTensor> {
        self.backward.as_ref().map(|(g, _)| g)
    }

    pub fn record_forward(&self, rec: &mut Recorder) {
        self.forward.record(rec);
    }

    /// Records the table gradient (nothing for a frozen table).
    pub fn record_backward(&self, rec: &mut Recorder) {
        if let Some((_, plan)) = &self.backward {
            plan.record(rec);
        }
    }
}
