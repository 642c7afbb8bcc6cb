//! Number parsing and printing with Redis's exact rules (`string2ll`, `strtold`-based
//! float parsing that rejects NaN and trailing garbage).

/// Strict integer: optional '-', digits, no leading '+', no spaces, no leading zeros
/// except "0" itself, within i64.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let (neg, digits) = match s[0] {
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || (digits[0] == b'0' && (digits.len() > 1 || neg)) {
        return None;
    }
    let n = decimal_u64(digits)?;
    if neg {
        if n > i64::MAX as u64 + 1 {
            None
        } else {
            Some((n as i64).wrapping_neg())
        }
    } else {
        i64::try_from(n).ok()
    }
}

/// An unsigned decimal as Redis's `string2ull` reads stream ids: digits (leading
/// zeros allowed) within u64, nothing else.
pub fn parse_u64_digits(s: &[u8]) -> Option<u64> {
    if s.len() > 32 {
        return None;
    }
    decimal_u64(s)
}

/// Plain decimal digits (at least one) within u64.
fn decimal_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        if !d.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add((d - b'0') as u64)
    })
}

/// A SCAN-family cursor as Redis 7.2 reads it (`strtoul` with nothing left over):
/// optional sign (a negative value wraps), digits, no spaces, no overflow. The empty
/// string reads as 0 (strtoul consumes nothing and stops at the end).
pub fn parse_cursor(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return Some(0);
    }
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let n = decimal_u64(digits)?;
    Some(if neg { n.wrapping_neg() } else { n })
}

/// A float as Redis accepts it: what `strtod` reads with nothing left over, no
/// surrounding spaces, not NaN. `inf`, `+inf`, `-inf` are accepted.
pub fn parse_f64(s: &[u8]) -> Option<f64> {
    if s.is_empty() || s[0].is_ascii_whitespace() || s[s.len() - 1].is_ascii_whitespace() {
        return None;
    }
    // Rust accepts a few forms strtod does not ("1." is fine in both); reject hex
    // floats, "nan" and the like by only allowing the decimal alphabet. Checked on
    // the bytes as they are: no lowercase copy for the common case (every ZADD).
    if s.iter()
        .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'-' | b'+'))
    {
        let v = std::str::from_utf8(s).ok()?.parse::<f64>().ok()?;
        return (!v.is_nan()).then_some(v);
    }
    // Otherwise only infinity, spelled as strtod takes it, in any case.
    let lower = std::str::from_utf8(s).ok()?.to_ascii_lowercase();
    match lower.as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => Some(f64::INFINITY),
        "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

pub fn i64_to_bytes(n: i64) -> bytes::Bytes {
    let mut buf = itoa::Buffer::new();
    bytes::Bytes::copy_from_slice(buf.format(n).as_bytes())
}

/// A percentile as Redis prints it in its config and `INFO latencystats`: six
/// decimals with the trailing zeros (and a bare point) dropped.
pub fn fmt_percentile(p: f64) -> String {
    let s = format!("{p:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// INCRBYFLOAT's output: Redis prints with `%.17Lf` and trims trailing zeros, which
/// never uses an exponent. We print the shortest round-trip digits in plain notation.
pub fn format_float_plain(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let s = format!("{v}");
    if s == "-0" {
        "0".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ints() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b"01"), None);
        assert_eq!(parse_i64(b"-0"), None);
        assert_eq!(parse_i64(b"+1"), None);
        assert_eq!(parse_i64(b" 1"), None);
        assert_eq!(parse_i64(b""), None);
    }

    #[test]
    fn floats() {
        assert_eq!(parse_f64(b"1.5"), Some(1.5));
        assert_eq!(parse_f64(b"-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_f64(b"1e3"), Some(1000.0));
        assert_eq!(parse_f64(b"nan"), None);
        assert_eq!(parse_f64(b"1.5x"), None);
        assert_eq!(parse_f64(b" 1"), None);
        assert_eq!(parse_f64(b"1E3"), Some(1000.0));
        assert_eq!(parse_f64(b"+Infinity"), Some(f64::INFINITY));
        assert_eq!(parse_f64(b"-INF"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_f64(b"0x1p3"), None);
        assert_eq!(parse_f64(b"infinit"), None);
        assert_eq!(parse_f64(b"-"), None);
        assert_eq!(format_float_plain(10.5), "10.5");
        assert_eq!(format_float_plain(3.0), "3");
        assert_eq!(format_float_plain(5.0e3), "5000");
    }
}
