//! `Dense`: `y = x W^T + b` over rows of features, with PyTorch's `nn.Linear` names
//! (`weight` [out, in], `bias` [out]) and initialisation. Applied to every timestep (all
//! rows of a sequence output) or only to the last one ([`DenseRows::last_step`]).
//!
//! Forward and backward are matrix products ([`Gemm`]) on both paths; the bias gradient is
//! `ones[1, rows] * dy`, a product too, so it is summed in a fixed order without a kernel
//! of its own.

use anyhow::{ensure, Context, Result};
use rand::{Rng, SeedableRng};

use super::params::{HostTensor, Tensors};
use crate::cpu::{self, Real};
use crate::gpu::{GemmPlan, Gpu, GpuTensor, Recorder};
use crate::ops::Gemm;

/// Which rows of an input buffer a dense layer reads: `rows` rows of `features` values,
/// the first at element `offset`, consecutive rows `ld` elements apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DenseRows {
    pub rows: usize,
    pub offset: usize,
    pub ld: usize,
}

impl DenseRows {
    /// Every row of a packed `[rows, features]` buffer (every timestep of a sequence).
    pub fn all(rows: usize, features: usize) -> Self {
        Self {
            rows,
            offset: 0,
            ld: features,
        }
    }

    /// The last timestep of a sequence output of `steps` steps of `batch` rows of
    /// `features` values ([T, B, F], or [B, T, F] with `batch_first`): `batch` rows.
    pub fn last_step(batch: usize, steps: usize, features: usize, batch_first: bool) -> Self {
        if batch_first {
            Self {
                rows: batch,
                offset: (steps - 1) * features,
                ld: steps * features,
            }
        } else {
            Self {
                rows: batch,
                offset: (steps - 1) * batch * features,
                ld: features,
            }
        }
    }

    /// Whether these rows are the whole buffer of `len` elements of rows of `features`.
    pub fn covers(&self, len: usize, features: usize) -> bool {
        self.offset == 0 && self.ld == features && self.rows * features == len
    }
}

/// A dense layer and its parameters (`weight`, `bias`).
#[derive(Clone, Debug)]
pub struct Dense {
    pub in_features: usize,
    pub out_features: usize,
    pub params: Tensors,
}

/// Gradients of a dense layer: the input's (same layout as the input buffer, zero outside
/// the rows read) and the parameters'.
#[derive(Clone, Debug)]
pub struct DenseGrads<T> {
    pub input: Vec<T>,
    pub weight: Vec<T>,
    pub bias: Vec<T>,
}

impl Dense {
    /// PyTorch's `nn.Linear` initialisation: weight and bias uniform in ±1/sqrt(in).
    pub fn new(in_features: usize, out_features: usize, seed: u64) -> Result<Self> {
        ensure!(
            in_features > 0 && out_features > 0,
            "dense layer needs in_features > 0 and out_features > 0, got {in_features}, {out_features}"
        );
        let bound = 1.0 / (in_features as f32).sqrt();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut draw =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-bound..bound)).collect() };
        let mut params = Tensors::new();
        let weight = draw(out_features * in_features);
        let bias = draw(out_features);
        params.insert(
            "weight".into(),
            HostTensor::new(vec![out_features, in_features], weight)?,
        );
        params.insert("bias".into(), HostTensor::new(vec![out_features], bias)?);
        Ok(Self {
            in_features,
            out_features,
            params,
        })
    }

    /// A dense layer from `weight` [out, in] and `bias` [out] (finite values).
    pub fn from_params(params: Tensors) -> Result<Self> {
        let w = params
            .get("weight")
            .context("dense layer: weight missing")?;
        ensure!(
            w.shape.len() == 2 && w.shape[0] > 0 && w.shape[1] > 0,
            "dense weight has shape {:?}, expected [out_features, in_features]",
            w.shape
        );
        let (out, inp) = (w.shape[0], w.shape[1]);
        let b = params.get("bias").context("dense layer: bias missing")?;
        ensure!(
            b.shape == [out],
            "dense bias has shape {:?}, expected [{out}]",
            b.shape
        );
        for (name, t) in &params {
            ensure!(
                name == "weight" || name == "bias",
                "dense layer has no parameter {name:?} (expected weight and bias)"
            );
            if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
                anyhow::bail!("dense {name} holds a non-finite value at index {i}");
            }
        }
        Ok(Self {
            in_features: inp,
            out_features: out,
            params,
        })
    }

    fn check_rows(&self, rows: &DenseRows, input_len: usize) -> Result<()> {
        let need = if rows.rows == 0 {
            0
        } else {
            rows.offset + (rows.rows - 1) * rows.ld + self.in_features
        };
        ensure!(
            rows.rows > 0 && rows.ld >= self.in_features && need <= input_len,
            "dense layer reads {} rows of {} features at offset {} every {} elements: the input \
             holds {input_len} elements",
            rows.rows,
            self.in_features,
            rows.offset,
            rows.ld
        );
        Ok(())
    }

    fn forward_spec(&self, rows: &DenseRows) -> Gemm {
        Gemm::new(rows.rows, self.out_features, self.in_features)
            .trans_b(true)
            .leading_dims(rows.ld, self.in_features, self.out_features)
            .offsets(rows.offset, 0, 0)
    }

    fn weight_grad_spec(&self, rows: &DenseRows) -> Gemm {
        Gemm::new(self.out_features, self.in_features, rows.rows)
            .trans_a(true)
            .leading_dims(self.out_features, rows.ld, self.in_features)
            .offsets(0, rows.offset, 0)
    }

    fn bias_grad_spec(&self, rows: &DenseRows) -> Gemm {
        Gemm::new(1, self.out_features, rows.rows)
    }

    fn input_grad_spec(&self, rows: &DenseRows) -> Gemm {
        Gemm::new(rows.rows, self.in_features, self.out_features)
            .leading_dims(self.out_features, self.in_features, rows.ld)
            .offsets(0, 0, rows.offset)
    }

    /// The parameters as `T`: (weight, bias).
    pub fn params_as<T: Real>(&self) -> (Vec<T>, Vec<T>) {
        let conv = |name: &str| -> Vec<T> {
            self.params[name]
                .data
                .iter()
                .map(|&x| T::from(x).unwrap_or_else(T::nan))
                .collect()
        };
        (conv("weight"), conv("bias"))
    }

    /// `y[rows, out] = x W^T + b` on the CPU.
    pub fn forward_cpu<T: Real>(
        &self,
        weight: &[T],
        bias: &[T],
        input: &[T],
        rows: &DenseRows,
    ) -> Result<Vec<T>> {
        self.check_rows(rows, input.len())?;
        let mut y = vec![T::zero(); rows.rows * self.out_features];
        cpu::gemm(&self.forward_spec(rows), input, weight, Some(bias), &mut y)?;
        Ok(y)
    }

    /// Gradients for the output gradient `dy[rows, out]`.
    pub fn backward_cpu<T: Real>(
        &self,
        weight: &[T],
        input: &[T],
        rows: &DenseRows,
        dy: &[T],
    ) -> Result<DenseGrads<T>> {
        self.check_rows(rows, input.len())?;
        ensure!(
            dy.len() == rows.rows * self.out_features,
            "dense output gradient has {} elements, expected {} x {}",
            dy.len(),
            rows.rows,
            self.out_features
        );
        let mut g = DenseGrads {
            input: vec![T::zero(); input.len()],
            weight: vec![T::zero(); weight.len()],
            bias: vec![T::zero(); self.out_features],
        };
        cpu::gemm(&self.weight_grad_spec(rows), dy, input, None, &mut g.weight)?;
        let ones = vec![T::one(); rows.rows];
        cpu::gemm(&self.bias_grad_spec(rows), &ones, dy, None, &mut g.bias)?;
        cpu::gemm(&self.input_grad_spec(rows), dy, weight, None, &mut g.input)?;
        Ok(g)
    }
}

/// A dense layer on the GPU bound to an input buffer: parameters, gradients, output and
/// output gradient live on the device; forward and backward are recorded.
pub struct GpuDense {
    rows: DenseRows,
    weight: GpuTensor,
    bias: GpuTensor,
    output: GpuTensor,
    grads: Option<GpuDenseGrads>,
    forward: GemmPlan,
}

struct GpuDenseGrads {
    weight: GpuTensor,
    bias: GpuTensor,
    d_output: GpuTensor,
    /// The input gradient buffer, cleared first when the rows do not cover it.
    clear_input: Option<wgpu::Buffer>,
    _ones: GpuTensor,
    plans: Vec<GemmPlan>,
}

impl GpuDense {
    /// Plans `layer` over `rows` of `input`; with `d_input`, also its backward, which
    /// writes the input gradient there (zero outside the rows).
    pub fn new(
        gpu: &Gpu,
        layer: &Dense,
        input: &GpuTensor,
        rows: DenseRows,
        d_input: Option<&GpuTensor>,
        with_grads: bool,
    ) -> Result<Self> {
        layer.check_rows(&rows, input.len())?;
        let (out, inp) = (layer.out_features, layer.in_features);
        let weight = GpuTensor::from_slice(gpu, &[out, inp], &layer.params["weight"].data)?;
        let bias = GpuTensor::from_slice(gpu, &[out], &layer.params["bias"].data)?;
        let output = GpuTensor::zeros(gpu, &[rows.rows, out])?;
        let forward = GemmPlan::new(
            gpu,
            &layer.forward_spec(&rows),
            input,
            &weight,
            Some(&bias),
            &output,
        )?;
        let grads = if with_grads {
            let dw = GpuTensor::zeros(gpu, &[out, inp])?;
            let db = GpuTensor::zeros(gpu, &[out])?;
            let dy = GpuTensor::zeros(gpu, &[rows.rows, out])?;
            let ones = GpuTensor::from_slice(gpu, &[rows.rows], &vec![1.0f32; rows.rows])?;
            let pw = GemmPlan::new(gpu, &layer.weight_grad_spec(&rows), &dy, input, None, &dw)?;
            let pb = GemmPlan::new(gpu, &layer.bias_grad_spec(&rows), &ones, &dy, None, &db)?;
            let (px, clear_input) = match d_input {
                Some(dx) => {
                    ensure!(
                        dx.len() == input.len(),
                        "dense input gradient has {} elements, the input {}",
                        dx.len(),
                        input.len()
                    );
                    let plan =
                        GemmPlan::new(gpu, &layer.input_grad_spec(&rows), &dy, &weight, None, dx)?;
                    let clear = (!rows.covers(dx.len(), inp)).then(|| dx.buffer().clone());
                    (Some(plan), clear)
                }
                None => (None, None),
            };
            let mut plans = vec![pw, pb];
            plans.extend(px);
            Some(GpuDenseGrads {
                weight: dw,
                bias: db,
                d_output: dy,
                clear_input,
                _ones: ones,
                plans,
            })
        } else {
            None
        };
        Ok(Self {
            rows,
            weight,
            bias,
            output,
            grads,
            forward,
        })
    }

    pub fn rows(&self) -> &DenseRows {
        &self.rows
    }

    /// The output [rows, out] after a forward.
    pub fn output(&self) -> &GpuTensor {
        &self.output
    }

    /// Where the output gradient goes before a backward [rows, out].
    pub fn output_grad(&self) -> Option<&GpuTensor> {
        self.grads.as_ref().map(|g| &g.d_output)
    }

    /// (weight, bias) on the device.
    pub fn params(&self) -> [(&'static str, &GpuTensor); 2] {
        [("weight", &self.weight), ("bias", &self.bias)]
    }

    /// (weight, bias) gradients on the device, after a backward.
    pub fn param_grads(&self) -> Option<[(&'static str, &GpuTensor); 2]> {
        self.grads
            .as_ref()
            .map(|g| [("weight", &g.weight), ("bias", &g.bias)])
    }

    pub fn record_forward(&self, rec: &mut Recorder) {
        self.forward.record(rec);
    }

    /// Records the parameter gradients and the input gradient (the output gradient must be
    /// in place).
    pub fn record_backward(&self, rec: &mut Recorder) -> Result<()> {
        let g = self
            .grads
            .as_ref()
            .context("this dense layer was planned without gradients")?;
        if let Some(buf) = &g.clear_input {
            rec.clear(buf);
        }
        for p in &g.plans {
            p.record(rec);
        }
        Ok(())
    }

    /// Copies new parameter values to the device.
    pub fn upload_params(&self, layer: &Dense) -> Result<()> {
        self.weight.write(&layer.params["weight"].data)?;
        self.bias.write(&layer.params["bias"].data)
    }
}
