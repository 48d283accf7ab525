//! Access control on the wire: API tokens (`/v1/tokens`), the audit log of
//! operator actions (`/v1/audit`), the cluster-secret header of the service
//! protocol, and [`Secret`], a string that never prints.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Header carrying the cluster secret on check-ins and on the pipe dial.
pub const CLUSTER_SECRET_HEADER: &str = "lido-cluster-secret";
/// Environment variable that hands the cluster secret to a service process.
pub const CLUSTER_SECRET_ENV: &str = "LIDO_CLUSTER_SECRET";

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Runs the cluster: spawn, stop, drain, tokens, audit; reads market data.
    Operator,
    /// Trades for one customer: its own sessions, orders, fills, positions.
    Customer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::Customer => "customer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /v1/tokens`: a customer token names its customer; an operator token
/// has none. Either may carry a name for the audit log. Its schema says
/// so (one of the two shapes), see [`CreateToken::schema`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub role: Role,
    #[serde(default)]
    pub customer: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// When the token stops working (RFC 3339, in the future); none: until revoked.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

impl utoipa::ToSchema for CreateToken {}

impl utoipa::PartialSchema for CreateToken {
    /// One of `{"role":"customer","customer":"acme"}` (customer: 1-64 of
    /// `A-Z a-z 0-9 - _ .`) and `{"role":"operator"}`, each with an
    /// optional `name` of 1-64 printable characters (or null) and an optional
    /// `expires_at` (RFC 3339, or null), nothing else.
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, SchemaType, Type};
        let string = |pattern: &str| ObjectBuilder::new().schema_type(Type::String).pattern(Some(pattern));
        let shape = |role: &str| {
            let name = ObjectBuilder::new()
                .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                .pattern(Some(r"^[^\u0000-\u001f\u007f-\u009f]{1,64}$"));
            let expires_at =
                ObjectBuilder::new().schema_type(SchemaType::from_iter([Type::String, Type::Null])).format(Some(
                    utoipa::openapi::schema::SchemaFormat::KnownFormat(utoipa::openapi::schema::KnownFormat::DateTime),
                ));
            ObjectBuilder::new()
                .property("role", ObjectBuilder::new().schema_type(Type::String).enum_values(Some([role])))
                .required("role")
                .property("name", name)
                .property("expires_at", expires_at)
                .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        };
        let customer = shape("customer").property("customer", string("^[A-Za-z0-9._-]{1,64}$")).required("customer");
        OneOfBuilder::new()
            .description(Some("A customer token names its customer; an operator token has none."))
            .item(customer)
            .item(shape("operator").property("customer", ObjectBuilder::new().schema_type(Type::Null)))
            .into()
    }
}

/// A token as listed: never the secret itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    pub id: String,
    pub role: Role,
    pub customer: Option<String>,
    pub name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// When it stops working by itself, if ever.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

impl TokenInfo {
    /// Whether it has expired at `now`.
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// `POST /v1/tokens` answer: the only time the secret is shown.
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub info: TokenInfo,
    /// Send as `Authorization: Bearer <token>`. Shown once; Lido keeps only its SHA-256.
    pub token: String,
}

impl fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedToken").field("info", &self.info).field("token", &"<redacted>").finish()
    }
}

/// One recorded operator action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditRecord {
    pub seq: i64,
    pub ts: DateTime<Utc>,
    /// Who: `token:<id>` with its name if any, or `local` in open mode.
    pub actor: String,
    /// What: `spawn`, `stop`, `restart`, `drain`, `undrain`, `set_market`, `token_create`, `token_revoke`.
    pub action: String,
    /// On what: a service, node or token id.
    pub target: String,
    /// `ok`, or the error code.
    pub result: String,
    /// The error message, or details of the action.
    pub detail: Option<String>,
}

/// `GET /v1/audit` query.
#[derive(Clone, Debug, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only records at or after this time (RFC 3339).
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
    /// Newest N records (default 100, at most 10000), oldest first.
    #[serde(default)]
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<usize>,
}

/// A secret string (token, cluster secret, venue key) whose `Debug` and
/// `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that must send or compare it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
        let created = CreatedToken {
            info: TokenInfo {
                id: "t1".into(),
                role: Role::Operator,
                customer: None,
                name: None,
                created_at: Utc::now(),
                revoked_at: None,
                expires_at: None,
            },
            token: "lido_secret".into(),
        };
        assert!(!format!("{created:?}").contains("lido_secret"));
    }
}
