//! Replies: the value tree handlers return, and its encoding for RESP2 or RESP3.

use bytes::{BufMut, Bytes, BytesMut};

use crate::bulk_array::BulkArray;

/// Protocol version negotiated with `HELLO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Resp2,
    Resp3,
}

/// A reply. RESP3-only shapes (maps, sets, doubles, booleans, pushes) are encoded as
/// their RESP2 equivalents when the client speaks RESP2, exactly as Redis does.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A status known at compile time: `+OK`, `+PONG`, `+QUEUED`.
    Status(&'static str),
    /// A status built at run time (e.g. `TYPE`'s answer).
    SimpleString(String),
    /// An error line including its prefix, e.g. `ERR syntax error` or `WRONGTYPE …`.
    Error(String),
    Int(i64),
    Bulk(Bytes),
    /// The nil bulk string (`$-1` / `_`).
    Null,
    /// The nil array (`*-1` / `_`), as BLPOP's timeout or EXEC's abort.
    NullArray,
    Array(Vec<Reply>),
    /// An array of bulk strings in wire form: what range reads answer with. It equals
    /// the `Array` of the same `Bulk`s, as it is the same on the wire.
    Bulks(BulkArray),
    Map(Vec<(Reply, Reply)>),
    Set(Vec<Reply>),
    Double(f64),
    Bool(bool),
    BigNumber(String),
    /// Verbatim string with its three-letter format (`txt`, `mkd`).
    Verbatim(&'static str, Bytes),
    /// Out-of-band data (pub/sub messages, invalidations).
    Push(Vec<Reply>),
}

pub const OK: Reply = Reply::Status("OK");

impl Reply {
    pub fn ok() -> Reply {
        OK
    }

    pub fn bulk(b: impl Into<Bytes>) -> Reply {
        Reply::Bulk(b.into())
    }

    pub fn bulk_str(s: &str) -> Reply {
        Reply::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    pub fn error(s: impl Into<String>) -> Reply {
        Reply::Error(s.into())
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// An array of bulk strings.
    pub fn bulks<I, B>(items: I) -> Reply
    where
        I: IntoIterator<Item = B>,
        B: Into<Bytes>,
    {
        Reply::Array(items.into_iter().map(|b| Reply::Bulk(b.into())).collect())
    }

    /// The elements of an array reply (either form), for code that reads replies
    /// itself; `None` for any other shape.
    pub fn into_array(self) -> Option<Vec<Reply>> {
        match self {
            Reply::Array(items) => Some(items),
            Reply::Bulks(list) => Some(
                list.iter()
                    .map(|b| Reply::Bulk(Bytes::copy_from_slice(b)))
                    .collect(),
            ),
            _ => None,
        }
    }

    /// Appends the wire form of this reply to `out`.
    pub fn encode(&self, out: &mut BytesMut, proto: Protocol) {
        let resp3 = proto == Protocol::Resp3;
        match self {
            Reply::Status(s) => line(out, b'+', s.as_bytes()),
            Reply::SimpleString(s) => line(out, b'+', sanitize(s).as_bytes()),
            Reply::Error(s) => line(out, b'-', sanitize(s).as_bytes()),
            Reply::Int(n) => int_line(out, b':', *n),
            Reply::Bulk(b) => bulk(out, b),
            Reply::Null => {
                if resp3 {
                    out.put_slice(b"_\r\n")
                } else {
                    out.put_slice(b"$-1\r\n")
                }
            }
            Reply::NullArray => {
                if resp3 {
                    out.put_slice(b"_\r\n")
                } else {
                    out.put_slice(b"*-1\r\n")
                }
            }
            Reply::Array(items) => {
                int_line(out, b'*', items.len() as i64);
                items.iter().for_each(|i| i.encode(out, proto));
            }
            Reply::Bulks(list) => {
                int_line(out, b'*', list.len() as i64);
                out.extend_from_slice(list.wire());
            }
            Reply::Set(items) => {
                int_line(out, if resp3 { b'~' } else { b'*' }, items.len() as i64);
                items.iter().for_each(|i| i.encode(out, proto));
            }
            Reply::Push(items) => {
                int_line(out, if resp3 { b'>' } else { b'*' }, items.len() as i64);
                items.iter().for_each(|i| i.encode(out, proto));
            }
            Reply::Map(pairs) => {
                if resp3 {
                    int_line(out, b'%', pairs.len() as i64);
                } else {
                    int_line(out, b'*', pairs.len() as i64 * 2);
                }
                for (k, v) in pairs {
                    k.encode(out, proto);
                    v.encode(out, proto);
                }
            }
            Reply::Double(d) => {
                let s = format_double(*d);
                if resp3 {
                    line(out, b',', s.as_bytes());
                } else {
                    bulk(out, s.as_bytes());
                }
            }
            Reply::Bool(b) => {
                if resp3 {
                    out.put_slice(if *b { b"#t\r\n" } else { b"#f\r\n" });
                } else {
                    int_line(out, b':', *b as i64);
                }
            }
            Reply::BigNumber(n) => {
                if resp3 {
                    line(out, b'(', n.as_bytes());
                } else {
                    bulk(out, n.as_bytes());
                }
            }
            Reply::Verbatim(format, body) => {
                if resp3 {
                    int_line(out, b'=', body.len() as i64 + 4);
                    out.put_slice(format.as_bytes());
                    out.put_u8(b':');
                    out.put_slice(body);
                    out.put_slice(b"\r\n");
                } else {
                    bulk(out, body);
                }
            }
        }
    }

    /// Convenience for tests and small callers.
    pub fn to_bytes(&self, proto: Protocol) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(&mut out, proto);
        out.freeze()
    }
}

impl PartialEq for Reply {
    fn eq(&self, other: &Self) -> bool {
        use Reply::*;
        match (self, other) {
            (Status(a), Status(b)) => a == b,
            (SimpleString(a), SimpleString(b)) | (Error(a), Error(b)) => a == b,
            (BigNumber(a), BigNumber(b)) => a == b,
            (Int(a), Int(b)) => a == b,
            (Bulk(a), Bulk(b)) => a == b,
            (Null, Null) | (NullArray, NullArray) => true,
            (Array(a), Array(b)) | (Set(a), Set(b)) | (Push(a), Push(b)) => a == b,
            (Bulks(a), Bulks(b)) => a == b,
            (Bulks(list), Array(items)) | (Array(items), Bulks(list)) => {
                list.len() == items.len()
                    && list
                        .iter()
                        .zip(items)
                        .all(|(x, r)| matches!(r, Bulk(b) if b[..] == *x))
            }
            (Map(a), Map(b)) => a == b,
            (Double(a), Double(b)) => a == b,
            (Bool(a), Bool(b)) => a == b,
            (Verbatim(f, a), Verbatim(g, b)) => f == g && a == b,
            _ => false,
        }
    }
}

impl From<i64> for Reply {
    fn from(n: i64) -> Self {
        Reply::Int(n)
    }
}

impl From<Bytes> for Reply {
    fn from(b: Bytes) -> Self {
        Reply::Bulk(b)
    }
}

impl From<Option<Bytes>> for Reply {
    fn from(b: Option<Bytes>) -> Self {
        b.map_or(Reply::Null, Reply::Bulk)
    }
}

fn line(out: &mut BytesMut, prefix: u8, body: &[u8]) {
    out.reserve(body.len() + 3);
    out.put_u8(prefix);
    out.put_slice(body);
    out.put_slice(b"\r\n");
}

fn int_line(out: &mut BytesMut, prefix: u8, n: i64) {
    let mut buf = itoa::Buffer::new();
    line(out, prefix, buf.format(n).as_bytes());
}

fn bulk(out: &mut BytesMut, body: &[u8]) {
    let mut buf = itoa::Buffer::new();
    let len = buf.format(body.len());
    out.reserve(body.len() + len.len() + 5);
    out.put_u8(b'$');
    out.put_slice(len.as_bytes());
    out.put_slice(b"\r\n");
    out.put_slice(body);
    out.put_slice(b"\r\n");
}

/// Status and error lines cannot carry newlines; Redis replaces them with spaces.
fn sanitize(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['\r', '\n']) {
        std::borrow::Cow::Owned(s.replace(['\r', '\n'], " "))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// Formats a double the way Redis 7.2 replies with one: `inf`/`-inf`/`nan`, otherwise
/// the shortest text that reads back to the same value, laid out as C's `%.17g` would
/// (plain notation for exponents -5 < e < 17, else `1.5e+20`; no trailing zeros).
pub fn format_double(d: f64) -> String {
    if d.is_nan() {
        return "nan".into();
    }
    if d.is_infinite() {
        return if d > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if d == 0.0 {
        return if d.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    // `{:e}` gives the shortest round-trip digits: "1.2345e-7", "-5e20".
    let sci = format!("{d:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut out = String::with_capacity(24);
    if neg {
        out.push('-');
    }
    if !(-4..17).contains(&exp) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        let e = exp.unsigned_abs();
        if e < 10 {
            out.push('0');
        }
        out.push_str(&e.to_string());
    } else if exp < 0 {
        out.push_str("0.");
        for _ in 0..(-exp - 1) {
            out.push('0');
        }
        out.push_str(&digits);
    } else {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            out.push_str(&digits);
            for _ in digits.len()..int_len {
                out.push('0');
            }
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(r: Reply, p: Protocol) -> String {
        String::from_utf8(r.to_bytes(p).to_vec()).unwrap()
    }

    #[test]
    fn resp2_shapes() {
        assert_eq!(enc(OK, Protocol::Resp2), "+OK\r\n");
        assert_eq!(enc(Reply::Null, Protocol::Resp2), "$-1\r\n");
        assert_eq!(enc(Reply::NullArray, Protocol::Resp2), "*-1\r\n");
        assert_eq!(enc(Reply::Double(1.5), Protocol::Resp2), "$3\r\n1.5\r\n");
        assert_eq!(enc(Reply::Bool(true), Protocol::Resp2), ":1\r\n");
        let m = Reply::Map(vec![(Reply::bulk_str("a"), Reply::Int(1))]);
        assert_eq!(enc(m, Protocol::Resp2), "*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(
            enc(Reply::error("ERR a\r\nb"), Protocol::Resp2),
            "-ERR a  b\r\n"
        );
    }

    #[test]
    fn resp3_shapes() {
        assert_eq!(enc(Reply::Null, Protocol::Resp3), "_\r\n");
        assert_eq!(enc(Reply::Double(1.5), Protocol::Resp3), ",1.5\r\n");
        assert_eq!(enc(Reply::Bool(false), Protocol::Resp3), "#f\r\n");
        let m = Reply::Map(vec![(Reply::bulk_str("a"), Reply::Int(1))]);
        assert_eq!(enc(m, Protocol::Resp3), "%1\r\n$1\r\na\r\n:1\r\n");
        let s = Reply::Set(vec![Reply::Int(1)]);
        assert_eq!(enc(s, Protocol::Resp3), "~1\r\n:1\r\n");
        let p = Reply::Push(vec![Reply::bulk_str("message")]);
        assert_eq!(enc(p, Protocol::Resp3), ">1\r\n$7\r\nmessage\r\n");
        let v = Reply::Verbatim("txt", Bytes::from_static(b"hi"));
        assert_eq!(enc(v, Protocol::Resp3), "=6\r\ntxt:hi\r\n");
    }

    #[test]
    fn bulks_are_the_array_of_their_strings_on_the_wire_and_in_comparisons() {
        let mut list = BulkArray::with_capacity(2, 4);
        list.push(b"a");
        list.push(b"bcd");
        let array = Reply::bulks([&b"a"[..], b"bcd"].map(Bytes::from_static));
        for p in [Protocol::Resp2, Protocol::Resp3] {
            assert_eq!(
                enc(Reply::Bulks(list.clone()), p),
                "*2\r\n$1\r\na\r\n$3\r\nbcd\r\n"
            );
        }
        assert_eq!(Reply::Bulks(list.clone()), array);
        assert_eq!(array, Reply::Bulks(list.clone()));
        assert_eq!(
            Reply::Bulks(list.clone()).into_array(),
            array.clone().into_array()
        );
        assert_eq!(Reply::Int(1).into_array(), None);
        let other = Reply::bulks([&b"a"[..], b"bce"].map(Bytes::from_static));
        assert_ne!(Reply::Bulks(list.clone()), other);
        assert_ne!(
            Reply::Bulks(list),
            Reply::Array(vec![Reply::Int(1), Reply::Int(2)])
        );
    }

    #[test]
    fn doubles_like_redis() {
        assert_eq!(format_double(1.5), "1.5");
        assert_eq!(format_double(0.1), "0.1");
        assert_eq!(format_double(3.0), "3");
        assert_eq!(format_double(-2.25), "-2.25");
        assert_eq!(format_double(f64::INFINITY), "inf");
        assert_eq!(format_double(f64::NEG_INFINITY), "-inf");
        assert_eq!(format_double(1e16), "10000000000000000");
        assert_eq!(format_double(1e17), "1e+17");
        assert_eq!(format_double(1.5e20), "1.5e+20");
        assert_eq!(format_double(0.0001), "0.0001");
        assert_eq!(format_double(0.00001), "1e-05");
        assert_eq!(format_double(1.0 / 3.0), "0.3333333333333333");
        assert_eq!(format_double(123456.789), "123456.789");
    }
}
