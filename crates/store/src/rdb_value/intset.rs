//! Redis's intset, the blob of RDB type 11: the width of every member in bytes
//! (u32 LE: 2, 4 or 8), the member count (u32 LE), then the members, sorted
//! ascending, little-endian.

#![forbid(unsafe_code)]

/// The members, or `None` unless the blob is exactly header + count × width, not
/// empty, and strictly ascending (the set's invariant: Redis checks it under
/// deep sanitization, Tidewire always, since lookups rely on it).
pub fn parse(blob: &[u8]) -> Option<Vec<i64>> {
    let width = u32::from_le_bytes(blob.get(0..4)?.try_into().ok()?) as usize;
    let count = u32::from_le_bytes(blob.get(4..8)?.try_into().ok()?) as usize;
    if !matches!(width, 2 | 4 | 8) || count == 0 {
        return None;
    }
    let body = &blob[8..];
    if count.checked_mul(width)? != body.len() {
        return None;
    }
    let mut out: Vec<i64> = Vec::with_capacity(count);
    for chunk in body.chunks_exact(width) {
        let v = match width {
            2 => i16::from_le_bytes(chunk.try_into().ok()?) as i64,
            4 => i32::from_le_bytes(chunk.try_into().ok()?) as i64,
            _ => i64::from_le_bytes(chunk.try_into().ok()?),
        };
        if out.last().is_some_and(|&prev| prev >= v) {
            return None;
        }
        out.push(v);
    }
    Some(out)
}

/// The blob for sorted, distinct `members`, in the narrowest width that holds
/// them all (as Redis's intset upgrades only when a member needs it).
pub fn build(members: &[i64]) -> Vec<u8> {
    let fits = |lo: i64, hi: i64| members.iter().all(|m| (lo..=hi).contains(m));
    let width: usize = if fits(i16::MIN as i64, i16::MAX as i64) {
        2
    } else if fits(i32::MIN as i64, i32::MAX as i64) {
        4
    } else {
        8
    };
    let mut out = Vec::with_capacity(8 + width * members.len());
    out.extend_from_slice(&(width as u32).to_le_bytes());
    out.extend_from_slice(&(members.len() as u32).to_le_bytes());
    for &m in members {
        out.extend_from_slice(&m.to_le_bytes()[..width]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_round_trip() {
        for members in [
            vec![-3i64, 0, 7, 32767],
            vec![-32769, 5],
            vec![1, 2_147_483_647],
            vec![i64::MIN, -1, i64::MAX],
        ] {
            let blob = build(&members);
            assert_eq!(parse(&blob), Some(members));
        }
        assert_eq!(build(&[1, 2])[0], 2);
        assert_eq!(build(&[1, 70000])[0], 4);
        assert_eq!(build(&[1, 1 << 40])[0], 8);
    }

    #[test]
    fn inconsistencies_are_refused() {
        let good = build(&[1, 2, 3]);
        for cut in 0..good.len() {
            assert_eq!(parse(&good[..cut]), None);
        }
        // Out of order, duplicate, empty, odd width, a count of 2^32-1.
        assert_eq!(parse(&build(&[3, 2])), None);
        assert_eq!(parse(&build(&[2, 2])), None);
        assert_eq!(parse(&build(&[])), None);
        let mut bad = good.clone();
        bad[0] = 3;
        assert_eq!(parse(&bad), None);
        let mut bad = good;
        bad[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse(&bad), None);
    }
}
