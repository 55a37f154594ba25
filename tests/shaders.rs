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
