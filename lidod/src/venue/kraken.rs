//! The Kraken Spot protocol core: everything the `kraken` broker needs to
//! speak Kraken's REST and WebSocket v2 APIs, as pure, synchronous code with
//! no sockets and no clock of its own.
//!
//! - [`sign`]: `API-Sign` (HMAC-SHA512 over path + SHA-256(nonce + post
//!   data)), form encoding of private requests, and a persistent, strictly
//!   increasing [`sign::NonceSource`].
//! - [`envelope`]: the `{"error":[…],"result":…}` envelope and
//!   [`envelope::KrakenError`], typed from Kraken's error strings, with the
//!   retry rules that keep a retry from ever duplicating an order.
//! - [`pairs`]: AssetPairs → a two-way map between Lido symbols (`BTC/USD`)
//!   and Kraken's names (`XXBTZUSD`, `XBTUSD`, `XBT/USD`), with the tick
//!   size, lot decimals and `ordermin` that validate orders before they
//!   leave.
//! - [`lock`]: a cross-process file lock, so the node's brokers on one API
//!   key take nonces in turn.
//! - [`ratelimit`]: Kraken's REST call counter and per-pair trading counter,
//!   as pure counters that say how long to wait so the limit is never hit.
//! - [`book`]: the WebSocket v2 L2 book, kept from snapshot + updates and
//!   verified with Kraken's CRC32 checksum.
//! - [`rest`]: the REST client over HTTP (reqwest), signing, pacing and
//!   typing errors with the parts above.
//! - [`messages`]: serde types for the WebSocket v2 frames and the REST
//!   requests and results the broker uses.
//! - [`num`]: decimals that arrive as JSON strings (REST) or JSON numbers
//!   (WebSocket v2), read without going through a lossy float.
//!
//! Apart from [`rest`], what is deliberately absent here: HTTP,
//! WebSockets, timers and tasks. The broker service
//! ([`super::kraken_broker`]: WebSocket v2 connections, order placement,
//! the executions feed) drives these types; the fake Kraken in the tests
//! reuses them to check requests as strictly as Kraken does and to compute
//! its book checksums.

pub mod book;
pub mod envelope;
pub mod lock;
pub mod messages;
pub mod num;
pub mod pairs;
pub mod ratelimit;
pub mod rest;
pub mod sign;
