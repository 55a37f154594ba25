fn main() -> anyhow::Result<()> {
    // Before any thread starts: buffers freed by one pass are reused by the next instead of
    // being faulted in again (see the module's note).
    recur::cpu::allocator::keep_freed_memory();
    recur::cli::main()
}
