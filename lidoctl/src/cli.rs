//! The command line grammar: `lidoctl [global flags] <verb> [noun] [args]`.

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::exit::EXIT_CODES_HELP;

/// Operate a Lido cluster: status, services, nodes and its live event stream.
#[derive(Debug, Parser)]
#[command(name = "lidoctl", version, about, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// InfrastructureManager URL; a comma-separated list fails over to the next
    /// URL when one is unreachable [default: LIDO_URL, else the context's urls,
    /// else http://127.0.0.1:7700]
    #[arg(long, value_delimiter = ',', global = true)]
    pub url: Vec<String>,
    /// Bearer token for the operator API [default: LIDO_TOKEN, else the context's]
    #[arg(long, global = true)]
    pub token: Option<String>,
    /// The named context (from the config file) to use [default: LIDO_CONTEXT,
    /// else the file's current-context]
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The config file with named contexts [default: LIDO_CONFIG, else
    /// ~/.config/lido/config.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<std::path::PathBuf>,
    /// CA certificate (PEM) to trust for an https:// URL whose certificate is
    /// private (for a self-signed one, the certificate itself)
    #[arg(long, env = "LIDO_CA", global = true, value_name = "PEM")]
    pub ca: Option<std::path::PathBuf>,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table, global = true)]
    pub output: OutputFormat,
    /// Never colour the output (NO_COLOR is honoured too)
    #[arg(long, global = true)]
    pub no_color: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns
    Table,
    /// Aligned columns with more detail
    Wide,
    /// JSON (one document; JSON lines for `watch`)
    Json,
    /// YAML
    Yaml,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the cluster: nodes, their load, and every service
    #[command(
        after_help = "Examples:\n  lidoctl status\n  lidoctl status -o wide\n  lidoctl status -o json | jq '.nodes[].id'"
    )]
    Status,
    /// List nodes, services or sessions
    #[command(
        after_help = "Examples:\n  lidoctl get nodes\n  lidoctl get brokers -o wide\n  lidoctl get service k1 -o yaml\n  lidoctl get sessions -o json"
    )]
    Get(GetArgs),
    /// Show one node or service in detail, with its recent events
    #[command(
        override_usage = "lidoctl describe <KIND> <NAME>",
        after_help = "Examples:\n  lidoctl describe broker paper-1\n  lidoctl describe service sim\n  lidoctl describe node n1\n  lidoctl describe svc paper-1 -o json | jq '.events[-1]'"
    )]
    Describe(DescribeArgs),
    /// Print a service process's output
    #[command(after_help = LOGS_HELP)]
    Logs(LogsArgs),
    /// Start a broker, market or trader on a chosen or the least-loaded node
    #[command(subcommand)]
    Spawn(SpawnCommand),
    /// Stop a service (asks for confirmation)
    #[command(after_help = "Examples:\n  lidoctl stop k1\n  lidoctl stop k1 --yes")]
    Stop(StopArgs),
    /// Restart a service
    #[command(after_help = "Example:\n  lidoctl restart k1")]
    Restart(RestartArgs),
    /// Drain a node (no new sessions or spawns; existing ones go on) or a
    /// broker (its feeds and open orders move away without a gap; then it
    /// can be stopped unnoticed). Asks for confirmation
    #[command(
        override_usage = "lidoctl drain [node] <ID> [-y]\n       lidoctl drain broker <NAME> [-y]",
        after_help = "Examples:\n  lidoctl drain node n1\n  lidoctl drain n1 --yes\n  lidoctl drain broker kraken-a"
    )]
    Drain(DrainArgs),
    /// Take a node or a broker out of draining
    #[command(
        override_usage = "lidoctl undrain [node] <ID>\n       lidoctl undrain broker <NAME>",
        after_help = "Examples:\n  lidoctl undrain node n1\n  lidoctl undrain n1\n  lidoctl undrain broker kraken-a"
    )]
    Undrain(UndrainArgs),
    /// Change a live market's pool: brokers by priority, fallback, symbols.
    /// Options left out stay; routes move without a gap (operators only)
    #[command(subcommand)]
    Set(SetCommand),
    /// Set the node's log level or filter at run time (operators only)
    #[command(
        name = "log-level",
        after_help = "Examples:\n  lidoctl log-level debug\n  lidoctl log-level 'info,lidod=debug'\n  lidoctl log-level info -o json"
    )]
    LogLevel(LogLevelArgs),
    /// Stream cluster changes until Ctrl-C, reconnecting when the connection drops
    #[command(
        after_help = "Examples:\n  lidoctl watch\n  lidoctl watch --orders\n  lidoctl watch --metrics -o json | jq -c 'select(.event.event == \"metrics\")'\n  lidoctl watch -o json | jq -c 'select(.type == \"event\")'"
    )]
    Watch(WatchArgs),
    /// Create, list and revoke API tokens (operators only)
    #[command(subcommand)]
    Token(TokenCommand),
    /// Show the audit log of operator actions (who, what, when, result)
    #[command(
        after_help = "Examples:\n  lidoctl audit\n  lidoctl audit --limit 20\n  lidoctl audit --since 2026-12-01T00:00:00Z -o json"
    )]
    Audit(AuditArgs),
    /// Show or switch the named contexts of the config file
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Broker chores done on this machine (logging a broker in to its venue)
    #[command(subcommand)]
    Broker(BrokerCommand),
    /// Print lidoctl's version
    #[command(after_help = "Example:\n  lidoctl version")]
    Version,
    /// Print a shell completion script
    #[command(
        after_help = "Examples:\n  lidoctl completions bash > /etc/bash_completion.d/lidoctl\n  lidoctl completions zsh > \"${fpath[1]}/_lidoctl\"\n  lidoctl completions fish > ~/.config/fish/completions/lidoctl.fish"
    )]
    Completions(CompletionsArgs),
}

#[derive(Debug, Subcommand)]
pub enum BrokerCommand {
    /// Log a broker in to its venue: prints the URL to open, reads back the
    /// URL the browser was redirected to, and writes the token file (0600)
    #[command(after_help = BROKER_AUTH_HELP)]
    Auth(BrokerAuthArgs),
}

const BROKER_AUTH_HELP: &str = "Runs here, not on the cluster: the app key and secret come from this \
shell's environment (SCHWAB_APP_KEY, SCHWAB_APP_SECRET, or the variables named by app_key_env and \
app_secret_env), and the token file is written on this machine, where the broker runs. Use the same \
--set options as the broker (token_file, auth_url, redirect_uri).

Examples:
  lidoctl broker auth schwab --name s1
  lidoctl broker auth schwab --name s1 --set token_file=/etc/lido/schwab-s1.json --set redirect_uri=https://127.0.0.1:8182";

#[derive(Debug, Args)]
pub struct BrokerAuthArgs {
    /// The broker type: schwab (or its alias tdameritrade)
    #[arg(value_name = "TYPE")]
    pub broker_type: String,
    /// The broker's name (names the default token file)
    #[arg(long)]
    pub name: String,
    /// Broker option, repeatable: --set token_file=/path
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub set: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// What to list
    #[arg(value_enum)]
    pub resource: Resource,
    /// Only these names (node ids or service names)
    pub names: Vec<String>,
}

/// The nouns of `get`, with plural, singular and short aliases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Resource {
    #[value(alias = "node", alias = "no")]
    Nodes,
    #[value(alias = "service", alias = "svc")]
    Services,
    #[value(alias = "broker")]
    Brokers,
    #[value(alias = "market")]
    Markets,
    #[value(alias = "trader")]
    Traders,
    /// Algo sessions (tokens shortened)
    #[value(alias = "session", alias = "sess")]
    Sessions,
    /// The autoscaler: rules, market instances, venue connections, decisions
    #[value(alias = "as")]
    Autoscale,
    /// The cluster's node autoscaler (at an IM): leader, rules, load per node, decisions
    #[value(alias = "ns")]
    Nodescale,
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// What to describe: node, service, broker, market or trader
    #[arg(value_enum, value_name = "KIND")]
    pub kind: DescribeKind,
    /// The node id or service name
    #[arg(value_name = "NAME")]
    pub name: String,
}

/// The nouns of `describe`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DescribeKind {
    #[value(alias = "nodes", alias = "no")]
    Node,
    /// Any service, whatever its kind
    #[value(alias = "services", alias = "svc")]
    Service,
    #[value(alias = "brokers")]
    Broker,
    #[value(alias = "markets")]
    Market,
    #[value(alias = "traders")]
    Trader,
}

/// What `lidoctl logs --help` says after the options.
pub const LOGS_HELP: &str = "\
Only services that run as processes (brokers and hosted traders, by default) have
logs of their own; a service that runs inside lidod (a market, or a broker
spawned with --set mode=task) is refused with exit code 5: its lines are in
lidod's own log.

--since keeps the lines whose leading timestamp (RFC 3339, like
2024-05-01T12:00:01.123Z, or `2024-05-01 12:00:01`; ANSI colours ignored) is no
older than DURATION. A line without a timestamp goes with the line before it
(a stack trace stays whole), and lines before the first timestamp are kept.
--tail then counts among the lines that are left. -o is ignored: the output
is the service's own text.

Examples:
  lidoctl logs paper-1
  lidoctl logs paper-1 --tail 20
  lidoctl logs paper-1 -f --since 5m
  lidoctl logs t1 --since 1h30m | grep ERROR";

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The service's name
    pub service: String,
    /// Keep printing new lines until the service stops or Ctrl-C
    #[arg(short, long)]
    pub follow: bool,
    /// How many lines of history to print [default: 100, or all that match --since; at most 10000]
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
    /// Only lines from the last DURATION: 30s, 5m, 2h, 1d, 1h30m, 500ms
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub since: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Also stream the order flow of every node (each order state change)
    #[arg(long)]
    pub orders: bool,
    /// Also show the once-a-second metrics events (hidden by default)
    #[arg(long)]
    pub metrics: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// List the contexts of the config file; `*` marks the current one
    #[command(after_help = "Examples:\n  lidoctl config get-contexts\n  lidoctl config get-contexts -o json")]
    GetContexts,
    /// Make NAME the file's current-context (the file's other lines are kept)
    #[command(after_help = "Example:\n  lidoctl config use-context prod")]
    UseContext {
        /// A context of the config file
        name: String,
    },
    /// Print the context in use (after --context and LIDO_CONTEXT)
    #[command(after_help = "Example:\n  lidoctl config current-context")]
    CurrentContext,
}

#[derive(Debug, Subcommand)]
pub enum SpawnCommand {
    /// Spawn a broker of TYPE (paper, kraken, schwab, …)
    #[command(
        after_help = "Examples:\n  lidoctl spawn broker paper --name p2\n  lidoctl spawn broker kraken --name k1 --node n1 --set account=main"
    )]
    Broker {
        /// The venue adapter: paper, kraken, schwab, …
        #[arg(value_name = "TYPE")]
        service_type: String,
        #[command(flatten)]
        common: SpawnArgs,
    },
    /// Spawn a market NAME over a pool of brokers
    #[command(after_help = "Example:\n  lidoctl spawn market crypto --set brokers=k1,k2")]
    Market {
        /// The market's name (what algos trade on), e.g. crypto
        #[arg(value_name = "NAME", conflicts_with = "name")]
        market: Option<String>,
        #[command(flatten)]
        common: SpawnArgs,
    },
    /// Spawn a hosted trader (an algo run and supervised by a TraderManager)
    #[command(after_help = "Example:\n  lidoctl spawn trader --name t1 --set exec=/path/to/algo --set customer=acme")]
    Trader {
        /// The trader type, if the TraderManager knows several
        #[arg(value_name = "TYPE")]
        service_type: Option<String>,
        #[command(flatten)]
        common: SpawnArgs,
    },
}

#[derive(Debug, Args)]
pub struct SpawnArgs {
    /// The service's name (picked by Lido when absent)
    #[arg(long)]
    pub name: Option<String>,
    /// The node to run on (the least-loaded non-draining node when absent)
    #[arg(long)]
    pub node: Option<String>,
    /// An option for the service, as KEY=VALUE; repeatable
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub set: Vec<(String, String)>,
}

const SET_MARKET_HELP: &str = "\
Routes whose broker left the pool or is no longer the best move to the new
best broker make-before-break: the algos' streams go on with no gap marker,
and `lidoctl watch` shows each move as a failover with reason \"pool changed\".
Feeds of symbols removed from `symbols` end with a gap marker saying so; new
subscriptions to them are refused. An empty fallback or symbols clears it.

Examples:
  lidoctl set market crypto --set brokers=k2,k1
  lidoctl set market crypto --set brokers=k2,k1 --set fallback=paper-1
  lidoctl set market crypto --set symbols=BTC/USD,ETH/USD -o json";

#[derive(Debug, Subcommand)]
pub enum SetCommand {
    /// Change market NAME's broker pool, fallback or symbol universe at run time
    #[command(
        after_help = SET_MARKET_HELP
    )]
    Market {
        /// The market's name, e.g. crypto
        #[arg(value_name = "NAME")]
        name: String,
        /// brokers=K1,K2 (priority order), fallback=P1 or symbols=BTC/USD,…; repeatable, later wins
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_pool_option, required = true)]
        set: Vec<(PoolField, String)>,
    },
    /// Change the cluster's node autoscaler rules at run time, for every IM
    #[command(
        after_help = "Examples:\n  lidoctl set nodescale --set max_nodes=6\n  lidoctl set nodescale --set enabled=false\n  lidoctl set nodescale --set high_load_per_node=300 --set low_load_per_node=60"
    )]
    Nodescale {
        /// enabled, min_nodes, max_nodes, high_load_per_node, low_load_per_node, cooldown_ms, location, pending_timeout_ms; repeatable
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_scale_option, required = true)]
        set: Vec<(String, serde_json::Value)>,
    },
}

/// `KEY=VALUE` of `set nodescale`: numbers and true/false as such, the rest as text.
fn parse_scale_option(s: &str) -> Result<(String, serde_json::Value), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))?;
    let (k, v) = (k.trim(), v.trim());
    if k.is_empty() {
        return Err(format!("expected KEY=VALUE, got {s:?}"));
    }
    let value = match v {
        "true" => serde_json::Value::Bool(true),
        "false" => serde_json::Value::Bool(false),
        _ => v.parse::<u64>().map(serde_json::Value::from).unwrap_or_else(|_| serde_json::Value::from(v)),
    };
    Ok((k.to_string(), value))
}

/// What `lidoctl set market --set` can change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolField {
    Brokers,
    Fallback,
    Symbols,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// The service's name
    pub name: String,
    /// Do not ask for confirmation
    #[arg(short, long)]
    pub yes: bool,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; its secret is printed once and never again
    #[command(
        after_help = "Examples:\n  lidoctl token create --customer acme\n  lidoctl token create --customer acme --expires-in 30d\n  lidoctl token create --operator --name alice\n  lidoctl token create --customer acme -o json | jq -r .token"
    )]
    Create(TokenCreateArgs),
    /// List tokens (never their secrets)
    #[command(visible_alias = "ls", after_help = "Examples:\n  lidoctl token list\n  lidoctl token list -o json")]
    List,
    /// Revoke a token at once; the sessions it opened end
    #[command(after_help = "Example:\n  lidoctl token revoke t-3f9a1c2b7d4e --yes")]
    Revoke(TokenRevokeArgs),
}

/// One of `--customer` and `--operator` (a group of those two only: a
/// struct-level group would take in `--name` and `--expires-in` too).
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("role").required(true).multiple(false).args(["customer", "operator"]))]
pub struct TokenCreateArgs {
    /// A customer token: trades for this customer only
    #[arg(long)]
    pub customer: Option<String>,
    /// An operator token: runs the cluster
    #[arg(long)]
    pub operator: bool,
    /// A name for the audit log (e.g. the person or the bot)
    #[arg(long)]
    pub name: Option<String>,
    /// The token stops working this long from now (e.g. 30d, 12h, 90m);
    /// its sessions and streams end then. Default: until revoked
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub expires_in: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct TokenRevokeArgs {
    /// The token's id (from `lidoctl token list`)
    pub id: String,
    /// Do not ask for confirmation
    #[arg(short, long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only records at or after this time (RFC 3339, e.g. 2026-12-01T00:00:00Z)
    #[arg(long)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// The newest N records
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    /// The service's name
    pub name: String,
}

#[derive(Debug, Args)]
pub struct DrainArgs {
    #[command(flatten)]
    pub target: NodeTarget,
    /// Do not ask for confirmation
    #[arg(short, long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct LogLevelArgs {
    /// A level (`error`, `warn`, `info`, `debug`, `trace`) or a filter as
    /// RUST_LOG takes it (`info,lidod=debug`)
    pub filter: String,
}

#[derive(Debug, Args)]
pub struct UndrainArgs {
    #[command(flatten)]
    pub target: NodeTarget,
}

/// `node <ID>`, just `<ID>` (a node), or `broker <NAME>`.
#[derive(Debug, Args)]
pub struct NodeTarget {
    /// `node` (optional) then the node id, or `broker` then its name
    #[arg(value_name = "ID", num_args = 1..=2, required = true)]
    pub words: Vec<String>,
}

/// What a drain or undrain is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drainable<'a> {
    Node(&'a str),
    Broker(&'a str),
}

impl NodeTarget {
    /// The target, accepting `node <id>`, `nodes <id>`, `<id>` and `broker <name>`.
    pub fn target(&self) -> Result<Drainable<'_>, String> {
        match self.words.as_slice() {
            [id] => Ok(Drainable::Node(id)),
            [noun, id] if matches!(noun.as_str(), "node" | "nodes" | "no") => Ok(Drainable::Node(id)),
            [noun, name] if matches!(noun.as_str(), "broker" | "brokers" | "br") => Ok(Drainable::Broker(name)),
            [noun, _] => Err(format!("unknown noun {noun:?}: expected `node <ID>`, `<ID>` or `broker <NAME>`")),
            _ => Err("expected a node id or `broker <NAME>`".into()),
        }
    }
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Parses a duration like `30s`, `5m`, `2h`, `1d`, `1h30m` or `500ms`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("invalid duration {s:?}: expected e.g. 30s, 5m, 2h, 1d, 1h30m or 500ms");
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = std::time::Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let millis = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        let part = number.checked_mul(millis).ok_or_else(bad)?;
        total = total.checked_add(std::time::Duration::from_millis(part)).ok_or_else(bad)?;
    }
    Ok(total)
}

/// Parses `--set KEY=VALUE`; the value may be empty and may contain `=`.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    let Some((key, value)) = s.split_once('=') else {
        return Err(format!("expected KEY=VALUE, got {s:?}"));
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("empty key in {s:?}: expected KEY=VALUE"));
    }
    Ok((key.to_string(), value.to_string()))
}

/// Parses a market's `--set KEY=VALUE`, KEY one of brokers, fallback, symbols.
fn parse_pool_option(s: &str) -> Result<(PoolField, String), String> {
    let (key, value) = parse_key_value(s)?;
    let field = match key.as_str() {
        "brokers" => PoolField::Brokers,
        "fallback" => PoolField::Fallback,
        "symbols" => PoolField::Symbols,
        other => return Err(format!("unknown option {other:?} for a market; known: brokers, fallback, symbols")),
    };
    Ok((field, value))
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn grammar_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn key_values() {
        assert_eq!(parse_key_value("brokers=k1,k2").unwrap(), ("brokers".into(), "k1,k2".into()));
        assert_eq!(parse_key_value("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert_eq!(parse_key_value("empty=").unwrap(), ("empty".into(), String::new()));
        assert!(parse_key_value("foo").is_err());
        assert!(parse_key_value("=x").is_err());
    }

    #[test]
    fn token_create_takes_a_role_with_a_name_and_an_expiry() {
        let args = ["lidoctl", "token", "create", "--customer", "acme", "--name", "bot", "--expires-in", "30d"];
        let cli = Cli::try_parse_from(args).expect("a customer token with a name and an expiry");
        let dbg = format!("{cli:?}");
        assert!(dbg.contains("2592000") && dbg.contains("\"bot\""), "{dbg}");
        assert!(Cli::try_parse_from(["lidoctl", "token", "create", "--operator", "--name", "alice"]).is_ok());
        assert!(Cli::try_parse_from(["lidoctl", "token", "create", "--name", "x"]).is_err(), "a role is required");
        let both = ["lidoctl", "token", "create", "--operator", "--customer", "acme"];
        assert!(Cli::try_parse_from(both).is_err(), "one role only");
    }

    #[test]
    fn bad_set_is_a_usage_error() {
        let err = Cli::try_parse_from(["lidoctl", "spawn", "broker", "paper", "--set", "foo"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("KEY=VALUE"), "{err}");
    }

    #[test]
    fn spawn_market_takes_the_name() {
        let cli = Cli::try_parse_from(["lidoctl", "spawn", "market", "crypto", "--set", "brokers=k1,k2"]).unwrap();
        let Command::Spawn(SpawnCommand::Market { market, common }) = cli.command else { panic!("not a market spawn") };
        assert_eq!(market.as_deref(), Some("crypto"));
        assert_eq!(common.set, vec![("brokers".to_string(), "k1,k2".to_string())]);
    }

    #[test]
    fn urls_split_on_commas() {
        let cli = Cli::try_parse_from(["lidoctl", "--url", "http://a:1,http://b:2", "status"]).unwrap();
        assert_eq!(cli.global.url, vec!["http://a:1", "http://b:2"]);
    }

    #[test]
    fn drain_accepts_both_forms() {
        for args in [&["lidoctl", "drain", "node", "n1"][..], &["lidoctl", "drain", "n1"][..]] {
            let cli = Cli::try_parse_from(args).unwrap();
            let Command::Drain(drain) = cli.command else { panic!("not a drain") };
            assert_eq!(drain.target.target().unwrap(), Drainable::Node("n1"));
        }
        let cli = Cli::try_parse_from(["lidoctl", "drain", "broker", "kraken-a"]).unwrap();
        let Command::Drain(drain) = cli.command else { panic!("not a drain") };
        assert_eq!(drain.target.target().unwrap(), Drainable::Broker("kraken-a"));
        let cli = Cli::try_parse_from(["lidoctl", "drain", "nod", "n1"]).unwrap();
        let Command::Drain(drain) = cli.command else { panic!("not a drain") };
        assert!(drain.target.target().is_err());
    }

    #[test]
    fn get_aliases() {
        for noun in ["node", "nodes", "no"] {
            let cli = Cli::try_parse_from(["lidoctl", "get", noun]).unwrap();
            let Command::Get(get) = cli.command else { panic!("not a get") };
            assert_eq!(get.resource, Resource::Nodes);
        }
        let cli = Cli::try_parse_from(["lidoctl", "get", "broker"]).unwrap();
        let Command::Get(get) = cli.command else { panic!("not a get") };
        assert_eq!(get.resource, Resource::Brokers);
        let cli = Cli::try_parse_from(["lidoctl", "get", "sess"]).unwrap();
        let Command::Get(get) = cli.command else { panic!("not a get") };
        assert_eq!(get.resource, Resource::Sessions);
    }

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(2 * 86_400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        for bad in ["", "5", "m", "5x", "-5m", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn describe_and_logs() {
        let cli = Cli::try_parse_from(["lidoctl", "describe", "svc", "paper-1"]).unwrap();
        let Command::Describe(d) = cli.command else { panic!("not a describe") };
        assert_eq!((d.kind, d.name.as_str()), (DescribeKind::Service, "paper-1"));
        let cli = Cli::try_parse_from(["lidoctl", "logs", "paper-1", "-f", "--tail", "5", "--since", "2m"]).unwrap();
        let Command::Logs(l) = cli.command else { panic!("not logs") };
        assert!(l.follow);
        assert_eq!(l.tail, Some(5));
        assert_eq!(l.since, Some(std::time::Duration::from_secs(120)));
        assert_eq!(Cli::try_parse_from(["lidoctl", "logs", "x", "--since", "soon"]).unwrap_err().exit_code(), 2);
    }
}
