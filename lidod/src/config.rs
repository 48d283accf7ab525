//! `lidod` configuration: built-in defaults, overridden by a TOML file
//! (`--config lido.toml`), overridden by flags.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use lido_shared::cluster::RunMode;
use lido_shared::tls::Identity;
use serde::Deserialize;

use crate::auth::AuthMode;
use crate::journal::Synchronous;
use crate::limits::{LimitsConfig, RiskConfig};
use crate::markets::PoolSpec;

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
    pub autoscale: AutoscaleConfig,
    pub failover: FailoverConfig,
    pub cluster: ClusterConfig,
    /// How hosted traders are confined (`[traders] sandbox`, `read_paths`).
    pub traders: crate::sandbox::TradersConfig,
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
    /// Certificate chain (PEM) to serve HTTPS/WSS with, on the listener and
    /// the broker pipes; needs `tls_key`. Unset: plain HTTP.
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// The CA (PEM) managers and services trust on the pipes and check-ins;
    /// default: `tls_cert` itself (a self-signed certificate).
    pub tls_ca: Option<PathBuf>,
    /// The URL other hosts reach this node or IM at (`http://10.0.0.5:7700`,
    /// `http://lidod-node-0.lidod-node:7700`); port 0 means the bound port.
    /// Unset: the listen address, which must then not be `0.0.0.0` / `::`
    /// for other hosts to reach it. See `advertise.rs`.
    pub advertise_url: Option<String>,
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
    /// The symbol universe (`BTC/USD`, `AAPL`); empty: what the pool offers.
    #[serde(default)]
    pub symbols: Vec<String>,
    /// Broker pool, highest priority first.
    pub brokers: Vec<String>,
    /// Brokers used only when none of `brokers` is healthy (e.g. `["paper-1"]`).
    #[serde(default)]
    pub fallback: Vec<String>,
}

impl MarketConfig {
    /// The validated pool (brokers not yet checked to exist).
    pub fn pool(&self) -> anyhow::Result<PoolSpec> {
        PoolSpec::new(self.brokers.clone(), self.fallback.clone(), &self.symbols)
            .map_err(|e| anyhow::anyhow!("market {:?}: {e}", self.name))
    }
}

/// What this `lidod` process is in the cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// An InfrastructureManager only: nodes check in with it; it runs no services.
    Im,
    /// A node only: it checks in with the IMs given by `ims`.
    Node,
    /// Both in one process: the single-node default.
    #[default]
    All,
}

/// `[cluster]`: the role, the IMs a node checks in with, and the registry
/// the IMs share.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    pub role: Role,
    /// The IMs a node checks in with (their base URLs).
    pub ims: Vec<String>,
    /// `memory` (one IM) or `etcd` (several).
    pub registry: String,
    pub etcd_endpoints: Vec<String>,
    pub etcd_prefix: String,
    /// How often a node checks in with each IM.
    pub checkin_interval_ms: u64,
    /// A node that has not checked in for this long leaves the cluster.
    pub node_ttl_ms: u64,
    /// When an idle draining node is stopped, e.g.
    /// `{ start = "16:30", end = "20:00", tz = "America/New_York" }`.
    pub after_hours: Option<AfterHoursConfig>,
    /// `[cluster.autoscale]`: when the leader IM adds or drains nodes.
    pub autoscale: crate::cluster::nodescale::NodeScaleConfig,
    /// `[cluster.provisioner]`: how it gets a new node (`local` or `command`).
    pub provisioner: Option<crate::cluster::provision::ProvisionerConfig>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AfterHoursConfig {
    /// `HH:MM`, local time in `tz`.
    pub start: String,
    pub end: String,
    /// An IANA time zone, e.g. `America/New_York` or `UTC`.
    pub tz: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            role: Role::All,
            ims: Vec::new(),
            registry: "memory".into(),
            etcd_endpoints: Vec::new(),
            etcd_prefix: "/lido".into(),
            checkin_interval_ms: 1_000,
            node_ttl_ms: 5_000,
            after_hours: None,
            autoscale: Default::default(),
            provisioner: None,
        }
    }
}

impl ClusterConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.role != Role::Node || !self.ims.is_empty(),
            "--role node needs at least one InfrastructureManager to check in with: give --im URL (or [cluster] ims)"
        );
        for im in &self.ims {
            anyhow::ensure!(
                im.starts_with("http://") || im.starts_with("https://"),
                "IM URL {im:?} must start with http:// or https://"
            );
        }
        anyhow::ensure!(
            matches!(self.registry.as_str(), "memory" | "etcd"),
            "[cluster] registry must be memory or etcd, got {:?}",
            self.registry
        );
        anyhow::ensure!(
            (50..=60_000).contains(&self.checkin_interval_ms),
            "[cluster] checkin_interval_ms must be 50 to 60000"
        );
        anyhow::ensure!(
            self.node_ttl_ms > self.checkin_interval_ms,
            "[cluster] node_ttl_ms ({}) must be longer than checkin_interval_ms ({})",
            self.node_ttl_ms,
            self.checkin_interval_ms
        );
        if let Some(window) = &self.after_hours {
            crate::cluster::after_hours::AfterHours::parse(window)?;
        }
        self.autoscale.validate().map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            !self.autoscale.enabled || self.provisioner.is_some(),
            "[cluster.autoscale] enabled needs a [cluster.provisioner] (kind = \"local\" or \"command\") to get nodes from"
        );
        Ok(())
    }
}

/// How markets judge broker health and move between brokers.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FailoverConfig {
    /// A quotes or book feed silent this long counts as stalled (its broker is down).
    pub stall_after_ms: u64,
    /// This many venue errors in a row make a broker down.
    pub error_threshold: u32,
    /// A pipe heartbeat latency above this makes a broker degraded.
    pub slow_latency_ms: u64,
    /// A higher-priority broker must be healthy this long before routes fail back to it.
    pub failback_hold_ms: u64,
    /// A failover slower than this logs a warning.
    pub failover_bound_ms: u64,
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

/// When the MarketManager adds and releases instances (fan-out shards of
/// the algo streams); see `markets/instances.rs`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AutoscaleConfig {
    /// Instances always running (at least 1).
    pub min_instances: usize,
    /// Instances at most; past that, new clients share the least loaded.
    pub max_instances: usize,
    /// Add an instance when every one carries this many clients.
    pub max_clients_per_instance: usize,
    /// Add an instance when an instance's fan-out p99 (router publish →
    /// frame handed to the socket) passes this, in milliseconds.
    pub max_fanout_latency_ms: f64,
    /// Release an extra instance once it has had no client for this long.
    pub idle_release_s: u64,
    /// The window the fan-out p99 is taken over, and how often the rules run.
    pub latency_window_s: u64,
}

impl Default for AutoscaleConfig {
    fn default() -> Self {
        Self {
            min_instances: 1,
            max_instances: 8,
            max_clients_per_instance: 500,
            max_fanout_latency_ms: 50.0,
            idle_release_s: 60,
            latency_window_s: 5,
        }
    }
}

impl AutoscaleConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=64).contains(&self.min_instances)
                && self.min_instances <= self.max_instances
                && self.max_instances <= 64,
            "[autoscale] needs 1 <= min_instances <= max_instances <= 64, got {} and {}",
            self.min_instances,
            self.max_instances
        );
        anyhow::ensure!(self.max_clients_per_instance >= 1, "[autoscale] max_clients_per_instance must be at least 1");
        anyhow::ensure!(
            self.max_fanout_latency_ms.is_finite() && self.max_fanout_latency_ms > 0.0,
            "[autoscale] max_fanout_latency_ms must be a positive number of milliseconds"
        );
        anyhow::ensure!(
            (1..=3600).contains(&self.latency_window_s),
            "[autoscale] latency_window_s must be 1 to 3600 seconds"
        );
        Ok(())
    }
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
            markets: vec![MarketConfig {
                name: "paper".into(),
                symbols: Vec::new(),
                brokers: vec!["paper-1".into()],
                fallback: Vec::new(),
            }],
            supervisor: SupervisorConfig::default(),
            service_exe: None,
            auth: AuthMode::default(),
            cluster_secret_file: None,
            limits: LimitsConfig::default(),
            risk: RiskConfig::default(),
            autoscale: AutoscaleConfig::default(),
            failover: FailoverConfig::default(),
            cluster: ClusterConfig::default(),
            traders: crate::sandbox::TradersConfig::default(),
        }
    }
}

impl Default for FailoverConfig {
    fn default() -> Self {
        Self {
            stall_after_ms: 10_000,
            error_threshold: 3,
            slow_latency_ms: 1_000,
            failback_hold_ms: 10_000,
            failover_bound_ms: 2_000,
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
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            advertise_url: None,
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

impl NodeConfig {
    /// The certificate and key to serve with, if TLS is on; an error if only one is set.
    pub fn tls_identity(&self) -> Result<Option<Identity>, lido_shared::tls::TlsError> {
        Identity::pair(self.tls_cert.clone(), self.tls_key.clone())
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

    /// Checks cross-references (markets name existing brokers, names unique)
    /// and that TLS is set up whole.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.limits.validate()?;
        self.autoscale.validate()?;
        self.cluster.validate()?;
        let identity = self.node.tls_identity()?;
        anyhow::ensure!(
            identity.is_some() || self.node.tls_ca.is_none(),
            "tls_ca is set but tls_cert and tls_key are not: the CA is for a node that serves TLS; set all three or drop tls_ca"
        );
        if let Some(url) = &self.node.advertise_url {
            crate::advertise::validate(url)?;
        }
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
            for b in m.pool()?.all() {
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
    fn tls_needs_both_certificate_and_key() {
        let cert_only: Config = toml::from_str("[node]\ntls_cert = \"c.pem\"").unwrap();
        let err = cert_only.validate().unwrap_err().to_string();
        assert!(err.contains("without its key") && err.contains("--tls-key"), "{err}");
        let key_only: Config = toml::from_str("[node]\ntls_key = \"k.pem\"").unwrap();
        assert!(key_only.validate().is_err());
        let ca_only: Config = toml::from_str("[node]\ntls_ca = \"ca.pem\"").unwrap();
        assert!(ca_only.validate().unwrap_err().to_string().contains("tls_ca is set"));
        let both: Config = toml::from_str("[node]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"").unwrap();
        both.validate().unwrap();
        assert!(Config::default().node.tls_identity().unwrap().is_none());
    }

    #[test]
    fn cluster_section_has_defaults_and_checks() {
        let config = Config::default();
        assert_eq!(config.cluster.role, Role::All);
        assert_eq!(config.cluster.etcd_prefix, "/lido");
        let text = "[cluster]\nrole = \"node\"\nims = [\"http://127.0.0.1:7700\"]\n\
                    after_hours = { start = \"16:30\", end = \"20:00\", tz = \"America/New_York\" }";
        let config: Config = toml::from_str(text).unwrap();
        config.validate().unwrap();
        assert_eq!(config.cluster.role, Role::Node);
        let no_im: Config = toml::from_str("[cluster]\nrole = \"node\"").unwrap();
        assert!(no_im.validate().unwrap_err().to_string().contains("--im"));
        let bad_tz = "[cluster]\nafter_hours = { start = \"16:30\", end = \"20:00\", tz = \"Mars/Base\" }";
        assert!(toml::from_str::<Config>(bad_tz).unwrap().validate().is_err());
    }

    #[test]
    fn advertise_urls_are_checked_at_load() {
        let good: Config = toml::from_str("[node]\nadvertise_url = \"http://10.0.0.5:7700\"").unwrap();
        good.validate().unwrap();
        let bad: Config = toml::from_str("[node]\nadvertise_url = \"http://0.0.0.0:7700\"").unwrap();
        assert!(bad.validate().unwrap_err().to_string().contains("--advertise-url"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Config>("lisen = \"127.0.0.1:1\"").is_err());
    }

    #[test]
    fn autoscale_bounds_are_checked() {
        let config: Config = toml::from_str("[autoscale]\nmin_instances = 3\nmax_instances = 2").unwrap();
        assert!(config.validate().unwrap_err().to_string().contains("min_instances"));
        let config: Config = toml::from_str("[autoscale]\nmax_clients_per_instance = 5").unwrap();
        config.validate().unwrap();
        assert_eq!(config.autoscale.max_clients_per_instance, 5);
        assert_eq!(config.autoscale.min_instances, 1);
    }

    #[test]
    fn market_must_name_known_brokers() {
        let config: Config = toml::from_str("[[market]]\nname = \"x\"\nbrokers = [\"nope\"]").unwrap();
        assert!(config.validate().is_err());
        let fallback = "[[market]]\nname = \"x\"\nbrokers = [\"paper-1\"]\nfallback = [\"nope\"]";
        let err = toml::from_str::<Config>(fallback).unwrap().validate().unwrap_err().to_string();
        assert!(err.contains("\"nope\""), "{err}");
    }

    #[test]
    fn market_pools_are_checked() {
        let twice = "[[market]]\nname = \"x\"\nbrokers = [\"paper-1\"]\nfallback = [\"paper-1\"]";
        let err = toml::from_str::<Config>(twice).unwrap().validate().unwrap_err().to_string();
        assert!(err.contains("market \"x\"") && err.contains("twice"), "{err}");
        let empty = "[[market]]\nname = \"x\"\nbrokers = []";
        assert!(toml::from_str::<Config>(empty).unwrap().validate().unwrap_err().to_string().contains("at least one"));
        let symbols = "[[market]]\nname = \"x\"\nbrokers = [\"paper-1\"]\nsymbols = [\"BTC/USD\", \"ETH/USD\"]";
        toml::from_str::<Config>(symbols).unwrap().validate().unwrap();
    }
}
