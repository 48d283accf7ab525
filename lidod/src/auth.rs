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
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use lido_shared::access::{AuditRecord, CreateToken, CreatedToken, Role, TokenInfo};
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::cluster::Registry;
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

/// On a session request an IM forwards to a node (with the cluster secret):
/// the id of the API token that asked, so revoking it ends the session.
pub const OPENED_BY_HEADER: &str = "lido-opened-by";
/// With [`OPENED_BY_HEADER`]: when that token expires (RFC 3339).
pub const EXPIRES_AT_HEADER: &str = "lido-token-expires-at";

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
    /// token opens sessions for its own customer only; an operator token
    /// opens none (operators have no account). Hosted traders get theirs
    /// from their TraderManager inside lidod, an IM's forwarded session
    /// request proves the cluster secret, and open mode's local caller is
    /// the loopback developer.
    pub fn session_customer(&self, requested: &mut String) -> Result<(), ApiError> {
        if let Self::Operator { .. } = self {
            return Err(ApiError::forbidden(
                "an operator token cannot open a session: operators have no trading account; use the customer's own token (`lidoctl token create --customer NAME`)",
            ));
        }
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
    /// Per token id, cancelled when it is revoked: what the token opened
    /// (streams, sessions' streams) ends with it.
    revoked: Mutex<HashMap<String, CancellationToken>>,
    /// In a cluster on etcd, the registry every IM keeps tokens, revocations
    /// and the audit log in (then the local store holds none of them).
    shared: OnceLock<Arc<dyn Registry>>,
}

/// How often an IM on a shared registry re-reads the tokens, so a token
/// made or revoked at another IM takes effect here within this time.
pub const SHARED_SYNC: Duration = Duration::from_millis(500);

/// How long a credential stays good: until it is revoked (the token is
/// cancelled) or it expires, whichever comes first. A stream holds one and
/// ends the moment it does; `Default` never ends (open mode, the IM).
#[derive(Clone, Debug, Default)]
pub struct Validity {
    revoked: CancellationToken,
    expires_at: Option<DateTime<Utc>>,
}

/// Why a credential stopped working.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    Revoked,
    Expired,
}

impl Ended {
    /// The reason a stream's close frame carries.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Revoked => "token revoked",
            Self::Expired => "token expired",
        }
    }
}

impl Validity {
    pub fn new(revoked: CancellationToken, expires_at: Option<DateTime<Utc>>) -> Self {
        Self { revoked, expires_at }
    }

    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.expires_at
    }

    /// The same end, for something opened with this credential (a session).
    pub fn child(&self) -> Self {
        Self { revoked: self.revoked.child_token(), expires_at: self.expires_at }
    }

    /// The cancellation that ends it (revoked or closed).
    pub fn revoked_token(&self) -> CancellationToken {
        self.revoked.clone()
    }

    /// Ends it now (a closed session).
    pub fn end(&self) {
        self.revoked.cancel();
    }

    /// Whether it has ended, and why.
    pub fn state(&self) -> Option<Ended> {
        if self.revoked.is_cancelled() {
            return Some(Ended::Revoked);
        }
        self.expires_at.is_some_and(|at| at <= Utc::now()).then_some(Ended::Expired)
    }

    /// 401 once it has ended, saying why and what to do.
    pub fn check(&self) -> Result<(), ApiError> {
        match self.state() {
            None => Ok(()),
            Some(Ended::Revoked) => Err(ApiError::unauthorized(
                "the token of this request (or of the session it opened) was revoked; ask an operator for a new one",
            )),
            Some(Ended::Expired) => Err(ApiError::unauthorized(
                "the token of this request (or of the session it opened) has expired; ask an operator for a new one",
            )),
        }
    }

    /// Resolves when it ends.
    pub async fn ended(&self) -> Ended {
        let expiry = async {
            match self.expires_at {
                Some(at) => tokio::time::sleep((at - Utc::now()).to_std().unwrap_or_default()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.revoked.cancelled() => Ended::Revoked,
            _ = expiry => Ended::Expired,
        }
    }
}

/// A token as the shared registry holds it: its listing and its hash (hex).
#[derive(serde::Serialize, Deserialize)]
struct SharedToken {
    info: TokenInfo,
    hash: String,
}

impl Access {
    /// Opens `<data_dir>/auth.sqlite` (in memory without a data dir).
    pub fn open(mode: AuthMode, data_dir: Option<&Path>) -> anyhow::Result<Self> {
        let path = data_dir.map(|d| d.join("auth.sqlite"));
        let store = Store::open(path.as_deref())
            .map_err(|e| anyhow::anyhow!("cannot open the token store {}: {e}", describe(path.as_deref())))?;
        let by_hash = store.tokens()?.into_iter().map(|r| (r.hash, r.info)).collect();
        Ok(Self {
            inner: Arc::new(Inner {
                mode,
                store,
                by_hash: RwLock::new(by_hash),
                revoked: Mutex::default(),
                shared: OnceLock::new(),
            }),
        })
    }

    /// Keeps tokens, revocations and the audit log in `registry` from now on
    /// (an IM on etcd: every IM then accepts the same tokens), when the
    /// registry shares them; a memory registry changes nothing. Loads the
    /// shared tokens and re-reads them every [`SHARED_SYNC`] until `stop`.
    pub async fn share(&self, registry: Arc<dyn Registry>, stop: CancellationToken) -> anyhow::Result<()> {
        if !registry.shares_access() {
            return Ok(());
        }
        let rows = load_shared(registry.as_ref())
            .await
            .map_err(|e| anyhow::anyhow!("cannot read the shared tokens from the cluster registry: {e}"))?;
        self.replace(rows);
        if self.inner.shared.set(registry.clone()).is_err() {
            anyhow::bail!("the token store is already shared");
        }
        info!(backend = registry.backend(), "tokens, revocations and the audit log are shared in the cluster registry");
        let access = self.clone();
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(SHARED_SYNC) => {}
                }
                match load_shared(registry.as_ref()).await {
                    Ok(rows) => {
                        if failing {
                            info!("shared tokens readable again");
                        }
                        failing = false;
                        access.replace(rows);
                    }
                    Err(e) if !failing => {
                        failing = true;
                        warn!(error = %e, "cannot re-read the shared tokens; serving the last copy (revocations made at other IMs wait)");
                    }
                    Err(_) => {}
                }
            }
        });
        Ok(())
    }

    pub fn mode(&self) -> AuthMode {
        self.inner.mode
    }

    /// In `tokens` mode with no live operator token, creates one and writes it
    /// to `<data_dir>/bootstrap-token` (0600); returns that path.
    pub async fn bootstrap(&self, data_dir: &Path) -> anyhow::Result<Option<PathBuf>> {
        let now = Utc::now();
        let any_operator =
            self.read().values().any(|t| t.role == Role::Operator && t.revoked_at.is_none() && !t.expired(now));
        if self.inner.mode != AuthMode::Tokens || any_operator {
            return Ok(None);
        }
        let req =
            CreateToken { role: Role::Operator, customer: None, name: Some("bootstrap".into()), expires_at: None };
        let created =
            self.create(&req).await.map_err(|e| anyhow::anyhow!("cannot create the bootstrap token: {}", e.message))?;
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
        if let Some(at) = info.expires_at.filter(|at| *at <= Utc::now()) {
            return Some(Err(ApiError::unauthorized(format!(
                "token {} expired at {}; ask an operator for a new one (`lidoctl token create --expires-in …`)",
                info.id,
                at.to_rfc3339()
            ))));
        }
        Some(Ok(match info.role {
            Role::Operator => Caller::Operator { token_id: info.id, name: info.name },
            Role::Customer => Caller::Customer { customer: info.customer.unwrap_or_default(), token_id: Some(info.id) },
        }))
    }

    /// How long the token `id` stays good: ended at once when it is unknown
    /// or already revoked.
    pub fn validity(&self, id: &str) -> Validity {
        let (revoked, expires_at) = match self.read().values().find(|t| t.id == id) {
            Some(t) => (t.revoked_at.is_some(), t.expires_at),
            None => (true, None),
        };
        let token = self.revoked_token(id);
        if revoked {
            token.cancel();
        }
        Validity::new(token, expires_at)
    }

    pub async fn create(&self, req: &CreateToken) -> Result<CreatedToken, ApiError> {
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
        let now = Utc::now();
        if let Some(at) = req.expires_at.filter(|at| *at <= now) {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!("expires_at {} is not in the future; give a later time or none", at.to_rfc3339()),
            ));
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
            created_at: now,
            revoked_at: None,
            expires_at: req.expires_at,
        };
        let row = TokenRow { info: info.clone(), hash: hash(&token) };
        match self.inner.shared.get() {
            Some(registry) => put_shared(registry.as_ref(), &row).await?,
            None => self.inner.store.insert_token(&row).map_err(ApiError::internal)?,
        }
        self.write().insert(row.hash, info.clone());
        info!(id = %info.id, role = %info.role, customer = ?info.customer, expires_at = ?info.expires_at, "token created");
        Ok(CreatedToken { info, token })
    }

    pub fn list(&self) -> Vec<TokenInfo> {
        let mut out: Vec<TokenInfo> = self.read().values().cloned().collect();
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        out
    }

    /// Revokes a token at once (what it opened ends); revoking twice is not
    /// an error.
    pub async fn revoke(&self, id: &str) -> Result<TokenInfo, ApiError> {
        let now = Utc::now();
        let unknown =
            || ApiError::not_found("unknown_token", format!("no token {id:?}; `lidoctl token list` shows them"));
        match self.inner.shared.get() {
            Some(registry) => {
                let found = self.read().iter().find(|(_, t)| t.id == id).map(|(h, t)| (*h, t.clone()));
                let Some((hash, mut info)) = found else { return Err(unknown()) };
                info.revoked_at.get_or_insert(now);
                put_shared(registry.as_ref(), &TokenRow { info, hash }).await?;
            }
            None => {
                if !self.inner.store.revoke(id, now).map_err(ApiError::internal)? {
                    return Err(unknown());
                }
            }
        }
        let info = {
            let mut map = self.write();
            let info =
                map.values_mut().find(|t| t.id == id).ok_or_else(|| ApiError::internal("token missing from memory"))?;
            info.revoked_at.get_or_insert(now);
            info.clone()
        };
        self.revoked_token(id).cancel();
        info!(id, "token revoked");
        Ok(info)
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
        if let Some(registry) = self.inner.shared.get().cloned() {
            // Written in the background: the action has happened; the record
            // follows it into the registry (or a loud line says it did not).
            tokio::spawn(async move {
                let json = serde_json::to_string(&rec).unwrap_or_default();
                if let Err(e) = registry.append_audit(&json).await {
                    error!(error = %e, action = %rec.action, target = %rec.target, "cannot write the audit log to the cluster registry");
                }
            });
            return;
        }
        if let Err(e) = self.inner.store.append_audit(&rec) {
            error!(error = %e, action, target, "cannot write the audit log");
        }
    }

    pub async fn audit_log(
        &self,
        since: Option<chrono::DateTime<Utc>>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, ApiError> {
        let Some(registry) = self.inner.shared.get() else {
            return self.inner.store.audit(since, limit).map_err(ApiError::internal);
        };
        let raw = registry.audit_records().await.map_err(crate::cluster::im::registry_error)?;
        let mut out: Vec<AuditRecord> = raw
            .iter()
            .filter_map(|json| serde_json::from_str::<AuditRecord>(json).ok())
            .filter(|r| since.is_none_or(|s| r.ts >= s))
            .collect();
        out.sort_by_key(|r| r.ts);
        for (n, r) in out.iter_mut().enumerate() {
            r.seq = n as i64 + 1;
        }
        let skip = out.len().saturating_sub(limit);
        Ok(out.split_off(skip))
    }

    /// Takes the shared registry's tokens as the truth; ends what newly
    /// revoked ones opened.
    fn replace(&self, rows: Vec<TokenRow>) {
        let newly_revoked: Vec<String> = {
            let old = self.read();
            rows.iter()
                .filter(|r| r.info.revoked_at.is_some())
                .filter(|r| old.get(&r.hash).is_none_or(|t| t.revoked_at.is_none()))
                .map(|r| r.info.id.clone())
                .collect()
        };
        *self.write() = rows.into_iter().map(|r| (r.hash, r.info)).collect();
        for id in newly_revoked {
            info!(id, "token revoked at another InfrastructureManager");
            self.revoked_token(&id).cancel();
        }
    }

    fn revoked_token(&self, id: &str) -> CancellationToken {
        self.inner.revoked.lock().unwrap_or_else(|p| p.into_inner()).entry(id.to_string()).or_default().clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<[u8; 32], TokenInfo>> {
        self.inner.by_hash.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<[u8; 32], TokenInfo>> {
        self.inner.by_hash.write().unwrap_or_else(|p| p.into_inner())
    }
}

async fn load_shared(registry: &dyn Registry) -> Result<Vec<TokenRow>, crate::cluster::RegistryError> {
    let mut rows = Vec::new();
    for json in registry.shared_tokens().await? {
        let Ok(t) = serde_json::from_str::<SharedToken>(&json) else {
            warn!("a shared token record does not decode; skipped");
            continue;
        };
        let Some(hash) = hex::decode(&t.hash).ok().and_then(|h| <[u8; 32]>::try_from(h).ok()) else {
            warn!(id = %t.info.id, "a shared token record has no valid hash; skipped");
            continue;
        };
        rows.push(TokenRow { info: t.info, hash });
    }
    Ok(rows)
}

async fn put_shared(registry: &dyn Registry, row: &TokenRow) -> Result<(), ApiError> {
    let json = serde_json::to_string(&SharedToken { info: row.info.clone(), hash: hex::encode(row.hash) })
        .map_err(ApiError::internal)?;
    registry.put_token(&row.info.id, &json).await.map_err(crate::cluster::im::registry_error)
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

    async fn create(access: &Access, role: Role, customer: Option<&str>) -> CreatedToken {
        let req = CreateToken { role, customer: customer.map(str::to_string), name: None, expires_at: None };
        access.create(&req).await.unwrap()
    }

    #[tokio::test]
    async fn tokens_verify_until_revoked_and_are_stored_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let access = Access::open(AuthMode::Tokens, Some(dir.path())).unwrap();
        let t = create(&access, Role::Customer, Some("acme")).await;
        let validity = access.validity(&t.info.id);
        assert_eq!(validity.state(), None);
        assert!(t.token.starts_with("lido_") && t.token.len() == 5 + 64);
        let caller = access.verify(&t.token).unwrap().unwrap();
        assert_eq!(caller.customer().unwrap(), "acme");
        assert!(caller.require_operator().is_err());
        assert!(access.verify("lido_nope").is_none());
        let raw = std::fs::read(dir.path().join("auth.sqlite")).unwrap();
        assert!(!raw.windows(t.token.len()).any(|w| w == t.token.as_bytes()), "the secret itself is not stored");
        access.revoke(&t.info.id).await.unwrap();
        assert_eq!(access.verify(&t.token).unwrap().unwrap_err().code, "unauthorized");
        assert_eq!(validity.state(), Some(Ended::Revoked), "what the token opened ends with it");
        assert_eq!(access.validity(&t.info.id).state(), Some(Ended::Revoked));
        // A restart keeps the revocation.
        drop(access);
        let again = Access::open(AuthMode::Tokens, Some(dir.path())).unwrap();
        assert!(again.verify(&t.token).unwrap().is_err());
    }

    #[tokio::test]
    async fn bad_token_requests_are_refused() {
        let access = Access::open(AuthMode::Open, None).unwrap();
        let no_customer = CreateToken { role: Role::Customer, customer: None, name: None, expires_at: None };
        assert_eq!(access.create(&no_customer).await.unwrap_err().code, "invalid_request");
        let op_customer =
            CreateToken { role: Role::Operator, customer: Some("acme".into()), name: None, expires_at: None };
        assert_eq!(access.create(&op_customer).await.unwrap_err().code, "invalid_request");
        let past = CreateToken {
            role: Role::Customer,
            customer: Some("acme".into()),
            name: None,
            expires_at: Some(Utc::now() - chrono::TimeDelta::seconds(1)),
        };
        let e = access.create(&past).await.unwrap_err();
        assert!(e.code == "invalid_request" && e.message.contains("not in the future"), "{}", e.message);
        assert_eq!(access.revoke("t-missing").await.unwrap_err().code, "unknown_token");
        assert!(access.list().is_empty(), "refused requests create nothing");
    }

    #[tokio::test]
    async fn tokens_expire_and_what_they_opened_ends_then() {
        let dir = tempfile::tempdir().unwrap();
        let access = Access::open(AuthMode::Tokens, Some(dir.path())).unwrap();
        let at = Utc::now() + chrono::TimeDelta::milliseconds(300);
        let req = CreateToken { role: Role::Customer, customer: Some("acme".into()), name: None, expires_at: Some(at) };
        let t = access.create(&req).await.unwrap();
        assert_eq!(t.info.expires_at, Some(at));
        assert!(access.verify(&t.token).unwrap().is_ok(), "good until it expires");
        let validity = access.validity(&t.info.id);
        assert_eq!(validity.check().map_err(|e| e.code), Ok(()));
        std::thread::sleep(std::time::Duration::from_millis(350));
        let e = access.verify(&t.token).unwrap().unwrap_err();
        assert!(e.code == "unauthorized" && e.message.contains("expired"), "{}", e.message);
        assert_eq!(validity.ended().await, Ended::Expired);
        assert_eq!(validity.check().unwrap_err().code, "unauthorized");
        // A restart keeps the expiry.
        drop(access);
        let again = Access::open(AuthMode::Tokens, Some(dir.path())).unwrap();
        assert_eq!(again.list()[0].expires_at.map(|t| t.timestamp_millis()), Some(at.timestamp_millis()));
        assert!(again.verify(&t.token).unwrap().is_err());
    }

    #[tokio::test]
    async fn bootstrap_writes_one_operator_token_once() {
        let dir = tempfile::tempdir().unwrap();
        let access = Access::open(AuthMode::Tokens, Some(dir.path())).unwrap();
        let path = access.bootstrap(dir.path()).await.unwrap().unwrap();
        let token = std::fs::read_to_string(&path).unwrap();
        assert!(access.verify(token.trim()).unwrap().unwrap().is_operator());
        assert!(access.bootstrap(dir.path()).await.unwrap().is_none());
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
