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
