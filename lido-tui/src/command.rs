//! The `:` command line: parsing what the operator typed into a
//! [`Command`], and the table of commands that `?` help shows.

use std::collections::BTreeMap;

use lido_shared::cluster::{ServiceKind, SpawnRequest};

/// A parsed `:` command.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// `:spawn` alone opens the form; with arguments it asks to spawn.
    Spawn(Option<SpawnRequest>),
    Stop(String),
    Restart(String),
    Drain(String),
    Undrain(String),
    /// `:market` opens the picker; `:market paper BTC/USD` watches that.
    Market(Option<(String, String)>),
    /// Back to the cluster screen.
    Cluster,
    /// `:filter text` (or `:filter` to clear).
    Filter(String),
    Help,
    Quit,
}

impl Command {
    /// Whether it changes the cluster (refused with `--readonly`).
    pub fn dangerous(&self) -> bool {
        matches!(self, Self::Spawn(_) | Self::Stop(_) | Self::Restart(_) | Self::Drain(_) | Self::Undrain(_))
    }
}

/// One line of `?` help about a command.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    pub usage: &'static str,
    pub description: &'static str,
    pub dangerous: bool,
}

/// The commands, in help order.
pub const COMMANDS: &[Usage] = &[
    Usage { usage: ":spawn KIND [TYPE] NAME", description: "spawn; then k=v, --node N", dangerous: true },
    Usage { usage: ":stop NAME", description: "stop a service", dangerous: true },
    Usage { usage: ":restart NAME", description: "restart a service", dangerous: true },
    Usage { usage: ":drain NODE", description: "drain a node", dangerous: true },
    Usage { usage: ":undrain NODE", description: "undrain a node", dangerous: true },
    Usage { usage: ":market [MARKET SYMBOL]", description: "market view; no args: pick", dangerous: false },
    Usage { usage: ":cluster", description: "back to the cluster", dangerous: false },
    Usage { usage: ":filter [TEXT]", description: "filter; empty clears", dangerous: false },
    Usage { usage: ":q", description: "quit", dangerous: false },
];

/// Parses a command line (without the leading `:`).
pub fn parse(line: &str) -> Result<Command, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some((&verb, args)) = words.split_first() else {
        return Err("empty command; try :help".into());
    };
    let one = |what: &str| match args {
        [arg] => Ok(arg.to_string()),
        _ => Err(format!("usage: :{verb} {what}")),
    };
    match verb {
        "q" | "q!" | "quit" | "exit" => Ok(Command::Quit),
        "h" | "help" | "?" => Ok(Command::Help),
        "spawn" | "new" => {
            if args.is_empty() {
                Ok(Command::Spawn(None))
            } else {
                parse_spawn(args).map(|r| Command::Spawn(Some(r)))
            }
        }
        "stop" | "delete" | "rm" => one("NAME").map(Command::Stop),
        "restart" => one("NAME").map(Command::Restart),
        "drain" => one("NODE").map(Command::Drain),
        "undrain" => one("NODE").map(Command::Undrain),
        "market" | "markets" | "m" => match args {
            [] => Ok(Command::Market(None)),
            [market, symbol] => Ok(Command::Market(Some((market.to_string(), symbol.to_ascii_uppercase())))),
            _ => Err("usage: :market [MARKET SYMBOL], e.g. :market paper BTC/USD".into()),
        },
        "cluster" | "nodes" | "services" => Ok(Command::Cluster),
        "filter" => Ok(Command::Filter(args.join(" "))),
        other => Err(format!("unknown command :{other}; ? lists them")),
    }
}

/// `broker paper p2 k=v`, `market crypto brokers=k1,k2`, `trader t1 exec=…`,
/// each optionally with `--node N`.
pub fn parse_spawn(args: &[&str]) -> Result<SpawnRequest, String> {
    const USAGE: &str = "usage: :spawn broker TYPE [NAME] | market NAME | trader NAME, then k=v options, --node N";
    let Some((kind, rest)) = args.split_first() else {
        return Err(USAGE.into());
    };
    let kind: ServiceKind = kind.parse()?;
    let mut node = None;
    let mut positional = Vec::new();
    let mut options = Vec::new();
    let mut words = rest.iter();
    while let Some(&word) = words.next() {
        if word == "--node" {
            node = Some(words.next().ok_or("--node needs a node id")?.to_string());
        } else if let Some(n) = word.strip_prefix("--node=") {
            node = Some(n.to_string());
        } else if word.contains('=') {
            options.push(word);
        } else {
            positional.push(word.to_string());
        }
    }
    let (service_type, name) = match (kind, positional.as_slice()) {
        (ServiceKind::Market, [name]) => (None, Some(name.clone())),
        (ServiceKind::Market, _) => return Err("usage: :spawn market NAME brokers=b1,b2".into()),
        (ServiceKind::Trader, [name]) => (None, Some(name.clone())),
        (ServiceKind::Trader, [service_type, name]) => (Some(service_type.clone()), Some(name.clone())),
        (ServiceKind::Broker, [service_type]) => (Some(service_type.clone()), None),
        (ServiceKind::Broker, [service_type, name]) => (Some(service_type.clone()), Some(name.clone())),
        _ => return Err(USAGE.into()),
    };
    Ok(SpawnRequest { kind, service_type, name, node, options: parse_options(options)? })
}

/// `k=v` words into options; a bare word or an empty key is an error.
pub fn parse_options<'a>(words: impl IntoIterator<Item = &'a str>) -> Result<BTreeMap<String, String>, String> {
    let mut options = BTreeMap::new();
    for word in words {
        match word.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                options.insert(k.trim().to_string(), v.trim().to_string());
            }
            _ => return Err(format!("option {word:?} is not k=v")),
        }
    }
    Ok(options)
}

/// How a spawn request reads in confirmations and the status line.
pub fn describe_spawn(request: &SpawnRequest) -> String {
    let mut text = format!("spawn {}", request.kind);
    if let Some(t) = request.service_type.as_deref().filter(|t| !t.is_empty()) {
        text.push_str(&format!(" {t}"));
    }
    if let Some(name) = request.name.as_deref().filter(|n| !n.is_empty()) {
        text.push_str(&format!(" {name}"));
    }
    for (k, v) in &request.options {
        text.push_str(&format!(" {k}={v}"));
    }
    match request.node.as_deref() {
        Some(node) => text.push_str(&format!(" on {node}")),
        None => text.push_str(" on any node"),
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawn_broker_with_name_and_options() {
        let Command::Spawn(Some(r)) = parse("spawn broker paper p2 seed=7 --node n1").unwrap() else { panic!() };
        assert_eq!(r.kind, ServiceKind::Broker);
        assert_eq!(r.service_type.as_deref(), Some("paper"));
        assert_eq!(r.name.as_deref(), Some("p2"));
        assert_eq!(r.node.as_deref(), Some("n1"));
        assert_eq!(r.options.get("seed").map(String::as_str), Some("7"));
        assert_eq!(describe_spawn(&r), "spawn broker paper p2 seed=7 on n1");
    }

    #[test]
    fn spawn_market_has_no_type() {
        let Command::Spawn(Some(r)) = parse("spawn market crypto brokers=k1,k2").unwrap() else { panic!() };
        assert_eq!(r.service_type, None);
        assert_eq!(r.name.as_deref(), Some("crypto"));
        assert_eq!(r.options.get("brokers").map(String::as_str), Some("k1,k2"));
        assert!(parse("spawn market").is_err());
        assert!(parse("spawn market a b").is_err());
    }

    #[test]
    fn verbs() {
        assert_eq!(parse("spawn").unwrap(), Command::Spawn(None));
        assert_eq!(parse("stop p2").unwrap(), Command::Stop("p2".into()));
        assert_eq!(parse("restart p2").unwrap(), Command::Restart("p2".into()));
        assert_eq!(parse(" drain  n1 ").unwrap(), Command::Drain("n1".into()));
        assert_eq!(parse("undrain n1").unwrap(), Command::Undrain("n1".into()));
        assert_eq!(parse("market paper btc/usd").unwrap(), Command::Market(Some(("paper".into(), "BTC/USD".into()))));
        assert_eq!(parse("market").unwrap(), Command::Market(None));
        assert_eq!(parse("q").unwrap(), Command::Quit);
        assert_eq!(parse("filter pap").unwrap(), Command::Filter("pap".into()));
        assert!(parse("").is_err());
        assert!(parse("stop").is_err());
        assert!(parse("stop a b").is_err());
        assert!(parse("frobnicate").unwrap_err().contains("unknown command"));
        assert!(parse("spawn gadget x").unwrap_err().contains("unknown service kind"));
        assert!(parse("spawn broker paper p2 --node").is_err());
    }

    #[test]
    fn options_must_be_pairs() {
        assert!(parse_options(["a=1", "b="]).is_ok());
        assert!(parse_options(["=1"]).is_err());
        assert!(parse_options(["x"]).is_err());
    }
}
