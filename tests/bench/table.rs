//! The one table the bench prints (Markdown, as pasted in BENCHMARKS.md),
//! with the ratios the targets are stated in.

use std::fmt::Write;
use std::time::Duration;

use crate::control::ControlPlane;
use crate::fanout::{Delivery, FanOut, MaxRate, KEPT_UP_P50};
use crate::orders::{Breakdown, RoundTrips};
use crate::peer::Peer;
use crate::stats::{minus, ratio, us, Percentiles};

/// What a run measured; a part left out (`--only`) is `None` or empty and
/// prints nothing.
pub struct Report {
    pub quick: bool,
    pub rate: u32,
    pub orders: Option<RoundTrips>,
    pub fanout: Vec<FanOut>,
    pub max_rate: Option<MaxRate>,
    pub control: Option<ControlPlane>,
    pub peer: Option<Peer>,
    /// Whether the peer was tried (`peer` is `None` also when ccxt is missing).
    pub peer_ran: bool,
}

impl Report {
    pub fn new(quick: bool, rate: u32) -> Self {
        Self {
            quick,
            rate,
            orders: None,
            fanout: Vec::new(),
            max_rate: None,
            control: None,
            peer: None,
            peer_ran: false,
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let _ = writeln!(
            out,
            "## lido-bench {} run, {cores} cores, {}\n",
            if self.quick { "quick" } else { "full" },
            chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
        );
        if self.orders.is_some() || self.peer_ran {
            self.order_rows(&mut out);
        }
        if !self.fanout.is_empty() {
            self.fanout_rows(&mut out);
        }
        if let Some(m) = &self.max_rate {
            max_rate_rows(m, &mut out);
        }
        if let Some(c) = &self.control {
            control_rows(c, &mut out);
        }
        out
    }

    fn order_rows(&self, out: &mut String) {
        let _ = writeln!(out, "### Order round trip: resting limit order → venue acknowledgement (µs)\n");
        let _ = writeln!(out, "| path | n | p50 | p99 | p99.9 | added p50 | added p99 |");
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
        let row = |out: &mut String, name: &str, p: &Percentiles, floor: Option<&Percentiles>| {
            let added = |f: fn(&Percentiles) -> Duration| floor.map_or("–".into(), |fl| us(minus(f(p), f(fl))));
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {} | {} | {} |",
                p.n,
                us(p.p50),
                us(p.p99),
                us(p.p999),
                added(|p| p.p50),
                added(|p| p.p99)
            );
        };
        let floor = self.orders.as_ref().map(|o| &o.direct);
        if let Some(o) = &self.orders {
            row(out, "algo → Kraken fake direct (floor)", &o.direct, None);
            row(out, "algo → bare proxy process, HTTP in → fake", &o.proxy, floor);
            row(out, "algo → bare proxy process, WebSocket in → fake", &o.proxy_ws, floor);
            row(out, "algo → journaling proxy (HTTP in, one fsynced SQLite insert) → fake", &o.proxy_journaled, floor);
            row(out, "algo → lidod REST → kraken broker → fake", &o.lidod_rest, floor);
            row(out, "same, lidod with journal_synchronous = normal (no fsync)", &o.lidod_rest_normal, floor);
            row(out, "same, the broker a task in lidod (mode = task: in-memory pipe)", &o.lidod_rest_task, floor);
            row(out, "algo → lidod WebSocket (place_order on /v1/stream) → fake", &o.lidod_ws, floor);
        }
        match &self.peer {
            Some(peer) => {
                row(out, &format!("ccxt {} create_order → fake (peer)", peer.version), &peer.order, floor);
                row(out, &format!("ccxt {} fetch_ticker → fake (peer)", peer.version), &peer.ticker, None);
            }
            None if self.peer_ran => {
                let _ = writeln!(out, "| ccxt (peer) | – | skipped: python3 with ccxt not installed | | | | |");
            }
            None => {}
        }
        let Some(o) = &self.orders else {
            let _ = writeln!(out);
            return;
        };
        let added = |path: &Percentiles, proxy: &Percentiles, f: fn(&Percentiles) -> Duration| {
            ratio(minus(f(path), f(&o.direct)), minus(f(proxy), f(&o.direct)))
        };
        let entries = [
            ("REST", "HTTP", &o.lidod_rest, &o.proxy),
            ("REST without the fsync (normal)", "HTTP", &o.lidod_rest_normal, &o.proxy),
            ("REST, broker as a task", "HTTP", &o.lidod_rest_task, &o.proxy),
            ("WebSocket", "WebSocket", &o.lidod_ws, &o.proxy_ws),
        ];
        for (entry, proxy_entry, path, proxy) in entries {
            let _ = writeln!(
                out,
                "\nlidod {entry} added / proxy {proxy_entry} added: p50 **{}**, p99 **{}** (target ≤ 1.30x)",
                added(path, proxy, |p| p.p50),
                added(path, proxy, |p| p.p99)
            );
        }
        // Not the target: the same ratio against the floor DESIGN.md's
        // safety rule sets (the hop and one durable write per order).
        for (entry, path) in [("REST", &o.lidod_rest), ("REST, broker as a task", &o.lidod_rest_task)] {
            let _ = writeln!(
                out,
                "\nlidod {entry} added / journaling proxy added: p50 **{}**, p99 **{}**",
                added(path, &o.proxy_journaled, |p| p.p50),
                added(path, &o.proxy_journaled, |p| p.p99)
            );
        }
        breakdown_rows(o, out);
        let _ = writeln!(out);
        let fsync = |f: fn(&Percentiles) -> Duration| us(minus(f(&o.lidod_rest), f(&o.lidod_rest_normal)));
        let _ = writeln!(
            out,
            "The intent's fsync (lidod REST full − normal): p50 {} µs, p99 {} µs\n",
            fsync(|p| p.p50),
            fsync(|p| p.p99)
        );
    }

    fn fanout_rows(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "### Market-data fan-out: BTC/USD ticker offered at {} msgs/s, subscribers in another process\n",
            self.rate
        );
        let _ = writeln!(
            out,
            "| subscribers | server | delivered msgs/s | p50 µs | p99 µs | drops | lidod RSS per subscription |"
        );
        let _ = writeln!(out, "|---:|---|---:|---:|---:|---:|---:|");
        for f in &self.fanout {
            let rss = f.rss_per_subscription.map_or("–".into(), |b| format!("{:.1} KiB", b as f64 / 1024.0));
            fanout_row(out, f.subscribers, "lidod", &f.lidod, &rss);
            fanout_row(out, f.subscribers, "reference (broadcast + tungstenite)", &f.reference, "–");
        }
        if let Some(f) = self.fanout.iter().max_by_key(|f| f.subscribers) {
            let r = f.lidod.per_second() / f.reference.per_second().max(f64::EPSILON);
            let _ = writeln!(
                out,
                "\nlidod / reference msgs/s at {} subscribers: **{r:.2}x** (target ≥ 0.80x); p99 {} vs {} µs\n",
                f.subscribers,
                us(f.lidod.latency.p99),
                us(f.reference.latency.p99)
            );
        }
    }
}

/// Where a lidod REST order's time goes, from means (µs): what each stage
/// adds, by the daemon's own histograms.
fn breakdown_rows(o: &RoundTrips, out: &mut String) {
    let _ = writeln!(out, "\nWhere lidod REST's time goes (means over the measured orders, µs):\n");
    let _ = writeln!(out, "| stage | full (fsync) | normal | task (full) |");
    let _ = writeln!(out, "|---|---:|---:|---:|");
    let [full, normal, task] = &o.breakdown;
    type Stage = fn(&Breakdown) -> Duration;
    let stages: [(&str, Stage); 7] = [
        ("algo's round trip", |b| b.client),
        ("the algo's HTTP hop both ways: client, kernel, hyper (round trip − request)", |b| minus(b.client, b.http)),
        ("in lidod before and after place: auth, limits, JSON (request − place)", |b| minus(b.http, b.place)),
        ("the intent's journal commit, its fsync included (journal commit, kind intent)", |b| b.intent),
        ("routing, applying and journaling the answer, logs (place − broker call − intent)", |b| {
            minus(minus(b.place, b.broker), b.intent)
        }),
        ("pipe both ways and the broker (broker call − direct path)", |b| minus(b.broker, b.venue)),
        ("the venue (the direct path's mean)", |b| b.venue),
    ];
    for (name, f) in stages {
        let _ = writeln!(out, "| {name} | {} | {} | {} |", us(f(full)), us(f(normal)), us(f(task)));
    }
}

fn max_rate_rows(m: &MaxRate, out: &mut String) {
    let _ = writeln!(
        out,
        "### Highest rate held (no slow-consumer drop, median latency ≤ {} ms), {} subscribers (each server stops at its first step not held)\n",
        KEPT_UP_P50.as_millis(),
        m.subscribers
    );
    let _ = writeln!(out, "| offered msgs/s | server | delivered msgs/s | p50 µs | p99 µs | drops |");
    let _ = writeln!(out, "|---:|---|---:|---:|---:|---:|");
    for (server, steps) in [("lidod", &m.lidod), ("reference", &m.reference)] {
        for (rate, d) in steps.iter() {
            let _ = writeln!(
                out,
                "| {rate} | {server} | {:.0} | {} | {} | {} |",
                d.per_second(),
                us(d.latency.p50),
                us(d.latency.p99),
                d.drops
            );
        }
    }
    let held = |steps: &[(u32, Delivery)]| match MaxRate::held(steps) {
        (None, _) => "none of the steps".to_string(),
        (Some(rate), true) => format!("≥ {rate} msgs/s (every step)"),
        (Some(rate), false) => format!("{rate} msgs/s"),
    };
    let ratio = match (MaxRate::held(&m.lidod).0, MaxRate::held(&m.reference).0) {
        (Some(l), Some(r)) => format!("{:.2}x", f64::from(l) / f64::from(r)),
        _ => "n/a".into(),
    };
    let _ = writeln!(
        out,
        "\nHeld: lidod **{}**, reference **{}**; lidod / reference **{ratio}**\n",
        held(&m.lidod),
        held(&m.reference)
    );
}

fn control_rows(c: &ControlPlane, out: &mut String) {
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
    let _ = writeln!(out, "### Control plane\n");
    let _ = writeln!(out, "| what | n | p50 | max |");
    let _ = writeln!(out, "|---|---:|---:|---:|");
    let _ = writeln!(
        out,
        "| lidod start → /healthz answers (ms; target ≤ 300) | {} | {} | {} |",
        c.start_to_serving.n,
        ms(c.start_to_serving.p50),
        ms(c.start_to_serving.p999)
    );
    let _ = writeln!(
        out,
        "| lidoctl spawn broker kraken → broker's venue WebSocket open (ms) | {} | {} | {} |",
        c.spawn_to_streaming.n,
        ms(c.spawn_to_streaming.p50),
        ms(c.spawn_to_streaming.p999)
    );
    let _ = writeln!(out, "| lidod RSS, idle | | {:.1} MiB | |", c.rss_idle as f64 / (1024.0 * 1024.0));
    let _ = writeln!(out, "| lidod RSS per algo session | | {:.1} KiB | |", c.rss_per_session as f64 / 1024.0);
}

fn fanout_row(out: &mut String, subscribers: usize, server: &str, d: &Delivery, rss: &str) {
    let _ = writeln!(
        out,
        "| {subscribers} | {server} | {:.0} | {} | {} | {} | {rss} |",
        d.per_second(),
        us(d.latency.p50),
        us(d.latency.p99),
        d.drops
    );
}
