//! CONFIG REWRITE through the real binary: what CONFIG SET and ACL SETUSER changed
//! is in the config file afterwards, and a restart from that file brings it back.

mod persistence_support;

use persistence_support::{start_with_existing_config, try_start_with_toml};

fn get(c: &mut redis::Connection, name: &str) -> String {
    let pair: Vec<String> = redis::cmd("CONFIG").arg("GET").arg(name).query(c).unwrap();
    pair.get(1).cloned().unwrap_or_default()
}

#[test]
fn rewrite_keeps_the_file_and_a_restart_brings_the_settings_back() {
    let dir = tempfile::tempdir().unwrap();
    let toml =
        "# kept by the rewrite\n[redis]\nappendonly = false # no log here\nmaxmemory = \"1mb\"\n";
    let node = try_start_with_toml(dir.path(), toml).expect("starts");
    let mut c = node.conn();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("3mb")
        .arg("save")
        .arg("")
        .arg("hash-max-listpack-entries")
        .arg("7")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("alice")
        .arg("on")
        .arg(">pw")
        .arg("~cache:*")
        .arg("+get")
        .query(&mut c)
        .unwrap();
    let ok: String = redis::cmd("CONFIG").arg("REWRITE").query(&mut c).unwrap();
    assert_eq!(ok, "OK");
    let text = std::fs::read_to_string(dir.path().join("tidewire-test.toml")).unwrap();
    assert!(text.contains("# kept by the rewrite\n[redis]\n"), "{text}");
    // --data-dir was given on the command line: the file now says it, as Redis
    // writes command-line settings into its file.
    assert!(text.starts_with("data_dir = "), "{text}");
    assert!(text.contains("appendonly = false # no log here"), "{text}");
    assert!(text.contains("maxmemory = \"3145728\""), "{text}");
    node.stop();

    let node = start_with_existing_config(dir.path());
    let mut c = node.conn();
    assert_eq!(get(&mut c, "maxmemory"), "3145728");
    assert_eq!(get(&mut c, "save"), "");
    assert_eq!(get(&mut c, "hash-max-listpack-entries"), "7");
    assert_eq!(get(&mut c, "appendonly"), "no");
    let users: Vec<String> = redis::cmd("ACL").arg("USERS").query(&mut c).unwrap();
    assert_eq!(users, vec!["alice".to_string(), "default".to_string()]);
    let who: String = redis::cmd("AUTH")
        .arg("alice")
        .arg("pw")
        .query(&mut c)
        .unwrap();
    assert_eq!(who, "OK");
    node.stop();
}

/// Redis's "CONFIG REWRITE sanity": every parameter written, and the server starts
/// from the result with the same values.
#[test]
fn force_all_rewrite_restarts_with_every_value_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let node = try_start_with_toml(
        dir.path(),
        "[redis]\nappendonly = \"no\"\nenable-debug-command = \"yes\"\n",
    )
    .expect("starts");
    let mut c = node.conn();
    let before: Vec<(String, String)> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("*")
        .query(&mut c)
        .unwrap();
    let ok: String = redis::cmd("DEBUG")
        .arg("CONFIG-REWRITE-FORCE-ALL")
        .query(&mut c)
        .unwrap();
    assert_eq!(ok, "OK");
    node.stop();
    // Defaults the file never named are in it now.
    let text = std::fs::read_to_string(dir.path().join("tidewire-test.toml")).unwrap();
    assert!(text.contains("maxmemory-policy = \"noeviction\""), "{text}");
    let node = start_with_existing_config(dir.path());
    let mut c = node.conn();
    for (name, value) in before {
        if name == "port" {
            continue; // a free port is picked at each start (--port 0)
        }
        assert_eq!(get(&mut c, &name), value, "{name}");
    }
    node.stop();
}

#[test]
fn without_a_config_file_rewrite_says_so() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (server, _dir) = common::start().await;
        let mut raw = common::Raw::connect(&server).await;
        let reply = raw.cmd(&["CONFIG", "REWRITE"]).await;
        assert_eq!(
            reply,
            common::V::Err("ERR The server is running without a config file".into())
        );
    });
}

mod common;
