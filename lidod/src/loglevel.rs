//! The log filter, changeable at run time: `main` installs a reloadable
//! [`EnvFilter`] and hands its handle here; `PUT /v1/log-level` (and
//! `lidoctl log-level`) swaps the filter without a restart.

use std::sync::OnceLock;

use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::error::ApiError;

/// The handle of the process's filter layer.
pub type Handle = reload::Handle<EnvFilter, Registry>;

static HANDLE: OnceLock<Handle> = OnceLock::new();

/// Keeps the handle (the first one wins: there is one subscriber).
pub fn install(handle: Handle) {
    let _ = HANDLE.set(handle);
}

/// Replaces the filter with `filter` (`info,lidod=debug` syntax).
pub fn set(filter: &str) -> Result<(), ApiError> {
    let handle = HANDLE.get().ok_or_else(|| {
        ApiError::unavailable("log_level_unavailable", "this process was started without a reloadable log filter")
    })?;
    if filter.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid_filter",
            "the log filter is empty (it would silence every log line); send e.g. \"info,lidod=debug\"",
        ));
    }
    let new = EnvFilter::try_new(filter).map_err(|e| {
        ApiError::bad_request(
            "invalid_filter",
            format!("cannot read the log filter {filter:?}: {e}; expected e.g. \"info,lidod=debug\""),
        )
    })?;
    handle.reload(new).map_err(|e| {
        ApiError::unavailable("log_level_unavailable", format!("the log filter could not be swapped: {e}"))
    })?;
    tracing::info!(filter, "log filter changed");
    Ok(())
}
