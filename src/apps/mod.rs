//! The applications built on the library: what the `recur` command runs. Nothing in the
//! core (`gpu`, `cpu`, `ops`, `exec`, `nn`, `train`, `word2vec`) imports this module.

pub mod bench;
pub mod charlm;
pub mod fit;
pub mod interop;
#[cfg(feature = "cli")]
pub mod plot;
pub mod selftest;
