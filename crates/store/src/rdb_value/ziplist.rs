//! Redis's ziplist, the blob of RDB types 10, 12, 13 and 14 that Redis before 7.0
//! wrote (and 7.x still reads): a 10-byte header (total bytes u32 LE, offset of the
//! last entry u32 LE, count u16 LE, 65535 when unknown), entries, and a 0xFF
//! terminator. Each entry starts with the previous entry's size (1 byte, or 0xFE
//! and a u32 LE), then an encoding byte: `00`/`01`/`10` prefixes are strings with
//! a 6-bit, 14-bit (big-endian) or 32-bit (big-endian) length; `11` prefixes are
//! integers (16, 32, 64, 24 and 8 bits little-endian, or 0..12 in the byte).
//!
//! Only reading is needed. [`parse`] checks what Redis's deep validation checks:
//! every entry in bounds, each previous-size field right, the tail offset and the
//! count consistent.

#![forbid(unsafe_code)]

use super::listpack::Elem;

const HEADER: usize = 10;
const END: u8 = 0xFF;
const COUNT_UNKNOWN: u16 = u16::MAX;

/// Every element of a ziplist blob, or `None` if it is inconsistent.
pub fn parse(zl: &[u8]) -> Option<Vec<Elem<'_>>> {
    if zl.len() < HEADER + 1 || zl[zl.len() - 1] != END {
        return None;
    }
    let total = u32::from_le_bytes(zl[0..4].try_into().ok()?) as usize;
    let tail = u32::from_le_bytes(zl[4..8].try_into().ok()?) as usize;
    let count = u16::from_le_bytes(zl[8..10].try_into().ok()?);
    if total != zl.len() || tail > zl.len() - 1 {
        return None;
    }
    let end = zl.len() - 1;
    let mut out = Vec::with_capacity((count as usize).min((zl.len() - HEADER) / 2));
    let mut p = HEADER;
    let mut prev_size = 0usize;
    let mut last = None;
    while p < end {
        let b = &zl[p..end];
        let (prev_len, prev_field) = match *b.first()? {
            // The terminator where an entry should start.
            END => return None,
            0xFE => (
                u32::from_le_bytes(b.get(1..5)?.try_into().ok()?) as usize,
                5,
            ),
            n => (n as usize, 1),
        };
        if prev_len != prev_size {
            return None;
        }
        let (elem, size) = entry(&b[prev_field..])?;
        let entry_size = prev_field + size;
        last = Some(p);
        out.push(elem);
        prev_size = entry_size;
        p += entry_size;
    }
    if p != end || last.is_some_and(|l| l != tail) {
        return None;
    }
    if count != COUNT_UNKNOWN && count as usize != out.len() {
        return None;
    }
    Some(out)
}

/// The element whose encoding byte starts `b`, and the size of encoding + data.
fn entry(b: &[u8]) -> Option<(Elem<'_>, usize)> {
    let first = *b.first()?;
    let le = |n: usize| -> Option<u64> {
        let data = b.get(1..1 + n)?;
        Some(
            data.iter()
                .rev()
                .fold(0u64, |acc, &x| (acc << 8) | x as u64),
        )
    };
    let signed = |v: u64, bits: u32| -> i64 { ((v << (64 - bits)) as i64) >> (64 - bits) };
    let string = |header: usize, len: usize| -> Option<(Elem<'_>, usize)> {
        let data = b.get(header..header.checked_add(len)?)?;
        Some((Elem::Str(data), header + len))
    };
    match first >> 6 {
        0 => return string(1, (first & 0x3F) as usize),
        1 => return string(2, ((first as usize & 0x3F) << 8) | *b.get(1)? as usize),
        2 => {
            let len = u32::from_be_bytes(b.get(1..5)?.try_into().ok()?) as usize;
            return string(5, len);
        }
        _ => {}
    }
    match first {
        0xC0 => Some((Elem::Int(signed(le(2)?, 16)), 3)),
        0xD0 => Some((Elem::Int(signed(le(4)?, 32)), 5)),
        0xE0 => Some((Elem::Int(le(8)? as i64), 9)),
        0xF0 => Some((Elem::Int(signed(le(3)?, 24)), 4)),
        0xFE => Some((Elem::Int(signed(le(1)?, 8)), 2)),
        0xF1..=0xFD => Some((Elem::Int((first & 0x0F) as i64 - 1), 1)),
        _ => None,
    }
}

/// Test support: a ziplist of `items` as Redis 6 wrote them (canonical integers
/// in the smallest integer form).
#[cfg(test)]
pub fn build(items: &[&[u8]]) -> Vec<u8> {
    let mut buf = vec![0u8; HEADER];
    let mut prev = 0usize;
    let mut tail = HEADER;
    for s in items {
        let start = buf.len();
        tail = start;
        if prev < 254 {
            buf.push(prev as u8);
        } else {
            buf.push(0xFE);
            buf.extend_from_slice(&(prev as u32).to_le_bytes());
        }
        match crate::num::parse_i64(s) {
            Some(n @ 0..=12) => buf.push(0xF1 + n as u8),
            Some(n) if i8::try_from(n).is_ok() => buf.extend_from_slice(&[0xFE, n as u8]),
            Some(n) if i16::try_from(n).is_ok() => {
                buf.push(0xC0);
                buf.extend_from_slice(&(n as i16).to_le_bytes());
            }
            Some(n) if (-8_388_608..8_388_608).contains(&n) => {
                buf.push(0xF0);
                buf.extend_from_slice(&(n as i32).to_le_bytes()[..3]);
            }
            Some(n) if i32::try_from(n).is_ok() => {
                buf.push(0xD0);
                buf.extend_from_slice(&(n as i32).to_le_bytes());
            }
            Some(n) => {
                buf.push(0xE0);
                buf.extend_from_slice(&n.to_le_bytes());
            }
            None if s.len() < 64 => {
                buf.push(s.len() as u8);
                buf.extend_from_slice(s);
            }
            None if s.len() < 16384 => {
                buf.push(0x40 | (s.len() >> 8) as u8);
                buf.push(s.len() as u8);
                buf.extend_from_slice(s);
            }
            None => {
                buf.push(0x80);
                buf.extend_from_slice(&(s.len() as u32).to_be_bytes());
                buf.extend_from_slice(s);
            }
        }
        prev = buf.len() - start;
    }
    buf.push(END);
    let total = buf.len() as u32;
    buf[0..4].copy_from_slice(&total.to_le_bytes());
    buf[4..8].copy_from_slice(&(tail as u32).to_le_bytes());
    let count = u16::try_from(items.len()).unwrap_or(COUNT_UNKNOWN);
    buf[8..10].copy_from_slice(&count.to_le_bytes());
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example in Redis's `ziplist.c`: the elements 2 and 5.
    #[test]
    fn documented_example() {
        let zl = [
            0x0f, 0, 0, 0, 0x0c, 0, 0, 0, 0x02, 0, 0x00, 0xf3, 0x02, 0xf6, 0xff,
        ];
        assert_eq!(parse(&zl), Some(vec![Elem::Int(2), Elem::Int(5)]));
        assert_eq!(build(&[b"2", b"5"]), zl);
    }

    #[test]
    fn every_encoding_round_trips() {
        let long = vec![b'l'; 300];
        let longer = vec![b'm'; 20000];
        let items: Vec<&[u8]> = vec![
            b"0",
            b"12",
            b"13",
            b"-128",
            b"127",
            b"-32768",
            b"32767",
            b"8388607",
            b"-8388608",
            b"2147483647",
            b"-2147483649",
            b"9223372036854775807",
            b"hello",
            &long,
            b"after a long one",
            &longer,
            b"",
        ];
        let zl = build(&items);
        let got: Vec<Vec<u8>> = parse(&zl)
            .unwrap()
            .into_iter()
            .map(|e| e.bytes().into_owned())
            .collect();
        assert_eq!(got, items.iter().map(|s| s.to_vec()).collect::<Vec<_>>());
    }

    #[test]
    fn inconsistencies_are_refused() {
        let good = build(&[b"a", b"bb", b"300"]);
        assert!(parse(&good).is_some());
        for cut in 0..good.len() {
            assert!(parse(&good[..cut]).is_none());
        }
        for i in 0..good.len() {
            for v in [0u8, 0x3f, 0x40, 0x80, 0xc1, 0xfe, 0xff] {
                let mut bad = good.clone();
                bad[i] = v;
                let _ = parse(&bad);
            }
        }
        // A wrong previous-entry size, tail offset or count.
        let mut bad = good.clone();
        bad[HEADER + 3] = 9;
        assert!(parse(&bad).is_none());
        let mut bad = good.clone();
        bad[4] = HEADER as u8;
        assert!(parse(&bad).is_none());
        let mut bad = good.clone();
        bad[8] = 7;
        assert!(parse(&bad).is_none());
        // An empty ziplist is consistent (callers decide whether that is allowed).
        assert_eq!(parse(&build(&[])), Some(vec![]));
    }
}
