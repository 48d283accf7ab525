//! The several-IM registry: every InfrastructureManager reads and writes the
//! same etcd cluster (cargo feature `etcd`).
//!
//! Keys under the prefix (default `/lido`):
//! - `{prefix}/nodes/{id}`: the node's [`NodeRecord`] as JSON, on a lease of
//!   its time to live that each check-in keeps alive;
//! - `{prefix}/draining/{id}`: `"1"` while the node is drained;
//! - `{prefix}/assign/{customer}`: the customer's TraderManager node, created
//!   with a compare-and-swap;
//! - `{prefix}/settings/{key}`: plain values;
//! - `{prefix}/leader`: the election name of the leader IM;
//! - `{prefix}/tokens/{id}`: an API token's listing and SHA-256 (never the
//!   secret), rewritten when it is revoked; each IM re-reads them every
//!   `auth::SHARED_SYNC`;
//! - `{prefix}/audit/{nanos}-{random}`: the audit log, one record a key.
//!
//! Every change reaches every IM through one etcd watch on the prefix (this
//! IM's own writes included), translated into [`RegistryChange`]s with the
//! same "only real changes" rule as the in-memory backend.
//!
//! Every request has a deadline: an unreachable etcd or a lost quorum is
//! [`RegistryError::Unavailable`] within seconds, never a hang.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, KeyValue, PutOptions, ResignOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use tokio::sync::{broadcast, watch};
use tokio::time::{sleep, timeout, Instant};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::registry::{NodeRecord, Registry, RegistryChange, RegistryError, RegistryResult};

/// How long connecting to an endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one registry operation may take, retries included.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// How long one attempt of it may take (a dead member's connection must not
/// use up the whole deadline: the next attempt may reach a live one).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// The election lease: a leader that cannot renew it for this long has lost.
const ELECTION_TTL_S: i64 = 3;
/// How often the election lease is renewed.
const ELECTION_RENEW: Duration = Duration::from_secs(1);
/// How long before its lease could expire a leader that cannot renew it
/// stops acting as leader.
const STEP_DOWN_MARGIN: Duration = Duration::from_millis(500);
/// Pause before re-watching, re-observing or re-campaigning after an error.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Which kind of key, relative to the prefix.
enum Key<'a> {
    Node(&'a str),
    Draining(&'a str),
    Assign(&'a str),
    Setting(&'a str),
    /// The node that may send a client order (see [`Registry::claim_order`]).
    Order(&'a str),
}

pub struct EtcdRegistry {
    client: Client,
    /// `{prefix}/`, always with one trailing slash.
    root: String,
    /// Node id → (lease id, ttl in seconds) of the lease this IM holds for it.
    leases: Arc<Mutex<HashMap<String, (i64, i64)>>>,
    changes: broadcast::Sender<RegistryChange>,
    /// Ends the watch task and the campaigns when the registry is dropped.
    shutdown: CancellationToken,
    _shutdown_guard: DropGuard,
}

fn unavailable(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Unavailable(format!("etcd: {e}; check that a majority of the etcd members is up"))
}

/// Whether another attempt may succeed (a member down, no leader yet).
fn retryable(e: &etcd_client::Error) -> bool {
    use tonic::Code;
    match e {
        etcd_client::Error::GRpcStatus(s) => matches!(
            s.code(),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown | Code::Aborted
        ),
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

fn to_registry_error(e: etcd_client::Error) -> RegistryError {
    if retryable(&e) {
        unavailable(e)
    } else {
        RegistryError::Other(format!("etcd: {e}"))
    }
}

/// Runs `op` until it succeeds, fails for good or the deadline passes.
async fn with_retry<T, F, Fut>(client: &Client, what: &str, mut op: F) -> RegistryResult<T>
where
    F: FnMut(Client) -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut last = String::from("timed out");
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(unavailable(format!("{what}: {last}")));
        }
        match timeout(left.min(ATTEMPT_TIMEOUT), op(client.clone())).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if retryable(&e) => last = e.to_string(),
            Ok(Err(e)) => return Err(RegistryError::Other(format!("etcd: {what}: {e}"))),
            Err(_) => last = format!("no answer within {} ms", ATTEMPT_TIMEOUT.as_millis()),
        }
        sleep(Duration::from_millis(100).min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

fn value_string(kv: &KeyValue) -> String {
    String::from_utf8_lossy(kv.value()).into_owned()
}

impl EtcdRegistry {
    /// Connects to the etcd cluster at `endpoints` (`http://host:port`) and
    /// starts watching `prefix`. Fails with [`RegistryError::Unavailable`]
    /// if no member answers within a few seconds.
    pub async fn connect(endpoints: &[String], prefix: &str) -> RegistryResult<Self> {
        if endpoints.is_empty() {
            return Err(RegistryError::Other(
                "no etcd endpoints given; pass --etcd URL or set [cluster] etcd_endpoints".into(),
            ));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            // A member cut off from the quorum refuses rather than serving stale reads or silent watches.
            .with_require_leader(true);
        let client = timeout(CONNECT_TIMEOUT, Client::connect(endpoints, Some(options)))
            .await
            .map_err(|_| unavailable(format!("no answer from {} within 3 s", endpoints.join(","))))?
            .map_err(to_registry_error)?;
        let root = format!("{}/", prefix.trim_end_matches('/'));
        // Learns the current revision (and that etcd answers): the watch
        // starts right after it, so changes are "from now on".
        let key = root.clone();
        let start = with_retry(&client, "connect", |mut c| {
            let key = key.clone();
            async move { c.get(key, Some(GetOptions::new().with_count_only())).await }
        })
        .await?
        .header()
        .map(|h| h.revision())
        .unwrap_or(0);
        let shutdown = CancellationToken::new();
        let changes = broadcast::channel(1024).0;
        tokio::spawn(watch_loop(client.clone(), root.clone(), start + 1, changes.clone(), shutdown.clone()));
        tracing::info!(endpoints = %endpoints.join(","), prefix = %root, "cluster registry on etcd");
        Ok(Self {
            client,
            root,
            leases: Arc::default(),
            changes,
            _shutdown_guard: shutdown.clone().drop_guard(),
            shutdown,
        })
    }

    fn key(&self, key: Key<'_>) -> String {
        match key {
            Key::Node(id) => format!("{}nodes/{id}", self.root),
            Key::Draining(id) => format!("{}draining/{id}", self.root),
            Key::Assign(c) => format!("{}assign/{c}", self.root),
            Key::Setting(k) => format!("{}settings/{k}", self.root),
            Key::Order(id) => format!("{}orders/{id}", self.root),
        }
    }

    fn leases(&self) -> MutexGuard<'_, HashMap<String, (i64, i64)>> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lease for node `id`: the one this IM holds, renewed, or a new one
    /// if it expired (or its ttl changed).
    async fn node_lease(&self, id: &str, ttl_s: i64) -> RegistryResult<i64> {
        let held = self.leases().get(id).copied();
        if let Some((lease, held_ttl)) = held {
            if held_ttl == ttl_s {
                let renewed = with_retry(&self.client, "renew node lease", |mut c| async move {
                    match c.lease_keep_alive(lease).await {
                        Ok(_) => Ok(true),
                        // The lease expired: not worth retrying, grant a new one.
                        Err(etcd_client::Error::LeaseKeepAliveError(_)) => Ok(false),
                        Err(e) => Err(e),
                    }
                })
                .await?;
                if renewed {
                    return Ok(lease);
                }
            }
        }
        let lease =
            with_retry(&self.client, "grant node lease", |mut c| async move { c.lease_grant(ttl_s, None).await })
                .await?
                .id();
        self.leases().insert(id.to_string(), (lease, ttl_s));
        Ok(lease)
    }

    async fn get_prefix(&self, dir: &str) -> RegistryResult<Vec<(String, String)>> {
        let prefix = format!("{}{dir}/", self.root);
        let p = prefix.clone();
        let resp = with_retry(&self.client, "list", |mut c| {
            let p = p.clone();
            async move { c.get(p, Some(GetOptions::new().with_prefix())).await }
        })
        .await?;
        Ok(resp
            .kvs()
            .iter()
            .map(|kv| {
                let key = String::from_utf8_lossy(kv.key());
                (key.strip_prefix(&prefix).unwrap_or(&key).to_string(), value_string(kv))
            })
            .collect())
    }

    async fn get_one(&self, key: String) -> RegistryResult<Option<String>> {
        let resp = with_retry(&self.client, "get", |mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        })
        .await?;
        Ok(resp.kvs().first().map(value_string))
    }

    async fn put(&self, key: String, value: String) -> RegistryResult<()> {
        with_retry(&self.client, "put", |mut c| {
            let (key, value) = (key.clone(), value.clone());
            async move { c.put(key, value, None).await }
        })
        .await
        .map(drop)
    }

    async fn delete(&self, key: String) -> RegistryResult<()> {
        with_retry(&self.client, "delete", |mut c| {
            let key = key.clone();
            async move { c.delete(key, None).await }
        })
        .await
        .map(drop)
    }

    /// Runs `if compare then put(key, value) else get(key)`; returns the
    /// key's value afterwards (`value` if the put ran).
    async fn cas(&self, key: String, compare: Compare, value: String) -> RegistryResult<Option<String>> {
        let resp = with_retry(&self.client, "compare-and-swap", |mut c| {
            let txn = Txn::new()
                .when([compare.clone()])
                .and_then([TxnOp::put(key.clone(), value.clone(), None)])
                .or_else([TxnOp::get(key.clone(), None)]);
            async move { c.txn(txn).await }
        })
        .await?;
        if resp.succeeded() {
            return Ok(Some(value));
        }
        Ok(resp
            .op_responses()
            .into_iter()
            .find_map(|r| match r {
                TxnOpResponse::Get(g) => Some(g.kvs().first().map(value_string)),
                _ => None,
            })
            .flatten())
    }
}

#[async_trait]
impl Registry for EtcdRegistry {
    fn backend(&self) -> &'static str {
        "etcd"
    }

    async fn check_in(&self, node: &NodeRecord, ttl: Duration) -> RegistryResult<()> {
        // etcd leases count whole seconds.
        let ttl_s = i64::try_from(ttl.as_millis().div_ceil(1000)).unwrap_or(i64::MAX).max(1);
        let id = node.info.id.as_str();
        let value = serde_json::to_string(node).map_err(|e| RegistryError::Other(format!("node record: {e}")))?;
        let key = self.key(Key::Node(id));
        let put = |lease: i64| {
            let (key, value) = (&key, &value);
            with_retry(&self.client, "check in", move |mut c| {
                let (key, value) = (key.clone(), value.clone());
                async move { c.put(key, value, Some(PutOptions::new().with_lease(lease))).await }
            })
        };
        // Once, and again on a new lease if the old one expired between renewing and putting.
        match put(self.node_lease(id, ttl_s).await?).await {
            Ok(_) => Ok(()),
            Err(RegistryError::Other(e)) => {
                tracing::debug!(node = id, error = %e, "node lease gone before the check-in; granting a new one");
                self.leases().remove(id);
                put(self.node_lease(id, ttl_s).await?).await.map(|_| ())
            }
            Err(e) => Err(e),
        }
    }

    async fn nodes(&self) -> RegistryResult<Vec<NodeRecord>> {
        let mut nodes = Vec::new();
        for (id, json) in self.get_prefix("nodes").await? {
            match serde_json::from_str::<NodeRecord>(&json) {
                Ok(r) => nodes.push(r),
                Err(e) => tracing::warn!(node = %id, error = %e, "unreadable node record in etcd; skipped"),
            }
        }
        nodes.sort_by(|a, b| a.info.id.cmp(&b.info.id));
        Ok(nodes)
    }

    async fn remove_node(&self, id: &str) -> RegistryResult<()> {
        self.delete(self.key(Key::Node(id))).await?;
        let held = self.leases().remove(id);
        if let Some((lease, _)) = held {
            // Best effort: the lease expires on its own anyway.
            let mut c = self.client.clone();
            let _ = timeout(ATTEMPT_TIMEOUT, c.lease_revoke(lease)).await;
        }
        Ok(())
    }

    async fn set_draining(&self, node: &str, draining: bool) -> RegistryResult<()> {
        let key = self.key(Key::Draining(node));
        if draining {
            self.put(key, "1".into()).await
        } else {
            self.delete(key).await
        }
    }

    async fn draining(&self) -> RegistryResult<BTreeSet<String>> {
        Ok(self.get_prefix("draining").await?.into_iter().map(|(id, _)| id).collect())
    }

    async fn assign(&self, customer: &str, candidate: &str) -> RegistryResult<String> {
        let key = self.key(Key::Assign(customer));
        let compare = Compare::version(key.clone(), CompareOp::Equal, 0);
        self.cas(key, compare, candidate.to_string()).await?.ok_or_else(|| {
            RegistryError::Other(format!("customer {customer}'s assignment vanished during the compare-and-swap"))
        })
    }

    async fn reassign(&self, customer: &str, from: &str, to: &str) -> RegistryResult<String> {
        let key = self.key(Key::Assign(customer));
        let compare = Compare::value(key.clone(), CompareOp::Equal, from);
        match self.cas(key, compare, to.to_string()).await? {
            Some(node) => Ok(node),
            // No assignment at all: as the in-memory backend, it gets `to`.
            None => self.assign(customer, to).await,
        }
    }

    async fn assignments(&self) -> RegistryResult<BTreeMap<String, String>> {
        Ok(self.get_prefix("assign").await?.into_iter().collect())
    }

    async fn claim_order(&self, order_id: &str, node: &str) -> RegistryResult<String> {
        let key = self.key(Key::Order(order_id));
        let compare = Compare::version(key.clone(), CompareOp::Equal, 0);
        self.cas(key, compare, node.to_string()).await?.ok_or_else(|| {
            RegistryError::Other(format!("order {order_id}'s claim vanished during the compare-and-swap"))
        })
    }

    async fn put_setting(&self, key: &str, value: &str) -> RegistryResult<()> {
        self.put(self.key(Key::Setting(key)), value.to_string()).await
    }

    async fn setting(&self, key: &str) -> RegistryResult<Option<String>> {
        self.get_one(self.key(Key::Setting(key))).await
    }

    fn campaign(&self, me: &str, stop: CancellationToken) -> watch::Receiver<Option<String>> {
        let (tx, rx) = watch::channel(None);
        let election = Election {
            client: self.client.clone(),
            name: format!("{}leader", self.root),
            me: me.to_string(),
            leading: Arc::new(AtomicBool::new(false)),
            tx: Arc::new(tx),
        };
        let stop = {
            // Either the caller's stop or the registry's end.
            let both = CancellationToken::new();
            let (b, s, shutdown) = (both.clone(), stop, self.shutdown.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = s.cancelled() => {}
                    _ = shutdown.cancelled() => {}
                    _ = b.cancelled() => {}
                }
                b.cancel();
            });
            both
        };
        tokio::spawn(election.run(stop));
        rx
    }

    fn shares_access(&self) -> bool {
        true
    }

    async fn put_token(&self, id: &str, record: &str) -> RegistryResult<()> {
        self.put(format!("{}tokens/{id}", self.root), record.to_string()).await
    }

    async fn shared_tokens(&self) -> RegistryResult<Vec<String>> {
        Ok(self.get_prefix("tokens").await?.into_iter().map(|(_, v)| v).collect())
    }

    async fn append_audit(&self, record: &str) -> RegistryResult<()> {
        // Time-ordered keys; the random tail keeps two IMs' records apart.
        let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let key = format!("{}audit/{nanos:020}-{:08x}", self.root, rand::random::<u32>());
        self.put(key, record.to_string()).await
    }

    async fn audit_records(&self) -> RegistryResult<Vec<String>> {
        Ok(self.get_prefix("audit").await?.into_iter().map(|(_, v)| v).collect())
    }

    fn watch(&self) -> broadcast::Receiver<RegistryChange> {
        self.changes.subscribe()
    }

    /// Retried as any request (within its deadline): one member of three
    /// down must not make the IM look cut off, only a lost majority.
    async fn ping(&self) -> RegistryResult<()> {
        let key = self.root.clone();
        with_retry(&self.client, "ping", |mut c| {
            let key = key.clone();
            async move { c.get(key, Some(GetOptions::new().with_count_only())).await }
        })
        .await
        .map(drop)
    }
}

/// One IM's campaign for `{prefix}/leader`.
#[derive(Clone)]
struct Election {
    client: Client,
    name: String,
    me: String,
    /// Whether this IM holds the lead right now (its campaign won and its
    /// lease is renewed).
    leading: Arc<AtomicBool>,
    tx: Arc<watch::Sender<Option<String>>>,
}

impl Election {
    /// Publishes the leader; this IM's own name only while it really leads
    /// (an observer may still see its old key after its lease was lost).
    fn publish(&self, leader: Option<String>) {
        let leader = match leader {
            Some(l) if l == self.me && !self.leading.load(Ordering::SeqCst) => None,
            other => other,
        };
        self.tx.send_if_modified(|cur| {
            if *cur == leader {
                false
            } else {
                *cur = leader;
                true
            }
        });
    }

    async fn run(self, stop: CancellationToken) {
        let observer = tokio::spawn(self.clone().observe(stop.clone()));
        while !stop.is_cancelled() {
            self.round(&stop).await;
            if !stop.is_cancelled() {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = sleep(RETRY_PAUSE) => {}
                }
            }
        }
        observer.abort();
        let _ = observer.await;
        self.leading.store(false, Ordering::SeqCst);
        self.tx.send_replace(None);
    }

    /// One lease: campaign with it until stopped or the lease is lost.
    async fn round(&self, stop: &CancellationToken) {
        let mut c = self.client.clone();
        let granted_at = Instant::now();
        let lease = match timeout(ATTEMPT_TIMEOUT, c.lease_grant(ELECTION_TTL_S, None)).await {
            Ok(Ok(l)) => l.id(),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot grant the election lease; retrying");
                return;
            }
            Err(_) => return,
        };
        let lost = CancellationToken::new();
        let round_over = CancellationToken::new();
        let _round_guard = round_over.clone().drop_guard();
        tokio::spawn(renew(self.client.clone(), lease, granted_at, lost.clone(), round_over.clone()));

        let mut c = self.client.clone();
        let won = tokio::select! {
            _ = stop.cancelled() => None,
            _ = lost.cancelled() => None,
            r = c.campaign(self.name.clone(), self.me.clone(), lease) => match r {
                Ok(mut resp) => resp.take_leader(),
                Err(e) => {
                    tracing::debug!(error = %e, "campaign failed; retrying");
                    None
                }
            },
        };
        if let Some(key) = won {
            self.leading.store(true, Ordering::SeqCst);
            self.publish(Some(self.me.clone()));
            tracing::info!(im = %self.me, "this IM leads the cluster");
            tokio::select! {
                _ = stop.cancelled() => {
                    self.leading.store(false, Ordering::SeqCst);
                    self.publish(None);
                    let mut c = self.client.clone();
                    let _ = timeout(ATTEMPT_TIMEOUT, c.resign(Some(ResignOptions::new().with_leader(key)))).await;
                    tracing::info!(im = %self.me, "this IM stepped down");
                }
                _ = lost.cancelled() => {
                    self.leading.store(false, Ordering::SeqCst);
                    self.publish(None);
                    tracing::warn!(im = %self.me, "this IM lost the lead: it could not renew its etcd lease");
                }
            }
        }
        // Our campaign key goes with the lease (best effort: it expires anyway).
        let mut c = self.client.clone();
        let _ = timeout(ATTEMPT_TIMEOUT, c.lease_revoke(lease)).await;
    }

    /// Follows the leader: etcd's observe stream for prompt news, plus a
    /// poll every second that also notices "no leader" and lost contact.
    async fn observe(self, stop: CancellationToken) {
        while !stop.is_cancelled() {
            let mut c = self.client.clone();
            let stream = match timeout(ATTEMPT_TIMEOUT, c.observe(self.name.clone())).await {
                Ok(Ok(s)) => Some(s),
                _ => {
                    self.publish(None);
                    None
                }
            };
            let mut poll = tokio::time::interval(ELECTION_RENEW);
            if let Some(mut stream) = stream {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        m = stream.message() => match m {
                            Ok(Some(r)) => self.publish(r.kv().map(value_string)),
                            _ => {
                                self.publish(None);
                                break;
                            }
                        },
                        _ = poll.tick() => {
                            let mut c = self.client.clone();
                            match timeout(ATTEMPT_TIMEOUT, c.leader(self.name.clone())).await {
                                Ok(Ok(r)) => self.publish(r.kv().map(value_string)),
                                // "election: no leader", or etcd unreachable.
                                _ => self.publish(None),
                            }
                        }
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = sleep(RETRY_PAUSE) => {}
            }
        }
    }
}

/// What one renewal of the election lease came to.
#[derive(Debug)]
enum Renewal {
    Renewed,
    /// etcd says the lease is gone.
    Expired(String),
    /// No answer this time (a member down): worth another try.
    Failed(String),
}

/// Renews the election lease every second until the round is over.
async fn renew(
    client: Client,
    lease: i64,
    granted_at: Instant,
    lost: CancellationToken,
    round_over: CancellationToken,
) {
    let keep_alive = move || {
        let mut c = client.clone();
        async move {
            match c.lease_keep_alive(lease).await {
                Ok(_) => Renewal::Renewed,
                Err(etcd_client::Error::LeaseKeepAliveError(e)) => Renewal::Expired(e),
                Err(e) => Renewal::Failed(e.to_string()),
            }
        }
    };
    keep_renewing(keep_alive, granted_at, lost, round_over).await
}

/// The renewal schedule, apart from etcd (so its timing is unit-tested).
/// A failed renewal is retried (another member may answer) as long as the
/// lease surely still holds; `lost` is cancelled [`STEP_DOWN_MARGIN`]
/// before the lease could expire on etcd (counted from when the last
/// renewal that succeeded was *sent*: etcd extends it later than that),
/// or at once if etcd says it is gone. So a leader cut off from etcd
/// steps down before another IM's campaign can win the lease.
async fn keep_renewing<F, Fut>(
    mut keep_alive: F,
    granted_at: Instant,
    lost: CancellationToken,
    round_over: CancellationToken,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Renewal>,
{
    let ttl = Duration::from_secs(ELECTION_TTL_S.unsigned_abs());
    // The lease runs from when etcd handled the request, after we sent it.
    let mut valid_until = granted_at + ttl;
    let mut next = granted_at + ELECTION_RENEW;
    loop {
        tokio::select! {
            _ = round_over.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        let sent = Instant::now();
        let give_up = valid_until - STEP_DOWN_MARGIN;
        if sent >= give_up {
            tracing::warn!("election lease not renewed in time: stepping down before it can expire");
            lost.cancel();
            return;
        }
        match timeout(give_up - sent, keep_alive()).await {
            Ok(Renewal::Renewed) => {
                valid_until = sent + ttl;
                next = sent + ELECTION_RENEW;
            }
            Ok(Renewal::Expired(e)) => {
                tracing::warn!(error = %e, "election lease expired");
                lost.cancel();
                return;
            }
            Ok(Renewal::Failed(e)) => {
                tracing::debug!(error = %e, "election lease renewal failed; retrying");
                next = (Instant::now() + Duration::from_millis(200)).min(valid_until - STEP_DOWN_MARGIN);
            }
            Err(_) => {
                tracing::warn!("election lease renewal unanswered: stepping down before it can expire");
                lost.cancel();
                return;
            }
        }
    }
}

/// Streams every change under `root` into `changes`, re-watching from the
/// last revision seen after an error.
async fn watch_loop(
    client: Client,
    root: String,
    mut next_rev: i64,
    changes: broadcast::Sender<RegistryChange>,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        let mut c = client.clone();
        let options = WatchOptions::new().with_prefix().with_prev_key().with_start_revision(next_rev);
        match timeout(ATTEMPT_TIMEOUT, c.watch(root.clone(), Some(options))).await {
            Ok(Ok(mut stream)) => loop {
                let msg = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    m = stream.message() => m,
                };
                match msg {
                    Ok(Some(resp)) => {
                        if resp.canceled() {
                            if resp.compact_revision() > next_rev {
                                tracing::warn!(
                                    from = next_rev,
                                    to = resp.compact_revision(),
                                    "etcd compacted past the registry watch; some changes were missed"
                                );
                                next_rev = resp.compact_revision();
                            } else {
                                tracing::debug!(reason = resp.cancel_reason(), "etcd cancelled the registry watch");
                            }
                            break;
                        }
                        for ev in resp.events() {
                            let Some(kv) = ev.kv() else { continue };
                            next_rev = next_rev.max(kv.mod_revision() + 1);
                            if let Some(change) = translate(&root, ev.event_type(), kv, ev.prev_kv()) {
                                let _ = changes.send(change);
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "registry watch broke; re-watching");
                        break;
                    }
                }
            },
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot watch the registry; retrying"),
            Err(_) => tracing::debug!("registry watch unanswered; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = sleep(RETRY_PAUSE) => {}
        }
    }
}

/// One etcd event as a registry change; `None` for keys that are not ours,
/// writes that changed nothing, and unreadable records (logged).
fn translate(root: &str, kind: EventType, kv: &KeyValue, prev: Option<&KeyValue>) -> Option<RegistryChange> {
    let key = String::from_utf8_lossy(kv.key());
    let rel = key.strip_prefix(root)?;
    let (dir, name) = rel.split_once('/')?;
    let put = matches!(kind, EventType::Put);
    let value = value_string(kv);
    let same_as_before = prev.is_some_and(|p| p.value() == kv.value());
    match dir {
        "nodes" if put => {
            let record: NodeRecord = match serde_json::from_str(&value) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(key = %key, error = %e, "unreadable node record in etcd; skipped");
                    return None;
                }
            };
            let before = prev.and_then(|p| serde_json::from_slice::<NodeRecord>(p.value()).ok());
            let changed = before.map(|b| b.info != record.info || b.watch_url != record.watch_url).unwrap_or(true);
            changed.then_some(RegistryChange::Node(record))
        }
        "nodes" => Some(RegistryChange::NodeGone(name.to_string())),
        "draining" if put => {
            prev.is_none().then(|| RegistryChange::Draining { node: name.to_string(), draining: true })
        }
        "draining" => Some(RegistryChange::Draining { node: name.to_string(), draining: false }),
        "assign" if put && !same_as_before => {
            Some(RegistryChange::Assigned { customer: name.to_string(), node: value })
        }
        "settings" if put && !same_as_before => {
            Some(RegistryChange::Setting { key: name.to_string(), value: Some(value) })
        }
        "settings" if !put => Some(RegistryChange::Setting { key: name.to_string(), value: None }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Renewals answer until `answered`, then hang (etcd cut off); when
    /// does the leader step down?
    async fn step_down_after(answered: usize, cut: impl Fn() -> Renewal + Send + Sync + 'static) -> Duration {
        let calls = Arc::new(AtomicUsize::new(0));
        let cut = Arc::new(cut);
        let keep_alive = {
            let calls = calls.clone();
            move || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                let cut = cut.clone();
                async move {
                    if n < answered {
                        return Renewal::Renewed;
                    }
                    match cut() {
                        Renewal::Renewed => std::future::pending().await,
                        other => other,
                    }
                }
            }
        };
        let start = Instant::now();
        let (lost, over) = (CancellationToken::new(), CancellationToken::new());
        let task = tokio::spawn(keep_renewing(keep_alive, start, lost.clone(), over.clone()));
        timeout(Duration::from_secs(60), lost.cancelled()).await.expect("the leader steps down");
        over.cancel();
        let _ = task.await;
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_cut_off_from_etcd_steps_down_before_its_lease_can_expire() {
        let ttl = Duration::from_secs(ELECTION_TTL_S.unsigned_abs());
        // Three renewals answered (sent at 1, 2 and 3 s), then silence: the
        // lease holds on etcd until at least 3 s + ttl = 6 s.
        let down = step_down_after(3, || Renewal::Renewed).await;
        let expires = ELECTION_RENEW * 3 + ttl;
        assert_eq!(down, expires - STEP_DOWN_MARGIN, "stepped down {STEP_DOWN_MARGIN:?} before the lease could end");

        // Renewals that fail outright (no member answers) are retried, but
        // never past the same point.
        let down = step_down_after(1, || Renewal::Failed("connection refused".into())).await;
        let expires = ELECTION_RENEW + ttl;
        assert!(down <= expires - STEP_DOWN_MARGIN, "stepped down at {down:?}, the lease ends at {expires:?}");
        assert!(down >= expires - STEP_DOWN_MARGIN - Duration::from_millis(200), "kept retrying until then: {down:?}");

        // etcd saying the lease is gone ends the lead at once.
        let down = step_down_after(0, || Renewal::Expired("lease not found".into())).await;
        assert_eq!(down, ELECTION_RENEW);
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewed_lease_keeps_the_lead() {
        let (lost, over) = (CancellationToken::new(), CancellationToken::new());
        let task =
            tokio::spawn(keep_renewing(|| async { Renewal::Renewed }, Instant::now(), lost.clone(), over.clone()));
        sleep(Duration::from_secs(120)).await;
        assert!(!lost.is_cancelled(), "a leader whose renewals succeed keeps the lead");
        over.cancel();
        task.await.unwrap();
    }
}
