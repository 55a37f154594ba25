//! The kernel registry: every compute pipeline is compiled once and cached. Only pipelines
//! listed in [`shaders::FAMILIES`] are built (the entry point, its override values and its
//! bind group layout come from that table), so the Tint check, which compiles every one of
//! them, covers all the host can build.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::error::{bail, err, Result};

use super::shaders::{self, BindingKind, EntryPoint, SharedLayout};

/// Names one pipeline: a shader family, an entry point, and the values of its `override`
/// constants (as f64 bits, so the key is hashable).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KernelKey {
    /// The shader family (`shaders/<family>.wgsl`).
    pub family: &'static str,
    /// The entry point's function name.
    pub entry: &'static str,
    /// Each `override` constant set, by name, with its value's f64 bits, in the order given.
    pub constants: Vec<(&'static str, u64)>,
    /// Whether the pipeline takes its layout's per-dispatch value as immediate data
    /// ([`shaders::ImmediateVariant`]) rather than as a uniform at a dynamic offset.
    pub immediates: bool,
}

impl KernelKey {
    /// The pipeline of `entry` in `family` with no `override` constants set yet.
    pub fn new(family: &'static str, entry: &'static str) -> Self {
        Self {
            family,
            entry,
            constants: Vec::new(),
            immediates: false,
        }
    }

    /// The same pipeline built to take its per-dispatch value as immediate data when
    /// `immediates`; the device must offer `IMMEDIATES` with at least
    /// [`shaders::PER_DISPATCH_BYTES`] of them.
    pub fn with_immediates(mut self, immediates: bool) -> Self {
        self.immediates = immediates;
        self
    }

    /// Sets `override` constant `name` to `value`; it must be one of the values the entry point
    /// lists in [`shaders::FAMILIES`].
    pub fn with(mut self, name: &'static str, value: f64) -> Self {
        self.constants.push((name, value.to_bits()));
        self
    }
}

/// A compiled pipeline and the layout of its bind group 0.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// The compiled compute pipeline.
    pub pipeline: wgpu::ComputePipeline,
    /// The layout of bind group 0 (shared, or derived from the entry point).
    pub layout: wgpu::BindGroupLayout,
    /// The key the pipeline was compiled for.
    pub key: KernelKey,
    /// Invocations per workgroup as the entry point's `@workgroup_size` declares them, for
    /// cost tables; `None` where a size is neither a literal nor a module constant.
    pub invocations: Option<u32>,
}

type SharedLayoutObjects = (wgpu::BindGroupLayout, wgpu::PipelineLayout);

/// A device's compiled pipelines, each compiled once on first use and cached by [`KernelKey`],
/// with the shader modules and shared bind group layouts they come from.
pub struct KernelRegistry {
    device: wgpu::Device,
    /// By family, and whether it is the immediates variant.
    modules: Mutex<HashMap<(&'static str, bool), wgpu::ShaderModule>>,
    /// By layout name, and whether the per-dispatch value is immediate data.
    layouts: Mutex<HashMap<(&'static str, bool), SharedLayoutObjects>>,
    pipelines: Mutex<HashMap<KernelKey, Kernel>>,
    compiled: AtomicUsize,
}

impl KernelRegistry {
    /// An empty registry for `device`.
    pub fn new(device: wgpu::Device) -> Self {
        Self {
            device,
            modules: Mutex::new(HashMap::new()),
            layouts: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
            compiled: AtomicUsize::new(0),
        }
    }

    /// How many pipelines have been compiled (each key once, however often it is used).
    pub fn compiled_count(&self) -> usize {
        self.compiled.load(Ordering::Relaxed)
    }

    /// The pipeline for `key`, compiled on first use.
    pub fn get(&self, key: &KernelKey) -> Result<Kernel> {
        if let Some(k) = self
            .pipelines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
        {
            return Ok(k.clone());
        }
        let kernel = self.compile(key)?;
        let mut map = self.pipelines.lock().unwrap_or_else(|p| p.into_inner());
        Ok(map.entry(key.clone()).or_insert(kernel).clone())
    }

    /// The bind group layout and pipeline layout of `shared`, created on first use; with
    /// `immediates`, its per-dispatch value is immediate data and leaves the bind group.
    fn shared_layout(&self, shared: &SharedLayout, immediates: bool) -> SharedLayoutObjects {
        let mut layouts = self.layouts.lock().unwrap_or_else(|p| p.into_inner());
        let objects = layouts.entry((shared.name, immediates)).or_insert_with(|| {
            let entries: Vec<wgpu::BindGroupLayoutEntry> = shared
                .bindings
                .iter()
                .filter(|(_, kind)| !(immediates && *kind == BindingKind::PerDispatch))
                .map(|&(binding, kind)| wgpu::BindGroupLayoutEntry {
                    binding,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: match kind {
                            BindingKind::Uniform | BindingKind::PerDispatch => {
                                wgpu::BufferBindingType::Uniform
                            }
                            BindingKind::ReadOnlyStorage => {
                                wgpu::BufferBindingType::Storage { read_only: true }
                            }
                            BindingKind::Storage => {
                                wgpu::BufferBindingType::Storage { read_only: false }
                            }
                        },
                        has_dynamic_offset: kind == BindingKind::PerDispatch,
                        min_binding_size: None,
                    },
                    count: None,
                })
                .collect();
            let bgl = self
                .device
                .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: Some(shared.name),
                    entries: &entries,
                });
            let pl = self
                .device
                .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                    label: Some(shared.name),
                    bind_group_layouts: &[Some(&bgl)],
                    immediate_size: if immediates {
                        shaders::PER_DISPATCH_BYTES
                    } else {
                        0
                    },
                });
            (bgl, pl)
        });
        objects.clone()
    }

    /// The shader module of `family`, or of its immediates variant, compiled on first use.
    fn module(&self, family: &'static str, immediates: bool) -> Result<wgpu::ShaderModule> {
        let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = modules.get(&(family, immediates)) {
            return Ok(m.clone());
        }
        let fam =
            shaders::family(family).ok_or_else(|| err!(Invalid, "no shader family {family:?}"))?;
        let source = if immediates {
            shaders::immediate_source(fam).ok_or_else(|| {
                err!(
                    Invalid,
                    "shader family {family:?} has no variant that takes immediates"
                )
            })?
        } else {
            shaders::full_source(fam)
        };
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(family),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        };
        let module = self.device.create_shader_module(desc);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(err!(
                Adapter,
                "compiling shader family {family:?}: {}",
                super::device::error_chain(&e)
            ));
        }
        modules.insert((family, immediates), module.clone());
        Ok(module)
    }

    fn compile(&self, key: &KernelKey) -> Result<Kernel> {
        let entry = listed_entry_point(key)?;
        let module = self.module(key.family, key.immediates)?;
        let constants: Vec<(&str, f64)> = key
            .constants
            .iter()
            .map(|(n, bits)| (*n, f64::from_bits(*bits)))
            .collect();
        let label = format!("{}::{}", key.family, key.entry);
        let shared = entry.layout.map(|l| self.shared_layout(l, key.immediates));
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&label),
                layout: shared.as_ref().map(|(_, pl)| pl),
                module: &module,
                entry_point: Some(key.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(err!(
                Adapter,
                "building pipeline {label}: {}",
                super::device::error_chain(&e)
            ));
        }
        self.compiled.fetch_add(1, Ordering::Relaxed);
        log::debug!("compiled pipeline {label} {:?}", key.constants);
        let layout = match shared {
            Some((bgl, _)) => bgl,
            None => pipeline.get_bind_group_layout(0),
        };
        let invocations = shaders::family(key.family)
            .and_then(|f| shaders::workgroup_invocations(&shaders::full_source(f), key.entry));
        Ok(Kernel {
            pipeline,
            layout,
            key: key.clone(),
            invocations,
        })
    }
}

/// The table entry of `key`'s entry point, once its override values are checked against it:
/// every override the table lists set, to a value the table lists, and nothing else.
fn listed_entry_point(key: &KernelKey) -> Result<&'static EntryPoint> {
    let label = format!("{}::{}", key.family, key.entry);
    let entry = shaders::family(key.family)
        .and_then(|f| f.entry_point(key.entry))
        .ok_or_else(|| {
            err!(
                Invalid,
                "pipeline {label} is not listed in gpu::shaders::FAMILIES"
            )
        })?;
    let set: Vec<(&str, f64)> = key
        .constants
        .iter()
        .map(|(n, bits)| (*n, f64::from_bits(*bits)))
        .collect();
    for (name, value) in &set {
        let listed = entry
            .overrides
            .iter()
            .find(|o| o.name == *name)
            .is_some_and(|o| o.values.contains(value));
        if !listed {
            bail!(
                Invalid,
                "pipeline {label} with {name} = {value} is not listed in gpu::shaders::FAMILIES"
            );
        }
    }
    for o in entry.overrides {
        let times = set.iter().filter(|(n, _)| *n == o.name).count();
        if times != 1 {
            bail!(
                Invalid,
                "pipeline {label} sets override {} {times} times, expected once",
                o.name
            );
        }
    }
    if key.immediates
        && entry
            .layout
            .and_then(|l| l.per_dispatch_binding())
            .is_none()
    {
        bail!(
            Invalid,
            "pipeline {label} has no per-dispatch value to take as immediates"
        );
    }
    if set.len() != entry.overrides.len() {
        bail!(
            Invalid,
            "pipeline {label} sets {} overrides, gpu::shaders::FAMILIES lists {}",
            set.len(),
            entry.overrides.len()
        );
    }
    Ok(entry)
}
