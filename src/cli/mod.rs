//! The command line: argument parsing and printing only; the work is in the library.

mod bench;
mod distributed;
mod fit;
mod info;
mod interop;
mod selftest;
mod train;
mod word2vec;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// The `recur` command line: one subcommand and its arguments.
#[derive(Parser)]
#[command(
    name = "recur",
    version,
    about = "Recurrent neural networks on any GPU through wgpu"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every adapter, the one recur picks, its features and compute limits.
    Info,
    /// Check each GPU kernel against the CPU path on random inputs (the first thing to run
    /// on a new GPU or driver).
    Selftest(selftest::Args),
    /// Measure the GPU path against the CPU path.
    Bench(bench::Args),
    /// Run a recurrent stack on PyTorch weights and inputs (safetensors): output, h_n, c_n.
    Forward(interop::Args),
    /// Gradients of a recurrent stack for given output gradients (safetensors in and out).
    Vjp(interop::VjpArgs),
    /// Train word vectors (word2vec: CBOW or skip-gram) on a text corpus.
    Word2vec(word2vec::TrainArgs),
    /// The nearest words to a word by cosine similarity.
    Similar(word2vec::SimilarArgs),
    /// "A is to B as C is to ?" by 3CosAdd.
    Analogy(word2vec::AnalogyArgs),
    /// Word-pair similarity or analogy accuracy of a vectors file.
    Evaluate(word2vec::EvaluateArgs),
    /// Train a character-level LSTM language model (default: on Shakespeare, on a hardware GPU
    /// if there is one, else on the CPU).
    Train(train::TrainArgs),
    /// Sample text from a checkpoint written by `recur train`.
    Generate(train::GenerateArgs),
    /// Train a many-to-one classifier (rows: label, values) or a one-step forecaster (one
    /// column) and report accuracy or error on a test file.
    Fit(fit::FitArgs),
}

/// A size the library refused (a [`crate::memory::LimitError`] in the chain), with the
/// options it came from named: the library names fields (`hidden_size 100000`), the
/// command line its flags (`--hidden 100000`).
fn name_options(e: impl Into<anyhow::Error>, options: impl FnOnce() -> String) -> anyhow::Error {
    let e = e.into();
    if crate::memory::is_limit(e.as_ref()) {
        let options = options();
        e.context(format!("{options}: too large for this machine"))
    } else {
        e
    }
}

/// An option the library refused, which names it by its field (`hidden 0 is invalid`,
/// ``dropout rate `input` 1.5 is invalid``), with the command line's flag for that field in
/// front (`--hidden: hidden 0 is invalid: ...`); `flags` pairs each field, as the message
/// starts, with its flag. Errors naming no field in `flags` pass as they are.
fn name_flag(e: crate::Error, flags: &[(&str, &str)]) -> crate::Error {
    let text = e.to_string();
    let named = flags.iter().find(|(field, _)| {
        text.strip_prefix(field)
            .is_some_and(|rest| rest.starts_with([' ', ':']))
    });
    match named {
        Some((_, flag)) => e.context(flag),
        None => e,
    }
}

/// The dropout rates' fields (`DropoutRates`) and the flags `recur train` and `recur fit`
/// take them from.
const DROPOUT_FLAGS: [(&str, &str); 3] = [
    ("dropout rate `input`", "--input-dropout"),
    ("dropout rate `between_layers`", "--dropout"),
    ("dropout rate `recurrent`", "--recurrent-dropout"),
];

/// Runs the `recur` command line: parses the process's arguments and runs the subcommand
/// (logging at `warn` unless `RUST_LOG` says otherwise).
pub fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match cli.command {
        Command::Info => info::run(),
        Command::Selftest(args) => selftest::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Forward(args) => interop::forward(args),
        Command::Vjp(args) => interop::vjp(args),
        Command::Word2vec(args) => word2vec::train(args),
        Command::Similar(args) => word2vec::similar(args),
        Command::Analogy(args) => word2vec::analogy(args),
        Command::Evaluate(args) => word2vec::evaluate(args),
        Command::Train(args) => train::train(args),
        Command::Generate(args) => train::generate(args),
        Command::Fit(args) => fit::run(args),
    }
}

/// `--backend`: where a command computes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    /// A hardware GPU if there is one, else the CPU.
    #[default]
    Auto,
    /// The best GPU adapter there is, software ones (lavapipe, llvmpipe) included.
    Gpu,
    /// The CPU path.
    Cpu,
}

impl BackendArg {
    /// Opens the backend, saying on stderr which one and why.
    pub fn open(self) -> Result<crate::Backend> {
        let backend = match self {
            BackendArg::Auto => {
                let choice = crate::Backend::choose();
                let hint = match choice.backend {
                    crate::Backend::Cpu => "; --backend gpu forces a GPU adapter",
                    crate::Backend::Gpu(_) => "; --backend cpu forces the CPU",
                };
                eprintln!("{}{hint}", choice.reason);
                return Ok(choice.backend);
            }
            BackendArg::Gpu => crate::Backend::gpu()?,
            BackendArg::Cpu => crate::Backend::Cpu,
        };
        let flag = match self {
            BackendArg::Gpu => "gpu",
            _ => "cpu",
        };
        eprintln!("running on {} (--backend {flag})", backend.describe());
        Ok(backend)
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every subcommand, option and positional argument says what it is in `--help`.
    #[test]
    fn every_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                let path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() {
                    missing.push(path.clone());
                }
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "recur", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }
}
