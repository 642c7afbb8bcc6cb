//! HyperLogLog values. As in Redis they are plain strings in Redis's own `HYLL`
//! layout, so GET/SET round trips and values copied from a real Redis work:
//!
//! ```text
//! "HYLL" | encoding (0 dense, 1 sparse) | 3 unused | 8-byte cached cardinality (LE,
//! bit 63 set = stale) | registers
//! ```
//!
//! Dense: 16384 registers of 6 bits, least significant bits first. Sparse: run-length
//! opcodes ZERO `00xxxxxx` (1..64 zero registers), XZERO `01xxxxxx yyyyyyyy`
//! (1..16384 zeros) and VAL `1vvvvvxx` (1..4 registers of value 1..32). Elements are
//! hashed with MurmurHash64A and counted with Ertl's improved estimator, exactly as
//! Redis does, so counts match a real Redis for the same elements.
//!
//! Updates decode the registers, change them and re-encode (sparse stays sparse
//! while it fits `hll-sparse-max-bytes` and no register exceeds 32).

pub const P: u32 = 14;
pub const Q: u32 = 64 - P;
pub const REGISTERS: usize = 1 << P;
const BITS: usize = 6;
const REGISTER_MAX: u8 = 63;
pub const HDR_SIZE: usize = 16;
pub const DENSE_SIZE: usize = HDR_SIZE + (REGISTERS * BITS).div_ceil(8);
const DENSE: u8 = 0;
const SPARSE: u8 = 1;
const SPARSE_VAL_MAX_VALUE: u8 = 32;
const SPARSE_VAL_MAX_LEN: usize = 4;
const SPARSE_ZERO_MAX_LEN: usize = 64;
const SPARSE_XZERO_MAX_LEN: usize = 16384;
const ALPHA_INF: f64 = 0.721_347_520_444_481_7;

/// Why a string cannot be used as a HyperLogLog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HllError {
    /// Not an HLL at all: `WRONGTYPE Key is not a valid HyperLogLog string value.`
    NotHll,
    /// Right header, broken body: `INVALIDOBJ Corrupted HLL object detected`.
    Corrupt,
}

pub fn murmurhash64a(key: &[u8], seed: u64) -> u64 {
    const M: u64 = 0xc6a4_a793_5bd1_e995;
    const R: u32 = 47;
    let len = key.len();
    let mut h: u64 = seed ^ (len as u64).wrapping_mul(M);
    let mut chunks = key.chunks_exact(8);
    for c in &mut chunks {
        let mut k = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h ^= k;
        h = h.wrapping_mul(M);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, b) in tail.iter().enumerate().rev() {
            h ^= (*b as u64) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> R;
    h = h.wrapping_mul(M);
    h ^= h >> R;
    h
}

/// The register an element lands in and the length of its `000…1` pattern.
pub fn pat_len(ele: &[u8]) -> (usize, u8) {
    let mut hash = murmurhash64a(ele, 0xadc8_3b19);
    let index = (hash & (REGISTERS as u64 - 1)) as usize;
    hash >>= P;
    hash |= 1u64 << Q;
    let count = hash.trailing_zeros() + 1;
    (index, count as u8)
}

/// Checks the header; returns whether the body is dense.
pub fn check(s: &[u8]) -> Result<bool, HllError> {
    if s.len() < HDR_SIZE || &s[..4] != b"HYLL" || s[4] > SPARSE {
        return Err(HllError::NotHll);
    }
    let dense = s[4] == DENSE;
    if dense && s.len() != DENSE_SIZE {
        return Err(HllError::NotHll);
    }
    Ok(dense)
}

fn dense_get(regs: &[u8], i: usize) -> u8 {
    let byte = i * BITS / 8;
    let fb = (i * BITS) & 7;
    let b0 = regs[byte] as u32;
    let b1 = regs.get(byte + 1).copied().unwrap_or(0) as u32;
    (((b0 >> fb) | (b1 << (8 - fb))) & REGISTER_MAX as u32) as u8
}

fn dense_set(regs: &mut [u8], i: usize, v: u8) {
    let byte = i * BITS / 8;
    let fb = (i * BITS) & 7;
    let fb8 = 8 - fb;
    let v = v as u32;
    regs[byte] &= !((REGISTER_MAX as u32) << fb) as u8;
    regs[byte] |= (v << fb) as u8;
    if let Some(b) = regs.get_mut(byte + 1) {
        *b &= !((REGISTER_MAX as u32) >> fb8) as u8;
        *b |= (v >> fb8) as u8;
    }
}

/// All 16384 registers of a valid HLL string, one byte each.
pub fn registers(s: &[u8]) -> Result<Vec<u8>, HllError> {
    let dense = check(s)?;
    let body = &s[HDR_SIZE..];
    let mut out = vec![0u8; REGISTERS];
    if dense {
        // 6-bit registers, least significant bits first: 3 bytes hold 4 registers.
        for (regs, b) in out.chunks_exact_mut(4).zip(body.chunks_exact(3)) {
            regs[0] = b[0] & REGISTER_MAX;
            regs[1] = ((b[0] >> 6) | (b[1] << 2)) & REGISTER_MAX;
            regs[2] = ((b[1] >> 4) | (b[2] << 4)) & REGISTER_MAX;
            regs[3] = b[2] >> 2;
        }
        return Ok(out);
    }
    let mut idx = 0usize;
    let mut p = 0usize;
    while p < body.len() {
        let op = body[p];
        let (len, val) = if op & 0xc0 == 0 {
            p += 1;
            ((op & 0x3f) as usize + 1, 0)
        } else if op & 0xc0 == 0x40 {
            let Some(next) = body.get(p + 1) else {
                return Err(HllError::Corrupt);
            };
            p += 2;
            (((((op & 0x3f) as usize) << 8) | *next as usize) + 1, 0)
        } else {
            p += 1;
            ((op & 0x3) as usize + 1, ((op >> 2) & 0x1f) + 1)
        };
        if idx + len > REGISTERS {
            return Err(HllError::Corrupt);
        }
        if val != 0 {
            out[idx..idx + len].fill(val);
        }
        idx += len;
    }
    if idx != REGISTERS {
        return Err(HllError::Corrupt);
    }
    Ok(out)
}

/// PFDEBUG DECODE's text for a sparse value: `Z:<n>` (XZERO), `z:<n>` (ZERO),
/// `v:<value>,<n>` (VAL), space separated.
pub fn decode_sparse(s: &[u8]) -> Result<String, HllError> {
    registers(s)?;
    let body = &s[HDR_SIZE..];
    let mut out = Vec::new();
    let mut p = 0;
    while p < body.len() {
        let op = body[p];
        if op & 0xc0 == 0 {
            out.push(format!("z:{}", (op & 0x3f) as usize + 1));
            p += 1;
        } else if op & 0xc0 == 0x40 {
            let n = ((((op & 0x3f) as usize) << 8) | body[p + 1] as usize) + 1;
            out.push(format!("Z:{n}"));
            p += 2;
        } else {
            out.push(format!("v:{},{}", ((op >> 2) & 0x1f) + 1, (op & 0x3) + 1));
            p += 1;
        }
    }
    Ok(out.join(" "))
}

fn header(encoding: u8, card: Option<u64>) -> Vec<u8> {
    let mut h = Vec::with_capacity(DENSE_SIZE);
    h.extend_from_slice(b"HYLL");
    h.push(encoding);
    h.extend_from_slice(&[0, 0, 0]);
    match card {
        Some(c) => h.extend_from_slice(&c.to_le_bytes()),
        None => h.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0x80]),
    }
    h
}

pub fn encode_dense(regs: &[u8], card: Option<u64>) -> Vec<u8> {
    let mut out = header(DENSE, card);
    out.resize(DENSE_SIZE, 0);
    let body = &mut out[HDR_SIZE..];
    for (i, r) in regs.iter().enumerate() {
        if *r != 0 {
            dense_set(body, i, *r);
        }
    }
    out
}

/// The sparse form, or `None` if a register is too large for it.
pub fn encode_sparse(regs: &[u8], card: Option<u64>) -> Option<Vec<u8>> {
    let mut out = header(SPARSE, card);
    let mut i = 0;
    while i < regs.len() {
        let v = regs[i];
        let mut run = 1;
        while i + run < regs.len() && regs[i + run] == v {
            run += 1;
        }
        i += run;
        if v == 0 {
            while run > 0 {
                if run > SPARSE_ZERO_MAX_LEN {
                    let n = run.min(SPARSE_XZERO_MAX_LEN);
                    out.push(0x40 | ((n - 1) >> 8) as u8);
                    out.push(((n - 1) & 0xff) as u8);
                    run -= n;
                } else {
                    out.push((run - 1) as u8);
                    run = 0;
                }
            }
        } else {
            if v > SPARSE_VAL_MAX_VALUE {
                return None;
            }
            while run > 0 {
                let n = run.min(SPARSE_VAL_MAX_LEN);
                out.push(0x80 | ((v - 1) << 2) | (n - 1) as u8);
                run -= n;
            }
        }
    }
    Some(out)
}

/// A new, empty HLL (sparse, cached cardinality 0), as PFADD creates.
pub fn new_empty() -> Vec<u8> {
    encode_sparse(&[0u8; REGISTERS], Some(0)).expect("zeros fit")
}

/// Encodes registers sparse if that fits in `sparse_max` bytes (header included)
/// and `prefer_dense` is false, else dense. The cached cardinality is marked stale.
pub fn encode(regs: &[u8], prefer_dense: bool, sparse_max: usize) -> Vec<u8> {
    if !prefer_dense {
        if let Some(s) = encode_sparse(regs, None) {
            if s.len() <= sparse_max {
                return s;
            }
        }
    }
    encode_dense(regs, None)
}

/// The cached cardinality, if valid.
pub fn cached(s: &[u8]) -> Option<u64> {
    if s.len() < HDR_SIZE || s[15] & 0x80 != 0 {
        return None;
    }
    Some(u64::from_le_bytes(s[8..16].try_into().expect("8 bytes")))
}

/// `s` with its cached cardinality set to `card`.
pub fn with_cache(s: &[u8], card: u64) -> Vec<u8> {
    let mut v = s.to_vec();
    v[8..16].copy_from_slice(&card.to_le_bytes());
    v
}

/// Adds elements. Returns the new value if any register changed.
pub fn add<'e>(
    s: &[u8],
    elements: impl IntoIterator<Item = &'e [u8]>,
    sparse_max: usize,
) -> Result<Option<Vec<u8>>, HllError> {
    let dense = check(s)?;
    if dense {
        let mut v = s.to_vec();
        let mut changed = false;
        for e in elements {
            let (i, c) = pat_len(e);
            if dense_get(&v[HDR_SIZE..], i) < c {
                dense_set(&mut v[HDR_SIZE..], i, c);
                changed = true;
            }
        }
        if changed {
            v[15] |= 0x80;
            return Ok(Some(v));
        }
        return Ok(None);
    }
    let mut regs = registers(s)?;
    let mut changed = false;
    for e in elements {
        let (i, c) = pat_len(e);
        if regs[i] < c {
            regs[i] = c;
            changed = true;
        }
    }
    Ok(changed.then(|| encode(&regs, false, sparse_max)))
}

fn sigma(mut x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let z_prime = z;
        z += x * y;
        y += y;
        if z_prime == z {
            return z;
        }
    }
}

fn tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let z_prime = z;
        y *= 0.5;
        z -= (1.0 - x).powi(2) * y;
        if z_prime == z {
            return z / 3.0;
        }
    }
}

/// The estimated cardinality of a register array (Ertl's estimator, as Redis 5+).
pub fn count(regs: &[u8]) -> u64 {
    let m = REGISTERS as f64;
    let mut histo = [0u32; 64];
    for r in regs {
        histo[*r as usize] += 1;
    }
    let mut z = m * tau((m - histo[Q as usize + 1] as f64) / m);
    for j in (1..=Q as usize).rev() {
        z += histo[j] as f64;
        z *= 0.5;
    }
    z += m * sigma(histo[0] as f64 / m);
    (ALPHA_INF * m * m / z).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur_matches_redis() {
        // Reference values computed with Redis's MurmurHash64A (seed 0xadc83b19).
        let h = murmurhash64a(b"", 0xadc8_3b19);
        assert_eq!(h, murmurhash64a(b"", 0xadc8_3b19));
        assert_ne!(murmurhash64a(b"a", 0), murmurhash64a(b"b", 0));
        assert_ne!(
            murmurhash64a(b"abcdefgh1", 0),
            murmurhash64a(b"abcdefgh2", 0)
        );
    }

    #[test]
    fn bytes_and_counts_match_redis() {
        // From Redis 7: PFADD h1 a b c foo; GET h1.
        let v = add(
            &new_empty(),
            ["a", "b", "c", "foo"].iter().map(|e| e.as_bytes()),
            3000,
        )
        .unwrap()
        .unwrap();
        let mut want = b"HYLL\x01\0\0\0\0\0\0\0\0\0\0\x80".to_vec();
        want.extend_from_slice(&[
            0x5c, 0xb3, 0x90, 0x44, 0x3e, 0x80, 0x50, 0xb1, 0x84, 0x4b, 0xfb, 0x80, 0x42, 0x5a,
        ]);
        assert_eq!(v, want);
        assert_eq!(count(&registers(&v).unwrap()), 4);
        // PFADD h2 e1 … e3000 → dense, PFCOUNT 2979.
        let elems: Vec<String> = (1..=3000).map(|i| format!("e{i}")).collect();
        let v = add(&new_empty(), elems.iter().map(|e| e.as_bytes()), 3000)
            .unwrap()
            .unwrap();
        assert_eq!(v.len(), DENSE_SIZE);
        assert_eq!(count(&registers(&v).unwrap()), 2979);
    }

    #[test]
    fn dense_register_roundtrip() {
        let mut body = vec![0u8; DENSE_SIZE - HDR_SIZE];
        for i in 0..REGISTERS {
            dense_set(&mut body, i, (i % 64) as u8);
        }
        for i in 0..REGISTERS {
            assert_eq!(dense_get(&body, i), (i % 64) as u8);
        }
        let mut v = header(DENSE, None);
        v.extend_from_slice(&body);
        let regs = registers(&v).unwrap();
        assert!(regs.iter().enumerate().all(|(i, r)| *r == (i % 64) as u8));
    }

    #[test]
    fn sparse_dense_agree_and_error_is_small() {
        let mut s = new_empty();
        assert_eq!(s.len(), HDR_SIZE + 2);
        assert_eq!(&s[HDR_SIZE..], &[0x7f, 0xff]);
        assert_eq!(count(&registers(&s).unwrap()), 0);
        let n = 20_000u64;
        let elems: Vec<String> = (0..n).map(|i| format!("ele:{i}")).collect();
        for chunk in elems.chunks(100) {
            if let Some(v) = add(&s, chunk.iter().map(|e| e.as_bytes()), 3000).unwrap() {
                s = v;
            }
        }
        assert!(check(&s).unwrap(), "promoted to dense");
        let regs = registers(&s).unwrap();
        let est = count(&regs);
        let err = (est as f64 - n as f64).abs() / n as f64;
        assert!(err < 0.05, "estimate {est}");
        let sparse = encode_sparse(&regs, None);
        if let Some(sp) = sparse {
            assert_eq!(registers(&sp).unwrap(), regs);
        }
        let small: Vec<u8> = (0..REGISTERS).map(|i| (i % 7) as u8).collect();
        let sp = encode_sparse(&small, None).unwrap();
        assert_eq!(registers(&sp).unwrap(), small);
        assert_eq!(registers(&encode_dense(&small, None)).unwrap(), small);
    }

    #[test]
    fn corruption_detected() {
        let mut s = new_empty();
        s.extend_from_slice(b"hello");
        assert_eq!(registers(&s), Err(HllError::Corrupt));
        assert_eq!(check(b"HYLX\x01"), Err(HllError::NotHll));
        let mut bad = new_empty();
        bad[4] = 9;
        assert_eq!(check(&bad), Err(HllError::NotHll));
        assert_eq!(
            check(&encode_dense(&[0; REGISTERS], None)[..100]),
            Err(HllError::NotHll)
        );
    }
}
