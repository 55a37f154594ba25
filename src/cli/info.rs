//! `recur info`: the adapters, the chosen one, its features and compute limits.

use anyhow::Result;

use crate::gpu::{list_adapters, Gpu};

pub fn run() -> Result<()> {
    let adapters = list_adapters();
    println!("adapters seen ({}):", adapters.len());
    for a in &adapters {
        let i = &a.info;
        println!(
            "  - {} | backend {:?} | {:?} | driver {} {}{}",
            i.name,
            i.backend,
            i.device_type,
            i.driver,
            i.driver_info,
            if a.compute {
                ""
            } else {
                " | no compute shaders"
            }
        );
    }
    let gpu = match Gpu::new() {
        Ok(gpu) => gpu,
        Err(e) => {
            println!("chosen: none ({e:#})");
            return Ok(());
        }
    };
    println!("chosen: {}", gpu.describe());
    let caps = gpu.capabilities();
    let on = caps.names();
    println!(
        "optional features on: {}",
        if on.is_empty() {
            "none".to_string()
        } else {
            on.join(", ")
        }
    );
    if caps.subgroup {
        println!(
            "subgroup size: {} to {}",
            caps.subgroup_min_size, caps.subgroup_max_size
        );
    }
    let l = gpu.limits();
    println!("compute limits:");
    let rows: [(&str, u64); 10] = [
        (
            "max_storage_buffer_binding_size",
            l.max_storage_buffer_binding_size,
        ),
        ("max_buffer_size", l.max_buffer_size),
        (
            "max_storage_buffers_per_shader_stage",
            l.max_storage_buffers_per_shader_stage.into(),
        ),
        (
            "max_compute_workgroup_storage_size",
            l.max_compute_workgroup_storage_size.into(),
        ),
        (
            "max_compute_invocations_per_workgroup",
            l.max_compute_invocations_per_workgroup.into(),
        ),
        (
            "max_compute_workgroup_size_x",
            l.max_compute_workgroup_size_x.into(),
        ),
        (
            "max_compute_workgroup_size_y",
            l.max_compute_workgroup_size_y.into(),
        ),
        (
            "max_compute_workgroups_per_dimension",
            l.max_compute_workgroups_per_dimension.into(),
        ),
        (
            "max_uniform_buffer_binding_size",
            l.max_uniform_buffer_binding_size,
        ),
        ("max_immediate_size", l.max_immediate_size.into()),
    ];
    for (name, value) in rows {
        println!("  {name:<40} {value}");
    }
    Ok(())
}
