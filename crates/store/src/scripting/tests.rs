use std::collections::HashMap;

use bytes::Bytes;

use super::*;

/// A HashMap-backed host: GET/SET/INCR/DEL/PING/HGETALL, counting interrupts.
#[derive(Default)]
struct Fake {
    kv: HashMap<Vec<u8>, Vec<u8>>,
    interrupts: usize,
    kill_after: Option<usize>,
    resp: Option<Protocol>,
    repl: Option<u8>,
}

impl ScriptHost for Fake {
    fn call(&mut self, argv: &[Bytes]) -> Reply {
        let name = String::from_utf8_lossy(&argv[0]).to_ascii_lowercase();
        match (name.as_str(), argv.len()) {
            ("get", 2) => match self.kv.get(&argv[1][..]) {
                Some(v) => Reply::Bulk(Bytes::copy_from_slice(v)),
                None => Reply::Null,
            },
            ("set", 3) => {
                self.kv.insert(argv[1].to_vec(), argv[2].to_vec());
                Reply::ok()
            }
            ("incr", 2) => {
                let cur = self
                    .kv
                    .get(&argv[1][..])
                    .map(|v| String::from_utf8_lossy(v).to_string());
                match cur.unwrap_or_else(|| "0".into()).parse::<i64>() {
                    Ok(n) => {
                        self.kv
                            .insert(argv[1].to_vec(), (n + 1).to_string().into_bytes());
                        Reply::Int(n + 1)
                    }
                    Err(_) => Reply::Error("ERR value is not an integer or out of range".into()),
                }
            }
            ("del", 2) => Reply::Int(self.kv.remove(&argv[1][..]).is_some() as i64),
            ("ping", 1) => Reply::Status("PONG"),
            ("ping", 2) => Reply::Bulk(argv[1].clone()),
            ("echoargs", _) => Reply::Array(argv[1..].iter().cloned().map(Reply::Bulk).collect()),
            ("hgetall", 2) => {
                Reply::Map(vec![(Reply::bulk_str("field"), Reply::bulk_str("value"))])
            }
            ("resp3", 2) => match &argv[1][..] {
                b"double" => Reply::Double(3.5),
                b"bool" => Reply::Bool(true),
                b"big" => Reply::BigNumber("12345678901234567890".into()),
                b"verb" => Reply::Verbatim("txt", Bytes::from_static(b"hi")),
                b"set" => Reply::Set(vec![Reply::bulk_str("a")]),
                b"null" => Reply::Null,
                _ => Reply::NullArray,
            },
            ("get" | "set" | "incr" | "del", _) => {
                Reply::Error("ERR Wrong number of args calling Redis command from script".into())
            }
            _ => Reply::Error("ERR Unknown Redis command called from script".into()),
        }
    }
    fn interrupt(&mut self) -> Option<String> {
        self.interrupts += 1;
        match self.kill_after {
            Some(n) if self.interrupts >= n => {
                Some("ERR Script killed by user with SCRIPT KILL...".into())
            }
            _ => None,
        }
    }
    fn acl_check(&mut self, argv: &[Bytes]) -> Result<bool, String> {
        match &argv[0][..] {
            b"set" => Ok(true),
            b"hset" => Ok(false),
            _ => Err("ERR Invalid command passed to redis.acl_check_cmd()".into()),
        }
    }
    fn set_resp(&mut self, resp: Protocol) {
        self.resp = Some(resp);
    }
    fn set_repl(&mut self, flags: u8) {
        self.repl = Some(flags);
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn eval_full(env: &mut LuaEnv, host: &mut Fake, body: &str, keys: &[&str], args: &[&str]) -> Reply {
    let sha = sha1_hex(body.as_bytes());
    if let Err(e) = env.compile(&sha, body.as_bytes()) {
        return Reply::Error(e);
    }
    let keys: Vec<Bytes> = keys.iter().map(|k| b(k)).collect();
    let args: Vec<Bytes> = args.iter().map(|k| b(k)).collect();
    let (reply, back) = env.run(&sha, &keys, &args, std::mem::take(host));
    *host = back;
    reply
}

fn eval(body: &str) -> Reply {
    eval_full(&mut LuaEnv::new(), &mut Fake::default(), body, &[], &[])
}

fn err(r: Reply) -> String {
    match r {
        Reply::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn bulk(s: &str) -> Reply {
    Reply::bulk_str(s)
}

#[test]
fn scripting_sha1_and_redis_sha1hex() {
    assert_eq!(sha1_hex(b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    assert_eq!(
        sha1_hex(b"return 1+1"),
        "a27e7e8a43702b7046d4f6a7ccf5b60cef6b9bd9"
    );
    assert_eq!(
        eval("return {redis.sha1hex(''), redis.sha1hex('Pizza & Mandolino')}"),
        Reply::Array(vec![
            bulk("da39a3ee5e6b4b0d3255bfef95601890afd80709"),
            bulk("74822d82031af7493c20eefa13bd07ec4fada82f")
        ])
    );
    let sha = sha1_hex(b"redis.sha1hex()");
    assert_eq!(
        err(eval("redis.sha1hex()")),
        format!("ERR wrong number of arguments script: {sha}, on @user_script:1.")
    );
}

#[test]
fn scripting_shebang() {
    assert_eq!(parse_shebang(b"return 1"), Ok(ScriptFlags::default()));
    let f = parse_shebang(b"#!lua flags=no-writes,allow-oom,allow-key-locking\nreturn 1").unwrap();
    assert!(f.shebang && f.no_writes && f.allow_oom && f.allow_key_locking && !f.allow_stale);
    let f = parse_shebang(b"#!lua flags=allow-stale,no-cluster,allow-cross-slot-keys\n").unwrap();
    assert!(f.allow_stale && f.no_cluster && f.allow_cross_slot_keys);
    assert_eq!(
        parse_shebang(b"#!lua\nreturn 1").unwrap(),
        ScriptFlags {
            shebang: true,
            ..Default::default()
        }
    );
    assert_eq!(
        parse_shebang(b"#!lua name=x\n"),
        Err("ERR Unknown lua shebang option: name=x".into())
    );
    assert_eq!(
        parse_shebang(b"#!lua flags=bad-flag\n"),
        Err("ERR Unexpected flag in script shebang: bad-flag".into())
    );
    assert_eq!(
        parse_shebang(b"#!python\n"),
        Err("ERR Unexpected engine in script shebang: #!python".into())
    );
    assert_eq!(
        parse_shebang(b"#!lua"),
        Err("ERR Invalid script shebang".into())
    );
    assert_eq!(
        parse_shebang(b"#!lua \"x\n"),
        Err("ERR Invalid engine in script shebang".into())
    );
    // The shebang line is skipped but its line feed kept: line numbers stay the user's.
    let body = "#!lua\nreturn a";
    let sha = sha1_hex(body.as_bytes());
    let r = eval(body);
    assert_eq!(err(r), format!("ERR user_script:2: Script attempted to access nonexistent global variable 'a' script: {sha}, on @user_script:2."));
    assert_eq!(
        err(eval("#!lua flags=nope\nreturn 1")),
        "ERR Unexpected flag in script shebang: nope"
    );
}

#[test]
fn scripting_compile_errors() {
    let mut env = LuaEnv::new();
    assert_eq!(
        env.compile("x", b"local a = end"),
        Err("ERR Error compiling script (new function): user_script:1: unexpected symbol near 'end'".into())
    );
    assert_eq!(
        env.compile("y", b"local a = 1\nfoo bar"),
        Err(
            "ERR Error compiling script (new function): user_script:2: '=' expected near 'bar'"
                .into()
        )
    );
    assert!(env.is_empty());
    env.compile("ABC", b"return 1").unwrap();
    assert!(env.contains("abc") && env.len() == 1);
    env.flush();
    assert!(!env.contains("abc") && env.is_empty());
    let (r, _) = env.run("abc", &[], &[], Fake::default());
    assert!(err(r).starts_with("NOSCRIPT"));
}

#[test]
fn scripting_lua_to_reply() {
    assert_eq!(eval("return 100.5"), Reply::Int(100));
    assert_eq!(eval("return -3.9"), Reply::Int(-3));
    assert_eq!(eval("return 'hello world'"), bulk("hello world"));
    assert_eq!(eval("return true"), Reply::Int(1));
    assert_eq!(eval("return false"), Reply::Null);
    assert_eq!(eval("return nil"), Reply::Null);
    assert_eq!(
        eval("return {ok='fine'}"),
        Reply::SimpleString("fine".into())
    );
    assert_eq!(
        eval("return {ok='a\\r\\nb'}"),
        Reply::SimpleString("a  b".into())
    );
    assert_eq!(
        err(eval("return {err='ERR this is an error'}")),
        "ERR this is an error"
    );
    assert_eq!(err(eval("return {err='My Error'}")), "My Error");
    assert_eq!(
        eval("return {1,2,3,'ciao',{1,2}}"),
        Reply::Array(vec![
            Reply::Int(1),
            Reply::Int(2),
            Reply::Int(3),
            bulk("ciao"),
            Reply::Array(vec![Reply::Int(1), Reply::Int(2)])
        ])
    );
    // arrays stop at the first nil
    assert_eq!(eval("return {1,nil,3}"), Reply::Array(vec![Reply::Int(1)]));
    assert_eq!(eval("return _G"), Reply::Array(vec![]));
    assert_eq!(
        eval("local a = {}; setmetatable(a,{__index=function() foo() end}) return a"),
        Reply::Array(vec![])
    );
    // RESP3-only shapes, and booleans after setresp(3)
    assert_eq!(eval("return {double=3.25}"), Reply::Double(3.25));
    assert_eq!(
        eval("return {big_number='123'}"),
        Reply::BigNumber("123".into())
    );
    assert_eq!(
        eval("return {verbatim_string={format='txt', string='hi'}}"),
        Reply::Verbatim("txt", b("hi"))
    );
    assert_eq!(
        eval("return {map={a=1}}"),
        Reply::Map(vec![(bulk("a"), Reply::Int(1))])
    );
    assert_eq!(eval("return {set={a=true}}"), Reply::Set(vec![bulk("a")]));
    assert_eq!(
        eval("redis.setresp(3) return {true, false}"),
        Reply::Array(vec![Reply::Bool(true), Reply::Bool(false)])
    );
    assert_eq!(
        eval("redis.setresp(2) return {true, false}"),
        Reply::Array(vec![Reply::Int(1), Reply::Null])
    );
    assert_eq!(eval("return {KEYS[1], ARGV[1]}"), Reply::Array(vec![]));
    let r = eval_full(
        &mut LuaEnv::new(),
        &mut Fake::default(),
        "return {KEYS[1],KEYS[2],ARGV[1],ARGV[2]}",
        &["a", "b"],
        &["c", "d"],
    );
    assert_eq!(
        r,
        Reply::Array(vec![bulk("a"), bulk("b"), bulk("c"), bulk("d")])
    );
}

fn depth(r: &Reply) -> usize {
    match r {
        Reply::Array(v) if !v.is_empty() => 1 + depth(&v[0]),
        _ => 0,
    }
}

#[test]
fn scripting_recursive_return_is_bounded() {
    let r = eval("local a = {}; local b = {a}; a[1] = b; return a");
    let mut cur = &r;
    while let Reply::Array(v) = cur {
        cur = &v[0];
    }
    assert_eq!(cur, &Reply::Error("ERR reached lua stack limit".into()));
    assert_eq!(depth(&r), 201);
    // huge flat returns are fine
    match eval("local t = {} for i=1,200000 do t[i]=i end return t") {
        Reply::Array(v) => assert_eq!(v.len(), 200000),
        other => panic!("{other:?}"),
    }
}

#[test]
fn scripting_reply_to_lua() {
    let mut env = LuaEnv::new();
    let mut h = Fake::default();
    let body = "local r = redis.call('get','nokey') return {type(r), tostring(r)}";
    assert_eq!(
        eval_full(&mut env, &mut h, body, &[], &[]),
        Reply::Array(vec![bulk("boolean"), bulk("false")])
    );
    let body = "redis.setresp(3) local r = redis.call('get','nokey') return type(r)";
    assert_eq!(eval_full(&mut env, &mut h, body, &[], &[]), bulk("nil"));
    assert_eq!(h.resp, Some(Protocol::Resp3));
    // each run starts in RESP2 again
    assert_eq!(
        eval_full(&mut env, &mut h, "return 1", &[], &[]),
        Reply::Int(1)
    );
    assert_eq!(h.resp, Some(Protocol::Resp2));
    assert_eq!(
        eval_full(&mut env, &mut h, "return redis.call('ping').ok", &[], &[]),
        bulk("PONG")
    );
    assert_eq!(
        eval_full(&mut env, &mut h, "return redis.call('ping')", &[], &[]),
        Reply::SimpleString("PONG".into())
    );
    assert_eq!(
        eval_full(
            &mut env,
            &mut h,
            "return type(redis.call('incr','n'))",
            &[],
            &[]
        ),
        bulk("number")
    );
    // RESP2 sees RESP3 shapes in their RESP2 forms
    let body = "return {redis.call('hgetall','h'), redis.call('resp3','double'), redis.call('resp3','bool'), redis.call('resp3','big'), redis.call('resp3','verb')}";
    assert_eq!(
        eval_full(&mut env, &mut h, body, &[], &[]),
        Reply::Array(vec![
            Reply::Array(vec![bulk("field"), bulk("value")]),
            bulk("3.5"),
            Reply::Int(1),
            bulk("12345678901234567890"),
            bulk("hi")
        ])
    );
    let body = "redis.setresp(3) local m = redis.call('hgetall','h') local d = redis.call('resp3','double') \
        local v = redis.call('resp3','verb') local s = redis.call('resp3','set') \
        return {m.map.field, d.double, redis.call('resp3','bool'), redis.call('resp3','big').big_number, v.verbatim_string.format, v.verbatim_string.string, tostring(s.set.a)}";
    assert_eq!(
        eval_full(&mut env, &mut h, body, &[], &[]),
        Reply::Array(vec![
            bulk("value"),
            Reply::Int(3),
            Reply::Bool(true),
            bulk("12345678901234567890"),
            bulk("txt"),
            bulk("hi"),
            bulk("true")
        ])
    );
    // RESP3 map round-trips as a map
    assert_eq!(
        eval_full(
            &mut env,
            &mut h,
            "redis.setresp(3) return redis.call('hgetall','h')",
            &[],
            &[]
        ),
        Reply::Map(vec![(bulk("field"), bulk("value"))])
    );
    // argument conversion
    let body = "return redis.call('echoargs', 1, 9007199254740991, 1.5, -2, 'x')";
    assert_eq!(
        eval_full(&mut env, &mut h, body, &[], &[]),
        Reply::Array(vec![
            bulk("1"),
            bulk("9007199254740991"),
            bulk("1.5"),
            bulk("-2"),
            bulk("x")
        ])
    );
    let body = "redis.call('set', KEYS[1], ARGV[1]) return redis.call('get', KEYS[1])";
    assert_eq!(eval_full(&mut env, &mut h, body, &["k"], &["v"]), bulk("v"));
}

#[test]
fn scripting_call_and_pcall_errors() {
    let mut env = LuaEnv::new();
    let mut h = Fake::default();
    let run = |env: &mut LuaEnv, h: &mut Fake, body: &str| eval_full(env, h, body, &[], &[]);
    let body = "redis.call('nosuchcommand')";
    let sha = sha1_hex(body.as_bytes());
    assert_eq!(
        err(run(&mut env, &mut h, body)),
        format!("ERR Unknown Redis command called from script script: {sha}, on @user_script:1.")
    );
    let body = "\nredis.call('get','a','b','c')";
    let sha = sha1_hex(body.as_bytes());
    assert_eq!(err(run(&mut env, &mut h, body)), format!("ERR Wrong number of args calling Redis command from script script: {sha}, on @user_script:2."));
    let e = err(run(&mut env, &mut h, "redis.call()"));
    assert!(
        e.starts_with("ERR Please specify at least one argument for this redis lib call script: "),
        "{e}"
    );
    assert!(err(run(&mut env, &mut h, "redis.call('ping', {})"))
        .starts_with("ERR Lua redis lib command arguments must be strings or integers script: "));
    // pcall returns the error table instead
    let body =
        "local t = redis.pcall('nosuch') return {t.err, tostring(t.ignore_error_stats_update)}";
    assert_eq!(
        run(&mut env, &mut h, body),
        Reply::Array(vec![
            bulk("ERR Unknown Redis command called from script"),
            bulk("true")
        ])
    );
    assert_eq!(
        err(run(&mut env, &mut h, "return redis.pcall('nosuch')")),
        "ERR Unknown Redis command called from script"
    );
    assert_eq!(
        run(&mut env, &mut h, "return redis.pcall()['err']"),
        bulk("ERR Please specify at least one argument for this redis lib call")
    );
    h.kv.insert(b"s".to_vec(), b"abc".to_vec());
    assert_eq!(
        err(run(&mut env, &mut h, "return redis.pcall('incr','s')")),
        "ERR value is not an integer or out of range"
    );
    // Lua's pcall turns the error table into its text
    let body = "local ok, e = pcall(function() redis.call('nosuch') end) return {tostring(ok), e}";
    assert_eq!(
        run(&mut env, &mut h, body),
        Reply::Array(vec![
            bulk("false"),
            bulk("ERR Unknown Redis command called from script")
        ])
    );
    let body = "local status, res = pcall(function() return foo end); return 'status: ' .. tostring(status) .. ' result: ' .. res";
    assert_eq!(run(&mut env, &mut h, body), bulk("status: false result: user_script:1: Script attempted to access nonexistent global variable 'foo'"));
    // errors raised by the script
    let body = "error('boom')";
    let sha = sha1_hex(body.as_bytes());
    assert_eq!(
        err(run(&mut env, &mut h, body)),
        format!("ERR user_script:1: boom script: {sha}, on @user_script:1.")
    );
    let body = "error({err='MYCODE custom'})";
    let sha = sha1_hex(body.as_bytes());
    assert_eq!(
        err(run(&mut env, &mut h, body)),
        format!("MYCODE custom script: {sha}, on @user_script:1.")
    );
    let body = "local x = nil\nreturn x.y";
    let sha = sha1_hex(body.as_bytes());
    assert_eq!(err(run(&mut env, &mut h, body)), format!("ERR user_script:2: attempt to index local 'x' (a nil value) script: {sha}, on @user_script:2."));
    // error_reply / status_reply
    assert_eq!(
        err(run(
            &mut env,
            &mut h,
            "return redis.error_reply('MY_ERR_CODE custom msg')"
        )),
        "MY_ERR_CODE custom msg"
    );
    assert_eq!(
        err(run(&mut env, &mut h, "return redis.error_reply('-NOPE x')")),
        "NOPE x"
    );
    assert_eq!(
        err(run(&mut env, &mut h, "return redis.error_reply('')")),
        "ERR "
    );
    assert_eq!(
        err(run(&mut env, &mut h, "return redis.error_reply(1)")),
        "ERR wrong number or type of arguments"
    );
    assert_eq!(
        run(
            &mut env,
            &mut h,
            "return redis.status_reply('MY_OK_CODE custom msg')"
        ),
        Reply::SimpleString("MY_OK_CODE custom msg".into())
    );
}

#[test]
fn scripting_redis_api_misc() {
    let mut env = LuaEnv::new();
    let mut h = Fake::default();
    let mut run = |body: &str| eval_full(&mut env, &mut h, body, &[], &[]);
    assert_eq!(run("return redis.REDIS_VERSION"), bulk("7.2.4"));
    assert_eq!(
        run("return redis.REDIS_VERSION_NUM"),
        Reply::Int(0x00070204)
    );
    assert_eq!(
        run("return {redis.LOG_DEBUG, redis.LOG_VERBOSE, redis.LOG_NOTICE, redis.LOG_WARNING}"),
        Reply::Array((0..4).map(Reply::Int).collect())
    );
    assert_eq!(run("return {redis.REPL_NONE, redis.REPL_AOF, redis.REPL_SLAVE, redis.REPL_REPLICA, redis.REPL_ALL}"), Reply::Array([0, 1, 2, 2, 3].into_iter().map(Reply::Int).collect()));
    assert_eq!(run("return redis.replicate_commands()"), Reply::Int(1));
    assert_eq!(
        run("redis.log(redis.LOG_WARNING, 'hello', 1) redis.debug('x') return redis.breakpoint()"),
        Reply::Null
    );
    assert!(err(run("redis.log(redis.LOG_WARNING)"))
        .starts_with("ERR redis.log() requires two arguments or more. script:"));
    assert!(err(run("redis.log('x', 'y')"))
        .starts_with("ERR First argument must be a number (log level). script:"));
    assert!(err(run("redis.log(9, 'y')")).starts_with("ERR Invalid debug level. script:"));
    assert!(err(run("redis.setresp(4)")).starts_with("ERR RESP version must be 2 or 3. script:"));
    assert!(err(run("redis.setresp()"))
        .starts_with("ERR redis.setresp() requires one argument. script:"));
    assert!(err(run("redis.set_repl(8)")).starts_with(
        "ERR Invalid replication flags. Use REPL_AOF, REPL_REPLICA, REPL_ALL or REPL_NONE. script:"
    ));
    assert_eq!(
        run("redis.set_repl(redis.REPL_AOF) return 1"),
        Reply::Int(1)
    );
    assert_eq!(
        run("return {redis.acl_check_cmd('set','xx',1), redis.acl_check_cmd('hset','xx','f',1)}"),
        Reply::Array(vec![Reply::Int(1), Reply::Null])
    );
    let e = err(run(
        "local r = redis.acl_check_cmd('invalid-cmd','arg') return r",
    ));
    assert!(
        e.starts_with("ERR Invalid command passed to redis.acl_check_cmd() script:"),
        "{e}"
    );
    assert_eq!(h.repl, Some(1));
}

#[test]
fn scripting_protected_globals() {
    let body = "return a";
    let sha = sha1_hex(body.as_bytes());
    assert_eq!(err(eval(body)), format!("ERR user_script:1: Script attempted to access nonexistent global variable 'a' script: {sha}, on @user_script:1."));
    let body = "a=10";
    let sha = sha1_hex(body.as_bytes());
    assert_eq!(err(eval(body)), format!("ERR user_script:1: Attempt to modify a readonly table script: {sha}, on @user_script:1."));
    for body in [
        "setmetatable(_G, {})",
        "local g = getmetatable(_G) g.__index = {}",
        "redis = function() return 1 end",
        "_G = {}",
        "redis.call = function() return 1 end",
        "cjson.encode = function() return 1 end",
        "cmsgpack.pack = function() return 1 end",
        "bit.lshift = function() return 1 end",
        "string.rep = nil",
        "rawset(_G, 'x', 1)",
        "rawset(redis, 'x', 1)",
        "getmetatable('').__index.x = 1",
        "getmetatable('').__index = {}",
        "loadstring('y = 1')()",
        "setfenv(1, getfenv(0)) z = 1",
    ] {
        let e = err(eval(body));
        assert!(
            e.contains("Attempt to modify a readonly table"),
            "{body}: {e}"
        );
    }
    for name in [
        "loadfile", "dofile", "print", "os", "io", "require", "debug", "package", "module",
    ] {
        let e = err(eval(&format!("{name}('some file')")));
        assert!(
            e.contains(&format!(
                "Script attempted to access nonexistent global variable '{name}'"
            )),
            "{name}: {e}"
        );
    }
    // what stays available
    let body = "return {type(string.rep), type(table.concat), type(math.floor), type(coroutine.create), type(unpack), \
        type(tonumber), type(rawget), type(rawequal), type(gcinfo), type(loadstring), type(getfenv), type(newproxy), \
        type(select), type(xpcall), type(_VERSION), type(collectgarbage), type(struct.pack), type(cjson.null)}";
    assert_eq!(
        eval(body),
        Reply::Array(
            [
                "function", "function", "function", "function", "function", "function", "function",
                "function", "function", "function", "function", "function", "function", "function",
                "string", "function", "function", "userdata"
            ]
            .into_iter()
            .map(bulk)
            .collect()
        )
    );
    // iteration and raw access still see the protected tables' contents
    assert_eq!(
        eval("local n = 0 for k in pairs(redis) do n = n + 1 end return n > 15"),
        Reply::Int(1)
    );
    assert_eq!(eval("return rawget(_G, 'redis') == redis"), Reply::Int(1));
    assert_eq!(
        eval("local n = 0 for k, v in pairs(_G) do n = n + 1 end return n > 20"),
        Reply::Int(1)
    );
    assert_eq!(eval("return ('abc'):upper()"), bulk("ABC"));
    // local tables, KEYS and ARGV stay writable
    assert_eq!(eval("local t = {} t.x = 1 setmetatable(t, {}) rawset(t, 'y', 2) KEYS[1] = 'k' return {t.x, t.y, KEYS[1]}"), Reply::Array(vec![Reply::Int(1), Reply::Int(2), bulk("k")]));
    // binary chunks are refused
    assert!(err(eval(
        "return loadstring(string.dump(function() return 1 end))()"
    ))
    .contains("attempt to call a nil value"));
    assert_eq!(eval("return loadstring('return 1 + 1')()"), Reply::Int(2));
}

#[test]
fn scripting_math_random_is_seedable() {
    let mut env = LuaEnv::new();
    let mut h = Fake::default();
    let body = "math.randomseed(ARGV[1]); return tostring(math.random())";
    let r1 = eval_full(&mut env, &mut h, body, &[], &["10"]);
    let r2 = eval_full(&mut env, &mut h, body, &[], &["10"]);
    let r3 = eval_full(&mut env, &mut h, body, &[], &["20"]);
    assert_eq!(r1, r2);
    assert_ne!(r2, r3);
    let body = "return tostring(math.random())";
    let a = eval_full(&mut env, &mut h, body, &[], &[]);
    let b2 = eval_full(&mut env, &mut h, body, &[], &[]);
    assert_ne!(a, b2);
    assert_eq!(
        eval("local x = math.random(3, 5) return x >= 3 and x <= 5 and math.floor(x) == x"),
        Reply::Int(1)
    );
    assert!(err(eval("return math.random(5, 3)")).contains("interval is empty"));
}

#[test]
fn scripting_cjson() {
    assert_eq!(
        eval("return table.concat(cjson.decode('[0.0, -5e3, -1, 0.3e-3, 1023.2, 0e10]'), ' ')"),
        bulk("0 -5000 -1 0.0003 1023.2 0")
    );
    assert_eq!(
        eval(
            "local d = cjson.decode('{\"keya\": \"a\", \"keyb\": \"b\"}') return {d.keya, d.keyb}"
        ),
        Reply::Array(vec![bulk("a"), bulk("b")])
    );
    assert_eq!(eval("return cjson.encode({})"), bulk("{}"));
    assert_eq!(
        eval("return cjson.encode({1,2,'x',true,false})"),
        bulk("[1,2,\"x\",true,false]")
    );
    assert_eq!(
        eval("return cjson.encode({[1]=1,[3]=3})"),
        bulk("[1,null,3]")
    );
    assert_eq!(
        eval("return cjson.encode({a={b=0.1}})"),
        bulk("{\"a\":{\"b\":0.1}}")
    );
    assert_eq!(
        eval("return cjson.encode('a/b\"\\n\\1')"),
        bulk("\"a\\/b\\\"\\n\\u0001\"")
    );
    assert_eq!(eval("return cjson.encode(1/3)"), bulk("0.33333333333333"));
    assert_eq!(eval("return cjson.encode(cjson.null)"), bulk("null"));
    assert_eq!(
        eval("return cjson.decode('null') == cjson.null"),
        Reply::Int(1)
    );
    assert_eq!(
        eval("return cjson.decode('\"\\\\u00e9\\\\ud83d\\\\ude00\"')"),
        Reply::Bulk(Bytes::from("é😀"))
    );
    assert!(err(eval("return cjson.encode({[1]=1,[100]=2})"))
        .contains("Cannot serialise table: excessively sparse array"));
    assert!(err(eval("return cjson.encode({[false]=1})"))
        .contains("Cannot serialise boolean: table key must be a number or string"));
    assert!(err(eval("return cjson.encode(function() end)"))
        .contains("Cannot serialise function: type not supported"));
    assert!(err(eval("return cjson.decode('[1,')"))
        .contains("Expected value but found T_END at character 4"));
    assert!(err(eval("return cjson.decode('{\"a\":1} x')"))
        .contains("Expected the end but found invalid token at character 9"));
    assert!(err(eval("local a = {} a[1] = a return cjson.encode(a)"))
        .contains("Cannot serialise, excessive nesting (201)"));
    assert!(
        err(eval(&format!("return cjson.decode('{}')", "[".repeat(300))))
            .contains("Found too many nested data structures (201)")
    );
    // Redis's "JSON smoke test"
    let smoke = r#"
        local some_map = { s1="Some string", n1=100, a1={"Some","String","Array"}, nil1=nil, b1=true, b2=false}
        local encoded = cjson.encode(some_map)
        local decoded = cjson.decode(encoded)
        assert(table.concat(some_map) == table.concat(decoded))
        cjson.encode_keep_buffer(false)
        encoded = cjson.encode(some_map)
        decoded = cjson.decode(encoded)
        assert(table.concat(some_map) == table.concat(decoded))
        local table1 = {one="one", [1]="one"}
        encoded = cjson.encode(table1)
        decoded = cjson.decode(encoded)
        assert(decoded["one"] == table1["one"])
        assert(decoded["1"] == table1[1])
        local array1 = {[1]="one", [2]="two"}
        encoded = cjson.encode(array1)
        decoded = cjson.decode(encoded)
        assert(table.concat(array1) == table.concat(decoded))
        local invalid_map = {}
        invalid_map[false] = "false"
        local ok, encoded = pcall(cjson.encode, invalid_map)
        assert(ok == false)
        cjson.encode_max_depth(1)
        ok, encoded = pcall(cjson.encode, some_map)
        assert(ok == false)
        cjson.decode_max_depth(1)
        ok, decoded = pcall(cjson.decode, '{"obj": {"array": [1,2,3,4]}}')
        assert(ok == false)
        ok, encoded = pcall(cjson.encode, {num1=0/0})
        assert(ok == false)
        cjson.encode_invalid_numbers(true)
        ok, encoded = pcall(cjson.encode, {num1=0/0})
        assert(ok == true)
        cjson.decode_max_depth(1000)
        cjson.encode_max_depth(1000)
        cjson.encode_invalid_numbers(false)
        return 'ok'
    "#;
    assert_eq!(eval(smoke), bulk("ok"));
}

/// Decoded tables are built whole: nil and NaN map keys are skipped, binary
/// strings survive, nested tables and array holes land where they were.
#[test]
fn scripting_cmsgpack_and_cjson_decode_edges() {
    let r = eval(
        "local nilkey = cmsgpack.unpack(string.char(0x82, 0xc0, 0x01, 0xa1, 0x6b, 0x02)) \
         local nan = cmsgpack.unpack(string.char(0x81, 0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0, 0x03)) \
         local bin = cmsgpack.unpack(string.char(0xc4, 0x02, 0xff, 0x00)) \
         local holes = cmsgpack.unpack(string.char(0x93, 0x01, 0xc0, 0x03)) \
         local nested = cmsgpack.unpack(cmsgpack.pack({a = {b = {1, 'x'}}})) \
         local j = cjson.decode([=[{\"a\":[1,\"\\u00ff\",{\"b\":null}],\"a\":[2]}]=]) \
         local jb = cjson.decode([=[[\"\\u0000z\"]]=]) \
         return {nilkey.k, next(nan) == nil and 1 or 0, #bin, string.byte(bin, 1), \
                 holes[1], holes[2] == nil and 1 or 0, holes[3], nested.a.b[2], \
                 j.a[1], #j, #jb[1], string.byte(jb[1], 1)}",
    );
    assert_eq!(
        r,
        Reply::Array(vec![
            Reply::Int(2),
            Reply::Int(1),
            Reply::Int(2),
            Reply::Int(255),
            Reply::Int(1),
            Reply::Int(1),
            Reply::Int(3),
            bulk("x"),
            Reply::Int(2),
            Reply::Int(0),
            Reply::Int(2),
            Reply::Int(0),
        ])
    );
}

#[test]
fn scripting_cmsgpack() {
    let hex = "local function hex(s) local h = '' for i = 1, #s do h = h .. string.format('%02x', string.byte(s, i)) end return h end ";
    assert_eq!(
        eval(&format!("{hex} return hex(cmsgpack.pack(0.1))")),
        bulk("cb3fb999999999999a")
    );
    assert_eq!(
        eval(&format!("{hex} return hex(cmsgpack.pack(-1099511627776))")),
        bulk("d3ffffff0000000000")
    );
    assert_eq!(
        eval(&format!(
            "{hex} return hex(cmsgpack.pack(1, -1, 200, 'ab', {{}}, {{1,2}}, true, nil, 1.5))"
        )),
        bulk("01ffccc8a2616290920102c3c0ca3fc00000")
    );
    let circ = format!(
        "{hex} local a = {{x=nil,y=5}} local b = {{x=a}} a['x'] = b local encoded = cmsgpack.pack(a) local re = cmsgpack.unpack(encoded) \
         assert(re.x.x.x.x.x.x.x.x.x.x.x.x.x.x.y == re.y) assert(re.x.x.x.x.x.x.x.x.x.x.x.x.x.x.x) \
         assert(re.x.x.x.x.x.x.x.x.x.x.x.x.x.x.x.x == nil) return hex(encoded)"
    );
    assert_eq!(
        eval(&circ),
        bulk("82a17905a17881a17882a17905a17881a17882a17905a17881a17882a17905a17881a17882a17905a17881a17882a17905a17881a17882a17905a17881a17882a17905a17881a178c0")
    );
    let smoke = r#"
        local str_lt_32 = string.rep("x", 30)
        local str_lt_255 = string.rep("x", 250)
        local str_lt_65535 = string.rep("x", 65530)
        local str_long = string.rep("x", 100000)
        local array_big = {}
        for i=1, 100000 do array_big[i] = i end
        local map_big = {}
        for i=1, 100000 do map_big[tostring(i)] = i end
        local some_map = { s1=str_lt_32, s2=str_lt_255, s3=str_lt_65535, s4=str_long, d1=0.1, i1=1, i2=250, i3=65530,
            i4=100000, i5=2^40, i6=-1, i7=-120, i8=-32000, i9=-100000, i10=-3147483648, a1={1,2,3,4,5},
            a2={1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18}, a3=array_big, m1={a=1, b=2}, m2=map_big, b1=false, b2=true, n=nil }
        local encoded = cmsgpack.pack(some_map)
        local decoded = cmsgpack.unpack(encoded)
        assert(decoded.s4 == str_long and decoded.i10 == -3147483648 and decoded.i5 == 2^40 and decoded.d1 == 0.1)
        assert(decoded.a3[100000] == 100000 and decoded.m2["77"] == 77 and decoded.b1 == false and decoded.m1.b == 2)
        local offset, decoded_one = cmsgpack.unpack_one(encoded, 0)
        assert(decoded_one.s3 == str_lt_65535)
        assert(offset == -1)
        local encoded_multiple = cmsgpack.pack(str_lt_32, str_lt_255, str_lt_65535, str_long)
        local offset, obj = cmsgpack.unpack_limit(encoded_multiple, 1, 0)
        assert(obj == str_lt_32)
        offset, obj = cmsgpack.unpack_limit(encoded_multiple, 1, offset)
        assert(obj == str_lt_255)
        offset, obj = cmsgpack.unpack_limit(encoded_multiple, 1, offset)
        assert(obj == str_lt_65535)
        offset, obj = cmsgpack.unpack_limit(encoded_multiple, 1, offset)
        assert(obj == str_long)
        assert(offset == -1)
        local a, b, c = cmsgpack.unpack(cmsgpack.pack(1, 'two', {3}))
        assert(a == 1 and b == 'two' and c[1] == 3)
        return 'ok'
    "#;
    assert_eq!(eval(smoke), bulk("ok"));
    assert!(err(eval("return cmsgpack.unpack('\\145')")).contains("Missing bytes in input."));
    assert!(err(eval("return cmsgpack.unpack('\\193')")).contains("Bad data format in input."));
    assert!(err(eval("return cmsgpack.pack()")).contains("MessagePack pack needs input."));
}

#[test]
fn scripting_bit() {
    assert_eq!(
        eval("return bit.tohex(65535, -2147483648)"),
        bulk("0000FFFF")
    );
    let body = "assert(bit.tobit(1) == 1); assert(bit.band(1) == 1); assert(bit.bxor(1,2) == 3); \
        assert(bit.bor(1,2,4,8,16,32,64,128) == 255) \
        assert(bit.tobit(0xffffffff) == -1) assert(bit.tobit(2^32 + 5) == 5) assert(bit.tobit(-1) == -1) \
        assert(bit.bnot(0) == -1) assert(bit.lshift(1, 31) == -2147483648) assert(bit.lshift(1, 32) == 1) \
        assert(bit.rshift(-1, 28) == 15) assert(bit.arshift(-256, 4) == -16) \
        assert(bit.rol(0x12345678, 12) == 0x45678123) assert(bit.ror(0x12345678, 12) == 0x67812345) \
        assert(bit.bswap(0x12345678) == 0x78563412) \
        assert(bit.tohex(1) == '00000001') assert(bit.tohex(-1, -4) == 'FFFF') assert(bit.tohex(255, 2) == 'ff') \
        assert(bit.band('7', 3) == 3) assert(bit.tobit(1.5) == 2) assert(bit.tobit(2.5) == 2) \
        return 'ok'";
    assert_eq!(eval(body), bulk("ok"));
    let body = "bit.band({})";
    let sha = sha1_hex(body.as_bytes());
    assert_eq!(err(eval(body)), format!("ERR user_script:1: bad argument #1 to 'band' (number expected, got table) script: {sha}, on @user_script:1."));
}

#[test]
fn scripting_struct() {
    let hex = "local function hex(s) local h = '' for i = 1, #s do h = h .. string.format('%02x', string.byte(s, i)) end return h end ";
    assert_eq!(
        eval(&format!("{hex} return hex(struct.pack('>I2i4', 258, -2))")),
        bulk("0102fffffffe")
    );
    assert_eq!(
        eval(&format!(
            "{hex} return hex(struct.pack('<hbBs', 1, -1, 255, 'ab'))"
        )),
        bulk("0100ffff616200")
    );
    assert_eq!(
        eval(&format!("{hex} return hex(struct.pack('!4 b i', 1, 2))")),
        bulk("0100000002000000")
    );
    assert_eq!(
        eval("return {struct.unpack('>I2i4', '\\1\\2\\255\\255\\255\\254')}"),
        Reply::Array(vec![Reply::Int(258), Reply::Int(-2), Reply::Int(7)])
    );
    assert_eq!(
        eval("return {struct.unpack('<d', struct.pack('<d', 1.5))}"),
        Reply::Array(vec![Reply::Int(1), Reply::Int(9)])
    );
    assert_eq!(
        eval("local x, n = struct.unpack('<d', struct.pack('<d', 1.5)) return tostring(x)"),
        bulk("1.5")
    );
    assert_eq!(
        eval("return {struct.unpack('sc3', 'hi\\0abcz')}"),
        Reply::Array(vec![bulk("hi"), bulk("abc"), Reply::Int(7)])
    );
    assert_eq!(
        eval("return {struct.unpack('bc0', '\\3xyz')}"),
        Reply::Array(vec![bulk("xyz"), Reply::Int(5)])
    );
    assert_eq!(
        eval("return struct.size('>iIhHbBlLdf')"),
        Reply::Int(4 + 4 + 2 + 2 + 1 + 1 + 8 + 8 + 8 + 4)
    );
    assert_eq!(
        eval("return {struct.unpack('b', 'xab', 2)}"),
        Reply::Array(vec![Reply::Int(97), Reply::Int(3)])
    );
    assert!(err(eval("return struct.unpack('i4', 'ab')"))
        .contains("bad argument #2 to 'unpack' (data string too short)"));
    assert!(err(eval("return struct.pack('q', 1)")).contains("invalid format option 'q'"));
    assert!(err(eval("return struct.size('s')")).contains("option 's' has no fixed size"));
}

#[test]
fn scripting_interrupt_stops_infinite_loop() {
    let mut env = LuaEnv::new();
    let mut h = Fake {
        kill_after: Some(3),
        ..Default::default()
    };
    let body = "while true do end";
    let sha = sha1_hex(body.as_bytes());
    let r = eval_full(&mut env, &mut h, body, &[], &[]);
    assert_eq!(
        err(r),
        format!("ERR Script killed by user with SCRIPT KILL... script: {sha}, on @user_script:1.")
    );
    assert_eq!(h.interrupts, 3);
    // pcall cannot swallow the kill
    let mut h = Fake {
        kill_after: Some(2),
        ..Default::default()
    };
    let body = "local f = function() while 1 do redis.call('ping') end end while 1 do pcall(f) end";
    let r = eval_full(&mut env, &mut h, body, &[], &[]);
    assert!(err(r).starts_with("ERR Script killed by user with SCRIPT KILL..."));
    // nor a coroutine
    let mut h = Fake {
        kill_after: Some(2),
        ..Default::default()
    };
    let body =
        "while true do coroutine.resume(coroutine.create(function() while true do end end)) end";
    let r = eval_full(&mut env, &mut h, body, &[], &[]);
    assert!(err(r).starts_with("ERR Script killed by user with SCRIPT KILL..."));
    // the state is usable afterwards, and a run that is not killed polls the host
    let mut h = Fake::default();
    assert_eq!(
        eval_full(
            &mut env,
            &mut h,
            "local n = 0 for i = 1, 1000000 do n = n + 1 end return n",
            &[],
            &[]
        ),
        Reply::Int(1000000)
    );
    assert!(h.interrupts >= 5);
}

#[test]
fn scripting_memory_limit_and_recursion() {
    let mut env = LuaEnv::with_memory_limit(32 << 20);
    let mut h = Fake::default();
    let r = eval_full(
        &mut env,
        &mut h,
        "local t = {} local s = string.rep('x', 1024) for i = 1, 1e9 do t[i] = s .. i end",
        &[],
        &[],
    );
    let e = err(r);
    assert!(e.contains("not enough memory"), "{e}");
    let r = eval_full(
        &mut env,
        &mut h,
        "local s = 'x' while true do s = s .. s end",
        &[],
        &[],
    );
    assert!(err(r).contains("not enough memory"));
    assert!(env.memory_used() < 32 << 20);
    // still usable
    assert_eq!(
        eval_full(&mut env, &mut h, "return 1", &[], &[]),
        Reply::Int(1)
    );
    // runaway recursion is an error, not a crash
    let r = eval_full(
        &mut env,
        &mut h,
        "local function f(n) return 1 + f(n + 1) end return f(1)",
        &[],
        &[],
    );
    assert!(err(r).contains("stack overflow"));
}

/// Known gap: a tail-called redis.* function (`return redis.call(...)`) loses the
/// caller's frame, so the error has no ` script: ..., on @user_script:N.` suffix.
#[test]
fn scripting_tail_called_error_keeps_message() {
    let e = err(eval("return redis.call()"));
    assert!(
        e.starts_with("ERR Please specify at least one argument for this redis lib call"),
        "{e}"
    );
}

/// The libraries run with the heap limit lifted; it is back when they return.
#[test]
fn scripting_memory_limit_is_back_after_library_calls() {
    let mut env = LuaEnv::with_memory_limit(32 << 20);
    let r = eval_full(
        &mut env,
        &mut Fake::default(),
        "local d = cjson.decode('[1, {\"a\": \"b\"}]') local m = cmsgpack.unpack(cmsgpack.pack(d)) \
         local t = {} local s = string.rep('x', 1024) for i = 1, 1e5 do t[i] = s .. i end return #t",
        &[],
        &[],
    );
    assert!(err(r).contains("not enough memory"));
}

#[test]
fn scripting_memory_bomb_table() {
    let mut env = LuaEnv::with_memory_limit(32 << 20);
    let r = eval_full(
        &mut env,
        &mut Fake::default(),
        "local t = {} local s = string.rep('x', 1024) for i = 1, 1e9 do t[i] = s .. i end",
        &[],
        &[],
    );
    assert!(err(r).contains("not enough memory"));
}

/// A state keeps one buffer for its commands' arguments from call to call and run
/// to run: each command gets exactly its own arguments, after a call refused
/// half-way through its arguments and after one too large for the buffer to be
/// kept.
#[test]
fn scripting_command_arguments_are_each_calls_own() {
    let mut env = LuaEnv::new();
    let mut host = Fake::default();
    let body = "local e = redis.pcall('echoargs', 'a', {}) \
        local one = table.concat(redis.call('echoargs', 'b', 'c'), ',') \
        local big = #redis.call('echoargs', string.rep('x', 70000))[1] \
        local two = table.concat(redis.call('echoargs', 'd', 7), ',') \
        return {e.err, one, big, two}";
    assert_eq!(
        eval_full(&mut env, &mut host, body, &[], &[]),
        Reply::Array(vec![
            bulk("ERR Lua redis lib command arguments must be strings or integers"),
            bulk("b,c"),
            Reply::Int(70000),
            bulk("d,7"),
        ])
    );
    let body = "return redis.call('echoargs', KEYS[1], ARGV[1])";
    assert_eq!(
        eval_full(&mut env, &mut host, body, &["k"], &["v"]),
        Reply::Array(vec![bulk("k"), bulk("v")])
    );
}

/// Redis's unit/scripting runs 10000 scripts and expects the Lua heap under 100 KB
/// at the end: the garbage each run leaves must be collected, not left to double
/// the heap. Checked after every run, so the periodic collection must come before
/// the heap reaches the bound, wherever the 10000th run falls in its period.
#[test]
fn scripting_runs_do_not_grow_the_heap() {
    let mut env = LuaEnv::new();
    let mut host = Fake::default();
    let mut peak = 0;
    for _ in 0..2000 {
        let r = eval_full(
            &mut env,
            &mut host,
            "return redis.call('incr', KEYS[1])",
            &["x"],
            &[],
        );
        assert!(matches!(r, Reply::Int(_)), "{r:?}");
        peak = peak.max(env.memory_used());
    }
    assert!(peak < 100 * 1024, "{peak}");
}

#[test]
fn scripting_tail_called_redis_call_errors_keep_the_line() {
    let mut env = LuaEnv::new();
    let mut h = Fake::default();
    h.kv.insert(b"s".to_vec(), b"x".to_vec());
    // `return redis.call(...)` is a tail call: the script's frame must still name
    // the line, as in Redis (where redis.call is a C function).
    let body = "local a = 1\nreturn redis.call('incr', 's')";
    let sha = sha1_hex(body.as_bytes());
    assert_eq!(
        err(eval_full(&mut env, &mut h, body, &[], &[])),
        format!("ERR value is not an integer or out of range script: {sha}, on @user_script:2.")
    );
    let body = "\n\nreturn redis.call('nosuch')";
    let sha = sha1_hex(body.as_bytes());
    assert_eq!(
        err(eval_full(&mut env, &mut h, body, &[], &[])),
        format!("ERR Unknown Redis command called from script script: {sha}, on @user_script:3.")
    );
}

#[test]
fn scripting_raised_call_errors_reach_handlers_as_tables() {
    let mut env = LuaEnv::new();
    let mut h = Fake::default();
    h.kv.insert(b"s".to_vec(), b"x".to_vec());
    // xpcall's handler and a coroutine's resume see Redis's error table.
    let body = "local ok, e = xpcall(function() return redis.call('incr', 's') end, \
                function(e) return type(e) .. ':' .. e.err end) return {tostring(ok), e}";
    assert_eq!(
        eval_full(&mut env, &mut h, body, &[], &[]),
        Reply::Array(vec![
            bulk("false"),
            bulk("table:ERR value is not an integer or out of range")
        ])
    );
    let body = "local co = coroutine.create(function() redis.call('incr', 's') end) \
                local ok, e = coroutine.resume(co) return {tostring(ok), type(e), e.err}";
    assert_eq!(
        eval_full(&mut env, &mut h, body, &[], &[]),
        Reply::Array(vec![
            bulk("false"),
            bulk("table"),
            bulk("ERR value is not an integer or out of range")
        ])
    );
    // A raised error that a script catches and raises again keeps its text.
    let body = "local ok, e = pcall(redis.call, 'incr', 's') error(e)";
    assert!(err(eval_full(&mut env, &mut h, body, &[], &[]))
        .contains("ERR value is not an integer or out of range"));
}

#[test]
fn scripting_many_cached_scripts_leave_the_state_usable() {
    // Compiled scripts live in the Lua state, not in the host's bounded reference
    // slots: 10k of them, then a new one still compiles and every one still runs.
    let mut env = LuaEnv::new();
    let mut h = Fake::default();
    for i in 0..10_000 {
        let body = format!("return {i}");
        assert_eq!(eval_full(&mut env, &mut h, &body, &[], &[]), Reply::Int(i));
    }
    assert_eq!(env.len(), 10_000);
    assert_eq!(
        eval_full(&mut env, &mut h, "return 'new'", &[], &[]),
        bulk("new")
    );
    let (r, _) = env.run(&sha1_hex(b"return 17"), &[], &[], Fake::default());
    assert_eq!(r, Reply::Int(17));
}

#[test]
fn scripting_binary_strings_cross_both_ways() {
    let mut env = LuaEnv::new();
    let mut h = Fake::default();
    let bin = Bytes::from_static(b"\xff\x00\xfe");
    let sha = sha1_hex(
        b"redis.call('set', KEYS[1], ARGV[1]) return {redis.call('get', KEYS[1]), ARGV[1]}",
    );
    env.compile(
        &sha,
        b"redis.call('set', KEYS[1], ARGV[1]) return {redis.call('get', KEYS[1]), ARGV[1]}",
    )
    .unwrap();
    let (r, back) = env.run(
        &sha,
        std::slice::from_ref(&bin),
        std::slice::from_ref(&bin),
        std::mem::take(&mut h),
    );
    h = back;
    assert_eq!(
        r,
        Reply::Array(vec![Reply::Bulk(bin.clone()), Reply::Bulk(bin.clone())])
    );
    assert_eq!(
        h.kv.get(&b"\xff\x00\xfe"[..]).map(|v| &v[..]),
        Some(&b"\xff\x00\xfe"[..])
    );
}
