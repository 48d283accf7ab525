//! Operator API of the InfrastructureManager: snapshot, watch stream with
//! commands, spawn/stop/restart, drain/undrain, a live market's pool.
//! Operators only; every action
//! is written to the audit log with who asked and how it ended.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use lido_shared::autoscale::AutoscaleStatus;
use lido_shared::cluster::{
    ClusterSnapshot, LogLevel, MarketPool, NodeInfo, RunMode, ServiceDetail, ServiceInfo, SessionInfo, SpawnRequest,
    WatchCommand, WatchMessage,
};
use lido_shared::model::Order;
use lido_shared::{ErrorBody, ErrorDetail};
use tokio::sync::{broadcast, mpsc};
use tracing::debug;

use super::Operator;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::infra::Infra;
use crate::markets::OrderMsg;

pub fn routes() -> Router<Infra> {
    Router::new()
        .route("/v1/cluster", get(cluster))
        .route("/v1/cluster/watch", get(watch))
        .route("/v1/services", post(spawn))
        .route("/v1/services/{name}", get(describe).delete(stop))
        .route("/v1/services/{name}/logs", get(logs))
        .route("/v1/services/{name}/restart", post(restart))
        .route("/v1/services/{name}/drain", post(drain_service))
        .route("/v1/services/{name}/undrain", post(undrain_service))
        .route("/v1/nodes/{id}/drain", post(drain))
        .route("/v1/nodes/{id}/undrain", post(undrain))
        .route("/v1/markets/{name}", put(set_market))
        .route("/v1/log-level", put(log_level))
        .route("/v1/autoscale", get(autoscale))
}

/// The autoscaler: its rules, the market instances and brokers' venue
/// connections with their current figures, and its recent decisions.
#[utoipa::path(get, path = "/v1/autoscale", tag = "operator", responses((status = 200, body = AutoscaleStatus)))]
pub async fn autoscale(State(infra): State<Infra>, _operator: Operator) -> Json<AutoscaleStatus> {
    Json(crate::autoscale::status(infra.markets().instances(), &infra.brokers().list()))
}

/// The cluster: nodes, managers, services, load.
#[utoipa::path(get, path = "/v1/cluster", tag = "operator", responses((status = 200, body = ClusterSnapshot)))]
pub async fn cluster(State(infra): State<Infra>, _operator: Operator) -> Json<ClusterSnapshot> {
    Json(infra.snapshot())
}

/// Sessions on this IM's nodes; tokens are shortened.
#[utoipa::path(get, path = "/v1/sessions", tag = "operator", responses((status = 200, body = Vec<SessionInfo>)))]
pub async fn sessions(State(infra): State<Infra>, _operator: Operator) -> Json<Vec<SessionInfo>> {
    Json(infra.sessions().list())
}

/// A service and its recent events.
#[utoipa::path(get, path = "/v1/services/{name}", tag = "operator", params(("name" = String, Path)),
    responses((status = 200, body = ServiceDetail), (status = 404, body = ErrorBody)))]
pub async fn describe(
    State(infra): State<Infra>,
    _operator: Operator,
    Path(name): Path<String>,
) -> Result<Json<ServiceDetail>, ApiError> {
    Ok(Json(infra.describe(&name)?))
}

/// A service process's output: the last `tail` lines, then more as they
/// come with `follow=true`.
#[utoipa::path(get, path = "/v1/services/{name}/logs", tag = "operator", params(("name" = String, Path), LogsQuery),
    responses((status = 200, content_type = "text/plain", body = String), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn logs(
    State(infra): State<Infra>,
    _operator: Operator,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<LogsQuery>,
) -> Result<Response, ApiError> {
    let (buffer, mode) = infra.logs(&name)?;
    if mode != RunMode::Process {
        return Err(ApiError::conflict(
            "no_logs",
            format!("{name} runs inside lidod ({mode:?}); its lines are in lidod's own log"),
        ));
    }
    let tail = q.tail.unwrap_or(100).min(10_000);
    let (lines, live) = buffer.tail_and_follow(tail);
    let head = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    let content_type = [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if !q.follow {
        return Ok((content_type, head).into_response());
    }
    let closing = infra.closing().clone();
    let feed = futures_util::stream::unfold((live, closing), |(mut live, closing)| async move {
        let line = tokio::select! {
            _ = closing.cancelled() => return None,
            line = live.recv() => line,
        };
        let text = match line {
            Ok(line) => format!("{line}\n"),
            Err(broadcast::error::RecvError::Lagged(n)) => format!("… {n} lines skipped (reader too slow)\n"),
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok::<_, std::io::Error>(text), (live, closing)))
    });
    let body = futures_util::stream::once(async move { Ok::<_, std::io::Error>(head) }).chain(feed);
    Ok((content_type, axum::body::Body::from_stream(body)).into_response())
}

/// Query of the logs endpoint.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Lines of history (default 100, at most 10000).
    #[serde(default)]
    pub tail: Option<usize>,
    /// Keep the response open and send new lines as they come.
    #[serde(default)]
    pub follow: bool,
}

/// Spawns a broker, market or trader.
#[utoipa::path(post, path = "/v1/services", tag = "operator", request_body = SpawnRequest,
    responses((status = 201, body = ServiceInfo), (status = 400, body = ErrorBody), (status = 404, description = "no such node", body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 503, description = "no node takes spawns (all draining)", body = ErrorBody)))]
pub async fn spawn(
    State(infra): State<Infra>,
    Operator(caller): Operator,
    ApiJson(req): ApiJson<SpawnRequest>,
) -> Result<(StatusCode, Json<ServiceInfo>), ApiError> {
    Ok((StatusCode::CREATED, Json(spawn_audited(&infra, &caller, req)?)))
}

/// Stops a service and forgets it.
#[utoipa::path(delete, path = "/v1/services/{name}", tag = "operator", params(("name" = String, Path)),
    responses((status = 200, body = ServiceInfo), (status = 404, body = ErrorBody)))]
pub async fn stop(
    State(infra): State<Infra>,
    Operator(caller): Operator,
    Path(name): Path<String>,
) -> Result<Json<ServiceInfo>, ApiError> {
    Ok(Json(audited(&infra, &caller, "stop", &name, infra.stop(&name).await)?))
}

/// Restarts a service's process or task.
#[utoipa::path(post, path = "/v1/services/{name}/restart", tag = "operator", params(("name" = String, Path)),
    responses((status = 200, body = ServiceInfo), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn restart(
    State(infra): State<Infra>,
    Operator(caller): Operator,
    Path(name): Path<String>,
) -> Result<Json<ServiceInfo>, ApiError> {
    Ok(Json(audited(&infra, &caller, "restart", &name, infra.restart(&name))?))
}

/// Sets this node's log filter at run time (brokers keep theirs). Operators only; audited.
#[utoipa::path(put, path = "/v1/log-level", tag = "operator", request_body = LogLevel,
    responses((status = 200, body = LogLevel), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn log_level(
    State(infra): State<Infra>,
    Operator(caller): Operator,
    ApiJson(body): ApiJson<LogLevel>,
) -> Result<Json<LogLevel>, ApiError> {
    audited(&infra, &caller, "log_level", &body.filter, crate::loglevel::set(&body.filter))?;
    Ok(Json(body))
}

/// Drains a node: no new sessions or spawns there.
#[utoipa::path(post, path = "/v1/nodes/{id}/drain", tag = "operator", params(("id" = String, Path)),
    responses((status = 200, body = NodeInfo), (status = 404, body = ErrorBody)))]
pub async fn drain(
    State(infra): State<Infra>,
    Operator(caller): Operator,
    Path(id): Path<String>,
) -> Result<Json<NodeInfo>, ApiError> {
    Ok(Json(audited(&infra, &caller, "drain", &id, infra.set_draining(&id, true))?))
}

/// Undrains a node.
#[utoipa::path(post, path = "/v1/nodes/{id}/undrain", tag = "operator", params(("id" = String, Path)),
    responses((status = 200, body = NodeInfo), (status = 404, body = ErrorBody)))]
pub async fn undrain(
    State(infra): State<Infra>,
    Operator(caller): Operator,
    Path(id): Path<String>,
) -> Result<Json<NodeInfo>, ApiError> {
    Ok(Json(audited(&infra, &caller, "undrain", &id, infra.set_draining(&id, false))?))
}

/// Drains a broker: no new subscriptions or orders; its feeds move to
/// another broker of each market without a gap, its open orders to a
/// sibling on the same venue account. Then it can be stopped unnoticed.
#[utoipa::path(post, path = "/v1/services/{name}/drain", tag = "operator", params(("name" = String, Path)),
    responses((status = 200, body = ServiceInfo), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn drain_service(
    State(infra): State<Infra>,
    Operator(caller): Operator,
    Path(name): Path<String>,
) -> Result<Json<ServiceInfo>, ApiError> {
    Ok(Json(audited(&infra, &caller, "drain", &name, infra.set_broker_draining(&name, true))?))
}

/// Takes a broker out of draining: it is routable again (routes fail back after the hold time).
#[utoipa::path(post, path = "/v1/services/{name}/undrain", tag = "operator", params(("name" = String, Path)),
    responses((status = 200, body = ServiceInfo), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn undrain_service(
    State(infra): State<Infra>,
    Operator(caller): Operator,
    Path(name): Path<String>,
) -> Result<Json<ServiceInfo>, ApiError> {
    Ok(Json(audited(&infra, &caller, "undrain", &name, infra.set_broker_draining(&name, false))?))
}

/// Changes a live market's pool: brokers by priority, fallback, symbols
/// (fields left out stay). Routes move as planned moves (no gap marker),
/// reported as `failover` events with reason "pool changed"; feeds of
/// symbols that left the universe end with a gap marker. A refused change
/// changes nothing.
#[utoipa::path(put, path = "/v1/markets/{name}", tag = "operator", params(("name" = String, Path)), request_body = MarketPool,
    responses((status = 200, body = ServiceInfo), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn set_market(
    State(infra): State<Infra>,
    Operator(caller): Operator,
    Path(name): Path<String>,
    ApiJson(pool): ApiJson<MarketPool>,
) -> Result<Json<ServiceInfo>, ApiError> {
    Ok(Json(set_market_audited(&infra, &caller, &name, &pool)?))
}

/// Records an operator action's outcome in the audit log and passes it on.
fn audited<T>(
    infra: &Infra,
    caller: &Caller,
    action: &str,
    target: &str,
    result: Result<T, ApiError>,
) -> Result<T, ApiError> {
    infra.access().audit(&caller.actor(), action, target, &result, None);
    result
}

fn set_market_audited(infra: &Infra, caller: &Caller, name: &str, pool: &MarketPool) -> Result<ServiceInfo, ApiError> {
    audited(infra, caller, "set_market", name, infra.markets().update_market(name, pool))
}

fn spawn_audited(infra: &Infra, caller: &Caller, req: SpawnRequest) -> Result<ServiceInfo, ApiError> {
    let asked = format!("{} {}", req.kind, req.name.as_deref().unwrap_or("(unnamed)"));
    let result = infra.spawn(req);
    let target = result.as_ref().map_or(asked, |s| format!("{} {}", s.kind, s.name));
    audited(infra, caller, "spawn", &target, result)
}

/// Snapshot first, then numbered events; takes commands with correlated replies.
pub async fn watch(State(infra): State<Infra>, Operator(caller): Operator, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(64 * 1024)
        .max_frame_size(64 * 1024)
        .on_upgrade(move |socket| watch_session(infra, caller, socket))
}

async fn watch_session(infra: Infra, caller: Caller, socket: WebSocket) {
    let (mut sink, mut source) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<WatchMessage>(1024);
    let (mut events, mut seq) = infra.bus().subscribe();
    let _ = out_tx.send(WatchMessage::Snapshot { seq, snapshot: infra.snapshot() }).await;
    let writer = tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            let Ok(text) = serde_json::to_string(&msg) else {
                continue;
            };
            if sink.send(Message::Text(text.into())).await.is_err() {
                break;
            }
        }
    });
    // Order flow, once the watcher asks for it.
    let mut orders: Option<broadcast::Receiver<OrderMsg>> = None;
    let closing = infra.closing().clone();
    loop {
        let resync = tokio::select! {
            _ = closing.cancelled() => break,
            ev = events.recv() => match ev {
                Ok(ev) if ev.seq <= seq => false,
                Ok(ev) => {
                    seq = ev.seq;
                    if out_tx.send(WatchMessage::Event { seq: ev.seq, ts: ev.ts, event: ev.event }).await.is_err() { break; }
                    false
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    debug!(skipped = n, "watcher lagged, re-syncing");
                    true
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            order = next_order(&mut orders) => {
                if let Some(order) = order {
                    let node = infra.node_id().to_string();
                    if out_tx.send(WatchMessage::Order { node, order }).await.is_err() { break; }
                }
                false
            }
            msg = source.next() => {
                let Some(Ok(msg)) = msg else { break };
                let text = match msg {
                    Message::Text(t) => t,
                    Message::Close(_) => break,
                    _ => continue,
                };
                match serde_json::from_str::<WatchCommand>(text.as_str()) {
                    // Answered here: they change this connection.
                    Ok(WatchCommand::Snapshot { id }) => {
                        let _ = out_tx.send(WatchMessage::Reply { id, ok: true, service: None, error: None }).await;
                        true
                    }
                    Ok(WatchCommand::Follow { id, orders: follow }) => {
                        orders = follow.then(|| infra.markets().order_updates());
                        let _ = out_tx.send(WatchMessage::Reply { id, ok: true, service: None, error: None }).await;
                        false
                    }
                    Ok(cmd) => {
                        let (infra, caller, out) = (infra.clone(), caller.clone(), out_tx.clone());
                        tokio::spawn(async move {
                            let reply = execute(&infra, &caller, cmd).await;
                            let _ = out.send(reply).await;
                        });
                        false
                    }
                    Err(e) => {
                        let error = ErrorDetail::new("invalid_command", format!("cannot read command: {e}"));
                        if out_tx.send(WatchMessage::Error { error }).await.is_err() { break; }
                        false
                    }
                }
            }
        };
        if resync {
            // Start over from a fresh snapshot (too slow, or asked to).
            let (rx, s) = infra.bus().subscribe();
            events = rx;
            seq = s;
            if out_tx.send(WatchMessage::Snapshot { seq, snapshot: infra.snapshot() }).await.is_err() {
                break;
            }
        }
    }
    drop(out_tx);
    let _ = writer.await;
}

/// The next order change, when following; never resolves otherwise.
async fn next_order(orders: &mut Option<broadcast::Receiver<OrderMsg>>) -> Option<Order> {
    let Some(rx) = orders else { return std::future::pending().await };
    loop {
        match rx.recv().await {
            Ok(OrderMsg::Order(order)) => return Some(order),
            Ok(OrderMsg::Fill { .. }) => continue,
            // Order flow is a view: a slow watcher skips ahead.
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return std::future::pending().await,
        }
    }
}

async fn execute(infra: &Infra, caller: &Caller, cmd: WatchCommand) -> WatchMessage {
    let (id, result) = match cmd {
        WatchCommand::Spawn { id, request } => (id, spawn_audited(infra, caller, request).map(Some)),
        WatchCommand::Stop { id, name } => {
            (id, audited(infra, caller, "stop", &name, infra.stop(&name).await).map(Some))
        }
        WatchCommand::Restart { id, name } => {
            (id, audited(infra, caller, "restart", &name, infra.restart(&name)).map(Some))
        }
        WatchCommand::Drain { id, node } => {
            (id, audited(infra, caller, "drain", &node, infra.set_draining(&node, true)).map(|_| None))
        }
        WatchCommand::Undrain { id, node } => {
            (id, audited(infra, caller, "undrain", &node, infra.set_draining(&node, false)).map(|_| None))
        }
        WatchCommand::DrainService { id, name } => {
            (id, audited(infra, caller, "drain", &name, infra.set_broker_draining(&name, true)).map(Some))
        }
        WatchCommand::UndrainService { id, name } => {
            (id, audited(infra, caller, "undrain", &name, infra.set_broker_draining(&name, false)).map(Some))
        }
        WatchCommand::SetMarket { id, name, pool } => (id, set_market_audited(infra, caller, &name, &pool).map(Some)),
        // Answered by the session itself.
        WatchCommand::Snapshot { id } | WatchCommand::Follow { id, .. } => (id, Ok(None)),
    };
    match result {
        Ok(service) => WatchMessage::Reply { id, ok: true, service, error: None },
        Err(e) => WatchMessage::Reply { id, ok: false, service: None, error: Some(e.body().error) },
    }
}
