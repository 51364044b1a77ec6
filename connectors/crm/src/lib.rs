//! # crm — customer/service updates as TM Forum-style service orders
//!
//! Each event becomes one service order in the shape of TMF641:
//! `POST {base_url}/serviceOrder` with
//!
//! ```json
//! {"externalId": "<event id>",
//!  "serviceOrderItem": [{"id": "1", "action": "add", "service": { …payload… }}]}
//! ```
//!
//! `action` comes from the last dot-separated segment of the event type:
//!
//! | segment                                              | action   |
//! |------------------------------------------------------|----------|
//! | `assign`, `create`, `add`, `activate`                | `add`    |
//! | `update`, `modify`, `change`                         | `modify` |
//! | `release`, `delete`, `remove`, `deactivate`, `terminate` | `delete` |
//! | anything else                                        | reject   |
//!
//! so `number.assign` → add, `customer.update` → modify, `number.release` →
//! delete. The payload must be a JSON object; it is sent as the `service`.
//! `externalId` (the event id) lets the CRM correlate orders with events;
//! `Idempotency-Key: <delivery id>` lets it drop a repeated attempt.
//!
//! Statuses per SPEC §4.5 (TMF641 answers `201 Created`): 2xx done; 408,
//! 429, 5xx, connect errors, timeouts retry (honouring `Retry-After`); any
//! other status reject with the status and the start of the body.
//!
//! Configuration: `base_url` (required).

use serde_json::{json, Map, Value};
use switchboard_sdk::{config, http, ConfigField, Connector, Delivery, Error, Info, Outcome};

struct Crm;

impl Connector for Crm {
    fn describe() -> Info {
        Info::new("crm", env!("CARGO_PKG_VERSION")).config(ConfigField::required(
            "base_url",
            "TMF641-style API root; orders are POSTed to {base_url}/serviceOrder",
        ))
    }

    fn deliver(d: Delivery) -> Outcome {
        let Some(action) = action(&d.event_type) else {
            return Outcome::reject(format!(
                "crm: no service order action for event type `{}` \
                 (last segment must be assign/create/add/activate, update/modify/change, \
                 or release/delete/remove/deactivate/terminate)",
                d.event_type
            ));
        };
        order(&d, action).into()
    }
}

fn action(event_type: &str) -> Option<&'static str> {
    match event_type.rsplit('.').next()? {
        "assign" | "create" | "add" | "activate" => Some("add"),
        "update" | "modify" | "change" => Some("modify"),
        "release" | "delete" | "remove" | "deactivate" | "terminate" => Some("delete"),
        _ => None,
    }
}

fn order(d: &Delivery, action: &str) -> Result<Outcome, Error> {
    let service: Map<String, Value> = d.payload_as().map_err(|_| {
        Error::BadPayload("payload must be a JSON object (it becomes the service)".into())
    })?;
    let body = json!({
        "externalId": d.event_id,
        "serviceOrderItem": [{"id": "1", "action": action, "service": service}],
    });
    let base = config::require("base_url")?;
    let resp = http::post(&format!("{}/serviceOrder", base.trim_end_matches('/')))
        .header("Idempotency-Key", &d.id)
        .json(&body)
        .send()?;
    Ok(Outcome::from_status(&resp))
}

switchboard_sdk::export!(Crm);
