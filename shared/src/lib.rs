//! Lido's shared crate: the words of the system and the wire between its parts.
//!
//! - [`model`]: the trading domain (symbols, instruments, orders and their state
//!   machine, fills, quotes, trades, books, balances, positions). Prices and
//!   quantities are always [`rust_decimal::Decimal`], serialized as strings.
//! - [`api`]: the algo API's request and response bodies, including the
//!   `/v1/stream` WebSocket messages.
//! - [`cluster`]: the operator API of the InfrastructureManager (snapshot,
//!   watch stream, spawn/stop/drain requests).
//! - [`autoscale`]: the autoscaler's rules, figures and decisions (`GET /v1/autoscale`).
//! - [`pipe`]: the service protocol between a manager and the services it
//!   supervises (check-in body and the frames on the pipe WebSocket).
//! - [`access`]: API tokens, the audit log, the cluster-secret header and
//!   [`access::Secret`], a string that never prints.
//! - [`client`]: a typed Rust client for all of the above, plus
//!   [`client::agent`], the service side of the pipe that brokers and hosted
//!   traders embed.
//! - [`tls`]: rustls set-up shared by every listener and dialer (PEM files,
//!   trusted CAs, telling a refused certificate apart).
//!
//! Wire types know nothing of axum; the daemon converts at its edge.

pub mod access;
pub mod api;
pub mod autoscale;
pub mod client;
pub mod cluster;
pub mod error;
pub mod exchange;
pub mod model;
pub mod pipe;
pub mod tls;

pub use error::{ErrorBody, ErrorDetail};
