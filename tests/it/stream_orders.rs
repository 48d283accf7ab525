//! Order entry over the algo stream (`place_order` / `cancel_order` on
//! `/v1/stream`): the same orders, checks and idempotency as REST, each
//! answered by a reply naming its request.

use std::time::Duration;

use lido_shared::api::{Channel, ReplyOutcome, ServerMessage, StreamReply};
use lido_shared::client::{ClientError, Stream};
use lido_shared::model::{Order, OrderStatus, Side};
use lido_tests::{eventually, paper_limit, TestDaemon};
use rust_decimal_macros::dec;

const WAIT: Duration = Duration::from_secs(10);

/// The status and error code of a refused request.
fn refusal(e: ClientError) -> (Option<u16>, String) {
    match e {
        ClientError::Api { status, code, .. } => (Some(status), code),
        other => panic!("expected an error reply, got {other}"),
    }
}

/// The reply to raw request `id`, skipping other messages (bounded).
async fn raw_reply(stream: &mut Stream, id: &str) -> StreamReply {
    tokio::time::timeout(WAIT, async {
        loop {
            if let ServerMessage::Reply(r) = stream.next().await.unwrap() {
                if r.reply_to == id {
                    return r;
                }
            }
        }
    })
    .await
    .expect("a reply within the wait")
}

#[tokio::test]
async fn orders_placed_and_canceled_over_the_stream_are_the_rest_orders() {
    let d = TestDaemon::spawn(&[]);
    let c = d.client();
    eventually(WAIT, "a quote", || async { c.quote("paper", "BTC/USD").await.ok() }).await;
    let mut stream = c.stream().await.unwrap();
    stream.subscribe(Channel::Orders, "paper", None).await.unwrap();

    // Far below the market: it rests.
    let order = paper_limit("BTC/USD", Side::Buy, dec!(0.01), dec!(1000), "ws-1");
    let placed = stream.place_order(&order).await.unwrap();
    assert!(placed.created);
    assert_eq!((placed.order.status, placed.order.client_order_id.as_str()), (OrderStatus::Accepted, "ws-1"));
    assert_eq!(c.order(&placed.order.order_id).await.unwrap(), placed.order, "REST sees the same order");
    // The orders channel carried it meanwhile; the SDK kept those events.
    let ev = stream.next_event(WAIT).await.unwrap();
    assert_eq!((ev.channel, ev.seq), (Channel::Orders, 1));
    assert_eq!(ev.decode::<Order>().unwrap().order_id, placed.order.order_id);

    // The same client order id, over the stream or REST, is the first order.
    let again = stream.place_order(&order).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.order.order_id, placed.order.order_id);
    let rest = c.place_order(&order).await.unwrap();
    assert!(!rest.created);
    assert_eq!(rest.order.order_id, placed.order.order_id);

    // Bad input: the same checks and codes as REST, and nothing placed.
    let no_price = lido_shared::api::PlaceOrder {
        limit_price: None,
        ..paper_limit("BTC/USD", Side::Buy, dec!(0.01), dec!(1), "ws-2")
    };
    assert_eq!(refusal(stream.place_order(&no_price).await.unwrap_err()), (Some(400), "invalid_price".into()));
    let nowhere = lido_shared::api::PlaceOrder { market: "nowhere".into(), ..order.clone() };
    let nowhere = lido_shared::api::PlaceOrder { client_order_id: Some("ws-3".into()), ..nowhere };
    assert_eq!(refusal(stream.place_order(&nowhere).await.unwrap_err()).0, Some(404));
    // A request that does not decode is still answered by its id.
    stream
        .send_raw(r#"{"op":"place_order","id":"raw-1","market":"paper","symbol":"BTC/USD","side":"buy","type":"limit","quantity":0.01,"limit_price":"1000"}"#.into())
        .await
        .unwrap();
    let bad = raw_reply(&mut stream, "raw-1").await;
    assert_eq!(bad.status, 400);
    assert!(
        matches!(&bad.outcome, ReplyOutcome::Error(e) if e.code == "invalid_request" && e.message.contains("quantity")),
        "{bad:?}"
    );
    let mine = c.orders(&lido_shared::api::OrdersQuery { status: Some("all".into()), market: None }).await.unwrap();
    assert_eq!(mine.len(), 1, "only the first order exists: {mine:?}");

    // Cancel, then cancel again: 409 as over REST.
    let canceled = stream.cancel_order(&placed.order.order_id).await.unwrap();
    assert_eq!((canceled.order_id.as_str(), canceled.status), (placed.order.order_id.as_str(), OrderStatus::Canceled));
    assert_eq!(c.order(&placed.order.order_id).await.unwrap().status, OrderStatus::Canceled);
    assert_eq!(
        refusal(stream.cancel_order(&placed.order.order_id).await.unwrap_err()),
        (Some(409), "order_not_open".into())
    );
    assert_eq!(refusal(stream.cancel_order("no-such-order").await.unwrap_err()), (Some(404), "unknown_order".into()));
    stream.close().await.unwrap();
}
