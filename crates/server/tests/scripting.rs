//! EVAL, EVALSHA, the _RO forms and SCRIPT through a running server: replies and
//! errors as Redis 7.2 gives them, atomicity with undeclared keys under several
//! worker threads, scripts inside MULTI, and what the AOF records.

mod common;

use common::*;

const LOCK_RELEASE: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then \
                            return redis.call('del', KEYS[1]) else return 0 end";

#[tokio::test]
async fn eval_and_evalsha_run_scripts_and_report_redis_errors() {
    let (server, _dir) = start().await;
    let mut c = Raw::connect(&server).await;
    assert_eq!(
        c.cmd(&["EVAL", "return {KEYS[1], ARGV[1], 3}", "1", "k", "a"])
            .await,
        V::Array(vec![V::bulk("k"), V::bulk("a"), V::Int(3)])
    );
    assert_eq!(
        c.cmd(&[
            "EVAL",
            "return redis.call('set', KEYS[1], ARGV[1])",
            "1",
            "k",
            "v"
        ])
        .await,
        V::Simple("OK".into())
    );
    let sha = c
        .cmd(&["SCRIPT", "LOAD", "return redis.call('get', KEYS[1])"])
        .await;
    let sha = sha.text();
    assert_eq!(sha.len(), 40);
    assert_eq!(c.cmd(&["EVALSHA", &sha, "1", "k"]).await, V::bulk("v"));
    assert_eq!(
        c.cmd(&["EVALSHA", &sha.to_uppercase(), "1", "k"]).await,
        V::bulk("v"),
        "SHAs compare without case"
    );
    assert_eq!(
        c.cmd(&[
            "SCRIPT",
            "EXISTS",
            &sha,
            "ffffffffffffffffffffffffffffffffffffffff"
        ])
        .await,
        V::Array(vec![V::Int(1), V::Int(0)])
    );
    // The exact errors clients key on.
    let noscript = V::Err("NOSCRIPT No matching script. Please use EVAL.".into());
    assert_eq!(
        c.cmd(&["EVALSHA", "ffffffffffffffffffffffffffffffffffffffff", "0"])
            .await,
        noscript
    );
    assert_eq!(c.cmd(&["EVALSHA", "short", "0"]).await, noscript);
    assert_eq!(
        c.cmd(&["EVAL", "return 1", "2", "a"]).await,
        V::Err("ERR Number of keys can't be greater than number of args".into())
    );
    assert_eq!(
        c.cmd(&["EVAL", "return 1", "-1"]).await,
        V::Err("ERR Number of keys can't be negative".into())
    );
    assert_eq!(
        c.cmd(&["EVAL", "return 1", "x"]).await,
        V::Err("ERR value is not an integer or out of range".into())
    );
    let compile = c.cmd(&["EVAL", "return (", "0"]).await;
    assert!(
        compile
            .text()
            .starts_with("ERR Error compiling script (new function): user_script:1:"),
        "{compile:?}"
    );
    let refused = c.cmd(&["EVAL", "return redis.call('multi')", "0"]).await;
    assert!(
        refused
            .text()
            .contains("This Redis command is not allowed from script"),
        "{refused:?}"
    );
    let unknown = c.cmd(&["EVAL", "return redis.call('nosuch')", "0"]).await;
    assert!(
        unknown
            .text()
            .contains("Unknown Redis command called from script"),
        "{unknown:?}"
    );
    // A command the thread's scripts called before (and so looks up from their
    // recent names) is still held to its arity, and a container to its
    // subcommand.
    let arity = c
        .cmd(&[
            "EVAL",
            "redis.call('set', 'k2', 'v') \
             local e = redis.pcall('set', 'k2') \
             return {e.err, redis.call('get', 'k2'), redis.call('object', 'encoding', 'k2')}",
            "0",
        ])
        .await;
    assert_eq!(
        arity,
        V::Array(vec![
            V::bulk("ERR Wrong number of args calling Redis command from script"),
            V::bulk("v"),
            V::bulk("embstr"),
        ])
    );
    let sub = c
        .cmd(&["EVAL", "return redis.call('object', 'nosuch', 'k2')", "0"])
        .await;
    assert!(
        sub.text()
            .contains("Unknown Redis command called from script"),
        "{sub:?}"
    );
    assert_eq!(c.cmd(&["SCRIPT", "FLUSH"]).await, V::Simple("OK".into()));
    assert_eq!(c.cmd(&["EVALSHA", &sha, "1", "k"]).await, noscript);
    assert_eq!(
        c.cmd(&["SCRIPT", "KILL"]).await,
        V::Err("NOTBUSY No scripts in execution right now.".into())
    );
    server.shutdown().await;
}

#[tokio::test]
async fn read_only_scripts_may_not_write() {
    let (server, _dir) = start().await;
    let mut c = Raw::connect(&server).await;
    c.cmd(&["SET", "k", "v"]).await;
    assert_eq!(
        c.cmd(&["EVAL_RO", "return redis.call('get', KEYS[1])", "1", "k"])
            .await,
        V::bulk("v")
    );
    let err = c
        .cmd(&["EVAL_RO", "return redis.call('del', KEYS[1])", "1", "k"])
        .await;
    assert!(
        err.text()
            .starts_with("ERR Write commands are not allowed from read-only scripts."),
        "{err:?}"
    );
    let err = c
        .cmd(&[
            "EVAL",
            "#!lua flags=no-writes\nreturn redis.call('del', KEYS[1])",
            "1",
            "k",
        ])
        .await;
    assert!(
        err.text()
            .starts_with("ERR Write commands are not allowed from read-only scripts."),
        "{err:?}"
    );
    assert_eq!(
        c.cmd(&["EVAL_RO", "#!lua\nreturn 1", "0"]).await,
        V::Err("ERR Can not execute a script with write flag using *_ro command.".into())
    );
    // Upstash's flag, which every @upstash/ratelimit script starts with.
    assert_eq!(
        c.cmd(&[
            "EVAL",
            "#!lua flags=allow-key-locking\nreturn redis.call('get', KEYS[1])",
            "1",
            "k"
        ])
        .await,
        V::bulk("v")
    );
    assert_eq!(c.cmd(&["GET", "k"]).await, V::bulk("v"));
    server.shutdown().await;
}

#[tokio::test]
async fn the_lock_release_script_deletes_only_its_own_lock() {
    let (server, _dir) = start().await;
    let mut c = Raw::connect(&server).await;
    c.cmd(&["SET", "lock", "token-a"]).await;
    assert_eq!(
        c.cmd(&["EVAL", LOCK_RELEASE, "1", "lock", "token-b"]).await,
        V::Int(0)
    );
    assert_eq!(c.cmd(&["GET", "lock"]).await, V::bulk("token-a"));
    assert_eq!(
        c.cmd(&["EVAL", LOCK_RELEASE, "1", "lock", "token-a"]).await,
        V::Int(1)
    );
    assert_eq!(c.cmd(&["EXISTS", "lock"]).await, V::Int(0));
    server.shutdown().await;
}

#[tokio::test]
async fn scripts_run_inside_multi_and_break_watch() {
    let (server, _dir) = start().await;
    let mut c = Raw::connect(&server).await;
    let mut other = Raw::connect(&server).await;
    assert_eq!(c.cmd(&["MULTI"]).await, V::Simple("OK".into()));
    assert_eq!(
        c.cmd(&["EVAL", "return redis.call('incr', KEYS[1])", "1", "n"])
            .await,
        V::Simple("QUEUED".into())
    );
    assert_eq!(c.cmd(&["INCR", "n"]).await, V::Simple("QUEUED".into()));
    assert_eq!(c.cmd(&["EXEC"]).await, V::Array(vec![V::Int(1), V::Int(2)]));
    // A script's write to a watched key makes the watcher's EXEC fail.
    assert_eq!(c.cmd(&["WATCH", "n"]).await, V::Simple("OK".into()));
    other
        .cmd(&["EVAL", "return redis.call('incr', 'n')", "0"])
        .await;
    c.cmd(&["MULTI"]).await;
    c.cmd(&["INCR", "n"]).await;
    assert_eq!(c.cmd(&["EXEC"]).await, V::Nil);
    server.shutdown().await;
}

/// Transfers between accounts from several clients on four worker threads, by
/// scripts that name their keys, by scripts that build the key names themselves
/// (the shards they lock lazily), and by MULTI/EXEC of plain commands (several
/// shards under the shared gate), against plain INCRBY traffic on other keys (one
/// shard each): the total, summed by a script and by an MGET, is the same after
/// every round, so no transfer ever interleaved with another or with a reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scripts_are_atomic_even_with_undeclared_keys() {
    const ACCOUNTS: usize = 8;
    const CLIENTS: usize = 8;
    const ROUNDS: usize = 200;
    let (server, _dir) = start().await;
    let mut setup = Raw::connect(&server).await;
    for a in 0..ACCOUNTS {
        setup.cmd(&["SET", &format!("acct:{a}"), "1000"]).await;
    }
    let declared = "local from = tonumber(redis.call('get', KEYS[1])) \
                    if from < tonumber(ARGV[1]) then return 0 end \
                    redis.call('decrby', KEYS[1], ARGV[1]) \
                    redis.call('incrby', KEYS[2], ARGV[1]) return 1";
    let undeclared = "local f = 'acct:' .. ARGV[2] local t = 'acct:' .. ARGV[3] \
                      local from = tonumber(redis.call('get', f)) \
                      if from < tonumber(ARGV[1]) then return 0 end \
                      redis.call('decrby', f, ARGV[1]) \
                      redis.call('incrby', t, ARGV[1]) return 1";
    // The same transfer as a function, touching keys it was not given.
    let lib = "#!lua name=bank\nredis.register_function('transfer', function(keys, args) \
               local f = 'acct:' .. args[2] local t = 'acct:' .. args[3] \
               if tonumber(redis.call('get', f)) < tonumber(args[1]) then return 0 end \
               redis.call('decrby', f, args[1]) redis.call('incrby', t, args[1]) return 1 end)";
    assert_eq!(
        setup.cmd(&["FUNCTION", "LOAD", lib]).await,
        V::Bulk(b"bank".to_vec())
    );
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let addr = server.resp_addr;
        tasks.push(tokio::spawn(async move {
            let s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut c = Raw {
                r: tokio::io::BufReader::new(s),
            };
            let mut seed = client as u64 * 7919 + 1;
            for round in 0..ROUNDS {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let from = (seed >> 33) as usize % ACCOUNTS;
                let to = (from + 1 + (seed >> 40) as usize % (ACCOUNTS - 1)) % ACCOUNTS;
                let amount = ((seed >> 20) % 50 + 1).to_string();
                let (f, t) = (format!("acct:{from}"), format!("acct:{to}"));
                match (client + round) % 4 {
                    0 => {
                        let reply = c.cmd(&["EVAL", declared, "2", &f, &t, &amount]).await;
                        assert!(matches!(reply, V::Int(0 | 1)), "{reply:?}");
                    }
                    1 => {
                        let (fs, ts) = (from.to_string(), to.to_string());
                        let reply = c.cmd(&["EVAL", undeclared, "0", &amount, &fs, &ts]).await;
                        assert!(matches!(reply, V::Int(0 | 1)), "{reply:?}");
                    }
                    2 => {
                        let (fs, ts) = (from.to_string(), to.to_string());
                        let reply = c.cmd(&["FCALL", "transfer", "0", &amount, &fs, &ts]).await;
                        assert!(matches!(reply, V::Int(0 | 1)), "{reply:?}");
                    }
                    _ => {
                        c.cmd(&["MULTI"]).await;
                        c.cmd(&["DECRBY", &f, "1"]).await;
                        c.cmd(&["INCRBY", &t, "1"]).await;
                        let reply = c.cmd(&["EXEC"]).await;
                        assert!(
                            matches!(reply, V::Array(ref r) if r.len() == 2),
                            "{reply:?}"
                        );
                    }
                }
                c.cmd(&["INCRBY", &format!("noise:{client}"), "1"]).await;
            }
        }));
    }
    let mut sum_checks = 0;
    let mut checker = Raw::connect(&server).await;
    let sum_script = "local s = 0 for i = 0, 7 do s = s + tonumber(redis.call('get', 'acct:' .. i)) end return s";
    let accounts: Vec<String> = (0..ACCOUNTS).map(|a| format!("acct:{a}")).collect();
    let mut mget = vec!["MGET"];
    mget.extend(accounts.iter().map(String::as_str));
    while tasks.iter().any(|t| !t.is_finished()) && sum_checks < 500 {
        assert_eq!(checker.cmd(&["EVAL", sum_script, "0"]).await, V::Int(8000));
        let V::Array(values) = checker.cmd(&mget).await else {
            panic!("MGET did not answer an array")
        };
        let sum: i64 = values
            .iter()
            .map(|v| match v {
                V::Bulk(b) => std::str::from_utf8(b).unwrap().parse::<i64>().unwrap(),
                other => panic!("{other:?}"),
            })
            .sum();
        assert_eq!(sum, 8000, "MGET saw a transfer half done");
        sum_checks += 1;
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(checker.cmd(&["EVAL", sum_script, "0"]).await, V::Int(8000));
    server.shutdown().await;
}

/// Sends `args` from several connections at once, each on a task of its own (so
/// that the worker threads, each with Lua states of its own, all serve some), and
/// checks every reply.
async fn on_every_thread(server: &tidewire_server::Server, args: &[&str], want: &V) {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let addr = server.resp_addr;
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        tasks.push(tokio::spawn(async move {
            let s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut c = Raw {
                r: tokio::io::BufReader::new(s),
            };
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut replies = Vec::new();
            for _ in 0..20 {
                replies.push(c.cmd(&args).await);
                tokio::task::yield_now().await;
            }
            replies
        }));
    }
    for t in tasks {
        for reply in t.await.unwrap() {
            assert_eq!(&reply, want, "{args:?}");
        }
    }
}

/// Each worker thread runs scripts in Lua states of its own: a script loaded on
/// one connection runs on all, and SCRIPT FLUSH and every change of the libraries
/// reach every thread's state before its next run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn script_and_library_changes_reach_every_worker_thread() {
    let (server, _dir) = start().await;
    let mut c = Raw::connect(&server).await;
    let V::Bulk(sha) = c.cmd(&["SCRIPT", "LOAD", "return 'loaded'"]).await else {
        panic!("SCRIPT LOAD did not answer a SHA")
    };
    let sha = String::from_utf8(sha).unwrap();
    on_every_thread(&server, &["EVALSHA", &sha, "0"], &V::bulk("loaded")).await;
    assert_eq!(c.cmd(&["SCRIPT", "FLUSH"]).await, V::Simple("OK".into()));
    let noscript = V::Err("NOSCRIPT No matching script. Please use EVAL.".into());
    on_every_thread(&server, &["EVALSHA", &sha, "0"], &noscript).await;

    let lib = |n: u32| {
        format!("#!lua name=which\nredis.register_function('which', function() return {n} end)")
    };
    assert_eq!(
        c.cmd(&["FUNCTION", "LOAD", &lib(1)]).await,
        V::bulk("which")
    );
    on_every_thread(&server, &["FCALL", "which", "0"], &V::Int(1)).await;
    let replaced = c.cmd(&["FUNCTION", "LOAD", "REPLACE", &lib(2)]).await;
    assert_eq!(replaced, V::bulk("which"));
    on_every_thread(&server, &["FCALL", "which", "0"], &V::Int(2)).await;
    // A library that fails to load changes nothing on any thread.
    let broken = "#!lua name=which\nredis.register_function('which', 'x')";
    assert!(matches!(
        c.cmd(&["FUNCTION", "LOAD", "REPLACE", broken]).await,
        V::Err(_)
    ));
    on_every_thread(&server, &["FCALL", "which", "0"], &V::Int(2)).await;
    assert_eq!(
        c.cmd(&["FUNCTION", "DELETE", "which"]).await,
        V::Simple("OK".into())
    );
    let gone = V::Err("ERR Function not found".into());
    on_every_thread(&server, &["FCALL", "which", "0"], &gone).await;
    server.shutdown().await;
}

/// Scripts that recurse to Lua's limits get an error or a value, and the server
/// carries on (pcall recursion once aborted a debug build through a Lua API
/// assertion).
#[tokio::test]
async fn runaway_recursion_costs_only_its_script() {
    let (server, _dir) = start().await;
    let mut c = Raw::connect(&server).await;
    let deep = c
        .cmd(&[
            "EVAL",
            "local function f(n) return 1 + f(n) end return f(1)",
            "0",
        ])
        .await;
    assert!(deep.text().contains("stack overflow"), "{deep:?}");
    // Its reply is Lua's business (Redis answers 1); the server must survive it.
    c.cmd(&[
        "EVAL",
        "local function f() return pcall(f) end return f()",
        "0",
    ])
    .await;
    let big = c
        .cmd(&[
            "EVAL",
            "local t = {} for i = 1, 100000 do t[i] = i end return #t",
            "0",
        ])
        .await;
    assert_eq!(big, V::Int(100000));
    assert_eq!(c.cmd(&["PING"]).await, V::Simple("PONG".into()));
    server.shutdown().await;
}
