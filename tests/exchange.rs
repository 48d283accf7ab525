//! A shared paper exchange (`lidod venue paper`) for the cluster tests.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use lido_shared::access::CLUSTER_SECRET_HEADER;
use lido_shared::exchange::{ExchangeFrame, ExchangeRequest};
use lido_shared::pipe::{Command as VenueCommand, Reply, ReplyBody, VenueOrderReport};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::{lidod_path, temp_data_dir};

const WAIT: Duration = Duration::from_secs(30);

/// A `lidod venue paper` process, killed on drop.
pub struct PaperExchange {
    /// The exchange socket: `ws://127.0.0.1:PORT/v1/exchange`.
    pub url: String,
    secret: String,
    child: Child,
    dir: PathBuf,
}

impl PaperExchange {
    /// Starts one with the cluster secret in `secret_file` (whose text is `secret`).
    pub fn start(secret_file: &Path, secret: &str) -> Self {
        let dir = temp_data_dir();
        let log = std::fs::File::create(dir.join("exchange.log")).unwrap();
        let mut child = Command::new(lidod_path())
            .args(["venue", "paper", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&dir)
            .arg("--cluster-secret-file")
            .arg(secret_file)
            .args(["--set", "seed=7", "--set", "tick_ms=250"])
            .env("LIDO_LOG", "info,lidod=debug")
            .env("NO_COLOR", "1")
            .env_remove("LIDO_CLUSTER_SECRET")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start lidod venue paper");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line
            .trim()
            .strip_prefix("exchange ")
            .unwrap_or_else(|| panic!("unexpected first line from the exchange: {line:?}"))
            .to_string();
        Self { child, url, dir, secret: secret.to_string() }
    }

    /// The exchange's open orders of an account, asked over its own protocol.
    pub async fn open_orders(&self, account: &str) -> Vec<VenueOrderReport> {
        let mut request = self.url.as_str().into_client_request().unwrap();
        request.headers_mut().insert(CLUSTER_SECRET_HEADER, self.secret.parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await.expect("connect to the exchange");
        let ask = ExchangeRequest { id: 1, command: VenueCommand::OpenOrders { account: account.into() } };
        ws.send(Message::text(serde_json::to_string(&ask).unwrap())).await.unwrap();
        let answer = tokio::time::timeout(WAIT, async {
            while let Some(Ok(message)) = ws.next().await {
                let Message::Text(text) = message else { continue };
                if let Ok(ExchangeFrame::Reply { id: 1, reply }) = serde_json::from_str(&text) {
                    return reply;
                }
            }
            panic!("the exchange closed the socket before answering");
        })
        .await
        .expect("the exchange answers");
        let _ = ws.close(None).await;
        match answer {
            Reply::Ok(ReplyBody::Orders(orders)) => orders,
            other => panic!("unexpected answer to open orders: {other:?}"),
        }
    }
}

impl Drop for PaperExchange {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("exchange log kept at {}", self.dir.join("exchange.log").display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
