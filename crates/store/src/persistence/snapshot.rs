//! Writing snapshots (SAVE, BGSAVE, the AOF base): a captured point-in-time copy
//! (see [`super::capture`]) streamed shard by shard as `SELECT` + the commands that
//! recreate each value + `PEXPIREAT`, framed by the header and CRC trailer of
//! [`super::format`]. Written to a temp file, fsynced, renamed over the target and
//! the directory fsynced, so a crash leaves either the old file or the new one.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use bytes::Bytes;

use super::capture::Capture;
use super::format;
use crate::keyspace::{Keyspace, NUM_SHARDS};

/// Counts and CRC while writing.
struct Out<W: Write> {
    w: W,
    crc: crc32fast::Hasher,
    scratch: Vec<u8>,
    bytes: u64,
}

impl<W: Write> Out<W> {
    fn put(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.crc.update(data);
        self.bytes += data.len() as u64;
        self.w.write_all(data)
    }

    fn cmd<A: AsRef<[u8]>>(&mut self, argv: &[A]) -> std::io::Result<()> {
        self.scratch.clear();
        format::encode(&mut self.scratch, argv);
        let s = std::mem::take(&mut self.scratch);
        let r = self.put(&s);
        self.scratch = s;
        r
    }
}

/// Streams the capture into `w`. Returns (keys written, bytes written).
pub fn write_capture<W: Write>(ks: &Keyspace, cap: &Capture, w: W) -> std::io::Result<(u64, u64)> {
    let mut out = Out {
        w,
        crc: crc32fast::Hasher::new(),
        scratch: Vec::with_capacity(4096),
        bytes: 0,
    };
    out.put(format::SNAP_HEADER)?;
    // Libraries first: nothing in the keyspace depends on them, and a loader that
    // stops early has them.
    for code in &cap.functions {
        out.cmd(&[&b"FUNCTION"[..], b"LOAD", b"REPLACE", code])?;
    }
    let mut keys = 0u64;
    for idx in 0..NUM_SHARDS {
        let copy = cap.take(ks, idx);
        for (db, entries) in copy.into_iter().enumerate() {
            if entries.is_empty() {
                continue;
            }
            out.cmd(&["SELECT", db.to_string().as_str()])?;
            for (key, entry) in entries {
                if entry.is_expired(cap.cut_ms) {
                    continue;
                }
                let key = key.to_bytes();
                let cmds = entry.value.rewrite_commands(&key);
                if cmds.is_empty() {
                    // Collections are never empty in the keyspace: a type that cannot
                    // rewrite itself yet must fail the save, not lose the key.
                    return Err(std::io::Error::other(format!(
                        "no rewrite commands for the {} value of key {:?}",
                        entry.value.type_name(),
                        String::from_utf8_lossy(&key)
                    )));
                }
                for c in &cmds {
                    out.cmd(c)?;
                }
                if entry.expire_at != 0 {
                    out.cmd(&[
                        Bytes::from_static(b"PEXPIREAT"),
                        key.clone(),
                        Bytes::from(entry.expire_at.to_string()),
                    ])?;
                }
                keys += 1;
            }
        }
    }
    let trailer = format::finish_snapshot(out.crc.clone());
    out.w.write_all(&trailer)?;
    out.w.flush()?;
    Ok((keys, out.bytes + trailer.len() as u64))
}

/// Writes the capture to `target` atomically (temp + fsync + rename + dir fsync).
pub fn write_file(ks: &Keyspace, cap: &Capture, target: &Path) -> std::io::Result<(u64, u64)> {
    let dir = target.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        "temp-{}-{}.tws",
        std::process::id(),
        crate::random_hex(8)
    ));
    let result = (|| {
        let f = File::create(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        let r = write_capture(ks, cap, &mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, target)?;
        super::aof::sync_dir(dir)?;
        Ok(r)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
