//! The example configuration shipped in the repo must stay loadable.

use tidewire_server::config::{Config, ServerFlags};

#[test]
fn example_config_parses() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tidewire.example.toml");
    let flags = ServerFlags {
        config: Some(path),
        ..Default::default()
    };
    let config = Config::resolve(&flags).expect("example config is valid");
    assert_eq!(config.port, 6379);
    assert_eq!(config.http_port, 8080);
    assert_eq!(config.realtime.history_retention_secs, 120);
    assert_eq!(
        config.qstash,
        tidewire_server::config::QstashConfig::default(),
        "the example shows the QStash defaults"
    );
    tidewire_server::build_store(&config).expect("its redis parameters are accepted");
}

/// The engine settings the example shows commented out are keys the file takes.
#[test]
fn example_engine_settings_parse_when_uncommented() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tidewire.example.toml");
    let text = std::fs::read_to_string(path).expect("example config");
    let engine: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("# engine"))
        .map(|rest| format!("engine{rest}\n"))
        .collect();
    assert!(engine.contains("engine_tls_ca"), "{engine}");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("engine.toml");
    std::fs::write(&file, &engine).expect("write");
    let config = Config::resolve(&ServerFlags {
        config: Some(file),
        ..Default::default()
    })
    .expect("the example's engine keys are valid");
    assert!(config.engine.is_some());
    assert!(config.engine_tls_ca.is_some());
}

/// `tidewire show-config` prints TOML, and a reader that stops early (`| head -1`)
/// does not make it panic.
#[test]
fn show_config_prints_toml_and_survives_a_closed_pipe() {
    use std::process::{Command, Stdio};
    let bin = env!("CARGO_BIN_EXE_tidewire");
    let out = Command::new(bin)
        .args(["--port", "7123", "show-config"])
        .env_remove("TIDEWIRE_CONFIG")
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let parsed: toml::Value = toml::from_str(&text).expect("TOML");
    assert_eq!(parsed["port"].as_integer(), Some(7123));
    // The reading end closed before anything is written.
    let mut child = Command::new(bin)
        .arg("show-config")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("exits");
    assert!(
        out.status.success(),
        "status {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Redis configuration directives work as flags, as with `redis-server --name value`.
#[test]
fn redis_directives_as_command_line_flags() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidewire"))
        .args([
            "--port",
            "0",
            "--http-port",
            "0",
            "--print-ports",
            "--bind",
            "127.0.0.1",
        ])
        .arg("--dir")
        .arg(dir.path())
        .args(["--appendonly", "no", "--maxmemory", "100mb"])
        .args([
            "--maxmemory-policy",
            "allkeys-lru",
            "--save",
            "900",
            "1",
            "300",
            "10",
        ])
        .env_remove("TIDEWIRE_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let stdout = child.stdout.take().unwrap();
    let port = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("resp=").map(str::to_owned))
        })
        .expect("LISTENING line");
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let mut conn = client.get_connection().unwrap();
    let get = |conn: &mut redis::Connection, name: &str| -> String {
        let v: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query(conn)
            .unwrap();
        v.get(1).cloned().unwrap_or_default()
    };
    assert_eq!(get(&mut conn, "appendonly"), "no");
    assert_eq!(get(&mut conn, "maxmemory"), "104857600");
    assert_eq!(get(&mut conn, "maxmemory-policy"), "allkeys-lru");
    assert_eq!(get(&mut conn, "save"), "900 1 300 10");
    assert_eq!(get(&mut conn, "dir"), dir.path().to_string_lossy());
    let _ = child.kill();
    let _ = child.wait();
}
