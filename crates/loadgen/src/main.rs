//! `tidewire-loadgen`: holds N subscriber WebSockets on one channel while one
//! publisher connection sends at rate R for D seconds, then reports deliveries/s,
//! publish→deliver latency (p50/p99/max) and the server's RSS per connection.
//!
//! Two protocols, so the same load can be put on Tidewire and on a peer:
//! - `ably`: Ably realtime protocol v5 over WebSocket, JSON or msgpack frames
//!   (CONNECTED, ATTACH/ATTACHED, MESSAGE).
//! - `nats`: the NATS client protocol over nats-server's WebSocket listener
//!   (INFO, CONNECT, SUB, PUB/MSG, PING/PONG).
//!
//! A third mode, `floor`, measures the machine's fan-out floor with no server and no
//! protocol: one blocking TCP send per subscriber per message (see `floor.rs`).
//!
//! Every phase is bounded in time; nothing read from the network is unwrapped. The
//! publish timestamp travels in the message data (microseconds since the start of
//! this process, so publisher and subscribers share one monotonic clock).
//!
//! Output: a human summary on stderr and one `RESULT key=value …` line on stdout.

#![forbid(unsafe_code)]

mod ably;
mod floor;
mod nats;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Ably realtime protocol (Tidewire).
    Ably,
    /// NATS client protocol over WebSocket (nats-server).
    Nats,
    /// No server: the machine's fan-out floor, one blocking TCP send per subscriber
    /// per message, to a receiver process started by this one (default rate 2/s).
    Floor,
    /// Receiving side of `floor` (started by it).
    #[value(hide = true)]
    FloorRecv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Json,
    Msgpack,
}

#[derive(Debug, Clone, Parser)]
#[command(
    version,
    about = "Realtime fan-out load generator (Ably or NATS over WebSocket, or the machine's floor)"
)]
pub struct Args {
    /// Protocol to speak, or `floor`.
    #[arg(long, value_enum, default_value = "ably")]
    pub mode: Mode,
    /// WebSocket base URL, e.g. ws://127.0.0.1:8080 (ably and nats modes). Ably
    /// mode takes several nodes of one deployment, comma-separated: subscriber i
    /// connects to node i mod k, the publisher to the first.
    #[arg(long, default_value = "")]
    pub url: String,
    /// Ably API key (`appId.keyId:secret`); ably mode only.
    #[arg(long, default_value = "")]
    pub key: String,
    /// Ably wire format.
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
    /// Subscriber connections.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Publish rate, messages per second.
    #[arg(short = 'r', long, default_value_t = 100)]
    pub rate: u32,
    /// Publish duration, seconds.
    #[arg(short = 'd', long, default_value_t = 10)]
    pub duration: u64,
    /// Channel (Ably) or subject (NATS).
    #[arg(long, default_value = "bench")]
    pub channel: String,
    /// Extra bytes of padding in each message's data.
    #[arg(long, default_value_t = 0)]
    pub payload_bytes: usize,
    /// Server pid whose VmRSS is sampled (0: do not sample).
    #[arg(long, default_value_t = 0)]
    pub pid: u32,
    /// Connections being set up at once.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Limit for one connection's connect + handshake, seconds.
    #[arg(long, default_value_t = 15)]
    pub connect_timeout: u64,
    /// Limit for the whole connect phase, seconds.
    #[arg(long, default_value_t = 180)]
    pub connect_phase_timeout: u64,
    /// Pause with all subscribers idle before measuring idle RSS, seconds.
    #[arg(long, default_value_t = 2)]
    pub settle: u64,
    /// After the last publish, wait at most this long for deliveries, seconds.
    #[arg(long, default_value_t = 5)]
    pub drain: u64,
    /// Label for the RESULT line (peer name).
    #[arg(long, default_value = "")]
    pub label: String,
    /// Floor mode: sender threads, each owning 1/S of the sockets.
    #[arg(long, default_value_t = 1)]
    pub senders: usize,
    /// Floor mode: run the receiver process under `taskset -c CPUS`.
    #[arg(long)]
    pub recv_cpu: Option<String>,
    /// Floor receiver: address to connect to (set by floor mode).
    #[arg(long, hide = true, default_value = "")]
    pub connect: String,
}

/// State shared by all connections of one run.
pub struct Shared {
    pub base: Instant,
    /// Subscribers that completed their handshake.
    pub ready: AtomicUsize,
    /// Subscribers that failed to connect or lost their connection.
    pub failed: AtomicUsize,
    /// Deliveries seen by all subscribers.
    pub delivered: AtomicU64,
    /// Frames that could not be decoded, unexpected errors from the server.
    pub errors: AtomicU64,
    /// Set to true to end every subscriber loop.
    pub stop: watch::Receiver<bool>,
}

impl Shared {
    pub fn now_us(&self) -> u64 {
        self.base.elapsed().as_micros() as u64
    }
}

/// What one subscriber measured.
#[derive(Default)]
pub struct SubResult {
    /// publish→deliver latency of every delivery, µs.
    pub latencies_us: Vec<u32>,
    /// Time of the last delivery, µs since base.
    pub last_us: u64,
}

/// Payload: `<seq> <send-time-µs> <padding>`.
pub fn make_payload(seq: u64, t_us: u64, pad: &str) -> String {
    format!("{seq} {t_us} {pad}")
}

/// Send time from a payload, if it is one of ours.
pub fn payload_time(data: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(data).ok()?;
    let mut it = s.split(' ');
    it.next()?;
    it.next()?.parse().ok()
}

/// Records one delivery.
pub fn record(shared: &Shared, res: &mut SubResult, data: &[u8]) {
    let Some(sent) = payload_time(data) else {
        shared.errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let now = shared.now_us();
    let lat = now.saturating_sub(sent).min(u64::from(u32::MAX)) as u32;
    res.latencies_us.push(lat);
    res.last_us = now;
    shared.delivered.fetch_add(1, Ordering::Relaxed);
}

pub async fn connect_ws(url: &str) -> anyhow::Result<Ws> {
    // Small buffers: the generator holds thousands of sockets.
    let config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(1 << 20);
    let (ws, _resp) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .with_context(|| format!("connect {url}"))?;
    Ok(ws)
}

/// Next data frame's bytes (text or binary), answering WebSocket pings; `None` when
/// the connection ended.
pub async fn next_data(ws: &mut Ws) -> anyhow::Result<Option<Bytes>> {
    loop {
        match ws.next().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                return Ok(Some(m.into_data()))
            }
            Some(Ok(Message::Ping(p))) => ws.send(Message::Pong(p)).await?,
            Some(Ok(Message::Close(_))) => return Ok(None),
            Some(Ok(_)) => {}
        }
    }
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    if pid == 0 {
        return None;
    }
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User + system CPU time of a process, seconds (`self` for this process).
fn cpu_secs(pid: &str) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at state.
    let after = s.get(s.rfind(')')? + 2..)?;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[idx.min(sorted.len() - 1)]) / 1000.0
}

fn main() {
    let matches = Args::command().get_matches();
    let mut args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if args.mode == Mode::Floor && matches.value_source("rate") == Some(ValueSource::DefaultValue) {
        args.rate = floor::DEFAULT_RATE;
    }
    let result = match args.mode {
        Mode::Floor => floor::run(&args),
        Mode::FloorRecv => floor::run_recv(&args),
        Mode::Ably | Mode::Nats => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("tokio runtime")
            .and_then(|rt| rt.block_on(run(args))),
    };
    if let Err(e) = result {
        eprintln!("tidewire-loadgen: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.rate == 0 || args.duration == 0 {
        bail!("--rate and --duration must be positive");
    }
    if args.url.is_empty() {
        bail!("--url is required");
    }
    if args.mode == Mode::Ably && args.key.is_empty() {
        bail!("ably mode needs --key");
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        base: Instant::now(),
        ready: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        delivered: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        stop: stop_rx,
    });
    let args = Arc::new(args);
    let label = if args.label.is_empty() {
        format!("{:?}", args.mode).to_lowercase()
    } else {
        args.label.clone()
    };

    let rss_before = rss_kib(args.pid);

    // Connect phase: N subscribers, bounded concurrency, each bounded in time.
    let sem = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let t_connect = Instant::now();
    let mut handles = Vec::with_capacity(args.subscribers);
    for i in 0..args.subscribers {
        let (args, shared, sem) = (args.clone(), shared.clone(), sem.clone());
        handles.push(tokio::spawn(async move {
            let permit = sem.acquire_owned().await.ok();
            let limit = Duration::from_secs(args.connect_timeout);
            let ws = match tokio::time::timeout(limit, subscribe(&args, i)).await {
                Ok(Ok(ws)) => ws,
                Ok(Err(e)) => {
                    if shared.failed.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("subscriber {i}: {e:#}");
                    }
                    return SubResult::default();
                }
                Err(_) => {
                    if shared.failed.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("subscriber {i}: handshake timed out");
                    }
                    return SubResult::default();
                }
            };
            drop(permit);
            shared.ready.fetch_add(1, Ordering::Relaxed);
            sub_loop(&args, &shared, ws).await
        }));
    }
    let phase_deadline = Instant::now() + Duration::from_secs(args.connect_phase_timeout);
    loop {
        let done = shared.ready.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed);
        if done >= args.subscribers {
            break;
        }
        if Instant::now() > phase_deadline {
            eprintln!(
                "connect phase timed out with {done}/{} settled",
                args.subscribers
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connect_secs = t_connect.elapsed().as_secs_f64();
    let ready = shared.ready.load(Ordering::Relaxed);
    eprintln!(
        "[{label}] {ready}/{} subscribers ready in {connect_secs:.1}s ({} failed)",
        args.subscribers,
        shared.failed.load(Ordering::Relaxed)
    );
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let rss_idle = rss_kib(args.pid);
    let ready = shared.ready.load(Ordering::Relaxed);

    // RSS sampler during load.
    let rss_load = Arc::new(AtomicU64::new(0));
    let (load_tx, mut load_rx) = watch::channel(false);
    let sampler = {
        let (rss_load, pid) = (rss_load.clone(), args.pid);
        tokio::spawn(async move {
            loop {
                if let Some(r) = rss_kib(pid) {
                    rss_load.fetch_max(r, Ordering::Relaxed);
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = load_rx.changed() => break,
                }
            }
        })
    };

    // Publish phase.
    let server_pid = args.pid.to_string();
    let cpu_start = (cpu_secs(&server_pid), cpu_secs("self"));
    let pub_start_us = shared.now_us();
    let total = u64::from(args.rate) * args.duration;
    let publish_limit = Duration::from_secs(args.duration + args.connect_timeout + 10);
    let pub_result = tokio::time::timeout(publish_limit, publish(&args, &shared, total)).await;
    let (sent, acked) = match pub_result {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => bail!("publisher: {e:#}"),
        Err(_) => bail!("publisher did not finish in {publish_limit:?}"),
    };
    let pub_end_us = shared.now_us();

    // Drain: wait for every expected delivery, at most `drain` seconds.
    let expected = sent * ready as u64;
    let drain_deadline = Instant::now() + Duration::from_secs(args.drain);
    while shared.delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu_end = (cpu_secs(&server_pid), cpu_secs("self"));
    let _ = load_tx.send(true);
    let _ = sampler.await;
    let _ = stop_tx.send(true);

    let mut lat: Vec<u32> = Vec::with_capacity(expected.min(50_000_000) as usize);
    let mut last_us = pub_end_us;
    // One deadline for all joins: tasks still stuck (e.g. mid-handshake) are aborted.
    let join_deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut stuck = 0usize;
    for mut h in handles {
        match tokio::time::timeout_at(join_deadline, &mut h).await {
            Ok(Ok(r)) => {
                last_us = last_us.max(r.last_us);
                lat.extend_from_slice(&r.latencies_us);
            }
            Ok(Err(e)) => eprintln!("subscriber task failed: {e}"),
            Err(_) => {
                h.abort();
                stuck += 1;
            }
        }
    }
    if stuck > 0 {
        eprintln!("{stuck} subscriber tasks did not stop in time and were aborted");
    }
    lat.sort_unstable();
    let delivered = lat.len() as u64;
    let span_s = (last_us.saturating_sub(pub_start_us)) as f64 / 1e6;
    let dps = if span_s > 0.0 {
        delivered as f64 / span_s
    } else {
        0.0
    };
    let (p50, p99, max) = (
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0),
    );
    let rss_load = Some(rss_load.load(Ordering::Relaxed)).filter(|&r| r > 0);
    let per_conn = match (rss_before, rss_idle) {
        (Some(b), Some(i)) if ready > 0 => Some((i.saturating_sub(b)) as f64 / ready as f64),
        _ => None,
    };
    let per_conn_load = match (rss_before, rss_load) {
        (Some(b), Some(l)) if ready > 0 => Some((l.saturating_sub(b)) as f64 / ready as f64),
        _ => None,
    };
    let cpu_used = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.1}", b - a),
        _ => "na".to_string(),
    };
    let server_cpu = if args.pid == 0 {
        "na".to_string()
    } else {
        cpu_used(cpu_start.0, cpu_end.0)
    };
    let own_cpu = cpu_used(cpu_start.1, cpu_end.1);
    let window_s = (shared.now_us().saturating_sub(pub_start_us)) as f64 / 1e6;
    let opt = |v: Option<u64>| v.map_or("na".to_string(), |v| v.to_string());
    let optf = |v: Option<f64>| v.map_or("na".to_string(), |v| format!("{v:.2}"));
    // The same figures go to the human line and the RESULT line.
    let (rss_before, rss_idle, rss_load) = (opt(rss_before), opt(rss_idle), opt(rss_load));
    let (per_conn, per_conn_load) = (optf(per_conn), optf(per_conn_load));
    let errors = shared.errors.load(Ordering::Relaxed);
    eprintln!(
        "[{label}] n={ready} sent={sent} acked={acked} delivered={delivered}/{expected} \
         deliveries/s={dps:.0} p50={p50:.2}ms p99={p99:.2}ms max={max:.2}ms \
         rss before/idle/load={}/{}/{} KiB, per conn idle={} load={} KiB, errors={}, \
         cpu server/loadgen={server_cpu}/{own_cpu}s in {window_s:.1}s",
        rss_before, rss_idle, rss_load, per_conn, per_conn_load, errors
    );
    println!(
        "RESULT peer={label} n={ready} requested={} failed={} connect_s={connect_secs:.1} \
         rate={} duration={} sent={sent} acked={acked} expected={expected} \
         delivered={delivered} deliveries_per_s={dps:.0} p50_ms={p50:.2} p99_ms={p99:.2} \
         max_ms={max:.2} rss_before_kib={} rss_idle_kib={} rss_load_kib={} \
         rss_per_conn_kib={} rss_per_conn_load_kib={} errors={} \
         server_cpu_s={server_cpu} loadgen_cpu_s={own_cpu} window_s={window_s:.1}",
        args.subscribers,
        shared.failed.load(Ordering::Relaxed),
        args.rate,
        args.duration,
        rss_before,
        rss_idle,
        rss_load,
        per_conn,
        per_conn_load,
        errors
    );
    Ok(())
}

/// Connects subscriber `i` and completes its handshake (subscribed when it returns).
async fn subscribe(args: &Args, i: usize) -> anyhow::Result<Ws> {
    match args.mode {
        Mode::Ably => ably::subscribe(args, i).await,
        Mode::Nats => nats::subscribe(args).await,
        Mode::Floor | Mode::FloorRecv => bail!("not a WebSocket mode"),
    }
}

/// Reads deliveries until stopped or the connection ends.
async fn sub_loop(args: &Args, shared: &Shared, mut ws: Ws) -> SubResult {
    let mut res = SubResult::default();
    let mut stop = shared.stop.clone();
    let mut nats_buf = nats::Parser::default();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            frame = next_data(&mut ws) => match frame {
                Ok(Some(data)) => {
                    let ok = match args.mode {
                        Mode::Ably => ably::on_frame(args, shared, &mut res, &data),
                        Mode::Nats => nats::on_frame(shared, &mut res, &mut nats_buf, &mut ws, &data).await,
                        Mode::Floor | Mode::FloorRecv => false,
                    };
                    if !ok {
                        shared.failed.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
                Ok(None) | Err(_) => {
                    if !*stop.borrow() {
                        shared.failed.fetch_add(1, Ordering::Relaxed);
                    }
                    break;
                }
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(200), ws.close(None)).await;
    res
}

/// Sends `total` messages at the configured rate; returns (sent, acknowledged).
async fn publish(args: &Args, shared: &Shared, total: u64) -> anyhow::Result<(u64, u64)> {
    match args.mode {
        Mode::Ably => ably::publish(args, shared, total).await,
        Mode::Nats => nats::publish(args, shared, total).await,
        Mode::Floor | Mode::FloorRecv => bail!("not a WebSocket mode"),
    }
}

/// A ticker firing `rate` times per second, catching up after stalls.
pub fn ticker(rate: u32) -> tokio::time::Interval {
    let period = Duration::from_nanos(1_000_000_000 / u64::from(rate.max(1)));
    let mut t = tokio::time::interval(period);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_roundtrip() {
        let p = make_payload(7, 123_456, "xx");
        assert_eq!(payload_time(p.as_bytes()), Some(123_456));
        assert_eq!(payload_time(b"garbage"), None);
        assert_eq!(payload_time(&[0xff, 0x20, 0x31]), None);
    }

    #[test]
    fn percentiles() {
        let v: Vec<u32> = (1..=100).map(|x| x * 1000).collect();
        assert!((percentile(&v, 0.5) - 51.0).abs() < 1.01);
        assert!((percentile(&v, 0.99) - 99.0).abs() < 1.01);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
