//! The bare forwarding proxy the order round trip is measured against:
//! `lido-bench proxy`, a process of its own (as lidod is), with no logic.
//!
//! - HTTP in (axum): every `POST /0/private/{method}` goes on to the venue
//!   with its body and signing headers; the answer comes back as is.
//! - WebSocket in (tokio-tungstenite): each text frame is one signed call
//!   ([`WsCall`]), sent on as the same `POST`; the venue's answer body is
//!   the reply frame.
//!
//! Both go out on one reqwest client (keep-alive). The algo signs its own
//! calls, so the proxy only moves bytes: what it adds is the hop itself.
//!
//! With `--journal DIR` it is the *journaling* proxy: each call is first
//! written to an SQLite journal in WAL mode with `synchronous = FULL` (one
//! fsynced insert, as DESIGN.md's safety rule asks of an order before it
//! leaves) and forwarded only when that commit returns. What it adds is the
//! floor for anything that keeps that rule: the hop and one durable write.

use std::ffi::OsStr;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// `lido-bench proxy …`: the proxy process.
#[derive(clap::Args, Debug)]
pub struct ProxyArgs {
    /// The venue's base URL (the Kraken fake's).
    #[arg(long)]
    upstream: String,
    /// Journal each call durably in an SQLite file in this directory before
    /// forwarding it.
    #[arg(long)]
    journal: Option<PathBuf>,
}

/// One private call over the proxy's WebSocket, signed by the algo.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct WsCall {
    /// Kraken's method name, e.g. `AddOrder`.
    pub method: String,
    pub api_key: String,
    pub api_sign: String,
    /// The form-encoded body the signature covers.
    pub body: String,
}

#[derive(Clone)]
struct Upstream {
    base: Arc<str>,
    http: reqwest::Client,
    journal: Option<Arc<Mutex<rusqlite::Connection>>>,
}

/// Opens the journaling proxy's SQLite file: WAL, every commit fsynced.
fn open_journal(dir: &FsPath) -> anyhow::Result<rusqlite::Connection> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let db = rusqlite::Connection::open(dir.join("proxy-journal.sqlite"))?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "FULL")?;
    db.execute_batch("CREATE TABLE IF NOT EXISTS calls (seq INTEGER PRIMARY KEY AUTOINCREMENT, method TEXT NOT NULL, body BLOB NOT NULL)")?;
    Ok(db)
}

impl Upstream {
    /// Writes the call to the journal (when there is one) and returns once
    /// the commit is on disk. Like lidod's journal, a short synchronous call.
    fn journal(&self, method: &str, body: &[u8]) -> Result<(), rusqlite::Error> {
        let Some(journal) = &self.journal else { return Ok(()) };
        let db = journal.lock().unwrap_or_else(|p| p.into_inner());
        db.prepare_cached("INSERT INTO calls (method, body) VALUES (?1, ?2)")?
            .execute(rusqlite::params![method, body])?;
        Ok(())
    }

    async fn post(&self, method: &str, headers: [(&str, &str); 3], body: Bytes) -> Result<Bytes, reqwest::Error> {
        let mut request = self.http.post(format!("{}/0/private/{method}", self.base)).body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.send().await?.bytes().await
    }
}

/// Serves both entries until killed; the first stdout line is
/// `proxy <http base> <ws url>`.
pub async fn serve(args: ProxyArgs) -> anyhow::Result<()> {
    let journal = args.journal.as_deref().map(open_journal).transpose()?.map(|db| Arc::new(Mutex::new(db)));
    let upstream = Upstream { base: args.upstream.into(), http: reqwest::Client::new(), journal };
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let ws = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("proxy http://{} ws://{}", http.local_addr()?, ws.local_addr()?);
    let app = Router::new().route("/0/private/{method}", post(forward)).with_state(upstream.clone());
    let http = tokio::spawn(async move { axum::serve(http, app).await });
    loop {
        let (stream, _) = ws.accept().await?;
        let _ = stream.set_nodelay(true);
        let upstream = upstream.clone();
        tokio::spawn(async move {
            // The bench sees a closed socket; the cause goes to stderr (the bench's).
            if let Err(e) = relay(stream, &upstream).await {
                eprintln!("lido-bench proxy: a WebSocket connection ended: {e:#}");
            }
        });
        if http.is_finished() {
            bail!("the proxy's HTTP server stopped");
        }
    }
}

/// One WebSocket connection: each frame a signed call, each answer a frame.
async fn relay(stream: tokio::net::TcpStream, upstream: &Upstream) -> anyhow::Result<()> {
    let mut socket = tokio_tungstenite::accept_async(stream).await?;
    while let Some(frame) = socket.next().await {
        let Message::Text(text) = frame? else { continue };
        let call: WsCall = serde_json::from_str(text.as_str()).context("an undecodable call")?;
        let headers = [
            ("API-Key", call.api_key.as_str()),
            ("API-Sign", call.api_sign.as_str()),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ];
        upstream.journal(&call.method, call.body.as_bytes()).context("the journal")?;
        let answer = upstream.post(&call.method, headers, Bytes::from(call.body)).await.context("the venue")?;
        socket.send(Message::text(String::from_utf8(answer.to_vec()).context("the venue's answer")?)).await?;
    }
    Ok(())
}

async fn forward(
    State(up): State<Upstream>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Bytes, axum::http::StatusCode> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let (key, sign, content_type) = (header("API-Key"), header("API-Sign"), header("Content-Type"));
    let headers = [("API-Key", key.as_str()), ("API-Sign", sign.as_str()), ("Content-Type", content_type.as_str())];
    up.journal(&method, &body).map_err(|e| {
        eprintln!("lido-bench proxy: cannot journal {method}: {e}");
        axum::http::StatusCode::INTERNAL_SERVER_ERROR
    })?;
    up.post(&method, headers, body).await.map_err(|e| {
        eprintln!("lido-bench proxy: {method} to the venue failed: {e}");
        axum::http::StatusCode::BAD_GATEWAY
    })
}

/// A running `lido-bench proxy` process, killed on drop.
pub struct ProxyProcess {
    /// Base URL of the HTTP entry (use as the venue's REST base).
    pub http_url: String,
    /// URL of the WebSocket entry.
    pub ws_url: String,
    _child: tokio::process::Child,
}

impl ProxyProcess {
    /// A proxy to `upstream`; with `journal`, the journaling proxy writing there.
    pub async fn start(upstream: &str, journal: Option<&FsPath>) -> anyhow::Result<Self> {
        let mut args = vec![OsStr::new("proxy"), OsStr::new("--upstream"), OsStr::new(upstream)];
        if let Some(dir) = journal {
            args.extend([OsStr::new("--journal"), dir.as_os_str()]);
        }
        let (child, urls) = crate::start_helper(&args).await?;
        let Some((http_url, ws_url)) = urls.split_once(' ') else {
            bail!("the proxy process named no WebSocket URL: {urls:?}");
        };
        Ok(Self { http_url: http_url.into(), ws_url: ws_url.into(), _child: child })
    }
}
