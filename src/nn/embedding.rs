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
//! their CPU twins (`src/cpu/embedding.rs`), recorded as the program ops `Gather` and
//! `ScatterAdd`; this file adds the layer around them.

use crate::error::{bail, ensure, err, Result};
use rand::{Rng, SeedableRng};

use super::params::HostTensor;
use crate::cpu::Real;
use crate::exec::{CpuExecutor, GpuExecutor, HostData};
use crate::gpu::Gpu;
use crate::ops::embedding::Embedding as EmbeddingOp;
use crate::ops::program::{Op, ProgramBuilder, TensorId};

/// How a fresh table is drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EmbeddingInit {
    /// Keras's `Embedding`: uniform in ±0.05.
    #[default]
    Keras,
    /// PyTorch's `nn.Embedding`: standard normal, N(0, 1).
    PyTorch,
}

/// An embedding table and its options.
#[derive(Clone, Debug)]
pub struct Embedding {
    /// Rows of the table: the vocabulary size (Keras's name).
    pub input_dim: usize,
    /// Values per row: the vector size (Keras's name).
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
        Self::with_init(input_dim, output_dim, EmbeddingInit::Keras, seed)
    }

    /// A table drawn as `init` says.
    pub fn with_init(
        input_dim: usize,
        output_dim: usize,
        init: EmbeddingInit,
        seed: u64,
    ) -> Result<Self> {
        EmbeddingOp::new(input_dim, output_dim).validate(
            input_dim.saturating_mul(output_dim),
            1,
            output_dim,
        )?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let n = input_dim * output_dim;
        let data = match init {
            EmbeddingInit::Keras => (0..n).map(|_| rng.random_range(-0.05f32..0.05)).collect(),
            EmbeddingInit::PyTorch => {
                let normal = rand_distr::StandardNormal;
                (0..n).map(|_| rng.sample::<f32, _>(normal)).collect()
            }
        };
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
            Shape,
            "embedding vectors have shape {:?}, expected [input_dim, output_dim]",
            weight.shape
        );
        if let Some(i) = weight.data.iter().position(|v| !v.is_finite()) {
            bail!(
                Numerics,
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
            Invalid,
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
            Shape, "embedding input of {} ids does not have shape (batch = {batch}, input_length = {input_length})",
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
                    Shape,
                    "sequence {b} has id {} at step {} after padding at step {len}: padding \
                     (id {pad}) must come at the end",
                    row[len + t],
                    len + t
                );
            }
            ensure!(len > 0, Shape, "sequence {b} is all padding (id {pad})");
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

    /// The table's shape `[input_dim, output_dim]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.input_dim, self.output_dim]
    }

    /// Records the lookup of `ids` (declared with [`ProgramBuilder::ids`] and this layer's
    /// [`Self::op`]) from the table parameter `prefix` + `weight`; returns the output `[n,
    /// output_dim]`.
    pub fn record_forward(
        &self,
        b: &mut ProgramBuilder,
        prefix: &str,
        ids: TensorId,
    ) -> Result<TensorId> {
        let table = b.param(&format!("{prefix}weight"), &self.shape())?;
        let n = b.decl(ids).len();
        let out = b.tensor(&format!("{prefix}output"), &[n, self.output_dim]);
        b.op(Op::Gather {
            spec: self.op(),
            table,
            ids,
            out,
        });
        Ok(out)
    }

    /// Records the table gradient for the output gradient `d_out` (none for a frozen
    /// table).
    pub fn record_backward(
        &self,
        b: &mut ProgramBuilder,
        prefix: &str,
        ids: TensorId,
        d_out: TensorId,
    ) -> Option<TensorId> {
        if !self.trainable {
            return None;
        }
        let d_table = b.tensor(&format!("{prefix}grad weight"), &self.shape());
        b.op(Op::ScatterAdd {
            spec: self.op(),
            ids,
            d_out,
            d_table,
        });
        Some(d_table)
    }

    /// Runs the layer once on an executor: the lookup of ids of shape (batch,
    /// input_length) with table `table`, and with `d_out` the table gradient.
    pub fn run<T: Real, E: HostData<T> + ?Sized>(
        &self,
        exec: &mut E,
        table: &[T],
        ids: &[u32],
        (batch, input_length): (usize, usize),
        d_out: Option<&[T]>,
    ) -> Result<(Vec<T>, Option<Vec<T>>)> {
        self.check_ids(ids, batch, input_length)?;
        exec.set_param_values("weight", &self.shape(), table)?;
        let mut b = ProgramBuilder::new();
        let id_t = b.ids("ids", self.op(), ids.len());
        let out = self.record_forward(&mut b, "", id_t)?;
        let back = match d_out {
            Some(_) => {
                b.next_phase();
                let d = b.input("output gradient", &[ids.len(), self.output_dim]);
                self.record_backward(&mut b, "", id_t, d).map(|g| (d, g))
            }
            None => None,
        };
        let p = exec.load(b.finish())?;
        exec.write_u32(p, id_t, ids)?;
        exec.run(p, 0, 0)?;
        let y = exec.read_values(p, out)?;
        let grad = match (back, d_out) {
            (Some((d, g)), Some(values)) => {
                ensure!(
                    values.len() == ids.len() * self.output_dim,
                    Shape,
                    "embedding output gradient has {} values, expected {} x {}",
                    values.len(),
                    ids.len(),
                    self.output_dim
                );
                exec.write_values(p, d, 0, values)?;
                exec.run(p, 1, 0)?;
                Some(exec.read_values(p, g)?)
            }
            _ => None,
        };
        Ok((y, grad))
    }

    /// Looks up ids of shape (batch, input_length) on the CPU: (batch, input_length,
    /// output_dim).
    pub fn forward_cpu<T: Real>(
        &self,
        table: &[T],
        ids: &[u32],
        batch: usize,
        input_length: usize,
    ) -> Result<Vec<T>> {
        let mut exec = CpuExecutor::<T>::new();
        Ok(self
            .run(&mut exec, table, ids, (batch, input_length), None)?
            .0)
    }

    /// The table's gradient on the CPU for the output gradient `d_out` (ids.len(),
    /// output_dim).
    pub fn backward_cpu<T: Real>(&self, ids: &[u32], d_out: &[T]) -> Result<Vec<T>> {
        let mut exec = CpuExecutor::<T>::new();
        let table = self.weight_as::<T>();
        let mut frozen_off = self.clone();
        frozen_off.trainable = true;
        let n = ids.len();
        frozen_off
            .run(&mut exec, &table, ids, (1, n), Some(d_out))?
            .1
            .ok_or_else(|| err!(Invalid, "a trainable table has a gradient"))
    }

    /// Runs the lookup on the GPU (one submit) and reads the output back: (batch,
    /// input_length, output_dim).
    pub fn forward_gpu(
        &self,
        gpu: &Gpu,
        ids: &[u32],
        batch: usize,
        input_length: usize,
    ) -> Result<Vec<f32>> {
        let mut exec = GpuExecutor::new(gpu);
        Ok(self
            .run(
                &mut exec,
                &self.weight.data,
                ids,
                (batch, input_length),
                None,
            )?
            .0)
    }
}
