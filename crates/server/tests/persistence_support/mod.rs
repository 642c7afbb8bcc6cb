//! Helpers for the persistence and crash tests: start the real `tidewire` binary as a
//! child process on free ports with a data directory, talk to it with the `redis`
//! crate, kill it with SIGKILL.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub struct Node {
    pub child: Child,
    pub port: u16,
    pub http_port: u16,
    pub dir: PathBuf,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

/// Writes a config file with these Redis parameters.
pub fn config_file(dir: &Path, params: &[(&str, &str)]) -> PathBuf {
    let mut text = String::from("[redis]\n");
    for (k, v) in params {
        text.push_str(&format!("\"{k}\" = \"{v}\"\n"));
    }
    let path = dir.join("tidewire-test.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts the binary; `Err(stderr)` if it exits before listening.
pub fn try_start(dir: &Path, params: &[(&str, &str)]) -> Result<Node, String> {
    try_start_with_env(dir, params, &[])
}

/// [`try_start`] with extra environment variables for the child (e.g.
/// `TIDEWIRE_THREADS`, a top-level setting the `[redis]` params cannot carry).
pub fn try_start_with_env(
    dir: &Path,
    params: &[(&str, &str)],
    env: &[(&str, &str)],
) -> Result<Node, String> {
    let cfg = config_file(dir, params);
    spawn(dir, &cfg, env)
}

/// [`try_start_with_toml`] from async code, which must succeed; the node and
/// its HTTP address.
pub async fn started_with_toml(dir: &Path, toml: String) -> (Node, String) {
    let dir = dir.to_path_buf();
    let child = tokio::task::spawn_blocking(move || {
        try_start_with_toml(&dir, &toml).unwrap_or_else(|e| panic!("tidewire did not start: {e}"))
    })
    .await
    .expect("spawned");
    let http = format!("127.0.0.1:{}", child.http_port);
    (child, http)
}

/// Starts the binary with `toml` as its whole config file (for sections other than
/// `[redis]`, e.g. `[realtime]`); `Err(stderr)` if it exits before listening.
pub fn try_start_with_toml(dir: &Path, toml: &str) -> Result<Node, String> {
    let cfg = dir.join("tidewire-test.toml");
    std::fs::write(&cfg, toml).unwrap();
    spawn(dir, &cfg, &[])
}

/// Starts the binary with the config file already at `dir/tidewire-test.toml`
/// (left there by an earlier start, perhaps rewritten by CONFIG REWRITE).
pub fn start_with_existing_config(dir: &Path) -> Node {
    match spawn(dir, &dir.join("tidewire-test.toml"), &[]) {
        Ok(n) => n,
        Err(e) => panic!("tidewire did not start: {e}"),
    }
}

/// Runs the binary on `dir/data` with config file `cfg` and waits for its ports.
fn spawn(dir: &Path, cfg: &Path, env: &[(&str, &str)]) -> Result<Node, String> {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidewire"))
        .arg("--config")
        .arg(cfg)
        .arg("--port")
        .arg("0")
        .arg("--http-port")
        .arg("0")
        .arg("--bind")
        .arg("127.0.0.1")
        .arg("--data-dir")
        .arg(&data)
        .arg("--print-ports")
        .env("TIDEWIRE_LOG_LEVEL", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tidewire");
    let stdout = child.stdout.take().unwrap();
    let mut stderr_pipe = child.stderr.take().unwrap();
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    {
        let stderr = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                stderr
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        while let Some(Ok(line)) = lines.next() {
            if let Some(rest) = line.strip_prefix("LISTENING ") {
                let mut resp = 0;
                let mut http = 0;
                for part in rest.split_whitespace() {
                    if let Some(p) = part.strip_prefix("resp=") {
                        resp = p.parse().unwrap_or(0);
                    }
                    if let Some(p) = part.strip_prefix("http=") {
                        http = p.parse().unwrap_or(0);
                    }
                }
                let _ = tx.send((resp, http));
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok((port, http_port)) = rx.recv_timeout(Duration::from_millis(50)) {
            return Ok(Node {
                child,
                port,
                http_port,
                dir: data,
                stderr,
            });
        }
        if let Ok(Some(_status)) = child.try_wait() {
            std::thread::sleep(Duration::from_millis(100));
            return Err(stderr.lock().unwrap().clone());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err("timed out waiting for the server to listen".into());
        }
    }
}

pub fn start(dir: &Path, params: &[(&str, &str)]) -> Node {
    match try_start(dir, params) {
        Ok(n) => n,
        Err(e) => panic!("tidewire did not start: {e}"),
    }
}

impl Node {
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn conn(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).unwrap();
        let c = client
            .get_connection_with_timeout(Duration::from_secs(10))
            .unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        c
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM (graceful shutdown) and wait for the process to exit.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("server did not exit after SHUTDOWN");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` for the process to exit on its own; whether it did.
    pub fn exited_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The child's resident set size in KiB (`VmRSS` in `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS line")
    }

    /// The realtime root key the server generated in its data dir.
    pub fn realtime_key(&self) -> String {
        std::fs::read_to_string(self.dir.join("realtime-root-key"))
            .expect("realtime root key file")
            .trim()
            .to_string()
    }

    /// `http://127.0.0.1:<http port>`.
    pub fn http_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn info_field(&self, c: &mut redis::Connection, field: &str) -> Option<String> {
        let info: String = redis::cmd("INFO").arg("all").query(c).ok()?;
        info.lines().find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_string())
        })
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small deterministic PRNG (no extra dev-dependency).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

pub fn seed() -> u64 {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("seed {s}");
    s
}

/// The AOF directory's incremental files, oldest first, per the manifest.
pub fn incr_files(data: &Path) -> Vec<PathBuf> {
    let dir = data.join("appendonlydir");
    let manifest = std::fs::read_to_string(dir.join("appendonly.aof.manifest")).unwrap();
    manifest
        .lines()
        .filter(|l| l.ends_with("type i"))
        .map(|l| dir.join(l.split_whitespace().nth(1).unwrap()))
        .collect()
}
