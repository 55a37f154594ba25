//! word2vec.c's vector files. Text: a header `V D\n`, then per word `word v1 v2 ... vD \n`
//! with values as `%lf` (six decimals, a space after each). Binary: the same header, then
//! per word `word ` followed by D little-endian f32 and `\n`. The readers also take gensim's
//! files (no trailing space in text, no newline after a binary record). A header's counts
//! are checked against the bytes the file holds before anything is reserved for them.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{bail, err, Result, ResultExt};

use super::vectors::KeyedVectors;
use crate::memory::{vec_with_capacity, Budget};
use crate::nn::Embedding;

/// Writes `kv` in word2vec.c's text format (atomically).
pub fn save_text(kv: &KeyedVectors, path: &Path) -> Result<()> {
    crate::io::write_atomic(path, &to_text(kv))
}

/// Writes `kv` in word2vec.c's binary format (atomically).
pub fn save_binary(kv: &KeyedVectors, path: &Path) -> Result<()> {
    crate::io::write_atomic(path, &to_binary(kv))
}

/// `kv` in word2vec.c's text format: the bytes [`save_text`] writes.
pub fn to_text(kv: &KeyedVectors) -> Vec<u8> {
    use std::fmt::Write;
    let mut s = format!("{} {}\n", kv.len(), kv.dim());
    for (i, w) in kv.words().iter().enumerate() {
        s.push_str(w);
        s.push(' ');
        for x in kv.row(i) {
            let _ = write!(s, "{x:.6} ");
        }
        s.push('\n');
    }
    s.into_bytes()
}

/// `kv` in word2vec.c's binary format: the bytes [`save_binary`] writes.
pub fn to_binary(kv: &KeyedVectors) -> Vec<u8> {
    let mut b = format!("{} {}\n", kv.len(), kv.dim()).into_bytes();
    b.reserve(kv.len() * (kv.dim() * 4 + 16));
    for (i, w) in kv.words().iter().enumerate() {
        b.extend_from_slice(w.as_bytes());
        b.push(b' ');
        for x in kv.row(i) {
            b.extend_from_slice(&x.to_le_bytes());
        }
        b.push(b'\n');
    }
    b
}

fn read(path: &Path) -> Result<Vec<u8>> {
    crate::io::read_file(path, "vectors file")
}

/// An `Embedding` layer initialised from a word2vec text or binary file (`trainable` or
/// frozen) and the vocabulary mapping each word to its row id.
pub fn load_embedding(path: &Path, trainable: bool) -> Result<(Embedding, HashMap<String, u32>)> {
    load(path)?
        .to_embedding(trainable)
        .with_context(|| format!("vectors {}", path.display()))
}

/// Reads a text or binary file, telling which from its first record.
pub fn load(path: &Path) -> Result<KeyedVectors> {
    let bytes = read(path)?;
    parse(&bytes).with_context(|| format!("vectors file {}", path.display()))
}

/// A text or binary file's bytes, telling which from the first record.
pub fn parse(bytes: &[u8]) -> Result<KeyedVectors> {
    // A header the file cannot hold in either format is reported as such, not as a
    // misread binary file.
    if let Ok((v, d, start)) = header(bytes) {
        check_header_fits(v, d, bytes.len() - start, "either", TEXT_VALUE_BYTES)?;
    }
    if looks_like_text(bytes) {
        parse_text(bytes)
    } else {
        parse_binary(bytes)
    }
}

/// Reads a text file (word2vec.c's or gensim's); [`load`] tells the format itself.
pub fn load_text(path: &Path) -> Result<KeyedVectors> {
    parse_text(&read(path)?).with_context(|| format!("vectors file {}", path.display()))
}

/// Reads a binary file (word2vec.c's or gensim's); [`load`] tells the format itself.
pub fn load_binary(path: &Path) -> Result<KeyedVectors> {
    parse_binary(&read(path)?).with_context(|| format!("vectors file {}", path.display()))
}

/// The header's (words, size) and the offset just past it.
fn header(bytes: &[u8]) -> Result<(usize, usize, usize)> {
    let Some(nl) = bytes.iter().position(|&b| b == b'\n') else {
        bail!(Format, "no header line `WORDS SIZE`");
    };
    let line = std::str::from_utf8(&bytes[..nl]).ok().unwrap_or("");
    let fields: Vec<&str> = line.split_whitespace().collect();
    let parse = |s: &str| s.parse::<usize>().ok();
    match fields[..] {
        [a, b] => match (parse(a), parse(b)) {
            (Some(v), Some(d)) if v > 0 && d > 0 => Ok((v, d, nl + 1)),
            _ => bail!(
                Format,
                "header {line:?}: expected two positive integers `WORDS SIZE`"
            ),
        },
        _ => bail!(Format, "header {line:?}: expected `WORDS SIZE`"),
    }
}

/// Checks that the `v x d` values a header declares fit in the `held` bytes after it, at
/// `width` bytes each at least (a separator and a digit in text, four bytes in binary), so
/// that nothing is reserved for values the file cannot hold.
fn check_header_fits(v: usize, d: usize, held: usize, format: &str, width: u64) -> Result<()> {
    let needed = (v as u64)
        .checked_mul(d as u64)
        .and_then(|n| n.checked_mul(width));
    if needed.is_some_and(|n| n <= held as u64) {
        return Ok(());
    }
    let needed = needed.map_or_else(
        || "more than 2^64 bytes".to_string(),
        |n| format!("at least {n} bytes"),
    );
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    bail!(
        Format,
        "the header declares {v} word{} of {d} value{}, whose values alone take {needed} in \
         {format} format; the file holds {held} bytes after its header",
        plural(v),
        plural(d)
    )
}

/// Fewest bytes a value takes in a text file: a separator and a digit.
const TEXT_VALUE_BYTES: u64 = 2;

/// Bytes of a value in a binary file.
const BINARY_VALUE_BYTES: u64 = 4;

/// A text file's first record is a line of a word and exactly SIZE numbers.
fn looks_like_text(bytes: &[u8]) -> bool {
    let Ok((_, d, start)) = header(bytes) else {
        return true;
    };
    let rest = &bytes[start..];
    let line = &rest[..rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len())];
    let Ok(line) = std::str::from_utf8(line) else {
        return false;
    };
    let fields: Vec<&str> = line.split_ascii_whitespace().collect();
    fields.len() == d.saturating_add(1) && fields[1..].iter().all(|f| f.parse::<f32>().is_ok())
}

/// A text file's bytes. A `Format` error says where the file disagrees with its header
/// (words, or values on a line), holds a value that is not a finite number, or is not UTF-8.
pub fn parse_text(bytes: &[u8]) -> Result<KeyedVectors> {
    let (v, d, start) = header(bytes)?;
    check_header_fits(v, d, bytes.len() - start, "the text", TEXT_VALUE_BYTES)?;
    let text = match std::str::from_utf8(&bytes[start..]) {
        Ok(t) => t,
        Err(e) => bail!(
            Format,
            "invalid UTF-8 at byte offset {}",
            start + e.valid_up_to()
        ),
    };
    // At most one value per two bytes of the file (checked above); the words grow as read.
    let mut words = Vec::new();
    let mut data = vec_with_capacity(v * d, "the vectors file's values", &Budget::host())?;
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 2;
        let mut fields = line.split_ascii_whitespace();
        let Some(word) = fields.next() else {
            continue;
        };
        if words.len() == v {
            bail!(
                Format,
                "the header says {v} words but line {line_no} holds another ({word:?})"
            );
        }
        let before = data.len();
        for f in fields {
            let x: f32 = f
                .parse()
                .ok()
                .filter(|x: &f32| x.is_finite())
                .ok_or_else(|| {
                    err!(Format, "line {line_no}: value {f:?} is not a finite number")
                })?;
            data.push(x);
        }
        if data.len() - before != d {
            bail!(
                Format,
                "line {line_no} ({word:?}) has {} values: the header says {d}",
                data.len() - before
            );
        }
        words.push(word.to_string());
    }
    if words.len() < v {
        bail!(
            Format,
            "the file ends early: the header says {v} words, found {}",
            words.len()
        );
    }
    KeyedVectors::new(words, d, data)
}

/// A binary file's bytes. A `Format` error says where the file ends early or goes on past
/// the header's word count, or holds a word that is empty or not UTF-8; a value that is not
/// finite is a `Numerics` error.
pub fn parse_binary(bytes: &[u8]) -> Result<KeyedVectors> {
    let (v, d, mut pos) = header(bytes)?;
    check_header_fits(v, d, bytes.len() - pos, "the binary", BINARY_VALUE_BYTES)?;
    // The values are in the file as they are (checked above); the words grow as read.
    let mut words = Vec::new();
    let mut data = vec_with_capacity(v * d, "the vectors file's values", &Budget::host())?;
    for i in 0..v {
        while pos < bytes.len() && (bytes[pos] == b'\n' || bytes[pos] == b'\r') {
            pos += 1;
        }
        let Some(len) = bytes[pos..].iter().position(|&b| b == b' ') else {
            bail!(
                Format,
                "the file ends early: the header says {v} words, found {i}"
            );
        };
        let word = match std::str::from_utf8(&bytes[pos..pos + len]) {
            Ok(w) if !w.is_empty() => w,
            Ok(_) => bail!(Format, "empty word at byte offset {pos}"),
            Err(e) => bail!(
                Format,
                "invalid UTF-8 in word {} at byte offset {}",
                i + 1,
                pos + e.valid_up_to()
            ),
        };
        pos += len + 1;
        if bytes.len() - pos < 4 * d {
            bail!(
                Format, "the file ends early in the vector of {word:?} (word {} of {v}): {} bytes left, {} needed",
                i + 1,
                bytes.len() - pos,
                4 * d
            );
        }
        for c in bytes[pos..pos + 4 * d].chunks_exact(4) {
            let x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            if !x.is_finite() {
                bail!(
                    Numerics,
                    "the vector of {word:?} holds {x}: expected finite values"
                );
            }
            data.push(x);
        }
        pos += 4 * d;
        words.push(word.to_string());
    }
    if let Some(extra) = bytes[pos..].iter().position(|b| !b.is_ascii_whitespace()) {
        bail!(
            Format,
            "the header says {v} words but the file goes on at byte offset {}",
            pos + extra
        );
    }
    KeyedVectors::new(words, d, data)
}
