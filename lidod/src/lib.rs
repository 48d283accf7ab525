//! `lidod`, the Lido daemon. One process is one node:
//!
//! - [`infra`]: the InfrastructureManager (cluster view, operator actions, sessions).
//! - [`brokers`], [`markets`], [`traders`]: the three managers; brokers and
//!   traders are supervised services ([`supervisor`]) reached over the
//!   service pipe ([`pipe`]); markets live inside the MarketManager.
//! - [`venue`]: venue adapters, today the paper venue and its broker service.
//! - [`http`]: the one listener (algo API, operator API, check-ins, OpenAPI,
//!   Prometheus [`metrics`]).
//! - [`daemon::run`]: wires a node on a listener and runs it until shutdown;
//!   [`service`]: `lidod service …`, a service in its own process.

pub mod brokers;
pub mod config;
pub mod daemon;
pub mod error;
pub mod events;
pub mod http;
pub mod infra;
pub mod logbuf;
pub mod loglevel;
pub mod markets;
pub mod metrics;
pub mod pipe;
pub mod service;
pub mod sessions;
pub mod supervisor;
pub mod traders;
pub mod venue;

pub use config::Config;
pub use daemon::run;
