//! TLS for the RESP port (`tls-port`) and the HTTP port (`https-port`), with rustls,
//! configured as Redis configures it: `tls-cert-file`, `tls-key-file`,
//! `tls-ca-cert-file` (the CA that client certificates must chain to),
//! `tls-auth-clients yes|no|optional` and `tls-protocols` ("TLSv1.2 TLSv1.3").
//!
//! The acceptor is built from the files when the first connection comes and built
//! again when a setting or a file's modification time changes, so `CONFIG SET
//! tls-cert-file …` or a renewed certificate on disk applies to the next connection
//! without a restart (connections already open keep theirs).

use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tidewire_store::Store;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

/// What the acceptor was built from: the settings and the files' modification times.
#[derive(Clone, PartialEq, Eq, Debug)]
struct Source {
    cert: String,
    key: String,
    ca: String,
    auth_clients: String,
    protocols: String,
    mtimes: Vec<Option<SystemTime>>,
}

/// The current acceptor for a listener, rebuilt when its [`Source`] changes.
pub struct Tls {
    store: Arc<Store>,
    /// HTTP speaks HTTP/2 and HTTP/1.1 over ALPN; RESP none.
    alpn: Vec<Vec<u8>>,
    current: Mutex<Option<(Source, TlsAcceptor)>>,
}

impl Tls {
    /// For the RESP port.
    pub fn resp(store: Arc<Store>) -> Arc<Tls> {
        Arc::new(Tls {
            store,
            alpn: Vec::new(),
            current: Mutex::new(None),
        })
    }

    /// For the HTTPS port.
    pub fn http(store: Arc<Store>) -> Arc<Tls> {
        Arc::new(Tls {
            store,
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            current: Mutex::new(None),
        })
    }

    /// Checks that the configured files make an acceptor (at start: a bad
    /// certificate is a startup error, not a failure of every connection).
    pub fn check(&self) -> anyhow::Result<()> {
        self.acceptor().map(|_| ())
    }

    /// The acceptor for the next connection.
    pub fn acceptor(&self) -> anyhow::Result<TlsAcceptor> {
        let source = self.source();
        let mut current = self.current.lock();
        if let Some((built_from, acceptor)) = current.as_ref() {
            if *built_from == source {
                return Ok(acceptor.clone());
            }
        }
        let acceptor = TlsAcceptor::from(Arc::new(build(&source, &self.alpn)?));
        if current.is_some() {
            tracing::info!(cert = %source.cert, "TLS settings or files changed: reloaded");
        }
        *current = Some((source, acceptor.clone()));
        Ok(acceptor)
    }

    fn source(&self) -> Source {
        let get = |name: &str| self.store.config.get(name).unwrap_or_default();
        let (cert, key, ca) = (
            get("tls-cert-file"),
            get("tls-key-file"),
            get("tls-ca-cert-file"),
        );
        let mtimes = [&cert, &key, &ca]
            .iter()
            .map(|p| {
                std::fs::metadata(p.as_str())
                    .and_then(|m| m.modified())
                    .ok()
            })
            .collect();
        Source {
            cert,
            key,
            ca,
            auth_clients: get("tls-auth-clients"),
            protocols: get("tls-protocols"),
            mtimes,
        }
    }
}

fn build(s: &Source, alpn: &[Vec<u8>]) -> anyhow::Result<rustls::ServerConfig> {
    use anyhow::Context;
    if s.cert.is_empty() || s.key.is_empty() {
        anyhow::bail!("TLS needs tls-cert-file and tls-key-file");
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&s.cert)
        .with_context(|| format!("cannot read tls-cert-file {}", s.cert))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad certificate in {}", s.cert))?;
    if certs.is_empty() {
        anyhow::bail!("no certificate in tls-cert-file {}", s.cert);
    }
    let key = PrivateKeyDer::from_pem_file(&s.key)
        .with_context(|| format!("cannot read a private key from tls-key-file {}", s.key))?;
    // ring: it builds from crates.io with a C compiler alone (aws-lc-rs, which rustls
    // now prefers for its post-quantum key exchange, needs more of the toolchain);
    // the classical key exchanges it offers are those Redis's and Ably's clients use.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions = protocol_versions(&s.protocols)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .context("tls-protocols")?;
    let builder = match s.auth_clients.as_str() {
        "no" => builder.with_no_client_auth(),
        mode => {
            if s.ca.is_empty() {
                anyhow::bail!(
                    "tls-auth-clients {mode} needs tls-ca-cert-file (or set tls-auth-clients no)"
                );
            }
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(&s.ca)
                .with_context(|| format!("cannot read tls-ca-cert-file {}", s.ca))?
            {
                roots
                    .add(c.with_context(|| format!("bad certificate in {}", s.ca))?)
                    .with_context(|| format!("unusable CA certificate in {}", s.ca))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let verifier = if mode == "optional" {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier.build().context("tls-ca-cert-file")?)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("tls-cert-file and tls-key-file do not make a usable pair")?;
    config.alpn_protocols = alpn.to_vec();
    Ok(config)
}

/// `tls-protocols` ("TLSv1.2 TLSv1.3", either, or empty for both).
fn protocol_versions(text: &str) -> anyhow::Result<Vec<&'static rustls::SupportedProtocolVersion>> {
    let mut out = Vec::new();
    for word in text.split_whitespace() {
        match word.to_ascii_lowercase().as_str() {
            "tlsv1.2" => out.push(&rustls::version::TLS12),
            "tlsv1.3" => out.push(&rustls::version::TLS13),
            other => anyhow::bail!("tls-protocols: {other} is not supported (TLSv1.2, TLSv1.3)"),
        }
    }
    if out.is_empty() {
        out = vec![&rustls::version::TLS12, &rustls::version::TLS13];
    }
    Ok(out)
}
