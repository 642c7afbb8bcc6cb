//! The command table: one spec per command (name, arity, flags, key positions,
//! handler), gathered from every family in `families::all()`. The dispatcher checks
//! existence, arity, flags and locks keys from this data once, so handlers never
//! count arguments; `COMMAND`, read-only access for REST tokens and script rules are
//! answered from the same data.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;

use bytes::Bytes;

use crate::args::Args;
use crate::error::CmdResult;
use crate::exec::Ctx;

pub type Handler = fn(&mut Ctx<'_>, &mut Args<'_>) -> CmdResult;

/// Command flags, as Redis names them (COMMAND INFO reports these names).
pub mod flag {
    pub const WRITE: u32 = 1 << 0;
    pub const READONLY: u32 = 1 << 1;
    pub const DENYOOM: u32 = 1 << 2;
    pub const ADMIN: u32 = 1 << 3;
    pub const PUBSUB: u32 = 1 << 4;
    pub const NOSCRIPT: u32 = 1 << 5;
    pub const BLOCKING: u32 = 1 << 6;
    pub const LOADING: u32 = 1 << 7;
    pub const STALE: u32 = 1 << 8;
    pub const FAST: u32 = 1 << 9;
    pub const NO_AUTH: u32 = 1 << 10;
    pub const NO_MULTI: u32 = 1 << 11;
    pub const ALLOW_BUSY: u32 = 1 << 12;
    pub const SKIP_MONITOR: u32 = 1 << 13;
    pub const SKIP_SLOWLOG: u32 = 1 << 14;
    /// Not a Redis flag: the command reads or writes the keyspace as a whole (KEYS,
    /// SCAN, FLUSHDB …) and so must hold every shard.
    pub const ALL_KEYS: u32 = 1 << 20;
    /// Not a Redis flag: the command is about the connection or the server and takes
    /// no keyspace lock at all.
    pub const NO_KEYSPACE: u32 = 1 << 21;
    /// Allowed while a RESP2 client is in subscribed mode.
    pub const SUBSCRIBED_OK: u32 = 1 << 22;
    /// Not queued by MULTI: runs immediately (EXEC, DISCARD, MULTI, WATCH, QUIT, RESET).
    pub const TX_CONTROL: u32 = 1 << 23;
    /// Not a Redis flag: a BLOCKING command that blocks only when asked to (XREAD
    /// … BLOCK); without the option it is an ordinary read, fine over REST.
    pub const BLOCKS_ON_OPTION: u32 = 1 << 24;
    /// A container whose subcommands ACL rules treat as first arguments, as Redis
    /// does for DEBUG (which has no subcommand table there): `+debug|digest` is
    /// a first-arg rule, accepted for any word.
    pub const ACL_FIRST_ARG: u32 = 1 << 25;
    /// May be called with no key at all (EVAL, FCALL with numkeys 0): COMMAND
    /// GETKEYS answers an empty list instead of an error.
    pub const NO_MANDATORY_KEYS: u32 = 1 << 26;
    /// Not a Redis flag: a Tidewire-native command (CL.THROTTLE, TW.*) that a
    /// Redis engine does not have; with `--engine` a node runs it there as a
    /// script of its own instead of forwarding it.
    pub const NATIVE: u32 = 1 << 27;
    /// Not a Redis flag: waits until the connection's earlier writes are
    /// replicated (WAIT). With `--engine` its client's writes reached each
    /// master over connections the node shares, so the node writes once more
    /// over the connection it waits on, which the wait then covers.
    pub const AFTER_OWN_WRITES: u32 = 1 << 28;
    /// Reported as `movablekeys` although its keys are at fixed positions: Redis
    /// finds SORT_RO's key with a procedure of its own, which marks it so.
    pub const MOVABLE_KEYS: u32 = 1 << 29;

    pub const NAMES: &[(u32, &str)] = &[
        (WRITE, "write"),
        (READONLY, "readonly"),
        (DENYOOM, "denyoom"),
        (ADMIN, "admin"),
        (PUBSUB, "pubsub"),
        (NOSCRIPT, "noscript"),
        (BLOCKING, "blocking"),
        (LOADING, "loading"),
        (STALE, "stale"),
        (FAST, "fast"),
        (NO_AUTH, "no_auth"),
        (NO_MULTI, "no_multi"),
        (ALLOW_BUSY, "allow_busy"),
        (SKIP_MONITOR, "skip_monitor"),
        (SKIP_SLOWLOG, "skip_slowlog"),
        (NO_MANDATORY_KEYS, "no_mandatory_keys"),
    ];
}

/// Where a command's keys are in its argument vector.
#[derive(Clone, Copy)]
pub enum Keys {
    None,
    /// Redis's legacy (first, last, step); a negative `last` counts from the end.
    Range {
        first: i32,
        last: i32,
        step: i32,
    },
    /// Positions computed from the arguments (ZUNIONSTORE's numkeys, XREAD's STREAMS).
    Custom(fn(&[Bytes]) -> Vec<usize>),
}

pub const fn keys(first: i32, last: i32, step: i32) -> Keys {
    Keys::Range { first, last, step }
}

pub const NO_KEYS: Keys = Keys::None;

impl Keys {
    /// Positions of the keys in `argv`; positions past the end are dropped.
    pub fn positions(&self, argv: &[Bytes]) -> Vec<usize> {
        match *self {
            Keys::None => Vec::new(),
            Keys::Range { first, last, step } => {
                if first <= 0 || argv.len() <= first as usize {
                    return Vec::new();
                }
                let last = if last < 0 {
                    argv.len() as i32 + last
                } else {
                    last.min(argv.len() as i32 - 1)
                };
                let step = step.max(1);
                (first..=last)
                    .step_by(step as usize)
                    .map(|i| i as usize)
                    .collect()
            }
            Keys::Custom(f) => f(argv).into_iter().filter(|p| *p < argv.len()).collect(),
        }
    }

    /// The position of the only key, for specs that name exactly one (GET, SET,
    /// INCR …): lets the dispatcher lock without collecting positions.
    pub fn single(&self, argv: &[Bytes]) -> Option<usize> {
        match *self {
            Keys::Range { first, last, .. }
                if first > 0 && first == last && (first as usize) < argv.len() =>
            {
                Some(first as usize)
            }
            _ => None,
        }
    }

    pub fn legacy_triple(&self) -> (i64, i64, i64) {
        match *self {
            Keys::None => (0, 0, 0),
            Keys::Range { first, last, step } => (first as i64, last as i64, step as i64),
            Keys::Custom(_) => (0, 0, 0),
        }
    }
}

pub struct CommandSpec {
    pub name: &'static str,
    pub arity: i32,
    pub flags: u32,
    pub keys: Keys,
    pub handler: Handler,
    /// Redis's command group (`string`, `generic`, `server`, …) for COMMAND DOCS.
    pub group: &'static str,
    pub summary: &'static str,
    pub subcommands: Vec<CommandSpec>,
    /// What a BLOCKING command waits for.
    pub block_kind: crate::blocking::BlockKind,
    /// Which arguments are pub/sub channels (ACL channel permissions).
    pub channels: ChannelArgs,
    /// What the command does to each key, for ACL read/write key permissions.
    pub key_roles: KeyRoles,
    /// Where a cluster front sends the command without keys, and how it merges
    /// the answers (Redis's `request_policy` / `response_policy` tips).
    pub policy: Policy,
    /// Flags the command runs with that Redis's table does not give it: COMMAND
    /// INFO and the ACL categories leave them out (WAIT and WAITAOF block, on the
    /// replicas and the AOF, without being `blocking` commands in Redis).
    pub unlisted_flags: u32,
    /// Redis's ACL category for the command when it is not its group's (WAIT and
    /// WAITAOF are documented in `generic` but are `@connection` commands).
    pub acl_category: Option<&'static str>,
    /// The config that must allow the command (Redis's protected commands: DEBUG
    /// by `enable-debug-command`, MODULE LOAD by `enable-module-command`): `yes`,
    /// or `local` for a client on the loopback; `no`, the default, refuses it.
    pub protected_by: Option<&'static str>,
}

/// Redis's request and response policy tips, which tell a cluster client what
/// to do with a command that has no key: a node on a Redis Cluster
/// (`--engine`) routes by them.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Policy {
    pub request: RequestPolicy,
    pub response: ResponsePolicy,
}

/// `request_policy`: which shards run a keyless command.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum RequestPolicy {
    /// Any one shard (or the slot's owner, for a command with keys).
    #[default]
    Default,
    /// Every master (`all_shards`; `all_nodes` too, as a front talks to masters).
    AllShards,
}

/// `response_policy`: how the shards' answers make one.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum ResponsePolicy {
    /// Arrays joined, as Redis's default for keyless commands (KEYS).
    #[default]
    Default,
    /// Integers added up (`agg_sum`: DBSIZE).
    AggSum,
    /// The same answer from every shard unless one fails (`all_succeeded`).
    AllSucceeded,
    /// Any shard's answer that is not nil: what Redis leaves `special` for
    /// RANDOMKEY.
    AnyNonNil,
    /// Arrays of 0/1 and-ed element by element (`agg_logical_and`: SCRIPT
    /// EXISTS is 1 only where every shard has the script).
    AggLogicalAnd,
    /// The smallest integer (`agg_min`: WAIT's replicas that acknowledged).
    AggMin,
}

/// What a command does to its keys: Redis 7's key-spec flags ([`key_flag`]), which
/// COMMAND INFO's key specs and COMMAND GETKEYSANDFLAGS report and from which the
/// `%R~` / `%W~` ACL patterns are checked.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum KeyRoles {
    /// Every key as the command's flags say: a write command's keys `RW update`, a
    /// read-only one's `RO access`, any other's `RW access update` (see
    /// [`KeyRoles::static_flags`]).
    ByFlags,
    /// Per key position, the last entry repeating: Redis's key specs in the order
    /// the command's keys are found.
    Each(&'static [u16]),
    /// `OW update`, or `RW access update` when a `GET` option follows the value
    /// (SET: Redis's variable flags).
    WriteAndReadIfGet,
    /// `RO access`, or `RW access update` when a `SET` or `INCRBY` operation is
    /// among the arguments (BITFIELD: Redis's variable flags).
    ReadAndWriteIfChanged,
}

impl KeyRoles {
    /// The flags COMMAND INFO declares, per key position (the last repeating).
    pub fn static_flags(self, command_flags: u32) -> Vec<u16> {
        use key_flag::*;
        match self {
            KeyRoles::ByFlags => vec![Self::by_flags(command_flags)],
            KeyRoles::Each(each) => each.to_vec(),
            KeyRoles::WriteAndReadIfGet | KeyRoles::ReadAndWriteIfChanged => {
                vec![RW | ACCESS | UPDATE | VARIABLE_FLAGS]
            }
        }
    }

    /// The flags of the key at position `i` among the keys of the call `argv`, its
    /// variable flags resolved as Redis resolves them for GETKEYSANDFLAGS and ACL.
    pub fn flags_at(self, command_flags: u32, i: usize, argv: &[Bytes]) -> u16 {
        use key_flag::*;
        let word_at = |from: usize, words: &[&[u8]]| {
            argv.iter()
                .skip(from)
                .any(|a| words.iter().any(|w| a.eq_ignore_ascii_case(w)))
        };
        match self {
            KeyRoles::WriteAndReadIfGet if word_at(3, &[b"get"]) => RW | ACCESS | UPDATE,
            KeyRoles::WriteAndReadIfGet => OW | UPDATE,
            KeyRoles::ReadAndWriteIfChanged if word_at(2, &[b"set", b"incrby"]) => {
                RW | ACCESS | UPDATE
            }
            KeyRoles::ReadAndWriteIfChanged => RO | ACCESS,
            KeyRoles::Each(each) => each.get(i).or(each.last()).copied().unwrap_or(RO),
            KeyRoles::ByFlags => Self::by_flags(command_flags),
        }
    }

    /// [`KeyRoles::ByFlags`]'s flags for a command with these command flags.
    fn by_flags(command_flags: u32) -> u16 {
        use key_flag::*;
        if command_flags & flag::WRITE != 0 {
            RW | UPDATE
        } else if command_flags & flag::READONLY != 0 {
            RO | ACCESS
        } else {
            RW | ACCESS | UPDATE
        }
    }
}

/// Redis 7's key-spec flags. One of `RO`/`RW`/`OW`/`RM` says how the key is opened;
/// `ACCESS` (the value is read or returned) needs ACL read permission, `UPDATE`,
/// `INSERT` and `DELETE` write permission, and a key with none of them (EXISTS,
/// TYPE, TOUCH) passes any pattern that matches it.
pub mod key_flag {
    pub const RO: u16 = 1;
    pub const RW: u16 = 1 << 1;
    pub const OW: u16 = 1 << 2;
    pub const RM: u16 = 1 << 3;
    pub const ACCESS: u16 = 1 << 4;
    pub const UPDATE: u16 = 1 << 5;
    pub const INSERT: u16 = 1 << 6;
    pub const DELETE: u16 = 1 << 7;
    pub const NOT_KEY: u16 = 1 << 8;
    pub const INCOMPLETE: u16 = 1 << 9;
    pub const VARIABLE_FLAGS: u16 = 1 << 10;

    /// Names in the order Redis prints them.
    pub const NAMES: [(u16, &str); 11] = [
        (RO, "RO"),
        (RW, "RW"),
        (OW, "OW"),
        (RM, "RM"),
        (ACCESS, "access"),
        (UPDATE, "update"),
        (INSERT, "insert"),
        (DELETE, "delete"),
        (NOT_KEY, "not_key"),
        (INCOMPLETE, "incomplete"),
        (VARIABLE_FLAGS, "variable_flags"),
    ];

    /// The names of `flags`, in Redis's order.
    pub fn names(flags: u16) -> impl Iterator<Item = &'static str> {
        NAMES
            .iter()
            .filter(move |(f, _)| flags & f != 0)
            .map(|(_, n)| *n)
    }

    /// Whether a key with these flags needs ACL read permission.
    pub fn reads(flags: u16) -> bool {
        flags & ACCESS != 0
    }

    /// Whether a key with these flags needs ACL write permission.
    pub fn writes(flags: u16) -> bool {
        flags & (UPDATE | INSERT | DELETE) != 0
    }
}

/// Where a pub/sub command's channels are, for ACL checks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ChannelArgs {
    None,
    /// The first argument (PUBLISH, SPUBLISH).
    First,
    /// Every argument (SUBSCRIBE, SSUBSCRIBE).
    All,
    /// Every argument is a pattern, allowed only as one of the user's own
    /// (PSUBSCRIBE).
    AllPatterns,
}

/// Declares a command in one line: `cmd("get", 2, READONLY | FAST, keys(1, 1, 1), get)`.
pub fn cmd(
    name: &'static str,
    arity: i32,
    flags: u32,
    keys: Keys,
    handler: Handler,
) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        flags,
        keys,
        handler,
        group: "generic",
        summary: "",
        subcommands: Vec::new(),
        block_kind: crate::blocking::BlockKind::List,
        channels: ChannelArgs::None,
        key_roles: KeyRoles::ByFlags,
        policy: Policy {
            request: RequestPolicy::Default,
            response: ResponsePolicy::Default,
        },
        unlisted_flags: 0,
        acl_category: None,
        protected_by: None,
    }
}

impl CommandSpec {
    pub fn group(mut self, group: &'static str) -> Self {
        self.group = group;
        self
    }

    pub fn summary(mut self, summary: &'static str) -> Self {
        self.summary = summary;
        self
    }

    /// Declares what a BLOCKING command waits for (lists unless told).
    pub fn blocks_on(mut self, kind: crate::blocking::BlockKind) -> Self {
        self.block_kind = kind;
        self
    }

    /// Declares what the command does to each key (see [`KeyRoles`]).
    pub fn key_roles(mut self, roles: KeyRoles) -> Self {
        self.key_roles = roles;
        self
    }

    /// Leaves `flags` out of COMMAND INFO and the ACL categories (see
    /// [`CommandSpec::unlisted_flags`]).
    pub fn unlisted(mut self, flags: u32) -> Self {
        self.unlisted_flags = flags;
        self
    }

    /// Declares Redis's ACL category where it is not the group's (see
    /// [`CommandSpec::acl_category`]).
    pub fn acl_category(mut self, category: &'static str) -> Self {
        self.acl_category = Some(category);
        self
    }

    /// Declares the config that must allow the command (see
    /// [`CommandSpec::protected_by`]).
    pub fn protected_by(mut self, config: &'static str) -> Self {
        self.protected_by = Some(config);
        self
    }

    /// Declares which arguments are channels (see [`ChannelArgs`]).
    pub fn channel_args(mut self, channels: ChannelArgs) -> Self {
        self.channels = channels;
        self
    }

    /// Declares Redis's request and response policy tips (see [`Policy`]).
    pub fn policy(mut self, request: RequestPolicy, response: ResponsePolicy) -> Self {
        self.policy = Policy { request, response };
        self
    }

    pub fn subs(mut self, subs: Vec<CommandSpec>) -> Self {
        self.subcommands = subs;
        self
    }

    pub fn has(&self, f: u32) -> bool {
        self.flags & f != 0
    }
}

#[derive(Default)]
pub struct CommandStats {
    /// Bumped by every worker on every call: spread so cores do not contend.
    pub calls: crate::counter::SpreadCounter,
    pub usec: crate::counter::SpreadCounter,
    pub rejected_calls: AtomicU64,
    pub failed_calls: AtomicU64,
    /// Where the server's latency histograms keep this command's family, set when
    /// they are made (before they record anything), so recording a call needs no
    /// lookup.
    pub latency_family: AtomicU32,
    /// Run times for `INFO latencystats` and `LATENCY HISTOGRAM`.
    pub latency: crate::latency_histogram::LatencyHistogram,
}

impl CommandStats {
    pub fn reset(&self) {
        self.calls.reset();
        self.usec.reset();
        self.rejected_calls.store(0, Ordering::Relaxed);
        self.failed_calls.store(0, Ordering::Relaxed);
        self.latency.reset();
    }
}

/// A registered command: its spec, statistics, and subcommands by lower-case name.
pub struct Command {
    pub spec: CommandSpec,
    /// `get`, or `client|list` for a subcommand.
    pub full_name: String,
    pub stats: CommandStats,
    /// Keyed by the lower-case name's bytes, so a lookup needs no UTF-8 check.
    pub subs: HashMap<Box<[u8]>, Command, ahash::RandomState>,
    pub is_sub: bool,
}

impl Command {
    fn new(mut spec: CommandSpec, parent: Option<&str>) -> Command {
        let full_name = match parent {
            Some(p) => format!("{p}|{}", spec.name),
            None => spec.name.to_string(),
        };
        let subs = std::mem::take(&mut spec.subcommands)
            .into_iter()
            .map(|s| (s.name.as_bytes().into(), Command::new(s, Some(spec.name))))
            .collect();
        Command {
            spec,
            full_name,
            stats: CommandStats::default(),
            subs,
            is_sub: parent.is_some(),
        }
    }

    pub fn has(&self, f: u32) -> bool {
        self.spec.flags & f != 0
    }

    pub fn is_write(&self) -> bool {
        self.has(flag::WRITE)
    }

    /// Whether `argc` arguments (command name included) satisfy the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let a = self.spec.arity;
        (a > 0 && argc == a as usize) || (a < 0 && argc >= a.unsigned_abs() as usize)
    }

    pub fn sub(&self, name: &[u8]) -> Option<&Command> {
        with_lower(name, |n| self.subs.get(n)).flatten()
    }
}

pub struct Registry {
    /// Keyed by the lower-case name's bytes, so a lookup needs no UTF-8 check.
    pub commands: HashMap<Box<[u8]>, Command, ahash::RandomState>,
}

impl Registry {
    fn build(specs: Vec<CommandSpec>) -> Registry {
        let mut commands = HashMap::default();
        for spec in specs {
            let name = spec.name.to_string();
            let prev = commands.insert(name.as_bytes().into(), Command::new(spec, None));
            assert!(prev.is_none(), "command {name} registered twice");
        }
        Registry { commands }
    }

    pub fn get(&self, name: &[u8]) -> Option<&Command> {
        with_lower(name, |n| self.commands.get(n)).flatten()
    }

    /// A command by its full name, `get` or `config|get` (COMMAND INFO and DOCS,
    /// LATENCY HISTOGRAM), in any case.
    pub fn by_full_name(&self, name: &[u8]) -> Option<&Command> {
        let mut parts = name.splitn(2, |b| *b == b'|');
        let top = self.get(parts.next()?)?;
        match parts.next() {
            Some(sub) => top.sub(sub),
            None => Some(top),
        }
    }

    /// The command whose statistics show a command's calls: itself, or the
    /// container of a subcommand that Redis has as arguments of one command
    /// (DEBUG, `ACL_FIRST_ARG`): `cmdstat_debug`, not `cmdstat_debug|sleep`.
    pub fn stats_owner<'a>(&'a self, c: &'a Command) -> &'a Command {
        if !c.is_sub {
            return c;
        }
        match c
            .full_name
            .split_once('|')
            .and_then(|(parent, _)| self.get(parent.as_bytes()))
        {
            Some(parent) if parent.has(flag::ACL_FIRST_ARG) => parent,
            _ => c,
        }
    }

    /// Every command and subcommand, for INFO commandstats and CONFIG RESETSTAT.
    pub fn all(&self) -> impl Iterator<Item = &Command> {
        self.commands
            .values()
            .flat_map(|c| std::iter::once(c).chain(c.subs.values()))
    }
}

/// Runs `f` on the lower-cased name without allocating (this is on every command's
/// path); names longer than any command are not looked up.
fn with_lower<R>(name: &[u8], f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    if name.len() > MAX_NAME_LEN {
        return None;
    }
    let mut buf = [0u8; MAX_NAME_LEN];
    let lower = &mut buf[..name.len()];
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    Some(f(lower))
}

/// Command names as the caller spelt them, byte for byte, with the commands they
/// resolved to: callers mostly repeat a few commands, and a hit skips lower-casing
/// and hashing the name (~200 instructions of an unpipelined SET's ~6,000). A
/// client keeps its last name ([`LastCommand`]); a thread's scripts keep the 16
/// they used lately (a BullMQ-like move-to-active calls eleven), replaced in turn.
/// A name of up to 16 bytes is compared as two words. Only commands without
/// subcommands are kept: for those the name alone decides.
pub struct RecentCommands<const N: usize = 16> {
    names: [(u128, u8); N],
    cmds: [Option<&'static Command>; N],
    next: usize,
}

/// The last command name a client sent (see [`RecentCommands`]).
pub type LastCommand = RecentCommands<1>;

impl<const N: usize> Default for RecentCommands<N> {
    fn default() -> Self {
        RecentCommands {
            names: [(0, 0); N],
            cmds: [None; N],
            next: 0,
        }
    }
}

impl<const N: usize> RecentCommands<N> {
    /// `name` zero-padded to 16 bytes, with its length; `None` when longer.
    fn key(name: &[u8]) -> Option<(u128, u8)> {
        let mut buf = [0u8; 16];
        buf.get_mut(..name.len())?.copy_from_slice(name);
        Some((u128::from_ne_bytes(buf), name.len() as u8))
    }

    pub fn get(&self, name: &[u8]) -> Option<&'static Command> {
        let key = Self::key(name)?;
        let at = self.names.iter().position(|k| *k == key)?;
        self.cmds[at]
    }

    pub fn set(&mut self, name: &[u8], cmd: &'static Command) {
        if cmd.is_sub || !cmd.subs.is_empty() {
            return;
        }
        let Some(key) = Self::key(name) else {
            return;
        };
        self.names[self.next] = key;
        self.cmds[self.next] = Some(cmd);
        self.next = (self.next + 1) % N;
    }
}

/// Longer than any command or subcommand name (checked by a test).
const MAX_NAME_LEN: usize = 32;

static REGISTRY: OnceLock<Registry> = OnceLock::new();

pub fn registry() -> &'static Registry {
    REGISTRY.get_or_init(|| Registry::build(crate::families::all()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_unique_lowercase_and_keys_consistent() {
        let reg = registry();
        for c in reg.all() {
            assert_eq!(
                c.spec.name,
                c.spec.name.to_ascii_lowercase(),
                "{}",
                c.full_name
            );
            assert!(c.spec.arity != 0, "{} has arity 0", c.full_name);
            if let Keys::Range { first, last, .. } = c.spec.keys {
                assert!(first >= 1, "{}", c.full_name);
                if c.spec.arity > 0 && last > 0 {
                    assert!(last < c.spec.arity, "{} key spec beyond arity", c.full_name);
                }
            }
            assert!(
                !(c.has(flag::WRITE) && c.has(flag::READONLY)),
                "{} both write and readonly",
                c.full_name
            );
            if !c.is_sub && c.subs.is_empty() {
                assert!(!c.spec.summary.is_empty(), "{} has no summary", c.full_name);
            }
        }
    }

    #[test]
    fn names_fit_the_lookup_buffer() {
        for c in registry().all() {
            assert!(c.spec.name.len() <= MAX_NAME_LEN, "{}", c.spec.name);
        }
    }

    #[test]
    fn key_positions() {
        let argv: Vec<Bytes> = ["mset", "a", "1", "b", "2"]
            .iter()
            .map(|s| Bytes::from(*s))
            .collect();
        assert_eq!(keys(1, -1, 2).positions(&argv), vec![1, 3]);
        assert_eq!(keys(1, 1, 1).positions(&argv), vec![1]);
        assert_eq!(keys(1, -1, 1).positions(&argv), vec![1, 2, 3, 4]);
        assert_eq!(keys(1, 1, 1).single(&argv), Some(1));
        assert_eq!(keys(2, 2, 1).single(&argv), Some(2));
        assert_eq!(keys(1, -1, 1).single(&argv), None);
        assert_eq!(keys(1, 2, 1).single(&argv), None);
        assert_eq!(keys(9, 9, 1).single(&argv), None);
    }

    #[test]
    fn last_command_is_reused_only_where_the_name_alone_decides() {
        use crate::testkit::{bulk, err, ok, TestClient};
        let mut t = TestClient::new();
        assert_eq!(t.run(&["SET", "k", "v"]), ok());
        let set = registry().get(b"set").unwrap();
        assert!(std::ptr::eq(
            t.client.last_command.get(b"SET").unwrap(),
            set
        ));
        // Another spelling is looked up (and cached) afresh; the arity still counts.
        assert!(t.client.last_command.get(b"set").is_none());
        assert_eq!(t.run(&["set", "k", "w"]), ok());
        assert_eq!(
            t.run(&["set", "k"]),
            err("ERR wrong number of arguments for 'set' command")
        );
        assert_eq!(t.run(&["get", "k"]), bulk("w"));
        // A container is never kept: its subcommand decides.
        assert!(matches!(
            t.run(&["CLIENT", "ID"]),
            tidewire_resp::Reply::Int(_)
        ));
        assert!(t.client.last_command.get(b"CLIENT").is_none());
        assert_eq!(t.run(&["CLIENT", "GETNAME"]), tidewire_resp::Reply::Null);
        let mut kept = LastCommand::default();
        kept.set(b"client", registry().get(b"client").unwrap());
        assert!(kept.get(b"client").is_none());
    }

    #[test]
    fn recent_commands_keep_sixteen_names_as_spelt() {
        let reg = registry();
        let mut recent: RecentCommands = RecentCommands::default();
        let names: Vec<&str> = reg
            .commands
            .iter()
            .filter(|(n, c)| c.subs.is_empty() && n.len() <= 16)
            .map(|(n, _)| std::str::from_utf8(n).unwrap())
            .take(17)
            .collect();
        assert_eq!(names.len(), 17);
        for n in &names[..16] {
            recent.set(n.as_bytes(), reg.get(n.as_bytes()).unwrap());
        }
        for n in &names[..16] {
            let hit = recent.get(n.as_bytes()).unwrap();
            assert!(std::ptr::eq(hit, reg.get(n.as_bytes()).unwrap()), "{n}");
            // Only the spelling it was kept under hits.
            assert!(
                recent.get(n.to_ascii_uppercase().as_bytes()).is_none(),
                "{n}"
            );
        }
        // A seventeenth name takes the oldest one's place.
        recent.set(names[16].as_bytes(), reg.get(names[16].as_bytes()).unwrap());
        assert!(recent.get(names[0].as_bytes()).is_none());
        assert!(recent.get(names[16].as_bytes()).is_some());
        assert!(recent.get(names[1].as_bytes()).is_some());
        // A prefix, an extension or an empty name is not a hit.
        let set = reg.get(b"set").unwrap();
        recent.set(b"set", set);
        assert!(recent.get(b"se").is_none());
        assert!(recent.get(b"setx").is_none());
        assert!(recent.get(b"").is_none());
        // Containers (their subcommand decides) and names over 16 bytes are not kept.
        recent.set(b"client", reg.get(b"client").unwrap());
        assert!(recent.get(b"client").is_none());
        let long = reg.get(b"georadiusbymember_ro").unwrap();
        recent.set(b"georadiusbymember_ro", long);
        assert!(recent.get(b"georadiusbymember_ro").is_none());
    }
}
