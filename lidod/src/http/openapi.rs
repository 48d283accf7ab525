//! The OpenAPI document, generated from the handlers and wire types.
//!
//! Each handler documents the answers particular to it; [`CommonErrors`]
//! adds those that come from the extractors every route of a kind shares,
//! so the document lists every status a route can answer (schemathesis
//! checks that): 401 everywhere (a `Caller` is resolved first), 403 where
//! an `Operator` or `Customer` is required, 400 where a query is read, and
//! 400, 413 and 415 where a JSON body is.

use axum::Json;
use utoipa::openapi::path::Operation;
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::{access, algo, operator};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Lido",
        description = "Algo API (MarketManager) and operator API (InfrastructureManager) of a Lido node. \
        Errors are `{\"error\":{\"code\",\"message\"}}`; prices and quantities are decimal strings. \
        The WebSocket streams are /v1/stream (algo) and /v1/cluster/watch (operator). \
        Authenticate with `Authorization: Bearer <token>` (an API token or a session id); \
        in open mode (loopback only) a request without one acts as the local operator."
    ),
    paths(
        algo::open_session,
        algo::markets,
        algo::instruments,
        algo::quote,
        algo::book,
        algo::place_order,
        algo::list_orders,
        algo::get_order,
        algo::cancel_order,
        algo::fills,
        algo::positions,
        algo::balances,
        operator::cluster,
        operator::sessions,
        operator::describe,
        operator::spawn,
        operator::stop,
        operator::restart,
        operator::drain,
        operator::undrain,
        operator::drain_service,
        operator::undrain_service,
        operator::set_market,
        access::create_token,
        access::list_tokens,
        access::revoke_token,
        access::end_sessions,
        access::audit,
        operator::log_level,
        operator::autoscale,
    ),
    modifiers(&CommonErrors),
    components(schemas(
        lido_shared::api::ClientMessage,
        lido_shared::api::ServerMessage,
        lido_shared::api::StreamEvent,
        lido_shared::cluster::WatchCommand,
        lido_shared::cluster::WatchMessage,
        lido_shared::model::Trade,
    ))
)]
pub struct ApiDoc;

/// Tags whose routes take an `Operator` or a `Customer` (403 for the other).
const RESTRICTED_TAGS: &[&str] = &["operator", "access", "orders", "account"];

/// Adds the answers of the shared extractors (see the module docs).
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete];
            for operation in operations.into_iter().flatten() {
                add_common_errors(operation);
            }
        }
    }
}

fn add_common_errors(op: &mut Operation) {
    let mut add = |status: &str, why: &str| {
        if !op.responses.responses.contains_key(status) {
            let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
            let response = ResponseBuilder::new().description(why).content("application/json", content).build();
            op.responses.responses.insert(status.to_string(), response.into());
        }
    };
    add("401", "no token, or an unknown one (token mode)");
    let tags = op.tags.clone().unwrap_or_default();
    if tags.iter().any(|t| RESTRICTED_TAGS.contains(&t.as_str())) {
        add("403", "the token's role may not do this");
    }
    let has_query = op.parameters.iter().flatten().any(|p| p.parameter_in == utoipa::openapi::path::ParameterIn::Query);
    if has_query {
        add("400", "a query parameter is missing or invalid");
    }
    if op.request_body.is_some() {
        add("400", "the body is not the documented JSON");
        add("413", "the body is larger than the limit");
        add("415", "the body is not sent as application/json");
    }
}

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
