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
    tidewire_server::build_store(&config).expect("its redis parameters are accepted");
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
