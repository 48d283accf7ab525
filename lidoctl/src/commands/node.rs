//! `lidoctl drain [node] <id>` and `lidoctl undrain [node] <id>`.

use crate::cli::{DrainArgs, UndrainArgs};
use crate::confirm::confirm;
use crate::endpoints::Endpoints;
use crate::exit::UsageError;
use crate::output::{write_stdout, Output};

pub async fn drain(endpoints: &Endpoints, out: Output, args: &DrainArgs) -> anyhow::Result<()> {
    let id = args.target.id().map_err(UsageError)?;
    confirm(&format!("drain node {id}"), args.yes)?;
    let what = format!("cannot drain node {id}");
    let node = endpoints.run(what, |c| async move { c.drain_node(id).await }).await?;
    if out.data(&node)? {
        return Ok(());
    }
    write_stdout(&format!(
        "node {} is draining: no new sessions or spawns; its {} service(s) and {} session(s) go on\n",
        node.id,
        node.services.len(),
        node.load.sessions
    ))
}

pub async fn undrain(endpoints: &Endpoints, out: Output, args: &UndrainArgs) -> anyhow::Result<()> {
    let id = args.target.id().map_err(UsageError)?;
    let what = format!("cannot undrain node {id}");
    let node = endpoints.run(what, |c| async move { c.undrain_node(id).await }).await?;
    if out.data(&node)? {
        return Ok(());
    }
    write_stdout(&format!("node {} is no longer draining: it takes new sessions and spawns\n", node.id))
}
