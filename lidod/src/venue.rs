//! Venue adapters. Each broker type is a service that speaks its venue's
//! protocol on one side and the Lido pipe on the other.
//!
//! - [`paper`]: the simulated exchange (pure, synchronous, seedable).
//! - [`paper_broker`]: the `paper` broker service that runs it.
//! - [`paper_exchange`]: `lidod venue paper`, one paper venue shared by the
//!   paper brokers of many nodes (their option `exchange`).
//! - [`kraken`]: the Kraken Spot protocol core (signing, envelopes, pairs,
//!   rate limits, the checksummed book, wire messages, the REST client).
//! - [`kraken_broker`]: the `kraken` broker service: REST and WebSocket v2
//!   connections around that core.
//! - [`schwab`]: the Schwab Trader API core (OAuth tokens, typed errors,
//!   order JSON, market hours, streamer messages, the REST client);
//!   [`schwab_broker`]: the `schwab` broker service (alias `tdameritrade`,
//!   whose API Schwab's replaced).
//! - [`file`]: the atomic file replacement their crash-surviving state uses.
//!
//! [`BrokerOptions`] is the one place that knows which types exist and
//! how each parses its options and runs.

use std::collections::BTreeMap;

use lido_shared::client::agent::ServiceLink;
use tokio_util::sync::CancellationToken;

pub mod file;
pub mod kraken;
pub mod kraken_broker;
pub mod paper;
pub mod paper_broker;
pub mod paper_exchange;
pub mod schwab;
pub mod schwab_broker;

/// Broker types this build can start.
pub const BROKER_TYPES: &[&str] = &["paper", "kraken", "schwab", "tdameritrade"];

/// A broker type with its parsed, checked options.
#[derive(Clone, Debug)]
pub enum BrokerOptions {
    Paper(paper_broker::PaperOptions),
    Kraken(kraken_broker::KrakenOptions),
    /// `schwab`, or its alias `tdameritrade` (kept to say so in the log).
    Schwab {
        options: schwab_broker::SchwabOptions,
        alias: bool,
    },
}

impl BrokerOptions {
    /// Checks the type and its options for a broker called `name`; errors
    /// name the bad type or key.
    pub fn parse(
        broker_type: &str,
        name: &str,
        options: &BTreeMap<String, String>,
    ) -> Result<Self, BrokerOptionsError> {
        // `account` is the MarketManager's (brokers on one venue account are
        // siblings for orders); a schwab broker also reads it: it is the
        // Schwab account number the broker trades.
        let mut options = options.clone();
        let account = options.remove("account");
        if let Some(account) = &account {
            let ok = !account.is_empty() && account.len() <= 64;
            let ok = ok && account.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !ok {
                return Err(BrokerOptionsError::Option(format!(
                    "option account must be 1-64 of A-Z a-z 0-9 - _ . (the venue account this broker trades), got {account:?}"
                )));
            }
        }
        if matches!(broker_type, "schwab" | "tdameritrade") {
            options.extend(account.map(|a| ("account".to_string(), a)));
        }
        let options = &options;
        match broker_type {
            "paper" => paper_broker::PaperOptions::parse(options).map(Self::Paper).map_err(BrokerOptionsError::Option),
            "kraken" => {
                kraken_broker::KrakenOptions::parse(name, options).map(Self::Kraken).map_err(BrokerOptionsError::Option)
            }
            "schwab" | "tdameritrade" => schwab_broker::SchwabOptions::parse(name, options)
                .map(|options| Self::Schwab { options, alias: broker_type == "tdameritrade" })
                .map_err(BrokerOptionsError::Option),
            other => Err(BrokerOptionsError::UnknownType(format!(
                "unknown broker type {other:?}; this build supports: {}",
                BROKER_TYPES.join(", ")
            ))),
        }
    }

    /// Runs the broker until `shutdown` or a `Stop` from its manager.
    pub async fn run(
        self,
        name: String,
        manager_url: String,
        link: ServiceLink,
        pid: Option<u32>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        match self {
            Self::Paper(o) => paper_broker::run(name, manager_url, link, o, pid, shutdown).await,
            Self::Kraken(o) => kraken_broker::run(name, manager_url, link, o, pid, shutdown).await,
            Self::Schwab { options, alias } => {
                let broker_type = if alias { "tdameritrade" } else { "schwab" };
                schwab_broker::run(name, broker_type.to_string(), manager_url, link, options, pid, shutdown).await
            }
        }
    }
}

/// Why a broker's type or options were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerOptionsError {
    #[error("{0}")]
    UnknownType(String),
    #[error("{0}")]
    Option(String),
}
