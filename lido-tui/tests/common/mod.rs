//! Fixtures shared by the console tests: a small cluster, key and event
//! actions, and rendering into a `TestBackend`.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use lido_shared::api::MarketInfo;
use lido_shared::cluster::{
    ClusterEvent, ClusterSnapshot, ManagerInfo, NodeInfo, NodeLoad, RunMode, ServiceInfo, ServiceKind, ServiceState,
    WatchCommand, WatchMessage,
};
use lido_shared::model::{Book, BookLevel, Order, OrderStatus, OrderType, Quote, Side, Symbol, TimeInForce};
use lido_tui::action::{Action, FeedUpdate};
use lido_tui::app::{App, RowKey};
use lido_tui::effect::Effect;
use ratatui::backend::TestBackend;
use ratatui::Terminal;

pub const URL: &str = "http://127.0.0.1:7700";

pub fn ts() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
}

pub fn service(name: &str, kind: ServiceKind, service_type: &str, state: ServiceState, node: &str) -> ServiceInfo {
    ServiceInfo {
        name: name.into(),
        kind,
        service_type: service_type.into(),
        state,
        node: node.into(),
        mode: RunMode::Task,
        pid: None,
        ws_url: None,
        restarts: 0,
        started_at: Some(ts()),
        detail: None,
        options: BTreeMap::new(),
        metrics: BTreeMap::new(),
    }
}

/// A node listing its three managers, as lidod reports them.
pub fn node(id: &str, services: Vec<ServiceInfo>) -> NodeInfo {
    let managers = [ServiceKind::Broker, ServiceKind::Market, ServiceKind::Trader]
        .into_iter()
        .map(|kind| ManagerInfo {
            kind,
            state: ServiceState::Running,
            services: services.iter().filter(|s| s.kind == kind).count(),
        })
        .collect();
    NodeInfo {
        id: id.into(),
        location: "local".into(),
        draining: false,
        api_url: URL.into(),
        managers,
        services,
        load: NodeLoad { sessions: 2, streams: 3, open_orders: 1 },
    }
}

/// n1: paper (broker, running), sim (market, degraded).
pub fn snapshot() -> ClusterSnapshot {
    ClusterSnapshot {
        nodes: vec![node(
            "n1",
            vec![
                service("paper", ServiceKind::Broker, "paper", ServiceState::Running, "n1"),
                service("sim", ServiceKind::Market, "", ServiceState::Degraded, "n1"),
            ],
        )],
        ts: ts(),
    }
}

pub fn key(c: char) -> Action {
    Action::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))
}

pub fn code(code: KeyCode) -> Action {
    Action::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

pub fn event(seq: u64, event: ClusterEvent) -> Action {
    Action::Message(WatchMessage::Event { seq, ts: ts(), event })
}

/// Connected to [`URL`], with [`snapshot`] applied.
pub fn connected_app(readonly: bool) -> App {
    let mut app = App::new(vec![URL.into()], readonly);
    assert!(app.update(Action::Connected { url: URL.into(), at: ts() }).is_empty());
    assert!(app.update(Action::Message(WatchMessage::Snapshot { seq: 10, snapshot: snapshot() })).is_empty());
    app
}

/// The one watch command among `effects`, if that is all there is.
pub fn watch(effects: Vec<Effect>) -> Option<WatchCommand> {
    match <[Effect; 1]>::try_from(effects) {
        Ok([Effect::Watch(command)]) => Some(command),
        _ => None,
    }
}

pub fn selected_key(app: &App) -> Option<RowKey> {
    app.selected_row().map(|r| r.key())
}

pub fn render(app: &App, width: u16, height: u16) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| lido_tui::ui::draw(frame, app)).unwrap();
    terminal
}

pub fn screen(terminal: &Terminal<TestBackend>) -> String {
    let buffer = terminal.backend().buffer();
    let mut out = String::new();
    for y in 0..buffer.area.height {
        for x in 0..buffer.area.width {
            out.push_str(buffer[(x, y)].symbol());
        }
        out.push('\n');
    }
    out
}

/// Types `text` key by key.
pub fn type_text(app: &mut App, text: &str) -> Vec<Effect> {
    text.chars().flat_map(|c| app.update(key(c))).collect()
}

/// A Metrics event for n1: paper at `rate` msg/s and `latency` ms, sim idle.
pub fn metrics(seq: u64, rate: f64, latency: f64) -> Action {
    let figures = |rate: f64, latency: f64| -> BTreeMap<String, f64> {
        [("messages_per_s".to_string(), rate), ("pipe_latency_ms".to_string(), latency), ("listeners".to_string(), 3.0)]
            .into()
    };
    let services = [("paper".to_string(), figures(rate, latency)), ("sim".to_string(), figures(0.0, 0.1))].into();
    event(seq, ClusterEvent::Metrics { node: "n1".into(), services })
}

/// [`connected_app`] after 30 seconds of rising and falling figures.
pub fn app_with_rates() -> App {
    let mut app = connected_app(false);
    for i in 0..30u64 {
        let rate = 20.0 + 15.0 * ((i as f64) / 3.0).sin();
        let latency = 0.4 + 0.3 * ((i as f64) / 5.0).cos();
        app.update(metrics(11 + i, rate.round(), (latency * 100.0).round() / 100.0));
    }
    app
}

pub fn markets() -> Vec<MarketInfo> {
    let symbols = |list: &[&str]| list.iter().map(|s| Symbol::parse(s).unwrap()).collect();
    vec![
        MarketInfo {
            name: "paper".into(),
            symbols: symbols(&["BTC/USD", "ETH/USD"]),
            brokers: vec!["paper-1".into()],
            active_broker: Some("paper-1".into()),
            state: ServiceState::Running,
            fallback: Vec::new(),
            routes: Default::default(),
            health: Vec::new(),
        },
        MarketInfo {
            name: "crypto".into(),
            symbols: symbols(&["SOL/USD"]),
            brokers: vec!["k1".into()],
            active_broker: None,
            state: ServiceState::Degraded,
            fallback: Vec::new(),
            routes: Default::default(),
            health: Vec::new(),
        },
    ]
}

/// The `i`th quote of a wavy BTC/USD, one a second.
pub fn quote(i: i64) -> Quote {
    let mid = 65000.0 + 40.0 * ((i as f64) / 4.0).sin() + (i as f64) * 1.5;
    let bid = format!("{:.1}", mid - 0.5);
    let ask = format!("{:.1}", mid + 0.5);
    Quote {
        symbol: Symbol::parse("BTC/USD").unwrap(),
        bid: bid.parse().unwrap(),
        ask: ask.parse().unwrap(),
        bid_size: "1.25".parse().unwrap(),
        ask_size: "0.8".parse().unwrap(),
        last: Some(bid.parse().unwrap()),
        ts: ts() + chrono::Duration::seconds(i),
    }
}

pub fn book() -> Book {
    let level = |p: &str, s: &str| BookLevel(p.parse().unwrap(), s.parse().unwrap());
    Book {
        symbol: Symbol::parse("BTC/USD").unwrap(),
        bids: vec![
            level("65059.5", "1.25"),
            level("65059.0", "0.5"),
            level("65058.0", "2"),
            level("65057.5", "0.1"),
            level("65055.0", "3.75"),
            level("65050.0", "9"),
        ],
        asks: vec![
            level("65060.5", "0.8"),
            level("65061.0", "1.5"),
            level("65062.5", "0.25"),
            level("65064.0", "4"),
            level("65070.0", "2.5"),
        ],
        ts: ts(),
    }
}

pub fn order(id: &str, customer: &str, side: Side, status: OrderStatus, minute: i64) -> Order {
    let at = ts() + chrono::Duration::minutes(minute);
    Order {
        order_id: id.into(),
        client_order_id: format!("c-{id}"),
        customer: customer.into(),
        market: "paper".into(),
        symbol: Symbol::parse("BTC/USD").unwrap(),
        side,
        order_type: OrderType::Limit,
        time_in_force: TimeInForce::Gtc,
        quantity: "0.5".parse().unwrap(),
        limit_price: Some("65000".parse().unwrap()),
        filled_quantity: if status == OrderStatus::Filled { "0.5".parse().unwrap() } else { "0".parse().unwrap() },
        average_price: (status == OrderStatus::Filled).then(|| "64990.5".parse().unwrap()),
        status,
        reason: None,
        broker: Some("paper-1".into()),
        venue_order_id: None,
        adopted: false,
        created_at: at,
        updated_at: at,
    }
}

pub fn feed(update: FeedUpdate) -> Action {
    Action::Feed { market: "paper".into(), symbol: "BTC/USD".into(), update }
}

/// On the market view for paper BTC/USD with quotes, book and orders.
pub fn app_on_market() -> App {
    let mut app = connected_app(false);
    app.update(key('m'));
    app.update(Action::Markets(Ok(markets())));
    app.update(code(KeyCode::Enter));
    app.update(feed(FeedUpdate::Live));
    for i in 0..40 {
        app.update(feed(FeedUpdate::Quote(quote(i))));
    }
    app.update(feed(FeedUpdate::Book(book())));
    let orders = [
        order("o1", "acme", Side::Buy, OrderStatus::Accepted, 0),
        order("o2", "globex", Side::Sell, OrderStatus::Rejected, 1),
        order("o3", "acme", Side::Buy, OrderStatus::Filled, 2),
    ];
    for o in orders {
        app.update(Action::Message(WatchMessage::Order { node: "n1".into(), order: o }));
    }
    app
}

/// Presses j until the service `name` is selected.
pub fn select_service(app: &mut App, name: &str) {
    let want = Some(RowKey::Service(name.into()));
    for _ in 0..app.rows().len() {
        if selected_key(app) == want {
            return;
        }
        app.update(key('j'));
    }
    assert_eq!(selected_key(app), want, "no service row {name}");
}
