//! Bearer-token authentication with two scopes: `ingest` (POST /v1/events)
//! and `admin` (everything else; it may ingest too). Health probes are open.
//!
//! Tokens are compared as SHA-256 digests in constant time, against every
//! configured token without an early exit, so timing says nothing about which
//! prefix matched. Tokens are never logged; the audit log records the token's
//! name. Without configured tokens the gateway only listens on loopback
//! (config validation refuses anything else) and every caller is `local`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use crate::config::{Scope, TokenConfig};

/// The authenticated caller, available to handlers as an extension.
#[derive(Debug, Clone)]
pub struct Actor(pub String);

/// A configured token: SHA-256 of the secret, its name, its scopes.
type Entry = ([u8; 32], String, Vec<Scope>);

#[derive(Clone)]
pub struct Tokens {
    entries: Arc<Vec<Entry>>,
}

impl Tokens {
    pub fn new(config: &[TokenConfig]) -> Self {
        Self {
            entries: Arc::new(
                config
                    .iter()
                    .map(|t| (digest(&t.token), t.name.clone(), t.scopes.clone()))
                    .collect(),
            ),
        }
    }

    pub fn is_open(&self) -> bool {
        self.entries.is_empty()
    }

    fn find(&self, presented: &str) -> Option<(&str, &[Scope])> {
        let d = digest(presented);
        let mut found = None;
        for (want, name, scopes) in self.entries.iter() {
            if ct_eq(want, &d) {
                found = Some((name.as_str(), scopes.as_slice()));
            }
        }
        found
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// The scope a request needs.
fn needed(req: &Request) -> Option<Scope> {
    let path = req.uri().path();
    if path == "/healthz" || path == "/readyz" || path == "/v1/openapi.json" {
        return None;
    }
    if path == "/v1/events" && req.method() == axum::http::Method::POST {
        return Some(Scope::Ingest);
    }
    Some(Scope::Admin)
}

pub async fn authenticate(State(tokens): State<Tokens>, mut req: Request, next: Next) -> Response {
    let Some(scope) = needed(&req) else {
        return next.run(req).await;
    };
    if tokens.is_open() {
        req.extensions_mut().insert(Actor("local".into()));
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    let Some(presented) = presented else {
        return unauthorized("missing bearer token (Authorization: Bearer <token>)");
    };
    let Some((name, scopes)) = tokens.find(presented.trim()) else {
        return unauthorized("unknown bearer token");
    };
    if !(scopes.contains(&scope) || scopes.contains(&Scope::Admin)) {
        let scope = match scope {
            Scope::Ingest => "ingest",
            Scope::Admin => "admin",
        };
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("token {name:?} lacks the `{scope}` scope this request needs"),
        )
        .into_response();
    }
    req.extensions_mut().insert(Actor(name.to_string()));
    next.run(req).await
}

fn unauthorized(message: &str) -> Response {
    let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_compare_finds_only_exact_tokens() {
        let t = Tokens::new(&[TokenConfig {
            name: "app".into(),
            token: "0123456789abcdef".into(),
            scopes: vec![Scope::Ingest],
        }]);
        assert_eq!(t.find("0123456789abcdef").map(|f| f.0), Some("app"));
        assert!(t.find("0123456789abcdeX").is_none());
        assert!(t.find("").is_none());
    }
}
