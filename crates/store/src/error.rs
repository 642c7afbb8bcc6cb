//! Every error text a command can reply with, in one place. The prefix (`ERR`,
//! `WRONGTYPE`, …) belongs to the variant; clients parse these byte for byte.

use tidewire_resp::Reply;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmdError {
    WrongType,
    NotInteger,
    NotFloat,
    Syntax,
    Overflow,
    NoSuchKey,
    IndexOutOfRange,
    /// `ERR invalid expire time in '<cmd>' command`.
    InvalidExpire(String),
    DbIndexOutOfRange,
    /// `ERR wrong number of arguments for '<cmd>' command`.
    WrongArity(String),
    NoAuth,
    /// `ERR min or max is not a float` and friends: full text after `ERR `.
    Err(String),
    /// A full error line including its own prefix (`NOSCRIPT …`, `BUSYKEY …`).
    Raw(String),
}

impl CmdError {
    pub fn err(msg: impl Into<String>) -> Self {
        CmdError::Err(msg.into())
    }

    pub fn raw(line: impl Into<String>) -> Self {
        CmdError::Raw(line.into())
    }

    pub fn text(&self) -> String {
        match self {
            CmdError::WrongType => {
                "WRONGTYPE Operation against a key holding the wrong kind of value".into()
            }
            CmdError::NotInteger => "ERR value is not an integer or out of range".into(),
            CmdError::NotFloat => "ERR value is not a valid float".into(),
            CmdError::Syntax => "ERR syntax error".into(),
            CmdError::Overflow => "ERR increment or decrement would overflow".into(),
            CmdError::NoSuchKey => "ERR no such key".into(),
            CmdError::IndexOutOfRange => "ERR index out of range".into(),
            CmdError::InvalidExpire(cmd) => format!("ERR invalid expire time in '{cmd}' command"),
            CmdError::DbIndexOutOfRange => "ERR DB index is out of range".into(),
            CmdError::WrongArity(cmd) => {
                format!("ERR wrong number of arguments for '{cmd}' command")
            }
            CmdError::NoAuth => "NOAUTH Authentication required.".into(),
            CmdError::Err(msg) => format!("ERR {msg}"),
            CmdError::Raw(line) => line.clone(),
        }
    }
}

impl From<CmdError> for Reply {
    fn from(e: CmdError) -> Reply {
        Reply::Error(e.text())
    }
}

impl std::fmt::Display for CmdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text())
    }
}

impl std::error::Error for CmdError {}

pub type CmdResult = Result<Reply, CmdError>;
