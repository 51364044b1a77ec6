//! # template — a starting point for a Switchboard connector
//!
//! As written, it POSTs each event's payload verbatim as JSON to
//! `config.url`, with the delivery id as `Idempotency-Key` (the same on every
//! attempt, so the upstream can drop duplicates), the event id as
//! `X-Switchboard-Event` and the event type as `X-Switchboard-Type` (SPEC
//! §4.5's headers), and classifies the answer per SPEC §4.5: 2xx →
//! done; 408, 429, 5xx, connect errors and timeouts → retry (honouring
//! `Retry-After`); any other status → reject with the status and the start of
//! the body.
//!
//! Configuration (declared in `describe`, set in `[connectors.config]`):
//! - `url` (required): where events are POSTed.
//!
//! The rules a connector lives by:
//! - **Classify, never wait.** Return `Outcome::retry` for transient
//!   failures; the gateway owns backoff, breakers and rate limits. No sleeps,
//!   no retry loops.
//! - **Never panic on input.** A payload that does not fit is
//!   `Outcome::reject` with a reason an operator can act on (`?` on SDK
//!   errors does this for you).
//! - **Hold no secrets.** Credentials are injected into outgoing requests by
//!   the gateway (`secret_headers`); this code never sees them.
//!
//! To map event types to different calls, `match d.event_type.as_str()` in
//! `deliver`; see `connectors/hss` in the Switchboard repo.

use switchboard_sdk::{config, http, ConfigField, Connector, Delivery, Error, Info, Outcome};

struct ThisConnector;

impl Connector for ThisConnector {
    fn describe() -> Info {
        Info::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")).config(ConfigField::required(
            "url",
            "http(s) URL each event's payload is POSTed to",
        ))
    }

    fn deliver(d: Delivery) -> Outcome {
        send(&d).into()
    }
}

fn send(d: &Delivery) -> Result<Outcome, Error> {
    let url = config::require("url")?;
    let resp = http::post(&url)
        .header("Idempotency-Key", &d.id)
        .header("X-Switchboard-Event", &d.event_id)
        .header("X-Switchboard-Type", &d.event_type)
        .json_text(&d.payload)
        .send()?;
    Ok(Outcome::from_status(&resp))
}

switchboard_sdk::export!(ThisConnector);
