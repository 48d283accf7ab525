//! The console's state, changed only by [`App::update`]; drawing reads it.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind};
use lido_shared::cluster::{
    ClusterEvent, ClusterSnapshot, NodeInfo, ServiceInfo, ServiceKind, ServiceState, SpawnRequest, WatchCommand,
    WatchMessage,
};

use crate::action::Action;
use crate::command::{self, Command};
use crate::effect::{Effect, FeedTarget};
use crate::form::SpawnForm;
use crate::keymap::{self, KeyAction, Mode};
use crate::market::{FeedState, Loaded, MarketView};
use crate::model;
use crate::rates::Rates;

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
#[derive(Clone, Debug, PartialEq)]
pub enum Intent {
    Spawn(SpawnRequest),
    Stop(String),
    Restart(String),
    Drain(String),
    Undrain(String),
}

impl Intent {
    pub fn describe(&self) -> String {
        match self {
            Self::Spawn(request) => command::describe_spawn(request),
            Self::Stop(name) => format!("stop service {name}"),
            Self::Restart(name) => format!("restart service {name}"),
            Self::Drain(node) => format!("drain node {node}"),
            Self::Undrain(node) => format!("undrain node {node}"),
        }
    }

    fn command(&self, id: u64) -> WatchCommand {
        match self.clone() {
            Self::Spawn(request) => WatchCommand::Spawn { id, request },
            Self::Stop(name) => WatchCommand::Stop { id, name },
            Self::Restart(name) => WatchCommand::Restart { id, name },
            Self::Drain(node) => WatchCommand::Drain { id, node },
            Self::Undrain(node) => WatchCommand::Undrain { id, node },
        }
    }
}

/// Which screen is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Screen {
    /// Nodes, services, rates and the event log.
    Cluster,
    /// Quotes, book and order flow of one market and symbol.
    Market,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Popup {
    Help,
    /// `y` sends the intent, anything else cancels.
    Confirm(Intent),
    /// The spawn form; Enter asks for confirmation.
    Spawn(SpawnForm),
    /// The market/symbol list; `selected` indexes [`MarketView::choices`].
    Picker {
        selected: usize,
    },
}

/// The line being typed on the status line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prompt {
    /// `/`: the service filter, applied as it is typed.
    Filter(String),
    /// `:`: a command, run on Enter.
    Command(String),
}

/// Which row is selected, by identity (so updates do not move it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RowKey {
    Node(String),
    /// A node's manager of one service kind.
    Manager {
        node: String,
        kind: ServiceKind,
    },
    Service(String),
}

/// The manager of one kind of service on a node (BrokerManager,
/// MarketManager, TraderManager), as a tree row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Manager {
    pub kind: ServiceKind,
    /// As the snapshot reported it; `None` when the node did not list this
    /// manager but has services of its kind.
    pub state: Option<ServiceState>,
    /// Its services on the node now (kept live by events, unlike the
    /// snapshot's count).
    pub services: usize,
}

impl Manager {
    /// The kinds in tree order.
    pub const KINDS: [ServiceKind; 3] = [ServiceKind::Broker, ServiceKind::Market, ServiceKind::Trader];

    /// `broker manager`, `market manager`, `trader manager`.
    pub fn label(&self) -> String {
        format!("{} manager", self.kind)
    }

    /// The node's managers in tree order: every one it lists, and one for
    /// any kind of service it runs without listing its manager.
    pub fn of(node: &NodeInfo) -> Vec<Manager> {
        Self::KINDS
            .into_iter()
            .filter_map(|kind| {
                let info = node.managers.iter().find(|m| m.kind == kind);
                let services = node.services.iter().filter(|s| s.kind == kind).count();
                (info.is_some() || services > 0).then(|| Manager { kind, state: info.map(|m| m.state), services })
            })
            .collect()
    }
}

/// A row of the node → manager → service tree.
#[derive(Clone, Copy, Debug)]
pub enum Row<'a> {
    Node(&'a NodeInfo),
    Manager(&'a NodeInfo, Manager),
    Service(&'a NodeInfo, &'a ServiceInfo),
}

impl Row<'_> {
    /// How wide its NAME cell is drawn (tree prefix included).
    pub fn name_width(&self) -> usize {
        match self {
            Self::Node(n) => n.id.chars().count() + 2,
            Self::Manager(_, m) => m.label().chars().count() + 4,
            Self::Service(_, s) => s.name.chars().count() + 4,
        }
    }

    pub fn key(&self) -> RowKey {
        match self {
            Self::Node(n) => RowKey::Node(n.id.clone()),
            Self::Manager(n, m) => RowKey::Manager { node: n.id.clone(), kind: m.kind },
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
    pub screen: Screen,
    pub prompt: Option<Prompt>,
    /// Service rows must contain this (any case); empty shows all.
    pub filter: String,
    pub rates: Rates,
    pub market: MarketView,
    pub should_quit: bool,
    selected: usize,
    selected_key: Option<RowKey>,
    pending: BTreeMap<u64, String>,
    /// Commands the console sends on its own (resync, order follow): no
    /// status line unless they fail.
    quiet: BTreeMap<u64, String>,
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
            screen: Screen::Cluster,
            prompt: None,
            filter: String::new(),
            rates: Rates::default(),
            market: MarketView::default(),
            should_quit: false,
            selected: 0,
            selected_key: None,
            pending: BTreeMap::new(),
            quiet: BTreeMap::new(),
            next_id: 1,
        }
    }

    pub fn connected(&self) -> bool {
        self.connection == Connection::Connected
    }

    /// The bindings that apply now.
    pub fn mode(&self) -> Mode {
        match &self.popup {
            Some(Popup::Spawn(_)) => Mode::Form,
            Some(Popup::Picker { .. }) => Mode::Picker,
            _ => self.screen_mode(),
        }
    }

    /// The bindings of the current screen (what `?` lists).
    pub fn screen_mode(&self) -> Mode {
        match self.screen {
            Screen::Cluster => Mode::Cluster,
            Screen::Market => Mode::Market,
        }
    }

    /// The tree: each node, then each of its managers (broker, market,
    /// trader) followed by that manager's services, narrowed by the filter.
    /// A node whose id matches keeps everything under it, a manager whose
    /// label matches keeps its services, and a matching service keeps its
    /// manager and node rows.
    pub fn rows(&self) -> Vec<Row<'_>> {
        let Some(cluster) = &self.cluster else {
            return Vec::new();
        };
        let needle = self.filter.trim().to_lowercase();
        let mut rows = Vec::new();
        for node in &cluster.nodes {
            let whole = needle.is_empty() || node.id.to_lowercase().contains(&needle);
            let mut children = Vec::new();
            for manager in Manager::of(node) {
                let all = whole || manager.label().contains(&needle);
                let services: Vec<_> = node
                    .services
                    .iter()
                    .filter(|s| s.kind == manager.kind && (all || service_matches(s, &needle)))
                    .collect();
                if !all && services.is_empty() {
                    continue;
                }
                children.push(Row::Manager(node, manager));
                children.extend(services.into_iter().map(|s| Row::Service(node, s)));
            }
            if !whole && children.is_empty() {
                continue;
            }
            rows.push(Row::Node(node));
            rows.extend(children);
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

    /// Applies one action; returns what to do outside (commands to send,
    /// market data to fetch).
    pub fn update(&mut self, action: Action) -> Vec<Effect> {
        match action {
            Action::Key(key) => self.on_key(key),
            Action::Resize => Vec::new(),
            Action::Connecting { url, attempt } => {
                self.url = url;
                if attempt == 0 && self.cluster.is_none() {
                    self.connection = Connection::Connecting;
                }
                Vec::new()
            }
            Action::Connected { url, at } => {
                self.log(at, "connected", format!("watching {url}"), Level::Success);
                self.url = url;
                self.connection = Connection::Connected;
                // A new socket: the order flow must be asked for again.
                if self.screen == Screen::Market {
                    return self.follow_orders(true);
                }
                Vec::new()
            }
            Action::Disconnected { url, error, attempt, retry_in, at } => {
                if self.connected() {
                    self.log(at, "disconnected", format!("{url}: {error}"), Level::Warn);
                }
                if !self.pending.is_empty() {
                    let lost: Vec<String> = std::mem::take(&mut self.pending).into_values().collect();
                    self.set_status(format!("connection lost before a reply to: {}", lost.join(", ")), Level::Warn);
                }
                self.quiet.clear();
                self.url = url;
                self.connection = Connection::Reconnecting { attempt, error, retry_in };
                Vec::new()
            }
            Action::Message(message) => self.on_message(message),
            Action::CommandFailed { id, error } => {
                if let Some(what) = self.quiet.remove(&id) {
                    self.log(Utc::now(), "command", format!("{what}: not sent: {error}"), Level::Warn);
                    return Vec::new();
                }
                let what = self.pending.remove(&id).unwrap_or_else(|| format!("command {id}"));
                self.set_status(format!("{what}: not sent: {error}"), Level::Error);
                Vec::new()
            }
            Action::Markets(result) => {
                self.market.markets = match result {
                    Ok(markets) => Loaded::Ready(markets),
                    Err(error) => Loaded::Failed(error),
                };
                if let Some(Popup::Picker { selected }) = &mut self.popup {
                    *selected = (*selected).min(self.market.choices().len().saturating_sub(1));
                }
                Vec::new()
            }
            Action::Feed { market, symbol, update } => {
                if self.market.is_target(&market, &symbol) {
                    self.market.apply(update);
                }
                Vec::new()
            }
        }
    }

    fn on_message(&mut self, message: WatchMessage) -> Vec<Effect> {
        match message {
            WatchMessage::Snapshot { seq, snapshot } => {
                let services = snapshot.services().count();
                let text = format!("{} node(s), {services} service(s)", snapshot.nodes.len());
                self.log(snapshot.ts, "snapshot", text, Level::Info);
                self.cluster = Some(snapshot);
                self.seq = Some(seq);
                self.sync_selection();
                Vec::new()
            }
            WatchMessage::Event { seq, ts, event } => {
                let gap = self.seq.is_some_and(|last| seq > last + 1);
                self.seq = Some(seq);
                match &event {
                    // Once a second: history for the sparklines, not the log.
                    ClusterEvent::Metrics { services, .. } => self.rates.record(services),
                    ClusterEvent::ServiceRemoved { name, .. } => {
                        self.rates.forget(name);
                        let (kind, text, level) = describe(&event);
                        self.log(ts, kind, text, level);
                    }
                    _ => {
                        let (kind, text, level) = describe(&event);
                        self.log(ts, kind, text, level);
                    }
                }
                if let Some(cluster) = &mut self.cluster {
                    model::apply(cluster, &event);
                    self.sync_selection();
                }
                if gap {
                    // Events were lost: re-sync from a fresh snapshot.
                    self.log(ts, "resync", "missed events; asking for a fresh snapshot".into(), Level::Warn);
                    return self.quiet_command("resync", |id| WatchCommand::Snapshot { id });
                }
                Vec::new()
            }
            WatchMessage::Order { node, order } => {
                self.market.record_order(node, order);
                Vec::new()
            }
            WatchMessage::Reply { id, ok, service, error } => {
                let why = |error: Option<lido_shared::ErrorDetail>| {
                    error.map_or_else(|| "no reason given".to_string(), |e| format!("{} ({})", e.message, e.code))
                };
                if let Some(what) = self.quiet.remove(&id) {
                    if !ok {
                        self.set_status(format!("{what}: failed: {}", why(error)), Level::Warn);
                    }
                    return Vec::new();
                }
                let what = self.pending.remove(&id).unwrap_or_else(|| format!("command {id}"));
                if ok {
                    let state = service.map(|s| format!(" ({} is {})", s.name, s.state)).unwrap_or_default();
                    self.set_status(format!("{what}: ok{state}"), Level::Success);
                } else {
                    self.set_status(format!("{what}: failed: {}", why(error)), Level::Error);
                }
                Vec::new()
            }
            WatchMessage::Error { error } => {
                self.set_status(format!("lido: {} ({})", error.message, error.code), Level::Error);
                Vec::new()
            }
        }
    }

    fn on_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        if key.kind != KeyEventKind::Press {
            return Vec::new();
        }
        if keymap::Key::ctrl('c').matches(&key) {
            // Ctrl-C quits from anywhere, popups and prompts included.
            self.should_quit = true;
            return Vec::new();
        }
        if let Some(prompt) = self.prompt.take() {
            return self.on_prompt_key(prompt, key);
        }
        match self.popup.take() {
            Some(Popup::Confirm(intent)) => {
                if key.code == KeyCode::Char('y') || key.code == KeyCode::Char('Y') {
                    return self.send(intent);
                }
                self.set_status(format!("{}: cancelled", intent.describe()), Level::Info);
                return Vec::new();
            }
            // Any key closes help, and does nothing else.
            Some(Popup::Help) => return Vec::new(),
            Some(Popup::Spawn(form)) => return self.on_form_key(form, key),
            Some(Popup::Picker { selected }) => return self.on_picker_key(selected, key),
            None => {}
        }
        let Some(binding) = keymap::lookup(self.screen_mode(), &key) else {
            return Vec::new();
        };
        if binding.dangerous && self.readonly {
            self.set_status(format!("read-only: {} is disabled", binding.description), Level::Warn);
            return Vec::new();
        }
        let len = self.rows().len();
        match binding.action {
            KeyAction::Down => self.select(self.selected.saturating_add(1).min(len.saturating_sub(1))),
            KeyAction::Up => self.select(self.selected.saturating_sub(1)),
            KeyAction::Top => self.select(0),
            KeyAction::Bottom => self.select(len.saturating_sub(1)),
            KeyAction::Help => self.popup = Some(Popup::Help),
            KeyAction::Quit => self.should_quit = true,
            KeyAction::Spawn => self.popup = Some(Popup::Spawn(SpawnForm::default())),
            KeyAction::Stop => self.ask(|row| match row {
                Row::Service(_, s) => Ok(Intent::Stop(s.name.clone())),
                Row::Manager(..) => Err("a manager is not stopped: select one of its services"),
                Row::Node(_) => Err("select a service to stop"),
            }),
            KeyAction::Restart => self.ask(|row| match row {
                Row::Service(_, s) => Ok(Intent::Restart(s.name.clone())),
                Row::Manager(..) => Err("a manager is not restarted: select one of its services"),
                Row::Node(_) => Err("select a service to restart"),
            }),
            KeyAction::Drain => self.ask(|row| {
                let node = match row {
                    Row::Node(n) | Row::Service(n, _) => n,
                    Row::Manager(..) => return Err("select the node to drain or undrain it"),
                };
                Ok(if node.draining { Intent::Undrain(node.id.clone()) } else { Intent::Drain(node.id.clone()) })
            }),
            KeyAction::Market => return self.open_market(None),
            KeyAction::Pick => return self.open_picker(),
            KeyAction::Back => return self.leave_market(),
            KeyAction::Filter => self.prompt = Some(Prompt::Filter(self.filter.clone())),
            KeyAction::Command => self.prompt = Some(Prompt::Command(String::new())),
            KeyAction::Cancel => {
                if !self.filter.is_empty() {
                    self.set_filter(String::new());
                    self.set_status("filter cleared".into(), Level::Info);
                }
            }
            KeyAction::Select
            | KeyAction::NextField
            | KeyAction::PrevField
            | KeyAction::NextChoice
            | KeyAction::PrevChoice
            | KeyAction::Submit => {}
        }
        Vec::new()
    }

    /// Line editing on the status line; Enter applies, Esc abandons.
    fn on_prompt_key(&mut self, mut prompt: Prompt, key: KeyEvent) -> Vec<Effect> {
        let text = match &mut prompt {
            Prompt::Filter(text) | Prompt::Command(text) => text,
        };
        match key.code {
            KeyCode::Esc => {
                if matches!(prompt, Prompt::Filter(_)) {
                    self.set_filter(String::new());
                }
                return Vec::new();
            }
            KeyCode::Enter => {
                return match prompt {
                    Prompt::Filter(_) => Vec::new(),
                    Prompt::Command(line) => self.run_command(&line),
                };
            }
            KeyCode::Backspace => {
                text.pop();
            }
            KeyCode::Char(c) if !key.modifiers.contains(crossterm::event::KeyModifiers::CONTROL) => text.push(c),
            _ => {}
        }
        if let Prompt::Filter(text) = &prompt {
            self.set_filter(text.clone());
        }
        self.prompt = Some(prompt);
        Vec::new()
    }

    fn run_command(&mut self, line: &str) -> Vec<Effect> {
        let command = match command::parse(line) {
            Ok(command) => command,
            Err(error) => {
                self.set_status(error, Level::Error);
                return Vec::new();
            }
        };
        if command.dangerous() && self.readonly {
            self.set_status(format!("read-only: :{} is disabled", line.trim()), Level::Warn);
            return Vec::new();
        }
        match command {
            Command::Spawn(None) => self.popup = Some(Popup::Spawn(SpawnForm::default())),
            Command::Spawn(Some(request)) => self.confirm(Intent::Spawn(request)),
            Command::Stop(name) => self.confirm(Intent::Stop(name)),
            Command::Restart(name) => self.confirm(Intent::Restart(name)),
            Command::Drain(node) => self.confirm(Intent::Drain(node)),
            Command::Undrain(node) => self.confirm(Intent::Undrain(node)),
            Command::Market(target) => return self.open_market(target),
            Command::Cluster => return self.leave_market(),
            Command::Filter(text) => self.set_filter(text),
            Command::Help => self.popup = Some(Popup::Help),
            Command::Quit => self.should_quit = true,
        }
        Vec::new()
    }

    fn on_form_key(&mut self, mut form: SpawnForm, key: KeyEvent) -> Vec<Effect> {
        match keymap::lookup(Mode::Form, &key).map(|b| b.action) {
            Some(KeyAction::Submit) => match form.request() {
                Ok(request) if self.connected() => {
                    self.popup = Some(Popup::Confirm(Intent::Spawn(request)));
                    return Vec::new();
                }
                Ok(_) => form.error = Some("not connected: cannot spawn now".into()),
                Err(error) => form.error = Some(error),
            },
            Some(KeyAction::Cancel) => {
                self.set_status("spawn: cancelled".into(), Level::Info);
                return Vec::new();
            }
            Some(KeyAction::NextField) => form.next_field(),
            Some(KeyAction::PrevField) => form.prev_field(),
            Some(KeyAction::NextChoice) => form.cycle_kind(true),
            Some(KeyAction::PrevChoice) => form.cycle_kind(false),
            _ => match key.code {
                KeyCode::Char(c) if !key.modifiers.contains(crossterm::event::KeyModifiers::CONTROL) => form.input(c),
                KeyCode::Backspace => form.backspace(),
                _ => {}
            },
        }
        self.popup = Some(Popup::Spawn(form));
        Vec::new()
    }

    fn on_picker_key(&mut self, selected: usize, key: KeyEvent) -> Vec<Effect> {
        let choices = self.market.choices();
        let last = choices.len().saturating_sub(1);
        let selected = match keymap::lookup(Mode::Picker, &key).map(|b| b.action) {
            Some(KeyAction::Down) => selected.saturating_add(1).min(last),
            Some(KeyAction::Up) => selected.saturating_sub(1),
            Some(KeyAction::Select) => match choices.into_iter().nth(selected) {
                Some((market, symbol)) => return self.watch_market(market, symbol),
                None => selected,
            },
            Some(KeyAction::Cancel) => return Vec::new(),
            _ => selected,
        };
        self.popup = Some(Popup::Picker { selected });
        Vec::new()
    }

    /// Shows the market view; follows `target` if given, else resumes the
    /// last one, else opens the picker.
    fn open_market(&mut self, target: Option<(String, String)>) -> Vec<Effect> {
        let mut effects = Vec::new();
        let entering = self.screen != Screen::Market;
        self.screen = Screen::Market;
        if entering {
            effects.extend(self.follow_orders(true));
        }
        match target {
            Some((market, symbol)) => effects.extend(self.watch_market(market, symbol)),
            None => match self.market.target.clone() {
                Some((market, symbol)) if entering => effects.extend(self.watch_market(market, symbol)),
                Some(_) => {}
                None => effects.extend(self.open_picker()),
            },
        }
        effects
    }

    fn leave_market(&mut self) -> Vec<Effect> {
        if self.screen != Screen::Market {
            return Vec::new();
        }
        self.screen = Screen::Cluster;
        self.market.feed = FeedState::Idle;
        let mut effects = vec![Effect::Feed(None)];
        effects.extend(self.follow_orders(false));
        effects
    }

    /// Opens the picker, (re)loading the market list.
    fn open_picker(&mut self) -> Vec<Effect> {
        let choices = self.market.choices();
        let selected =
            self.market.target.as_ref().and_then(|target| choices.iter().position(|c| c == target)).unwrap_or(0);
        self.popup = Some(Popup::Picker { selected });
        if self.market.markets == Loaded::Loading {
            return Vec::new();
        }
        if !matches!(self.market.markets, Loaded::Ready(_)) {
            self.market.markets = Loaded::Loading;
        }
        vec![Effect::LoadMarkets { api_url: self.url.clone() }]
    }

    fn watch_market(&mut self, market: String, symbol: String) -> Vec<Effect> {
        let api_url = self.api_url_for(&market);
        self.market.set_target(market.clone(), symbol.clone());
        vec![Effect::Feed(Some(FeedTarget { api_url, market, symbol }))]
    }

    /// The algo API serving `market`: its node's, else the IM's own URL
    /// (the embedded default serves both on one address).
    fn api_url_for(&self, market: &str) -> String {
        self.cluster
            .iter()
            .flat_map(|c| c.nodes.iter())
            .find(|n| n.services.iter().any(|s| s.kind == ServiceKind::Market && s.name == market))
            .map(|n| n.api_url.clone())
            .filter(|url| !url.is_empty())
            .unwrap_or_else(|| self.url.clone())
    }

    fn follow_orders(&mut self, orders: bool) -> Vec<Effect> {
        if !self.connected() {
            return Vec::new();
        }
        let what = if orders { "follow order flow" } else { "unfollow order flow" };
        self.quiet_command(what, |id| WatchCommand::Follow { id, orders })
    }

    fn quiet_command(&mut self, what: &str, command: impl FnOnce(u64) -> WatchCommand) -> Vec<Effect> {
        let id = self.take_id();
        self.quiet.insert(id, what.to_string());
        vec![Effect::Watch(command(id))]
    }

    /// Opens the confirmation for what `intent` makes of the selected row.
    fn ask(&mut self, intent: impl FnOnce(Row<'_>) -> Result<Intent, &'static str>) {
        let Some(row) = self.selected_row() else {
            self.set_status("nothing selected".into(), Level::Warn);
            return;
        };
        match intent(row) {
            Ok(intent) => self.confirm(intent),
            Err(why) => self.set_status(why.into(), Level::Warn),
        }
    }

    fn confirm(&mut self, intent: Intent) {
        if self.connected() {
            self.popup = Some(Popup::Confirm(intent));
        } else {
            self.set_status(format!("not connected: cannot {} now", intent.describe()), Level::Warn);
        }
    }

    fn send(&mut self, intent: Intent) -> Vec<Effect> {
        if !self.connected() {
            self.set_status(format!("not connected: cannot {} now", intent.describe()), Level::Warn);
            return Vec::new();
        }
        let id = self.take_id();
        let what = intent.describe();
        self.set_status(format!("{what}: sent, waiting for the reply…"), Level::Info);
        self.pending.insert(id, what);
        vec![Effect::Watch(intent.command(id))]
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn set_filter(&mut self, filter: String) {
        self.filter = filter;
        self.sync_selection();
    }

    fn select(&mut self, index: usize) {
        self.selected = index;
        self.selected_key = self.rows().get(index).map(Row::key);
    }

    /// Keeps the selection on the same node/manager/service after the model changed,
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

fn service_matches(s: &ServiceInfo, needle: &str) -> bool {
    [s.name.as_str(), s.kind.as_str(), s.service_type.as_str(), s.state.as_str()]
        .iter()
        .any(|field| field.to_lowercase().contains(needle))
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
        ClusterEvent::Metrics { node, services } => {
            ("metrics", format!("{node}: figures for {} service(s)", services.len()), Level::Info)
        }
        ClusterEvent::Failover { market, symbols, from, to, reason, planned, duration_ms, .. } => (
            "failover",
            format!("{market} {}: {from} → {to} in {duration_ms} ms ({reason})", symbols.join(",")),
            if *planned { Level::Info } else { Level::Warn },
        ),
        ClusterEvent::Log { level, message } => {
            let level = match level.as_str() {
                "error" => Level::Error,
                "warn" | "warning" => Level::Warn,
                _ => Level::Info,
            };
            ("log", message.clone(), level)
        }
        ClusterEvent::NodeScaled { action, node, reason, leader } => {
            let text = match node {
                Some(node) => format!("{action} {node}: {reason} (by {leader})"),
                None => format!("{action}: {reason} (by {leader})"),
            };
            ("node_scaled", text, if action.ends_with("_failed") { Level::Warn } else { Level::Info })
        }
        ClusterEvent::NodeAdded { node } => {
            ("node", format!("{} joined at {} ({})", node.id, node.location, node.api_url), Level::Info)
        }
        ClusterEvent::NodeRemoved { id, reason } => ("node", format!("{id} left: {reason}"), Level::Warn),
    }
}
