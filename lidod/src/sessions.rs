//! Algo sessions: a bearer token that names the customer.
//!
//! Session ids are random and live in memory; they last while the node runs
//! and end when the API token that opened them is revoked or expires (a
//! session carries its token's expiry; an IM that revokes a token tells
//! every node to close its sessions). Each session holds a
//! [`Validity`]: its streams end the moment it does. The durable, hashed
//! customer and operator tokens are in [`crate::auth`].
//!
//! Each session remembers the market instance it was assigned when opened
//! (see `markets/instances.rs`): its algo streams join that instance.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use lido_shared::api::Session;
use lido_shared::cluster::SessionInfo;

use crate::auth::Validity;
use crate::error::ApiError;

/// A session, when it was opened, and by which API token (if any).
struct Entry {
    session: Session,
    at: DateTime<Utc>,
    opened_by: Option<String>,
    /// The market instance its streams join.
    instance: Option<u32>,
    /// Ends when the session is closed or its token's expiry passes.
    validity: Validity,
}

/// What a session id stands for.
pub struct SessionAuth {
    pub customer: String,
    /// The API token that opened it, if any.
    pub opened_by: Option<String>,
    pub validity: Validity,
}

#[derive(Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<HashMap<String, Entry>>>,
}

impl Sessions {
    pub fn open(&self, customer: &str, node: &str, api_url: &str) -> Session {
        self.open_by(customer, node, api_url, None)
    }

    /// Opens a session that ends when the token `opened_by` is revoked.
    pub fn open_by(&self, customer: &str, node: &str, api_url: &str, opened_by: Option<&str>) -> Session {
        self.open_until(customer, node, api_url, opened_by, Validity::default())
    }

    /// Opens a session that ends with `validity` (its token's), or sooner
    /// when it is closed.
    pub fn open_until(
        &self,
        customer: &str,
        node: &str,
        api_url: &str,
        opened_by: Option<&str>,
        validity: Validity,
    ) -> Session {
        let session = Session {
            session_id: format!("s-{}", uuid::Uuid::new_v4().simple()),
            customer: customer.to_string(),
            node: node.to_string(),
            market_manager_url: api_url.to_string(),
            trader_manager_url: api_url.to_string(),
        };
        let entry = Entry {
            session: session.clone(),
            at: Utc::now(),
            opened_by: opened_by.map(str::to_string),
            instance: None,
            validity: validity.child(),
        };
        self.lock().insert(session.session_id.clone(), entry);
        session
    }

    /// The session's customer, the token that opened it and how long it
    /// stays good.
    pub fn customer_of(&self, token: &str) -> Option<SessionAuth> {
        self.lock().get(token).map(|e| SessionAuth {
            customer: e.session.customer.clone(),
            opened_by: e.opened_by.clone(),
            validity: e.validity.clone(),
        })
    }

    /// Gives the session `token` an expiry (its token's, when an IM opened it).
    pub fn set_expiry(&self, token: &str, expires_at: DateTime<Utc>) {
        if let Some(e) = self.lock().get_mut(token) {
            let sooner = e.validity.expires_at().map_or(expires_at, |at| at.min(expires_at));
            e.validity = crate::auth::Validity::new(e.validity.revoked_token(), Some(sooner));
        }
    }

    /// Records the market instance the session was assigned.
    pub fn set_instance(&self, token: &str, instance: u32) {
        if let Some(e) = self.lock().get_mut(token) {
            e.instance = Some(instance);
        }
    }

    /// The market instance of the session `token`, if it is one and has one.
    pub fn instance_of(&self, token: &str) -> Option<u32> {
        self.lock().get(token)?.instance
    }

    pub fn count_for(&self, customer: &str) -> usize {
        let mut map = self.lock();
        prune(&mut map);
        map.values().filter(|e| e.session.customer == customer).count()
    }

    /// Ends every session opened by `token_id`, and their streams; returns
    /// how many.
    pub fn close_opened_by(&self, token_id: &str) -> usize {
        let mut map = self.lock();
        let before = map.len();
        map.retain(|_, e| {
            let keep = e.opened_by.as_deref() != Some(token_id);
            if !keep {
                e.validity.end();
            }
            keep
        });
        before - map.len()
    }

    /// Every live session, oldest first, tokens shortened to 10 characters.
    pub fn list(&self) -> Vec<SessionInfo> {
        let mut map = self.lock();
        prune(&mut map);
        let mut out: Vec<SessionInfo> = map
            .values()
            .map(|e| SessionInfo {
                id: e.session.session_id.chars().take(10).collect(),
                customer: e.session.customer.clone(),
                node: e.session.node.clone(),
                created_at: e.at,
            })
            .collect();
        out.sort_by_key(|s| s.created_at);
        out
    }

    pub fn count(&self) -> usize {
        let mut map = self.lock();
        prune(&mut map);
        map.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Forgets sessions that ended (their token expired).
fn prune(map: &mut HashMap<String, Entry>) {
    map.retain(|_, e| e.validity.state().is_none());
}

/// Customer names: 1-64 of `A-Z a-z 0-9 - _ .`.
pub fn validate_customer(customer: &str) -> Result<(), ApiError> {
    let ok = !customer.is_empty()
        && customer.len() <= 64
        && customer.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request("invalid_customer", "customer must be 1-64 characters of A-Z a-z 0-9 - _ ."))
    }
}
