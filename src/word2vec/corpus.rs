//! Reading a corpus file as it goes: a line is a sentence, tokens are split on whitespace.
//! Only one line is held in memory at a time, so a corpus larger than memory trains.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{bail, IoResultExt, Result};

use crate::memory::Budget;

/// Lines of a file, or of the lines that start inside a byte range of it (how the trainer's
/// threads share one file, as word2vec.c splits it).
pub struct LineReader {
    reader: BufReader<File>,
    path: PathBuf,
    /// Byte offset of the next line's start.
    pos: u64,
    /// Lines starting at or after this offset belong to someone else.
    end: u64,
    buf: Vec<u8>,
}

impl LineReader {
    /// Every line of `path`.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_range(path, 0, u64::MAX)
    }

    /// The lines of `path` whose first byte lies in `start..end`.
    pub fn open_range(path: &Path, start: u64, end: u64) -> Result<Self> {
        let opening = || format!("opening corpus {}", path.display());
        let file = File::open(path).io(path, opening)?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut pos = 0;
        let mut buf = Vec::new();
        if start > 0 {
            // The line that straddles `start` belongs to the range before it.
            reader.seek(SeekFrom::Start(start - 1)).io(path, opening)?;
            let n = reader.read_until(b'\n', &mut buf).io(path, opening)?;
            pos = start - 1 + n as u64;
        }
        Ok(Self {
            reader,
            path: path.to_path_buf(),
            pos,
            end,
            buf,
        })
    }

    /// The next line without its line ending, or `None` at the end of the range. Invalid
    /// UTF-8 is an error naming the byte offset in the file.
    pub fn next_line(&mut self) -> Result<Option<&str>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        self.buf.clear();
        // A line is held whole: one longer than the memory budget (a file without line
        // breaks, a device that never ends) is refused rather than read until memory runs out.
        let limit = Budget::host().bytes() / 2;
        let n = (&mut self.reader)
            .take(limit.saturating_add(1))
            .read_until(b'\n', &mut self.buf)
            .io(&self.path, || {
                format!("reading corpus {}", self.path.display())
            })?;
        if n == 0 {
            return Ok(None);
        }
        if n as u64 > limit {
            Budget::stated(limit, "half the memory budget").check(
                format_args!(
                    "corpus {}: the line at byte offset {}",
                    self.path.display(),
                    self.pos
                ),
                Some(n as u64),
            )?;
        }
        let start = self.pos;
        self.pos += n as u64;
        let mut line: &[u8] = &self.buf;
        while let [rest @ .., b'\n' | b'\r'] = line {
            line = rest;
        }
        match std::str::from_utf8(line) {
            Ok(s) => Ok(Some(s)),
            Err(e) => bail!(
                Format,
                "corpus {}: invalid UTF-8 at byte offset {}",
                self.path.display(),
                start + e.valid_up_to() as u64
            ),
        }
    }
}

/// The size of `path` in bytes.
pub fn file_len(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .io(path, || format!("opening corpus {}", path.display()))?
        .len())
}
