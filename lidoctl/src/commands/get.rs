//! `lidoctl get nodes|services|brokers|markets|traders|sessions [NAME…]`, `lidoctl get autoscale|nodescale`.

use chrono::Utc;
use lido_shared::cluster::{ServiceInfo, ServiceKind};

use crate::cli::{GetArgs, Resource};
use crate::endpoints::Endpoints;
use crate::exit::NotFound;
use crate::output::{
    autoscale_fields, nodes_table, nodescale_fields, services_table, sessions_table, write_stdout, Output,
};

pub async fn run(endpoints: &Endpoints, out: Output, args: &GetArgs) -> anyhow::Result<()> {
    match args.resource {
        Resource::Sessions => return sessions(endpoints, out, args).await,
        Resource::Autoscale => return autoscale(endpoints, out, args).await,
        Resource::Nodescale => return nodescale(endpoints, out, args).await,
        _ => {}
    }
    let snapshot = endpoints.run("cannot get the cluster", |c| async move { c.cluster().await }).await?;
    let single = args.names.len() == 1;
    let wanted = |name: &str| args.names.is_empty() || args.names.iter().any(|n| n == name);
    if args.resource == Resource::Nodes {
        let nodes: Vec<_> = snapshot.nodes.iter().filter(|n| wanted(&n.id)).collect();
        check_found(&args.names, nodes.iter().map(|n| n.id.as_str()), "node")?;
        let table = || nodes_table(nodes.iter().copied(), out.wide());
        return print(out, &nodes, single, table, "nodes");
    }
    let kind = kind_of(args.resource);
    let services: Vec<&ServiceInfo> =
        snapshot.services().filter(|s| !matches!(kind, Some(k) if k != s.kind) && wanted(&s.name)).collect();
    let noun = kind.map_or("service", ServiceKind::as_str);
    check_found(&args.names, services.iter().map(|s| s.name.as_str()), noun)?;
    let now = Utc::now();
    let table = || services_table(services.iter().copied(), out.wide(), now);
    print(out, &services, single, table, &format!("{noun}s"))
}

/// `get sessions [ID…]`: from `GET /v1/sessions`, oldest first.
async fn sessions(endpoints: &Endpoints, out: Output, args: &GetArgs) -> anyhow::Result<()> {
    let all = endpoints.run("cannot get the sessions", |c| async move { c.sessions().await }).await?;
    let sessions: Vec<_> = all.iter().filter(|s| args.names.is_empty() || args.names.contains(&s.id)).collect();
    check_found(&args.names, sessions.iter().map(|s| s.id.as_str()), "session")?;
    let now = Utc::now();
    let table = || sessions_table(sessions.iter().copied(), out.wide(), now);
    print(out, &sessions, args.names.len() == 1, table, "sessions")
}

/// `get autoscale`: from `GET /v1/autoscale`; it takes no names.
async fn autoscale(endpoints: &Endpoints, out: Output, args: &GetArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.names.is_empty(), "get autoscale takes no names; it shows the whole node's autoscaler");
    let status = endpoints.run("cannot get the autoscaler's status", |c| async move { c.autoscale().await }).await?;
    if out.data(&status)? {
        return Ok(());
    }
    write_stdout(&autoscale_fields(&status, Utc::now()).render())
}

/// `get nodescale`: from the IM's `GET /v1/cluster/autoscale`; no names.
async fn nodescale(endpoints: &Endpoints, out: Output, args: &GetArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.names.is_empty(), "get nodescale takes no names; it shows the cluster's node autoscaler");
    let status =
        endpoints.run("cannot get the node autoscaler's status", |c| async move { c.node_autoscale().await }).await?;
    if out.data(&status)? {
        return Ok(());
    }
    write_stdout(&nodescale_fields(&status, Utc::now()).render())
}

/// The service kind a noun lists; `None` for all services.
fn kind_of(resource: Resource) -> Option<ServiceKind> {
    match resource {
        Resource::Brokers => Some(ServiceKind::Broker),
        Resource::Markets => Some(ServiceKind::Market),
        Resource::Traders => Some(ServiceKind::Trader),
        Resource::Services | Resource::Nodes | Resource::Sessions | Resource::Autoscale | Resource::Nodescale => None,
    }
}

fn check_found<'a>(names: &[String], found: impl Iterator<Item = &'a str>, noun: &str) -> anyhow::Result<()> {
    let found: Vec<&str> = found.collect();
    let missing: Vec<&str> = names.iter().map(String::as_str).filter(|n| !found.contains(n)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(NotFound(format!("{noun} not found: {}", missing.join(", "))).into())
}

/// JSON/YAML: an object when one name was asked for, otherwise a list; or a table.
fn print<T: serde::Serialize>(
    out: Output,
    items: &[T],
    single: bool,
    table: impl FnOnce() -> crate::output::Table,
    plural: &str,
) -> anyhow::Result<()> {
    let printed = match items {
        [one] if single => out.data(one)?,
        _ => out.data(&items)?,
    };
    if printed {
        return Ok(());
    }
    if items.is_empty() {
        eprintln!("no {plural} found");
        return Ok(());
    }
    out.table(&table())
}
