//! A started server and an HTTP client for the Upstash REST tests.
#![allow(dead_code)]

use serde_json::Value;
use tidewire_server::{Config, Server};

pub struct Rest {
    pub server: Option<Server>,
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
}

pub async fn start() -> Rest {
    start_with(|_| {}).await
}

pub async fn start_with(f: impl FnOnce(&mut Config)) -> Rest {
    let dir = tempfile::tempdir().unwrap();
    start_in(dir, f).await
}

pub async fn start_in(dir: tempfile::TempDir, f: impl FnOnce(&mut Config)) -> Rest {
    let mut config = Config {
        port: 0,
        http_port: 0,
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    f(&mut config);
    let mount = config.upstash.mount.clone();
    let server = tidewire_server::start(config).await.unwrap();
    let base = format!("http://{}{}", server.http_addr, mount);
    let token = server.rest.tokens.primary().to_string();
    Rest {
        server: Some(server),
        base,
        token,
        http: reqwest::Client::new(),
        dir,
    }
}

impl Rest {
    pub fn server(&self) -> &Server {
        self.server.as_ref().unwrap()
    }

    /// POSTs a JSON command to the mount; returns (status, body).
    pub async fn cmd(&self, body: Value) -> (u16, Value) {
        self.post_json("", &body, &self.token.clone()).await
    }

    pub async fn post_json(&self, path: &str, body: &Value, token: &str) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{}", self.base, path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{}", self.base, path))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
        self.dir
    }
}
