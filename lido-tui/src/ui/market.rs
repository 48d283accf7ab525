//! The market view: a line of the latest quote, the mid price chart, the
//! top of the book and the node's order flow.

use lido_shared::model::{OrderStatus, Side};
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Cell, Chart, Dataset, GraphType, Paragraph, Row as TableRow, Table};
use ratatui::Frame;

use super::GREY;
use crate::app::App;
use crate::market::{FeedState, MarketView, BOOK_DEPTH};

pub(super) fn draw(frame: &mut Frame, app: &App, area: Rect) {
    let view = &app.market;
    let [summary, middle, orders] =
        Layout::vertical([Constraint::Length(3), Constraint::Percentage(50), Constraint::Fill(1)]).areas(area);
    draw_summary(frame, view, summary);
    let [chart, book] = Layout::horizontal([Constraint::Fill(1), Constraint::Length(46)]).areas(middle);
    draw_chart(frame, view, chart);
    draw_book(frame, view, book);
    draw_orders(frame, app, orders);
}

fn draw_summary(frame: &mut Frame, view: &MarketView, area: Rect) {
    let sep = || Span::styled(" │ ", Style::new().fg(GREY));
    let Some((market, symbol)) = &view.target else {
        let text = Line::from(vec![
            Span::raw("no market chosen: "),
            Span::styled("p", Style::new().fg(Color::Cyan).bold()),
            Span::raw(" picks one, or "),
            Span::styled(":market MARKET SYMBOL", Style::new().fg(Color::Cyan)),
        ]);
        frame.render_widget(Paragraph::new(text).block(Block::bordered().title(" Market ")), area);
        return;
    };
    let feed = match &view.feed {
        FeedState::Idle => Span::styled("○ idle", Style::new().fg(GREY)),
        FeedState::Connecting => Span::styled("○ subscribing", Style::new().fg(Color::Yellow)),
        FeedState::Live => Span::styled("● live", Style::new().fg(Color::Green).bold()),
        FeedState::Down(why) => Span::styled(format!("○ down: {why}"), Style::new().fg(Color::Yellow).bold()),
    };
    let mut spans = vec![Span::styled(format!("{market} · {symbol}"), Style::new().bold()), sep(), feed];
    if let Some(q) = view.quotes.back() {
        spans.extend([
            sep(),
            Span::raw("bid "),
            Span::styled(q.bid.to_string(), Style::new().fg(Color::Green).bold()),
            Span::styled(format!(" × {}", q.bid_size), Style::new().fg(GREY)),
            sep(),
            Span::raw("ask "),
            Span::styled(q.ask.to_string(), Style::new().fg(Color::Red).bold()),
            Span::styled(format!(" × {}", q.ask_size), Style::new().fg(GREY)),
            sep(),
            Span::raw(format!("last {}", q.last.map_or("-".into(), |l| l.to_string()))),
            sep(),
            Span::raw(format!("spread {}", q.ask - q.bid)),
            sep(),
            Span::styled(q.ts.format("%H:%M:%S").to_string(), Style::new().fg(GREY)),
        ]);
    }
    if let Some(notice) = &view.notice {
        spans.push(sep());
        spans.push(Span::styled(notice.clone(), Style::new().fg(Color::Red)));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)).block(Block::bordered().title(" Market ")), area);
}

/// Enough decimals to tell chart labels apart.
fn price_label(v: f64, range: f64) -> String {
    let decimals = if range >= 100.0 {
        0
    } else if range >= 1.0 {
        2
    } else {
        4
    };
    format!("{v:.decimals$}")
}

fn draw_chart(frame: &mut Frame, view: &MarketView, area: Rect) {
    let points = view.mids();
    let title = match &view.target {
        Some((_, symbol)) => format!(" Mid {symbol} (last {} quotes) ", points.len()),
        None => " Mid ".to_string(),
    };
    let block = Block::bordered().title(title);
    if points.is_empty() {
        let text = if view.target.is_some() { "waiting for quotes…" } else { "" };
        frame.render_widget(Paragraph::new(text).fg(GREY).block(block), area);
        return;
    }
    let (low, high) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), (_, y)| (lo.min(*y), hi.max(*y)));
    let pad = ((high - low) * 0.1).max(high.abs() * 1e-5).max(1e-6);
    let (y0, y1) = (low - pad, high + pad);
    let x1 = (points.len().saturating_sub(1)).max(1) as f64;
    let first = view.quotes.front().map(|q| q.ts.format("%H:%M:%S").to_string()).unwrap_or_default();
    let last = view.quotes.back().map(|q| q.ts.format("%H:%M:%S").to_string()).unwrap_or_default();
    let dataset = Dataset::default()
        .marker(Marker::Braille)
        .graph_type(GraphType::Line)
        .style(Style::new().fg(Color::Yellow))
        .data(&points);
    let range = y1 - y0;
    let chart = Chart::new(vec![dataset])
        .block(block)
        .x_axis(Axis::default().bounds([0.0, x1]).labels([first, last]).style(Style::new().fg(GREY)))
        .y_axis(
            Axis::default()
                .bounds([y0, y1])
                .labels([price_label(y0, range), price_label((y0 + y1) / 2.0, range), price_label(y1, range)])
                .style(Style::new().fg(GREY)),
        );
    frame.render_widget(chart, area);
}

fn draw_book(frame: &mut Frame, view: &MarketView, area: Rect) {
    let mut block = Block::bordered().title(format!(" Book (top {BOOK_DEPTH}) "));
    let Some(book) = &view.book else {
        let text = if view.target.is_some() { "waiting for the book…" } else { "" };
        frame.render_widget(Paragraph::new(text).fg(GREY).block(block), area);
        return;
    };
    if let (Some(bid), Some(ask)) = (book.bids.first(), book.asks.first()) {
        block = block
            .title_bottom(Line::from(format!(" spread {} ", ask.price() - bid.price())).alignment(Alignment::Right));
    }
    let rows = (0..BOOK_DEPTH).map(|i| {
        let bid = book.bids.get(i);
        let ask = book.asks.get(i);
        let text = |v: Option<String>| v.unwrap_or_default();
        TableRow::new(vec![
            Cell::from(Line::from(text(bid.map(|l| l.size().to_string()))).alignment(Alignment::Right)).fg(GREY),
            Cell::from(Line::from(text(bid.map(|l| l.price().to_string()))).alignment(Alignment::Right))
                .fg(Color::Green),
            Cell::from(text(ask.map(|l| l.price().to_string()))).fg(Color::Red),
            Cell::from(text(ask.map(|l| l.size().to_string()))).fg(GREY),
        ])
    });
    let header = TableRow::new(vec![
        Cell::from(Line::from("SIZE").alignment(Alignment::Right)),
        Cell::from(Line::from("BID").alignment(Alignment::Right)),
        Cell::from("ASK"),
        Cell::from("SIZE"),
    ])
    .style(Style::new().bold());
    let widths = [Constraint::Length(9), Constraint::Length(11), Constraint::Length(11), Constraint::Length(9)];
    frame.render_widget(Table::new(rows, widths).header(header).block(block), area);
}

fn status_style(status: OrderStatus) -> Style {
    match status {
        OrderStatus::Filled => Style::new().fg(Color::Green),
        OrderStatus::PartiallyFilled => Style::new().fg(Color::Cyan),
        OrderStatus::Rejected => Style::new().fg(Color::Red),
        OrderStatus::Canceled | OrderStatus::Expired => Style::new().fg(GREY),
        OrderStatus::New | OrderStatus::Accepted => Style::new().fg(Color::Yellow),
    }
}

fn draw_orders(frame: &mut Frame, app: &App, area: Rect) {
    let view = &app.market;
    let title = format!(" Order flow ({} order(s), newest first) ", view.orders.len());
    let block = Block::bordered().title(title);
    if view.orders.is_empty() {
        let text = if app.connected() {
            "no orders yet; following the order flow of the cluster's nodes"
        } else {
            "not connected: the order flow resumes on reconnect"
        };
        frame.render_widget(Paragraph::new(text).fg(GREY).block(block), area);
        return;
    }
    let rows = view.orders.iter().map(|row| {
        let o = &row.order;
        let (side, side_style) = match o.side {
            Side::Buy => ("buy", Style::new().fg(Color::Green)),
            Side::Sell => ("sell", Style::new().fg(Color::Red)),
        };
        let price = o.average_price.or(o.limit_price).map_or_else(|| "market".to_string(), |p| p.to_string());
        let quantity = if o.filled_quantity.is_zero() {
            o.quantity.to_string()
        } else {
            format!("{}/{}", o.filled_quantity, o.quantity)
        };
        let mine = view.is_target(&o.market, o.symbol.as_str());
        TableRow::new(vec![
            Cell::from(o.updated_at.format("%H:%M:%S").to_string()).fg(GREY),
            Cell::from(o.customer.clone()),
            Cell::from(side).style(side_style),
            Cell::from(o.symbol.to_string()).style(if mine { Style::new().bold() } else { Style::new() }),
            Cell::from(Line::from(quantity).alignment(Alignment::Right)),
            Cell::from(Line::from(price).alignment(Alignment::Right)),
            Cell::from(o.status.as_str()).style(status_style(o.status)),
            Cell::from(format!("{} · {}", o.market, row.node)).fg(GREY),
        ])
    });
    let header = TableRow::new(vec![
        Cell::from("TIME"),
        Cell::from("CUSTOMER"),
        Cell::from("SIDE"),
        Cell::from("SYMBOL"),
        Cell::from(Line::from("QTY").alignment(Alignment::Right)),
        Cell::from(Line::from("PRICE").alignment(Alignment::Right)),
        Cell::from("STATUS"),
        Cell::from("MARKET · NODE"),
    ])
    .style(Style::new().bold());
    let widths = [
        Constraint::Length(8),
        Constraint::Length(10),
        Constraint::Length(4),
        Constraint::Length(9),
        Constraint::Length(12),
        Constraint::Length(11),
        Constraint::Length(16),
        Constraint::Fill(1),
    ];
    frame.render_widget(Table::new(rows, widths).header(header).block(block), area);
}
