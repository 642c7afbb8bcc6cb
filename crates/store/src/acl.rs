//! ACL users, as Redis 7's ACL: who may log in, and which commands, keys and
//! channels each user may use.
//!
//! A user is built from Redis's rules (`on`, `>password`, `~pattern`, `%R~pattern`,
//! `&channel`, `+@category`, `-command`, `+command|subcommand`, `allkeys`, `reset`
//! …). Its command rules are kept as given, for ACL LIST / GETUSER, and resolved
//! once into the set of commands it may run. Every command is checked against the
//! client's user unless every user may do everything (the default: only the
//! `default` user, with every permission), which costs one relaxed load.
//!
//! The `default` user's password is `requirepass` while that is set (Redis keeps
//! them one: `CONFIG SET requirepass` sets it).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use sha2::{Digest, Sha256};

use crate::command::{flag, key_flag, registry, ChannelArgs, Command};
use crate::error::CmdError;
use crate::families::command_docs::acl_categories;
use crate::glob::glob_match;

/// Redis 7.2's ACL categories, in ACL CAT's order.
pub const CATEGORIES: &[&str] = &[
    "keyspace",
    "read",
    "write",
    "set",
    "sortedset",
    "list",
    "hash",
    "string",
    "bitmap",
    "hyperloglog",
    "geo",
    "stream",
    "pubsub",
    "admin",
    "fast",
    "slow",
    "blocking",
    "dangerous",
    "connection",
    "transaction",
    "scripting",
];

/// A key pattern and what it allows.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyPattern {
    pub pattern: Vec<u8>,
    pub read: bool,
    pub write: bool,
}

/// One user.
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub enabled: bool,
    pub nopass: bool,
    /// `sanitize-payload` (the default for every user) or `skip-sanitize-payload`:
    /// shown as Redis shows it; RESTORE payloads are always checked here.
    pub sanitize_payload: bool,
    /// SHA-256 of each password, in the order added.
    pub passwords: Vec<[u8; 32]>,
    /// The base of the command rules: `+@all` (true) or `-@all`.
    all_commands: bool,
    /// Command rules after the base, as given (lower case), for display.
    command_rules: Vec<String>,
    /// Full names (`get`, `config|get`) of the commands the rules allow.
    allowed: HashSet<String>,
    /// First arguments a command is allowed with though the command is not
    /// (`+select|0`, Redis 7's deprecated first-arg rules), lower case.
    first_args: BTreeMap<String, Vec<String>>,
    /// `None`: every key (`allkeys`, `~*`).
    keys: Option<Vec<KeyPattern>>,
    /// `None`: every channel (`allchannels`, `&*`).
    channels: Option<Vec<Vec<u8>>>,
    /// What `reset` (and a new user) starts channels with: `acl-pubsub-default`.
    pubsub_all_default: bool,
    /// Selectors (`(~key* +get)`): further sets of permissions, each with its own
    /// commands, keys and channels; a command runs if the user's own or any
    /// selector allows it whole. Selectors' own user fields are unused.
    pub selectors: Vec<User>,
}

impl User {
    /// A new user as `ACL SETUSER name` makes it: off, no passwords, no commands,
    /// no keys, no channels.
    pub fn new(name: &str) -> User {
        User {
            name: name.to_owned(),
            enabled: false,
            nopass: false,
            sanitize_payload: true,
            passwords: Vec::new(),
            all_commands: false,
            command_rules: Vec::new(),
            allowed: HashSet::new(),
            first_args: BTreeMap::new(),
            keys: Some(Vec::new()),
            channels: Some(Vec::new()),
            pubsub_all_default: false,
            selectors: Vec::new(),
        }
    }

    /// A new user under `acl-pubsub-default allchannels` (true) or `resetchannels`.
    pub fn with_pubsub_default(name: &str, all: bool) -> User {
        let mut u = User::new(name);
        u.pubsub_all_default = all;
        if all {
            u.channels = None;
        }
        u
    }

    /// The `default` user as a server starts with it: on, no password, everything.
    fn default_user() -> User {
        let mut u = User::new("default");
        for rule in ["on", "nopass", "allkeys", "allchannels", "+@all"] {
            let _ = u.apply(rule);
        }
        u
    }

    /// Whether the user may do everything (no check needed).
    fn unrestricted(&self) -> bool {
        self.enabled
            && self.keys.is_none()
            && self.channels.is_none()
            && self.all_commands
            && self.command_rules.is_empty()
    }

    /// Applies one rule; the error is Redis's reason text.
    pub fn apply(&mut self, rule: &str) -> Result<(), &'static str> {
        const SYNTAX: &str = "Syntax error";
        const UNKNOWN: &str = "Unknown command or category name in ACL";
        let lower = rule.to_ascii_lowercase();
        match lower.as_str() {
            "on" => self.enabled = true,
            "off" => self.enabled = false,
            "nopass" => {
                self.nopass = true;
                self.passwords.clear();
            }
            "resetpass" => {
                self.nopass = false;
                self.passwords.clear();
            }
            "allkeys" => self.keys = None,
            "resetkeys" => self.keys = Some(Vec::new()),
            "allchannels" => self.channels = None,
            "resetchannels" => self.channels = Some(Vec::new()),
            "allcommands" => self.set_base(true),
            "nocommands" => self.set_base(false),
            "reset" => {
                let channels = if self.pubsub_all_default {
                    "allchannels"
                } else {
                    "resetchannels"
                };
                for r in [
                    "resetpass",
                    "resetkeys",
                    channels,
                    "off",
                    "-@all",
                    "sanitize-payload",
                ] {
                    self.apply(r)?;
                }
            }
            "sanitize-payload" => self.sanitize_payload = true,
            "skip-sanitize-payload" => self.sanitize_payload = false,
            _ => {
                if let Some(pass) = rule.strip_prefix('>') {
                    let h = sha256(pass.as_bytes());
                    if !self.passwords.contains(&h) {
                        self.passwords.push(h);
                    }
                    self.nopass = false;
                } else if let Some(pass) = rule.strip_prefix('<') {
                    let h = sha256(pass.as_bytes());
                    let before = self.passwords.len();
                    self.passwords.retain(|p| *p != h);
                    if self.passwords.len() == before {
                        return Err(
                            "The password you are trying to remove from the user does not exist",
                        );
                    }
                } else if let Some(hex) = lower.strip_prefix('#') {
                    let h = parse_hash(hex).ok_or(
                        "The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters",
                    )?;
                    if !self.passwords.contains(&h) {
                        self.passwords.push(h);
                    }
                    self.nopass = false;
                } else if let Some(hex) = lower.strip_prefix('!') {
                    let h = parse_hash(hex).ok_or(
                        "The password hash must be exactly 64 characters and contain only lowercase hexadecimal characters",
                    )?;
                    let before = self.passwords.len();
                    self.passwords.retain(|p| *p != h);
                    if self.passwords.len() == before {
                        return Err(
                            "The password you are trying to remove from the user does not exist",
                        );
                    }
                } else if rule.starts_with('~') || rule.starts_with('%') {
                    let (read, write, pattern) = if let Some(p) = rule.strip_prefix('~') {
                        (true, true, p)
                    } else {
                        let (perms, p) = rule[1..].split_once('~').ok_or(SYNTAX)?;
                        let perms = perms.to_ascii_uppercase();
                        if perms.is_empty() || perms.chars().any(|c| c != 'R' && c != 'W') {
                            return Err(SYNTAX);
                        }
                        (perms.contains('R'), perms.contains('W'), p)
                    };
                    match &mut self.keys {
                        // `~*` again is no change.
                        None if pattern == "*" && read && write => {}
                        None => return Err("Adding a pattern after the * pattern (or the 'allkeys' flag) is not valid and does not have any effect. Try 'resetkeys' to start with an empty list of patterns"),
                        Some(_) if pattern == "*" && read && write => self.keys = None,
                        Some(list) => {
                            // `%R~foo %W~foo` is `~foo`.
                            match list.iter_mut().find(|p| p.pattern == pattern.as_bytes()) {
                                Some(p) => {
                                    p.read |= read;
                                    p.write |= write;
                                }
                                None => list.push(KeyPattern {
                                    pattern: pattern.as_bytes().to_vec(),
                                    read,
                                    write,
                                }),
                            }
                        }
                    }
                } else if let Some(pattern) = rule.strip_prefix('&') {
                    match &mut self.channels {
                        None if pattern == "*" => {}
                        None => return Err("Adding a pattern after the * pattern (or the 'allchannels' flag) is not valid and does not have any effect. Try 'resetchannels' to start with an empty list of channels"),
                        Some(_) if pattern == "*" => self.channels = None,
                        Some(list) => {
                            if !list.iter().any(|c| c == pattern.as_bytes()) {
                                list.push(pattern.as_bytes().to_vec());
                            }
                        }
                    }
                } else if let Some(body) = lower.strip_prefix('+').or(lower.strip_prefix('-')) {
                    let allow = lower.starts_with('+');
                    if body == "@all" {
                        self.set_base(allow);
                        return Ok(());
                    }
                    if let Some(cat) = body.strip_prefix('@') {
                        if !CATEGORIES.contains(&cat) {
                            return Err(UNKNOWN);
                        }
                    } else {
                        const FIRST_ARG: &str =
                            "Allowing first-arg of a subcommand is not supported";
                        let parts: Vec<&str> = body.split('|').collect();
                        let c = registry().get(parts[0].as_bytes()).ok_or(UNKNOWN)?;
                        let flat = c.subs.is_empty() || c.has(flag::ACL_FIRST_ARG);
                        match (parts.len(), flat) {
                            (1, _) => {}
                            // `+config|get` names a subcommand; more is a first-arg rule.
                            (2, false) => {
                                c.sub(parts[1].as_bytes()).ok_or(UNKNOWN)?;
                            }
                            (_, false) => return Err(FIRST_ARG),
                            // Redis 7's first-arg rule: `+select|0` allows SELECT 0.
                            (2, true) if allow => {
                                let args = self.first_args.entry(parts[0].to_owned()).or_default();
                                if !args.iter().any(|a| a == parts[1]) {
                                    args.push(parts[1].to_owned());
                                }
                                if !self.command_rules.contains(&lower) {
                                    self.command_rules.push(lower.clone());
                                }
                                return Ok(());
                            }
                            (2, true) => return Err(SYNTAX),
                            (_, true) => return Err(UNKNOWN),
                        }
                        // A rule for the whole command ends its first-arg rules.
                        if parts.len() == 1 && self.first_args.remove(parts[0]).is_some() {
                            let prefix = format!("+{}|", parts[0]);
                            self.command_rules.retain(|r| !r.starts_with(&prefix));
                        }
                    }
                    // A subcommand whose whole command a rule already allows needs no
                    // rule of its own (`+memory +memory|doctor` is `+memory`).
                    if let (true, Some((parent, _))) = (allow, body.split_once('|')) {
                        let last = self.command_rules.iter().rev().find(|r| &r[1..] == parent);
                        if last.is_some_and(|r| r.starts_with('+')) {
                            return Ok(());
                        }
                    }
                    // A later rule for the same command replaces an earlier one, and a
                    // rule for a whole command those for its subcommands.
                    let body = body.to_owned();
                    let sub_prefix = format!("{body}|");
                    self.command_rules
                        .retain(|r| r[1..] != body && !r[1..].starts_with(&sub_prefix));
                    self.command_rules.push(lower.clone());
                    self.resolve();
                } else {
                    return Err(SYNTAX);
                }
            }
        }
        Ok(())
    }

    fn set_base(&mut self, all: bool) {
        self.all_commands = all;
        self.command_rules.clear();
        self.first_args.clear();
        self.resolve();
    }

    /// Recomputes the set of allowed commands from the rules.
    fn resolve(&mut self) {
        self.allowed = registry()
            .all()
            .filter(|c| self.rules_allow(c))
            .map(|c| c.full_name.clone())
            .collect();
    }

    fn rules_allow(&self, c: &Command) -> bool {
        let mut allowed = self.all_commands;
        let parent = c.full_name.split('|').next().unwrap_or_default();
        for rule in &self.command_rules {
            let (sign, body) = rule.split_at(1);
            if self
                .first_args
                .contains_key(body.split('|').next().unwrap_or_default())
                && body.contains('|')
                && !c.is_sub
            {
                // A first-arg rule: checked with the arguments (`may_run`).
                continue;
            }
            let hits = match body.strip_prefix('@') {
                Some(cat) => acl_categories(c).iter().any(|k| k[1..] == *cat),
                None => body == c.full_name || (c.is_sub && body == parent),
            };
            if hits {
                allowed = sign == "+";
            }
        }
        allowed
    }

    pub fn may_run(&self, c: &Command, argv: &[Bytes]) -> bool {
        // First-arg rules are by the command's name (DEBUG's subcommands are its
        // first arguments).
        let name = c.full_name.split('|').next().unwrap_or_default();
        self.allowed.contains(&c.full_name)
            || self.first_args.get(name).is_some_and(|args| {
                argv.get(1)
                    .is_some_and(|a| args.iter().any(|x| x.as_bytes().eq_ignore_ascii_case(a)))
            })
    }

    /// Whether this user, or one of its selectors that allows the command, may
    /// read every key (`allkeys`, `~*` or `%R~*`): what SORT's BY and GET patterns
    /// need, since the keys they read are not known beforehand.
    pub fn reads_every_key(&self, c: &Command, argv: &[Bytes]) -> bool {
        let reads_all = |u: &User| {
            u.keys
                .as_ref()
                .is_none_or(|list| list.iter().any(|p| p.read && p.pattern == b"*"))
        };
        std::iter::once(self)
            .chain(self.selectors.iter())
            .any(|u| u.may_run(c, argv) && reads_all(u))
    }

    fn key_allowed(&self, key: &[u8], read: bool, write: bool) -> bool {
        match &self.keys {
            None => true,
            Some(list) => list.iter().any(|p| {
                (!read || p.read) && (!write || p.write) && glob_match(&p.pattern, key, false)
            }),
        }
    }

    /// Whether a subscription the client holds is still allowed (a pattern
    /// subscription must be one of the user's patterns).
    pub fn subscription_allowed(&self, kind: crate::pubsub::Kind, name: &[u8]) -> bool {
        let literal = kind == crate::pubsub::Kind::Pattern;
        self.channel_allowed(name, literal)
            || self
                .selectors
                .iter()
                .any(|s| s.channel_allowed(name, literal))
    }

    fn channel_allowed(&self, channel: &[u8], literal_pattern: bool) -> bool {
        match &self.channels {
            None => true,
            Some(list) => list.iter().any(|p| {
                if literal_pattern {
                    p == channel
                } else {
                    glob_match(p, channel, false)
                }
            }),
        }
    }

    /// The commands part of the description: `+@all` or `-@all`, then the rules.
    pub fn commands_text(&self) -> String {
        let mut s = String::from(if self.all_commands { "+@all" } else { "-@all" });
        for r in &self.command_rules {
            s.push(' ');
            s.push_str(r);
        }
        s
    }

    pub fn keys_text(&self) -> String {
        match &self.keys {
            None => "~*".into(),
            Some(list) => list
                .iter()
                .map(|p| {
                    let prefix = match (p.read, p.write) {
                        (true, true) => "~".to_string(),
                        (true, false) => "%R~".to_string(),
                        _ => "%W~".to_string(),
                    };
                    format!("{prefix}{}", String::from_utf8_lossy(&p.pattern))
                })
                .collect::<Vec<_>>()
                .join(" "),
        }
    }

    pub fn channels_text(&self) -> String {
        match &self.channels {
            None => "&*".into(),
            Some(list) => list
                .iter()
                .map(|c| format!("&{}", String::from_utf8_lossy(c)))
                .collect::<Vec<_>>()
                .join(" "),
        }
    }

    pub fn flags(&self) -> Vec<&'static str> {
        let mut f = vec![if self.enabled { "on" } else { "off" }];
        if self.nopass {
            f.push("nopass");
        }
        f.push(if self.sanitize_payload {
            "sanitize-payload"
        } else {
            "skip-sanitize-payload"
        });
        f
    }

    /// The user as one ACL LIST line (and as an ACL file line).
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("user {}", self.name)];
        parts.extend(self.flags().iter().map(|f| f.to_string()));
        parts.extend(self.passwords.iter().map(|p| format!("#{}", hex(p))));
        parts.push(self.describe_permissions());
        for sel in &self.selectors {
            parts.push(format!("({})", sel.describe_permissions()));
        }
        parts.join(" ")
    }

    /// Keys, channels and commands, as ACL LIST shows them for the user or a selector.
    pub fn describe_permissions(&self) -> String {
        let mut parts = Vec::new();
        let keys = self.keys_text();
        if !keys.is_empty() {
            parts.push(keys);
        }
        match &self.channels {
            None => parts.push("&*".into()),
            Some(list) => {
                parts.push("resetchannels".into());
                if !list.is_empty() {
                    parts.push(self.channels_text());
                }
            }
        }
        parts.push(self.commands_text());
        parts.join(" ")
    }

    /// Applies a selector's rules: permissions only.
    fn apply_in_selector(&mut self, rule: &str) -> Result<(), &'static str> {
        let lower = rule.to_ascii_lowercase();
        let user_level = matches!(
            lower.as_str(),
            "on" | "off"
                | "nopass"
                | "resetpass"
                | "reset"
                | "clearselectors"
                | "sanitize-payload"
                | "skip-sanitize-payload"
        ) || rule.starts_with(['>', '<', '#', '!', '(']);
        if user_level {
            return Err("Syntax error");
        }
        self.apply(rule)
    }

    pub fn password_matches(&self, pass: &[u8]) -> bool {
        self.nopass || self.passwords.contains(&sha256(pass))
    }
}

/// A user as `rules` describe it from nothing (an ACL file line, a `user`
/// directive), with Redis's SETUSER errors.
pub fn fresh_user(name: &str, rules: &[Bytes], pubsub_all: bool) -> Result<User, CmdError> {
    apply_rules(
        User::with_pubsub_default(name, pubsub_all),
        rules,
        pubsub_all,
    )
}

/// Applies SETUSER's rules to `user`, selectors included; all or nothing.
fn apply_rules(mut user: User, rules: &[Bytes], pubsub_all: bool) -> Result<User, CmdError> {
    user.pubsub_all_default = pubsub_all;
    let texts: Vec<String> = rules
        .iter()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect();
    for rule in group_selectors(&texts)? {
        let err =
            |why: &str| CmdError::err(format!("Error in ACL SETUSER modifier '{rule}': {why}"));
        if let Some(inner) = rule.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
            let mut sel = User::with_pubsub_default("", pubsub_all);
            for r in inner.split_whitespace() {
                sel.apply_in_selector(r).map_err(err)?;
            }
            user.selectors.push(sel);
        } else if rule.eq_ignore_ascii_case("clearselectors") {
            user.selectors.clear();
        } else {
            user.apply(&rule).map_err(err)?;
        }
    }
    Ok(user)
}

/// Joins a selector written over several arguments (`"(~key1" "+get)"`) into one
/// rule, as Redis does; an unclosed one is an error.
fn group_selectors(args: &[String]) -> Result<Vec<String>, CmdError> {
    let mut out = Vec::new();
    // (the selector so far, the argument it started with)
    let mut open: Option<(String, &str)> = None;
    for a in args {
        match open.as_mut() {
            Some((acc, _)) => {
                acc.push(' ');
                acc.push_str(a);
                if a.ends_with(')') {
                    out.extend(open.take().map(|(acc, _)| acc));
                }
            }
            None if a.starts_with('(') && !a.ends_with(')') => open = Some((a.clone(), a)),
            None => out.push(a.clone()),
        }
    }
    match open {
        Some((_, start)) => Err(CmdError::err(format!(
            "Unmatched parenthesis in acl selector starting at '{start}'."
        ))),
        None => Ok(out),
    }
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64
        || !text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
    }
    Some(out)
}

/// Why a command was refused (ACL LOG's `reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    Auth = 0,
    Command = 1,
    Key = 2,
    Channel = 3,
}

impl Denial {
    fn name(self) -> &'static str {
        match self {
            Denial::Command => "command",
            Denial::Key => "key",
            Denial::Channel => "channel",
            Denial::Auth => "auth",
        }
    }
}

/// A refusal to record (see [`Acl::log_denial`]).
pub struct Refusal<'a> {
    pub reason: Denial,
    /// `toplevel`, `multi` or `lua`.
    pub context: &'static str,
    pub object: &'a str,
    pub username: &'a str,
    pub client_info: String,
}

/// One ACL LOG entry; identical refusals within 60 s are counted on one entry.
#[derive(Clone, Debug)]
pub struct LogEntry {
    pub count: u64,
    pub reason: Denial,
    pub context: &'static str,
    pub object: String,
    pub username: String,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub entry_id: u64,
    pub client_info: String,
}

/// The server's users and the refusal log.
pub struct Acl {
    users: RwLock<BTreeMap<String, Arc<User>>>,
    /// Whether any user is restricted: when not, nothing is checked.
    restricted: AtomicBool,
    /// Whether `default` is on without a password: new connections need no AUTH
    /// (kept here: every REST request makes a client and asks).
    default_open: AtomicBool,
    /// Bumped on every change, so clients drop their cached user.
    generation: AtomicU64,
    log: parking_lot::Mutex<VecDeque<LogEntry>>,
    next_entry: AtomicU64,
    /// Refusals by reason (INFO's `acl_access_denied_*`): auth, command, key, channel.
    denied: [AtomicU64; 4],
}

impl Default for Acl {
    fn default() -> Self {
        let mut users = BTreeMap::new();
        users.insert("default".to_owned(), Arc::new(User::default_user()));
        Acl {
            users: RwLock::new(users),
            restricted: AtomicBool::new(false),
            default_open: AtomicBool::new(true),
            generation: AtomicU64::new(0),
            log: parking_lot::Mutex::new(VecDeque::new()),
            next_entry: AtomicU64::new(0),
            denied: Default::default(),
        }
    }
}

impl Acl {
    pub fn restricted(&self) -> bool {
        self.restricted.load(Ordering::Relaxed)
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn user(&self, name: &str) -> Option<Arc<User>> {
        self.users.read().get(name).cloned()
    }

    pub fn users(&self) -> Vec<Arc<User>> {
        self.users.read().values().cloned().collect()
    }

    /// Whether the `default` user lets a connection in without AUTH.
    pub fn default_open(&self) -> bool {
        self.default_open.load(Ordering::Relaxed)
    }

    fn changed(&self, users: &BTreeMap<String, Arc<User>>) {
        let restricted = users.len() > 1 || users.values().any(|u| !u.unrestricted());
        self.restricted.store(restricted, Ordering::Relaxed);
        let open = users.get("default").is_some_and(|u| u.enabled && u.nopass);
        self.default_open.store(open, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// ACL SETUSER: applies `rules` to the user (made if new), all or nothing.
    pub fn set_user(&self, name: &str, rules: &[Bytes], pubsub_all: bool) -> Result<(), CmdError> {
        let mut users = self.users.write();
        let user = match users.get(name) {
            Some(u) => (**u).clone(),
            None => User::with_pubsub_default(name, pubsub_all),
        };
        let user = apply_rules(user, rules, pubsub_all)?;
        users.insert(name.to_owned(), Arc::new(user));
        self.changed(&users);
        Ok(())
    }

    /// Adds or replaces a user made whole elsewhere (a `user` directive).
    pub fn insert(&self, user: User) {
        let mut users = self.users.write();
        users.insert(user.name.clone(), Arc::new(user));
        self.changed(&users);
    }

    /// ACL DELUSER; returns how many existed.
    pub fn del_users(&self, names: &[&str]) -> usize {
        let mut users = self.users.write();
        let n = names.iter().filter(|n| users.remove(**n).is_some()).count();
        self.changed(&users);
        n
    }

    /// Replaces every user (ACL LOAD); `default` is kept if the list has none.
    pub fn replace_all(&self, list: Vec<User>) {
        let mut users = self.users.write();
        let default = users.get("default").cloned();
        users.clear();
        for u in list {
            users.insert(u.name.clone(), Arc::new(u));
        }
        if let (false, Some(d)) = (users.contains_key("default"), default) {
            users.insert("default".into(), d);
        }
        self.changed(&users);
    }

    /// Whether `user` may run `cmd` with `argv` (its own permissions or one of its
    /// selectors'); the refusal, as the user's own permissions give it.
    pub fn check(
        &self,
        user: &User,
        cmd: &Command,
        argv: &[Bytes],
    ) -> Result<(), (Denial, String)> {
        let own = Self::check_one(user, cmd, argv);
        let Err(mut denial) = own else {
            return Ok(());
        };
        // Any selector may allow it; otherwise the most telling refusal is
        // reported, as Redis picks it: one that got past the command check (key,
        // channel), and of those the one at the latest argument (the selector that
        // matched the most).
        for sel in &user.selectors {
            match Self::check_one(sel, cmd, argv) {
                Ok(()) => return Ok(()),
                Err(d) if (d.0 as u8, d.2) > (denial.0 as u8, denial.2) => denial = d,
                Err(_) => {}
            }
        }
        Err((denial.0, denial.1))
    }

    /// One set of permissions: the refusal, its object and the argument it is at.
    fn check_one(
        user: &User,
        cmd: &Command,
        argv: &[Bytes],
    ) -> Result<(), (Denial, String, usize)> {
        if !user.may_run(cmd, argv) {
            return Err((Denial::Command, cmd.full_name.clone(), 0));
        }
        if user.keys.is_some() {
            for (i, pos) in cmd.spec.keys.positions(argv).into_iter().enumerate() {
                let flags = cmd.spec.key_roles.flags_at(cmd.spec.flags, i, argv);
                let (read, write) = (key_flag::reads(flags), key_flag::writes(flags));
                if !user.key_allowed(&argv[pos], read, write) {
                    return Err((
                        Denial::Key,
                        String::from_utf8_lossy(&argv[pos]).into_owned(),
                        pos,
                    ));
                }
            }
        }
        if user.channels.is_some() {
            let (from, only_first, patterns) = match cmd.spec.channels {
                ChannelArgs::None => return Ok(()),
                ChannelArgs::First => (1, true, false),
                ChannelArgs::All => (1, false, false),
                ChannelArgs::AllPatterns => (1, false, true),
            };
            let chans = argv
                .iter()
                .skip(from)
                .take(if only_first { 1 } else { usize::MAX });
            for (i, c) in chans.enumerate() {
                if !user.channel_allowed(c, patterns) {
                    return Err((
                        Denial::Channel,
                        String::from_utf8_lossy(c).into_owned(),
                        from + i,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Records a refusal in ACL LOG (the log keeps `max_len` entries).
    pub fn log_denial(&self, r: Refusal<'_>, now_ms: u64, max_len: usize) {
        let Refusal {
            reason,
            context,
            object,
            username,
            client_info,
        } = r;
        self.denied[reason as usize].fetch_add(1, Ordering::Relaxed);
        let mut log = self.log.lock();
        if let Some(e) = log.iter_mut().find(|e| {
            e.reason == reason
                && e.context == context
                && e.object == object
                && e.username == username
                && now_ms.saturating_sub(e.updated_ms) < 60_000
        }) {
            e.count += 1;
            e.updated_ms = now_ms;
            e.client_info = client_info;
            return;
        }
        let entry_id = self.next_entry.fetch_add(1, Ordering::Relaxed);
        log.push_front(LogEntry {
            count: 1,
            reason,
            context,
            object: object.to_owned(),
            username: username.to_owned(),
            created_ms: now_ms,
            updated_ms: now_ms,
            entry_id,
            client_info,
        });
        log.truncate(max_len);
    }

    /// How many refusals of this kind since start.
    pub fn denied(&self, reason: Denial) -> u64 {
        self.denied[reason as usize].load(Ordering::Relaxed)
    }

    pub fn log_entries(&self, count: usize) -> Vec<LogEntry> {
        self.log.lock().iter().take(count).cloned().collect()
    }

    pub fn reset_log(&self) {
        self.log.lock().clear();
    }
}

/// The NOPERM error a refusal gets.
pub fn noperm(denial: Denial, user: &str, object: &str) -> CmdError {
    CmdError::raw(match denial {
        Denial::Command => {
            format!("NOPERM User {user} has no permissions to run the '{object}' command")
        }
        Denial::Key => "NOPERM No permissions to access a key".into(),
        Denial::Channel => "NOPERM No permissions to access a channel".into(),
        Denial::Auth => "WRONGPASS invalid username-password pair or user is disabled.".into(),
    })
}

impl LogEntry {
    pub fn reason_name(&self) -> &'static str {
        self.reason.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_resolve_and_describe_as_redis() {
        let mut u = User::new("alice");
        for r in [
            "on",
            ">p1",
            "~cached:*",
            "%R~ro:*",
            "+get",
            "+@hash",
            "-hdel",
            "&news",
        ] {
            u.apply(r).unwrap();
        }
        let get = registry().get(b"get").unwrap();
        let set = registry().get(b"set").unwrap();
        let hset = registry().get(b"hset").unwrap();
        let hdel = registry().get(b"hdel").unwrap();
        assert!(u.may_run(get, &[]) && u.may_run(hset, &[]));
        assert!(!u.may_run(set, &[]) && !u.may_run(hdel, &[]));
        assert_eq!(
            u.describe(),
            format!(
                "user alice on sanitize-payload #{} ~cached:* %R~ro:* resetchannels &news -@all +get +@hash -hdel",
                hex(&sha256(b"p1"))
            )
        );
        assert!(u.key_allowed(b"ro:1", true, false));
        assert!(!u.key_allowed(b"ro:1", false, true));
        assert!(u.password_matches(b"p1") && !u.password_matches(b"p2"));
        assert_eq!(
            User::default_user().describe(),
            "user default on nopass sanitize-payload ~* &* +@all"
        );
        assert_eq!(
            User::new("bob").describe(),
            "user bob off sanitize-payload resetchannels -@all"
        );
        // Subcommands: by full name, or all of a container.
        let mut c = User::new("c");
        c.apply("+config|get").unwrap();
        let cfg = registry().get(b"config").unwrap();
        assert!(
            c.may_run(cfg.sub(b"get").unwrap(), &[]) && !c.may_run(cfg.sub(b"set").unwrap(), &[])
        );
        c.apply("+select|0").unwrap();
        let select = registry().get(b"select").unwrap();
        let argv = |a: &str| {
            vec![
                Bytes::from_static(b"select"),
                Bytes::copy_from_slice(a.as_bytes()),
            ]
        };
        assert!(c.may_run(select, &argv("0")) && !c.may_run(select, &argv("1")));
        assert_eq!(
            c.apply("+nosuch"),
            Err("Unknown command or category name in ACL")
        );
        assert_eq!(
            c.apply("+@nosuch"),
            Err("Unknown command or category name in ACL")
        );
        assert_eq!(c.apply("bogus"), Err("Syntax error"));
        assert!(c.apply("<never-added").is_err());
    }
}
