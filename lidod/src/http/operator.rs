//! Operator API of the InfrastructureManager: snapshot, watch stream with
//! commands, spawn/stop/restart, drain/undrain.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use lido_shared::cluster::{ClusterSnapshot, NodeInfo, ServiceInfo, SpawnRequest, WatchCommand, WatchMessage};
use lido_shared::{ErrorBody, ErrorDetail};
use tokio::sync::{broadcast, mpsc};
use tracing::debug;

use crate::error::{ApiError, ApiJson};
use crate::infra::Infra;

pub fn routes() -> Router<Infra> {
    Router::new()
        .route("/v1/cluster", get(cluster))
        .route("/v1/cluster/watch", get(watch))
        .route("/v1/services", post(spawn))
        .route("/v1/services/{name}", axum::routing::delete(stop))
        .route("/v1/services/{name}/restart", post(restart))
        .route("/v1/nodes/{id}/drain", post(drain))
        .route("/v1/nodes/{id}/undrain", post(undrain))
}

/// The cluster: nodes, managers, services, load.
#[utoipa::path(get, path = "/v1/cluster", tag = "operator", responses((status = 200, body = ClusterSnapshot)))]
pub async fn cluster(State(infra): State<Infra>) -> Json<ClusterSnapshot> {
    Json(infra.snapshot())
}

/// Spawns a broker, market or trader.
#[utoipa::path(post, path = "/v1/services", tag = "operator", request_body = SpawnRequest,
    responses((status = 201, body = ServiceInfo), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn spawn(
    State(infra): State<Infra>,
    ApiJson(req): ApiJson<SpawnRequest>,
) -> Result<(StatusCode, Json<ServiceInfo>), ApiError> {
    Ok((StatusCode::CREATED, Json(infra.spawn(req)?)))
}

/// Stops a service and forgets it.
#[utoipa::path(delete, path = "/v1/services/{name}", tag = "operator", params(("name" = String, Path)),
    responses((status = 200, body = ServiceInfo), (status = 404, body = ErrorBody)))]
pub async fn stop(State(infra): State<Infra>, Path(name): Path<String>) -> Result<Json<ServiceInfo>, ApiError> {
    Ok(Json(infra.stop(&name).await?))
}

/// Restarts a service's process or task.
#[utoipa::path(post, path = "/v1/services/{name}/restart", tag = "operator", params(("name" = String, Path)),
    responses((status = 200, body = ServiceInfo), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn restart(State(infra): State<Infra>, Path(name): Path<String>) -> Result<Json<ServiceInfo>, ApiError> {
    Ok(Json(infra.restart(&name)?))
}

/// Drains a node: no new sessions or spawns there.
#[utoipa::path(post, path = "/v1/nodes/{id}/drain", tag = "operator", params(("id" = String, Path)),
    responses((status = 200, body = NodeInfo), (status = 404, body = ErrorBody)))]
pub async fn drain(State(infra): State<Infra>, Path(id): Path<String>) -> Result<Json<NodeInfo>, ApiError> {
    Ok(Json(infra.set_draining(&id, true)?))
}

/// Undrains a node.
#[utoipa::path(post, path = "/v1/nodes/{id}/undrain", tag = "operator", params(("id" = String, Path)),
    responses((status = 200, body = NodeInfo), (status = 404, body = ErrorBody)))]
pub async fn undrain(State(infra): State<Infra>, Path(id): Path<String>) -> Result<Json<NodeInfo>, ApiError> {
    Ok(Json(infra.set_draining(&id, false)?))
}

/// Snapshot first, then numbered events; takes commands with correlated replies.
pub async fn watch(State(infra): State<Infra>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(64 * 1024).on_upgrade(move |socket| watch_session(infra, socket))
}

async fn watch_session(infra: Infra, socket: WebSocket) {
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
    let closing = infra.closing().clone();
    loop {
        tokio::select! {
            _ = closing.cancelled() => break,
            ev = events.recv() => match ev {
                Ok(ev) if ev.seq <= seq => {}
                Ok(ev) => {
                    seq = ev.seq;
                    if out_tx.send(WatchMessage::Event { seq: ev.seq, ts: ev.ts, event: ev.event }).await.is_err() { break; }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    // Too slow: start over from a fresh snapshot.
                    debug!(skipped = n, "watcher lagged, re-syncing");
                    let (rx, s) = infra.bus().subscribe();
                    events = rx;
                    seq = s;
                    if out_tx.send(WatchMessage::Snapshot { seq, snapshot: infra.snapshot() }).await.is_err() { break; }
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            msg = source.next() => {
                let Some(Ok(msg)) = msg else { break };
                let text = match msg {
                    Message::Text(t) => t,
                    Message::Close(_) => break,
                    _ => continue,
                };
                match serde_json::from_str::<WatchCommand>(text.as_str()) {
                    Ok(cmd) => {
                        let (infra, out) = (infra.clone(), out_tx.clone());
                        tokio::spawn(async move {
                            let reply = execute(&infra, cmd).await;
                            let _ = out.send(reply).await;
                        });
                    }
                    Err(e) => {
                        let error = ErrorDetail::new("invalid_command", format!("cannot read command: {e}"));
                        if out_tx.send(WatchMessage::Error { error }).await.is_err() { break; }
                    }
                }
            }
        }
    }
    drop(out_tx);
    let _ = writer.await;
}

async fn execute(infra: &Infra, cmd: WatchCommand) -> WatchMessage {
    let (id, result) = match cmd {
        WatchCommand::Spawn { id, request } => (id, infra.spawn(request).map(Some)),
        WatchCommand::Stop { id, name } => (id, infra.stop(&name).await.map(Some)),
        WatchCommand::Restart { id, name } => (id, infra.restart(&name).map(Some)),
        WatchCommand::Drain { id, node } => (id, infra.set_draining(&node, true).map(|_| None)),
        WatchCommand::Undrain { id, node } => (id, infra.set_draining(&node, false).map(|_| None)),
        WatchCommand::Snapshot { id } => (id, Ok(None)),
    };
    match result {
        Ok(service) => WatchMessage::Reply { id, ok: true, service, error: None },
        Err(e) => WatchMessage::Reply { id, ok: false, service: None, error: Some(e.body().error) },
    }
}
