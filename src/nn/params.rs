//! Named parameter tensors with PyTorch's state_dict names, and their safetensors files.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{bail, ensure, err, Result, ResultExt};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::memory::{vec_with_capacity, Budget};

/// A host tensor: a shape and its f32 elements, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// The dimensions, outermost first.
    pub shape: Vec<usize>,
    /// The elements, row-major; as many as the shape's product.
    pub data: Vec<f32>,
}

impl HostTensor {
    /// A tensor from its shape and elements; an error unless `data` has the shape's product of
    /// elements.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let n = crate::memory::product(&shape);
        ensure!(
            n == Some(data.len() as u64),
            Shape,
            "a tensor of shape {shape:?} needs {} elements, {} were given",
            n.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string()),
            data.len()
        );
        Ok(Self { shape, data })
    }

    /// A tensor of `shape` filled with zeros.
    pub fn zeros(shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        Self {
            shape,
            data: vec![0.0; n],
        }
    }
}

/// Tensors by name, in name order.
pub type Tensors = BTreeMap<String, HostTensor>;

/// Converts one stored tensor to f32 (f64 and f16/bf16 are converted; integers are read as
/// numbers, for `lengths`).
fn to_f32(name: &str, view: &TensorView) -> Result<Vec<f32>> {
    let bytes = view.data();
    let n: usize = view.shape().iter().product();
    let width = match view.dtype() {
        Dtype::F32 | Dtype::I32 | Dtype::U32 => 4,
        Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
        Dtype::F16 | Dtype::BF16 | Dtype::I16 | Dtype::U16 => 2,
        Dtype::I8 | Dtype::U8 | Dtype::BOOL => 1,
        other => {
            bail!(
                Format,
                "tensor {name:?} has dtype {other:?}; recur reads float and integer tensors"
            )
        }
    };
    ensure!(
        bytes.len() == n * width,
        Format,
        "tensor {name:?} of shape {:?} should hold {} bytes, it holds {}",
        view.shape(),
        n * width,
        bytes.len()
    );
    let chunks = bytes.chunks_exact(width);
    // At most four bytes of f32 for each stored byte: bounded by the file.
    let mut out: Vec<f32> = vec_with_capacity(n, format_args!("tensor {name:?}"), &Budget::host())?;
    out.extend::<Vec<f32>>(match view.dtype() {
        Dtype::F32 => chunks
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::F64 => chunks
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        Dtype::F16 => chunks
            .map(|c| half::f16::from_le_bytes(c.try_into().unwrap()).to_f32())
            .collect(),
        Dtype::BF16 => chunks
            .map(|c| half::bf16::from_le_bytes(c.try_into().unwrap()).to_f32())
            .collect(),
        Dtype::I64 => chunks
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        Dtype::U64 => chunks
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        Dtype::I32 => chunks
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        Dtype::U32 => chunks
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        Dtype::I16 => chunks
            .map(|c| i16::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        Dtype::U16 => chunks
            .map(|c| u16::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        Dtype::I8 => chunks.map(|c| c[0] as i8 as f32).collect(),
        Dtype::U8 | Dtype::BOOL => chunks.map(|c| c[0] as f32).collect(),
        _ => unreachable!("dtype was checked above"),
    });
    Ok(out)
}

/// Reads every tensor of a safetensors file.
pub fn load_safetensors(path: &Path) -> Result<Tensors> {
    let bytes = crate::io::read_file(path, "safetensors file")?;
    parse_safetensors(&bytes).with_context(|| format!("in {}", path.display()))
}

/// Every tensor of a safetensors file's bytes. The header's offsets and shapes are checked
/// against the bytes (by the safetensors crate: offsets in order and inside the data, each
/// shape's product without overflow and equal to its bytes); beyond that, no dimension may
/// exceed the file's length, so that an empty tensor cannot declare sizes that a later
/// step would allocate for.
pub fn parse_safetensors(bytes: &[u8]) -> Result<Tensors> {
    let file = SafeTensors::deserialize(bytes)
        .map_err(|e| err!(Format, "not a valid safetensors file: {e}"))?;
    let mut out = Tensors::new();
    for (name, view) in file.tensors() {
        if let Some(&d) = view.shape().iter().find(|&&d| d > bytes.len()) {
            bail!(
                Format,
                "tensor {name:?} has shape {:?}: dimension {d} is larger than the whole file \
                 ({} bytes)",
                view.shape(),
                bytes.len()
            );
        }
        let data = to_f32(&name, &view)?;
        out.insert(name, HostTensor::new(view.shape().to_vec(), data)?);
    }
    Ok(out)
}

/// Writes tensors as f32 to a safetensors file, atomically (temporary file, then rename).
pub fn save_safetensors(path: &Path, tensors: &Tensors) -> Result<()> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(name, t)| {
            (
                name.clone(),
                bytemuck::cast_slice::<f32, u8>(&t.data).to_vec(),
                t.shape.clone(),
            )
        })
        .collect();
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(name, data, shape)| {
            Ok((
                name.clone(),
                TensorView::new(Dtype::F32, shape.clone(), data)?,
            ))
        })
        .collect::<Result<_>>()?;
    let serialized = safetensors::tensor::serialize(views, None)?;
    crate::io::write_atomic(path, &serialized)
}
