//! Bearer-token authentication with three scopes: `ingest` (POST
//! /v1/events), `read` (the GET routes: event look-up, connectors, dead
//! letters, keys, audit, metrics) and `admin` (everything; it may ingest and
//! read too). Health probes and the OpenAPI document are open. The scope a
//! route needs is the one its entry in the route table documents
//! ([`super::ROUTES`]), so the document and the check cannot disagree.
//!
//! Tokens are compared as SHA-256 digests in constant time, against every
//! configured token without an early exit, so timing says nothing about which
//! prefix matched. Tokens are never logged; the audit log records the token's
//! name. Without configured tokens the gateway only listens on loopback
//! (config validation refuses anything else) and every caller is `local`.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::openapi::RouteDoc;
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

    /// The name and scopes of the token whose secret is `presented`.
    pub fn find(&self, presented: &str) -> Option<(&str, &[Scope])> {
        let d = digest(presented);
        let mut found = None;
        for (want, name, scopes) in self.entries.iter() {
            if ct_eq(want, &d) {
                found = Some((name.as_str(), scopes.as_slice()));
            }
        }
        found
    }

    /// The SHA-256 of the secret and the scopes of the token named `name`:
    /// what a console session is signed with and allowed (`crate::ui`).
    pub fn by_name(&self, name: &str) -> Option<(&[u8; 32], &[Scope])> {
        self.entries
            .iter()
            .find(|(_, n, _)| n == name)
            .map(|(d, _, s)| (d, s.as_slice()))
    }
}

/// Whether a token with `scopes` may do what needs `needed`: `admin` may
/// do everything.
pub fn allows(scopes: &[Scope], needed: Scope) -> bool {
    scopes.contains(&needed) || scopes.contains(&Scope::Admin)
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

/// The scope a request needs: its route's in `routes`; `admin` for a path
/// or method no route has (so an unauthenticated caller learns nothing
/// about which paths exist).
fn needed(routes: &[RouteDoc], req: &Request) -> Option<Scope> {
    let Some(matched) = req.extensions().get::<MatchedPath>() else {
        return Some(Scope::Admin);
    };
    let method = req.method().as_str();
    routes
        .iter()
        .find(|r| r.path == matched.as_str() && r.method.eq_ignore_ascii_case(method))
        .map_or(Some(Scope::Admin), |r| r.scope)
}

pub async fn authenticate(
    State((tokens, routes)): State<(Tokens, &'static [RouteDoc])>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(scope) = needed(routes, &req) else {
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
    if !allows(scopes, scope) {
        let scope = scope.as_str();
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
