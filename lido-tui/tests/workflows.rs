//! Key handling and state for the console's newer parts: rates from
//! Metrics events, the `/` filter, the `:` command line, the spawn form and
//! the market view with its picker, feed and order flow.

mod common;

use std::time::Duration;

use common::*;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use lido_shared::cluster::{ClusterEvent, ServiceKind, SpawnRequest, WatchCommand, WatchMessage};
use lido_shared::model::{OrderStatus, Side};
use lido_shared::ErrorDetail;
use lido_tui::action::{Action, FeedUpdate};
use lido_tui::app::{App, Intent, Level, Popup, Prompt, RowKey, Screen};
use lido_tui::effect::{Effect, FeedTarget};
use lido_tui::form::Field;
use lido_tui::market::{FeedState, Loaded, QUOTE_HISTORY};
use lido_tui::rates::RATE_SAMPLES;

fn row_names(app: &App) -> Vec<RowKey> {
    app.rows().iter().map(|r| r.key()).collect()
}

fn status(app: &App) -> String {
    app.status.clone().map(|s| s.text).unwrap_or_default()
}

// ---- rates -------------------------------------------------------------------

#[test]
fn metrics_feed_the_rates_not_the_log() {
    let mut app = connected_app(false);
    let logged = app.events.len();
    for i in 0..RATE_SAMPLES as u64 + 10 {
        assert!(app.update(metrics(11 + i, i as f64, 0.5)).is_empty());
    }
    assert_eq!(app.events.len(), logged, "metrics are not logged");
    let paper = app.rates.get("paper").unwrap();
    assert_eq!(paper.messages_per_s.len(), RATE_SAMPLES);
    assert_eq!(paper.messages_per_s.back(), Some(&(RATE_SAMPLES as f64 + 9.0)));
    assert_eq!(paper.pipe_latency_ms.back(), Some(&0.5));
    let current = &app.cluster.as_ref().unwrap().service("paper").unwrap().metrics;
    assert_eq!(current.get("listeners"), Some(&3.0), "the snapshot carries the latest figures");

    app.update(event(100, ClusterEvent::ServiceRemoved { name: "paper".into(), node: "n1".into() }));
    assert!(app.rates.get("paper").is_none(), "a removed service's history goes");
}

#[test]
fn a_gap_after_metrics_still_resyncs_quietly() {
    let mut app = connected_app(false);
    app.update(metrics(11, 1.0, 1.0));
    let Some(WatchCommand::Snapshot { id }) = watch(app.update(metrics(13, 1.0, 1.0))) else {
        panic!("a gap asks for a snapshot")
    };
    app.update(Action::Message(WatchMessage::Reply { id, ok: true, service: None, error: None }));
    assert_eq!(app.status, None, "the console's own commands do not fill the status line");
}

// ---- filter ------------------------------------------------------------------

#[test]
fn slash_filters_as_you_type() {
    let mut app = connected_app(false);
    select_service(&mut app, "sim");
    app.update(key('/'));
    assert_eq!(app.prompt, Some(Prompt::Filter(String::new())));
    type_text(&mut app, "PAP");
    assert_eq!(app.filter, "PAP");
    let broker = RowKey::Manager { node: "n1".into(), kind: ServiceKind::Broker };
    assert_eq!(row_names(&app), [RowKey::Node("n1".into()), broker, RowKey::Service("paper".into())]);
    assert_eq!(app.selected_row().map(|r| r.key()), Some(RowKey::Service("paper".into())), "selection clamped");
    app.update(code(KeyCode::Backspace));
    assert_eq!(app.filter, "PA");
    app.update(code(KeyCode::Enter));
    assert_eq!(app.prompt, None);
    assert_eq!(app.filter, "PA", "Enter keeps the filter");
    // j/k move within the filtered rows; typed keys act again.
    app.update(key('k'));
    assert_eq!(app.selected(), 1, "on the broker manager");
    app.update(code(KeyCode::Esc));
    assert_eq!(app.filter, "");
    assert_eq!(app.rows().len(), 6);
}

#[test]
fn filter_matches_state_and_node_and_escape_clears_it() {
    let mut app = connected_app(false);
    app.update(key('/'));
    type_text(&mut app, "degraded");
    let market = RowKey::Manager { node: "n1".into(), kind: ServiceKind::Market };
    assert_eq!(row_names(&app), [RowKey::Node("n1".into()), market, RowKey::Service("sim".into())]);
    app.update(code(KeyCode::Esc));
    assert_eq!((app.prompt.clone(), app.filter.as_str()), (None, ""), "Esc in the prompt clears");
    app.update(key('/'));
    type_text(&mut app, "n1");
    assert_eq!(app.rows().len(), 6, "a matching node keeps all its managers and services");
    app.update(code(KeyCode::Enter));
    app.update(key('/'));
    type_text(&mut app, "zz");
    assert!(app.rows().is_empty());
    assert!(app.update(key('s')).is_empty(), "keys type into the prompt, s does not stop");
    assert_eq!(app.prompt, Some(Prompt::Filter("n1zzs".into())));
}

// ---- command line --------------------------------------------------------------

fn command(app: &mut App, line: &str) -> Vec<Effect> {
    app.update(key(':'));
    let mut effects = type_text(app, line);
    effects.extend(app.update(code(KeyCode::Enter)));
    effects
}

#[test]
fn command_line_asks_before_changing_anything() {
    let mut app = connected_app(false);
    for (line, intent) in [
        ("stop paper", Intent::Stop("paper".into())),
        ("restart sim", Intent::Restart("sim".into())),
        ("drain n1", Intent::Drain("n1".into())),
        ("undrain n1", Intent::Undrain("n1".into())),
    ] {
        assert!(command(&mut app, line).is_empty());
        assert_eq!(app.popup, Some(Popup::Confirm(intent)), ":{line}");
        app.update(key('n'));
    }
    command(&mut app, "spawn broker paper p2 seed=3");
    let Some(Popup::Confirm(Intent::Spawn(request))) = app.popup.clone() else { panic!("spawn asks first") };
    assert_eq!(request.name.as_deref(), Some("p2"));
    let Some(WatchCommand::Spawn { id, request: sent }) = watch(app.update(key('y'))) else { panic!("y spawns") };
    assert_eq!(sent, request);
    let mut p2 = service("p2", ServiceKind::Broker, "paper", lido_shared::cluster::ServiceState::Starting, "n1");
    p2.node = "n1".into();
    app.update(Action::Message(WatchMessage::Reply { id, ok: true, service: Some(p2), error: None }));
    assert_eq!(status(&app), "spawn broker paper p2 seed=3 on any node: ok (p2 is starting)");
}

#[test]
fn command_line_errors_and_quit() {
    let mut app = connected_app(false);
    command(&mut app, "frobnicate now");
    assert!(status(&app).contains("unknown command :frobnicate"), "{}", status(&app));
    assert_eq!(app.status.clone().unwrap().level, Level::Error);
    command(&mut app, "stop");
    assert!(status(&app).contains("usage: :stop NAME"));
    app.update(key(':'));
    type_text(&mut app, "q");
    app.update(code(KeyCode::Esc));
    assert!(!app.should_quit, "Esc abandons the line");
    command(&mut app, "filter sim");
    assert_eq!(app.filter, "sim");
    command(&mut app, "help");
    assert_eq!(app.popup, Some(Popup::Help));
    app.update(key('x'));
    command(&mut app, "q");
    assert!(app.should_quit);
}

#[test]
fn readonly_refuses_changing_commands_but_not_looking() {
    let mut app = connected_app(true);
    for line in ["drain n1", "stop paper", "spawn broker paper p9", "spawn"] {
        assert!(command(&mut app, line).is_empty());
        assert!(app.popup.is_none(), ":{line} must not ask");
        assert!(status(&app).contains("read-only"), "{}", status(&app));
    }
    app.update(key('n'));
    assert!(app.popup.is_none(), "n does not open the form");
    let effects = command(&mut app, "market paper BTC/USD");
    assert_eq!(app.screen, Screen::Market);
    assert!(effects.iter().any(|e| matches!(e, Effect::Feed(Some(_)))));
}

#[test]
fn commands_while_disconnected_do_not_ask() {
    let mut app = connected_app(false);
    app.update(Action::Disconnected {
        url: URL.into(),
        error: "eof".into(),
        attempt: 1,
        retry_in: Duration::from_secs(1),
        at: ts(),
    });
    command(&mut app, "drain n1");
    assert!(app.popup.is_none());
    assert!(status(&app).contains("not connected"));
}

// ---- spawn form ---------------------------------------------------------------

#[test]
fn spawn_form_fills_asks_and_sends() {
    let mut app = connected_app(false);
    app.update(key('n'));
    let Some(Popup::Spawn(form)) = &app.popup else { panic!("n opens the form") };
    assert_eq!((form.kind, form.focus), (ServiceKind::Broker, Field::Kind));
    app.update(code(KeyCode::Tab)); // type: "paper" already
    app.update(code(KeyCode::Tab)); // name
    type_text(&mut app, "p2");
    app.update(code(KeyCode::Down)); // node
    type_text(&mut app, "n1");
    app.update(code(KeyCode::Tab)); // options
    type_text(&mut app, "seed=1 ticks_ms=50");
    app.update(code(KeyCode::Backspace));
    type_text(&mut app, "0");
    assert!(app.update(code(KeyCode::Enter)).is_empty(), "Enter asks first");
    let Some(Popup::Confirm(Intent::Spawn(request))) = app.popup.clone() else { panic!("confirmation") };
    let expected = SpawnRequest {
        kind: ServiceKind::Broker,
        service_type: Some("paper".into()),
        name: Some("p2".into()),
        node: Some("n1".into()),
        options: [("seed".to_string(), "1".to_string()), ("ticks_ms".to_string(), "50".to_string())].into(),
    };
    assert_eq!(request, expected);
    let Some(WatchCommand::Spawn { id, request }) = watch(app.update(key('y'))) else { panic!("y spawns") };
    assert_eq!(request, expected);
    assert_eq!(app.pending().get(&id).map(String::as_str), Some("spawn broker paper p2 seed=1 ticks_ms=50 on n1"));
    let error = ErrorDetail::new("name_taken", "a service named p2 exists");
    app.update(Action::Message(WatchMessage::Reply { id, ok: false, service: None, error: Some(error) }));
    assert!(status(&app).contains("failed: a service named p2 exists (name_taken)"), "{}", status(&app));
}

#[test]
fn spawn_form_keeps_typed_keys_and_shows_errors() {
    let mut app = connected_app(false);
    app.update(key('n'));
    app.update(code(KeyCode::Right)); // market
    app.update(code(KeyCode::Tab)); // name (type is skipped)
    type_text(&mut app, "q?sjk"); // none of these act: they are typed
    assert!(!app.should_quit);
    let Some(Popup::Spawn(form)) = &app.popup else { panic!("still in the form") };
    assert_eq!((form.kind, form.name.as_str()), (ServiceKind::Market, "q?sjk"));
    app.update(code(KeyCode::Tab)); // node
    app.update(code(KeyCode::Tab)); // options
    type_text(&mut app, "brokers");
    app.update(code(KeyCode::Enter));
    let Some(Popup::Spawn(form)) = &app.popup else { panic!("a bad form stays open") };
    assert!(form.error.as_deref().unwrap_or_default().contains("not k=v"));
    app.update(code(KeyCode::Esc));
    assert!(app.popup.is_none());
    assert_eq!(status(&app), "spawn: cancelled");
}

#[test]
fn ctrl_c_quits_from_the_form_and_the_prompt() {
    let ctrl_c = Action::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    let mut app = connected_app(false);
    app.update(key('n'));
    app.update(ctrl_c.clone());
    assert!(app.should_quit);
    let mut app = connected_app(false);
    app.update(key(':'));
    app.update(ctrl_c);
    assert!(app.should_quit);
}

// ---- market view ----------------------------------------------------------------

#[test]
fn m_opens_the_market_view_with_a_picker() {
    let mut app = connected_app(false);
    let effects = app.update(key('m'));
    assert_eq!(app.screen, Screen::Market);
    assert_eq!(app.popup, Some(Popup::Picker { selected: 0 }));
    assert_eq!(app.market.markets, Loaded::Loading);
    let [Effect::Watch(WatchCommand::Follow { orders: true, .. }), Effect::LoadMarkets { api_url }] = &effects[..]
    else {
        panic!("follow the order flow and load markets: {effects:?}")
    };
    assert_eq!(api_url, URL);

    app.update(Action::Markets(Ok(markets())));
    assert_eq!(app.market.choices().len(), 3);
    app.update(key('j'));
    app.update(key('j'));
    app.update(key('j'));
    assert_eq!(app.popup, Some(Popup::Picker { selected: 2 }), "stops at the last choice");
    app.update(key('k'));
    let effects = app.update(code(KeyCode::Enter));
    let expected = FeedTarget { api_url: URL.into(), market: "paper".into(), symbol: "ETH/USD".into() };
    assert_eq!(effects, [Effect::Feed(Some(expected))]);
    assert!(app.popup.is_none());
    assert_eq!(app.market.feed, FeedState::Connecting);
}

#[test]
fn a_failed_market_list_is_shown_and_escape_closes_the_picker() {
    let mut app = connected_app(false);
    app.update(key('m'));
    app.update(Action::Markets(Err("connection refused".into())));
    assert_eq!(app.market.markets, Loaded::Failed("connection refused".into()));
    assert!(app.update(code(KeyCode::Enter)).is_empty(), "nothing to pick");
    app.update(code(KeyCode::Esc));
    assert!(app.popup.is_none());
    assert_eq!(app.screen, Screen::Market);
}

#[test]
fn the_market_api_is_the_nodes() {
    let mut app = App::new(vec![URL.into()], false);
    app.update(Action::Connected { url: URL.into(), at: ts() });
    let mut snap = snapshot();
    snap.nodes[0].api_url = "http://10.0.0.7:7700".into();
    app.update(Action::Message(WatchMessage::Snapshot { seq: 1, snapshot: snap }));
    let effects = command(&mut app, "market sim AAPL");
    let Some(Effect::Feed(Some(target))) = effects.into_iter().find(|e| matches!(e, Effect::Feed(_))) else {
        panic!("a feed")
    };
    assert_eq!(target.api_url, "http://10.0.0.7:7700", "sim is a market on n1: its node serves it");
    assert_eq!(target.symbol, "AAPL");
}

#[test]
fn feed_updates_fill_the_view_and_stale_ones_are_dropped() {
    let mut app = app_on_market();
    assert_eq!(app.market.feed, FeedState::Live);
    assert_eq!(app.market.quotes.len(), 40);
    assert_eq!(app.market.book.as_ref().unwrap().bids.len(), 5, "the book is cut to five levels");
    for i in 40..40 + QUOTE_HISTORY as i64 {
        app.update(feed(FeedUpdate::Quote(quote(i))));
    }
    assert_eq!(app.market.quotes.len(), QUOTE_HISTORY);
    assert_eq!(app.market.mids().len(), QUOTE_HISTORY);
    // From a replaced task.
    let stale = Action::Feed { market: "crypto".into(), symbol: "SOL/USD".into(), update: FeedUpdate::Live };
    app.update(stale);
    app.update(feed(FeedUpdate::Down { error: "closed".into(), retry_in: Duration::from_millis(500) }));
    assert_eq!(app.market.feed, FeedState::Down("closed; retry in 0.5s".into()));
    app.update(feed(FeedUpdate::Refused("unknown symbol".into())));
    assert_eq!(app.market.notice.as_deref(), Some("unknown symbol"));
}

#[test]
fn order_flow_updates_in_place_newest_first() {
    let mut app = app_on_market();
    let ids: Vec<&str> = app.market.orders.iter().map(|r| r.order.order_id.as_str()).collect();
    assert_eq!(ids, ["o3", "o2", "o1"]);
    let filled = order("o1", "acme", Side::Buy, OrderStatus::Filled, 5);
    app.update(Action::Message(WatchMessage::Order { node: "n1".into(), order: filled }));
    let rows: Vec<(&str, OrderStatus)> =
        app.market.orders.iter().map(|r| (r.order.order_id.as_str(), r.order.status)).collect();
    assert_eq!(rows, [("o1", OrderStatus::Filled), ("o3", OrderStatus::Filled), ("o2", OrderStatus::Rejected)]);
}

#[test]
fn leaving_and_returning_stops_and_resumes_the_feed() {
    let mut app = app_on_market();
    let effects = app.update(code(KeyCode::Esc));
    assert_eq!(app.screen, Screen::Cluster);
    let [Effect::Feed(None), Effect::Watch(WatchCommand::Follow { orders: false, .. })] = &effects[..] else {
        panic!("stop the feed and the order flow: {effects:?}")
    };
    let effects = app.update(key('m'));
    assert_eq!(app.screen, Screen::Market);
    assert!(app.popup.is_none(), "the last market comes back without the picker");
    let [Effect::Watch(WatchCommand::Follow { orders: true, .. }), Effect::Feed(Some(target))] = &effects[..] else {
        panic!("resume: {effects:?}")
    };
    assert_eq!((target.market.as_str(), target.symbol.as_str()), ("paper", "BTC/USD"));
    assert_eq!(app.market.orders.len(), 3, "the order flow so far is kept");
    // p re-opens the picker on the current choice.
    let effects = app.update(key('p'));
    assert_eq!(app.popup, Some(Popup::Picker { selected: 0 }));
    assert!(matches!(effects[..], [Effect::LoadMarkets { .. }]), "the list is refreshed");
}

#[test]
fn reconnecting_on_the_market_view_follows_orders_again() {
    let mut app = app_on_market();
    app.update(Action::Disconnected {
        url: URL.into(),
        error: "eof".into(),
        attempt: 1,
        retry_in: Duration::from_secs(1),
        at: ts(),
    });
    let Some(WatchCommand::Follow { id, orders: true }) =
        watch(app.update(Action::Connected { url: URL.into(), at: ts() }))
    else {
        panic!("a new socket needs a new follow")
    };
    let error = ErrorDetail::new("unsupported", "no order flow here");
    app.update(Action::Message(WatchMessage::Reply { id, ok: false, service: None, error: Some(error) }));
    assert_eq!(status(&app), "follow order flow: failed: no order flow here (unsupported)");
}

#[test]
fn market_keys_and_help() {
    let mut app = app_on_market();
    app.update(key('?'));
    assert_eq!(app.popup, Some(Popup::Help));
    app.update(key('?'));
    app.update(key('s'));
    assert!(app.popup.is_none(), "s means nothing on the market view");
    app.update(key('q'));
    assert!(app.should_quit);
}
