//! Server-side Lua scripting environment (issue #19): sandboxed Lua 5.1 states
//! (one per thread, see `per_thread`) with Redis 7.2's globals, the `redis.*` API, and the bundled libraries
//! (`cjson`, `cmsgpack`, `bit`, `struct`), all reimplemented in Rust on top of
//! mlua's safe API.
//!
//! The command engine compiles scripts into a [`LuaEnv`] by SHA-1 and runs them
//! with a [`ScriptHost`] that executes `redis.call` commands.

mod bit;
pub mod cache;
mod cjson;
mod cmsgpack;
mod convert;
mod env;
pub mod functions;
pub mod host;
mod per_thread;
mod shebang;
mod structlib;
#[cfg(test)]
mod tests;

pub use env::{LuaEnv, DEFAULT_MEMORY_LIMIT, HOOK_INSTRUCTIONS, REDIS_VERSION, REDIS_VERSION_NUM};
pub use shebang::parse_shebang;
pub use tidewire_resp::{Protocol, Reply};

/// Flags from a `#!lua flags=...` shebang (Redis 7), plus Upstash's `allow-key-locking`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScriptFlags {
    /// The script started with a `#!lua` shebang (no EVAL compatibility mode).
    pub shebang: bool,
    pub no_writes: bool,
    pub allow_oom: bool,
    pub allow_stale: bool,
    pub no_cluster: bool,
    pub allow_cross_slot_keys: bool,
    pub allow_key_locking: bool,
}

/// SHA-1 hex (lowercase) of a script body, as Redis names scripts.
pub fn sha1_hex(body: &[u8]) -> String {
    use sha1::{Digest, Sha1};
    let digest = Sha1::digest(body);
    let mut out = String::with_capacity(40);
    for b in digest.iter() {
        out.push(char::from(b"0123456789abcdef"[(b >> 4) as usize]));
        out.push(char::from(b"0123456789abcdef"[(b & 15) as usize]));
    }
    out
}

/// What a running script asks of the server. Implemented by the command engine.
/// A run owns its host (`'static`): the Lua state keeps it where the functions it
/// was built with can reach it, so none has to be made per run.
pub trait ScriptHost: std::any::Any + Send {
    /// Runs one command for redis.call / redis.pcall (argv[0] is the command name, as
    /// given). The reply's errors come back as `Reply::Error(full line without '-')`.
    /// The reply must be in the protocol the script selected (last `set_resp`).
    fn call(&mut self, argv: &[bytes::Bytes]) -> Reply;
    /// Polled from an instruction-count hook (every [`HOOK_INSTRUCTIONS`] VM
    /// instructions). `Some(err)` aborts the script with that error line (SCRIPT KILL /
    /// shutdown); it is also where the host notices the script became slow (BUSY).
    fn interrupt(&mut self) -> Option<String>;
    /// redis.acl_check_cmd: `Err(error line)` for an unknown command, else whether the
    /// caller may run it.
    fn acl_check(&mut self, argv: &[bytes::Bytes]) -> Result<bool, String>;
    /// redis.setresp(): the protocol in which `call` must answer from now on in this
    /// run. `LuaEnv::run` calls it with `Resp2` before the script starts (Redis resets
    /// the script client to RESP2 for every run). Default: ignored.
    fn set_resp(&mut self, _resp: Protocol) {}
    /// redis.set_repl(flags) with the validated flags (0..=3: bit 1 = AOF, bit 2 =
    /// replicas). Default: ignored.
    fn set_repl(&mut self, _flags: u8) {}
}
