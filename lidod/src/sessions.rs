//! Algo sessions: a bearer token that names the customer.
//!
//! Tokens are random and live in memory; durable, hashed customer and
//! operator tokens come with the security work (see DESIGN.md, Safety).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use lido_shared::api::Session;
use lido_shared::cluster::SessionInfo;

use crate::error::ApiError;

/// A session and when it was opened.
type Entry = (Session, DateTime<Utc>);

#[derive(Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<HashMap<String, Entry>>>,
}

impl Sessions {
    pub fn open(&self, customer: &str, node: &str, api_url: &str) -> Session {
        let session = Session {
            session_id: format!("s-{}", uuid::Uuid::new_v4().simple()),
            customer: customer.to_string(),
            node: node.to_string(),
            market_manager_url: api_url.to_string(),
            trader_manager_url: api_url.to_string(),
        };
        self.lock().insert(session.session_id.clone(), (session.clone(), Utc::now()));
        session
    }

    pub fn customer_of(&self, token: &str) -> Option<String> {
        self.lock().get(token).map(|(s, _)| s.customer.clone())
    }

    /// Every session, oldest first, tokens shortened to 10 characters.
    pub fn list(&self) -> Vec<SessionInfo> {
        let mut out: Vec<SessionInfo> = self
            .lock()
            .values()
            .map(|(s, at)| SessionInfo {
                id: s.session_id.chars().take(10).collect(),
                customer: s.customer.clone(),
                node: s.node.clone(),
                created_at: *at,
            })
            .collect();
        out.sort_by_key(|s| s.created_at);
        out
    }

    pub fn count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
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
