//! ACL: SETUSER, GETUSER, DELUSER, LIST, USERS, WHOAMI, CAT, GENPASS, LOG, DRYRUN,
//! SAVE, LOAD (the users themselves are in `crate::acl`).

use bytes::Bytes;
use tidewire_resp::Reply;

use crate::acl::{User, CATEGORIES};
use crate::args::Args;
use crate::command::{cmd, flag::*, registry, CommandSpec, NO_KEYS};
use crate::error::{CmdError, CmdResult};
use crate::exec::Ctx;

pub fn commands() -> Vec<CommandSpec> {
    let admin = ADMIN | NOSCRIPT | LOADING | STALE | NO_KEYSPACE;
    let plain = NOSCRIPT | LOADING | STALE | NO_KEYSPACE;
    vec![cmd("acl", -2, NO_KEYSPACE, NO_KEYS, help)
        .group("server")
        .summary("A container for Access List Control commands.")
        .subs(vec![
            cmd("setuser", -3, admin, NO_KEYS, setuser)
                .summary("Creates and modifies an ACL user and its rules."),
            cmd("getuser", 3, admin, NO_KEYS, getuser).summary("Lists the ACL rules of a user."),
            cmd("deluser", -3, admin, NO_KEYS, deluser)
                .summary("Deletes ACL users, and terminates their connections."),
            cmd("list", 2, admin, NO_KEYS, list)
                .summary("Dumps the effective rules in ACL file format."),
            cmd("users", 2, admin, NO_KEYS, users).summary("Lists all ACL users."),
            cmd("whoami", 2, plain, NO_KEYS, whoami)
                .summary("Returns the authenticated username of the current connection."),
            cmd("cat", -2, plain, NO_KEYS, cat)
                .summary("Lists the ACL categories, or the commands inside a category."),
            cmd("genpass", -2, plain, NO_KEYS, genpass).summary(
                "Generates a pseudorandom, secure password that can be used to identify ACL users.",
            ),
            cmd("log", -2, admin, NO_KEYS, log)
                .summary("Lists recent security events generated due to ACL rules."),
            cmd("dryrun", -4, admin, NO_KEYS, dryrun).summary(
                "Simulates the execution of a command by a user, without executing the command.",
            ),
            cmd("save", 2, admin, NO_KEYS, save)
                .summary("Saves the effective ACL rules in the configured ACL file."),
            cmd("load", 2, admin, NO_KEYS, load)
                .summary("Reloads the rules from the configured ACL file."),
            cmd("help", 2, plain, NO_KEYS, help)
                .summary("Returns helpful text about the different subcommands."),
        ])]
}

fn help(_ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    let lines = [
        "ACL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "CAT [<category>]",
        "DELUSER <username> [<username> ...]",
        "DRYRUN <username> <command> [<arg> ...]",
        "GETUSER <username>",
        "LIST",
        "USERS",
        "SETUSER <username> <attribs> ...",
        "SAVE",
        "LOAD",
        "LOG [<count> | RESET]",
        "GENPASS [<bits>]",
        "WHOAMI",
        "HELP",
    ];
    Ok(Reply::Array(
        lines
            .iter()
            .map(|l| Reply::SimpleString(l.to_string()))
            .collect(),
    ))
}

fn text(s: impl Into<String>) -> Reply {
    Reply::Bulk(Bytes::from(s.into()))
}

/// User names: any bytes but spaces and control characters (they would break
/// ACL LIST and the ACL file).
fn user_name(b: &[u8]) -> Result<String, CmdError> {
    let name = String::from_utf8_lossy(b).into_owned();
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(CmdError::err(
            "Usernames can't contain spaces or null characters",
        ));
    }
    Ok(name)
}

fn setuser(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let name = user_name(args.next_bytes()?)?;
    let pubsub_all = pubsub_default_all(ctx.store);
    ctx.store.acl.set_user(&name, args.rest(), pubsub_all)?;
    ctx.store.kill_unpermitted_subscribers();
    Ok(Reply::ok())
}

fn getuser(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let name = String::from_utf8_lossy(args.next_bytes()?).into_owned();
    let Some(u) = ctx.store.acl.user(&name) else {
        return Ok(Reply::Null);
    };
    let (nopass, mut passwords) = (u.nopass, u.passwords.clone());
    // `requirepass` is the default user's password.
    let requirepass = ctx.store.config.requirepass();
    if let (true, Some(p)) = (name == "default", requirepass.as_ref()) {
        let h = crate::acl::sha256(p.as_bytes());
        if !passwords.contains(&h) {
            passwords.insert(0, h);
        }
    }
    let mut flags = vec![text(if u.enabled { "on" } else { "off" })];
    if nopass && passwords.is_empty() {
        flags.push(text("nopass"));
    }
    flags.push(text(if u.sanitize_payload {
        "sanitize-payload"
    } else {
        "skip-sanitize-payload"
    }));
    Ok(Reply::Map(vec![
        (text("flags"), Reply::Array(flags)),
        (
            text("passwords"),
            Reply::Array(passwords.iter().map(|p| text(crate::acl::hex(p))).collect()),
        ),
        (text("commands"), text(u.commands_text())),
        (text("keys"), text(u.keys_text())),
        (text("channels"), text(u.channels_text())),
        (
            text("selectors"),
            Reply::Array(
                u.selectors
                    .iter()
                    .map(|sel| {
                        Reply::Map(vec![
                            (text("commands"), text(sel.commands_text())),
                            (text("keys"), text(sel.keys_text())),
                            (text("channels"), text(sel.channels_text())),
                        ])
                    })
                    .collect(),
            ),
        ),
    ]))
}

fn deluser(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let names: Vec<String> = args
        .rest()
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    if names.iter().any(|n| n == "default") {
        return Err(CmdError::err("The 'default' user cannot be removed"));
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let n = ctx.store.acl.del_users(&refs);
    ctx.store.kill_clients_of(&refs);
    Ok(Reply::Int(n as i64))
}

/// The users as `user` directives (ACL LIST lines without the leading `user `),
/// for CONFIG REWRITE; `None` when an ACL file keeps them (ACL SAVE writes that).
pub fn user_directives(store: &crate::Store) -> Option<Vec<String>> {
    if acl_file_path(store).is_some() {
        return None;
    }
    Some(
        store
            .acl
            .users()
            .iter()
            .map(|u| {
                let line = u.describe();
                line.strip_prefix("user ").unwrap_or(&line).to_string()
            })
            .collect(),
    )
}

/// ACL LIST's lines; the default user shows `requirepass` as its password.
fn describe_all(ctx: &Ctx<'_>) -> Vec<String> {
    let requirepass = ctx.store.config.requirepass();
    ctx.store
        .acl
        .users()
        .iter()
        .map(|u| match (u.name.as_str(), requirepass.as_ref()) {
            ("default", Some(p)) => {
                let mut shown = (**u).clone();
                let _ = shown.apply(&format!(">{p}"));
                shown.describe()
            }
            _ => u.describe(),
        })
        .collect()
}

fn list(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    Ok(Reply::Array(
        describe_all(ctx).into_iter().map(text).collect(),
    ))
}

fn users(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    Ok(Reply::Array(
        ctx.store
            .acl
            .users()
            .iter()
            .map(|u| text(u.name.clone()))
            .collect(),
    ))
}

fn whoami(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    Ok(text(ctx.client.info.user().to_string()))
}

fn cat(_ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    if args.is_empty() {
        return Ok(Reply::Array(CATEGORIES.iter().map(|c| text(*c)).collect()));
    }
    if args.remaining() > 1 {
        return Err(CmdError::err(
            "unknown subcommand or wrong number of arguments for 'CAT'. Try ACL HELP.",
        ));
    }
    let given = String::from_utf8_lossy(args.next_bytes()?).into_owned();
    let want = given.to_ascii_lowercase();
    let want = want.strip_prefix('@').unwrap_or(&want).to_owned();
    if !CATEGORIES.contains(&want.as_str()) {
        return Err(CmdError::err(format!("Unknown category '{given}'")));
    }
    let tag = format!("@{want}");
    let mut names: Vec<String> = registry()
        .all()
        .filter(|c| c.subs.is_empty())
        .filter(|c| crate::families::command_docs::acl_categories(c).contains(&tag.as_str()))
        .map(|c| c.full_name.clone())
        .collect();
    names.sort();
    Ok(Reply::Array(names.into_iter().map(text).collect()))
}

fn genpass(_ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let bits = if args.is_empty() {
        256
    } else {
        let n = args.next_i64()?;
        if !(1..=4096).contains(&n) {
            return Err(CmdError::err(
                "ACL GENPASS argument must be the number of bits for the output password, a positive number up to 4096",
            ));
        }
        n as usize
    };
    Ok(text(crate::random_hex(bits.div_ceil(4))))
}

fn log(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let mut count = 10usize;
    if let Some(a) = args.peek() {
        if a.eq_ignore_ascii_case(b"reset") {
            ctx.store.acl.reset_log();
            return Ok(Reply::ok());
        }
        let n = args.next_i64()?;
        if n < 0 {
            return Err(CmdError::err("value is out of range, must be positive"));
        }
        count = n as usize;
    }
    let now = crate::clock::now_ms();
    let entries = ctx.store.acl.log_entries(count);
    Ok(Reply::Array(
        entries
            .into_iter()
            .map(|e| {
                Reply::Map(vec![
                    (text("count"), Reply::Int(e.count as i64)),
                    (text("reason"), text(e.reason_name())),
                    (text("context"), text(e.context)),
                    (text("object"), text(e.object.clone())),
                    (text("username"), text(e.username.clone())),
                    (
                        text("age-seconds"),
                        Reply::Double(now.saturating_sub(e.created_ms) as f64 / 1000.0),
                    ),
                    (text("client-info"), text(e.client_info.clone())),
                    (text("entry-id"), Reply::Int(e.entry_id as i64)),
                    (text("timestamp-created"), Reply::Int(e.created_ms as i64)),
                    (
                        text("timestamp-last-updated"),
                        Reply::Int(e.updated_ms as i64),
                    ),
                ])
            })
            .collect(),
    ))
}

fn dryrun(ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let name = String::from_utf8_lossy(args.next_bytes()?).into_owned();
    let Some(user) = ctx.store.acl.user(&name) else {
        return Err(CmdError::err(format!("User '{name}' not found")));
    };
    let argv = args.rest();
    let Ok(cmd) = crate::exec::resolve(argv) else {
        // A known command (or subcommand) with the wrong arguments is told so.
        let known = crate::command::registry()
            .get(&argv[0])
            .and_then(|c| match argv.get(1) {
                Some(sub) if !c.subs.is_empty() => c.sub(sub),
                _ => Some(c),
            });
        if let Some(c) = known.filter(|c| !c.arity_ok(argv.len())) {
            return Err(CmdError::WrongArity(c.full_name.clone()));
        }
        let c = String::from_utf8_lossy(&argv[0]);
        return Err(CmdError::err(format!("Command '{c}' not found")));
    };
    Ok(match ctx.store.acl.check(&user, cmd, argv) {
        Ok(()) => Reply::ok(),
        Err((crate::acl::Denial::Command, object)) => text(format!(
            "User {name} has no permissions to run the '{object}' command"
        )),
        Err((crate::acl::Denial::Key, object)) => text(format!(
            "User {name} has no permissions to access the '{object}' key"
        )),
        Err((_, object)) => text(format!(
            "User {name} has no permissions to access the '{object}' channel"
        )),
    })
}

/// The `aclfile`, a relative path being in the data dir (`dir`), as Redis, which
/// runs in its `dir`, reads it.
pub fn acl_file_path(store: &crate::Store) -> Option<String> {
    let file = store.config.get("aclfile").filter(|f| !f.is_empty())?;
    if std::path::Path::new(&file).is_absolute() {
        return Some(file);
    }
    let dir = store.config.get("dir").unwrap_or_else(|| ".".into());
    Some(
        std::path::Path::new(&dir)
            .join(file)
            .to_string_lossy()
            .into_owned(),
    )
}

fn acl_file(ctx: &Ctx<'_>) -> Result<String, CmdError> {
    match acl_file_path(ctx.store) {
        Some(f) => Ok(f),
        None => Err(CmdError::err(
            "This Redis instance is not configured to use an ACL file. You may want to specify users via the ACL SETUSER command and then issue a CONFIG REWRITE (assuming you have a Redis configuration file set) in order to store users in the Redis configuration.",
        )),
    }
}

fn save(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    let path = acl_file(ctx)?;
    let body: String = describe_all(ctx).into_iter().map(|l| l + "\n").collect();
    let tmp = format!("{path}.tmp");
    std::fs::write(&tmp, body)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| CmdError::err(format!("There was an error trying to save the ACLs. Please check the server logs for more information ({e})")))?;
    Ok(Reply::ok())
}

/// `acl-pubsub-default allchannels`: new and reset users may use every channel.
pub fn pubsub_default_all(store: &crate::Store) -> bool {
    store.config.get("acl-pubsub-default").as_deref() == Some("allchannels")
}

fn load(ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    let path = acl_file(ctx)?;
    let users = parse_acl_file(&path, pubsub_default_all(ctx.store)).map_err(CmdError::err)?;
    // As Redis: every user is made anew, so the clients logged in as the old ones
    // (this one too, after its reply) are disconnected.
    let before: Vec<String> = ctx
        .store
        .acl
        .users()
        .iter()
        .map(|u| u.name.clone())
        .collect();
    ctx.store.acl.replace_all(users);
    let names: Vec<&str> = before.iter().map(String::as_str).collect();
    ctx.store.kill_clients_of(&names);
    Ok(Reply::ok())
}

/// Reads an ACL file (`user <name> <rules…>` lines; `#` comments), all or nothing.
pub fn parse_acl_file(path: &str, pubsub_all: bool) -> Result<Vec<User>, String> {
    let body = std::fs::read_to_string(path)
        .map_err(|e| format!("Error loading ACLs, opening file '{path}': {e}"))?;
    let mut users: Vec<User> = Vec::new();
    for (i, line) in body.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        if words.next() != Some("user") {
            return Err(format!(
                "/{path}:{}: line should start with user keyword",
                i + 1
            ));
        }
        let name = words
            .next()
            .ok_or_else(|| format!("/{path}:{}: user name missing", i + 1))?;
        if users.iter().any(|u| u.name == name) {
            return Err(format!("/{path}:{}: Duplicate user '{name}' found", i + 1));
        }
        let rules: Vec<Bytes> = words
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect();
        let u = crate::acl::fresh_user(name, &rules, pubsub_all)
            .map_err(|e| format!("/{path}:{}: {}. ", i + 1, e.text()))?;
        users.push(u);
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use crate::testkit::*;
    use tidewire_resp::Reply;

    #[test]
    fn users_permissions_and_refusals_as_redis() {
        let mut admin = TestClient::new();
        assert_eq!(admin.run(&["ACL", "WHOAMI"]), bulk("default"));
        assert_eq!(
            admin.run(&[
                "ACL", "SETUSER", "alice", "on", ">pw", "~cache:*", "&news", "+get", "+set",
                "+publish", "+eval"
            ]),
            ok()
        );
        assert_eq!(
            admin.run(&["ACL", "SETUSER", "alice", "+nosuch"]),
            err("ERR Error in ACL SETUSER modifier '+nosuch': Unknown command or category name in ACL")
        );
        let mut alice = admin.other();
        assert_eq!(
            alice.run(&["AUTH", "alice", "bad"]),
            err("WRONGPASS invalid username-password pair or user is disabled.")
        );
        assert_eq!(alice.run(&["AUTH", "alice", "pw"]), ok());
        assert_eq!(
            alice.run(&["ACL", "WHOAMI"]),
            err("NOPERM User alice has no permissions to run the 'acl|whoami' command")
        );
        assert_eq!(alice.run(&["SET", "cache:1", "v"]), ok());
        assert_eq!(alice.run(&["GET", "cache:1"]), bulk("v"));
        assert_eq!(
            alice.run(&["GET", "other"]),
            err("NOPERM No permissions to access a key")
        );
        assert_eq!(
            alice.run(&["DEL", "cache:1"]),
            err("NOPERM User alice has no permissions to run the 'del' command")
        );
        assert_eq!(alice.run(&["PUBLISH", "news", "hi"]), int(0));
        assert_eq!(
            alice.run(&["PUBLISH", "sports", "hi"]),
            err("NOPERM No permissions to access a channel")
        );
        // A script runs with its caller's permissions.
        let r = alice.run(&["EVAL", "return redis.call('get', 'secret')", "0"]);
        assert!(
            matches!(&r, Reply::Error(e) if e.contains("No permissions to access a key")),
            "{r:?}"
        );
        // The refusals are in ACL LOG, newest first.
        let log = admin.resp(&["ACL", "LOG", "2"]);
        assert!(log.contains("lua") && log.contains("secret"), "{log}");
        assert_eq!(admin.run(&["ACL", "USERS"]), bulks(&["alice", "default"]));
        let list = admin.run(&["ACL", "LIST"]);
        let Reply::Array(lines) = list else { panic!() };
        assert_eq!(
            lines[1],
            bulk("user default on nopass sanitize-payload ~* &* +@all")
        );
        // Deleting the user disconnects it.
        assert_eq!(admin.run(&["ACL", "DELUSER", "alice", "nobody"]), int(1));
        assert!(alice.client.info.is_killed());
        assert_eq!(
            admin.run(&["ACL", "DELUSER", "default"]),
            err("ERR The 'default' user cannot be removed")
        );
        assert_eq!(admin.run(&["ACL", "DRYRUN", "default", "GET", "x"]), ok());
        let n = admin.run(&["ACL", "GENPASS", "128"]);
        assert!(matches!(n, Reply::Bulk(b) if b.len() == 32));
    }

    #[test]
    fn a_default_user_with_a_password_makes_connections_authenticate() {
        let mut admin = TestClient::new();
        assert_eq!(
            admin.run(&["ACL", "SETUSER", "default", "resetpass", ">secret"]),
            ok()
        );
        let mut fresh = admin.other();
        assert_eq!(
            fresh.run(&["GET", "k"]),
            err("NOAUTH Authentication required.")
        );
        assert_eq!(fresh.run(&["AUTH", "secret"]), ok());
        assert_eq!(fresh.run(&["GET", "k"]), Reply::Null);
    }

    #[test]
    fn selectors_and_key_roles() {
        let mut admin = TestClient::new();
        assert_eq!(
            admin.run(&[
                "ACL",
                "SETUSER",
                "sel",
                "on",
                "nopass",
                "-@all",
                "(+@write ~write::*)",
                "(+@read",
                "~read::*)"
            ]),
            ok()
        );
        let mut sel = admin.other();
        assert_eq!(sel.run(&["AUTH", "sel", "x"]), ok());
        assert_eq!(sel.run(&["SET", "write::a", "1"]), ok());
        assert_eq!(sel.run(&["GET", "read::a"]), Reply::Null);
        // The command is some selector's, the key is not: the key is reported.
        assert_eq!(
            sel.run(&["GET", "write::a"]),
            err("NOPERM No permissions to access a key")
        );
        assert_eq!(
            sel.run(&["PING"]),
            err("NOPERM User sel has no permissions to run the 'ping' command")
        );
        let list = admin.run(&["ACL", "GETUSER", "sel"]);
        let text = format!("{list:?}");
        assert!(
            text.contains("~write::*") && text.contains("~read::*"),
            "{text}"
        );
        assert_eq!(
            admin.run(&["ACL", "SETUSER", "bad", "(~a", "+get"]),
            err("ERR Unmatched parenthesis in acl selector starting at '(~a'.")
        );
        // COPY reads its source and writes its destination.
        assert_eq!(
            admin.run(&[
                "ACL",
                "SETUSER",
                "rw",
                "on",
                "nopass",
                "+@all",
                "%R~read*",
                "%W~write*"
            ]),
            ok()
        );
        admin.run(&["SET", "read1", "v"]);
        let mut rw = admin.other();
        assert_eq!(rw.run(&["AUTH", "rw", "x"]), ok());
        assert_eq!(rw.run(&["COPY", "read1", "write1"]), int(1));
        assert_eq!(
            rw.run(&["COPY", "write1", "read2"]),
            err("NOPERM No permissions to access a key")
        );
        assert_eq!(
            rw.run(&["SUNIONSTORE", "write2", "read1"]),
            err("WRONGTYPE Operation against a key holding the wrong kind of value")
        );
        // SET … GET reads too; BITFIELD with only GETs only reads.
        assert_eq!(rw.run(&["SET", "write3", "v"]), ok());
        assert_eq!(
            rw.run(&["SET", "write3", "v", "GET"]),
            err("NOPERM No permissions to access a key")
        );
        assert_eq!(
            rw.run(&["BITFIELD", "read1", "GET", "u4", "0"]),
            Reply::Array(vec![int(7)])
        );
        assert_eq!(
            rw.run(&["BITFIELD", "read1", "SET", "u4", "0", "1"]),
            err("NOPERM No permissions to access a key")
        );
        // %R~x %W~x is ~x.
        assert_eq!(
            admin.run(&["ACL", "SETUSER", "m", "%R~foo", "%W~foo", "~bar"]),
            ok()
        );
        let m = format!("{:?}", admin.run(&["ACL", "GETUSER", "m"]));
        assert!(m.contains("~foo ~bar"), "{m}");
    }

    /// Permissions are checked again where Redis checks them again: at EXEC for
    /// queued commands (logged with the client running EXEC), and when a blocked
    /// command is retried; and DEBUG's first-argument rules refuse an unknown word
    /// before it is reported as unknown.
    #[test]
    fn permissions_changed_after_queueing_or_blocking_are_enforced() {
        let mut admin = TestClient::with_debug();
        assert_eq!(
            admin.run(&[
                "ACL", "SETUSER", "ant", "on", "nopass", "+incr", "+multi", "+exec", "+blpop", "~*"
            ]),
            ok()
        );
        let mut ant = admin.other();
        assert_eq!(ant.run(&["AUTH", "ant", "x"]), ok());
        ant.run(&["MULTI"]);
        assert_eq!(ant.run(&["INCR", "n"]), Reply::Status("QUEUED"));
        admin.run(&["ACL", "SETUSER", "ant", "-incr"]);
        assert_eq!(
            ant.run(&["EXEC"]),
            Reply::Array(vec![err(
                "NOPERM ACLs rules changed between the moment the transaction was accumulated \
                 and the EXEC call. This command is no longer allowed for the following reason: \
                 no permission to execute the command or subcommand"
            )])
        );
        let log = admin.resp(&["ACL", "LOG", "1"]);
        assert!(log.contains("multi") && log.contains("cmd=exec"), "{log}");
        let waiting = ant.block(&["BLPOP", "list1", "0"]);
        admin.run(&["ACL", "SETUSER", "ant", "resetkeys"]);
        admin.run(&["LPUSH", "list1", "foo"]);
        let served = waiting.waiter.take_served().expect("retried");
        assert_eq!(served, vec![err("NOPERM No permissions to access a key")]);
        assert_eq!(admin.run(&["LLEN", "list1"]), int(1), "nothing popped");
        admin.run(&[
            "ACL",
            "SETUSER",
            "dbg",
            "on",
            "nopass",
            "+debug|object",
            "~*",
        ]);
        let mut dbg = admin.other();
        assert_eq!(dbg.run(&["AUTH", "dbg", "x"]), ok());
        assert_eq!(
            dbg.run(&["DEBUG", "NOSUCHWORD"]),
            err("NOPERM User dbg has no permissions to run the 'debug' command")
        );
    }

    /// Redis's key-spec rules: INCR, LPOP and HGETDEL read and write, EXISTS and
    /// LLEN only look (any matching pattern), XREADGROUP only reads, SORT's BY needs
    /// every key readable; and a
    /// script's redis.acl_check_cmd answers for the script's user.
    #[test]
    fn key_specs_decide_read_and_write_and_scripts_check_the_user() {
        let mut admin = TestClient::new();
        admin.run(&["RPUSH", "write1", "a"]);
        assert_eq!(
            admin.run(&[
                "ACL",
                "SETUSER",
                "ks",
                "on",
                "nopass",
                "+@all",
                "%R~read*",
                "%W~write*"
            ]),
            ok()
        );
        let mut ks = admin.other();
        assert_eq!(ks.run(&["AUTH", "ks", "x"]), ok());
        let denied = || err("NOPERM No permissions to access a key");
        assert_eq!(ks.run(&["INCR", "write2"]), denied());
        assert_eq!(ks.run(&["LPOP", "write1"]), denied());
        assert_eq!(ks.run(&["EXISTS", "write1"]), int(1));
        assert_eq!(ks.run(&["LLEN", "write1"]), int(1));
        // XREADGROUP only reads its streams (`RO access`), HGETDEL reads too.
        admin.run(&["XADD", "read:s", "1-1", "f", "v"]);
        admin.run(&["XGROUP", "CREATE", "read:s", "g", "0"]);
        let Reply::Array(streams) =
            ks.run(&["XREADGROUP", "GROUP", "g", "c", "STREAMS", "read:s", ">"])
        else {
            panic!("XREADGROUP refused a readable stream")
        };
        assert_eq!(streams.len(), 1);
        assert_eq!(
            ks.run(&["HGETDEL", "write:h", "FIELDS", "1", "f"]),
            denied()
        );
        assert_eq!(
            ks.run(&["SORT", "read1", "BY", "w_*"]),
            err("ERR BY option of SORT denied due to insufficient ACL permissions.")
        );
        assert_eq!(
            admin.run(&["ACL", "DRYRUN", "ks", "SET", "k"]),
            err("ERR wrong number of arguments for 'set' command")
        );
        assert_eq!(
            admin.run(&[
                "ACL",
                "SETUSER",
                "bob",
                "on",
                ">123",
                "+@scripting",
                "+set",
                "~x*"
            ]),
            ok()
        );
        let mut bob = admin.other();
        assert_eq!(bob.run(&["AUTH", "bob", "123"]), ok());
        let check = "return {redis.acl_check_cmd('set','xx',1) and 1 or 0, \
                     redis.acl_check_cmd('hset','xx','f',1) and 1 or 0, \
                     redis.acl_check_cmd('set','yy',1) and 1 or 0}";
        assert_eq!(
            bob.run(&["EVAL", check, "1", "xx"]),
            Reply::Array(vec![int(1), int(0), int(0)])
        );
    }

    /// The native primitives' keys: a command that returns what a key holds (a
    /// stored response, a cached value, a limiter's remaining quota) needs read
    /// permission as well as write; a lock's acquire and release only write.
    #[test]
    fn native_primitives_read_what_they_return() {
        let mut admin = TestClient::new();
        assert_eq!(
            admin.run(&["ACL", "SETUSER", "wo", "on", "nopass", "+@all", "%W~w*"]),
            ok()
        );
        let mut wo = admin.other();
        assert_eq!(wo.run(&["AUTH", "wo", "x"]), ok());
        let denied = || err("NOPERM No permissions to access a key");
        assert_eq!(wo.run(&["TW.IDEM.BEGIN", "w:idem", "60000"]), denied());
        assert_eq!(wo.run(&["TW.FILL.GET", "w:fill", "60000"]), denied());
        assert_eq!(wo.run(&["CL.THROTTLE", "w:rl", "10", "10", "60"]), denied());
        assert!(!wo.run(&["TW.LOCK.ACQUIRE", "w:lock", "60000"]).is_error());
        assert_eq!(wo.run(&["TW.IDEM.ABORT", "w:idem", "token"]), int(0));
    }
}
