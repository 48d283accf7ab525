//! The Schwab Trader API core (the successor of TD Ameritrade's API): what
//! the `schwab` broker (alias `tdameritrade`) needs to speak Schwab's OAuth,
//! market data, trader and streamer protocols.
//!
//! - [`token`]: OAuth 2 tokens (access ~30 min, refresh ~7 days), when to
//!   refresh and when to warn, the owner-only token file, the authorize URL
//!   and the code in the redirect URL.
//! - [`error`]: [`error::SchwabError`], typed from HTTP statuses and Schwab's
//!   two error bodies, with the code Lido reports and whether a failed send
//!   may have reached Schwab.
//! - [`wire`]: serde types for the REST bodies the broker uses (quotes,
//!   candles (→ Lido bars), market hours, accounts, orders, user preferences).
//! - [`orders`]: Lido orders ↔ Schwab's order JSON, statuses, fills from
//!   execution legs, and the matching that finds a maybe-sent order again.
//! - [`order_map`]: Lido's order ids ↔ Schwab's, kept in a file written
//!   before each send, so a restarted broker still knows its orders.
//! - [`hours`]: the exchange date in New York time, the equity market's
//!   sessions and whether an order may leave.
//! - [`stream`]: the streamer's requests (LOGIN, SUBS) and responses, with
//!   LEVELONE_EQUITIES' numbered fields merged into Lido quotes.
//! - [`rest`]: the HTTP client: bearer tokens refreshed before expiry (and
//!   once on a 401), a client-side request budget (`governor`), typed errors.
//!
//! Decimals: Schwab sends prices and quantities as JSON numbers; they are
//! read with [`super::kraken::num`] (a number's shortest round-trip text,
//! exact for every price Schwab quotes), never by arithmetic on a float.

pub mod error;
pub mod hours;
pub mod order_map;
pub mod orders;
pub mod rest;
pub mod stream;
pub mod token;
pub mod wire;
