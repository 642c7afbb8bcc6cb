//! Paths into JSON documents, in RedisJSON's two syntaxes: JSONPath (`$.a[*]`,
//! `$..b`, `$.arr[?(@>1)]`, results are every match) and the legacy syntax (`.`,
//! `.a.b`, `a`, `[0]`, results are the first match). A legacy path is read as the
//! JSONPath it abbreviates (`a.b` is `$.a.b`).
//!
//! Matches are returned with their locations (keys and indexes from the root),
//! which the write commands follow with [`get_mut`]. A recursive descent (`..`)
//! yields the matches inside a node's children before the node's own, the order
//! Upstash's RedisJSON replies in (`$..a` of `{"a":1,"n":{"a":2}}` is `[2,1]`).
//! Every walk is bounded by the document's depth, which writes keep within
//! [`super::json::MAX_DEPTH`].

use std::cmp::Ordering;

use super::json::{json_eq, JsonValue};

/// One step of a location: an object key or an array index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Seg {
    Key(String),
    Index(usize),
}

pub type Loc = Vec<Seg>;

#[derive(Debug, Clone)]
pub struct JsonPath {
    /// Legacy syntax: single-value results and errors on no match.
    pub legacy: bool,
    steps: Vec<Step>,
}

#[derive(Debug, Clone)]
enum Step {
    Child(Sel),
    /// `..sel`: `sel` applied to the node and all its descendants.
    Descend(Sel),
}

#[derive(Debug, Clone)]
enum Sel {
    Name(String),
    Wild,
    Index(i64),
    Slice(Option<i64>, Option<i64>, i64),
    Union(Vec<Sel>),
    Filter(Box<Expr>),
}

#[derive(Debug, Clone)]
enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Exists(Operand),
    Cmp(Operand, CmpOp, Operand),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone)]
enum Operand {
    /// `@…`: relative to the element the filter looks at.
    Rel(Vec<Step>),
    /// `$…`: from the document root.
    Abs(Vec<Step>),
    Lit(JsonValue),
}

/// Nesting limit for filter expressions, so that `?((((…` cannot exhaust the stack.
const MAX_EXPR_DEPTH: usize = 32;

impl JsonPath {
    /// Parses `text`; `Err` holds the reply's error text (after `ERR `).
    pub fn parse(text: &[u8]) -> Result<JsonPath, String> {
        let invalid = || {
            format!(
                "Invalid JSONPath '{}'",
                String::from_utf8_lossy(text)
                    .chars()
                    .take(200)
                    .collect::<String>()
            )
        };
        let (legacy, src): (bool, Vec<u8>) = match text.first() {
            Some(b'$') => (false, text[1..].to_vec()),
            None => (true, Vec::new()),
            Some(_) if text == b"." => (true, Vec::new()),
            Some(b'.') | Some(b'[') => (true, text.to_vec()),
            Some(_) => (true, [b".", text].concat()),
        };
        let mut p = Parser { s: &src, pos: 0 };
        let steps = p.steps(0).map_err(|_| invalid())?;
        if p.pos != src.len() {
            return Err(invalid());
        }
        Ok(JsonPath { legacy, steps })
    }

    /// The root path (`$`): the whole document.
    pub fn is_root(&self) -> bool {
        self.steps.is_empty()
    }

    /// For a path whose last step names an object key (`$.a.b`): the path of the
    /// parent and the key, which JSON.SET and JSON.MERGE may add.
    pub fn split_last_name(&self) -> Option<(JsonPath, &str)> {
        match self.steps.last() {
            Some(Step::Child(Sel::Name(n))) => Some((
                JsonPath {
                    legacy: self.legacy,
                    steps: self.steps[..self.steps.len() - 1].to_vec(),
                },
                n.as_str(),
            )),
            _ => None,
        }
    }

    /// Every match, in order, with its location.
    pub fn select<'a>(&self, root: &'a JsonValue) -> Vec<(Loc, &'a JsonValue)> {
        run_steps(&self.steps, root, vec![(Vec::new(), root)])
    }

    /// Locations only (for writes, which then take each with [`get_mut`]).
    pub fn locations(&self, root: &JsonValue) -> Vec<Loc> {
        self.select(root).into_iter().map(|(l, _)| l).collect()
    }
}

/// The value at `loc`.
pub fn get_mut<'a>(root: &'a mut JsonValue, loc: &[Seg]) -> Option<&'a mut JsonValue> {
    let mut cur = root;
    for seg in loc {
        cur = match (cur, seg) {
            (JsonValue::Object(o), Seg::Key(k)) => o.get_mut(k)?,
            (JsonValue::Array(a), Seg::Index(i)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Removes the values at `locs`: a location inside another removed one is
/// dropped, and array elements go from the highest index down so the others stay
/// valid. Returns how many were removed.
pub fn remove_all(root: &mut JsonValue, mut locs: Vec<Loc>) -> usize {
    locs.sort();
    locs.dedup();
    // Sorted, a location's descendants follow it directly.
    let mut kept: Vec<Loc> = Vec::with_capacity(locs.len());
    for l in locs {
        if kept.last().is_some_and(|k| l.starts_with(k)) {
            continue;
        }
        kept.push(l);
    }
    let mut removed = 0;
    for l in kept.iter().rev() {
        let Some((last, parent)) = l.split_last() else {
            continue;
        };
        let done = match (get_mut(root, parent), last) {
            (Some(JsonValue::Object(o)), Seg::Key(k)) => o.shift_remove(k).is_some(),
            (Some(JsonValue::Array(a)), Seg::Index(i)) if *i < a.len() => {
                a.remove(*i);
                true
            }
            _ => false,
        };
        removed += done as usize;
    }
    removed
}

fn run_steps<'a>(
    steps: &[Step],
    root: &'a JsonValue,
    mut cur: Vec<(Loc, &'a JsonValue)>,
) -> Vec<(Loc, &'a JsonValue)> {
    for step in steps {
        let mut next = Vec::new();
        for (loc, node) in &cur {
            match step {
                Step::Child(sel) => apply(sel, loc, node, root, &mut next),
                Step::Descend(sel) => descend(sel, loc, node, root, &mut next),
            }
        }
        cur = next;
        if cur.is_empty() {
            break;
        }
    }
    cur
}

fn descend<'a>(
    sel: &Sel,
    loc: &Loc,
    node: &'a JsonValue,
    root: &'a JsonValue,
    out: &mut Vec<(Loc, &'a JsonValue)>,
) {
    match node {
        JsonValue::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                descend(sel, &child(loc, Seg::Index(i)), c, root, out);
            }
        }
        JsonValue::Object(o) => {
            for (k, c) in o {
                descend(sel, &child(loc, Seg::Key(k.clone())), c, root, out);
            }
        }
        _ => {}
    }
    apply(sel, loc, node, root, out);
}

fn child(loc: &Loc, seg: Seg) -> Loc {
    let mut l = Vec::with_capacity(loc.len() + 1);
    l.extend_from_slice(loc);
    l.push(seg);
    l
}

fn norm_index(i: i64, len: usize) -> Option<usize> {
    let len = len as i64;
    let i = if i < 0 { len + i } else { i };
    (0..len).contains(&i).then_some(i as usize)
}

fn apply<'a>(
    sel: &Sel,
    loc: &Loc,
    node: &'a JsonValue,
    root: &'a JsonValue,
    out: &mut Vec<(Loc, &'a JsonValue)>,
) {
    match (sel, node) {
        (Sel::Name(n), JsonValue::Object(o)) => {
            if let Some(v) = o.get(n) {
                out.push((child(loc, Seg::Key(n.clone())), v));
            }
        }
        (Sel::Wild, JsonValue::Object(o)) => {
            for (k, v) in o {
                out.push((child(loc, Seg::Key(k.clone())), v));
            }
        }
        (Sel::Wild, JsonValue::Array(a)) => {
            for (i, v) in a.iter().enumerate() {
                out.push((child(loc, Seg::Index(i)), v));
            }
        }
        (Sel::Index(i), JsonValue::Array(a)) => {
            if let Some(i) = norm_index(*i, a.len()) {
                out.push((child(loc, Seg::Index(i)), &a[i]));
            }
        }
        (Sel::Slice(start, end, step), JsonValue::Array(a)) => {
            for i in slice_indexes(*start, *end, *step, a.len()) {
                out.push((child(loc, Seg::Index(i)), &a[i]));
            }
        }
        (Sel::Union(items), _) => {
            for s in items {
                apply(s, loc, node, root, out);
            }
        }
        (Sel::Filter(e), JsonValue::Array(a)) => {
            for (i, v) in a.iter().enumerate() {
                if eval(e, v, root) {
                    out.push((child(loc, Seg::Index(i)), v));
                }
            }
        }
        (Sel::Filter(e), JsonValue::Object(o)) => {
            for (k, v) in o {
                if eval(e, v, root) {
                    out.push((child(loc, Seg::Key(k.clone())), v));
                }
            }
        }
        _ => {}
    }
}

/// RFC 9535's slice: Python semantics, negative bounds from the end.
fn slice_indexes(start: Option<i64>, end: Option<i64>, step: i64, len: usize) -> Vec<usize> {
    let len = len as i64;
    let norm = |i: i64| if i >= 0 { i } else { len + i };
    let mut v = Vec::new();
    match step.cmp(&0) {
        Ordering::Equal => {}
        Ordering::Greater => {
            let lo = norm(start.unwrap_or(0)).clamp(0, len);
            let hi = norm(end.unwrap_or(len)).clamp(0, len);
            let mut i = lo;
            while i < hi {
                v.push(i as usize);
                i += step;
            }
        }
        Ordering::Less => {
            let hi = norm(start.unwrap_or(len - 1)).clamp(-1, len - 1);
            let lo = end.map_or(-1, |e| norm(e).clamp(-1, len - 1));
            let mut i = hi;
            while i > lo {
                v.push(i as usize);
                i += step;
            }
        }
    }
    v
}

fn eval(e: &Expr, cur: &JsonValue, root: &JsonValue) -> bool {
    match e {
        Expr::Or(a, b) => eval(a, cur, root) || eval(b, cur, root),
        Expr::And(a, b) => eval(a, cur, root) && eval(b, cur, root),
        Expr::Not(a) => !eval(a, cur, root),
        Expr::Exists(o) => operand(o, cur, root).is_some(),
        Expr::Cmp(a, op, b) => {
            let (x, y) = (operand(a, cur, root), operand(b, cur, root));
            match op {
                CmpOp::Eq => eq_opt(x, y),
                CmpOp::Ne => !eq_opt(x, y),
                CmpOp::Lt => less(x, y),
                CmpOp::Gt => less(y, x),
                CmpOp::Le => less(x, y) || (x.is_some() && eq_opt(x, y)),
                CmpOp::Ge => less(y, x) || (x.is_some() && eq_opt(x, y)),
            }
        }
    }
}

fn eq_opt(x: Option<&JsonValue>, y: Option<&JsonValue>) -> bool {
    match (x, y) {
        (Some(a), Some(b)) => json_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

fn less(x: Option<&JsonValue>, y: Option<&JsonValue>) -> bool {
    match (x, y) {
        (Some(JsonValue::Str(a)), Some(JsonValue::Str(b))) => a < b,
        (Some(a), Some(b)) => match (a.as_f64(), b.as_f64()) {
            (Some(p), Some(q)) => p < q,
            _ => false,
        },
        _ => false,
    }
}

/// An operand's value: a path's first match, or the literal.
fn operand<'a>(o: &'a Operand, cur: &'a JsonValue, root: &'a JsonValue) -> Option<&'a JsonValue> {
    match o {
        Operand::Lit(v) => Some(v),
        Operand::Rel(steps) => run_steps(steps, root, vec![(Vec::new(), cur)])
            .into_iter()
            .next()
            .map(|(_, v)| v),
        Operand::Abs(steps) => run_steps(steps, root, vec![(Vec::new(), root)])
            .into_iter()
            .next()
            .map(|(_, v)| v),
    }
}

struct Parser<'s> {
    s: &'s [u8],
    pos: usize,
}

type PResult<T> = Result<T, ()>;

/// Bytes that end a dotted name.
fn ends_name(b: u8) -> bool {
    matches!(
        b,
        b'.' | b'['
            | b']'
            | b'('
            | b')'
            | b'='
            | b'!'
            | b'<'
            | b'>'
            | b'&'
            | b'|'
            | b','
            | b'\''
            | b'"'
            | b'~'
    ) || b.is_ascii_whitespace()
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn peek_at(&self, n: usize) -> Option<u8> {
        self.s.get(self.pos + n).copied()
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, b: u8) -> PResult<()> {
        self.ws();
        if self.eat(b) {
            Ok(())
        } else {
            Err(())
        }
    }

    /// Steps until something that is not a step (the end, or inside a filter an
    /// operator or a closing bracket).
    fn steps(&mut self, depth: usize) -> PResult<Vec<Step>> {
        let mut steps = Vec::new();
        loop {
            match (self.peek(), self.peek_at(1)) {
                (Some(b'.'), Some(b'.')) => {
                    self.pos += 2;
                    let sel = match self.peek() {
                        Some(b'[') => self.bracket(depth)?,
                        Some(b'*') => {
                            self.pos += 1;
                            Sel::Wild
                        }
                        _ => Sel::Name(self.name()?),
                    };
                    steps.push(Step::Descend(sel));
                }
                (Some(b'.'), _) => {
                    self.pos += 1;
                    if self.eat(b'*') {
                        steps.push(Step::Child(Sel::Wild));
                    } else {
                        steps.push(Step::Child(Sel::Name(self.name()?)));
                    }
                }
                (Some(b'['), _) => steps.push(Step::Child(self.bracket(depth)?)),
                _ => return Ok(steps),
            }
        }
    }

    fn name(&mut self) -> PResult<String> {
        let start = self.pos;
        while self.peek().is_some_and(|b| !ends_name(b)) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(());
        }
        String::from_utf8(self.s[start..self.pos].to_vec()).map_err(|_| ())
    }

    fn bracket(&mut self, depth: usize) -> PResult<Sel> {
        self.pos += 1; // '['
        self.ws();
        if self.eat(b'*') {
            self.expect(b']')?;
            return Ok(Sel::Wild);
        }
        if self.eat(b'?') {
            self.ws();
            let e = self.or(depth + 1)?;
            self.expect(b']')?;
            return Ok(Sel::Filter(Box::new(e)));
        }
        let mut items = Vec::new();
        loop {
            self.ws();
            items.push(self.bracket_item()?);
            self.ws();
            if self.eat(b',') {
                continue;
            }
            self.expect(b']')?;
            break;
        }
        Ok(if items.len() == 1 {
            items.swap_remove(0)
        } else {
            Sel::Union(items)
        })
    }

    fn bracket_item(&mut self) -> PResult<Sel> {
        if matches!(self.peek(), Some(b'\'' | b'"')) {
            return Ok(Sel::Name(self.quoted()?));
        }
        let first = self.opt_int()?;
        self.ws();
        if !self.eat(b':') {
            return first.map(Sel::Index).ok_or(());
        }
        self.ws();
        let end = self.opt_int()?;
        self.ws();
        let step = if self.eat(b':') {
            self.ws();
            self.opt_int()?.unwrap_or(1)
        } else {
            1
        };
        Ok(Sel::Slice(first, end, step))
    }

    fn opt_int(&mut self) -> PResult<Option<i64>> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        if self.pos == start {
            return Ok(None);
        }
        std::str::from_utf8(&self.s[start..self.pos])
            .ok()
            .and_then(|t| t.parse().ok())
            .map(Some)
            .ok_or(())
    }

    fn quoted(&mut self) -> PResult<String> {
        let q = self.peek().ok_or(())?;
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            let b = self.peek().ok_or(())?;
            self.pos += 1;
            match b {
                b'\\' => {
                    let e = self.peek().ok_or(())?;
                    self.pos += 1;
                    out.push(match e {
                        b'n' => b'\n',
                        b't' => b'\t',
                        b'r' => b'\r',
                        other => other,
                    });
                }
                b if b == q => break,
                b => out.push(b),
            }
        }
        String::from_utf8(out).map_err(|_| ())
    }

    fn or(&mut self, depth: usize) -> PResult<Expr> {
        if depth > MAX_EXPR_DEPTH {
            return Err(());
        }
        let mut e = self.and(depth)?;
        loop {
            self.ws();
            if self.peek() == Some(b'|') && self.peek_at(1) == Some(b'|') {
                self.pos += 2;
                e = Expr::Or(Box::new(e), Box::new(self.and(depth)?));
            } else {
                return Ok(e);
            }
        }
    }

    fn and(&mut self, depth: usize) -> PResult<Expr> {
        let mut e = self.unary(depth)?;
        loop {
            self.ws();
            if self.peek() == Some(b'&') && self.peek_at(1) == Some(b'&') {
                self.pos += 2;
                e = Expr::And(Box::new(e), Box::new(self.unary(depth)?));
            } else {
                return Ok(e);
            }
        }
    }

    fn unary(&mut self, depth: usize) -> PResult<Expr> {
        self.ws();
        if self.peek() == Some(b'!') && self.peek_at(1) != Some(b'=') {
            self.pos += 1;
            if depth + 1 > MAX_EXPR_DEPTH {
                return Err(());
            }
            return Ok(Expr::Not(Box::new(self.unary(depth + 1)?)));
        }
        if self.eat(b'(') {
            let e = self.or(depth + 1)?;
            self.expect(b')')?;
            return Ok(e);
        }
        let left = self.operand(depth)?;
        self.ws();
        let op = match (self.peek(), self.peek_at(1)) {
            (Some(b'='), Some(b'=')) => Some((CmpOp::Eq, 2)),
            (Some(b'!'), Some(b'=')) => Some((CmpOp::Ne, 2)),
            (Some(b'<'), Some(b'=')) => Some((CmpOp::Le, 2)),
            (Some(b'>'), Some(b'=')) => Some((CmpOp::Ge, 2)),
            (Some(b'<'), _) => Some((CmpOp::Lt, 1)),
            (Some(b'>'), _) => Some((CmpOp::Gt, 1)),
            _ => None,
        };
        match op {
            Some((op, n)) => {
                self.pos += n;
                self.ws();
                let right = self.operand(depth)?;
                Ok(Expr::Cmp(left, op, right))
            }
            None => match left {
                Operand::Lit(_) => Err(()),
                path => Ok(Expr::Exists(path)),
            },
        }
    }

    fn operand(&mut self, depth: usize) -> PResult<Operand> {
        match self.peek().ok_or(())? {
            b'@' => {
                self.pos += 1;
                Ok(Operand::Rel(self.steps(depth)?))
            }
            b'$' => {
                self.pos += 1;
                Ok(Operand::Abs(self.steps(depth)?))
            }
            b'\'' | b'"' => Ok(Operand::Lit(JsonValue::Str(self.quoted()?))),
            _ => {
                let start = self.pos;
                while self
                    .peek()
                    .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.'))
                {
                    self.pos += 1;
                }
                let lit = JsonValue::parse(&self.s[start..self.pos]).map_err(|_| ())?;
                match lit {
                    JsonValue::Array(_) | JsonValue::Object(_) => Err(()),
                    v => Ok(Operand::Lit(v)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(s: &str) -> JsonValue {
        JsonValue::parse(s.as_bytes()).unwrap()
    }

    fn sel(path: &str, d: &JsonValue) -> String {
        let p = JsonPath::parse(path.as_bytes()).unwrap();
        let vals: Vec<JsonValue> = p.select(d).into_iter().map(|(_, v)| v.clone()).collect();
        JsonValue::Array(vals).to_text()
    }

    #[test]
    fn jsonpath_selectors() {
        let d = doc(r#"{"a":2,"b":3,"nested":{"a":4,"b":null},"arr":[1,2,3,4]}"#);
        assert_eq!(sel("$..b", &d), "[null,3]");
        assert_eq!(sel("$..a", &d), "[4,2]");
        assert_eq!(sel("$.arr[*]", &d), "[1,2,3,4]");
        assert_eq!(sel("$.arr[-1]", &d), "[4]");
        assert_eq!(sel("$.arr[1:3]", &d), "[2,3]");
        assert_eq!(sel("$.arr[::-1]", &d), "[4,3,2,1]");
        assert_eq!(sel("$.arr[0,2]", &d), "[1,3]");
        assert_eq!(sel("$.arr[?(@>1)]", &d), "[2,3,4]");
        assert_eq!(sel("$.arr[?@>1 && @<4]", &d), "[2,3]");
        assert_eq!(sel("$['nested'].a", &d), "[4]");
        assert!(sel("$.*", &d).len() > 2);
        assert_eq!(sel("$.missing", &d), "[]");
        let books = doc(r#"{"b":[{"p":5,"t":"x"},{"p":15,"t":"y"},{"t":"z"}]}"#);
        assert_eq!(sel("$.b[?(@.p>10)].t", &books), r#"["y"]"#);
        assert_eq!(sel("$.b[?(@.p)].t", &books), r#"["x","y"]"#);
        assert_eq!(sel("$.b[?(!@.p || @.t=='x')].t", &books), r#"["x","z"]"#);
        assert_eq!(sel("$.b[?(@.p==$.b[0].p)].t", &books), r#"["x"]"#);
    }

    #[test]
    fn legacy_paths() {
        let d = doc(r#"{"a":{"b":[10,{"c":1}]}}"#);
        for (p, want) in [
            (".", r#"[{"a":{"b":[10,{"c":1}]}}]"#),
            (".a.b[1].c", "[1]"),
            ("a.b[0]", "[10]"),
            ("a[\"b\"][0]", "[10]"),
        ] {
            let path = JsonPath::parse(p.as_bytes()).unwrap();
            assert!(path.legacy);
            assert_eq!(sel(p, &d), want, "{p}");
        }
        assert!(!JsonPath::parse(b"$").unwrap().legacy);
        assert!(JsonPath::parse(b"$.a[").is_err());
        assert!(JsonPath::parse(b"$.a]").is_err());
        assert!(JsonPath::parse(b"$[?(@.a ==)]").is_err());
        let deep = format!("$[?{}@{}]", "(".repeat(1000), ")".repeat(1000));
        assert!(JsonPath::parse(deep.as_bytes()).is_err());
    }

    #[test]
    fn removing_nested_and_shifting_locations() {
        let mut d = doc(r#"{"a":1,"nested":{"a":2,"b":3},"arr":[{"a":1},2,{"a":3}]}"#);
        let p = JsonPath::parse(b"$..a").unwrap();
        let locs = p.locations(&d);
        assert_eq!(remove_all(&mut d, locs), 4);
        let mut d2 = doc("[1,2,3,4,5]");
        let locs = JsonPath::parse(b"$[?(@>1)]").unwrap().locations(&d2);
        assert_eq!(remove_all(&mut d2, locs), 4);
        assert_eq!(d2.to_text(), "[1]");
        let mut d3 = doc(r#"{"x":{"x":{"x":1}}}"#);
        let locs = JsonPath::parse(b"$..x").unwrap().locations(&d3);
        assert_eq!(remove_all(&mut d3, locs), 1);
        assert_eq!(d3.to_text(), "{}");
    }
}
