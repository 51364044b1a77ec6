//! Outcomes: how a connector classifies one attempt.
//!
//! The classification of HTTP statuses follows the gateway's contract
//! (SPEC §4.5): 2xx done; 408, 429 and 5xx retry, honouring `Retry-After`;
//! any other status reject with the status and the start of the body.

use crate::http::Response;
use std::time::Duration;

/// How many bytes of an error body go into a reject reason.
const REASON_BODY_BYTES: usize = 256;

/// The result of one delivery attempt.
///
/// ```no_run
/// # use switchboard_sdk::Outcome;
/// # use std::time::Duration;
/// let a = Outcome::done();
/// let b = Outcome::retry_after(Duration::from_secs(30), "upstream busy");
/// let c = Outcome::reject("subscriber unknown");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered; final.
    Done,
    /// Transient failure; the gateway tries again later (no sooner than
    /// `after`, if given, clamped by the gateway's policy).
    Retry {
        /// Minimum delay requested by the upstream.
        after: Option<Duration>,
        /// Why, for operators.
        reason: String,
    },
    /// Permanent failure; the delivery becomes a dead letter.
    Reject {
        /// Why, for operators.
        reason: String,
    },
}

impl Outcome {
    /// Delivered.
    ///
    /// ```no_run
    /// # use switchboard_sdk::Outcome;
    /// let o = Outcome::done();
    /// ```
    pub fn done() -> Self {
        Outcome::Done
    }

    /// Transient failure; the gateway picks the delay.
    ///
    /// ```no_run
    /// # use switchboard_sdk::Outcome;
    /// let o = Outcome::retry("upstream returned 503");
    /// ```
    pub fn retry(reason: impl Into<String>) -> Self {
        Outcome::Retry {
            after: None,
            reason: reason.into(),
        }
    }

    /// Transient failure; try again no sooner than `after`.
    ///
    /// ```no_run
    /// # use switchboard_sdk::Outcome;
    /// # use std::time::Duration;
    /// let o = Outcome::retry_after(Duration::from_secs(60), "rate limited");
    /// ```
    pub fn retry_after(after: Duration, reason: impl Into<String>) -> Self {
        Outcome::Retry {
            after: Some(crate::clamp_duration(after)),
            reason: reason.into(),
        }
    }

    /// Permanent failure.
    ///
    /// ```no_run
    /// # use switchboard_sdk::Outcome;
    /// let o = Outcome::reject("msisdn not provisioned");
    /// ```
    pub fn reject(reason: impl Into<String>) -> Self {
        Outcome::Reject {
            reason: reason.into(),
        }
    }

    /// Classify an HTTP response per SPEC §4.5.
    ///
    /// - 2xx → done;
    /// - 408, 429, 5xx → retry, honouring `Retry-After` (seconds or HTTP date);
    /// - anything else (other 4xx, and 1xx/3xx: redirects are not followed,
    ///   so they mean a misconfigured URL) → reject with the status and the
    ///   start of the body.
    ///
    /// ```no_run
    /// # use switchboard_sdk::{http, Outcome};
    /// let resp = http::post("http://crm.local/hook").json_text("{}").send().unwrap();
    /// let outcome = Outcome::from_status(&resp);
    /// ```
    pub fn from_status(resp: &Response) -> Self {
        let status = resp.status();
        match status {
            200..=299 => Outcome::Done,
            408 | 429 | 500..=599 => {
                let reason = format!("HTTP {status}{}", body_excerpt(resp.body()));
                match resp.retry_after() {
                    Some(after) => Outcome::retry_after(after, reason),
                    None => Outcome::retry(reason),
                }
            }
            _ => Outcome::reject(format!("HTTP {status}{}", body_excerpt(resp.body()))),
        }
    }
}

/// `": <first bytes of body>"` on one line (runs of whitespace and control
/// characters become one space, so an HTML error page does not break the
/// operator's tables and logs), cut on a character boundary; or `""`.
fn body_excerpt(body: &[u8]) -> String {
    let raw = String::from_utf8_lossy(body);
    let mut text = String::with_capacity(raw.len().min(4 * REASON_BODY_BYTES));
    for word in raw
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
    {
        if text.len() > REASON_BODY_BYTES {
            break;
        }
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(word);
    }
    if text.is_empty() {
        return String::new();
    }
    let mut end = text.len().min(REASON_BODY_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let ellipsis = if end < text.len() { "…" } else { "" };
    format!(": {}{ellipsis}", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, headers: &[(&str, &str)], body: &str) -> Response {
        Response::from_parts(
            status,
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
            body.as_bytes().to_vec(),
        )
    }

    #[test]
    fn classification_follows_spec_4_5() {
        let cases: &[(u16, &str)] = &[
            (200, "done"),
            (201, "done"),
            (204, "done"),
            (299, "done"),
            (408, "retry"),
            (429, "retry"),
            (500, "retry"),
            (503, "retry"),
            (599, "retry"),
            (400, "reject"),
            (401, "reject"),
            (404, "reject"),
            (409, "reject"),
            (422, "reject"),
            (301, "reject"),
        ];
        for &(status, want) in cases {
            let got = match Outcome::from_status(&resp(status, &[], "x")) {
                Outcome::Done => "done",
                Outcome::Retry { .. } => "retry",
                Outcome::Reject { .. } => "reject",
            };
            assert_eq!(got, want, "status {status}");
        }
    }

    #[test]
    fn reject_reason_has_status_and_start_of_body() {
        let long = "é".repeat(400);
        let o = Outcome::from_status(&resp(422, &[], &long));
        let Outcome::Reject { reason } = o else {
            panic!("not a reject")
        };
        assert!(reason.starts_with("HTTP 422: éé"), "{reason}");
        assert!(reason.ends_with('…'));
        assert!(reason.len() < 300);
    }

    #[test]
    fn an_html_error_page_becomes_a_one_line_reason() {
        let page = "<!DOCTYPE HTML>\n<html>\r\n\t<body>\n  <h1>Error response</h1>\u{0}</body>";
        let o = Outcome::from_status(&resp(501, &[], page));
        let Outcome::Retry { reason, .. } = o else {
            panic!("not a retry")
        };
        assert_eq!(
            reason,
            "HTTP 501: <!DOCTYPE HTML> <html> <body> <h1>Error response</h1> </body>"
        );
        // Whitespace alone is no excerpt.
        let o = Outcome::from_status(&resp(404, &[], " \r\n\t "));
        assert_eq!(o, Outcome::reject("HTTP 404"));
        // A long page is still cut, with the ellipsis.
        let long = format!("<p>\n{}</p>", "word ".repeat(200));
        let Outcome::Reject { reason } = Outcome::from_status(&resp(400, &[], &long)) else {
            panic!("not a reject")
        };
        assert!(reason.ends_with('…') && !reason.contains('\n'), "{reason}");
        assert!(reason.len() < 300, "{}", reason.len());
    }

    #[test]
    fn retry_after_seconds_is_honoured() {
        let o = Outcome::from_status(&resp(429, &[("Retry-After", "120")], ""));
        assert_eq!(
            o,
            Outcome::Retry {
                after: Some(Duration::from_secs(120)),
                reason: "HTTP 429".into()
            }
        );
    }

    #[test]
    fn result_converts_into_outcome() {
        let r: Result<Outcome, crate::Error> = Err(crate::Error::Timeout("read".into()));
        assert!(matches!(Outcome::from(r), Outcome::Retry { .. }));
        let r: Result<Outcome, crate::Error> = Err(crate::Error::MissingConfig("url".into()));
        assert!(matches!(Outcome::from(r), Outcome::Reject { .. }));
    }
}
