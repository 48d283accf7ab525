//! Input popups: the spawn form and the market/symbol picker.

use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, List, ListItem, ListState, Paragraph, Wrap};
use ratatui::Frame;

use super::{centered, hints, len_u16, GREY};
use crate::app::App;
use crate::form::{Field, SpawnForm};
use crate::keymap::{self, Mode};
use crate::market::Loaded;

pub(super) fn draw_spawn(frame: &mut Frame, form: &SpawnForm) {
    let area = centered(frame, 64.min(frame.area().width), 12);
    let block = Block::bordered()
        .title(" Spawn a service ")
        .title_bottom(hints(keymap::visible(Mode::Form, false).filter(|b| b.hint != "prev")))
        .border_style(Style::new().fg(Color::Cyan));
    let inner = block.inner(area);
    frame.render_widget(Clear, area);
    frame.render_widget(block, area);
    let mut lines: Vec<Line> = Field::ALL
        .iter()
        .map(|&field| {
            let focused = form.focus == field;
            let label = Span::styled(
                format!("{} {:<8} ", if focused { "▶" } else { " " }, field.label()),
                if focused { Style::new().fg(Color::Cyan).bold() } else { Style::new().fg(GREY) },
            );
            let value = form.value(field);
            let value = match field {
                Field::Kind => Span::styled(format!("◂ {value} ▸"), Style::new().bold()),
                _ if !form.enabled(field) => Span::styled(value, Style::new().fg(GREY)),
                _ if focused => Span::styled(format!("{value}█"), Style::new().add_modifier(Modifier::UNDERLINED)),
                _ => Span::raw(value),
            };
            Line::from(vec![label, value])
        })
        .collect();
    lines.push(Line::from(Span::styled("  empty name: Lido picks · empty node: least loaded", Style::new().fg(GREY))));
    if let Some(error) = &form.error {
        lines.push(Line::from(Span::styled(format!("  {error}"), Style::new().fg(Color::Red))));
    }
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), inner);
}

pub(super) fn draw_picker(frame: &mut Frame, app: &App, selected: usize) {
    let choices = app.market.choices();
    let height = len_u16(choices.len()).clamp(1, 14).saturating_add(2);
    let area = centered(frame, 48.min(frame.area().width), height);
    let block = Block::bordered()
        .title(" Pick a market and symbol ")
        .title_bottom(hints(keymap::visible(Mode::Picker, false)))
        .border_style(Style::new().fg(Color::Cyan));
    frame.render_widget(Clear, area);
    let message = match &app.market.markets {
        Loaded::NotLoaded | Loaded::Loading if choices.is_empty() => Some("loading markets…".to_string()),
        Loaded::Failed(error) if choices.is_empty() => Some(format!("cannot list markets: {error}")),
        Loaded::Ready(_) if choices.is_empty() => Some("no markets on this node".to_string()),
        _ => None,
    };
    if let Some(message) = message {
        frame.render_widget(Paragraph::new(message).fg(GREY).wrap(Wrap { trim: true }).block(block), area);
        return;
    }
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [list_area] = Layout::vertical([Constraint::Fill(1)]).areas(inner);
    let width = choices.iter().map(|(m, _)| m.chars().count()).max().unwrap_or(0);
    let items: Vec<ListItem> = choices
        .iter()
        .map(|(market, symbol)| {
            let current = app.market.is_target(market, symbol);
            let line = Line::from(vec![
                Span::styled(format!("{market:<width$}  "), Style::new().fg(GREY)),
                Span::raw(symbol.clone()),
                Span::styled(if current { "  (watching)" } else { "" }, Style::new().fg(Color::Green)),
            ]);
            ListItem::new(line)
        })
        .collect();
    let list = List::new(items).highlight_style(Style::new().add_modifier(Modifier::REVERSED)).highlight_symbol("▶ ");
    let mut state = ListState::default().with_selected(Some(selected));
    frame.render_stateful_widget(list, list_area, &mut state);
}
