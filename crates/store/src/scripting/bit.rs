//! LuaBitOp (`bit.*`): 32-bit operations on Lua numbers, results as signed 32-bit.

use super::env::{check_num, raw_fn, LibErr};
use mlua::{Lua, MultiValue, Table, Value};

/// LuaBitOp's normalisation: the number's value modulo 2^32 after rounding, taken
/// from the low word of `n + 2^52 + 2^51` exactly as the C union trick.
pub(crate) fn tobit(n: f64) -> u32 {
    (n + 6_755_399_441_055_744.0).to_bits() as u32
}

fn barg(args: &MultiValue, i: usize, name: &str) -> Result<u32, LibErr> {
    Ok(tobit(check_num(args, i, name)?))
}

fn ret(b: u32) -> Result<MultiValue, LibErr> {
    Ok(MultiValue::from_vec(vec![Value::Number(b as i32 as f64)]))
}

pub(crate) fn build(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set("tobit", raw_fn(lua, |_, a| ret(barg(&a, 1, "tobit")?))?)?;
    t.set("bnot", raw_fn(lua, |_, a| ret(!barg(&a, 1, "bnot")?))?)?;
    fn fold(
        name: &'static str,
        f: fn(u32, u32) -> u32,
    ) -> impl Fn(&Lua, MultiValue) -> Result<MultiValue, LibErr> {
        move |_, a| {
            let mut acc = barg(&a, 1, name)?;
            for i in 2..=a.len() {
                acc = f(acc, barg(&a, i, name)?);
            }
            ret(acc)
        }
    }
    t.set("band", raw_fn(lua, fold("band", |x, y| x & y))?)?;
    t.set("bor", raw_fn(lua, fold("bor", |x, y| x | y))?)?;
    t.set("bxor", raw_fn(lua, fold("bxor", |x, y| x ^ y))?)?;
    fn shift(
        name: &'static str,
        f: fn(u32, u32) -> u32,
    ) -> impl Fn(&Lua, MultiValue) -> Result<MultiValue, LibErr> {
        move |_, a| {
            let b = barg(&a, 1, name)?;
            let n = barg(&a, 2, name)? & 31;
            ret(f(b, n))
        }
    }
    t.set("lshift", raw_fn(lua, shift("lshift", |b, n| b << n))?)?;
    t.set("rshift", raw_fn(lua, shift("rshift", |b, n| b >> n))?)?;
    t.set(
        "arshift",
        raw_fn(lua, shift("arshift", |b, n| ((b as i32) >> n) as u32))?,
    )?;
    t.set("rol", raw_fn(lua, shift("rol", |b, n| b.rotate_left(n)))?)?;
    t.set("ror", raw_fn(lua, shift("ror", |b, n| b.rotate_right(n)))?)?;
    t.set(
        "bswap",
        raw_fn(lua, |_, a| ret(barg(&a, 1, "bswap")?.swap_bytes()))?,
    )?;
    t.set(
        "tohex",
        raw_fn(lua, |lua, a| {
            let mut b = barg(&a, 1, "tohex")?;
            let mut n: i32 = if a.len() < 2 || a.get(1).is_none() {
                8
            } else {
                barg(&a, 2, "tohex")? as i32
            };
            let mut digits: &[u8; 16] = b"0123456789abcdef";
            if n < 0 {
                n = n.wrapping_neg();
                digits = b"0123456789ABCDEF";
            }
            if !(0..=8).contains(&n) {
                n = 8;
            }
            let mut buf = vec![0u8; n as usize];
            for slot in buf.iter_mut().rev() {
                *slot = digits[(b & 15) as usize];
                b >>= 4;
            }
            Ok(MultiValue::from_vec(vec![Value::String(
                lua.create_string(&buf).map_err(LibErr::Lua)?,
            )]))
        })?,
    )?;
    Ok(t)
}
