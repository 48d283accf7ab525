//! A typed Rust client for Lido's APIs, used by lidoctl, lido-tui, the tests
//! and Rust algos; and [`agent`], the service side of the pipe.

pub mod agent;
mod cluster;
mod error;
mod http;
mod stream;

pub use cluster::ClusterClient;
pub use error::ClientError;
pub use http::{LidoClient, LogStream, Placed};
pub use stream::{ws_url, ClusterWatch, Stream};
