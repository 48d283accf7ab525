//! How answers are printed: aligned tables (coloured on a terminal), or
//! JSON/YAML documents for scripts.

use std::io::{IsTerminal, Write};

use chrono::{DateTime, Utc};
use lido_shared::cluster::{NodeInfo, ServiceInfo, ServiceState};
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
            OutputFormat::Yaml => serde_yaml::to_string(value)?,
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
    fn state_colours() {
        assert_eq!(Paint::of_state(ServiceState::Running), Paint::Green);
        assert_eq!(Paint::of_state(ServiceState::Degraded), Paint::Yellow);
        assert_eq!(Paint::of_state(ServiceState::Failed), Paint::Red);
        assert_eq!(Paint::of_state(ServiceState::Stopped), Paint::Dim);
    }
}
