//! Prometheus metrics at `GET /metrics`, through the `metrics` facade.
//!
//! Counters and histograms are recorded where things happen (orders,
//! fills, broker requests, restarts, stream messages and what a slow
//! consumer did not get); gauges of the node's load are set when the page is
//! read. Latencies (`*_seconds`) are histograms with buckets from 100 µs to
//! 10 s. Labels name markets, brokers, channels and commands, never a
//! customer or a token. README.md lists every series.
//!
//! Histogram samples wait in the recorder until they are folded into their
//! buckets. A scrape does that, and so does the upkeep thread started with the
//! recorder, every [`UPKEEP_INTERVAL`]: a node nobody scrapes keeps a bounded
//! histogram, not every sample since it started.

use std::ops::ControlFlow;
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Bucket bounds of every `*_seconds` histogram.
const LATENCY_BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// How often the upkeep thread folds pending histogram samples into buckets.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls are no-ops).
pub fn install() {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new();
        let builder = match builder.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed");
                return None;
            }
        };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        match metrics::set_global_recorder(recorder) {
            Ok(()) => {
                let upkeep = handle.clone();
                if let Err(e) = spawn_upkeep(UPKEEP_INTERVAL, move || {
                    upkeep.run_upkeep();
                    ControlFlow::Continue(())
                }) {
                    tracing::warn!(error = %e, "metrics upkeep thread not started: histograms grow until /metrics is scraped");
                }
                Some(handle)
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed");
                None
            }
        }
    });
}

/// The exposition text, or `None` when no recorder is installed.
pub fn render() -> Option<String> {
    HANDLE.get().and_then(|h| h.as_ref()).map(|h| h.render())
}

/// Starts the thread that runs `upkeep` every `every`, until it answers
/// `Break`. A thread rather than a task: the recorder is process-wide and
/// outlives any one runtime (tests run daemons in runtimes that come and go).
pub fn spawn_upkeep<F>(every: Duration, mut upkeep: F) -> std::io::Result<JoinHandle<()>>
where
    F: FnMut() -> ControlFlow<()> + Send + 'static,
{
    std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || loop {
        std::thread::sleep(every);
        if upkeep().is_break() {
            return;
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Instant;

    use super::*;

    /// The upkeep runs on its own, with nobody rendering the page, and what it
    /// folds away is still all there when the page is finally read.
    #[test]
    fn upkeep_runs_without_a_scrape() {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
            .expect("buckets")
            .build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            for i in 0..1000u32 {
                metrics::histogram!("upkeep_test_seconds").record(f64::from(i) / 1000.0);
            }
        });

        let (runs_tx, runs_rx) = mpsc::channel();
        let upkeep = handle.clone();
        let mut runs = 0u32;
        let thread = spawn_upkeep(Duration::from_millis(10), move || {
            upkeep.run_upkeep();
            runs += 1;
            let _ = runs_tx.send(runs);
            if runs == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .expect("spawn the upkeep thread");

        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = 0;
        while seen < 3 {
            let left = deadline.saturating_duration_since(Instant::now());
            seen = runs_rx.recv_timeout(left).expect("the upkeep ran three times within 10 s without a scrape");
        }
        thread.join().expect("the upkeep thread ends after Break");

        let page = handle.render();
        assert!(page.contains("upkeep_test_seconds_count 1000"), "all samples counted after upkeep:\n{page}");
        assert!(page.contains("upkeep_test_seconds_bucket{le=\"0.1\"} 101"), "bucketed after upkeep:\n{page}");
    }
}
