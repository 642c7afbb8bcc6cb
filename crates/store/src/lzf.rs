//! LZF, the compression Redis applies to RDB strings (`rdbcompression yes`): a
//! byte stream of literal runs and back-references, as `lzf_c.c` writes and
//! `lzf_d.c` reads it. Written here from the format: a control byte below 32 is a
//! run of `ctrl + 1` literal bytes; otherwise its top 3 bits are a copy length
//! (7 = "add the next byte"), plus 2, and its low 5 bits with the following byte
//! the distance back, minus 1 (up to 8 KiB).

#![forbid(unsafe_code)]

/// The longest literal run one control byte announces.
const MAX_LITERAL: usize = 32;
/// The farthest a back-reference reaches.
const MAX_DISTANCE: usize = 1 << 13;
/// The longest copy one back-reference makes (7 + 255 + 2).
const MAX_MATCH: usize = 264;
/// Positions remembered by 3-byte hash while compressing.
const HASH_BITS: u32 = 14;

/// Compresses `input`; `None` when the result would be longer than `max_out`
/// bytes (Redis only keeps a compressed string that saves at least 4 bytes).
pub fn compress(input: &[u8], max_out: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(max_out.min(input.len()));
    let mut table = vec![usize::MAX; 1 << HASH_BITS];
    let mut literal_start = 0;
    let mut i = 0;
    while i + 2 < input.len() {
        let h = hash3(&input[i..i + 3]);
        let candidate = table[h];
        table[h] = i;
        let found = candidate != usize::MAX
            && i - candidate <= MAX_DISTANCE
            && input[candidate..candidate + 3] == input[i..i + 3];
        if !found {
            i += 1;
            continue;
        }
        let limit = MAX_MATCH.min(input.len() - i);
        let mut len = 3;
        while len < limit && input[candidate + len] == input[i + len] {
            len += 1;
        }
        push_literals(&mut out, &input[literal_start..i]);
        let distance = i - candidate - 1;
        let n = len - 2;
        if n < 7 {
            out.push(((n << 5) | (distance >> 8)) as u8);
        } else {
            out.push(((7 << 5) | (distance >> 8)) as u8);
            out.push((n - 7) as u8);
        }
        out.push(distance as u8);
        if out.len() > max_out {
            return None;
        }
        // Remember the positions the copy covered so later matches can use them.
        let end = i + len;
        for p in i + 1..end.min(input.len().saturating_sub(2)) {
            table[hash3(&input[p..p + 3])] = p;
        }
        i = end;
        literal_start = i;
    }
    push_literals(&mut out, &input[literal_start..]);
    (out.len() <= max_out).then_some(out)
}

fn hash3(b: &[u8]) -> usize {
    let v = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
    (v.wrapping_mul(2_654_435_761) >> (32 - HASH_BITS)) as usize
}

fn push_literals(out: &mut Vec<u8>, mut lit: &[u8]) {
    while !lit.is_empty() {
        let n = lit.len().min(MAX_LITERAL);
        out.push((n - 1) as u8);
        out.extend_from_slice(&lit[..n]);
        lit = &lit[n..];
    }
}

/// Decompresses `input` into exactly `len` bytes; `None` for input that does not
/// decode to that. Nothing is reserved on the strength of `len` alone beyond what
/// the input could produce.
pub fn decompress(input: &[u8], len: usize) -> Option<Vec<u8>> {
    // The best ratio is a 3-byte back-reference copying 264 bytes: a larger
    // declared length is a lie.
    if len > input.len().saturating_mul(132).saturating_add(8) {
        return None;
    }
    // Grows as bytes really come out, so a lie costs at most a few times the input.
    let mut out = Vec::with_capacity(len.min(input.len().saturating_mul(4) + 64));
    let mut i = 0;
    while i < input.len() {
        let ctrl = input[i] as usize;
        i += 1;
        if ctrl < 32 {
            let n = ctrl + 1;
            let lit = input.get(i..i + n)?;
            out.extend_from_slice(lit);
            i += n;
        } else {
            let mut n = ctrl >> 5;
            if n == 7 {
                n += *input.get(i)? as usize;
                i += 1;
            }
            let back = ((ctrl & 0x1f) << 8) + *input.get(i)? as usize + 1;
            i += 1;
            let start = out.len().checked_sub(back)?;
            // Byte by byte: the source may overlap what is being written.
            for k in 0..n + 2 {
                let b = out[start + k];
                out.push(b);
            }
        }
        if out.len() > len {
            return None;
        }
    }
    (out.len() == len).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_saves_on_repetition() {
        let samples: Vec<Vec<u8>> = vec![
            b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_vec(),
            b"hello world hello world hello world hello world!".to_vec(),
            (0..5000u32).map(|i| (i % 7) as u8).collect(),
            (0..20000u32).map(|i| (i * 31 % 251) as u8).collect(),
            [b"x".repeat(100_000), b"y".repeat(3)].concat(),
        ];
        for s in samples {
            let c = compress(&s, s.len() - 4).expect("compressible");
            assert!(c.len() < s.len());
            assert_eq!(decompress(&c, s.len()), Some(s));
        }
    }

    #[test]
    fn incompressible_is_refused() {
        // No 3-byte repeat at all.
        let s: Vec<u8> = (0..=255u8).collect();
        assert_eq!(compress(&s, s.len() - 4), None);
        assert_eq!(compress(b"abc", 0), None);
    }

    #[test]
    fn pseudo_random_round_trips() {
        let mut x: u64 = 0x1234_5678;
        for round in 0..200 {
            let len = (round * 37) % 3000 + 21;
            let alphabet = (round % 5) as u64 + 2;
            let s: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    b'a' + (x % alphabet) as u8
                })
                .collect();
            if let Some(c) = compress(&s, s.len()) {
                assert_eq!(decompress(&c, s.len()).as_deref(), Some(&s[..]));
            }
        }
    }

    #[test]
    fn lies_are_refused() {
        let c = compress(&b"z".repeat(1000), 996).unwrap();
        assert_eq!(decompress(&c, 999), None);
        assert_eq!(decompress(&c, 1001), None);
        assert_eq!(decompress(&c, usize::MAX), None);
        // A back-reference before the start.
        assert_eq!(decompress(&[0x20, 0x05], 3), None);
    }
}
