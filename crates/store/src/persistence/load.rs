//! Loading at startup: the snapshot, or the AOF's base and incremental files, replayed
//! through [`Store::execute`] by an internal `loader` client (the only one served while
//! `store.loading` is set). A truncated last entry of the last incremental file (a
//! crash mid-write, or a preallocated tail the disk never got, see
//! [`format::unwritten_gap`]) is dropped with a warning and the file cut back to its
//! last valid entry; anything else unreadable stops startup with the file name and
//! byte offset.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tidewire_resp::Reply;

use super::aof::Manifest;
use super::format::{self, Bad};
use crate::{Client, Store};

/// A load failure, worded for the operator.
#[derive(Debug)]
pub struct LoadError(pub String);

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LoadError {}

fn bad_file(path: &Path, offset: usize, why: impl std::fmt::Display) -> LoadError {
    LoadError(format!(
        "Bad file format reading {} at byte offset {offset}: {why}. Run `tidewire check-aof --fix {}` to repair it (data after that offset is lost).",
        path.display(),
        path.display()
    ))
}

pub struct Loader {
    store: Arc<Store>,
    client: Client,
    out: Vec<Reply>,
    pub commands: u64,
    /// Bytes of the files already replayed (progress counts across files).
    done_bytes: u64,
    last_report: std::time::Instant,
}

/// Replayed commands between updates of the loaded-bytes figure.
const PROGRESS_EVERY: u64 = 1024;
/// How often a long load logs its progress.
const LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

impl Loader {
    pub fn new(store: &Arc<Store>) -> Loader {
        let client = store.new_client("loader".into(), String::new(), "loader");
        Loader {
            store: store.clone(),
            client,
            out: Vec::new(),
            commands: 0,
            done_bytes: 0,
            last_report: std::time::Instant::now(),
        }
    }

    /// Publishes how far the load is (`pos` bytes into the current file) and logs
    /// it every [`LOG_EVERY`].
    fn progress(&mut self, pos: usize) {
        let p = &self.store.persist;
        let loaded = self.done_bytes + pos as u64;
        p.loading_loaded_bytes.store(loaded, Ordering::Relaxed);
        if self.last_report.elapsed() >= LOG_EVERY {
            self.last_report = std::time::Instant::now();
            let total = p.loading_total_bytes.load(Ordering::Relaxed).max(1);
            tracing::info!(
                loaded_bytes = loaded,
                total_bytes = total,
                percent = format!("{:.1}", loaded as f64 * 100.0 / total as f64),
                commands = self.commands,
                "loading the dataset"
            );
        }
    }

    /// Replays the commands in `buf[range]`. Returns the end of the last complete
    /// entry (a MULTI without its EXEC is not complete) and, if the stream stopped
    /// early, where and why.
    pub fn replay(
        &mut self,
        buf: &[u8],
        range: std::ops::Range<usize>,
    ) -> (usize, Option<(usize, Bad)>) {
        let body = &buf[..range.end];
        let mut pos = range.start;
        let mut committed = pos;
        let mut in_multi = false;
        loop {
            match format::parse(body, pos) {
                Ok(None) => break,
                Ok(Some((argv, next))) => {
                    self.run(&argv);
                    pos = next;
                    if self.commands.is_multiple_of(PROGRESS_EVERY) {
                        self.progress(pos);
                    }
                    if argv[0].eq_ignore_ascii_case(b"MULTI") {
                        in_multi = true;
                    } else if argv[0].eq_ignore_ascii_case(b"EXEC") {
                        in_multi = false;
                    }
                    if !in_multi {
                        committed = pos;
                    }
                }
                Err((at, why)) => {
                    let why = match why {
                        Bad::Truncated => format::confirm_truncation(body, at),
                        other => other,
                    };
                    self.abandon_multi();
                    // Where parsing stopped, even inside a MULTI: the operator is
                    // pointed at the bad bytes, and a torn tail is judged from there.
                    return (committed, Some((at, why)));
                }
            }
        }
        // The whole file counts as loaded, up to its end (a snapshot's trailer, a
        // log's preallocated zeros).
        self.done_bytes += buf.len() as u64;
        self.progress(0);
        if in_multi {
            self.abandon_multi();
            return (committed, Some((committed, Bad::Truncated)));
        }
        (committed, None)
    }

    fn abandon_multi(&mut self) {
        if self.client.multi.is_some() {
            self.run(&[bytes::Bytes::from_static(b"DISCARD")]);
        }
    }

    fn run(&mut self, argv: &[bytes::Bytes]) {
        self.commands += 1;
        let _ = self.store.execute(&mut self.client, argv, &mut self.out);
        for r in self.out.drain(..) {
            if let Reply::Error(e) = r {
                tracing::warn!(command = %String::from_utf8_lossy(&argv[0]), error = %e, "error replaying a logged command");
            }
        }
    }

    pub fn finish(mut self) {
        self.store.drop_client(&mut self.client);
    }
}

/// A snapshot file read and checked (header, checksum), ready to replay.
pub struct CheckedSnapshot {
    buf: Vec<u8>,
    body: std::ops::Range<usize>,
}

/// Reads and checks a snapshot file. `None` if it does not exist.
pub fn read_snapshot(path: &Path) -> Result<Option<CheckedSnapshot>, LoadError> {
    let buf = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LoadError(format!("cannot read {}: {e}", path.display()))),
    };
    let body = format::snapshot_body(&buf).map_err(|(at, why)| bad_file(path, at, why))?;
    Ok(Some(CheckedSnapshot { buf, body }))
}

/// Loads a snapshot file. Returns false if it does not exist.
pub fn load_snapshot(loader: &mut Loader, path: &Path) -> Result<bool, LoadError> {
    let Some(snapshot) = read_snapshot(path)? else {
        return Ok(false);
    };
    replay_snapshot(loader, path, snapshot)?;
    Ok(true)
}

/// Replays a checked snapshot (`path` names it in errors).
pub fn replay_snapshot(
    loader: &mut Loader,
    path: &Path,
    snapshot: CheckedSnapshot,
) -> Result<(), LoadError> {
    let (_, stopped) = loader.replay(&snapshot.buf, snapshot.body);
    if let Some((at, why)) = stopped {
        return Err(bad_file(path, at, why));
    }
    Ok(())
}

/// Reads the manifest in `dir`, if any.
pub fn read_manifest(dir: &Path, stem: &str) -> Result<Option<Manifest>, LoadError> {
    let path = dir.join(super::aof::manifest_file(stem));
    match std::fs::read_to_string(&path) {
        Ok(text) => Manifest::parse(&text)
            .map(Some)
            .map_err(|e| LoadError(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LoadError(format!("cannot read {}: {e}", path.display()))),
    }
}

/// Loads every file the manifest names, in order.
pub fn load_aof(
    loader: &mut Loader,
    dir: &Path,
    manifest: &Manifest,
    allow_truncated: bool,
) -> Result<(), LoadError> {
    if let Some(base) = &manifest.base {
        let path = dir.join(base);
        if !load_snapshot(loader, &path)? {
            return Err(LoadError(format!(
                "the AOF manifest names {} but it does not exist",
                path.display()
            )));
        }
    }
    let n = manifest.incrs.len();
    for (i, name) in manifest.incrs.iter().enumerate() {
        let path: PathBuf = dir.join(name);
        let buf = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && i + 1 == n => {
                // Created by the manifest swap but never written: nothing to replay.
                continue;
            }
            Err(e) => return Err(LoadError(format!("cannot read {}: {e}", path.display()))),
        };
        // A preallocated file ends in zeros past its last entry (not data).
        let len = format::log_end(&buf);
        let (valid, stopped) = loader.replay(&buf, 0..len);
        let torn = |at: usize, why: &Bad| {
            *why == Bad::Truncated || format::unwritten_gap(&buf[..len], valid, at)
        };
        match stopped {
            None => {}
            Some((at, why)) if i + 1 == n && allow_truncated && torn(at, &why) => {
                tracing::warn!(
                    file = %path.display(),
                    valid_bytes = valid,
                    dropped_bytes = len - valid,
                    "!!! Warning: short read while loading the AOF file: the last entry is truncated (crash during a write?). Dropping it and truncating the file to its last valid entry. !!!"
                );
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| LoadError(format!("cannot open {}: {e}", path.display())))?;
                f.set_len(valid as u64)
                    .and_then(|_| f.sync_all())
                    .map_err(|e| LoadError(format!("cannot truncate {}: {e}", path.display())))?;
            }
            Some((at, why)) => return Err(bad_file(&path, at, why)),
        }
    }
    Ok(())
}
