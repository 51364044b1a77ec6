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
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
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
    // Forms are small; only the upload route takes a component (64 MiB at
    // most, as multipart), and only with a session that may act.
    let upload = Router::new()
        .route("/ui/connectors/{name}/component", post(actions::upload))
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::api::extract::MAX_COMPONENT_BYTES + 64 * 1024,
        ));
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(pages::overview))
        .route("/ui/login", get(session::login_page).post(session::login))
        .route("/ui/logout", post(session::logout))
        .route("/ui/series.json", get(pages::series))
        .route("/ui/find", get(pages::find))
        .route("/ui/connectors/{name}", get(pages::connector))
        .route("/ui/connectors/{name}/{action}", post(actions::connector))
        .route("/ui/dead-letters", get(pages::dead_letters))
        .route("/ui/dead-letters/act", post(actions::dead_letters))
        .route("/ui/events/{id}", get(pages::event))
        .route("/ui/event", get(pages::event_by_query))
        .route("/ui/keys/{key}", get(pages::key))
        .route("/ui/key", get(pages::key_by_query))
        .route("/ui/audit", get(pages::audit))
        .route("/ui/assets/{file}", get(asset))
        .route("/ui/{*rest}", get(pages::not_found))
        .layer(axum::extract::DefaultBodyLimit::max(FORM_BYTES))
        .merge(upload)
        .layer(axum::middleware::from_fn_with_state(state.clone(), protect))
        .with_state(state)
}

/// The largest console form (a bulk action lists at most 1,000 ids).
const FORM_BYTES: usize = 64 * 1024;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Security headers on every console response, and two refusals before
/// any handler runs:
/// - a form posted from another site (its `Origin` or `Sec-Fetch-Site` says
///   so), login and logout included, so no page elsewhere can log a
///   browser in under someone else's token or act with its session;
/// - without configured tokens (loopback only, no login), a request whose
///   `Host` is not a loopback name: a page elsewhere that rebinds its own
///   name to 127.0.0.1 gets nothing.
async fn protect(
    axum::extract::State(state): axum::extract::State<UiState>,
    req: Request,
    next: Next,
) -> Response {
    let refused = if state.sessions.open_access() && !loopback_host(req.headers()) {
        Some("Without API tokens the console answers only on a loopback address (127.0.0.1, [::1], localhost).")
    } else if req.method() == axum::http::Method::POST && cross_site(req.headers()) {
        Some("This form was sent from another site. Open the console and submit it from there.")
    } else {
        None
    };
    let mut resp = match refused {
        Some(why) => view::refusal(StatusCode::FORBIDDEN, why),
        None => next.run(req).await,
    };
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

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The request's `Host` names this machine's loopback interface.
fn loopback_host(h: &HeaderMap) -> bool {
    let Some(host) = header_str(h, "host") else {
        return false;
    };
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The browser says the request comes from a page of another origin.
fn cross_site(h: &HeaderMap) -> bool {
    if let Some(site) = header_str(h, "sec-fetch-site") {
        if !matches!(site, "same-origin" | "none") {
            return true;
        }
    }
    let Some(origin) = header_str(h, "origin") else {
        return false;
    };
    // `Origin: null` (a sandboxed frame, a file) is another site too. A
    // proxy in front may pass the name it was asked for as X-Forwarded-Host.
    let authority = origin.split_once("://").map_or("", |(_, a)| a);
    let ours = |name| header_str(h, name).is_some_and(|v| v.eq_ignore_ascii_case(authority));
    authority.is_empty() || !(ours(header::HOST.as_str()) || ours("x-forwarded-host"))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_loopback_names_pass_without_tokens() {
        for ok in [
            "127.0.0.1:7400",
            "localhost:7400",
            "LOCALHOST",
            "[::1]:7400",
            "127.1.2.3",
        ] {
            assert!(loopback_host(&headers(&[("host", ok)])), "{ok}");
        }
        for bad in [
            "evil.example:7400",
            "evil.example",
            "10.0.0.1:7400",
            "127.0.0.1.evil.example",
            "",
        ] {
            assert!(!loopback_host(&headers(&[("host", bad)])), "{bad}");
        }
        assert!(!loopback_host(&HeaderMap::new()));
    }

    #[test]
    fn a_form_from_another_site_is_told_apart() {
        let same = [("host", "gw:7400"), ("origin", "http://gw:7400")];
        assert!(!cross_site(&headers(&same)));
        assert!(
            !cross_site(&headers(&[("host", "gw:7400")])),
            "no Origin: a non-browser client"
        );
        assert!(!cross_site(&headers(&[("sec-fetch-site", "same-origin")])));
        let proxied = [
            ("host", "10.0.0.5:7400"),
            ("x-forwarded-host", "gw.example"),
            ("origin", "https://gw.example"),
        ];
        assert!(!cross_site(&headers(&proxied)));
        for bad in [
            vec![("host", "gw:7400"), ("origin", "https://evil.example")],
            vec![("host", "gw:7400"), ("origin", "null")],
            vec![("host", "gw:7400"), ("origin", "http://gw:7401")],
            vec![("host", "gw:7400"), ("origin", "http://")],
            vec![("sec-fetch-site", "cross-site")],
            vec![
                ("sec-fetch-site", "same-site"),
                ("host", "gw:7400"),
                ("origin", "http://gw:7400"),
            ],
        ] {
            assert!(cross_site(&headers(&bad)), "{bad:?}");
        }
    }
}
