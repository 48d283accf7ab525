//! Keybindings as data: what each key does, its help text and whether it
//! changes the cluster ("dangerous"). `?` help is generated from this table
//! and `--readonly` hides and disables the dangerous entries.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

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

/// The main screen's bindings, in help order.
pub const BINDINGS: &[Binding] = &[
    Binding {
        keys: &[Key::char('j'), Key::plain(KeyCode::Down)],
        label: "j/↓",
        description: "move down",
        hint: "down",
        dangerous: false,
        action: KeyAction::Down,
    },
    Binding {
        keys: &[Key::char('k'), Key::plain(KeyCode::Up)],
        label: "k/↑",
        description: "move up",
        hint: "up",
        dangerous: false,
        action: KeyAction::Up,
    },
    Binding {
        keys: &[Key::char('g'), Key::plain(KeyCode::Home)],
        label: "g",
        description: "first row",
        hint: "top",
        dangerous: false,
        action: KeyAction::Top,
    },
    Binding {
        keys: &[Key::char('G'), Key::plain(KeyCode::End)],
        label: "G",
        description: "last row",
        hint: "bottom",
        dangerous: false,
        action: KeyAction::Bottom,
    },
    Binding {
        keys: &[Key::char('s')],
        label: "s",
        description: "stop the selected service",
        hint: "stop",
        dangerous: true,
        action: KeyAction::Stop,
    },
    Binding {
        keys: &[Key::char('r')],
        label: "r",
        description: "restart the selected service",
        hint: "restart",
        dangerous: true,
        action: KeyAction::Restart,
    },
    Binding {
        keys: &[Key::char('d')],
        label: "d",
        description: "drain/undrain the selected node",
        hint: "drain",
        dangerous: true,
        action: KeyAction::Drain,
    },
    Binding {
        keys: &[Key::char('?')],
        label: "?",
        description: "show/hide this help",
        hint: "help",
        dangerous: false,
        action: KeyAction::Help,
    },
    Binding {
        keys: &[Key::char('q'), Key::ctrl('c')],
        label: "q/Ctrl-C",
        description: "quit",
        hint: "quit",
        dangerous: false,
        action: KeyAction::Quit,
    },
];

/// The binding a key event triggers, dangerous or not.
pub fn lookup(event: &KeyEvent) -> Option<&'static Binding> {
    BINDINGS.iter().find(|b| b.keys.iter().any(|k| k.matches(event)))
}

/// The bindings to show: all of them, or the harmless ones when read-only.
pub fn visible(readonly: bool) -> impl Iterator<Item = &'static Binding> {
    BINDINGS.iter().filter(move |b| !(readonly && b.dangerous))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_resolve() {
        let j = KeyEvent::new(KeyCode::Char('j'), KeyModifiers::NONE);
        assert_eq!(lookup(&j).map(|b| b.action), Some(KeyAction::Down));
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(lookup(&ctrl_c).map(|b| b.action), Some(KeyAction::Quit));
        let big_g = KeyEvent::new(KeyCode::Char('G'), KeyModifiers::SHIFT);
        assert_eq!(lookup(&big_g).map(|b| b.action), Some(KeyAction::Bottom));
        let ctrl_s = KeyEvent::new(KeyCode::Char('s'), KeyModifiers::CONTROL);
        assert!(lookup(&ctrl_s).is_none());
    }

    #[test]
    fn readonly_hides_dangerous_bindings() {
        assert!(visible(false).any(|b| b.action == KeyAction::Stop));
        assert!(visible(true).all(|b| !b.dangerous));
        assert!(visible(true).any(|b| b.action == KeyAction::Help));
    }

    #[test]
    fn no_key_is_bound_twice() {
        let keys: Vec<Key> = BINDINGS.iter().flat_map(|b| b.keys.iter().copied()).collect();
        for (i, k) in keys.iter().enumerate() {
            assert!(!keys[i + 1..].contains(k), "{k:?} is bound twice");
        }
    }
}
