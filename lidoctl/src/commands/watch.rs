//! `lidoctl watch`: the cluster's change stream, one line per message, until
//! Ctrl-C. A dropped connection is re-established with a capped exponential
//! backoff, trying the `--url`s in turn; a fresh snapshot follows each connect.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use lido_shared::client::{ClientError, ClusterWatch};
use lido_shared::cluster::{ClusterEvent, ServiceInfo, WatchMessage};

use crate::endpoints::Endpoints;
use crate::output::{write_stdout, Output};

const FIRST_DELAY: Duration = Duration::from_millis(500);
const MAX_DELAY: Duration = Duration::from_secs(10);

pub async fn run(endpoints: &Endpoints, out: Output) -> anyhow::Result<()> {
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let clients = endpoints.clients();
    // The first connection must succeed (on any URL): a script learns at once
    // that nothing is there. Later drops are retried until Ctrl-C.
    let (mut index, mut watch) = tokio::select! {
        _ = &mut ctrl_c => return Ok(()),
        first = connect_any(endpoints) => first.context("cannot watch the cluster")?,
    };
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
                        Ok(msg) => write_stdout(&format_message(&msg, out))?,
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
            result = client.watch() => match result {
                Ok(stream) => watch = Some(stream),
                Err(e) => eprintln!("cannot reach {url}: {e}"),
            },
        }
    }
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

fn time(ts: DateTime<Utc>) -> String {
    ts.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn event_name(event: &ClusterEvent) -> &'static str {
    match event {
        ClusterEvent::ServiceChanged { .. } => "service_changed",
        ClusterEvent::ServiceRemoved { .. } => "service_removed",
        ClusterEvent::NodeChanged { .. } => "node_changed",
        ClusterEvent::Log { .. } => "log",
    }
}

fn event_details(event: &ClusterEvent) -> String {
    match event {
        ClusterEvent::ServiceChanged { service } => service_summary(service),
        ClusterEvent::ServiceRemoved { name, node } => format!("{name} on {node}"),
        ClusterEvent::NodeChanged { id, draining, load } => format!(
            "{id}{} sessions={} streams={} open_orders={}",
            if *draining { " draining" } else { "" },
            load.sessions,
            load.streams,
            load.open_orders
        ),
        ClusterEvent::Log { level, message } => format!("[{level}] {message}"),
    }
}

fn service_summary(s: &ServiceInfo) -> String {
    let kind = if s.service_type.is_empty() { s.kind.to_string() } else { format!("{} {}", s.kind, s.service_type) };
    let mut line = format!("{} ({kind}) on {}: {}", s.name, s.node, s.state);
    if s.restarts > 0 {
        line.push_str(&format!(", {} restart(s)", s.restarts));
    }
    if let Some(detail) = s.detail.as_deref().filter(|d| !d.is_empty()) {
        line.push_str(&format!(" — {detail}"));
    }
    line
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
}
