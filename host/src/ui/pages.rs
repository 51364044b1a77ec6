//! The console's pages (GET): the overview, a connector, dead letters, an
//! event, a key, the audit log, and the plots' data. Each reads what the
//! API reads, through the same functions, and shows action forms only to a
//! session that may act.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Redirect, Response};
use axum::Json;
use maud::{html, Markup};
use serde::Deserialize;

use super::session::Session;
use super::view::{
    self, badge, count, csrf, event_link, key_link, maybe_time, page, time, Refused,
};
use super::UiState;
use crate::api::connectors::{view as connector_view, ConnectorView};
use crate::api::error::ApiError;
use crate::api::operate::DeadQuery;
use crate::queue::{now_ms, DeliveryState};
use crate::store::{DeadFilter, MinuteCount};
use crate::timefmt;

type PageResult = Result<Markup, Refused>;

/// How bad a connector's state is, worst first: the overview lists the
/// connectors that need an operator at the top.
fn health(c: &ConnectorView) -> (u8, &'static str, &'static str) {
    match (c.paused, c.breaker.map(|b| b.name()), &c.component) {
        (_, Some("open"), _) => (0, "down", "the breaker is open: attempts wait for a probe"),
        (_, Some("probing"), _) => (1, "probing", "a probe is testing whether it is back"),
        (_, _, None) => (
            2,
            "no component",
            "nothing is delivered until a component is uploaded",
        ),
        (true, _, _) => (
            3,
            "paused",
            "an operator paused it: events queue, nothing is attempted",
        ),
        (false, Some(_), _) => (5, "healthy", "attempts succeed"),
        (false, None, _) => (4, "idle", "no attempt since this node started"),
    }
}

fn pending(c: &ConnectorView) -> u64 {
    c.deliveries.ready + c.deliveries.blocked + c.deliveries.in_flight
}

/// Per second over the last `minutes` minutes up to `now`, the current
/// minute counted for the part of it that has passed.
fn rate(
    counts: Option<&Vec<MinuteCount>>,
    now: i64,
    minutes: i64,
    f: fn(&MinuteCount) -> i64,
) -> f64 {
    let now_minute = now.div_euclid(60_000);
    let first = now_minute - (minutes - 1);
    let sum: i64 = counts
        .into_iter()
        .flatten()
        .filter(|m| m.minute >= first && m.minute <= now_minute)
        .map(f)
        .sum();
    let secs = (now - first * 60_000) as f64 / 1000.0;
    sum as f64 / secs.max(1.0)
}

/// What a component says it is (`describe()`): its name and version.
fn described(info: &serde_json::Value) -> String {
    match (info["name"].as_str(), info["version"].as_str()) {
        (Some(n), Some(v)) => format!("{n} {v}"),
        (Some(n), None) => n.to_string(),
        _ => "–".into(),
    }
}

async fn views(state: &UiState) -> Result<Vec<ConnectorView>, Refused> {
    let mut out = Vec::new();
    for name in state.app.fleet.names() {
        out.push(connector_view(&state.app, &name).await?);
    }
    out.sort_by(|a, b| health(a).0.cmp(&health(b).0).then(a.name.cmp(&b.name)));
    Ok(out)
}

pub async fn overview(session: Session, State(state): State<UiState>) -> PageResult {
    let connectors = views(&state).await?;
    let now = now_ms();
    let minutes = state
        .app
        .store
        .catalog()
        .minute_counts(now.div_euclid(60_000) - 60)
        .await?;
    let nodes = state.app.store.catalog().nodes().await?;
    let info = &state.info;
    Ok(page(
        "Overview",
        &session,
        html! {
            p.meta {
                "Gateway " (info.version) " · store " (info.backend) " · this node " code { (info.node) }
            }
            section data-refresh="connectors" {
                h2 { "Connectors" }
                table #connectors {
                    thead { tr {
                        th { "Connector" } th { "Health" } th.num { "Pending" }
                        th { "Oldest pending" } th.num { "Delivered/s" } th.num { "Failed/s" }
                        th.num { "Dead letters" }
                    } }
                    tbody {
                        @for c in &connectors {
                            @let (_, label, why) = health(c);
                            @let counts = minutes.get(&c.name);
                            tr data-connector=(c.name) {
                                td { (view::connector_link(&c.name)) }
                                td {
                                    span class={ "health h-" (label.replace(' ', "-")) } title=(why) { (label) }
                                    @if c.paused && label != "paused" { " " span.health.h-paused title="an operator paused it: events queue, nothing is attempted" { "paused" } }
                                }
                                td.num { (count(pending(c))) }
                                td { @match c.oldest_pending_age_ms {
                                    Some(age) => (timefmt::age(age)),
                                    None => "–",
                                } }
                                td.num { (format!("{:.1}", rate(counts, now, 5, |m| m.delivered))) }
                                td.num { (format!("{:.1}", rate(counts, now, 5, |m| m.failed))) }
                                td.num {
                                    @if c.deliveries.dead > 0 {
                                        a href={ "/ui/dead-letters?connector=" (view::query_value(&c.name)) } { (count(c.deliveries.dead)) }
                                    } @else { "0" }
                                }
                            }
                        }
                    }
                }
                p.hint { "Rates are over the last five minutes, all nodes together. Refreshes every 15 s." }
            }
            section {
                h2 { "The last hour" }
                div.plots {
                    @for c in &connectors {
                        @let counts = minutes.get(&c.name);
                        @let total = |f: fn(&MinuteCount) -> i64| counts.map_or(0, |m| m.iter().map(f).sum::<i64>());
                        @let summary = format!("{}: {} delivered, {} failed in the last hour", c.name, total(|m| m.delivered), total(|m| m.failed));
                        figure.plot data-plot=(c.name) aria-label=(summary) {
                            figcaption { (c.name) }
                            noscript { p { (summary) " (the plot needs JavaScript)." } }
                        }
                    }
                }
            }
            section data-refresh="nodes" {
                h2 { "Nodes" }
                table {
                    thead { tr { th { "Node" } th.num { "Epoch" } th { "Started" } th { "Last heartbeat" } th { "State" } } }
                    tbody {
                        @for n in &nodes {
                            @let silent = now - n.heartbeat_at;
                            tr {
                                td { code { (n.name) } }
                                td.num { (n.epoch) }
                                td { (time(n.started_at)) }
                                td { (timefmt::age(silent)) " ago" }
                                td { @if silent <= info.takeover_after_ms { (badge("alive")) } @else { (badge("silent")) } }
                            }
                        }
                    }
                }
            }
        },
    ))
}

/// The plots' data: per connector, the last hour's deliveries and failed
/// attempts per second, minute by minute (zero where nothing happened).
pub async fn series(
    _session: Session,
    State(state): State<UiState>,
) -> Result<Json<serde_json::Value>, Refused> {
    let now = now_ms();
    let now_minute = now.div_euclid(60_000);
    let first = now_minute - 60;
    // The current minute has only partly passed.
    let this_minute_s = ((now - now_minute * 60_000) as f64 / 1000.0).max(1.0);
    let counts = state.app.store.catalog().minute_counts(first).await?;
    let mut out = BTreeMap::new();
    for name in state.app.fleet.names() {
        let mut delivered = vec![0.0; 61];
        let mut failed = vec![0.0; 61];
        for m in counts.get(&name).into_iter().flatten() {
            if let Ok(i) = usize::try_from(m.minute - first) {
                if i < 61 {
                    let secs = if i == 60 { this_minute_s } else { 60.0 };
                    delivered[i] = m.delivered as f64 / secs;
                    failed[i] = m.failed as f64 / secs;
                }
            }
        }
        out.insert(
            name,
            serde_json::json!({"delivered": delivered, "failed": failed}),
        );
    }
    let times: Vec<i64> = (first..=now_minute).map(|m| m * 60).collect();
    Ok(Json(
        serde_json::json!({ "times": times, "connectors": out }),
    ))
}

pub async fn connector(
    session: Session,
    State(state): State<UiState>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> PageResult {
    let c = connector_view(&state.app, &name).await?;
    let catalog = state.app.store.catalog();
    let versions = catalog.component_versions(&name).await?;
    let attempts = catalog.recent_attempts(&name, 50).await?;
    let breaker = catalog.breaker_transitions(&name, 20).await?;
    let replays = catalog.replays(Some(&name), 10).await?;
    let (_, label, why) = health(&c);
    let configured = state.app.fleet.get(&name);
    let action = |what: &str| format!("/ui/connectors/{}/{what}", view::segment(&name));
    Ok(page(
        &format!("Connector {name}"),
        &session,
        html! {
            section.cards {
                div.card { h3 { "Health" } span class={ "health h-" (label.replace(' ', "-")) } { (label) } p.hint { (why) } }
                div.card { h3 { "Pending" } p.big { (count(pending(&c))) }
                    p.hint { (count(c.deliveries.ready)) " ready · " (count(c.deliveries.blocked)) " blocked · " (count(c.deliveries.in_flight)) " in flight" } }
                div.card { h3 { "Oldest pending" } p.big { @match c.oldest_pending_age_ms { Some(a) => (timefmt::age(a)), None => "–" } } }
                div.card { h3 { "Dead letters" } p.big {
                    a href={ "/ui/dead-letters?connector=" (view::query_value(&name)) } { (count(c.deliveries.dead)) } } }
                div.card { h3 { "Delivered" } p.big { (count(c.deliveries.delivered)) } p.hint { "kept for the dedup window" } }
            }
            @if session.admin {
                section.actions {
                    form method="post" action=(action(if c.paused { "resume" } else { "pause" })) {
                        (csrf(&session))
                        @if c.paused {
                            button type="submit" name="do" value="resume" { "Resume" }
                            span.hint { " Paused: events queue, nothing is attempted." }
                        } @else {
                            button type="submit" name="do" value="pause" { "Pause" }
                            span.hint { " Stops attempts on every node; events keep queueing." }
                        }
                    }
                }
            }
            section {
                h2 { "Limits" }
                @let configured_rate = configured.as_ref().and_then(|k| k.rate);
                p {
                    "Configured: concurrency " (configured.as_ref().map_or(0, |k| k.concurrency))
                    ", rate " @match configured_rate { Some(r) => { (r) "/s" }, None => { "unlimited" } } "."
                    @if c.overrides.concurrency.is_some() || c.overrides.rate.is_some() {
                        " Overridden: concurrency " (c.overrides.concurrency.map_or("as configured".to_string(), |v| v.to_string()))
                        ", rate " (c.overrides.rate.map_or("as configured".to_string(), |v| format!("{v}/s"))) "."
                    }
                }
                @if session.admin {
                    form.inline method="post" action=(action("limits")) {
                        (csrf(&session))
                        label { "Concurrency " input type="number" name="concurrency" min="1" value=[c.overrides.concurrency] placeholder="as configured"; }
                        label { "Rate /s " input type="number" name="rate" step="any" value=[c.overrides.rate] placeholder="as configured"; }
                        button type="submit" { "Set limits" }
                        span.hint { " Empty: as configured. Applies on every node within a second." }
                    }
                }
            }
            section {
                h2 { "Component versions" }
                table #versions {
                    thead { tr { th.num { "Version" } th { "Uploaded" } th { "Digest" } th.num { "Size" } th { "Describes itself as" } th { "" } } }
                    tbody {
                        @for v in &versions {
                            tr class=[v.active.then_some("active")] {
                                td.num { (v.version) }
                                td { (time(v.uploaded_at)) }
                                td { code { (v.digest.get(..12).unwrap_or(&v.digest)) } }
                                td.num { (count((v.size_bytes + 1023) / 1024)) " KiB" }
                                td { (described(&v.info)) }
                                td { @if v.active { (badge("active")) } }
                            }
                        }
                    }
                }
                @if session.admin {
                    @let active = versions.iter().find(|v| v.active).map_or(0, |v| v.version);
                    @if versions.iter().any(|v| v.version < active) {
                        form.inline method="post" action=(action("rollback")) {
                            (csrf(&session))
                            button type="submit" { "Roll back to the previous version" }
                        }
                    }
                    form.inline method="post" action=(action("component")) enctype="multipart/form-data" {
                        (csrf(&session))
                        label { "Upload a version " input type="file" name="component" accept=".wasm,application/wasm" required; }
                        button type="submit" { "Upload and activate" }
                        span.hint { " Checked before it is stored; an invalid one leaves the running version in place." }
                    }
                }
            }
            section {
                h2 { "Recent attempts" }
                p.hint { "The latest 50, newest first, from every node." }
                table #attempts {
                    thead { tr { th { "Finished" } th { "Event" } th.num { "Attempt" } th.num { "Took" } th { "Outcome" } th { "Reason" } th { "Node" } } }
                    tbody {
                        @for (event, _delivery, a) in &attempts {
                            tr {
                                td { (time(a.finished_at)) }
                                td { (event_link(event)) }
                                td.num { (a.attempt) }
                                td.num { (a.finished_at - a.started_at) " ms" }
                                td { (badge(&a.outcome)) }
                                td { (view::reason(a.reason.as_deref())) }
                                td { code { (a.node) } }
                            }
                        }
                        @if attempts.is_empty() { tr { td colspan="7" { "None among them." } } }
                    }
                }
            }
            section {
                h2 { "Breaker history" }
                table #breaker {
                    thead { tr { th { "When" } th { "From" } th { "To" } th { "Seen by" } } }
                    tbody {
                        @for t in &breaker {
                            tr { td { (time(t.at)) } td { (badge(&t.from)) } td { (badge(&t.to)) } td { code { (t.node) } } }
                        }
                        @if breaker.is_empty() { tr { td colspan="4" { "The breaker has not moved." } } }
                    }
                }
            }
            @if !replays.is_empty() {
                section {
                    h2 { "Replays" }
                    p.hint { "Stored events delivered again, newest first. Start or cancel one with "
                        code { "switchboard replay" } " or " code { "POST /v1/replays" } "." }
                    table #replays {
                        thead { tr { th.num { "Replay" } th { "State" } th.num { "Replayed" } th.num { "Examined" } th.num { "Progress" } th { "Events accepted" } th { "Types" } th { "Key" } th { "By" } } }
                        tbody {
                            @for r in &replays {
                                @let span = (r.last_seq - r.start_seq).max(1);
                                @let progress = if r.state == "done" { 100 } else { ((r.cursor_seq - r.start_seq).max(0) * 100 / span).min(100) };
                                tr {
                                    td.num { (r.id) }
                                    td { (badge(&r.state)) }
                                    td.num { (count(r.replayed as i64)) }
                                    td.num { (count(r.examined as i64)) }
                                    td.num { (progress) "%" }
                                    td { (time(r.since)) " – " (time(r.until)) }
                                    td { @if r.types.is_empty() { "its routes" } @else { (r.types.join(", ")) } }
                                    td { @match &r.key { Some(k) => (key_link(k)), None => "–" } }
                                    td { (r.created_by) }
                                }
                            }
                        }
                    }
                }
            }
            section {
                h2 { "Routes and settings" }
                (view::json_block(&c.settings))
            }
        },
    ))
}

#[derive(Debug, Deserialize, Default)]
pub struct DeadForm {
    #[serde(default)]
    pub connector: String,
    #[serde(default, rename = "type")]
    pub event_type: String,
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub reason: String,
    /// `YYYY-MM-DDTHH:MM`, UTC.
    #[serde(default)]
    pub since: String,
    #[serde(default)]
    pub until: String,
    /// A page further back: only delivery ids below this one. Never part
    /// of what a bulk action acts on.
    #[serde(default)]
    pub before_id: String,
}

impl DeadForm {
    /// The filter, as the API reads it (the same checks), up to `limit`.
    pub fn filter(&self, limit: usize) -> Result<DeadFilter, Refused> {
        let time = time_field;
        let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Ok(DeadQuery {
            connector: text(&self.connector),
            event_type: text(&self.event_type),
            key: text(&self.key),
            reason: text(&self.reason),
            since: time("since", &self.since)?,
            until: time("until", &self.until)?,
            before_id: None,
            limit: Some(limit),
        }
        .filter(limit)?)
    }

    /// The page's link with this filter, further back than `before_id`.
    fn older(&self, before_id: i64) -> String {
        let q = view::query_value;
        format!(
            "/ui/dead-letters?connector={}&type={}&key={}&reason={}&since={}&until={}&before_id={before_id}",
            q(&self.connector),
            q(&self.event_type),
            q(&self.key),
            q(&self.reason),
            q(&self.since),
            q(&self.until)
        )
    }

    /// The filter as hidden fields, for a form that acts on it.
    pub fn hidden(&self) -> Markup {
        html! {
            input type="hidden" name="connector" value=(self.connector);
            input type="hidden" name="type" value=(self.event_type);
            input type="hidden" name="key" value=(self.key);
            input type="hidden" name="reason" value=(self.reason);
            input type="hidden" name="since" value=(self.since);
            input type="hidden" name="until" value=(self.until);
        }
    }

    fn any(&self) -> bool {
        [
            &self.connector,
            &self.event_type,
            &self.key,
            &self.reason,
            &self.since,
            &self.until,
        ]
        .iter()
        .any(|s| !s.is_empty())
    }
}

/// Most dead letters one page lists.
pub const DEAD_PAGE: usize = 200;

pub async fn dead_letters(
    session: Session,
    State(state): State<UiState>,
    Query(form): Query<DeadForm>,
) -> PageResult {
    let mut filter = form.filter(DEAD_PAGE)?;
    filter.before_id = form.before_id.trim().parse().ok();
    let dead = state.app.store.catalog().dead_letters(&filter).await?;
    let names = state.app.fleet.names();
    Ok(page(
        "Dead letters",
        &session,
        html! {
            form.filters method="get" action="/ui/dead-letters" {
                label { "Connector " select name="connector" {
                    option value="" { "any" }
                    @for n in &names { option value=(n) selected[*n == form.connector] { (n) } }
                } }
                label { "Type " input type="text" name="type" value=(form.event_type) placeholder="number.assign"; }
                label { "Key " input type="text" name="key" value=(form.key) placeholder="msisdn:…"; }
                label { "Reason contains " input type="text" name="reason" value=(form.reason) placeholder="HTTP 422"; }
                label { "Died since " input type="datetime-local" name="since" value=(form.since); }
                label { "until " input type="datetime-local" name="until" value=(form.until); }
                button type="submit" { "Filter" }
                @if form.any() { " " a href="/ui/dead-letters" { "clear" } }
                span.hint { " Times are UTC." }
            }
            @if session.admin && !dead.is_empty() {
                form.bulk method="post" action="/ui/dead-letters/act" {
                    (csrf(&session))
                    (form.hidden())
                    input type="hidden" name="scope" value="filter";
                    "Every dead letter matching this filter: "
                    button type="submit" name="action" value="retry" { "Retry all…" }
                    " "
                    button type="submit" name="action" value="skip" { "Skip all…" }
                    span.hint { " You confirm on the next page." }
                }
            }
            form #selected method="post" action="/ui/dead-letters/act" {
                @if session.admin { (csrf(&session)) input type="hidden" name="scope" value="selected"; }
                table #dead {
                    thead { tr {
                        @if session.admin { th { "" } }
                        th.num { "Delivery" } th { "Connector" } th { "Event" } th { "Type" } th { "Keys" }
                        th.num { "Attempts" } th { "Died" } th { "Reason" }
                    } }
                    tbody {
                        @for d in &dead {
                            tr {
                                @if session.admin { td { input type="checkbox" name="id" value=(d.delivery_id) aria-label={ "select delivery " (d.delivery_id) }; } }
                                td.num { (d.delivery_id) }
                                td { (view::connector_link(&d.connector)) }
                                td { (event_link(&d.event_id)) }
                                td { (d.event_type) }
                                td { @for k in &d.keys { (key_link(k)) " " } }
                                td.num { (d.attempts) }
                                td { (time(d.died_at)) }
                                td { (view::reason(d.last_error.as_deref())) }
                            }
                        }
                        @if dead.is_empty() { tr { td colspan=(if session.admin { "9" } else { "8" }) { "No dead letters match." } } }
                    }
                }
                @if let (true, Some(last)) = (dead.len() == DEAD_PAGE, dead.last()) {
                    p { a href=(form.older(last.delivery_id)) { "Older dead letters" } span.hint { " (" (DEAD_PAGE) " a page, newest first)" } }
                }
                @if session.admin && !dead.is_empty() {
                    p {
                        "Selected: "
                        button type="submit" name="action" value="retry" { "Retry…" }
                        " "
                        button type="submit" name="action" value="skip" { "Skip…" }
                    }
                }
            }
        },
    ))
}

pub async fn event(
    session: Session,
    State(state): State<UiState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> PageResult {
    crate::api::extract::stored_text("id", &id, crate::queue::event::MAX_ID_LEN)?;
    let Some(e) = state.app.store.catalog().event(&id).await? else {
        let missing = crate::api::events::no_event(&state.app, &id).await?;
        return Err(Refused::from(missing));
    };
    let mut attempts = Vec::new();
    for d in &e.deliveries {
        attempts.push(state.app.store.catalog().attempts(d.id).await?);
    }
    Ok(page(
        &format!("Event {id}"),
        &session,
        html! {
            dl.facts {
                dt { "Type" } dd { (e.event_type) }
                dt { "Keys" } dd { @for k in &e.keys { (key_link(k)) " " } @if e.keys.is_empty() { "none (any order)" } }
                dt { "Accepted" } dd { (time(e.accepted_at)) }
                dt { "Sequence" } dd { (e.seq) }
            }
            h2 { "Deliveries" }
            @for (d, tries) in e.deliveries.iter().zip(&attempts) {
                section.delivery {
                    h3 { (view::connector_link(&d.connector)) " · delivery " (d.id) " · " (badge(d.state.as_str())) }
                    p.hint {
                        (d.attempts) " attempt(s)"
                        @if let Some(t) = d.next_attempt_at { @if d.state == DeliveryState::Ready || d.state == DeliveryState::Blocked { " · next attempt " (time(t)) } }
                        @if let Some(owner) = &d.lease_owner { " · running on " code { (owner) } }
                        @if let Some(t) = d.expires_at { " · expires " (time(t)) }
                        @if let Some(by) = &d.superseded_by { " · superseded by " (view::event_link(by)) }
                    }
                    @if d.state == DeliveryState::Dead && session.admin {
                        form.inline method="post" action="/ui/dead-letters/act" {
                            (csrf(&session))
                            input type="hidden" name="scope" value="selected";
                            input type="hidden" name="id" value=(d.id);
                            input type="hidden" name="confirmed" value="1";
                            button type="submit" name="action" value="retry" { "Retry" }
                            " "
                            button type="submit" name="action" value="skip" { "Skip" }
                        }
                    }
                    ol.timeline {
                        @for a in tries {
                            li {
                                (time(a.started_at)) " · attempt " (a.attempt) " · "
                                (a.finished_at - a.started_at) " ms · " (badge(&a.outcome)) " · "
                                code { (a.node) }
                                @if a.reason.is_some() { div { (view::reason(a.reason.as_deref())) } }
                            }
                        }
                        @if tries.is_empty() { li { "Not attempted yet." } }
                    }
                    @if tries.is_empty() && d.last_error.is_some() { p { "Last error: " (view::reason(d.last_error.as_deref())) } }
                }
            }
            h2 { "Payload" }
            (view::json_block(&e.payload))
        },
    ))
}

pub async fn key(
    session: Session,
    State(state): State<UiState>,
    axum::extract::Path(key): axum::extract::Path<String>,
) -> PageResult {
    crate::api::extract::stored_text("key", &key, crate::queue::event::MAX_KEY_LEN)?;
    let lanes = state
        .app
        .store
        .lanes(&key, &state.app.fleet.names())
        .await?;
    let mut blocked_by = Vec::new();
    for l in &lanes {
        blocked_by.push(match &l.head {
            Some((_, d)) => state.app.store.catalog().attempts(d.id).await?,
            None => Vec::new(),
        });
    }
    let connectors = views(&state).await?;
    Ok(page(
        &format!("Key {key}"),
        &session,
        html! {
            p.hint { "Each connector delivers the events of one key in the order they were accepted. "
                "A lane waits while its head delivery is not final." }
            @for (l, tries) in lanes.iter().zip(&blocked_by) {
                section.lane {
                    h2 { (view::connector_link(&l.connector)) }
                    @match &l.head {
                        None => p { "Nothing waits on this key." },
                        Some((event, d)) => {
                            @let c = connectors.iter().find(|c| c.name == l.connector);
                            p.why { (why_blocked(d, c)) }
                            dl.facts {
                                dt { "Head" } dd { "event " (event_link(event)) ", delivery " (d.id) " · " (badge(d.state.as_str())) }
                                dt { "Attempts" } dd { (d.attempts) }
                                dt { "Next attempt" } dd { (maybe_time(d.next_attempt_at)) }
                                dt { "Last error" } dd { (view::reason(d.last_error.as_deref())) }
                                dt { "Waiting behind it" } dd { (count(l.waiting)) }
                                @if let Some(c) = c {
                                    dt { "Breaker" } dd { (badge(c.breaker.map_or("none", |b| b.name()))) @if c.paused { " · " (badge("paused")) } }
                                }
                            }
                            @if !tries.is_empty() {
                                ol.timeline { @for a in tries { li { (time(a.started_at)) " · attempt " (a.attempt) " · " (badge(&a.outcome)) @if a.reason.is_some() { " · " (view::reason(a.reason.as_deref())) } } } }
                            }
                            @if !l.behind.is_empty() {
                                h3 { "Next in line" }
                                table.behind {
                                    thead { tr { th { "Event" } th.num { "Delivery" } th { "State" } th.num { "Attempts" } } }
                                    tbody {
                                        @for (event, d) in &l.behind {
                                            tr { td { (event_link(event)) } td.num { (d.id) } td { (badge(d.state.as_str())) } td.num { (d.attempts) } }
                                        }
                                    }
                                }
                                @if l.waiting > l.behind.len() as u64 { p.hint { "and " (count(l.waiting - l.behind.len() as u64)) " more behind them" } }
                            }
                        }
                    }
                }
            }
        },
    ))
}

/// In one sentence, why a lane whose head is `d` does not move.
fn why_blocked(d: &crate::store::DeliveryView, c: Option<&ConnectorView>) -> String {
    let now = now_ms();
    match d.state {
        DeliveryState::Dead => {
            "The head is a dead letter: the lane is held until an operator retries or skips it."
                .into()
        }
        DeliveryState::InFlight => format!(
            "The head is being attempted now{}.",
            d.lease_owner
                .as_ref()
                .map_or(String::new(), |o| format!(" on {o}"))
        ),
        _ if c.is_some_and(|c| c.paused) => {
            "The connector is paused: nothing is attempted until it is resumed.".into()
        }
        _ if c.is_some_and(|c| c.breaker.is_some_and(|b| b.name() == "open")) => {
            "The connector's breaker is open: the head waits for the destination to come back."
                .into()
        }
        _ => match d.next_attempt_at {
            Some(t) if t > now => {
                format!("The head waits to be retried in {}.", timefmt::age(t - now))
            }
            _ => "The head is ready and will be attempted next.".into(),
        },
    }
}

#[derive(Deserialize)]
pub struct AuditQuery {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    /// Text the record's target contains (a connector, a delivery id).
    #[serde(default)]
    target: String,
    /// `YYYY-MM-DDTHH:MM`, UTC.
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    before_id: Option<i64>,
}

impl AuditQuery {
    fn link(&self, before_id: i64) -> String {
        let q = view::query_value;
        format!(
            "/ui/audit?actor={}&action={}&target={}&since={}&until={}&before_id={before_id}",
            q(&self.actor),
            q(&self.action),
            q(&self.target),
            q(&self.since),
            q(&self.until)
        )
    }
}

/// A time field of a filter form: empty is no bound.
fn time_field(field: &'static str, text: &str) -> Result<Option<i64>, Refused> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    timefmt::parse_utc(text).map(Some).ok_or_else(|| {
        Refused::from(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("{field}: {text:?} is not a time; use YYYY-MM-DDTHH:MM (UTC)"),
        ))
    })
}

pub async fn audit(
    session: Session,
    State(state): State<UiState>,
    Query(q): Query<AuditQuery>,
) -> PageResult {
    const PAGE: usize = 100;
    let since = time_field("since", &q.since)?;
    let until = time_field("until", &q.until)?;
    // Filtered here, from pages of the log (newest first): it is small
    // next to the queue, and a record older than `since` ends the walk.
    let mut shown = Vec::new();
    let mut before = q.before_id;
    let mut more = false;
    'pages: for _ in 0..20 {
        let page = state.app.store.catalog().audit_log(500, before).await?;
        let last = page.last().map(|r| r.id);
        for r in page {
            if since.is_some_and(|t| r.at < t) {
                break 'pages;
            }
            if (q.actor.is_empty() || r.actor == q.actor)
                && (q.action.is_empty() || r.action.contains(&q.action))
                && (q.target.is_empty() || r.target.contains(&q.target))
                && until.is_none_or(|t| r.at < t)
            {
                if shown.len() == PAGE {
                    more = true;
                    break 'pages;
                }
                shown.push(r);
            }
        }
        match last {
            Some(id) => before = Some(id),
            None => break,
        }
    }
    Ok(page(
        "Audit log",
        &session,
        html! {
            form.filters method="get" action="/ui/audit" {
                label { "Actor " input type="text" name="actor" value=(q.actor); }
                label { "Action contains " input type="text" name="action" value=(q.action) placeholder="delivery.retry"; }
                label { "Target contains " input type="text" name="target" value=(q.target) placeholder="hss"; }
                label { "Since " input type="datetime-local" name="since" value=(q.since); }
                label { "until " input type="datetime-local" name="until" value=(q.until); }
                button type="submit" { "Filter" }
                span.hint { " Times are UTC." }
            }
            table #audit {
                thead { tr { th { "When" } th { "Actor" } th { "Action" } th { "Target" } th { "Before" } th { "After" } } }
                tbody {
                    @for r in &shown {
                        tr {
                            td { (time(r.at)) }
                            td { (r.actor) }
                            td { (r.action) }
                            td { code { (r.target) } }
                            td { code.small { (r.before.as_ref().map_or(String::new(), |v| v.to_string())) } }
                            td { code.small { (r.after.as_ref().map_or(String::new(), |v| v.to_string())) } }
                        }
                    }
                    @if shown.is_empty() { tr { td colspan="6" { "No record matches." } } }
                }
            }
            @if more {
                @if let Some(last) = shown.last() {
                    p { a href=(q.link(last.id)) { "Older records" } }
                }
            }
        },
    ))
}

#[derive(Deserialize)]
pub struct FindQuery {
    #[serde(default)]
    q: String,
}

/// The search box: an event id if one is stored, else a key.
pub async fn find(
    _session: Session,
    State(state): State<UiState>,
    Query(f): Query<FindQuery>,
) -> Result<Redirect, Refused> {
    let q = f.q.trim();
    if q.is_empty() {
        return Ok(Redirect::to("/ui/"));
    }
    crate::api::extract::stored_text(
        "q",
        q,
        crate::queue::event::MAX_KEY_LEN.max(crate::queue::event::MAX_ID_LEN),
    )?;
    // An event reduced to its id has a page too: it says what became of it.
    let catalog = state.app.store.catalog();
    if catalog.event(q).await?.is_some() || catalog.reduced_to_id(q).await? {
        return Ok(Redirect::to(&view::event_href(q)));
    }
    Ok(Redirect::to(&view::key_href(q)))
}

#[derive(Deserialize)]
pub struct ByQuery {
    #[serde(default)]
    id: String,
    #[serde(default)]
    key: String,
}

/// `/ui/event?id=…`: the event page for an id a path cannot carry.
pub async fn event_by_query(
    session: Session,
    state: State<UiState>,
    Query(q): Query<ByQuery>,
) -> PageResult {
    event(session, state, axum::extract::Path(q.id)).await
}

/// `/ui/key?key=…`: the key page for a key a path cannot carry.
pub async fn key_by_query(
    session: Session,
    state: State<UiState>,
    Query(q): Query<ByQuery>,
) -> PageResult {
    key(session, state, axum::extract::Path(q.key)).await
}

/// A console path that does not exist.
pub async fn not_found(_session: Session) -> Response {
    view::refusal(
        StatusCode::NOT_FOUND,
        "There is no such page in the console.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_per_second_over_the_time_that_passed() {
        let m = |minute, delivered, failed| MinuteCount {
            minute,
            delivered,
            failed,
        };
        let counts = vec![m(94, 600, 60), m(98, 300, 0), m(100, 90, 90)];
        // 30 s into minute 100: minutes 96 to 100 are 4.5 minutes.
        let now = 100 * 60_000 + 30_000;
        assert_eq!(rate(Some(&counts), now, 5, |m| m.delivered), 390.0 / 270.0);
        assert_eq!(rate(Some(&counts), now, 10, |m| m.failed), 150.0 / 570.0);
        assert_eq!(rate(None, now, 5, |m| m.failed), 0.0);
    }
}
