//! The argument cursor every handler reads its arguments through. Arity has already
//! been checked by the dispatcher, so a missing argument here means a malformed
//! option list and is reported as a syntax error.

use bytes::Bytes;

use crate::error::CmdError;
use crate::num;

pub struct Args<'a> {
    argv: &'a [Bytes],
    pos: usize,
}

impl<'a> Args<'a> {
    /// A cursor over `argv` starting at `pos` (1 for commands, 2 for subcommands).
    pub fn new(argv: &'a [Bytes], pos: usize) -> Self {
        Args { argv, pos }
    }

    pub fn remaining(&self) -> usize {
        self.argv.len().saturating_sub(self.pos)
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn peek(&self) -> Option<&'a Bytes> {
        self.argv.get(self.pos)
    }

    pub fn next_bytes(&mut self) -> Result<&'a Bytes, CmdError> {
        let arg = self.argv.get(self.pos).ok_or(CmdError::Syntax)?;
        self.pos += 1;
        Ok(arg)
    }

    /// The next argument as an owned `Bytes` that does not pin the connection's read
    /// buffer: use this for anything that is stored in the keyspace.
    pub fn next_owned(&mut self) -> Result<Bytes, CmdError> {
        Ok(Bytes::copy_from_slice(self.next_bytes()?))
    }

    pub fn next_str(&mut self) -> Result<&'a str, CmdError> {
        std::str::from_utf8(self.next_bytes()?).map_err(|_| CmdError::Syntax)
    }

    pub fn next_i64(&mut self) -> Result<i64, CmdError> {
        num::parse_i64(self.next_bytes()?).ok_or(CmdError::NotInteger)
    }

    pub fn next_u64(&mut self) -> Result<u64, CmdError> {
        let n = self.next_i64()?;
        u64::try_from(n).map_err(|_| CmdError::NotInteger)
    }

    pub fn next_f64(&mut self) -> Result<f64, CmdError> {
        num::parse_f64(self.next_bytes()?).ok_or(CmdError::NotFloat)
    }

    /// The next argument upper-cased, for option keywords.
    pub fn next_upper(&mut self) -> Result<String, CmdError> {
        Ok(String::from_utf8_lossy(self.next_bytes()?).to_ascii_uppercase())
    }

    /// Consumes the next argument if it equals `word`, ignoring case.
    pub fn flag(&mut self, word: &str) -> bool {
        match self.peek() {
            Some(a) if a.eq_ignore_ascii_case(word.as_bytes()) => {
                self.pos += 1;
                true
            }
            _ => false,
        }
    }

    /// Every argument not yet consumed.
    pub fn rest(&mut self) -> &'a [Bytes] {
        let rest = self.argv.get(self.pos..).unwrap_or(&[]);
        self.pos = self.argv.len();
        rest
    }

    /// Errors with `ERR syntax error` if arguments are left over.
    pub fn finish(&self) -> Result<(), CmdError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(CmdError::Syntax)
        }
    }
}
