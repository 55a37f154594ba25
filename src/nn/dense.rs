//! `Dense`: `y = x W^T + b` over rows of features, with PyTorch's `nn.Linear` names
//! (`weight` `[out, in]`, `bias` `[out]`) and initialisation. Applied to every timestep (all
//! rows of a sequence output) or only to the last one ([`DenseRows::last_step`]).
//!
//! Forward and backward are matrix products ([`Gemm`]) recorded into a program; the bias
//! gradient is `ones[1, rows] * dy`, a product too, so it is summed in a fixed order without
//! a kernel of its own.

use crate::error::{bail, ensure, err, Result};
use rand::{Rng, SeedableRng};

use super::params::{HostTensor, Tensors};
use crate::cpu::Real;
use crate::exec::HostData;
use crate::ops::program::{Op, ProgramBuilder, TensorId};
use crate::ops::Gemm;

/// Which rows of an input buffer a dense layer reads: `rows` rows of `features` values,
/// the first at element `offset`, consecutive rows `ld` elements apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DenseRows {
    /// Rows read, each `features` values.
    pub rows: usize,
    /// Element offset of the first row.
    pub offset: usize,
    /// Elements between the starts of consecutive rows.
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
    /// Features per input row (`in`).
    pub in_features: usize,
    /// Features per output row (`out`).
    pub out_features: usize,
    /// `weight` `[out, in]` and `bias` `[out]`, by PyTorch's names.
    pub params: Tensors,
}

/// Gradients of a dense layer: the input's (same layout as the input buffer, zero outside
/// the rows read) and the parameters'.
#[derive(Clone, Debug)]
pub struct DenseGrads<T> {
    /// Gradient of the input buffer, its layout, zero outside the rows read.
    pub input: Vec<T>,
    /// Gradient of `weight`, `[out, in]`.
    pub weight: Vec<T>,
    /// Gradient of `bias`, `[out]`.
    pub bias: Vec<T>,
}

impl Dense {
    /// PyTorch's `nn.Linear` initialisation: weight and bias uniform in ±1/sqrt(in).
    pub fn new(in_features: usize, out_features: usize, seed: u64) -> Result<Self> {
        ensure!(
            in_features > 0 && out_features > 0,
            Invalid, "dense layer needs in_features > 0 and out_features > 0, got {in_features}, {out_features}"
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

    /// A dense layer from `weight` `[out, in]` and `bias` `[out]` (finite values).
    pub fn from_params(params: Tensors) -> Result<Self> {
        let w = params
            .get("weight")
            .ok_or_else(|| err!(Invalid, "dense layer: weight missing"))?;
        ensure!(
            w.shape.len() == 2 && w.shape[0] > 0 && w.shape[1] > 0,
            Shape,
            "dense weight has shape {:?}, expected [out_features, in_features]",
            w.shape
        );
        let (out, inp) = (w.shape[0], w.shape[1]);
        let b = params
            .get("bias")
            .ok_or_else(|| err!(Invalid, "dense layer: bias missing"))?;
        ensure!(
            b.shape == [out],
            Shape,
            "dense bias has shape {:?}, expected [{out}]",
            b.shape
        );
        for (name, t) in &params {
            ensure!(
                name == "weight" || name == "bias",
                Invalid,
                "dense layer has no parameter {name:?} (expected weight and bias)"
            );
            if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
                bail!(
                    Numerics,
                    "dense {name} holds a non-finite value at index {i}"
                );
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
            Shape,
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

    /// Records `y[rows, out] = x W^T + b` over `rows` of `input`, with parameters `prefix`
    /// + `weight` and `bias`; returns `y`.
    pub fn record_forward(
        &self,
        b: &mut ProgramBuilder,
        prefix: &str,
        input: TensorId,
        rows: &DenseRows,
    ) -> Result<TensorId> {
        self.check_rows(rows, b.decl(input).len())?;
        let weight = b.param(
            &format!("{prefix}weight"),
            &[self.out_features, self.in_features],
        )?;
        let bias = b.param(&format!("{prefix}bias"), &[self.out_features])?;
        let y = b.tensor(&format!("{prefix}output"), &[rows.rows, self.out_features]);
        b.op(Op::Gemm {
            spec: self.forward_spec(rows),
            a: input,
            b: weight,
            bias: Some(bias),
            c: y,
        });
        Ok(y)
    }

    /// Records the gradients for the output gradient `dy [rows, out]`: the parameters'
    /// (returned as `(weight, bias)`) and, with `d_input`, the input's (same layout as the
    /// input, zero outside the rows read).
    pub fn record_backward(
        &self,
        b: &mut ProgramBuilder,
        prefix: &str,
        input: TensorId,
        rows: &DenseRows,
        dy: TensorId,
        d_input: Option<TensorId>,
    ) -> Result<(TensorId, TensorId)> {
        let weight = b.param(
            &format!("{prefix}weight"),
            &[self.out_features, self.in_features],
        )?;
        let dw = b.tensor(
            &format!("{prefix}grad weight"),
            &[self.out_features, self.in_features],
        );
        let db = b.tensor(&format!("{prefix}grad bias"), &[self.out_features]);
        let ones = b.constant(&format!("{prefix}ones"), &[rows.rows], 1.0);
        b.op(Op::Gemm {
            spec: self.weight_grad_spec(rows),
            a: dy,
            b: input,
            bias: None,
            c: dw,
        });
        b.op(Op::Gemm {
            spec: self.bias_grad_spec(rows),
            a: ones,
            b: dy,
            bias: None,
            c: db,
        });
        if let Some(dx) = d_input {
            let len = b.decl(dx).len();
            ensure!(
                len == b.decl(input).len(),
                Shape,
                "dense input gradient has {len} elements, the input {}",
                b.decl(input).len()
            );
            if !rows.covers(len, self.in_features) {
                b.op(Op::Zero { dst: dx });
            }
            b.op(Op::Gemm {
                spec: self.input_grad_spec(rows),
                a: dy,
                b: weight,
                bias: None,
                c: dx,
            });
        }
        Ok((dw, db))
    }

    /// Runs the layer once on an executor: `y` for `input`, and with `dy` the gradients
    /// (forward and backward in one program of two phases).
    pub fn run<T: Real, E: HostData<T> + ?Sized>(
        &self,
        exec: &mut E,
        (weight, bias): (&[T], &[T]),
        input: &[T],
        rows: &DenseRows,
        dy: Option<&[T]>,
    ) -> Result<(Vec<T>, Option<DenseGrads<T>>)> {
        exec.set_param_values("weight", &[self.out_features, self.in_features], weight)?;
        exec.set_param_values("bias", &[self.out_features], bias)?;
        let mut b = ProgramBuilder::new();
        let x = b.input("input", &[input.len()]);
        let y = self.record_forward(&mut b, "", x, rows)?;
        let back = match dy {
            Some(_) => {
                b.next_phase();
                let d_y = b.input("output gradient", &[rows.rows, self.out_features]);
                let dx = b.tensor("input gradient", &[input.len()]);
                let (dw, db) = self.record_backward(&mut b, "", x, rows, d_y, Some(dx))?;
                Some((d_y, dx, dw, db))
            }
            None => None,
        };
        let p = exec.load(b.finish())?;
        exec.write_values(p, x, 0, input)?;
        exec.run(p, 0, 0)?;
        let out = exec.read_values(p, y)?;
        let grads = match (back, dy) {
            (Some((d_y, dx, dw, db)), Some(g)) => {
                ensure!(
                    g.len() == rows.rows * self.out_features,
                    Shape,
                    "dense output gradient has {} elements, expected {} x {}",
                    g.len(),
                    rows.rows,
                    self.out_features
                );
                exec.write_values(p, d_y, 0, g)?;
                exec.run(p, 1, 0)?;
                Some(DenseGrads {
                    input: exec.read_values(p, dx)?,
                    weight: exec.read_values(p, dw)?,
                    bias: exec.read_values(p, db)?,
                })
            }
            _ => None,
        };
        Ok((out, grads))
    }
}
