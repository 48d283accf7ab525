//! `lidoctl log-level <LEVEL|FILTER>`: the node's log filter, changed at
//! run time through `PUT /v1/log-level`.

use crate::cli::LogLevelArgs;
use crate::endpoints::Endpoints;
use crate::output::{write_stdout, Output};

pub async fn run(endpoints: &Endpoints, out: Output, args: &LogLevelArgs) -> anyhow::Result<()> {
    let filter = args.filter.as_str();
    let what = format!("cannot set the log filter to {filter:?}");
    let set = endpoints.run(what, |c| async move { c.set_log_level(filter).await }).await?;
    if out.data(&set)? {
        return Ok(());
    }
    write_stdout(&format!("log filter is now {}\n", set.filter))
}
