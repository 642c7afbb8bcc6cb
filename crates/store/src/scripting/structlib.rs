//! The `struct` library (Roberto Ierusalimschy's struct.c as bundled by Redis):
//! `struct.pack(fmt, ...)`, `struct.unpack(fmt, s [, pos])`, `struct.size(fmt)`.

use super::env::{check_bytes, check_num, raw_fn, LibErr};
use mlua::{Lua, MultiValue, Table, Value};

const MAXINTSIZE: usize = 32;
const MAXALIGN: usize = 8;

#[derive(Clone, Copy)]
struct Header {
    little: bool,
    align: usize,
}

impl Default for Header {
    fn default() -> Self {
        Header {
            little: true,
            align: 1,
        }
    }
}

struct Fmt<'a> {
    s: &'a [u8],
    i: usize,
}

impl Fmt<'_> {
    fn getnum(&mut self, df: usize) -> Result<usize, LibErr> {
        if self.i >= self.s.len() || !self.s[self.i].is_ascii_digit() {
            return Ok(df);
        }
        let mut a: usize = 0;
        while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
            a = a * 10 + (self.s[self.i] - b'0') as usize;
            if a > i32::MAX as usize {
                return Err(LibErr::Msg("integral size overflow".into()));
            }
            self.i += 1;
        }
        Ok(a)
    }

    fn optsize(&mut self, opt: u8) -> Result<usize, LibErr> {
        Ok(match opt {
            b'B' | b'b' => 1,
            b'H' | b'h' => 2,
            b'L' | b'l' | b'T' | b'd' => 8,
            b'f' => 4,
            b'x' => 1,
            b'c' => self.getnum(1)?,
            b'i' | b'I' => {
                let sz = self.getnum(4)?;
                if sz > MAXINTSIZE {
                    return Err(LibErr::Msg(format!(
                        "integral size {sz} is larger than limit of {MAXINTSIZE}"
                    )));
                }
                sz
            }
            _ => 0,
        })
    }

    fn control(&mut self, opt: u8, h: &mut Header, fname: &str) -> Result<(), LibErr> {
        match opt {
            b' ' => {}
            b'>' => h.little = false,
            b'<' | b'=' => h.little = true,
            b'!' => {
                let a = self.getnum(MAXALIGN)?;
                if !a.is_power_of_two() {
                    return Err(LibErr::Msg(format!("alignment {a} is not a power of 2")));
                }
                h.align = a;
            }
            other => {
                return Err(LibErr::Msg(format!(
                    "bad argument #1 to '{fname}' (invalid format option '{}')",
                    other as char
                )))
            }
        }
        Ok(())
    }
}

fn toalign(len: usize, h: &Header, opt: u8, size: usize) -> usize {
    if size == 0 || opt == b'c' {
        return 0;
    }
    let size = size.min(h.align);
    if !size.is_power_of_two() {
        return 0;
    }
    (size - (len & (size - 1))) & (size - 1)
}

fn pack(lua: &Lua, a: MultiValue) -> Result<MultiValue, LibErr> {
    let fmt = check_bytes(&a, 1, "pack")?;
    let mut f = Fmt { s: &fmt, i: 0 };
    let mut h = Header::default();
    let mut out: Vec<u8> = Vec::new();
    let mut arg = 2;
    while f.i < f.s.len() {
        let opt = f.s[f.i];
        f.i += 1;
        let mut size = f.optsize(opt)?;
        let pad = toalign(out.len(), &h, opt, size);
        out.extend(std::iter::repeat_n(0u8, pad));
        match opt {
            b'b' | b'B' | b'h' | b'H' | b'l' | b'L' | b'T' | b'i' | b'I' => {
                let n = check_num(&a, arg, "pack")?;
                arg += 1;
                let mut value: u64 = if n < 0.0 { n as i64 as u64 } else { n as u64 };
                let mut buf = vec![0u8; size];
                for k in 0..size {
                    let idx = if h.little { k } else { size - 1 - k };
                    buf[idx] = (value & 0xff) as u8;
                    value = value.checked_shr(8).unwrap_or(0);
                }
                out.extend_from_slice(&buf);
            }
            b'x' => out.push(0),
            b'f' => {
                let v = check_num(&a, arg, "pack")? as f32;
                arg += 1;
                out.extend_from_slice(&if h.little {
                    v.to_le_bytes()
                } else {
                    v.to_be_bytes()
                });
            }
            b'd' => {
                let v = check_num(&a, arg, "pack")?;
                arg += 1;
                out.extend_from_slice(&if h.little {
                    v.to_le_bytes()
                } else {
                    v.to_be_bytes()
                });
            }
            b'c' | b's' => {
                let s = check_bytes(&a, arg, "pack")?;
                arg += 1;
                if size == 0 {
                    size = s.len();
                }
                if s.len() < size {
                    return Err(LibErr::Msg(format!(
                        "bad argument #{arg} to 'pack' (string too short)"
                    )));
                }
                out.extend_from_slice(&s[..size]);
                if opt == b's' {
                    out.push(0);
                }
            }
            _ => f.control(opt, &mut h, "pack")?,
        }
    }
    Ok(MultiValue::from_vec(vec![Value::String(
        lua.create_string(&out).map_err(LibErr::Lua)?,
    )]))
}

fn unpack(lua: &Lua, a: MultiValue) -> Result<MultiValue, LibErr> {
    let fmt = check_bytes(&a, 1, "unpack")?;
    let data = check_bytes(&a, 2, "unpack")?;
    let ld = data.len();
    let pos = match a.get(2) {
        None | Some(Value::Nil) => 1.0,
        Some(_) => check_num(&a, 3, "unpack")?,
    };
    if pos < 1.0 {
        return Err(LibErr::Msg(
            "bad argument #3 to 'unpack' (offset must be 1 or greater)".into(),
        ));
    }
    let mut pos = pos as usize - 1;
    let mut f = Fmt { s: &fmt, i: 0 };
    let mut h = Header::default();
    let mut out: Vec<Value> = Vec::new();
    let short = || LibErr::Msg("bad argument #2 to 'unpack' (data string too short)".into());
    while f.i < f.s.len() {
        let opt = f.s[f.i];
        f.i += 1;
        let mut size = f.optsize(opt)?;
        pos += toalign(pos, &h, opt, size);
        if size > ld || pos > ld - size {
            return Err(short());
        }
        match opt {
            b'b' | b'B' | b'h' | b'H' | b'l' | b'L' | b'T' | b'i' | b'I' => {
                let bytes = &data[pos..pos + size];
                let mut l: u64 = 0;
                for k in 0..size {
                    let b = if h.little {
                        bytes[size - 1 - k]
                    } else {
                        bytes[k]
                    };
                    l = l.checked_shl(8).unwrap_or(0) | b as u64;
                }
                let v = if opt.is_ascii_lowercase() {
                    let bits = (size * 8).min(64);
                    if bits > 0 && bits < 64 && l & (1u64 << (bits - 1)) != 0 {
                        l |= u64::MAX << (bits - 1);
                    }
                    l as i64 as f64
                } else {
                    l as f64
                };
                out.push(Value::Number(v));
            }
            b'x' => {}
            b'f' => {
                let mut b = [0u8; 4];
                b.copy_from_slice(&data[pos..pos + 4]);
                let v = if h.little {
                    f32::from_le_bytes(b)
                } else {
                    f32::from_be_bytes(b)
                };
                out.push(Value::Number(v as f64));
            }
            b'd' => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&data[pos..pos + 8]);
                let v = if h.little {
                    f64::from_le_bytes(b)
                } else {
                    f64::from_be_bytes(b)
                };
                out.push(Value::Number(v));
            }
            b'c' => {
                if size == 0 {
                    let prev = match out.last() {
                        Some(Value::Number(n)) => *n,
                        _ => return Err(LibErr::Msg("format 'c0' needs a previous size".into())),
                    };
                    out.pop();
                    size = if prev > 0.0 { prev as usize } else { 0 };
                    if size > ld || pos > ld - size {
                        return Err(short());
                    }
                }
                out.push(Value::String(
                    lua.create_string(&data[pos..pos + size])
                        .map_err(LibErr::Lua)?,
                ));
            }
            b's' => {
                let Some(e) = data[pos..].iter().position(|&b| b == 0) else {
                    return Err(LibErr::Msg("unfinished string in data".into()));
                };
                out.push(Value::String(
                    lua.create_string(&data[pos..pos + e])
                        .map_err(LibErr::Lua)?,
                ));
                size = e + 1;
            }
            _ => f.control(opt, &mut h, "unpack")?,
        }
        pos += size;
    }
    out.push(Value::Number((pos + 1) as f64));
    Ok(MultiValue::from_vec(out))
}

fn size(_: &Lua, a: MultiValue) -> Result<MultiValue, LibErr> {
    let fmt = check_bytes(&a, 1, "size")?;
    let mut f = Fmt { s: &fmt, i: 0 };
    let mut h = Header::default();
    let mut pos = 0usize;
    while f.i < f.s.len() {
        let opt = f.s[f.i];
        f.i += 1;
        let size = f.optsize(opt)?;
        pos += toalign(pos, &h, opt, size);
        if opt == b's' {
            return Err(LibErr::Msg(
                "bad argument #1 to 'size' (option 's' has no fixed size)".into(),
            ));
        } else if opt == b'c' && size == 0 {
            return Err(LibErr::Msg(
                "bad argument #1 to 'size' (option 'c0' has no fixed size)".into(),
            ));
        }
        if !opt.is_ascii_alphanumeric() {
            f.control(opt, &mut h, "size")?;
        }
        pos += size;
    }
    Ok(MultiValue::from_vec(vec![Value::Number(pos as f64)]))
}

pub(crate) fn build(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set("pack", raw_fn(lua, pack)?)?;
    t.set("unpack", raw_fn(lua, unpack)?)?;
    t.set("size", raw_fn(lua, size)?)?;
    Ok(t)
}
