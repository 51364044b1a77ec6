//! # switchboard-sdk — write Switchboard connectors in Rust
//!
//! A connector is a WebAssembly component (target `wasm32-wasip2`) that the
//! Switchboard gateway calls once per delivery. It implements [`Connector`]:
//! [`Connector::describe`] says what it is and which configuration it needs,
//! [`Connector::deliver`] performs one attempt and *classifies* it as an
//! [`Outcome`]: done, retry, or reject. The gateway owns all timing (backoff,
//! breakers, rate limits), so a connector never sleeps or loops on failure.
//!
//! ```no_run
//! use switchboard_sdk::{config, http, ConfigField, Connector, Delivery, Error, Info, Outcome};
//!
//! struct Hello;
//!
//! impl Connector for Hello {
//!     fn describe() -> Info {
//!         Info::new("hello", "1.0.0")
//!             .config(ConfigField::required("url", "Where to POST events"))
//!     }
//!
//!     fn deliver(d: Delivery) -> Outcome {
//!         send(&d).into()
//!     }
//! }
//!
//! fn send(d: &Delivery) -> Result<Outcome, Error> {
//!     let resp = http::post(&config::require("url")?)
//!         .header("Idempotency-Key", &d.id)
//!         .json_text(&d.payload)
//!         .send()?;
//!     Ok(Outcome::from_status(&resp))
//! }
//!
//! switchboard_sdk::export!(Hello);
//! ```
//!
//! Test a connector natively, without the gateway, with the
//! `switchboard-connector-test` crate next to this one (`sdk/harness`): it
//! runs the built `.wasm` in the gateway's own sandbox against a scriptable
//! fake upstream. `connectors/template` is a minimal connector to start
//! from, and what `switchboard connector new NAME` scaffolds.
//!
//! Invariants the SDK keeps:
//! - The raw WIT bindings (contract `switchboard:connector@0.1.0`, vendored in
//!   `wit/`) are hidden in [`__private`]; connector code only sees the types
//!   here, so the contract can evolve behind a stable Rust API.
//! - Nothing in the SDK panics on data from the network or the host; failures
//!   are [`Error`] values that convert into an [`Outcome`].
//! - Secrets never pass through the guest: the host injects them into
//!   outgoing requests.

#![warn(missing_docs)]

extern crate self as switchboard_sdk;

pub mod config;
pub mod http;
pub mod log;
mod outcome;

pub use outcome::Outcome;

use std::fmt;
use std::time::Duration;

/// One event to deliver, as handed to [`Connector::deliver`].
///
/// ```no_run
/// # use switchboard_sdk::Delivery;
/// fn key_header(d: &Delivery) -> &str {
///     &d.id // the same on every attempt: use it as an idempotency key
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The delivery id; identical on every attempt of this delivery.
    pub id: String,
    /// 1 on the first attempt, incremented on each retry.
    pub attempt: u32,
    /// The event id, as posted by the configuration application.
    pub event_id: String,
    /// The event type, e.g. `number.assign`.
    pub event_type: String,
    /// The event's ordering keys.
    pub keys: Vec<String>,
    /// The event payload, as JSON text.
    pub payload: String,
}

impl Delivery {
    /// Parse the payload into `T`.
    ///
    /// A payload that does not fit `T` is a permanent problem for this event,
    /// so the error converts into [`Outcome::reject`].
    ///
    /// ```no_run
    /// # use switchboard_sdk::{Delivery, Error};
    /// #[derive(serde::Deserialize)]
    /// struct Assign { msisdn: String }
    /// fn msisdn(d: &Delivery) -> Result<String, Error> {
    ///     Ok(d.payload_as::<Assign>()?.msisdn)
    /// }
    /// ```
    pub fn payload_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_str(&self.payload).map_err(|e| Error::BadPayload(e.to_string()))
    }
}

/// One configuration key a connector understands, listed by [`Info`].
///
/// ```no_run
/// # use switchboard_sdk::ConfigField;
/// let f = ConfigField::optional("timeout_ms", "Per-request timeout");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigField {
    /// The key, as written in `[connectors.config]`.
    pub name: String,
    /// Whether the connector cannot work without it.
    pub required: bool,
    /// One line for operators.
    pub description: String,
}

impl ConfigField {
    /// A key the connector needs.
    ///
    /// ```no_run
    /// # use switchboard_sdk::ConfigField;
    /// let f = ConfigField::required("url", "Where to POST events");
    /// ```
    pub fn required(name: &str, description: &str) -> Self {
        Self {
            name: name.into(),
            required: true,
            description: description.into(),
        }
    }

    /// A key with a sensible default.
    ///
    /// ```no_run
    /// # use switchboard_sdk::ConfigField;
    /// let f = ConfigField::optional("path", "Path suffix");
    /// ```
    pub fn optional(name: &str, description: &str) -> Self {
        Self {
            name: name.into(),
            required: false,
            description: description.into(),
        }
    }
}

/// What [`Connector::describe`] returns: name, version and configuration keys.
///
/// ```no_run
/// # use switchboard_sdk::{ConfigField, Info};
/// let info = Info::new("crm", "2.1.0").config(ConfigField::required("url", "CRM endpoint"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Connector name, e.g. `webhook`.
    pub name: String,
    /// Connector version, e.g. `1.0.0`.
    pub version: String,
    /// The configuration keys it reads.
    pub config: Vec<ConfigField>,
}

impl Info {
    /// An `Info` with no configuration keys.
    ///
    /// ```no_run
    /// # use switchboard_sdk::Info;
    /// let info = Info::new("noop", "0.1.0");
    /// ```
    pub fn new(name: &str, version: &str) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            config: Vec::new(),
        }
    }

    /// Add one configuration key.
    ///
    /// ```no_run
    /// # use switchboard_sdk::{ConfigField, Info};
    /// let info = Info::new("sms", "1.0.0").config(ConfigField::required("url", "SMS gateway"));
    /// ```
    pub fn config(mut self, field: ConfigField) -> Self {
        self.config.push(field);
        self
    }
}

/// A connector: implement this and register it with [`export!`].
///
/// ```no_run
/// use switchboard_sdk::{Connector, Delivery, Info, Outcome};
/// struct Noop;
/// impl Connector for Noop {
///     fn describe() -> Info { Info::new("noop", "0.1.0") }
///     fn deliver(_d: Delivery) -> Outcome { Outcome::done() }
/// }
/// switchboard_sdk::export!(Noop);
/// ```
pub trait Connector {
    /// Describe the connector. Called when a component is loaded; must be
    /// cheap and must not do I/O.
    fn describe() -> Info;

    /// Attempt one delivery and classify the result.
    fn deliver(delivery: Delivery) -> Outcome;
}

/// Why an SDK operation failed. Every variant converts into an [`Outcome`]:
/// transport problems retry, problems that only an operator or a new event
/// can fix reject.
///
/// ```no_run
/// # use switchboard_sdk::{Error, Outcome};
/// let o: Outcome = Error::MissingConfig("url".into()).into(); // a reject
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A required configuration key is not set.
    MissingConfig(String),
    /// The URL could not be parsed (only `http://` and `https://` are supported).
    InvalidUrl(String),
    /// The host refused the request: its host is not in `allowed_hosts`, or it
    /// resolves to a forbidden address.
    Denied(String),
    /// Could not connect (DNS failure, refused, unreachable).
    Connect(String),
    /// The request or the response timed out.
    Timeout(String),
    /// Any other transport-level failure (protocol error, reset, size cap).
    Transport(String),
    /// The payload did not have the expected shape.
    BadPayload(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::MissingConfig(k) => write!(f, "missing required config `{k}`"),
            Error::InvalidUrl(m) => write!(f, "invalid url: {m}"),
            Error::Denied(m) => write!(f, "egress denied: {m}"),
            Error::Connect(m) => write!(f, "connect error: {m}"),
            Error::Timeout(m) => write!(f, "timeout: {m}"),
            Error::Transport(m) => write!(f, "transport error: {m}"),
            Error::BadPayload(m) => write!(f, "payload does not match: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for Outcome {
    /// Transport failures are transient; configuration and payload problems
    /// are not. A denied host is retried: it is an operator's `allowed_hosts`
    /// mistake that costs one attempt, and the breaker stops the hammering.
    fn from(e: Error) -> Self {
        match e {
            Error::MissingConfig(_) | Error::InvalidUrl(_) | Error::BadPayload(_) => {
                Outcome::reject(e.to_string())
            }
            Error::Denied(_) | Error::Connect(_) | Error::Timeout(_) | Error::Transport(_) => {
                Outcome::retry(e.to_string())
            }
        }
    }
}

impl<E: Into<Outcome>> From<Result<Outcome, E>> for Outcome {
    /// Lets `deliver` delegate to a function that uses `?`.
    fn from(r: Result<Outcome, E>) -> Self {
        r.unwrap_or_else(Into::into)
    }
}

/// Register a type implementing [`Connector`] as this component's export.
/// Use it exactly once, in a `cdylib` crate built for `wasm32-wasip2`.
///
/// ```no_run
/// # use switchboard_sdk::{Connector, Delivery, Info, Outcome};
/// struct Mine;
/// impl Connector for Mine {
///     fn describe() -> Info { Info::new("mine", "0.1.0") }
///     fn deliver(_d: Delivery) -> Outcome { Outcome::done() }
/// }
/// switchboard_sdk::export!(Mine);
/// ```
#[macro_export]
macro_rules! export {
    ($connector:ty) => {
        type __SwitchboardExport = $crate::__private::Adapter<$connector>;
        $crate::__private::__export_connector_world!(
            __SwitchboardExport with_types_in $crate::__private::bindings
        );
    };
}

/// Glue between the raw bindings and the public API. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;

    #[allow(missing_docs, clippy::all, unsafe_op_in_unsafe_fn)]
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../wit/switchboard-connector-0.1.0",
            world: "switchboard:connector/connector",
            generate_all,
            pub_export_macro: true,
            export_macro_name: "__export_connector_world",
            default_bindings_module: "::switchboard_sdk::__private::bindings",
            runtime_path: "::switchboard_sdk::__private::wit_bindgen::rt",
        });
    }

    pub use bindings::__export_connector_world;

    use super::{Connector, Delivery, Outcome};
    use bindings::switchboard::connector::types as wit;
    use std::marker::PhantomData;

    /// Implements the generated `Guest` trait for any [`Connector`].
    pub struct Adapter<C>(PhantomData<C>);

    impl<C: Connector> bindings::Guest for Adapter<C> {
        fn describe() -> wit::Info {
            let info = C::describe();
            wit::Info {
                name: info.name,
                version: info.version,
                config: info
                    .config
                    .into_iter()
                    .map(|f| wit::ConfigField {
                        name: f.name,
                        required: f.required,
                        description: f.description,
                    })
                    .collect(),
            }
        }

        fn deliver(d: wit::Delivery) -> wit::Outcome {
            let outcome = C::deliver(Delivery {
                id: d.id,
                attempt: d.attempt,
                event_id: d.event_id,
                event_type: d.event_type,
                keys: d.keys,
                payload: d.payload,
            });
            match outcome {
                Outcome::Done => wit::Outcome::Done,
                Outcome::Retry { after, reason } => wit::Outcome::Retry(wit::RetryInfo {
                    after_ms: after.map(|a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX)),
                    reason,
                }),
                Outcome::Reject { reason } => wit::Outcome::Reject(reason),
            }
        }
    }
}

/// Saturating conversion used by outcome helpers and tests.
pub(crate) fn clamp_duration(d: Duration) -> Duration {
    // A year is longer than any sane Retry-After; the host clamps further.
    d.min(Duration::from_secs(365 * 24 * 3600))
}
