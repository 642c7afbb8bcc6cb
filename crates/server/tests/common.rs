//! Shared helpers for integration tests: an in-process server on free ports.
#![allow(dead_code)]

use tidewire_server::{Config, Server};

pub async fn start() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        port: 0,
        http_port: 0,
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let server = tidewire_server::start(config).await.expect("server starts");
    (server, dir)
}

pub async fn redis_conn(server: &Server) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(format!("redis://{}/", server.resp_addr)).expect("client");
    client
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}
