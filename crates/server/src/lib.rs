//! The `tidewire` server: configuration, listeners and wiring.
//!
//! [`start`] binds the RESP listener ([`connection`] per client) and the HTTP
//! listener ([`http`]), starts the background cron (active expiry, clocks), and
//! returns a [`Server`] handle whose `shutdown` stops accepting, lets connections
//! finish the replies in flight, and waits for them.

#![deny(unsafe_code)]

/// The global allocator: the one place with `unsafe` (`GlobalAlloc` forwards to jemalloc).
#[allow(unsafe_code)]
pub mod alloc;
pub mod busy_poll;
pub mod config;
pub mod config_rewrite;
pub mod connection;
pub mod dashboard;
pub mod data_dir;
pub mod engine;
pub mod history;
pub mod http;
pub mod latency;
pub mod metrics;
pub mod qstash;
pub mod realtime;
pub mod secrets;
pub mod tls;
pub mod token_cli;
pub mod upstash;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tidewire_store::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use config::Config;

pub struct Server {
    pub store: Arc<Store>,
    pub hub: Arc<tidewire_realtime::Hub>,
    /// The realtime root key generated or loaded from the data dir (no key configured).
    pub realtime_root_key: Option<String>,
    pub resp_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The Upstash REST API at `/` of its own port, if configured.
    pub upstash_addr: Option<SocketAddr>,
    /// RESP over TLS (`tls-port`), if configured.
    pub tls_addr: Option<SocketAddr>,
    /// The HTTP routes over TLS (`https-port`), if configured.
    pub https_addr: Option<SocketAddr>,
    /// The REST API's tokens and where the read-write one came from (banner, tests).
    pub rest: Arc<upstash::RestState>,
    /// The QStash-compatible API (`[qstash] enabled`).
    pub qstash: Option<Arc<qstash::Qstash>>,
    shutdown_tx: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// The HTTP listeners' own runtime, when RESP runs single-threaded (see
    /// [`HttpRuntime`]). Declared before the data-dir lock: dropped first.
    _http_runtime: HttpRuntime,
    /// Released when the server is dropped, after shutdown's last flush.
    _data_dir_lock: data_dir::DataDirLock,
}

impl Server {
    /// Graceful shutdown: stop accepting, close connections after their current
    /// batch of replies, stop background work. Returns whether a script was still
    /// running at the end (SHUTDOWN NOSAVE does not wait for a busy script that has
    /// written): its thread cannot be stopped, so the process should exit now.
    pub async fn shutdown(mut self) -> bool {
        // A script that has not written stops as if killed; one that has runs to
        // its end (stopping it would break its atomicity).
        self.store
            .scripts
            .running
            .kill
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.shutdown_tx.send(true);
        let deadline = tokio::time::sleep(Duration::from_secs(10));
        tokio::pin!(deadline);
        let nosave =
            self.store.persist.shutdown_save() == tidewire_store::persistence::ShutdownSave::NoSave;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tokio::select! {
                next = self.tasks.join_next() => if next.is_none() { break },
                _ = &mut deadline => { self.tasks.abort_all(); break }
                _ = tick.tick(), if nosave => {
                    if self.store.scripts.running.is_running() {
                        self.tasks.abort_all();
                        break;
                    }
                }
            }
        }
        // No connection runs any more: save (if save points are set), then flush
        // and fsync the AOF.
        let store = self.store.clone();
        let _ = tokio::task::spawn_blocking(move || tidewire_store::persistence::shutdown(&store))
            .await;
        self.store.scripts.running.is_running()
    }

    /// Resolves when something asked the server to stop (SHUTDOWN).
    pub fn shutdown_requested(&self) -> watch::Receiver<bool> {
        self.shutdown_tx.subscribe()
    }
}

/// Applies the configuration to a new store.
pub fn build_store(config: &Config) -> anyhow::Result<Arc<Store>> {
    let store = Store::new();
    // Embedded default: nothing acknowledged is lost (the config may turn it off).
    store.config.set("appendonly", "yes")?;
    // What CONFIG REWRITE compares with: Tidewire's defaults, before any setting.
    let defaults = store.config.rewritable();
    store.config.set("port", &config.port.to_string())?;
    store.config.set("bind", &config.bind)?;
    store
        .config
        .set("dir", &config.data_dir.to_string_lossy())?;
    if let Some(pass) = &config.requirepass {
        store.config.set("requirepass", pass)?;
    }
    let mut users = Vec::new();
    for (k, v) in &config.redis {
        if k.eq_ignore_ascii_case("user") {
            users.push(v);
            continue;
        }
        store
            .config
            .set(k, v)
            .map_err(|e| anyhow::anyhow!("config parameter {k}: {e}"))?;
    }
    // ACL users from `user` directives, as redis.conf defines them.
    let pubsub_all = tidewire_store::families::acl::pubsub_default_all(&store);
    let mut defined: Vec<&str> = Vec::new();
    for line in &users {
        let mut words = line.split_whitespace();
        let name = words
            .next()
            .ok_or_else(|| anyhow::anyhow!("user directive without a name"))?;
        if defined.contains(&name) {
            anyhow::bail!("Duplicate user '{name}' found in the configuration");
        }
        defined.push(name);
        let rules: Vec<bytes::Bytes> = words
            .map(|w| bytes::Bytes::copy_from_slice(w.as_bytes()))
            .collect();
        let user = tidewire_store::acl::fresh_user(name, &rules, pubsub_all)
            .map_err(|e| anyhow::anyhow!("user {name}: {}", e.text()))?;
        store.acl.insert(user);
    }
    // ACL users from the ACL file, when one is configured.
    if let Some(file) = tidewire_store::families::acl::acl_file_path(&store) {
        if !users.is_empty() {
            anyhow::bail!("Configuring Redis with users defined in redis.conf and at the same setting an ACL file path is invalid. This setup is very likely to lead to configuration errors and security holes, please define either an ACL file or declare users directly in your redis.conf, but not both.");
        }
        let users = tidewire_store::families::acl::parse_acl_file(
            &file,
            tidewire_store::families::acl::pubsub_default_all(&store),
        )
        .map_err(|e| anyhow::anyhow!("aclfile: {e}"))?;
        store.acl.replace_all(users);
    }
    // Access-path eviction settings (LFU counting) apply from the first command.
    tidewire_store::evict::sync_config(&store);
    if let Some(path) = &config.config_file {
        config_rewrite::install(&store, path.clone(), defaults);
    }
    Ok(store)
}

pub async fn start(config: Config) -> anyhow::Result<Server> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    // Before anything in the directory is read or written.
    let data_dir_lock = data_dir::DataDirLock::acquire(&config.data_dir)?;
    let store = build_store(&config)?;
    let engine = engine::Engine::connect(
        config.engine.as_deref(),
        config.engine_tls_ca.as_deref(),
        &store,
    )
    .await?;
    let mut realtime_config = config.realtime.clone();
    let realtime_root_key = realtime::ensure_keys(&mut realtime_config, &config.data_dir)?;
    if realtime_config.sandbox {
        let loopback = config
            .bind
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
            || config.bind == "localhost";
        if loopback {
            tracing::warn!("realtime sandbox on: anyone who reaches the HTTP port can create apps (POST /apps)");
        } else {
            tracing::warn!(
                bind = %config.bind,
                "REALTIME SANDBOX IS ON AND THE SERVER IS BOUND BEYOND LOOPBACK: anyone who reaches the HTTP port can create apps (POST /apps) — meant for SDK test suites on a private machine only"
            );
        }
    }
    let http_runtime = HttpRuntime::for_this_runtime()?;
    // The realtime engine's tasks (the fan-out's subscriber connections, which
    // deliver to every WebSocket) run where the realtime layer does.
    let (app_hubs, hub) = {
        let _realtime_context = http_runtime.enter();
        let realtime_engine = realtime::RealtimeEngine::of(&engine);
        let app_hubs = realtime::build_app_hubs(&realtime_config, &store, &realtime_engine)?;
        let hub = realtime::build_hub(realtime_config, &store, &realtime_engine)?;
        (app_hubs, hub)
    };
    // Until the dataset is loaded, commands get -LOADING (set before any listener).
    let load_plan = tidewire_store::persistence::begin_startup(&store)
        .map_err(|e| anyhow::anyhow!("cannot load the dataset: {e}"))?;
    let resp = TcpListener::bind((config.bind.as_str(), config.port))
        .await
        .with_context(|| format!("cannot bind RESP port {}:{}", config.bind, config.port))?;
    let http = TcpListener::bind((config.bind.as_str(), config.http_port))
        .await
        .with_context(|| format!("cannot bind HTTP port {}:{}", config.bind, config.http_port))?;
    let resp_addr = resp.local_addr()?;
    let http_addr = http.local_addr()?;
    store.config.set("port", &resp_addr.port().to_string())?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    {
        let tx = shutdown_tx.clone();
        store.hooks.lock().shutdown = Some(Box::new(move || {
            let _ = tx.send(true);
        }));
    }
    store.scripts.running.no_killer.store(
        on_single_threaded_runtime(),
        std::sync::atomic::Ordering::Relaxed,
    );
    let mut tasks = JoinSet::new();
    let busy_poll = busy_poll_here().then(|| Arc::new(busy_poll::BusyPoll::default()));
    if let Some(poller) = &busy_poll {
        tasks.spawn(poller.clone().run(store.clone(), shutdown_rx.clone()));
    }
    tasks.spawn(accept_loop(
        store.clone(),
        engine.clone(),
        resp,
        shutdown_rx.clone(),
        busy_poll.clone(),
        None,
    ));
    tasks.spawn(cron(store.clone(), shutdown_rx.clone()));
    tasks.spawn(log_committer(store.clone(), shutdown_rx.clone()));
    metrics::install();
    let rest = upstash::RestState::new(
        store.clone(),
        engine.clone(),
        &config,
        http_addr,
        shutdown_rx.clone(),
    )?;
    let bridge = realtime::connect_bridge(&store, &hub, &engine, shutdown_rx.clone());
    tasks.spawn(async move {
        let _ = bridge.await;
    });
    // The realtime layer owns the root of the HTTP port; the Upstash API is mounted
    // under its own prefix, health, metrics and the dashboard beside it (their
    // static paths outrank the realtime layer's fallback).
    let metric_hubs: Vec<_> = std::iter::once(hub.clone())
        .chain(app_hubs.iter().cloned())
        .collect();
    let qstash = if config.qstash.enabled {
        Some(qstash::Qstash::new(
            store.clone(),
            &config,
            rest.tokens.read_write(),
        )?)
    } else {
        None
    };
    let dashboard = dashboard::routes(rest.clone(), metric_hubs.clone(), qstash.clone());
    let mut app = http::router(
        store.clone(),
        rest.clone(),
        &config.upstash.mount,
        &config.http,
        metric_hubs,
    )
    .merge(dashboard);
    if let Some(q) = &qstash {
        app = app.merge(http::with_cors(qstash::routes(q.clone()), &config.http));
        http_runtime.spawn(&mut tasks, q.spawn_delivery(shutdown_rx.clone()));
    }
    let app = app.merge(tidewire_realtime::router_with_apps(hub.clone(), app_hubs));
    let app = http::with_misplaced_upstash_error(app, &config.upstash.mount);
    http_runtime.spawn(
        &mut tasks,
        serve_http(http.into_std()?, app.clone(), shutdown_rx.clone()),
    );
    let upstash_addr = match config.upstash.port {
        Some(port) => {
            let l = TcpListener::bind((config.bind.as_str(), port))
                .await
                .with_context(|| format!("cannot bind Upstash port {}:{port}", config.bind))?;
            let addr = l.local_addr()?;
            let app = http::with_cors(upstash::routes(rest.clone(), ""), &config.http);
            http_runtime.spawn(
                &mut tasks,
                serve_http(l.into_std()?, app, shutdown_rx.clone()),
            );
            Some(addr)
        }
        None => None,
    };
    let tls_addr = match store.config.get_u64("tls-port") {
        0 => None,
        port => {
            let tls = tls::Tls::resp(store.clone());
            tls.check().context("tls-port")?;
            let l = bind_port(&config.bind, port, "tls-port").await?;
            let addr = l.local_addr()?;
            tasks.spawn(accept_loop(
                store.clone(),
                engine.clone(),
                l,
                shutdown_rx.clone(),
                None,
                Some(tls),
            ));
            Some(addr)
        }
    };
    let https_addr = match store.config.get_u64("https-port") {
        0 => None,
        port => {
            let tls = tls::Tls::http(store.clone());
            tls.check().context("https-port")?;
            let l = bind_port(&config.bind, port, "https-port").await?;
            let addr = l.local_addr()?;
            http_runtime.spawn(
                &mut tasks,
                serve_https(l.into_std()?, app.clone(), tls, shutdown_rx.clone()),
            );
            Some(addr)
        }
    };
    // Load persisted data while the listeners already answer (-LOADING, /readyz 503).
    let loading = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || tidewire_store::persistence::startup(&store, load_plan))
            .await
    };
    match loading {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let _ = shutdown_tx.send(true);
            anyhow::bail!("cannot load the dataset: {e}");
        }
        Err(e) => anyhow::bail!("loading panicked: {e}"),
    }
    Ok(Server {
        store,
        hub,
        realtime_root_key,
        resp_addr,
        http_addr,
        upstash_addr,
        tls_addr,
        https_addr,
        rest,
        qstash,
        shutdown_tx,
        tasks,
        _http_runtime: http_runtime,
        _data_dir_lock: data_dir_lock,
    })
}

/// Busy polling pays only where the poller has a core to itself while the clients
/// run on another: on the single-threaded runtime (the default up to 2 cores) of a
/// machine with at least 2. Multi-threaded runtimes have idle workers to pick up
/// new input; on one core the poller would take the clients' time.
fn busy_poll_here() -> bool {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    on_single_threaded_runtime() && cores >= 2
}

fn on_single_threaded_runtime() -> bool {
    tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::CurrentThread
}

/// A listener bound on the main runtime, registered with the runtime of the task
/// that serves it (connections it accepts then belong to that runtime too).
fn on_this_runtime(listener: std::net::TcpListener) -> Option<TcpListener> {
    match TcpListener::from_std(listener) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::error!(error = %e, "cannot serve the HTTP listener");
            None
        }
    }
}

/// Where the HTTP listeners (realtime WebSockets, the Upstash REST API, health and
/// metrics) run. With one worker thread RESP runs on a single-threaded runtime, in
/// arrival order as Redis does; the realtime layer's fan-out (one write per
/// subscriber) would then have one core, so it gets a multi-threaded runtime of
/// its own with a worker per core. With several worker threads everything shares
/// the main runtime.
pub struct HttpRuntime(Option<tokio::runtime::Runtime>);

impl HttpRuntime {
    fn for_this_runtime() -> std::io::Result<Self> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if !on_single_threaded_runtime() || cores < 2 {
            return Ok(HttpRuntime(None));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores)
            .thread_name("tidewire-http")
            .enable_all()
            .build()?;
        Ok(HttpRuntime(Some(rt)))
    }

    /// Makes this runtime (if it is not the main one) the one `tokio::spawn`
    /// uses until the guard is dropped.
    fn enter(&self) -> Option<tokio::runtime::EnterGuard<'_>> {
        self.0.as_ref().map(|rt| rt.enter())
    }

    /// Runs `fut` on this runtime (or the main one), joined through `tasks`.
    fn spawn<F>(&self, tasks: &mut JoinSet<()>, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        match &self.0 {
            Some(rt) => {
                let handle = rt.spawn(fut);
                tasks.spawn(async move {
                    let _ = handle.await;
                });
            }
            None => {
                tasks.spawn(fut);
            }
        }
    }
}

impl Drop for HttpRuntime {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which an async context forbids; its listeners
        // have stopped by now (shutdown), what is left is cut off.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

async fn serve_http(
    listener: std::net::TcpListener,
    app: axum::Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(listener) = on_this_runtime(listener) else {
        return;
    };
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = shutdown.changed().await;
    });
    if let Err(e) = serve.await {
        tracing::error!(error = %e, "HTTP listener failed");
    }
}

/// Binds one of the configured extra ports (`tls-port`, `https-port`).
async fn bind_port(bind: &str, port: u64, name: &str) -> anyhow::Result<TcpListener> {
    let port = u16::try_from(port).with_context(|| format!("{name} {port} is not a port"))?;
    TcpListener::bind((bind, port))
        .await
        .with_context(|| format!("cannot bind {name} {bind}:{port}"))
}

/// How long a client has to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A RESP connection on `tls-port`: the handshake (bounded, so a silent client
/// costs only itself), then the same session as plain TCP.
async fn serve_tls(
    store: Arc<Store>,
    engine: engine::Engine,
    stream: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    shutdown: watch::Receiver<bool>,
) {
    let addr = |a: std::io::Result<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
    let (peer, local) = (addr(stream.peer_addr()), addr(stream.local_addr()));
    let _ = stream.set_nodelay(true);
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            connection::serve_stream(store, engine, tls, peer, local, shutdown, None).await
        }
        Ok(Err(e)) => tracing::debug!(peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(peer, "TLS handshake timed out"),
    }
}

/// The HTTP routes over TLS on `https-port` (HTTP/1.1 with WebSocket upgrades, and
/// HTTP/2 by ALPN).
async fn serve_https(
    listener: std::net::TcpListener,
    app: axum::Router,
    tls: Arc<tls::Tls>,
    mut shutdown: watch::Receiver<bool>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tower::ServiceExt;
    let Some(listener) = on_this_runtime(listener) else {
        return;
    };
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = match tls.acceptor() {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot load the TLS certificate");
                        continue;
                    }
                };
                let app = app.clone();
                conns.spawn(async move {
                    let Ok(Ok(stream)) = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                        app.clone().oneshot(req)
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
}

async fn accept_loop(
    store: Arc<Store>,
    engine: engine::Engine,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    busy_poll: Option<Arc<busy_poll::BusyPoll>>,
    tls: Option<Arc<tls::Tls>>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => {
                // Connections watch only their socket and push channel: a kill closes
                // the channel. One accepted but not yet registered sees the flag itself.
                store.kill_clients("resp");
                break;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let maxclients = store.config.get_u64("maxclients") as usize;
                    if store.connected_clients("resp") >= maxclients {
                        store.stats.rejected_connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let mut stream = stream;
                        tokio::spawn(async move {
                            use tokio::io::AsyncWriteExt;
                            let _ = stream.write_all(b"-ERR max number of clients reached\r\n").await;
                        });
                        continue;
                    }
                    match &tls {
                        None => {
                            conns.spawn(connection::serve(store.clone(), engine.clone(), stream, shutdown.clone(), busy_poll.clone()));
                        }
                        Some(tls) => match tls.acceptor() {
                            Ok(acceptor) => {
                                conns.spawn(serve_tls(store.clone(), engine.clone(), stream, acceptor, shutdown.clone()));
                            }
                            Err(e) => tracing::error!(error = %e, "cannot load the TLS certificate"),
                        },
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    while conns.join_next().await.is_some() {}
}

/// The AOF's group commit under `appendfsync always`, on the runtime: signalled by
/// the first write of a batch, it runs once the connections already queued have run,
/// so one write and fsync covers them all, as Redis's `beforeSleep` does. It blocks
/// this thread for the fsync (as Redis's event loop does); the replies it releases
/// go out right after. On the single-threaded runtime it also does the plain write
/// under `everysec` and `no` (the log's writer thread keeps everysec's fsync).
async fn log_committer(store: Arc<Store>, mut shutdown: watch::Receiver<bool>) {
    let multi_thread = !on_single_threaded_runtime();
    let signal = store.start_log_committer(!multi_thread);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = signal.notified() => {
                if multi_thread {
                    tokio::task::block_in_place(|| store.commit_log_here());
                } else {
                    store.commit_log_here();
                }
            }
        }
    }
    // Connections still finishing hand their writes to the log's writer thread.
    store.stop_log_committer();
}

/// Background work at Redis's default 10 Hz.
async fn cron(store: Arc<Store>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tick.tick() => {
                tidewire_store::clock::refresh_lru_clock();
                let s = store.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    let start = std::time::Instant::now();
                    tidewire_store::expire::active_expire_cycle(&s);
                    if !s.loading.load(std::sync::atomic::Ordering::Relaxed) {
                        tidewire_store::persistence::cron(&s);
                    }
                    let el = &tidewire_store::event_loop::EVENT_LOOP;
                    el.add_cron(start.elapsed());
                    el.sample(std::time::Instant::now());
                }).await;
            }
        }
    }
}
