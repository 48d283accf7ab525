//! Operator API for access control: API tokens and the audit log.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use lido_shared::access::{AuditQuery, AuditRecord, CreateToken, CreatedToken, TokenInfo};
use lido_shared::ErrorBody;

use super::Operator;
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::infra::Infra;

/// Most audit records one call returns.
const AUDIT_MAX: usize = 10_000;

pub fn routes() -> Router<Infra> {
    Router::new()
        .route("/v1/tokens", get(list_tokens).post(create_token))
        .route("/v1/tokens/{id}", delete(revoke_token))
        .route("/v1/tokens/{id}/sessions", delete(end_sessions))
        .route("/v1/audit", get(audit))
}

/// Creates a token; the answer is the only time its secret is shown.
#[utoipa::path(post, path = "/v1/tokens", tag = "access", request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create_token(
    State(infra): State<Infra>,
    Operator(caller): Operator,
    ApiJson(req): ApiJson<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let access = infra.access();
    let result = access.create(&req).await;
    let target = result.as_ref().map_or("-".to_string(), |c| c.info.id.clone());
    let detail = match (&req.customer, &req.name) {
        (Some(c), _) => format!("role {} customer {c}", req.role),
        (None, Some(n)) => format!("role {} name {n}", req.role),
        (None, None) => format!("role {}", req.role),
    };
    access.audit(&caller.actor(), "token_create", &target, &result, Some(&detail));
    Ok((StatusCode::CREATED, Json(result?)))
}

/// Every token, revoked ones too; never their secrets.
#[utoipa::path(get, path = "/v1/tokens", tag = "access",
    responses((status = 200, body = Vec<TokenInfo>), (status = 403, body = ErrorBody)))]
pub async fn list_tokens(State(infra): State<Infra>, _operator: Operator) -> Json<Vec<TokenInfo>> {
    Json(infra.access().list())
}

/// Revokes a token at once and ends the sessions it opened.
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "access", params(("id" = String, Path)),
    responses((status = 200, body = TokenInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_token(
    State(infra): State<Infra>,
    Operator(caller): Operator,
    Path(id): Path<String>,
) -> Result<Json<TokenInfo>, ApiError> {
    let result = infra.access().revoke(&id).await;
    let detail = result.as_ref().ok().map(|_| format!("{} sessions ended", infra.sessions().close_opened_by(&id)));
    infra.access().audit(&caller.actor(), "token_revoke", &id, &result, detail.as_deref());
    Ok(Json(result?))
}

/// Operator actions, oldest first.
#[utoipa::path(get, path = "/v1/audit", tag = "access", params(AuditQuery),
    responses((status = 200, body = Vec<AuditRecord>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn audit(
    State(infra): State<Infra>,
    _operator: Operator,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Vec<AuditRecord>>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=AUDIT_MAX).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {AUDIT_MAX}, got {limit}"),
        ));
    }
    Ok(Json(infra.access().audit_log(q.since, limit).await?))
}

/// Ends the sessions the token `id` opened on this node, and their streams
/// (an IM calls this on every node when it revokes a token of its own).
#[utoipa::path(delete, path = "/v1/tokens/{id}/sessions", tag = "access", params(("id" = String, Path)),
    responses((status = 200, description = "`{\"ended\": N}`"), (status = 403, body = ErrorBody)))]
pub async fn end_sessions(
    State(infra): State<Infra>,
    Operator(caller): Operator,
    Path(id): Path<String>,
) -> Json<serde_json::Value> {
    let ended = infra.sessions().close_opened_by(&id);
    if ended > 0 {
        tracing::info!(token = %id, ended, actor = %caller.actor(), "sessions of a revoked token ended");
    }
    Json(serde_json::json!({ "ended": ended }))
}
