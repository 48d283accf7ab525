//! The InfrastructureManager URLs given with `--url`, tried in order: a call
//! that finds one unreachable goes on to the next.

use std::future::Future;
use std::path::Path;

use anyhow::Context;
use lido_shared::client::{ClientError, LidoClient};

use crate::exit::UsageError;

/// One client per `--url`, in the order given.
#[derive(Clone, Debug)]
pub struct Endpoints {
    clients: Vec<LidoClient>,
}

impl Endpoints {
    /// `ca`: a private CA certificate to trust on https:// URLs.
    pub fn new(urls: &[String], token: Option<&str>, ca: Option<&Path>) -> anyhow::Result<Self> {
        let mut clients = Vec::new();
        for url in urls.iter().map(|u| u.trim()).filter(|u| !u.is_empty()) {
            let client = LidoClient::with_ca(url, ca).map_err(|e| match e {
                ClientError::Tls(e) => UsageError(format!("bad --ca: {e}")),
                e => UsageError(format!("bad URL {url:?}: {e} (expected http://host:port or https://host:port)")),
            })?;
            clients.push(match token {
                Some(token) => client.with_token(token),
                None => client,
            });
        }
        if clients.is_empty() {
            return Err(UsageError("no URL: --url, LIDO_URL and the context give none".into()).into());
        }
        Ok(Self { clients })
    }

    pub fn clients(&self) -> &[LidoClient] {
        &self.clients
    }

    /// Runs `call` against each URL in turn until one is reachable; returns
    /// that answer (success or Lido's error) or the last unreachable error.
    pub async fn call<T, F, Fut>(&self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(LidoClient) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let mut last = None;
        for (i, client) in self.clients.iter().enumerate() {
            match call(client.clone()).await {
                Err(e) if e.is_unreachable() => {
                    if let Some(next) = self.clients.get(i + 1) {
                        eprintln!("warning: cannot reach {}; trying {}", client.base_url(), next.base_url());
                    }
                    last = Some(e);
                }
                other => return other,
            }
        }
        Err(last.expect("at least one url"))
    }

    /// Like [`Endpoints::call`], with `what` as context on failure.
    pub async fn run<T, F, Fut>(&self, what: impl Into<String>, call: F) -> anyhow::Result<T>
    where
        F: FnMut(LidoClient) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let what = what.into();
        self.call(call).await.with_context(|| what)
    }
}
