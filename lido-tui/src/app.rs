//! The console's state, changed only by [`App::update`]; drawing reads it.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind};
use lido_shared::cluster::{ClusterEvent, ClusterSnapshot, NodeInfo, ServiceInfo, WatchCommand, WatchMessage};

use crate::action::Action;
use crate::keymap::{self, KeyAction};
use crate::model;

/// How many event lines the log keeps.
pub const EVENT_LOG_LEN: usize = 200;

/// The state of the link to the IM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Connection {
    Connecting,
    Connected,
    Reconnecting { attempt: u32, error: String, retry_in: Duration },
}

impl Connection {
    pub fn label(&self) -> String {
        match self {
            Self::Connecting => "connecting".into(),
            Self::Connected => "connected".into(),
            Self::Reconnecting { attempt, .. } => format!("reconnecting [{attempt}]"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    Success,
    Warn,
    Error,
}

/// One line of the event log.
#[derive(Clone, Debug, PartialEq)]
pub struct LogLine {
    pub ts: DateTime<Utc>,
    pub kind: String,
    pub text: String,
    pub level: Level,
}

/// The status line under the screen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub text: String,
    pub level: Level,
}

/// A change the operator asked for, before it has an id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Intent {
    Stop(String),
    Restart(String),
    Drain(String),
    Undrain(String),
}

impl Intent {
    pub fn describe(&self) -> String {
        match self {
            Self::Stop(name) => format!("stop service {name}"),
            Self::Restart(name) => format!("restart service {name}"),
            Self::Drain(node) => format!("drain node {node}"),
            Self::Undrain(node) => format!("undrain node {node}"),
        }
    }

    fn command(&self, id: u64) -> WatchCommand {
        match self.clone() {
            Self::Stop(name) => WatchCommand::Stop { id, name },
            Self::Restart(name) => WatchCommand::Restart { id, name },
            Self::Drain(node) => WatchCommand::Drain { id, node },
            Self::Undrain(node) => WatchCommand::Undrain { id, node },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Popup {
    Help,
    /// `y` sends the intent, anything else cancels.
    Confirm(Intent),
}

/// Which row is selected, by identity (so updates do not move it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RowKey {
    Node(String),
    Service(String),
}

/// A row of the nodes+services tree.
#[derive(Clone, Copy, Debug)]
pub enum Row<'a> {
    Node(&'a NodeInfo),
    Service(&'a NodeInfo, &'a ServiceInfo),
}

impl Row<'_> {
    /// How wide its NAME cell is drawn (tree prefix included).
    pub fn name_width(&self) -> usize {
        match self {
            Self::Node(n) => n.id.chars().count() + 2,
            Self::Service(_, s) => s.name.chars().count() + 2,
        }
    }

    pub fn key(&self) -> RowKey {
        match self {
            Self::Node(n) => RowKey::Node(n.id.clone()),
            Self::Service(_, s) => RowKey::Service(s.name.clone()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct App {
    /// Every `--url`, in rotation order.
    pub urls: Vec<String>,
    /// The URL connected to or being tried.
    pub url: String,
    pub connection: Connection,
    pub readonly: bool,
    /// The last picture; kept (and shown greyed) while reconnecting.
    pub cluster: Option<ClusterSnapshot>,
    pub seq: Option<u64>,
    pub events: VecDeque<LogLine>,
    pub status: Option<Status>,
    pub popup: Option<Popup>,
    pub should_quit: bool,
    selected: usize,
    selected_key: Option<RowKey>,
    pending: BTreeMap<u64, String>,
    next_id: u64,
}

impl App {
    pub fn new(urls: Vec<String>, readonly: bool) -> Self {
        let url = urls.first().cloned().unwrap_or_default();
        Self {
            urls,
            url,
            connection: Connection::Connecting,
            readonly,
            cluster: None,
            seq: None,
            events: VecDeque::new(),
            status: None,
            popup: None,
            should_quit: false,
            selected: 0,
            selected_key: None,
            pending: BTreeMap::new(),
            next_id: 1,
        }
    }

    pub fn connected(&self) -> bool {
        self.connection == Connection::Connected
    }

    /// The tree: each node followed by its services.
    pub fn rows(&self) -> Vec<Row<'_>> {
        let Some(cluster) = &self.cluster else {
            return Vec::new();
        };
        let mut rows = Vec::new();
        for node in &cluster.nodes {
            rows.push(Row::Node(node));
            rows.extend(node.services.iter().map(|s| Row::Service(node, s)));
        }
        rows
    }

    pub fn selected(&self) -> usize {
        self.selected
    }

    pub fn selected_row(&self) -> Option<Row<'_>> {
        self.rows().get(self.selected).copied()
    }

    /// Commands sent and not yet answered, by id.
    pub fn pending(&self) -> &BTreeMap<u64, String> {
        &self.pending
    }

    /// Applies one action; returns a command to send on the watch socket.
    pub fn update(&mut self, action: Action) -> Option<WatchCommand> {
        match action {
            Action::Key(key) => self.on_key(key),
            Action::Resize => None,
            Action::Connecting { url, attempt } => {
                self.url = url;
                if attempt == 0 && self.cluster.is_none() {
                    self.connection = Connection::Connecting;
                }
                None
            }
            Action::Connected { url, at } => {
                self.log(at, "connected", format!("watching {url}"), Level::Success);
                self.url = url;
                self.connection = Connection::Connected;
                None
            }
            Action::Disconnected { url, error, attempt, retry_in, at } => {
                if self.connected() {
                    self.log(at, "disconnected", format!("{url}: {error}"), Level::Warn);
                }
                if !self.pending.is_empty() {
                    let lost: Vec<String> = std::mem::take(&mut self.pending).into_values().collect();
                    self.set_status(format!("connection lost before a reply to: {}", lost.join(", ")), Level::Warn);
                }
                self.url = url;
                self.connection = Connection::Reconnecting { attempt, error, retry_in };
                None
            }
            Action::Message(message) => self.on_message(message),
            Action::CommandFailed { id, error } => {
                let what = self.pending.remove(&id).unwrap_or_else(|| format!("command {id}"));
                self.set_status(format!("{what}: not sent: {error}"), Level::Error);
                None
            }
        }
    }

    fn on_message(&mut self, message: WatchMessage) -> Option<WatchCommand> {
        match message {
            WatchMessage::Snapshot { seq, snapshot } => {
                let services = snapshot.services().count();
                let text = format!("{} node(s), {services} service(s)", snapshot.nodes.len());
                self.log(snapshot.ts, "snapshot", text, Level::Info);
                self.cluster = Some(snapshot);
                self.seq = Some(seq);
                self.sync_selection();
                None
            }
            WatchMessage::Event { seq, ts, event } => {
                let gap = self.seq.is_some_and(|last| seq > last + 1);
                self.seq = Some(seq);
                let (kind, text, level) = describe(&event);
                self.log(ts, kind, text, level);
                if let Some(cluster) = &mut self.cluster {
                    model::apply(cluster, &event);
                    self.sync_selection();
                }
                if gap {
                    // Events were lost: re-sync from a fresh snapshot.
                    self.log(ts, "resync", "missed events; asking for a fresh snapshot".into(), Level::Warn);
                    let id = self.take_id();
                    return Some(WatchCommand::Snapshot { id });
                }
                None
            }
            WatchMessage::Reply { id, ok, service, error } => {
                let what = self.pending.remove(&id).unwrap_or_else(|| format!("command {id}"));
                if ok {
                    let state = service.map(|s| format!(" ({} is {})", s.name, s.state)).unwrap_or_default();
                    self.set_status(format!("{what}: ok{state}"), Level::Success);
                } else {
                    let why =
                        error.map_or_else(|| "no reason given".to_string(), |e| format!("{} ({})", e.message, e.code));
                    self.set_status(format!("{what}: failed: {why}"), Level::Error);
                }
                None
            }
            WatchMessage::Error { error } => {
                self.set_status(format!("lido: {} ({})", error.message, error.code), Level::Error);
                None
            }
        }
    }

    fn on_key(&mut self, key: KeyEvent) -> Option<WatchCommand> {
        if key.kind != KeyEventKind::Press {
            return None;
        }
        if keymap::Key::ctrl('c').matches(&key) {
            // Ctrl-C quits from anywhere, popups included.
            self.should_quit = true;
            return None;
        }
        match self.popup.take() {
            Some(Popup::Confirm(intent)) => {
                if key.code == KeyCode::Char('y') || key.code == KeyCode::Char('Y') {
                    return self.send(intent);
                }
                self.set_status(format!("{}: cancelled", intent.describe()), Level::Info);
                return None;
            }
            // Any key closes help, and does nothing else.
            Some(Popup::Help) => return None,
            None => {}
        }
        let binding = keymap::lookup(&key)?;
        if binding.dangerous && self.readonly {
            self.set_status(format!("read-only: {} is disabled", binding.description), Level::Warn);
            return None;
        }
        let len = self.rows().len();
        match binding.action {
            KeyAction::Down => self.select(self.selected.saturating_add(1).min(len.saturating_sub(1))),
            KeyAction::Up => self.select(self.selected.saturating_sub(1)),
            KeyAction::Top => self.select(0),
            KeyAction::Bottom => self.select(len.saturating_sub(1)),
            KeyAction::Help => self.popup = Some(Popup::Help),
            KeyAction::Quit => self.should_quit = true,
            KeyAction::Stop => self.ask(|row| match row {
                Row::Service(_, s) => Ok(Intent::Stop(s.name.clone())),
                Row::Node(_) => Err("select a service to stop"),
            }),
            KeyAction::Restart => self.ask(|row| match row {
                Row::Service(_, s) => Ok(Intent::Restart(s.name.clone())),
                Row::Node(_) => Err("select a service to restart"),
            }),
            KeyAction::Drain => self.ask(|row| {
                let node = match row {
                    Row::Node(n) | Row::Service(n, _) => n,
                };
                Ok(if node.draining { Intent::Undrain(node.id.clone()) } else { Intent::Drain(node.id.clone()) })
            }),
        }
        None
    }

    /// Opens the confirmation for what `intent` makes of the selected row.
    fn ask(&mut self, intent: impl FnOnce(Row<'_>) -> Result<Intent, &'static str>) {
        let Some(row) = self.selected_row() else {
            self.set_status("nothing selected".into(), Level::Warn);
            return;
        };
        match intent(row) {
            Ok(intent) if self.connected() => self.popup = Some(Popup::Confirm(intent)),
            Ok(intent) => self.set_status(format!("not connected: cannot {} now", intent.describe()), Level::Warn),
            Err(why) => self.set_status(why.into(), Level::Warn),
        }
    }

    fn send(&mut self, intent: Intent) -> Option<WatchCommand> {
        if !self.connected() {
            self.set_status(format!("not connected: cannot {} now", intent.describe()), Level::Warn);
            return None;
        }
        let id = self.take_id();
        let what = intent.describe();
        self.set_status(format!("{what}: sent, waiting for the reply…"), Level::Info);
        self.pending.insert(id, what);
        Some(intent.command(id))
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn select(&mut self, index: usize) {
        self.selected = index;
        self.selected_key = self.rows().get(index).map(Row::key);
    }

    /// Keeps the selection on the same node/service after the model changed,
    /// or on the same position when that row is gone.
    fn sync_selection(&mut self) {
        let rows = self.rows();
        let found = self.selected_key.as_ref().and_then(|key| rows.iter().position(|r| &r.key() == key));
        let index = found.unwrap_or(self.selected.min(rows.len().saturating_sub(1)));
        self.select(index);
    }

    fn set_status(&mut self, text: String, level: Level) {
        self.status = Some(Status { text, level });
    }

    fn log(&mut self, ts: DateTime<Utc>, kind: &str, text: String, level: Level) {
        if self.events.len() == EVENT_LOG_LEN {
            self.events.pop_front();
        }
        self.events.push_back(LogLine { ts, kind: kind.to_string(), text, level });
    }
}

/// An event's log kind, text and level.
fn describe(event: &ClusterEvent) -> (&'static str, String, Level) {
    match event {
        ClusterEvent::ServiceChanged { service: s } => {
            let kind =
                if s.service_type.is_empty() { s.kind.to_string() } else { format!("{} {}", s.kind, s.service_type) };
            let mut text = format!("{} ({kind}) on {}: {}", s.name, s.node, s.state);
            if let Some(detail) = s.detail.as_deref().filter(|d| !d.is_empty()) {
                text.push_str(&format!(" — {detail}"));
            }
            let level = match s.state {
                lido_shared::cluster::ServiceState::Failed => Level::Error,
                lido_shared::cluster::ServiceState::Degraded => Level::Warn,
                _ => Level::Info,
            };
            ("service", text, level)
        }
        ClusterEvent::ServiceRemoved { name, node } => ("removed", format!("{name} on {node}"), Level::Info),
        ClusterEvent::NodeChanged { id, draining, load } => (
            "node",
            format!(
                "{id}{}: sessions {} streams {} orders {}",
                if *draining { " draining" } else { "" },
                load.sessions,
                load.streams,
                load.open_orders
            ),
            Level::Info,
        ),
        ClusterEvent::Log { level, message } => {
            let level = match level.as_str() {
                "error" => Level::Error,
                "warn" | "warning" => Level::Warn,
                _ => Level::Info,
            };
            ("log", message.clone(), level)
        }
    }
}
