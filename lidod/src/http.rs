//! The one HTTP/WebSocket listener of a node: the algo API (MarketManager),
//! the operator API (InfrastructureManager), service check-ins, health and
//! the OpenAPI document.

mod access;
mod algo;
pub mod im;
mod openapi;
mod operator;
mod stream;

use axum::extract::{DefaultBodyLimit, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use lido_shared::api::MAX_BODY_BYTES;
use lido_shared::client::agent::{SERVICE_KEY_ENV, SERVICE_KEY_HEADER};
use lido_shared::cluster::ServiceKind;
use lido_shared::pipe::{CheckIn, CheckInReply, CHECKIN_PATH};
use tower_http::trace::TraceLayer;

use crate::auth::{AuthMode, Caller};
use crate::error::{ApiError, ApiJson};
use crate::infra::Infra;

/// Builds the node's router.
pub fn router(infra: Infra) -> Router {
    Router::new()
        .merge(algo::routes())
        .merge(operator::routes())
        .merge(access::routes())
        .route("/v1/stream", get(stream::upgrade))
        .route(CHECKIN_PATH, post(checkin))
        .route("/v1/node/shutdown", post(shutdown_node))
        .route("/v1/openapi.json", get(openapi::document))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn(timed))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .with_state(infra)
}

/// Records `lido_http_request_seconds{method, route}`: from the request's
/// arrival at its route to the answer's head (a stream's or a log's body
/// is not timed). The route is the pattern (`/v1/orders/{order_id}`), never
/// an id.
async fn timed(path: MatchedPath, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = method_label(request.method());
    let response = next.run(request).await;
    let route = path.as_str().to_owned();
    metrics::histogram!("lido_http_request_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The method as a static label (no allocation per request); the API
/// serves no other methods, so anything else is `other`.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        _ => "other",
    }
}

async fn healthz(State(infra): State<Infra>) -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok", "node": infra.node_id(), "draining": infra.is_draining()}))
}

/// Prometheus text exposition; the load gauges are read now. Operators
/// only (in open mode the local caller is one).
async fn metrics(State(infra): State<Infra>, _operator: Operator) -> Result<String, ApiError> {
    let node = infra.node_info();
    metrics::gauge!("lido_sessions").set(node.load.sessions as f64);
    metrics::gauge!("lido_streams_open").set(node.load.streams as f64);
    let (queued, deepest) = infra.markets().stream_queues();
    metrics::gauge!("lido_stream_queue_depth").set(queued as f64);
    metrics::gauge!("lido_stream_queue_depth_max").set(deepest as f64);
    metrics::gauge!("lido_orders_open").set(node.load.open_orders as f64);
    for s in &node.services {
        let up = f64::from(u8::from(s.state == lido_shared::cluster::ServiceState::Running));
        metrics::gauge!("lido_service_up", "service" => s.name.clone(), "kind" => s.kind.as_str()).set(up);
        record_service_figures(s);
    }
    crate::metrics::render()
        .ok_or_else(|| ApiError::unavailable("metrics_unavailable", "no metrics recorder in this process"))
}

/// The figures a service reports that have a series of their own: a
/// broker's venue connections and subscriptions (from its `Metrics` event),
/// a Schwab broker's refresh token time left,
/// a market's feed listeners.
fn record_service_figures(s: &lido_shared::cluster::ServiceInfo) {
    let figure = |name: &str| s.metrics.get(name).copied();
    match s.kind {
        ServiceKind::Broker => {
            let sockets = [figure("venue_connections"), figure("executions_connected")];
            if sockets.iter().any(Option::is_some) {
                let open = sockets.iter().flatten().sum::<f64>();
                metrics::gauge!("lido_venue_connections", "broker" => s.name.clone(), "venue" => s.service_type.clone())
                    .set(open);
            }
            if let Some(n) = figure("refresh_token_expiry_seconds") {
                metrics::gauge!("lido_schwab_refresh_token_expiry_seconds", "broker" => s.name.clone()).set(n);
            }
            if let Some(n) = figure("ws_subscriptions") {
                metrics::gauge!("lido_venue_subscriptions", "broker" => s.name.clone(), "venue" => s.service_type.clone())
                    .set(n);
            }
        }
        ServiceKind::Market => {
            if let Some(n) = figure("listeners") {
                metrics::gauge!("lido_market_listeners", "market" => s.name.clone()).set(n);
            }
        }
        ServiceKind::Trader => {}
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such endpoint; GET /v1/openapi.json lists the API")
}

/// A service checks in; it must prove the cluster secret, or be a hosted
/// trader proving its own check-in key for its own name.
async fn checkin(
    State(infra): State<Infra>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CheckIn>,
) -> Result<Json<CheckInReply>, ApiError> {
    let proven = match headers.get(SERVICE_KEY_HEADER) {
        Some(key) if !headers.contains_key(lido_shared::access::CLUSTER_SECRET_HEADER) => {
            let ours = body.kind == ServiceKind::Trader && infra.traders().key_matches(&body.name, key.as_bytes());
            if ours {
                Ok(())
            } else {
                Err(ApiError::unauthorized(format!(
                    "this check-in key is not the one of trader {:?}'s current start; a hosted trader checks in \
                     only as itself, with the {SERVICE_KEY_ENV} its TraderManager gave it",
                    body.name
                )))
            }
        }
        _ => crate::auth::secret::check(&headers, infra.cluster_secret()),
    };
    if let Err(e) = proven {
        tracing::warn!(service = %body.name, reason = %e.message, "check-in refused");
        return Err(e);
    }
    infra.checkin(body)?;
    Ok(Json(CheckInReply { accepted: true, node: infra.node_id().to_string() }))
}

/// An InfrastructureManager stops this node (idle, draining, after hours):
/// the same orderly shutdown as SIGTERM. Cluster secret only.
async fn shutdown_node(State(infra): State<Infra>, headers: HeaderMap) -> Result<Json<serde_json::Value>, ApiError> {
    crate::auth::secret::check(&headers, infra.cluster_secret())?;
    tracing::info!(node = %infra.node_id(), "the InfrastructureManager asked this node to stop; shutting down");
    infra.closing().cancel();
    Ok(Json(serde_json::json!({"status": "stopping", "node": infra.node_id()})))
}

/// Who is calling, from `Authorization: Bearer …`: an API token, or a
/// session id from `POST /v1/sessions`. Without a header: the local operator
/// in open mode, 401 in tokens mode.
impl FromRequestParts<Infra> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, infra: &Infra) -> Result<Self, Self::Rejection> {
        // An InfrastructureManager proves the cluster secret instead.
        if parts.headers.contains_key(lido_shared::access::CLUSTER_SECRET_HEADER) {
            crate::auth::secret::check(&parts.headers, infra.cluster_secret())?;
            return Ok(Caller::Im);
        }
        let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
            return match infra.access().mode() {
                AuthMode::Open => Ok(Caller::Local),
                AuthMode::Tokens => Err(ApiError::unauthorized(
                    "this node requires a token: send `Authorization: Bearer <token>`; an operator creates one with `lidoctl token create`",
                )),
            };
        };
        let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim).ok_or_else(|| {
            ApiError::unauthorized("use `Authorization: Bearer <token>` with an API token or a session id")
        })?;
        if let Some(verified) = infra.access().verify(token) {
            return verified;
        }
        let session = infra.sessions().customer_of(token).ok_or_else(|| {
            ApiError::unauthorized(
                "unknown token or session; open a session with POST /v1/sessions or ask an operator for a token",
            )
        })?;
        session.validity.check()?;
        Ok(Caller::Customer { customer: session.customer, token_id: session.opened_by })
    }
}

/// How long the credential of a request stays good: its session's, its API
/// token's, or for ever (open mode's local caller, an IM).
pub fn validity(infra: &Infra, headers: &HeaderMap, caller: &Caller) -> crate::auth::Validity {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if let Some(session) = bearer.and_then(|t| infra.sessions().customer_of(t)) {
        return session.validity;
    }
    match caller {
        Caller::Operator { token_id, .. } | Caller::Customer { token_id: Some(token_id), .. } => {
            infra.access().validity(token_id)
        }
        Caller::Local | Caller::Im | Caller::Customer { token_id: None, .. } => crate::auth::Validity::default(),
    }
}

/// The customer acting: a customer token or session, or `default` for the
/// local caller in open mode. Operator tokens get 403: they have no account.
pub struct Customer(pub String);

impl FromRequestParts<Infra> for Customer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, infra: &Infra) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, infra).await?;
        caller.customer().map(|c| Self(c.to_string()))
    }
}

/// An operator: 403 for customers.
pub struct Operator(pub Caller);

impl FromRequestParts<Infra> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, infra: &Infra) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, infra).await?;
        caller.require_operator()?;
        Ok(Self(caller))
    }
}
