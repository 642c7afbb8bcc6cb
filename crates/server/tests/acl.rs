//! ACL users through the real server: an ACL file loaded at start, AUTH as a user
//! over RESP, and an Upstash REST token that runs as an ACL user.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_file_users_over_resp_and_rest() {
    let dir = tempfile::tempdir().unwrap();
    let aclfile = dir.path().join("users.acl");
    std::fs::write(
        &aclfile,
        "user default on nopass ~* &* +@all\nuser cache on >cachepw ~cache:* resetchannels -@all +get +set\n",
    )
    .unwrap();
    let mut config = tidewire_server::Config {
        port: 0,
        http_port: 0,
        data_dir: dir.path().join("data"),
        redis: vec![("aclfile".into(), aclfile.to_string_lossy().into_owned())],
        ..tidewire_server::Config::default()
    };
    config.upstash.tokens = vec!["admin-token".into()];
    config.upstash.acl_tokens = vec![("cache-token".into(), "cache".into())];
    let server = tidewire_server::start(config).await.expect("server starts");

    // RESP: AUTH as the file's user, then its permissions hold.
    let client =
        redis::Client::open(format!("redis://cache:cachepw@{}/", server.resp_addr)).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let who: String = redis::cmd("ACL")
        .arg("WHOAMI")
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    assert_eq!(who, "", "ACL WHOAMI is not among cache's commands");
    let _: () = redis::cmd("SET")
        .arg("cache:a")
        .arg("1")
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = redis::cmd("SET")
        .arg("other")
        .arg("1")
        .query_async::<()>(&mut conn)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("No permissions to access a key"),
        "{err}"
    );
    let err = redis::cmd("DEL")
        .arg("cache:a")
        .query_async::<()>(&mut conn)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("has no permissions to run the 'del' command"),
        "{err}"
    );

    // REST: the mapped token runs as `cache`, the plain token as default.
    let call = |token: &'static str, cmd: serde_json::Value| common::rest_call(&server, token, cmd);
    assert_eq!(
        call("cache-token", serde_json::json!(["GET", "cache:a"])).await["result"],
        "1"
    );
    let denied = call("cache-token", serde_json::json!(["GET", "other"])).await;
    assert_eq!(denied["error"], "NOPERM No permissions to access a key");
    assert_eq!(
        call("admin-token", serde_json::json!(["DEL", "cache:a"])).await["result"],
        1
    );
    drop(conn);
    server.shutdown().await;
}

/// `user` directives define ACL users as in redis.conf; a name defined twice, or
/// users beside an ACL file, refuse to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_directives_define_users_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let start = |redis: Vec<(&'static str, &'static str)>| {
        let data_dir = dir.path().join(format!("d{}", redis.len()));
        let redis: Vec<(String, String)> = redis
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        async move {
            let config = tidewire_server::Config {
                port: 0,
                http_port: 0,
                data_dir,
                redis,
                ..tidewire_server::Config::default()
            };
            tidewire_server::start(config).await
        }
    };
    let server = start(vec![("user", "app on >apppw ~app:* +@all")])
        .await
        .unwrap();
    let client = redis::Client::open(format!("redis://app:apppw@{}/", server.resp_addr)).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg("app:1")
        .arg("v")
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = redis::cmd("GET")
        .arg("other")
        .query_async::<()>(&mut conn)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("No permissions to access a key"),
        "{err}"
    );
    drop(conn);
    server.shutdown().await;
    let err = start(vec![("user", "x on"), ("user", "x off")])
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("Duplicate user 'x'"), "{err}");
    let err = start(vec![
        ("user", "x on"),
        ("user", "y on"),
        ("aclfile", "users.acl"),
    ])
    .await
    .err()
    .expect("refused");
    assert!(err.to_string().contains("ACL file"), "{err}");
}
