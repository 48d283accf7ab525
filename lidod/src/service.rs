//! `lidod service …`: run one service as its own process, checking in with
//! a manager. Managers start brokers this way; an operator can too, on
//! another host, and the manager adopts it on check-in.

use std::collections::BTreeMap;

use tokio_util::sync::CancellationToken;

use crate::venue::paper_broker::{self, PaperOptions};
use crate::venue::BROKER_TYPES;

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
    anyhow::ensure!(
        BROKER_TYPES.contains(&args.broker_type.as_str()),
        "unknown broker type {:?}; this build supports: {}",
        args.broker_type,
        BROKER_TYPES.join(", ")
    );
    let options = PaperOptions::parse(&args.options).map_err(anyhow::Error::msg)?;
    let secret = crate::auth::secret::from_env()?;
    if args.exit_with_parent {
        lido_shared::client::agent::exit_with_parent(shutdown.clone());
    }
    paper_broker::run(args.name, args.manager_url, secret, options, Some(std::process::id()), shutdown).await
}
