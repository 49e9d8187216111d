//! The parameters of the read API as its OpenAPI document states them: each
//! with the JSON Schema of what the handler accepts (domain values with the
//! `events` crate's schemas), so that a request valid by the document is
//! answered and an invalid one is refused with 400. Handlers parse the raw
//! strings themselves (naming the parameter on error); these types only
//! document them.

use std::borrow::Cow;

use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The query string as `T`; one that does not deserialise is a 400
/// problem naming the parameter (axum's `Query` answers in plain text).
#[derive(Debug)]
pub struct QueryString<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for QueryString<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, ApiError> {
        Ok(Self(axum::extract::Query::try_from_uri(&parts.uri)?.0))
    }
}

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

/// A consistency token, `article:{id}@{sequence}` ([`crate::consistency::Token`]).
#[derive(Debug)]
pub struct TokenValue;

impl JsonSchema for TokenValue {
    fn schema_name() -> Cow<'static, str> {
        "ConsistencyToken".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": "^article:[A-Za-z0-9._-]{1,64}@[0-9]{1,19}$" })
    }
}

/// Items per page; the maximum is a setting, set in the document at start.
#[derive(Debug)]
pub struct LimitValue;

impl JsonSchema for LimitValue {
    fn schema_name() -> Cow<'static, str> {
        "Limit".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "integer", "minimum": 1 })
    }
}

/// A cursor: the `next_cursor` of the previous page, passed back unchanged.
#[derive(Debug)]
pub struct CursorValue;

impl JsonSchema for CursorValue {
    fn schema_name() -> Cow<'static, str> {
        "Cursor".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": "^(?:[0-9a-f]{2}){1,2048}$" })
    }
}

/// A moment ([`events::parse_moment`]): an RFC 3339 time. A date (its start
/// in UTC) is accepted too, but not stated: JSON Schema has no "either
/// format" that generators and validators agree on.
#[derive(Debug)]
pub struct MomentValue;

impl JsonSchema for MomentValue {
    fn schema_name() -> Cow<'static, str> {
        "Moment".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "format": "date-time" })
    }
}

/// A free-text filter value (an actor, a correlation id).
#[derive(Debug)]
pub struct ActorValue;

impl JsonSchema for ActorValue {
    fn schema_name() -> Cow<'static, str> {
        "FilterText".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[^\\u0000]*$" })
    }
}

/// The start of a name, matched case-insensitively.
#[derive(Debug)]
pub struct NamePrefixValue;

impl JsonSchema for NamePrefixValue {
    fn schema_name() -> Cow<'static, str> {
        "NamePrefix".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "maxLength": events::MAX_TEXT_LEN })
    }
}

platform::parameters!(
    /// Path parameter `{article}`.
    ArticlePath { "article": events::ArticleId, Path, required, "Article id, e.g. `ART-1000`" }
);

platform::parameters!(
    /// Path parameters `{article}` and `{charge}`.
    ChargePath {
        "article": events::ArticleId, Path, required, "Article id, e.g. `ART-1000`";
        "charge": events::ChargeNo, Path, required, "Charge number within the article, e.g. `L2026-11-07`";
    }
);

platform::parameters!(
    /// Path parameter `{category}`.
    CategoryPath { "category": events::Category, Path, required, "Category, e.g. `fasteners`" }
);

platform::parameters!(
    /// Read-your-writes (also as header `X-Consistency-Token`).
    ConsistencyQuery {
        "consistent_with": TokenValue, Query, optional,
            "A consistency token (`article:ART-1000@12`): answer only once the projection includes that write";
    }
);

platform::parameters!(
    /// A page of a list.
    PageQuery {
        "limit": LimitValue, Query, optional, "Items per page (default 50)";
        "cursor": CursorValue, Query, optional, "The `next_cursor` of the previous page";
    }
);

platform::parameters!(
    /// Filters of the catalogue.
    CatalogueQuery {
        "category": events::Category, Query, optional, "Only articles of this category";
        "name_prefix": NamePrefixValue, Query, optional, "Only articles whose name starts with this (case-insensitive)";
    }
);

platform::parameters!(
    /// The filter of a movement history.
    MovementQuery { "warehouse": events::WarehouseId, Query, optional, "Only movements in this warehouse" }
);

platform::parameters!(
    /// The moment of a stock as of a time.
    AsOfQuery { "at": MomentValue, Query, required, "The moment, RFC 3339 (`2026-11-20T18:00:00Z`) or a date (its start in UTC)" }
);
