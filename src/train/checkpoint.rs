//! Checkpoints: one safetensors file holding the weights under their PyTorch names, the
//! optimizer state (`optimizer.<name>`), the recurrent state stateful training carries
//! (`state.h`, `state.c`), and in the header metadata the step, the model
//! spec (JSON) and any extra strings (e.g. a vocabulary). Written atomically (temporary
//! file, then rename), so a crash or an error never leaves a broken or half-written file.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::error::{bail, ensure, err, Result, ResultExt};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::footprint::Footprint;
use super::model::{ModelSpec, SequenceModel};
use crate::memory::Budget;
use crate::nn::{HostTensor, Tensors};

const FORMAT: &str = "recur-checkpoint-1";

/// A training run's state, for a model whose architecture is `S` (the sequence model's
/// [`ModelSpec`] unless said otherwise).
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint<S = ModelSpec> {
    /// The architecture.
    pub spec: S,
    /// Model parameters by PyTorch name.
    pub params: Tensors,
    /// Optimizer state tensors (`optimizer.<parameter name>`).
    pub optimizer: Tensors,
    /// The carried recurrent state of stateful training (`state.h`, `state.c`), or empty.
    pub state: Tensors,
    /// Steps taken.
    pub step: u64,
    /// Extra strings kept in the file's metadata.
    pub meta: BTreeMap<String, String>,
}

impl Checkpoint<ModelSpec> {
    /// The model these parameters belong to.
    pub fn model(&self) -> Result<SequenceModel> {
        SequenceModel::from_params(self.spec.clone(), &self.params)
    }

    /// Reads a checkpoint, checking that it is one and that its parameters fit its spec.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = crate::io::read_file(path, "checkpoint")?;
        Self::from_bytes(&bytes, path)
    }

    /// A checkpoint from a file's bytes (`source` names the file in messages). The model
    /// spec in its metadata is checked against the tensors the file holds before a model
    /// is built from it, so a forged spec cannot make anything larger than the file.
    pub fn from_bytes(bytes: &[u8], source: &Path) -> Result<Self> {
        let ckpt = Self::from_bytes_checked(bytes, source, check_spec_fits)?;
        ckpt.model()
            .with_context(|| format!("checkpoint {} does not fit its model", source.display()))?;
        Ok(ckpt)
    }
}

impl<S: Serialize + DeserializeOwned> Checkpoint<S> {
    /// Writes the checkpoint atomically. Refuses non-finite parameters, so a diverged run
    /// never replaces a good checkpoint.
    pub fn save(&self, path: &Path) -> Result<()> {
        for (name, t) in self.params.iter().chain(&self.optimizer).chain(&self.state) {
            if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
                bail!(
                    Numerics,
                    "not writing {}: tensor {name} holds a non-finite value at index {i}",
                    path.display()
                );
            }
        }
        let bytes: Vec<(&String, &HostTensor, &[u8])> = self
            .params
            .iter()
            .chain(&self.optimizer)
            .chain(&self.state)
            .map(|(n, t)| (n, t, bytemuck::cast_slice::<f32, u8>(&t.data)))
            .collect();
        let views = bytes
            .iter()
            .map(|(n, t, b)| {
                Ok((
                    (*n).clone(),
                    TensorView::new(Dtype::F32, t.shape.clone(), b)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut meta: HashMap<String, String> = self
            .meta
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        meta.insert("format".into(), FORMAT.into());
        meta.insert("step".into(), self.step.to_string());
        meta.insert("model".into(), serde_json::to_string(&self.spec)?);
        let data = safetensors::tensor::serialize(views, Some(meta))?;
        crate::io::write_atomic(path, &data)
    }

    /// Reads a checkpoint of any model with a spec of type `S` (the caller checks that the
    /// parameters fit it).
    pub fn load_any(path: &Path) -> Result<Self> {
        let bytes = crate::io::read_file(path, "checkpoint")?;
        Self::from_bytes_checked(&bytes, path, |_, _| Ok(()))
    }

    /// A checkpoint from a file's bytes (`source` names the file in messages); `check` sees
    /// the spec and the tensors before anything is built from them.
    fn from_bytes_checked(
        bytes: &[u8],
        source: &Path,
        check: impl FnOnce(&S, &Tensors) -> Result<()>,
    ) -> Result<Self> {
        let name = source.display();
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| err!(Format, "{name} is not a safetensors file: {e}"))?;
        let meta = header
            .metadata()
            .clone()
            .ok_or_else(|| err!(Format, "{name} has no recur checkpoint metadata"))?;
        ensure!(
            meta.get("format").map(String::as_str) == Some(FORMAT),
            Format,
            "{name} is not a recur checkpoint (format {:?}, expected {FORMAT})",
            meta.get("format")
        );
        let step = meta
            .get("step")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| err!(Format, "checkpoint step missing or not a number"))?;
        let spec: S = serde_json::from_str(
            meta.get("model")
                .ok_or_else(|| err!(Format, "model spec missing"))?,
        )
        .context("checkpoint model spec is not valid")?;
        let tensors = crate::nn::parse_safetensors(bytes).with_context(|| format!("in {name}"))?;
        check(&spec, &tensors)
            .with_context(|| format!("checkpoint {name} does not fit its model"))?;
        let (optimizer, rest): (Tensors, Tensors) = tensors
            .into_iter()
            .partition(|(n, _)| n.starts_with("optimizer."));
        let (state, params): (Tensors, Tensors) =
            rest.into_iter().partition(|(n, _)| n.starts_with("state."));
        let extra = meta
            .into_iter()
            .filter(|(k, _)| !matches!(k.as_str(), "format" | "step" | "model"))
            .collect();
        Ok(Self {
            spec,
            params,
            optimizer,
            state,
            step,
            meta: extra,
        })
    }
}

/// The spec's parameters must be among the file's tensors, so they cannot hold more values
/// than the file does; and they must fit in memory.
fn check_spec_fits(spec: &ModelSpec, tensors: &Tensors) -> Result<()> {
    let fp = Footprint::of(spec)?;
    let held: u64 = tensors.values().map(|t| t.data.len() as u64).sum();
    let params = fp.params();
    ensure!(
        params.is_some_and(|p| p <= held),
        Format,
        "its model spec (cell {}, hidden_size {}, num_layers {}, outputs {}{}) has {} \
         parameter values, but the file holds {held} values in all",
        spec.cell,
        spec.hidden_size,
        spec.num_layers,
        spec.outputs,
        spec.embedding.map_or(String::new(), |e| format!(
            ", embedding input_dim {} x output_dim {}",
            e.input_dim, e.output_dim
        )),
        params.map_or_else(|| "more than 2^64".to_string(), |p| p.to_string())
    );
    fp.check_host(None, false, &Budget::host())
}
