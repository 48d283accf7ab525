//! The cluster screen: the node → manager → service tree with a rate column, a detail
//! pane with sparklines for the selected row, and the event log.

use std::collections::VecDeque;

use lido_shared::cluster::{NodeInfo, RunMode, ServiceInfo, ServiceState};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row as TableRow, Sparkline, Table, TableState, Wrap};
use ratatui::Frame;

use super::{level_style, short_number, spark_text, GREY};
use crate::app::{App, Manager, Row};
use crate::rates::{self, MESSAGES_PER_S, PIPE_LATENCY_MS};

/// Columns of the detail pane, when the terminal is wide enough for it.
const DETAIL_WIDTH: u16 = 44;

pub(super) fn draw(frame: &mut Frame, app: &App, area: Rect) {
    let [body, events] = Layout::vertical([Constraint::Min(5), Constraint::Percentage(30)]).areas(area);
    if body.width >= 100 {
        let [tree, detail] = Layout::horizontal([Constraint::Fill(1), Constraint::Length(DETAIL_WIDTH)]).areas(body);
        draw_tree(frame, app, tree);
        draw_detail(frame, app, detail);
    } else {
        draw_tree(frame, app, body);
    }
    draw_events(frame, app, events);
}

fn state_style(state: ServiceState) -> Style {
    match state {
        ServiceState::Running => Style::new().fg(Color::Green),
        ServiceState::Starting | ServiceState::Degraded | ServiceState::Draining => Style::new().fg(Color::Yellow),
        ServiceState::Failed => Style::new().fg(Color::Red).bold(),
        ServiceState::Stopped => Style::new().fg(GREY),
    }
}

/// The RATE cell: the latest messages/s and a small trend.
fn rate_cell(app: &App, s: &ServiceInfo) -> String {
    let series = app.rates.get(&s.name).filter(|r| !r.messages_per_s.is_empty());
    match (series, s.metrics.get(MESSAGES_PER_S)) {
        (Some(r), _) => {
            let last = r.messages_per_s.back().copied().unwrap_or_default();
            format!("{:>5} {}", short_number(last), spark_text(r.messages_per_s.iter(), 7))
        }
        (None, Some(v)) => format!("{:>5}", short_number(*v)),
        (None, None) => "-".into(),
    }
}

fn draw_tree(frame: &mut Frame, app: &App, area: Rect) {
    let live = app.connected();
    let mut title =
        if live { " Nodes and services ".to_string() } else { " Nodes and services (last known) ".to_string() };
    if !app.filter.is_empty() {
        title.push_str(&format!("[filter: {}] ", app.filter));
    }
    let block = Block::bordered().title(title).border_style(if live { Style::new() } else { Style::new().fg(GREY) });
    if app.cluster.is_none() {
        let text = format!("waiting for the cluster snapshot from {} …", app.url);
        frame.render_widget(Paragraph::new(text).fg(GREY).block(block), area);
        return;
    }
    // Greyed while reconnecting: the picture may be stale.
    let paint = |style: Style| if live { style } else { Style::new().fg(GREY) };
    let rows = app.rows();
    if rows.is_empty() {
        let text = format!("nothing matches the filter {:?} (Esc clears it)", app.filter);
        frame.render_widget(Paragraph::new(text).fg(GREY).block(block), area);
        return;
    }
    let table_rows: Vec<TableRow> = rows
        .iter()
        .map(|row| match row {
            Row::Node(n) => {
                let (state, style) = if n.draining {
                    ("draining", Style::new().fg(Color::Yellow))
                } else {
                    ("active", Style::new().fg(Color::Green))
                };
                TableRow::new(vec![
                    Cell::from(format!("▾ {}", n.id)).style(paint(Style::new().bold())),
                    Cell::from("node"),
                    Cell::from(if n.location.is_empty() { "-".to_string() } else { format!("@{}", n.location) }),
                    Cell::from(state).style(paint(style)),
                    Cell::from(""),
                    // Node and manager rows have no rate: their figures start
                    // in the MSG/S column, so the manager labels' wider NAME
                    // column does not cut the load off.
                    Cell::from(format!("sess {} str {}", n.load.sessions, n.load.streams)),
                    Cell::from(format!("ord {}", n.load.open_orders)),
                ])
                .style(paint(Style::new()))
            }
            Row::Manager(_, m) => TableRow::new(vec![
                Cell::from(format!("  ▾ {}", m.label())).style(paint(Style::new().bold())),
                Cell::from("mgr"),
                Cell::from(""),
                manager_state_cell(m).style(paint(m.state.map_or(Style::new().fg(GREY), state_style))),
                Cell::from(""),
                Cell::from(service_count(m.services)),
                Cell::from(""),
            ])
            .style(paint(Style::new())),
            Row::Service(_, s) => TableRow::new(vec![
                Cell::from(format!("    {}", s.name)),
                Cell::from(s.kind.as_str()),
                Cell::from(if s.service_type.is_empty() { "-".to_string() } else { s.service_type.clone() }),
                Cell::from(s.state.as_str()).style(paint(state_style(s.state))),
                Cell::from(s.restarts.to_string()),
                Cell::from(rate_cell(app, s)).style(paint(Style::new().fg(Color::Cyan))),
                Cell::from(s.detail.clone().unwrap_or_default()),
            ])
            .style(paint(Style::new())),
        })
        .collect();
    let header = TableRow::new(["NAME", "KIND", "TYPE", "STATE", "RST", "MSG/S", "DETAIL / LOAD"])
        .style(Style::new().bold().fg(if live { Color::Reset } else { GREY }));
    let name_width = rows.iter().map(|r| r.name_width()).max().unwrap_or(0);
    let widths = [
        Constraint::Length(u16::try_from(name_width).unwrap_or(u16::MAX).clamp(8, 32)),
        Constraint::Length(6),
        Constraint::Length(9),
        Constraint::Length(8),
        Constraint::Length(3),
        Constraint::Length(13),
        Constraint::Fill(1),
    ];
    let table = Table::new(table_rows, widths)
        .header(header)
        .block(block)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("▶ ");
    let mut state = TableState::default().with_selected(Some(app.selected()));
    frame.render_stateful_widget(table, area, &mut state);
}

fn manager_state_cell(m: &Manager) -> Cell<'static> {
    Cell::from(m.state.map_or("-", ServiceState::as_str))
}

fn service_count(n: usize) -> String {
    if n == 1 {
        "1 service".into()
    } else {
        format!("{n} services")
    }
}

fn mode(mode: RunMode) -> &'static str {
    match mode {
        RunMode::Process => "process",
        RunMode::Task => "task",
        RunMode::External => "external",
    }
}

/// The selected row in full: a service with its rate sparklines, a manager
/// with its services, or a node.
fn draw_detail(frame: &mut Frame, app: &App, area: Rect) {
    let border = if app.connected() { Style::new() } else { Style::new().fg(GREY) };
    match app.selected_row() {
        None => frame.render_widget(Block::bordered().title(" Detail ").border_style(border), area),
        Some(Row::Node(n)) => {
            let block = Block::bordered().title(format!(" Node {} ", n.id)).border_style(border);
            frame.render_widget(Paragraph::new(node_lines(n)).wrap(Wrap { trim: false }).block(block), area);
        }
        Some(Row::Manager(n, m)) => {
            let block = Block::bordered().title(format!(" {} on {} ", m.label(), n.id)).border_style(border);
            frame.render_widget(Paragraph::new(manager_lines(n, &m)).wrap(Wrap { trim: false }).block(block), area);
        }
        Some(Row::Service(_, s)) => {
            let block = Block::bordered().title(format!(" {} ", s.name)).border_style(border);
            let inner = block.inner(area);
            frame.render_widget(block, area);
            let spark_height = if inner.height >= 16 { 5 } else { 3 };
            let [info, messages, latency] = Layout::vertical([
                Constraint::Min(1),
                Constraint::Length(spark_height),
                Constraint::Length(spark_height),
            ])
            .areas(inner);
            frame.render_widget(Paragraph::new(service_lines(s)).wrap(Wrap { trim: false }), info);
            let series = app.rates.get(&s.name);
            draw_spark(frame, messages, "messages/s", series.map(|r| &r.messages_per_s), 10.0, Color::Cyan);
            draw_spark(frame, latency, "pipe latency ms", series.map(|r| &r.pipe_latency_ms), 100.0, Color::Magenta);
        }
    }
}

fn draw_spark(frame: &mut Frame, area: Rect, label: &str, samples: Option<&VecDeque<f64>>, scale: f64, color: Color) {
    let empty = VecDeque::new();
    let samples = samples.unwrap_or(&empty);
    let title = match samples.back() {
        Some(last) => {
            let max = samples.iter().copied().fold(0.0_f64, f64::max);
            format!(" {label} {} (max {}) ", short_number(*last), short_number(max))
        }
        None => format!(" {label}: no samples yet "),
    };
    let block = Block::bordered().title(title).border_style(Style::new().fg(GREY));
    // The newest sample at the right edge.
    let width = usize::from(block.inner(area).width);
    let bars = rates::bars(samples, scale);
    let start = bars.len().saturating_sub(width);
    let spark = Sparkline::default().block(block).data(&bars[start..]).style(Style::new().fg(color));
    frame.render_widget(spark, area);
}

fn field(label: &str, value: String) -> Line<'static> {
    Line::from(vec![Span::styled(format!("{label:<9} "), Style::new().fg(GREY)), Span::raw(value)])
}

fn service_lines(s: &ServiceInfo) -> Vec<Line<'static>> {
    let kind = if s.service_type.is_empty() { s.kind.to_string() } else { format!("{} {}", s.kind, s.service_type) };
    let mut lines = vec![
        Line::from(vec![Span::raw(format!("{kind} · ")), Span::styled(s.state.as_str(), state_style(s.state))]),
        field("node", format!("{} · {} · pid {}", s.node, mode(s.mode), s.pid.map_or("-".into(), |p| p.to_string()))),
        field("restarts", s.restarts.to_string()),
        field("started", s.started_at.map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())),
    ];
    if let Some(detail) = s.detail.as_deref().filter(|d| !d.is_empty()) {
        lines.push(field("detail", detail.to_string()));
    }
    if !s.options.is_empty() {
        let options: Vec<String> = s.options.iter().map(|(k, v)| format!("{k}={v}")).collect();
        lines.push(field("options", options.join(" ")));
    }
    for (k, v) in s.metrics.iter().filter(|(k, _)| k.as_str() != MESSAGES_PER_S && k.as_str() != PIPE_LATENCY_MS) {
        lines.push(field(&k.replace('_', " "), short_number(*v)));
    }
    lines
}

fn manager_lines(n: &NodeInfo, m: &Manager) -> Vec<Line<'static>> {
    let state = match m.state {
        Some(state) => Span::styled(state.as_str(), state_style(state)),
        None => Span::styled("not reported", Style::new().fg(GREY)),
    };
    let mut lines = vec![
        field("kind", m.label()),
        Line::from(vec![Span::styled(format!("{:<9} ", "state"), Style::new().fg(GREY)), state]),
        field("node", n.id.clone()),
        field("services", m.services.to_string()),
    ];
    for s in n.services.iter().filter(|s| s.kind == m.kind) {
        lines.push(Line::from(vec![
            Span::raw(format!("  {} ", s.name)),
            Span::styled(s.state.as_str(), state_style(s.state)),
        ]));
    }
    lines
}

fn node_lines(n: &NodeInfo) -> Vec<Line<'static>> {
    let mut lines = vec![
        field("location", if n.location.is_empty() { "-".into() } else { n.location.clone() }),
        field("state", if n.draining { "draining".into() } else { "active".into() }),
        field("algo API", if n.api_url.is_empty() { "-".into() } else { n.api_url.clone() }),
        field("sessions", n.load.sessions.to_string()),
        field("streams", n.load.streams.to_string()),
        field("orders", format!("{} open", n.load.open_orders)),
        field("services", n.services.len().to_string()),
    ];
    for m in Manager::of(n) {
        let state = m.state.map_or("-", ServiceState::as_str);
        lines.push(field("manager", format!("{} {state} ({} service(s))", m.kind, m.services)));
    }
    lines
}

fn draw_events(frame: &mut Frame, app: &App, area: Rect) {
    let block = Block::bordered().title(format!(" Events ({}) ", app.events.len()));
    let visible = usize::from(area.height.saturating_sub(2));
    let skip = app.events.len().saturating_sub(visible);
    let lines: Vec<Line> = app
        .events
        .iter()
        .skip(skip)
        .map(|e| {
            Line::from(vec![
                Span::styled(e.ts.format("%H:%M:%S ").to_string(), Style::new().fg(GREY)),
                Span::styled(format!("{:<12} ", e.kind), Style::new().fg(Color::Cyan)),
                Span::styled(e.text.clone(), level_style(e.level)),
            ])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines).block(block), area);
}
