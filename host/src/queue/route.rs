//! Event-type patterns that decide which connectors receive an event.
//!
//! A pattern is an event type (`number.assign`), a prefix wildcard
//! (`number.*` matches `number.assign` and `number.port.in` but not `number`),
//! or `*` for every type.
//!
//! A connector's `routes` list holds patterns, or tables that add an
//! `expire_after` for events that go stale:
//!
//! ```toml
//! routes = ["number.*", { match = "quota.*", expire_after = "72h" }]
//! ```
//!
//! A rule may declare the types it matches **full-state** (SPEC §3,
//! coalescing): a newer event of the same type (or of the same
//! `coalesce_group`) and the same coalesce key supersedes the connector's
//! older deliveries that have not started. The coalesce key is named, not
//! given: `coalesce_key = "customer"` is the event's key `customer:…`, one
//! of its lanes, so a coalesced delivery can never jump ahead of anything on
//! that lane. An event with no such key, or with two, is not coalesced.
//!
//! ```toml
//! routes = [{ match = "forwarding.*", coalesce_key = "customer", coalesce_group = "forwarding" }]
//! ```

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::Millis;

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

/// One entry of a connector's `routes` as configured: a bare pattern, or a
/// rule with options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum RouteSpec {
    Pattern(String),
    Rule(RouteRule),
}

/// `{ match = "quota.*", expire_after = "72h" }`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    #[serde(rename = "match")]
    pub pattern: String,
    /// A delivery of this route not started this long after its event was
    /// accepted ends as `expired` instead ("90s", "15m", "72h", "3d").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_after: Option<String>,
    /// The types this rule matches carry full state per this key name: a
    /// newer event supersedes older deliveries that have not started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coalesce_key: Option<String>,
    /// Types that supersede one another (`forwarding.set` and
    /// `forwarding.clear`); without it, only the same type does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coalesce_group: Option<String>,
}

impl From<&str> for RouteSpec {
    fn from(p: &str) -> Self {
        RouteSpec::Pattern(p.to_string())
    }
}

impl<'de> Deserialize<'de> for RouteSpec {
    /// A string or a table, each with its own error message (an untagged
    /// enum would only say that nothing matched).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RouteSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "an event type pattern such as \"number.*\", or a table such as \
                     { match = \"quota.*\", expire_after = \"72h\" } or \
                     { match = \"forwarding.*\", coalesce_key = \"customer\" }",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RouteSpec, E> {
                Ok(RouteSpec::Pattern(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RouteSpec, A::Error> {
                RouteRule::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RouteSpec::Rule)
            }
        }
        d.deserialize_any(V)
    }
}

impl RouteSpec {
    pub fn pattern(&self) -> &str {
        match self {
            RouteSpec::Pattern(p) => p,
            RouteSpec::Rule(r) => &r.pattern,
        }
    }

    /// The checked route, or why it is invalid.
    pub fn compile(&self) -> Result<Route, String> {
        let pattern = RoutePattern::parse(self.pattern()).map_err(|e| e.to_string())?;
        let expire_after_ms = match self {
            RouteSpec::Rule(RouteRule {
                expire_after: Some(d),
                ..
            }) => Some(parse_duration(d).map_err(|reason| {
                format!("route {:?}: expire_after {d:?}: {reason}", self.pattern())
            })?),
            _ => None,
        };
        let coalesce = match self {
            RouteSpec::Rule(RouteRule {
                coalesce_key: Some(key),
                coalesce_group,
                ..
            }) => Some(
                Coalesce::new(key, coalesce_group.as_deref())
                    .map_err(|reason| format!("route {:?}: {reason}", self.pattern()))?,
            ),
            RouteSpec::Rule(RouteRule {
                coalesce_group: Some(_),
                ..
            }) => {
                return Err(format!(
                    "route {:?}: coalesce_group needs coalesce_key (the key whose \
                     latest state wins)",
                    self.pattern()
                ))
            }
            _ => None,
        };
        Ok(Route {
            pattern,
            expire_after_ms,
            coalesce,
        })
    }
}

/// A full-state declaration: which event key the state is per, and which
/// types supersede one another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coalesce {
    /// The key's name: the event's key `{key}:…`.
    key: String,
    /// `None`: each type on its own.
    group: Option<String>,
}

impl Coalesce {
    fn new(key: &str, group: Option<&str>) -> Result<Self, String> {
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        };
        if !name_ok(key) {
            return Err(format!(
                "coalesce_key {key:?} must name one of the event's keys by the part before \
                 its `:` (\"customer\" for keys like \"customer:A1\"; letters, digits, _ - .), \
                 never a payload field: only a key is a lane, and coalescing on anything \
                 else could move an event ahead of one it must follow"
            ));
        }
        if let Some(g) = group.filter(|g| !name_ok(g)) {
            return Err(format!(
                "coalesce_group {g:?} must be a name (letters, digits, _ - .)"
            ));
        }
        Ok(Self {
            key: key.to_string(),
            group: group.map(str::to_string),
        })
    }

    /// The coalesce tag of an event of `event_type` with `keys`: group and
    /// key value, or `None` when the event has no key of this name, or more
    /// than one (then it is delivered as any other).
    pub fn tag(&self, event_type: &str, keys: &[String]) -> Option<String> {
        let mut found = keys.iter().filter(|k| {
            k.len() > self.key.len()
                && k.starts_with(&self.key)
                && k.as_bytes()[self.key.len()] == b':'
        });
        let key = found.next()?;
        if found.next().is_some() {
            return None;
        }
        // `\u{1f}` cannot occur in a type or a group name; the first
        // letter keeps a group apart from a type of the same name.
        Some(match &self.group {
            Some(g) => format!("g{g}\u{1f}{key}"),
            None => format!("t{event_type}\u{1f}{key}"),
        })
    }
}

/// A route ready to match: its pattern and how long its deliveries may wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub pattern: RoutePattern,
    /// `None`: its deliveries never expire.
    pub expire_after_ms: Option<Millis>,
    /// `Some`: the types it matches are full-state (coalescing).
    pub coalesce: Option<Coalesce>,
}

/// The coalesce tag of an event for a connector with `routes`: only when
/// every route that matches its type declares the same full-state rule (a
/// route that does not, or declares another, keeps it apart: coalescing is
/// never implied; [`conflicting_coalesce`] refuses such routes with the
/// config, so this answers `None` for them only if one slipped through).
pub fn coalesce_of(routes: &[Route], event_type: &str, keys: &[String]) -> Option<String> {
    let mut rule: Option<&Coalesce> = None;
    for r in routes.iter().filter(|r| r.pattern.matches(event_type)) {
        match (&r.coalesce, rule) {
            (None, _) => return None,
            (Some(c), Some(seen)) if c != seen => return None,
            (Some(c), _) => rule = Some(c),
        }
    }
    rule?.tag(event_type, keys)
}

/// Two of a connector's routes that could match one type with different
/// full-state rules, or one with a rule and one without (then the type is
/// not coalesced, which is surely not what was meant): refused with the
/// config.
pub fn conflicting_coalesce(routes: &[Route]) -> Option<(String, String)> {
    fn overlap(a: &RoutePattern, b: &RoutePattern) -> bool {
        let (a, b) = (a.raw.as_str(), b.raw.as_str());
        match (a.strip_suffix('*'), b.strip_suffix('*')) {
            (Some(pa), Some(pb)) => pa.starts_with(pb) || pb.starts_with(pa),
            (Some(_), None) => RoutePattern { raw: a.into() }.matches(b),
            (None, Some(_)) => RoutePattern { raw: b.into() }.matches(a),
            (None, None) => a == b,
        }
    }
    for (i, a) in routes.iter().enumerate() {
        for b in &routes[i + 1..] {
            if (a.coalesce.is_some() || b.coalesce.is_some())
                && a.coalesce != b.coalesce
                && overlap(&a.pattern, &b.pattern)
            {
                return Some((a.pattern.to_string(), b.pattern.to_string()));
            }
        }
    }
    None
}

/// How long a connector's delivery of an event of this type may wait before
/// it expires, given the connector's routes: `None` when no route matches;
/// `Some(None)` (never) when any matching route has no `expire_after`, so a
/// route without one is never made to expire by another; else the longest.
pub fn expiry_of(routes: &[Route], event_type: &str) -> Option<Option<Millis>> {
    let mut matched = false;
    let mut longest: Option<Millis> = Some(0);
    for r in routes.iter().filter(|r| r.pattern.matches(event_type)) {
        matched = true;
        longest = match (longest, r.expire_after_ms) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
    }
    matched.then_some(longest)
}

/// `"90s"`, `"15m"`, `"72h"`, `"3d"` (also `"500ms"`) → milliseconds.
pub fn parse_duration(s: &str) -> Result<Millis, &'static str> {
    const HINT: &str = "use a positive whole number with a unit: ms, s, m, h or d (\"72h\")";
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or(HINT)?;
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().map_err(|_| HINT)?;
    let scale: i64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(HINT),
    };
    match n.checked_mul(scale) {
        Some(ms) if ms > 0 => Ok(ms),
        _ => Err(HINT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(500));
        assert_eq!(parse_duration("90s"), Ok(90_000));
        assert_eq!(parse_duration("15m"), Ok(900_000));
        assert_eq!(parse_duration("72h"), Ok(259_200_000));
        assert_eq!(parse_duration("3d"), Ok(259_200_000));
        for bad in [
            "",
            "72",
            "h",
            "0s",
            "-1h",
            "1.5h",
            "1 h",
            "1w",
            "99999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn a_route_without_expiry_is_never_made_to_expire_by_another() {
        let routes: Vec<Route> = [
            RouteSpec::Rule(RouteRule {
                pattern: "quota.*".into(),
                expire_after: Some("1h".into()),
                ..RouteRule::default()
            }),
            RouteSpec::Rule(RouteRule {
                pattern: "quota.reached".into(),
                expire_after: Some("2h".into()),
                ..RouteRule::default()
            }),
            RouteSpec::from("quota.reset"),
        ]
        .iter()
        .map(|r| r.compile().unwrap())
        .collect();
        assert_eq!(expiry_of(&routes, "quota.used"), Some(Some(3_600_000)));
        assert_eq!(expiry_of(&routes, "quota.reached"), Some(Some(7_200_000)));
        assert_eq!(expiry_of(&routes, "quota.reset"), Some(None));
        assert_eq!(expiry_of(&routes, "number.assign"), None);
    }

    #[test]
    fn route_specs_read_from_toml_with_clear_errors() {
        #[derive(Deserialize)]
        struct C {
            routes: Vec<RouteSpec>,
        }
        let c: C =
            toml::from_str(r#"routes = ["number.*", { match = "quota.*", expire_after = "72h" }]"#)
                .unwrap();
        assert_eq!(c.routes[0], RouteSpec::from("number.*"));
        assert_eq!(
            c.routes[1].compile().unwrap().expire_after_ms,
            Some(259_200_000)
        );
        let e = toml::from_str::<C>(r#"routes = [{ match = "a", expire = "1h" }]"#)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("expire"), "{e}");
        let e = toml::from_str::<C>("routes = [3]")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("event type pattern"), "{e}");
        let spec = RouteSpec::Rule(RouteRule {
            pattern: "a".into(),
            expire_after: Some("soon".into()),
            ..RouteRule::default()
        });
        assert!(spec.compile().unwrap_err().contains("expire_after"));
        // The JSON form (configs stored through the API) round-trips.
        let json = serde_json::to_value(&c.routes).unwrap();
        assert_eq!(
            json,
            serde_json::json!(["number.*", {"match": "quota.*", "expire_after": "72h"}])
        );
        let back: Vec<RouteSpec> = serde_json::from_value(json).unwrap();
        assert_eq!(back, c.routes);
    }

    fn compiled(specs: &[RouteSpec]) -> Vec<Route> {
        specs.iter().map(|r| r.compile().unwrap()).collect()
    }

    fn full_state(pattern: &str, key: &str, group: Option<&str>) -> RouteSpec {
        RouteSpec::Rule(RouteRule {
            pattern: pattern.into(),
            coalesce_key: Some(key.into()),
            coalesce_group: group.map(Into::into),
            ..RouteRule::default()
        })
    }

    #[test]
    fn only_declared_types_coalesce_on_the_named_key() {
        let keys = |ks: &[&str]| ks.iter().map(|k| k.to_string()).collect::<Vec<_>>();
        let routes = compiled(&[
            full_state("forwarding.*", "customer", Some("forwarding")),
            full_state("profile.set", "customer", None),
            RouteSpec::from("number.*"),
        ]);
        let a1 = keys(&["msisdn:1", "customer:A1"]);
        // One group for both forwarding types, the key's value in the tag.
        let set = coalesce_of(&routes, "forwarding.set", &a1).unwrap();
        assert_eq!(set, coalesce_of(&routes, "forwarding.clear", &a1).unwrap());
        assert!(set.ends_with("customer:A1"), "{set:?}");
        assert_ne!(
            Some(set.clone()),
            coalesce_of(&routes, "forwarding.set", &keys(&["customer:A2"]))
        );
        // Without a group, a type only with itself.
        assert_ne!(coalesce_of(&routes, "profile.set", &a1), Some(set));
        // Undeclared types never; an event without the key, or with two of it, neither.
        assert_eq!(coalesce_of(&routes, "number.assign", &a1), None);
        assert_eq!(
            coalesce_of(&routes, "forwarding.set", &keys(&["msisdn:1"])),
            None
        );
        assert_eq!(
            coalesce_of(&routes, "forwarding.set", &keys(&["customerx:A1"])),
            None
        );
        assert_eq!(
            coalesce_of(
                &routes,
                "forwarding.set",
                &keys(&["customer:A1", "customer:A2"])
            ),
            None
        );
        // A route that matches the type without declaring it keeps it
        // apart (and the config refuses the pair).
        let mixed = compiled(&[
            full_state("forwarding.set", "customer", None),
            RouteSpec::from("*"),
        ]);
        assert_eq!(coalesce_of(&mixed, "forwarding.set", &a1), None);
        assert!(conflicting_coalesce(&mixed).is_some());
        // A group named like a type is not that type.
        let named = compiled(&[
            full_state("forwarding.*", "customer", Some("profile.set")),
            full_state("profile.set", "customer", None),
        ]);
        assert_ne!(
            coalesce_of(&named, "forwarding.set", &a1),
            coalesce_of(&named, "profile.set", &a1)
        );
    }

    #[test]
    fn a_coalesce_key_must_name_a_key_and_rules_must_agree() {
        for bad in ["", "$.customer", "/payload/customer", "customer:A1", "a b"] {
            let e = full_state("x", bad, None).compile().unwrap_err();
            assert!(e.contains("coalesce_key"), "{bad:?}: {e}");
        }
        let e = RouteSpec::Rule(RouteRule {
            pattern: "x".into(),
            coalesce_group: Some("g".into()),
            ..RouteRule::default()
        })
        .compile()
        .unwrap_err();
        assert!(e.contains("needs coalesce_key"), "{e}");
        let clash = compiled(&[
            full_state("forwarding.*", "customer", None),
            full_state("forwarding.set", "msisdn", None),
        ]);
        assert!(conflicting_coalesce(&clash).is_some());
        let apart = compiled(&[
            full_state("forwarding.*", "customer", None),
            full_state("profile.set", "msisdn", None),
            full_state("forwarding.set", "customer", None),
            RouteSpec::from("number.*"),
        ]);
        assert_eq!(conflicting_coalesce(&apart), None);
        let plain_overlap = compiled(&[
            RouteSpec::from("*"),
            full_state("forwarding.*", "customer", None),
        ]);
        assert!(conflicting_coalesce(&plain_overlap).is_some());
        // Round trip through the stored (JSON) form.
        let spec = full_state("forwarding.*", "customer", Some("fwd"));
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"match": "forwarding.*", "coalesce_key": "customer", "coalesce_group": "fwd"})
        );
        assert_eq!(serde_json::from_value::<RouteSpec>(json).unwrap(), spec);
    }

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
