//! Seed URLs: `redis://[user:pass@]host:port` (`rediss://` for TLS),
//! comma-separated. The seeds are only where discovery starts; the cluster itself
//! says which nodes own which slots, and those nodes are reached with the seeds'
//! scheme and credentials.

use crate::error::EngineError;

/// Username and password sent with `AUTH` on every engine connection.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Credentials {
    /// `None`: `AUTH <password>` as the default user.
    pub user: Option<String>,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password (startup errors and logs show seeds).
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// One seed node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// `host:port`, as given to `TcpStream::connect`.
    pub addr: String,
    pub credentials: Option<Credentials>,
    /// `rediss://`: TLS to this node (and so to every node of the engine).
    pub tls: bool,
}

const DEFAULT_PORT: u16 = 6379;

/// Parses a comma-separated list of seed URLs. Every seed must name the same
/// credentials and the same scheme: they are the cluster's, and nodes learned
/// later get them too.
pub fn parse_seeds(list: &str) -> Result<Vec<Seed>, EngineError> {
    let seeds: Vec<Seed> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse_seed)
        .collect::<Result<_, _>>()?;
    let Some(first) = seeds.first() else {
        return Err(EngineError::Config("no engine URL given".into()));
    };
    if seeds.iter().any(|s| s.credentials != first.credentials) {
        return Err(EngineError::Config(
            "every engine URL must carry the same user and password".into(),
        ));
    }
    if seeds.iter().any(|s| s.tls != first.tls) {
        return Err(EngineError::Config(
            "engine URLs mix redis:// and rediss://: the nodes of one engine are all reached with TLS or all without".into(),
        ));
    }
    Ok(seeds)
}

fn parse_seed(url: &str) -> Result<Seed, EngineError> {
    let bad = |why: &str| EngineError::Config(format!("{}: {why}", redact(url)));
    let (rest, tls) = if let Some(rest) = url.strip_prefix("redis://") {
        (rest, false)
    } else if let Some(rest) = url.strip_prefix("rediss://") {
        (rest, true)
    } else {
        return Err(bad("expected redis://host:port or rediss://host:port"));
    };
    // A path (`/0`) may only name database 0: a cluster has no other.
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if !(path.is_empty() || path == "0") {
        return Err(bad("a Redis Cluster has database 0 only"));
    }
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let credentials = match userinfo {
        None => None,
        Some(info) => {
            let (user, password) = info.split_once(':').unwrap_or(("", info));
            let user = percent_decode(user).ok_or_else(|| bad("bad %-escape in the user"))?;
            let password =
                percent_decode(password).ok_or_else(|| bad("bad %-escape in the password"))?;
            (!password.is_empty()).then_some(Credentials {
                user: (!user.is_empty()).then_some(user),
                password,
            })
        }
    };
    let (host, port) = split_host_port(hostport).ok_or_else(|| bad("bad host:port"))?;
    if host.is_empty() {
        return Err(bad("no host"));
    }
    Ok(Seed {
        addr: format!("{host}:{port}"),
        credentials,
        tls,
    })
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` → (host as it goes to connect, port).
fn split_host_port(s: &str) -> Option<(String, u16)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => DEFAULT_PORT,
            None => return None,
        };
        return Some((format!("[{host}]"), port));
    }
    match s.rsplit_once(':') {
        Some((host, port)) => Some((host.to_owned(), port.parse().ok()?)),
        None => Some((s.to_owned(), DEFAULT_PORT)),
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The URL with its password replaced, for error messages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((info, host)) => match info.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://***@{host}"),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_with_credentials() {
        let seeds = parse_seeds("redis://127.0.0.1:7000, redis://10.0.0.2").unwrap();
        assert_eq!(seeds[0].addr, "127.0.0.1:7000");
        assert_eq!(seeds[1].addr, "10.0.0.2:6379");
        assert_eq!(seeds[0].credentials, None);
        let seeds = parse_seeds("redis://app:p%40ss@[::1]:7001/0").unwrap();
        assert_eq!(seeds[0].addr, "[::1]:7001");
        let c = seeds[0].credentials.clone().unwrap();
        assert_eq!(c.user.as_deref(), Some("app"));
        assert_eq!(c.password, "p@ss");
        let seeds = parse_seeds("redis://:secret@h:1").unwrap();
        let c = seeds[0].credentials.clone().unwrap();
        assert_eq!((c.user, c.password.as_str()), (None, "secret"));
        assert!(!seeds[0].tls);
        let seeds = parse_seeds("rediss://:secret@h:1,rediss://:secret@h2:2").unwrap();
        assert!(seeds.iter().all(|s| s.tls));
        assert_eq!(seeds[1].addr, "h2:2");
    }

    #[test]
    fn refusals_are_clear_and_hide_the_password() {
        let e = parse_seeds("rediss://u:secret@h:1,redis://u:secret@h:2")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mix redis:// and rediss://"), "{e}");
        assert!(!e.contains("secret"), "{e}");
        let e = parse_seeds("http://u:secret@h:1").unwrap_err().to_string();
        assert!(e.contains("expected redis://"), "{e}");
        assert!(!e.contains("secret"), "{e}");
        assert!(parse_seeds("http://h:1").is_err());
        assert!(parse_seeds("redis://h:1/3").is_err());
        assert!(parse_seeds("redis://h:notaport").is_err());
        assert!(parse_seeds("").is_err());
        assert!(parse_seeds("redis://a:x@h:1,redis://h:2").is_err());
    }
}
