//! Keybindings as data: per mode, what each key does, its help text and
//! whether it changes the cluster ("dangerous"). `?` help and the hint line
//! are generated from these tables and `--readonly` hides and disables the
//! dangerous entries.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// Which table of bindings applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The main screen: nodes, services, rates, events.
    Cluster,
    /// The market view: quotes chart, book, order flow.
    Market,
    /// The market/symbol picker list.
    Picker,
    /// The spawn form (typed characters go into the focused field).
    Form,
}

impl Mode {
    pub fn bindings(self) -> &'static [Binding] {
        match self {
            Self::Cluster => CLUSTER,
            Self::Market => MARKET,
            Self::Picker => PICKER,
            Self::Form => FORM,
        }
    }
}

/// What a key asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAction {
    Down,
    Up,
    Top,
    Bottom,
    Stop,
    Restart,
    Drain,
    Spawn,
    Market,
    Pick,
    Back,
    Filter,
    Command,
    Select,
    Cancel,
    NextField,
    PrevField,
    NextChoice,
    PrevChoice,
    Submit,
    Help,
    Quit,
}

/// One key (a code and whether Ctrl is held).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    pub code: KeyCode,
    pub ctrl: bool,
}

impl Key {
    pub const fn plain(code: KeyCode) -> Self {
        Self { code, ctrl: false }
    }

    pub const fn char(c: char) -> Self {
        Self::plain(KeyCode::Char(c))
    }

    pub const fn ctrl(c: char) -> Self {
        Self { code: KeyCode::Char(c), ctrl: true }
    }

    /// Shift is part of the character (`G`), so only Ctrl (and Alt, never
    /// bound) tell keys apart.
    pub fn matches(&self, event: &KeyEvent) -> bool {
        let ctrl = event.modifiers.contains(KeyModifiers::CONTROL);
        let alt = event.modifiers.contains(KeyModifiers::ALT);
        self.code == event.code && self.ctrl == ctrl && !alt
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Binding {
    pub keys: &'static [Key],
    /// How the keys are shown in help and hints.
    pub label: &'static str,
    pub description: &'static str,
    /// One word for the hint line.
    pub hint: &'static str,
    /// Changes the cluster; hidden and refused with `--readonly`.
    pub dangerous: bool,
    pub action: KeyAction,
}

const fn bind(
    keys: &'static [Key],
    label: &'static str,
    description: &'static str,
    hint: &'static str,
    action: KeyAction,
) -> Binding {
    Binding { keys, label, description, hint, dangerous: false, action }
}

const fn danger(
    keys: &'static [Key],
    label: &'static str,
    description: &'static str,
    hint: &'static str,
    action: KeyAction,
) -> Binding {
    Binding { keys, label, description, hint, dangerous: true, action }
}

const DOWN: &[Key] = &[Key::char('j'), Key::plain(KeyCode::Down)];
const UP: &[Key] = &[Key::char('k'), Key::plain(KeyCode::Up)];
const HELP: Binding = bind(&[Key::char('?')], "?", "show/hide this help", "help", KeyAction::Help);
const COMMAND: Binding =
    bind(&[Key::char(':')], ":", "command line (commands on the right)", "cmd", KeyAction::Command);
const QUIT: Binding = bind(&[Key::char('q'), Key::ctrl('c')], "q/Ctrl-C", "quit", "quit", KeyAction::Quit);

/// The main screen's bindings, in help order.
pub const CLUSTER: &[Binding] = &[
    bind(DOWN, "j/↓", "move down", "down", KeyAction::Down),
    bind(UP, "k/↑", "move up", "up", KeyAction::Up),
    bind(&[Key::char('g'), Key::plain(KeyCode::Home)], "g", "first row", "top", KeyAction::Top),
    bind(&[Key::char('G'), Key::plain(KeyCode::End)], "G", "last row", "bottom", KeyAction::Bottom),
    danger(&[Key::char('n')], "n", "spawn a service (form)", "spawn", KeyAction::Spawn),
    danger(&[Key::char('s')], "s", "stop the selected service", "stop", KeyAction::Stop),
    danger(&[Key::char('r')], "r", "restart the selected service", "restart", KeyAction::Restart),
    danger(&[Key::char('d')], "d", "drain/undrain the selected node", "drain", KeyAction::Drain),
    bind(&[Key::char('m')], "m", "market view (quotes, book, order flow)", "market", KeyAction::Market),
    bind(&[Key::char('/')], "/", "filter services by substring", "filter", KeyAction::Filter),
    bind(&[Key::plain(KeyCode::Esc)], "Esc", "clear the filter", "clear", KeyAction::Cancel),
    COMMAND,
    HELP,
    QUIT,
];

/// The market view's bindings.
pub const MARKET: &[Binding] = &[
    bind(&[Key::char('p'), Key::plain(KeyCode::Enter)], "p/Enter", "pick market and symbol", "pick", KeyAction::Pick),
    bind(&[Key::char('m'), Key::plain(KeyCode::Esc)], "m/Esc", "back to the cluster", "back", KeyAction::Back),
    COMMAND,
    HELP,
    QUIT,
];

/// The market/symbol picker.
pub const PICKER: &[Binding] = &[
    bind(DOWN, "j/↓", "next", "down", KeyAction::Down),
    bind(UP, "k/↑", "previous", "up", KeyAction::Up),
    bind(&[Key::plain(KeyCode::Enter)], "Enter", "watch this market and symbol", "select", KeyAction::Select),
    bind(&[Key::plain(KeyCode::Esc), Key::char('q')], "Esc", "close", "close", KeyAction::Cancel),
];

/// The spawn form; other keys type into the focused field.
pub const FORM: &[Binding] = &[
    bind(&[Key::plain(KeyCode::Tab), Key::plain(KeyCode::Down)], "Tab/↓", "next field", "next", KeyAction::NextField),
    bind(
        &[Key::plain(KeyCode::BackTab), Key::plain(KeyCode::Up)],
        "S-Tab/↑",
        "previous field",
        "prev",
        KeyAction::PrevField,
    ),
    bind(&[Key::plain(KeyCode::Right)], "→", "next kind", "kind", KeyAction::NextChoice),
    bind(&[Key::plain(KeyCode::Left)], "←", "previous kind", "kind", KeyAction::PrevChoice),
    danger(&[Key::plain(KeyCode::Enter)], "Enter", "spawn (asks first)", "spawn", KeyAction::Submit),
    bind(&[Key::plain(KeyCode::Esc)], "Esc", "cancel", "cancel", KeyAction::Cancel),
];

/// The binding a key event triggers in `mode`, dangerous or not.
pub fn lookup(mode: Mode, event: &KeyEvent) -> Option<&'static Binding> {
    mode.bindings().iter().find(|b| b.keys.iter().any(|k| k.matches(event)))
}

/// The bindings to show in `mode`: all, or the harmless ones when read-only.
pub fn visible(mode: Mode, readonly: bool) -> impl Iterator<Item = &'static Binding> {
    mode.bindings().iter().filter(move |b| !(readonly && b.dangerous))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODES: [Mode; 4] = [Mode::Cluster, Mode::Market, Mode::Picker, Mode::Form];

    #[test]
    fn keys_resolve() {
        let j = KeyEvent::new(KeyCode::Char('j'), KeyModifiers::NONE);
        assert_eq!(lookup(Mode::Cluster, &j).map(|b| b.action), Some(KeyAction::Down));
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(lookup(Mode::Cluster, &ctrl_c).map(|b| b.action), Some(KeyAction::Quit));
        let big_g = KeyEvent::new(KeyCode::Char('G'), KeyModifiers::SHIFT);
        assert_eq!(lookup(Mode::Cluster, &big_g).map(|b| b.action), Some(KeyAction::Bottom));
        let ctrl_s = KeyEvent::new(KeyCode::Char('s'), KeyModifiers::CONTROL);
        assert!(lookup(Mode::Cluster, &ctrl_s).is_none());
        let back_tab = KeyEvent::new(KeyCode::BackTab, KeyModifiers::SHIFT);
        assert_eq!(lookup(Mode::Form, &back_tab).map(|b| b.action), Some(KeyAction::PrevField));
        let m = KeyEvent::new(KeyCode::Char('m'), KeyModifiers::NONE);
        assert_eq!(lookup(Mode::Market, &m).map(|b| b.action), Some(KeyAction::Back));
    }

    #[test]
    fn readonly_hides_dangerous_bindings() {
        assert!(visible(Mode::Cluster, false).any(|b| b.action == KeyAction::Stop));
        for mode in MODES {
            assert!(visible(mode, true).all(|b| !b.dangerous));
        }
        assert!(visible(Mode::Cluster, true).any(|b| b.action == KeyAction::Help));
        assert!(visible(Mode::Cluster, true).all(|b| b.action != KeyAction::Spawn));
    }

    #[test]
    fn no_key_is_bound_twice_in_a_mode() {
        for mode in MODES {
            let keys: Vec<Key> = mode.bindings().iter().flat_map(|b| b.keys.iter().copied()).collect();
            for (i, k) in keys.iter().enumerate() {
                assert!(!keys[i + 1..].contains(k), "{k:?} is bound twice in {mode:?}");
            }
        }
    }

    #[test]
    fn form_binds_no_printable_characters() {
        // They are typed into the fields.
        for b in FORM {
            assert!(b.keys.iter().all(|k| !matches!(k.code, KeyCode::Char(_))), "{}", b.label);
        }
    }
}
