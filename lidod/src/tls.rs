//! HTTPS/WSS on the node's listener, when `[node] tls_cert` and `tls_key`
//! are configured.
//!
//! [`NodeTls`] holds what the node serves with (its certificate and key)
//! and what its managers dial their services' pipes with (the CA, by default
//! that same certificate). [`TlsListener`] is an `axum::serve` listener that
//! hands over connections once their rustls handshake is done, so the plain
//! and the TLS node share one serve loop and one graceful shutdown. Each
//! handshake runs in its own task with a deadline: a slow or silent client
//! never holds up the next one. A plain-HTTP request on the TLS port gets a
//! `400 tls_required` that says to use `https://`.
//!
//! [`OwnPipeCert`] is the certificate of a hosted trader's pipe: customer
//! code must never hold the node's key, so each start of a trader gets a
//! fresh self-signed certificate and key of its own, and its manager trusts
//! exactly that certificate on that trader's pipe.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lido_shared::tls::{Identity, TlsError};
use lido_shared::ErrorBody;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

/// A client must finish its TLS handshake within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; past this, new connections wait in the backlog.
const MAX_HANDSHAKES: usize = 1024;
/// The first byte of a TLS record carrying a handshake (a ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// A TLS node's certificate, key and pipe CA, loaded.
#[derive(Clone)]
pub struct NodeTls {
    pub identity: Identity,
    /// The CA the node's pipes and check-ins trust.
    pub ca: PathBuf,
    pub server: Arc<rustls::ServerConfig>,
    /// How managers dial their services' `wss://` pipes: trusting `ca` only.
    pub dial: Arc<rustls::ClientConfig>,
}

impl NodeTls {
    /// Reads and checks the files; `ca` defaults to the certificate itself
    /// (a self-signed set-up).
    pub fn load(identity: Identity, ca: Option<PathBuf>) -> Result<Self, TlsError> {
        let ca = ca.unwrap_or_else(|| identity.cert.clone());
        let server = identity.server_config()?;
        let dial = lido_shared::tls::private_client_config(&ca)?;
        Ok(Self { identity, ca, server, dial })
    }
}

/// A child's own pipe certificate (see the module docs): its files, and the
/// dial configuration that trusts that certificate alone.
pub struct OwnPipeCert {
    pub identity: Identity,
    pub trust: Arc<rustls::ClientConfig>,
}

impl OwnPipeCert {
    /// Makes a key and a self-signed certificate for 127.0.0.1 and
    /// localhost with rcgen, and writes them into `dir` as `pipe.crt` and
    /// `pipe.key` (both 0600), replacing those of an earlier start.
    pub fn make(dir: &std::path::Path) -> Result<Self, String> {
        let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let rcgen::CertifiedKey { cert, key_pair } =
            rcgen::generate_simple_self_signed(names).map_err(|e| format!("cannot make a certificate: {e}"))?;
        let identity = Identity { cert: dir.join("pipe.crt"), key: dir.join("pipe.key") };
        for (path, pem) in [(&identity.key, key_pair.serialize_pem()), (&identity.cert, cert.pem())] {
            crate::venue::file::replace(path, pem.as_bytes(), crate::venue::file::Access::OwnerOnly)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        let trust = lido_shared::tls::private_client_config(&identity.cert).map_err(|e| e.to_string())?;
        Ok(Self { identity, trust })
    }
}

/// The node's listener with TLS in front (see the module docs).
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> Self {
        Self { tcp, acceptor: TlsAcceptor::from(config), handshakes: JoinSet::new() }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept(), if self.handshakes.len() < MAX_HANDSHAKES => match accepted {
                    Ok((stream, addr)) => {
                        // As for plain connections: no Nagle delay on small frames.
                        let _ = stream.set_nodelay(true);
                        self.handshakes.spawn(handshake(self.acceptor.clone(), stream, addr));
                    }
                    Err(e) => {
                        // Like axum's own listener: out of file descriptors and
                        // the like pass; wait a moment rather than spin.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
                Some(done) = self.handshakes.join_next() => {
                    if let Ok(Some(connection)) = done {
                        return connection;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// The TLS handshake of one connection; `None` when it failed (logged).
async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    addr: SocketAddr,
) -> Option<(TlsStream<TcpStream>, SocketAddr)> {
    let done = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let mut first = [0u8; 1];
        if stream.peek(&mut first).await? == 1 && first[0] != TLS_HANDSHAKE_RECORD {
            refuse_plain(stream).await;
            return Ok(None);
        }
        acceptor.accept(stream).await.map(Some)
    })
    .await;
    match done {
        Ok(Ok(Some(tls))) => Some((tls, addr)),
        Ok(Ok(None)) => {
            debug!(%addr, "plain HTTP on the TLS port refused");
            None
        }
        Ok(Err(e)) => {
            debug!(%addr, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            debug!(%addr, "TLS handshake timed out");
            None
        }
    }
}

/// Answers a plain-HTTP request with Lido's error body, then closes.
async fn refuse_plain(mut stream: TcpStream) {
    // Read what the client sent, so that closing does not reset the
    // connection before it has read the answer.
    let mut request = [0u8; 8192];
    let _ = stream.read(&mut request).await;
    let body = ErrorBody::new(
        "tls_required",
        "this port speaks HTTPS only: use https:// (wss:// for WebSockets), with --ca <file> if its certificate is private",
    );
    let body = serde_json::to_string(&body).unwrap_or_default();
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
