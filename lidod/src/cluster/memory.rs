//! The single-IM registry: everything in this process's memory.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::registry::{NodeRecord, Registry, RegistryChange, RegistryResult};

#[derive(Default)]
struct State {
    /// Node id → its record and when it expires.
    nodes: HashMap<String, (NodeRecord, Instant)>,
    draining: BTreeSet<String>,
    assignments: BTreeMap<String, String>,
    settings: BTreeMap<String, String>,
    /// Order id → the node that claimed it.
    order_claims: HashMap<String, String>,
}

#[derive(Clone)]
pub struct MemoryRegistry {
    state: Arc<Mutex<State>>,
    changes: broadcast::Sender<RegistryChange>,
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryRegistry {
    pub fn new() -> Self {
        Self { state: Arc::default(), changes: broadcast::channel(1024).0 }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, change: RegistryChange) {
        let _ = self.changes.send(change);
    }

    /// Drops expired nodes, announcing each.
    fn expire(&self) {
        let now = Instant::now();
        let gone: Vec<String> = {
            let mut s = self.lock();
            let gone: Vec<String> =
                s.nodes.iter().filter(|(_, (_, at))| *at <= now).map(|(id, _)| id.clone()).collect();
            for id in &gone {
                s.nodes.remove(id);
            }
            gone
        };
        for id in gone {
            self.publish(RegistryChange::NodeGone(id));
        }
    }
}

#[async_trait]
impl Registry for MemoryRegistry {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn check_in(&self, node: &NodeRecord, ttl: Duration) -> RegistryResult<()> {
        self.expire();
        let changed = {
            let mut s = self.lock();
            let before = s.nodes.insert(node.info.id.clone(), (node.clone(), Instant::now() + ttl));
            before.map(|(r, _)| r.info != node.info || r.watch_url != node.watch_url).unwrap_or(true)
        };
        if changed {
            self.publish(RegistryChange::Node(node.clone()));
        }
        Ok(())
    }

    async fn nodes(&self) -> RegistryResult<Vec<NodeRecord>> {
        self.expire();
        let mut nodes: Vec<NodeRecord> = self.lock().nodes.values().map(|(r, _)| r.clone()).collect();
        nodes.sort_by(|a, b| a.info.id.cmp(&b.info.id));
        Ok(nodes)
    }

    async fn remove_node(&self, id: &str) -> RegistryResult<()> {
        if self.lock().nodes.remove(id).is_some() {
            self.publish(RegistryChange::NodeGone(id.to_string()));
        }
        Ok(())
    }

    async fn set_draining(&self, node: &str, draining: bool) -> RegistryResult<()> {
        let changed = {
            let mut s = self.lock();
            if draining {
                s.draining.insert(node.to_string())
            } else {
                s.draining.remove(node)
            }
        };
        if changed {
            self.publish(RegistryChange::Draining { node: node.to_string(), draining });
        }
        Ok(())
    }

    async fn draining(&self) -> RegistryResult<BTreeSet<String>> {
        Ok(self.lock().draining.clone())
    }

    async fn assign(&self, customer: &str, candidate: &str) -> RegistryResult<String> {
        let (node, new) = {
            let mut s = self.lock();
            match s.assignments.get(customer) {
                Some(node) => (node.clone(), false),
                None => {
                    s.assignments.insert(customer.to_string(), candidate.to_string());
                    (candidate.to_string(), true)
                }
            }
        };
        if new {
            self.publish(RegistryChange::Assigned { customer: customer.to_string(), node: node.clone() });
        }
        Ok(node)
    }

    async fn reassign(&self, customer: &str, from: &str, to: &str) -> RegistryResult<String> {
        let (node, moved) = {
            let mut s = self.lock();
            match s.assignments.get(customer) {
                Some(node) if node == from => {
                    s.assignments.insert(customer.to_string(), to.to_string());
                    (to.to_string(), true)
                }
                Some(node) => (node.clone(), false),
                None => {
                    s.assignments.insert(customer.to_string(), to.to_string());
                    (to.to_string(), true)
                }
            }
        };
        if moved {
            self.publish(RegistryChange::Assigned { customer: customer.to_string(), node: node.clone() });
        }
        Ok(node)
    }

    async fn assignments(&self) -> RegistryResult<BTreeMap<String, String>> {
        Ok(self.lock().assignments.clone())
    }

    async fn claim_order(&self, order_id: &str, node: &str) -> RegistryResult<String> {
        Ok(self.lock().order_claims.entry(order_id.to_string()).or_insert_with(|| node.to_string()).clone())
    }

    async fn put_setting(&self, key: &str, value: &str) -> RegistryResult<()> {
        let old = self.lock().settings.insert(key.to_string(), value.to_string());
        if old.as_deref() != Some(value) {
            self.publish(RegistryChange::Setting { key: key.to_string(), value: Some(value.to_string()) });
        }
        Ok(())
    }

    async fn setting(&self, key: &str) -> RegistryResult<Option<String>> {
        Ok(self.lock().settings.get(key).cloned())
    }

    /// One IM: it leads as long as it runs.
    fn campaign(&self, me: &str, stop: CancellationToken) -> watch::Receiver<Option<String>> {
        let (tx, rx) = watch::channel(Some(me.to_string()));
        tokio::spawn(async move {
            stop.cancelled().await;
            let _ = tx.send(None);
        });
        rx
    }

    fn watch(&self) -> broadcast::Receiver<RegistryChange> {
        self.changes.subscribe()
    }
}
