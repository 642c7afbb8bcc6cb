//! Emulation of the x87 80-bit `long double` arithmetic Redis uses for INCRBYFLOAT
//! (and HINCRBYFLOAT): parse with `strtold` (correct rounding to a 64-bit
//! mantissa), add with round-half-even, print with `%.17Lf`. Redis's replies show
//! the artefacts of that precision (`1000 + 0.1` is `1000.09999999999999998`), and
//! clients compare them byte for byte, so we compute exactly the same bits with a
//! small arbitrary-precision integer.

/// Little-endian base-2^32 unsigned integer, only what this module needs.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Big(Vec<u32>);

impl Big {
    fn zero() -> Big {
        Big(Vec::new())
    }

    fn from_u64(v: u64) -> Big {
        let mut b = Big(vec![v as u32, (v >> 32) as u32]);
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

    fn bits(&self) -> u64 {
        match self.0.last() {
            None => 0,
            Some(top) => (self.0.len() as u64 - 1) * 32 + (32 - top.leading_zeros() as u64),
        }
    }

    fn bit(&self, i: u64) -> bool {
        let limb = (i / 32) as usize;
        limb < self.0.len() && (self.0[limb] >> (i % 32)) & 1 == 1
    }

    /// Whether any of the bits below `i` is set.
    fn any_below(&self, i: u64) -> bool {
        let full = (i / 32) as usize;
        if self.0.iter().take(full).any(|l| *l != 0) {
            return true;
        }
        let rem = i % 32;
        rem > 0 && full < self.0.len() && self.0[full] & ((1u32 << rem) - 1) != 0
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

    fn mul_pow10(&mut self, mut n: u32) {
        while n >= 9 {
            self.mul_small(1_000_000_000);
            n -= 9;
        }
        self.mul_small(10u32.pow(n));
        self.trim();
    }

    fn shl(&self, n: u64) -> Big {
        if self.is_zero() {
            return Big::zero();
        }
        let (limbs, bits) = ((n / 32) as usize, (n % 32) as u32);
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
        let (limbs, bits) = ((n / 32) as usize, (n % 32) as u32);
        if limbs >= self.0.len() {
            return Big::zero();
        }
        let src = &self.0[limbs..];
        let mut out = Vec::with_capacity(src.len());
        for (i, l) in src.iter().enumerate() {
            let hi = src.get(i + 1).copied().unwrap_or(0);
            out.push(if bits == 0 {
                *l
            } else {
                (l >> bits) | (hi << (32 - bits))
            });
        }
        let mut b = Big(out);
        b.trim();
        b
    }

    fn cmp(&self, o: &Big) -> std::cmp::Ordering {
        self.0
            .len()
            .cmp(&o.0.len())
            .then_with(|| self.0.iter().rev().cmp(o.0.iter().rev()))
    }

    fn add(&self, o: &Big) -> Big {
        let mut out = Vec::with_capacity(self.0.len().max(o.0.len()) + 1);
        let mut carry = 0u64;
        for i in 0..self.0.len().max(o.0.len()) {
            let v = *self.0.get(i).unwrap_or(&0) as u64 + *o.0.get(i).unwrap_or(&0) as u64 + carry;
            out.push(v as u32);
            carry = v >> 32;
        }
        if carry > 0 {
            out.push(carry as u32);
        }
        let mut b = Big(out);
        b.trim();
        b
    }

    /// self - o, requires self >= o.
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

    /// (self / d, remainder is non-zero), by shift and subtract.
    fn div(&self, d: &Big) -> (Big, bool) {
        let mut q = Big::zero();
        let mut r = Big::zero();
        for i in (0..self.bits()).rev() {
            r = r.shl(1);
            if self.bit(i) {
                r.add_small(1);
            }
            q = q.shl(1);
            if r.cmp(d) != std::cmp::Ordering::Less {
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
        let mut limbs = self.0.clone();
        let mut chunks = Vec::new();
        while !limbs.is_empty() {
            let mut rem = 0u64;
            for l in limbs.iter_mut().rev() {
                let v = (rem << 32) | *l as u64;
                *l = (v / 1_000_000_000) as u32;
                rem = v % 1_000_000_000;
            }
            chunks.push(rem as u32);
            while limbs.last() == Some(&0) {
                limbs.pop();
            }
        }
        let mut s = chunks.pop().map_or("0".to_string(), |c| c.to_string());
        for c in chunks.iter().rev() {
            s.push_str(&format!("{c:09}"));
        }
        s
    }
}

/// A finite long double: (-1)^neg * mant * 2^exp, mant < 2^64.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LongDouble {
    neg: bool,
    mant: u64,
    exp: i64,
}

/// Largest binary exponent of a finite long double (2^16384 overflows).
const MAX_EXP: i64 = 16384;
/// Below this (2^-16445, the smallest subnormal) values flush to zero; subnormal
/// precision loss in between is not modelled (no INCRBYFLOAT input gets there).
const MIN_EXP: i64 = -16445;

/// Rounds `n * 2^exp` (plus a sticky "something below" flag) to 64 bits, ties to even.
fn round_to_ld(neg: bool, n: &Big, exp: i64, sticky: bool) -> Option<LongDouble> {
    let bits = n.bits();
    if bits <= 64 && !sticky {
        return finite(neg, n.to_u64(), exp);
    }
    let shift = bits.saturating_sub(64);
    let mut mant = n.shr(shift).to_u64();
    let half = shift > 0 && n.bit(shift - 1);
    let below = (shift > 1 && n.any_below(shift - 1)) || sticky;
    let mut exp = exp + shift as i64;
    if half && (below || mant & 1 == 1) {
        mant = mant.wrapping_add(1);
        if mant == 0 {
            mant = 1 << 63;
            exp += 1;
        }
    }
    finite(neg, mant, exp)
}

fn finite(neg: bool, mant: u64, exp: i64) -> Option<LongDouble> {
    if mant == 0 || exp < MIN_EXP {
        return Some(LongDouble {
            neg: false,
            mant: 0,
            exp: 0,
        });
    }
    if exp + (64 - mant.leading_zeros() as i64) > MAX_EXP {
        return None;
    }
    Some(LongDouble { neg, mant, exp })
}

impl LongDouble {
    /// `strtold` of a plain decimal `[+-]digits[.digits][(e|E)[+-]digits]`; `None`
    /// for other syntax (inf, hex) or values out of range.
    pub fn parse(s: &[u8]) -> Option<LongDouble> {
        let (neg, rest) = match s.first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        if rest.len() > 2 && rest[0] == b'0' && (rest[1] == b'x' || rest[1] == b'X') {
            return Self::parse_hex(neg, &rest[2..]);
        }
        let (num, exp) = match rest.iter().position(|c| *c == b'e' || *c == b'E') {
            Some(i) => {
                let e = std::str::from_utf8(&rest[i + 1..]).ok()?;
                if e.is_empty() || e.starts_with("+-") {
                    return None;
                }
                (&rest[..i], e.parse::<i64>().ok()?)
            }
            None => (rest, 0),
        };
        let (int, frac) = match num.iter().position(|c| *c == b'.') {
            Some(i) => (&num[..i], &num[i + 1..]),
            None => (num, &num[num.len()..]),
        };
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let mut d = Big::zero();
        let mut digits = 0i64;
        for c in int.iter().chain(frac) {
            if !c.is_ascii_digit() {
                return None;
            }
            if d.is_zero() && *c == b'0' {
                continue;
            }
            d.mul_small(10);
            d.add_small((c - b'0') as u32);
            d.trim();
            digits += 1;
        }
        if d.is_zero() {
            return Some(LongDouble {
                neg,
                mant: 0,
                exp: 0,
            });
        }
        let e10 = exp.checked_sub(frac.len() as i64)?;
        // Far outside long double's range (about 1e±4951) either way.
        if e10 + digits > 4940 || e10 + digits < -4960 {
            return None;
        }
        if e10 >= 0 {
            let mut n = d;
            n.mul_pow10(e10 as u32);
            round_to_ld(neg, &n, 0, false)
        } else {
            let mut p = Big::from_u64(1);
            p.mul_pow10((-e10) as u32);
            let k = (66 + p.bits()).saturating_sub(d.bits());
            let (q, inexact) = d.shl(k).div(&p);
            let r = round_to_ld(neg, &q, -(k as i64), inexact)?;
            // Flushed to zero: strtold reports ERANGE and Redis rejects the value.
            (r.mant != 0).then_some(r)
        }
    }

    /// `strtold`'s hexadecimal form: `hexdigits[.hexdigits][(p|P)[+-]digits]`.
    fn parse_hex(neg: bool, s: &[u8]) -> Option<LongDouble> {
        let (num, exp) = match s.iter().position(|c| *c == b'p' || *c == b'P') {
            Some(i) => {
                let e = std::str::from_utf8(&s[i + 1..]).ok()?;
                if e.is_empty() || e.starts_with("+-") {
                    return None;
                }
                (&s[..i], e.parse::<i64>().ok()?)
            }
            None => (s, 0),
        };
        let (int, frac) = match num.iter().position(|c| *c == b'.') {
            Some(i) => (&num[..i], &num[i + 1..]),
            None => (num, &num[num.len()..]),
        };
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        let mut h = Big::zero();
        for c in int.iter().chain(frac) {
            let d = (*c as char).to_digit(16)?;
            h.mul_small(16);
            h.add_small(d);
            h.trim();
        }
        let e2 = exp.checked_sub(4 * frac.len() as i64)?;
        if h.is_zero() {
            return Some(LongDouble {
                neg,
                mant: 0,
                exp: 0,
            });
        }
        if e2 + h.bits() as i64 > MAX_EXP || e2 + (h.bits() as i64) < MIN_EXP {
            return None;
        }
        round_to_ld(neg, &h, e2, false)
    }

    /// The correctly rounded sum; `None` if it overflows.
    pub fn checked_add(self, o: LongDouble) -> Option<LongDouble> {
        if self.mant == 0 {
            return Some(o);
        }
        if o.mant == 0 {
            return Some(self);
        }
        let (hi, lo) = if self.exp >= o.exp {
            (self, o)
        } else {
            (o, self)
        };
        // A term more than 140 bits below the other only decides rounding direction,
        // which a sticky bit two positions below the last kept bit captures.
        let gap = (hi.exp - lo.exp).min(140) as u64;
        let a = Big::from_u64(hi.mant).shl(gap);
        let (b, base_exp) = if hi.exp - lo.exp > 140 {
            (Big::from_u64(1), hi.exp - 140)
        } else {
            (Big::from_u64(lo.mant), lo.exp)
        };
        let (neg, n) = if hi.neg == lo.neg {
            (hi.neg, a.add(&b))
        } else {
            match a.cmp(&b) {
                std::cmp::Ordering::Less => (lo.neg, b.sub(&a)),
                _ => (hi.neg, a.sub(&b)),
            }
        };
        round_to_ld(neg, &n, base_exp, false)
    }

    /// `%.17Lf` with trailing zeros (and a bare point) removed, `-0` as `0`: Redis's
    /// `ld2string(…, LD_STR_HUMAN)`.
    pub fn to_human(self) -> String {
        let mut n = Big::from_u64(self.mant);
        n.mul_pow10(17);
        let scaled = if self.exp >= 0 {
            n.shl(self.exp as u64)
        } else {
            let sh = (-self.exp) as u64;
            let mut q = n.shr(sh);
            let half = n.bit(sh - 1);
            let below = sh > 1 && n.any_below(sh - 1);
            if half && (below || q.bit(0)) {
                q.add_small(1);
            }
            q
        };
        let digits = scaled.to_decimal();
        let digits = format!("{digits:0>18}");
        let (int, frac) = digits.split_at(digits.len() - 17);
        let frac = frac.trim_end_matches('0');
        let mut s = String::new();
        if self.neg && (int != "0" || !frac.is_empty()) {
            s.push('-');
        }
        s.push_str(int);
        if !frac.is_empty() {
            s.push('.');
            s.push_str(frac);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::LongDouble;

    fn add(a: &str, b: &str) -> String {
        let x = LongDouble::parse(a.as_bytes()).unwrap();
        let y = LongDouble::parse(b.as_bytes()).unwrap();
        x.checked_add(y).unwrap().to_human()
    }

    #[test]
    fn matches_redis_outputs() {
        // Expected values taken from a real redis-server.
        assert_eq!(add("1000", "0.1"), "1000.09999999999999998");
        assert_eq!(add("0", "1000.1"), "1000.09999999999999998");
        assert_eq!(add("100", "0.1"), "100.1");
        assert_eq!(add("12345678.9", "0.01"), "12345678.90999999999985448");
        assert_eq!(add("1e20", "1"), "100000000000000000000");
        assert_eq!(add("3.0e3", "1.5e-5"), "3000.0000150000000001");
        assert_eq!(add("0.1", "0.2"), "0.3");
        assert_eq!(add("1", "1e-18"), "1");
        assert_eq!(add("123456789012345678", "1"), "123456789012345679");
        assert_eq!(add("10.5", "0.1"), "10.6");
        assert_eq!(add("1", "-1.1"), "-0.1");
        assert_eq!(add("-0.1", "0.1"), "0");
        assert_eq!(add("5.0e3", "2.0e2"), "5200");
        assert_eq!(add("17179869184", "1.5"), "17179869185.5");
        assert_eq!(add("1e-300", "1"), "1");
        assert_eq!(add("0.000001", "0.0000001"), "0.0000011");
        assert_eq!(add("-5", "2.5"), "-2.5");
        assert_eq!(add("1.7976931348623157e308", "1"), "179769313486231569995921046774104434048386446944329178485314420765176628523124396354701868608387085564428793419425520689308708363451136055357897278026477617073498977686288394835618163294045594434929537447290627480669417384648879122776218333598953852832103282504751611691208117720159985926376802466863339536384");
        assert_eq!(add("99999999999999999999", "0.5"), "100000000000000000000");
        assert_eq!(add("2.5e-10", "1e-10"), "0.00000000035");
        assert_eq!(add("7", "-7"), "0");
        assert_eq!(add("1e-17", "0"), "0.00000000000000001");
        assert_eq!(add("5e-18", "0"), "0");
        assert_eq!(add("1.23456789e-5", "0"), "0.0000123456789");
        assert_eq!(add("0x10", "0.2"), "16.2");
        assert_eq!(add("-0.681733e-10", "0x10"), "15.9999999999318267");
        assert_eq!(add("0x1.8p1", "0"), "3");
    }

    #[test]
    fn rejects_what_strtold_would_not_give() {
        assert!(LongDouble::parse(b"1e99999").is_none());
        assert!(LongDouble::parse(b"1e-99999").is_none());
        assert!(LongDouble::parse(b"abc").is_none());
        assert!(LongDouble::parse(b".").is_none());
        assert!(LongDouble::parse(b"1e").is_none());
    }
}
