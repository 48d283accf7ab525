//! The cluster secret: services prove it on check-in, managers prove it when
//! they dial a service's pipe (header [`CLUSTER_SECRET_HEADER`]).
//!
//! Where it comes from, first found wins: the `LIDO_CLUSTER_SECRET`
//! environment variable, the configured `cluster_secret_file`,
//! `<data_dir>/cluster-secret` (generated there, 0600, if absent), or a
//! fresh random one for this run when the node has no data dir. Broker
//! children get it in their environment, never on their command line;
//! hosted traders never get it (they get a check-in key of their own, see
//! `supervisor.rs`).

use std::path::Path;

use lido_shared::access::{Secret, CLUSTER_SECRET_ENV, CLUSTER_SECRET_HEADER};
use rand::RngCore;
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// Loads or creates the node's cluster secret.
pub fn load(file: Option<&Path>, data_dir: Option<&Path>) -> anyhow::Result<Secret> {
    if let Some(value) = std::env::var(CLUSTER_SECRET_ENV).ok().filter(|v| !v.trim().is_empty()) {
        return Ok(Secret::new(value.trim()));
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read cluster_secret_file {}: {e}", path.display()))?;
        anyhow::ensure!(!text.trim().is_empty(), "cluster_secret_file {} is empty", path.display());
        return Ok(Secret::new(text.trim()));
    }
    let Some(dir) = data_dir else { return Ok(generate()) };
    let path = path(None, dir);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(Secret::new(text.trim())),
        _ => {
            let secret = generate();
            super::write_private(&path, &format!("{}\n", secret.expose()))?;
            tracing::info!(path = %path.display(), "generated a cluster secret; give it to services started elsewhere");
            Ok(secret)
        }
    }
}

/// The file the secret is read from: the configured one, else
/// `<data_dir>/cluster-secret` (what [`load`] creates).
pub fn path(file: Option<&Path>, data_dir: &Path) -> std::path::PathBuf {
    file.map(Path::to_path_buf).unwrap_or_else(|| data_dir.join("cluster-secret"))
}

/// The secret a service process was given by its manager.
pub fn from_env() -> anyhow::Result<Secret> {
    std::env::var(CLUSTER_SECRET_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| Secret::new(v.trim()))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{CLUSTER_SECRET_ENV} is not set; a service needs its cluster's secret (the manager's data dir has it in cluster-secret)"
            )
        })
}

/// Checks the header of a check-in, in constant time.
pub fn check(headers: &axum::http::HeaderMap, secret: &Secret) -> Result<(), ApiError> {
    let Some(given) = headers.get(CLUSTER_SECRET_HEADER) else {
        return Err(ApiError::unauthorized(format!(
            "check-ins need the cluster secret in the {CLUSTER_SECRET_HEADER} header (set {CLUSTER_SECRET_ENV} for the service)"
        )));
    };
    if matches(given.as_bytes(), secret) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("wrong cluster secret; the service must use its cluster's secret"))
    }
}

/// Constant-time comparison with the secret.
pub fn matches(given: &[u8], secret: &Secret) -> bool {
    bool::from(given.ct_eq(secret.expose().as_bytes()))
}

/// 32 random bytes from the OS, hex: a new cluster secret or a hosted
/// trader's check-in key.
pub fn generate() -> Secret {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    Secret::new(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_into_the_data_dir_and_compared_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let a = load(None, Some(dir.path())).unwrap();
        let b = load(None, Some(dir.path())).unwrap();
        assert_eq!(a, b);
        assert!(matches(a.expose().as_bytes(), &a));
        assert!(!matches(b"nope", &a));
        let mut headers = axum::http::HeaderMap::new();
        assert_eq!(check(&headers, &a).unwrap_err().code, "unauthorized");
        headers.insert(CLUSTER_SECRET_HEADER, a.expose().parse().unwrap());
        assert!(check(&headers, &a).is_ok());
    }
}
