//! The cluster: several nodes at several locations, checked in with one or
//! more InfrastructureManagers that share their state in a [`Registry`].

pub mod memory;
pub mod registry;

pub use memory::MemoryRegistry;
pub use registry::{NodeRecord, Registry, RegistryChange, RegistryError, RegistryResult};
#[cfg(feature = "etcd")]
pub mod etcd;

/// The registry a `--registry` flag names: `memory` (one IM) or `etcd`
/// (several IMs on the etcd cluster at `endpoints`, keys under `prefix`).
pub async fn open_registry(
    kind: &str,
    endpoints: &[String],
    prefix: &str,
) -> anyhow::Result<std::sync::Arc<dyn Registry>> {
    match kind {
        "memory" => Ok(std::sync::Arc::new(MemoryRegistry::new())),
        #[cfg(feature = "etcd")]
        "etcd" => {
            let registry = etcd::EtcdRegistry::connect(endpoints, prefix)
                .await
                .map_err(|e| anyhow::anyhow!("{e} (etcd endpoints: {})", endpoints.join(",")))?;
            Ok(std::sync::Arc::new(registry))
        }
        #[cfg(not(feature = "etcd"))]
        "etcd" => {
            let _ = (endpoints, prefix);
            anyhow::bail!("this lidod was built without the etcd feature; build with --features etcd")
        }
        other => anyhow::bail!("unknown registry {other:?}; use memory or etcd"),
    }
}
