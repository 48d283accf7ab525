//! The console without a terminal: key handling and event application on
//! [`App`], and the screen drawn into a `TestBackend`.

mod common;

use std::time::Duration;

use common::*;
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyEventState, KeyModifiers};
use lido_shared::cluster::{ClusterEvent, NodeLoad, ServiceKind, ServiceState, WatchCommand, WatchMessage};
use lido_shared::ErrorDetail;
use lido_tui::action::Action;
use lido_tui::app::{App, Connection, Intent, Level, Popup, RowKey, EVENT_LOG_LEN};
use lido_tui::keymap::{self, Mode};

// ---- key handling ----------------------------------------------------------

#[test]
fn selection_stays_in_bounds() {
    let mut app = connected_app(false);
    // n1, broker manager, paper, market manager, sim, trader manager.
    assert_eq!(app.rows().len(), 6);
    assert_eq!(app.selected(), 0);
    app.update(key('k'));
    assert_eq!(app.selected(), 0, "cannot go above the first row");
    for _ in 0..4 {
        app.update(key('j'));
    }
    app.update(code(KeyCode::Down));
    app.update(key('j'));
    app.update(key('j'));
    assert_eq!(app.selected(), 5, "cannot go below the last row");
    app.update(code(KeyCode::Up));
    assert_eq!(selected_key(&app), Some(RowKey::Service("sim".into())));
    app.update(key('g'));
    assert_eq!(app.selected(), 0);
    app.update(key('G'));
    assert_eq!(app.selected(), 5);
}

/// A node whose services are listed out of kind order, with every kind.
fn mixed_app() -> App {
    let mut app = App::new(vec![URL.into()], false);
    app.update(Action::Connected { url: URL.into(), at: ts() });
    let services = vec![
        service("t1", ServiceKind::Trader, "grid", ServiceState::Running, "n1"),
        service("b1", ServiceKind::Broker, "paper", ServiceState::Running, "n1"),
        service("m1", ServiceKind::Market, "", ServiceState::Running, "n1"),
        service("b2", ServiceKind::Broker, "kraken", ServiceState::Failed, "n1"),
        service("t2", ServiceKind::Trader, "twap", ServiceState::Stopped, "n1"),
        service("m2", ServiceKind::Market, "", ServiceState::Degraded, "n1"),
    ];
    let snapshot = lido_shared::cluster::ClusterSnapshot { nodes: vec![node("n1", services)], ts: ts() };
    app.update(Action::Message(WatchMessage::Snapshot { seq: 1, snapshot }));
    app
}

fn manager(kind: ServiceKind) -> RowKey {
    RowKey::Manager { node: "n1".into(), kind }
}

fn tree(app: &App) -> Vec<RowKey> {
    app.rows().iter().map(|r| r.key()).collect()
}

#[test]
fn the_tree_is_node_then_each_manager_then_its_services() {
    let app = mixed_app();
    let service = |name: &str| RowKey::Service(name.into());
    assert_eq!(
        tree(&app),
        [
            RowKey::Node("n1".into()),
            manager(ServiceKind::Broker),
            service("b1"),
            service("b2"),
            manager(ServiceKind::Market),
            service("m1"),
            service("m2"),
            manager(ServiceKind::Trader),
            service("t1"),
            service("t2"),
        ]
    );
    let Some(lido_tui::app::Row::Manager(_, broker)) = app.rows().get(1).copied() else { panic!("a manager row") };
    assert_eq!((broker.state, broker.services), (Some(ServiceState::Running), 2));
    assert_eq!(broker.label(), "broker manager");

    let text = screen(&render(&app, 120, 30));
    for line in ["  ▾ broker manager", "    b1 ", "  ▾ market manager", "    m2 ", "  ▾ trader manager", "    t2 "]
    {
        assert!(text.contains(line), "{line:?} in:\n{text}");
    }
}

#[test]
fn the_filter_keeps_the_parents_of_a_matching_service() {
    let mut app = mixed_app();
    app.update(key('/'));
    type_text(&mut app, "twap");
    assert_eq!(tree(&app), [RowKey::Node("n1".into()), manager(ServiceKind::Trader), RowKey::Service("t2".into())]);
    assert_eq!(selected_key(&app), Some(RowKey::Node("n1".into())));

    app.update(code(KeyCode::Esc));
    app.update(key('/'));
    type_text(&mut app, "failed");
    assert_eq!(tree(&app), [RowKey::Node("n1".into()), manager(ServiceKind::Broker), RowKey::Service("b2".into())]);

    app.update(code(KeyCode::Esc));
    app.update(key('/'));
    type_text(&mut app, "market manager");
    let expected = [
        RowKey::Node("n1".into()),
        manager(ServiceKind::Market),
        RowKey::Service("m1".into()),
        RowKey::Service("m2".into()),
    ];
    assert_eq!(tree(&app), expected, "a matching manager keeps its services");
}

#[test]
fn manager_rows_do_not_stop_restart_or_drain() {
    let mut app = connected_app(false);
    app.update(key('j')); // broker manager
    assert_eq!(selected_key(&app), Some(RowKey::Manager { node: "n1".into(), kind: ServiceKind::Broker }));
    for k in ['s', 'r', 'd'] {
        app.status = None;
        assert!(app.update(key(k)).is_empty());
        assert!(app.popup.is_none(), "{k} on a manager row asks nothing");
        let hint = app.status.clone().expect("a hint").text;
        assert!(hint.contains("select"), "{k}: {hint}");
    }
    let text = screen(&render(&app, 120, 30));
    assert!(text.contains("┌ broker manager on n1 "), "{text}");
    assert!(text.contains("services  1"), "{text}");
}

#[test]
fn selection_on_an_empty_screen_is_harmless() {
    let mut app = App::new(vec![URL.into()], false);
    for action in [key('j'), key('k'), key('G'), key('s'), key('d')] {
        assert!(app.update(action).is_empty());
    }
    assert_eq!(app.selected(), 0);
    assert!(app.popup.is_none());
}

#[test]
fn only_key_presses_count() {
    let mut app = connected_app(false);
    let release = KeyEvent {
        code: KeyCode::Char('j'),
        modifiers: KeyModifiers::NONE,
        kind: KeyEventKind::Release,
        state: KeyEventState::NONE,
    };
    app.update(Action::Key(release));
    assert_eq!(app.selected(), 0);
    let quit_release = KeyEvent { code: KeyCode::Char('q'), ..release };
    app.update(Action::Key(quit_release));
    assert!(!app.should_quit);
}

#[test]
fn stop_asks_then_sends_and_shows_the_reply() {
    let mut app = connected_app(false);
    select_service(&mut app, "paper"); // paper
    assert!(app.update(key('s')).is_empty(), "nothing is sent before confirmation");
    assert_eq!(app.popup, Some(Popup::Confirm(Intent::Stop("paper".into()))));
    let Some(WatchCommand::Stop { id, name }) = watch(app.update(key('y'))) else { panic!("y must send a stop") };
    assert_eq!(name, "paper");
    assert!(app.popup.is_none());
    assert_eq!(app.pending().get(&id).map(String::as_str), Some("stop service paper"));

    let mut stopped = service("paper", ServiceKind::Broker, "paper", ServiceState::Stopped, "n1");
    stopped.detail = Some("stopped by operator".into());
    app.update(Action::Message(WatchMessage::Reply { id, ok: true, service: Some(stopped), error: None }));
    let status = app.status.clone().unwrap();
    assert_eq!(status.level, Level::Success);
    assert!(status.text.contains("stop service paper: ok"), "{}", status.text);
    assert!(app.pending().is_empty());
}

#[test]
fn a_refused_command_shows_the_error() {
    let mut app = connected_app(false);
    app.update(key('d'));
    assert_eq!(app.popup, Some(Popup::Confirm(Intent::Drain("n1".into()))));
    let Some(WatchCommand::Drain { id, node }) = watch(app.update(key('y'))) else { panic!("y must send a drain") };
    assert_eq!(node, "n1");
    let error = ErrorDetail::new("node_draining", "node n1 is already draining");
    app.update(Action::Message(WatchMessage::Reply { id, ok: false, service: None, error: Some(error) }));
    let status = app.status.clone().unwrap();
    assert_eq!(status.level, Level::Error);
    assert!(status.text.contains("already draining"), "{}", status.text);
}

#[test]
fn anything_but_y_cancels() {
    let mut app = connected_app(false);
    select_service(&mut app, "paper");
    app.update(key('r'));
    assert_eq!(app.popup, Some(Popup::Confirm(Intent::Restart("paper".into()))));
    assert!(app.update(key('n')).is_empty());
    assert!(app.popup.is_none());
    app.update(key('s'));
    assert!(app.update(code(KeyCode::Esc)).is_empty());
    app.update(key('s'));
    assert!(app.update(code(KeyCode::Enter)).is_empty(), "Enter is not yes: the default is no");
    assert!(app.pending().is_empty());
    assert!(!app.should_quit);
}

#[test]
fn drain_on_a_draining_node_undrains() {
    let mut app = connected_app(false);
    app.update(event(11, ClusterEvent::NodeChanged { id: "n1".into(), draining: true, load: NodeLoad::default() }));
    select_service(&mut app, "paper"); // a service row acts on its node
    app.update(key('d'));
    assert_eq!(app.popup, Some(Popup::Confirm(Intent::Undrain("n1".into()))));
}

#[test]
fn stop_needs_a_service() {
    let mut app = connected_app(false);
    app.update(key('s')); // the node row is selected
    assert!(app.popup.is_none());
    assert!(app.status.clone().unwrap().text.contains("select a service"));
}

#[test]
fn readonly_refuses_and_hides_dangerous_keys() {
    let mut app = connected_app(true);
    select_service(&mut app, "paper");
    for k in ['s', 'r', 'd'] {
        assert!(app.update(key(k)).is_empty());
        assert!(app.popup.is_none(), "{k} must not ask in read-only mode");
        assert!(app.status.clone().unwrap().text.contains("read-only"));
    }
    assert!(keymap::visible(Mode::Cluster, true).all(|b| !b.dangerous));
    app.update(key('?'));
    assert_eq!(app.popup, Some(Popup::Help));
    app.update(key('x'));
    assert!(app.popup.is_none(), "any key closes help");
}

#[test]
fn no_commands_while_disconnected() {
    let mut app = connected_app(false);
    select_service(&mut app, "paper");
    app.update(key('s'));
    // The connection drops while the question is open.
    app.update(Action::Disconnected {
        url: URL.into(),
        error: "connection closed by lido".into(),
        attempt: 1,
        retry_in: Duration::from_millis(500),
        at: ts(),
    });
    assert!(app.update(key('y')).is_empty());
    assert!(app.status.clone().unwrap().text.contains("not connected"));
    app.update(key('s'));
    assert!(app.popup.is_none());
}

#[test]
fn quit_keys() {
    let mut app = connected_app(false);
    app.update(key('q'));
    assert!(app.should_quit);
    let mut app = connected_app(false);
    app.update(key('s'));
    app.update(Action::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)));
    assert!(app.should_quit, "Ctrl-C quits even from a popup");
}

#[test]
fn a_dropped_connection_forgets_pending_commands() {
    let mut app = connected_app(false);
    select_service(&mut app, "paper");
    app.update(key('s'));
    let Some(WatchCommand::Stop { .. }) = watch(app.update(key('y'))) else { panic!("no stop sent") };
    app.update(Action::Disconnected {
        url: URL.into(),
        error: "eof".into(),
        attempt: 1,
        retry_in: Duration::from_secs(1),
        at: ts(),
    });
    assert!(app.pending().is_empty());
    assert!(app.status.clone().unwrap().text.contains("before a reply to: stop service paper"));
    assert_eq!(app.connection.label(), "reconnecting [1]");
    assert!(app.cluster.is_some(), "the last picture is kept");
}

// ---- event application -----------------------------------------------------

#[test]
fn events_update_the_model() {
    let mut app = connected_app(false);
    // A new service on n1.
    app.update(event(
        11,
        ClusterEvent::ServiceChanged {
            service: service("k1", ServiceKind::Broker, "kraken", ServiceState::Starting, "n1"),
        },
    ));
    // An existing one changes state.
    let mut failed = service("sim", ServiceKind::Market, "", ServiceState::Failed, "n1");
    failed.restarts = 3;
    app.update(event(12, ClusterEvent::ServiceChanged { service: failed }));
    // One goes away.
    app.update(event(13, ClusterEvent::ServiceRemoved { name: "paper".into(), node: "n1".into() }));

    let cluster = app.cluster.as_ref().unwrap();
    let names: Vec<&str> = cluster.services().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["sim", "k1"]);
    assert_eq!(cluster.service("sim").unwrap().state, ServiceState::Failed);
    assert_eq!(cluster.service("sim").unwrap().restarts, 3);
    assert_eq!(cluster.service("k1").unwrap().service_type, "kraken");
    assert_eq!(app.seq, Some(13));
    assert_eq!(app.events.len(), 5, "connected, snapshot and three events are logged");
}

#[test]
fn a_service_moving_node_leaves_the_old_one() {
    let mut app = connected_app(false);
    app.update(event(
        11,
        ClusterEvent::ServiceChanged {
            service: service("paper", ServiceKind::Broker, "paper", ServiceState::Running, "n2"),
        },
    ));
    let cluster = app.cluster.as_ref().unwrap();
    assert_eq!(cluster.nodes.len(), 2, "an unseen node is added");
    assert!(cluster.nodes[0].services.iter().all(|s| s.name != "paper"));
    assert_eq!(cluster.nodes[1].services[0].name, "paper");
}

#[test]
fn node_changes_apply() {
    let mut app = connected_app(false);
    let load = NodeLoad { sessions: 9, streams: 8, open_orders: 7 };
    app.update(event(11, ClusterEvent::NodeChanged { id: "n1".into(), draining: true, load: load.clone() }));
    let n1 = &app.cluster.as_ref().unwrap().nodes[0];
    assert!(n1.draining);
    assert_eq!(n1.load, load);
}

#[test]
fn selection_follows_its_row_through_updates() {
    let mut app = connected_app(false);
    select_service(&mut app, "sim");
    assert_eq!(selected_key(&app), Some(RowKey::Service("sim".into())));
    app.update(event(11, ClusterEvent::ServiceRemoved { name: "paper".into(), node: "n1".into() }));
    assert_eq!(selected_key(&app), Some(RowKey::Service("sim".into())), "still on sim after a row above went");
    app.update(event(12, ClusterEvent::ServiceRemoved { name: "sim".into(), node: "n1".into() }));
    assert_eq!(
        selected_key(&app),
        Some(RowKey::Manager { node: "n1".into(), kind: ServiceKind::Trader }),
        "the same position when the selected row went"
    );
}

#[test]
fn a_gap_in_sequence_asks_for_a_fresh_snapshot() {
    let mut app = connected_app(false);
    let log = ClusterEvent::Log { level: "info".into(), message: "hello".into() };
    assert!(app.update(event(11, log.clone())).is_empty());
    let Some(WatchCommand::Snapshot { .. }) = watch(app.update(event(15, log))) else { panic!("expected a resync") };
}

#[test]
fn a_new_snapshot_replaces_the_picture() {
    let mut app = connected_app(false);
    let mut fresh = snapshot();
    fresh.nodes[0].services.truncate(1);
    app.update(Action::Message(WatchMessage::Snapshot { seq: 50, snapshot: fresh.clone() }));
    assert_eq!(app.cluster, Some(fresh));
    assert_eq!(app.seq, Some(50));
}

#[test]
fn the_event_log_is_bounded() {
    let mut app = connected_app(false);
    for seq in 11..11 + 2 * EVENT_LOG_LEN as u64 {
        app.update(event(seq, ClusterEvent::Log { level: "info".into(), message: format!("line {seq}") }));
    }
    assert_eq!(app.events.len(), EVENT_LOG_LEN);
    assert_eq!(app.events.back().unwrap().text, format!("line {}", 10 + 2 * EVENT_LOG_LEN));
}

// ---- drawing -----------------------------------------------------------------

#[test]
fn screen_shows_url_state_services_and_events() {
    let mut app = connected_app(false);
    app.update(event(11, ClusterEvent::Log { level: "warn".into(), message: "paper feed slow".into() }));
    let text = screen(&render(&app, 110, 24));
    for needle in [URL, "connected", "n1", "paper", "sim", "degraded", "running", "paper feed slow", "seq 11"] {
        assert!(text.contains(needle), "{needle:?} not on screen:\n{text}");
    }
}

#[test]
fn screen_while_reconnecting_keeps_the_picture() {
    let mut app = connected_app(false);
    app.update(Action::Disconnected {
        url: URL.into(),
        error: "connection closed by lido".into(),
        attempt: 3,
        retry_in: Duration::from_secs(2),
        at: ts(),
    });
    assert!(matches!(app.connection, Connection::Reconnecting { attempt: 3, .. }));
    let text = screen(&render(&app, 110, 24));
    assert!(text.contains("reconnecting [3]"), "{text}");
    assert!(text.contains("last known"), "{text}");
    assert!(text.contains("paper"), "the last picture stays:\n{text}");
}

#[test]
fn help_popup_lists_keys_and_readonly_hides_dangerous_ones() {
    let mut app = connected_app(false);
    app.update(key('?'));
    let text = screen(&render(&app, 110, 24));
    assert!(text.contains("stop the selected service"), "{text}");
    assert!(text.contains("quit"), "{text}");

    let mut app = connected_app(true);
    app.update(key('?'));
    let text = screen(&render(&app, 110, 24));
    assert!(!text.contains("stop the selected service"), "{text}");
    assert!(text.contains("READ-ONLY"), "{text}");
}

#[test]
fn confirm_popup_is_drawn() {
    let mut app = connected_app(false);
    select_service(&mut app, "paper");
    app.update(key('s'));
    let text = screen(&render(&app, 110, 24));
    assert!(text.contains("Stop service paper?"), "{text}");
}

#[test]
fn tiny_terminals_do_not_panic() {
    let mut app = connected_app(false);
    app.update(key('?'));
    for (w, h) in [(1, 1), (10, 3), (20, 8), (40, 12)] {
        render(&app, w, h);
    }
}

#[test]
fn main_screen_snapshot() {
    let mut app = connected_app(false);
    select_service(&mut app, "paper");
    app.update(event(
        11,
        ClusterEvent::ServiceChanged {
            service: service("k1", ServiceKind::Broker, "kraken", ServiceState::Starting, "n1"),
        },
    ));
    insta::assert_snapshot!(screen(&render(&app, 100, 20)));
}
