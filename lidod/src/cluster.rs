//! The cluster: several nodes at several locations, checked in with one or
//! more InfrastructureManagers that share their state in a [`Registry`].

pub mod memory;
pub mod nodescale;
pub mod provision;
pub mod registry;

pub use memory::MemoryRegistry;
pub use registry::{NodeRecord, Registry, RegistryChange, RegistryError, RegistryResult};
