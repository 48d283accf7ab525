//! The node's event bus: every manager publishes cluster changes here; the
//! InfrastructureManager numbers them and streams them to watchers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    pub fn new() -> Self {
        Self { tx: broadcast::channel(4096).0, seq: Arc::new(AtomicU64::new(0)) }
    }

    pub fn publish(&self, event: ClusterEvent) {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let _ = self.tx.send(Numbered { seq, ts: Utc::now(), event });
    }

    /// A log line for operators (`lidoctl watch`, the TUI's event pane).
    pub fn log(&self, level: &str, message: impl Into<String>) {
        self.publish(ClusterEvent::Log { level: level.into(), message: message.into() });
    }

    /// Subscribe, and the sequence number the subscription starts after.
    pub fn subscribe(&self) -> (broadcast::Receiver<Numbered>, u64) {
        let rx = self.tx.subscribe();
        (rx, self.seq.load(Ordering::SeqCst))
    }
}
