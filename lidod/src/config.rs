//! `lidod` configuration: built-in defaults, overridden by a TOML file
//! (`--config lido.toml`), overridden by flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use lido_shared::cluster::RunMode;
use serde::Deserialize;

use crate::auth::AuthMode;
use crate::journal::Synchronous;
use crate::limits::{LimitsConfig, RiskConfig};

/// The whole configuration. Every field has a default; see `lido.example.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the one HTTP/WebSocket listener (IM, managers, algo API).
    pub listen: SocketAddr,
    pub node: NodeConfig,
    /// Brokers started at boot.
    #[serde(rename = "broker")]
    pub brokers: Vec<BrokerConfig>,
    /// Markets created at boot.
    #[serde(rename = "market")]
    pub markets: Vec<MarketConfig>,
    pub supervisor: SupervisorConfig,
    /// Program used to start service processes; defaults to this `lidod`.
    pub service_exe: Option<PathBuf>,
    /// `open` (loopback only, no token needed) or `tokens`.
    pub auth: AuthMode,
    /// File holding the cluster secret; default `<data_dir>/cluster-secret`.
    pub cluster_secret_file: Option<PathBuf>,
    pub limits: LimitsConfig,
    pub risk: RiskConfig,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    pub id: String,
    pub location: String,
    /// Where the node keeps its durable state: the order journal
    /// (`journal.sqlite`), the paper brokers' venue state (`paper/<name>.json`),
    /// tokens and the audit log (`auth.sqlite`) and the cluster secret.
    pub data_dir: PathBuf,
    /// `full` (default: every journal commit fsynced, survives power loss)
    /// or `normal` (survives a crash of lidod, not of the machine).
    pub journal_synchronous: Synchronous,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub broker_type: String,
    #[serde(default)]
    pub mode: RunMode,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketConfig {
    pub name: String,
    /// Broker pool, highest priority first.
    pub brokers: Vec<String>,
}

/// How managers restart services that die.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisorConfig {
    /// Delay before the first restart, in milliseconds; doubles up to `restart_max_ms`.
    pub restart_min_ms: u64,
    pub restart_max_ms: u64,
    /// Give up (state `failed`) after this many restarts within `restart_window_s`.
    pub max_restarts: u32,
    pub restart_window_s: u64,
    /// How long a stopping service may take before it is killed.
    pub stop_grace_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            node: NodeConfig::default(),
            brokers: vec![BrokerConfig {
                name: "paper-1".into(),
                broker_type: "paper".into(),
                mode: RunMode::Process,
                options: BTreeMap::new(),
            }],
            markets: vec![MarketConfig { name: "paper".into(), brokers: vec!["paper-1".into()] }],
            supervisor: SupervisorConfig::default(),
            service_exe: None,
            auth: AuthMode::default(),
            cluster_secret_file: None,
            limits: LimitsConfig::default(),
            risk: RiskConfig::default(),
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            id: "n1".into(),
            location: "local".into(),
            data_dir: default_data_dir(),
            journal_synchronous: Synchronous::Full,
        }
    }
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            restart_min_ms: 100,
            restart_max_ms: 5_000,
            max_restarts: 10,
            restart_window_s: 60,
            stop_grace_ms: 3_000,
        }
    }
}

/// `$XDG_STATE_HOME/lido`, else `$HOME/.local/state/lido`, else `./lido-data`.
pub fn default_data_dir() -> PathBuf {
    let state_home = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".local/state")));
    match state_home {
        Some(dir) => dir.join("lido"),
        None => PathBuf::from("lido-data"),
    }
}

impl Config {
    /// Reads a TOML file; missing fields keep their defaults.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
        let config: Config =
            toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks cross-references (markets name existing brokers, names unique).
    pub fn validate(&self) -> anyhow::Result<()> {
        self.limits.validate()?;
        let mut names = std::collections::BTreeSet::new();
        for b in &self.brokers {
            anyhow::ensure!(names.insert(b.name.as_str()), "broker name {:?} is used twice", b.name);
        }
        for m in &self.markets {
            anyhow::ensure!(
                names.insert(m.name.as_str()),
                "service name {:?} is used twice (names are unique across brokers and markets)",
                m.name
            );
            for b in &m.brokers {
                anyhow::ensure!(
                    self.brokers.iter().any(|x| &x.name == b),
                    "market {:?} names broker {:?}, which is not configured",
                    m.name,
                    b
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_parses() {
        let text = include_str!("../lido.example.toml");
        let config: Config = toml::from_str(text).unwrap();
        config.validate().unwrap();
        assert_eq!(config.node.id, "n1");
        assert_eq!(config.markets[0].brokers, vec!["paper-1".to_string()]);
    }

    #[test]
    fn journal_durability_is_chosen_by_name() {
        let config: Config = toml::from_str("[node]\njournal_synchronous = \"normal\"").unwrap();
        assert_eq!(config.node.journal_synchronous, Synchronous::Normal);
        assert_eq!(Config::default().node.journal_synchronous, Synchronous::Full);
        assert!(toml::from_str::<Config>("[node]\njournal_synchronous = \"off\"").is_err());
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Config>("lisen = \"127.0.0.1:1\"").is_err());
    }

    #[test]
    fn market_must_name_known_brokers() {
        let config: Config = toml::from_str("[[market]]\nname = \"x\"\nbrokers = [\"nope\"]").unwrap();
        assert!(config.validate().is_err());
    }
}
