//! The autoscaler under load, on a real lidod trading at the Kraken fake
//! with low thresholds (5 clients per instance; 3 Kraken subscriptions per
//! public socket, one of them headroom): twenty algo streams make the
//! MarketManager add instances and the broker open sockets, every stream
//! keeps getting its data in order, and once they close the extras are
//! released. Everything is read from status (`GET /v1/autoscale`, lidoctl)
//! and the fake's own count of sockets.

use std::collections::HashMap;
use std::process::Command;

use lido_shared::api::Channel;
use lido_shared::autoscale::AutoscaleStatus;
use lido_shared::client::{LidoClient, Stream};
use lido_tests::kraken_fake::FakeConfig;
use lido_tests::kraken_node::{KrakenNode, NodeOptions, WITHIN};
use lido_tests::{eventually, lidoctl_path};

const ALGOS: usize = 20;
const MAX_CLIENTS: usize = 5;
const SYMBOLS: [&str; 2] = ["BTC/USD", "ETH/USD"];
/// Updates each quotes and book subscription must get, in order.
const UPDATES: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_adds_instances_and_venue_connections_and_idle_ones_are_released() {
    let options = NodeOptions {
        extra_options: "max_subscriptions_per_connection = \"3\"\nsubscription_headroom = \"1\"\n".into(),
        // Latency is not what this test scales on: its bound is far off.
        extra_toml: format!(
            "\n[autoscale]\nmax_clients_per_instance = {MAX_CLIENTS}\nmax_fanout_latency_ms = 60000\nidle_release_s = 1\nlatency_window_s = 1\n"
        ),
        ..NodeOptions::default()
    };
    let s = KrakenNode::start_with(FakeConfig::default(), options, &[]).await;
    let d = s.daemon.client();
    let sockets_before = s.fake.websockets_opened();

    // Twenty algos, each with its own session and stream, on quotes, book
    // and trades of both pairs: six Kraken subscriptions in all.
    let mut streams = Vec::new();
    for n in 0..ALGOS {
        let session = d.open_session("acme").await.expect("a session");
        let algo = LidoClient::new(session.market_manager_url).unwrap().with_token(&session.session_id);
        let mut stream = algo.stream().await.expect("a stream");
        for symbol in SYMBOLS {
            for channel in [Channel::Quotes, Channel::Book, Channel::Trades] {
                stream.subscribe(channel, "crypto", Some(symbol)).await.unwrap_or_else(|e| panic!("algo {n}: {e}"));
            }
        }
        streams.push(stream);
    }

    let status = autoscale(&d).await;
    let streams_on: usize = status.instances.iter().map(|i| i.streams).sum();
    assert_eq!(streams_on, ALGOS, "{status:#?}");
    assert!(status.instances.len() >= ALGOS / MAX_CLIENTS, "instances added: {status:#?}");
    assert!(status.instances.iter().all(|i| i.streams <= MAX_CLIENTS), "sessions spread: {status:#?}");
    assert!(
        status.decisions.iter().any(|d| d.action == "add_instance" && d.reason.contains("max_clients_per_instance")),
        "{:#?}",
        status.decisions
    );

    // Six subscriptions, two per socket below the limit of three: three
    // sockets where one was, and the fake saw them dialed.
    let k1 = eventually(WITHIN, "three venue connections in status", || async {
        let status = autoscale(&d).await;
        let k1 = status.brokers.into_iter().find(|b| b.broker == "k1")?;
        (k1.venue_connections == 3).then_some(k1)
    })
    .await;
    assert_eq!(k1.subscriptions_per_connection, [2, 2, 2], "{k1:?}");
    assert_eq!((k1.max_subscriptions_per_connection, k1.subscription_headroom), (3, 1));
    assert!(s.fake.websockets_opened() >= sockets_before + 2, "the fake saw two more sockets");
    let decisions = autoscale(&d).await.decisions;
    assert!(decisions.iter().any(|d| d.scope == "k1" && d.action == "open_connection"), "{decisions:#?}");

    for (n, stream) in streams.iter_mut().enumerate() {
        gets_data_in_order(n, stream).await;
    }
    // The fan-out time of those frames is measured, per instance.
    eventually(WITHIN, "a fan-out p99 in status", || async {
        let status = autoscale(&d).await;
        status.instances.iter().any(|i| i.frames > 0 && i.fanout_p99_ms.is_some_and(|p| p > 0.0)).then_some(())
    })
    .await;

    // lidoctl shows the same picture.
    let out = Command::new(lidoctl_path())
        .args(["--url", &s.daemon.url, "get", "autoscale"])
        .env("NO_COLOR", "1")
        .env("LIDO_CONFIG", "/nonexistent/lidoctl-test/config.toml")
        .output()
        .expect("run lidoctl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    for part in ["Rules:", "Instances:", "Venue connections:", "k1", "add_instance", "open_connection"] {
        assert!(text.contains(part), "{part:?} missing from:\n{text}");
    }

    for stream in streams {
        stream.close().await.expect("close a stream");
    }
    let status = eventually(WITHIN, "extra instances and sockets released", || async {
        let status = autoscale(&d).await;
        let k1 = status.brokers.iter().find(|b| b.broker == "k1")?;
        (status.instances.len() == 1 && k1.venue_connections == 1).then_some(status)
    })
    .await;
    assert!(status.decisions.iter().any(|d| d.action == "release_instance"), "{:#?}", status.decisions);
    assert!(status.decisions.iter().any(|d| d.action == "close_connection"), "{:#?}", status.decisions);
}

/// Each quotes and book subscription of the stream gets [`UPDATES`] events
/// numbered 1, 2, 3…, none of them a gap marker.
async fn gets_data_in_order(n: usize, stream: &mut Stream) {
    let mut last: HashMap<(Channel, String), u64> = HashMap::new();
    let done = |last: &HashMap<(Channel, String), u64>| {
        SYMBOLS.iter().all(|s| {
            [Channel::Quotes, Channel::Book]
                .iter()
                .all(|c| last.get(&(*c, s.to_string())).is_some_and(|seq| *seq >= UPDATES as u64))
        })
    };
    let deadline = tokio::time::Instant::now() + WITHIN;
    while !done(&last) {
        assert!(tokio::time::Instant::now() < deadline, "algo {n} got only {last:?} within {WITHIN:?}");
        let event = stream.next_event(WITHIN).await.unwrap_or_else(|e| panic!("algo {n}: {e}"));
        assert!(event.gap.is_none(), "algo {n} got a gap marker: {event:?}");
        let seq = last.entry((event.channel, event.symbol.clone().unwrap_or_default())).or_insert(0);
        assert_eq!(event.seq, *seq + 1, "algo {n}: {event:?} out of order");
        *seq = event.seq;
    }
}

async fn autoscale(d: &LidoClient) -> AutoscaleStatus {
    d.autoscale().await.expect("GET /v1/autoscale")
}
