//! Every shader family parses and validates with naga, so a broken kernel fails `cargo test`
//! even on a machine with no adapter.

use recur::gpu::shaders::{full_source, FAMILIES};

#[test]
fn every_shader_family_parses_and_validates() {
    assert!(!FAMILIES.is_empty());
    let shader_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    for family in FAMILIES {
        let source = full_source(family);
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{}: {}", family.name, e.emit_to_string(&source)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}: {}", family.name, e.emit_to_string(&source)));
        assert!(
            module
                .entry_points
                .iter()
                .any(|e| e.stage == naga::ShaderStage::Compute),
            "{} has no compute entry point",
            family.name
        );
        assert!(shader_dir.join(format!("{}.wgsl", family.name)).exists());
    }
}

#[test]
fn every_wgsl_file_is_registered() {
    let shader_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    for entry in std::fs::read_dir(shader_dir).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        if path.extension().is_some_and(|e| e == "wgsl") && stem != "common" {
            assert!(
                FAMILIES.iter().any(|f| f.name == stem),
                "shaders/{stem}.wgsl is not in FAMILIES"
            );
        }
    }
}

/// The table of pipelines (`FAMILIES[..].entry_points`) lists exactly the compute entry
/// points each family has, and only overrides the family declares.
#[test]
fn the_pipeline_table_matches_the_shaders() {
    for family in FAMILIES {
        let source = full_source(family);
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{}: {}", family.name, e.emit_to_string(&source)));
        let mut in_shader: Vec<&str> = module
            .entry_points
            .iter()
            .filter(|e| e.stage == naga::ShaderStage::Compute)
            .map(|e| e.name.as_str())
            .collect();
        let mut in_table: Vec<&str> = family.entry_points.iter().map(|e| e.name).collect();
        in_shader.sort_unstable();
        in_table.sort_unstable();
        assert_eq!(
            in_shader, in_table,
            "entry points of family {}",
            family.name
        );
        for entry in family.entry_points {
            for o in entry.overrides {
                assert!(
                    module
                        .overrides
                        .iter()
                        .any(|(_, d)| d.name.as_deref() == Some(o.name)),
                    "{}::{} lists override {} that the shader does not declare",
                    family.name,
                    entry.name,
                    o.name
                );
                assert!(!o.values.is_empty(), "{} lists no values", o.name);
            }
        }
    }
}

/// Writes what the Tint check (`tools/tint-check`) compiles: per family, the source exactly
/// as the registry assembles it and every pipeline the host may build from it (entry point,
/// override values, shared bind group layout), one JSON file per family, into
/// `RECUR_TINT_MANIFEST` (default: a folder under Cargo's test temp dir).
#[test]
fn tint_manifest() {
    use recur::gpu::shaders::BindingKind;
    let dir = std::env::var_os("RECUR_TINT_MANIFEST")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("tint-manifest"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut total = 0;
    for family in FAMILIES {
        let mut pipelines = Vec::new();
        for entry in family.entry_points {
            let layout = entry.layout.map(|l| {
                let bindings: Vec<serde_json::Value> = l
                    .bindings
                    .iter()
                    .map(|&(binding, kind)| {
                        let kind = match kind {
                            // Dynamic offsets do not change what compiles.
                            BindingKind::Uniform | BindingKind::PerDispatch => "uniform",
                            BindingKind::ReadOnlyStorage => "read-only-storage",
                            BindingKind::Storage => "storage",
                        };
                        serde_json::json!({ "binding": binding, "type": kind })
                    })
                    .collect();
                serde_json::json!({ "name": l.name, "bindings": bindings })
            });
            for combo in entry.override_combinations() {
                let constants: serde_json::Map<String, serde_json::Value> = combo
                    .iter()
                    .map(|(n, v)| (n.to_string(), serde_json::json!(v)))
                    .collect();
                pipelines.push(serde_json::json!({
                    "entry": entry.name,
                    "constants": constants,
                    "layout": layout,
                }));
            }
        }
        total += pipelines.len();
        let manifest = serde_json::json!({
            "family": family.name,
            "source": full_source(family),
            "pipelines": pipelines,
        });
        let path = dir.join(format!("{}.json", family.name));
        std::fs::write(&path, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
    }
    // Every entry point at least once, more where overrides multiply them.
    let entries: usize = FAMILIES.iter().map(|f| f.entry_points.len()).sum();
    assert!(total >= entries);
    eprintln!(
        "wrote {total} pipelines of {} families to {}",
        FAMILIES.len(),
        dir.display()
    );
}
