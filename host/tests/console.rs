//! The console through the real routers (API and console merged, as the
//! gateway serves them): sessions, CSRF, read-only sessions, escaping of
//! everything that came from outside, and the bulk dead-letter flow. The
//! browser test (`tests/e2e/console.rs`) drives the same pages in Chromium.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::json;
use switchboard::api::auth::Tokens;
use switchboard::api::{router, AppState};
use switchboard::config::{Scope, TokenConfig};
use switchboard::queue::{now_ms, OnDead};
use switchboard::store::{Completion, CompletionKind};
use switchboard::ui::{session::Sessions, GatewayInfo, UiState};
use tower::ServiceExt;

const INGEST: &str = "ingest-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";
const READ: &str = "read-token-0123456789";

struct Console {
    app: axum::Router,
    t: common::TestStore,
}

fn tokens() -> Vec<TokenConfig> {
    let t = |name: &str, token: &str, scope: Scope| TokenConfig {
        name: name.into(),
        token: token.into(),
        scopes: vec![scope],
    };
    vec![
        t("config-app", INGEST, Scope::Ingest),
        t("alice", ADMIN, Scope::Admin),
        t("noc", READ, Scope::Read),
    ]
}

async fn console_with(tokens: &[TokenConfig]) -> Console {
    let t = common::sqlite().await;
    let state = AppState {
        store: t.store.clone(),
        fleet: common::fleet(&[("hss", &["*"])]),
        connectors: None,
        max_body_bytes: 1 << 20,
        max_batch: 100,
        tokens: Tokens::new(tokens),
    };
    let ui = switchboard::ui::router(UiState {
        sessions: Sessions::new(state.tokens.clone(), 8),
        info: Arc::new(GatewayInfo {
            version: "test",
            backend: "SQLite",
            node: "n1".into(),
            takeover_after_ms: 12_000,
        }),
        app: state.clone(),
    });
    Console {
        app: router(state).merge(ui),
        t,
    }
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Reply {
    fn location(&self) -> &str {
        self.headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    /// The session cookie this reply sets, as a `Cookie` header value.
    fn cookie(&self) -> Option<String> {
        self.set_cookie("switchboard_session=")
    }
    /// The `Set-Cookie` whose value starts with `prefix`: its `name=value`.
    fn set_cookie(&self, prefix: &str) -> Option<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(prefix))
            .and_then(|v| Some(v.split(';').next()?.to_string()))
    }
    /// The value of the first `name="csrf"` field on the page.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find(r#"name="csrf" value=""#)
            .expect("a csrf field");
        let rest = &self.body[at + r#"name="csrf" value=""#.len()..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}

impl Console {
    async fn send(&self, mut req: Request<Body>) -> Reply {
        // As a browser on the gateway's machine addresses it.
        if !req.headers().contains_key(header::HOST) {
            req.headers_mut()
                .insert(header::HOST, "127.0.0.1:7400".parse().unwrap());
        }
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Reply {
        let mut req = Request::get(path);
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        self.send(req.body(Body::empty()).unwrap()).await
    }

    async fn post_form(&self, path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Reply {
        let body: String = form
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
                )
            })
            .collect::<Vec<_>>()
            .join("&");
        let mut req =
            Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        self.send(req.body(Body::from(body)).unwrap()).await
    }

    async fn login(&self, token: &str) -> String {
        let r = self.post_login(&[("token", token), ("next", "/ui/")]).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
        r.cookie().expect("a session cookie")
    }

    /// The login page's form cookie and token, as a browser gets them.
    async fn login_form(&self) -> (String, String) {
        let page = self.get("/ui/login", None).await;
        let cookie = page
            .set_cookie("switchboard_login=")
            .expect("the login page sets its form cookie");
        (cookie, page.csrf())
    }

    /// Posts the login form as a browser does after opening the login page.
    async fn post_login(&self, fields: &[(&str, &str)]) -> Reply {
        let (cookie, csrf) = self.login_form().await;
        let mut with = fields.to_vec();
        with.push(("csrf", &csrf));
        self.post_form("/ui/login", Some(&cookie), &with).await
    }

    async fn ingest(&self, events: serde_json::Value) {
        let r = self
            .send(
                Request::post("/v1/events")
                    .header("authorization", format!("Bearer {INGEST}"))
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(events.to_string()))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    }

    /// Claims every ready delivery and ends each dead with `reason(event id)`.
    async fn kill_all(&self, reason: impl Fn(&str) -> String) -> Vec<i64> {
        let claimed = self
            .t
            .store
            .claim("hss", 100, now_ms(), 30_000)
            .await
            .unwrap();
        let items = claimed
            .iter()
            .map(|d| {
                Completion::of(
                    d,
                    CompletionKind::Dead {
                        error: reason(&d.event.id),
                        on_dead: OnDead::Hold,
                    },
                )
            })
            .collect();
        self.t.store.complete(items, now_ms()).await.unwrap();
        claimed.iter().map(|d| d.delivery_id).collect()
    }
}

#[tokio::test]
async fn without_a_session_every_page_sends_to_the_login_and_shows_nothing() {
    let c = console_with(&tokens()).await;
    c.ingest(json!({"id": "secret-event", "type": "t", "keys": ["msisdn:1"], "payload": {"pin": "4321"}}))
        .await;
    for path in [
        "/ui/",
        "/ui/dead-letters",
        "/ui/events/secret-event",
        "/ui/keys/msisdn:1",
        "/ui/audit",
        "/ui/connectors/hss",
        "/ui/series.json",
    ] {
        let r = c.get(path, None).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{path}");
        assert!(
            r.location().starts_with("/ui/login?next="),
            "{path}: {}",
            r.location()
        );
        assert!(
            !r.body.contains("4321") && !r.body.contains("secret-event"),
            "{path}"
        );
    }
    // A forged or stale cookie is no session either.
    let r = c
        .get(
            "/ui/",
            Some("switchboard_session=616c696365.99999999999999.00.00"),
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    // Actions without a session do nothing.
    let r = c
        .post_form("/ui/connectors/hss/pause", None, &[("csrf", "x")])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(!c.t.store.catalog().is_paused("hss").await.unwrap());
    // The login page itself is served, with its security headers.
    let r = c.get("/ui/login", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let csp = r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert_eq!(r.headers[header::X_FRAME_OPTIONS], "DENY");
}

#[tokio::test]
async fn logging_in_takes_a_token_that_may_read_and_sets_a_strict_cookie() {
    let c = console_with(&tokens()).await;
    let r = c.post_login(&[("token", "not-a-token")]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.cookie().is_none() && r.body.contains("not known"),
        "{}",
        r.body
    );
    let r = c.post_login(&[("token", INGEST)]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.cookie().is_none() && r.body.contains("only ingest"),
        "{}",
        r.body
    );

    let r = c
        .post_login(&[("token", ADMIN), ("next", "/ui/keys/msisdn%3A1")])
        .await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/ui/keys/msisdn%3A1")
    );
    let set = r
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with("switchboard_session="))
        .unwrap();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=28800"] {
        assert!(set.contains(part), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    assert!(!set.contains(ADMIN), "the secret is not in the cookie");
    // Behind a proxy that terminated TLS, the cookie is Secure.
    let (form_cookie, csrf) = c.login_form().await;
    let tls = c
        .send(
            Request::post("/ui/login")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::COOKIE, form_cookie)
                .header("x-forwarded-proto", "https")
                .body(Body::from(format!(
                    "token={ADMIN}&csrf={csrf}&next=https%3A%2F%2Fevil.example%2F"
                )))
                .unwrap(),
        )
        .await;
    assert_eq!(tls.status, StatusCode::SEE_OTHER, "{}", tls.body);
    assert!(tls.headers.get_all(header::SET_COOKIE).iter().any(|v| v
        .to_str()
        .unwrap()
        .starts_with("switchboard_session=")
        && v.to_str().unwrap().contains("; Secure")));
    assert_eq!(tls.location(), "/ui/", "never sent to another site");

    let cookie = r.cookie().unwrap();
    let page = c.get("/ui/", Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("alice") && page.body.contains("hss"));

    // Logging out needs the form's CSRF token, and clears the cookie.
    let r = c
        .post_form("/ui/logout", Some(&cookie), &[("csrf", "wrong")])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = c
        .post_form("/ui/logout", Some(&cookie), &[("csrf", &page.csrf())])
        .await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/ui/login")
    );
    assert!(r.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
}

/// The login form is a state-changing form too: it carries a token that
/// must match the cookie its page set, so a page elsewhere cannot log a
/// browser in under a token of its choosing.
#[tokio::test]
async fn the_login_form_needs_the_token_its_page_set() {
    let c = console_with(&tokens()).await;
    let page = c.get("/ui/login", None).await;
    let set = page
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with("switchboard_login="))
        .expect("the form cookie");
    for part in ["HttpOnly", "SameSite=Strict", "Path=/ui/login"] {
        assert!(set.contains(part), "{set}");
    }
    let (cookie, csrf) = c.login_form().await;
    for (who, cookie, fields) in [
        ("no cookie, no token", None, vec![("token", ADMIN)]),
        (
            "a cookie, no token",
            Some(cookie.as_str()),
            vec![("token", ADMIN)],
        ),
        (
            "a token, no cookie",
            None,
            vec![("token", ADMIN), ("csrf", csrf.as_str())],
        ),
        (
            "another page's token",
            Some(cookie.as_str()),
            vec![
                ("token", ADMIN),
                ("csrf", "0123456789abcdef0123456789abcdef"),
            ],
        ),
    ] {
        let r = c.post_form("/ui/login", cookie, &fields).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{who}");
        assert!(r.cookie().is_none(), "{who}: no session");
        assert!(r.body.contains("Log in again"), "{who}: {}", r.body);
    }
    let ok = c
        .post_form(
            "/ui/login",
            Some(&cookie),
            &[("token", ADMIN), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    assert!(ok.cookie().is_some());
}

#[tokio::test]
async fn an_action_needs_the_sessions_csrf_token_and_the_admin_scope() {
    let c = console_with(&tokens()).await;
    let admin = c.login(ADMIN).await;
    let page = c.get("/ui/connectors/hss", Some(&admin)).await;
    assert!(page.body.contains(">Pause<"), "admin sees the actions");
    for bad in ["", "0123", "ffffffffffffffffffffffffffffffff"] {
        let r = c
            .post_form("/ui/connectors/hss/pause", Some(&admin), &[("csrf", bad)])
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "csrf {bad:?}");
    }
    assert!(!c.t.store.catalog().is_paused("hss").await.unwrap());
    let r = c
        .post_form(
            "/ui/connectors/hss/pause",
            Some(&admin),
            &[("csrf", &page.csrf())],
        )
        .await;
    assert_eq!(
        (r.status, r.location()),
        (StatusCode::SEE_OTHER, "/ui/connectors/hss")
    );
    assert!(c.t.store.catalog().is_paused("hss").await.unwrap());
    let audit = c.t.store.catalog().audit_log(10, None).await.unwrap();
    assert_eq!(
        (audit[0].actor.as_str(), audit[0].action.as_str()),
        ("alice", "connector.pause")
    );

    // Another session's token does not pass for this one's.
    let other = c.login(ADMIN).await;
    let r = c
        .post_form(
            "/ui/connectors/hss/resume",
            Some(&other),
            &[("csrf", &page.csrf())],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Limits: refused values change nothing and say why.
    let csrf = c.get("/ui/connectors/hss", Some(&admin)).await.csrf();
    let r = c
        .post_form(
            "/ui/connectors/hss/limits",
            Some(&admin),
            &[("csrf", &csrf), ("concurrency", "0"), ("rate", "")],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("concurrency must be between"), "{}", r.body);
    let r = c
        .post_form(
            "/ui/connectors/hss/limits",
            Some(&admin),
            &[("csrf", &csrf), ("concurrency", "3"), ("rate", "")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let limits = c.t.store.catalog().limit_overrides("hss").await.unwrap();
    assert_eq!((limits.concurrency, limits.rate), (Some(3), None));

    // A read-only session sees no action and may not act.
    let noc = c.login(READ).await;
    let page = c.get("/ui/connectors/hss", Some(&noc)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("(read-only)"));
    for action in [
        ">Pause<",
        ">Resume<",
        "Set limits",
        "Upload and activate",
        "Roll back",
    ] {
        assert!(!page.body.contains(action), "read-only page shows {action}");
    }
    let r = c
        .post_form(
            "/ui/connectors/hss/resume",
            Some(&noc),
            &[("csrf", &page.csrf())],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("may only read"), "{}", r.body);
    assert!(
        c.t.store.catalog().is_paused("hss").await.unwrap(),
        "still paused"
    );
}

/// A multipart upload as a browser's form sends it: the CSRF field first,
/// then the file.
fn upload_request(cookie: &str, csrf: &str) -> Request<Body> {
    let boundary = "sbBOUNDARY";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"component\"; filename=\"x.wasm\"\r\n\
         Content-Type: application/wasm\r\n\r\nnot a component\r\n--{boundary}--\r\n"
    );
    Request::post("/ui/connectors/hss/component")
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .header(header::COOKIE, cookie)
        .body(Body::from(body))
        .unwrap()
}

/// Every state-changing route of the console, one by one: refused without
/// the session's CSRF token, and refused to a read-only session with it;
/// nothing changes and nothing is audited.
#[tokio::test]
async fn every_action_route_refuses_a_missing_csrf_token_and_a_read_only_session() {
    let c = console_with(&tokens()).await;
    c.ingest(json!({"id": "d1", "type": "number.assign", "keys": ["msisdn:1"], "payload": {}}))
        .await;
    let dead = c.kill_all(|_| "rejected: HTTP 422".into()).await;
    let admin = c.login(ADMIN).await;
    let read = c.login(READ).await;
    let read_csrf = c.get("/ui/", Some(&read)).await.csrf();
    let id = dead[0].to_string();
    let forms: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("/ui/connectors/hss/pause", vec![]),
        ("/ui/connectors/hss/resume", vec![]),
        ("/ui/connectors/hss/rollback", vec![]),
        (
            "/ui/connectors/hss/limits",
            vec![("concurrency", "3"), ("rate", "")],
        ),
        (
            "/ui/dead-letters/act",
            vec![
                ("action", "skip"),
                ("scope", "selected"),
                ("id", &id),
                ("confirmed", "1"),
            ],
        ),
        (
            "/ui/dead-letters/act",
            vec![("action", "retry"), ("scope", "filter"), ("confirmed", "1")],
        ),
    ];
    for (path, fields) in &forms {
        let r = c.post_form(path, Some(&admin), fields).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{path} without csrf: {}",
            r.body
        );
        let mut with = fields.clone();
        with.push(("csrf", &read_csrf));
        let r = c.post_form(path, Some(&read), &with).await;
        assert_eq!(
            r.status,
            StatusCode::FORBIDDEN,
            "{path} read-only: {}",
            r.body
        );
    }
    let r = c.send(upload_request(&admin, "")).await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "upload without csrf: {}",
        r.body
    );
    let r = c.send(upload_request(&read, &read_csrf)).await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "upload read-only: {}",
        r.body
    );

    let catalog = c.t.store.catalog();
    assert!(!catalog.is_paused("hss").await.unwrap());
    assert_eq!(
        catalog.limit_overrides("hss").await.unwrap().concurrency,
        None
    );
    assert!(catalog.component_versions("hss").await.unwrap().is_empty());
    let still = catalog
        .dead_letters(&switchboard::store::DeadFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(still.len(), 1, "the dead letter is untouched");
    assert!(catalog.audit_log(10, None).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_key_page_lists_what_waits_behind_the_head_in_order() {
    let c = console_with(&tokens()).await;
    for id in ["k-first", "k-second", "k-third"] {
        c.ingest(json!({"id": id, "type": "number.assign", "keys": ["msisdn:7"], "payload": {}}))
            .await;
    }
    let admin = c.login(ADMIN).await;
    let page = c.get("/ui/keys/msisdn%3A7", Some(&admin)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let next = page.body.find("Next in line").expect("the queue is listed");
    let second = page.body.find("k-second").unwrap();
    let third = page.body.find("k-third").unwrap();
    assert!(
        page.body[..next].contains("k-first"),
        "the head comes first"
    );
    assert!(
        next < second && second < third,
        "in the order they will run"
    );
}

#[tokio::test]
async fn the_audit_page_filters_by_action_target_and_time() {
    let c = console_with(&tokens()).await;
    let admin = c.login(ADMIN).await;
    for action in ["pause", "resume"] {
        let csrf = c.get("/ui/connectors/hss", Some(&admin)).await.csrf();
        let r = c
            .post_form(
                &format!("/ui/connectors/hss/{action}"),
                Some(&admin),
                &[("csrf", &csrf)],
            )
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    }
    let rows = |body: &str| body.matches("<tr><td>").count();
    let all = c.get("/ui/audit", Some(&admin)).await;
    assert_eq!(rows(&all.body), 2, "{}", all.body);
    let paused = c.get("/ui/audit?action=pause", Some(&admin)).await;
    assert_eq!(rows(&paused.body), 1);
    assert!(paused.body.contains("connector.pause") && !paused.body.contains("connector.resume"));
    let hss = c.get("/ui/audit?target=hss", Some(&admin)).await;
    assert_eq!(rows(&hss.body), 2);
    let none = c.get("/ui/audit?target=crm", Some(&admin)).await;
    assert!(none.body.contains("No record matches."));
    let later = c
        .get("/ui/audit?since=2999-01-01T00%3A00", Some(&admin))
        .await;
    assert!(later.body.contains("No record matches."));
    let before = c
        .get("/ui/audit?until=2000-01-01T00%3A00", Some(&admin))
        .await;
    assert!(before.body.contains("No record matches."));
    let window = c
        .get(
            "/ui/audit?since=2000-01-01T00%3A00&until=2999-01-01T00%3A00",
            Some(&admin),
        )
        .await;
    assert_eq!(rows(&window.body), 2);
    let bad = c.get("/ui/audit?since=yesterday", Some(&admin)).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("is not a time"), "{}", bad.body);
}

/// Every field a person fills in or ticks has a name a screen reader says,
/// every page has a way past the navigation, and nothing clickable is
/// anything but a link or a button (so the keyboard reaches all of it).
#[tokio::test]
async fn every_page_labels_its_fields_and_is_reachable_by_keyboard() {
    let c = console_with(&tokens()).await;
    c.ingest(json!({"id": "a1", "type": "number.assign", "keys": ["msisdn:5"], "payload": {}}))
        .await;
    c.ingest(json!({"id": "a2", "type": "number.assign", "keys": ["msisdn:5"], "payload": {}}))
        .await;
    c.kill_all(|_| "rejected: HTTP 422".into()).await;
    let admin = c.login(ADMIN).await;
    for path in [
        "/ui/",
        "/ui/dead-letters",
        "/ui/events/a1",
        "/ui/keys/msisdn%3A5",
        "/ui/connectors/hss",
        "/ui/audit",
    ] {
        let r = c.get(path, Some(&admin)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert!(r.body.contains(r##"href="#main""##), "{path}: no skip link");
        for attr in ["onclick", "onkeydown", "role=\"button\""] {
            assert!(!r.body.contains(attr), "{path}: {attr}");
        }
        // Each visible input sits in a <label>, or carries an aria-label.
        let mut rest = r.body.as_str();
        while let Some(at) = rest.find("<input") {
            let tag = &rest[at..at + rest[at..].find('>').unwrap()];
            rest = &rest[at + 6..];
            if tag.contains("type=\"hidden\"") || tag.contains("aria-label=") {
                continue;
            }
            let before = &r.body[..r.body.len() - rest.len()];
            let open = before.rfind("<label").unwrap_or(0);
            let close = before.rfind("</label>").unwrap_or(0);
            assert!(open > close, "{path}: an input without a label: {tag}");
        }
    }
    let dead = c.get("/ui/dead-letters", Some(&admin)).await;
    assert!(
        dead.body.contains("aria-label=\"select delivery "),
        "{}",
        dead.body
    );
}

#[tokio::test]
async fn a_connectors_page_shows_its_replays_and_their_progress() {
    let c = console_with(&tokens()).await;
    let asked = switchboard::store::NewReplay {
        connector: "hss".into(),
        since: 0,
        until: 10,
        types: vec![],
        key: Some("msisdn:<b>9</b>".into()),
        rate: 10.0,
    };
    c.t.store
        .catalog()
        .create_replay(&asked, "alice", 5)
        .await
        .unwrap();
    let admin = c.login(ADMIN).await;
    let page = c.get("/ui/connectors/hss", Some(&admin)).await;
    assert!(page.body.contains("<h2>Replays</h2>"), "{}", page.body);
    assert!(page.body.contains("running") && page.body.contains("its routes"));
    assert!(!page.body.contains("<b>9</b>"), "the key is escaped");
}

#[tokio::test]
async fn what_came_from_outside_renders_inert_on_every_page() {
    let c = console_with(&tokens()).await;
    let id = "evt-<img src=x onerror=alert(1)>";
    let key = "customer:<script>alert(2)</script>";
    c.ingest(json!({"id": id, "type": "number.assign", "keys": [key],
                    "payload": {"note": "</pre><script>alert(3)</script>", "x": "\" onmouseover=\"alert(4)"}}))
        .await;
    let dead = c
        .kill_all(|_| {
            "rejected: HTTP 422 <script>alert(5)</script><img src=x onerror=alert(6)>".into()
        })
        .await;
    // An operator action, so the audit log shows the reason too.
    assert!(c
        .t
        .store
        .operator_action(
            dead[0],
            switchboard::store::OperatorAction::Retry,
            "ops",
            now_ms()
        )
        .await
        .unwrap());
    c.kill_all(|_| "rejected: HTTP 422 <script>alert(7)</script>".into())
        .await;
    let admin = c.login(ADMIN).await;
    let seg = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    for path in [
        "/ui/".to_string(),
        "/ui/dead-letters".to_string(),
        format!("/ui/events/{}", seg(id)),
        format!("/ui/keys/{}", seg(key)),
        "/ui/connectors/hss".to_string(),
        format!("/ui/dead-letters?key={}", seg(key)),
        "/ui/audit".to_string(),
    ] {
        let r = c.get(&path, Some(&admin)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        let lower = r.body.to_lowercase();
        // Our own two scripts, and no other tag from the input.
        assert_eq!(lower.matches("<script").count(), 2, "{path}");
        for tag in ["<img", "<b>", "\" onmouseover"] {
            assert!(!lower.contains(tag), "{path} holds {tag}");
        }
    }
    let event = c
        .get(&format!("/ui/events/{}", seg(id)), Some(&admin))
        .await;
    assert!(
        event.body.contains("&lt;script&gt;alert(3)"),
        "shown, escaped"
    );
    assert!(
        event.body.contains("&lt;script&gt;alert(5)"),
        "the reason is shown, escaped"
    );
}

#[tokio::test]
async fn dead_letters_of_one_reason_are_retried_in_bulk_after_a_confirmation() {
    let c = console_with(&tokens()).await;
    let events: Vec<_> = (0..6)
        .map(|i| json!({"id": format!("e{i}"), "type": "number.assign", "keys": [format!("msisdn:{i}")], "payload": {}}))
        .collect();
    c.ingest(json!(events)).await;
    c.kill_all(|id| {
        if ["e1", "e3", "e4"].contains(&id) {
            "rejected: HTTP 422 customer unknown".into()
        } else {
            "rejected: HTTP 409 number in use".into()
        }
    })
    .await;
    let admin = c.login(ADMIN).await;
    let list = c
        .get("/ui/dead-letters?reason=HTTP+422", Some(&admin))
        .await;
    assert_eq!(list.status, StatusCode::OK);
    for (id, shown) in [
        ("e1", true),
        ("e3", true),
        ("e4", true),
        ("e0", false),
        ("e2", false),
    ] {
        assert_eq!(list.body.contains(&format!(">{id}<")), shown, "{id}");
    }
    let form = [
        ("csrf", list.csrf()),
        ("scope", "filter".into()),
        ("reason", "HTTP 422".into()),
        ("action", "retry".into()),
    ];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // First a confirmation that names what will be touched; nothing changed yet.
    let confirm = c
        .post_form("/ui/dead-letters/act", Some(&admin), &form)
        .await;
    assert_eq!(confirm.status, StatusCode::OK, "{}", confirm.body);
    assert!(
        confirm.body.contains("Retry 3 dead letter(s)?"),
        "{}",
        confirm.body
    );
    assert_eq!(
        c.t.store.catalog().state_counts("hss").await.unwrap().dead,
        6
    );
    // Confirmed: exactly those three, audited as the session's token.
    let ids: Vec<String> = confirm
        .body
        .match_indices(r#"name="id" value=""#)
        .map(|(at, m)| {
            let rest = &confirm.body[at + m.len()..];
            rest[..rest.find('"').unwrap()].to_string()
        })
        .collect();
    assert_eq!(ids.len(), 3);
    let mut confirmed = vec![
        ("csrf", list.csrf()),
        ("scope", "selected".to_string()),
        ("confirmed", "1".to_string()),
        ("action", "retry".to_string()),
    ];
    confirmed.extend(ids.iter().map(|i| ("id", i.clone())));
    let confirmed: Vec<(&str, &str)> = confirmed.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let done = c
        .post_form("/ui/dead-letters/act", Some(&admin), &confirmed)
        .await;
    assert_eq!(done.status, StatusCode::OK);
    assert!(done.body.contains("Retried 3 of 3"), "{}", done.body);
    let counts = c.t.store.catalog().state_counts("hss").await.unwrap();
    assert_eq!((counts.dead, counts.ready), (3, 3));
    let audit = c.t.store.catalog().audit_log(10, None).await.unwrap();
    assert_eq!(audit.len(), 3);
    assert!(audit
        .iter()
        .all(|a| a.actor == "alice" && a.action == "delivery.retry"));
    // Again: none of them is dead any more.
    let again = c
        .post_form("/ui/dead-letters/act", Some(&admin), &confirmed)
        .await;
    assert!(again.body.contains("Retried 0 of 3"), "{}", again.body);
}

#[tokio::test]
async fn without_tokens_the_login_page_says_how_and_a_button_opens_the_console() {
    let c = console_with(&[]).await;
    let page = c.get("/ui/login", None).await;
    assert!(
        page.body.contains("No API tokens are configured"),
        "{}",
        page.body
    );
    assert!(!page.body.contains(r#"name="token""#));
    let r = c.post_login(&[("next", "/ui/")]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let cookie = r.cookie().unwrap();
    let page = c.get("/ui/", Some(&cookie)).await;
    assert!(page.body.contains(">local<"), "{}", page.body);
    let r = c
        .post_form(
            "/ui/connectors/hss/pause",
            Some(&cookie),
            &[("csrf", &page.csrf())],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(c.t.store.catalog().is_paused("hss").await.unwrap());
}

#[tokio::test]
async fn the_plots_data_is_the_last_hour_per_connector_from_the_stored_counts() {
    let c = console_with(&tokens()).await;
    let minute = now_ms().div_euclid(60_000);
    c.t.store
        .catalog()
        .add_minute_counts(&[
            ("hss".into(), minute - 2, 120, 6),
            ("hss".into(), minute - 90, 999, 9),
        ])
        .await
        .unwrap();
    let noc = c.login(READ).await;
    let r = c.get("/ui/series.json", Some(&noc)).await;
    assert_eq!(r.status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let times = v["times"].as_array().unwrap();
    assert_eq!(times.len(), 61);
    assert_eq!(times[60], minute * 60);
    let delivered = v["connectors"]["hss"]["delivered"].as_array().unwrap();
    assert_eq!(delivered[58], 2.0, "120 in one minute is 2/s");
    assert_eq!(v["connectors"]["hss"]["failed"][58], 0.1);
    let total: f64 = delivered.iter().map(|d| d.as_f64().unwrap()).sum();
    assert_eq!(total, 2.0, "older than an hour is not shown");
    let page = c.get("/ui/", Some(&noc)).await;
    assert!(page.body.contains(r#"data-plot="hss""#));
}

#[tokio::test]
async fn a_form_posted_from_another_site_is_refused_login_included() {
    let c = console_with(&tokens()).await;
    let post = |path: &str, body: String, origin: &'static str| {
        Request::post(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ORIGIN, origin)
            .body(Body::from(body))
            .unwrap()
    };
    // Logging a browser in under the attacker's token.
    let r = c
        .send(post(
            "/ui/login",
            format!("token={ADMIN}"),
            "https://evil.example",
        ))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.cookie().is_none());
    // Acting with a victim's session, even holding its CSRF token.
    let admin = c.login(ADMIN).await;
    let csrf = c.get("/ui/", Some(&admin)).await.csrf();
    let mut req = post(
        "/ui/connectors/hss/pause",
        format!("csrf={csrf}"),
        "https://evil.example",
    );
    req.headers_mut()
        .insert(header::COOKIE, admin.parse().unwrap());
    assert_eq!(c.send(req).await.status, StatusCode::FORBIDDEN);
    assert!(!c.t.store.catalog().is_paused("hss").await.unwrap());
    // The same form from the console itself goes through.
    let mut req = post(
        "/ui/connectors/hss/pause",
        format!("csrf={csrf}"),
        "http://127.0.0.1:7400",
    );
    req.headers_mut()
        .insert(header::COOKIE, admin.parse().unwrap());
    assert_eq!(c.send(req).await.status, StatusCode::SEE_OTHER);
    assert!(c.t.store.catalog().is_paused("hss").await.unwrap());
}

#[tokio::test]
async fn without_tokens_only_loopback_names_reach_the_console() {
    let c = console_with(&[]).await;
    // A page elsewhere whose name now resolves to 127.0.0.1.
    let r = c
        .send(
            Request::post("/ui/login")
                .header(header::HOST, "rebound.evil.example:7400")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from("next=%2Fui%2F"))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.cookie().is_none());
    let r = c
        .send(
            Request::get("/ui/login")
                .header(header::HOST, "localhost:7400")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn the_search_box_finds_an_event_by_id_and_anything_else_as_a_key() {
    let c = console_with(&tokens()).await;
    c.ingest(json!({"id": "evt-42", "type": "t", "keys": ["msisdn:1"], "payload": {}}))
        .await;
    let noc = c.login(READ).await;
    for (q, to) in [
        ("evt-42", "/ui/events/evt-42"),
        (" msisdn:1 ", "/ui/keys/msisdn:1"),
        ("a/b?c", "/ui/keys/a%2Fb%3Fc"),
        ("..", "/ui/key?key=%2E%2E"),
        ("", "/ui/"),
    ] {
        let path = format!(
            "/ui/find?q={}",
            percent_encoding::utf8_percent_encode(q, percent_encoding::NON_ALPHANUMERIC)
        );
        let r = c.get(&path, Some(&noc)).await;
        assert_eq!(
            (r.status, r.location()),
            (StatusCode::SEE_OTHER, to),
            "{q:?}"
        );
    }
    let r = c.get("/ui/key?key=..", Some(&noc)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Key .."), "{}", r.body);
}
