//! [`FakeUpstream`]: a local HTTP server standing in for the system a
//! connector talks to (HSS, CRM, SMS gateway...). Its type docs state how
//! replies are chosen and when requests are recorded.

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use serde_json::Value;
use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::task::JoinHandle;

/// A scripted answer of the [`FakeUpstream`].
///
/// ```no_run
/// use switchboard_connector_test::{json, Reply};
/// use std::time::Duration;
/// let busy = Reply::status(429).header("retry-after", "30");
/// let created = Reply::status(201).json(&json!({"id": "so-1"}));
/// let slow = Reply::ok().delay(Duration::from_secs(2));
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    delay: Duration,
}

impl Reply {
    /// `200 OK` with an empty body.
    ///
    /// ```no_run
    /// let r = switchboard_connector_test::Reply::ok();
    /// ```
    pub fn ok() -> Reply {
        Reply::status(200)
    }

    /// A reply with status `code` and an empty body.
    ///
    /// # Panics
    /// If `code` is not in 100..=999.
    ///
    /// ```no_run
    /// let r = switchboard_connector_test::Reply::status(503);
    /// ```
    #[track_caller]
    pub fn status(code: u16) -> Reply {
        let Ok(status) = StatusCode::from_u16(code) else {
            panic!("Reply::status({code}): not an HTTP status code")
        };
        Reply {
            status,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            delay: Duration::ZERO,
        }
    }

    /// Add a response header (repeatable).
    ///
    /// # Panics
    /// If `name` or `value` is not a valid HTTP header name/value.
    ///
    /// ```no_run
    /// let r = switchboard_connector_test::Reply::status(503).header("retry-after", "5");
    /// ```
    #[track_caller]
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        let n = match HeaderName::try_from(name) {
            Ok(n) => n,
            Err(e) => panic!("Reply::header: invalid header name {name:?}: {e}"),
        };
        let v = match HeaderValue::try_from(value) {
            Ok(v) => v,
            Err(e) => panic!("Reply::header: invalid value for {name}: {e}"),
        };
        self.headers.append(n, v);
        self
    }

    /// Set the body.
    ///
    /// ```no_run
    /// let r = switchboard_connector_test::Reply::status(422).body("msisdn malformed");
    /// ```
    pub fn body(mut self, body: impl Into<Bytes>) -> Reply {
        self.body = body.into();
        self
    }

    /// Set a JSON body and `content-type: application/json`.
    ///
    /// ```no_run
    /// let r = switchboard_connector_test::Reply::ok().json(&serde_json::json!({"ok": true}));
    /// ```
    pub fn json(self, body: &Value) -> Reply {
        self.header("content-type", "application/json")
            .body(body.to_string())
    }

    /// Wait this long before answering (to exercise timeouts).
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// let r = switchboard_connector_test::Reply::ok().delay(Duration::from_millis(500));
    /// ```
    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

/// One request the [`FakeUpstream`] received.
///
/// ```no_run
/// # async fn f(up: switchboard_connector_test::FakeUpstream) {
/// let req = up.last_request().expect("a request");
/// assert_eq!((req.method.as_str(), req.path.as_str()), ("PUT", "/subscribers/2065551234"));
/// assert_eq!(req.header("Idempotency-Key"), Some("dlv-1"));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// The method, e.g. `POST`.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string without `?`, if any.
    pub query: Option<String>,
    /// Headers in arrival order, names lower-case; values that are not
    /// UTF-8 are converted lossily.
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    pub body: Vec<u8>,
    /// The body parsed as JSON, if it is JSON.
    pub json: Option<Value>,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    ///
    /// ```no_run
    /// # fn f(req: switchboard_connector_test::RecordedRequest) {
    /// let ct = req.header("content-type");
    /// # }
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    ///
    /// ```no_run
    /// # fn f(req: switchboard_connector_test::RecordedRequest) {
    /// println!("{}", req.body_text());
    /// # }
    /// ```
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

type Handler = Arc<dyn Fn(&RecordedRequest) -> Reply + Send + Sync>;

struct Script {
    queue: VecDeque<Reply>,
    handler: Option<Handler>,
    default: Reply,
}

struct Shared {
    script: Mutex<Script>,
    requests: Mutex<Vec<RecordedRequest>>,
}

/// A poisoned lock only means another test thread panicked mid-update of a
/// plain list; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn next_reply(&self, req: &RecordedRequest) -> Reply {
        let handler = {
            let mut script = lock(&self.script);
            if let Some(reply) = script.queue.pop_front() {
                return reply;
            }
            match &script.handler {
                Some(h) => h.clone(),
                None => return script.default.clone(),
            }
        };
        // Called without the lock held, so a handler may use the upstream.
        handler(req)
    }
}

/// A scriptable, recording HTTP server on `127.0.0.1:<free port>`.
///
/// It accepts any method on any path, records every request, and answers
/// from a script:
/// 1. the next [`Reply`] queued with [`FakeUpstream::push`], if any (FIFO,
///    one reply per request);
/// 2. otherwise the handler set with [`FakeUpstream::handle`], if any;
/// 3. otherwise the default reply ([`FakeUpstream::set_default`];
///    initially `200` with an empty body).
///
/// A request is recorded when it arrives, before the reply's optional
/// [`delay`](Reply::delay), so a request the connector gave up on (timeout)
/// is still visible to the test. The server stops when the `FakeUpstream`
/// is dropped.
///
/// ```no_run
/// use switchboard_connector_test::{FakeUpstream, Reply};
/// # async fn f() {
/// let up = FakeUpstream::start().await;
/// up.push(Reply::status(503));             // first request
/// up.push(Reply::status(201));             // second request
/// up.handle(|req| if req.method == "DELETE" { Reply::status(404) } else { Reply::ok() });
/// let allowed = up.host();                  // "127.0.0.1:<port>", for Harness::allow_host
/// let url = up.url("/subscribers");         // "http://127.0.0.1:<port>/subscribers"
/// # }
/// ```
pub struct FakeUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl fmt::Debug for FakeUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeUpstream")
            .field("addr", &self.addr)
            .field("requests", &lock(&self.shared.requests).len())
            .finish()
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeUpstream {
    /// Start a server on a free loopback port. Must be called inside a Tokio
    /// runtime (e.g. a `#[tokio::test]`).
    ///
    /// # Panics
    /// If no loopback port can be bound.
    ///
    /// ```no_run
    /// # async fn f() {
    /// let up = switchboard_connector_test::FakeUpstream::start().await;
    /// # }
    /// ```
    pub async fn start() -> FakeUpstream {
        Self::try_start()
            .await
            .unwrap_or_else(|e| panic!("FakeUpstream: cannot listen on 127.0.0.1: {e}"))
    }

    /// [`FakeUpstream::start`], returning the error instead of panicking.
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let up = switchboard_connector_test::FakeUpstream::try_start().await?;
    /// # Ok(()) }
    /// ```
    pub async fn try_start() -> std::io::Result<FakeUpstream> {
        let shared = Arc::new(Shared {
            script: Mutex::new(Script {
                queue: VecDeque::new(),
                handler: None,
                default: Reply::ok(),
            }),
            requests: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .fallback(serve)
            .layer(DefaultBodyLimit::disable())
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            // Ends only on an accept-loop I/O error, which a test sees as
            // connection failures; nothing to report beyond that.
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeUpstream {
            addr,
            shared,
            server,
        })
    }

    /// The listening address.
    ///
    /// ```no_run
    /// # fn f(up: switchboard_connector_test::FakeUpstream) {
    /// let port = up.addr().port();
    /// # }
    /// ```
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `"127.0.0.1:<port>"`: the entry to pass to
    /// [`Harness::allow_host`](crate::Harness::allow_host).
    ///
    /// ```no_run
    /// # fn f(up: switchboard_connector_test::FakeUpstream) {
    /// let h = switchboard_connector_test::Harness::connector("webhook").allow_host(up.host());
    /// # }
    /// ```
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `"http://127.0.0.1:<port>"`, for connectors configured with a base URL.
    ///
    /// ```no_run
    /// # fn f(up: switchboard_connector_test::FakeUpstream) {
    /// let base = up.base_url();
    /// # }
    /// ```
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `"http://127.0.0.1:<port><path>"`; `path` should start with `/`.
    ///
    /// ```no_run
    /// # fn f(up: switchboard_connector_test::FakeUpstream) {
    /// let url = up.url("/hook");
    /// # }
    /// ```
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Queue `reply` for one future request (FIFO). Returns `self` so
    /// several can be chained.
    ///
    /// ```no_run
    /// # use switchboard_connector_test::Reply;
    /// # fn f(up: switchboard_connector_test::FakeUpstream) {
    /// up.push(Reply::status(503)).push(Reply::ok());
    /// # }
    /// ```
    pub fn push(&self, reply: Reply) -> &Self {
        lock(&self.shared.script).queue.push_back(reply);
        self
    }

    /// Answer every request not served from the queue by calling `f`
    /// (replaces any previous handler).
    ///
    /// ```no_run
    /// # use switchboard_connector_test::Reply;
    /// # fn f(up: switchboard_connector_test::FakeUpstream) {
    /// up.handle(|req| match req.path.as_str() {
    ///     "/health" => Reply::ok(),
    ///     _ => Reply::status(404),
    /// });
    /// # }
    /// ```
    pub fn handle(&self, f: impl Fn(&RecordedRequest) -> Reply + Send + Sync + 'static) {
        lock(&self.shared.script).handler = Some(Arc::new(f));
    }

    /// The reply used when the queue is empty and no handler is set
    /// (initially `200` with an empty body). Removes any handler.
    ///
    /// ```no_run
    /// # use switchboard_connector_test::Reply;
    /// # fn f(up: switchboard_connector_test::FakeUpstream) {
    /// up.set_default(Reply::status(503)); // "the upstream is down"
    /// # }
    /// ```
    pub fn set_default(&self, reply: Reply) {
        let mut script = lock(&self.shared.script);
        script.handler = None;
        script.default = reply;
    }

    /// All requests received so far, in arrival order.
    ///
    /// ```no_run
    /// # fn f(up: switchboard_connector_test::FakeUpstream) {
    /// assert_eq!(up.requests().len(), 1);
    /// # }
    /// ```
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// All requests received so far, forgetting them.
    ///
    /// ```no_run
    /// # fn f(up: switchboard_connector_test::FakeUpstream) {
    /// let before = up.take_requests();
    /// # }
    /// ```
    pub fn take_requests(&self) -> Vec<RecordedRequest> {
        std::mem::take(&mut *lock(&self.shared.requests))
    }

    /// The most recent request.
    ///
    /// ```no_run
    /// # fn f(up: switchboard_connector_test::FakeUpstream) {
    /// let last = up.last_request();
    /// # }
    /// ```
    pub fn last_request(&self) -> Option<RecordedRequest> {
        lock(&self.shared.requests).last().cloned()
    }
}

async fn serve(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = RecordedRequest {
        method: method.as_str().to_string(),
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        json: serde_json::from_slice(&body).ok(),
        body: body.to_vec(),
    };
    lock(&shared.requests).push(req.clone());
    let reply = shared.next_reply(&req);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut resp = Response::new(Body::from(reply.body));
    *resp.status_mut() = reply.status;
    *resp.headers_mut() = reply.headers;
    resp
}
