//! The library's error: one [`Error`] enum whose variants are the kinds a caller can act
//! on (a wrong shape, a size over a limit, an adapter that cannot run a kernel, a file that
//! cannot be read or is corrupt, a non-finite value, a bad argument), each with a message
//! that names the value and what was expected.
//!
//! [`ResultExt::context`] and [`ResultExt::with_context`] put what the caller was doing in
//! front of the message ("loading model.safetensors: ..."), keeping the variant, so a
//! caller matches on the kind however deep the error came from:
//!
//! ```
//! use recur::nn::load_safetensors;
//! use recur::Error;
//!
//! match load_safetensors(std::path::Path::new("/no/such/file.safetensors")) {
//!     Err(Error::Io { path, .. }) => assert!(path.ends_with("file.safetensors")),
//!     other => panic!("expected an Io error, got {other:?}"),
//! }
//! ```

use std::fmt::Display;
use std::path::{Path, PathBuf};

use crate::memory::LimitError;

/// `Result` with recur's [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the library can fail with, by kind. Messages name the value at fault and
/// what was expected; context added on the way up ([`ResultExt`]) goes in front of the
/// message, so the variant stays the kind of the first failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor, batch, sequence or slice of the wrong shape or length for the operation
    /// (e.g. `gemm A [3, 4] and B [5, 2]: expected B with 4 rows`).
    #[error("{0}")]
    Shape(String),

    /// A size beyond what is available: the host's memory, the adapter's limits (its
    /// largest buffer, its workgroup counts) or a stated [`crate::memory::Budget`]. Sizes
    /// checked against a budget come from a [`LimitError`], whose message names the value,
    /// the bytes it needs and the budget.
    #[error("{0}")]
    Limit(String),

    /// The GPU side failed: no adapter, a device error reported by wgpu, a lost device, a
    /// buffer mapping that did not complete.
    #[error("{0}")]
    Adapter(String),

    /// The adapter cannot run a kernel at all, whatever the sizes: its limits or features
    /// fall short of what the kernel needs. A caller such as `recur selftest` reports the
    /// kernel as skipped, with this reason, rather than failed.
    #[error("{0}")]
    Unsupported(String),

    /// A file could not be opened, read, written or renamed.
    #[error("{message}")]
    Io {
        /// What was being done, with the path (`reading vectors file v.bin`).
        message: String,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A file's contents are corrupt or of a kind recur does not read: a safetensors file,
    /// a checkpoint's tensors or metadata, a word2vec vectors file, a CSV table, a corpus
    /// that is not UTF-8; or an image recur draws (the loss plot) that cannot be encoded.
    #[error("{0}")]
    Format(String),

    /// A value that is not finite (NaN or infinity) where a finite one is needed: a loss
    /// that diverged, a parameter or input holding NaN.
    #[error("{0}")]
    Numerics(String),

    /// A bad argument or configuration value: a rate out of its range, an id beyond the
    /// vocabulary, an unknown cell name, options that contradict each other.
    #[error("{0}")]
    Invalid(String),

    /// A rank of a data-parallel job failed; every rank stops with this error
    /// ([`crate::train::distributed`]).
    #[error("rank {rank} stopped the run: {message}")]
    RankFailed {
        /// The (lowest) rank that failed.
        rank: usize,
        /// Its error, with its causes.
        message: String,
    },

    /// An error every rank of a data-parallel job raised at the same point from the same
    /// data (a refused split, replicas that differ, a non-finite global loss): one rank's
    /// report says it all. Holds that error, with its own kind.
    #[error("{0}")]
    EveryRank(Box<Error>),
}

impl Error {
    /// An [`Error::Io`] for `path`, with `message` saying what was being done.
    pub fn io(message: impl Display, path: impl AsRef<Path>, source: std::io::Error) -> Error {
        Error::Io {
            message: message.to_string(),
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// This error with `context` in front of its message (`context: message`), of the
    /// same kind.
    pub fn context(self, context: impl Display) -> Error {
        let prefix = |m: String| format!("{context}: {m}");
        match self {
            Error::Shape(m) => Error::Shape(prefix(m)),
            Error::Limit(m) => Error::Limit(prefix(m)),
            Error::Adapter(m) => Error::Adapter(prefix(m)),
            Error::Unsupported(m) => Error::Unsupported(prefix(m)),
            Error::Io {
                message,
                path,
                source,
            } => Error::Io {
                message: prefix(message),
                path,
                source,
            },
            Error::Format(m) => Error::Format(prefix(m)),
            Error::Numerics(m) => Error::Numerics(prefix(m)),
            Error::Invalid(m) => Error::Invalid(prefix(m)),
            Error::RankFailed { rank, message } => Error::RankFailed {
                rank,
                message: prefix(message),
            },
            Error::EveryRank(e) => Error::EveryRank(Box::new(e.context(context))),
        }
    }

    /// The message followed by its sources' messages, joined by `: ` (what `anyhow`
    /// prints for `{:#}`): `reading vectors file v.bin: No such file or directory (os error 2)`.
    pub fn full_message(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }

    /// The kind of the first failure: for [`Error::EveryRank`], the kind of the error it
    /// holds; otherwise this error.
    pub fn kind(&self) -> &Error {
        match self {
            Error::EveryRank(e) => e.kind(),
            e => e,
        }
    }
}

impl From<LimitError> for Error {
    fn from(e: LimitError) -> Error {
        Error::Limit(e.to_string())
    }
}

/// Metadata that is not the JSON recur expects (a checkpoint's options, a model's
/// description): a [`Error::Format`] with serde_json's message.
impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Error {
        Error::Format(e.to_string())
    }
}

/// A safetensors file or tensor that does not parse or serialize: a [`Error::Format`] with
/// the safetensors crate's message.
impl From<safetensors::SafeTensorError> for Error {
    fn from(e: safetensors::SafeTensorError) -> Error {
        Error::Format(e.to_string())
    }
}

/// Context for results whose error converts into [`Error`]: the context goes in front of
/// the message, the kind stays.
pub trait ResultExt<T> {
    /// `context: message` on error.
    fn context(self, context: impl Display) -> Result<T>;
    /// `context(): message` on error; `context` runs only on error.
    fn with_context<C: Display>(self, context: impl FnOnce() -> C) -> Result<T>;
}

impl<T, E: Into<Error>> ResultExt<T> for std::result::Result<T, E> {
    fn context(self, context: impl Display) -> Result<T> {
        self.map_err(|e| e.into().context(context))
    }

    fn with_context<C: Display>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| e.into().context(context()))
    }
}

/// An `io::Result` as an [`Error::Io`] naming the file.
pub(crate) trait IoResultExt<T> {
    /// On error, an [`Error::Io`] for `path` with `message()` saying what was being done.
    fn io<C: Display>(self, path: impl AsRef<Path>, message: impl FnOnce() -> C) -> Result<T>;
}

impl<T> IoResultExt<T> for std::io::Result<T> {
    fn io<C: Display>(self, path: impl AsRef<Path>, message: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| Error::io(message(), path, e))
    }
}

/// An [`Error`] of the named kind with a formatted message: `err!(Shape, "a {x:?}")`.
macro_rules! err {
    ($kind:ident, $($arg:tt)+) => {
        $crate::error::Error::$kind(format!($($arg)+))
    };
}

/// Returns an [`Error`] of the named kind: `bail!(Invalid, "rate {r}: expected 0..1")`.
macro_rules! bail {
    ($kind:ident, $($arg:tt)+) => {
        return Err($crate::error::err!($kind, $($arg)+).into())
    };
}

/// Returns an [`Error`] of the named kind unless `cond` holds:
/// `ensure!(n > 0, Invalid, "n {n}: expected at least 1")`.
macro_rules! ensure {
    ($cond:expr, $kind:ident, $($arg:tt)+) => {
        // A `match`, not `if !cond`: `!(a < b)` on floats reads as `a >= b` and is not.
        match $cond {
            true => {}
            false => $crate::error::bail!($kind, $($arg)+),
        }
    };
}

pub(crate) use {bail, ensure, err};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_goes_in_front_and_keeps_the_kind() {
        let r: Result<()> = Err(err!(Format, "bad header {:?}", "x"));
        let e = r.context("loading a.bin").unwrap_err();
        assert!(matches!(&e, Error::Format(m) if m == "loading a.bin: bad header \"x\""));
        let io = Error::io(
            "reading a.bin",
            "a.bin",
            std::io::Error::from(std::io::ErrorKind::NotFound),
        )
        .context("loading");
        match &io {
            Error::Io { message, path, .. } => {
                assert_eq!(message, "loading: reading a.bin");
                assert_eq!(path, Path::new("a.bin"));
            }
            e => panic!("{e:?}"),
        }
        assert!(std::error::Error::source(&io).is_some());
        let every = Error::EveryRank(Box::new(err!(Numerics, "loss NaN"))).context("step 3");
        assert_eq!(every.to_string(), "step 3: loss NaN");
        assert!(matches!(every.kind(), Error::Numerics(_)));
    }

    #[test]
    fn ensure_and_bail_return_the_kind() {
        fn f(n: usize) -> Result<usize> {
            ensure!(n > 0, Invalid, "n {n}: expected at least 1");
            if n > 10 {
                bail!(Limit, "n {n}: expected at most 10");
            }
            Ok(n)
        }
        assert!(matches!(f(0), Err(Error::Invalid(m)) if m == "n 0: expected at least 1"));
        assert!(matches!(f(11), Err(Error::Limit(_))));
        assert_eq!(f(3).unwrap(), 3);
    }
}
