//! The slow-consumer policy of `/v1/stream`: an algo that stops reading
//! gets conflated quotes (the newest, with a count of what it replaced)
//! while an algo reading the same feed keeps receiving every quote in
//! order, with no gap.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use lido_shared::api::{Channel, ServerMessage, StreamEvent};
use lido_tests::{eventually, metric_sum, scrape, TestDaemon};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;

/// A paper market whose quotes move every millisecond.
const FAST_PAPER: &str = r#"
[[broker]]
name = "paper-1"
type = "paper"
[broker.options]
tick_ms = "1"
[[market]]
name = "paper"
brokers = ["paper-1"]
"#;

const WAIT: Duration = Duration::from_secs(60);
/// Messages the slow algo may read back before its conflated quote must show.
const SLOW_BACKLOG_LIMIT: usize = 200_000;

type RawWs = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A stream socket with a small receive buffer, so that an algo that stops
/// reading fills lidod's queue for it soon.
async fn small_buffer_stream(url: &str) -> RawWs {
    let addr = url.strip_prefix("http://").expect("an http url").parse().expect("a socket address");
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.expect("connect to lidod");
    let ws_url = format!("ws://{addr}/v1/stream");
    tokio_tungstenite::client_async(ws_url, tcp).await.expect("stream handshake").0
}

async fn next_message(ws: &mut RawWs) -> ServerMessage {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next()).await.expect("a message in time");
        match msg.expect("socket open").expect("socket ok") {
            Message::Text(text) => return serde_json::from_str(text.as_str()).expect("a stream message"),
            _ => continue,
        }
    }
}

async fn next_event(ws: &mut RawWs) -> StreamEvent {
    loop {
        if let ServerMessage::Event(ev) = next_message(ws).await {
            return ev;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_algo_gets_conflated_quotes_and_a_reading_one_every_quote() {
    let dir = lido_tests::temp_data_dir();
    let config = dir.join("lido.toml");
    std::fs::write(&config, FAST_PAPER).unwrap();
    let d = TestDaemon::spawn_with(&dir, &["--config", config.to_str().unwrap()], &[]);
    let c = d.client();
    eventually(WAIT, "the paper market", || async { c.quote("paper", "BTC/USD").await.ok() }).await;

    // The slow algo subscribes, sees its first quote, then stops reading.
    let mut slow = small_buffer_stream(&d.url).await;
    let subscribe = r#"{"op":"subscribe","channel":"quotes","market":"paper","symbol":"BTC/USD"}"#;
    slow.send(Message::text(subscribe)).await.unwrap();
    assert!(matches!(next_message(&mut slow).await, ServerMessage::Ack(_)), "the ack comes first");
    assert_eq!(next_event(&mut slow).await.seq, 1);

    // The reading algo takes every quote while the slow one falls behind.
    let mut fast = c.stream().await.unwrap();
    fast.subscribe(Channel::Quotes, "paper", Some("BTC/USD")).await.unwrap();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        let mut last = 0u64;
        loop {
            let ev = tokio::select! {
                _ = &mut stopped => return last,
                ev = fast.next_event(WAIT) => ev.expect("the reading algo keeps receiving"),
            };
            assert!(ev.gap.is_none(), "the reading algo got a gap: {ev:?}");
            assert_eq!(ev.seq, last + 1, "the reading algo's quotes are in order, none missing");
            last = ev.seq;
        }
    });
    eventually(WAIT, "lidod to conflate the slow algo's quotes", || async {
        let n = metric_sum(&scrape(&d.url).await, "lido_stream_conflated_total", &[("channel", "quotes")]);
        (n > 0.0).then_some(n)
    })
    .await;
    let queued = metric_sum(&scrape(&d.url).await, "lido_stream_queue_depth_max", &[]);
    assert!(queued > 0.0, "the slow algo's queue shows in lido_stream_queue_depth_max");
    let _ = stop.send(());
    let received = reader.await.expect("the reading algo");
    assert!(received > 100, "the reading algo received {received} quotes meanwhile");

    // The slow algo reads again: its quotes are in order, with no gap, and
    // one of them says how many older ones it replaced.
    let mut last = 1u64;
    let mut notice = None;
    for _ in 0..SLOW_BACKLOG_LIMIT {
        let ev = next_event(&mut slow).await;
        assert!(ev.gap.is_none(), "quotes are conflated, not skipped with a gap: {ev:?}");
        assert_eq!(ev.seq, last + 1, "the slow algo's quotes are numbered without holes");
        last = ev.seq;
        if let Some(n) = ev.conflated {
            notice = Some(n);
            break;
        }
    }
    let replaced = notice.expect("the slow algo was told its quotes were conflated");
    assert!(replaced > 0);
    let _ = std::fs::remove_dir_all(&dir);
}
