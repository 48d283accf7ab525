//! The durable side of access control: API tokens (hashed) and the audit
//! log, in one SQLite file `<data_dir>/auth.sqlite` (in memory when the node
//! has no data dir). Schema changes are numbered migrations on
//! `PRAGMA user_version`.

use std::path::Path;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use lido_shared::access::{AuditRecord, Role, TokenInfo};
use rusqlite::{params, Connection, OptionalExtension};

/// Migrations, in order; `user_version` is how many have run.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        hash BLOB NOT NULL UNIQUE,
        role TEXT NOT NULL,
        customer TEXT,
        name TEXT,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    );
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        ts TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        result TEXT NOT NULL,
        detail TEXT
    );
    CREATE INDEX audit_ts ON audit (ts);",
    // Optional expiry (issue 20): NULL means until revoked.
    "ALTER TABLE tokens ADD COLUMN expires_at TEXT;",
];

#[derive(Debug, thiserror::Error)]
#[error("auth store: {0}")]
pub struct StoreError(#[from] rusqlite::Error);

/// A token as stored: its listing and the SHA-256 of its secret.
#[derive(Clone, Debug)]
pub struct TokenRow {
    pub info: TokenInfo,
    pub hash: [u8; 32],
}

/// The SQLite connection. Calls are short and rare (token changes, operator
/// actions); token checks are served from memory by [`super::Access`].
pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating, 0600) `path`, or an in-memory database for `None`.
    pub fn open(path: Option<&Path>) -> Result<Self, StoreError> {
        let conn = match path {
            Some(p) => {
                let conn = Connection::open(p)?;
                restrict(p);
                // WAL: readers do not block the writer; FULL: a recorded token or
                // audit line survives a power cut.
                conn.pragma_update(None, "journal_mode", "WAL")?;
                conn.pragma_update(None, "synchronous", "FULL")?;
                conn
            }
            None => Connection::open_in_memory()?,
        };
        migrate(&conn)?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    pub fn insert_token(&self, row: &TokenRow) -> Result<(), StoreError> {
        let i = &row.info;
        self.conn().execute(
            "INSERT INTO tokens (id, hash, role, customer, name, created_at, revoked_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, ?7)",
            params![
                i.id,
                row.hash.as_slice(),
                i.role.as_str(),
                i.customer,
                i.name,
                i.created_at.to_rfc3339(),
                i.expires_at.map(|t| t.to_rfc3339())
            ],
        )?;
        Ok(())
    }

    pub fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, hash, role, customer, name, created_at, revoked_at, expires_at FROM tokens ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map([], |r| {
            let hash: Vec<u8> = r.get(1)?;
            let role: String = r.get(2)?;
            Ok(TokenRow {
                info: TokenInfo {
                    id: r.get(0)?,
                    role: if role == "operator" { Role::Operator } else { Role::Customer },
                    customer: r.get(3)?,
                    name: r.get(4)?,
                    created_at: time(r.get(5)?),
                    revoked_at: r.get::<_, Option<String>>(6)?.map(time),
                    expires_at: r.get::<_, Option<String>>(7)?.map(time),
                },
                hash: hash.try_into().unwrap_or([0; 32]),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks a token revoked; `false` if there is no such token.
    pub fn revoke(&self, id: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let conn = self.conn();
        let found: Option<Option<String>> =
            conn.query_row("SELECT revoked_at FROM tokens WHERE id = ?1", [id], |r| r.get(0)).optional()?;
        if found.is_none() {
            return Ok(false);
        }
        conn.execute(
            "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, at.to_rfc3339()],
        )?;
        Ok(true)
    }

    pub fn append_audit(&self, rec: &AuditRecord) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO audit (ts, actor, action, target, result, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![rec.ts.to_rfc3339(), rec.actor, rec.action, rec.target, rec.result, rec.detail],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// The newest `limit` records at or after `since`, oldest first.
    pub fn audit(&self, since: Option<DateTime<Utc>>, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT seq, ts, actor, action, target, result, detail FROM audit
             WHERE ts >= ?1 ORDER BY seq DESC LIMIT ?2",
        )?;
        let since = since.map(|t| t.to_rfc3339()).unwrap_or_default();
        let rows = stmt.query_map(params![since, limit as i64], |r| {
            Ok(AuditRecord {
                seq: r.get(0)?,
                ts: time(r.get(1)?),
                actor: r.get(2)?,
                action: r.get(3)?,
                target: r.get(4)?,
                result: r.get(5)?,
                detail: r.get(6)?,
            })
        })?;
        let mut out: Vec<AuditRecord> = rows.collect::<Result<_, _>>()?;
        out.reverse();
        Ok(out)
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let done: usize = conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
    for (n, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        conn.execute_batch(&format!("BEGIN; {sql}; PRAGMA user_version = {}; COMMIT;", n + 1))?;
    }
    Ok(())
}

/// Timestamps are stored as RFC 3339 UTC, which sorts as text.
fn time(text: String) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&text).map(|t| t.with_timezone(&Utc)).unwrap_or_default()
}

/// Owner-only permissions on a file holding secrets or their hashes.
pub fn restrict(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        tracing::warn!(path = %path.display(), error = %e, "cannot restrict file permissions to 0600");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str) -> TokenRow {
        TokenRow {
            info: TokenInfo {
                id: id.into(),
                role: Role::Customer,
                customer: Some("acme".into()),
                name: None,
                created_at: Utc::now(),
                revoked_at: None,
                expires_at: None,
            },
            hash: [7; 32],
        }
    }

    #[test]
    fn tokens_and_audit_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.sqlite");
        {
            let store = Store::open(Some(&path)).unwrap();
            store.insert_token(&row("t-1")).unwrap();
            assert!(store.revoke("t-1", Utc::now()).unwrap());
            assert!(!store.revoke("t-nope", Utc::now()).unwrap());
            let rec = AuditRecord {
                seq: 0,
                ts: Utc::now(),
                actor: "local".into(),
                action: "drain".into(),
                target: "n1".into(),
                result: "ok".into(),
                detail: None,
            };
            store.append_audit(&rec).unwrap();
        }
        let store = Store::open(Some(&path)).unwrap();
        let tokens = store.tokens().unwrap();
        assert_eq!(tokens.len(), 1);
        assert!(tokens[0].info.revoked_at.is_some());
        assert_eq!(tokens[0].hash, [7; 32]);
        let audit = store.audit(None, 10).unwrap();
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].action, "drain");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn audit_limit_keeps_the_newest_in_order() {
        let store = Store::open(None).unwrap();
        for n in 0..5 {
            let rec = AuditRecord {
                seq: 0,
                ts: Utc::now(),
                actor: "local".into(),
                action: format!("a{n}"),
                target: "x".into(),
                result: "ok".into(),
                detail: None,
            };
            store.append_audit(&rec).unwrap();
        }
        let got: Vec<String> = store.audit(None, 2).unwrap().into_iter().map(|r| r.action).collect();
        assert_eq!(got, vec!["a3", "a4"]);
    }
}
