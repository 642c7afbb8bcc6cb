//! TLS on the RESP port (`tls-port`) and the HTTP port (`https-port`): certificates
//! from files, client certificates per `tls-auth-clients`, reload on CONFIG SET, and
//! the HTTP routes (health, Ably WebSocket) over TLS.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, pki_types::ServerName};
use tokio_rustls::TlsConnector;

const WAIT: Duration = Duration::from_secs(10);

/// A CA, and certificates it signed, written as PEM files.
struct Pki {
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
    dir: std::path::PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "tidewire test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.crt"), ca_cert.pem()).unwrap();
        Pki {
            ca_cert,
            ca_key,
            dir: dir.to_path_buf(),
        }
    }

    /// A leaf certificate for localhost / 127.0.0.1 named `name`; returns (cert, key) paths.
    fn leaf(&self, name: &str) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca_cert, &self.ca_key).unwrap();
        let (c, k) = (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (
            c.to_string_lossy().into_owned(),
            k.to_string_lossy().into_owned(),
        )
    }

    fn ca_path(&self) -> String {
        self.dir.join("ca.crt").to_string_lossy().into_owned()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn connector(pki: &Pki, client: Option<(&str, &str)>) -> TlsConnector {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki.ca_path()).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    port: u16,
    connector: &TlsConnector,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))?
}

/// Sends one inline command and reads one reply (enough for these small replies).
async fn command<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    cmd: &str,
) -> std::io::Result<String> {
    s.write_all(format!("{cmd}\r\n").as_bytes()).await?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .map_err(|_| std::io::Error::other("no reply"))??;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

async fn start(dir: &Path, redis: Vec<(String, String)>) -> tidewire_server::Server {
    let config = tidewire_server::Config {
        port: 0,
        http_port: 0,
        data_dir: dir.join("data"),
        redis,
        ..tidewire_server::Config::default()
    };
    tidewire_server::start(config).await.expect("server starts")
}

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The subject CN of the certificate the server presents.
fn peer_cn(s: &tokio_rustls::client::TlsStream<TcpStream>) -> String {
    let der = s.get_ref().1.peer_certificates().unwrap()[0].clone();
    // The CN is stored as a printable string right after its OID; good enough to
    // tell two test certificates apart.
    let text = String::from_utf8_lossy(der.as_ref()).into_owned();
    ["server-one", "server-two"]
        .iter()
        .find(|n| text.contains(*n))
        .map(|n| n.to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp_over_tls_with_client_certificates_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (cert, key) = pki.leaf("server-one");
    let (client_cert, client_key) = pki.leaf("client");
    let port = free_port();
    let server = start(
        dir.path(),
        params(&[
            ("tls-port", &port.to_string()),
            ("tls-cert-file", &cert),
            ("tls-key-file", &key),
            ("tls-ca-cert-file", &pki.ca_path()),
        ]),
    )
    .await;
    assert_eq!(server.tls_addr.map(|a| a.port()), Some(port));
    // tls-auth-clients yes (the default): a client certificate is required.
    let with_cert = connector(&pki, Some((&client_cert, &client_key)));
    let mut s = tls_connect(port, &with_cert).await.expect("handshake");
    assert_eq!(command(&mut s, "PING").await.unwrap(), "+PONG\r\n");
    assert_eq!(command(&mut s, "SET k v").await.unwrap(), "+OK\r\n");
    assert_eq!(peer_cn(&s), "server-one");
    let anonymous = connector(&pki, None);
    let refused = match tls_connect(port, &anonymous).await {
        Err(_) => true,
        // TLS 1.3: the server's refusal arrives with the first read.
        Ok(mut s) => command(&mut s, "PING").await.map_or(true, |r| r.is_empty()),
    };
    assert!(refused, "a client without a certificate got through");
    // The plain port still speaks plain RESP, with the same data.
    let mut plain = TcpStream::connect(server.resp_addr).await.unwrap();
    assert_eq!(command(&mut plain, "GET k").await.unwrap(), "$1\r\nv\r\n");
    // optional: both kinds get in.
    assert_eq!(
        command(&mut plain, "CONFIG SET tls-auth-clients optional")
            .await
            .unwrap(),
        "+OK\r\n"
    );
    let mut s = tls_connect(port, &anonymous).await.expect("handshake");
    assert_eq!(command(&mut s, "PING").await.unwrap(), "+PONG\r\n");
    // A new certificate by CONFIG SET serves the next connection.
    let (cert2, key2) = pki.leaf("server-two");
    let set = format!("CONFIG SET tls-cert-file {cert2} tls-key-file {key2}");
    assert_eq!(command(&mut plain, &set).await.unwrap(), "+OK\r\n");
    let s = tls_connect(port, &anonymous).await.expect("handshake");
    assert_eq!(peer_cn(&s), "server-two");
    server.shutdown().await;
}

#[tokio::test]
async fn a_missing_certificate_is_a_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = tidewire_server::Config {
        port: 0,
        http_port: 0,
        data_dir: dir.path().join("data"),
        redis: params(&[
            ("tls-port", &free_port().to_string()),
            ("tls-cert-file", "/nonexistent/server.crt"),
            ("tls-key-file", "/nonexistent/server.key"),
            ("tls-auth-clients", "no"),
        ]),
        ..tidewire_server::Config::default()
    };
    let err = tidewire_server::start(config).await.err().expect("refused");
    assert!(format!("{err:#}").contains("tls-cert-file"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_port_serves_the_http_routes_and_the_realtime_websocket() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (cert, key) = pki.leaf("server-one");
    let port = free_port();
    let server = start(
        dir.path(),
        params(&[
            ("https-port", &port.to_string()),
            ("tls-cert-file", &cert),
            ("tls-key-file", &key),
            ("tls-auth-clients", "no"),
        ]),
    )
    .await;
    let connector = connector(&pki, None);
    let mut s = tls_connect(port, &connector).await.expect("handshake");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut text))
        .await
        .unwrap()
        .ok();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("ok"), "{text}");
    // The Ably WebSocket endpoint over TLS (wss://).
    let key = server.realtime_root_key.clone().unwrap();
    let s = tls_connect(port, &connector).await.expect("handshake");
    let (mut ws, _) = tokio_tungstenite::client_async(
        format!("wss://localhost:{port}/?key={key}&format=json&v=3"),
        s,
    )
    .await
    .expect("websocket over TLS");
    use futures_util::StreamExt;
    let first = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
    assert_eq!(v["action"], 4, "CONNECTED: {v}");
    server.shutdown().await;
}
