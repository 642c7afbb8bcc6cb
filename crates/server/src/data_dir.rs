//! One server per data directory.
//!
//! Two servers appending to the same AOF interleave their writes and each rewrites
//! the manifest as if alone: acknowledged writes of both are lost, and the files
//! still look valid. So a server holds an exclusive lock on `<dir>/tidewire.lock`
//! for its whole life. The kernel holds the lock (`flock`), not the file's
//! existence: a holder killed with SIGKILL releases it with its last descriptor,
//! so a crash never blocks the next start. The file names the holder (pid and
//! start time) for the error the next server prints.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The lock file's name inside the data dir.
pub const LOCK_FILE: &str = "tidewire.lock";

/// Held for as long as the server uses the directory; dropping it releases the lock.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes the directory's lock, or says who holds it.
    pub fn acquire(dir: &Path) -> anyhow::Result<DataDirLock> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    "another process".to_string()
                } else {
                    format!("another tidewire ({holder})")
                };
                anyhow::bail!(
                    "data dir {} is in use by {holder}: two servers on one data dir \
                     would lose acknowledged writes; stop the other server or pass \
                     another --data-dir",
                    dir.display()
                );
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let who = format!(
            "pid {}, started at unix time {started}\n",
            std::process::id()
        );
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(who.as_bytes()))
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(DataDirLock { _file: file, path })
    }

    /// The lock of the data dir holding `file` (its AOF lives one level down, in
    /// `appendonlydir`), if one of the two folders above it is a data dir.
    pub fn acquire_enclosing(file: &Path) -> anyhow::Result<Option<DataDirLock>> {
        let file = std::path::absolute(file)
            .with_context(|| format!("cannot resolve {}", file.display()))?;
        for dir in file.ancestors().skip(1).take(2) {
            if dir.join(LOCK_FILE).exists() {
                return DataDirLock::acquire(dir).map(Some);
            }
        }
        Ok(None)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_named_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let err = DataDirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is in use by another tidewire"), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        let again = DataDirLock::acquire(dir.path()).unwrap();
        assert!(again.path().ends_with(LOCK_FILE));
    }

    #[test]
    fn a_repair_inside_a_data_dir_in_use_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let aof = dir
            .path()
            .join("appendonlydir")
            .join("appendonly.aof.1.incr.aof");
        let held = DataDirLock::acquire(dir.path()).unwrap();
        let err = DataDirLock::acquire_enclosing(&aof)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is in use by another tidewire"), "{err}");
        drop(held);
        assert!(DataDirLock::acquire_enclosing(&aof).unwrap().is_some());
        let elsewhere = tempfile::tempdir().unwrap();
        assert!(
            DataDirLock::acquire_enclosing(&elsewhere.path().join("x.aof"))
                .unwrap()
                .is_none()
        );
    }
}
