//! The one HTTP/WebSocket listener of a node: the algo API (MarketManager),
//! the operator API (InfrastructureManager), service check-ins, health and
//! the OpenAPI document.

mod algo;
mod openapi;
mod operator;
mod stream;

use axum::extract::{DefaultBodyLimit, FromRequestParts, State};
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::{Json, Router};
use lido_shared::api::MAX_BODY_BYTES;
use lido_shared::pipe::{CheckIn, CheckInReply, CHECKIN_PATH};
use tower_http::trace::TraceLayer;

use crate::error::{ApiError, ApiJson};
use crate::infra::Infra;

/// Builds the node's router.
pub fn router(infra: Infra) -> Router {
    Router::new()
        .merge(algo::routes())
        .merge(operator::routes())
        .route("/v1/stream", get(stream::upgrade))
        .route(CHECKIN_PATH, post(checkin))
        .route("/v1/openapi.json", get(openapi::document))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .with_state(infra)
}

async fn healthz(State(infra): State<Infra>) -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok", "node": infra.node_id(), "draining": infra.is_draining()}))
}

/// Prometheus text exposition; the load gauges are read now.
async fn metrics(State(infra): State<Infra>) -> Result<String, ApiError> {
    let node = infra.node_info();
    metrics::gauge!("lido_sessions").set(node.load.sessions as f64);
    metrics::gauge!("lido_streams_open").set(node.load.streams as f64);
    metrics::gauge!("lido_orders_open").set(node.load.open_orders as f64);
    for s in &node.services {
        let up = f64::from(u8::from(s.state == lido_shared::cluster::ServiceState::Running));
        metrics::gauge!("lido_service_up", "service" => s.name.clone(), "kind" => s.kind.as_str()).set(up);
    }
    crate::metrics::render()
        .ok_or_else(|| ApiError::unavailable("metrics_unavailable", "no metrics recorder in this process"))
}

async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such endpoint; GET /v1/openapi.json lists the API")
}

async fn checkin(State(infra): State<Infra>, ApiJson(body): ApiJson<CheckIn>) -> Result<Json<CheckInReply>, ApiError> {
    infra.checkin(body)?;
    Ok(Json(CheckInReply { accepted: true, node: infra.node_id().to_string() }))
}

/// The customer acting: named by the session token in
/// `Authorization: Bearer …`. Without a token, the local `default` customer.
pub struct Customer(pub String);

impl FromRequestParts<Infra> for Customer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, infra: &Infra) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
            return Ok(Self("default".to_string()));
        };
        let token =
            value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).ok_or_else(|| {
                ApiError::unauthorized("use `Authorization: Bearer <session_id>` from POST /v1/sessions")
            })?;
        infra
            .sessions()
            .customer_of(token.trim())
            .map(Self)
            .ok_or_else(|| ApiError::unauthorized("unknown or expired session; open one with POST /v1/sessions"))
    }
}
