//! Redis's zipmap, the hash blob of RDB type 9 (Redis 2.4 and older; Redis 7
//! still reads it): a count byte (254 = unknown), then per pair the field's
//! length, the field, the value's length, a "free" byte, the value and that many
//! unused bytes, and a 0xFF terminator. A length is one byte below 254, or 254
//! followed by a u32 LE.

#![forbid(unsafe_code)]

const BIGLEN: u8 = 254;
const END: u8 = 0xFF;

/// The (field, value) pairs, or `None` if the blob is inconsistent or empty.
pub fn parse(zm: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    if zm.len() < 2 || zm[zm.len() - 1] != END {
        return None;
    }
    let end = zm.len() - 1;
    let mut out = Vec::new();
    let mut p = 1;
    while p < end {
        if zm[p] == END {
            // The terminator before the last byte: trailing garbage.
            return None;
        }
        let (flen, n) = length(&zm[p..end])?;
        p += n;
        let field = zm.get(p..p.checked_add(flen)?)?;
        p += flen;
        let (vlen, n) = length(zm.get(p..end)?)?;
        p += n;
        let free = *zm.get(p)? as usize;
        p += 1;
        let value = zm.get(p..p.checked_add(vlen)?)?;
        p = p.checked_add(vlen)?.checked_add(free)?;
        if p > end {
            return None;
        }
        out.push((field, value));
    }
    if out.is_empty() || (zm[0] != BIGLEN && zm[0] as usize != out.len()) {
        return None;
    }
    Some(out)
}

/// A length at the start of `b` and the bytes it took.
fn length(b: &[u8]) -> Option<(usize, usize)> {
    match *b.first()? {
        BIGLEN => Some((
            u32::from_le_bytes(b.get(1..5)?.try_into().ok()?) as usize,
            5,
        )),
        END => None,
        n => Some((n as usize, 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_and_free_space() {
        // {foo: bar, hello: world} with one free byte after "bar".
        let zm = b"\x02\x03foo\x03\x01barX\x05hello\x05\x00world\xff";
        assert_eq!(
            parse(zm),
            Some(vec![
                (&b"foo"[..], &b"bar"[..]),
                (&b"hello"[..], &b"world"[..])
            ])
        );
        for cut in 0..zm.len() {
            assert_eq!(parse(&zm[..cut]), None);
        }
        let mut wrong_count = zm.to_vec();
        wrong_count[0] = 3;
        assert_eq!(parse(&wrong_count), None);
        wrong_count[0] = BIGLEN;
        assert_eq!(parse(&wrong_count).map(|v| v.len()), Some(2));
        assert_eq!(parse(b"\x00\xff"), None);
        // A field claiming 4 GB.
        assert_eq!(parse(b"\x01\xfe\xff\xff\xff\xffab\xff"), None);
    }
}
