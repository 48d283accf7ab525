//! The spawn form: kind, type, name, node and `k=v` options, edited field by
//! field and turned into a [`SpawnRequest`].

use lido_shared::cluster::{ServiceKind, SpawnRequest};

use crate::command;

/// A field of the form, in focus order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Kind,
    Type,
    Name,
    Node,
    Options,
}

impl Field {
    pub const ALL: [Field; 5] = [Self::Kind, Self::Type, Self::Name, Self::Node, Self::Options];

    pub fn label(self) -> &'static str {
        match self {
            Self::Kind => "kind",
            Self::Type => "type",
            Self::Name => "name",
            Self::Node => "node",
            Self::Options => "options",
        }
    }
}

const KINDS: [ServiceKind; 3] = [ServiceKind::Broker, ServiceKind::Market, ServiceKind::Trader];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpawnForm {
    pub kind: ServiceKind,
    pub service_type: String,
    pub name: String,
    /// Empty: the least-loaded node.
    pub node: String,
    /// Space-separated `k=v`.
    pub options: String,
    pub focus: Field,
    /// Why the last submit was refused.
    pub error: Option<String>,
}

impl Default for SpawnForm {
    fn default() -> Self {
        Self {
            kind: ServiceKind::Broker,
            service_type: "paper".into(),
            name: String::new(),
            node: String::new(),
            options: String::new(),
            focus: Field::Kind,
            error: None,
        }
    }
}

impl SpawnForm {
    /// Whether `field` takes part for the chosen kind (markets have no type).
    pub fn enabled(&self, field: Field) -> bool {
        !(field == Field::Type && self.kind == ServiceKind::Market)
    }

    pub fn next_field(&mut self) {
        self.move_focus(1);
    }

    pub fn prev_field(&mut self) {
        self.move_focus(Field::ALL.len() - 1);
    }

    fn move_focus(&mut self, step: usize) {
        let mut index = Field::ALL.iter().position(|f| *f == self.focus).unwrap_or(0);
        loop {
            index = (index + step) % Field::ALL.len();
            if self.enabled(Field::ALL[index]) {
                break;
            }
        }
        self.focus = Field::ALL[index];
    }

    /// Cycles the kind (only when the kind field has the focus).
    pub fn cycle_kind(&mut self, forward: bool) {
        if self.focus != Field::Kind {
            return;
        }
        let index = KINDS.iter().position(|k| *k == self.kind).unwrap_or(0);
        let next = if forward { (index + 1) % KINDS.len() } else { (index + KINDS.len() - 1) % KINDS.len() };
        self.kind = KINDS[next];
        self.error = None;
    }

    /// Types a character into the focused field; on the kind field `b`, `m`
    /// and `t` choose the kind.
    pub fn input(&mut self, c: char) {
        self.error = None;
        match self.focus {
            Field::Kind => {
                if let Some(kind) = KINDS.iter().find(|k| k.as_str().starts_with(c.to_ascii_lowercase())) {
                    self.kind = *kind;
                }
            }
            Field::Type => self.service_type.push(c),
            Field::Name => self.name.push(c),
            Field::Node => self.node.push(c),
            Field::Options => self.options.push(c),
        }
    }

    pub fn backspace(&mut self) {
        self.error = None;
        let text = match self.focus {
            Field::Kind => return,
            Field::Type => &mut self.service_type,
            Field::Name => &mut self.name,
            Field::Node => &mut self.node,
            Field::Options => &mut self.options,
        };
        text.pop();
    }

    /// The text shown for `field`.
    pub fn value(&self, field: Field) -> String {
        match field {
            Field::Kind => self.kind.to_string(),
            Field::Type if !self.enabled(Field::Type) => "(markets have no type)".into(),
            Field::Type => self.service_type.clone(),
            Field::Name => self.name.clone(),
            Field::Node => self.node.clone(),
            Field::Options => self.options.clone(),
        }
    }

    /// The request, or what is missing.
    pub fn request(&self) -> Result<SpawnRequest, String> {
        let trimmed = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
        let service_type = if self.kind == ServiceKind::Market { None } else { trimmed(&self.service_type) };
        if self.kind == ServiceKind::Broker && service_type.is_none() {
            return Err("a broker needs a type (paper, kraken, schwab)".into());
        }
        let name = trimmed(&self.name);
        if self.kind != ServiceKind::Broker && name.is_none() {
            return Err(format!("a {} needs a name", self.kind));
        }
        let options = command::parse_options(self.options.split_whitespace())?;
        Ok(SpawnRequest { kind: self.kind, service_type, name, node: trimmed(&self.node), options })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_a_broker_request() {
        let mut form = SpawnForm::default();
        form.next_field(); // type
        form.backspace();
        form.backspace();
        "er".chars().for_each(|c| form.input(c));
        form.next_field(); // name
        "p2".chars().for_each(|c| form.input(c));
        form.next_field(); // node
        form.next_field(); // options
        "seed=1 speed=2".chars().for_each(|c| form.input(c));
        let r = form.request().unwrap();
        assert_eq!(r.service_type.as_deref(), Some("paper"));
        assert_eq!(r.name.as_deref(), Some("p2"));
        assert_eq!(r.node, None);
        assert_eq!(r.options.len(), 2);
    }

    #[test]
    fn markets_skip_the_type_and_need_a_name() {
        let mut form = SpawnForm::default();
        form.cycle_kind(true);
        assert_eq!(form.kind, ServiceKind::Market);
        form.next_field();
        assert_eq!(form.focus, Field::Name, "type is skipped for markets");
        form.prev_field();
        assert_eq!(form.focus, Field::Kind);
        assert!(form.request().unwrap_err().contains("needs a name"));
        form.input('t');
        assert_eq!(form.kind, ServiceKind::Trader);
    }

    #[test]
    fn bad_options_are_refused() {
        let mut form = SpawnForm { focus: Field::Options, ..SpawnForm::default() };
        "nonsense".chars().for_each(|c| form.input(c));
        assert!(form.request().unwrap_err().contains("not k=v"));
    }
}
