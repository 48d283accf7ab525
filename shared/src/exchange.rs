//! The shared paper exchange's protocol (`lidod venue paper`): one process
//! holds the paper venue that every node's `paper` broker with the
//! `exchange` option trades on, so an order outlives the node that placed it.
//!
//! One WebSocket per broker at [`EXCHANGE_PATH`], opened with the cluster
//! secret (header [`crate::access::CLUSTER_SECRET_HEADER`]). One JSON object
//! per text frame. The broker sends [`ExchangeRequest`]s (the pipe's
//! [`Command`]s with an id); the exchange answers each with
//! [`ExchangeFrame::Reply`] and pushes [`ExchangeFrame::Event`]s: market
//! data only for the connection's own subscriptions, order updates and
//! fills of every account to every connection (a node applies what its
//! journal knows; fill ids de-duplicate). Events a change causes are sent
//! before the reply to the command that caused it.

use serde::{Deserialize, Serialize};

use crate::pipe::{Command, Reply, ServiceEvent};

/// Path of the exchange's WebSocket.
pub const EXCHANGE_PATH: &str = "/v1/exchange";

/// Broker → exchange.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExchangeRequest {
    pub id: u64,
    pub command: Command,
}

/// Exchange → broker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExchangeFrame {
    Reply { id: u64, reply: Reply },
    Event { event: ServiceEvent },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipe::ReplyBody;

    #[test]
    fn frames_round_trip() {
        let r = ExchangeRequest { id: 3, command: Command::OpenOrders { account: "acme".into() } };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"id":3,"command":{"cmd":"open_orders","account":"acme"}}"#);
        assert_eq!(serde_json::from_str::<ExchangeRequest>(&s).unwrap(), r);
        let f = ExchangeFrame::Reply { id: 3, reply: Reply::Ok(ReplyBody::Orders(Vec::new())) };
        let s = serde_json::to_string(&f).unwrap();
        assert_eq!(serde_json::from_str::<ExchangeFrame>(&s).unwrap(), f);
    }
}
