//! A node's check-in loop (`--role node`): every `checkin_interval_ms` it
//! tells each of its InfrastructureManagers (independently) who it is, what
//! it runs and where to watch it, and applies their answer: drain, or stop.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use lido_shared::access::{Secret, CLUSTER_SECRET_HEADER};
use lido_shared::client::{ws_url, ClientError};
use lido_shared::cluster::{NodeCheckIn, NodeCheckInReply};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::infra::Infra;

/// The path an IM takes node check-ins on.
pub const NODE_CHECKIN_PATH: &str = "/v1/nodes/checkin";

/// The first retry after a failed check-in; it doubles up to the interval.
const FIRST_RETRY: Duration = Duration::from_millis(100);

/// Starts one check-in task per IM; they end when `stop` is cancelled.
/// Fails when the HTTP client cannot be built (no TLS backend).
pub fn spawn(
    infra: Infra,
    ims: Vec<String>,
    interval: Duration,
    secret: Secret,
    stop: CancellationToken,
) -> reqwest::Result<()> {
    let http = reqwest::Client::builder().timeout(interval.max(Duration::from_secs(2))).build()?;
    for im in ims {
        let im = im.trim_end_matches('/').to_string();
        tokio::spawn(check_in_loop(infra.clone(), http.clone(), im, interval, secret.clone(), stop.clone()));
    }
    Ok(())
}

/// The node's watch URL from its API URL: `http://h:p` → `ws://h:p/v1/cluster/watch`.
pub fn watch_url(api_url: &str) -> Result<String, ClientError> {
    ws_url(api_url.trim_end_matches('/'), "/v1/cluster/watch")
}

async fn check_in_loop(
    infra: Infra,
    http: reqwest::Client,
    im: String,
    interval: Duration,
    secret: Secret,
    stop: CancellationToken,
) {
    let url = format!("{im}{NODE_CHECKIN_PATH}");
    let mut failures = 0u32;
    let retries = || {
        ExponentialBuilder::default().with_min_delay(FIRST_RETRY).with_max_delay(interval).without_max_times().build()
    };
    let mut retry = retries();
    let watch = match watch_url(&infra.node_info().api_url) {
        Ok(url) => url,
        Err(error) => {
            warn!(%im, %error, "cannot check in with the InfrastructureManager: the node's API URL is not http(s)");
            return;
        }
    };
    loop {
        let body = NodeCheckIn { watch_url: watch.clone(), info: infra.node_info() };
        let answer = http.post(&url).header(CLUSTER_SECRET_HEADER, secret.expose()).json(&body).send().await;
        let reply = match answer {
            Ok(r) if r.status().is_success() => r.json::<NodeCheckInReply>().await.map_err(|e| e.to_string()),
            Ok(r) => {
                let status = r.status();
                Err(format!("{status}: {}", r.text().await.unwrap_or_default()))
            }
            Err(e) => Err(e.to_string()),
        };
        let wait = match reply {
            Ok(reply) => {
                if failures > 0 {
                    info!(%im, failures, "checked in with the InfrastructureManager again");
                } else {
                    debug!(%im, "checked in");
                }
                failures = 0;
                retry = retries();
                apply(&infra, &im, &reply, &stop);
                interval
            }
            Err(error) => {
                if failures == 0 {
                    warn!(%im, %error, "cannot check in with the InfrastructureManager; retrying (logged once until it works)");
                }
                failures += 1;
                retry.next().unwrap_or(interval)
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Applies an IM's answer: its drain flag, and a stop.
fn apply(infra: &Infra, im: &str, reply: &NodeCheckInReply, stop: &CancellationToken) {
    if !reply.accepted {
        return;
    }
    if reply.draining != infra.is_draining() {
        if let Err(e) = infra.set_draining(infra.node_id(), reply.draining) {
            warn!(%im, draining = reply.draining, error = %e, "cannot apply the InfrastructureManager's drain flag");
        }
    }
    if reply.stop && !stop.is_cancelled() {
        info!(%im, node = %infra.node_id(), "the InfrastructureManager stops this node (idle, draining, after hours); shutting down");
        infra.closing().cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_urls_follow_the_api_scheme() {
        assert_eq!(watch_url("http://127.0.0.1:7700").unwrap(), "ws://127.0.0.1:7700/v1/cluster/watch");
        assert_eq!(watch_url("https://n1.example:7700/").unwrap(), "wss://n1.example:7700/v1/cluster/watch");
    }
}
