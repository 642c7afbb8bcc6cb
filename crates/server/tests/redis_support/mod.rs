//! Real redis-server processes for the tests that talk to one: a standalone
//! server, or a Redis Cluster of three masters (`--cluster-enabled yes`, joined with
//! `redis-cli --cluster create`), on free loopback ports, killed when dropped.
//! Needs `redis-server` and `redis-cli` on the PATH (`./test.sh` installs them):
//! without them the tests fail with that message rather than skipping.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One redis-server process.
pub struct Node {
    child: Child,
    pub port: u16,
    /// `requirepass`, when started with one.
    pub password: Option<String>,
    /// The TLS port, when started with one (`port` stays plain).
    pub tls_port: Option<u16>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    /// Kills the process at once (SIGKILL), as a crashed machine would stop.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops (`SIGSTOP`) or continues (`SIGCONT`) the process: a replica
    /// stopped for a moment acknowledges nothing meanwhile.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal}");
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Its URL, with the password if it has one.
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// A direct connection to this node (no cluster routing).
    pub fn conn(&self) -> redis::Connection {
        let c = redis::Client::open(format!("{}/", self.url()))
            .expect("redis URL")
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("connect to redis-server");
        c.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        c
    }

    /// Runs one command on this node.
    pub fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut self.conn())
            .unwrap_or_else(|e| panic!("{args:?} on {}: {e}", self.addr()))
    }

    /// GET of a key in a slot this node is importing (ASKING first, on the same
    /// connection).
    pub fn conn_get_asking(&self, key: &str) -> Option<String> {
        let mut conn = self.conn();
        redis::cmd("ASKING").query::<()>(&mut conn).expect("ASKING");
        redis::cmd("GET").arg(key).query(&mut conn).expect("GET")
    }

    pub fn id(&self) -> String {
        self.cmd(&["CLUSTER", "MYID"])
    }
}

/// Free ports whose cluster bus port (+10000) is free too.
fn free_port() -> u16 {
    for _ in 0..100 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        let port = l.local_addr().expect("local addr").port();
        if port < 55000 && std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair for a cluster node");
}

/// How a node is started beyond the defaults.
#[derive(Default, Clone)]
pub struct Extra {
    /// `requirepass` (and `masterauth`, so replicas can follow).
    pub password: Option<String>,
    /// `(cert, key, ca)` files: a TLS port beside the plain one, no client
    /// certificate asked for.
    pub tls: Option<(String, String, String)>,
}

/// `cluster`: the node timeout (ms) of a cluster node; `None`: a standalone server.
fn start_node(dir: &std::path::Path, cluster: Option<u32>) -> Node {
    start_node_with(dir, cluster, &Extra::default())
}

/// Starts a node on free ports. The ports are free when chosen but not held, so
/// another test's server can take one first: then this redis-server exits (it cannot
/// bind), or the port answers for the other server. The node is used only once it
/// answers PING with its own `process_id`; otherwise it starts again on new ports.
fn start_node_with(dir: &std::path::Path, cluster: Option<u32>, extra: &Extra) -> Node {
    for _ in 0..5 {
        if let Some(node) = try_start_node(dir, cluster, extra) {
            return node;
        }
    }
    panic!("redis-server did not start on five pairs of free ports");
}

fn try_start_node(dir: &std::path::Path, cluster: Option<u32>, extra: &Extra) -> Option<Node> {
    let port = free_port();
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir);
    if let Some(node_timeout) = cluster {
        cmd.args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
            .args(["--cluster-node-timeout", &node_timeout.to_string()]);
    }
    if let Some(p) = &extra.password {
        cmd.args(["--requirepass", p, "--masterauth", p]);
    }
    let mut tls_port = None;
    if let Some((cert, key, ca)) = &extra.tls {
        let p = free_port();
        tls_port = Some(p);
        cmd.args(["--tls-port", &p.to_string()])
            .args(["--tls-cert-file", cert, "--tls-key-file", key])
            .args(["--tls-ca-cert-file", ca, "--tls-auth-clients", "no"]);
        if cluster.is_some() {
            cmd.args(["--tls-cluster", "yes", "--tls-replication", "yes"]);
        }
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("redis-server must be on the PATH for this test (./test.sh installs it): {e}")
        });
    let mut node = Node {
        child,
        port,
        password: extra.password.clone(),
        tls_port,
    };
    let own_pid = format!("process_id:{}", node.child.id());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if !matches!(node.child.try_wait(), Ok(None)) {
            return None;
        }
        let info = redis::Client::open(format!("{}/", node.url()))
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
            .and_then(|mut c| redis::cmd("INFO").arg("server").query::<String>(&mut c));
        match info {
            Ok(info) if info.lines().any(|l| l.trim_end() == own_pid) => return Some(node),
            // Another server holds the port; this one is exiting or about to.
            Ok(_) => {
                node.kill();
                return None;
            }
            Err(_) => {}
        }
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A standalone redis-server (cluster support disabled).
pub struct Standalone {
    pub node: Node,
    _dir: tempfile::TempDir,
}

pub fn standalone() -> Standalone {
    standalone_with(&Extra::default())
}

/// A standalone redis-server with a password or a TLS port.
pub fn standalone_with(extra: &Extra) -> Standalone {
    let dir = tempfile::tempdir().expect("temp dir");
    Standalone {
        node: start_node_with(dir.path(), None, extra),
        _dir: dir,
    }
}

/// Three masters, slots split by `redis-cli --cluster create`.
pub struct RedisCluster {
    pub masters: Vec<Node>,
    /// One per master when started [`RedisCluster::with_replicas`].
    pub replicas: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Three masters, no replica.
    pub fn start() -> RedisCluster {
        RedisCluster::create(false, &Extra::default())
    }

    /// Three masters that require `password` (clients and the cluster tooling).
    pub fn with_password(password: &str) -> RedisCluster {
        let extra = Extra {
            password: Some(password.into()),
            ..Extra::default()
        };
        RedisCluster::create(false, &extra)
    }

    /// Three masters speaking TLS to clients and to each other (`tls-cluster
    /// yes`), with `(cert, key, ca)`; each keeps a plain port for the tests.
    pub fn with_tls(tls: (String, String, String)) -> RedisCluster {
        let extra = Extra {
            tls: Some(tls),
            ..Extra::default()
        };
        RedisCluster::create(false, &extra)
    }

    /// Three masters and a replica of each, with a short node timeout so that a
    /// killed master's replica takes over within seconds.
    pub fn with_replicas() -> RedisCluster {
        RedisCluster::create(true, &Extra::default())
    }

    /// [`RedisCluster::start`] from async code (it blocks while the cluster
    /// forms).
    pub async fn started() -> RedisCluster {
        tokio::task::spawn_blocking(RedisCluster::start)
            .await
            .expect("cluster starts")
    }

    /// [`RedisCluster::with_replicas`] from async code.
    pub async fn started_with_replicas() -> RedisCluster {
        tokio::task::spawn_blocking(RedisCluster::with_replicas)
            .await
            .expect("cluster starts")
    }

    fn create(replicas: bool, extra: &Extra) -> RedisCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let (count, node_timeout) = if replicas { (6, 2000) } else { (3, 5000) };
        let nodes: Vec<Node> = (0..count)
            .map(|_| start_node_with(dir.path(), Some(node_timeout), extra))
            .collect();
        let mut create = Command::new("redis-cli");
        if let Some(p) = &extra.password {
            create.args(["--no-auth-warning", "-a", p]);
        }
        if let Some((_, _, ca)) = &extra.tls {
            create.args(["--tls", "--cacert", ca]);
        }
        create.arg("--cluster").arg("create");
        for n in &nodes {
            match n.tls_port {
                Some(p) => create.arg(format!("127.0.0.1:{p}")),
                None => create.arg(n.addr()),
            };
        }
        if replicas {
            create.args(["--cluster-replicas", "1"]);
        }
        let out = create
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!("redis-cli must be on the PATH for this test (./test.sh installs it): {e}")
            });
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let (masters, replicas): (Vec<Node>, Vec<Node>) = nodes.into_iter().partition(|n| {
            let role: Vec<redis::Value> = n.cmd(&["ROLE"]);
            matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master")
        });
        let cluster = RedisCluster {
            masters,
            replicas,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cluster.masters.iter().chain(&cluster.replicas).all(|m| {
            m.cmd::<String>(&["CLUSTER", "INFO"])
                .contains("cluster_state:ok")
        }) || !cluster.replicas.iter().all(|r| {
            r.cmd::<String>(&["INFO", "replication"])
                .contains("master_link_status:up")
        }) {
            assert!(
                Instant::now() < deadline,
                "the cluster did not reach state ok"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    /// The master owning `slot`, by asking the cluster.
    pub fn owner_of(&self, slot: u16) -> &Node {
        self.masters
            .iter()
            .find(|m| {
                let shards: redis::Value = m.cmd(&["CLUSTER", "SLOTS"]);
                owns(&shards, slot, m.port)
            })
            .unwrap_or_else(|| panic!("no master owns slot {slot}"))
    }
}

/// Whether a CLUSTER SLOTS reply gives `slot` to the node on `port`.
fn owns(slots: &redis::Value, slot: u16, port: u16) -> bool {
    let redis::Value::Array(ranges) = slots else {
        return false;
    };
    ranges.iter().any(|r| match r {
        redis::Value::Array(f) => match (&f[0], &f[1], &f[2]) {
            (redis::Value::Int(a), redis::Value::Int(b), redis::Value::Array(node)) => {
                (*a..=*b).contains(&(slot as i64))
                    && matches!(node.get(1), Some(redis::Value::Int(p)) if *p == port as i64)
            }
            _ => false,
        },
        _ => false,
    })
}
