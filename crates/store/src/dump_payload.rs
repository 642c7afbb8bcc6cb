//! Redis's serialized-payload format, as FUNCTION DUMP / FUNCTION RESTORE (and
//! DUMP / RESTORE) exchange it: RDB-encoded items, then the RDB version (2 bytes,
//! little-endian) and a CRC-64 (Jones, as Redis's `crc64`) of everything before it
//! (8 bytes, little-endian). Payloads made by Redis itself are accepted, including
//! strings Redis compressed with LZF.

use bytes::Bytes;

/// The RDB version Tidewire writes (Redis 7.2's).
pub const RDB_VERSION: u16 = 11;
/// The newest RDB version whose payloads are accepted: the items Tidewire reads
/// are encoded the same way in Redis 7.4 and 8 (version 12).
const MAX_RDB_VERSION: u16 = 12;
/// RDB opcode that starts a function library.
pub const OPCODE_FUNCTION2: u8 = 245;
/// RDB opcode of the pre-release function format, which Redis 7.2 refuses too.
pub const OPCODE_FUNCTION_PRE_GA: u8 = 246;

const CRC64: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_REDIS);

/// Appends the version and checksum footer to a payload body.
pub fn seal(mut body: Vec<u8>) -> Bytes {
    body.extend_from_slice(&RDB_VERSION.to_le_bytes());
    let crc = CRC64.checksum(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    Bytes::from(body)
}

/// Checks a payload's footer: `Some(body)` when its version is one we read and its
/// checksum matches (Redis's `verifyDumpPayload`).
pub fn open(payload: &[u8]) -> Option<&[u8]> {
    if payload.len() < 10 {
        return None;
    }
    let (rest, crc) = payload.split_at(payload.len() - 8);
    let version = u16::from_le_bytes([rest[rest.len() - 2], rest[rest.len() - 1]]);
    if version > MAX_RDB_VERSION {
        return None;
    }
    let expected = u64::from_le_bytes(crc.try_into().ok()?);
    (CRC64.checksum(rest) == expected).then(|| &rest[..rest.len() - 2])
}

/// Appends an RDB length.
pub fn put_len(out: &mut Vec<u8>, len: u64) {
    if len < 1 << 6 {
        out.push(len as u8);
    } else if len < 1 << 14 {
        out.push(0x40 | (len >> 8) as u8);
        out.push(len as u8);
    } else if len <= u32::MAX as u64 {
        out.push(0x80);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&len.to_be_bytes());
    }
}

/// Appends an RDB string, uncompressed.
pub fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    put_len(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// Appends an RDB string the way Redis's `rdbSaveRawString` does: a canonical
/// integer of up to 32 bits as an integer encoding, a longer string LZF-compressed
/// when `compress` (`rdbcompression`) and that saves at least 4 bytes, otherwise
/// verbatim.
pub fn put_string_encoded(out: &mut Vec<u8>, s: &[u8], compress: bool) {
    if s.len() <= 11 {
        if let Some(n) = crate::num::parse_i64(s) {
            if let Ok(b) = i8::try_from(n) {
                out.extend_from_slice(&[0xc0, b as u8]);
                return;
            }
            if let Ok(v) = i16::try_from(n) {
                out.push(0xc1);
                out.extend_from_slice(&v.to_le_bytes());
                return;
            }
            if let Ok(v) = i32::try_from(n) {
                out.push(0xc2);
                out.extend_from_slice(&v.to_le_bytes());
                return;
            }
        }
    }
    // Under 21 bytes LZF cannot gain its 4 bytes (Redis skips it too).
    if compress && s.len() > 20 {
        if let Some(packed) = crate::lzf::compress(s, s.len() - 4) {
            out.push(0xc3);
            put_len(out, packed.len() as u64);
            put_len(out, s.len() as u64);
            out.extend_from_slice(&packed);
            return;
        }
    }
    put_string(out, s);
}

/// Reads RDB items from a payload body. Every read is bounded by the bytes present:
/// a declared length never allocates more than the input could hold (LZF output
/// is capped by its 255:1 worst-case ratio).
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// A length, or one of the special string encodings (the `11xxxxxx` form).
enum Len {
    Plain(u64),
    Encoded(u8),
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Bytes not read yet: the most items a declared count can really stand for.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    /// `n` raw bytes (stream ids, millisecond times).
    pub fn raw(&mut self, n: usize) -> Option<&'a [u8]> {
        self.take(n)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn len_or_encoding(&mut self) -> Option<Len> {
        let first = self.byte()?;
        Some(match first >> 6 {
            0 => Len::Plain((first & 0x3f) as u64),
            1 => Len::Plain((((first & 0x3f) as u64) << 8) | self.byte()? as u64),
            2 => match first {
                0x80 => Len::Plain(u32::from_be_bytes(self.take(4)?.try_into().ok()?) as u64),
                0x81 => Len::Plain(u64::from_be_bytes(self.take(8)?.try_into().ok()?)),
                _ => return None,
            },
            _ => Len::Encoded(first & 0x3f),
        })
    }

    /// An RDB length (no string encodings allowed).
    pub fn len(&mut self) -> Option<u64> {
        match self.len_or_encoding()? {
            Len::Plain(n) => Some(n),
            Len::Encoded(_) => None,
        }
    }

    /// A double as RDB version 8 and later write it (IEEE 754, little-endian).
    pub fn binary_double(&mut self) -> Option<f64> {
        Some(f64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    /// A double in the older text form (zset type 3): a length byte, where 253,
    /// 254 and 255 stand for NaN, +inf and -inf, then that many characters.
    pub fn text_double(&mut self) -> Option<f64> {
        match self.byte()? {
            253 => Some(f64::NAN),
            254 => Some(f64::INFINITY),
            255 => Some(f64::NEG_INFINITY),
            n => crate::num::parse_f64(self.take(n as usize)?),
        }
    }

    /// An RDB string: raw, integer-encoded or LZF-compressed.
    pub fn string(&mut self) -> Option<Vec<u8>> {
        match self.len_or_encoding()? {
            Len::Plain(n) => Some(self.take(usize::try_from(n).ok()?)?.to_vec()),
            Len::Encoded(0) => Some((self.byte()? as i8).to_string().into_bytes()),
            Len::Encoded(1) => {
                let v = i16::from_le_bytes(self.take(2)?.try_into().ok()?);
                Some(v.to_string().into_bytes())
            }
            Len::Encoded(2) => {
                let v = i32::from_le_bytes(self.take(4)?.try_into().ok()?);
                Some(v.to_string().into_bytes())
            }
            Len::Encoded(3) => {
                let clen = usize::try_from(self.len()?).ok()?;
                let len = usize::try_from(self.len()?).ok()?;
                let compressed = self.take(clen)?;
                crate::lzf::decompress(compressed, len)
            }
            Len::Encoded(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open_round_trip() {
        let mut body = vec![OPCODE_FUNCTION2];
        put_string(&mut body, b"#!lua name=x\n");
        let payload = seal(body.clone());
        assert_eq!(open(&payload), Some(&body[..]));
        let mut bad = payload.to_vec();
        bad[1] ^= 1;
        assert_eq!(open(&bad), None);
        assert_eq!(open(b"short"), None);
    }

    /// CRC-64/Jones as Redis computes it: `crc64(0, "123456789")`.
    #[test]
    fn crc_matches_redis() {
        assert_eq!(CRC64.checksum(b"123456789"), 0xe9c6_d914_c4b8_d9ca);
    }

    #[test]
    fn lengths_round_trip() {
        for n in [
            0u64,
            63,
            64,
            16383,
            16384,
            u32::MAX as u64,
            u32::MAX as u64 + 1,
        ] {
            let mut out = Vec::new();
            put_len(&mut out, n);
            assert_eq!(Reader::new(&out).len(), Some(n));
        }
    }

    #[test]
    fn encoded_strings() {
        assert_eq!(Reader::new(&[0xc0, 0xfe]).string(), Some(b"-2".to_vec()));
        assert_eq!(
            Reader::new(&[0xc1, 0x39, 0x30]).string(),
            Some(b"12345".to_vec())
        );
        // "aaaaaaaaaa": literal 'a', then a back-reference of 9 copies at distance 1.
        let lzf = [0x00, b'a', 0xe0, 0x00, 0x00];
        let mut buf = vec![0xc3, lzf.len() as u8, 10];
        buf.extend_from_slice(&lzf);
        assert_eq!(Reader::new(&buf).string(), Some(b"aaaaaaaaaa".to_vec()));
        // A declared length the input cannot produce is refused.
        let mut lie = vec![0xc3, lzf.len() as u8, 0x80, 0x7f, 0xff, 0xff, 0xff];
        lie.extend_from_slice(&lzf);
        assert_eq!(Reader::new(&lie).string(), None);
        // A back-reference before the start is refused.
        let mut bad = vec![0xc3, 2, 3];
        bad.extend_from_slice(&[0x20, 0x05]);
        assert_eq!(Reader::new(&bad).string(), None);
    }
}
