use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lidod::service::{self, BrokerArgs};
use lidod::Config;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The Lido daemon. With no arguments: one node on 127.0.0.1:7700 with an
/// InfrastructureManager, the three managers, a paper broker and a paper market.
#[derive(Parser)]
#[command(
    name = "lidod",
    version,
    after_help = "Examples:\n  lidod\n  lidod --listen 127.0.0.1:0\n  lidod --config lido.toml\n  lidod --data-dir /var/lib/lido\n  lidod --tls-cert cert.pem --tls-key key.pem\n  lidod --role node --listen 0.0.0.0:7700 --advertise-url http://10.0.0.5:7700 --im http://10.0.0.2:7700 --auth tokens\n  lidod service broker paper --name p9 --manager-url http://127.0.0.1:7700\n  lidod venue paper --listen 127.0.0.1:7790 --data-dir /var/lib/lido-exchange"
)]
struct Cli {
    /// Address to listen on (default 127.0.0.1:7700; port 0 picks a free one).
    #[arg(long, env = "LIDO_LISTEN")]
    listen: Option<SocketAddr>,
    /// The URL other hosts reach this node or IM at, e.g. http://10.0.0.5:7700
    /// (default: the listen address, unless it is 0.0.0.0 or [::]; port 0: the bound port).
    #[arg(long, env = "LIDO_ADVERTISE_URL", value_name = "URL")]
    advertise_url: Option<String>,
    /// TOML configuration file (see lido.example.toml).
    #[arg(long, env = "LIDO_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for the node's durable state: the order journal, paper
    /// venue state, tokens, the audit log and the cluster secret (default
    /// `$XDG_STATE_HOME/lido`, else `~/.local/state/lido`).
    #[arg(long, env = "LIDO_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// `open` (loopback only, no token needed; the default) or `tokens`.
    #[arg(long, env = "LIDO_AUTH", value_enum)]
    auth: Option<lidod::auth::AuthMode>,
    /// Serve HTTPS/WSS only, with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "LIDO_TLS_CERT", value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "LIDO_TLS_KEY", value_name = "PEM")]
    tls_key: Option<PathBuf>,
    /// The CA (PEM) to trust on the pipes to this node's services (default: --tls-cert itself).
    #[arg(long, env = "LIDO_TLS_CA", value_name = "PEM")]
    tls_ca: Option<PathBuf>,
    /// `all` (a node with its own InfrastructureManager, the default), `im`
    /// (an InfrastructureManager only) or `node` (checks in with --im).
    #[arg(long, env = "LIDO_ROLE", value_enum)]
    role: Option<lidod::config::Role>,
    /// An InfrastructureManager this node checks in with (repeatable).
    #[arg(long = "im", env = "LIDO_IMS", value_delimiter = ',', value_name = "URL")]
    ims: Vec<String>,
    /// This node's id (default n1).
    #[arg(long, env = "LIDO_NODE_ID")]
    node_id: Option<String>,
    /// This node's location, e.g. ny or ldn.
    #[arg(long, env = "LIDO_LOCATION")]
    location: Option<String>,
    /// The registry the IMs share: memory (one IM) or etcd.
    #[arg(long, env = "LIDO_REGISTRY")]
    registry: Option<String>,
    /// An etcd endpoint (repeatable).
    #[arg(long = "etcd", env = "LIDO_ETCD", value_delimiter = ',', value_name = "URL")]
    etcd: Vec<String>,
    /// Log filter, e.g. `info` or `lidod=debug`.
    #[arg(long, env = "LIDO_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one service in this process, checking in with a manager.
    Service {
        #[command(subcommand)]
        service: ServiceCmd,
    },
    /// Internal: how the TraderManager starts a hosted trader. Restricts
    /// itself with Landlock (read/write WORK_DIR, read the system and each
    /// --read path), then runs PROGRAM in its place.
    #[command(hide = true)]
    Sandbox {
        #[arg(long)]
        work_dir: std::path::PathBuf,
        #[arg(long)]
        read: Vec<std::path::PathBuf>,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Run a shared venue: `lidod venue paper --listen 127.0.0.1:0 --data-dir DIR`.
    Venue {
        #[command(subcommand)]
        venue: VenueCmd,
    },
}

#[derive(Subcommand)]
enum VenueCmd {
    /// The shared paper exchange that the paper brokers of many nodes trade
    /// on (their option `exchange=ws://ADDR/v1/exchange`). Prints
    /// `exchange ws://ADDR/v1/exchange` as the first line on stdout.
    Paper {
        /// Address to listen on (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:7790")]
        listen: SocketAddr,
        /// Where the venue state (`paper/exchange.json`) and, unless given,
        /// the cluster secret (`cluster-secret`) are kept.
        #[arg(long)]
        data_dir: PathBuf,
        /// The cluster's secret file, shared with the nodes (else
        /// LIDO_CLUSTER_SECRET, else DATA_DIR/cluster-secret).
        #[arg(long, env = "LIDO_CLUSTER_SECRET_FILE")]
        cluster_secret_file: Option<PathBuf>,
        /// Paper option, repeatable: --set seed=7 --set tick_ms=100
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_kv)]
        options: Vec<(String, String)>,
    },
}

#[derive(Subcommand)]
enum ServiceCmd {
    /// A broker: `lidod service broker paper --name p1 --manager-url http://127.0.0.1:7700`.
    Broker {
        /// Broker type (paper).
        #[arg(value_name = "TYPE")]
        broker_type: String,
        #[arg(long)]
        name: String,
        #[arg(long, env = "LIDO_MANAGER_URL")]
        manager_url: String,
        /// Broker option, repeatable: --set seed=7
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_kv)]
        options: Vec<(String, String)>,
        /// Exit when stdin closes (set by the manager that starts it).
        #[arg(long)]
        exit_with_parent: bool,
    },
}

/// stderr for logs, where a failed write is dropped: a service whose manager
/// died has a broken stderr, and a log line must never take it down.
struct LossyStderr;

impl Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log).context("invalid --log filter")?;
    // Reloadable, so `PUT /v1/log-level` changes it at run time.
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(|| LossyStderr)
                .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()),
        )
        .init();
    lidod::loglevel::install(handle);
    // Not dumpable: a process of the same user without CAP_SYS_PTRACE (a
    // hosted trader) cannot read this one's memory or /proc/<pid>/environ,
    // which may hold venue keys. Landlock alone does not stop that read.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "cannot make lidod non-dumpable; its children may read its environment");
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        match cli.command {
            Some(Cmd::Service {
                service: ServiceCmd::Broker { broker_type, name, manager_url, options, exit_with_parent },
            }) => {
                let args = BrokerArgs {
                    broker_type,
                    name,
                    manager_url,
                    options: options.into_iter().collect(),
                    exit_with_parent,
                };
                service::run_broker(args, shutdown).await
            }
            Some(Cmd::Sandbox { work_dir, read, command }) => {
                let (program, args) = command.split_first().context("no program to run")?;
                Err(lidod::sandbox::exec(&work_dir, &read, std::path::Path::new(program), args))
            }
            Some(Cmd::Venue { venue: VenueCmd::Paper { listen, data_dir, cluster_secret_file, options } }) => {
                let args = lidod::venue::paper_exchange::ExchangeArgs {
                    listen,
                    data_dir,
                    options: options.into_iter().collect(),
                    cluster_secret_file,
                };
                lidod::venue::paper_exchange::run(args, shutdown).await
            }
            None => {
                let mut config = match &cli.config {
                    Some(path) => Config::from_file(path)?,
                    None => Config::default(),
                };
                if let Some(listen) = cli.listen {
                    config.listen = listen;
                }
                if let Some(url) = cli.advertise_url {
                    config.node.advertise_url = Some(url);
                }
                if let Some(dir) = cli.data_dir {
                    config.node.data_dir = dir;
                }
                if let Some(auth) = cli.auth {
                    config.auth = auth;
                }
                config.node.tls_cert = cli.tls_cert.or(config.node.tls_cert);
                config.node.tls_key = cli.tls_key.or(config.node.tls_key);
                config.node.tls_ca = cli.tls_ca.or(config.node.tls_ca);
                if let Some(role) = cli.role {
                    config.cluster.role = role;
                }
                if !cli.ims.is_empty() {
                    config.cluster.ims = cli.ims;
                }
                if let Some(id) = cli.node_id {
                    config.node.id = id;
                }
                if let Some(location) = cli.location {
                    config.node.location = location;
                }
                if let Some(registry) = cli.registry {
                    config.cluster.registry = registry;
                }
                if !cli.etcd.is_empty() {
                    config.cluster.etcd_endpoints = cli.etcd;
                }
                config.validate()?;
                lidod::auth::refuse_open_public(config.auth, config.listen)?;
                let listener = tokio::net::TcpListener::bind(config.listen).await.with_context(|| {
                    format!(
                        "cannot listen on {}; is another lidod running? use --listen to pick another address",
                        config.listen
                    )
                })?;
                let addr = listener.local_addr()?;
                // A node started by an IM's local provisioner ends with that
                // IM, even a killed one: its stdin is a pipe from the IM.
                if std::env::var_os(lidod::cluster::provision::EXIT_WITH_PARENT_ENV).is_some() {
                    lido_shared::client::agent::exit_with_parent(shutdown.clone());
                }
                // Machine-readable first line: tests and scripts read the address here.
                let scheme = if config.node.tls_cert.is_some() { "https" } else { "http" };
                println!("lidod listening on {scheme}://{addr}");
                std::io::stdout().flush()?;
                match config.cluster.role {
                    lidod::config::Role::Im => lidod::run_im(listener, config, shutdown).await,
                    lidod::config::Role::Node | lidod::config::Role::All => {
                        lidod::run(listener, config, shutdown).await
                    }
                }
            }
        }
    })
}

/// SIGINT or SIGTERM starts an orderly shutdown; a second one exits at once.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
    for round in 0..2 {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        if round == 0 {
            tracing::info!("signal received, shutting down");
            shutdown.cancel();
        } else {
            tracing::warn!("second signal, exiting now");
            std::process::exit(130);
        }
    }
}
