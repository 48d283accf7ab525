//! `lidoctl status`: nodes with their load, then every service.

use std::collections::BTreeMap;

use chrono::Utc;

use crate::endpoints::Endpoints;
use crate::output::{attention, nodes_table, services_table, write_stdout, Output};

pub async fn run(endpoints: &Endpoints, out: Output) -> anyhow::Result<()> {
    let snapshot = endpoints.run("cannot get the cluster", |c| async move { c.cluster().await }).await?;
    if out.data(&snapshot)? {
        return Ok(());
    }
    let services: Vec<_> = snapshot.services().collect();
    let mut states: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &services {
        *states.entry(s.state.as_str()).or_default() += 1;
    }
    let states: Vec<String> = states.iter().map(|(state, n)| format!("{n} {state}")).collect();
    let mut summary = format!(
        "{} node{}, {} service{}",
        snapshot.nodes.len(),
        plural(snapshot.nodes.len()),
        services.len(),
        plural(services.len())
    );
    if !states.is_empty() {
        summary.push_str(&format!(" ({})", states.join(", ")));
    }
    write_stdout(&format!("{summary}\n\n"))?;
    out.table(&nodes_table(&snapshot.nodes, out.wide()))?;
    write_stdout("\n")?;
    if services.is_empty() {
        return write_stdout("no services\n");
    }
    out.table(&services_table(services.iter().copied(), out.wide(), Utc::now()))?;
    // What needs an operator (a dead Schwab login: "log in again: …") is
    // shown without `-o wide` too.
    let notes = attention(services.iter().copied());
    if out.wide() || notes.is_empty() {
        return Ok(());
    }
    write_stdout(&format!("\n{notes}"))
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
