//! The one table the bench prints (Markdown, as pasted in BENCHMARKS.md),
//! with the ratios the targets are stated in.

use std::fmt::Write;
use std::time::Duration;

use crate::control::ControlPlane;
use crate::fanout::{Delivery, FanOut, MaxRate};
use crate::orders::RoundTrips;
use crate::peer::Peer;
use crate::stats::{minus, ratio, us, Percentiles};

pub struct Report {
    pub quick: bool,
    pub rate: u32,
    pub orders: RoundTrips,
    pub fanout: Vec<FanOut>,
    pub max_rate: MaxRate,
    pub control: ControlPlane,
    pub peer: Option<Peer>,
}

impl Report {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let _ = writeln!(
            out,
            "## lido-bench {} run, {cores} cores, {}\n",
            if self.quick { "quick" } else { "full" },
            chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
        );
        self.order_rows(&mut out);
        self.fanout_rows(&mut out);
        self.max_rate_rows(&mut out);
        self.control_rows(&mut out);
        out
    }

    fn order_rows(&self, out: &mut String) {
        let o = &self.orders;
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
        row(out, "algo → Kraken fake direct (floor)", &o.direct, None);
        row(out, "algo → bare proxy → fake", &o.proxy, Some(&o.direct));
        row(out, "algo → lidod REST → kraken broker → fake", &o.lidod_rest, Some(&o.direct));
        row(out, "same, lidod with journal_synchronous = normal (no fsync)", &o.lidod_rest_normal, Some(&o.direct));
        row(out, "algo → lidod WebSocket (place_order on /v1/stream) → fake", &o.lidod_ws, Some(&o.direct));
        match &self.peer {
            Some(peer) => {
                row(out, &format!("ccxt {} create_order → fake (peer)", peer.version), &peer.order, Some(&o.direct));
                row(out, &format!("ccxt {} fetch_ticker → fake (peer)", peer.version), &peer.ticker, None);
            }
            None => {
                let _ = writeln!(out, "| ccxt (peer) | – | skipped: python3 with ccxt not installed | | | | |");
            }
        }
        let added = |path: &Percentiles, f: fn(&Percentiles) -> Duration| {
            ratio(minus(f(path), f(&o.direct)), minus(f(&o.proxy), f(&o.direct)))
        };
        for (entry, path) in [("REST", &o.lidod_rest), ("WebSocket", &o.lidod_ws)] {
            let _ = writeln!(
                out,
                "\nlidod {entry} added / proxy added: p50 **{}**, p99 **{}** (target ≤ 1.30x)",
                added(path, |p| p.p50),
                added(path, |p| p.p99)
            );
        }
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

    fn max_rate_rows(&self, out: &mut String) {
        let m = &self.max_rate;
        let _ = writeln!(
            out,
            "### Highest rate held without a slow-consumer drop, {} subscribers (each server stops at its first drop)\n",
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
            "\nHeld without a drop: lidod **{}**, reference **{}**; lidod / reference **{ratio}**\n",
            held(&m.lidod),
            held(&m.reference)
        );
    }

    fn control_rows(&self, out: &mut String) {
        let c = &self.control;
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
