//! # hss — subscriber provisioning on an HSS/UDM-style REST API
//!
//! Maps number events onto the subscriber resource
//! `{base_url}/subscribers/{msisdn}`:
//!
//! | event type       | request                                  | payload                                        |
//! |------------------|------------------------------------------|------------------------------------------------|
//! | `number.assign`  | `PUT` the subscriber record (create or update) | `msisdn`, `customer`; optional `imsi`, `profile` |
//! | `number.release` | `DELETE` the subscriber                  | `msisdn`                                       |
//! | anything else    | none: reject, naming the supported types |                                                |
//!
//! The PUT body is `{"msisdn", "customer", "imsi"?, "profile"?}`; `profile`
//! falls back to `config.profile` when the payload has none. Both requests
//! carry `Idempotency-Key: <delivery id>` and `X-Switchboard-Event: <event id>`.
//!
//! Outcomes:
//! - 2xx → done. On release, 404 → done as well: the subscriber is already
//!   gone (delivery is at-least-once, so a release can arrive twice).
//! - 409 on assign → reject ("number in use"). The gateway orders a
//!   number's release before its re-assignment on the same `msisdn:` key,
//!   so a conflict means the HSS holds the number for a subscriber
//!   Switchboard never released: an operator must look, retrying won't help.
//! - 408, 429, 5xx, connect errors, timeouts → retry, honouring `Retry-After`.
//! - Any other status → reject with the status and the start of the body.
//! - A payload without the fields above, or an MSISDN/IMSI that is not
//!   digits, → reject. The MSISDN becomes a URL path segment, so it must be
//!   1–15 digits (E.164; a leading `+` is dropped); an IMSI is 6–15 digits.
//!
//! Configuration: `base_url` (required), `profile` (optional).

use serde::{Deserialize, Serialize};
use switchboard_sdk::{config, http, ConfigField, Connector, Delivery, Error, Info, Outcome};

struct Hss;

impl Connector for Hss {
    fn describe() -> Info {
        Info::new("hss", env!("CARGO_PKG_VERSION"))
            .config(ConfigField::required(
                "base_url",
                "HSS/UDM REST API root; subscribers live at {base_url}/subscribers/{msisdn}",
            ))
            .config(ConfigField::optional(
                "profile",
                "Service profile for number.assign events whose payload names none",
            ))
    }

    fn deliver(d: Delivery) -> Outcome {
        match d.event_type.as_str() {
            "number.assign" => assign(&d).into(),
            "number.release" => release(&d).into(),
            other => Outcome::reject(format!(
                "hss: unsupported event type `{other}` (handles number.assign, number.release)"
            )),
        }
    }
}

#[derive(Deserialize)]
struct Assign {
    msisdn: String,
    customer: String,
    imsi: Option<String>,
    profile: Option<String>,
}

#[derive(Serialize)]
struct Subscriber<'a> {
    msisdn: &'a str,
    customer: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    imsi: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    profile: Option<String>,
}

#[derive(Deserialize)]
struct Release {
    msisdn: String,
}

fn assign(d: &Delivery) -> Result<Outcome, Error> {
    let p: Assign = d.payload_as()?;
    let msisdn = msisdn(&p.msisdn)?;
    if p.customer.trim().is_empty() {
        return Err(Error::BadPayload("`customer` is empty".into()));
    }
    let record = Subscriber {
        msisdn,
        customer: &p.customer,
        imsi: p
            .imsi
            .as_deref()
            .map(|i| digits("imsi", i, 6..=15))
            .transpose()?,
        profile: p
            .profile
            .or_else(|| config::get("profile"))
            .filter(|s| !s.is_empty()),
    };
    let resp = headers(http::put(&subscriber_url(msisdn)?), d)
        .json(&record)
        .send()?;
    Ok(match Outcome::from_status(&resp) {
        Outcome::Reject { reason } if resp.status() == 409 => {
            Outcome::reject(format!("number {msisdn} in use on the HSS: {reason}"))
        }
        outcome => outcome,
    })
}

fn release(d: &Delivery) -> Result<Outcome, Error> {
    let p: Release = d.payload_as()?;
    let msisdn = msisdn(&p.msisdn)?;
    let resp = headers(http::delete(&subscriber_url(msisdn)?), d).send()?;
    Ok(match resp.status() {
        404 => Outcome::done(),
        _ => Outcome::from_status(&resp),
    })
}

fn subscriber_url(msisdn: &str) -> Result<String, Error> {
    let base = config::require("base_url")?;
    Ok(format!(
        "{}/subscribers/{msisdn}",
        base.trim_end_matches('/')
    ))
}

fn headers(req: http::Request, d: &Delivery) -> http::Request {
    req.header("Idempotency-Key", &d.id)
        .header("X-Switchboard-Event", &d.event_id)
}

/// An E.164 MSISDN without its optional leading `+`.
fn msisdn(value: &str) -> Result<&str, Error> {
    digits("msisdn", value.strip_prefix('+').unwrap_or(value), 1..=15)
}

/// `value` if it is all ASCII digits with a length in `len`.
fn digits<'a>(
    field: &str,
    value: &'a str,
    len: std::ops::RangeInclusive<usize>,
) -> Result<&'a str, Error> {
    if len.contains(&value.len()) && value.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(value);
    }
    let shown: String = value.chars().take(24).collect();
    Err(Error::BadPayload(format!(
        "`{field}` must be {}–{} digits, got {shown:?}",
        len.start(),
        len.end()
    )))
}

switchboard_sdk::export!(Hss);
