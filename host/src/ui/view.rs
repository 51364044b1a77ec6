//! The console's page frame and the small pieces every page uses: links to
//! events, keys and connectors, times, states. Everything is `maud`
//! markup, which escapes every value put into it; nothing here builds HTML
//! from strings.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::queue::{now_ms, Millis};
use crate::timefmt;

/// A path segment: everything but unreserved characters percent-encoded,
/// so a key holding `/`, `?` or `#` stays one segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b':');

pub fn segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

/// A query-string value.
pub fn query_value(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · Switchboard" }
            // No request for /favicon.ico, which is outside the console.
            link rel="icon" href="data:,";
            link rel="stylesheet" href="/ui/assets/console.css";
            link rel="stylesheet" href="/ui/assets/uPlot.min.css";
            script src="/ui/assets/uPlot.iife.min.js" defer {}
            script src="/ui/assets/console.js" defer {}
        }
    }
}

/// Who a page is for: what the frame shows and what its forms carry
/// (a console session implements it).
pub trait Viewer {
    /// The token's name.
    fn actor(&self) -> &str;
    /// May act (the `admin` scope).
    fn admin(&self) -> bool;
    /// The value the viewer's forms send back as `csrf`.
    fn csrf(&self) -> &str;
}

/// A page without the navigation (the login page).
pub fn page_bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body { (body) }
        }
    }
}

/// A console page: navigation, who is logged in, the body.
pub fn page(title: &str, session: &impl Viewer, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to the page" }
                header.top {
                    a.brand href="/ui/" { "Switchboard" }
                    nav {
                        a href="/ui/" { "Overview" }
                        a href="/ui/dead-letters" { "Dead letters" }
                        a href="/ui/audit" { "Audit" }
                    }
                    form.find method="get" action="/ui/find" {
                        input type="search" name="q" placeholder="event id or key (msisdn:…)" aria-label="Find an event or key";
                    }
                    span.who {
                        (session.actor())
                        @if !session.admin() { " (read-only)" }
                    }
                    form.logout method="post" action="/ui/logout" {
                        input type="hidden" name="csrf" value=(session.csrf());
                        button type="submit" { "Log out" }
                    }
                }
                main #main tabindex="-1" { h1 { (title) } (body) }
            }
        }
    }
}

/// An error page a form or link leads to: what went wrong, and a way back.
pub fn refusal(status: StatusCode, message: &str) -> Response {
    (
        status,
        page_bare(
            "Not done",
            html! {
                main.login {
                    h1 { (status.canonical_reason().unwrap_or("Error")) }
                    p.error role="alert" { (message) }
                    p { a href="/ui/" { "Back to the overview" } }
                }
            },
        ),
    )
        .into_response()
}

/// A refusal not yet rendered: small enough to return in a `Result`.
#[derive(Debug)]
pub struct Refused(pub StatusCode, pub String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        refusal(self.0, &self.1)
    }
}

/// An API error as a console page: its status and message.
impl From<crate::api::error::ApiError> for Refused {
    fn from(e: crate::api::error::ApiError) -> Self {
        Refused(e.status, e.body.message)
    }
}

impl From<crate::store::StoreError> for Refused {
    fn from(e: crate::store::StoreError) -> Self {
        crate::api::error::ApiError::from(e).into()
    }
}

impl From<Refused> for Response {
    fn from(r: Refused) -> Self {
        r.into_response()
    }
}

/// A hidden CSRF field for a form of `session`.
pub fn csrf(session: &impl Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf()); }
}

/// A time, with how long ago it was on hover.
pub fn time(ms: Millis) -> Markup {
    let ago = now_ms() - ms;
    let title = if ago >= 0 {
        format!("{} ago", timefmt::age(ago))
    } else {
        format!("in {}", timefmt::age(-ago))
    };
    html! { time datetime=(timefmt::utc(ms)) title=(title) { (timefmt::utc(ms)) } }
}

pub fn maybe_time(ms: Option<Millis>) -> Markup {
    match ms {
        Some(ms) => time(ms),
        None => html! { "–" },
    }
}

/// The console page of key `key`: `/ui/keys/{key}`, or `/ui/key?key=…` for
/// a key a browser would read as a dot segment (`.`, `..`).
pub fn key_href(key: &str) -> String {
    if dots_only(key) {
        format!("/ui/key?key={}", query_value(key))
    } else {
        format!("/ui/keys/{}", segment(key))
    }
}

/// The console page of event `id`, as [`key_href`].
pub fn event_href(id: &str) -> String {
    if dots_only(id) {
        format!("/ui/event?id={}", query_value(id))
    } else {
        format!("/ui/events/{}", segment(id))
    }
}

fn dots_only(text: &str) -> bool {
    text.bytes().all(|b| b == b'.')
}

pub fn key_link(key: &str) -> Markup {
    html! { a.key href=(key_href(key)) { (key) } }
}

pub fn event_link(id: &str) -> Markup {
    html! { a href=(event_href(id)) { (id) } }
}

pub fn connector_link(name: &str) -> Markup {
    html! { a href={ "/ui/connectors/" (segment(name)) } { (name) } }
}

/// A delivery or breaker state as a coloured label.
pub fn badge(name: &str) -> Markup {
    html! { span class={ "state s-" (name.replace('_', "-")) } { (name.replace('_', " ")) } }
}

/// Text from outside (an upstream's answer, a connector's reason), shown in
/// full but folded.
pub fn reason(text: Option<&str>) -> Markup {
    match text {
        None => html! { "–" },
        Some(t) if t.chars().count() <= 160 => html! { span.reason { (t) } },
        Some(t) => {
            let short: String = t.chars().take(160).collect();
            html! { details.reason { summary { (short) "…" } pre { (t) } } }
        }
    }
}

/// A number with thin separators: 1 234 567.
pub fn count(n: impl Into<i128>) -> Markup {
    let s = n.into().to_string();
    let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push('\u{2009}');
        }
        out.push(c);
    }
    html! { (sign) (out) }
}

/// Pretty JSON in a `pre`.
pub fn json_block(value: &serde_json::Value) -> Markup {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    html! { pre.json { (text) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_one_path_segment() {
        assert_eq!(segment("msisdn:2065551234"), "msisdn:2065551234");
        assert_eq!(segment("a/b?c#d e"), "a%2Fb%3Fc%23d%20e");
        assert_eq!(segment("../x"), "..%2Fx");
    }

    #[test]
    fn dot_segments_are_linked_by_query() {
        assert_eq!(key_href(".."), "/ui/key?key=%2E%2E");
        assert_eq!(event_href("."), "/ui/event?id=%2E");
        assert_eq!(key_href("a..b"), "/ui/keys/a..b");
    }

    #[test]
    fn counts_group_thousands() {
        assert_eq!(count(1_234_567).into_string(), "1\u{2009}234\u{2009}567");
        assert_eq!(count(-1000).into_string(), "-1\u{2009}000");
        assert_eq!(count(12).into_string(), "12");
    }

    #[test]
    fn text_from_outside_is_inert() {
        let hostile = "<script>alert(1)</script><img src=x onerror=alert(2)>\"'";
        for m in [
            key_link(hostile),
            event_link(hostile),
            reason(Some(hostile)),
            badge(hostile),
        ] {
            let s = m.into_string();
            assert!(!s.contains("<script") && !s.contains("<img"), "{s}");
        }
    }
}
