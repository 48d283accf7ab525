//! `lidoctl describe <kind> <name>`: one service (with its recent events,
//! from `GET /v1/services/{name}`) or one node (from the cluster snapshot,
//! with the events of its services).

use chrono::{DateTime, Utc};
use lido_shared::cluster::{EventRecord, NodeInfo, RunMode, ServiceDetail, ServiceKind};

use crate::cli::{DescribeArgs, DescribeKind};
use crate::endpoints::Endpoints;
use crate::exit::NotFound;
use crate::output::{
    age, event_details, event_name, figure, services_table, time, write_stdout, Fields, Output, Table,
};

/// How many events `describe node` shows.
const NODE_EVENTS: usize = 20;

pub async fn run(endpoints: &Endpoints, out: Output, args: &DescribeArgs) -> anyhow::Result<()> {
    let name = args.name.as_str();
    let now = Utc::now();
    let kind = match args.kind {
        DescribeKind::Node => return node(endpoints, out, name, now).await,
        DescribeKind::Service => None,
        DescribeKind::Broker => Some(ServiceKind::Broker),
        DescribeKind::Market => Some(ServiceKind::Market),
        DescribeKind::Trader => Some(ServiceKind::Trader),
    };
    let what = format!("cannot describe {} {name}", kind.map_or("service", ServiceKind::as_str));
    let detail = endpoints.run(what, |c| async move { c.describe(name).await }).await?;
    if let Some(kind) = kind.filter(|k| *k != detail.service.kind) {
        return Err(NotFound(format!(
            "no {kind} named {name}: it is a {}; try `lidoctl describe {} {name}`",
            detail.service.kind, detail.service.kind
        ))
        .into());
    }
    if out.data(&detail)? {
        return Ok(());
    }
    write_stdout(&service_text(&detail, now))
}

async fn node(endpoints: &Endpoints, out: Output, id: &str, now: DateTime<Utc>) -> anyhow::Result<()> {
    let snapshot = endpoints.run("cannot get the cluster", |c| async move { c.cluster().await }).await?;
    let Some(node) = snapshot.nodes.into_iter().find(|n| n.id == id) else {
        return Err(NotFound(format!("no node named {id}; list them with `lidoctl get nodes`")).into());
    };
    if out.data(&node)? {
        return Ok(());
    }
    let mut events = Vec::new();
    for s in &node.services {
        let name = s.name.as_str();
        // A service that went away in between has no events to add.
        if let Ok(detail) = endpoints.call(|c| async move { c.describe(name).await }).await {
            events.extend(detail.events);
        }
    }
    events.sort_by_key(|e| e.seq);
    events.dedup_by_key(|e| e.seq);
    let skip = events.len().saturating_sub(NODE_EVENTS);
    write_stdout(&node_text(&node, &events[skip..], now))
}

/// The text of `describe service`.
pub fn service_text(detail: &ServiceDetail, now: DateTime<Utc>) -> String {
    let s = &detail.service;
    let mut f = Fields::default();
    f.field("Name", s.name.as_str())
        .field("Kind", s.kind.as_str())
        .field("Type", s.service_type.as_str())
        .field("Node", s.node.as_str())
        .field("State", s.state.as_str())
        .field("Detail", s.detail.clone().unwrap_or_default())
        .field("Mode", mode(s.mode))
        .field("PID", s.pid.map(|p| p.to_string()).unwrap_or_default())
        .field("Restarts", s.restarts.to_string())
        .field("Started", s.started_at.map(|t| format!("{} ({} ago)", time(t), age(Some(t), now))).unwrap_or_default())
        .field("Pipe", s.ws_url.clone().unwrap_or_default());
    f.section("Options", s.options.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    f.section("Metrics", s.metrics.iter().map(|(k, v)| (k.clone(), figure(*v))));
    f.table("Events", &events_table(&detail.events, now), "<none>");
    f.render()
}

/// The text of `describe node`.
pub fn node_text(node: &NodeInfo, events: &[EventRecord], now: DateTime<Utc>) -> String {
    let mut f = Fields::default();
    f.field("ID", node.id.as_str())
        .field("Location", node.location.as_str())
        .field("Draining", if node.draining { "yes: no new sessions or spawns" } else { "no" })
        .field("API URL", node.api_url.as_str());
    f.section(
        "Load",
        [
            ("Sessions", node.load.sessions.to_string()),
            ("Streams", node.load.streams.to_string()),
            ("Open orders", node.load.open_orders.to_string()),
        ],
    );
    let mut managers = Table::new(["KIND", "STATE", "SERVICES"]);
    for m in &node.managers {
        managers.row(vec![m.kind.as_str().into(), m.state.as_str().into(), m.services.to_string().into()]);
    }
    f.table("Managers", &managers, "<none>");
    f.table("Services", &services_table(&node.services, false, now), "<none>");
    f.table("Events", &events_table(events, now), "<none>");
    f.render()
}

/// SEQ TIME AGE EVENT DETAILS, oldest first (newest last).
fn events_table(events: &[EventRecord], now: DateTime<Utc>) -> Table {
    let mut table = Table::new(["SEQ", "TIME", "AGE", "EVENT", "DETAILS"]);
    for e in events {
        table.row(vec![
            e.seq.to_string().into(),
            time(e.ts).into(),
            age(Some(e.ts), now).into(),
            event_name(&e.event).into(),
            event_details(&e.event).into(),
        ]);
    }
    table
}

fn mode(mode: RunMode) -> &'static str {
    match mode {
        RunMode::Process => "process",
        RunMode::Task => "task (inside lidod)",
        RunMode::External => "external (adopted on check-in)",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::TimeZone;
    use lido_shared::cluster::{ClusterEvent, ServiceInfo, ServiceState};

    use super::*;

    #[test]
    fn a_service_reads_like_kubectl_describe() {
        let now = Utc.with_ymd_and_hms(2024, 5, 1, 12, 5, 0).unwrap();
        let started = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
        let service = ServiceInfo {
            name: "paper-1".into(),
            kind: ServiceKind::Broker,
            service_type: "paper".into(),
            state: ServiceState::Running,
            node: "n1".into(),
            mode: RunMode::Process,
            pid: Some(42),
            ws_url: Some("ws://127.0.0.1:5000/pipe".into()),
            restarts: 0,
            started_at: Some(started),
            detail: None,
            options: [("seed".to_string(), "7".to_string())].into(),
            metrics: [("messages_per_s".to_string(), 12.5)].into(),
        };
        let events = vec![
            EventRecord {
                seq: 3,
                ts: started,
                event: ClusterEvent::ServiceChanged {
                    service: ServiceInfo { metrics: BTreeMap::new(), ..service.clone() },
                },
            },
            EventRecord {
                seq: 9,
                ts: started + chrono::Duration::seconds(60),
                event: ClusterEvent::Log { level: "info".into(), message: "paper-1 is up".into() },
            },
        ];
        let text = service_text(&ServiceDetail { service, events }, now);
        assert_eq!(
            text,
            "\
Name:      paper-1
Kind:      broker
Type:      paper
Node:      n1
State:     running
Detail:    -
Mode:      process
PID:       42
Restarts:  0
Started:   2024-05-01T12:00:00.000Z (5m ago)
Pipe:      ws://127.0.0.1:5000/pipe
Options:
  seed:  7
Metrics:
  messages_per_s:  12.5
Events:
  SEQ   TIME                       AGE   EVENT             DETAILS
  3     2024-05-01T12:00:00.000Z   5m    service_changed   paper-1 (broker paper) on n1: running
  9     2024-05-01T12:01:00.000Z   4m    log               [info] paper-1 is up
"
        );
    }
}
