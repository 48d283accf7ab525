//! The local picture of the cluster: the last snapshot with the events since
//! applied to it.

use lido_shared::cluster::{ClusterEvent, ClusterSnapshot, NodeInfo, NodeLoad};

/// Applies one change to `snapshot`. A service that moved node is taken off
/// the old one; a node never seen before is added; metrics update the
/// services' current figures.
pub fn apply(snapshot: &mut ClusterSnapshot, event: &ClusterEvent) {
    match event {
        ClusterEvent::ServiceChanged { service } => {
            for node in snapshot.nodes.iter_mut().filter(|n| n.id != service.node) {
                node.services.retain(|s| s.name != service.name);
            }
            let node = node_mut(snapshot, &service.node);
            match node.services.iter_mut().find(|s| s.name == service.name) {
                Some(existing) => *existing = service.clone(),
                None => node.services.push(service.clone()),
            }
        }
        ClusterEvent::ServiceRemoved { name, node } => {
            // The named node first; any node if the name moved unseen.
            let on_node = snapshot.nodes.iter_mut().find(|n| &n.id == node).is_some_and(|n| remove(n, name));
            if !on_node {
                for n in &mut snapshot.nodes {
                    remove(n, name);
                }
            }
        }
        ClusterEvent::NodeChanged { id, draining, load } => {
            let node = node_mut(snapshot, id);
            node.draining = *draining;
            node.load = load.clone();
        }
        ClusterEvent::Metrics { node, services } => {
            let Some(node) = snapshot.nodes.iter_mut().find(|n| &n.id == node) else {
                return;
            };
            for service in &mut node.services {
                if let Some(figures) = services.get(&service.name) {
                    service.metrics.extend(figures.iter().map(|(k, v)| (k.clone(), *v)));
                }
            }
        }
        ClusterEvent::Failover { .. } | ClusterEvent::Log { .. } | ClusterEvent::NodeScaled { .. } => {}
        ClusterEvent::NodeAdded { node } => {
            *node_mut(snapshot, &node.id) = node.clone();
            snapshot.nodes.sort_by(|a, b| a.id.cmp(&b.id));
        }
        ClusterEvent::NodeRemoved { id, .. } => snapshot.nodes.retain(|n| &n.id != id),
    }
}

fn remove(node: &mut NodeInfo, name: &str) -> bool {
    let before = node.services.len();
    node.services.retain(|s| s.name != name);
    node.services.len() != before
}

fn node_mut<'a>(snapshot: &'a mut ClusterSnapshot, id: &str) -> &'a mut NodeInfo {
    let index = match snapshot.nodes.iter().position(|n| n.id == id) {
        Some(i) => i,
        None => {
            snapshot.nodes.push(NodeInfo {
                id: id.to_string(),
                location: String::new(),
                draining: false,
                api_url: String::new(),
                managers: Vec::new(),
                services: Vec::new(),
                load: NodeLoad::default(),
            });
            snapshot.nodes.len() - 1
        }
    };
    &mut snapshot.nodes[index]
}
