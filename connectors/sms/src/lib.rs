//! # sms — notification messages through an SMS gateway's REST API
//!
//! Every event routed to this connector sends one message (the gateway's
//! `routes` decide which event types those are):
//! `POST {base_url}/messages` with `{"to", "text", "from"?}` and
//! `Idempotency-Key: <delivery id>`.
//!
//! Payload:
//! - recipient: `to`, or else `msisdn` — E.164, 1–15 digits, optional `+`
//!   (kept as given);
//! - text: `text`, or else `template` with `{name}` placeholders filled from
//!   the `vars` object (string, number or boolean values), e.g.
//!   `{"msisdn": "2065551234", "template": "You have used {pct}% of {plan}",
//!   "vars": {"pct": 80, "plan": "Basic"}}`. There is no escape for a
//!   literal `{`; put such text in `text` instead.
//!
//! A missing recipient or text, a placeholder without a value, or an
//! unclosed `{` → reject. Statuses per SPEC §4.5: 2xx done; 408, 429, 5xx,
//! connect errors, timeouts retry (honouring `Retry-After`); others reject.
//!
//! Delivery is at-least-once: after a timeout the message may be sent again
//! with the same `Idempotency-Key`; configure the SMS gateway to drop
//! repeated keys, or accept a rare duplicate.
//!
//! Configuration: `base_url` (required), `sender` (optional; sent as `from`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use switchboard_sdk::{config, http, ConfigField, Connector, Delivery, Error, Info, Outcome};

struct Sms;

impl Connector for Sms {
    fn describe() -> Info {
        Info::new("sms", env!("CARGO_PKG_VERSION"))
            .config(ConfigField::required(
                "base_url",
                "SMS gateway API root; messages are POSTed to {base_url}/messages",
            ))
            .config(ConfigField::optional(
                "sender",
                "Sender id or number, sent as `from`",
            ))
    }

    fn deliver(d: Delivery) -> Outcome {
        send(&d).into()
    }
}

#[derive(Deserialize)]
struct Notify {
    to: Option<String>,
    msisdn: Option<String>,
    text: Option<String>,
    template: Option<String>,
    #[serde(default)]
    vars: Map<String, Value>,
}

#[derive(Serialize)]
struct Message {
    to: String,
    text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<String>,
}

fn send(d: &Delivery) -> Result<Outcome, Error> {
    let p: Notify = d.payload_as()?;
    let to =
        p.to.or(p.msisdn)
            .ok_or_else(|| bad("no recipient: set `to` or `msisdn`"))?;
    let digits = to.strip_prefix('+').unwrap_or(&to);
    if !(1..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(
            "recipient must be an E.164 number (1–15 digits, optional `+`)",
        ));
    }
    let text = match (p.text, p.template) {
        (Some(text), _) => text,
        (None, Some(template)) => render(&template, &p.vars)?,
        (None, None) => return Err(bad("no message: set `text` or `template`")),
    };
    if text.trim().is_empty() {
        return Err(bad("message text is empty"));
    }
    let base = config::require("base_url")?;
    let message = Message {
        to,
        text,
        from: config::get("sender").filter(|s| !s.is_empty()),
    };
    let resp = http::post(&format!("{}/messages", base.trim_end_matches('/')))
        .header("Idempotency-Key", &d.id)
        .json(&message)
        .send()?;
    Ok(Outcome::from_status(&resp))
}

/// Replace each `{name}` in `template` with `vars[name]`.
fn render(template: &str, vars: &Map<String, Value>) -> Result<String, Error> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| bad("unclosed `{` in template"))?;
        let name = &after[..close];
        match vars.get(name) {
            Some(Value::String(s)) => out.push_str(s),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => out.push_str(&v.to_string()),
            _ => {
                return Err(bad(&format!(
                    "template variable `{name}` has no string or number in `vars`"
                )))
            }
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn bad(why: &str) -> Error {
    Error::BadPayload(why.to_string())
}

switchboard_sdk::export!(Sms);
