//! `lidod`, the Lido daemon. One process is one node:
//!
//! - [`infra`]: the InfrastructureManager (cluster view, operator actions, sessions).
//! - [`brokers`], [`markets`], [`traders`]: the three managers; brokers and
//!   traders are supervised services ([`supervisor`]) reached over the
//!   service pipe ([`pipe`]); markets live inside the MarketManager.
//! - [`journal`]: the durable order journal (SQLite) the order store writes
//!   before it acknowledges or sends anything.
//! - [`venue`]: venue adapters, today the paper venue and its broker service.
//! - [`advertise`]: the URL a node or IM gives other hosts (`--advertise-url`).
//! - [`auth`]: tokens, rights, the cluster secret and the audit log;
//!   [`limits`]: per-customer limits and pre-trade risk checks.
//! - [`http`]: the one listener (algo API, operator API, check-ins, OpenAPI,
//!   Prometheus [`metrics`]); [`tls`]: HTTPS/WSS on it and on the pipes.
//! - [`daemon::run`]: wires a node on a listener and runs it until shutdown
//!   (telling [`systemd`] when it is ready);
//!   [`service`]: `lidod service …`, a service in its own process;
//!   [`sandbox`]: what a child process is given (environment, files).

pub mod advertise;
pub mod auth;
pub mod autoscale;
pub mod brokers;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod error;
pub mod events;
pub mod http;
pub mod infra;
pub mod journal;
pub mod limits;
pub mod logbuf;
pub mod loglevel;
pub mod markets;
pub mod metrics;
pub mod pipe;
pub mod sandbox;
pub mod service;
pub mod sessions;
pub mod supervisor;
pub mod systemd;
pub mod tls;
pub mod traders;
pub mod venue;

pub use config::Config;
pub use daemon::{run, run_im};
