//! File input whose size is checked before it is read, and file output that never leaves a
//! half-written file behind.

use std::io::{Read, Write};
use std::path::Path;

use crate::error::{bail, err, IoResultExt, Result};

use crate::memory::{vec_with_capacity, Budget};

/// Writes `bytes` to a temporary file beside `path`, flushes it to disk, then renames it
/// over `path`, so a crash leaves either the old file or the new one, never a broken one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    // Checked first: the rename onto a directory would fail only after the whole write.
    if path.is_dir() {
        bail!(
            Invalid,
            "{} is a directory: expected the path of a file to write",
            path.display()
        );
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| err!(Invalid, "{} is not a file path", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> Result<()> {
        let writing = || format!("writing {}", tmp.display());
        let mut f =
            std::fs::File::create(&tmp).io(&tmp, || format!("creating {}", tmp.display()))?;
        f.write_all(bytes).io(&tmp, writing)?;
        f.sync_all().io(&tmp, writing)?;
        std::fs::rename(&tmp, path).io(path, || {
            format!("renaming {} to {}", tmp.display(), path.display())
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads a whole file after checking its length against the host budget, into a buffer
/// reserved fallibly; `what` names the file's role in errors ("vectors file"). A file
/// without a length (a pipe, a device) is read up to the budget and refused past it.
pub fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    let context = || format!("reading {what} {}", path.display());
    let file = std::fs::File::open(path).io(path, context)?;
    let meta = file.metadata().io(path, context)?;
    let budget = Budget::host();
    let len = if meta.is_file() { meta.len() } else { 0 };
    let mut bytes = vec_with_capacity::<u8>(
        usize::try_from(len).unwrap_or(usize::MAX),
        format_args!("{what} {} of {len} bytes", path.display()),
        &budget,
    )?;
    // One byte past the budget tells a stream that never ends from one that fits.
    file.take(budget.bytes().saturating_add(1))
        .read_to_end(&mut bytes)
        .io(path, context)?;
    budget.check(
        format_args!(
            "{what} {} (read until it passed the budget)",
            path.display()
        ),
        Some(bytes.len() as u64),
    )?;
    Ok(bytes)
}
