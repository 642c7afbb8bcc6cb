//! The web dashboard (`/dashboard`): its embedded assets, the login with each kind
//! of credential, read-only sessions refused writes on the server, and the JSON
//! API the page uses, over a real server on port 0.

mod common;

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use tidewire_server::{Config, Server};

const RW: &str = "dash-rw-token";
const RO: &str = "dash-ro-token";
const ACL_TOKEN: &str = "dash-acl-token";

async fn start() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config {
        port: 0,
        http_port: 0,
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.upstash.tokens = vec![RW.into()];
    config.upstash.readonly_tokens = vec![RO.into()];
    config.upstash.acl_tokens = vec![(ACL_TOKEN.into(), "reader".into())];
    let server = tidewire_server::start(config).await.expect("server starts");
    let mut raw = common::Raw::connect(&server).await;
    for rules in [
        &[
            "ACL", "SETUSER", "boss", "on", ">bosspw", "+@all", "~*", "&*",
        ][..],
        &["ACL", "SETUSER", "reader", "on", ">readpw", "+@read", "~*"][..],
        &["ACL", "SETUSER", "open", "on", "nopass", "+@all", "~*"][..],
    ] {
        assert_eq!(raw.cmd(rules).await, common::V::Simple("OK".into()));
    }
    (server, dir)
}

fn base(server: &Server) -> String {
    format!("http://{}/dashboard", server.http_addr)
}

/// A logged-in browser: the session cookie from the login's Set-Cookie.
struct Session {
    http: Client,
    base: String,
    cookie: String,
}

async fn login(server: &Server, credential: &str) -> Result<(Session, Value), StatusCode> {
    let http = Client::new();
    let res = http
        .post(format!("{}/api/login", base(server)))
        .json(&json!({ "credential": credential }))
        .send()
        .await
        .expect("login request");
    if res.status() != StatusCode::OK {
        return Err(res.status());
    }
    let set_cookie = res
        .headers()
        .get("set-cookie")
        .expect("session cookie")
        .to_str()
        .unwrap()
        .to_string();
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let info: Value = res.json().await.unwrap();
    Ok((
        Session {
            http,
            base: base(server),
            cookie,
        },
        info,
    ))
}

impl Session {
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let res = self
            .http
            .get(format!("{}/api/{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        (res.status(), res.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let res = self
            .http
            .post(format!("{}/api/{path}", self.base))
            .header("cookie", &self.cookie)
            .json(&body)
            .send()
            .await
            .unwrap();
        (res.status(), res.json().await.unwrap_or(Value::Null))
    }

    async fn cmd(&self, args: &[&str]) -> (StatusCode, Value) {
        self.post("command", json!({ "args": args })).await
    }

    async fn key(&self, key: &str) -> Value {
        let (status, v) = self.get(&format!("key?key={key}")).await;
        assert_eq!(status, StatusCode::OK, "{key}: {v}");
        v
    }
}

#[tokio::test]
async fn assets_are_embedded_and_self_contained() {
    let (server, _dir) = start().await;
    let http = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = http.get(base(&server)).send().await.unwrap();
    assert!(res.status().is_redirection());
    assert_eq!(res.headers()["location"], "/dashboard/");
    for (path, ct) in [
        ("/", "text/html; charset=utf-8"),
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/app.css", "text/css; charset=utf-8"),
    ] {
        let res = http
            .get(format!("{}{path}", base(&server)))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert_eq!(res.headers()["content-type"], ct, "{path}");
        assert!(res.headers().contains_key("content-security-policy"));
        let body = res.text().await.unwrap();
        assert!(body.len() > 500, "{path} looks empty");
        // No CDN, no fonts, no analytics: nothing but same-origin references.
        assert!(
            !body.contains("http://") && !body.contains("https://") && !body.contains("//cdn"),
            "{path} references another host"
        );
    }
    // The realtime layer, which owns the root, still answers beside it.
    let res = http
        .get(format!("http://{}/time", server.http_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // The API wants a session.
    let res = http
        .get(format!("{}/api/overview", base(&server)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn login_with_each_credential_kind() {
    let (server, _dir) = start().await;
    let role = |v: &Value| {
        (
            v["role"].as_str().unwrap().to_string(),
            v["user"].as_str().unwrap().to_string(),
        )
    };
    let (_, info) = login(&server, RW).await.unwrap();
    assert_eq!(role(&info), ("admin".into(), "default".into()));
    let (_, info) = login(&server, RO).await.unwrap();
    assert_eq!(role(&info), ("read-only".into(), "default".into()));
    let (_, info) = login(&server, ACL_TOKEN).await.unwrap();
    assert_eq!(role(&info), ("read-only".into(), "reader".into()));
    let (s, info) = login(&server, "boss:bosspw").await.unwrap();
    assert_eq!(role(&info), ("admin".into(), "boss".into()));
    assert_eq!(s.get("session").await.1, info);
    let (_, info) = login(&server, "reader:readpw").await.unwrap();
    assert_eq!(role(&info), ("read-only".into(), "reader".into()));

    for bad in [
        "nope",
        "",
        "boss:wrong",
        "ghost:pw",
        // A nopass user takes any password: not good enough for the dashboard.
        "open:anything",
        "dash-rw-toke",
    ] {
        assert_eq!(
            login(&server, bad).await.err(),
            Some(StatusCode::UNAUTHORIZED),
            "{bad:?}"
        );
    }
    // A forged or logged-out cookie is no session.
    let (s, _) = login(&server, RW).await.unwrap();
    assert_eq!(s.get("overview").await.0, StatusCode::OK);
    assert_eq!(s.post("logout", json!({})).await.0, StatusCode::OK);
    assert_eq!(s.get("overview").await.0, StatusCode::UNAUTHORIZED);
    let forged = Session {
        cookie: "tw_dashboard=forged".into(),
        ..s
    };
    assert_eq!(forged.get("keys").await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn read_only_sessions_read_but_never_write() {
    let (server, _dir) = start().await;
    let (admin, _) = login(&server, RW).await.unwrap();
    assert_eq!(admin.cmd(&["SET", "k", "v"]).await.0, StatusCode::OK);
    for cred in [RO, ACL_TOKEN, "reader:readpw"] {
        let (s, _) = login(&server, cred).await.unwrap();
        assert_eq!(
            s.cmd(&["GET", "k"]).await,
            (StatusCode::OK, json!({"result": "v"}))
        );
        let (status, body) = s.cmd(&["SET", "k", "w"]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{cred}: {body}");
        let (status, _) = s.cmd(&["FLUSHALL"]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{cred}");
        let (status, _) = s
            .post("key", json!({"op": "set", "key": "k", "value": "w"}))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{cred}");
        let (status, _) = s.post("key", json!({"op": "del", "key": "k"})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{cred}");
        // Browsing works.
        let (status, page) = s.get("keys?match=*").await;
        assert_eq!(status, StatusCode::OK, "{cred}");
        assert_eq!(page["keys"], json!([{"key": "k", "type": "string"}]));
        assert_eq!(s.key("k").await["value"], "v");
        assert_eq!(s.get("overview").await.0, StatusCode::OK);
    }
    assert_eq!(admin.cmd(&["GET", "k"]).await.1, json!({"result": "v"}));
}

#[tokio::test]
async fn acl_applies_to_the_session_user() {
    let (server, _dir) = start().await;
    let mut raw = common::Raw::connect(&server).await;
    raw.cmd(&[
        "ACL", "SETUSER", "limited", "on", ">pw", "+@all", "-@admin", "~app:*",
    ])
    .await;
    raw.cmd(&["SET", "secret", "x"]).await;
    // Not admin (no ACL SETUSER), so a read-only session; and its key patterns hold.
    let (s, info) = login(&server, "limited:pw").await.unwrap();
    assert_eq!(info["role"], "read-only");
    let (status, body) = s.cmd(&["GET", "secret"]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body["error"].as_str().unwrap().starts_with("NOPERM"),
        "{body}"
    );
    let (status, _) = s.get("key?key=secret").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn keys_and_editing_for_every_type() {
    let (server, _dir) = start().await;
    let (s, _) = login(&server, "boss:bosspw").await.unwrap();
    for c in [
        &["SET", "t:string", "{\"a\":[1,2]}"][..],
        &["HSET", "t:hash", "f1", "v1", "f2", "v2"],
        &["RPUSH", "t:list", "a", "b", "c"],
        &["SADD", "t:set", "m1", "m2"],
        &["ZADD", "t:zset", "1.5", "a", "2", "b"],
        &["XADD", "t:stream", "1-1", "f", "v"],
        &["XGROUP", "CREATE", "t:stream", "g1", "0"],
        &["SET", "other", "x"],
    ] {
        let (status, body) = s.cmd(c).await;
        assert_eq!(status, StatusCode::OK, "{c:?}: {body}");
    }

    // SCAN with a pattern, then with a type filter, walked to the end.
    let mut seen = Vec::new();
    let mut cursor = "0".to_string();
    loop {
        let (status, page) = s
            .get(&format!("keys?match=t:*&count=2&cursor={cursor}"))
            .await;
        assert_eq!(status, StatusCode::OK);
        for k in page["keys"].as_array().unwrap() {
            seen.push((
                k["key"].as_str().unwrap().to_string(),
                k["type"].as_str().unwrap().to_string(),
            ));
        }
        cursor = page["cursor"].as_str().unwrap().to_string();
        if cursor == "0" {
            break;
        }
    }
    seen.sort();
    let want: Vec<(String, String)> = ["hash", "list", "set", "stream", "string", "zset"]
        .iter()
        .map(|t| (format!("t:{t}"), t.to_string()))
        .collect();
    assert_eq!(seen, want);
    let (_, page) = s.get("keys?match=*&type=zset&count=1000").await;
    assert_eq!(page["keys"], json!([{"key": "t:zset", "type": "zset"}]));

    // Every type's view.
    let v = s.key("t:string").await;
    assert_eq!(
        (v["type"].clone(), v["value"].clone(), v["pttl"].clone()),
        (json!("string"), json!("{\"a\":[1,2]}"), json!(-1))
    );
    let v = s.key("t:hash").await;
    assert_eq!(v["value"], json!({"f1": "v1", "f2": "v2"}));
    let v = s.key("t:list").await;
    assert_eq!(
        (v["length"].clone(), v["value"].clone()),
        (json!(3), json!(["a", "b", "c"]))
    );
    let mut members: Vec<String> =
        serde_json::from_value(s.key("t:set").await["value"].clone()).unwrap();
    members.sort();
    assert_eq!(members, ["m1", "m2"]);
    assert_eq!(
        s.key("t:zset").await["value"],
        json!(["a", "1.5", "b", "2"])
    );
    let v = s.key("t:stream").await;
    assert_eq!(v["value"], json!([["1-1", ["f", "v"]]]));
    assert_eq!(v["groups"][0]["name"], "g1");
    assert_eq!(s.get("key?key=missing").await.0, StatusCode::NOT_FOUND);

    // Edits.
    let edits = [
        json!({"op": "set", "key": "t:string", "value": "plain"}),
        json!({"op": "hset", "key": "t:hash", "field": "f3", "value": "v3"}),
        json!({"op": "hdel", "key": "t:hash", "field": "f1"}),
        json!({"op": "lset", "key": "t:list", "index": 1, "value": "B"}),
        json!({"op": "lpush", "key": "t:list", "value": "z"}),
        json!({"op": "lrem", "key": "t:list", "value": "c"}),
        json!({"op": "sadd", "key": "t:set", "value": "m3"}),
        json!({"op": "srem", "key": "t:set", "value": "m1"}),
        json!({"op": "zadd", "key": "t:zset", "value": "c", "score": 0.5}),
        json!({"op": "zrem", "key": "t:zset", "value": "b"}),
        json!({"op": "xadd", "key": "t:stream", "fields": [["g", "w"]]}),
        json!({"op": "expire", "key": "other", "seconds": 100}),
    ];
    for e in edits {
        let (status, body) = s.post("key", e.clone()).await;
        assert_eq!(status, StatusCode::OK, "{e}: {body}");
    }
    assert_eq!(s.key("t:string").await["value"], "plain");
    assert_eq!(
        s.key("t:hash").await["value"],
        json!({"f2": "v2", "f3": "v3"})
    );
    assert_eq!(s.key("t:list").await["value"], json!(["z", "a", "B"]));
    let mut members: Vec<String> =
        serde_json::from_value(s.key("t:set").await["value"].clone()).unwrap();
    members.sort();
    assert_eq!(members, ["m2", "m3"]);
    assert_eq!(
        s.key("t:zset").await["value"],
        json!(["c", "0.5", "a", "1.5"])
    );
    assert_eq!(s.key("t:stream").await["length"], 2);
    let pttl = s.key("other").await["pttl"].as_i64().unwrap();
    assert!(pttl > 90_000 && pttl <= 100_000, "{pttl}");
    assert_eq!(
        s.post("key", json!({"op": "persist", "key": "other"}))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(s.key("other").await["pttl"], -1);
    assert_eq!(
        s.post("key", json!({"op": "del", "key": "other"})).await.0,
        StatusCode::OK
    );
    assert_eq!(s.get("key?key=other").await.0, StatusCode::NOT_FOUND);
    // Bad edits are 400s, not panics.
    for bad in [
        json!({"op": "hset", "key": "t:hash"}),
        json!({"op": "zadd", "key": "t:zset", "value": "x"}),
        json!({"op": "explode", "key": "k"}),
        json!({"key": "k"}),
        json!({"op": "lset", "key": "t:list", "index": 99, "value": "x"}),
    ] {
        assert_eq!(
            s.post("key", bad.clone()).await.0,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
    // A wrong-type edit is Redis's WRONGTYPE.
    let (status, body) = s
        .post("key", json!({"op": "sadd", "key": "t:hash", "value": "x"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().starts_with("WRONGTYPE"));
}

#[tokio::test]
async fn console_overview_and_slowlog() {
    let (server, _dir) = start().await;
    let (s, _) = login(&server, RW).await.unwrap();
    assert_eq!(
        s.cmd(&["PING"]).await,
        (StatusCode::OK, json!({"result": "PONG"}))
    );
    assert_eq!(s.cmd(&["SET", "a", "1"]).await.0, StatusCode::OK);
    assert_eq!(s.cmd(&["INCR", "a"]).await.1, json!({"result": 2}));
    assert_eq!(
        s.cmd(&["MGET", "a", "nope"]).await.1,
        json!({"result": ["2", null]})
    );
    let (status, body) = s.cmd(&["NOPE"]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]
        .as_str()
        .unwrap()
        .starts_with("ERR unknown command"));
    assert_eq!(s.cmd(&[]).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(s.cmd(&["BLPOP", "l", "0"]).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(s.cmd(&["SUBSCRIBE", "c"]).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(
        s.post("command", json!({"nope": 1})).await.0,
        StatusCode::BAD_REQUEST
    );

    let (status, names) = s.get("commands").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<String> = serde_json::from_value(names).unwrap();
    assert!(names.iter().any(|n| n == "GET") && names.iter().any(|n| n == "CONFIG SET"));

    // Overview: totals, hit rate, front doors; ops/s from the second sample on.
    let _ = s.cmd(&["GET", "nope"]).await;
    let (status, o) = s.get("overview").await;
    assert_eq!(status, StatusCode::OK);
    assert!(o["ops_total"].as_u64().unwrap() >= 4, "{o}");
    // The memory probe is the binary's (jemalloc); in-process tests report 0.
    assert!(o["used_memory"].is_u64());
    let rate = o["hit_rate"].as_f64().unwrap();
    assert!(rate > 0.0 && rate < 1.0, "{o}");
    assert_eq!(o["keys"], 1);
    for f in ["resp", "rest_requests_total", "realtime", "http_in_flight"] {
        assert!(o["clients"][f].is_u64(), "{f}: {o}");
    }
    for f in ["messages_in", "messages_out", "channels"] {
        assert!(o["realtime"][f].is_u64(), "{f}: {o}");
    }
    assert!(o["evicted_keys"].is_u64());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (_, o) = s.get("overview").await;
    assert!(o["ops_per_sec"].is_number(), "{o}");

    // A slow command lands in SLOWLOG.
    assert_eq!(
        s.cmd(&["CONFIG", "SET", "slowlog-log-slower-than", "0"])
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(s.cmd(&["SET", "slow", "1"]).await.0, StatusCode::OK);
    let (status, log) = s.get("slowlog").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .any(|e| e["args"] == json!(["SET", "slow", "1"])),
        "{log}"
    );
    let (ro, _) = login(&server, RO).await.unwrap();
    assert_eq!(ro.get("slowlog").await.0, StatusCode::OK);
}

// ---- Realtime ----------------------------------------------------------------

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The next frame with `action`, within 10 s; `None` if the socket ended first.
async fn next_action(ws: &mut Ws, action: u64) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("timed out waiting for frame");
        match frame {
            Some(Ok(WsMessage::Text(t))) => {
                let v: Value = serde_json::from_str(&t).expect("json frame");
                if v["action"].as_u64() == Some(action) {
                    return Some(v);
                }
            }
            Some(Ok(_)) => {}
            _ => return None,
        }
    }
}

/// A realtime WebSocket client as `client_id`, attached to `channel` and present.
async fn present(server: &Server, client_id: &str, channel: &str) -> (Ws, String) {
    let key = server.realtime_root_key.clone().expect("root key");
    let url = format!(
        "ws://{}/?key={}&clientId={client_id}&format=json&v=5",
        server.http_addr,
        urlencode(&key)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
    let connected = next_action(&mut ws, 4).await.expect("CONNECTED");
    let id = connected["connectionId"].as_str().unwrap().to_string();
    let attach = json!({"action": 10, "channel": channel});
    ws.send(WsMessage::Text(attach.to_string().into()))
        .await
        .unwrap();
    next_action(&mut ws, 11).await.expect("ATTACHED");
    let enter = json!({"action": 14, "channel": channel, "msgSerial": 0,
        "presence": [{"action": 2, "data": "here"}]});
    ws.send(WsMessage::Text(enter.to_string().into()))
        .await
        .unwrap();
    next_action(&mut ws, 1).await.expect("ACK");
    (ws, id)
}

async fn rest_publish(server: &Server, channel: &str, name: &str, data: &str) {
    use base64::Engine;
    let key = server.realtime_root_key.clone().expect("root key");
    let auth = base64::engine::general_purpose::STANDARD.encode(&key);
    let res = Client::new()
        .post(format!(
            "http://{}/channels/{channel}/messages",
            server.http_addr
        ))
        .header("Authorization", format!("Basic {auth}"))
        .json(&json!({"name": name, "data": data}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_channels_history_and_live_tail() {
    let (server, _dir) = start().await;
    let (s, _) = login(&server, RO).await.unwrap();
    let (_ws, _) = present(&server, "alice", "room").await;

    // The tail is open before the publish and sees it arrive.
    let mut tail = s
        .http
        .get(format!("{}/api/realtime/tail?name=room", s.base))
        .header("cookie", &s.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(tail.status(), StatusCode::OK);
    assert!(tail.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    rest_publish(&server, "other", "skip", "not this one").await;
    rest_publish(&server, "room", "greet", "hello tail").await;
    let mut seen = String::new();
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Ok(Some(chunk)) = tail.chunk().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("hello tail") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(got, Ok(true), "{seen}");
    assert!(seen.contains("event: message"), "{seen}");
    assert!(!seen.contains("not this one"), "{seen}");
    drop(tail);

    let (status, v) = s.get("realtime/channels").await;
    assert_eq!(status, StatusCode::OK);
    let app = &v["apps"][0];
    let room = app["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "room")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(room["connections"], 1, "{v}");
    assert_eq!(room["presence_members"], 1, "{v}");

    let (status, v) = s.get("realtime/channel?name=room").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["live"], true);
    assert_eq!(v["members"][0]["clientId"], "alice", "{v}");
    assert_eq!(v["history"][0]["name"], "greet", "{v}");
    assert_eq!(v["history"][0]["data"], "hello tail", "{v}");

    assert_eq!(
        s.get("realtime/channel?name=room&app=nope").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.get("realtime/channel?name=").await.0,
        StatusCode::BAD_REQUEST
    );
    let anon = Client::new()
        .get(format!("{}/api/realtime/tail?name=room", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_connections_and_disconnect() {
    let (server, _dir) = start().await;
    let (ws, id) = present(&server, "bob", "lobby").await;
    let mut ws = ws;
    let (ro, _) = login(&server, RO).await.unwrap();
    let (status, v) = ro.get("realtime/connections").await;
    assert_eq!(status, StatusCode::OK);
    let conn = v["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(conn["clientId"], "bob");
    assert_eq!(conn["channels"], json!(["lobby"]));

    // Read-only sessions may look, not disconnect.
    let (status, _) = ro
        .post("realtime/disconnect", json!({ "id": id.as_str() }))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (admin, _) = login(&server, RW).await.unwrap();
    assert_eq!(
        admin
            .post("realtime/disconnect", json!({ "id": "nosuchconn" }))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        admin.post("realtime/disconnect", json!({"x": 1})).await.0,
        StatusCode::BAD_REQUEST
    );
    let (status, _) = admin
        .post("realtime/disconnect", json!({ "id": id.as_str() }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let disconnected = next_action(&mut ws, 6).await.expect("DISCONNECTED");
    assert_eq!(disconnected["error"]["code"], 80003, "{disconnected}");
    // Then the socket ends, and the connection and its member are gone.
    assert!(next_action(&mut ws, 4).await.is_none());
    assert!(
        common::eventually(|| async {
            let (_, v) = admin.get("realtime/connections").await;
            let (_, c) = admin.get("realtime/channel?name=lobby").await;
            v["connections"].as_array().is_some_and(|a| a.is_empty())
                && c["members"].as_array().is_some_and(|m| m.is_empty())
        })
        .await
    );
}

// ---- Queues ------------------------------------------------------------------

/// Runs each command through the console as `s`, asserting it succeeds.
async fn setup(s: &Session, cmds: &[&[&str]]) {
    for c in cmds {
        let (status, body) = s.cmd(c).await;
        assert_eq!(status, StatusCode::OK, "{c:?}: {body}");
    }
}

/// A BullMQ queue `bull:mail` as BullMQ 5 leaves it (job 1 failed, 2 delayed, 3
/// completed, 4 waiting), and a classic Bull queue under the prefix `legacy`
/// (job 1 failed, 2 failed and locked by a worker, 3 delayed with a priority).
async fn seed_queues(s: &Session) {
    setup(
        s,
        &[
            &["SET", "bull:mail:id", "4"],
            &[
                "HSET",
                "bull:mail:meta",
                "opts.maxLenEvents",
                "10000",
                "version",
                "bullmq:5.0.0",
            ],
            &[
                "XADD",
                "bull:mail:events",
                "*",
                "event",
                "added",
                "jobId",
                "1",
            ],
            &[
                "HSET",
                "bull:mail:1",
                "name",
                "welcome",
                "data",
                "{\"to\":\"ada@example.com\"}",
                "opts",
                "{\"attempts\":1}",
                "timestamp",
                "1700000000000",
                "processedOn",
                "1700000000100",
                "finishedOn",
                "1700000000200",
                "failedReason",
                "smtp down",
                "stacktrace",
                "[\"Error: smtp down\\n    at send\"]",
                "atm",
                "1",
                "ats",
                "1",
                "priority",
                "0",
            ],
            &["ZADD", "bull:mail:failed", "1700000000200", "1"],
            &[
                "HSET",
                "bull:mail:2",
                "name",
                "reminder",
                "data",
                "{}",
                "opts",
                "{\"delay\":60000}",
                "timestamp",
                "1700000000000",
                "delay",
                "60000",
                "priority",
                "0",
            ],
            &["ZADD", "bull:mail:delayed", "7300000000000", "2"],
            &[
                "HSET",
                "bull:mail:3",
                "name",
                "welcome",
                "data",
                "{}",
                "returnvalue",
                "{\"sent\":true}",
                "finishedOn",
                "1700000000300",
            ],
            &["ZADD", "bull:mail:completed", "1700000000300", "3"],
            &["HSET", "bull:mail:4", "name", "welcome", "data", "{}"],
            &["LPUSH", "bull:mail:wait", "4"],
            // Classic Bull, own prefix.
            &["SET", "legacy:reports:id", "3"],
            &[
                "HSET",
                "legacy:reports:1",
                "name",
                "__default__",
                "data",
                "{\"month\":3}",
                "opts",
                "{\"attempts\":1}",
                "failedReason",
                "timeout",
                "finishedOn",
                "1700000000000",
                "attemptsMade",
                "1",
            ],
            &["HSET", "legacy:reports:2", "data", "{}", "opts", "{}"],
            &["SET", "legacy:reports:2:lock", "worker-token"],
            &[
                "ZADD",
                "legacy:reports:failed",
                "1700000000000",
                "1",
                "1700000000001",
                "2",
            ],
            &[
                "HSET",
                "legacy:reports:3",
                "data",
                "{}",
                "opts",
                "{}",
                "priority",
                "2",
                "delay",
                "5000",
            ],
            &["ZADD", "legacy:reports:delayed", "7300000000000", "3"],
            // Bull's workers take from the right: 10 (priority 1) goes first.
            &["RPUSH", "legacy:reports:wait", "11", "10"],
            &["ZADD", "legacy:reports:priority", "1", "10", "5", "11"],
            // Look-alikes that are no queues.
            &["SET", "user:42:id", "7"],
            &["HSET", "app:config:meta", "owner", "ops"],
        ],
    )
    .await;
}

async fn result(s: &Session, args: &[&str]) -> Value {
    let (status, body) = s.cmd(args).await;
    assert_eq!(status, StatusCode::OK, "{args:?}: {body}");
    body["result"].clone()
}

#[tokio::test]
async fn queues_are_discovered_with_counts_and_jobs() {
    let (server, _dir) = start().await;
    let (admin, _) = login(&server, RW).await.unwrap();
    seed_queues(&admin).await;
    let (ro, _) = login(&server, RO).await.unwrap();

    let (status, v) = ro.get("queues").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let queues = v["queues"].as_array().unwrap();
    let names: Vec<(String, String, String)> = queues
        .iter()
        .map(|q| {
            (
                q["prefix"].as_str().unwrap().into(),
                q["name"].as_str().unwrap().into(),
                q["kind"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("bull".into(), "mail".into(), "bullmq".into()),
            ("legacy".into(), "reports".into(), "bull".into())
        ],
        "{v}"
    );
    assert_eq!(
        queues[0]["counts"],
        json!({"wait": 1, "paused": 0, "prioritized": 0, "waiting-children": 0,
               "active": 0, "delayed": 1, "completed": 1, "failed": 1})
    );
    assert_eq!(
        queues[1]["counts"],
        json!({"wait": 2, "paused": 0, "active": 0, "delayed": 1, "completed": 0, "failed": 2})
    );
    assert_eq!(queues[0]["paused"], false);

    let (status, page) = ro.get("queue?prefix=bull&name=mail&state=failed").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["total"], 1);
    let job = &page["jobs"][0];
    assert_eq!(job["id"], "1");
    assert_eq!(job["name"], "welcome");
    assert_eq!(job["failedReason"], "smtp down");
    assert_eq!(job["attemptsMade"], "1");
    assert_eq!(job["score"], "1700000000200");
    let (_, page) = ro
        .get("queue?prefix=legacy&name=reports&state=failed&count=1")
        .await;
    assert_eq!(page["total"], 2);
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1);
    // Newest failure first.
    assert_eq!(page["jobs"][0]["id"], "2");
    let (_, page) = ro.get("queue?prefix=bull&name=mail&state=wait").await;
    assert_eq!(page["jobs"][0]["id"], "4");

    let (status, j) = ro.get("queue/job?prefix=bull&name=mail&id=1").await;
    assert_eq!(status, StatusCode::OK, "{j}");
    assert_eq!(j["state"], "failed");
    assert_eq!(j["fields"]["data"], json!({"to": "ada@example.com"}));
    assert_eq!(j["fields"]["opts"], json!({"attempts": 1}));
    assert_eq!(
        j["fields"]["stacktrace"][0],
        "Error: smtp down\n    at send"
    );
    let (_, j) = ro.get("queue/job?prefix=bull&name=mail&id=3").await;
    assert_eq!(
        (j["state"].clone(), j["fields"]["returnvalue"].clone()),
        (json!("completed"), json!({"sent": true}))
    );
    let (_, j) = ro.get("queue/job?prefix=bull&name=mail&id=4").await;
    assert_eq!(j["state"], "wait");

    for bad in [
        "queue?prefix=bull&name=nope&state=failed",
        "queue?prefix=user&name=42",
        "queue/job?prefix=bull&name=mail&id=99",
    ] {
        assert_eq!(ro.get(bad).await.0, StatusCode::NOT_FOUND, "{bad}");
    }
    assert_eq!(
        ro.get("queue?prefix=legacy&name=reports&state=prioritized")
            .await
            .0,
        StatusCode::BAD_REQUEST
    );

    // Read-only sessions cannot act, and nothing changed.
    for body in [
        json!({"prefix": "bull", "name": "mail", "action": "retry", "id": "1"}),
        json!({"prefix": "bull", "name": "mail", "action": "promote", "id": "2"}),
        json!({"prefix": "bull", "name": "mail", "action": "clean", "state": "completed"}),
    ] {
        assert_eq!(ro.post("queue/action", body).await.0, StatusCode::FORBIDDEN);
    }
    assert_eq!(
        result(&admin, &["ZRANGE", "bull:mail:failed", "0", "-1"]).await,
        json!(["1"])
    );
    assert_eq!(
        result(&admin, &["ZCARD", "bull:mail:completed"]).await,
        json!(1)
    );
}

#[tokio::test]
async fn queue_actions_leave_the_keyspace_as_the_libraries_do() {
    let (server, _dir) = start().await;
    let (admin, _) = login(&server, RW).await.unwrap();
    seed_queues(&admin).await;
    let act = |body: Value| {
        let admin = &admin;
        async move { admin.post("queue/action", body).await }
    };

    // BullMQ retry: failed → wait, failure fields and attempts cleared, marker
    // set, a `waiting` event.
    let (status, body) = act(json!({"prefix": "bull", "name": "mail", "action": "retry",
        "id": "1", "reset_attempts": true}))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        result(&admin, &["ZCARD", "bull:mail:failed"]).await,
        json!(0)
    );
    assert_eq!(
        result(&admin, &["LRANGE", "bull:mail:wait", "0", "-1"]).await,
        json!(["1", "4"])
    );
    assert_eq!(
        result(
            &admin,
            &[
                "HMGET",
                "bull:mail:1",
                "failedReason",
                "finishedOn",
                "processedOn",
                "atm",
                "ats",
                "name",
                "stacktrace"
            ]
        )
        .await,
        json!([
            null,
            null,
            null,
            null,
            null,
            "welcome",
            "[\"Error: smtp down\\n    at send\"]"
        ])
    );
    assert_eq!(
        result(
            &admin,
            &["ZRANGE", "bull:mail:marker", "0", "-1", "WITHSCORES"]
        )
        .await,
        json!(["0", "0"])
    );
    let last = result(
        &admin,
        &["XREVRANGE", "bull:mail:events", "+", "-", "COUNT", "1"],
    )
    .await;
    assert_eq!(
        last[0][1],
        json!(["event", "waiting", "jobId", "1", "prev", "failed"])
    );
    // Not failed any more: a second retry is refused, and so is an unknown job.
    let (status, _) =
        act(json!({"prefix": "bull", "name": "mail", "action": "retry", "id": "1"})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) =
        act(json!({"prefix": "bull", "name": "mail", "action": "retry", "id": "77"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A job with a priority is retried into `prioritized`, and a paused queue
    // gets no marker.
    setup(
        &admin,
        &[
            &[
                "HSET",
                "bull:mail:5",
                "name",
                "vip",
                "data",
                "{}",
                "priority",
                "3",
            ],
            &["ZADD", "bull:mail:failed", "1700000000500", "5"],
            &["HSET", "bull:mail:meta", "paused", "1"],
            &["DEL", "bull:mail:marker"],
        ],
    )
    .await;
    let (status, _) =
        act(json!({"prefix": "bull", "name": "mail", "action": "retry", "id": "5"})).await;
    assert_eq!(status, StatusCode::OK);
    let scored = result(&admin, &["ZSCORE", "bull:mail:prioritized", "5"]).await;
    let score = scored
        .as_f64()
        .or_else(|| scored.as_str().and_then(|t| t.parse().ok()))
        .unwrap_or_else(|| panic!("{scored}"));
    assert!(
        (3.0 * 4294967296.0..4.0 * 4294967296.0).contains(&score),
        "{score}"
    );
    assert_eq!(
        result(&admin, &["EXISTS", "bull:mail:marker"]).await,
        json!(0)
    );
    setup(&admin, &[&["HDEL", "bull:mail:meta", "paused"]]).await;

    // BullMQ promote: delayed → wait, delay zeroed, event.
    let (status, _) =
        act(json!({"prefix": "bull", "name": "mail", "action": "promote", "id": "2"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        result(&admin, &["ZCARD", "bull:mail:delayed"]).await,
        json!(0)
    );
    assert_eq!(
        result(&admin, &["LRANGE", "bull:mail:wait", "0", "0"]).await,
        json!(["2"])
    );
    assert_eq!(
        result(&admin, &["HGET", "bull:mail:2", "delay"]).await,
        json!("0")
    );
    let last = result(
        &admin,
        &["XREVRANGE", "bull:mail:events", "+", "-", "COUNT", "1"],
    )
    .await;
    assert_eq!(
        last[0][1],
        json!(["event", "waiting", "jobId", "2", "prev", "delayed"])
    );
    let (status, _) =
        act(json!({"prefix": "bull", "name": "mail", "action": "promote", "id": "2"})).await;
    assert_eq!(status, StatusCode::CONFLICT);

    // Clean: the finished jobs go, with their hashes; a `cleaned` event.
    let (status, body) =
        act(json!({"prefix": "bull", "name": "mail", "action": "clean", "state": "completed"}))
            .await;
    assert_eq!(
        (status, body["removed"].clone()),
        (StatusCode::OK, json!(1))
    );
    assert_eq!(
        result(&admin, &["ZCARD", "bull:mail:completed"]).await,
        json!(0)
    );
    assert_eq!(result(&admin, &["EXISTS", "bull:mail:3"]).await, json!(0));
    let last = result(
        &admin,
        &["XREVRANGE", "bull:mail:events", "+", "-", "COUNT", "1"],
    )
    .await;
    assert_eq!(last[0][1], json!(["event", "cleaned", "count", "1"]));
    // A grace period keeps recent ones.
    setup(
        &admin,
        &[
            &["HSET", "bull:mail:6", "name", "x"],
            &["ZADD", "bull:mail:completed", &format!("{}", now_ms()), "6"],
        ],
    )
    .await;
    let (_, body) = act(json!({"prefix": "bull", "name": "mail", "action": "clean",
        "state": "completed", "grace_ms": 60000}))
    .await;
    assert_eq!(body["removed"], 0);
    assert_eq!(result(&admin, &["EXISTS", "bull:mail:6"]).await, json!(1));

    // Classic Bull: retry onto `wait`, refused while a worker holds the lock.
    let (status, body) =
        act(json!({"prefix": "legacy", "name": "reports", "action": "retry", "id": "1"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        result(&admin, &["LRANGE", "legacy:reports:wait", "0", "0"]).await,
        json!(["1"])
    );
    assert_eq!(
        result(
            &admin,
            &["HMGET", "legacy:reports:1", "failedReason", "attemptsMade"]
        )
        .await,
        json!([null, "1"])
    );
    let (status, _) =
        act(json!({"prefix": "legacy", "name": "reports", "action": "retry", "id": "2"})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        result(&admin, &["ZRANGE", "legacy:reports:failed", "0", "-1"]).await,
        json!(["2"])
    );
    // Bull promote with a priority: taken after job 10 (priority 1), before 11 (5).
    let (status, _) =
        act(json!({"prefix": "legacy", "name": "reports", "action": "promote", "id": "3"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        result(&admin, &["LRANGE", "legacy:reports:wait", "0", "-1"]).await,
        json!(["1", "11", "3", "10"])
    );
    assert_eq!(
        result(&admin, &["ZSCORE", "legacy:reports:priority", "3"]).await,
        json!(2.0)
    );
    // Bad actions.
    for body in [
        json!({"prefix": "bull", "name": "mail", "action": "retry"}),
        json!({"prefix": "bull", "name": "mail", "action": "explode", "id": "1"}),
        json!({"prefix": "bull", "name": "mail", "action": "clean", "state": "wait"}),
        json!({"prefix": "bull"}),
    ] {
        assert_eq!(act(body.clone()).await.0, StatusCode::BAD_REQUEST, "{body}");
    }
    assert_eq!(
        act(json!({"prefix": "no", "name": "such", "action": "retry", "id": "1"}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

// ---- Primitives, memory, realtime keys ----------------------------------------

#[tokio::test]
async fn primitives_are_listed() {
    let (server, _dir) = start().await;
    let (admin, _) = login(&server, RW).await.unwrap();
    setup(
        &admin,
        &[
            &["CL.THROTTLE", "rl:light", "10", "10", "60"],
            &["CL.THROTTLE", "rl:heavy", "10", "10", "60", "8"],
            &[
                "TW.THROTTLE",
                "rl:tiers",
                "TIER",
                "second",
                "5",
                "5",
                "1000",
                "TIER",
                "hour",
                "100",
                "100",
                "3600000",
            ],
            &[
                "TW.IDEM.BEGIN",
                "idem:pay-1",
                "60000",
                "FINGERPRINT",
                "fp-abc",
            ],
            &["TW.IDEM.BEGIN", "idem:pay-2", "60000"],
            &["TW.LOCK.ACQUIRE", "lock:payout", "30000"],
            &["TW.FILL.GET", "cache:report", "30000"],
            // A counter is no throttle.
            &["SET", "counter", "1700000000000000000"],
            &["INCR", "visits"],
        ],
    )
    .await;
    let token = result(&admin, &["TW.IDEM.BEGIN", "idem:pay-2", "60000"]).await;
    assert_eq!(token[0], "inflight");
    let begun = result(&admin, &["TW.IDEM.BEGIN", "idem:done", "60000"]).await;
    let tok = begun[1].as_str().unwrap().to_string();
    setup(
        &admin,
        &[&["TW.IDEM.COMPLETE", "idem:done", &tok, "{\"ok\":1}"]],
    )
    .await;

    let (ro, _) = login(&server, RO).await.unwrap();
    let (status, p) = ro.get("primitives").await;
    assert_eq!(status, StatusCode::OK, "{p}");
    assert_eq!(p["complete"], true);
    let top = p["throttles"]["top"].as_array().unwrap();
    let keys: Vec<&str> = top.iter().map(|t| t["key"].as_str().unwrap()).collect();
    // The most loaded first: 48 s of schedule, then the hour tier's 36 s, then 6 s.
    assert_eq!(keys, ["rl:heavy", "rl:tiers", "rl:light"], "{p}");
    assert_eq!(top[0]["kind"], "CL.THROTTLE");
    assert_eq!(top[1]["kind"], "TW.THROTTLE");
    let tiers: Vec<&str> = top[1]["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tier"].as_str().unwrap())
        .collect();
    assert_eq!(tiers, ["second", "hour"]);
    let reset = top[0]["reset_ms"].as_i64().unwrap();
    // 8 of an emission of 6 s each: 48 s until the burst is whole again.
    assert!(reset > 46_000 && reset <= 48_000, "{reset}");

    let idem = &p["idempotency"];
    assert_eq!(idem["in_flight_count"], 2, "{p}");
    assert_eq!(idem["done_count"], 1, "{p}");
    let pay1 = idem["in_flight"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["key"] == "idem:pay-1")
        .unwrap();
    assert_eq!(pay1["fingerprint"], "fp-abc");
    assert!(pay1["ttl_ms"].as_i64().unwrap() > 50_000);

    let lock = &p["locks"]["held"][0];
    assert_eq!(lock["key"], "lock:payout", "{p}");
    assert!(lock["fence"].as_u64().unwrap() > 0);
    assert!(lock["holder"].as_str().unwrap().ends_with('…'));
    assert_eq!(lock["waiters"], 0);
    let ttl = lock["ttl_ms"].as_i64().unwrap();
    assert!(ttl > 25_000 && ttl <= 30_000, "{ttl}");

    let fill = &p["fills"]["in_flight"][0];
    assert_eq!(fill["key"], "cache:report", "{p}");
    assert!(fill["lease_ms"].as_u64().unwrap() > 25_000);
    assert_eq!(p["fills"]["count"], 1);
    // A lock's waiter shows (over RESP: the REST path does not block).
    let mut raw = common::Raw::connect(&server).await;
    raw.send(&["TW.LOCK.ACQUIRE", "lock:payout", "1000", "WAIT", "5000"])
        .await;
    assert!(
        common::eventually(|| async {
            ro.get("primitives").await.1["locks"]["held"][0]["waiters"] == 1
        })
        .await
    );
}

#[tokio::test]
async fn memory_by_prefix_sampled_and_whole() {
    let (server, _dir) = start().await;
    let (admin, _) = login(&server, RW).await.unwrap();
    let mut cmds: Vec<Vec<String>> = Vec::new();
    for i in 0..60 {
        cmds.push(vec!["SET".into(), format!("user:{i}:name"), "x".repeat(20)]);
    }
    for i in 0..20 {
        cmds.push(vec!["SET".into(), format!("session:{i}"), "y".repeat(2000)]);
    }
    cmds.push(vec!["SET".into(), "plain".into(), "z".into()]);
    for c in &cmds {
        let c: Vec<&str> = c.iter().map(String::as_str).collect();
        setup(&admin, &[&c]).await;
    }
    let (ro, _) = login(&server, RO).await.unwrap();
    let (status, m) = ro.get("memory?sample=1000").await;
    assert_eq!(status, StatusCode::OK, "{m}");
    assert_eq!(
        (m["sampled"].clone(), m["dbsize"].clone()),
        (json!(81), json!(81))
    );
    assert_eq!(m["complete"], true);
    let prefixes = m["prefixes"].as_array().unwrap();
    // The biggest first: 20 large sessions outweigh 60 small names.
    assert_eq!(prefixes[0]["prefix"], "session:");
    assert_eq!(prefixes[0]["keys"], 20);
    assert!(prefixes[0]["bytes"].as_u64().unwrap() >= 20 * 2000);
    let user = prefixes.iter().find(|p| p["prefix"] == "user:").unwrap();
    assert_eq!(user["keys"], 60);
    assert_eq!(user["est_keys"], 60);
    assert!(prefixes.iter().any(|p| p["prefix"] == "(no prefix)"));
    let sum: u64 = prefixes.iter().map(|p| p["bytes"].as_u64().unwrap()).sum();
    assert_eq!(sum, m["sampled_bytes"].as_u64().unwrap());
    assert_eq!(m["est_total_bytes"], m["sampled_bytes"]);

    let (_, m) = ro.get("memory?depth=2&sample=1000").await;
    assert!(m["prefixes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["prefix"] == "user:7:"));

    // A sample: scaled up to the keyspace.
    let (_, m) = ro.get("memory?sample=10").await;
    assert_eq!(m["sampled"], 10, "{m}");
    assert_eq!(m["complete"], false);
    let factor = m["factor"].as_f64().unwrap();
    assert!((factor - 8.1).abs() < 1e-9, "{factor}");
    let est: u64 = m["prefixes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["est_keys"].as_u64().unwrap())
        .sum();
    assert!((75..=87).contains(&est), "{est}");
}

#[tokio::test]
async fn realtime_keys_and_token_minting() {
    let (server, _dir) = start().await;
    let root = server.realtime_root_key.clone().expect("root key");
    let (name, secret) = root.split_once(':').unwrap();
    let (ro, _) = login(&server, RO).await.unwrap();
    assert_eq!(ro.get("realtime/keys").await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        ro.post("realtime/token", json!({"key": name})).await.0,
        StatusCode::FORBIDDEN
    );

    let (admin, _) = login(&server, RW).await.unwrap();
    let (status, v) = admin.get("realtime/keys").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!v.to_string().contains(secret), "the secret leaked: {v}");
    let key = &v["apps"][0]["keys"][0];
    assert_eq!(key["name"], name);
    assert_eq!(key["capability"], json!({"*": ["*"]}));

    let (status, t) = admin
        .post(
            "realtime/token",
            json!({"key": name, "capability": "{\"orders\":[\"publish\"]}", "clientId": "minted", "ttl": 60000}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(t["keyName"], name);
    assert_eq!(t["clientId"], "minted");
    assert_eq!(t["capability"], "{\"orders\":[\"publish\"]}");
    let life = t["expires"].as_i64().unwrap() - t["issued"].as_i64().unwrap();
    assert_eq!(life, 60000);
    let token = t["token"].as_str().unwrap();

    // The token works for what it grants, and only that.
    let publish = |channel: &'static str| {
        let url = format!("http://{}/channels/{channel}/messages", server.http_addr);
        let token = token.to_string();
        async move {
            Client::new()
                .post(url)
                .header("Authorization", format!("Bearer {token}"))
                .json(&json!({"name": "n", "data": "d"}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert!(publish("orders").await.is_success());
    assert_eq!(publish("other").await, StatusCode::UNAUTHORIZED);
    let (_, c) = admin.get("realtime/channel?name=orders").await;
    assert_eq!(c["history"][0]["clientId"], "minted", "{c}");

    for (body, want) in [
        (json!({"key": "nope.nope"}), StatusCode::NOT_FOUND),
        (
            json!({"key": name, "capability": "not json"}),
            StatusCode::BAD_REQUEST,
        ),
        (json!({"key": name, "ttl": -5}), StatusCode::BAD_REQUEST),
        (json!({"nokey": 1}), StatusCode::BAD_REQUEST),
        (json!({"key": name, "app": "nope"}), StatusCode::NOT_FOUND),
    ] {
        assert_eq!(
            admin.post("realtime/token", body.clone()).await.0,
            want,
            "{body}"
        );
    }
}
