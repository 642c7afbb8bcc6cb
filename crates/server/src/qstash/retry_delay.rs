//! `Upstash-Retry-Delay`: the delay before a retry as an arithmetic expression in
//! milliseconds over `retried` (retries made so far), e.g.
//! `pow(2, retried) * 1000`. Parsed once at publish, so a bad expression is the
//! publisher's 400, never a failed delivery later.
//!
//! Grammar: numbers, `retried`, `+ - * /`, unary minus, parentheses, and the
//! functions `pow sqrt abs exp floor ceil round min max`.

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Num(f64),
    Retried,
    Neg(Box<Expr>),
    Bin(char, Box<Expr>, Box<Expr>),
    Call(Func, Vec<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Func {
    Pow,
    Sqrt,
    Abs,
    Exp,
    Floor,
    Ceil,
    Round,
    Min,
    Max,
}

impl Func {
    fn named(name: &str) -> Option<Func> {
        Some(match name {
            "pow" => Func::Pow,
            "sqrt" => Func::Sqrt,
            "abs" => Func::Abs,
            "exp" => Func::Exp,
            "floor" => Func::Floor,
            "ceil" => Func::Ceil,
            "round" => Func::Round,
            "min" => Func::Min,
            "max" => Func::Max,
            _ => return None,
        })
    }

    /// Arguments it takes: exactly `n`, or at least one for `min`/`max`.
    fn arity_ok(self, n: usize) -> bool {
        match self {
            Func::Pow => n == 2,
            Func::Min | Func::Max => n >= 1,
            _ => n == 1,
        }
    }
}

/// Longest expression accepted (a header, but bounded before recursion).
const MAX_LEN: usize = 256;
/// Deepest nesting of parentheses and calls.
const MAX_DEPTH: usize = 32;

/// A parsed retry-delay expression.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryDelay(Expr);

impl RetryDelay {
    pub fn parse(text: &str) -> Result<RetryDelay, String> {
        if text.len() > MAX_LEN {
            return Err(format!(
                "retry delay expression longer than {MAX_LEN} bytes"
            ));
        }
        let mut p = Parser {
            s: text.as_bytes(),
            pos: 0,
            depth: 0,
        };
        let e = p.sum()?;
        p.skip_ws();
        if p.pos != p.s.len() {
            return Err(format!(
                "invalid retry delay expression {text:?} at position {}",
                p.pos
            ));
        }
        Ok(RetryDelay(e))
    }

    /// Milliseconds to wait after `retried` retries (never negative or NaN).
    pub fn millis(&self, retried: u32) -> u64 {
        let v = eval(&self.0, retried as f64);
        if v.is_finite() && v > 0.0 {
            v.min(u64::MAX as f64) as u64
        } else {
            0
        }
    }
}

fn eval(e: &Expr, retried: f64) -> f64 {
    match e {
        Expr::Num(n) => *n,
        Expr::Retried => retried,
        Expr::Neg(a) => -eval(a, retried),
        Expr::Bin(op, a, b) => {
            let (a, b) = (eval(a, retried), eval(b, retried));
            match op {
                '+' => a + b,
                '-' => a - b,
                '*' => a * b,
                _ => a / b,
            }
        }
        Expr::Call(f, args) => {
            let v: Vec<f64> = args.iter().map(|a| eval(a, retried)).collect();
            let x = v.first().copied().unwrap_or(0.0);
            match f {
                Func::Pow => x.powf(v.get(1).copied().unwrap_or(1.0)),
                Func::Sqrt => x.sqrt(),
                Func::Abs => x.abs(),
                Func::Exp => x.exp(),
                Func::Floor => x.floor(),
                Func::Ceil => x.ceil(),
                Func::Round => x.round(),
                Func::Min => v.iter().copied().fold(f64::INFINITY, f64::min),
                Func::Max => v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            }
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.s.get(self.pos).is_some_and(u8::is_ascii_whitespace) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.pos).copied()
    }

    fn error(&self) -> String {
        format!(
            "invalid retry delay expression {:?} at position {}",
            String::from_utf8_lossy(self.s),
            self.pos
        )
    }

    fn sum(&mut self) -> Result<Expr, String> {
        let mut left = self.product()?;
        while let Some(op @ (b'+' | b'-')) = self.peek() {
            self.pos += 1;
            let right = self.product()?;
            left = Expr::Bin(op as char, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn product(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        while let Some(op @ (b'*' | b'/')) = self.peek() {
            self.pos += 1;
            let right = self.unary()?;
            left = Expr::Bin(op as char, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
            return Ok(Expr::Neg(Box::new(self.nested(Self::unary)?)));
        }
        self.atom()
    }

    /// Runs `f` one level deeper, refusing past [`MAX_DEPTH`].
    fn nested(&mut self, f: fn(&mut Self) -> Result<Expr, String>) -> Result<Expr, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("retry delay expression nested too deeply".into());
        }
        let r = f(self);
        self.depth -= 1;
        r
    }

    fn atom(&mut self) -> Result<Expr, String> {
        match self.peek() {
            Some(b'(') => {
                self.pos += 1;
                let e = self.nested(Self::sum)?;
                self.expect(b')')?;
                Ok(e)
            }
            Some(c) if c.is_ascii_digit() || c == b'.' => {
                let start = self.pos;
                while self
                    .s
                    .get(self.pos)
                    .is_some_and(|c| c.is_ascii_digit() || *c == b'.')
                {
                    self.pos += 1;
                }
                std::str::from_utf8(&self.s[start..self.pos])
                    .ok()
                    .and_then(|t| t.parse::<f64>().ok())
                    .map(Expr::Num)
                    .ok_or_else(|| self.error())
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.pos;
                while self.s.get(self.pos).is_some_and(u8::is_ascii_alphanumeric) {
                    self.pos += 1;
                }
                let name = String::from_utf8_lossy(&self.s[start..self.pos]).to_ascii_lowercase();
                if name == "retried" {
                    return Ok(Expr::Retried);
                }
                let f = Func::named(&name).ok_or_else(|| {
                    format!("unknown function {name:?} in retry delay expression")
                })?;
                self.expect(b'(')?;
                let mut args = vec![self.nested(Self::sum)?];
                while self.peek() == Some(b',') {
                    self.pos += 1;
                    args.push(self.nested(Self::sum)?);
                }
                self.expect(b')')?;
                if !f.arity_ok(args.len()) {
                    return Err(format!(
                        "wrong number of arguments to {name} in retry delay expression"
                    ));
                }
                Ok(Expr::Call(f, args))
            }
            _ => Err(self.error()),
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(expr: &str, retried: u32) -> u64 {
        RetryDelay::parse(expr).unwrap().millis(retried)
    }

    #[test]
    fn documented_forms() {
        assert_eq!(ms("1000", 3), 1000);
        assert_eq!(ms("1000 * (1 + retried)", 2), 3000);
        assert_eq!(ms("pow(2, retried) * 1000", 3), 8000);
        assert_eq!(ms("max(1000, pow(2, retried) * 100)", 1), 1000);
        assert_eq!(ms("min(5000, pow(2, retried) * 1000)", 10), 5000);
        assert_eq!(
            ms(
                "floor(sqrt(retried)) * 10 + abs(-5) + round(2.5) + ceil(0.1)",
                9
            ),
            39
        );
        assert_eq!(ms("exp(0) * 7 - 2 / 2", 0), 6);
        assert_eq!(ms("-5", 0), 0, "a negative delay is no delay");
    }

    #[test]
    fn bad_expressions_are_refused() {
        for bad in [
            "",
            "1 +",
            "pow(2)",
            "foo(1)",
            "(1",
            "1)",
            "retried retried",
            "2 ** 3",
        ] {
            assert!(RetryDelay::parse(bad).is_err(), "{bad:?}");
        }
        let deep = format!("{}1{}", "(".repeat(100), ")".repeat(100));
        assert!(RetryDelay::parse(&deep).is_err());
        assert!(RetryDelay::parse(&"1+".repeat(200)).is_err());
    }
}
