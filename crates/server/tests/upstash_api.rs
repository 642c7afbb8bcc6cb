//! The Upstash REST API over real HTTP: body and path forms, encodings, auth,
//! limits, pipelines and transactions.

mod upstash_support;

use serde_json::json;
use upstash_support::*;

#[tokio::test]
async fn body_form_types_and_errors() {
    let t = start().await;
    assert_eq!(
        t.cmd(json!(["SET", "k", "v", "EX", 100])).await,
        (200, json!({"result": "OK"}))
    );
    assert_eq!(
        t.cmd(json!(["GET", "k"])).await,
        (200, json!({"result": "v"}))
    );
    assert_eq!(
        t.cmd(json!(["INCR", "n"])).await,
        (200, json!({"result": 1}))
    );
    assert_eq!(t.cmd(json!(["SET", "b", true])).await.0, 200);
    assert_eq!(
        t.cmd(json!(["GET", "b"])).await.1,
        json!({"result": "true"})
    );
    assert_eq!(
        t.cmd(json!(["GET", "nokey"])).await,
        (200, json!({"result": null}))
    );
    assert_eq!(
        t.cmd(json!(["INCR", "k"])).await,
        (
            400,
            json!({"error": "ERR value is not an integer or out of range"})
        )
    );
    assert_eq!(
        t.cmd(json!(["GET"])).await,
        (
            400,
            json!({"error": "ERR wrong number of arguments for 'get' command"})
        )
    );
    let (status, body) = t.cmd(json!(["NOPE", "x"])).await;
    assert_eq!(status, 400);
    assert!(body["error"]
        .as_str()
        .unwrap()
        .starts_with("ERR unknown command 'NOPE'"));
    let (status, body) = t.cmd(json!({"not": "an array"})).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().starts_with("ERR"));
    let (status, _) = t.cmd(json!(["SET", "k", null])).await;
    assert_eq!(status, 400);
    t.stop().await;
}

#[tokio::test]
async fn path_form_and_url_encoding() {
    let t = start().await;
    assert_eq!(t.get("/set/foo/bar").await, (200, json!({"result": "OK"})));
    assert_eq!(t.get("/get/foo").await, (200, json!({"result": "bar"})));
    assert_eq!(t.get("/SET/t/v/EX/100").await.0, 200);
    let ttl = t.get("/ttl/t").await.1["result"].as_i64().unwrap();
    assert!((99..=100).contains(&ttl), "{ttl}");
    // Encoded slash and space stay inside one argument.
    assert_eq!(t.get("/set/a%2Fb%20c/x%2By").await.0, 200);
    assert_eq!(
        t.cmd(json!(["GET", "a/b c"])).await.1,
        json!({"result": "x+y"})
    );
    // POST body is the last argument, taken raw.
    let r = t
        .http
        .post(format!("{}/set/raw", t.base))
        .bearer_auth(&t.token)
        .body("[\"not json\"] / with slashes")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        t.get("/get/raw").await.1,
        json!({"result": "[\"not json\"] / with slashes"})
    );
    // Trailing slash and the bare mount.
    assert_eq!(t.get("/get/foo/").await.1, json!({"result": "bar"}));
    assert_eq!(t.get("/ping").await.1, json!({"result": "PONG"}));
    t.stop().await;
}

#[tokio::test]
async fn base64_and_binary_values() {
    let t = start().await;
    assert_eq!(t.get("/set/bin/%FF%00%01").await.0, 200);
    let b64 = |path: &str| {
        t.http
            .get(format!("{}{}", t.base, path))
            .bearer_auth(&t.token)
            .header("Upstash-Encoding", "base64")
    };
    let r: serde_json::Value = b64("/get/bin").send().await.unwrap().json().await.unwrap();
    assert_eq!(r, json!({"result": "/wAB"}));
    // OK stays readable, numbers stay numbers, nested strings are encoded.
    let r: serde_json::Value = b64("/set/s/OK").send().await.unwrap().json().await.unwrap();
    assert_eq!(r, json!({"result": "OK"}));
    let r: serde_json::Value = b64("/get/s").send().await.unwrap().json().await.unwrap();
    assert_eq!(r, json!({"result": "T0s="}));
    let r: serde_json::Value = b64("/incr/c").send().await.unwrap().json().await.unwrap();
    assert_eq!(r, json!({"result": 1}));
    let r: serde_json::Value = b64("/mget/s/none")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r, json!({"result": ["T0s=", null]}));
    let r: serde_json::Value = b64("/ping").send().await.unwrap().json().await.unwrap();
    assert_eq!(r, json!({"result": "UE9ORw=="}));
    // Errors are never encoded.
    let r = b64("/incr/s").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        r,
        json!({"error": "ERR value is not an integer or out of range"})
    );
    // Without base64, invalid UTF-8 becomes U+FFFD.
    assert_eq!(
        t.get("/get/bin").await.1,
        json!({"result": "\u{fffd}\u{0}\u{1}"})
    );
    // RESP2 on request.
    let r = t
        .http
        .get(format!("{}/get/s", t.base))
        .bearer_auth(&t.token)
        .header("Upstash-Response-Format", "resp2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"$2\r\nOK\r\n");
    let r = t
        .http
        .post(format!("{}/pipeline", t.base))
        .bearer_auth(&t.token)
        .header("Upstash-Response-Format", "resp2")
        .json(&json!([["GET", "s"], ["INCR", "s"], ["MGET", "s", "none"]]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.bytes().await.unwrap().as_ref(),
        &b"$2\r\nOK\r\n-ERR value is not an integer or out of range\r\n*2\r\n$2\r\nOK\r\n$-1\r\n"[..]
    );
    // A pipeline in base64: every envelope's strings are encoded.
    let r: serde_json::Value = t
        .http
        .post(format!("{}/pipeline", t.base))
        .bearer_auth(&t.token)
        .header("Upstash-Encoding", "base64")
        .json(&json!([["GET", "s"], ["SET", "s", "OK"], ["INCR", "s"]]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        r,
        json!([
            {"result": "T0s="},
            {"result": "OK"},
            {"error": "ERR value is not an integer or out of range"}
        ])
    );
    t.stop().await;
}

/// DUMP's binary reply over REST: base64 when asked (the payload exactly), lossy
/// text otherwise, never a failure; the payload POSTed raw restores.
#[tokio::test]
async fn dump_and_restore_over_rest() {
    use base64::Engine;
    let t = start().await;
    t.cmd(json!(["RPUSH", "l", "a", "1", "\u{ff}"])).await;
    let r: serde_json::Value = t
        .http
        .post(&t.base)
        .bearer_auth(&t.token)
        .header("Upstash-Encoding", "base64")
        .json(&json!(["DUMP", "l"]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let payload = base64::engine::general_purpose::STANDARD
        .decode(r["result"].as_str().unwrap())
        .unwrap();
    assert_eq!(payload[0], 18, "a quicklist of listpacks");
    let (status, body) = t.cmd(json!(["DUMP", "l"])).await;
    assert_eq!(status, 200);
    assert!(body["result"].is_string());
    assert_eq!(
        t.cmd(json!(["DUMP", "none"])).await.1,
        json!({"result": null})
    );
    let r = t
        .http
        .post(format!("{}/restore/copy/0", t.base))
        .bearer_auth(&t.token)
        .body(payload)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        t.cmd(json!(["LRANGE", "copy", 0, -1])).await.1,
        json!({"result": ["a", "1", "\u{ff}"]})
    );
    let (status, body) = t.cmd(json!(["RESTORE", "other", 0, "not a payload"])).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": "ERR DUMP payload version or checksum are wrong"})
    );
    t.stop().await;
}

#[tokio::test]
async fn methods_and_auth() {
    let t = start().await;
    let r = t
        .http
        .put(format!("{}/get/k", t.base))
        .bearer_auth(&t.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, POST");
    let r = t
        .http
        .delete(format!("{}/get/k", t.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);

    let r = t
        .http
        .get(format!("{}/get/k", t.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body, json!({"error": "Unauthorized"}));
    let (status, body) = t.post_json("", &json!(["GET", "k"]), "wrong").await;
    assert_eq!((status, body), (401, json!({"error": "Unauthorized"})));
    let r = t
        .http
        .get(format!("{}/ping?_token={}", t.base, t.token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    t.stop().await;
}

#[tokio::test]
async fn generated_token_survives_restart() {
    let t = start().await;
    let token = t.token.clone();
    assert_eq!(token.len(), 43);
    let dir = t.stop().await;
    let t = start_in(dir, |_| {}).await;
    assert_eq!(t.token, token);
    assert_eq!(t.get("/ping").await.0, 200);
    t.stop().await;
}

#[tokio::test]
async fn configured_and_read_only_tokens() {
    let t = start_with(|c| {
        c.upstash.tokens = vec!["rw1".into(), "rw2".into()];
        c.upstash.readonly_tokens = vec!["ro".into()];
    })
    .await;
    assert_eq!(t.token, "rw1");
    assert_eq!(
        t.post_json("", &json!(["SET", "k", "v"]), "rw2").await.0,
        200
    );
    assert_eq!(
        t.post_json("", &json!(["GET", "k"]), "ro").await,
        (200, json!({"result": "v"}))
    );
    assert_eq!(
        t.post_json("", &json!(["SET", "k", "w"]), "ro").await,
        (
            400,
            json!({"error": "NOPERM this user has no permissions to run the 'set' command or its subcommand"})
        )
    );
    assert_eq!(t.post_json("", &json!(["KEYS", "*"]), "ro").await.0, 400);
    assert_eq!(t.post_json("", &json!(["SCAN", "0"]), "ro").await.0, 400);
    assert_eq!(t.post_json("", &json!(["PING"]), "ro").await.0, 200);
    let (status, body) = t
        .post_json("/pipeline", &json!([["GET", "k"], ["DEL", "k"]]), "ro")
        .await;
    assert_eq!(status, 200);
    assert_eq!(body[0], json!({"result": "v"}));
    assert!(body[1]["error"].as_str().unwrap().starts_with("NOPERM"));
    let (status, body) = t
        .post_json("/multi-exec", &json!([["GET", "k"], ["DEL", "k"]]), "ro")
        .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().starts_with("NOPERM"));
    assert_eq!(t.cmd(json!(["GET", "k"])).await.1, json!({"result": "v"}));
    t.stop().await;
}

/// Scripts and functions over REST: EVAL/EVALSHA/FCALL through `/`, `/pipeline`
/// and `/multi-exec`; a read-only token runs only the `_RO` forms, and those
/// still may not write.
#[tokio::test]
async fn scripts_and_functions_over_rest_and_read_only_tokens() {
    let t = start_with(|c| c.upstash.readonly_tokens = vec!["ro".into()]).await;
    let lib = "#!lua name=rest\n\
               redis.register_function('bump', function(keys, args) return redis.call('incrby', keys[1], args[1]) end)\n\
               redis.register_function{function_name='peek', callback=function(keys) return redis.call('get', keys[1]) end, flags={'no-writes'}}";
    assert_eq!(
        t.cmd(json!(["FUNCTION", "LOAD", lib])).await,
        (200, json!({"result": "rest"}))
    );
    assert_eq!(
        t.cmd(json!(["FCALL", "bump", 1, "n", 5])).await,
        (200, json!({"result": 5}))
    );
    let (status, body) = t
        .post_json(
            "/pipeline",
            &json!([
                ["FCALL", "bump", 1, "n", 2],
                ["EVAL", "return redis.call('get', KEYS[1])", 1, "n"]
            ]),
            &t.token,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, json!([{"result": 7}, {"result": "7"}]));
    let (status, body) = t
        .post_json(
            "/multi-exec",
            &json!([["FCALL", "bump", 1, "n", 1], ["FCALL_RO", "peek", 1, "n"]]),
            &t.token,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, json!([{"result": 8}, {"result": "8"}]));
    let sha = t
        .cmd(json!([
            "SCRIPT",
            "LOAD",
            "return redis.call('get', KEYS[1])"
        ]))
        .await
        .1["result"]
        .as_str()
        .unwrap()
        .to_string();
    // Read-only token: the _RO forms only.
    assert_eq!(
        t.post_json("", &json!(["FCALL_RO", "peek", 1, "n"]), "ro")
            .await,
        (200, json!({"result": "8"}))
    );
    assert_eq!(
        t.post_json("", &json!(["EVALSHA_RO", sha, 1, "n"]), "ro")
            .await,
        (200, json!({"result": "8"}))
    );
    for cmd in [
        json!(["FCALL", "bump", 1, "n", 1]),
        json!(["EVAL", "return 1", 0]),
        json!(["EVALSHA", sha, 1, "n"]),
        json!(["FUNCTION", "LOAD", lib]),
        json!(["SCRIPT", "LOAD", "return 1"]),
    ] {
        let (status, body) = t.post_json("", &cmd, "ro").await;
        assert_eq!(status, 400, "{cmd}");
        assert!(
            body["error"].as_str().unwrap().starts_with("NOPERM"),
            "{cmd}: {body}"
        );
    }
    // As Upstash: FCALL_RO of a function without `no-writes` runs read-only, and
    // its first write is refused (Redis refuses the call itself).
    let (status, body) = t
        .post_json("", &json!(["FCALL_RO", "bump", 1, "n", 1]), "ro")
        .await;
    assert_eq!(status, 400);
    let error = body["error"].as_str().unwrap();
    assert!(
        error.starts_with("ERR Write commands are not allowed from read-only scripts."),
        "{body}"
    );
    let lib2 = "#!lua name=rest2\nredis.register_function('plain_get', function(keys) return redis.call('get', keys[1]) end)";
    assert_eq!(t.cmd(json!(["FUNCTION", "LOAD", lib2])).await.0, 200);
    assert_eq!(
        t.post_json("", &json!(["FCALL_RO", "plain_get", 1, "n"]), "ro")
            .await,
        (200, json!({"result": "8"}))
    );
    assert_eq!(t.cmd(json!(["GET", "n"])).await.1, json!({"result": "8"}));
    t.stop().await;
}

#[tokio::test]
async fn body_limit_gives_413() {
    let t = start_with(|c| c.http.max_body_bytes = 1024).await;
    let big = "x".repeat(4096);
    let (status, body) = t.cmd(json!(["SET", "k", big])).await;
    assert_eq!(status, 413);
    assert!(body["error"].as_str().unwrap().contains("max request size"));
    // Just under the limit is fine.
    let ok = "x".repeat(900);
    assert_eq!(t.cmd(json!(["SET", "k", ok])).await.0, 200);
    t.stop().await;
}

#[tokio::test]
async fn default_body_limit_takes_a_megabyte() {
    let t = start().await;
    let big = "y".repeat(2 * 1024 * 1024);
    assert_eq!(t.cmd(json!(["SET", "big", big])).await.0, 200);
    let got = t.cmd(json!(["GET", "big"])).await.1;
    assert_eq!(got["result"].as_str().unwrap().len(), 2 * 1024 * 1024);
    t.stop().await;
}

#[tokio::test]
async fn pipeline_is_per_command() {
    let t = start_with(|c| c.upstash.max_pipeline = 6).await;
    let (status, body) = t
        .post_json(
            "/pipeline",
            &json!([
                ["SET", "a", "1"],
                ["INCR", "a"],
                ["GET"],
                ["SET", "s", "x"],
                ["INCR", "s"],
                ["GET", "a"]
            ]),
            &t.token.clone(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!([
            {"result": "OK"},
            {"result": 2},
            {"error": "ERR wrong number of arguments for 'get' command"},
            {"result": "OK"},
            {"error": "ERR value is not an integer or out of range"},
            {"result": "2"}
        ])
    );
    let (status, body) = t
        .post_json(
            "/pipeline",
            &serde_json::Value::from(vec![json!(["PING"]); 7]),
            &t.token.clone(),
        )
        .await;
    assert_eq!(status, 400);
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("pipeline too long"));
    let (status, _) = t
        .post_json("/pipeline", &json!(["PING"]), &t.token.clone())
        .await;
    assert_eq!(status, 400);
    t.stop().await;
}

#[tokio::test]
async fn multi_exec_is_atomic_and_reports_aborts() {
    let t = start().await;
    let tok = t.token.clone();
    let (status, body) = t
        .post_json(
            "/multi-exec",
            &json!([
                ["SET", "m", "1"],
                ["INCR", "m"],
                ["SET", "s", "x"],
                ["INCR", "s"],
                ["GET", "m"]
            ]),
            &tok,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!([
            {"result": "OK"},
            {"result": 2},
            {"result": "OK"},
            {"error": "ERR value is not an integer or out of range"},
            {"result": "2"}
        ])
    );
    // A command that fails to queue aborts the whole transaction: nothing runs.
    let (status, body) = t
        .post_json(
            "/multi-exec",
            &json!([["SET", "m", "100"], ["NOPE"], ["GET", "m"]]),
            &tok,
        )
        .await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "EXECABORT Transaction discarded because of previous errors."})
        )
    );
    assert_eq!(t.cmd(json!(["GET", "m"])).await.1, json!({"result": "2"}));
    // Commands REST refuses abort it too.
    let (status, body) = t
        .post_json("/multi-exec", &json!([["WATCH", "m"], ["GET", "m"]]), &tok)
        .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("WATCH"));
    t.stop().await;
}

#[tokio::test]
async fn refused_commands() {
    let t = start().await;
    // BLPOP is refused for its `blocking` flag once the lists family is merged;
    // before that it is an unknown command. Either way it never blocks.
    let (status, body) = t.cmd(json!(["BLPOP", "l", 0])).await;
    assert_eq!(status, 400);
    let e = body["error"].as_str().unwrap();
    assert!(
        e.contains("blocking") || e.contains("unknown command"),
        "{e}"
    );
    for cmd in [
        json!(["WATCH", "k"]),
        json!(["SUBSCRIBE", "c"]),
        json!(["PSUBSCRIBE", "c*"]),
        json!(["MULTI"]),
        json!(["EXEC"]),
    ] {
        let (status, body) = t.cmd(cmd.clone()).await;
        assert_eq!(status, 400, "{cmd}");
        assert!(
            body["error"].as_str().unwrap().contains("not supported"),
            "{body}"
        );
    }
    t.stop().await;
}

#[tokio::test]
async fn sync_token_grows() {
    let t = start().await;
    let token = |r: &reqwest::Response| -> u64 {
        r.headers()["upstash-sync-token"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let a = t
        .http
        .get(format!("{}/ping", t.base))
        .bearer_auth(&t.token)
        .send()
        .await
        .unwrap();
    let b = t
        .http
        .get(format!("{}/ping", t.base))
        .bearer_auth(&t.token)
        .header("upstash-sync-token", token(&a).to_string())
        .send()
        .await
        .unwrap();
    assert!(token(&b) > token(&a));
    t.stop().await;
}

#[tokio::test]
async fn root_port_and_custom_mount() {
    let t = start_with(|c| {
        c.upstash.port = Some(0);
        c.upstash.mount = "/kv".into();
    })
    .await;
    assert_eq!(t.get("/set/k/v").await.0, 200);
    let root = format!("http://{}", t.server().upstash_addr.unwrap());
    let r: serde_json::Value = t
        .http
        .post(&root)
        .bearer_auth(&t.token)
        .json(&json!(["GET", "k"]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r, json!({"result": "v"}));
    let r = t
        .http
        .post(format!("{root}/pipeline"))
        .bearer_auth(&t.token)
        .json(&json!([["GET", "k"]]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let old = t
        .http
        .get(format!("http://{}/redis/get/k", t.server().http_addr))
        .bearer_auth(&t.token)
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 404);
    t.stop().await;
}

#[tokio::test]
async fn cors_off_by_default_and_configurable() {
    let t = start().await;
    let r = t
        .http
        .get(format!("{}/ping", t.base))
        .bearer_auth(&t.token)
        .header("Origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    t.stop().await;

    let t = start_with(|c| c.http.cors_origins = vec!["https://app.example".into()]).await;
    let r = t
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/ping", t.base))
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    t.stop().await;
}

#[tokio::test]
async fn slow_request_times_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = start_with(|c| c.http.request_timeout = std::time::Duration::from_millis(200)).await;
    // Promise a body and never send it: the request cannot finish in time.
    let mut s = tokio::net::TcpStream::connect(t.server().http_addr)
        .await
        .unwrap();
    let head = format!(
        "POST /redis HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 10\r\n\r\n",
        t.token
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("no answer")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 504"), "{text}");
    assert!(
        text.contains("{\"error\":\"ERR request timed out\"}"),
        "{text}"
    );
    t.stop().await;
}

/// Streams over REST, in the shapes @upstash/redis reads: XREAD and XREADGROUP are
/// ordinary reads there (BLOCK answers at once), and a read-only token may read a
/// stream but not add to it or consume it as a group.
#[tokio::test]
async fn streams_over_rest() {
    let t = start_with(|c| c.upstash.readonly_tokens = vec!["ro".into()]).await;
    assert_eq!(
        t.cmd(json!(["XADD", "s", "1-1", "f", "v", "n", 1])).await,
        (200, json!({"result": "1-1"}))
    );
    assert_eq!(
        t.cmd(json!(["XADD", "s", "2-0", "f", "w"])).await,
        (200, json!({"result": "2-0"}))
    );
    assert_eq!(
        t.cmd(json!(["XRANGE", "s", "-", "+"])).await,
        (
            200,
            json!({"result": [["1-1", ["f", "v", "n", "1"]], ["2-0", ["f", "w"]]]})
        )
    );
    assert_eq!(
        t.cmd(json!(["XREAD", "COUNT", 1, "STREAMS", "s", "0"]))
            .await,
        (
            200,
            json!({"result": [["s", [["1-1", ["f", "v", "n", "1"]]]]]})
        )
    );
    // Nothing new: BLOCK answers at once with nil instead of holding the request.
    assert_eq!(
        t.cmd(json!(["XREAD", "BLOCK", 1000, "STREAMS", "s", "$"]))
            .await,
        (200, json!({"result": null}))
    );
    assert_eq!(
        t.cmd(json!(["XGROUP", "CREATE", "s", "g", "0"])).await.0,
        200
    );
    let (status, body) = t
        .post_json(
            "/pipeline",
            &json!([
                [
                    "XREADGROUP",
                    "GROUP",
                    "g",
                    "c",
                    "COUNT",
                    1,
                    "STREAMS",
                    "s",
                    ">"
                ],
                ["XPENDING", "s", "g"],
                ["XACK", "s", "g", "1-1"],
                ["XLEN", "s"]
            ]),
            &t.token,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!([
            {"result": [["s", [["1-1", ["f", "v", "n", "1"]]]]]},
            {"result": [1, "1-1", "1-1", [["c", "1"]]]},
            {"result": 1},
            {"result": 2}
        ])
    );
    assert_eq!(
        t.post_json("", &json!(["XRANGE", "s", "2", "+"]), "ro")
            .await,
        (200, json!({"result": [["2-0", ["f", "w"]]]}))
    );
    assert_eq!(
        t.post_json("", &json!(["XADD", "s", "*", "f", "x"]), "ro")
            .await
            .0,
        400
    );
    assert_eq!(
        t.post_json(
            "",
            &json!(["XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">"]),
            "ro"
        )
        .await
        .0,
        400
    );
    // Commands that always block are still refused.
    assert_eq!(t.cmd(json!(["BLPOP", "l", 1])).await.0, 400);
    t.stop().await;
}

/// Where only Upstash defines a behaviour, the REST API follows it: `SCAN …
/// WITHTYPE` pairs each key with its type, and `COPY k k` answers 0 (the client's
/// `NOT_COPIED`) rather than Redis's error.
#[tokio::test]
async fn upstash_only_behaviours() {
    let t = start().await;
    t.cmd(json!(["SET", "s", "v"])).await;
    assert_eq!(
        t.cmd(json!(["SCAN", "0", "WITHTYPE", "COUNT", 100])).await,
        (200, json!({"result": ["0", ["s", "string"]]}))
    );
    assert_eq!(
        t.cmd(json!(["COPY", "s", "s"])).await,
        (200, json!({"result": 0}))
    );
    assert_eq!(
        t.cmd(json!(["BITOP", "DIFF", "d", "s"])).await,
        (
            400,
            json!({"error": "ERR BITOP DIFF must be called with at least two source keys."})
        )
    );
}
