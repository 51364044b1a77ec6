//! The `webhook` connector (SPEC §4.5).
//!
//! POSTs the event payload, verbatim, as the JSON body to `config.url` with
//! `Idempotency-Key: <delivery id>`, `X-Switchboard-Event: <event id>` and
//! `X-Switchboard-Type: <event type>` (and `User-Agent:
//! switchboard-webhook/<version>`). 2xx → done; 408, 429, 5xx, connect
//! errors and timeouts → retry (honouring `Retry-After`); any other status →
//! reject with the status and the start of the body. Credentials, if any, are
//! injected by the host as secret headers; this code never sees them.

use switchboard_sdk::{config, http, ConfigField, Connector, Delivery, Error, Info, Outcome};

/// Names the connector version, so upstream logs show which one called.
const USER_AGENT: &str = concat!("switchboard-webhook/", env!("CARGO_PKG_VERSION"));

struct Webhook;

impl Connector for Webhook {
    fn describe() -> Info {
        Info::new("webhook", env!("CARGO_PKG_VERSION")).config(ConfigField::required(
            "url",
            "http(s) URL the payload is POSTed to",
        ))
    }

    fn deliver(d: Delivery) -> Outcome {
        post(&d).into()
    }
}

fn post(d: &Delivery) -> Result<Outcome, Error> {
    let resp = http::post(&config::require("url")?)
        .header("Idempotency-Key", &d.id)
        .header("X-Switchboard-Event", &d.event_id)
        .header("X-Switchboard-Type", &d.event_type)
        .header("User-Agent", USER_AGENT)
        .json_text(&d.payload)
        .send()?;
    Ok(Outcome::from_status(&resp))
}

switchboard_sdk::export!(Webhook);
