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
    if let Some(bad) = filter.split(',').find(|d| !is_directive(d)) {
        return Err(ApiError::bad_request(
            "invalid_filter",
            format!(
                "cannot read {bad:?} in the log filter: each comma-separated part is a level \
                 (trace, debug, info, warn, error, off) or target=level, e.g. \"info,lidod=debug\""
            ),
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

/// The grammar `PUT /v1/log-level` documents, stricter than [`EnvFilter`]
/// (which skips parts it cannot read): `LEVEL` or `TARGET[=LEVEL]`, a target
/// being Rust path segments such as `lidod::markets`.
fn is_directive(part: &str) -> bool {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let (target, level) = match part.split_once('=') {
        Some((target, level)) => (target, Some(level)),
        None => (part, None),
    };
    let ident = |s: &str| {
        let mut chars = s.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    level.is_none_or(|l| LEVELS.contains(&l))
        && (level.is_none() && LEVELS.contains(&target) || target.split("::").all(ident))
}

#[cfg(test)]
mod tests {
    use super::is_directive;

    #[test]
    fn directives_follow_the_documented_grammar() {
        for good in ["info", "off", "lidod", "lidod=debug", "lidod::markets=trace", "tower_http=warn"] {
            assert!(is_directive(good), "{good}");
        }
        for bad in ["", "info*", "lidod=loud", "=debug", "lidod::", "9lives", "a b", "lidod=debug=info"] {
            assert!(!is_directive(bad), "{bad}");
        }
    }
}
