//! TLS to the engine's nodes (`rediss://`), with rustls. Certificates are checked
//! against the webpki roots (public CAs) by default, or against one CA file
//! given by the operator (a private CA, as managed and self-hosted Redis use);
//! the name checked is the host of the address dialed, an IP address against the
//! certificate's IP SANs. There is no "skip verification" switch: a private CA
//! is one file away, and an unverified link would carry the engine password.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_rustls::TlsConnector;

use crate::error::EngineError;
use crate::topology::split_addr;

/// How engine connections set up TLS; clones share the configuration.
#[derive(Clone)]
pub struct EngineTls {
    connector: TlsConnector,
    /// Where the trusted roots came from, for error messages.
    roots: Arc<str>,
}

impl std::fmt::Debug for EngineTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineTls")
            .field("roots", &self.roots)
            .finish_non_exhaustive()
    }
}

impl EngineTls {
    /// Trusts the CA certificates in `ca_file` (PEM) only, or the webpki roots
    /// when there is none. A file that cannot be read or holds no certificate is
    /// a configuration error, reported at startup.
    pub fn new(ca_file: Option<&Path>) -> Result<EngineTls, EngineError> {
        let mut roots = rustls::RootCertStore::empty();
        let source = match ca_file {
            None => {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                "the webpki roots (public CAs)".to_owned()
            }
            Some(path) => {
                let shown = path.display();
                let bad =
                    |why: String| EngineError::Config(format!("engine TLS CA {shown}: {why}"));
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                    .map_err(|e| bad(e.to_string()))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| bad(e.to_string()))?;
                if certs.is_empty() {
                    return Err(bad("no certificate in the file".into()));
                }
                for cert in certs {
                    roots.add(cert).map_err(|e| bad(e.to_string()))?;
                }
                format!("the CA in {shown}")
            }
        };
        // ring, as the server's own listeners use: it builds with a C compiler
        // alone; its classical key exchanges are those Redis offers.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| EngineError::Config(format!("engine TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(EngineTls {
            connector: TlsConnector::from(Arc::new(config)),
            roots: source.into(),
        })
    }

    /// The TLS handshake over `stream` to the node at `addr`. A certificate the
    /// roots do not vouch for is a configuration error (retrying cannot help);
    /// anything else is the node being unreachable.
    pub(crate) async fn handshake(
        &self,
        addr: &str,
        stream: TcpStream,
    ) -> Result<TlsStream<TcpStream>, EngineError> {
        let host = split_addr(addr).0;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let name = ServerName::try_from(host.to_owned()).map_err(|_| {
            EngineError::Config(format!("{addr}: not a name TLS can verify: {host}"))
        })?;
        self.connector
            .connect(name, stream)
            .await
            .map_err(|e| match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                Some(rustls::Error::InvalidCertificate(why)) => EngineError::Config(format!(
                    "{addr}: TLS certificate refused ({why:?}); trusted: {} (--engine-tls-ca names a CA file)",
                    self.roots
                )),
                _ => EngineError::Unreachable(format!("{addr}: TLS handshake: {e}")),
            })
    }
}
