//! Which Schwab order each Lido order is, kept in a file (`orders_file`)
//! so that a restarted broker still knows its orders.
//!
//! Schwab's orders carry no client order id: the only link from Lido's id
//! to Schwab's is what the broker remembers. Each order is recorded before
//! it is sent (Lido's order, the exact order JSON and the time), completed
//! with Schwab's order id once the `Location` header (or a lookup) gives it,
//! and marked closed once Schwab reports it ended. An entry still without
//! Schwab's id after a restart is a send whose outcome is unknown: the
//! broker looks it up among the account's recent orders by what was sent
//! ([`super::orders::same_order`]) before anything else, never sends it again.
//!
//! Every change rewrites the file atomically ([`file::replace`]) before the
//! call returns. Closed orders are kept [`KEEP_CLOSED`], so that a report
//! lost in a crash can still be asked for, then dropped.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeDelta, Utc};
use lido_shared::pipe::VenueOrder;
use serde::{Deserialize, Serialize};

use super::error::SchwabError;
use super::wire::OrderRequest;
use crate::venue::file;

/// How long an ended order stays in the file.
pub const KEEP_CLOSED: TimeDelta = TimeDelta::days(7);

/// One Lido order sent (or about to be sent) to Schwab.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MappedOrder {
    /// Lido's order as the broker got it: its id, the customer's account, what was asked.
    pub order: VenueOrder,
    /// The order JSON sent: what finds the order again if Schwab's answer was lost.
    pub request: OrderRequest,
    pub sent_at: DateTime<Utc>,
    /// Schwab's order id, once known.
    #[serde(default)]
    pub schwab_id: Option<i64>,
    /// When the broker saw the order end at Schwab.
    #[serde(default)]
    pub closed_at: Option<DateTime<Utc>>,
}

/// The file's contents.
#[derive(Default, Serialize, Deserialize)]
struct Saved {
    orders: Vec<MappedOrder>,
}

/// The map, in memory and on disk (every change is written before it returns).
#[derive(Debug)]
pub struct OrderMap {
    path: PathBuf,
    orders: BTreeMap<String, MappedOrder>,
}

impl OrderMap {
    /// Reads the map at `path`; no file yet is an empty map.
    pub fn load(path: &Path) -> Result<Self, SchwabError> {
        let saved: Saved = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                SchwabError::Config(format!(
                    "the Schwab orders file {} is unreadable ({e}); it maps Lido's orders to Schwab's: \
                     restore it, or move it away to start without (orders placed before would be unknown)",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Saved::default(),
            Err(e) => {
                return Err(SchwabError::Config(format!("cannot read the Schwab orders file {}: {e}", path.display())))
            }
        };
        let orders = saved.orders.into_iter().map(|o| (o.order.client_id.clone(), o)).collect();
        Ok(Self { path: path.to_path_buf(), orders })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self, client_id: &str) -> Option<&MappedOrder> {
        self.orders.get(client_id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &MappedOrder> {
        self.orders.values()
    }

    /// Records an order about to be sent. On a write error nothing is
    /// recorded, and the order must not be sent.
    pub fn record(&mut self, entry: MappedOrder) -> io::Result<()> {
        let id = entry.order.client_id.clone();
        let before = self.orders.insert(id.clone(), entry);
        let saved = self.save();
        if saved.is_err() {
            match before {
                Some(b) => self.orders.insert(id, b),
                None => self.orders.remove(&id),
            };
        }
        saved
    }

    /// Notes Schwab's id for an order.
    pub fn set_schwab_id(&mut self, client_id: &str, schwab_id: i64) -> io::Result<()> {
        self.change(client_id, |o| o.schwab_id = Some(schwab_id))
    }

    /// Notes that an order ended at Schwab, and drops orders ended more
    /// than [`KEEP_CLOSED`] before `now`.
    pub fn close(&mut self, client_id: &str, now: DateTime<Utc>) -> io::Result<()> {
        self.orders.retain(|_, o| o.closed_at.is_none_or(|at| now - at < KEEP_CLOSED));
        self.change(client_id, |o| o.closed_at = Some(now))
    }

    /// Forgets an order Schwab surely does not have.
    pub fn remove(&mut self, client_id: &str) -> io::Result<()> {
        if self.orders.remove(client_id).is_none() {
            return Ok(());
        }
        self.save()
    }

    fn change(&mut self, client_id: &str, f: impl FnOnce(&mut MappedOrder)) -> io::Result<()> {
        let Some(o) = self.orders.get_mut(client_id) else { return Ok(()) };
        f(o);
        self.save()
    }

    fn save(&self) -> io::Result<()> {
        let saved = Saved { orders: self.orders.values().cloned().collect() };
        let bytes = serde_json::to_vec_pretty(&saved).map_err(io::Error::other)?;
        file::replace(&self.path, &bytes, file::Access::Default)
    }
}

#[cfg(test)]
mod tests {
    use lido_shared::model::{OrderType, Side, Symbol, TimeInForce};
    use rust_decimal_macros::dec;

    use super::*;
    use crate::venue::schwab::hours::Session;
    use crate::venue::schwab::orders;

    fn entry(client_id: &str, sent_at: DateTime<Utc>) -> MappedOrder {
        let order = VenueOrder {
            client_id: client_id.into(),
            account: "acme".into(),
            symbol: Symbol::parse("AAPL").unwrap(),
            side: Side::Buy,
            order_type: OrderType::Limit,
            time_in_force: TimeInForce::Day,
            quantity: dec!(10),
            limit_price: Some(dec!(150)),
            client_order_id: None,
        };
        let request = orders::request(&order, Session::Normal, rust_decimal::Decimal::ZERO).unwrap();
        MappedOrder { order, request, sent_at, schwab_id: None, closed_at: None }
    }

    fn temp_path() -> PathBuf {
        std::env::temp_dir().join(format!("lido-schwab-map-{}", uuid::Uuid::new_v4().simple())).join("s1.orders.json")
    }

    #[test]
    fn every_change_survives_a_reload() {
        let path = temp_path();
        let now = Utc::now();
        let mut map = OrderMap::load(&path).unwrap();
        assert_eq!(map.iter().count(), 0, "no file yet: an empty map");
        map.record(entry("o-1", now)).unwrap();
        map.record(entry("o-2", now)).unwrap();
        let pending = OrderMap::load(&path).unwrap();
        assert_eq!(pending.get("o-1"), Some(&entry("o-1", now)), "recorded before Schwab's id is known");
        map.set_schwab_id("o-1", 1_000_101).unwrap();
        map.close("o-1", now).unwrap();
        map.remove("o-2").unwrap();
        let reloaded = OrderMap::load(&path).unwrap();
        let o1 = reloaded.get("o-1").unwrap();
        assert_eq!((o1.schwab_id, o1.closed_at), (Some(1_000_101), Some(now)));
        assert!(reloaded.get("o-2").is_none());
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn closed_orders_are_dropped_after_a_week() {
        let path = temp_path();
        let start: DateTime<Utc> = "2026-12-01T15:00:00Z".parse().unwrap();
        let mut map = OrderMap::load(&path).unwrap();
        map.record(entry("old", start)).unwrap();
        map.record(entry("open", start)).unwrap();
        map.record(entry("new", start)).unwrap();
        map.close("old", start).unwrap();
        map.close("new", start + KEEP_CLOSED).unwrap();
        let kept: Vec<_> = OrderMap::load(&path).unwrap().iter().map(|o| o.order.client_id.clone()).collect();
        assert_eq!(kept, ["new", "open"], "the open order stays however old");
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn an_unreadable_file_stops_the_broker_with_what_to_do() {
        let path = temp_path();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "{").unwrap();
        let e = OrderMap::load(&path).unwrap_err().to_string();
        assert!(e.contains("unreadable") && e.contains("move it away"), "{e}");
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_failed_write_records_nothing() {
        let dir = temp_path();
        std::fs::create_dir_all(&dir).unwrap();
        // The file's path is a folder: it cannot be replaced.
        let mut map = OrderMap { path: dir.clone(), orders: BTreeMap::new() };
        assert!(map.record(entry("o-1", Utc::now())).is_err());
        assert!(map.get("o-1").is_none());
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }
}
