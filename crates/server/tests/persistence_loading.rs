//! While the dataset loads, the listeners already answer: commands get `-LOADING`,
//! INFO says `loading:1`, `/readyz` answers 503. Asserted as an invariant (never a
//! partial dataset served, never "ready" before the load ends), not on timing.

mod persistence_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const KEYS: usize = 200_000;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Sends one inline command on a fresh connection; returns the first reply line.
fn resp(port: u16, cmd: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "{cmd}\r\n").ok()?;
    let mut buf = [0u8; 8192];
    let n = s.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn loading_answers_loading_and_readyz_503_until_done() {
    let tmp = tempfile::tempdir().unwrap();
    let aof_dir = tmp.path().join("data/appendonlydir");
    std::fs::create_dir_all(&aof_dir).unwrap();
    let mut log = Vec::new();
    for i in 0..KEYS {
        let k = format!("k{i}");
        let v = i.to_string();
        log.extend_from_slice(
            format!(
                "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{v}\r\n",
                k.len(),
                v.len()
            )
            .as_bytes(),
        );
    }
    std::fs::write(aof_dir.join("appendonly.aof.1.incr.aof"), &log).unwrap();
    std::fs::write(
        aof_dir.join("appendonly.aof.manifest"),
        "file appendonly.aof.1.incr.aof seq 1 type i\n",
    )
    .unwrap();
    let (port, http) = (free_port(), free_port());
    let cfg = persistence_support::config_file(tmp.path(), &[("appendonly", "yes"), ("save", "")]);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tidewire"))
        .arg("--config")
        .arg(&cfg)
        .arg("--port")
        .arg(port.to_string())
        .arg("--http-port")
        .arg(http.to_string())
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .env("TIDEWIRE_LOG_LEVEL", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut saw_loading, mut saw_503) = (false, false);
    loop {
        assert!(Instant::now() < deadline, "server never became ready");
        if let Some(r) = http_get(http, "/readyz") {
            if r.starts_with("HTTP/1.1 503") {
                saw_503 = true;
            } else if r.starts_with("HTTP/1.1 200") {
                // Ready means loaded: the whole dataset is there.
                let n = resp(port, "DBSIZE").unwrap();
                assert_eq!(n, format!(":{KEYS}\r\n"));
                break;
            }
        }
        if let Some(r) = resp(port, "GET k1") {
            if r.starts_with("-LOADING") {
                saw_loading = true;
                let info = resp(port, "INFO persistence").unwrap_or_default();
                if info.contains("\r\nloading:1\r\n") {
                    // Progress as Redis reports it: bytes of the log, how far, ETA.
                    let field = |name: &str| -> u64 {
                        info.split("\r\n")
                            .find_map(|l| l.strip_prefix(&format!("{name}:")))
                            .and_then(|v| v.split('.').next()?.parse().ok())
                            .unwrap_or_else(|| panic!("{name} missing in {info}"))
                    };
                    assert_eq!(field("loading_total_bytes"), log.len() as u64, "{info}");
                    assert!(field("loading_loaded_bytes") <= log.len() as u64, "{info}");
                    assert!(field("loading_loaded_perc") <= 100, "{info}");
                    field("loading_eta_seconds");
                    assert_eq!(field("aof_enabled"), 1, "{info}");
                } else {
                    // Loading ended in between: then the data must be all there.
                    assert_eq!(resp(port, "GET k1").unwrap(), "$1\r\n1\r\n", "{info}");
                }
            } else {
                assert_eq!(
                    r, "$1\r\n1\r\n",
                    "a read during loading must not see partial data"
                );
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!("observed during load: -LOADING {saw_loading}, /readyz 503 {saw_503}");
    let _ = child.kill();
    let _ = child.wait();
}
