//! How answers are printed: aligned tables (coloured on a terminal), or
//! JSON/YAML documents for scripts.

use std::io::{IsTerminal, Write};

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use lido_shared::autoscale::AutoscaleStatus;
use lido_shared::cluster::{ClusterEvent, NodeInfo, ServiceInfo, ServiceState, SessionInfo};
use lido_shared::model::{Order, OrderType, Side};
use serde::Serialize;

use crate::cli::{GlobalArgs, OutputFormat};

/// The chosen output format and whether to colour.
#[derive(Clone, Copy, Debug)]
pub struct Output {
    pub format: OutputFormat,
    pub color: bool,
}

impl Output {
    /// Colour only on a terminal, without `--no-color` and without `NO_COLOR`.
    pub fn from_args(global: &GlobalArgs) -> Self {
        let no_color_env = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let color = !global.no_color && !no_color_env && std::io::stdout().is_terminal();
        Self { format: global.output, color }
    }

    pub fn is_data(self) -> bool {
        matches!(self.format, OutputFormat::Json | OutputFormat::Yaml)
    }

    pub fn wide(self) -> bool {
        self.format == OutputFormat::Wide
    }

    /// Prints `value` as JSON or YAML; false (and nothing printed) for table formats.
    pub fn data<T: Serialize>(self, value: &T) -> anyhow::Result<bool> {
        let text = match self.format {
            OutputFormat::Json => serde_json::to_string_pretty(value)? + "\n",
            OutputFormat::Yaml => serde_saphyr::to_string(value)?,
            OutputFormat::Table | OutputFormat::Wide => return Ok(false),
        };
        write_stdout(&text)?;
        Ok(true)
    }

    /// Prints a table.
    pub fn table(self, table: &Table) -> anyhow::Result<()> {
        write_stdout(&table.render(self.color))
    }
}

/// Writes to stdout, treating a closed pipe (`| head`) as success.
pub fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// A terminal colour for a cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paint {
    Green,
    Yellow,
    Red,
    Dim,
}

impl Paint {
    fn code(self) -> &'static str {
        match self {
            Self::Green => "32",
            Self::Yellow => "33",
            Self::Red => "31",
            Self::Dim => "2",
        }
    }

    pub fn of_state(state: ServiceState) -> Self {
        match state {
            ServiceState::Running => Self::Green,
            ServiceState::Starting | ServiceState::Degraded | ServiceState::Draining => Self::Yellow,
            ServiceState::Failed => Self::Red,
            ServiceState::Stopped => Self::Dim,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    pub text: String,
    pub paint: Option<Paint>,
}

impl Cell {
    pub fn painted(text: impl Into<String>, paint: Paint) -> Self {
        Self { text: text.into(), paint: Some(paint) }
    }
}

/// Plain text; empty shows as `-`.
impl From<String> for Cell {
    fn from(text: String) -> Self {
        Self { text: if text.is_empty() { "-".into() } else { text }, paint: None }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        Self::from(text.to_string())
    }
}

/// Columns aligned to their widest cell, separated by three spaces, with no
/// trailing blanks; colour never counts towards width.
#[derive(Clone, Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new<I, S>(headers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self { headers: headers.into_iter().map(Into::into).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self, color: bool) -> String {
        let columns = self.headers.len().max(self.rows.iter().map(Vec::len).max().unwrap_or(0));
        let mut widths = vec![0; columns];
        for (i, h) in self.headers.iter().enumerate() {
            widths[i] = widths[i].max(h.chars().count());
        }
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.text.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<Cell> = self.headers.iter().map(|h| Cell { text: h.clone(), paint: None }).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                let last = i + 1 == row.len();
                let pad = widths[i] - cell.text.chars().count();
                match cell.paint.filter(|_| color) {
                    Some(paint) => line.push_str(&format!("\x1b[{}m{}\x1b[0m", paint.code(), cell.text)),
                    None => line.push_str(&cell.text),
                }
                if !last {
                    line.push_str(&" ".repeat(pad + 3));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `5s`, `3m`, `2h`, `4d` since `since`; `-` when unknown.
pub fn age(since: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    let Some(since) = since else {
        return "-".into();
    };
    let secs = (now - since).num_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

pub fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// NAME KIND TYPE STATE NODE MODE PID RESTARTS AGE (+ WS_URL DETAIL when wide).
pub fn services_table<'a>(
    services: impl IntoIterator<Item = &'a ServiceInfo>,
    wide: bool,
    now: DateTime<Utc>,
) -> Table {
    let mut headers = vec!["NAME", "KIND", "TYPE", "STATE", "NODE", "MODE", "PID", "RESTARTS", "AGE"];
    if wide {
        headers.extend(["WS_URL", "DETAIL"]);
    }
    let mut table = Table::new(headers);
    for s in services {
        let mut row: Vec<Cell> = vec![
            s.name.as_str().into(),
            s.kind.as_str().into(),
            s.service_type.as_str().into(),
            Cell::painted(s.state.as_str(), Paint::of_state(s.state)),
            s.node.as_str().into(),
            mode(s).into(),
            s.pid.map(|p| p.to_string()).unwrap_or_default().into(),
            s.restarts.to_string().into(),
            age(s.started_at, now).into(),
        ];
        if wide {
            row.push(s.ws_url.clone().unwrap_or_default().into());
            row.push(s.detail.clone().unwrap_or_default().into());
        }
        table.row(row);
    }
    table
}

/// The services an operator must act on (`degraded` or `failed`, with
/// their detail, e.g. a Schwab login to renew), one summary line each: what
/// `lidoctl status` shows below its table without `-o wide`.
pub fn attention<'a>(services: impl IntoIterator<Item = &'a ServiceInfo>) -> String {
    services
        .into_iter()
        .filter(|s| matches!(s.state, ServiceState::Degraded | ServiceState::Failed))
        .filter(|s| s.detail.as_deref().is_some_and(|d| !d.is_empty()))
        .map(|s| format!("{}\n", service_summary(s)))
        .collect()
}

/// ID LOCATION DRAINING SESSIONS STREAMS OPEN_ORDERS SERVICES (+ API_URL MANAGERS when wide).
pub fn nodes_table<'a>(nodes: impl IntoIterator<Item = &'a NodeInfo>, wide: bool) -> Table {
    let mut headers = vec!["ID", "LOCATION", "DRAINING", "SESSIONS", "STREAMS", "OPEN_ORDERS", "SERVICES"];
    if wide {
        headers.extend(["API_URL", "MANAGERS"]);
    }
    let mut table = Table::new(headers);
    for n in nodes {
        let draining = if n.draining { Cell::painted("yes", Paint::Yellow) } else { "no".into() };
        let mut row: Vec<Cell> = vec![
            n.id.as_str().into(),
            n.location.as_str().into(),
            draining,
            n.load.sessions.to_string().into(),
            n.load.streams.to_string().into(),
            n.load.open_orders.to_string().into(),
            n.services.len().to_string().into(),
        ];
        if wide {
            row.push(n.api_url.as_str().into());
            let managers: Vec<String> = n.managers.iter().map(|m| format!("{}:{}", m.kind, m.state)).collect();
            row.push(managers.join(",").into());
        }
        table.row(row);
    }
    table
}

/// One line about a service, for spawn/stop/restart answers:
/// `spawned p2 (broker paper) on node n1, state starting`.
pub fn service_line(verb: &str, s: &ServiceInfo) -> String {
    let kind = if s.service_type.is_empty() { s.kind.to_string() } else { format!("{} {}", s.kind, s.service_type) };
    let mut line = format!("{verb} {} ({kind}) on node {}, state {}", s.name, s.node, s.state);
    if let Some(detail) = s.detail.as_deref().filter(|d| !d.is_empty()) {
        line.push_str(&format!(": {detail}"));
    }
    line
}

/// ID CUSTOMER NODE AGE (+ CREATED when wide).
pub fn sessions_table<'a>(
    sessions: impl IntoIterator<Item = &'a SessionInfo>,
    wide: bool,
    now: DateTime<Utc>,
) -> Table {
    let mut headers = vec!["ID", "CUSTOMER", "NODE", "AGE"];
    if wide {
        headers.push("CREATED");
    }
    let mut table = Table::new(headers);
    for s in sessions {
        let mut row: Vec<Cell> = vec![
            s.id.as_str().into(),
            s.customer.as_str().into(),
            s.node.as_str().into(),
            age(Some(s.created_at), now).into(),
        ];
        if wide {
            row.push(time(s.created_at).into());
        }
        table.row(row);
    }
    table
}

/// `get autoscale`: the rules, then tables of instances, brokers' venue
/// connections and recent decisions (newest last).
pub fn autoscale_fields(s: &AutoscaleStatus, now: DateTime<Utc>) -> Fields {
    let r = &s.rules;
    let mut f = Fields::default();
    f.section(
        "Rules",
        [
            ("instances", format!("{} to {}", r.min_instances, r.max_instances)),
            ("max_clients_per_instance", r.max_clients_per_instance.to_string()),
            ("max_fanout_latency_ms", figure(r.max_fanout_latency_ms)),
            ("idle_release_s", r.idle_release_s.to_string()),
            ("latency_window_s", r.latency_window_s.to_string()),
        ],
    );
    let mut instances = Table::new(["ID", "STREAMS", "RESERVED", "FANOUT_P99_MS", "FRAMES", "AGE", "IDLE"]);
    for i in &s.instances {
        instances.row(vec![
            i.id.to_string().into(),
            i.streams.to_string().into(),
            i.reserved.to_string().into(),
            i.fanout_p99_ms.map_or_else(|| "-".to_string(), figure).into(),
            i.frames.to_string().into(),
            age(Some(i.created_at), now).into(),
            i.idle_since.map_or_else(|| "-".to_string(), |t| age(Some(t), now)).into(),
        ]);
    }
    f.table("Instances", &instances, "<none>");
    let mut brokers =
        Table::new(["BROKER", "CONNECTIONS", "SUBSCRIPTIONS", "LIMIT", "HEADROOM", "REST_USED", "TRADING_USED"]);
    for b in &s.brokers {
        let per: Vec<String> = b.subscriptions_per_connection.iter().map(ToString::to_string).collect();
        brokers.row(vec![
            b.broker.as_str().into(),
            b.venue_connections.to_string().into(),
            per.join(",").into(),
            b.max_subscriptions_per_connection.to_string().into(),
            b.subscription_headroom.to_string().into(),
            format!("{:.0}%", b.rest_budget_used * 100.0).into(),
            format!("{:.0}%", b.trading_budget_used * 100.0).into(),
        ]);
    }
    f.table("Venue connections", &brokers, "<no broker reports venue connections>");
    let mut decisions = Table::new(["TIME", "AGE", "SCOPE", "ACTION", "REASON"]);
    for d in &s.decisions {
        decisions.row(vec![
            time(d.at).into(),
            age(Some(d.at), now).into(),
            d.scope.as_str().into(),
            d.action.as_str().into(),
            d.reason.as_str().into(),
        ]);
    }
    f.table("Decisions", &decisions, "<none yet>");
    f
}

/// `get nodescale`: the leader and rules, the nodes with their load, then
/// recent decisions (newest last).
pub fn nodescale_fields(s: &lido_shared::cluster::NodeScaleStatus, now: DateTime<Utc>) -> Fields {
    let mut f = Fields::default();
    f.section(
        "Node autoscaler",
        [
            ("leader", s.leader_id.clone().unwrap_or_else(|| "<none>".into())),
            ("enabled", s.enabled.to_string()),
            ("provisioner", s.provisioner.clone()),
            ("nodes", format!("{} to {}", s.min_nodes, s.max_nodes)),
            (
                "load_per_node",
                format!(
                    "{:.1} (add above {}, drain below {})",
                    s.load_per_node, s.high_load_per_node, s.low_load_per_node
                ),
            ),
            ("pending", if s.pending.is_empty() { "-".into() } else { s.pending.join(", ") }),
            ("error", s.error.clone().unwrap_or_else(|| "-".into())),
        ],
    );
    let mut nodes = Table::new(["NODE", "LOCATION", "LOAD", "DRAINING", "PROVISIONED"]);
    for n in &s.nodes {
        nodes.row(vec![
            n.id.as_str().into(),
            n.location.as_str().into(),
            n.load.to_string().into(),
            yes_no(n.draining).into(),
            yes_no(n.provisioned).into(),
        ]);
    }
    f.table("Nodes", &nodes, "<none>");
    let mut decisions = Table::new(["TIME", "AGE", "ACTION", "NODE", "REASON"]);
    for d in &s.recent {
        decisions.row(vec![
            time(d.at).into(),
            age(Some(d.at), now).into(),
            d.action.as_str().into(),
            d.node.as_deref().unwrap_or("-").into(),
            d.reason.as_str().into(),
        ]);
    }
    f.table("Decisions", &decisions, "<none yet>");
    f
}

/// `2024-05-01T12:00:01.000Z`: UTC with milliseconds, as in `watch` and `describe`.
pub fn time(ts: DateTime<Utc>) -> String {
    ts.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// The `event` tag of a cluster event, as in its JSON.
pub fn event_name(event: &ClusterEvent) -> &'static str {
    match event {
        ClusterEvent::ServiceChanged { .. } => "service_changed",
        ClusterEvent::ServiceRemoved { .. } => "service_removed",
        ClusterEvent::NodeChanged { .. } => "node_changed",
        ClusterEvent::Metrics { .. } => "metrics",
        ClusterEvent::Failover { .. } => "failover",
        ClusterEvent::Log { .. } => "log",
        ClusterEvent::NodeScaled { .. } => "node_scaled",
        ClusterEvent::NodeAdded { .. } => "node_added",
        ClusterEvent::NodeRemoved { .. } => "node_removed",
    }
}

/// A cluster event in a few words.
pub fn event_details(event: &ClusterEvent) -> String {
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
        ClusterEvent::Metrics { node, services } => {
            let services: Vec<String> =
                services.iter().map(|(name, figures)| format!("{name} {}", figures_line(figures))).collect();
            format!("{node}: {}", services.join("; "))
        }
        ClusterEvent::Failover { market, symbols, from, to, reason, planned, duration_ms, .. } => format!(
            "{market} {}: {from} → {to} in {duration_ms} ms, {} ({reason})",
            symbols.join(","),
            if *planned { "planned, no gap" } else { "failure, gap marked" }
        ),
        ClusterEvent::Log { level, message } => format!("[{level}] {message}"),
        ClusterEvent::NodeScaled { action, node, reason, leader } => match node {
            Some(node) => format!("{action} {node}: {reason} (by {leader})"),
            None => format!("{action}: {reason} (by {leader})"),
        },
        ClusterEvent::NodeAdded { node } => format!("node {} at {} ({})", node.id, node.location, node.api_url),
        ClusterEvent::NodeRemoved { id, reason } => format!("node {id}: {reason}"),
    }
}

/// `messages_per_s=12.5 pipe_latency_ms=0.42`.
pub fn figures_line(figures: &BTreeMap<String, f64>) -> String {
    figures.iter().map(|(k, v)| format!("{k}={}", figure(*v))).collect::<Vec<_>>().join(" ")
}

/// A metric value: whole numbers without decimals, others with up to three.
pub fn figure(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `p2 (broker paper) on n1: running, 1 restart(s) — detail`.
pub fn service_summary(s: &ServiceInfo) -> String {
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

/// `acme buy 1 AAPL limit @ 1 on paper via paper-1: accepted (flow-1, filled 0)`.
pub fn order_summary(node: &str, o: &Order) -> String {
    let side = match o.side {
        Side::Buy => "buy",
        Side::Sell => "sell",
    };
    let order_type = match o.order_type {
        OrderType::Market => "market",
        OrderType::Limit => "limit",
    };
    let mut line = format!("{node} {} {side} {} {} {order_type}", o.customer, o.quantity, o.symbol);
    if let Some(price) = o.limit_price {
        line.push_str(&format!(" @ {price}"));
    }
    line.push_str(&format!(" on {}", o.market));
    if let Some(broker) = &o.broker {
        line.push_str(&format!(" via {broker}"));
    }
    line.push_str(&format!(": {} ({}, filled {}", o.status, o.client_order_id, o.filled_quantity));
    if let Some(avg) = o.average_price {
        line.push_str(&format!(" at {avg}"));
    }
    line.push(')');
    if let Some(reason) = o.reason.as_deref().filter(|r| !r.is_empty()) {
        line.push_str(&format!(" — {reason}"));
    }
    line
}

/// kubectl-describe style text: `Label:  value` lines aligned per block,
/// indented sub-blocks, and embedded tables.
#[derive(Clone, Debug, Default)]
pub struct Fields {
    blocks: Vec<Block>,
}

#[derive(Clone, Debug)]
enum Block {
    Pairs { indent: usize, pairs: Vec<(String, String)> },
    Heading(String),
    Table { indent: usize, text: String },
    Note { indent: usize, text: String },
}

impl Fields {
    /// A `Label:  value` line at the top level; empty values show as `-`.
    pub fn field(&mut self, label: &str, value: impl Into<String>) -> &mut Self {
        self.pair(0, label, value.into())
    }

    /// A `Heading:` line, then `key:  value` lines indented under it (or `<none>`).
    pub fn section<K: Into<String>, V: Into<String>>(
        &mut self,
        heading: &str,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> &mut Self {
        self.blocks.push(Block::Heading(heading.to_string()));
        let before = self.blocks.len();
        for (k, v) in pairs {
            self.pair(2, &k.into(), v.into());
        }
        if self.blocks.len() == before {
            self.blocks.push(Block::Note { indent: 2, text: "<none>".into() });
        }
        self
    }

    /// A `Heading:` line, then a table indented under it (or `note` when empty).
    pub fn table(&mut self, heading: &str, table: &Table, note: &str) -> &mut Self {
        self.blocks.push(Block::Heading(heading.to_string()));
        match table.is_empty() {
            true => self.blocks.push(Block::Note { indent: 2, text: note.to_string() }),
            false => self.blocks.push(Block::Table { indent: 2, text: table.render(false) }),
        }
        self
    }

    fn pair(&mut self, indent: usize, label: &str, value: String) -> &mut Self {
        let value = if value.is_empty() { "-".to_string() } else { value };
        match self.blocks.last_mut() {
            Some(Block::Pairs { indent: i, pairs }) if *i == indent => pairs.push((label.to_string(), value)),
            _ => self.blocks.push(Block::Pairs { indent, pairs: vec![(label.to_string(), value)] }),
        }
        self
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for block in &self.blocks {
            match block {
                Block::Pairs { indent, pairs } => {
                    let width = pairs.iter().map(|(l, _)| l.chars().count() + 1).max().unwrap_or(0);
                    for (label, value) in pairs {
                        let label = format!("{label}:");
                        out.push_str(&format!("{:indent$}{label:<width$}  {value}\n", ""));
                    }
                }
                Block::Heading(h) => out.push_str(&format!("{h}:\n")),
                Block::Table { indent, text } | Block::Note { indent, text } => {
                    for line in text.lines() {
                        out.push_str(&format!("{:indent$}{line}\n", ""));
                    }
                }
            }
        }
        out
    }
}

fn mode(s: &ServiceInfo) -> &'static str {
    match s.mode {
        lido_shared::cluster::RunMode::Process => "process",
        lido_shared::cluster::RunMode::Task => "task",
        lido_shared::cluster::RunMode::External => "external",
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn table_aligns_without_trailing_blanks() {
        let mut t = Table::new(["NAME", "STATE", "PID"]);
        t.row(vec!["k1".into(), Cell::painted("running", Paint::Green), "12".into()]);
        t.row(vec!["paper-main".into(), Cell::painted("failed", Paint::Red), "".into()]);
        let plain = t.render(false);
        assert_eq!(
            plain,
            "NAME         STATE     PID\n\
             k1           running   12\n\
             paper-main   failed    -\n"
        );
    }

    #[test]
    fn colour_does_not_shift_columns() {
        let mut t = Table::new(["STATE", "NODE"]);
        t.row(vec![Cell::painted("running", Paint::Green), "n1".into()]);
        t.row(vec![Cell::painted("failed", Paint::Red), "n2".into()]);
        let coloured = t.render(true);
        let lines: Vec<&str> = coloured.lines().collect();
        assert_eq!(lines[1], "\x1b[32mrunning\x1b[0m   n1");
        assert_eq!(lines[2], "\x1b[31mfailed\x1b[0m    n2");
        assert!(!t.render(false).contains('\x1b'));
    }

    #[test]
    fn degraded_services_are_named_with_what_to_do() {
        let service = |name: &str, state: &str, detail: Option<&str>| -> ServiceInfo {
            serde_json::from_value(serde_json::json!({
                "name": name, "kind": "broker", "type": "schwab", "state": state, "node": "n1",
                "mode": "process", "pid": null, "ws_url": null, "restarts": 0, "started_at": null,
                "detail": detail, "options": {}
            }))
            .unwrap()
        };
        let login = "log in again: `lidoctl broker auth schwab --name s1` (refresh token refused)";
        let services = [
            service("s1", "degraded", Some(login)),
            service("s2", "running", Some("quotes polled from REST")),
            service("s3", "failed", None),
        ];
        assert_eq!(attention(&services), format!("s1 (broker schwab) on n1: degraded — {login}\n"));
    }

    #[test]
    fn ages() {
        let now = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
        assert_eq!(age(None, now), "-");
        assert_eq!(age(Some(now - chrono::Duration::seconds(5)), now), "5s");
        assert_eq!(age(Some(now - chrono::Duration::minutes(3)), now), "3m");
        assert_eq!(age(Some(now - chrono::Duration::hours(5)), now), "5h");
        assert_eq!(age(Some(now - chrono::Duration::days(4)), now), "4d");
        assert_eq!(age(Some(now + chrono::Duration::seconds(5)), now), "0s");
    }

    #[test]
    fn fields_align_per_block() {
        let mut f = Fields::default();
        f.field("Name", "paper-1").field("Restarts", "0").field("Detail", "");
        f.section("Options", [("seed", "7"), ("tick_ms", "100")]);
        f.section("Metrics", Vec::<(String, String)>::new());
        let mut t = Table::new(["SEQ", "EVENT"]);
        t.row(vec!["1".into(), "log".into()]);
        f.table("Events", &t, "<none>");
        assert_eq!(
            f.render(),
            "Name:      paper-1\n\
             Restarts:  0\n\
             Detail:    -\n\
             Options:\n  \
             seed:     7\n  \
             tick_ms:  100\n\
             Metrics:\n  \
             <none>\n\
             Events:\n  \
             SEQ   EVENT\n  \
             1     log\n"
        );
    }

    #[test]
    fn figures() {
        assert_eq!(figure(12.0), "12");
        assert_eq!(figure(0.4219), "0.422");
        assert_eq!(figure(2.5), "2.5");
        let m: BTreeMap<String, f64> = [("a".to_string(), 1.0), ("b".to_string(), 0.25)].into();
        assert_eq!(figures_line(&m), "a=1 b=0.25");
    }

    #[test]
    fn state_colours() {
        assert_eq!(Paint::of_state(ServiceState::Running), Paint::Green);
        assert_eq!(Paint::of_state(ServiceState::Degraded), Paint::Yellow);
        assert_eq!(Paint::of_state(ServiceState::Failed), Paint::Red);
        assert_eq!(Paint::of_state(ServiceState::Stopped), Paint::Dim);
    }
}
