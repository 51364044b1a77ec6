//! Event-type patterns that decide which connectors receive an event.
//!
//! A pattern is an event type (`number.assign`), a prefix wildcard
//! (`number.*` matches `number.assign` and `number.port.in` but not `number`),
//! or `*` for every type.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePattern {
    raw: String,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid route pattern {pattern:?}: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: &'static str,
}

impl RoutePattern {
    pub fn parse(raw: &str) -> Result<Self, PatternError> {
        let err = |reason| PatternError {
            pattern: raw.to_string(),
            reason,
        };
        if raw.is_empty() {
            return Err(err("empty"));
        }
        if raw == "*" {
            return Ok(Self { raw: raw.into() });
        }
        let body = raw.strip_suffix(".*").unwrap_or(raw);
        if body.is_empty() || !body.bytes().all(super::event::is_type_byte) {
            return Err(err(
                "use an event type, a prefix ending in `.*`, or `*` (characters a-z 0-9 _ . -)",
            ));
        }
        Ok(Self { raw: raw.into() })
    }

    pub fn matches(&self, event_type: &str) -> bool {
        if self.raw == "*" {
            return true;
        }
        match self.raw.strip_suffix('*') {
            // "number.*": the type must start with "number." and have more after it.
            Some(prefix) => event_type.len() > prefix.len() && event_type.starts_with(prefix),
            None => self.raw == event_type,
        }
    }
}

impl fmt::Display for RoutePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_documented() {
        let cases = [
            ("number.*", "number.assign", true),
            ("number.*", "number.port.in", true),
            ("number.*", "number", false),
            ("number.*", "numbers.assign", false),
            ("number.assign", "number.assign", true),
            ("number.assign", "number.assigned", false),
            ("*", "anything.at.all", true),
        ];
        for (p, t, want) in cases {
            assert_eq!(
                RoutePattern::parse(p).unwrap().matches(t),
                want,
                "{p} vs {t}"
            );
        }
    }

    #[test]
    fn bad_patterns_are_refused() {
        for p in ["", ".*", "Number.*", "a b", "num*", "x.*.y"] {
            assert!(RoutePattern::parse(p).is_err(), "{p:?} should be refused");
        }
    }
}
