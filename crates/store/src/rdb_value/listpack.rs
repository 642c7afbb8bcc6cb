//! Redis's listpack, the blob inside RDB types 16, 17, 18, 20 (and stream nodes):
//! a 6-byte header (total bytes, u32 LE; element count, u16 LE, 65535 when
//! unknown), entries, and a 0xFF terminator. An entry is an encoding byte (with
//! the string length or the integer folded in or following), its data, then its
//! own length written backwards in 1–5 bytes so the list can be walked from the
//! tail.
//!
//! [`parse`] checks a blob as Redis's deep sanitization does (every entry in
//! bounds, back-lengths matching, the count right) and never trusts a length
//! before the bytes are there; [`Writer`] produces what Redis's `lpAppend` does
//! (canonical integers stored as integers, in the smallest form).

#![forbid(unsafe_code)]

use std::borrow::Cow;

const HEADER: usize = 6;
const EOF: u8 = 0xFF;
/// Header count meaning "walk the listpack to know".
const COUNT_UNKNOWN: u16 = u16::MAX;
/// Redis's cap on one listpack (`LISTPACK_MAX_SAFETY_SIZE`).
pub const MAX_SAFE_BYTES: usize = 1 << 30;

/// One element as stored: a string, or an integer Redis kept as an integer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Elem<'a> {
    Str(&'a [u8]),
    Int(i64),
}

impl<'a> Elem<'a> {
    /// The element as the string clients see (integers in decimal).
    pub fn bytes(self) -> Cow<'a, [u8]> {
        match self {
            Elem::Str(s) => Cow::Borrowed(s),
            Elem::Int(n) => Cow::Owned(itoa::Buffer::new().format(n).as_bytes().to_vec()),
        }
    }
}

/// Every element of a listpack blob, or `None` if the blob is inconsistent in any
/// way (a truncated or overlong entry, an unknown encoding, a back-length that does
/// not match, a wrong header count or size, a missing terminator).
pub fn parse(lp: &[u8]) -> Option<Vec<Elem<'_>>> {
    if lp.len() < HEADER + 1 || lp[lp.len() - 1] != EOF {
        return None;
    }
    let total = u32::from_le_bytes(lp[0..4].try_into().ok()?) as usize;
    let count = u16::from_le_bytes(lp[4..6].try_into().ok()?);
    if total != lp.len() {
        return None;
    }
    // Every entry takes at least 2 bytes, whatever the header claims.
    let mut out = Vec::with_capacity((count as usize).min((lp.len() - HEADER) / 2));
    let end = lp.len() - 1;
    let mut p = HEADER;
    while p < end {
        let (elem, len) = entry(&lp[p..end])?;
        let back_len = backlen_size(len);
        let next = p.checked_add(len)?.checked_add(back_len)?;
        if next > end || decode_backlen(&lp[p + len..next])? != len {
            return None;
        }
        out.push(elem);
        p = next;
    }
    if count != COUNT_UNKNOWN && count as usize != out.len() {
        return None;
    }
    Some(out)
}

/// The element at the start of `b` and the size of its encoding and data.
fn entry(b: &[u8]) -> Option<(Elem<'_>, usize)> {
    let first = *b.first()?;
    let int = |n: usize| -> Option<u64> {
        let data = b.get(1..1 + n)?;
        Some(
            data.iter()
                .rev()
                .fold(0u64, |acc, &byte| (acc << 8) | byte as u64),
        )
    };
    // Sign-extends the low `bits` bits.
    let signed = |v: u64, bits: u32| -> i64 { ((v << (64 - bits)) as i64) >> (64 - bits) };
    let string = |header: usize, len: usize| -> Option<(Elem<'_>, usize)> {
        let data = b.get(header..header.checked_add(len)?)?;
        Some((Elem::Str(data), header + len))
    };
    match first {
        0x00..=0x7F => Some((Elem::Int(first as i64), 1)),
        0x80..=0xBF => string(1, (first & 0x3F) as usize),
        0xC0..=0xDF => {
            let v = ((first as u64 & 0x1F) << 8) | *b.get(1)? as u64;
            Some((Elem::Int(signed(v, 13)), 2))
        }
        0xE0..=0xEF => string(2, ((first as usize & 0x0F) << 8) | *b.get(1)? as usize),
        0xF0 => string(5, int(4)? as usize),
        0xF1 => Some((Elem::Int(signed(int(2)?, 16)), 3)),
        0xF2 => Some((Elem::Int(signed(int(3)?, 24)), 4)),
        0xF3 => Some((Elem::Int(signed(int(4)?, 32)), 5)),
        0xF4 => Some((Elem::Int(int(8)? as i64), 9)),
        _ => None,
    }
}

/// Bytes the back-length of an entry of `len` bytes takes (Redis's boundaries).
fn backlen_size(len: usize) -> usize {
    match len {
        0..=127 => 1,
        128..=16382 => 2,
        16383..=2_097_150 => 3,
        2_097_151..=268_435_454 => 4,
        _ => 5,
    }
}

/// Reads a back-length stored in `b` (its last byte holds the low 7 bits; a set
/// high bit means more bytes to the left), which must use all of `b`.
fn decode_backlen(b: &[u8]) -> Option<usize> {
    let mut val = 0usize;
    for (i, &byte) in b.iter().rev().enumerate() {
        val |= ((byte & 0x7F) as usize) << (7 * i);
        let more = byte & 0x80 != 0;
        if more != (i + 1 < b.len()) {
            return None;
        }
    }
    Some(val)
}

fn encode_backlen(out: &mut Vec<u8>, len: usize) {
    let n = backlen_size(len);
    for i in (0..n).rev() {
        let byte = ((len >> (7 * i)) & 0x7F) as u8;
        out.push(if i < n - 1 { byte | 0x80 } else { byte });
    }
}

/// Bytes an integer element takes (encoding, data and back-length).
pub fn int_size(n: i64) -> usize {
    let enc = match n {
        0..=127 => 1,
        -4096..=4095 => 2,
        -32768..=32767 => 3,
        -8_388_608..=8_388_607 => 4,
        _ if i32::try_from(n).is_ok() => 5,
        _ => 9,
    };
    enc + backlen_size(enc)
}

/// Bytes an element takes as `lpAppend` stores it: an integer when `s` is one
/// in canonical form, else a string.
pub fn elem_size(s: &[u8]) -> usize {
    match crate::num::parse_i64(s) {
        Some(n) => int_size(n),
        None => Writer::entry_size(s),
    }
}

/// Builds a listpack blob element by element.
pub struct Writer {
    buf: Vec<u8>,
    count: usize,
}

impl Default for Writer {
    fn default() -> Self {
        Self::new()
    }
}

impl Writer {
    pub fn new() -> Self {
        Writer {
            buf: vec![0; HEADER],
            count: 0,
        }
    }

    /// Bytes the finished blob would take.
    pub fn size(&self) -> usize {
        self.buf.len() + 1
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes `s` would add (an upper bound for strings that are integers).
    pub fn entry_size(s: &[u8]) -> usize {
        let header = match s.len() {
            0..=63 => 1,
            64..=4095 => 2,
            _ => 5,
        };
        header + s.len() + backlen_size(header + s.len())
    }

    /// Appends `s`, as an integer when it is one in canonical form.
    pub fn push(&mut self, s: &[u8]) {
        match crate::num::parse_i64(s) {
            Some(n) => self.push_int(n),
            None => self.push_str(s),
        }
    }

    pub fn push_int(&mut self, n: i64) {
        let start = self.buf.len();
        match n {
            0..=127 => self.buf.push(n as u8),
            -4096..=4095 => {
                let v = (n as u64) & 0x1FFF;
                self.buf.push(0xC0 | (v >> 8) as u8);
                self.buf.push(v as u8);
            }
            -32768..=32767 => {
                self.buf.push(0xF1);
                self.buf.extend_from_slice(&(n as i16).to_le_bytes());
            }
            -8_388_608..=8_388_607 => {
                self.buf.push(0xF2);
                self.buf.extend_from_slice(&(n as i32).to_le_bytes()[..3]);
            }
            _ if i32::try_from(n).is_ok() => {
                self.buf.push(0xF3);
                self.buf.extend_from_slice(&(n as i32).to_le_bytes());
            }
            _ => {
                self.buf.push(0xF4);
                self.buf.extend_from_slice(&n.to_le_bytes());
            }
        }
        let len = self.buf.len() - start;
        encode_backlen(&mut self.buf, len);
        self.count += 1;
    }

    pub fn push_str(&mut self, s: &[u8]) {
        let start = self.buf.len();
        match s.len() {
            0..=63 => self.buf.push(0x80 | s.len() as u8),
            64..=4095 => {
                self.buf.push(0xE0 | (s.len() >> 8) as u8);
                self.buf.push(s.len() as u8);
            }
            _ => {
                self.buf.push(0xF0);
                self.buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
            }
        }
        self.buf.extend_from_slice(s);
        let len = self.buf.len() - start;
        encode_backlen(&mut self.buf, len);
        self.count += 1;
    }

    /// The blob: header filled in, terminator appended. Callers keep it under
    /// [`MAX_SAFE_BYTES`], so the total fits its 32-bit field.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.push(EOF);
        let total = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&total.to_le_bytes());
        let count = u16::try_from(self.count).unwrap_or(COUNT_UNKNOWN);
        self.buf[4..6].copy_from_slice(&count.to_le_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(lp: &[u8]) -> Vec<Vec<u8>> {
        parse(lp)
            .expect("valid listpack")
            .into_iter()
            .map(|e| e.bytes().into_owned())
            .collect()
    }

    #[test]
    fn every_encoding_round_trips() {
        let items: Vec<Vec<u8>> = [
            "0",
            "127",
            "128",
            "-1",
            "-4096",
            "4095",
            "4096",
            "-32768",
            "32767",
            "32768",
            "-8388608",
            "8388607",
            "8388608",
            "-2147483648",
            "2147483647",
            "2147483648",
            "-9223372036854775808",
            "9223372036854775807",
            "9223372036854775808",
            "007",
            "-0",
            "",
            "abc",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .chain([
            vec![b'x'; 63],
            vec![b'y'; 64],
            vec![b'z'; 4095],
            vec![b'w'; 4096],
        ])
        .chain([vec![b'v'; 20000]])
        .collect();
        let mut w = Writer::new();
        for s in &items {
            w.push(s);
        }
        let lp = w.finish();
        assert_eq!(strings(&lp), items);
    }

    /// A listpack made by redis-server (`RPUSH l a 1 -300 40000 hello`, from DUMP).
    #[test]
    fn reads_redis_bytes() {
        let lp: &[u8] = &[
            0x1b, 0, 0, 0, 5, 0, 0x81, b'a', 2, 1, 1, 0xde, 0xd4, 2, 0xf2, 0x40, 0x9c, 0, 4, 0x85,
            b'h', b'e', b'l', b'l', b'o', 6, 0xff,
        ];
        assert_eq!(
            parse(lp),
            Some(vec![
                Elem::Str(b"a"),
                Elem::Int(1),
                Elem::Int(-300),
                Elem::Int(40000),
                Elem::Str(b"hello"),
            ])
        );
        let mut w = Writer::new();
        for s in ["a", "1", "-300", "40000", "hello"] {
            w.push(s.as_bytes());
        }
        assert_eq!(w.finish(), lp);
    }

    #[test]
    fn inconsistencies_are_refused() {
        let mut w = Writer::new();
        w.push(b"hello");
        w.push(&[b'q'; 200]);
        let good = w.finish();
        assert!(parse(&good).is_some());
        // Truncated, or with a byte changed anywhere: refused or still consistent,
        // never a panic.
        for cut in 0..good.len() {
            assert!(parse(&good[..cut]).is_none());
        }
        for i in 0..good.len() {
            for v in [0u8, 0x7f, 0x80, 0xf0, 0xff] {
                let mut bad = good.clone();
                bad[i] = v;
                let _ = parse(&bad);
            }
        }
        // Wrong count in the header.
        let mut bad = good.clone();
        bad[4] = 3;
        assert!(parse(&bad).is_none());
        // Unknown count is fine.
        let mut unknown = good.clone();
        unknown[4..6].copy_from_slice(&[0xff, 0xff]);
        assert_eq!(parse(&unknown).map(|v| v.len()), Some(2));
        // A string claiming 4 GB.
        let lie = [12, 0, 0, 0, 1, 0, 0xf0, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(parse(&lie).is_none());
        // A count of 65534 elements with no bytes for them.
        assert!(parse(&[7, 0, 0, 0, 0xfe, 0xff, 0xff]).is_none());
        // Reserved encodings.
        assert!(parse(&[9, 0, 0, 0, 1, 0, 0xf5, 1, 0xff]).is_none());
    }
}
