//! On-disk encodings shared by the append-only log and snapshots.
//!
//! Both are streams of RESP arrays of bulk strings (`*2\r\n$3\r\nDEL\r\n$1\r\nk\r\n`),
//! the form Redis's AOF uses. A snapshot (and an AOF base file) wraps the stream in a
//! header line `TIDEWIRE-SNAP v1\r\n` and a trailer `!END <crc32 hex>\r\n`, the CRC-32
//! covering every byte before the trailer; see docs/persistence.md.

use bytes::Bytes;

pub const SNAP_HEADER: &[u8] = b"TIDEWIRE-SNAP v1\r\n";
const TRAILER_TAG: &[u8] = b"!END ";

/// Appends one command as a RESP array of bulk strings.
pub use tidewire_resp::encode_command as encode;

/// Why a stream stops being readable at some byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bad {
    /// The file ends in the middle of an entry (a crash during a write).
    Truncated,
    /// Bytes that cannot be an entry.
    Corrupt(String),
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bad::Truncated => f.write_str("unexpected end of file (truncated entry)"),
            Bad::Corrupt(why) => f.write_str(why),
        }
    }
}

/// Reads the decimal number ending at the next `\r\n` from `pos`; returns it and the
/// offset after the line.
fn number_line(buf: &[u8], pos: usize) -> Result<(usize, usize), Bad> {
    let mut n: usize = 0;
    let mut i = pos;
    loop {
        let Some(&c) = buf.get(i) else {
            return Err(Bad::Truncated);
        };
        match c {
            b'0'..=b'9' => {
                n = n
                    .checked_mul(10)
                    .and_then(|n| n.checked_add((c - b'0') as usize))
                    .ok_or_else(|| Bad::Corrupt("length out of range".into()))?;
                if i - pos > 12 {
                    return Err(Bad::Corrupt("length out of range".into()));
                }
            }
            b'\r' => {
                if i == pos {
                    return Err(Bad::Corrupt("empty length".into()));
                }
                return match buf.get(i + 1) {
                    None => Err(Bad::Truncated),
                    Some(b'\n') => Ok((n, i + 2)),
                    Some(_) => Err(Bad::Corrupt("expected \\n".into())),
                };
            }
            _ => return Err(Bad::Corrupt(format!("unexpected byte 0x{c:02x} in length"))),
        }
        i += 1;
    }
}

/// One parsed command and the offset after it; or where and why parsing failed.
pub type Parsed = Result<Option<(Vec<Bytes>, usize)>, (usize, Bad)>;

/// Parses the command starting at `pos`. `Ok(None)` at the exact end of `buf`; on
/// failure, the offset of the entry's first byte and why.
pub fn parse(buf: &[u8], pos: usize) -> Parsed {
    if pos >= buf.len() {
        return Ok(None);
    }
    let fail = |b: Bad| (pos, b);
    if buf[pos] != b'*' {
        return Err(fail(Bad::Corrupt(format!(
            "expected '*', found byte 0x{:02x}",
            buf[pos]
        ))));
    }
    let (n, mut i) = number_line(buf, pos + 1).map_err(fail)?;
    if n == 0 || n > 1 << 24 {
        return Err(fail(Bad::Corrupt(format!("invalid argument count {n}"))));
    }
    let mut argv = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        match buf.get(i) {
            None => return Err(fail(Bad::Truncated)),
            Some(b'$') => {}
            Some(c) => {
                return Err(fail(Bad::Corrupt(format!(
                    "expected '$', found byte 0x{c:02x}"
                ))))
            }
        }
        let (len, start) = number_line(buf, i + 1).map_err(fail)?;
        let end = start.checked_add(len).ok_or_else(|| fail(Bad::Truncated))?;
        if end + 2 > buf.len() {
            return Err(fail(Bad::Truncated));
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(fail(Bad::Corrupt(
                "bulk string not followed by \\r\\n".into(),
            )));
        }
        argv.push(Bytes::copy_from_slice(&buf[start..end]));
        i = end + 2;
    }
    Ok(Some((argv, i)))
}

/// A crash can only cut the stream short, so a "truncated" entry must be the last
/// thing in the file. If a complete entry can be parsed after it, the entry's
/// length field is damaged instead: corruption, which must not be repaired by
/// silently dropping the rest of the file.
pub fn confirm_truncation(buf: &[u8], at: usize) -> Bad {
    let mut i = at + 1;
    while i + 3 < buf.len() {
        if &buf[i..i + 3] == b"\r\n*" && matches!(parse(buf, i + 2), Ok(Some(_))) {
            return Bad::Corrupt(format!(
                "entry length runs past the end of the file but complete entries follow at byte {}",
                i + 2
            ));
        }
        i += 1;
    }
    Bad::Truncated
}

/// Where the log in `buf` ends: before the zero bytes an incremental file keeps past
/// its last entry when it was preallocated (`appendfsync always`, see
/// [`super::aof`]). Every entry ends with CRLF, so trailing zeros are never data.
pub fn log_end(buf: &[u8]) -> usize {
    buf.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
}

/// A sector: the smallest unit a disk writes whole.
const SECTOR: usize = 512;

/// Whether the entry that failed to parse, from `entry` to where parsing stopped
/// (`at`), runs into a whole sector of zeros: preallocated space that a write had not
/// yet reached on disk when the machine went down (a power loss can keep a later page
/// of an unsynced write and lose an earlier one). Such an entry was never fsynced, so
/// never acknowledged under `always`. The run must start inside that entry: a
/// corruption earlier in the file followed, further on, by a value that happens to
/// hold 512 zeros is not a torn tail, and loading refuses it.
pub fn unwritten_gap(buf: &[u8], entry: usize, at: usize) -> bool {
    let mut run = 0;
    for (i, &b) in buf.iter().enumerate().skip(entry) {
        if b != 0 {
            if i >= at {
                return false;
            }
            run = 0;
            continue;
        }
        run += 1;
        if run >= SECTOR {
            return true;
        }
    }
    false
}

/// Ends a snapshot stream: the trailer with the CRC-32 of everything before it.
pub fn finish_snapshot(hasher: crc32fast::Hasher) -> Vec<u8> {
    let crc = hasher.finalize();
    format!("!END {crc:08x}\r\n").into_bytes()
}

/// Checks a whole snapshot file and returns the byte range of its command stream.
pub fn snapshot_body(buf: &[u8]) -> Result<std::ops::Range<usize>, (usize, Bad)> {
    if buf.len() < SNAP_HEADER.len() {
        if SNAP_HEADER.starts_with(buf) {
            return Err((0, Bad::Truncated));
        }
        return Err((
            0,
            Bad::Corrupt("not a Tidewire snapshot (bad header)".into()),
        ));
    }
    if &buf[..SNAP_HEADER.len()] != SNAP_HEADER {
        return Err((
            0,
            Bad::Corrupt("not a Tidewire snapshot (bad header)".into()),
        ));
    }
    // The trailer is the last line: "!END xxxxxxxx\r\n" (15 bytes).
    let tlen = TRAILER_TAG.len() + 8 + 2;
    if buf.len() < SNAP_HEADER.len() + tlen
        || &buf[buf.len() - tlen..][..TRAILER_TAG.len()] != TRAILER_TAG
    {
        return Err((buf.len(), Bad::Truncated));
    }
    let tstart = buf.len() - tlen;
    let hex = std::str::from_utf8(&buf[tstart + TRAILER_TAG.len()..buf.len() - 2]).unwrap_or("");
    let want = u32::from_str_radix(hex, 16)
        .map_err(|_| (tstart, Bad::Corrupt("bad checksum trailer".into())))?;
    let got = crc32fast::hash(&buf[..tstart]);
    if got != want {
        return Err((
            tstart,
            Bad::Corrupt(format!(
                "checksum mismatch (stored {want:08x}, computed {got:08x})"
            )),
        ));
    }
    Ok(SNAP_HEADER.len()..tstart)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_truncation() {
        let mut out = Vec::new();
        encode(&mut out, &["SET", "k", "v\r\n"]);
        encode(&mut out, &["DEL", "k"]);
        let (a, p) = parse(&out, 0).unwrap().unwrap();
        assert_eq!(a, vec!["SET", "k", "v\r\n"]);
        let (b, q) = parse(&out, p).unwrap().unwrap();
        assert_eq!(b, vec!["DEL", "k"]);
        assert_eq!(parse(&out, q).unwrap(), None);
        for cut in p + 1..q {
            assert_eq!(parse(&out[..cut], p).unwrap_err(), (p, Bad::Truncated));
        }
        let mut bad = out.clone();
        bad[p + 1] = b'x';
        assert!(matches!(parse(&bad, p), Err((_, Bad::Corrupt(_)))));
        // A damaged length that reaches past the end looks truncated, but the
        // complete entry after it gives it away.
        let mut long = Vec::new();
        encode(&mut long, &["SET", "k", "v"]);
        let second = long.len();
        encode(&mut long, &["DEL", "k"]);
        long[14] = b'9'; // "$1\r\nk" -> "$99\r\nk": runs past the end
        long.insert(14, b'9');
        let (at, why) = parse(&long, 0).unwrap_err();
        assert_eq!(why, Bad::Truncated);
        assert!(matches!(confirm_truncation(&long, at), Bad::Corrupt(_)));
        assert_eq!(confirm_truncation(&long[..second], 0), Bad::Truncated);
    }

    #[test]
    fn preallocated_tail() {
        let mut log = Vec::new();
        encode(&mut log, &["SET", "k", "\0\0"]); // a value may end in zeros
        let end = log.len();
        assert_eq!(log_end(&log), end);
        log.resize(end + 4096, 0);
        assert_eq!(log_end(&log), end);
        assert_eq!(log_end(&[0, 0]), 0);
        // A zero sector where parsing stopped: a write that never reached the disk.
        assert!(unwritten_gap(&log, end, end));
        assert!(!unwritten_gap(&log[..end + 511], end, end));
        let mut torn = log[..end].to_vec();
        torn.extend_from_slice(&[0; 600]);
        encode(&mut torn, &["SET", "later", "page"]);
        assert!(unwritten_gap(&torn, end, end));
        // Zeros inside the failed entry, parsing stopped on the data after them.
        assert!(unwritten_gap(&torn, end, end + 700));
        // Parsing stopped after the zeros' start, but the entry began past them.
        assert!(!unwritten_gap(&torn, end + 100, end + 120));
        // A corrupt entry long before a value that holds a zero sector.
        let mut corrupt = Vec::new();
        encode(&mut corrupt, &["SET", "a", "1"]);
        let bad = corrupt.len();
        corrupt.extend_from_slice(b"*2\r\n$3\r\nGE");
        let zeros = vec![0u8; 1024];
        encode(
            &mut corrupt,
            &["SET", "blob", std::str::from_utf8(&zeros).unwrap()],
        );
        assert!(!unwritten_gap(&corrupt, bad, bad + 12));
    }

    #[test]
    fn snapshot_checksum() {
        let mut body = SNAP_HEADER.to_vec();
        encode(&mut body, &["SET", "a", "1"]);
        let mut h = crc32fast::Hasher::new();
        h.update(&body);
        body.extend(finish_snapshot(h));
        let r = snapshot_body(&body).unwrap();
        assert!(parse(&body[..r.end], r.start).unwrap().is_some());
        let mut bad = body.clone();
        bad[SNAP_HEADER.len() + 10] ^= 1;
        assert!(snapshot_body(&bad).is_err());
        assert!(snapshot_body(&body[..body.len() - 3]).is_err());
    }
}
