//! `tidewire check-aof [--fix] <file>`: validates an incremental AOF file, a
//! snapshot/base file, or every file a manifest names. `--fix` truncates an
//! incremental file to its last valid entry (what follows is lost, as with
//! redis-check-aof); a snapshot with a bad checksum cannot be repaired.

use std::path::Path;

use super::aof::{Manifest, MANIFEST_SUFFIX};
use super::format::{self, Bad};

/// The outcome: `Ok(message)` when the file is (now) valid, `Err(message)` if not.
pub fn check_aof(path: &Path, fix: bool) -> Result<String, String> {
    let name = path.to_string_lossy();
    if name.ends_with(MANIFEST_SUFFIX) {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {name}: {e}"))?;
        let m = Manifest::parse(&text).map_err(|e| format!("{name}: {e}"))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut report = Vec::new();
        for f in m.base.iter().chain(m.incrs.iter()) {
            report.push(check_aof(&dir.join(f), fix)?);
        }
        report.push(format!("manifest {name} is valid"));
        return Ok(report.join("\n"));
    }
    let buf = std::fs::read(path).map_err(|e| format!("cannot read {name}: {e}"))?;
    if buf.starts_with(b"TIDEWIRE-SNAP") {
        return match format::snapshot_body(&buf) {
            Ok(r) => {
                let mut pos = r.start;
                let mut n = 0u64;
                loop {
                    match format::parse(&buf[..r.end], pos) {
                        Ok(None) => break,
                        Ok(Some((_, next))) => {
                            n += 1;
                            pos = next;
                        }
                        Err((at, why)) => {
                            return Err(format!("{name}: invalid entry at byte offset {at}: {why}"))
                        }
                    }
                }
                Ok(format!("snapshot {name} is valid ({n} commands)"))
            }
            Err((at, why)) => Err(format!(
                "snapshot {name} is not valid at byte offset {at}: {why} (snapshots cannot be repaired; restore another copy)"
            )),
        };
    }
    // Zeros past the last entry are a preallocated tail, not data (see `format::log_end`).
    let buf = &buf[..format::log_end(&buf)];
    let mut pos = 0;
    let mut valid = 0;
    let mut in_multi = false;
    let mut n = 0u64;
    let problem = loop {
        match format::parse(buf, pos) {
            Ok(None) => break None,
            Ok(Some((argv, next))) => {
                n += 1;
                pos = next;
                if argv[0].eq_ignore_ascii_case(b"MULTI") {
                    in_multi = true;
                } else if argv[0].eq_ignore_ascii_case(b"EXEC") {
                    in_multi = false;
                }
                if !in_multi {
                    valid = pos;
                }
            }
            Err((at, Bad::Truncated)) => break Some((at, format::confirm_truncation(buf, at))),
            Err((at, why)) => break Some((at, why)),
        }
    };
    let problem = match problem {
        None if in_multi => Some((valid, Bad::Truncated)),
        p => p,
    };
    match problem {
        None => Ok(format!(
            "AOF {name} is valid ({n} commands, {} bytes)",
            buf.len()
        )),
        Some((at, why)) => {
            let msg = format!(
                "AOF {name} is not valid at byte offset {at}: {why}; last valid entry ends at byte {valid} ({} bytes after it)",
                buf.len() - valid
            );
            if !fix {
                return Err(format!(
                    "{msg}\nRun with --fix to truncate the file to byte {valid}."
                ));
            }
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| format!("cannot open {name}: {e}"))?;
            f.set_len(valid as u64)
                .and_then(|_| f.sync_all())
                .map_err(|e| format!("cannot truncate {name}: {e}"))?;
            Ok(format!(
                "{msg}\nSuccessfully truncated AOF {name} to {valid} bytes"
            ))
        }
    }
}
