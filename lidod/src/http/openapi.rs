//! The OpenAPI document, generated from the handlers and wire types.

use axum::Json;
use utoipa::OpenApi;

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
        operator::spawn,
        operator::stop,
        operator::restart,
        operator::drain,
        operator::undrain,
        access::create_token,
        access::list_tokens,
        access::revoke_token,
        access::audit,
        operator::log_level,
    ),
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

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
