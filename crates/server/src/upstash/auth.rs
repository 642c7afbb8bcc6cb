//! Bearer tokens for the REST API: read-write and read-only lists, checked in
//! constant time, and the token generated on first start and kept in the data dir.

use std::path::{Path, PathBuf};

use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

/// What a request's token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    ReadOnly,
    /// A token mapped to an ACL user (`[upstash] acl_tokens`): its commands run as
    /// that user, with its permissions.
    User(usize),
}

#[derive(Debug, Clone)]
pub struct Tokens {
    read_write: Vec<String>,
    read_only: Vec<String>,
    /// (token, ACL user name).
    users: Vec<(String, String)>,
}

/// Name of the file in the data dir that keeps the generated token.
pub const TOKEN_FILE: &str = "rest-token";

/// Where the read-write token came from, for the startup banner.
#[derive(Debug, Clone)]
pub enum TokenSource {
    Configured,
    /// Generated now or on an earlier start, kept in this file.
    DataDir(PathBuf),
}

impl Tokens {
    pub fn new(read_write: Vec<String>, read_only: Vec<String>) -> Tokens {
        Tokens {
            read_write,
            read_only,
            users: Vec::new(),
        }
    }

    /// Adds tokens that run as ACL users.
    pub fn with_users(mut self, users: Vec<(String, String)>) -> Tokens {
        self.users = users;
        self
    }

    /// The ACL user of an [`Access::User`].
    pub fn user_name(&self, i: usize) -> &str {
        self.users.get(i).map_or("default", |(_, u)| u.as_str())
    }

    /// Configured tokens, or else the one kept in (or now created in) the data dir.
    pub fn resolve(
        configured: &[String],
        read_only: &[String],
        data_dir: &Path,
    ) -> anyhow::Result<(Tokens, TokenSource)> {
        if !configured.is_empty() {
            return Ok((
                Tokens::new(configured.to_vec(), read_only.to_vec()),
                TokenSource::Configured,
            ));
        }
        let path = data_dir.join(TOKEN_FILE);
        let token = load_or_create(&path)?;
        Ok((
            Tokens::new(vec![token], read_only.to_vec()),
            TokenSource::DataDir(path),
        ))
    }

    /// The read-write tokens (the QStash API's, unless it names its own).
    pub fn read_write(&self) -> &[String] {
        &self.read_write
    }

    /// The first read-write token (shown in the banner, used by tests).
    pub fn primary(&self) -> &str {
        self.read_write.first().map_or("", |s| s.as_str())
    }

    /// Checks `Authorization: Bearer …`, then `?_token=`.
    pub fn check(&self, headers: &HeaderMap, query: Option<&str>) -> Option<Access> {
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            });
        let from_query;
        let presented = match bearer {
            Some(b) => b,
            None => {
                from_query = query.and_then(query_token);
                from_query.as_deref()?
            }
        };
        self.access(presented)
    }

    /// What a token presented some other way (the dashboard's login form) allows.
    pub fn access(&self, presented: &str) -> Option<Access> {
        // Every token is compared so the time taken says nothing about which matched.
        let mut found = None;
        for t in &self.read_write {
            if bool::from(t.as_bytes().ct_eq(presented.as_bytes())) {
                found = Some(Access::ReadWrite);
            }
        }
        for t in &self.read_only {
            if bool::from(t.as_bytes().ct_eq(presented.as_bytes())) && found.is_none() {
                found = Some(Access::ReadOnly);
            }
        }
        for (i, (t, _)) in self.users.iter().enumerate() {
            if bool::from(t.as_bytes().ct_eq(presented.as_bytes())) && found.is_none() {
                found = Some(Access::User(i));
            }
        }
        found
    }
}

fn query_token(query: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == "_token").then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

fn load_or_create(path: &Path) -> anyhow::Result<String> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let t = text.trim();
        if !t.is_empty() {
            return Ok(t.to_string());
        }
    }
    let token = generate();
    write_private(path, &token)
        .map_err(|e| anyhow::anyhow!("cannot write REST token to {}: {e}", path.display()))?;
    Ok(token)
}

/// 32 random bytes, URL-safe base64 (no padding): 43 characters.
fn generate() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut buf = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// Writes a file only its owner can read (0600 on Unix).
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(contents.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_query() {
        let t = Tokens::new(vec!["rw".into()], vec!["ro".into()]);
        let mut h = HeaderMap::new();
        assert_eq!(t.check(&h, None), None);
        assert_eq!(t.check(&h, Some("a=1&_token=ro")), Some(Access::ReadOnly));
        h.insert("authorization", "Bearer rw".parse().unwrap());
        assert_eq!(t.check(&h, None), Some(Access::ReadWrite));
        h.insert("authorization", "bearer nope".parse().unwrap());
        assert_eq!(t.check(&h, Some("_token=rw")), None);
    }

    #[test]
    fn generated_token_is_kept_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = Tokens::resolve(&[], &[], dir.path()).unwrap();
        let (b, _) = Tokens::resolve(&[], &[], dir.path()).unwrap();
        assert_eq!(a.primary(), b.primary());
        assert_eq!(a.primary().len(), 43);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(TOKEN_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
