//! Logging into the gateway's log pipeline. Lines are tagged by the host with
//! the connector and delivery id; the host may drop lines past a per-call
//! budget, so log decisions, not loops.

use crate::__private::bindings::switchboard::connector::log as raw;

fn emit(level: raw::Level, message: &str) {
    raw::log(level, message);
}

/// Log at debug level.
///
/// ```no_run
/// switchboard_sdk::log::debug("built request");
/// ```
pub fn debug(message: &str) {
    emit(raw::Level::Debug, message);
}

/// Log at info level.
///
/// ```no_run
/// switchboard_sdk::log::info("subscriber registered");
/// ```
pub fn info(message: &str) {
    emit(raw::Level::Info, message);
}

/// Log at warn level.
///
/// ```no_run
/// switchboard_sdk::log::warn("upstream slow");
/// ```
pub fn warn(message: &str) {
    emit(raw::Level::Warn, message);
}

/// Log at error level: only for what an operator must act on.
///
/// ```no_run
/// switchboard_sdk::log::error("credentials rejected by upstream");
/// ```
pub fn error(message: &str) {
    emit(raw::Level::Error, message);
}
