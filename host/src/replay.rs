//! Replays (SPEC §4.2): stored events delivered again to one connector — to
//! a destination restored from a backup, or a new one to be seeded
//! (backfill: a replay without type patterns takes what the connector's
//! routes take).
//!
//! A replay walks the stored events in accept order, a page at a time (never
//! the whole history in memory), from the oldest to the newest stored when
//! it was asked for. Each event it selects (accepted in its time range, of
//! its types, with its key) is copied into a new event — id
//! `<original id>~replay-<replay id>`, marked with the replay and the
//! original — routed to that connector alone, and accepted through the
//! store as any event is: a new delivery that joins its lanes behind what
//! is queued, in original accept order, under the connector's breaker,
//! limits and retries. Where the connector's route declares a type
//! full-state, the copies coalesce: only the last state per key is
//! delivered, and a copy of an old state never supersedes a newer one
//! waiting (`queue::lanes::supersessions`).
//!
//! Every node runs [`run`]; a page is idempotent (a copy's id is fixed, so
//! a page made twice, by a crash or by two nodes, stores each copy once),
//! and the cursor moves only from where the page started
//! (`Catalog::advance_replay`). Copies are made at the replay's `rate` at
//! most, so a long replay leaves room for live traffic; cancelling stops
//! the copies and ends those not started (`Catalog::cancel_replay`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::fleet::Fleet;
use crate::queue::event::NewEvent;
use crate::queue::lanes::{Origin, Routed};
use crate::queue::route::{coalesce_of, expiry_of, Route, RoutePattern};
use crate::queue::{now_ms, Millis};
use crate::store::{Replay, Store, StoreResult};

/// Stored events examined per page.
pub const PAGE: usize = 500;
/// How often a node looks for running replays when it has none.
const IDLE: Duration = Duration::from_secs(1);

/// A replay's copy of `event` (`seq` in the store), for `connector` with
/// `routes`.
fn copy_of(
    replay: &Replay,
    routes: &[Route],
    seq: i64,
    event: &crate::store::StoredEvent,
    digest: &[u8],
) -> Routed {
    let mut d = [0u8; 32];
    if digest.len() == 32 {
        d.copy_from_slice(digest);
    }
    let copy = NewEvent {
        id: format!("{}~replay-{}", event.id, replay.id),
        event_type: event.event_type.clone(),
        keys: event.keys.clone(),
        payload: event.payload.clone(),
        digest: d,
    };
    let mut r = Routed::new(copy, vec![replay.connector.clone()]);
    // The route's expiry counts from the copy's acceptance.
    if let Some(Some(ms)) = expiry_of(routes, &event.event_type) {
        r.expire_after.insert(replay.connector.clone(), ms);
    }
    if let Some(tag) = coalesce_of(routes, &event.event_type, &event.keys) {
        r.coalesce.insert(replay.connector.clone(), tag);
    }
    r.origin = Some(Origin {
        replay: replay.id,
        seq,
    });
    r
}

/// Whether `replay` takes `event`: accepted in its range, of its types (the
/// connector's routes when it names none), with its key.
fn selects(
    replay: &Replay,
    patterns: &[RoutePattern],
    routes: &[Route],
    e: &crate::store::StoredEvent,
) -> bool {
    let in_range = e.accepted_at >= replay.since && e.accepted_at < replay.until;
    let typed = if patterns.is_empty() {
        expiry_of(routes, &e.event_type).is_some()
    } else {
        patterns.iter().any(|p| p.matches(&e.event_type))
    };
    let keyed = replay.key.as_ref().is_none_or(|k| e.keys.contains(k));
    in_range && typed && keyed
}

/// What one step of a replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub examined: u64,
    pub replayed: u64,
    pub done: bool,
}

/// Copies one page of `replay`'s events, accepted at `now`, and moves its
/// cursor on. `None` when its connector is not configured (the replay waits
/// for it) or another node took this page first.
pub async fn step(
    store: &dyn Store,
    fleet: &Fleet,
    replay: &Replay,
    now: Millis,
) -> StoreResult<Option<Step>> {
    if replay.state != "running" {
        return Ok(None);
    }
    let table = fleet.routes();
    let Some(routes) = table.routes_of(&replay.connector) else {
        return Ok(None);
    };
    let patterns: Vec<RoutePattern> = replay
        .types
        .iter()
        .filter_map(|t| RoutePattern::parse(t).ok())
        .collect();
    let page = store
        .catalog()
        .replay_page(replay.cursor_seq, replay.last_seq, PAGE)
        .await?;
    let done = page.len() < PAGE;
    let to = if done {
        replay.last_seq.max(replay.cursor_seq)
    } else {
        page.last().map_or(replay.cursor_seq, |(e, _)| e.seq)
    };
    let copies: Vec<Routed> = page
        .iter()
        .filter(|(e, _)| selects(replay, &patterns, routes, e))
        .map(|(e, digest)| copy_of(replay, routes, e.seq, e, digest))
        .collect();
    let replayed = copies.len() as u64;
    if !copies.is_empty() {
        store.ingest(copies, now).await?;
        fleet.registry().wake(&replay.connector);
    }
    let examined = page.len() as u64;
    let moved = store
        .catalog()
        .advance_replay(
            replay.id,
            replay.cursor_seq,
            to,
            examined,
            replayed,
            done,
            now,
        )
        .await?;
    if !moved && replayed > 0 {
        // Cancelled while this page was made: its copies end as the
        // others did.
        store.catalog().end_cancelled_copies(replay.id, now).await?;
    }
    Ok(moved.then_some(Step {
        examined,
        replayed,
        done,
    }))
}

/// Works on every running replay, a page at a time, each at its rate,
/// until `stop`.
pub async fn run(store: Arc<dyn Store>, fleet: Fleet, mut stop: watch::Receiver<bool>) {
    // When each replay may make its next copies: a page's copies at the
    // replay's rate take this long.
    let mut next_at: HashMap<i64, Instant> = HashMap::new();
    loop {
        let running = match store.catalog().replays(true, 100).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the running replays; will try again");
                Vec::new()
            }
        };
        next_at.retain(|id, _| running.iter().any(|r| r.id == *id));
        let mut pause = IDLE;
        for replay in &running {
            let now = Instant::now();
            if let Some(&at) = next_at.get(&replay.id) {
                if at > now {
                    pause = pause.min(at - now);
                    continue;
                }
            }
            match step(store.as_ref(), &fleet, replay, now_ms()).await {
                Ok(Some(s)) => {
                    if s.done {
                        tracing::info!(replay = replay.id, connector = %replay.connector, "replay done");
                    }
                    let took = Duration::from_secs_f64(s.replayed as f64 / replay.rate.max(0.001));
                    next_at.insert(replay.id, now + took);
                    pause = pause.min(took);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(replay = replay.id, error = %e, "replay page failed; will try again");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
