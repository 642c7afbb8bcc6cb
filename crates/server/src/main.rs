//! `tidewire`: run the server with embedded defaults, or a subcommand.

#![forbid(unsafe_code)]

use tidewire_server::config::{parse_cli, Config, LogFormat, Sub};
use tidewire_store::event_loop;

#[global_allocator]
static ALLOC: tidewire_server::alloc::CountingJemalloc = tidewire_server::alloc::CountingJemalloc;

/// (bytes in use, as the counting allocator knows them; resident bytes, from
/// jemalloc's stats).
fn memory_probe() -> (u64, u64) {
    use tikv_jemalloc_ctl::{epoch, stats};
    let _ = epoch::advance();
    let resident = stats::resident::read().unwrap_or(0) as u64;
    (tidewire_server::alloc::allocated(), resident)
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = parse_cli(std::env::args_os());
    if let Some(Sub::CheckAof { fix, file }) = &cli.command {
        // Repairing a log a running server appends to would cut its writes.
        let _lock = match fix {
            true => tidewire_server::data_dir::DataDirLock::acquire_enclosing(file)?,
            false => None,
        };
        match tidewire_store::persistence::check::check_aof(file, *fix) {
            Ok(msg) => {
                println!("{msg}");
                return Ok(());
            }
            Err(msg) => {
                eprintln!("{msg}");
                std::process::exit(1);
            }
        }
    }
    let config = Config::resolve(&cli.server)?;
    if let Some(Sub::ShowConfig) = cli.command {
        use std::io::Write;
        // A reader that stops early (`| head`) is not an error.
        return match std::io::stdout().write_all(config.to_toml()?.as_bytes()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
            _ => Ok(()),
        };
    }
    if let Some(Sub::Token(args)) = &cli.command {
        let key = match args.key.clone().or_else(|| config.realtime.keys.first().map(|k| k.key.clone())) {
            Some(k) => k,
            None => std::fs::read_to_string(config.data_dir.join("realtime-root-key"))
                .map(|k| k.trim().to_string())
                .map_err(|_| anyhow::anyhow!("no key: pass --key, set TIDEWIRE_REALTIME_KEY, configure [[realtime.keys]], or start the server once to generate the root key"))?,
        };
        println!(
            "{}",
            tidewire_server::token_cli::mint(args, &key, tidewire_realtime::auth::now_ms())?
        );
        return Ok(());
    }
    init_logging(&config);
    let _ = tidewire_store::families::server_info::MEMORY_PROBE.set(memory_probe);
    let _ = tidewire_store::families::server_info::ALLOCATED.set(tidewire_server::alloc::allocated);
    let runtime = runtime(config.worker_threads())?;
    runtime.block_on(run(config))
}

/// The async runtime serving every connection. With one worker thread (the default
/// on a 2-core machine) it is a single-threaded runtime: it runs ready connections in
/// the order their input arrived, as Redis's event loop does. The multi-threaded
/// scheduler runs the connection woken last first (its "LIFO slot"), so of two
/// commands arriving together on two connections (an EXEC, then an LPUSH that would
/// invalidate its WATCH) the later one ran first. Throughput measured the same.
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_unpark(event_loop::unparked)
            .on_thread_park(event_loop::parking)
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .on_thread_unpark(event_loop::unparked)
            .on_thread_park(event_loop::parking)
            .build()
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    if !config.is_loopback() && config.requirepass.is_none() {
        tracing::warn!(
            bind = %config.bind,
            "!!! Tidewire is listening on a non-loopback address WITHOUT a password. Anyone who can reach this address can read and change all data. Set --requirepass (TIDEWIRE_REQUIREPASS) or bind to 127.0.0.1. !!!"
        );
    }
    let server = tidewire_server::start(config.clone()).await?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        resp = %server.resp_addr,
        http = %server.http_addr,
        data_dir = %config.data_dir.display(),
        "Tidewire ready"
    );
    eprintln!(
        "Tidewire {} ready: RESP on {}  HTTP on {}  data in {}",
        env!("CARGO_PKG_VERSION"),
        server.resp_addr,
        server.http_addr,
        config.data_dir.display()
    );
    if let Some(key) = &server.realtime_root_key {
        eprintln!(
            "Realtime (Ably) root key: {key}   (stored in {})",
            config.data_dir.join("realtime-root-key").display()
        );
    }
    // A generated token is shown (the user has no other way to learn it); a
    // configured one is not repeated into logs.
    let rest_token = match &server.rest.token_source {
        tidewire_server::upstash::auth::TokenSource::DataDir(p) => format!(
            "{}  (generated, kept in {})",
            server.rest.tokens.primary(),
            p.display()
        ),
        tidewire_server::upstash::auth::TokenSource::Configured => "<configured>".into(),
    };
    eprintln!(
        "Upstash REST: UPSTASH_REDIS_REST_URL=http://{}{}  UPSTASH_REDIS_REST_TOKEN={}",
        server.http_addr, config.upstash.mount, rest_token
    );
    if let Some(q) = &server.qstash {
        // The QStash token defaults to the REST one; generated signing keys are
        // shown like the generated token, configured ones are not repeated.
        let token = if config.qstash.tokens.is_empty() {
            "<the REST token>"
        } else {
            "<configured>"
        };
        let shown = |configured: &str, key: &str| {
            if configured.is_empty() {
                key.to_string()
            } else {
                "<configured>".to_string()
            }
        };
        let keys = format!(
            "QSTASH_CURRENT_SIGNING_KEY={}  QSTASH_NEXT_SIGNING_KEY={}{}",
            shown(&config.qstash.current_signing_key, &q.keys.current),
            shown(&config.qstash.next_signing_key, &q.keys.next),
            q.keys.file.as_ref().map_or(String::new(), |f| format!(
                "  (generated, kept in {})",
                f.display()
            ))
        );
        eprintln!(
            "QStash: QSTASH_URL=http://{}  QSTASH_TOKEN={token}  {keys}",
            server.http_addr
        );
    }
    if config.print_ports {
        println!(
            "LISTENING resp={} http={}",
            server.resp_addr.port(),
            server.http_addr.port()
        );
    }
    let mut requested = server.shutdown_requested();
    tokio::select! {
        _ = shutdown_signal() => tracing::info!("signal received, shutting down"),
        _ = requested.changed() => tracing::info!("shutdown requested"),
    }
    if server.shutdown().await {
        // SHUTDOWN NOSAVE during a busy script: its worker thread cannot be
        // stopped, and the runtime would wait for it. The log is flushed; the
        // script's effects, never logged, are not applied after a restart.
        tracing::info!("bye (a busy script was left unfinished)");
        std::process::exit(0);
    }
    tracing::info!("bye");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
