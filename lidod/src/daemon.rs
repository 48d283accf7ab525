//! Wiring of one node: the managers, the InfrastructureManager, the router,
//! the boot services, and the orderly shutdown.

use std::time::{Duration, Instant};

use anyhow::Context;
use axum::serve::ListenerExt;
use lido_shared::client::agent::ServiceLink;
use lido_shared::cluster::ServiceKind;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::auth::{Access, AuthMode};
use crate::brokers::BrokerManager;
use crate::config::{Config, Role};
use crate::events::EventBus;
use crate::infra::{Infra, InfraParts};
use crate::journal::Journal;
use crate::limits::Limits;
use crate::markets::{MarketManager, OrderStore};
use crate::pipe::PipeEvent;
use crate::sessions::Sessions;
use crate::supervisor::Supervisor;
use crate::tls::{NodeTls, TlsListener};
use crate::traders::TraderManager;

/// Once a second, every service's figures go out on the watch stream.
async fn publish_metrics(infra: Infra, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        infra.publish_metrics(last.elapsed());
        last = Instant::now();
    }
}

/// Says once, at start, that other hosts cannot dial this process: it is
/// bound to an unspecified address and has no advertise URL.
fn warn_if_unreachable(urls: &crate::advertise::Urls, addr: std::net::SocketAddr, role: Role) {
    if !urls.unreachable {
        return;
    }
    let how = crate::advertise::HOW_TO_SET;
    match role {
        Role::Node => {
            warn!(listen = %addr, "no advertise URL: this node listens on an unspecified address, which InfrastructureManagers refuse at check-in (no other host can dial it); set {how} to the URL other hosts reach it at, e.g. http://10.0.0.5:{}", addr.port())
        }
        Role::All => {
            warn!(listen = %addr, "no advertise URL: sessions hand algos {} (an unspecified address no other host can dial); set {how} to the URL other hosts reach this node at", urls.advertised)
        }
        Role::Im => {
            warn!(listen = %addr, "no advertise URL: this InfrastructureManager listens on an unspecified address and names {} as its own URL; set {how} to the URL other hosts reach it at", urls.advertised)
        }
    }
}

/// How long open connections (streams) may linger after a shutdown starts.
const DRAIN_CONNECTIONS: Duration = Duration::from_secs(3);

/// Builds the node on `listener` and serves until `shutdown` is cancelled;
/// then stops taking work, stops traders, then brokers, and returns.
pub async fn run(listener: TcpListener, config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let started = Instant::now();
    crate::metrics::install();
    let addr = listener.local_addr()?;
    let tls = match config.node.tls_identity()? {
        Some(identity) => Some(NodeTls::load(identity, config.node.tls_ca.clone())?),
        None => None,
    };
    let urls = crate::advertise::resolve(config.node.advertise_url.as_deref(), addr, tls.is_some())?;
    warn_if_unreachable(&urls, addr, config.cluster.role);
    // Other hosts (IMs, algos) get the advertised URL; the services this
    // node starts on this host dial it locally.
    let api_url = urls.advertised.clone();
    let local_url = urls.local.clone();
    match &tls {
        Some(t) => info!(cert = %t.identity.cert.display(), ca = %t.ca.display(),
            "TLS on: serving HTTPS/WSS only; broker pipes are wss:// and verified against the CA"),
        None => info!("TLS off: serving plain HTTP/WS (set [node] tls_cert and tls_key, or --tls-cert and --tls-key)"),
    }
    crate::auth::check_mode(config.auth, addr)?;
    let data_dir = config.node.data_dir.as_path();
    std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let access = Access::open(config.auth, Some(data_dir))?;
    let bootstrap = match config.auth {
        AuthMode::Tokens => access.bootstrap(data_dir).await?,
        AuthMode::Open => None,
    };
    if let Some(path) = bootstrap {
        warn!(path = %path.display(), "no operator token existed: created a bootstrap operator token in this file (0600); create your own with `lidoctl token create --operator` and revoke it");
    }
    let cluster_secret = crate::auth::secret::load(config.cluster_secret_file.as_deref(), Some(data_dir))?;
    let link = ServiceLink {
        cluster_secret: cluster_secret.clone(),
        tls: tls.as_ref().map(|t| t.identity.clone()),
        manager_ca: tls.as_ref().map(|t| t.ca.clone()),
        in_memory: false,
    };
    let dial_tls = tls.as_ref().map(|t| t.dial.clone());
    let exe = match &config.service_exe {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("cannot find the lidod executable to start services")?,
    };
    let node = config.node.id.clone();
    let bus = EventBus::new();
    // Managers get their own token: on shutdown we stop services in order
    // before they go.
    let managers = CancellationToken::new();

    let (broker_events, broker_events_rx) = mpsc::channel(65_536);
    let (broker_signals, broker_signals_rx) = mpsc::unbounded_channel();
    let broker_sup = Supervisor::new(
        ServiceKind::Broker,
        node.clone(),
        config.supervisor.clone(),
        bus.clone(),
        broker_events,
        Some(broker_signals),
        link.clone(),
        dial_tls.clone(),
        managers.child_token(),
    );
    let brokers = BrokerManager::new(broker_sup, exe.clone(), local_url.clone(), config.node.data_dir.clone());
    let journal = Journal::open_with(&config.node.data_dir, config.node.journal_synchronous)?;
    let orders = OrderStore::open(journal)?;
    info!(data_dir = %config.node.data_dir.display(), synchronous = ?config.node.journal_synchronous,
        open_orders = orders.open_count(), "order journal opened");
    let markets = MarketManager::new(
        node.clone(),
        brokers.clone(),
        orders,
        bus.clone(),
        (broker_events_rx, broker_signals_rx),
        config.autoscale.clone(),
        config.failover.clone(),
        managers.child_token(),
    );

    // Hosted traders report nothing the node acts on yet: their events are
    // dropped and their replies handed on.
    let (trader_events, mut trader_events_rx) = mpsc::channel(1024);
    tokio::spawn(async move {
        while let Some((_, event)) = trader_events_rx.recv().await {
            if let PipeEvent::Reply(reply) = event {
                reply.deliver();
            }
        }
    });
    let trader_sup = Supervisor::new(
        ServiceKind::Trader,
        node.clone(),
        config.supervisor.clone(),
        bus.clone(),
        trader_events,
        None,
        link,
        dial_tls,
        managers.child_token(),
    );
    let sessions = Sessions::default();
    let traders = TraderManager::new(
        trader_sup,
        local_url,
        sessions.clone(),
        config.node.data_dir.clone(),
        exe,
        config.traders.clone(),
    );

    let infra = Infra::new(InfraParts {
        node_id: node.clone(),
        location: config.node.location.clone(),
        api_url: api_url.clone(),
        brokers: brokers.clone(),
        markets: markets.clone(),
        traders: traders.clone(),
        sessions,
        bus,
        access,
        limits: Limits::new(config.limits.clone(), config.risk.clone()),
        cluster_secret,
        closing: shutdown.clone(),
    });

    for b in &config.brokers {
        brokers
            .spawn_broker(&b.broker_type, &b.name, b.mode, b.options.clone())
            .map_err(|e| anyhow::anyhow!("cannot start broker {}: {e}", b.name))?;
    }
    for m in &config.markets {
        markets
            .create_market(&m.name, m.pool()?)
            .map_err(|e| anyhow::anyhow!("cannot create market {}: {e}", m.name))?;
    }

    tokio::spawn(publish_metrics(infra.clone(), managers.clone()));
    if config.cluster.role == Role::Node {
        let interval = Duration::from_millis(config.cluster.checkin_interval_ms);
        info!(ims = ?config.cluster.ims, interval_ms = config.cluster.checkin_interval_ms, "node role: checking in with the InfrastructureManagers");
        let secret = infra.cluster_secret().clone();
        let claims = crate::cluster::claims::OrderClaims::new(node.clone(), &config.cluster.ims, secret.clone())
            .context("cannot build the HTTP client the node claims orders with")?;
        markets.claim_orders_with(claims);
        crate::cluster::checkin::spawn(infra.clone(), config.cluster.ims.clone(), interval, secret, managers.clone())
            .context("cannot build the HTTP client the node checks in with")?;
    }
    let app = crate::http::router(infra);
    let closing = shutdown.clone().cancelled_owned();
    let mut server = match tls {
        Some(t) => {
            let server = axum::serve(TlsListener::new(listener, t.server), app).with_graceful_shutdown(closing);
            tokio::spawn(async move { server.await })
        }
        None => {
            // Small frames (acks, quotes) go out at once: Nagle's algorithm
            // with delayed ACKs would hold them up to 40 ms.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let server = axum::serve(listener, app).with_graceful_shutdown(closing);
            tokio::spawn(async move { server.await })
        }
    };
    info!(%api_url, node = %node, startup_ms = started.elapsed().as_millis() as u64, "lidod ready");
    // Listening, journal open, boot services started: ready for systemd.
    crate::systemd::ready(&format!("node {node} serving {api_url}"), shutdown.clone());

    tokio::select! {
        _ = shutdown.cancelled() => {}
        r = &mut server => {
            managers.cancel();
            return r.context("server task failed")?.context("server failed");
        }
    }
    // Order matters: hosted traders first (they are clients), then the
    // listener finishes in-flight requests and streams close, then brokers,
    // so nothing in flight loses its venue.
    crate::systemd::stopping();
    info!("shutting down: no new work; stopping traders");
    traders.shutdown().await;
    match tokio::time::timeout(DRAIN_CONNECTIONS, &mut server).await {
        Ok(r) => r.context("server task failed")?.context("server failed")?,
        Err(_) => {
            warn!("open connections did not close in time; closing them");
            server.abort();
        }
    }
    info!("listener closed; stopping brokers");
    brokers.shutdown().await;
    managers.cancel();
    info!("lidod stopped");
    Ok(())
}

/// Runs an InfrastructureManager only (`--role im`) on `listener` until
/// `shutdown`: nodes check in with it; it runs no services itself.
pub async fn run_im(listener: TcpListener, config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    crate::metrics::install();
    let addr = listener.local_addr()?;
    anyhow::ensure!(
        config.node.tls_identity()?.is_none(),
        "an InfrastructureManager serves plain HTTP for now; drop tls_cert/tls_key for --role im"
    );
    let urls = crate::advertise::resolve(config.node.advertise_url.as_deref(), addr, false)?;
    warn_if_unreachable(&urls, addr, Role::Im);
    crate::auth::check_mode(config.auth, addr)?;
    let data_dir = config.node.data_dir.as_path();
    std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let access = Access::open(config.auth, Some(data_dir))?;
    let cluster_secret = crate::auth::secret::load(config.cluster_secret_file.as_deref(), Some(data_dir))?;
    let c = &config.cluster;
    let registry = crate::cluster::open_registry(&c.registry, &c.etcd_endpoints, &c.etcd_prefix).await?;
    // On etcd, tokens and the audit log are the cluster's, not this IM's.
    access.share(registry.clone(), shutdown.child_token()).await?;
    if config.auth == AuthMode::Tokens {
        if let Some(path) = access.bootstrap(data_dir).await? {
            warn!(path = %path.display(), "no operator token existed: created a bootstrap operator token in this file (0600)");
        }
    }
    let after_hours = c.after_hours.as_ref().map(crate::cluster::after_hours::AfterHours::parse).transpose()?;
    let im = crate::cluster::im::ClusterIm::new(crate::cluster::im::ImParts {
        id: config.node.id.clone(),
        registry,
        access,
        cluster_secret,
        node_ttl: Duration::from_millis(c.node_ttl_ms),
        after_hours,
        closing: shutdown.clone(),
    })
    .context("cannot build the HTTP client the IM reaches its nodes with")?;
    im.start();
    if c.autoscale.enabled {
        let mut provisioner = c.provisioner.clone().context("[cluster.autoscale] needs [cluster.provisioner]")?;
        if let crate::cluster::provision::ProvisionerConfig::Local(local) = &mut provisioner {
            // Nodes started here check in with this IM (on this host: its
            // local URL) and share its secret, unless the operator said otherwise.
            if local.ims.is_empty() {
                local.ims.push(urls.local.clone());
            }
            if local.cluster_secret_file.is_none() {
                local.cluster_secret_file =
                    Some(crate::auth::secret::path(config.cluster_secret_file.as_deref(), data_dir));
            }
        }
        let scaler = crate::cluster::nodescale::spawn_node_autoscaler(
            config.node.id.clone(),
            im.registry().clone(),
            im.leader(),
            provisioner.build(),
            c.autoscale.clone(),
            im.bus().clone(),
            shutdown.child_token(),
        );
        im.set_node_scaler(scaler);
    }
    let app = crate::http::im::router(im);
    info!(url = %urls.advertised, listen = %addr, registry = %c.registry, after_hours = ?after_hours.map(|w| w.to_string()),
        "lidod ready as an InfrastructureManager");
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let closing = shutdown.clone().cancelled_owned();
    let server = axum::serve(listener, app).with_graceful_shutdown(closing);
    let mut server = tokio::spawn(async move { server.await });
    // Listening, the registry open: ready for systemd.
    crate::systemd::ready(
        &format!("InfrastructureManager {} serving {}", config.node.id, urls.advertised),
        shutdown.clone(),
    );
    tokio::select! {
        _ = shutdown.cancelled() => {}
        r = &mut server => return r.context("server task failed")?.context("server failed"),
    }
    crate::systemd::stopping();
    match tokio::time::timeout(DRAIN_CONNECTIONS, &mut server).await {
        Ok(r) => r.context("server task failed")?.context("server failed")?,
        Err(_) => {
            warn!("open connections did not close in time; closing them");
            server.abort();
        }
    }
    info!("InfrastructureManager stopped");
    Ok(())
}
