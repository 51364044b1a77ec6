//! The operator CLI: talks to a running gateway over its HTTP API.
//!
//! Human output by default, `--json` for scripts. Exit codes: 0 success,
//! 1 the gateway refused the request (the error is printed), 2 bad usage,
//! 3 the gateway could not be reached.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// A failed CLI call, with the exit code scripts rely on.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the gateway at {url}: {reason}")]
    Unreachable { url: String, reason: String },
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Refused(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Unreachable { .. } => 3,
        }
    }
}

pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
    pub json: bool,
}

impl Client {
    pub fn new(base: &str, json: bool, token: Option<String>) -> Result<Self, CliError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| CliError::Usage(e.to_string()))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            http,
            token,
            json,
        })
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, CliError> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().await.map_err(|e| CliError::Unreachable {
            url: self.base.clone(),
            reason: e.to_string(),
        })?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let code = body["error"]["code"].as_str().unwrap_or("error");
        let message = body["error"]["message"].as_str().unwrap_or("(no message)");
        Err(CliError::Refused(format!("{status} {code}: {message}")))
    }

    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post_json(&self, path: &str, body: Vec<u8>) -> Result<Value, CliError> {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        self.send(req).await
    }

    pub async fn put_bytes(&self, path: &str, body: Vec<u8>) -> Result<Value, CliError> {
        let req = self
            .http
            .put(format!("{}{path}", self.base))
            .header("content-type", "application/wasm")
            .body(body);
        self.send(req).await
    }

    pub async fn put_json(&self, path: &str, body: Vec<u8>) -> Result<Value, CliError> {
        let req = self
            .http
            .put(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        self.send(req).await
    }

    pub async fn post_empty(&self, path: &str) -> Result<Value, CliError> {
        self.send(self.http.post(format!("{}{path}", self.base)))
            .await
    }

    /// Prints `value` as JSON, or through `human` unless `--json`.
    pub fn print(&self, value: &Value, human: impl FnOnce(&Value) -> String) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
        } else {
            println!("{}", human(value));
        }
    }
}

/// `/v1/<a>/<b>…` with each segment percent-encoded (event ids may hold `/`,
/// `?`, spaces).
pub fn path(segments: &[&str]) -> String {
    let mut url = match reqwest::Url::parse("http://x/") {
        Ok(u) => u,
        Err(_) => return String::new(),
    };
    if let Ok(mut p) = url.path_segments_mut() {
        p.pop_if_empty().extend(segments);
    }
    url.path().to_string()
}

/// `?a=1&b=x%20y` from pairs, values percent-encoded.
pub fn query(pairs: &[(&str, String)]) -> String {
    let mut url = match reqwest::Url::parse("http://x/") {
        Ok(u) => u,
        Err(_) => return String::new(),
    };
    url.query_pairs_mut()
        .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())));
    url.query().map(|q| format!("?{q}")).unwrap_or_default()
}

pub fn dead_text(v: &Value) -> String {
    let rows: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            format!(
                "{:<8} {:<16} {:<24} {:<20} attempts {:<3} died {}  {}",
                d["delivery_id"],
                d["connector"].as_str().unwrap_or("?"),
                d["event_id"].as_str().unwrap_or("?"),
                d["type"].as_str().unwrap_or("?"),
                d["attempts"],
                fmt_time(d["died_at"].as_i64()),
                one_line(d["last_error"].as_str().unwrap_or(""))
            )
        })
        .collect();
    if rows.is_empty() {
        "no dead letters".into()
    } else {
        rows.join("\n")
    }
}

pub fn lanes_text(v: &Value) -> String {
    let mut out = Vec::new();
    for l in v.as_array().into_iter().flatten() {
        let c = l["connector"].as_str().unwrap_or("?");
        match l["head"].as_array() {
            Some(head) if head.len() == 2 => {
                let (event, d) = (&head[0], &head[1]);
                out.push(format!(
                    "{c}: head is delivery {} (event {}) {} after {} attempts{}{}; {} waiting behind it",
                    d["id"],
                    event.as_str().unwrap_or("?"),
                    d["state"].as_str().unwrap_or("?"),
                    d["attempts"],
                    d["next_attempt_at"]
                        .as_i64()
                        .map(|t| format!(", next attempt {}", fmt_time(Some(t))))
                        .unwrap_or_default(),
                    d["last_error"]
                        .as_str()
                        .map(|e| format!(", last error: {}", one_line(e)))
                        .unwrap_or_default(),
                    l["waiting"]
                ));
            }
            _ => out.push(format!(
                "{c}: not blocked (no pending delivery on this key)"
            )),
        }
    }
    out.join("\n")
}

pub fn audit_text(v: &Value) -> String {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            format!(
                "{}  {:<12} {:<20} {:<16} before {}  after {}",
                fmt_time(a["at"].as_i64()),
                a["actor"].as_str().unwrap_or("?"),
                a["action"].as_str().unwrap_or("?"),
                a["target"].as_str().unwrap_or("?"),
                a["before"],
                a["after"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn read_file(path: &Path) -> Result<Vec<u8>, CliError> {
    if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .map_err(|e| CliError::Usage(format!("cannot read stdin: {e}")))?;
        return Ok(buf);
    }
    std::fs::read(path).map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))
}

pub fn version_line(v: &Value) -> String {
    format!(
        "{:>4}  {}  {} {}  {} bytes  uploaded {}{}",
        v["version"],
        v["digest"].as_str().unwrap_or(""),
        v["info"]["name"].as_str().unwrap_or("?"),
        v["info"]["version"].as_str().unwrap_or("?"),
        v["size_bytes"],
        fmt_time(v["uploaded_at"].as_i64()),
        if v["active"].as_bool() == Some(true) {
            "  (active)"
        } else {
            ""
        }
    )
}

pub fn connector_line(c: &Value) -> String {
    let d = &c["deliveries"];
    let component = match c["component"].as_object() {
        Some(_) => format!(
            "v{} {}",
            c["component"]["version"],
            c["component"]["digest"]
                .as_str()
                .unwrap_or("")
                .get(..19)
                .unwrap_or("")
        ),
        None => "no component".into(),
    };
    format!(
        "{:<16} {:<28} {:<12} ready {:>8}  blocked {:>8}  in flight {:>4}  dead {:>6}  delivered {:>10}",
        c["name"].as_str().unwrap_or("?"),
        component,
        health_text(c, crate::queue::now_ms()),
        d["ready"],
        d["blocked"],
        d["in_flight"],
        d["dead"],
        d["delivered"]
    )
}

/// A connector's health in a few words, from its `GET /v1/connectors` view:
/// `PAUSED`, `closed`, `ramp 4/64` (slow start after an outage), `open, probe
/// in 42s (every 60s)`, `probing`, or `idle` before the first attempt.
pub fn health_text(c: &Value, now_ms: i64) -> String {
    if c["paused"].as_bool() == Some(true) {
        return "PAUSED".into();
    }
    let b = &c["breaker"];
    match b["state"].as_str() {
        None => "idle".into(),
        Some("closed") => {
            let limit = c["overrides"]["concurrency"]
                .as_u64()
                .or_else(|| c["concurrency"].as_u64())
                .unwrap_or(0);
            match b["window"].as_u64() {
                Some(w) if w < limit => format!("ramp {w}/{limit}"),
                _ => "closed".into(),
            }
        }
        Some("open") => {
            let every = b["probe_interval_ms"].as_i64().unwrap_or(0) / 1000;
            let due = b["next_probe_at"].as_i64().unwrap_or(now_ms);
            let wait = (due - now_ms).max(0);
            format!("open, probe in {}s (every {every}s)", (wait + 999) / 1000)
        }
        Some(other) => other.to_string(),
    }
}

/// Milliseconds as a short age: `850ms`, `42s`, `17m`, `5h`, `3d`.
pub fn age_text(ms: Option<i64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms < 1_000 => format!("{ms}ms"),
        Some(ms) if ms < 60_000 => format!("{}s", ms / 1_000),
        Some(ms) if ms < 3_600_000 => format!("{}m", ms / 60_000),
        Some(ms) if ms < 86_400_000 => format!("{}h", ms / 3_600_000),
        Some(ms) => format!("{}d", ms / 86_400_000),
    }
}

pub fn event_text(v: &Value) -> String {
    let mut out = format!(
        "event {}  type {}  keys {}  accepted {}\n",
        v["id"].as_str().unwrap_or("?"),
        v["type"].as_str().unwrap_or("?"),
        v["keys"],
        fmt_time(v["accepted_at"].as_i64())
    );
    for d in v["deliveries"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  delivery {:<8} {:<16} {:<10} attempts {:<3}{}{}\n",
            d["id"],
            d["connector"].as_str().unwrap_or("?"),
            d["state"].as_str().unwrap_or("?"),
            d["attempts"],
            d["next_attempt_at"]
                .as_i64()
                .map(|t| format!("  next {}", fmt_time(Some(t))))
                .unwrap_or_default(),
            d["last_error"]
                .as_str()
                .map(|e| format!("  last error: {}", one_line(e)))
                .unwrap_or_default(),
        ));
    }
    out.trim_end().to_string()
}

/// An error as one line of a table: an upstream's reason may carry the
/// start of an HTML page, with newlines and tabs; runs of whitespace and
/// control characters become one space.
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

fn fmt_time(ms: Option<i64>) -> String {
    match ms {
        Some(ms) => {
            let secs = ms.div_euclid(1000);
            let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
            let (y, m, d) = civil_from_days(days);
            format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60
            )
        }
        None => "-".into(),
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(path(&["v1", "events", "a/b c?"]), "/v1/events/a%2Fb%20c%3F");
    }

    #[test]
    fn an_upstream_page_in_a_last_error_stays_on_its_delivery_line() {
        use serde_json::json;
        let page = "HTTP 501: <!DOCTYPE HTML>\n<html lang=\"en\">\r\n\t<head>\u{7}</head>";
        let v = json!({"id": "evt-1", "type": "number.assign", "keys": ["msisdn:1"],
            "accepted_at": 0,
            "deliveries": [{"id": 1, "connector": "webhook", "state": "ready",
                            "attempts": 3, "last_error": page}]});
        let text = event_text(&v);
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(
            text.ends_with(
                "last error: HTTP 501: <!DOCTYPE HTML> <html lang=\"en\"> <head> </head>"
            ),
            "{text}"
        );
        let dead = dead_text(&json!([{"delivery_id": 1, "connector": "webhook",
            "event_id": "evt-1", "type": "number.assign", "attempts": 3, "died_at": 0,
            "last_error": page}]));
        assert_eq!(dead.lines().count(), 1, "{dead}");
        assert_eq!(one_line("  a \n\n b\t"), "a b");
        assert_eq!(one_line(""), "");
    }

    #[test]
    fn health_names_pause_ramp_and_the_next_probe() {
        use serde_json::json;
        let at = 1_000_000;
        let open = json!({"paused": false, "concurrency": 64, "breaker":
            {"state": "open", "next_probe_at": at + 41_200, "probe_interval_ms": 60_000}});
        assert_eq!(health_text(&open, at), "open, probe in 42s (every 60s)");
        let overdue = json!({"breaker": {"state": "open", "next_probe_at": at - 5, "probe_interval_ms": 1_000}});
        assert_eq!(health_text(&overdue, at), "open, probe in 0s (every 1s)");
        let paused = json!({"paused": true, "breaker": open["breaker"].clone()});
        assert_eq!(health_text(&paused, at), "PAUSED");
        let ramp = json!({"concurrency": 64, "overrides": {"concurrency": 16},
            "breaker": {"state": "closed", "consecutive_failures": 0, "window": 4}});
        assert_eq!(health_text(&ramp, at), "ramp 4/16");
        let full = json!({"concurrency": 64, "overrides": {"concurrency": null},
            "breaker": {"state": "closed", "consecutive_failures": 1, "window": 64}});
        assert_eq!(health_text(&full, at), "closed");
        let probing = json!({"breaker": {"state": "probing", "probe_interval_ms": 4_000}});
        assert_eq!(health_text(&probing, at), "probing");
        assert_eq!(
            health_text(&json!({"paused": false, "breaker": null}), at),
            "idle"
        );
    }

    #[test]
    fn ages_are_short() {
        assert_eq!(age_text(None), "-");
        assert_eq!(age_text(Some(850)), "850ms");
        assert_eq!(age_text(Some(42_999)), "42s");
        assert_eq!(age_text(Some(17 * 60_000)), "17m");
        assert_eq!(age_text(Some(5 * 3_600_000 + 1)), "5h");
        assert_eq!(age_text(Some(3 * 86_400_000)), "3d");
    }

    #[test]
    fn times_print_as_utc() {
        assert_eq!(fmt_time(Some(0)), "1970-01-01T00:00:00Z");
        assert_eq!(fmt_time(Some(1_798_675_200_000)), "2026-12-31T00:00:00Z");
    }
}
