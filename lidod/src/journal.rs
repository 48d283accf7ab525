//! The durable order journal: every order, every change of an order and
//! every fill, in an embedded SQLite database (`<data_dir>/journal.sqlite`).
//!
//! The [`OrderStore`](crate::markets::OrderStore) writes here *before* it
//! changes its in-memory view, before the algo gets an answer and before an
//! order leaves for the venue; on start the node reads its orders and fills
//! back from here, then reconciles them with each venue.
//!
//! Durability settings, and why:
//! - `journal_mode = WAL`: a writer never blocks readers, and a commit is one
//!   append to the write-ahead log instead of a rewrite of pages.
//! - `synchronous = FULL` (the default, [`Synchronous`]): a durable commit
//!   is fsynced before it returns, so an acknowledged order survives a power
//!   cut, not only a `kill -9`. The cost is one fsync per change (the
//!   `journal_bench` example measures it; see README). `NORMAL` is offered
//!   for slow disks: in WAL mode it still survives a crash of the process,
//!   but the last commits may be lost with the machine's power.
//! - Two kinds of commit ([`Durability`]): an order's *intent* (the row
//!   written before it is sent, with its client order id and broker) and
//!   every change Lido decides on its own (a rejection, a lost order, an
//!   annotation, an adopted order) wait for the fsync. A change that merely
//!   records what the venue said (its acknowledgement, venue order id,
//!   status, fills: [`Durability::Venue`]) is committed to the WAL without
//!   waiting for the fsync. It is still written before it is shown, so it
//!   survives a `kill -9` of lidod (the OS holds the write); only a power
//!   cut can lose it, and then only together with every later commit (the
//!   WAL is one append-only file: the next fsynced commit makes all earlier
//!   ones durable, so nothing is lost out of order). What such a loss leaves
//!   is an order the journal knows, at its venue, in an earlier state:
//!   exactly what reconciliation repairs on the next connection (status
//!   and filled quantity from the venue, looked up by Lido's order id). This
//!   halves the fsyncs on the order path (one per order instead of two);
//!   the bench's `journal_synchronous = "normal"` row shows what the other
//!   one costs.
//! - `busy_timeout = 5 s`: another connection (an operator's `sqlite3`)
//!   holding the lock briefly delays a write instead of failing it.
//!
//! The schema is versioned with `rusqlite_migration` (in `PRAGMA
//! user_version`); add a migration at the end of [`MIGRATIONS`], never edit one.
//! Each order row keeps indexed columns for lookups and the whole order as
//! JSON (decimals as strings, as on the API), so a new `Order` field needs no
//! migration.
//!
//! Calls are synchronous and short; the connection sits behind a std mutex
//! that is never held across an `.await`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use chrono::SecondsFormat;
use lido_shared::model::{Fill, Order};
use rusqlite::{params, Connection, OptionalExtension};
use rusqlite_migration::{Migrations, M};

/// The journal's file name inside the data dir.
pub const JOURNAL_FILE: &str = "journal.sqlite";

/// Schema versions, oldest first.
const MIGRATIONS: &[M<'static>] = &[
    M::up(
        "CREATE TABLE orders (
        order_id TEXT PRIMARY KEY,
        customer TEXT NOT NULL,
        client_order_id TEXT NOT NULL,
        market TEXT NOT NULL,
        broker TEXT,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        body TEXT NOT NULL,
        UNIQUE (customer, client_order_id)
    );
    CREATE INDEX orders_status ON orders (status);
    CREATE TABLE order_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        order_id TEXT NOT NULL REFERENCES orders (order_id),
        status TEXT NOT NULL,
        reason TEXT,
        at TEXT NOT NULL
    );
    CREATE INDEX order_events_order ON order_events (order_id);
    CREATE TABLE fills (
        fill_id TEXT PRIMARY KEY,
        order_id TEXT NOT NULL REFERENCES orders (order_id),
        customer TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX fills_customer ON fills (customer);",
    ),
    // 2: no query reads orders by status (the node loads every order at start),
    // so that index was one more page written by every intent and every status
    // change, on the order path.
    M::up("DROP INDEX orders_status;"),
];

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot create the data dir {path}: {source}; create it or pass another with --data-dir")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("the order journal failed: {0}; check the data dir's disk space and permissions")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the order journal's schema cannot be migrated: {0}; restore a backup or use a fresh data dir")]
    Migration(#[from] rusqlite_migration::Error),
    #[error("the order journal holds a record it cannot read: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("client order id {client_order_id:?} is already used by customer {customer:?}")]
    Duplicate { customer: String, client_order_id: String },
}

/// How hard a commit waits for the disk (`PRAGMA synchronous`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Synchronous {
    /// fsync on every commit: survives power loss.
    #[default]
    Full,
    /// fsync at checkpoints only: survives a process crash, not power loss.
    Normal,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Self::Full => "FULL",
            Self::Normal => "NORMAL",
        }
    }
}

/// How a commit waits for the disk, per change: see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Lido's own decision: fsynced (with [`Synchronous::Full`]) before the
    /// call returns.
    Own,
    /// What the venue said, which reconciliation can ask it again: written
    /// to the WAL (survives a process kill), fsynced with the next durable
    /// commit or checkpoint.
    Venue,
}

/// What the journal holds, read back at start.
#[derive(Debug, Default)]
pub struct Replay {
    /// Every order, oldest first.
    pub orders: Vec<Order>,
    /// Every fill with its customer, in the order they were booked.
    pub fills: Vec<(String, Fill)>,
}

pub struct Journal {
    conn: Mutex<Conn>,
    /// The configured level, used for intents and [`Durability::Own`].
    synchronous: Synchronous,
}

/// The connection and the `synchronous` level it is set to now, so a
/// commit changes the pragma only when its durability differs from the
/// last one's.
struct Conn {
    db: Connection,
    level: Option<Synchronous>,
}

impl Journal {
    /// Opens (creating if needed) the journal in `data_dir` and migrates it,
    /// with `synchronous = FULL`.
    pub fn open(data_dir: &Path) -> Result<Self, JournalError> {
        Self::open_with(data_dir, Synchronous::Full)
    }

    /// [`Self::open`] with a chosen [`Synchronous`].
    pub fn open_with(data_dir: &Path, synchronous: Synchronous) -> Result<Self, JournalError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|source| JournalError::DataDir { path: data_dir.to_path_buf(), source })?;
        let mut conn = Connection::open(data_dir.join(JOURNAL_FILE))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", synchronous.pragma())?;
        Self::prepare(&mut conn)?;
        Ok(Self { conn: Mutex::new(Conn { db: conn, level: Some(synchronous) }), synchronous })
    }

    /// A journal that lives in memory, for unit tests.
    pub fn in_memory() -> Result<Self, JournalError> {
        let mut conn = Connection::open_in_memory()?;
        Self::prepare(&mut conn)?;
        Ok(Self { conn: Mutex::new(Conn { db: conn, level: None }), synchronous: Synchronous::Full })
    }

    fn prepare(conn: &mut Connection) -> Result<(), JournalError> {
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Migrations::from_slice(MIGRATIONS).to_latest(conn)?;
        Ok(())
    }

    /// Records a new order (its intent, before it is sent). A second order
    /// with the same (customer, client order id) is refused.
    pub fn insert_order(&self, order: &Order) -> Result<(), JournalError> {
        timed("intent", || self.insert_order_now(order))
    }

    fn insert_order_now(&self, order: &Order) -> Result<(), JournalError> {
        let body = serde_json::to_string(order)?;
        let mut conn = self.lock_for(Durability::Own)?;
        let tx = conn.db.transaction()?;
        let inserted = tx.prepare_cached(
            "INSERT INTO orders (order_id, customer, client_order_id, market, broker, status, created_at, updated_at, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (customer, client_order_id) DO NOTHING",
        )?.execute(
            params![
                order.order_id,
                order.customer,
                order.client_order_id,
                order.market,
                order.broker,
                order.status.as_str(),
                order.created_at.to_rfc3339_opts(SecondsFormat::Micros, true),
                order.updated_at.to_rfc3339_opts(SecondsFormat::Micros, true),
                body
            ],
        )?;
        if inserted == 0 {
            return Err(JournalError::Duplicate {
                customer: order.customer.clone(),
                client_order_id: order.client_order_id.clone(),
            });
        }
        insert_event(&tx, order)?;
        tx.commit()?;
        Ok(())
    }

    /// Records an order's new state, and the fill that moved it if any, in
    /// one transaction, as durable as `durability` asks.
    pub fn update_order(&self, order: &Order, fill: Option<&Fill>, durability: Durability) -> Result<(), JournalError> {
        let kind = match durability {
            Durability::Own => "own",
            Durability::Venue => "venue",
        };
        timed(kind, || self.update_order_now(order, fill, durability))
    }

    fn update_order_now(&self, order: &Order, fill: Option<&Fill>, durability: Durability) -> Result<(), JournalError> {
        let body = serde_json::to_string(order)?;
        let fill_body = fill.map(serde_json::to_string).transpose()?;
        let mut conn = self.lock_for(durability)?;
        let tx = conn.db.transaction()?;
        tx.prepare_cached(
            "UPDATE orders SET broker = ?2, status = ?3, updated_at = ?4, body = ?5 WHERE order_id = ?1",
        )?
        .execute(params![
            order.order_id,
            order.broker,
            order.status.as_str(),
            order.updated_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            body
        ])?;
        if let (Some(fill), Some(fill_body)) = (fill, fill_body) {
            tx.prepare_cached("INSERT INTO fills (fill_id, order_id, customer, body) VALUES (?1, ?2, ?3, ?4)")?
                .execute(params![fill.fill_id, fill.order_id, order.customer, fill_body])?;
        }
        insert_event(&tx, order)?;
        tx.commit()?;
        Ok(())
    }

    /// Reads every order and fill back.
    pub fn replay(&self) -> Result<Replay, JournalError> {
        let conn = self.lock();
        let mut replay = Replay::default();
        let mut stmt = conn.db.prepare("SELECT body FROM orders ORDER BY created_at, order_id")?;
        for body in stmt.query_map([], |r| r.get::<_, String>(0))? {
            replay.orders.push(serde_json::from_str(&body?)?);
        }
        let mut stmt = conn.db.prepare("SELECT customer, body FROM fills ORDER BY rowid")?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            let (customer, body) = row?;
            replay.fills.push((customer, serde_json::from_str(&body)?));
        }
        Ok(replay)
    }

    /// One order as journaled (for tests and tools).
    pub fn order(&self, order_id: &str) -> Result<Option<Order>, JournalError> {
        let conn = self.lock();
        let body: Option<String> =
            conn.db.query_row("SELECT body FROM orders WHERE order_id = ?1", [order_id], |r| r.get(0)).optional()?;
        Ok(body.map(|b| serde_json::from_str(&b)).transpose()?)
    }

    /// The connection, set to commit as `durability` asks (the pragma is
    /// per connection and cannot change inside a transaction).
    fn lock_for(&self, durability: Durability) -> Result<std::sync::MutexGuard<'_, Conn>, JournalError> {
        let level = match durability {
            Durability::Own => self.synchronous,
            Durability::Venue => Synchronous::Normal,
        };
        let mut conn = self.lock();
        if conn.level != Some(level) {
            // Unknown after a failed change: set again next time.
            conn.level = None;
            conn.db.pragma_update(None, "synchronous", level.pragma())?;
            conn.level = Some(level);
        }
        Ok(conn)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Conn> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs one commit and records `lido_journal_commit_seconds{kind}`: from
/// asking for the connection to the commit's return, its fsync included
/// when it waits for one. `kind` is `intent` (a new order, before it is
/// sent), `own` (Lido's own decision) or `venue` (what a venue said).
fn timed<T>(kind: &'static str, commit: impl FnOnce() -> Result<T, JournalError>) -> Result<T, JournalError> {
    let started = std::time::Instant::now();
    let result = commit();
    metrics::histogram!("lido_journal_commit_seconds", "kind" => kind).record(started.elapsed().as_secs_f64());
    result
}

/// Appends one line of an order's history.
fn insert_event(tx: &rusqlite::Transaction<'_>, order: &Order) -> rusqlite::Result<usize> {
    tx.prepare_cached("INSERT INTO order_events (order_id, status, reason, at) VALUES (?1, ?2, ?3, ?4)")?.execute(
        params![
            order.order_id,
            order.status.as_str(),
            order.reason,
            order.updated_at.to_rfc3339_opts(SecondsFormat::Micros, true)
        ],
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use chrono::Utc;
    use lido_shared::model::{OrderStatus, OrderType, Side, Symbol, TimeInForce};
    use rust_decimal::Decimal;
    use rust_decimal_macros::dec;

    use super::*;

    pub(crate) fn order(id: &str, client: &str) -> Order {
        let now = Utc::now();
        Order {
            order_id: id.into(),
            client_order_id: client.into(),
            customer: "acme".into(),
            market: "paper".into(),
            symbol: Symbol::parse("BTC/USD").unwrap(),
            side: Side::Buy,
            order_type: OrderType::Limit,
            time_in_force: TimeInForce::Gtc,
            quantity: dec!(1),
            limit_price: Some(dec!(100.5)),
            filled_quantity: Decimal::ZERO,
            average_price: None,
            status: OrderStatus::New,
            reason: None,
            broker: Some("paper-1".into()),
            venue_order_id: None,
            adopted: false,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn orders_and_fills_survive_a_reopen_with_exact_decimals() {
        let dir = std::env::temp_dir().join(format!("lido-journal-test-{}", uuid::Uuid::new_v4().simple()));
        let mut o = order("o1", "c1");
        {
            let j = Journal::open(&dir).unwrap();
            j.insert_order(&o).unwrap();
            let fill = Fill {
                fill_id: "F-1".into(),
                order_id: "o1".into(),
                symbol: o.symbol.clone(),
                side: Side::Buy,
                price: dec!(100.25),
                quantity: dec!(0.4),
                fee: dec!(0.0401),
                ts: Utc::now(),
            };
            o.apply_fill(&fill).unwrap();
            j.update_order(&o, Some(&fill), Durability::Venue).unwrap();
        }
        let j = Journal::open(&dir).unwrap();
        let replay = j.replay().unwrap();
        assert_eq!(replay.orders, vec![o.clone()]);
        assert_eq!(replay.fills.len(), 1);
        assert_eq!(replay.fills[0].1.price, dec!(100.25));
        let mode: String = j.lock().db.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        let sync = |d| -> i64 { j.lock_for(d).unwrap().db.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap() };
        assert_eq!(sync(Durability::Own), 2, "Lido's own changes: synchronous = FULL");
        assert_eq!(sync(Durability::Venue), 1, "the venue's answers: synchronous = NORMAL");
        assert_eq!(sync(Durability::Own), 2, "and back: the level is set whenever it differs");
        drop(j);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_client_order_id_is_unique_per_customer() {
        let j = Journal::in_memory().unwrap();
        j.insert_order(&order("o1", "c1")).unwrap();
        let again = j.insert_order(&order("o2", "c1"));
        assert!(matches!(again, Err(JournalError::Duplicate { .. })), "{again:?}");
        let mut other = order("o3", "c1");
        other.customer = "zeta".into();
        j.insert_order(&other).unwrap();
        assert_eq!(j.replay().unwrap().orders.len(), 2);
        assert!(j.order("o2").unwrap().is_none());
    }

    #[test]
    fn every_state_change_is_a_history_line() {
        let j = Journal::in_memory().unwrap();
        let mut o = order("o1", "c1");
        j.insert_order(&o).unwrap();
        o.transition(OrderStatus::Accepted, Utc::now()).unwrap();
        j.update_order(&o, None, Durability::Own).unwrap();
        o.transition(OrderStatus::Canceled, Utc::now()).unwrap();
        j.update_order(&o, None, Durability::Own).unwrap();
        let statuses: Vec<String> = j
            .lock()
            .db
            .prepare("SELECT status FROM order_events WHERE order_id = 'o1' ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(statuses, ["new", "accepted", "canceled"]);
        assert_eq!(j.order("o1").unwrap().unwrap().status, OrderStatus::Canceled);
    }

    #[test]
    fn a_journal_of_the_first_schema_is_migrated_with_its_orders() {
        let dir = std::env::temp_dir().join(format!("lido-journal-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        {
            // A journal as the first release wrote it, with one order.
            let mut db = Connection::open(dir.join(JOURNAL_FILE)).unwrap();
            Migrations::from_slice(&MIGRATIONS[..1]).to_latest(&mut db).unwrap();
            let o = order("o1", "c1");
            let created = o.created_at.to_rfc3339_opts(SecondsFormat::Micros, true);
            db.execute(
                "INSERT INTO orders VALUES ('o1', 'acme', 'c1', 'paper', 'paper-1', 'new', ?1, ?1, ?2)",
                params![created, serde_json::to_string(&o).unwrap()],
            )
            .unwrap();
        }
        let j = Journal::open(&dir).unwrap();
        assert_eq!(j.replay().unwrap().orders.len(), 1, "the order is kept");
        let indexes: i64 = j
            .lock()
            .db
            .query_row("SELECT count(*) FROM sqlite_master WHERE name = 'orders_status'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(indexes, 0, "the unread status index is gone");
        j.insert_order(&order("o2", "c2")).unwrap();
        drop(j);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn migrations_are_valid() {
        Migrations::from_slice(MIGRATIONS).validate().unwrap();
    }
}
