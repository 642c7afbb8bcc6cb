//! COMMAND: the command table as clients see it (COMMAND, COUNT, INFO, DOCS, LIST,
//! GETKEYS, GETKEYSANDFLAGS), in Redis 7's reply shapes, built from `command.rs`.

use bytes::Bytes;
use tidewire_resp::Reply;

use crate::args::Args;
use crate::command::{cmd, flag, flag::*, key_flag, registry, Command, CommandSpec, Keys, NO_KEYS};
use crate::error::{CmdError, CmdResult};
use crate::exec::Ctx;
use crate::glob::glob_match;

pub fn commands() -> Vec<CommandSpec> {
    let f = LOADING | STALE | NO_KEYSPACE;
    vec![cmd("command", -1, f, NO_KEYS, all_info)
        .group("server")
        .summary("Returns detailed information about all commands.")
        .subs(vec![
            cmd("count", 2, f, NO_KEYS, count).summary("Returns a count of commands."),
            cmd("info", -2, f, NO_KEYS, info)
                .summary("Returns information about one, multiple or all commands."),
            cmd("docs", -2, f, NO_KEYS, docs)
                .summary("Returns documentary information about one, multiple or all commands."),
            cmd("list", -2, f, NO_KEYS, list).summary("Returns a list of command names."),
            cmd("getkeys", -3, f, NO_KEYS, getkeys)
                .summary("Extracts the key names from an arbitrary command."),
            cmd("getkeysandflags", -3, f, NO_KEYS, getkeysandflags)
                .summary("Extracts the key names and access flags for an arbitrary command."),
            cmd("help", 2, f, NO_KEYS, help).summary("Returns helpful text about commands."),
        ])]
}

fn s(v: &str) -> Reply {
    Reply::SimpleString(v.to_string())
}

fn b(v: &str) -> Reply {
    Reply::bulk_str(v)
}

/// Commands Redis 7.2 puts in `@dangerous` although they are not admin commands.
const DANGEROUS: &[&str] = &[
    "flushall", "flushdb", "info", "keys", "migrate", "restore", "sort", "sort_ro", "swapdb",
];

/// ACL categories as Redis derives them from flags and the command's group.
pub(crate) fn acl_categories(c: &Command) -> Vec<&'static str> {
    let mut v = Vec::new();
    let fl = c.spec.flags & !c.spec.unlisted_flags;
    if fl & flag::WRITE != 0 {
        v.push("@write");
    }
    if fl & flag::READONLY != 0 {
        v.push("@read");
    }
    if fl & flag::ADMIN != 0 {
        v.push("@admin");
        v.push("@dangerous");
    } else if !c.is_sub && DANGEROUS.contains(&c.spec.name) {
        v.push("@dangerous");
    }
    if fl & flag::PUBSUB != 0 {
        v.push("@pubsub");
    }
    if fl & flag::FAST != 0 {
        v.push("@fast");
    } else {
        v.push("@slow");
    }
    if fl & flag::BLOCKING != 0 {
        v.push("@blocking");
    }
    // A subcommand declared without a group of its own is in its container's.
    let parent_group = (c.is_sub && c.spec.group == "generic")
        .then(|| c.full_name.split('|').next())
        .flatten()
        .and_then(|p| registry().get(p.as_bytes()))
        .map(|p| p.spec.group);
    let group = match c.spec.acl_category.or(parent_group).unwrap_or(c.spec.group) {
        "string" => Some("@string"),
        "list" => Some("@list"),
        "hash" => Some("@hash"),
        "set" => Some("@set"),
        "sorted-set" | "sorted_set" | "zset" => Some("@sortedset"),
        "hyperloglog" => Some("@hyperloglog"),
        "generic" => Some("@keyspace"),
        "connection" => Some("@connection"),
        "transactions" => Some("@transaction"),
        "scripting" => Some("@scripting"),
        "stream" => Some("@stream"),
        "geo" => Some("@geo"),
        "bitmap" => Some("@bitmap"),
        _ => None,
    };
    if let Some(g) = group {
        if !v.contains(&g) {
            v.push(g);
        }
    }
    v
}

fn flag_names(c: &Command) -> Vec<Reply> {
    let mut v: Vec<Reply> = flag::NAMES
        .iter()
        .filter(|(f, _)| c.spec.flags & !c.spec.unlisted_flags & f != 0)
        .map(|(_, n)| s(n))
        .collect();
    if matches!(c.spec.keys, Keys::Custom(_)) || c.has(flag::MOVABLE_KEYS) {
        v.push(s("movablekeys"));
    }
    v
}

/// A set of key-spec flags, as Redis prints them.
fn flag_set(flags: u16) -> Reply {
    Reply::Set(key_flag::names(flags).map(s).collect())
}

/// COMMAND INFO's key specs, one per entry of the command's key flags: with a key
/// range, each entry but the last finds the one key at its place and the last the
/// rest of the range (LMOVE: source, destination; SDIFFSTORE: destination, then
/// every source), as Redis's own specs do.
fn key_specs(c: &Command) -> Reply {
    let flags = c.spec.key_roles.static_flags(c.spec.flags);
    let spec = |flags: u16, begin: Reply, find: Reply| {
        Reply::Map(vec![
            (b("flags"), flag_set(flags)),
            (b("begin_search"), begin),
            (b("find_keys"), find),
        ])
    };
    let unknown = || {
        Reply::Map(vec![
            (b("type"), b("unknown")),
            (b("spec"), Reply::Map(vec![])),
        ])
    };
    match c.spec.keys {
        Keys::None => Reply::Array(vec![]),
        Keys::Range { first, last, step } => {
            let mut specs = Vec::new();
            for (i, &f) in flags.iter().enumerate() {
                let index = first + i as i32 * step;
                if last >= 0 && index > last {
                    break;
                }
                let (lastkey, keystep) = if i + 1 < flags.len() {
                    (0, 1)
                } else if last < 0 {
                    (last, step)
                } else {
                    (last - index, step)
                };
                specs.push(spec(
                    f,
                    Reply::Map(vec![
                        (b("type"), b("index")),
                        (
                            b("spec"),
                            Reply::Map(vec![(b("index"), Reply::Int(index as i64))]),
                        ),
                    ]),
                    Reply::Map(vec![
                        (b("type"), b("range")),
                        (
                            b("spec"),
                            Reply::Map(vec![
                                (b("lastkey"), Reply::Int(lastkey as i64)),
                                (b("keystep"), Reply::Int(keystep as i64)),
                                (b("limit"), Reply::Int(0)),
                            ]),
                        ),
                    ]),
                ));
            }
            Reply::Array(specs)
        }
        Keys::Custom(_) => Reply::Array(
            flags
                .iter()
                .map(|&f| spec(f, unknown(), unknown()))
                .collect(),
        ),
    }
}

fn sorted_subs(c: &Command) -> Vec<&Command> {
    let mut v: Vec<&Command> = c.subs.values().collect();
    v.sort_by(|a, b| a.full_name.cmp(&b.full_name));
    v
}

/// One COMMAND INFO entry: name, arity, flags, first, last, step, ACL categories,
/// tips, key specs, subcommands.
fn info_entry(c: &Command) -> Reply {
    let (first, last, step) = c.spec.keys.legacy_triple();
    Reply::Array(vec![
        b(&c.full_name),
        Reply::Int(c.spec.arity as i64),
        Reply::Set(flag_names(c)),
        Reply::Int(first),
        Reply::Int(last),
        Reply::Int(step),
        Reply::Set(acl_categories(c).into_iter().map(s).collect()),
        Reply::Array(vec![]),
        key_specs(c),
        Reply::Array(sorted_subs(c).into_iter().map(info_entry).collect()),
    ])
}

fn doc_entry(c: &Command) -> Reply {
    let mut m = vec![
        (b("summary"), b(c.spec.summary)),
        (b("since"), b("1.0.0")),
        (b("group"), b(c.spec.group)),
    ];
    if !c.subs.is_empty() {
        m.push((
            b("subcommands"),
            Reply::Map(
                sorted_subs(c)
                    .into_iter()
                    .map(|sc| (b(&sc.full_name), doc_entry(sc)))
                    .collect(),
            ),
        ));
    }
    Reply::Map(m)
}

fn sorted_top() -> Vec<&'static Command> {
    let mut v: Vec<&Command> = registry().commands.values().collect();
    v.sort_by(|a, b| a.full_name.cmp(&b.full_name));
    v
}

fn all_info(_ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    Ok(Reply::Array(
        sorted_top().into_iter().map(info_entry).collect(),
    ))
}

fn count(_ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    Ok(Reply::Int(registry().commands.len() as i64))
}

fn info(_ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let names = args.rest();
    if names.is_empty() {
        return Ok(Reply::Array(
            sorted_top().into_iter().map(info_entry).collect(),
        ));
    }
    Ok(Reply::Array(
        names
            .iter()
            .map(|n| {
                registry()
                    .by_full_name(n)
                    .map_or(Reply::NullArray, info_entry)
            })
            .collect(),
    ))
}

fn docs(_ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let names = args.rest();
    let pairs: Vec<(Reply, Reply)> = if names.is_empty() {
        sorted_top()
            .into_iter()
            .map(|c| (b(&c.full_name), doc_entry(c)))
            .collect()
    } else {
        names
            .iter()
            .filter_map(|n| {
                registry()
                    .by_full_name(n)
                    .map(|c| (b(&c.full_name), doc_entry(c)))
            })
            .collect()
    };
    Ok(Reply::Map(pairs))
}

fn list(_ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    enum Filter {
        None,
        Module,
        AclCat(String),
        Pattern(Bytes),
    }
    let filter = if args.is_empty() {
        Filter::None
    } else {
        if !args.flag("FILTERBY") || args.remaining() != 2 {
            return Err(CmdError::Syntax);
        }
        let kind = args.next_upper()?;
        let value = args.next_bytes()?;
        match kind.as_str() {
            "MODULE" => Filter::Module,
            "ACLCAT" => Filter::AclCat(format!(
                "@{}",
                String::from_utf8_lossy(value).to_ascii_lowercase()
            )),
            "PATTERN" => Filter::Pattern(value.clone()),
            _ => return Err(CmdError::Syntax),
        }
    };
    let mut out = Vec::new();
    for c in sorted_top() {
        for c in std::iter::once(c).chain(sorted_subs(c)) {
            let keep = match &filter {
                Filter::None => true,
                Filter::Module => false,
                Filter::AclCat(cat) => acl_categories(c).contains(&cat.as_str()),
                Filter::Pattern(p) => glob_match(p, c.full_name.as_bytes(), true),
            };
            if keep {
                out.push(b(&c.full_name));
            }
        }
    }
    Ok(Reply::Array(out))
}

/// Resolves the command given to GETKEYS and finds its keys, with Redis's errors.
/// The command a GETKEYS call names, its arguments and its keys.
fn keys_of(args: &mut Args<'_>) -> Result<(&'static Command, Vec<Bytes>, Vec<Bytes>), CmdError> {
    let argv: Vec<Bytes> = args.rest().to_vec();
    let top = registry()
        .get(&argv[0])
        .ok_or_else(|| CmdError::err("Invalid command specified"))?;
    let c = if !top.subs.is_empty() && argv.len() >= 2 {
        top.sub(&argv[1])
            .ok_or_else(|| CmdError::err("Invalid command specified"))?
    } else {
        top
    };
    if !c.arity_ok(argv.len()) {
        return Err(CmdError::err(
            "Invalid number of arguments specified for command",
        ));
    }
    let keys: Vec<Bytes> = c
        .spec
        .keys
        .positions(&argv)
        .into_iter()
        .map(|p| argv[p].clone())
        .collect();
    if keys.is_empty() && !c.has(flag::NO_MANDATORY_KEYS) {
        return Err(CmdError::err("The command has no key arguments"));
    }
    Ok((c, argv, keys))
}

fn getkeys(_ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let (_, _, keys) = keys_of(args)?;
    Ok(Reply::Array(keys.into_iter().map(Reply::Bulk).collect()))
}

fn getkeysandflags(_ctx: &mut Ctx<'_>, args: &mut Args<'_>) -> CmdResult {
    let (c, argv, keys) = keys_of(args)?;
    Ok(Reply::Array(
        keys.into_iter()
            .enumerate()
            .map(|(i, k)| {
                let flags = c.spec.key_roles.flags_at(c.spec.flags, i, &argv);
                Reply::Array(vec![Reply::Bulk(k), flag_set(flags)])
            })
            .collect(),
    ))
}

fn help(_ctx: &mut Ctx<'_>, _args: &mut Args<'_>) -> CmdResult {
    Ok(super::server::help_lines(
        "COMMAND",
        &[
            "(no subcommand)",
            "    Return details about all Redis commands.",
            "COUNT",
            "    Return the total number of commands in this Redis server.",
            "LIST",
            "    Return a list of all commands in this Redis server.",
            "INFO [<command-name> ...]",
            "    Return details about multiple Redis commands.",
            "    If no command names are given, documentation details for all",
            "    commands are returned.",
            "DOCS [<command-name> ...]",
            "    Return documentation details about multiple Redis commands.",
            "    If no command names are given, documentation details for all",
            "    commands are returned.",
            "GETKEYS <full-command>",
            "    Return the keys from a full Redis command.",
            "GETKEYSANDFLAGS <full-command>",
            "    Return the keys and the access flags from a full Redis command.",
            "LIST [FILTERBY (MODULE <module-name>|ACLCAT <category>|PATTERN <pattern>)]",
            "    Return a list of all commands in this Redis server.",
        ],
    ))
}

#[cfg(test)]
mod tests {
    use super::s;
    use crate::testkit::*;
    use tidewire_resp::Reply;

    #[test]
    fn info_shape_and_getkeys() {
        let mut t = TestClient::new();
        let Reply::Array(v) = t.run(&["COMMAND", "INFO", "get", "nosuch"]) else {
            panic!()
        };
        assert_eq!(v[1], Reply::NullArray);
        let Reply::Array(get) = &v[0] else { panic!() };
        assert_eq!(get.len(), 10);
        assert_eq!(get[0], bulk("get"));
        assert_eq!(get[1], Reply::Int(2));
        assert_eq!(&get[3..6], &[Reply::Int(1), Reply::Int(1), Reply::Int(1)]);
        assert_eq!(
            t.run(&["COMMAND", "GETKEYS", "set", "a", "b"]),
            bulks(&["a"])
        );
        assert_eq!(
            t.run(&["COMMAND", "GETKEYS", "nosuch", "a"]),
            err("ERR Invalid command specified")
        );
        assert_eq!(
            t.run(&["COMMAND", "GETKEYS", "get"]),
            err("ERR Invalid number of arguments specified for command")
        );
        assert_eq!(
            t.run(&["COMMAND", "GETKEYS", "ping", "x"]),
            err("ERR The command has no key arguments")
        );
        let Reply::Int(n) = t.run(&["COMMAND", "COUNT"]) else {
            panic!()
        };
        let Reply::Array(all) = t.run(&["COMMAND"]) else {
            panic!()
        };
        assert_eq!(all.len() as i64, n);
        let Reply::Array(l) = t.run(&["COMMAND", "LIST", "FILTERBY", "PATTERN", "client|*"]) else {
            panic!()
        };
        assert!(l.contains(&bulk("client|list")));
    }

    fn flags(names: &[&str]) -> Reply {
        Reply::Set(
            names
                .iter()
                .map(|n| Reply::SimpleString((*n).into()))
                .collect(),
        )
    }

    fn keyed(pairs: &[(&str, &[&str])]) -> Reply {
        Reply::Array(
            pairs
                .iter()
                .map(|(k, f)| Reply::Array(vec![bulk(k), flags(f)]))
                .collect(),
        )
    }

    /// GETKEYSANDFLAGS reports each key's own key-spec flags from the command
    /// table, SET's and BITFIELD's resolved from their arguments, as Redis does.
    #[test]
    fn getkeysandflags_reports_each_keys_flags() {
        let mut t = TestClient::new();
        let mut gkf = |args: &[&str]| {
            let mut v = vec!["COMMAND", "GETKEYSANDFLAGS"];
            v.extend_from_slice(args);
            t.run(&v)
        };
        assert_eq!(
            gkf(&["set", "k1", "v1"]),
            keyed(&[("k1", &["OW", "update"])])
        );
        assert_eq!(
            gkf(&["set", "k1", "v1", "get"]),
            keyed(&[("k1", &["RW", "access", "update"])])
        );
        assert_eq!(
            gkf(&["mset", "k1", "v1", "k2", "v2"]),
            keyed(&[("k1", &["OW", "update"]), ("k2", &["OW", "update"])])
        );
        assert_eq!(
            gkf(&["LMOVE", "k1", "k2", "left", "right"]),
            keyed(&[
                ("k1", &["RW", "access", "delete"]),
                ("k2", &["RW", "insert"])
            ])
        );
        assert_eq!(
            gkf(&["sort", "k1", "store", "k2"]),
            keyed(&[("k1", &["RO", "access"]), ("k2", &["OW", "update"])])
        );
        assert_eq!(
            gkf(&["sdiffstore", "d", "s1", "s2"]),
            keyed(&[
                ("d", &["OW", "update"]),
                ("s1", &["RO", "access"]),
                ("s2", &["RO", "access"])
            ])
        );
        assert_eq!(
            gkf(&["bitfield", "b", "get", "u8", "0"]),
            keyed(&[("b", &["RO", "access"])])
        );
        assert_eq!(
            gkf(&["bitfield", "b", "incrby", "u8", "0", "1"]),
            keyed(&[("b", &["RW", "access", "update"])])
        );
        assert_eq!(
            gkf(&["exists", "a", "b"]),
            keyed(&[("a", &["RO"]), ("b", &["RO"])])
        );
        assert_eq!(gkf(&["del", "a"]), keyed(&[("a", &["RM", "delete"])]));
        assert_eq!(
            gkf(&["eval", "return 1", "1", "a"]),
            keyed(&[("a", &["RW", "access", "update"])])
        );
    }

    /// COMMAND INFO has one key spec per distinct role, as Redis's: LMOVE's source
    /// and destination, SDIFFSTORE's destination and then its sources.
    #[test]
    fn command_info_key_specs_follow_the_keys_roles() {
        let mut t = TestClient::new();
        let spec = |f: &[&str], index: i64, lastkey: i64| {
            Reply::Map(vec![
                (bulk("flags"), flags(f)),
                (
                    bulk("begin_search"),
                    Reply::Map(vec![
                        (bulk("type"), bulk("index")),
                        (bulk("spec"), Reply::Map(vec![(bulk("index"), int(index))])),
                    ]),
                ),
                (
                    bulk("find_keys"),
                    Reply::Map(vec![
                        (bulk("type"), bulk("range")),
                        (
                            bulk("spec"),
                            Reply::Map(vec![
                                (bulk("lastkey"), int(lastkey)),
                                (bulk("keystep"), int(1)),
                                (bulk("limit"), int(0)),
                            ]),
                        ),
                    ]),
                ),
            ])
        };
        let mut specs_of = |name: &str| {
            let Reply::Array(v) = t.run(&["COMMAND", "INFO", name]) else {
                panic!()
            };
            let Reply::Array(entry) = &v[0] else { panic!() };
            entry[8].clone()
        };
        assert_eq!(
            specs_of("lmove"),
            Reply::Array(vec![
                spec(&["RW", "access", "delete"], 1, 0),
                spec(&["RW", "insert"], 2, 0)
            ])
        );
        assert_eq!(
            specs_of("sdiffstore"),
            Reply::Array(vec![
                spec(&["OW", "update"], 1, 0),
                spec(&["RO", "access"], 2, -1)
            ])
        );
        assert_eq!(
            specs_of("set"),
            Reply::Array(vec![spec(
                &["RW", "access", "update", "variable_flags"],
                1,
                0
            )])
        );
    }

    /// WAIT and WAITAOF block, but Redis lists them as `@slow @connection`
    /// commands without the `blocking` flag: `+@blocking` does not allow them.
    #[test]
    fn wait_commands_are_listed_as_in_redis() {
        let mut t = TestClient::new();
        for (name, flags) in [("wait", vec![]), ("waitaof", vec![s("noscript")])] {
            let Reply::Array(v) = t.run(&["COMMAND", "INFO", name]) else {
                panic!()
            };
            let Reply::Array(entry) = &v[0] else { panic!() };
            assert_eq!(entry[2], Reply::Set(flags), "{name}");
            assert_eq!(
                entry[6],
                Reply::Set(vec![s("@slow"), s("@connection")]),
                "{name}"
            );
        }
        let Reply::Array(blocking) = t.run(&["COMMAND", "LIST", "FILTERBY", "ACLCAT", "blocking"])
        else {
            panic!()
        };
        assert!(!blocking.contains(&bulk("wait")), "{blocking:?}");
        assert!(blocking.contains(&bulk("blpop")), "{blocking:?}");
    }

    /// MODULE: no module is loaded (JSON is built in); LOAD, LOADEX and UNLOAD
    /// are refused unless the config file's `enable-module-command` allows them,
    /// and then fail as Redis fails on a library it cannot load.
    #[test]
    fn module_lists_nothing_and_refuses_loads_as_redis() {
        let mut t = TestClient::new();
        let Reply::Array(help) = t.run(&["MODULE", "HELP"]) else {
            panic!()
        };
        assert!(
            matches!(&help[0], Reply::SimpleString(l) if l.starts_with("MODULE <subcommand> ")),
            "{help:?}"
        );
        assert_eq!(t.run(&["MODULE", "LIST"]), Reply::Array(vec![]));
        let refused = err("ERR MODULE command not allowed. If the enable-module-command option is set to \"local\", you can run it from a local connection, otherwise you need to set this option in the configuration file, and then restart the server.");
        assert_eq!(t.run(&["MODULE", "LOAD", "/tmp/x.so"]), refused);
        assert_eq!(t.run(&["MODULE", "LOADEX", "/tmp/x.so"]), refused);
        assert_eq!(t.run(&["MODULE", "UNLOAD", "ReJSON"]), refused);
        assert_eq!(
            t.run(&["CONFIG", "SET", "enable-module-command", "yes"]),
            err("ERR CONFIG SET failed (possibly related to argument 'enable-module-command') - can't set immutable config")
        );
        assert_eq!(
            t.run(&["MODULE", "NOPE"]),
            err("ERR unknown subcommand 'NOPE'. Try MODULE HELP.")
        );
        // As the config file would set it.
        t.store.config.set("enable-module-command", "yes").unwrap();
        assert_eq!(
            t.run(&["MODULE", "LOAD", "/tmp/x.so"]),
            err("ERR Error loading the extension. Please check the server logs.")
        );
        assert_eq!(
            t.run(&["MODULE", "UNLOAD", "ReJSON"]),
            err("ERR Error unloading module: no such module with that name")
        );
        let Reply::Array(l) = t.run(&["COMMAND", "LIST", "FILTERBY", "PATTERN", "module*"]) else {
            panic!()
        };
        assert_eq!(l.len(), 6, "{l:?}");
    }

    /// CLUSTER lists Redis 7.2's subcommands (each answered as by a Redis without
    /// cluster support), and SORT_RO is `movablekeys` with its key at 1, as in
    /// Redis's COMMAND INFO.
    #[test]
    fn cluster_subcommands_and_sort_ro_are_listed_as_in_redis() {
        let mut t = TestClient::new();
        let Reply::Array(l) = t.run(&["COMMAND", "LIST", "FILTERBY", "PATTERN", "cl*help"]) else {
            panic!()
        };
        assert!(l.contains(&bulk("client|help")), "{l:?}");
        assert!(l.contains(&bulk("cluster|help")), "{l:?}");
        let disabled = err("ERR This instance has cluster support disabled");
        assert_eq!(t.run(&["CLUSTER", "INFO"]), disabled);
        assert_eq!(t.run(&["CLUSTER", "HELP"]), disabled);
        assert_eq!(t.run(&["CLUSTER", "KEYSLOT", "k"]), disabled);
        assert_eq!(
            t.run(&["CLUSTER", "NOSUCH"]),
            err("ERR unknown subcommand 'NOSUCH'. Try CLUSTER HELP.")
        );
        assert_eq!(
            t.run(&["CLUSTER", "INFO", "x"]),
            err("ERR wrong number of arguments for 'cluster|info' command")
        );

        let Reply::Array(info) = t.run(&["COMMAND", "INFO", "sort_ro"]) else {
            panic!()
        };
        let Reply::Array(sort_ro) = &info[0] else {
            panic!("{info:?}")
        };
        let Reply::Set(flags) = &sort_ro[2] else {
            panic!("{sort_ro:?}")
        };
        assert!(
            flags.contains(&Reply::SimpleString("movablekeys".into())),
            "{flags:?}"
        );
        assert_eq!(
            &sort_ro[3..6],
            &[Reply::Int(1), Reply::Int(1), Reply::Int(1)]
        );
        let Reply::Array(info) = t.run(&["COMMAND", "INFO", "get"]) else {
            panic!()
        };
        let Reply::Array(get) = &info[0] else {
            panic!()
        };
        let Reply::Set(flags) = &get[2] else { panic!() };
        assert!(!flags.contains(&Reply::SimpleString("movablekeys".into())));
    }
}
