fn main() -> anyhow::Result<()> {
    recur::cli::main()
}
