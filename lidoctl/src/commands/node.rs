//! `lidoctl drain [node] <id>` / `drain broker <name>` and the same for `undrain`.

use crate::cli::{DrainArgs, Drainable, UndrainArgs};
use crate::confirm::confirm;
use crate::endpoints::Endpoints;
use crate::exit::UsageError;
use crate::output::{write_stdout, Output};

pub async fn drain(endpoints: &Endpoints, out: Output, args: &DrainArgs) -> anyhow::Result<()> {
    match args.target.target().map_err(UsageError)? {
        Drainable::Node(id) => {
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
        Drainable::Broker(name) => {
            confirm(&format!("drain broker {name}"), args.yes)?;
            let what = format!("cannot drain broker {name}");
            let broker = endpoints.run(what, |c| async move { c.drain_service(name).await }).await?;
            if out.data(&broker)? {
                return Ok(());
            }
            write_stdout(&format!(
                "broker {} is draining: no new subscriptions or orders; its feeds move to other brokers \
                 without a gap and its open orders to a sibling on the same account (`lidoctl describe market NAME` shows the routes)\n",
                broker.name
            ))
        }
    }
}

pub async fn undrain(endpoints: &Endpoints, out: Output, args: &UndrainArgs) -> anyhow::Result<()> {
    match args.target.target().map_err(UsageError)? {
        Drainable::Node(id) => {
            let what = format!("cannot undrain node {id}");
            let node = endpoints.run(what, |c| async move { c.undrain_node(id).await }).await?;
            if out.data(&node)? {
                return Ok(());
            }
            write_stdout(&format!("node {} is no longer draining: it takes new sessions and spawns\n", node.id))
        }
        Drainable::Broker(name) => {
            let what = format!("cannot undrain broker {name}");
            let broker = endpoints.run(what, |c| async move { c.undrain_service(name).await }).await?;
            if out.data(&broker)? {
                return Ok(());
            }
            write_stdout(&format!(
                "broker {} is no longer draining: routes come back to it after the failback hold time\n",
                broker.name
            ))
        }
    }
}
