//! Drawing: a pure function of [`App`]. Nothing here awaits or mutates.
//!
//! ```text
//! ┌ header: lido-tui │ IM url │ connection │ counts ───────────┐
//! │ the screen: cluster (nodes+services, detail, event log)     │
//! │             or market (quotes chart, book, order flow)      │
//! └ status line: prompt, last reply or notice, else key hints ─┘
//! ```
//!
//! Popups (help, confirmation, spawn form, market picker) draw on top.

mod cluster;
mod forms;
mod market;

use ratatui::layout::{Alignment, Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Clear, Paragraph, Row as TableRow, Table, Wrap};
use ratatui::Frame;

use crate::app::{App, Connection, Level, Popup, Prompt, Screen};
use crate::command::COMMANDS;
use crate::keymap::{self, Binding};

const GREY: Color = Color::DarkGray;
const SPARK_BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, app: &App) {
    let [header, body, status] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(3), Constraint::Length(1)]).areas(frame.area());
    frame.render_widget(header_line(app), header);
    match app.screen {
        Screen::Cluster => cluster::draw(frame, app, body),
        Screen::Market => market::draw(frame, app, body),
    }
    frame.render_widget(status_line(app), status);
    match &app.popup {
        Some(Popup::Help) => draw_help(frame, app),
        Some(Popup::Confirm(intent)) => draw_confirm(frame, &format!("{}?", capitalize(&intent.describe()))),
        Some(Popup::Spawn(form)) => forms::draw_spawn(frame, form),
        Some(Popup::Picker { selected }) => forms::draw_picker(frame, app, *selected),
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

fn level_style(level: Level) -> Style {
    match level {
        Level::Info => Style::new(),
        Level::Success => Style::new().fg(Color::Green),
        Level::Warn => Style::new().fg(Color::Yellow),
        Level::Error => Style::new().fg(Color::Red),
    }
}

fn status_line(app: &App) -> Line<'static> {
    if let Some(prompt) = &app.prompt {
        let (sigil, text, hint) = match prompt {
            Prompt::Filter(text) => ("/", text, "  Enter keep · Esc clear"),
            Prompt::Command(text) => (":", text, "  Enter run · Esc cancel · :help lists commands"),
        };
        return Line::from(vec![
            Span::styled(format!(" {sigil}"), Style::new().fg(Color::Cyan).bold()),
            Span::raw(text.clone()),
            Span::styled("█", Style::new().fg(Color::Cyan)),
            Span::styled(hint, Style::new().fg(GREY)),
        ]);
    }
    if let Some(status) = &app.status {
        return Line::from(Span::styled(format!(" {}", status.text), level_style(status.level)));
    }
    hints(keymap::visible(app.mode(), app.readonly))
}

/// ` j/↓ down  k/↑ up …` from a binding table.
fn hints<'a>(bindings: impl Iterator<Item = &'a Binding>) -> Line<'static> {
    let mut spans = Vec::new();
    for b in bindings {
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

fn len_u16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// `?`: the current screen's keys and the `:` commands, both from data.
fn draw_help(frame: &mut Frame, app: &App) {
    let bindings: Vec<_> = keymap::visible(app.screen_mode(), app.readonly).collect();
    let commands: Vec<_> = COMMANDS.iter().filter(|c| !(app.readonly && c.dangerous)).collect();
    let keys = Table::new(
        bindings.iter().map(|b| {
            let style = if b.dangerous { Style::new().fg(Color::Red) } else { Style::new() };
            TableRow::new(vec![
                Cell::from(b.label).style(Style::new().fg(Color::Cyan).bold()),
                Cell::from(b.description).style(style),
            ])
        }),
        [Constraint::Length(9), Constraint::Fill(1)],
    )
    .header(TableRow::new(["KEY", "ACTION"]).style(Style::new().bold()));
    let usage = Table::new(
        commands.iter().map(|c| {
            let style = if c.dangerous { Style::new().fg(Color::Red) } else { Style::new() };
            TableRow::new(vec![
                Cell::from(c.usage).style(Style::new().fg(Color::Cyan)),
                Cell::from(c.description).style(style),
            ])
        }),
        [Constraint::Length(26), Constraint::Fill(1)],
    )
    .header(TableRow::new(["COMMAND", ""]).style(Style::new().bold()));
    let wide = frame.area().width >= 112;
    let (width, height) = if wide {
        (110, len_u16(bindings.len().max(commands.len())).saturating_add(3))
    } else {
        (70, len_u16(bindings.len() + commands.len()).saturating_add(5))
    };
    let area = centered(frame, width.min(frame.area().width), height);
    let title = if app.readonly { " Keys (read-only) " } else { " Keys " };
    let block = Block::bordered()
        .title(title)
        .title_bottom(Line::from(" any key closes ").alignment(Alignment::Right))
        .border_style(Style::new().fg(Color::Cyan));
    let inner = block.inner(area);
    frame.render_widget(Clear, area);
    frame.render_widget(block, area);
    let [left, right] = if wide {
        Layout::horizontal([Constraint::Length(50), Constraint::Fill(1)]).spacing(2).areas(inner)
    } else {
        Layout::vertical([Constraint::Length(len_u16(bindings.len() + 2)), Constraint::Fill(1)]).areas(inner)
    };
    frame.render_widget(keys, left);
    frame.render_widget(usage, right);
}

fn draw_confirm(frame: &mut Frame, question: &str) {
    let width = len_u16(question.chars().count()).clamp(30, 70).saturating_add(4);
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

/// The last `width` samples as block characters, scaled to their maximum.
fn spark_text<'a>(samples: impl DoubleEndedIterator<Item = &'a f64> + ExactSizeIterator, width: usize) -> String {
    let skip = samples.len().saturating_sub(width);
    let values: Vec<f64> = samples.skip(skip).copied().collect();
    let max = values.iter().copied().fold(0.0_f64, f64::max);
    values
        .iter()
        .map(|v| {
            if max <= 0.0 {
                return SPARK_BARS[0];
            }
            // In 0..=7 by construction.
            let index = ((v / max) * 7.0).round() as usize;
            SPARK_BARS[index.min(7)]
        })
        .collect()
}

/// A rate for a narrow column: `0.42`, `12.3`, `512`, `12.5k`.
fn short_number(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1}k", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
