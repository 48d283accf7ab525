//! The node's event bus: every manager publishes cluster changes here; the
//! InfrastructureManager numbers them and streams them to watchers.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use lido_shared::cluster::ClusterEvent;
use tokio::sync::broadcast;

/// A numbered cluster event.
#[derive(Clone, Debug)]
pub struct Numbered {
    pub seq: u64,
    pub ts: DateTime<Utc>,
    pub event: ClusterEvent,
}

/// Cheap to clone; publishing never blocks (slow watchers lag and re-sync).
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Numbered>,
    seq: Arc<AtomicU64>,
    /// The latest events (not metrics), for `describe`.
    history: Arc<Mutex<VecDeque<Numbered>>>,
}

/// Events kept for `describe`.
const HISTORY: usize = 1_000;

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    pub fn new() -> Self {
        Self {
            tx: broadcast::channel(4096).0,
            seq: Arc::new(AtomicU64::new(0)),
            history: Arc::new(Mutex::new(VecDeque::with_capacity(HISTORY))),
        }
    }

    pub fn publish(&self, event: ClusterEvent) {
        // Numbering and sending under one lock keeps sequence order on the wire.
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let numbered = Numbered { seq, ts: Utc::now(), event };
        if !matches!(numbered.event, ClusterEvent::Metrics { .. }) {
            if history.len() == HISTORY {
                history.pop_front();
            }
            history.push_back(numbered.clone());
        }
        let _ = self.tx.send(numbered);
    }

    /// Recent events that `matches` picks, oldest first.
    pub fn history(&self, matches: impl Fn(&ClusterEvent) -> bool) -> Vec<Numbered> {
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        history.iter().filter(|n| matches(&n.event)).cloned().collect()
    }

    /// A log line for operators (`lidoctl watch`, the TUI's event pane).
    pub fn log(&self, level: &str, message: impl Into<String>) {
        self.publish(ClusterEvent::Log { level: level.into(), message: message.into() });
    }

    /// Subscribe, and the sequence number the subscription starts after.
    pub fn subscribe(&self) -> (broadcast::Receiver<Numbered>, u64) {
        let _guard = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let rx = self.tx.subscribe();
        (rx, self.seq.load(Ordering::SeqCst))
    }
}
