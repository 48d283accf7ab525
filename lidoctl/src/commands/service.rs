//! `lidoctl stop <name>` and `lidoctl restart <name>`.

use crate::cli::{RestartArgs, StopArgs};
use crate::confirm::confirm;
use crate::endpoints::Endpoints;
use crate::output::{service_line, write_stdout, Output};

pub async fn stop(endpoints: &Endpoints, out: Output, args: &StopArgs) -> anyhow::Result<()> {
    let name = args.name.as_str();
    confirm(&format!("stop service {name}"), args.yes)?;
    let what = format!("cannot stop service {name}");
    let service = endpoints.run(what, |c| async move { c.stop_service(name).await }).await?;
    if out.data(&service)? {
        return Ok(());
    }
    write_stdout(&format!("{}\n", service_line("stopped", &service)))
}

pub async fn restart(endpoints: &Endpoints, out: Output, args: &RestartArgs) -> anyhow::Result<()> {
    let name = args.name.as_str();
    let what = format!("cannot restart service {name}");
    let service = endpoints.run(what, |c| async move { c.restart_service(name).await }).await?;
    if out.data(&service)? {
        return Ok(());
    }
    write_stdout(&format!("{}\n", service_line("restarted", &service)))
}
