//! Request extractors whose every rejection is the JSON error envelope.
//!
//! axum's own extractors answer a bad query string, path or body with a
//! `text/plain` 4xx. The API promises `{"error": {"code", "message"}}` for
//! every 4xx (SPEC §4.2), so handlers take these wrappers instead: `Query` and
//! `Path` map axum's rejections, and bodies are read here with an explicit
//! limit per kind of route instead of axum's implicit default:
//!
//! - operator JSON (connector settings, limits): [`ADMIN_JSON_LIMIT`];
//! - ingest: `server.max_body_bytes`;
//! - a component upload: [`MAX_COMPONENT_BYTES`].
//!
//! A body over its limit is a `413 body_too_large`, refused on its
//! `Content-Length` before a byte is read, or as soon as the bytes read pass
//! the limit, so an oversize request never costs more than the limit in memory.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, HeaderMap, StatusCode};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Largest body of an operator JSON request (connector settings, limits).
pub const ADMIN_JSON_LIMIT: usize = 64 * 1024;

/// Largest component accepted for upload. A constant, not a setting: real
/// connectors are a few MiB, and the bound only keeps a hostile upload from
/// holding memory.
pub const MAX_COMPONENT_BYTES: usize = 64 * 1024 * 1024;

/// Query parameters, deserialized into `T`; a value of the wrong type is a
/// `400 invalid_query`.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(r: QueryRejection) -> ApiError {
    // "Failed to deserialize query string: limit: invalid digit found in string"
    let text = r.body_text();
    let detail = text.split_once(": ").map_or(text.as_str(), |(_, d)| d);
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_query",
        format!("query string: {detail}"),
    )
}

/// Path parameters, deserialized into `T`; a segment of the wrong type is a
/// `400 invalid_path`.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(path_rejection(rejection)),
        }
    }
}

fn path_rejection(r: PathRejection) -> ApiError {
    let status = r.status();
    if status.is_client_error() {
        let text = r.body_text();
        let detail = text.split_once(": ").map_or(text.as_str(), |(_, d)| d);
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            format!("path: {detail}"),
        )
    } else {
        // A route whose pattern and extractor disagree: a bug, not bad input.
        tracing::error!(rejection = %r.body_text(), "path extraction failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }
}

/// The body of an operator JSON request: `Content-Type: application/json`
/// (or none), at most [`ADMIN_JSON_LIMIT`] bytes. Handlers parse it
/// themselves, so each names its own error codes.
#[derive(Debug)]
pub struct JsonBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        require_json(req.headers())?;
        let declared = declared_len(req.headers());
        Ok(JsonBody(
            read_body(req.into_body(), declared, ADMIN_JSON_LIMIT, "").await?,
        ))
    }
}

/// `415 unsupported_media_type` unless the request says it is JSON or says
/// nothing (curl without `-H`, scripts).
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = ct.to_str().unwrap_or("");
    let essence = text.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("content-type must be application/json, got {text:?}"),
        ))
    }
}

/// The declared `Content-Length`, if any and readable.
pub fn declared_len(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Reads `body` whole, refusing it with `413 body_too_large` once it is
/// known to exceed `limit` bytes: from `declared` (its `Content-Length`)
/// before reading, else while reading. `hint` ends the 413's message.
pub async fn read_body(
    body: axum::body::Body,
    declared: Option<u64>,
    limit: usize,
    hint: &str,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body exceeds this route's limit of {limit} bytes{hint}"),
        )
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "unreadable_body",
                format!("the request body could not be read: {e}"),
            )
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Refuses a path parameter that no stored id or key can equal
/// (`400 invalid_path`): empty, over `max_len` characters, or holding control
/// characters (refused at ingest; and PostgreSQL takes no NUL in a text
/// parameter), so such a look-up never reaches the store.
pub fn stored_text(field: &'static str, value: &str, max_len: usize) -> Result<(), ApiError> {
    let len = value.chars().count();
    if len == 0 || len > max_len {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            format!("`{field}` must be 1 to {max_len} characters, got {len}"),
        )
        .with_field(field));
    }
    printable("invalid_path", field, value)
}

/// Refuses a query parameter holding control characters
/// (`400 invalid_query`): it can match nothing stored.
pub fn printable_query(field: &'static str, value: &str) -> Result<(), ApiError> {
    printable("invalid_query", field, value)
}

fn printable(code: &'static str, field: &'static str, value: &str) -> Result<(), ApiError> {
    if value.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            code,
            format!("`{field}` must not contain control characters"),
        )
        .with_field(field));
    }
    Ok(())
}
