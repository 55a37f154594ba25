//! Adapter choice: a missing adapter or a bad setting is an error that says how to get one
//! right, never a panic.
//! (Its own test binary: it changes environment variables the adapter choice reads.)

#[test]
fn no_matching_adapter_is_an_error_with_help() {
    std::env::set_var("WGPU_ADAPTER_NAME", "no-such-adapter-anywhere");
    let err = recur::Gpu::new().unwrap_err().to_string();
    assert!(
        err.contains("no-such-adapter-anywhere") && err.contains("matches no adapter"),
        "{err}"
    );
    std::env::remove_var("WGPU_ADAPTER_NAME");

    // Metal exists on no Linux machine: no adapter at all.
    if cfg!(target_os = "linux") {
        std::env::set_var("WGPU_BACKEND", "metal");
        let err = recur::Gpu::new().unwrap_err().to_string();
        assert!(
            err.contains("mesa-vulkan-drivers") && err.contains("CPU backend"),
            "{err}"
        );
        std::env::remove_var("WGPU_BACKEND");
    }

    // An unknown limits mode is named, with the modes there are.
    std::env::set_var("RECUR_LIMITS", "generous");
    let err = recur::Gpu::new().unwrap_err().to_string();
    assert!(
        err.contains("\"generous\"") && err.contains("adapter or default"),
        "{err}"
    );
    std::env::remove_var("RECUR_LIMITS");
}
