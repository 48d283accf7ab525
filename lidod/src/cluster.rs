//! The cluster: several nodes at several locations, checked in with one or
//! more InfrastructureManagers that share their state in a [`Registry`].

pub mod memory;
pub mod registry;

pub use memory::MemoryRegistry;
pub use registry::{NodeRecord, Registry, RegistryChange, RegistryError, RegistryResult};
pub mod after_hours;
pub mod checkin;
pub mod im;
