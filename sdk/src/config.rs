//! The connector's configuration, as set by the operator in
//! `[connectors.config]`. Values are strings; secrets are not here (the host
//! injects them into outgoing requests).

use crate::__private::bindings::switchboard::connector::config as raw;
use crate::Error;

/// The value of `name`, if set.
///
/// ```no_run
/// let path = switchboard_sdk::config::get("path").unwrap_or_else(|| "/".into());
/// ```
pub fn get(name: &str) -> Option<String> {
    raw::get(name)
}

/// The value of `name`, or [`Error::MissingConfig`] (which converts into a
/// reject: the operator must fix the configuration).
///
/// ```no_run
/// # fn f() -> Result<(), switchboard_sdk::Error> {
/// let url = switchboard_sdk::config::require("url")?;
/// # Ok(()) }
/// ```
pub fn require(name: &str) -> Result<String, Error> {
    get(name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Error::MissingConfig(name.to_string()))
}
