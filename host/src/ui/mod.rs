//! The operator console, served at `/ui/` on the API's listener and compiled
//! into the binary: server-rendered pages (`maud`), one small script of our
//! own and a vendored plotting library (uPlot, MIT, `assets/`). No build
//! step, no CDN.
//!
//! - [`session`]: log in with an API token, signed session cookies, CSRF.
//! - [`pages`]: what the operator sees; [`actions`]: what they do.
//! - [`history`]: the per-minute counts behind the plots.
//!
//! Every response carries a Content-Security-Policy that allows scripts
//! and styles from this origin only (no inline script, no `eval`), and is
//! never cached or framed.

mod actions;
pub mod history;
mod pages;
pub mod session;
mod view;

use axum::extract::{Path, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::api::AppState;

/// Facts about this gateway the overview shows.
pub struct GatewayInfo {
    pub version: &'static str,
    /// `SQLite` or `PostgreSQL`.
    pub backend: &'static str,
    pub node: String,
    /// A node silent longer than this is taken over (`cluster`).
    pub takeover_after_ms: i64,
}

#[derive(Clone)]
pub struct UiState {
    pub app: AppState,
    pub sessions: session::Sessions,
    pub info: std::sync::Arc<GatewayInfo>,
}

/// The console's routes, to merge beside the API's (they authenticate
/// with sessions, not bearer tokens).
pub fn router(state: UiState) -> Router {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(pages::overview))
        .route("/ui/login", get(session::login_page).post(session::login))
        .route("/ui/logout", post(session::logout))
        .route("/ui/series.json", get(pages::series))
        .route("/ui/find", get(pages::find))
        .route("/ui/connectors/{name}", get(pages::connector))
        .route("/ui/connectors/{name}/component", post(actions::upload))
        .route("/ui/connectors/{name}/{action}", post(actions::connector))
        .route("/ui/dead-letters", get(pages::dead_letters))
        .route("/ui/dead-letters/act", post(actions::dead_letters))
        .route("/ui/events/{id}", get(pages::event))
        .route("/ui/keys/{key}", get(pages::key))
        .route("/ui/audit", get(pages::audit))
        .route("/ui/assets/{file}", get(asset))
        .route("/ui/{*rest}", get(pages::not_found))
        // The upload form sends a component (64 MiB at most) as multipart.
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::api::extract::MAX_COMPONENT_BYTES + 64 * 1024,
        ))
        .layer(axum::middleware::from_fn(protect))
        .with_state(state)
}

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Security headers on every console response.
async fn protect(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// The console's static files, compiled in.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/console.js"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/uPlot.min.css"),
    ),
];

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, mime, bytes)) => (
            [
                (header::CONTENT_TYPE, *mime),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            *bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}
