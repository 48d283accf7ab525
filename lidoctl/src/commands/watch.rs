//! `lidoctl watch`: the cluster's change stream, one line per message, until
//! Ctrl-C. A dropped connection is re-established with a capped exponential
//! backoff, trying the `--url`s in turn; a fresh snapshot follows each connect.
//! `--orders` asks for the order flow (again after each reconnect);
//! `--metrics` shows the once-a-second metrics events, hidden otherwise.

use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use lido_shared::client::{ClientError, ClusterWatch};
use lido_shared::cluster::{ClusterEvent, WatchCommand, WatchMessage};

use crate::cli::WatchArgs;
use crate::endpoints::Endpoints;
use crate::output::{event_details, event_name, order_summary, service_summary, time, write_stdout, Output};

const FIRST_DELAY: Duration = Duration::from_millis(500);
const MAX_DELAY: Duration = Duration::from_secs(10);
/// The id of the `follow` command lidoctl sends for `--orders`; its reply is not printed.
const FOLLOW_ID: u64 = 1;

/// Which messages to show.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub metrics: bool,
}

impl Filter {
    /// Metrics events only with `--metrics`; the reply to lidoctl's own
    /// `follow` only when it failed.
    pub fn shows(self, msg: &WatchMessage) -> bool {
        match msg {
            WatchMessage::Event { event: ClusterEvent::Metrics { .. }, .. } => self.metrics,
            WatchMessage::Reply { id: FOLLOW_ID, ok, .. } => !ok,
            _ => true,
        }
    }
}

pub async fn run(endpoints: &Endpoints, out: Output, args: &WatchArgs) -> anyhow::Result<()> {
    let filter = Filter { metrics: args.metrics };
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let clients = endpoints.clients();
    // The first connection must succeed (on any URL): a script learns at once
    // that nothing is there. Later drops are retried until Ctrl-C.
    let (mut index, mut watch) = tokio::select! {
        _ = &mut ctrl_c => return Ok(()),
        first = connect_any(endpoints) => first.context("cannot watch the cluster")?,
    };
    if let Some(stream) = watch.as_mut() {
        follow(stream, args.orders).await.context("cannot follow the order flow")?;
    }
    let mut attempt: u32 = 0;
    loop {
        if let Some(mut stream) = watch.take() {
            if attempt > 0 {
                eprintln!("reconnected to {}", clients[index].base_url());
            }
            attempt = 0;
            let error = loop {
                tokio::select! {
                    _ = &mut ctrl_c => return Ok(()),
                    msg = stream.next() => match msg {
                        Ok(msg) if filter.shows(&msg) => write_stdout(&format_message(&msg, out))?,
                        Ok(_) => {}
                        Err(e) => break e,
                    },
                }
            };
            eprintln!("connection to {} lost: {error}", clients[index].base_url());
        }
        attempt += 1;
        let delay = backoff(attempt);
        index = (index + 1) % clients.len();
        let url = clients[index].base_url();
        eprintln!("reconnecting to {url} in {:.1}s (attempt {attempt})", delay.as_secs_f64());
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            _ = tokio::time::sleep(delay) => {}
        }
        let client = clients[index].clone();
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            result = connect_one(&client, args.orders) => match result {
                Ok(stream) => watch = Some(stream),
                Err(e) => eprintln!("cannot reach {url}: {e}"),
            },
        }
    }
}

/// Asks for the order flow when `orders` is set.
async fn follow(stream: &mut ClusterWatch, orders: bool) -> Result<(), ClientError> {
    if !orders {
        return Ok(());
    }
    stream.send(&WatchCommand::Follow { id: FOLLOW_ID, orders: true }).await
}

async fn connect_one(client: &lido_shared::client::LidoClient, orders: bool) -> Result<ClusterWatch, ClientError> {
    let mut stream = client.watch().await?;
    follow(&mut stream, orders).await?;
    Ok(stream)
}

/// Connects to the first URL that answers.
async fn connect_any(endpoints: &Endpoints) -> Result<(usize, Option<ClusterWatch>), ClientError> {
    let mut last = None;
    for (i, client) in endpoints.clients().iter().enumerate() {
        match client.watch().await {
            Ok(w) => return Ok((i, Some(w))),
            Err(e) if e.is_unreachable() || matches!(e, ClientError::WebSocket(_)) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("at least one url"))
}

/// The delay before reconnect attempt `attempt` (1-based): 0.5s doubling to 10s.
pub fn backoff(attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
    FIRST_DELAY.saturating_mul(factor).min(MAX_DELAY)
}

/// One line: `TIME  EVENT  details`, or the message as JSON.
pub fn format_message(msg: &WatchMessage, out: Output) -> String {
    if out.is_data() {
        return serde_json::to_string(msg).unwrap_or_default() + "\n";
    }
    let (ts, event, details) = match msg {
        WatchMessage::Snapshot { seq, snapshot } => {
            let services = snapshot.services().count();
            (snapshot.ts, "snapshot", format!("{} node(s), {services} service(s), seq {seq}", snapshot.nodes.len()))
        }
        WatchMessage::Event { ts, event, .. } => (*ts, event_name(event), event_details(event)),
        WatchMessage::Order { node, order } => (order.updated_at, "order", order_summary(node, order)),
        WatchMessage::Reply { id, ok, service, error } => {
            let mut details = format!("command {id}: {}", if *ok { "ok" } else { "failed" });
            if let Some(s) = service {
                details.push_str(&format!(" {}", service_summary(s)));
            }
            if let Some(e) = error {
                details.push_str(&format!(" {e}"));
            }
            (Utc::now(), "reply", details)
        }
        WatchMessage::Error { error } => (Utc::now(), "error", error.to_string()),
    };
    format!("{}  {event:<15}  {details}\n", time(ts))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use lido_shared::cluster::NodeLoad;

    use super::*;
    use crate::cli::OutputFormat;

    #[test]
    fn backoff_doubles_to_a_cap() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(2));
        assert_eq!(backoff(6), Duration::from_secs(10));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn event_lines() {
        let ts = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 1).unwrap();
        let msg = WatchMessage::Event {
            seq: 7,
            ts,
            event: ClusterEvent::NodeChanged { id: "n1".into(), draining: true, load: NodeLoad::default() },
        };
        let table = Output { format: OutputFormat::Table, color: false };
        assert_eq!(
            format_message(&msg, table),
            "2024-05-01T12:00:01.000Z  node_changed     n1 draining sessions=0 streams=0 open_orders=0\n"
        );
        let json = Output { format: OutputFormat::Json, color: false };
        let line = format_message(&msg, json);
        let back: WatchMessage = serde_json::from_str(&line).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn metrics_only_when_asked() {
        let ts = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 1).unwrap();
        let figures = [("messages_per_s".to_string(), 12.5), ("pipe_latency_ms".to_string(), 0.4)].into();
        let metrics = WatchMessage::Event {
            seq: 8,
            ts,
            event: ClusterEvent::Metrics { node: "n1".into(), services: [("paper-1".to_string(), figures)].into() },
        };
        assert!(!Filter::default().shows(&metrics));
        assert!(Filter { metrics: true }.shows(&metrics));
        let table = Output { format: OutputFormat::Table, color: false };
        assert_eq!(
            format_message(&metrics, table),
            "2024-05-01T12:00:01.000Z  metrics          n1: paper-1 messages_per_s=12.5 pipe_latency_ms=0.4\n"
        );
        let ok = WatchMessage::Reply { id: FOLLOW_ID, ok: true, service: None, error: None };
        assert!(!Filter::default().shows(&ok), "the follow reply is lidoctl's own business");
        let failed = WatchMessage::Reply { id: FOLLOW_ID, ok: false, service: None, error: None };
        assert!(Filter::default().shows(&failed));
    }
}
