//! `--mode floor`: the machine's fan-out floor, measured with no server and no
//! protocol, so a fan-out benchmark can say how close to "physically possible" it is.
//!
//! The process listens on 127.0.0.1:0 and starts a copy of itself in the hidden mode
//! `floor-recv`, which connects N TCP sockets (TCP_NODELAY) and reads them with a
//! tokio runtime of one worker thread, as the generator's subscribers would. The
//! parent accepts the N connections and, for each of R × D messages spaced 1/R s
//! apart, writes one fixed-size frame to every socket with a plain blocking
//! `write_all`: `--senders` threads, each owning a contiguous 1/S of the sockets.
//! That is the least work any server has to do for a fan-out over TCP: one kernel
//! send per subscriber per message.
//!
//! Two processes, because each side holds one descriptor per connection and the
//! open-files hard limit may be barely above 2 × N.
//!
//! Frame: [`BASE_FRAME_BYTES`] + `--payload-bytes` bytes, the size of a Tidewire JSON
//! fan-out frame with that padding. Layout: `"TWFL"`, message sequence (u32 LE),
//! send time (u64 LE, wall-clock nanoseconds since the Unix epoch, taken once per
//! message just before the fan-out starts, so the latency of the last socket includes
//! all the sends before it), then `.` padding. Both processes run on the same machine
//! and read the same clock. TCP may coalesce frames; the reader parses a stream of
//! fixed-size frames ([`FrameParser`]).
//!
//! The child prints `READY …` once connected and `FLOOR …` (its latency figures)
//! once every socket has reached EOF, or `--drain` seconds after the parent closed
//! the child's stdin (the end of sending); the parent prints one `RESULT …` line in
//! the generator's format. Every phase is bounded in time; the child is killed if it
//! does not finish.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use tokio::io::AsyncReadExt;
use tokio::sync::{watch, Semaphore};

use crate::{cpu_secs, percentile, Args};

/// Length of a Tidewire JSON fan-out frame's text with no padding (measured for the
/// benchmark's messages; the WebSocket header adds 4 bytes on the wire).
pub const BASE_FRAME_BYTES: usize = 207;
/// Default message rate of the floor: one fan-out at a time (10,000 sends take
/// ~0.1 s here), so the figures are one isolated fan-out's, not a backlog's.
pub const DEFAULT_RATE: u32 = 2;
const MAGIC: &[u8; 4] = b"TWFL";
const HEADER: usize = 16;
/// Upper bound on sender threads.
const MAX_SENDERS: usize = 64;
/// Listen backlog (the kernel caps it at `net.core.somaxconn`). std's 128 overflows
/// while the receiver connects 200 at a time, and a connection whose final ACK was
/// dropped waits for a SYN-ACK retransmit (1 s, 3 s, …).
const BACKLOG: u32 = 4096;

/// Frame size for `payload` bytes of padding.
pub fn frame_bytes(payload: usize) -> usize {
    BASE_FRAME_BYTES + payload
}

/// Writes the header into `buf` (at least [`HEADER`] bytes).
pub fn encode_frame(buf: &mut [u8], seq: u32, sent_ns: u64) {
    buf[..4].copy_from_slice(MAGIC);
    buf[4..8].copy_from_slice(&seq.to_le_bytes());
    buf[8..16].copy_from_slice(&sent_ns.to_le_bytes());
}

/// (sequence, send time in ns) of a frame, if it is one of ours.
pub fn decode_frame(frame: &[u8]) -> Option<(u32, u64)> {
    if frame.len() < HEADER || &frame[..4] != MAGIC {
        return None;
    }
    let seq = u32::from_le_bytes(frame[4..8].try_into().ok()?);
    let sent = u64::from_le_bytes(frame[8..16].try_into().ok()?);
    Some((seq, sent))
}

/// Wall-clock nanoseconds since the Unix epoch (shared by both processes).
fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Splits a byte stream into fixed-size frames, whatever the read boundaries.
pub struct FrameParser {
    frame: usize,
    partial: Vec<u8>,
}

impl FrameParser {
    pub fn new(frame: usize) -> Self {
        FrameParser {
            frame: frame.max(1),
            partial: Vec::with_capacity(frame),
        }
    }

    /// Feeds bytes read from the stream; calls `on_frame` for every completed frame.
    pub fn feed(&mut self, mut data: &[u8], mut on_frame: impl FnMut(&[u8])) {
        if !self.partial.is_empty() {
            let take = (self.frame - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() < self.frame {
                return;
            }
            on_frame(&self.partial);
            self.partial.clear();
        }
        let mut chunks = data.chunks_exact(self.frame);
        for f in &mut chunks {
            on_frame(f);
        }
        self.partial.extend_from_slice(chunks.remainder());
    }

    /// Bytes of an incomplete frame held back.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }
}

/// `key=value` field of a line printed by the child.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

fn field_num<T: std::str::FromStr>(line: &str, key: &str) -> anyhow::Result<T> {
    field(line, key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("receiver line without {key}: {line}"))
}

/// Kills the child on every exit path that did not reap it.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[derive(Default)]
struct SenderStats {
    writes: u64,
    errors: u64,
    cut_short: bool,
}

/// One sender thread: for every (seq, send time) received, one `write_all` per socket.
fn sender(
    mut socks: Vec<Option<TcpStream>>,
    frame: usize,
    rx: mpsc::Receiver<(u32, u64)>,
    deadline: Instant,
) -> SenderStats {
    let mut buf = vec![b'.'; frame];
    let mut st = SenderStats::default();
    while let Ok((seq, sent_ns)) = rx.recv() {
        if st.cut_short {
            continue; // drain the queue without sending
        }
        encode_frame(&mut buf, seq, sent_ns);
        for (i, slot) in socks.iter_mut().enumerate() {
            let r = match slot {
                Some(s) => s.write_all(&buf),
                None => continue,
            };
            match r {
                Ok(()) => st.writes += 1,
                Err(e) => {
                    st.errors += 1;
                    if st.errors <= 3 {
                        eprintln!("floor sender: write: {e}");
                    }
                    *slot = None;
                }
            }
            if i % 256 == 255 && Instant::now() > deadline {
                st.cut_short = true;
                break;
            }
        }
    }
    st
    // The sockets close here: the receiver sees EOF after the last frame.
}

/// A non-blocking std listener on 127.0.0.1:0 with a large backlog (std has
/// no backlog parameter; tokio's `TcpSocket` does, and hands the socket back).
fn listen() -> anyhow::Result<TcpListener> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        sock.listen(BACKLOG)?.into_std()
    })
    .context("listen on 127.0.0.1:0")
}

/// Starts `floor-recv` (optionally under `taskset -c CPUS`) with its stdout piped.
fn spawn_receiver(args: &Args, addr: SocketAddr) -> anyhow::Result<ChildGuard> {
    let exe = std::env::current_exe().context("current_exe")?;
    let mut cmd = match &args.recv_cpu {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpus).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    let passed = [
        ("--connect", addr.to_string()),
        ("-n", args.subscribers.to_string()),
        ("-r", args.rate.to_string()),
        ("-d", args.duration.to_string()),
        ("--payload-bytes", args.payload_bytes.to_string()),
        ("--concurrency", args.concurrency.to_string()),
        ("--connect-timeout", args.connect_timeout.to_string()),
        (
            "--connect-phase-timeout",
            args.connect_phase_timeout.to_string(),
        ),
        ("--settle", args.settle.to_string()),
        ("--drain", args.drain.to_string()),
    ];
    cmd.args(["--mode", "floor-recv"]);
    for (flag, value) in &passed {
        cmd.arg(flag).arg(value);
    }
    cmd
        // Closing its stdin tells the receiver that sending is over.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let child = cmd
        .spawn()
        .with_context(|| format!("start receiver {}", exe.display()))?;
    Ok(ChildGuard(child))
}

/// Longest the sending phase may take.
fn send_limit(args: &Args) -> Duration {
    Duration::from_secs(args.duration + args.drain + args.connect_timeout)
}

/// `--mode floor`: the parent (listener and senders).
pub fn run(args: &Args) -> anyhow::Result<()> {
    let n = args.subscribers;
    let senders = args.senders;
    if n == 0 || args.rate == 0 || args.duration == 0 {
        bail!("-n, --rate and --duration must be positive");
    }
    if senders == 0 || senders > MAX_SENDERS {
        bail!("--senders must be 1..={MAX_SENDERS}");
    }
    let frame = frame_bytes(args.payload_bytes);
    let total = u64::from(args.rate) * args.duration;
    if total > u64::from(u32::MAX) {
        bail!("too many messages ({total})");
    }
    let label = if args.label.is_empty() {
        format!(
            "floor-{senders}thread{}",
            if senders == 1 { "" } else { "s" }
        )
    } else {
        args.label.clone()
    };

    let listener = listen()?;
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let mut child = spawn_receiver(args, addr)?;
    let child_stdin = child.0.stdin.take();
    let stdout = child
        .0
        .stdout
        .take()
        .ok_or_else(|| anyhow!("receiver has no stdout"))?;
    // The child's stdout, line by line, so every wait on it can have a timeout.
    let (line_tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });

    // Connect phase: accept until the child says how many it connected (or N).
    let write_timeout = Duration::from_secs(args.connect_timeout.max(1));
    let t_connect = Instant::now();
    let deadline = t_connect + Duration::from_secs(args.connect_phase_timeout);
    let mut streams: Vec<TcpStream> = Vec::with_capacity(n);
    let mut child_ready: Option<(usize, Instant)> = None;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)?;
                s.set_nodelay(true)?;
                s.set_write_timeout(Some(write_timeout))?;
                streams.push(s);
                if streams.len() < n {
                    continue;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => {
                return Err(e).context(format!(
                    "accept after {} connections (open-files limit, `ulimit -n`, must exceed N)",
                    streams.len()
                ))
            }
        }
        if child_ready.is_none() {
            if let Ok(line) = lines.try_recv() {
                if line.starts_with("READY ") {
                    child_ready = Some((field_num(&line, "connected")?, Instant::now()));
                }
            }
        }
        match child_ready {
            // Every connection the child made is in the accept queue by now; the grace
            // period covers SYNs still being retried.
            Some((connected, at))
                if streams.len() >= connected.min(n) || at.elapsed() > Duration::from_secs(5) =>
            {
                break
            }
            Some(_) => {}
            None if streams.len() >= n => {
                // All accepted; wait for the child's READY (its tasks start reading).
                let left = deadline.saturating_duration_since(Instant::now());
                match lines.recv_timeout(left) {
                    Ok(line) if line.starts_with("READY ") => {
                        child_ready = Some((field_num(&line, "connected")?, Instant::now()));
                        continue;
                    }
                    Ok(line) => bail!("unexpected line from receiver: {line}"),
                    Err(_) => bail!("receiver did not report READY in time"),
                }
            }
            None => {}
        }
        if let Some(status) = child.0.try_wait()? {
            bail!("receiver exited during the connect phase: {status}");
        }
        if Instant::now() > deadline {
            eprintln!(
                "[{label}] connect phase timed out with {}/{n} accepted",
                streams.len()
            );
            if child_ready.is_none() {
                bail!("receiver did not report READY in time");
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(listener); // connections never accepted are reset
    let connect_secs = t_connect.elapsed().as_secs_f64();
    let ready = streams.len();
    if ready == 0 {
        bail!("no connection accepted");
    }
    eprintln!(
        "[{label}] {ready}/{n} sockets connected in {connect_secs:.1}s, frame {frame} bytes, \
         {senders} sender thread(s), {total} messages at {}/s",
        args.rate
    );
    std::thread::sleep(Duration::from_secs(args.settle));

    // Send phase.
    let per = ready.div_ceil(senders);
    let mut groups: Vec<Vec<Option<TcpStream>>> = Vec::with_capacity(senders);
    let mut it = streams.into_iter();
    for _ in 0..senders {
        groups.push(it.by_ref().take(per).map(Some).collect());
    }
    let t_send = Instant::now();
    let send_deadline = t_send + send_limit(args);
    let cpu_start = cpu_secs("self");
    let mut txs = Vec::with_capacity(senders);
    let mut threads = Vec::with_capacity(senders);
    for (k, g) in groups.into_iter().enumerate() {
        let (tx, rx) = mpsc::channel();
        txs.push(tx);
        threads.push(
            std::thread::Builder::new()
                .name(format!("floor-send-{k}"))
                .spawn(move || sender(g, frame, rx, send_deadline))
                .context("spawn sender thread")?,
        );
    }
    let period_ns = 1_000_000_000 / u64::from(args.rate);
    let first_ns = wall_ns();
    let mut sent = 0u64;
    for i in 0..total {
        let at = t_send + Duration::from_nanos(i * period_ns);
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        if Instant::now() > send_deadline {
            eprintln!("[{label}] send phase exceeded {:?}", send_limit(args));
            break;
        }
        let t = wall_ns();
        for tx in &txs {
            // A sender that is gone has panicked; its join below reports it.
            let _ = tx.send((i as u32, t));
        }
        sent += 1;
    }
    drop(txs);
    let (mut writes, mut write_errors, mut cut_short) = (0u64, 0u64, false);
    for t in threads {
        // Bounded: senders stop at `send_deadline` and writes time out.
        match t.join() {
            Ok(st) => {
                writes += st.writes;
                write_errors += st.errors;
                cut_short |= st.cut_short;
            }
            Err(_) => bail!("a sender thread panicked"),
        }
    }
    if cut_short {
        eprintln!("[{label}] senders stopped at the send deadline");
    }
    // Every socket is closed; the receiver reads to EOF, or gives up on stragglers
    // `--drain` seconds after this.
    drop(child_stdin);

    // Results from the child, which has now seen EOF on every socket.
    let wait = Duration::from_secs(args.drain + 10);
    let line = loop {
        match lines.recv_timeout(wait) {
            Ok(l) if l.starts_with("FLOOR ") => break l,
            Ok(_) => continue,
            Err(_) => bail!("receiver did not report results within {wait:?}"),
        }
    };
    let cpu_end = cpu_secs("self");
    let window_s = t_send.elapsed().as_secs_f64();
    let exit_deadline = Instant::now() + Duration::from_secs(5);
    while child.0.try_wait()?.is_none() && Instant::now() < exit_deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(child); // kills it if it is still there

    let delivered: u64 = field_num(&line, "delivered")?;
    let child_failed: usize = field_num(&line, "failed")?;
    let recv_errors: u64 = field_num(&line, "errors")?;
    let last_ns: u64 = field_num(&line, "last_ns")?;
    let get = |k: &str| field(&line, k).unwrap_or("na").to_string();
    let (p50, p99, max, recv_cpu) = (get("p50_ms"), get("p99_ms"), get("max_ms"), get("cpu_s"));
    let expected = sent * ready as u64;
    let span_s = last_ns.saturating_sub(first_ns) as f64 / 1e9;
    let dps = if span_s > 0.0 {
        delivered as f64 / span_s
    } else {
        0.0
    };
    let send_cpu = match (cpu_start, cpu_end) {
        (Some(a), Some(b)) => format!("{:.1}", b - a),
        _ => "na".to_string(),
    };
    let failed = (n - ready).max(child_failed);
    let errors = write_errors + recv_errors;
    eprintln!(
        "[{label}] n={ready} sent={sent} writes={writes} delivered={delivered}/{expected} \
         deliveries/s={dps:.0} p50={p50}ms p99={p99}ms max={max}ms errors={errors}, \
         cpu send/recv={send_cpu}/{recv_cpu}s in {window_s:.1}s"
    );
    println!(
        "RESULT peer={label} n={ready} requested={n} failed={failed} connect_s={connect_secs:.1} \
         rate={} duration={} sent={sent} acked=na expected={expected} \
         delivered={delivered} deliveries_per_s={dps:.0} p50_ms={p50} p99_ms={p99} \
         max_ms={max} rss_before_kib=na rss_idle_kib=na rss_load_kib=na \
         rss_per_conn_kib=na rss_per_conn_load_kib=na errors={errors} \
         server_cpu_s={send_cpu} loadgen_cpu_s={recv_cpu} window_s={window_s:.1} \
         senders={senders} frame_bytes={frame}",
        args.rate, args.duration,
    );
    Ok(())
}

/// What one receiving socket measured.
#[derive(Default)]
struct ConnResult {
    /// Send→arrival latency of every frame, µs.
    lat_us: Vec<u32>,
    /// Arrival time of the last frame, wall-clock ns.
    last_ns: u64,
    /// Frames that were not ours, or a partial frame at EOF.
    errors: u64,
    /// The connection failed (error other than EOF).
    failed: bool,
}

async fn read_conn(
    mut s: tokio::net::TcpStream,
    frame: usize,
    cap: usize,
    mut stop: watch::Receiver<bool>,
) -> ConnResult {
    let mut res = ConnResult {
        lat_us: Vec::with_capacity(cap),
        ..ConnResult::default()
    };
    let mut parser = FrameParser::new(frame);
    let mut buf = vec![0u8; frame.max(4096)];
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            r = s.read(&mut buf) => match r {
                Ok(0) => break,
                Ok(k) => {
                    // One clock read per read(): the frames in it arrived together.
                    let now = wall_ns();
                    let (lat, errors) = (&mut res.lat_us, &mut res.errors);
                    parser.feed(&buf[..k], |f| match decode_frame(f) {
                        Some((_, sent)) => {
                            let us = now.saturating_sub(sent) / 1000;
                            lat.push(us.min(u64::from(u32::MAX)) as u32);
                        }
                        None => *errors += 1,
                    });
                    res.last_ns = now;
                }
                Err(_) => {
                    res.failed = true;
                    break;
                }
            }
        }
    }
    if parser.pending() > 0 {
        res.errors += 1;
    }
    res
}

/// `--mode floor-recv`: the child (connects and reads). Prints `READY` and `FLOOR`.
pub fn run_recv(args: &Args) -> anyhow::Result<()> {
    let addr: SocketAddr = args
        .connect
        .parse()
        .with_context(|| format!("--connect {:?}", args.connect))?;
    // One worker thread reads every socket, as in the generator's subscribers.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(recv_main(args, addr))
}

async fn recv_main(args: &Args, addr: SocketAddr) -> anyhow::Result<()> {
    let n = args.subscribers;
    let frame = frame_bytes(args.payload_bytes);
    let cap = (u64::from(args.rate) * args.duration).min(1 << 20) as usize;
    let ready = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let sem = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let limit = Duration::from_secs(args.connect_timeout.max(1));
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let (ready, failed, sem, stop) =
            (ready.clone(), failed.clone(), sem.clone(), stop_rx.clone());
        handles.push(tokio::spawn(async move {
            let permit = sem.acquire_owned().await.ok();
            let s = match tokio::time::timeout(limit, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("floor receiver {i}: connect: {e}");
                    }
                    return ConnResult::default();
                }
                Err(_) => {
                    if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("floor receiver {i}: connect timed out");
                    }
                    return ConnResult::default();
                }
            };
            drop(permit);
            if s.set_nodelay(true).is_err() {
                failed.fetch_add(1, Ordering::Relaxed);
                return ConnResult::default();
            }
            ready.fetch_add(1, Ordering::Relaxed);
            read_conn(s, frame, cap, stop).await
        }));
    }
    let phase_deadline = Instant::now() + Duration::from_secs(args.connect_phase_timeout);
    loop {
        let done = ready.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed);
        if done >= n || Instant::now() > phase_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "READY connected={} failed={}",
        ready.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    std::io::stdout().flush()?;
    let cpu_start = cpu_secs("self");

    // Read phase: until every socket reaches EOF. The readers are stopped `--drain`
    // seconds after the parent closes our stdin (a connection the parent never
    // accepted gets no EOF), or when the longest the parent can take has passed.
    let (eof_tx, eof_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut b = [0u8; 64];
        while let Ok(1..) = stdin.read(&mut b) {}
        let _ = eof_tx.send(());
    });
    let grace = Duration::from_secs(args.drain);
    let read_limit = Duration::from_secs(args.settle + args.drain + 10) + send_limit(args);
    tokio::spawn(async move {
        tokio::select! {
            _ = eof_rx => tokio::time::sleep(grace).await,
            _ = tokio::time::sleep(read_limit) => {
                eprintln!("floor receiver: read phase exceeded {read_limit:?}");
            }
        }
        let _ = stop_tx.send(true);
    });
    let deadline = tokio::time::Instant::now() + read_limit + grace + Duration::from_secs(2);
    let mut lat: Vec<u32> = Vec::new();
    let (mut last_ns, mut errors, mut conn_failed, mut stuck) = (0u64, 0u64, 0usize, 0usize);
    for mut h in handles {
        let r = match tokio::time::timeout_at(deadline, &mut h).await {
            Ok(r) => r,
            Err(_) => {
                h.abort();
                stuck += 1;
                continue;
            }
        };
        match r {
            Ok(r) => {
                last_ns = last_ns.max(r.last_ns);
                errors += r.errors;
                conn_failed += usize::from(r.failed);
                lat.extend_from_slice(&r.lat_us);
            }
            Err(e) => {
                eprintln!("floor receiver task failed: {e}");
                conn_failed += 1;
            }
        }
    }
    let cpu_end = cpu_secs("self");
    lat.sort_unstable();
    let cpu = match (cpu_start, cpu_end) {
        (Some(a), Some(b)) => format!("{:.1}", b - a),
        _ => "na".to_string(),
    };
    println!(
        "FLOOR connected={} failed={} delivered={} errors={errors} p50_ms={:.2} p99_ms={:.2} \
         max_ms={:.2} last_ns={last_ns} cpu_s={cpu}",
        ready.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed) + conn_failed + stuck,
        lat.len(),
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0),
    );
    std::io::stdout().flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(n: u32, size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for seq in 0..n {
            let mut f = vec![b'.'; size];
            encode_frame(&mut f, seq, 1_000_000 + u64::from(seq));
            out.extend_from_slice(&f);
        }
        out
    }

    #[test]
    fn stream_split_at_odd_boundaries() {
        let size = frame_bytes(0);
        let stream = frames(5, size);
        // Several ways of cutting the stream: 1-byte reads, just short of and just
        // past a frame, inside the header, several frames in one read.
        for cuts in [
            vec![1usize; stream.len()],
            vec![size - 1, 2, size - 1, 3, stream.len()],
            vec![7, 9, size * 2 + 5, 1, stream.len()],
            vec![stream.len()],
            vec![size, size, 0, size, size, size],
        ] {
            let mut p = FrameParser::new(size);
            let mut got = Vec::new();
            let mut rest = &stream[..];
            for c in cuts {
                let c = c.min(rest.len());
                p.feed(&rest[..c], |f| {
                    assert_eq!(f.len(), size);
                    got.push(decode_frame(f));
                });
                rest = &rest[c..];
            }
            assert!(rest.is_empty());
            assert_eq!(p.pending(), 0);
            let want: Vec<_> = (0..5u32)
                .map(|s| Some((s, 1_000_000 + u64::from(s))))
                .collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn partial_frame_is_held_back() {
        let size = frame_bytes(3);
        let stream = frames(2, size);
        let mut p = FrameParser::new(size);
        let mut n = 0;
        p.feed(&stream[..size + 10], |_| n += 1);
        assert_eq!((n, p.pending()), (1, 10));
    }

    #[test]
    fn foreign_frame_is_rejected() {
        assert_eq!(decode_frame(b"short"), None);
        assert_eq!(decode_frame(&[b'x'; 32]), None);
        let mut f = vec![0u8; 16];
        encode_frame(&mut f, 9, 42);
        assert_eq!(decode_frame(&f), Some((9, 42)));
    }

    #[test]
    fn child_fields() {
        let l = "FLOOR connected=10 failed=0 delivered=20 p99_ms=1.50";
        assert_eq!(field(l, "delivered"), Some("20"));
        assert_eq!(field(l, "p99_ms"), Some("1.50"));
        assert_eq!(field(l, "p9"), None);
        assert!(field_num::<u64>(l, "missing").is_err());
    }
}
