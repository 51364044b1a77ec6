//! Outgoing HTTP over the standard `wasi:http/outgoing-handler`.
//!
//! A small blocking client: build a [`Request`], [`Request::send`] it, get a
//! fully read [`Response`]. The host decides what is reachable
//! (`allowed_hosts`, checked by name and by resolved address), applies its
//! own timeouts and response-size cap, and injects secret headers, so the
//! guest never holds credentials.
//!
//! Invariants:
//! - Redirects are not followed (a redirect to another host would bypass the
//!   operator's intent; `Outcome::from_status` rejects 3xx).
//! - The response body is read completely, up to [`MAX_RESPONSE_BYTES`];
//!   beyond that `send` fails with [`Error::Transport`].
//! - Nothing here panics on network input.

use crate::__private::bindings::wasi::http::outgoing_handler;
use crate::__private::bindings::wasi::http::types::{
    self as wasi, ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest,
    RequestOptions, Scheme,
};
use crate::__private::bindings::wasi::io::streams::StreamError;
use crate::Error;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest response body the SDK reads (the host may cap lower).
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// wasi:io streams accept at most 4096 bytes per blocking write.
const WRITE_CHUNK: usize = 4096;
const READ_CHUNK: u64 = 64 * 1024;

/// A POST request to `url`.
///
/// ```no_run
/// let resp = switchboard_sdk::http::post("http://crm.local/events")
///     .json_text(r#"{"msisdn":"2065551234"}"#)
///     .send();
/// ```
pub fn post(url: &str) -> Request {
    Request::new(HttpMethod::Post, url)
}

/// A PUT request to `url`.
///
/// ```no_run
/// let resp = switchboard_sdk::http::put("http://crm.local/subscribers/1").json_text("{}").send();
/// ```
pub fn put(url: &str) -> Request {
    Request::new(HttpMethod::Put, url)
}

/// A GET request to `url`.
///
/// ```no_run
/// let resp = switchboard_sdk::http::get("http://crm.local/health").send();
/// ```
pub fn get(url: &str) -> Request {
    Request::new(HttpMethod::Get, url)
}

/// A DELETE request to `url`.
///
/// ```no_run
/// let resp = switchboard_sdk::http::delete("http://hss.local/subscribers/1").send();
/// ```
pub fn delete(url: &str) -> Request {
    Request::new(HttpMethod::Delete, url)
}

/// A POST of `body` serialised as JSON.
///
/// ```no_run
/// let resp = switchboard_sdk::http::post_json("http://sms.local/send", &serde_json::json!({"to": "A1"}))
///     .header("X-Campaign", "quota")
///     .send();
/// ```
pub fn post_json<T: serde::Serialize + ?Sized>(url: &str, body: &T) -> Request {
    post(url).json(body)
}

/// HTTP methods supported by [`Request`].
///
/// ```no_run
/// # use switchboard_sdk::http::{HttpMethod, Request};
/// let r = Request::new(HttpMethod::Patch, "http://crm.local/x");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    /// GET
    Get,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
}

/// An outgoing request under construction. Errors found while building
/// (bad URL, unserialisable body) are reported by [`Request::send`].
///
/// ```no_run
/// # use std::time::Duration;
/// let resp = switchboard_sdk::http::post("http://crm.local/events")
///     .header("Idempotency-Key", "d-1")
///     .timeout(Duration::from_secs(5))
///     .json_text("{}")
///     .send();
/// ```
#[derive(Debug, Clone)]
#[must_use = "a request does nothing until sent"]
pub struct Request {
    method: HttpMethod,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    timeout: Option<Duration>,
    error: Option<Error>,
}

impl Request {
    /// A request with `method` to `url` (`http://` or `https://`).
    ///
    /// ```no_run
    /// # use switchboard_sdk::http::{HttpMethod, Request};
    /// let r = Request::new(HttpMethod::Put, "http://crm.local/x");
    /// ```
    pub fn new(method: HttpMethod, url: &str) -> Self {
        Self {
            method,
            url: url.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: None,
            error: None,
        }
    }

    /// Add a header (repeatable). `Content-Length` is set by
    /// [`Request::send`] from the body; one added here is replaced.
    ///
    /// ```no_run
    /// let r = switchboard_sdk::http::get("http://crm.local/x").header("Accept", "application/json");
    /// ```
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.as_bytes().to_vec()));
        self
    }

    /// Set a raw body.
    ///
    /// ```no_run
    /// let r = switchboard_sdk::http::post("http://crm.local/x").body(b"raw".to_vec());
    /// ```
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Set a body that already is JSON text (sent verbatim) and the
    /// `Content-Type: application/json` header.
    ///
    /// ```no_run
    /// let r = switchboard_sdk::http::post("http://crm.local/x").json_text(r#"{"a":1}"#);
    /// ```
    pub fn json_text(self, json: &str) -> Self {
        self.header("content-type", "application/json")
            .body(json.as_bytes())
    }

    /// Serialise `body` as JSON and set `Content-Type: application/json`.
    ///
    /// ```no_run
    /// let r = switchboard_sdk::http::post("http://crm.local/x").json(&serde_json::json!({"a": 1}));
    /// ```
    pub fn json<T: serde::Serialize + ?Sized>(mut self, body: &T) -> Self {
        match serde_json::to_vec(body) {
            Ok(bytes) => self.header("content-type", "application/json").body(bytes),
            Err(e) => {
                self.error = Some(Error::BadPayload(e.to_string()));
                self
            }
        }
    }

    /// Ask for a connect and first-byte timeout (the host's limits still apply).
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// let r = switchboard_sdk::http::get("http://crm.local/x").timeout(Duration::from_secs(2));
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Send the request and read the whole response.
    ///
    /// ```no_run
    /// match switchboard_sdk::http::get("http://crm.local/x").send() {
    ///     Ok(resp) => println!("status {}", resp.status()),
    ///     Err(e) => println!("failed: {e}"),
    /// }
    /// ```
    pub fn send(self) -> Result<Response, Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let target = parse_url(&self.url)?;

        let framed = has_body(self.method, self.body.len());
        let headers = fields(&self.headers, framed.then_some(self.body.len()))?;
        let req = OutgoingRequest::new(headers);
        let method = match self.method {
            HttpMethod::Get => Method::Get,
            HttpMethod::Post => Method::Post,
            HttpMethod::Put => Method::Put,
            HttpMethod::Patch => Method::Patch,
            HttpMethod::Delete => Method::Delete,
        };
        let scheme = if target.https {
            Scheme::Https
        } else {
            Scheme::Http
        };
        req.set_method(&method)
            .and_then(|()| req.set_scheme(Some(&scheme)))
            .and_then(|()| req.set_authority(Some(&target.authority)))
            .and_then(|()| req.set_path_with_query(Some(&target.path_with_query)))
            .map_err(|()| Error::InvalidUrl(self.url.clone()))?;

        // A request without a body never opens one, so it goes out with
        // neither `content-length` nor chunked framing.
        let body = if framed {
            Some(
                req.body()
                    .map_err(|()| Error::Transport("request body already taken".into()))?,
            )
        } else {
            None
        };

        let options = self.timeout.map(|t| {
            let nanos = u64::try_from(t.as_nanos()).unwrap_or(u64::MAX);
            let opts = RequestOptions::new();
            // The host may refuse to honour options; that is not an error.
            let _ = opts.set_connect_timeout(Some(nanos));
            let _ = opts.set_first_byte_timeout(Some(nanos));
            let _ = opts.set_between_bytes_timeout(Some(nanos));
            opts
        });

        let pending = outgoing_handler::handle(req, options).map_err(from_error_code)?;

        if let Some(body) = body {
            write_body(&body, &self.body)?;
            OutgoingBody::finish(body, None).map_err(from_error_code)?;
        }

        pending.subscribe().block();
        let resp = match pending.get() {
            Some(Ok(Ok(resp))) => resp,
            Some(Ok(Err(code))) => return Err(from_error_code(code)),
            Some(Err(())) => return Err(Error::Transport("response already taken".into())),
            None => return Err(Error::Transport("response not ready after wait".into())),
        };

        let status = resp.status();
        let headers = {
            let fields = resp.headers();
            fields.entries()
        };
        let incoming = resp
            .consume()
            .map_err(|()| Error::Transport("response body already taken".into()))?;
        let body = read_body(&incoming)?;
        drop(incoming);
        Ok(Response::from_parts(status, headers, body))
    }
}

/// Whether a request carries a body: any bytes, or a POST, PUT or PATCH
/// (which sends `content-length: 0` when empty).
fn has_body(method: HttpMethod, len: usize) -> bool {
    len > 0
        || matches!(
            method,
            HttpMethod::Post | HttpMethod::Put | HttpMethod::Patch
        )
}

/// The request's header fields. A body is framed by length: `content-length`
/// is set from it (replacing one the caller set), so a request is never sent
/// chunked — some upstream APIs, and proxies in front of them, refuse chunked
/// requests. One host call when every header is valid; the slow path names
/// the bad one.
fn fields(headers: &[(String, Vec<u8>)], body_len: Option<usize>) -> Result<Fields, Error> {
    let mut list: Vec<(String, Vec<u8>)> = headers
        .iter()
        .filter(|(name, _)| name != "content-length")
        .cloned()
        .collect();
    if let Some(len) = body_len {
        list.push(("content-length".into(), len.to_string().into_bytes()));
    }
    if let Ok(fields) = Fields::from_list(&list) {
        return Ok(fields);
    }
    let fields = Fields::new();
    for (name, value) in &list {
        fields
            .append(name, value)
            .map_err(|e| Error::Transport(format!("header `{name}`: {e:?}")))?;
    }
    Ok(fields)
}

fn write_body(body: &OutgoingBody, bytes: &[u8]) -> Result<(), Error> {
    let stream = body
        .write()
        .map_err(|()| Error::Transport("request body stream already taken".into()))?;
    for chunk in bytes.chunks(WRITE_CHUNK) {
        stream
            .blocking_write_and_flush(chunk)
            .map_err(|e| from_stream_error(e, "writing request body"))?;
    }
    // The stream must be dropped before the body is finished.
    drop(stream);
    Ok(())
}

fn read_body(incoming: &IncomingBody) -> Result<Vec<u8>, Error> {
    let stream = incoming
        .stream()
        .map_err(|()| Error::Transport("response body stream already taken".into()))?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(READ_CHUNK) {
            Ok(chunk) => {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(Error::Transport(format!(
                        "response body larger than {MAX_RESPONSE_BYTES} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Err(StreamError::Closed) => break,
            Err(e) => return Err(from_stream_error(e, "reading response body")),
        }
    }
    drop(stream);
    Ok(body)
}

fn from_stream_error(e: StreamError, during: &str) -> Error {
    match e {
        StreamError::Closed => Error::Transport(format!("stream closed while {during}")),
        StreamError::LastOperationFailed(err) => match wasi::http_error_code(&err) {
            Some(code) => from_error_code(code),
            None => Error::Transport(format!("{during}: {}", err.to_debug_string())),
        },
    }
}

/// An error code by its WIT name (`connection-refused`, `DNS-timeout`,
/// `HTTP-request-URI-invalid`), with its payload if it has one: the name the
/// TypeScript and Python SDKs give, so one filter on a failure reason
/// matches connectors in every language.
fn wit_name(code: &ErrorCode) -> String {
    let debug = format!("{code:?}");
    let debug = debug.strip_prefix("ErrorCode::").unwrap_or(&debug);
    let end = debug
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(debug.len());
    let (ident, payload) = debug.split_at(end);
    let mut words: Vec<String> = Vec::new();
    for c in ident.chars() {
        match words.last_mut() {
            Some(word) if !c.is_ascii_uppercase() => word.push(c),
            _ => words.push(c.to_string()),
        }
    }
    let mut name = words
        .iter()
        .map(|w| match w.to_ascii_lowercase().as_str() {
            w @ ("dns" | "ip" | "tls" | "http" | "uri") => w.to_ascii_uppercase(),
            w => w.to_string(),
        })
        .collect::<Vec<_>>()
        .join("-");
    let payload = payload.trim();
    if !payload.is_empty() {
        name.push(' ');
        name.push_str(payload);
    }
    name
}

fn from_error_code(code: ErrorCode) -> Error {
    match code {
        ErrorCode::HttpRequestDenied => Error::Denied("host not in allowed_hosts".into()),
        ErrorCode::DestinationIpProhibited => {
            Error::Denied("destination address is prohibited".into())
        }
        ErrorCode::DnsTimeout
        | ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout
        | ErrorCode::HttpResponseTimeout => Error::Timeout(wit_name(&code)),
        ErrorCode::DnsError(_)
        | ErrorCode::DestinationNotFound
        | ErrorCode::DestinationUnavailable
        | ErrorCode::DestinationIpUnroutable
        | ErrorCode::ConnectionRefused
        | ErrorCode::ConnectionTerminated
        | ErrorCode::ConnectionLimitReached => Error::Connect(wit_name(&code)),
        other => Error::Transport(wit_name(&other)),
    }
}

/// A fully read HTTP response.
///
/// ```no_run
/// let resp = switchboard_sdk::http::get("http://crm.local/x").send().unwrap();
/// if resp.is_success() {
///     let v: serde_json::Value = resp.json().unwrap();
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Response {
    /// Build a response from its parts (useful in native unit tests).
    ///
    /// ```no_run
    /// # use switchboard_sdk::http::Response;
    /// let r = Response::from_parts(503, vec![("retry-after".into(), b"5".to_vec())], vec![]);
    /// ```
    pub fn from_parts(status: u16, headers: Vec<(String, Vec<u8>)>, body: Vec<u8>) -> Self {
        Self {
            status,
            headers,
            body,
        }
    }

    /// The status code.
    ///
    /// ```no_run
    /// # let resp = switchboard_sdk::http::Response::from_parts(200, vec![], vec![]);
    /// assert_eq!(resp.status(), 200);
    /// ```
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Whether the status is 2xx.
    ///
    /// ```no_run
    /// # let resp = switchboard_sdk::http::Response::from_parts(204, vec![], vec![]);
    /// assert!(resp.is_success());
    /// ```
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// All headers, names lower-case, in wire order.
    ///
    /// ```no_run
    /// # let resp = switchboard_sdk::http::Response::from_parts(200, vec![], vec![]);
    /// for (name, value) in resp.headers() { let _ = (name, value); }
    /// ```
    pub fn headers(&self) -> &[(String, Vec<u8>)] {
        &self.headers
    }

    /// The first value of header `name` (case-insensitive), if it is UTF-8.
    ///
    /// ```no_run
    /// # let resp = switchboard_sdk::http::Response::from_parts(200, vec![], vec![]);
    /// let ct = resp.header("Content-Type");
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The body bytes.
    ///
    /// ```no_run
    /// # let resp = switchboard_sdk::http::Response::from_parts(200, vec![], vec![]);
    /// let n = resp.body().len();
    /// ```
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as text (invalid UTF-8 replaced).
    ///
    /// ```no_run
    /// # let resp = switchboard_sdk::http::Response::from_parts(200, vec![], b"ok".to_vec());
    /// assert_eq!(resp.text(), "ok");
    /// ```
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Parse the body as JSON. A body that does not parse is a
    /// [`Error::BadPayload`].
    ///
    /// ```no_run
    /// # let resp = switchboard_sdk::http::Response::from_parts(200, vec![], b"{}".to_vec());
    /// let v: serde_json::Value = resp.json().unwrap();
    /// ```
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| Error::BadPayload(e.to_string()))
    }

    /// The `Retry-After` delay: delta-seconds or an IMF-fixdate HTTP date
    /// (a date in the past gives zero). `None` if absent or unparsable.
    ///
    /// ```no_run
    /// # let resp = switchboard_sdk::http::Response::from_parts(429, vec![("retry-after".into(), b"30".to_vec())], vec![]);
    /// assert_eq!(resp.retry_after(), Some(std::time::Duration::from_secs(30)));
    /// ```
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        let value = self.header("retry-after")?.trim();
        if let Ok(secs) = value.parse::<u64>() {
            return Some(crate::clamp_duration(Duration::from_secs(secs)));
        }
        let at = parse_http_date(value)?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        Some(crate::clamp_duration(Duration::from_secs(
            at.saturating_sub(now),
        )))
    }
}

/// The parts of a URL that wasi:http needs.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    https: bool,
    authority: String,
    path_with_query: String,
}

fn parse_url(url: &str) -> Result<Target, Error> {
    let invalid = |why: &str| Error::InvalidUrl(format!("{why}: `{url}`"));
    let (https, rest) = if let Some(rest) = strip_prefix_ignore_case(url, "http://") {
        (false, rest)
    } else if let Some(rest) = strip_prefix_ignore_case(url, "https://") {
        (true, rest)
    } else {
        return Err(invalid("scheme must be http or https"));
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.is_empty() {
        return Err(invalid("no host"));
    }
    if authority.contains('@') {
        return Err(invalid(
            "credentials in URLs are not allowed; the host injects them",
        ));
    }
    if authority
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid("whitespace in host"));
    }
    let mut path = &rest[end..];
    if let Some(hash) = path.find('#') {
        path = &path[..hash];
    }
    let path_with_query = if path.is_empty() {
        "/".to_string()
    } else if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    Ok(Target {
        https,
        authority: authority.to_string(),
        path_with_query,
    })
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Seconds since the Unix epoch of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn parse_http_date(s: &str) -> Option<u64> {
    let (_, rest) = s.split_once(", ")?;
    let mut parts = rest.split(' ');
    let day: u64 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: u64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':');
    let h: u64 = hms.next()?.parse().ok()?;
    let m: u64 = hms.next()?.parse().ok()?;
    let sec: u64 = hms.next()?.parse().ok()?;
    if parts.next()? != "GMT" || parts.next().is_some() {
        return None;
    }
    if !(1..=31).contains(&day) || year < 1970 || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day)?;
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm, for years ≥ 1970).
fn days_from_civil(y: u64, m: u64, d: u64) -> Option<u64> {
    let y = if m <= 2 { y.checked_sub(1)? } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).checked_sub(719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_read_as_their_wit_names() {
        assert_eq!(
            wit_name(&ErrorCode::ConnectionRefused),
            "connection-refused"
        );
        assert_eq!(wit_name(&ErrorCode::DnsTimeout), "DNS-timeout");
        assert_eq!(
            wit_name(&ErrorCode::DestinationIpProhibited),
            "destination-IP-prohibited"
        );
        assert_eq!(
            wit_name(&ErrorCode::HttpRequestUriInvalid),
            "HTTP-request-URI-invalid"
        );
        assert_eq!(
            wit_name(&ErrorCode::HttpResponseBodySize(Some(7))),
            "HTTP-response-body-size (Some(7))"
        );
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:18080/op?x=1#frag").ok(),
            Some(Target {
                https: false,
                authority: "127.0.0.1:18080".into(),
                path_with_query: "/op?x=1".into()
            })
        );
        assert_eq!(
            parse_url("HTTPS://crm.example").ok(),
            Some(Target {
                https: true,
                authority: "crm.example".into(),
                path_with_query: "/".into()
            })
        );
        assert_eq!(
            parse_url("http://h?q").ok().map(|t| t.path_with_query),
            Some("/?q".into())
        );
        for bad in ["ftp://x", "http://", "http://u:p@h/", "h/x", "http://a b/"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn http_dates() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(parse_http_date("garbage"), None);
    }

    #[test]
    fn retry_after_date_in_past_is_zero() {
        let r = Response::from_parts(
            503,
            vec![(
                "Retry-After".into(),
                b"Sun, 06 Nov 1994 08:49:37 GMT".to_vec(),
            )],
            vec![],
        );
        assert_eq!(r.retry_after(), Some(Duration::ZERO));
        let r = Response::from_parts(503, vec![("retry-after".into(), b"soon".to_vec())], vec![]);
        assert_eq!(r.retry_after(), None);
    }
}
