//! The router of an InfrastructureManager (`--role im`): node check-ins,
//! the cluster over every node, sessions, and operator actions forwarded
//! to the node concerned (answered as the node answered). Algo routes
//! answer 404 `not_a_node`: trading happens on the node a session names.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post, put};
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use lido_shared::access::{AuditQuery, AuditRecord, CreateToken, CreatedToken, TokenInfo, CLUSTER_SECRET_HEADER};
use lido_shared::api::{Session, SessionRequest, MAX_BODY_BYTES};
use lido_shared::cluster::{
    ClusterSnapshot, MarketPool, NodeCheckIn, NodeCheckInReply, OrderClaim, OrderClaimReply, ServiceInfo, ServiceKind,
    SpawnRequest, WatchCommand, WatchMessage,
};
use lido_shared::{ErrorBody, ErrorDetail};
use reqwest::Method;
use tokio::sync::{broadcast, mpsc};
use tower_http::trace::TraceLayer;

use crate::auth::{AuthMode, Caller};
use crate::cluster::im::{merge_json_arrays, ClusterIm, Forwarded};
use crate::error::{ApiError, ApiJson, ApiQuery};

/// Builds the IM's router.
pub fn router(im: ClusterIm) -> Router {
    let not_a_node = || any(not_a_node);
    Router::new()
        .route(crate::cluster::checkin::NODE_CHECKIN_PATH, post(checkin))
        .route(crate::cluster::claims::ORDER_CLAIM_PATH, post(claim_order))
        .route("/v1/cluster", get(cluster))
        .route("/v1/cluster/watch", get(watch))
        .route("/v1/cluster/autoscale", get(node_autoscale).put(set_node_autoscale))
        .route("/v1/cluster/assignments", get(assignments))
        .route("/v1/sessions", post(open_session).get(sessions))
        .route("/v1/services", post(spawn))
        .route("/v1/services/{name}", get(describe).delete(stop))
        .route("/v1/services/{name}/logs", get(logs))
        .route("/v1/services/{name}/restart", post(restart))
        .route("/v1/services/{name}/drain", post(drain_service))
        .route("/v1/services/{name}/undrain", post(undrain_service))
        .route("/v1/nodes/{id}/drain", post(drain))
        .route("/v1/nodes/{id}/undrain", post(undrain))
        .route("/v1/markets/{name}", put(set_market))
        .route("/v1/tokens", get(list_tokens).post(create_token))
        .route("/v1/tokens/{id}", delete(revoke_token))
        .route("/v1/audit", get(audit))
        .route("/v1/log-level", put(log_level))
        .route("/v1/openapi.json", get(super::openapi::document))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/markets", not_a_node())
        .route("/v1/instruments", not_a_node())
        .route("/v1/quotes", not_a_node())
        .route("/v1/book", not_a_node())
        .route("/v1/orders", not_a_node())
        .route("/v1/orders/{order_id}", not_a_node())
        .route("/v1/fills", not_a_node())
        .route("/v1/positions", not_a_node())
        .route("/v1/balances", not_a_node())
        .route("/v1/stream", not_a_node())
        .fallback(super::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .with_state(im)
}

async fn not_a_node() -> ApiError {
    ApiError::not_found(
        "not_a_node",
        "this is an InfrastructureManager: open a session with POST /v1/sessions and use its market_manager_url",
    )
}

/// Who is calling an IM: another cluster member (the cluster secret), an
/// API token, or in open mode the local operator. Sessions live on nodes.
struct ImCaller(Caller);

impl FromRequestParts<ClusterIm> for ImCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, im: &ClusterIm) -> Result<Self, Self::Rejection> {
        if parts.headers.contains_key(CLUSTER_SECRET_HEADER) {
            crate::auth::secret::check(&parts.headers, im.cluster_secret())?;
            return Ok(Self(Caller::Im));
        }
        let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
            return match im.access().mode() {
                AuthMode::Open => Ok(Self(Caller::Local)),
                AuthMode::Tokens => Err(ApiError::unauthorized(
                    "this InfrastructureManager requires a token: send `Authorization: Bearer <token>`",
                )),
            };
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| ApiError::unauthorized("use `Authorization: Bearer <token>` with an API token"))?;
        match im.access().verify(token) {
            Some(verified) => verified.map(Self),
            None => Err(ApiError::unauthorized(
                "unknown token; a session id is used on the node its session names, not on the InfrastructureManager",
            )),
        }
    }
}

/// An operator of the IM: 403 for customers.
struct ImOperator(Caller);

impl FromRequestParts<ClusterIm> for ImOperator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, im: &ClusterIm) -> Result<Self, Self::Rejection> {
        let ImCaller(caller) = ImCaller::from_request_parts(parts, im).await?;
        caller.require_operator()?;
        Ok(Self(caller))
    }
}

/// 200 while the IM reaches its registry; 503 with the error body while it
/// does not (a readiness probe takes it out of rotation; it comes back by
/// itself once the registry answers again).
async fn healthz(State(im): State<ClusterIm>) -> Response {
    let health = im.registry_health();
    let backend = im.registry().backend();
    let mut body = serde_json::json!({
        "status": if health.reachable { "ok" } else { "unavailable" },
        "role": "im",
        "im": im.id(),
        "registry": backend,
        "registry_reachable": health.reachable,
        "since": health.since,
        "leader": im.leads(),
    });
    if health.reachable {
        return Json(body).into_response();
    }
    let cause = health.error.unwrap_or_else(|| "no answer".into());
    body["error"] = serde_json::json!({
        "code": "registry_unreachable",
        "message": format!(
            "this IM cannot reach its cluster registry ({backend}) since {}: {cause}; it takes no leader decisions \
             and recovers by itself when the registry answers; check the network to the etcd members",
            health.since.to_rfc3339()
        ),
    });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

/// The cluster's figures; operators only (in open mode the local caller is one).
async fn metrics(State(im): State<ClusterIm>, _op: ImOperator) -> Result<String, ApiError> {
    let nodes = im.candidates().await?;
    let mut text = String::from("# TYPE lido_cluster_nodes gauge\n");
    text.push_str(&format!("lido_cluster_nodes {}\n", nodes.len()));
    text.push_str("# TYPE lido_cluster_node_up gauge\n");
    for n in &nodes {
        text.push_str(&format!("lido_cluster_node_up{{node=\"{}\"}} {}\n", n.info.id, u8::from(n.reachable)));
    }
    Ok(text)
}

/// A node checks in; it must prove the cluster secret.
async fn checkin(
    State(im): State<ClusterIm>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<NodeCheckIn>,
) -> Result<Json<NodeCheckInReply>, ApiError> {
    if let Err(e) = crate::auth::secret::check(&headers, im.cluster_secret()) {
        tracing::warn!(node = %body.info.id, reason = %e.message, "node check-in refused");
        return Err(e);
    }
    Ok(Json(im.check_in(body).await?))
}

/// A node claims an order before sending it; it must prove the cluster
/// secret. The answer names the one node that may send it.
async fn claim_order(
    State(im): State<ClusterIm>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<OrderClaim>,
) -> Result<Json<OrderClaimReply>, ApiError> {
    crate::auth::secret::check(&headers, im.cluster_secret())?;
    let holder =
        im.registry().claim_order(&body.order_id, &body.node).await.map_err(crate::cluster::im::registry_error)?;
    if holder != body.node {
        tracing::info!(order_id = %body.order_id, node = %body.node, %holder,
            "order claim refused: another node holds this order");
    }
    Ok(Json(OrderClaimReply { holder }))
}

async fn cluster(State(im): State<ClusterIm>, _op: ImOperator) -> Result<Json<ClusterSnapshot>, ApiError> {
    Ok(Json(im.snapshot().await?))
}

/// The node autoscaler's status: leader, load per node, recent decisions.
async fn node_autoscale(
    State(im): State<ClusterIm>,
    _op: ImOperator,
) -> Result<Json<lido_shared::cluster::NodeScaleStatus>, ApiError> {
    im.node_scaler().map(|s| Json(s.status())).ok_or_else(|| {
        ApiError::not_found(
            "autoscale_off",
            "node autoscaling is off on this IM; set [cluster.autoscale] enabled = true and a [cluster.provisioner]",
        )
    })
}

/// Changes the node autoscaler's rules for every IM: the fields given
/// (`{"max_nodes": 6}`) over the rules in force, kept in the registry.
async fn set_node_autoscale(
    State(im): State<ClusterIm>,
    ImOperator(caller): ImOperator,
    ApiJson(changes): ApiJson<serde_json::Value>,
) -> Result<Json<crate::cluster::nodescale::NodeScaleConfig>, ApiError> {
    let scaler = im.node_scaler().ok_or_else(|| {
        ApiError::conflict(
            "autoscale_off",
            "this IM runs no node autoscaler; start it with [cluster.autoscale] and a [cluster.provisioner]",
        )
    })?;
    // Over the rules last put in the registry (another PUT, maybe at another
    // IM, that this IM's autoscaler has not adopted yet), else those in force.
    let put = im
        .registry()
        .setting(crate::cluster::nodescale::SETTINGS_KEY)
        .await
        .map_err(crate::cluster::im::registry_error)?
        .and_then(|text| serde_json::from_str(&text).ok());
    let merged = match put {
        Some(base) => crate::cluster::nodescale::merge(base, &changes),
        None => scaler.merged(&changes),
    };
    let result = match merged {
        Ok(cfg) => {
            let text = serde_json::to_string(&cfg).map_err(ApiError::internal)?;
            im.registry()
                .put_setting(crate::cluster::nodescale::SETTINGS_KEY, &text)
                .await
                .map_err(crate::cluster::im::registry_error)
                .map(|()| cfg)
        }
        Err(e) => Err(ApiError::bad_request("invalid_autoscale", format!("{e}; nothing was changed"))),
    };
    im.access().audit(&caller.actor(), "set_autoscale", "cluster", &result, None);
    result.map(Json)
}

/// Every customer's sticky TraderManager node, as the registry holds it.
async fn assignments(
    State(im): State<ClusterIm>,
    _op: ImOperator,
) -> Result<Json<std::collections::BTreeMap<String, String>>, ApiError> {
    let map = im.registry().assignments().await.map_err(crate::cluster::im::registry_error)?;
    Ok(Json(map))
}

async fn open_session(
    State(im): State<ClusterIm>,
    ImCaller(caller): ImCaller,
    ApiJson(mut req): ApiJson<SessionRequest>,
) -> Result<(StatusCode, Json<Session>), ApiError> {
    caller.session_customer(&mut req.customer)?;
    let opener = match &caller {
        Caller::Customer { token_id: Some(id), .. } => Some((id.as_str(), im.access().validity(id).expires_at())),
        _ => None,
    };
    Ok((StatusCode::CREATED, Json(im.open_session_by(&req, opener).await?)))
}

/// Every node's sessions.
async fn sessions(State(im): State<ClusterIm>, _op: ImOperator) -> Result<Json<serde_json::Value>, ApiError> {
    let mut parts = Vec::new();
    for node in im.candidates().await? {
        // An unreachable node is logged by `forward`.
        if let Ok(f) = im.forward(&node.info, Method::GET, "/v1/sessions", None).await {
            if f.status == 200 {
                parts.push(f.body);
            } else {
                tracing::warn!(node = %node.info.id, status = f.status, "node did not list its sessions; left out");
            }
        }
    }
    Ok(Json(merge_json_arrays(parts)))
}

/// A node's answer, as it came.
fn respond(f: Forwarded) -> Response {
    let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = if f.body.first() == Some(&b'{') || f.body.first() == Some(&b'[') {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    (status, [(axum::http::header::CONTENT_TYPE, content_type)], f.body).into_response()
}

/// A forwarded answer as a result: the node's error when it refused.
fn outcome(f: &Forwarded) -> Result<Option<ServiceInfo>, ErrorDetail> {
    if (200..300).contains(&f.status) {
        return Ok(serde_json::from_slice::<ServiceInfo>(&f.body).ok());
    }
    Err(serde_json::from_slice::<ErrorBody>(&f.body)
        .map(|b| b.error)
        .unwrap_or_else(|_| ErrorDetail::new("node_error", format!("the node answered {}", f.status))))
}

/// Audits an action by its outcome and hands the answer on.
fn audited(
    im: &ClusterIm,
    caller: &Caller,
    action: &str,
    target: &str,
    result: Result<Forwarded, ApiError>,
) -> Result<Forwarded, ApiError> {
    let summary: Result<(), ApiError> = match &result {
        Ok(f) => outcome(f).map(|_| ()).map_err(|e| ApiError::bad_request("refused_by_node", e.message)),
        Err(e) => Err(e.clone()),
    };
    im.access().audit(&caller.actor(), action, target, &summary, None);
    result
}

async fn do_spawn(im: &ClusterIm, mut req: SpawnRequest) -> Result<Forwarded, ApiError> {
    let node = match &req.node {
        Some(id) => {
            let node = im.node(id).await?;
            if node.info.draining {
                return Err(ApiError::conflict(
                    "node_draining",
                    format!("node {id} is draining; undrain it or pick another node"),
                ));
            }
            node
        }
        None => im.choose(None).await?,
    };
    req.node = Some(node.info.id.clone());
    let body = serde_json::to_value(&req).map_err(ApiError::internal)?;
    im.forward(&node.info, Method::POST, "/v1/services", Some(&body)).await
}

async fn service_call(im: &ClusterIm, name: &str, method: Method, suffix: &str) -> Result<Forwarded, ApiError> {
    let (name, node) = im.locate_service(name).await?;
    im.forward(&node.info, method, &format!("/v1/services/{name}{suffix}"), None).await
}

async fn do_set_market(im: &ClusterIm, name: &str, pool: &MarketPool) -> Result<Forwarded, ApiError> {
    let nodes: Vec<_> = im
        .candidates()
        .await?
        .into_iter()
        .filter(|c| c.info.services.iter().any(|s| s.kind == ServiceKind::Market && s.name == name))
        .collect();
    if nodes.is_empty() {
        return Err(ApiError::not_found(
            "unknown_market",
            format!("no market named {name:?}; `lidoctl status` lists them"),
        ));
    }
    let body = serde_json::to_value(pool).map_err(ApiError::internal)?;
    let mut last = None;
    for node in nodes {
        let f = im.forward(&node.info, Method::PUT, &format!("/v1/markets/{name}"), Some(&body)).await?;
        if !(200..300).contains(&f.status) {
            return Ok(f);
        }
        last = Some(f);
    }
    last.ok_or_else(|| ApiError::internal("no market answer"))
}

async fn spawn(
    State(im): State<ClusterIm>,
    ImOperator(caller): ImOperator,
    ApiJson(req): ApiJson<SpawnRequest>,
) -> Result<Response, ApiError> {
    let target = format!("{} {}", req.kind, req.name.as_deref().unwrap_or("(unnamed)"));
    Ok(respond(audited(&im, &caller, "spawn", &target, do_spawn(&im, req).await)?))
}

async fn describe(
    State(im): State<ClusterIm>,
    _op: ImOperator,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(respond(service_call(&im, &name, Method::GET, "").await?))
}

async fn logs(
    State(im): State<ClusterIm>,
    _op: ImOperator,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let query = query.unwrap_or_default();
    if query.split('&').any(|kv| kv == "follow=true" || kv == "follow=1") {
        return Err(ApiError::bad_request(
            "follow_unsupported",
            "an InfrastructureManager does not follow logs; follow them on the node that runs the service",
        ));
    }
    let suffix = if query.is_empty() { "/logs".to_string() } else { format!("/logs?{query}") };
    Ok(respond(service_call(&im, &name, Method::GET, &suffix).await?))
}

async fn stop(
    State(im): State<ClusterIm>,
    ImOperator(caller): ImOperator,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let result = service_call(&im, &name, Method::DELETE, "").await;
    Ok(respond(audited(&im, &caller, "stop", &name, result)?))
}

async fn restart(
    State(im): State<ClusterIm>,
    ImOperator(caller): ImOperator,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let result = service_call(&im, &name, Method::POST, "/restart").await;
    Ok(respond(audited(&im, &caller, "restart", &name, result)?))
}

async fn drain_service(
    State(im): State<ClusterIm>,
    ImOperator(caller): ImOperator,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let result = service_call(&im, &name, Method::POST, "/drain").await;
    Ok(respond(audited(&im, &caller, "drain", &name, result)?))
}

async fn undrain_service(
    State(im): State<ClusterIm>,
    ImOperator(caller): ImOperator,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let result = service_call(&im, &name, Method::POST, "/undrain").await;
    Ok(respond(audited(&im, &caller, "undrain", &name, result)?))
}

async fn drain(
    State(im): State<ClusterIm>,
    ImOperator(caller): ImOperator,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let result = im.set_draining(&id, true).await;
    Ok(respond(audited(&im, &caller, "drain", &id, result)?))
}

async fn undrain(
    State(im): State<ClusterIm>,
    ImOperator(caller): ImOperator,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let result = im.set_draining(&id, false).await;
    Ok(respond(audited(&im, &caller, "undrain", &id, result)?))
}

async fn set_market(
    State(im): State<ClusterIm>,
    ImOperator(caller): ImOperator,
    Path(name): Path<String>,
    ApiJson(pool): ApiJson<MarketPool>,
) -> Result<Response, ApiError> {
    let result = do_set_market(&im, &name, &pool).await;
    Ok(respond(audited(&im, &caller, "set_market", &name, result)?))
}

async fn log_level(
    State(im): State<ClusterIm>,
    ImOperator(caller): ImOperator,
    ApiJson(body): ApiJson<lido_shared::cluster::LogLevel>,
) -> Result<Json<lido_shared::cluster::LogLevel>, ApiError> {
    let result = crate::loglevel::set(&body.filter);
    im.access().audit(&caller.actor(), "log_level", &body.filter, &result, None);
    result?;
    Ok(Json(body))
}

async fn create_token(
    State(im): State<ClusterIm>,
    ImOperator(caller): ImOperator,
    ApiJson(req): ApiJson<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let result = im.access().create(&req).await;
    let target = result.as_ref().map_or("-".to_string(), |c| c.info.id.clone());
    im.access().audit(&caller.actor(), "token_create", &target, &result, Some(&format!("role {}", req.role)));
    Ok((StatusCode::CREATED, Json(result?)))
}

async fn list_tokens(State(im): State<ClusterIm>, _op: ImOperator) -> Json<Vec<TokenInfo>> {
    Json(im.access().list())
}

async fn revoke_token(
    State(im): State<ClusterIm>,
    ImOperator(caller): ImOperator,
    Path(id): Path<String>,
) -> Result<Json<TokenInfo>, ApiError> {
    let result = im.access().revoke(&id).await;
    let detail = match &result {
        Ok(_) => Some(end_sessions_everywhere(&im, &id).await),
        Err(_) => None,
    };
    im.access().audit(&caller.actor(), "token_revoke", &id, &result, detail.as_deref());
    Ok(Json(result?))
}

/// Tells every node to end the sessions (and their streams) the token `id`
/// opened; says how many ended and which nodes could not be told (their
/// sessions end when they next check the token: never, so this is logged).
async fn end_sessions_everywhere(im: &ClusterIm, id: &str) -> String {
    let Ok(nodes) = im.candidates().await else {
        tracing::warn!(token = id, "cannot list the nodes to end the revoked token's sessions");
        return "nodes unknown: sessions not ended".into();
    };
    let (mut ended, mut missed) = (0u64, Vec::new());
    for node in nodes {
        let path = format!("/v1/tokens/{id}/sessions");
        match im.forward(&node.info, Method::DELETE, &path, None).await {
            Ok(f) if f.status == 200 => {
                ended += serde_json::from_slice::<serde_json::Value>(&f.body)
                    .ok()
                    .and_then(|v| v["ended"].as_u64())
                    .unwrap_or(0);
            }
            Ok(f) => {
                tracing::warn!(node = %node.info.id, status = f.status, token = id, "node did not end the revoked token's sessions");
                missed.push(node.info.id.clone());
            }
            Err(_) => missed.push(node.info.id.clone()),
        }
    }
    if missed.is_empty() {
        format!("{ended} sessions ended")
    } else {
        format!("{ended} sessions ended; not told: {}", missed.join(", "))
    }
}

async fn audit(
    State(im): State<ClusterIm>,
    _op: ImOperator,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Vec<AuditRecord>>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad_request("invalid_query", format!("limit must be between 1 and 10000, got {limit}")));
    }
    Ok(Json(im.access().audit_log(q.since, limit).await?))
}

/// Snapshot first, then numbered events (the IM's own and every node's);
/// takes the same commands as a node's watch, with correlated replies.
async fn watch(State(im): State<ClusterIm>, ImOperator(caller): ImOperator, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(64 * 1024).max_frame_size(64 * 1024).on_upgrade(move |socket| watch_session(im, caller, socket))
}

async fn watch_session(im: ClusterIm, caller: Caller, socket: WebSocket) {
    let (mut sink, mut source) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<WatchMessage>(1024);
    let writer = tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            let Ok(text) = serde_json::to_string(&msg) else { continue };
            if sink.send(Message::Text(text.into())).await.is_err() {
                break;
            }
        }
    });
    let closing = im.closing().clone();
    let mut resync = true;
    let (mut events, mut seq) = im.bus().subscribe();
    loop {
        if resync {
            resync = false;
            let (rx, s) = im.bus().subscribe();
            (events, seq) = (rx, s);
            let Ok(snapshot) = im.snapshot().await else { break };
            if out_tx.send(WatchMessage::Snapshot { seq, snapshot }).await.is_err() {
                break;
            }
        }
        tokio::select! {
            _ = closing.cancelled() => break,
            ev = events.recv() => match ev {
                Ok(ev) if ev.seq <= seq => {}
                Ok(ev) => {
                    seq = ev.seq;
                    if out_tx.send(WatchMessage::Event { seq: ev.seq, ts: ev.ts, event: ev.event }).await.is_err() { break; }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => resync = true,
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
                    Ok(WatchCommand::Snapshot { id }) => {
                        let _ = out_tx.send(WatchMessage::Reply { id, ok: true, service: None, error: None }).await;
                        resync = true;
                    }
                    Ok(WatchCommand::Follow { id, .. }) => {
                        let error = ErrorDetail::new("not_a_node", "order flow is followed on a node's own watch");
                        let _ = out_tx.send(WatchMessage::Reply { id, ok: false, service: None, error: Some(error) }).await;
                    }
                    Ok(cmd) => {
                        let (im, caller, out) = (im.clone(), caller.clone(), out_tx.clone());
                        tokio::spawn(async move {
                            let reply = execute(&im, &caller, cmd).await;
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

async fn execute(im: &ClusterIm, caller: &Caller, cmd: WatchCommand) -> WatchMessage {
    let id = cmd.id();
    let result = match cmd {
        WatchCommand::Spawn { request, .. } => {
            let target = format!("{} {}", request.kind, request.name.as_deref().unwrap_or("(unnamed)"));
            audited(im, caller, "spawn", &target, do_spawn(im, request).await)
        }
        WatchCommand::Stop { name, .. } => {
            audited(im, caller, "stop", &name, service_call(im, &name, Method::DELETE, "").await)
        }
        WatchCommand::Restart { name, .. } => {
            audited(im, caller, "restart", &name, service_call(im, &name, Method::POST, "/restart").await)
        }
        WatchCommand::Drain { node, .. } => audited(im, caller, "drain", &node, im.set_draining(&node, true).await),
        WatchCommand::Undrain { node, .. } => {
            audited(im, caller, "undrain", &node, im.set_draining(&node, false).await)
        }
        WatchCommand::DrainService { name, .. } => {
            audited(im, caller, "drain", &name, service_call(im, &name, Method::POST, "/drain").await)
        }
        WatchCommand::UndrainService { name, .. } => {
            audited(im, caller, "undrain", &name, service_call(im, &name, Method::POST, "/undrain").await)
        }
        WatchCommand::SetMarket { name, pool, .. } => {
            audited(im, caller, "set_market", &name, do_set_market(im, &name, &pool).await)
        }
        WatchCommand::Snapshot { .. } | WatchCommand::Follow { .. } => {
            return WatchMessage::Reply { id, ok: true, service: None, error: None }
        }
    };
    let outcome = result.map_err(|e| e.body().error).and_then(|f| outcome(&f));
    match outcome {
        Ok(service) => WatchMessage::Reply { id, ok: true, service, error: None },
        Err(error) => WatchMessage::Reply { id, ok: false, service: None, error: Some(error) },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::Request;
    use lido_shared::access::Secret;
    use tokio_util::sync::CancellationToken;
    use tower::ServiceExt;

    use super::*;
    use crate::cluster::im::ImParts;
    use crate::cluster::MemoryRegistry;

    fn im() -> ClusterIm {
        ClusterIm::new(ImParts {
            id: "im1".into(),
            registry: Arc::new(MemoryRegistry::new()),
            access: crate::auth::Access::open(AuthMode::Open, None).unwrap(),
            cluster_secret: Secret::new("s3cret"),
            node_ttl: Duration::from_secs(5),
            after_hours: None,
            closing: CancellationToken::new(),
        })
        .unwrap()
    }

    async fn call(request: Request<Body>) -> (StatusCode, serde_json::Value) {
        let response = router(im()).oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    fn post(path: &str) -> axum::http::request::Builder {
        Request::post(path).header("content-type", "application/json")
    }

    #[tokio::test]
    async fn an_im_refuses_algo_calls_checkins_without_the_secret_and_sessions_without_nodes() {
        let (status, body) =
            call(Request::get("/v1/quotes?market=paper&symbol=BTC/USD").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code"], "not_a_node");

        let checkin = r#"{"info":{"id":"n1","location":"ny","draining":false,"api_url":"http://127.0.0.1:1","managers":[],"services":[],"load":{"sessions":0,"streams":0,"open_orders":0}},"watch_url":"ws://127.0.0.1:1/v1/cluster/watch"}"#;
        let (status, _) = call(post("/v1/nodes/checkin").body(Body::from(checkin)).unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let with_secret =
            post("/v1/nodes/checkin").header(CLUSTER_SECRET_HEADER, "s3cret").body(Body::from(checkin)).unwrap();
        let (status, body) = call(with_secret).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, serde_json::json!({"accepted": true, "draining": false, "stop": false}));

        let session = r#"{"customer":"acme"}"#;
        let (status, body) = call(post("/v1/sessions").body(Body::from(session)).unwrap()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "no_node_available");
        assert!(body["error"]["message"].as_str().unwrap().contains("no node has checked in"), "{body}");
    }
}
