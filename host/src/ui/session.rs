//! Console sessions: log in with an API token, get a signed cookie.
//!
//! A session cookie names the token it was opened with, when it ends and a
//! random nonce, signed with HMAC-SHA-256 keyed by the token's secret digest.
//! Every node of a cluster has the same tokens, so any node behind a load
//! balancer checks any session, and nothing is stored. Removing or changing
//! a token in the config ends every session opened with it. The session's
//! rights are the token's scopes as configured now: `admin` acts, `read`
//! only looks, a token with neither opens no console.
//!
//! Every state-changing form carries a CSRF token derived from the session
//! (the same key, another message), checked in constant time. The login
//! form, which has no session yet, carries a random one that must match a
//! cookie the login page set (`switchboard_login`, `Path=/ui/login`): a
//! page elsewhere cannot log a browser in under its own token. The cookie is
//! `HttpOnly` and `SameSite=Strict` as well, `Secure` when the request came
//! over TLS (`X-Forwarded-Proto: https` from the proxy that terminates it).
//!
//! Without configured tokens the gateway serves loopback only and its API
//! is open; the console is too, but still through a session (opened with a
//! button on the login page, signed with a key made at start-up), so that
//! its forms carry CSRF tokens like any other.

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use hmac::{Hmac, Mac};
use maud::html;
use serde::Deserialize;
use sha2::Sha256;

use super::view::{self, page_bare, Refused, Viewer};
use super::UiState;
use crate::api::auth::{allows, Tokens};
use crate::config::Scope;
use crate::queue::{now_ms, Millis};

pub const COOKIE: &str = "switchboard_session";

/// Who is logged in, and what they may do.
#[derive(Debug, Clone)]
pub struct Session {
    /// The token's name (`local` without tokens); the audit log records it.
    pub actor: String,
    /// `admin` scope: the console shows and accepts actions.
    pub admin: bool,
    /// The value every form of this session must send back as `csrf`.
    pub csrf: String,
}

/// Opens and checks sessions.
#[derive(Clone)]
pub struct Sessions {
    tokens: Tokens,
    /// Without configured tokens: the key `local` sessions are signed with.
    local_key: [u8; 32],
    ttl_ms: Millis,
}

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8], parts: &[&str]) -> [u8; 32] {
    // HMAC takes a key of any length.
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for p in parts {
        m.update(&(p.len() as u64).to_le_bytes());
        m.update(p.as_bytes());
    }
    m.finalize().into_bytes().into()
}

fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    std::hint::black_box(diff) == 0
}

impl Sessions {
    pub fn new(tokens: Tokens, session_hours: u32) -> Self {
        Self {
            tokens,
            local_key: rand::random(),
            ttl_ms: i64::from(session_hours) * 3_600_000,
        }
    }

    /// Without configured tokens the console opens for anyone who reaches
    /// the (loopback-only) listener.
    pub fn open_access(&self) -> bool {
        self.tokens.is_open()
    }

    /// The key a session of `name` is signed with, and whether it may act.
    fn key_of(&self, name: &str) -> Option<(Vec<u8>, bool, bool)> {
        if self.tokens.is_open() {
            return (name == "local").then(|| (self.local_key.to_vec(), true, true));
        }
        let (digest, scopes) = self.tokens.by_name(name)?;
        Some((
            digest.to_vec(),
            allows(scopes, Scope::Read),
            allows(scopes, Scope::Admin),
        ))
    }

    /// A cookie value for a new session of `name`.
    fn issue(&self, name: &str, now: Millis) -> Option<String> {
        let (key, _, _) = self.key_of(name)?;
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let name_hex = hex::encode(name);
        let until = (now + self.ttl_ms).to_string();
        let sig = hex::encode(mac(&key, &["session", &name_hex, &until, &nonce]));
        Some(format!("{name_hex}.{until}.{nonce}.{sig}"))
    }

    /// The session a cookie value stands for, if it is genuine, current,
    /// and its token may still read.
    pub fn check(&self, cookie: &str, now: Millis) -> Option<Session> {
        let mut parts = cookie.split('.');
        let (name_hex, until, nonce, sig) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let name = String::from_utf8(hex::decode(name_hex).ok()?).ok()?;
        let (key, read, admin) = self.key_of(&name)?;
        let want = mac(&key, &["session", name_hex, until, nonce]);
        if !same(&hex::decode(sig).ok()?, &want) {
            return None;
        }
        if until.parse::<Millis>().ok()? <= now || !read {
            return None;
        }
        let csrf = hex::encode(&mac(&key, &["csrf", name_hex, until, nonce])[..16]);
        Some(Session {
            actor: name,
            admin,
            csrf,
        })
    }
}

fn cookie_of(headers: &HeaderMap) -> Option<&str> {
    cookie_named(headers, COOKIE)
}

fn cookie_named<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The login form's CSRF cookie: set by the login page, read by the login.
pub const LOGIN_COOKIE: &str = "switchboard_login";

/// Served over TLS, as the proxy in front says.
fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

fn set_cookie(value: &str, max_age_s: i64, tls: bool) -> HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

/// A page that needs a session and finds none sends the browser to log in,
/// then back.
pub struct LoginFirst(String);

impl IntoResponse for LoginFirst {
    fn into_response(self) -> Response {
        let next: String =
            percent_encoding::utf8_percent_encode(&self.0, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        Redirect::to(&format!("/ui/login?next={next}")).into_response()
    }
}

impl FromRequestParts<UiState> for Session {
    type Rejection = LoginFirst;

    async fn from_request_parts(parts: &mut Parts, state: &UiState) -> Result<Self, LoginFirst> {
        cookie_of(&parts.headers)
            .and_then(|c| state.sessions.check(c, now_ms()))
            .ok_or_else(|| {
                // Back to the page after logging in; a form's target is
                // not a page (and its post is lost: send it again).
                let page = match parts.method {
                    axum::http::Method::GET => parts.uri.path_and_query().map(|p| p.as_str()),
                    _ => None,
                };
                LoginFirst(page.unwrap_or("/ui/").to_string())
            })
    }
}

impl Viewer for Session {
    fn actor(&self) -> &str {
        &self.actor
    }
    fn admin(&self) -> bool {
        self.admin
    }
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

impl Session {
    /// Refuses a form without this session's CSRF token, or an action by a
    /// read-only session.
    pub fn may_act(&self, csrf: &str) -> Result<(), Refused> {
        if !same(csrf.as_bytes(), self.csrf.as_bytes()) {
            return Err(Refused(
                StatusCode::FORBIDDEN,
                "This form has expired or came from another page. Go back, reload it and try again."
                    .into(),
            ));
        }
        self.admin_only()
    }

    /// Refuses a read-only session.
    pub fn admin_only(&self) -> Result<(), Refused> {
        if !self.admin {
            return Err(Refused(
                StatusCode::FORBIDDEN,
                format!(
                    "Token {:?} may only read: actions need a token with the admin scope.",
                    self.actor
                ),
            ));
        }
        Ok(())
    }
}

/// Where to go after logging in: a console page, never another site.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with("/ui/")
                && !n.contains("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control) =>
        {
            n
        }
        _ => "/ui/",
    }
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

pub async fn login_page(
    State(state): State<UiState>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Response {
    login_form(
        &state,
        &headers,
        StatusCode::OK,
        safe_next(q.next.as_deref()),
        None,
    )
}

/// The login page with a fresh form token, and the cookie that must come
/// back with it.
fn login_form(
    state: &UiState,
    headers: &HeaderMap,
    status: StatusCode,
    next: &str,
    error: Option<&str>,
) -> Response {
    let open = state.sessions.open_access();
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let secure = if over_tls(headers) { "; Secure" } else { "" };
    let cookie = HeaderValue::from_str(&format!(
        "{LOGIN_COOKIE}={nonce}; Path=/ui/login; HttpOnly; SameSite=Strict; Max-Age=3600{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("invalid=1"));
    let page = page_bare(
        "Log in",
        html! {
            main.login {
                h1 { "Switchboard" }
                @if let Some(e) = error { p.error role="alert" { (e) } }
                form method="post" action="/ui/login" {
                    input type="hidden" name="next" value=(next);
                    input type="hidden" name="csrf" value=(nonce);
                    @if open {
                        p {
                            "No API tokens are configured, so this gateway listens on loopback only "
                            "and anyone who can reach it is an administrator. "
                            "To require a login, add " code { "[[server.tokens]]" } " to its config."
                        }
                        button type="submit" { "Open the console" }
                    } @else {
                        label for="token" { "API token" }
                        input #token type="password" name="token" autocomplete="current-password" required autofocus;
                        p.hint { "A token with the " code { "admin" } " scope acts; one with " code { "read" } " only looks." }
                        button type="submit" { "Log in" }
                    }
                }
            }
        },
    );
    let mut resp = (status, page).into_response();
    resp.headers_mut().insert(header::SET_COOKIE, cookie);
    resp
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
    next: Option<String>,
    /// The login page's form token.
    #[serde(default)]
    csrf: String,
}

pub async fn login(
    State(state): State<UiState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref()).to_string();
    let opened_here = cookie_named(&headers, LOGIN_COOKIE)
        .is_some_and(|c| !c.is_empty() && same(c.as_bytes(), form.csrf.as_bytes()));
    if !opened_here {
        return login_form(
            &state,
            &headers,
            StatusCode::FORBIDDEN,
            &next,
            Some("This login form has expired or was not opened here. Log in again."),
        );
    }
    let name = if state.sessions.open_access() {
        "local".to_string()
    } else {
        match state.sessions.tokens.find(form.token.trim()) {
            None => {
                tracing::info!("console login refused: unknown token");
                return login_form(
                    &state,
                    &headers,
                    StatusCode::UNAUTHORIZED,
                    &next,
                    Some("That token is not known here."),
                );
            }
            Some((name, scopes)) if !allows(scopes, Scope::Read) => {
                return login_form(
                    &state,
                    &headers,
                    StatusCode::FORBIDDEN,
                    &next,
                    Some(&format!(
                        "Token {name:?} may only ingest events: the console needs a token \
                         with the read or admin scope."
                    )),
                );
            }
            Some((name, _)) => name.to_string(),
        }
    };
    let Some(cookie) = state.sessions.issue(&name, now_ms()) else {
        return view::refusal(StatusCode::INTERNAL_SERVER_ERROR, "cannot open a session");
    };
    tracing::info!(actor = %name, "console session opened");
    let mut resp = Redirect::to(&next).into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&cookie, state.sessions.ttl_ms / 1000, over_tls(&headers)),
    );
    resp
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// Ends the session in this browser. The cookie is signed, not stored: a
/// copy taken elsewhere lasts until it expires; changing the token ends
/// them all.
pub async fn logout(session: Session, headers: HeaderMap, Form(form): Form<CsrfForm>) -> Response {
    // A read-only session may log out too: check the CSRF token alone.
    if !same(form.csrf.as_bytes(), session.csrf.as_bytes()) {
        return view::refusal(
            StatusCode::FORBIDDEN,
            "This form has expired; reload and try again.",
        );
    }
    let mut resp = Redirect::to("/ui/login").into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, set_cookie("", 0, over_tls(&headers)));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenConfig;

    fn sessions() -> Sessions {
        let token = |name: &str, secret: &str, scopes: Vec<Scope>| TokenConfig {
            name: name.into(),
            token: secret.into(),
            scopes,
        };
        Sessions::new(
            Tokens::new(&[
                token("ops", "ops-secret-0123456789", vec![Scope::Admin]),
                token("noc", "noc-secret-0123456789", vec![Scope::Read]),
                token("app", "app-secret-0123456789", vec![Scope::Ingest]),
            ]),
            8,
        )
    }

    #[test]
    fn a_session_is_what_its_token_allows_until_it_ends() {
        let s = sessions();
        let now = 1_000_000;
        let ops = s.issue("ops", now).and_then(|c| s.check(&c, now + 1));
        assert!(ops.as_ref().is_some_and(|o| o.admin && o.actor == "ops"));
        let noc = s.issue("noc", now).and_then(|c| s.check(&c, now + 1));
        assert!(noc.as_ref().is_some_and(|n| !n.admin));
        let cookie = s.issue("ops", now).unwrap_or_default();
        assert!(s.check(&cookie, now + 8 * 3_600_000).is_none(), "expired");
        let app = s.issue("app", now).unwrap_or_default();
        assert!(
            s.check(&app, now).is_none(),
            "an ingest token opens no console"
        );
    }

    #[test]
    fn any_node_with_the_same_tokens_accepts_a_session() {
        // Another process (another node behind the load balancer) built from
        // the same config: nothing is shared but the tokens.
        let (a, b) = (sessions(), sessions());
        let cookie = a.issue("ops", 1_000).unwrap_or_default();
        let (on_a, on_b) = (a.check(&cookie, 2_000), b.check(&cookie, 2_000));
        assert!(on_b.as_ref().is_some_and(|s| s.admin && s.actor == "ops"));
        assert_eq!(
            on_a.map(|s| s.csrf),
            on_b.map(|s| s.csrf),
            "a form from node A posts to node B"
        );
    }

    #[test]
    fn a_forged_or_altered_cookie_opens_nothing() {
        let s = sessions();
        let now = 1_000_000;
        let cookie = s.issue("noc", now).unwrap_or_default();
        let parts: Vec<&str> = cookie.split('.').collect();
        // Claim another token's name, or a later end, with the same signature.
        let as_ops = format!(
            "{}.{}.{}.{}",
            hex::encode("ops"),
            parts[1],
            parts[2],
            parts[3]
        );
        let later = format!("{}.{}.{}.{}", parts[0], "9999999999999", parts[2], parts[3]);
        for bad in [as_ops.as_str(), later.as_str(), "", "a.b.c.d", "...."] {
            assert!(s.check(bad, now).is_none(), "{bad:?}");
        }
        // Another gateway with other secrets under the same names.
        let other = Sessions::new(
            Tokens::new(&[TokenConfig {
                name: "noc".into(),
                token: "another-secret-0123456789".into(),
                scopes: vec![Scope::Admin],
            }]),
            8,
        );
        assert!(other.check(&cookie, now).is_none());
    }

    #[test]
    fn the_csrf_token_belongs_to_its_session() {
        let s = sessions();
        let a = s.issue("ops", 1).and_then(|c| s.check(&c, 2));
        let b = s.issue("ops", 1).and_then(|c| s.check(&c, 2));
        let (a, b) = (a.expect("session a"), b.expect("session b"));
        assert_ne!(a.csrf, b.csrf);
        assert!(a.may_act(&a.csrf).is_ok());
        assert!(a.may_act(&b.csrf).is_err());
        assert!(a.may_act("").is_err());
    }

    #[test]
    fn after_login_only_console_pages_are_followed() {
        assert_eq!(
            safe_next(Some("/ui/keys/msisdn%3A1")),
            "/ui/keys/msisdn%3A1"
        );
        for bad in [
            "https://evil.example/",
            "//evil.example/ui/",
            "/ui//evil",
            "/v1/audit",
            "/ui/\\evil",
        ] {
            assert_eq!(safe_next(Some(bad)), "/ui/", "{bad}");
        }
        assert_eq!(safe_next(None), "/ui/");
    }
}
