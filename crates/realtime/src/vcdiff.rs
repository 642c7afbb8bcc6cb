//! VCDIFF (RFC 3284) deltas for channels attached with `delta=vcdiff`: each
//! message after the first goes out as a delta against the one before it, which
//! the SDK's vcdiff decoder (ably-js's `vcdiff` plugin) turns back into the payload.
//!
//! The encoder is the simplest one the format allows: the part of the target
//! that matches the start of the source and the part that matches its end are
//! COPY instructions, the middle is one ADD. Realtime updates of the same object
//! (a counter, a status field) change a few bytes in the middle, so this catches
//! most of what a full differ would. Default code table, no secondary
//! compression, no checksum.

/// The VCDIFF header: magic, version 0, no header flags.
const HEADER: [u8; 5] = [0xD6, 0xC3, 0xC4, 0x00, 0x00];
/// Window indicator: the window copies from the source (the previous payload).
const VCD_SOURCE: u8 = 0x01;
/// Default code table entries with the size in the instruction stream.
const ADD: u8 = 1;
/// COPY, mode 0 (VCD_SELF: the address follows as an integer).
const COPY_SELF: u8 = 19;

/// RFC 3284's variable-length integer: base 128, most significant digit first,
/// the high bit set on every byte but the last.
fn put_int(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            break;
        }
    }
    let last = digits.len() - 1;
    for (j, d) in digits.iter().enumerate().skip(i) {
        out.push(if j == last { *d } else { d | 0x80 });
    }
}

/// A delta that turns `source` into `target`.
pub fn encode(source: &[u8], target: &[u8]) -> Vec<u8> {
    let prefix = source
        .iter()
        .zip(target)
        .take_while(|(a, b)| a == b)
        .count();
    let suffix = source[prefix..]
        .iter()
        .rev()
        .zip(target[prefix..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let middle = &target[prefix..target.len() - suffix];

    let mut data = Vec::new();
    let mut inst = Vec::new();
    let mut addr = Vec::new();
    if prefix > 0 {
        inst.push(COPY_SELF);
        put_int(&mut inst, prefix as u64);
        put_int(&mut addr, 0);
    }
    if !middle.is_empty() {
        inst.push(ADD);
        put_int(&mut inst, middle.len() as u64);
        data.extend_from_slice(middle);
    }
    if suffix > 0 {
        inst.push(COPY_SELF);
        put_int(&mut inst, suffix as u64);
        put_int(&mut addr, (source.len() - suffix) as u64);
    }

    // The delta encoding: target window length, delta indicator, the three
    // section lengths, then the sections.
    let mut enc = Vec::with_capacity(data.len() + inst.len() + addr.len() + 16);
    put_int(&mut enc, target.len() as u64);
    enc.push(0);
    put_int(&mut enc, data.len() as u64);
    put_int(&mut enc, inst.len() as u64);
    put_int(&mut enc, addr.len() as u64);
    enc.extend_from_slice(&data);
    enc.extend_from_slice(&inst);
    enc.extend_from_slice(&addr);

    let mut out = Vec::with_capacity(enc.len() + 16);
    out.extend_from_slice(&HEADER);
    out.push(VCD_SOURCE);
    put_int(&mut out, source.len() as u64);
    put_int(&mut out, 0);
    put_int(&mut out, enc.len() as u64);
    out.extend_from_slice(&enc);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads what [`encode`] writes (one window, ADD and mode-0 COPY).
    fn decode(delta: &[u8], source: &[u8]) -> Vec<u8> {
        fn int(b: &[u8], i: &mut usize) -> u64 {
            let mut n = 0u64;
            loop {
                let d = b[*i];
                *i += 1;
                n = (n << 7) | u64::from(d & 0x7f);
                if d & 0x80 == 0 {
                    return n;
                }
            }
        }
        assert_eq!(&delta[..5], &HEADER);
        let mut i = 5;
        assert_eq!(delta[i], VCD_SOURCE);
        i += 1;
        let src_len = int(delta, &mut i) as usize;
        assert_eq!(int(delta, &mut i), 0);
        assert_eq!(src_len, source.len());
        let _enc_len = int(delta, &mut i);
        let target_len = int(delta, &mut i) as usize;
        assert_eq!(delta[i], 0);
        i += 1;
        let (dl, il, al) = (
            int(delta, &mut i) as usize,
            int(delta, &mut i) as usize,
            int(delta, &mut i) as usize,
        );
        let data = &delta[i..i + dl];
        let inst = &delta[i + dl..i + dl + il];
        let addr = &delta[i + dl + il..i + dl + il + al];
        assert_eq!(i + dl + il + al, delta.len());
        let (mut di, mut ii, mut ai) = (0, 0, 0);
        let mut out = Vec::new();
        while ii < inst.len() {
            let op = inst[ii];
            ii += 1;
            let size = int(inst, &mut ii) as usize;
            match op {
                ADD => {
                    out.extend_from_slice(&data[di..di + size]);
                    di += size;
                }
                COPY_SELF => {
                    let a = int(addr, &mut ai) as usize;
                    out.extend_from_slice(&source[a..a + size]);
                }
                other => panic!("instruction {other}"),
            }
        }
        assert_eq!(out.len(), target_len);
        out
    }

    #[test]
    fn integers_are_base_128_most_significant_first() {
        let mut v = Vec::new();
        put_int(&mut v, 0);
        put_int(&mut v, 127);
        put_int(&mut v, 128);
        put_int(&mut v, 123_456_789);
        assert_eq!(v, [0, 0x7f, 0x81, 0x00, 0xBA, 0xEF, 0x9A, 0x15]);
    }

    #[test]
    fn deltas_rebuild_the_target() {
        let cases: [(&[u8], &[u8]); 7] = [
            (
                br#"{"foo":"bar","count":1,"status":"active"}"#,
                br#"{"foo":"bar","count":2,"status":"active"}"#,
            ),
            (b"same", b"same"),
            (b"", b"new"),
            (b"old", b""),
            (b"abc", b"xyz"),
            (b"aaaa", b"aaaaaaaa"),
            (b"hello world", b"hello brave new world"),
        ];
        for (s, t) in cases {
            let d = encode(s, t);
            assert_eq!(decode(&d, s), t, "{:?} -> {:?}", s, t);
        }
        // A small change to a larger payload costs little.
        let a = vec![b'x'; 10_000];
        let mut b = a.clone();
        b[5000] = b'y';
        assert!(encode(&a, &b).len() < 40);
    }
}
