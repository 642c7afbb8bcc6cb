//! Configuration: defaults, then `tidewire.toml` (`--config`), then `TIDEWIRE_*`
//! environment variables, then command-line flags — each later source wins.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

#[derive(Parser, Debug)]
#[command(
    name = "tidewire",
    version,
    about = "Redis-compatible state layer and Ably-compatible realtime layer in one binary"
)]
pub struct Cli {
    #[command(flatten)]
    pub server: ServerFlags,
    #[command(subcommand)]
    pub command: Option<Sub>,
}

#[derive(Subcommand, Debug)]
pub enum Sub {
    /// Print the effective configuration as a config file (TOML) and exit.
    ShowConfig,
    /// Mint a realtime TokenRequest, token (JWT) or TokenDetails for a capability,
    /// clientId and TTL.
    Token(crate::token_cli::TokenArgs),
    /// Check an AOF file (incremental, base/snapshot, or a manifest and all its
    /// files); with --fix, truncate an incremental file to its last valid entry.
    CheckAof {
        /// Truncate the file to its last valid entry.
        #[arg(long)]
        fix: bool,
        file: PathBuf,
    },
}

#[derive(Args, Debug, Default, Clone)]
pub struct ServerFlags {
    /// Path of a TOML configuration file.
    #[arg(long, short = 'c', env = "TIDEWIRE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address the RESP and HTTP listeners bind to [default: 127.0.0.1].
    #[arg(long, env = "TIDEWIRE_BIND")]
    pub bind: Option<String>,
    /// RESP (Redis protocol) port; 0 picks a free port [default: 6379].
    #[arg(long, env = "TIDEWIRE_PORT")]
    pub port: Option<u16>,
    /// HTTP port (Upstash REST, Ably realtime, health, metrics); 0 picks a free port
    /// [default: 8080].
    #[arg(long, env = "TIDEWIRE_HTTP_PORT")]
    pub http_port: Option<u16>,
    /// Directory for persistent data [default: ./data].
    #[arg(long, env = "TIDEWIRE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Password clients must send with AUTH (Redis's `requirepass`).
    #[arg(long, env = "TIDEWIRE_REQUIREPASS")]
    pub requirepass: Option<String>,
    /// Log output format [default: text].
    #[arg(long, env = "TIDEWIRE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `tidewire=debug` [default: info].
    #[arg(long, env = "TIDEWIRE_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Worker threads serving connections (default: one per CPU core, less one
    /// when there are several, which is left to the application beside us).
    #[arg(long, env = "TIDEWIRE_THREADS")]
    pub threads: Option<usize>,
    /// Upstash REST read-write token(s), comma-separated. Without one, a random token
    /// is generated on first start and kept in `<data-dir>/rest-token`.
    #[arg(long, env = "TIDEWIRE_REST_TOKEN", value_delimiter = ',')]
    pub rest_token: Vec<String>,
    /// Upstash REST read-only token(s), comma-separated.
    #[arg(long, env = "TIDEWIRE_REST_READONLY_TOKEN", value_delimiter = ',')]
    pub rest_readonly_token: Vec<String>,
    /// Also serve the Upstash REST API at the root (`/`) of this extra port, for
    /// clients that cannot take a path prefix; 0 picks a free port.
    #[arg(long, env = "TIDEWIRE_UPSTASH_PORT")]
    pub upstash_port: Option<u16>,
    /// Keep the keyspace on a Redis/Valkey Cluster shared with other Tidewire nodes:
    /// seed URLs, comma-separated (`redis://[user:pass@]host:port`, `rediss://…`
    /// for TLS). Without it the keyspace is embedded in this process.
    #[arg(long, env = "TIDEWIRE_ENGINE")]
    pub engine: Option<String>,
    /// CA certificate file (PEM) that a `rediss://` engine's certificates must
    /// chain to [default: the webpki roots, i.e. public CAs].
    #[arg(long, env = "TIDEWIRE_ENGINE_TLS_CA")]
    pub engine_tls_ca: Option<PathBuf>,
    /// Print `LISTENING resp=<port> http=<port>` on stdout once bound (for scripts
    /// and tests that start the server on port 0).
    #[arg(long, hide = true)]
    pub print_ports: bool,
    /// Redis configuration directives given as flags (`--appendonly no`), taken
    /// out of the command line by [`split_redis_flags`]; they win over the file.
    #[arg(skip)]
    pub redis: Vec<(String, String)>,
}

/// Parses the command line, taking every Redis configuration directive that is not
/// one of Tidewire's own flags out first, as `redis-server` reads them:
/// `--maxmemory 100mb`, `--save 900 1 300 10` (the values up to the next `--`),
/// `--save ""`, or `--name=value`. `--dir` is `--data-dir`.
pub fn parse_cli(args: impl IntoIterator<Item = std::ffi::OsString>) -> Cli {
    let (args, redis) = split_redis_flags(args.into_iter().collect());
    let mut cli = Cli::parse_from(args);
    cli.server.redis = redis;
    cli
}

/// The command line without the Redis directives, and the directives in order.
pub fn split_redis_flags(
    args: Vec<std::ffi::OsString>,
) -> (Vec<std::ffi::OsString>, Vec<(String, String)>) {
    use clap::CommandFactory;
    let command = Cli::command();
    let ours: Vec<String> = command
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_owned))
        .chain(["help".to_owned(), "version".to_owned()])
        .collect();
    // A subcommand ends a directive's values (`--maxmemory 1gb show-config`).
    let subcommands: Vec<String> = command
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect();
    let mut kept = Vec::with_capacity(args.len());
    let mut redis = Vec::new();
    let mut it = args.into_iter().peekable();
    while let Some(arg) = it.next() {
        let Some(flag) = arg.to_str().and_then(|a| a.strip_prefix("--")) else {
            kept.push(arg);
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
            None => (flag.to_owned(), None),
        };
        if name == "dir" {
            kept.push("--data-dir".into());
            if let Some(v) = inline {
                kept.push(v.into());
            }
            continue;
        }
        if flag.is_empty() || ours.contains(&name) || !tidewire_store::config::is_directive(&name) {
            kept.push(arg);
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => {
                let mut values = Vec::new();
                while let Some(v) = it.next_if(|v| {
                    !v.to_str()
                        .is_some_and(|v| v.starts_with("--") || subcommands.iter().any(|s| s == v))
                }) {
                    values.push(v.to_string_lossy().into_owned());
                }
                values.join(" ")
            }
        };
        redis.push((name.to_ascii_lowercase(), value));
    }
    (kept, redis)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The file form: every field optional.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    bind: Option<String>,
    port: Option<u16>,
    http_port: Option<u16>,
    data_dir: Option<PathBuf>,
    requirepass: Option<String>,
    log_format: Option<LogFormat>,
    log_level: Option<String>,
    threads: Option<usize>,
    /// Seed URLs of the Redis/Valkey Cluster the keyspace lives on.
    engine: Option<String>,
    /// The CA file a `rediss://` engine's certificates chain to.
    engine_tls_ca: Option<PathBuf>,
    /// Any Redis CONFIG parameter (`maxmemory = "1gb"`, `notify-keyspace-events = "Ex"`).
    #[serde(default)]
    redis: std::collections::BTreeMap<String, toml::Value>,
    /// The realtime layer: API keys, limits, history retention.
    realtime: Option<tidewire_realtime::RealtimeConfig>,
    #[serde(default)]
    http: FileHttp,
    #[serde(default)]
    upstash: FileUpstash,
    /// The QStash-compatible message API.
    qstash: Option<QstashConfig>,
}

/// `[http]`: limits and CORS shared by everything on the HTTP listener.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FileHttp {
    max_body_bytes: Option<usize>,
    request_timeout_ms: Option<u64>,
    cors_origins: Option<Vec<String>>,
}

/// `[upstash]`: the Upstash-compatible REST API.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct FileUpstash {
    mount: Option<String>,
    port: Option<u16>,
    tokens: Option<Vec<String>>,
    readonly_tokens: Option<Vec<String>>,
    /// Tokens whose commands run as an ACL user: `[{ token = "…", user = "cache" }]`.
    acl_tokens: Option<Vec<AclToken>>,
    max_pipeline: Option<usize>,
}

/// A REST token mapped to an ACL user.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct AclToken {
    token: String,
    user: String,
}

/// Limits and CORS of the HTTP listener.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// A request still running after this long gets 504.
    pub request_timeout: Duration,
    /// Origins allowed by CORS; empty = CORS off, `*` = any origin.
    pub cors_origins: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 10 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            cors_origins: Vec::new(),
        }
    }
}

/// The Upstash-compatible REST API.
#[derive(Debug, Clone)]
pub struct UpstashConfig {
    /// Path prefix on the HTTP listener (`/redis`).
    pub mount: String,
    /// Extra port serving the API at `/`, if set.
    pub port: Option<u16>,
    /// Read-write tokens. Empty: one is generated and kept in the data dir.
    pub tokens: Vec<String>,
    pub readonly_tokens: Vec<String>,
    /// (token, ACL user): requests with the token run as the user.
    pub acl_tokens: Vec<(String, String)>,
    /// Most commands in one `/pipeline` or `/multi-exec` request.
    pub max_pipeline: usize,
}

impl Default for UpstashConfig {
    fn default() -> Self {
        UpstashConfig {
            mount: "/redis".into(),
            port: None,
            tokens: Vec::new(),
            readonly_tokens: Vec::new(),
            acl_tokens: Vec::new(),
            max_pipeline: 10_000,
        }
    }
}

/// `[qstash]`: the QStash-compatible message API (`/v2/…` on the HTTP listener):
/// messages published to a URL, delivered later by HTTP with retries.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QstashConfig {
    /// Serve `/v2/…`. Off: the routes answer 404 and nothing is delivered.
    pub enabled: bool,
    /// Bearer tokens (`QSTASH_TOKEN`). Empty: the Upstash REST read-write tokens.
    pub tokens: Vec<String>,
    /// `QSTASH_CURRENT_SIGNING_KEY` / `QSTASH_NEXT_SIGNING_KEY`. Empty: generated on
    /// first start and kept in the data dir (`qstash-signing-keys`).
    pub current_signing_key: String,
    pub next_signing_key: String,
    /// Database the messages, the dead-letter queue and the schedules live in.
    pub db: usize,
    /// Retries of a message that names none (`Upstash-Retries`).
    pub retries: u32,
    /// Most retries a message may ask for.
    pub max_retries: u32,
    /// Seconds a delivery may take unless the message sets `Upstash-Timeout`
    /// (and the most it may set).
    pub timeout_secs: u64,
    /// Deliveries in flight at once.
    pub parallelism: usize,
    /// Entries the events log (`/v2/events`) keeps, newest; 0: no log.
    pub events: usize,
}

impl Default for QstashConfig {
    fn default() -> Self {
        QstashConfig {
            enabled: true,
            tokens: Vec::new(),
            current_signing_key: String::new(),
            next_signing_key: String::new(),
            db: 14,
            retries: 3,
            max_retries: 20,
            timeout_secs: 60,
            parallelism: 32,
            events: 10_000,
        }
    }
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: String,
    pub port: u16,
    pub http_port: u16,
    pub data_dir: PathBuf,
    pub requirepass: Option<String>,
    pub log_format: LogFormat,
    pub log_level: String,
    /// Worker threads; `None` picks [`default_threads`].
    pub threads: Option<usize>,
    /// Seed URLs of the Redis/Valkey Cluster holding the keyspace; `None`: the
    /// embedded store.
    pub engine: Option<String>,
    /// The CA (PEM file) trusted for a `rediss://` engine; `None`: the webpki
    /// roots.
    pub engine_tls_ca: Option<PathBuf>,
    pub print_ports: bool,
    /// The file the configuration was read from (`--config`): where CONFIG
    /// REWRITE writes.
    pub config_file: Option<PathBuf>,
    /// Redis CONFIG parameters from the file, applied at start.
    pub redis: Vec<(String, String)>,
    pub realtime: tidewire_realtime::RealtimeConfig,
    pub http: HttpConfig,
    pub upstash: UpstashConfig,
    pub qstash: QstashConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: "127.0.0.1".into(),
            port: 6379,
            http_port: 8080,
            data_dir: PathBuf::from("./data"),
            requirepass: None,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            threads: None,
            engine: None,
            engine_tls_ca: None,
            print_ports: false,
            config_file: None,
            redis: Vec::new(),
            realtime: Default::default(),
            http: HttpConfig::default(),
            upstash: UpstashConfig::default(),
            qstash: QstashConfig::default(),
        }
    }
}

/// Worker threads when none are configured: one per core, less one when there are
/// several. Tidewire is meant to run beside its application on one machine; with
/// every core busy serving, the server competes with its own clients (measured on
/// 2 cores: pipelined PING 0.72× Redis with 2 workers, 1.0× with 1).
pub fn default_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores > 1 {
        cores - 1
    } else {
        1
    }
}

impl Config {
    /// The number of worker threads to start.
    pub fn worker_threads(&self) -> usize {
        self.threads.unwrap_or_else(default_threads)
    }

    /// Layers file, environment and flags (clap already merged the last two).
    pub fn resolve(flags: &ServerFlags) -> anyhow::Result<Config> {
        let file = match &flags.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let d = Config::default();
        let redis = file
            .redis
            .iter()
            .flat_map(|(k, v)| {
                let text = |v: &toml::Value| match v {
                    toml::Value::String(s) => s.clone(),
                    // Redis's booleans are yes/no; TOML's are accepted for them.
                    toml::Value::Boolean(b) => if *b { "yes" } else { "no" }.to_owned(),
                    other => other.to_string(),
                };
                // A directive given several times (`user = ["alice …", "bob …"]`).
                match v {
                    toml::Value::Array(items) => {
                        items.iter().map(|i| (k.clone(), text(i))).collect()
                    }
                    one => vec![(k.clone(), text(one))],
                }
            })
            .chain(flags.redis.iter().cloned())
            .collect();
        Ok(Config {
            bind: flags.bind.clone().or(file.bind).unwrap_or(d.bind),
            port: flags.port.or(file.port).unwrap_or(d.port),
            http_port: flags.http_port.or(file.http_port).unwrap_or(d.http_port),
            data_dir: flags
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or(d.data_dir),
            requirepass: flags
                .requirepass
                .clone()
                .or(file.requirepass)
                .filter(|p| !p.is_empty()),
            log_format: flags.log_format.or(file.log_format).unwrap_or_default(),
            log_level: flags
                .log_level
                .clone()
                .or(file.log_level)
                .unwrap_or(d.log_level),
            threads: flags.threads.or(file.threads).filter(|n| *n > 0),
            engine: flags
                .engine
                .clone()
                .or(file.engine)
                .filter(|e| !e.trim().is_empty()),
            engine_tls_ca: flags
                .engine_tls_ca
                .clone()
                .or(file.engine_tls_ca)
                .filter(|p| !p.as_os_str().is_empty()),
            print_ports: flags.print_ports,
            config_file: flags.config.clone(),
            redis,
            realtime: file.realtime.unwrap_or_default(),
            http: HttpConfig {
                max_body_bytes: file.http.max_body_bytes.unwrap_or(d.http.max_body_bytes),
                request_timeout: file
                    .http
                    .request_timeout_ms
                    .map_or(d.http.request_timeout, Duration::from_millis),
                cors_origins: file.http.cors_origins.unwrap_or_default(),
            },
            upstash: UpstashConfig {
                mount: normalize_mount(&file.upstash.mount.unwrap_or(d.upstash.mount)),
                port: flags.upstash_port.or(file.upstash.port),
                tokens: non_empty(&flags.rest_token)
                    .or(file.upstash.tokens)
                    .unwrap_or_default(),
                readonly_tokens: non_empty(&flags.rest_readonly_token)
                    .or(file.upstash.readonly_tokens)
                    .unwrap_or_default(),
                acl_tokens: file
                    .upstash
                    .acl_tokens
                    .unwrap_or_default()
                    .into_iter()
                    .map(|t| (t.token, t.user))
                    .collect(),
                max_pipeline: file.upstash.max_pipeline.unwrap_or(d.upstash.max_pipeline),
            },
            qstash: file.qstash.unwrap_or_default(),
        })
    }

    /// The configuration as a config file: fed back with `--config`, it gives
    /// this configuration again (`tidewire show-config`). Worker threads appear
    /// only when set (the default follows the machine).
    pub fn to_toml(&self) -> anyhow::Result<String> {
        let file = FileConfig {
            bind: Some(self.bind.clone()),
            port: Some(self.port),
            http_port: Some(self.http_port),
            data_dir: Some(self.data_dir.clone()),
            requirepass: self.requirepass.clone(),
            log_format: Some(self.log_format),
            log_level: Some(self.log_level.clone()),
            threads: self.threads,
            engine: self.engine.clone(),
            engine_tls_ca: self.engine_tls_ca.clone(),
            redis: {
                // A directive given several times (`user`) becomes an array.
                let mut map = std::collections::BTreeMap::new();
                for (k, v) in &self.redis {
                    let v = toml::Value::String(v.clone());
                    match map.get_mut(k) {
                        None => {
                            map.insert(k.clone(), v);
                        }
                        Some(toml::Value::Array(items)) => items.push(v),
                        Some(first) => *first = toml::Value::Array(vec![first.clone(), v]),
                    }
                }
                map
            },
            realtime: Some(self.realtime.clone()),
            http: FileHttp {
                max_body_bytes: Some(self.http.max_body_bytes),
                request_timeout_ms: Some(self.http.request_timeout.as_millis() as u64),
                cors_origins: Some(self.http.cors_origins.clone()),
            },
            upstash: FileUpstash {
                mount: Some(self.upstash.mount.clone()),
                port: self.upstash.port,
                tokens: Some(self.upstash.tokens.clone()),
                readonly_tokens: Some(self.upstash.readonly_tokens.clone()),
                acl_tokens: Some(
                    self.upstash
                        .acl_tokens
                        .iter()
                        .map(|(token, user)| AclToken {
                            token: token.clone(),
                            user: user.clone(),
                        })
                        .collect(),
                ),
                max_pipeline: Some(self.upstash.max_pipeline),
            },
            qstash: Some(self.qstash.clone()),
        };
        Ok(toml::to_string(&file)?)
    }

    /// Whether the listeners are reachable only from this machine.
    pub fn is_loopback(&self) -> bool {
        matches!(self.bind.as_str(), "127.0.0.1" | "localhost" | "::1")
            || self.bind.starts_with("127.")
    }
}

/// Tokens given as flags or environment: blanks dropped; `None` if none is left, so
/// the file's list applies.
fn non_empty(tokens: &[String]) -> Option<Vec<String>> {
    let v: Vec<String> = tokens
        .iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    (!v.is_empty()).then_some(v)
}

/// `redis/` → `/redis`; `/` → `` (the root).
pub fn normalize_mount(m: &str) -> String {
    let t = m.trim().trim_matches('/');
    if t.is_empty() {
        String::new()
    } else {
        format!("/{t}")
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
    toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("invalid config file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_directives_on_the_command_line() {
        let args = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        let (kept, redis) = split_redis_flags(args(&[
            "tidewire",
            "--port",
            "7000",
            "--appendonly",
            "no",
            "--save",
            "900",
            "1",
            "300",
            "10",
            "--maxmemory=100mb",
            "--MAXMEMORY-POLICY",
            "allkeys-lru",
            "--save",
            "",
            "--dir",
            "/tmp/x",
            "--threads",
            "2",
        ]));
        assert_eq!(
            kept,
            args(&[
                "tidewire",
                "--port",
                "7000",
                "--data-dir",
                "/tmp/x",
                "--threads",
                "2"
            ])
        );
        let want = [
            ("appendonly", "no"),
            ("save", "900 1 300 10"),
            ("maxmemory", "100mb"),
            ("maxmemory-policy", "allkeys-lru"),
            ("save", ""),
        ];
        assert_eq!(
            redis,
            want.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        );
        // A subcommand ends the values.
        let (kept, redis) =
            split_redis_flags(args(&["tidewire", "--maxmemory", "1mb", "show-config"]));
        assert_eq!(kept, args(&["tidewire", "show-config"]));
        assert_eq!(redis, vec![("maxmemory".to_string(), "1mb".to_string())]);
        // Not a Redis directive: left for clap to refuse.
        let (kept, redis) = split_redis_flags(args(&["tidewire", "--no-such-thing", "1"]));
        assert_eq!(kept.len(), 3);
        assert!(redis.is_empty());
        // Directives win over the file; TOML booleans are Redis's yes/no.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, "[redis]\nappendonly = true\nmaxmemory = \"1mb\"\n").unwrap();
        let mut cli = parse_cli(args(&["tidewire", "--maxmemory", "2mb"]));
        cli.server.config = Some(path);
        let c = Config::resolve(&cli.server).unwrap();
        let last = |name: &str| {
            c.redis
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(last("appendonly").as_deref(), Some("yes"));
        assert_eq!(last("maxmemory").as_deref(), Some("2mb"));
    }

    /// `show-config`'s TOML, fed back as the config file, is the same configuration.
    #[test]
    fn show_config_round_trips_through_a_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.toml");
        std::fs::write(
            &path,
            r#"port = 7000
threads = 3
engine = "rediss://:pw@10.0.0.5:7000"
engine_tls_ca = "/etc/tidewire/engine-ca.crt"
[redis]
maxmemory = "1mb"
appendonly = "no"
user = ["alice on >pw ~* +@all", "bob off"]
[http]
cors_origins = ["https://app.example"]
[upstash]
readonly_tokens = ["ro"]
[qstash]
tokens = ["qt"]
db = 3
max_retries = 5
[realtime]
keys = [{ key = "main.a:s", capability = '{"*":["subscribe"]}' }]
history_retention = { "stream:*" = 600 }
mutable_messages = ["m:*"]
[[realtime.apps]]
keys = [{ key = "shop.k:t" }]
max_presence_members = 9
"#,
        )
        .unwrap();
        let flags = ServerFlags {
            config: Some(path),
            http_port: Some(7001),
            requirepass: Some("pw".into()),
            ..Default::default()
        };
        let first = Config::resolve(&flags).unwrap();
        let text = first.to_toml().unwrap();
        let out = dir.path().join("out.toml");
        std::fs::write(&out, &text).unwrap();
        let mut again = Config::resolve(&ServerFlags {
            config: Some(out.clone()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(again.config_file.as_deref(), Some(out.as_path()));
        // Everything else is the same; only the file it was read from differs.
        again.config_file = first.config_file.clone();
        assert_eq!(format!("{again:?}"), format!("{first:?}"), "{text}");
        assert!(text.contains("http_port = 7001"), "{text}");
        assert!(
            text.contains(r#"engine_tls_ca = "/etc/tidewire/engine-ca.crt""#),
            "{text}"
        );
        // Unknown keys are refused, so every key printed is one the file takes.
        assert_eq!(
            again.realtime.app_configs().unwrap()[0]
                .1
                .max_presence_members,
            9
        );
    }

    #[test]
    fn flags_override_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(
            &path,
            "port = 7000\nhttp_port = 7001\n[redis]\nmaxmemory = \"1mb\"\n",
        )
        .unwrap();
        let flags = ServerFlags {
            config: Some(path),
            port: Some(7100),
            ..Default::default()
        };
        let c = Config::resolve(&flags).unwrap();
        assert_eq!(c.port, 7100);
        assert_eq!(c.http_port, 7001);
        assert_eq!(c.engine_tls_ca, None);
        assert_eq!(c.redis, vec![("maxmemory".to_string(), "1mb".to_string())]);
    }

    #[test]
    fn upstash_tokens_flags_over_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(
            &path,
            "[http]\nmax_body_bytes = 100\ncors_origins = [\"*\"]\n[upstash]\nmount = \"api/\"\ntokens = [\"file\"]\nreadonly_tokens = [\"ro\"]\n",
        )
        .unwrap();
        let mut flags = ServerFlags {
            config: Some(path),
            ..Default::default()
        };
        let c = Config::resolve(&flags).unwrap();
        assert_eq!(c.upstash.tokens, vec!["file"]);
        assert_eq!(c.upstash.readonly_tokens, vec!["ro"]);
        assert_eq!(c.upstash.mount, "/api");
        assert_eq!(c.http.max_body_bytes, 100);
        assert_eq!(c.http.cors_origins, vec!["*"]);
        flags.rest_token = vec!["flag".into(), " ".into()];
        let c = Config::resolve(&flags).unwrap();
        assert_eq!(c.upstash.tokens, vec!["flag"]);
        assert_eq!(normalize_mount("/"), "");
    }

    #[test]
    fn threads_flag_over_file_and_default_leaves_a_core() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, "threads = 3\n").unwrap();
        let mut flags = ServerFlags {
            config: Some(path),
            ..Default::default()
        };
        assert_eq!(Config::resolve(&flags).unwrap().worker_threads(), 3);
        flags.threads = Some(5);
        assert_eq!(Config::resolve(&flags).unwrap().worker_threads(), 5);
        flags.threads = Some(0);
        flags.config = None;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(
            Config::resolve(&flags).unwrap().worker_threads(),
            (cores - 1).max(1)
        );
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, "prot = 1\n").unwrap();
        let flags = ServerFlags {
            config: Some(path),
            ..Default::default()
        };
        assert!(Config::resolve(&flags).is_err());
    }
}
