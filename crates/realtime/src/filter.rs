//! Subscription filters of derived channels (`channels.getDerived(name, { filter })`).
//!
//! Ably's filters are JMESPath expressions over two fields of a message: `name` and
//! `headers` (its `extras.headers`). This is the subset they use: paths
//! (`headers.number`, `headers."a-b"`), JSON literals in backticks
//! (`` `"text"` ``, `` `42` ``, `` `true` ``), raw strings (`'text'`), comparisons
//! (`==`, `!=`, `<`, `<=`, `>`, `>=`; ordering only between numbers), `!`, `&&`,
//! `||` and parentheses, with JMESPath's truthiness (false, null, empty strings,
//! arrays and objects are false). A message is delivered when the expression is
//! true for it; a field it lacks is null.

use serde_json::Value;

use crate::protocol::Message;

/// A parsed filter expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter(Expr);

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Path(Vec<String>),
    Literal(Value),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Compare(Cmp, Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Nesting bound: a hostile expression cannot recurse the parser off its stack.
const MAX_DEPTH: usize = 64;

impl Filter {
    /// Parses `source`; the error says what is wrong, for the client's error.
    pub fn parse(source: &str) -> Result<Filter, String> {
        let tokens = tokenize(source)?;
        let mut p = Parser {
            tokens,
            pos: 0,
            depth: 0,
        };
        let e = p.or()?;
        match p.tokens.get(p.pos) {
            None => Ok(Filter(e)),
            Some(t) => Err(format!("unexpected {t:?}")),
        }
    }

    /// Whether `m` passes the filter.
    pub fn matches(&self, m: &Message) -> bool {
        let headers = m
            .extras
            .as_ref()
            .and_then(|e| e.get("headers"))
            .cloned()
            .unwrap_or(Value::Null);
        let name = m.name.clone().map_or(Value::Null, Value::String);
        truthy(&eval(&self.0, &name, &headers))
    }
}

fn eval(e: &Expr, name: &Value, headers: &Value) -> Value {
    match e {
        Expr::Path(p) => {
            let mut cur = match p[0].as_str() {
                "name" => name,
                "headers" => headers,
                _ => return Value::Null,
            };
            for seg in &p[1..] {
                match cur.get(seg) {
                    Some(v) => cur = v,
                    None => return Value::Null,
                }
            }
            cur.clone()
        }
        Expr::Literal(v) => v.clone(),
        Expr::Not(x) => Value::Bool(!truthy(&eval(x, name, headers))),
        Expr::And(a, b) => {
            let l = eval(a, name, headers);
            if truthy(&l) {
                eval(b, name, headers)
            } else {
                l
            }
        }
        Expr::Or(a, b) => {
            let l = eval(a, name, headers);
            if truthy(&l) {
                l
            } else {
                eval(b, name, headers)
            }
        }
        Expr::Compare(op, a, b) => {
            let (l, r) = (eval(a, name, headers), eval(b, name, headers));
            match op {
                Cmp::Eq => Value::Bool(json_eq(&l, &r)),
                Cmp::Ne => Value::Bool(!json_eq(&l, &r)),
                _ => match (l.as_f64(), r.as_f64()) {
                    (Some(x), Some(y)) => Value::Bool(match op {
                        Cmp::Lt => x < y,
                        Cmp::Le => x <= y,
                        Cmp::Gt => x > y,
                        _ => x >= y,
                    }),
                    _ => Value::Null,
                },
            }
        }
    }
}

/// JMESPath equality: numbers by value (`1` equals `1.0`), the rest structurally.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Number(_) => true,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Literal(Value),
    Dot,
    Not,
    And,
    Or,
    Open,
    Close,
    Cmp(Cmp),
}

fn tokenize(s: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = s.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        chars.next();
        let next_is = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>, want| {
            chars.next_if(|&(_, n)| n == want).is_some()
        };
        match c {
            ' ' | '\t' | '\n' | '\r' => {}
            '.' => out.push(Token::Dot),
            '(' => out.push(Token::Open),
            ')' => out.push(Token::Close),
            '!' if next_is(&mut chars, '=') => out.push(Token::Cmp(Cmp::Ne)),
            '!' => out.push(Token::Not),
            '=' if next_is(&mut chars, '=') => out.push(Token::Cmp(Cmp::Eq)),
            '<' if next_is(&mut chars, '=') => out.push(Token::Cmp(Cmp::Le)),
            '<' => out.push(Token::Cmp(Cmp::Lt)),
            '>' if next_is(&mut chars, '=') => out.push(Token::Cmp(Cmp::Ge)),
            '>' => out.push(Token::Cmp(Cmp::Gt)),
            '&' if next_is(&mut chars, '&') => out.push(Token::And),
            '|' if next_is(&mut chars, '|') => out.push(Token::Or),
            '`' => {
                let body = take_quoted(&mut chars, '`')?;
                let v = serde_json::from_str(&body.replace("\\`", "`"))
                    .map_err(|e| format!("bad literal at {i}: {e}"))?;
                out.push(Token::Literal(v));
            }
            '\'' => {
                let body = take_quoted(&mut chars, '\'')?;
                out.push(Token::Literal(Value::String(body.replace("\\'", "'"))));
            }
            '"' => {
                let body = take_quoted(&mut chars, '"')?;
                let v: String = serde_json::from_str(&format!("\"{body}\""))
                    .map_err(|e| format!("bad identifier at {i}: {e}"))?;
                out.push(Token::Ident(v));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut id = String::from(c);
                while let Some((_, n)) =
                    chars.next_if(|&(_, n)| n.is_ascii_alphanumeric() || n == '_')
                {
                    id.push(n);
                }
                out.push(Token::Ident(id));
            }
            other => return Err(format!("unexpected {other:?} at {i}")),
        }
    }
    Ok(out)
}

/// The text up to the closing `quote` (a backslash keeps the next character).
fn take_quoted(
    chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
    quote: char,
) -> Result<String, String> {
    let mut body = String::new();
    while let Some((_, c)) = chars.next() {
        match c {
            '\\' => {
                body.push('\\');
                if let Some((_, n)) = chars.next() {
                    body.push(n);
                }
            }
            c if c == quote => return Ok(body),
            c => body.push(c),
        }
    }
    Err(format!("unterminated {quote}"))
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn eat(&mut self, t: &Token) -> bool {
        if self.peek() == Some(t) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut e = self.and()?;
        while self.eat(&Token::Or) {
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut e = self.comparison()?;
        while self.eat(&Token::And) {
            e = Expr::And(Box::new(e), Box::new(self.comparison()?));
        }
        Ok(e)
    }

    fn comparison(&mut self) -> Result<Expr, String> {
        let l = self.unary()?;
        if let Some(Token::Cmp(op)) = self.peek().cloned() {
            self.pos += 1;
            let r = self.unary()?;
            return Ok(Expr::Compare(op, Box::new(l), Box::new(r)));
        }
        Ok(l)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("expression nested too deeply".into());
        }
        let e = if self.eat(&Token::Not) {
            Expr::Not(Box::new(self.unary()?))
        } else {
            self.primary()?
        };
        self.depth -= 1;
        Ok(e)
    }

    fn primary(&mut self) -> Result<Expr, String> {
        let t = self.peek().cloned();
        self.pos += 1;
        match t {
            Some(Token::Open) => {
                let e = self.or()?;
                if !self.eat(&Token::Close) {
                    return Err("missing ')'".into());
                }
                Ok(e)
            }
            Some(Token::Literal(v)) => Ok(Expr::Literal(v)),
            Some(Token::Ident(first)) => {
                let mut path = vec![first];
                while self.eat(&Token::Dot) {
                    match self.peek().cloned() {
                        Some(Token::Ident(seg)) => {
                            self.pos += 1;
                            path.push(seg);
                        }
                        other => return Err(format!("expected a field after '.', got {other:?}")),
                    }
                }
                Ok(Expr::Path(path))
            }
            Some(other) => Err(format!("unexpected {other:?}")),
            None => Err("unexpected end of expression".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(name: &str, headers: serde_json::Value) -> Message {
        Message {
            name: Some(name.into()),
            extras: Some(serde_json::json!({ "headers": headers })),
            ..Default::default()
        }
    }

    #[test]
    fn ably_js_derived_channel_filter() {
        let f = Filter::parse("name == `\"filtered\"` && headers.number == `26095`").unwrap();
        assert!(f.matches(&msg("filtered", serde_json::json!({"number": 26095}))));
        assert!(!f.matches(&msg("filtered", serde_json::json!({"number": 12345}))));
        assert!(!f.matches(&msg("other", serde_json::json!({"number": 26095}))));
        // No extras at all: headers.number is null.
        assert!(!f.matches(&Message {
            name: Some("filtered".into()),
            ..Default::default()
        }));
    }

    #[test]
    fn operators_and_truthiness() {
        let m = msg(
            "a",
            serde_json::json!({"n": 5, "s": "x", "b": false, "dash-key": 1}),
        );
        let t = |src: &str| Filter::parse(src).unwrap().matches(&m);
        assert!(t("headers.n > `4` && headers.n <= `5`"));
        assert!(!t("headers.n < `5`"));
        assert!(t("headers.s == 'x'"));
        assert!(t("!headers.b"));
        assert!(t("headers.b || name == 'a'"));
        assert!(t("(headers.n == `5.0`) && !(headers.s != 'x')"));
        assert!(t("headers.\"dash-key\" == `1`"));
        assert!(!t("headers.missing"));
        // Ordering between a string and a number is null (false), not an error.
        assert!(!t("headers.s > `1`"));
        assert!(t("name"));
    }

    #[test]
    fn malformed_expressions_are_errors() {
        for src in [
            "",
            "name ==",
            "(name",
            "name == `{bad`",
            "headers.",
            "'open",
            "a $ b",
        ] {
            assert!(Filter::parse(src).is_err(), "{src:?}");
        }
        let deep = format!("{}name{}", "(".repeat(1000), ")".repeat(1000));
        assert!(Filter::parse(&deep).is_err());
        let nots = format!("{}name", "!".repeat(1000));
        assert!(Filter::parse(&nots).is_err());
    }
}
