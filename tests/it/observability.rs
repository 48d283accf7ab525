//! What an operator sees of an order: its acknowledgement already carries
//! the fills the venue made at once, `/metrics` counts it and times it, and
//! the node's log names it with the same ids on the algo side and on the
//! broker side.

use std::time::Duration;

use lido_shared::model::{OrderStatus, Side};
use lido_tests::{eventually, metric_sum, paper_limit, scrape, Sample, TestDaemon};
use rust_decimal_macros::dec;

const WAIT: Duration = Duration::from_secs(20);

/// Places a buy far enough above the ask to fill at once; returns the answer.
async fn marketable_buy(d: &TestDaemon, client_order_id: &str) -> lido_shared::model::Order {
    let c = d.client();
    let quote = eventually(WAIT, "a quote", || async { c.quote("paper", "BTC/USD").await.ok() }).await;
    let limit = ((quote.ask * dec!(1.05)) / dec!(0.1)).round() * dec!(0.1);
    let placed = c.place_order(&paper_limit("BTC/USD", Side::Buy, dec!(0.01), limit, client_order_id)).await.unwrap();
    assert!(placed.created);
    placed.order
}

fn histogram_count(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_sum(samples, &format!("{name}_count"), labels)
}

#[tokio::test]
async fn the_acknowledgement_carries_the_fills_made_at_once() {
    let d = TestDaemon::spawn(&[]);
    let order = marketable_buy(&d, "ack-1").await;
    assert_eq!(order.status, OrderStatus::Filled, "the answer shows the fill, not a stale state: {order:?}");
    assert_eq!(order.filled_quantity, dec!(0.01));
}

#[tokio::test]
async fn metrics_count_and_time_an_order() {
    let d = TestDaemon::spawn(&[]);
    let order = marketable_buy(&d, "metrics-1").await;
    d.client().order(&order.order_id).await.unwrap();
    let samples = scrape(&d.url).await;
    let paper = [("market", "paper")];
    assert_eq!(metric_sum(&samples, "lido_orders_placed_total", &paper), 1.0);
    assert_eq!(metric_sum(&samples, "lido_orders_acked_total", &paper), 1.0);
    assert_eq!(metric_sum(&samples, "lido_orders_rejected_total", &paper), 0.0);
    assert!(metric_sum(&samples, "lido_fills_total", &paper) >= 1.0, "the fill is counted");
    assert_eq!(metric_sum(&samples, "lido_failovers_total", &paper), 0.0);
    assert!(samples.iter().any(|s| s.name == "lido_failovers_total"), "failovers are registered at zero");

    // The round trip and the broker call are histograms with one sample
    // each, of a plausible size, in buckets.
    let round_trip = [("market", "paper"), ("broker", "paper-1")];
    assert_eq!(histogram_count(&samples, "lido_order_round_trip_seconds", &round_trip), 1.0);
    let took = metric_sum(&samples, "lido_order_round_trip_seconds_sum", &round_trip);
    assert!(took > 0.0 && took < 10.0, "round trip of {took} s");
    let place = [("broker", "paper-1"), ("command", "place_order")];
    assert_eq!(histogram_count(&samples, "lido_broker_request_seconds", &place), 1.0);
    let call = metric_sum(&samples, "lido_broker_request_seconds_sum", &place);
    assert!(call > 0.0 && call <= took, "the broker call ({call} s) is part of the round trip ({took} s)");
    // The API request holds the round trip; its route is the pattern.
    let request = [("method", "POST"), ("route", "/v1/orders")];
    assert_eq!(histogram_count(&samples, "lido_http_request_seconds", &request), 1.0);
    let handled = metric_sum(&samples, "lido_http_request_seconds_sum", &request);
    assert!(handled >= took, "the request ({handled} s) holds the round trip ({took} s)");
    // One intent commit, inside the round trip; the venue's answer and
    // its fill are journaled after it, without waiting for an fsync.
    let intent = [("kind", "intent")];
    assert_eq!(histogram_count(&samples, "lido_journal_commit_seconds", &intent), 1.0);
    let journaled = metric_sum(&samples, "lido_journal_commit_seconds_sum", &intent);
    assert!(journaled > 0.0 && journaled < took, "the intent's commit ({journaled} s) is part of the round trip");
    assert!(histogram_count(&samples, "lido_journal_commit_seconds", &[("kind", "venue")]) >= 1.0);
    let lookup = [("method", "GET"), ("route", "/v1/orders/{order_id}")];
    assert_eq!(histogram_count(&samples, "lido_http_request_seconds", &lookup), 1.0);
    assert!(
        samples.iter().all(|s| !s.label("route").is_some_and(|r| r.contains(&order.order_id))),
        "no route label carries an id"
    );
    let buckets: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == "lido_order_round_trip_seconds_bucket" && s.label("le") == Some("+Inf"))
        .collect();
    assert_eq!(buckets.len(), 1, "the round trip has buckets");
    assert_eq!(buckets[0].value, 1.0);

    // Load gauges exist; no label carries a customer.
    for name in ["lido_sessions", "lido_streams_open", "lido_stream_queue_depth", "lido_orders_open"] {
        assert!(samples.iter().any(|s| s.name == name), "{name} is exported");
    }
    assert!(samples.iter().all(|s| !s.labels.contains_key("customer")), "no series is labeled by customer");
}

#[tokio::test]
async fn the_order_id_is_on_algo_side_and_broker_side_log_lines() {
    let d = TestDaemon::spawn(&[]);
    let order = marketable_buy(&d, "trace-1").await;
    let id = format!("order_id={}", order.order_id);
    let (algo_side, broker_side) = eventually(WAIT, "log lines naming the order", || async {
        let log = d.log_text();
        let lines: Vec<&str> =
            log.lines().filter(|l| l.contains(&id) && l.contains("client_order_id=trace-1")).collect();
        let algo = lines.iter().find(|l| !l.starts_with('[') && l.contains("order answered by the venue"))?;
        let broker = lines.iter().find(|l| l.starts_with("[paper-1]") && l.contains("order command received"))?;
        Some((algo.to_string(), broker.to_string()))
    })
    .await;
    for line in [&algo_side, &broker_side] {
        assert!(line.contains("customer="), "the customer is on the line: {line}");
        assert!(line.contains("market=paper"), "the market is on the line: {line}");
    }
}
