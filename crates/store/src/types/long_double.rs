//! x87 `long double` arithmetic in software, for the text HINCRBYFLOAT stores.
//!
//! Redis parses both operands with `strtold`, adds them as 80-bit long doubles
//! (64-bit mantissa, round to nearest even) and prints `%.17Lf` with trailing zeros
//! trimmed. Clients see those digits (`0.1 + 0.2` is `0.3`, `1e10 + 0.5e-5` is
//! `10000000000.00000500027090311`), so we reproduce the three steps exactly with
//! a small big-integer: correctly rounded decimal → binary, one rounded addition,
//! exact binary → decimal with rounding at 17 decimals.
//!
//! Hex floats, `inf`/`nan`, and exponents beyond ±400 are left to the caller's
//! `f64` fallback (`None`).

use std::cmp::Ordering;

/// Unsigned big integer, little-endian 32-bit limbs, no trailing zero limbs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Big(Vec<u32>);

impl Big {
    fn from_u64(n: u64) -> Big {
        let mut b = Big(vec![n as u32, (n >> 32) as u32]);
        b.trim();
        b
    }

    fn trim(&mut self) {
        while self.0.last() == Some(&0) {
            self.0.pop();
        }
    }

    fn is_zero(&self) -> bool {
        self.0.is_empty()
    }

    fn bit_len(&self) -> u64 {
        match self.0.last() {
            None => 0,
            Some(top) => (self.0.len() as u64 - 1) * 32 + (32 - top.leading_zeros() as u64),
        }
    }

    fn bit(&self, i: u64) -> bool {
        let limb = (i / 32) as usize;
        limb < self.0.len() && (self.0[limb] >> (i % 32)) & 1 == 1
    }

    /// Whether any of the lowest `n` bits is set.
    fn any_low_bits(&self, n: u64) -> bool {
        let full = (n / 32) as usize;
        if self.0.iter().take(full).any(|l| *l != 0) {
            return true;
        }
        let rest = n % 32;
        rest > 0 && full < self.0.len() && self.0[full] & ((1u32 << rest) - 1) != 0
    }

    fn mul_small(&mut self, m: u32) {
        let mut carry = 0u64;
        for l in self.0.iter_mut() {
            let v = *l as u64 * m as u64 + carry;
            *l = v as u32;
            carry = v >> 32;
        }
        if carry > 0 {
            self.0.push(carry as u32);
        }
    }

    fn add_small(&mut self, a: u32) {
        let mut carry = a as u64;
        for l in self.0.iter_mut() {
            if carry == 0 {
                return;
            }
            let v = *l as u64 + carry;
            *l = v as u32;
            carry = v >> 32;
        }
        if carry > 0 {
            self.0.push(carry as u32);
        }
    }

    fn pow10(n: u32) -> Big {
        let mut b = Big::from_u64(1);
        for _ in 0..n {
            b.mul_small(10);
        }
        b
    }

    fn shl(&self, n: u64) -> Big {
        if self.is_zero() {
            return Big::default();
        }
        let limbs = (n / 32) as usize;
        let bits = (n % 32) as u32;
        let mut out = vec![0u32; limbs];
        let mut carry = 0u32;
        for l in &self.0 {
            if bits == 0 {
                out.push(*l);
            } else {
                out.push((l << bits) | carry);
                carry = l >> (32 - bits);
            }
        }
        if carry > 0 {
            out.push(carry);
        }
        let mut b = Big(out);
        b.trim();
        b
    }

    fn shr(&self, n: u64) -> Big {
        let limbs = (n / 32) as usize;
        if limbs >= self.0.len() {
            return Big::default();
        }
        let bits = (n % 32) as u32;
        let src = &self.0[limbs..];
        let mut out = Vec::with_capacity(src.len());
        for i in 0..src.len() {
            let lo = src[i] >> bits;
            let hi = if bits > 0 && i + 1 < src.len() {
                src[i + 1] << (32 - bits)
            } else {
                0
            };
            out.push(lo | hi);
        }
        let mut b = Big(out);
        b.trim();
        b
    }

    fn cmp(&self, o: &Big) -> Ordering {
        self.0
            .len()
            .cmp(&o.0.len())
            .then_with(|| self.0.iter().rev().cmp(o.0.iter().rev()))
    }

    fn add(&self, o: &Big) -> Big {
        let n = self.0.len().max(o.0.len());
        let mut out = Vec::with_capacity(n + 1);
        let mut carry = 0u64;
        for i in 0..n {
            let v = *self.0.get(i).unwrap_or(&0) as u64 + *o.0.get(i).unwrap_or(&0) as u64 + carry;
            out.push(v as u32);
            carry = v >> 32;
        }
        if carry > 0 {
            out.push(carry as u32);
        }
        Big(out)
    }

    /// `self - o`, requires `self >= o`.
    fn sub(&self, o: &Big) -> Big {
        let mut out = Vec::with_capacity(self.0.len());
        let mut borrow = 0i64;
        for i in 0..self.0.len() {
            let mut v = self.0[i] as i64 - *o.0.get(i).unwrap_or(&0) as i64 - borrow;
            borrow = 0;
            if v < 0 {
                v += 1 << 32;
                borrow = 1;
            }
            out.push(v as u32);
        }
        let mut b = Big(out);
        b.trim();
        b
    }

    /// Quotient and whether the remainder is non-zero (binary long division).
    fn div_sticky(&self, d: &Big) -> (Big, bool) {
        let mut q = Big::default();
        let mut r = Big::default();
        for i in (0..self.bit_len()).rev() {
            r = r.shl(1);
            if self.bit(i) {
                r.add_small(1);
            }
            q = q.shl(1);
            if r.cmp(d) != Ordering::Less {
                r = r.sub(d);
                q.add_small(1);
            }
        }
        (q, !r.is_zero())
    }

    fn to_u64(&self) -> u64 {
        self.0.first().copied().unwrap_or(0) as u64
            | (self.0.get(1).copied().unwrap_or(0) as u64) << 32
    }

    fn to_decimal(&self) -> String {
        if self.is_zero() {
            return "0".into();
        }
        let mut chunks = Vec::new();
        let mut cur = self.0.clone();
        while !cur.is_empty() {
            let mut rem = 0u64;
            for l in cur.iter_mut().rev() {
                let v = (rem << 32) | *l as u64;
                *l = (v / 1_000_000_000) as u32;
                rem = v % 1_000_000_000;
            }
            while cur.last() == Some(&0) {
                cur.pop();
            }
            chunks.push(rem as u32);
        }
        let mut s = chunks.pop().expect("non-zero").to_string();
        for c in chunks.iter().rev() {
            s.push_str(&format!("{c:09}"));
        }
        s
    }
}

/// A finite long double: `(-1)^neg × mant × 2^exp`, `mant < 2^64`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ld {
    neg: bool,
    mant: u64,
    exp: i64,
}

/// Rounds `q` (plus a sticky bit for anything below it) to 64 significant bits,
/// nearest even. Returns the mantissa and the power of two to scale it by.
fn round64(q: &Big, sticky: bool) -> (u64, i64) {
    let len = q.bit_len();
    if len <= 64 {
        // Only reachable when exact (callers give 66+ bits otherwise).
        return (q.to_u64(), 0);
    }
    let shift = len - 64;
    let mut m = q.shr(shift).to_u64();
    let half = q.bit(shift - 1);
    let rest = sticky || q.any_low_bits(shift - 1);
    let mut exp = shift as i64;
    if half && (rest || m & 1 == 1) {
        m = m.wrapping_add(1);
        if m == 0 {
            m = 1 << 63;
            exp += 1;
        }
    }
    (m, exp)
}

/// `strtold` for plain decimal text.
fn parse(s: &[u8]) -> Option<Ld> {
    const MAX_EXP: i64 = 400;
    let (neg, mut rest) = match s.first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let mut digits = Big::default();
    let mut dexp: i64 = 0;
    let (mut seen_digit, mut seen_dot) = (false, false);
    let mut ndigits = 0;
    while let Some(&c) = rest.first() {
        match c {
            b'0'..=b'9' => {
                seen_digit = true;
                ndigits += 1;
                if ndigits > 800 {
                    return None;
                }
                digits.mul_small(10);
                digits.add_small((c - b'0') as u32);
                if seen_dot {
                    dexp -= 1;
                }
            }
            b'.' if !seen_dot => seen_dot = true,
            _ => break,
        }
        rest = &rest[1..];
    }
    if !seen_digit {
        return None;
    }
    if let Some(&c) = rest.first() {
        if c != b'e' && c != b'E' {
            return None;
        }
        let e = std::str::from_utf8(&rest[1..]).ok()?;
        if !e
            .trim_start_matches(['+', '-'])
            .bytes()
            .all(|b| b.is_ascii_digit())
            || e.trim_start_matches(['+', '-']).is_empty()
            || e.len() > 6
        {
            return None;
        }
        dexp += e.parse::<i64>().ok()?;
    }
    if !(-MAX_EXP..=MAX_EXP).contains(&dexp) {
        return None;
    }
    if digits.is_zero() {
        return Some(Ld {
            neg,
            mant: 0,
            exp: 0,
        });
    }
    let (mant, exp) = if dexp >= 0 {
        let n = {
            let mut n = digits;
            for _ in 0..dexp {
                n.mul_small(10);
            }
            n
        };
        round64(&n, false)
    } else {
        let p = Big::pow10((-dexp) as u32);
        let k = (66 + p.bit_len()).saturating_sub(digits.bit_len()) + 2;
        let (q, sticky) = digits.shl(k).div_sticky(&p);
        let (m, e) = round64(&q, sticky);
        (m, e - k as i64)
    };
    Some(Ld { neg, mant, exp })
}

/// `a + b`, rounded to a long double.
fn add(a: Ld, b: Ld) -> Ld {
    if a.mant == 0 && b.mant == 0 {
        return Ld {
            neg: a.neg && b.neg,
            mant: 0,
            exp: 0,
        };
    }
    let emin = a.exp.min(b.exp);
    let av = Big::from_u64(a.mant).shl((a.exp - emin) as u64);
    let bv = Big::from_u64(b.mant).shl((b.exp - emin) as u64);
    let (neg, sum) = if a.neg == b.neg {
        (a.neg, av.add(&bv))
    } else {
        match av.cmp(&bv) {
            Ordering::Equal => {
                return Ld {
                    neg: false,
                    mant: 0,
                    exp: 0,
                }
            }
            Ordering::Greater => (a.neg, av.sub(&bv)),
            Ordering::Less => (b.neg, bv.sub(&av)),
        }
    };
    let (mant, e) = round64(&sum, false);
    Ld {
        neg,
        mant,
        exp: emin + e,
    }
}

/// `%.17Lf`, trailing zeros and a bare '.' removed, `-0` as `0` (Redis's
/// `ld2string` in human mode).
fn format(v: Ld) -> String {
    let mut n = Big::from_u64(v.mant);
    n.mul_small(100_000_000);
    n.mul_small(1_000_000_000);
    let q = if v.exp >= 0 {
        n.shl(v.exp as u64)
    } else {
        let s = (-v.exp) as u64;
        let mut q = n.shr(s);
        let half = s >= 1 && n.bit(s - 1);
        let rest = s >= 2 && n.any_low_bits(s - 1);
        if half && (rest || q.bit(0)) {
            q.add_small(1);
        }
        q
    };
    let mut digits = q.to_decimal();
    if digits.len() < 18 {
        digits = format!("{}{digits}", "0".repeat(18 - digits.len()));
    }
    let (int, frac) = digits.split_at(digits.len() - 17);
    let frac = frac.trim_end_matches('0');
    let mut out = String::new();
    if v.neg && !(int == "0" && frac.is_empty()) {
        out.push('-');
    }
    out.push_str(int);
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    out
}

/// The text Redis stores for `a + b` (HINCRBYFLOAT, INCRBYFLOAT), or `None` for
/// inputs this module does not handle.
pub fn add_text(a: &[u8], b: &[u8]) -> Option<String> {
    Some(format(add(parse(a)?, parse(b)?)))
}

#[cfg(test)]
mod tests {
    use super::add_text;

    fn t(a: &str, b: &str) -> Option<String> {
        add_text(a.as_bytes(), b.as_bytes())
    }

    #[test]
    fn matches_redis() {
        // Every expectation below is what Redis 7 replied to HINCRBYFLOAT.
        let cases = [
            ("0", "0.1", "0.1"),
            ("0.1", "0.2", "0.3"),
            ("0.3", "0.3", "0.6"),
            ("0.6", "-0.6", "0"),
            ("0", "1.23456789012345678", "1.23456789012345678"),
            ("1.23456789012345678", "99.999", "101.23356789012345678"),
            ("10.5", "1.23456789012345678", "11.73456789012345678"),
            ("10000000000", "0.5e-5", "10000000000.00000500027090311"),
            (
                "10000000000.00000500027090311",
                "-1e10",
                "0.00000500027090311",
            ),
            ("0", "123456789.123456789", "123456789.12345678899873747"),
            (
                "123456789.12345678899873747",
                "0.000000001",
                "123456789.12345678999554366",
            ),
            ("1000000000000000000", "1.5", "1000000000000000001.5"),
            ("10.5", "0.1", "10.6"),
            ("1.23", "0.77", "2"),
            ("2", "-0.1", "1.9"),
            ("0", "3.0e3", "3000"),
            ("0", "-0.0", "0"),
            ("0", ".5", "0.5"),
            ("0", "1.", "1"),
        ];
        for (a, b, want) in cases {
            assert_eq!(t(a, b).as_deref(), Some(want), "{a} + {b}");
        }
        assert_eq!(t("0", "0x10"), None);
        assert_eq!(t("0", "1e"), None);
        assert_eq!(t("0", "inf"), None);
    }
}
