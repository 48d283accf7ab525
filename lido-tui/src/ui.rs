//! Drawing: a pure function of [`App`]. Nothing here awaits or mutates.
//!
//! ```text
//! ┌ header: lido-tui │ IM url │ connection │ counts ───────────┐
//! │ nodes and their services (the selection lives here)        │
//! │ event log (newest at the bottom)                            │
//! └ status line: last reply or notice, else key hints ─────────┘
//! ```

use lido_shared::cluster::ServiceState;
use ratatui::layout::{Alignment, Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Clear, Paragraph, Row as TableRow, Table, TableState, Wrap};
use ratatui::Frame;

use crate::app::{App, Connection, Level, Popup, Row};
use crate::keymap;

const GREY: Color = Color::DarkGray;

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, app: &App) {
    let [header, body, events, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(5),
        Constraint::Percentage(30),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(header_line(app), header);
    draw_tree(frame, app, body);
    draw_events(frame, app, events);
    frame.render_widget(status_line(app), status);
    match &app.popup {
        Some(Popup::Help) => draw_help(frame, app),
        Some(Popup::Confirm(intent)) => draw_confirm(frame, &format!("{}?", capitalize(&intent.describe()))),
        None => {}
    }
}

fn header_line(app: &App) -> Line<'static> {
    let sep = || Span::styled(" │ ", Style::new().fg(GREY));
    let connection = match &app.connection {
        Connection::Connected => Span::styled("● connected", Style::new().fg(Color::Green).bold()),
        Connection::Connecting => Span::styled("○ connecting", Style::new().fg(Color::Yellow)),
        Connection::Reconnecting { error, retry_in, .. } => Span::styled(
            format!("○ {} (retry in {:.1}s: {error})", app.connection.label(), retry_in.as_secs_f64()),
            Style::new().fg(Color::Yellow).bold(),
        ),
    };
    let mut spans = vec![
        Span::styled(" lido-tui", Style::new().bold()),
        sep(),
        Span::raw("IM "),
        Span::styled(app.url.clone(), Style::new().fg(Color::Cyan)),
        sep(),
        connection,
    ];
    if let Some(cluster) = &app.cluster {
        spans.push(sep());
        spans.push(Span::raw(format!("{} node(s), {} service(s)", cluster.nodes.len(), cluster.services().count())));
    }
    if let Some(seq) = app.seq {
        spans.push(sep());
        spans.push(Span::styled(format!("seq {seq}"), Style::new().fg(GREY)));
    }
    if app.readonly {
        spans.push(sep());
        spans.push(Span::styled("READ-ONLY", Style::new().fg(Color::Magenta).bold()));
    }
    Line::from(spans)
}

fn state_style(state: ServiceState) -> Style {
    match state {
        ServiceState::Running => Style::new().fg(Color::Green),
        ServiceState::Starting | ServiceState::Degraded | ServiceState::Draining => Style::new().fg(Color::Yellow),
        ServiceState::Failed => Style::new().fg(Color::Red).bold(),
        ServiceState::Stopped => Style::new().fg(GREY),
    }
}

fn draw_tree(frame: &mut Frame, app: &App, area: Rect) {
    let live = app.connected();
    let title = if live { " Nodes and services ".to_string() } else { " Nodes and services (last known) ".to_string() };
    let block = Block::bordered().title(title).border_style(if live { Style::new() } else { Style::new().fg(GREY) });
    if app.cluster.is_none() {
        let text = format!("waiting for the cluster snapshot from {} …", app.url);
        frame.render_widget(Paragraph::new(text).fg(GREY).block(block), area);
        return;
    }
    // Greyed while reconnecting: the picture may be stale.
    let paint = |style: Style| if live { style } else { Style::new().fg(GREY) };
    let rows: Vec<TableRow> = app
        .rows()
        .into_iter()
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
                    Cell::from(""),
                    Cell::from(""),
                    Cell::from(format!(
                        "sessions {} · streams {} · orders {}",
                        n.load.sessions, n.load.streams, n.load.open_orders
                    )),
                ])
                .style(paint(Style::new()))
            }
            Row::Service(_, s) => TableRow::new(vec![
                Cell::from(format!("  {}", s.name)),
                Cell::from(s.kind.as_str()),
                Cell::from(if s.service_type.is_empty() { "-".to_string() } else { s.service_type.clone() }),
                Cell::from(s.state.as_str()).style(paint(state_style(s.state))),
                Cell::from(mode(s.mode)),
                Cell::from(s.pid.map_or_else(|| "-".to_string(), |p| p.to_string())),
                Cell::from(s.restarts.to_string()),
                Cell::from(s.detail.clone().unwrap_or_default()),
            ])
            .style(paint(Style::new())),
        })
        .collect();
    let header = TableRow::new(["NAME", "KIND", "TYPE", "STATE", "MODE", "PID", "RESTARTS", "DETAIL / LOAD"])
        .style(Style::new().bold().fg(if live { Color::Reset } else { GREY }));
    let name_width = app.rows().iter().map(|r| r.name_width()).max().unwrap_or(0);
    let widths = [
        Constraint::Length(u16::try_from(name_width).unwrap_or(u16::MAX).clamp(8, 32)),
        Constraint::Length(6),
        Constraint::Length(9),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Fill(1),
    ];
    let table = Table::new(rows, widths)
        .header(header)
        .block(block)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("▶ ");
    let mut state = TableState::default().with_selected(Some(app.selected()));
    frame.render_stateful_widget(table, area, &mut state);
}

fn mode(mode: lido_shared::cluster::RunMode) -> &'static str {
    match mode {
        lido_shared::cluster::RunMode::Process => "process",
        lido_shared::cluster::RunMode::Task => "task",
        lido_shared::cluster::RunMode::External => "external",
    }
}

fn level_style(level: Level) -> Style {
    match level {
        Level::Info => Style::new(),
        Level::Success => Style::new().fg(Color::Green),
        Level::Warn => Style::new().fg(Color::Yellow),
        Level::Error => Style::new().fg(Color::Red),
    }
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

fn status_line(app: &App) -> Line<'static> {
    if let Some(status) = &app.status {
        return Line::from(Span::styled(format!(" {}", status.text), level_style(status.level)));
    }
    let mut spans = Vec::new();
    for b in keymap::visible(app.readonly) {
        spans.push(Span::styled(format!(" {}", b.label), Style::new().fg(Color::Cyan).bold()));
        spans.push(Span::styled(format!(" {} ", b.hint), Style::new().fg(GREY)));
    }
    Line::from(spans)
}

fn centered(frame: &Frame, width: u16, height: u16) -> Rect {
    let [area] = Layout::horizontal([Constraint::Length(width)]).flex(Flex::Center).areas(frame.area());
    let [area] = Layout::vertical([Constraint::Length(height)]).flex(Flex::Center).areas(area);
    area
}

fn draw_help(frame: &mut Frame, app: &App) {
    let bindings: Vec<_> = keymap::visible(app.readonly).collect();
    let height = u16::try_from(bindings.len()).unwrap_or(u16::MAX).saturating_add(4);
    let area = centered(frame, 52, height);
    let rows = bindings.iter().map(|b| {
        let style = if b.dangerous { Style::new().fg(Color::Red) } else { Style::new() };
        TableRow::new(vec![
            Cell::from(b.label).style(Style::new().fg(Color::Cyan).bold()),
            Cell::from(b.description).style(style),
        ])
    });
    let mut title = " Keys ".to_string();
    if app.readonly {
        title = " Keys (read-only) ".into();
    }
    let table = Table::new(rows, [Constraint::Length(10), Constraint::Fill(1)])
        .block(Block::bordered().title(title).title_bottom(Line::from(" any key closes ").alignment(Alignment::Right)));
    frame.render_widget(Clear, area);
    frame.render_widget(table, area);
}

fn draw_confirm(frame: &mut Frame, question: &str) {
    let width = u16::try_from(question.chars().count()).unwrap_or(60).clamp(30, 70).saturating_add(4);
    let area = centered(frame, width, 5);
    let text = vec![
        Line::from(question.to_string()).bold(),
        Line::from(vec![
            Span::styled("y", Style::new().fg(Color::Red).bold()),
            Span::raw(" yes   "),
            Span::styled("n/Esc", Style::new().fg(Color::Cyan).bold()),
            Span::raw(" no"),
        ]),
    ];
    let popup = Paragraph::new(text)
        .alignment(Alignment::Center)
        .wrap(Wrap { trim: true })
        .block(Block::bordered().title(" Confirm ").border_style(Style::new().fg(Color::Red)));
    frame.render_widget(Clear, area);
    frame.render_widget(popup, area);
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
