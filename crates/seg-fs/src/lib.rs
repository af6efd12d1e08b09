//! Atomic file writes, a stable hash of bytes, and caught panics as one-line messages
//! (standard library only).
//!
//! A file written with [`write_atomic`] or [`write_atomic_with`] is either left untouched or
//! fully replaced: the new contents go to a temporary file in the same directory
//! (`.<name>.tmp-<pid>-<n>`), which is flushed, `fsync`ed and then renamed over the target.
//! A crash or error half-way never leaves a truncated target behind.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Per-process counter so that concurrent writers in one process never share a temp file.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Atomically replaces `path` with `bytes`.
///
/// The parent directory must exist. On error the target is left as it was and the temporary
/// file is removed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Atomically replaces `path` with whatever `write` writes.
///
/// `write` receives a buffered writer over a temporary file in the target's directory; once it
/// returns `Ok`, the file is flushed, synced to disk and renamed over `path`. If `write` (or any
/// later step) fails, the temporary file is removed and the error is returned unchanged.
pub fn write_atomic_with<F>(path: &Path, write: F) -> io::Result<()>
where
    F: FnOnce(&mut dyn Write) -> io::Result<()>,
{
    let tmp = temp_path(path)?;
    let result = write_and_rename(&tmp, path, write);
    if result.is_err() {
        // Best effort: the temp file may not exist if creating it failed.
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The temporary path used for `path`: `<dir>/.<name>.tmp-<pid>-<n>`.
fn temp_path(path: &Path) -> io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file path", path.display()),
        )
    })?;
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}-{n}", std::process::id()));
    Ok(parent_dir(path).join(tmp_name))
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn write_and_rename<F>(tmp: &Path, path: &Path, write: F) -> io::Result<()>
where
    F: FnOnce(&mut dyn Write) -> io::Result<()>,
{
    let file = File::create(tmp)?;
    let mut w = BufWriter::new(file);
    write(&mut w)?;
    let file = w.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.sync_all()?;
    drop(file);
    fs::rename(tmp, path)?;
    sync_dir(parent_dir(path));
    Ok(())
}

/// Syncs a directory so the rename itself is durable (best effort, Unix only).
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// FNV-1a (64 bits) of `bytes`: a hash that is the same on every machine and release (a model
/// file's fingerprint in an adaptation state, a weight name's seed at initialisation).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A caught panic's message on one line (for errors that report a dependency's panic).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
        .replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_is_the_published_function() {
        // the FNV-1a 64 test vectors of the reference (Fowler, Noll, Vo)
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn writes_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.txt");
        write_atomic(&p, b"first").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"first");
        write_atomic(&p, b"second, longer").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"second, longer");
        // No temp files left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.txt")]);
    }

    #[test]
    fn failed_writer_keeps_old_contents() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keep.txt");
        write_atomic(&p, b"old").unwrap();
        let err = write_atomic_with(&p, |w| {
            w.write_all(b"partial")?;
            Err(io::Error::other("boom"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "boom");
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope").join("x.txt");
        assert!(write_atomic(&p, b"x").is_err());
    }
}
