//! The cluster: several nodes at several locations, checked in with one or
//! more InfrastructureManagers that share their state in a [`Registry`].

pub mod memory;
pub mod nodescale;
pub mod provision;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_registry_picks_the_backend() {
        assert_eq!(open_registry("memory", &[], "/lido").await.unwrap().backend(), "memory");
        let err = open_registry("zookeeper", &[], "/lido").await.err().unwrap();
        assert!(err.to_string().contains("use memory or etcd"), "{err}");
        #[cfg(not(feature = "etcd"))]
        {
            let err = open_registry("etcd", &["http://127.0.0.1:2379".into()], "/lido").await.err().unwrap();
            assert!(err.to_string().contains("build with --features etcd"), "{err}");
        }
    }
}
pub mod after_hours;
pub mod checkin;
pub mod claims;
pub mod im;
