//! What people read: [`Table`], and the text of each API answer the
//! commands print with `--format text` (the default).
//!
//! Every renderer takes the API's answer as JSON, as it came, and cannot
//! fail: a missing field prints as `-` (or `?`) rather than ending the
//! command.

use serde_json::Value;
use Align::{Left, Right};

/// `dlq list`: one dead letter per row, newest first.
pub fn dead_text(v: &Value) -> String {
    let mut t = Table::new(&[
        ("ID", Right),
        ("CONNECTOR", Left),
        ("EVENT", Left),
        ("TYPE", Left),
        ("ATTEMPTS", Right),
        ("DIED", Left),
        ("LAST ERROR", Left),
    ]);
    for d in v.as_array().into_iter().flatten() {
        t.row([
            text(&d["delivery_id"]),
            text(&d["connector"]),
            text(&d["event_id"]),
            text(&d["type"]),
            text(&d["attempts"]),
            fmt_time(d["died_at"].as_i64()),
            text(&d["last_error"]),
        ]);
    }
    if t.is_empty() {
        "no dead letters".into()
    } else {
        t.render()
    }
}

pub fn lanes_text(v: &Value) -> String {
    let mut out = Vec::new();
    for l in v.as_array().into_iter().flatten() {
        let c = l["connector"].as_str().unwrap_or("?");
        match l["head"].as_array() {
            Some(head) if head.len() == 2 => {
                let (event, d) = (&head[0], &head[1]);
                out.push(format!(
                    "{c}: head is delivery {} (event {}) {} after {} attempts{}{}; {} waiting behind it",
                    d["id"],
                    event.as_str().unwrap_or("?"),
                    d["state"].as_str().unwrap_or("?"),
                    d["attempts"],
                    d["next_attempt_at"]
                        .as_i64()
                        .map(|t| format!(", next attempt {}", fmt_time(Some(t))))
                        .unwrap_or_default(),
                    d["last_error"]
                        .as_str()
                        .map(|e| format!(", last error: {}", one_line(e)))
                        .unwrap_or_default(),
                    l["waiting"]
                ));
            }
            _ => out.push(format!(
                "{c}: not blocked (no pending delivery on this key)"
            )),
        }
    }
    out.join("\n")
}

/// `audit`: one operator action per row, newest first; `before` and `after`
/// as compact JSON.
pub fn audit_text(v: &Value) -> String {
    let mut t = Table::new(&[
        ("AT", Left),
        ("ACTOR", Left),
        ("ACTION", Left),
        ("TARGET", Left),
        ("BEFORE", Left),
        ("AFTER", Left),
    ]);
    for a in v.as_array().into_iter().flatten() {
        t.row([
            fmt_time(a["at"].as_i64()),
            text(&a["actor"]),
            text(&a["action"]),
            text(&a["target"]),
            compact(&a["before"]),
            compact(&a["after"]),
        ]);
    }
    if t.is_empty() {
        "no audit records".into()
    } else {
        t.render()
    }
}

/// `replay list` (an array, newest first), or the one replay `start` and
/// `show` answer with (an object).
pub fn replays_text(v: &Value) -> String {
    let mut t = Table::new(&[
        ("ID", Right),
        ("CONNECTOR", Left),
        ("STATE", Left),
        ("REPLAYED", Right),
        ("EXAMINED", Right),
        ("PROGRESS", Right),
        ("FROM", Left),
        ("UNTIL", Left),
        ("TYPES", Left),
        ("KEY", Left),
        ("BY", Left),
    ]);
    let one = [v.clone()];
    let rows = v.as_array().map_or(&one[..], Vec::as_slice);
    for r in rows {
        // How far through the store's events it has come.
        let seq = |f: &str| r[f].as_i64();
        let progress = match (seq("start_seq"), seq("cursor_seq"), seq("last_seq")) {
            _ if r["state"] == "done" => "100%".to_string(),
            (Some(s), Some(c), Some(l)) => {
                format!("{}%", ((c - s).max(0) * 100 / (l - s).max(1)).min(100))
            }
            _ => "–".into(),
        };
        let types = match r["types"].as_array() {
            Some(t) if !t.is_empty() => compact(&r["types"]),
            _ => "(its routes)".into(),
        };
        t.row([
            text(&r["id"]),
            text(&r["connector"]),
            text(&r["state"]),
            text(&r["replayed"]),
            text(&r["examined"]),
            progress,
            fmt_time(r["since"].as_i64()),
            fmt_time(r["until"].as_i64()),
            types,
            text(&r["key"]),
            text(&r["created_by"]),
        ]);
    }
    if t.is_empty() {
        "no replays".into()
    } else {
        t.render()
    }
}

/// `connector versions` (an array, newest first), or the one version a
/// deploy or rollback answers with (an object).
pub fn versions_text(v: &Value) -> String {
    let mut t = Table::new(&[
        ("VERSION", Right),
        ("ACTIVE", Left),
        ("COMPONENT", Left),
        ("BYTES", Right),
        ("UPLOADED", Left),
        ("DIGEST", Left),
    ]);
    for v in one_or_many(v) {
        t.row([
            text(&v["version"]),
            if v["active"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            }
            .into(),
            format!(
                "{} {}",
                text(&v["info"]["name"]),
                text(&v["info"]["version"])
            ),
            text(&v["size_bytes"]),
            fmt_time(v["uploaded_at"].as_i64()),
            text(&v["digest"]),
        ]);
    }
    t.render()
}

/// `connector list` (an array) or `show`/`pause`/`configure` (one object):
/// each connector with its active component, health and queue.
pub fn connectors_text(v: &Value) -> String {
    let now = crate::queue::now_ms();
    let mut t = Table::new(&[
        ("CONNECTOR", Left),
        ("COMPONENT", Left),
        ("HEALTH", Left),
        ("READY", Right),
        ("BLOCKED", Right),
        ("IN FLIGHT", Right),
        ("DEAD", Right),
        ("DELIVERED", Right),
    ]);
    for c in one_or_many(v) {
        let d = &c["deliveries"];
        let component = match c["component"].as_object() {
            Some(_) => format!(
                "v{} {}",
                c["component"]["version"],
                c["component"]["digest"]
                    .as_str()
                    .unwrap_or("")
                    .get(..19)
                    .unwrap_or("")
            ),
            None => "no component".into(),
        };
        t.row([
            text(&c["name"]),
            component,
            health_text(c, now),
            text(&d["ready"]),
            text(&d["blocked"]),
            text(&d["in_flight"]),
            text(&d["dead"]),
            text(&d["delivered"]),
        ]);
    }
    t.render()
}

/// `status`: per connector, health, queue depth, throughput and the age of
/// the oldest pending delivery, from `GET /v1/connectors`. PER SEC is the
/// rise in `delivered` since `before` (an earlier answer and the seconds
/// since it); `-` without one.
pub fn status_table(v: &Value, before: Option<(&Value, f64)>, now_ms: i64) -> Table {
    let mut t = Table::new(&[
        ("CONNECTOR", Left),
        ("HEALTH", Left),
        ("READY", Right),
        ("BLOCKED", Right),
        ("IN FLIGHT", Right),
        ("DEAD", Right),
        ("EXPIRED", Right),
        ("DELIVERED", Right),
        ("PER SEC", Right),
        ("OLDEST", Right),
    ]);
    for c in v.as_array().into_iter().flatten() {
        let d = &c["deliveries"];
        let rate = before
            .and_then(|(p, secs)| {
                let then = p.as_array()?.iter().find(|x| x["name"] == c["name"])?;
                let then = then["deliveries"]["delivered"].as_u64()?;
                let delivered = d["delivered"].as_u64()?.saturating_sub(then);
                (secs > 0.0).then(|| format!("{:.0}", delivered as f64 / secs))
            })
            .unwrap_or_else(|| "-".into());
        t.row([
            text(&c["name"]),
            health_text(c, now_ms),
            text(&d["ready"]),
            text(&d["blocked"]),
            text(&d["in_flight"]),
            text(&d["dead"]),
            text(&d["expired"]),
            text(&d["delivered"]),
            rate,
            age_text(c["oldest_pending_age_ms"].as_i64()),
        ]);
    }
    t
}

/// A connector's health in a few words, from its `GET /v1/connectors` view:
/// `PAUSED`, `closed`, `ramp 4/64` (slow start after an outage), `open, probe
/// in 42s (every 60s)`, `probing`, or `idle` before the first attempt.
pub fn health_text(c: &Value, now_ms: i64) -> String {
    if c["paused"].as_bool() == Some(true) {
        return "PAUSED".into();
    }
    let b = &c["breaker"];
    match b["state"].as_str() {
        None => "idle".into(),
        Some("closed") => {
            let limit = c["overrides"]["concurrency"]
                .as_u64()
                .or_else(|| c["concurrency"].as_u64())
                .unwrap_or(0);
            match b["window"].as_u64() {
                Some(w) if w < limit => format!("ramp {w}/{limit}"),
                _ => "closed".into(),
            }
        }
        Some("open") => {
            let every = b["probe_interval_ms"].as_i64().unwrap_or(0) / 1000;
            let due = b["next_probe_at"].as_i64().unwrap_or(now_ms);
            let wait = (due - now_ms).max(0);
            format!("open, probe in {}s (every {every}s)", (wait + 999) / 1000)
        }
        Some(other) => other.to_string(),
    }
}

/// Milliseconds as a short age: `850ms`, `42s`, `17m`, `5h`, `3d`.
pub fn age_text(ms: Option<i64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms < 1_000 => format!("{ms}ms"),
        Some(ms) if ms < 60_000 => format!("{}s", ms / 1_000),
        Some(ms) if ms < 3_600_000 => format!("{}m", ms / 60_000),
        Some(ms) if ms < 86_400_000 => format!("{}h", ms / 3_600_000),
        Some(ms) => format!("{}d", ms / 86_400_000),
    }
}

/// `event show`: the event on one line, then a table of its deliveries.
pub fn event_text(v: &Value) -> String {
    let head = format!(
        "event {}  type {}  keys {}  accepted {}",
        text(&v["id"]),
        text(&v["type"]),
        compact(&v["keys"]),
        fmt_time(v["accepted_at"].as_i64())
    );
    let mut t = Table::new(&[
        ("ID", Right),
        ("CONNECTOR", Left),
        ("STATE", Left),
        ("ATTEMPTS", Right),
        ("NEXT ATTEMPT", Left),
        ("LAST ERROR", Left),
    ]);
    for d in v["deliveries"].as_array().into_iter().flatten() {
        let state = match d["superseded_by"].as_str() {
            Some(by) => format!("{} by {}", text(&d["state"]), one_line(by)),
            None => text(&d["state"]),
        };
        t.row([
            text(&d["id"]),
            text(&d["connector"]),
            state,
            text(&d["attempts"]),
            fmt_time(d["next_attempt_at"].as_i64()),
            text(&d["last_error"]),
        ]);
    }
    if t.is_empty() {
        format!("{head}\nno deliveries (no connector routes this type)")
    } else {
        format!("{head}\n{}", t.render())
    }
}

/// How a column's cells line up under its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text: first characters in one column.
    Left,
    /// Numbers and ages: last digits in one column, under the header's end.
    Right,
}
/// A table of text for a terminal, a pipe or a file alike.
///
/// Each column is as wide as its widest cell or its header, so a long
/// connector name or health text widens its own column instead of pushing
/// the rest of the row out of line; header and rows are padded the same way;
/// two spaces separate columns; no line ends in blanks. Cells are put on one
/// line (runs of whitespace and control characters become one space), so a
/// value can neither break a row nor carry an escape code to the terminal,
/// and an empty cell prints as `-` so no column is ever blank. Width is
/// counted in `char`s: right for the ASCII the gateway's names and numbers
/// are made of, not for double-width scripts.
#[derive(Debug, Clone)]
pub struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[(&'static str, Align)]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; cells beyond the columns are dropped, missing ones print
    /// as `-`.
    pub fn row(&mut self, cells: impl IntoIterator<Item = String>) -> &mut Table {
        let mut row: Vec<String> = cells
            .into_iter()
            .take(self.columns.len())
            .map(|c| one_line(&c))
            .map(|c| if c.is_empty() { "-".into() } else { c })
            .collect();
        row.resize(self.columns.len(), "-".into());
        self.rows.push(row);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The header and the rows, one per line, without a final newline.
    pub fn render(&self) -> String {
        self.render_wider(&mut Vec::new())
    }

    /// As [`Table::render`], with each column at least as wide as `widths`
    /// says, which then holds the widths used: a table redrawn in place
    /// passes the same `widths` every time, so its columns never jump left
    /// when a long health text or a big number goes away.
    pub fn render_wider(&self, widths: &mut Vec<usize>) -> String {
        widths.resize(self.columns.len(), 0);
        for (i, (name, _)) in self.columns.iter().enumerate() {
            let widest = self
                .rows
                .iter()
                .map(|r| r[i].chars().count())
                .chain([name.chars().count()])
                .max()
                .unwrap_or(0);
            widths[i] = widths[i].max(widest);
        }
        let header = self.columns.iter().map(|(name, _)| name.to_string());
        let mut lines = Vec::with_capacity(self.rows.len() + 1);
        for cells in std::iter::once(header.collect::<Vec<_>>()).chain(self.rows.iter().cloned()) {
            let mut line = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = " ".repeat(widths[i].saturating_sub(cell.chars().count()));
                match self.columns[i].1 {
                    Left => {
                        line.push_str(cell);
                        line.push_str(&pad);
                    }
                    Right => {
                        line.push_str(&pad);
                        line.push_str(cell);
                    }
                }
            }
            lines.push(line.trim_end().to_string());
        }
        lines.join("\n")
    }
}

/// A JSON string as itself, `-` for null or absent, anything else (a
/// number) as JSON. Cells are formatted to strings before they are padded:
/// `{:>9}` on a `Value` pads nothing (its `Display` ignores the width), which
/// is how numbers once slid out from under their headers.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Any JSON value on one line, `-` for null.
fn compact(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// An array's items, or a single object as the only one.
fn one_or_many(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        one => vec![one],
    }
}

/// An error as one line of a table: an upstream's reason may carry the
/// start of an HTML page, with newlines and tabs; runs of whitespace and
/// control characters become one space.
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

fn fmt_time(ms: Option<i64>) -> String {
    ms.map_or_else(|| "-".into(), crate::timefmt::utc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstream_page_in_a_last_error_stays_on_its_delivery_line() {
        use serde_json::json;
        let page = "HTTP 501: <!DOCTYPE HTML>\n<html lang=\"en\">\r\n\t<head>\u{7}</head>";
        let v = json!({"id": "evt-1", "type": "number.assign", "keys": ["msisdn:1"],
            "accepted_at": 0,
            "deliveries": [{"id": 1, "connector": "webhook", "state": "ready",
                            "attempts": 3, "last_error": page}]});
        let text = event_text(&v);
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(
            text.ends_with("HTTP 501: <!DOCTYPE HTML> <html lang=\"en\"> <head> </head>"),
            "{text}"
        );
        let dead = dead_text(&json!([{"delivery_id": 1, "connector": "webhook",
            "event_id": "evt-1", "type": "number.assign", "attempts": 3, "died_at": 0,
            "last_error": page}]));
        assert_eq!(dead.lines().count(), 2, "{dead}");
        assert_eq!(one_line("  a \n\n b\t"), "a b");
        assert_eq!(one_line(""), "");
    }

    #[test]
    fn replays_show_their_progress() {
        let r = serde_json::json!({"id": 3, "connector": "hss", "state": "running",
            "replayed": 120, "examined": 250, "start_seq": 100, "cursor_seq": 325, "last_seq": 1000,
            "since": 0, "until": 1, "types": [], "created_by": "ops"});
        let text = replays_text(&r);
        assert!(
            text.contains("25%") && text.contains("(its routes)"),
            "{text}"
        );
        assert_eq!(replays_text(&serde_json::json!([])), "no replays");
    }

    #[test]
    fn a_superseded_delivery_names_the_event_that_superseded_it() {
        let v = serde_json::json!({"id": "fwd-1", "type": "forwarding.set",
            "keys": ["customer:A1"], "accepted_at": 0,
            "deliveries": [{"id": 7, "connector": "hss", "state": "superseded",
                            "superseded_by": "fwd-2", "attempts": 0, "last_error": null}]});
        let text = event_text(&v);
        assert!(text.contains("superseded by fwd-2"), "{text}");
    }

    /// Where each column's header ends, and where each row's cell in it ends.
    fn ends(table: &str, header: &str) -> Vec<usize> {
        let mut lines = table.lines();
        let at = lines.next().unwrap().find(header).unwrap() + header.len();
        lines
            .map(|l| {
                let before: String = l.chars().take(at).collect();
                assert!(l.chars().nth(at).is_none_or(|c| c == ' '), "{table}");
                before.trim_end().chars().count()
            })
            .chain([at])
            .collect()
    }

    #[test]
    fn table_columns_are_as_wide_as_their_widest_cell() {
        let mut t = Table::new(&[("NAME", Left), ("READY", Right), ("NOTE", Left)]);
        t.row([
            "a-connector-name-longer-than-any-old-column".into(),
            "7".into(),
            "x".into(),
        ])
        .row(["hss".into(), "123456789012".into(), "".into()]);
        let text = t.render();
        assert_eq!(
            text,
            "NAME                                                READY  NOTE\n\
             a-connector-name-longer-than-any-old-column             7  x\n\
             hss                                          123456789012  -"
        );
        let e = ends(&text, "READY");
        assert!(e.iter().all(|&x| x == e[0]), "{e:?}\n{text}");
    }

    #[test]
    fn table_cells_stay_on_one_line_without_escape_codes() {
        let mut t = Table::new(&[("ID", Right), ("LAST ERROR", Left)]);
        t.row(["1".into(), "red \x1b[31mALERT\x1b[0m\nsecond line\t".into()])
            .row(["2".into()]);
        let text = t.render();
        assert!(!text.contains('\x1b'), "{text:?}");
        assert_eq!(text.lines().count(), 3, "{text}");
        assert_eq!(
            text.lines().nth(2),
            Some(" 2  -"),
            "missing cells print as -"
        );
        assert!(text.lines().all(|l| l == l.trim_end()), "{text:?}");
        let header_only = Table::new(&[("A", Left), ("B", Right)]);
        assert!(header_only.is_empty());
        assert_eq!(header_only.render(), "A  B");
    }

    #[test]
    fn a_redrawn_table_keeps_its_widest_columns() {
        let table = |health: &str, ready: &str| {
            let mut t = Table::new(&[("HEALTH", Left), ("READY", Right)]);
            t.row([health.into(), ready.into()]);
            t
        };
        let mut widths = Vec::new();
        let first = table("open, probe in 42s (every 60s)", "1234").render_wider(&mut widths);
        let second = table("closed", "7").render_wider(&mut widths);
        assert_eq!(
            first.lines().next(),
            second.lines().next(),
            "{first}\n{second}"
        );
        let row = format!("{:<30}  {:>5}", "closed", "7");
        assert_eq!(second.lines().nth(1), Some(row.as_str()));
        assert_eq!(
            table("closed", "7").render(),
            "HEALTH  READY\nclosed      7"
        );
    }

    #[test]
    fn status_numbers_end_under_their_headers_whatever_the_name_and_health() {
        use serde_json::json;
        let at = 1_000_000;
        let conn = |name: &str, ready: u64, delivered: u64, breaker: Value| {
            json!({"name": name, "paused": false, "concurrency": 4, "breaker": breaker,
                   "oldest_pending_age_ms": ready * 1000,
                   "deliveries": {"ready": ready, "blocked": 0, "in_flight": 1, "dead": 0,
                                  "expired": 0, "delivered": delivered}})
        };
        let open =
            json!({"state": "open", "next_probe_at": at + 41_200, "probe_interval_ms": 600_000});
        let before = json!([conn("hss", 0, 100, Value::Null)]);
        let now = json!([
            conn("hss", 0, 130, Value::Null),
            conn("billing-and-provisioning-eu-west-1", 123_456, 7, open),
        ]);
        let text = status_table(&now, Some((&before, 2.0)), at).render();
        for header in [
            "READY",
            "BLOCKED",
            "IN FLIGHT",
            "DEAD",
            "EXPIRED",
            "DELIVERED",
            "PER SEC",
            "OLDEST",
        ] {
            let e = ends(&text, header);
            assert!(e.iter().all(|&x| x == e[0]), "{header}: {e:?}\n{text}");
        }
        let hss = text.lines().nth(1).unwrap();
        assert!(hss.starts_with("hss  ") && hss.contains(" 15 "), "{text}");
        assert!(text.contains("open, probe in 42s (every 600s)"), "{text}");
        let new = text.lines().nth(2).unwrap();
        assert!(
            new.contains("  -  "),
            "no rate without an earlier answer: {text}"
        );
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn single_connectors_and_versions_print_as_one_row_tables() {
        use serde_json::json;
        let version = json!({"version": 12, "active": true, "digest": "sha256:abc",
            "info": {"name": "webhook", "version": "0.2.0"}, "size_bytes": 1234567,
            "uploaded_at": 0});
        let one = versions_text(&version);
        assert_eq!(one.lines().count(), 2, "{one}");
        assert!(
            one.contains("webhook 0.2.0") && one.contains(" yes "),
            "{one}"
        );
        let many = versions_text(&json!([version, {"version": 3, "active": false,
            "digest": "sha256:def", "info": {"name": "webhook", "version": "0.1.0"},
            "size_bytes": 9, "uploaded_at": 0}]));
        for header in ["VERSION", "BYTES"] {
            let e = ends(&many, header);
            assert!(e.iter().all(|&x| x == e[0]), "{header}: {e:?}\n{many}");
        }
        let c = json!({"name": "hss", "paused": true, "component": null,
            "deliveries": {"ready": 5, "blocked": 0, "in_flight": 0, "dead": 0, "delivered": 0}});
        let shown = connectors_text(&c);
        assert_eq!(shown.lines().count(), 2, "{shown}");
        assert!(
            shown.contains("no component") && shown.contains("PAUSED"),
            "{shown}"
        );
    }

    #[test]
    fn health_names_pause_ramp_and_the_next_probe() {
        use serde_json::json;
        let at = 1_000_000;
        let open = json!({"paused": false, "concurrency": 64, "breaker":
            {"state": "open", "next_probe_at": at + 41_200, "probe_interval_ms": 60_000}});
        assert_eq!(health_text(&open, at), "open, probe in 42s (every 60s)");
        let overdue = json!({"breaker": {"state": "open", "next_probe_at": at - 5, "probe_interval_ms": 1_000}});
        assert_eq!(health_text(&overdue, at), "open, probe in 0s (every 1s)");
        let paused = json!({"paused": true, "breaker": open["breaker"].clone()});
        assert_eq!(health_text(&paused, at), "PAUSED");
        let ramp = json!({"concurrency": 64, "overrides": {"concurrency": 16},
            "breaker": {"state": "closed", "consecutive_failures": 0, "window": 4}});
        assert_eq!(health_text(&ramp, at), "ramp 4/16");
        let full = json!({"concurrency": 64, "overrides": {"concurrency": null},
            "breaker": {"state": "closed", "consecutive_failures": 1, "window": 64}});
        assert_eq!(health_text(&full, at), "closed");
        let probing = json!({"breaker": {"state": "probing", "probe_interval_ms": 4_000}});
        assert_eq!(health_text(&probing, at), "probing");
        assert_eq!(
            health_text(&json!({"paused": false, "breaker": null}), at),
            "idle"
        );
    }

    #[test]
    fn ages_are_short() {
        assert_eq!(age_text(None), "-");
        assert_eq!(age_text(Some(850)), "850ms");
        assert_eq!(age_text(Some(42_999)), "42s");
        assert_eq!(age_text(Some(17 * 60_000)), "17m");
        assert_eq!(age_text(Some(5 * 3_600_000 + 1)), "5h");
        assert_eq!(age_text(Some(3 * 86_400_000)), "3d");
    }

    #[test]
    fn times_print_as_utc() {
        assert_eq!(fmt_time(Some(0)), "1970-01-01T00:00:00Z");
        assert_eq!(fmt_time(Some(1_798_675_200_000)), "2026-12-31T00:00:00Z");
    }
}
