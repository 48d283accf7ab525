//! Algo REST API, served by the MarketManager. Market data is open to any
//! caller (operators too); orders, fills and accounts are the customer's
//! own; orders pass [`crate::limits`] before they reach the MarketManager.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use lido_shared::api::{
    AccountQuery, MarketInfo, MarketQuery, OrdersQuery, PlaceOrder, Session, SessionRequest, SymbolQuery,
};
use lido_shared::model::{Balance, Book, Fill, Instrument, Order, Position, Quote};
use lido_shared::ErrorBody;

use super::Customer;
use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::infra::Infra;

pub fn routes() -> Router<Infra> {
    Router::new()
        .route("/v1/sessions", post(open_session).get(super::operator::sessions))
        .route("/v1/markets", get(markets))
        .route("/v1/instruments", get(instruments))
        .route("/v1/quotes", get(quote))
        .route("/v1/book", get(book))
        .route("/v1/orders", post(place_order).get(list_orders))
        .route("/v1/orders/{order_id}", get(get_order).delete(cancel_order))
        .route("/v1/fills", get(fills))
        .route("/v1/positions", get(positions))
        .route("/v1/balances", get(balances))
}

/// Opens a session for a customer and names the node to use.
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", request_body = SessionRequest,
    responses((status = 201, body = Session), (status = 400, body = ErrorBody),
        (status = 503, description = "no node, or the customer's orders are being reconciled with the venue", body = ErrorBody)))]
pub async fn open_session(
    State(infra): State<Infra>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    ApiJson(mut req): ApiJson<SessionRequest>,
) -> Result<(StatusCode, Json<Session>), ApiError> {
    caller.session_customer(&mut req.customer)?;
    // An IM forwards the asking token's id and expiry (it proved the cluster
    // secret, so they are believed): revoking the token there ends the
    // session here, and it expires with the token.
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (opened_by, expires_at) = match &caller {
        Caller::Im => {
            let expires_at = header(crate::auth::EXPIRES_AT_HEADER)
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&chrono::Utc));
            (header(crate::auth::OPENED_BY_HEADER), expires_at)
        }
        Caller::Local | Caller::Operator { .. } => (None, None),
        Caller::Customer { token_id, .. } => (token_id.clone(), None),
    };
    // The customer may come from another node (its orders are at the venue):
    // take them on before the session is used.
    if !req.customer.is_empty() {
        infra.markets().reconcile_customer(&req.customer, None).await?;
    }
    let session = infra.open_session(&req, opened_by.as_deref())?;
    let validity = super::validity(&infra, &headers, &caller);
    if let Some(at) = expires_at.or(validity.expires_at()) {
        infra.sessions().set_expiry(&session.session_id, at);
    }
    Ok((StatusCode::CREATED, Json(session)))
}

/// Markets of this node, with symbols and broker pools.
#[utoipa::path(get, path = "/v1/markets", tag = "market data", responses((status = 200, body = Vec<MarketInfo>)))]
pub async fn markets(State(infra): State<Infra>, _caller: Caller) -> Json<Vec<MarketInfo>> {
    Json(infra.markets().markets())
}

/// What a market trades, with tick and lot sizes.
#[utoipa::path(get, path = "/v1/instruments", tag = "market data", params(MarketQuery),
    responses((status = 200, body = Vec<Instrument>), (status = 404, body = ErrorBody)))]
pub async fn instruments(
    State(infra): State<Infra>,
    _caller: Caller,
    ApiQuery(q): ApiQuery<MarketQuery>,
) -> Result<Json<Vec<Instrument>>, ApiError> {
    Ok(Json(infra.markets().instruments(&q.market).await?))
}

/// Quote snapshot.
#[utoipa::path(get, path = "/v1/quotes", tag = "market data", params(SymbolQuery),
    responses((status = 200, body = Quote), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn quote(
    State(infra): State<Infra>,
    _caller: Caller,
    ApiQuery(q): ApiQuery<SymbolQuery>,
) -> Result<Json<Quote>, ApiError> {
    Ok(Json(infra.markets().quote(&q.market, &q.symbol).await?))
}

/// Order book snapshot.
#[utoipa::path(get, path = "/v1/book", tag = "market data", params(SymbolQuery),
    responses((status = 200, body = Book), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn book(
    State(infra): State<Infra>,
    _caller: Caller,
    ApiQuery(q): ApiQuery<SymbolQuery>,
) -> Result<Json<Book>, ApiError> {
    let depth = q.depth.unwrap_or(10);
    if !(1..=100).contains(&depth) {
        return Err(ApiError::bad_request("invalid_query", format!("depth must be between 1 and 100, got {depth}")));
    }
    Ok(Json(infra.markets().book(&q.market, &q.symbol, depth).await?))
}

/// Places an order. The same `client_order_id` again answers 200 with the first order.
#[utoipa::path(post, path = "/v1/orders", tag = "orders", request_body = PlaceOrder,
    responses((status = 201, description = "placed", body = Order), (status = 200, description = "client_order_id seen before: the first order", body = Order),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "open_orders_per_customer reached", body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, description = "a pre-trade risk check failed", body = ErrorBody), (status = 429, description = "orders_per_second reached", body = ErrorBody),
        (status = 503, description = "the market is reconciling with its venue, or no broker is up", body = ErrorBody)))]
pub async fn place_order(
    State(infra): State<Infra>,
    Customer(customer): Customer,
    ApiJson(req): ApiJson<PlaceOrder>,
) -> Result<(StatusCode, Json<Order>), ApiError> {
    let (order, status) = place(&infra, &customer, req).await?;
    Ok((status, Json(order)))
}

/// A customer's order through the limits and risk checks, then the
/// MarketManager; 201 for a new order, 200 for the one its client order id
/// placed before. REST and the stream's `place_order` both come here.
pub(super) async fn place(infra: &Infra, customer: &str, req: PlaceOrder) -> Result<(Order, StatusCode), ApiError> {
    infra.limits().check_order(infra.markets(), customer, &req).await?;
    let (order, created) = infra.markets().place(customer, req).await?;
    Ok((order, if created { StatusCode::CREATED } else { StatusCode::OK }))
}

/// The customer's orders; `status=open` for working ones.
#[utoipa::path(get, path = "/v1/orders", tag = "orders", params(OrdersQuery),
    responses((status = 200, body = Vec<Order>), (status = 400, body = ErrorBody), (status = 404, description = "no such market", body = ErrorBody),
        (status = 503, description = "the customer's orders are being reconciled with the venue", body = ErrorBody)))]
pub async fn list_orders(
    State(infra): State<Infra>,
    Customer(customer): Customer,
    ApiQuery(q): ApiQuery<OrdersQuery>,
) -> Result<Json<Vec<Order>>, ApiError> {
    Ok(Json(infra.markets().list_orders(&customer, &q).await?))
}

/// One order.
#[utoipa::path(get, path = "/v1/orders/{order_id}", tag = "orders", params(("order_id" = String, Path)),
    responses((status = 200, body = Order), (status = 404, body = ErrorBody),
        (status = 503, description = "the customer's orders are being reconciled with the venue", body = ErrorBody)))]
pub async fn get_order(
    State(infra): State<Infra>,
    Customer(customer): Customer,
    Path(order_id): Path<String>,
) -> Result<Json<Order>, ApiError> {
    Ok(Json(infra.markets().find_order(&customer, &order_id).await?))
}

/// Cancels an open order.
#[utoipa::path(delete, path = "/v1/orders/{order_id}", tag = "orders", params(("order_id" = String, Path)),
    responses((status = 200, body = Order), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 503, description = "neither the order's broker nor a sibling on its venue account is connected", body = ErrorBody)))]
pub async fn cancel_order(
    State(infra): State<Infra>,
    Customer(customer): Customer,
    Path(order_id): Path<String>,
) -> Result<Json<Order>, ApiError> {
    Ok(Json(infra.markets().cancel(&customer, &order_id).await?))
}

/// The customer's fills.
#[utoipa::path(get, path = "/v1/fills", tag = "orders", responses((status = 200, body = Vec<Fill>)))]
pub async fn fills(State(infra): State<Infra>, Customer(customer): Customer) -> Json<Vec<Fill>> {
    Json(infra.markets().fills(&customer))
}

/// The customer's positions at a market's venue account.
#[utoipa::path(get, path = "/v1/positions", tag = "account", params(AccountQuery), responses((status = 200, body = Vec<Position>), (status = 404, body = ErrorBody)))]
pub async fn positions(
    State(infra): State<Infra>,
    Customer(customer): Customer,
    ApiQuery(q): ApiQuery<AccountQuery>,
) -> Result<Json<Vec<Position>>, ApiError> {
    Ok(Json(infra.markets().positions(&customer, q.market.as_deref()).await?))
}

/// The customer's balances at a market's venue account.
#[utoipa::path(get, path = "/v1/balances", tag = "account", params(AccountQuery), responses((status = 200, body = Vec<Balance>), (status = 404, body = ErrorBody)))]
pub async fn balances(
    State(infra): State<Infra>,
    Customer(customer): Customer,
    ApiQuery(q): ApiQuery<AccountQuery>,
) -> Result<Json<Vec<Balance>>, ApiError> {
    Ok(Json(infra.markets().balances(&customer, q.market.as_deref()).await?))
}
