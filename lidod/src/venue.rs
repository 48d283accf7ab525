//! Venue adapters. Each broker type is a service that speaks its venue's
//! protocol on one side and the Lido pipe on the other.
//!
//! - [`paper`]: the simulated exchange (pure, synchronous, seedable).
//! - [`paper_broker`]: the `paper` broker service that runs it.
//! - [`kraken`]: the Kraken Spot protocol core (signing, envelopes, pairs,
//!   rate limits, the checksummed book, wire messages); the broker service
//!   around it is not built yet, so `kraken` is not a spawnable type.
//! - [`schwab`]: the Schwab Trader API core (OAuth tokens, typed errors,
//!   order JSON, market hours, streamer messages, the REST client);
//!   [`schwab_broker`]: the `schwab` broker service (alias `tdameritrade`,
//!   whose API Schwab's replaced).

pub mod kraken;
pub mod paper;
pub mod paper_broker;
pub mod schwab;
pub mod schwab_broker;

/// Broker types this build can start.
pub const BROKER_TYPES: &[&str] = &["paper", "schwab", "tdameritrade"];
