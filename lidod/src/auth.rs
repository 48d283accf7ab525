//! Who is calling, and what they may do.
//!
//! - API tokens: `lido_` and 64 hex digits, 256 bits from the OS's random
//!   source, shown once at creation. Lido stores only their SHA-256 (the
//!   usual practice for high-entropy API tokens: a slow password hash adds
//!   nothing against a 256-bit secret) with id, role, customer, name and
//!   dates, in [`store`]; checks are served from an in-memory copy.
//! - [`Caller`]: what a request's `Authorization: Bearer …` resolves to (an
//!   operator token, a customer token, or a session opened with one).
//! - [`AuthMode`]: `open` (the embedded default, loopback only: a request
//!   without a token acts as the local operator and customer `default`) or
//!   `tokens` (every API call needs a token).
//! - [`secret`]: the cluster secret of check-ins and service pipes.
//! - The audit log of operator actions ([`Access::audit`]).

pub mod secret;
pub mod store;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use chrono::Utc;
use lido_shared::access::{AuditRecord, CreateToken, CreatedToken, Role, TokenInfo};
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tracing::{error, info, warn};

use crate::error::ApiError;
use store::{Store, TokenRow};

/// How requests without a token are treated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Local only: no token means the local operator and customer `default`.
    #[default]
    Open,
    /// Every API call needs a bearer token.
    Tokens,
}

/// The customer a tokenless caller acts as in open mode.
pub const OPEN_MODE_CUSTOMER: &str = "default";

/// What a request's credentials resolve to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// Open mode, no token: the local operator, trading as `default`.
    Local,
    Operator {
        token_id: String,
        name: Option<String>,
    },
    /// A customer token, or a session (opened by `token_id`, if any).
    Customer {
        customer: String,
        token_id: Option<String>,
    },
    /// An InfrastructureManager of this node's cluster (it proved the
    /// cluster secret): an operator.
    Im,
}

impl Caller {
    /// Who, for the audit log and traces (never a secret).
    pub fn actor(&self) -> String {
        match self {
            Self::Local => "local".into(),
            Self::Operator { token_id, name: Some(n) } => format!("token:{token_id} ({n})"),
            Self::Operator { token_id, name: None } => format!("token:{token_id}"),
            Self::Customer { customer, token_id: Some(t) } => format!("token:{t} (customer {customer})"),
            Self::Customer { customer, token_id: None } => format!("session (customer {customer})"),
            Self::Im => "im".into(),
        }
    }

    pub fn is_operator(&self) -> bool {
        matches!(self, Self::Local | Self::Operator { .. } | Self::Im)
    }

    /// The account this caller trades for.
    pub fn customer(&self) -> Result<&str, ApiError> {
        match self {
            Self::Local => Ok(OPEN_MODE_CUSTOMER),
            Self::Customer { customer, .. } => Ok(customer),
            Self::Operator { .. } | Self::Im => Err(ApiError::forbidden(
                "an operator token has no trading account; use a customer token or a session from POST /v1/sessions",
            )),
        }
    }

    /// Fills in or checks the customer a session is asked for: a customer
    /// token opens sessions for its own customer only.
    pub fn session_customer(&self, requested: &mut String) -> Result<(), ApiError> {
        if let Self::Customer { customer, .. } = self {
            if requested.is_empty() {
                *requested = customer.clone();
            } else if requested != customer {
                return Err(ApiError::forbidden(format!(
                    "this token is for customer {customer}; it cannot open a session for {requested}"
                )));
            }
        }
        Ok(())
    }

    /// Refuses customers: only operators run the cluster.
    pub fn require_operator(&self) -> Result<(), ApiError> {
        if self.is_operator() {
            return Ok(());
        }
        Err(ApiError::forbidden("this is an operator action; a customer token cannot spawn, stop, drain, manage tokens or read the audit log"))
    }
}

/// Tokens (durable, checked from memory), the audit log and the mode.
#[derive(Clone)]
pub struct Access {
    inner: Arc<Inner>,
}

struct Inner {
    mode: AuthMode,
    store: Store,
    /// Every token by the SHA-256 of its secret.
    by_hash: RwLock<HashMap<[u8; 32], TokenInfo>>,
}

impl Access {
    /// Opens `<data_dir>/auth.sqlite` (in memory without a data dir).
    pub fn open(mode: AuthMode, data_dir: Option<&Path>) -> anyhow::Result<Self> {
        let path = data_dir.map(|d| d.join("auth.sqlite"));
        let store = Store::open(path.as_deref())
            .map_err(|e| anyhow::anyhow!("cannot open the token store {}: {e}", describe(path.as_deref())))?;
        let by_hash = store.tokens()?.into_iter().map(|r| (r.hash, r.info)).collect();
        Ok(Self { inner: Arc::new(Inner { mode, store, by_hash: RwLock::new(by_hash) }) })
    }

    pub fn mode(&self) -> AuthMode {
        self.inner.mode
    }

    /// In `tokens` mode with no live operator token, creates one and writes it
    /// to `<data_dir>/bootstrap-token` (0600); returns that path.
    pub fn bootstrap(&self, data_dir: &Path) -> anyhow::Result<Option<PathBuf>> {
        let any_operator = self.read().values().any(|t| t.role == Role::Operator && t.revoked_at.is_none());
        if self.inner.mode != AuthMode::Tokens || any_operator {
            return Ok(None);
        }
        let created = self
            .create(&CreateToken { role: Role::Operator, customer: None, name: Some("bootstrap".into()) })
            .map_err(|e| anyhow::anyhow!("cannot create the bootstrap token: {}", e.message))?;
        let path = data_dir.join("bootstrap-token");
        write_private(&path, &format!("{}\n", created.token))?;
        self.audit("local", "token_create", &created.info.id, &Ok::<_, ApiError>(()), Some("bootstrap operator token"));
        Ok(Some(path))
    }

    /// Checks a bearer token: `None` when it is not an API token at all.
    pub fn verify(&self, token: &str) -> Option<Result<Caller, ApiError>> {
        let info = self.read().get(&hash(token)).cloned()?;
        if info.revoked_at.is_some() {
            return Some(Err(ApiError::unauthorized(format!(
                "token {} was revoked; ask an operator for a new one (`lidoctl token create`)",
                info.id
            ))));
        }
        Some(Ok(match info.role {
            Role::Operator => Caller::Operator { token_id: info.id, name: info.name },
            Role::Customer => Caller::Customer { customer: info.customer.unwrap_or_default(), token_id: Some(info.id) },
        }))
    }

    pub fn create(&self, req: &CreateToken) -> Result<CreatedToken, ApiError> {
        let customer = match (req.role, &req.customer) {
            (Role::Customer, Some(c)) => {
                crate::sessions::validate_customer(c)?;
                Some(c.clone())
            }
            (Role::Customer, None) => {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    "a customer token needs a customer, e.g. --customer acme",
                ))
            }
            (Role::Operator, Some(_)) => {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    "an operator token has no customer; drop --customer",
                ))
            }
            (Role::Operator, None) => None,
        };
        if let Some(name) = &req.name {
            if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
                return Err(ApiError::bad_request("invalid_request", "a token name is 1-64 printable characters"));
            }
        }
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let token = format!("lido_{}", hex::encode(secret));
        let mut id = [0u8; 6];
        rand::rngs::OsRng.fill_bytes(&mut id);
        let info = TokenInfo {
            id: format!("t-{}", hex::encode(id)),
            role: req.role,
            customer,
            name: req.name.clone(),
            created_at: Utc::now(),
            revoked_at: None,
        };
        let row = TokenRow { info: info.clone(), hash: hash(&token) };
        self.inner.store.insert_token(&row).map_err(ApiError::internal)?;
        self.write().insert(row.hash, info.clone());
        info!(id = %info.id, role = %info.role, customer = ?info.customer, "token created");
        Ok(CreatedToken { info, token })
    }

    pub fn list(&self) -> Vec<TokenInfo> {
        let mut out: Vec<TokenInfo> = self.read().values().cloned().collect();
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        out
    }

    /// Revokes a token at once; revoking twice is not an error.
    pub fn revoke(&self, id: &str) -> Result<TokenInfo, ApiError> {
        let now = Utc::now();
        if !self.inner.store.revoke(id, now).map_err(ApiError::internal)? {
            return Err(ApiError::not_found(
                "unknown_token",
                format!("no token {id:?}; `lidoctl token list` shows them"),
            ));
        }
        let mut map = self.write();
        let info =
            map.values_mut().find(|t| t.id == id).ok_or_else(|| ApiError::internal("token missing from memory"))?;
        info.revoked_at.get_or_insert(now);
        info!(id, "token revoked");
        Ok(info.clone())
    }

    /// Records an operator action and its outcome. A failure to record is
    /// logged loudly; the action itself has already happened.
    pub fn audit<T>(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        result: &Result<T, ApiError>,
        detail: Option<&str>,
    ) {
        let (result, detail) = match result {
            Ok(_) => ("ok".to_string(), detail.map(str::to_string)),
            Err(e) => (e.code.to_string(), Some(e.message.clone())),
        };
        let rec = AuditRecord {
            seq: 0,
            ts: Utc::now(),
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            result,
            detail,
        };
        if let Err(e) = self.inner.store.append_audit(&rec) {
            error!(error = %e, action, target, "cannot write the audit log");
        }
    }

    pub fn audit_log(&self, since: Option<chrono::DateTime<Utc>>, limit: usize) -> Result<Vec<AuditRecord>, ApiError> {
        self.inner.store.audit(since, limit).map_err(ApiError::internal)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<[u8; 32], TokenInfo>> {
        self.inner.by_hash.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<[u8; 32], TokenInfo>> {
        self.inner.by_hash.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Refuses open mode on a non-loopback address.
pub fn refuse_open_public(mode: AuthMode, listen: std::net::SocketAddr) -> anyhow::Result<()> {
    anyhow::ensure!(
        mode == AuthMode::Tokens || listen.ip().is_loopback(),
        "auth mode `open` is local-only and refuses to listen on {listen}; set `auth = \"tokens\"` (or --auth tokens) to serve other hosts"
    );
    Ok(())
}

/// [`refuse_open_public`], and says loudly when open mode is on.
pub fn check_mode(mode: AuthMode, listen: std::net::SocketAddr) -> anyhow::Result<()> {
    refuse_open_public(mode, listen)?;
    if mode == AuthMode::Tokens {
        return Ok(());
    }
    warn!(%listen, "auth mode OPEN: requests without a token act as the local operator and customer `default`; use --auth tokens to require tokens");
    Ok(())
}

/// Writes `text` to a new owner-only (0600) file.
pub fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    store::restrict(path);
    file.write_all(text.as_bytes()).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn describe(path: Option<&Path>) -> String {
    path.map_or("(in memory)".into(), |p| p.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(access: &Access, role: Role, customer: Option<&str>) -> CreatedToken {
        access.create(&CreateToken { role, customer: customer.map(str::to_string), name: None }).unwrap()
    }

    #[test]
    fn tokens_verify_until_revoked_and_are_stored_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let access = Access::open(AuthMode::Tokens, Some(dir.path())).unwrap();
        let t = create(&access, Role::Customer, Some("acme"));
        assert!(t.token.starts_with("lido_") && t.token.len() == 5 + 64);
        let caller = access.verify(&t.token).unwrap().unwrap();
        assert_eq!(caller.customer().unwrap(), "acme");
        assert!(caller.require_operator().is_err());
        assert!(access.verify("lido_nope").is_none());
        let raw = std::fs::read(dir.path().join("auth.sqlite")).unwrap();
        assert!(!raw.windows(t.token.len()).any(|w| w == t.token.as_bytes()), "the secret itself is not stored");
        access.revoke(&t.info.id).unwrap();
        assert_eq!(access.verify(&t.token).unwrap().unwrap_err().code, "unauthorized");
        // A restart keeps the revocation.
        drop(access);
        let again = Access::open(AuthMode::Tokens, Some(dir.path())).unwrap();
        assert!(again.verify(&t.token).unwrap().is_err());
    }

    #[test]
    fn bad_token_requests_are_refused() {
        let access = Access::open(AuthMode::Open, None).unwrap();
        let no_customer = CreateToken { role: Role::Customer, customer: None, name: None };
        assert_eq!(access.create(&no_customer).unwrap_err().code, "invalid_request");
        let op_customer = CreateToken { role: Role::Operator, customer: Some("acme".into()), name: None };
        assert_eq!(access.create(&op_customer).unwrap_err().code, "invalid_request");
        assert_eq!(access.revoke("t-missing").unwrap_err().code, "unknown_token");
        assert!(access.list().is_empty());
    }

    #[test]
    fn bootstrap_writes_one_operator_token_once() {
        let dir = tempfile::tempdir().unwrap();
        let access = Access::open(AuthMode::Tokens, Some(dir.path())).unwrap();
        let path = access.bootstrap(dir.path()).unwrap().unwrap();
        let token = std::fs::read_to_string(&path).unwrap();
        assert!(access.verify(token.trim()).unwrap().unwrap().is_operator());
        assert!(access.bootstrap(dir.path()).unwrap().is_none());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn open_mode_refuses_public_addresses() {
        assert!(check_mode(AuthMode::Open, "0.0.0.0:7700".parse().unwrap()).is_err());
        assert!(check_mode(AuthMode::Open, "127.0.0.1:7700".parse().unwrap()).is_ok());
        assert!(check_mode(AuthMode::Tokens, "0.0.0.0:7700".parse().unwrap()).is_ok());
    }
}
