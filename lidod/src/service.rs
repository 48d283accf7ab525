//! `lidod service …`: run one service as its own process, checking in with
//! a manager. Managers start brokers this way; an operator can too, on
//! another host, and the manager adopts it on check-in.

use std::collections::BTreeMap;

use lido_shared::client::agent::ServiceLink;
use tokio_util::sync::CancellationToken;

use crate::venue::BrokerOptions;

/// What `lidod service broker TYPE …` was given.
pub struct BrokerArgs {
    pub broker_type: String,
    pub name: String,
    pub manager_url: String,
    pub options: BTreeMap<String, String>,
    /// Exit when stdin closes (the parent manager died).
    pub exit_with_parent: bool,
}

pub async fn run_broker(args: BrokerArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let options = BrokerOptions::parse(&args.broker_type, &args.name, &args.options)?;
    let link = ServiceLink::from_env(crate::auth::secret::from_env()?)?;
    if args.exit_with_parent {
        lido_shared::client::agent::exit_with_parent(shutdown.clone());
    }
    options.run(args.name, args.manager_url, link, Some(std::process::id()), shutdown).await
}
