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
//! Every node runs [`run`]. A node takes a replay's next page when it is
//! due (`Catalog::take_replay`), so one node makes it and the replay's
//! `rate` holds however many nodes there are; a page copies at most a
//! second's worth at that rate, and the next is due when its copies have
//! taken their share. A page is idempotent (a copy's id is fixed, so a page
//! made twice, after a crash, stores each copy once), and the cursor moves
//! only from where the page started (`Catalog::advance_replay`). Cancelling
//! stops the copies and ends those waiting (`Catalog::cancel_replay`; the
//! API also skips the dead ones, so none holds a key). A replay starts
//! `REPLAY_GRACE_MS` after it is asked for, once every ingest under way
//! then has committed, and goes no further than the newest event stored
//! then; events purged by retention before it reaches them are not
//! replayed.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use tokio::sync::watch;

use crate::fleet::Fleet;
use crate::queue::event::{NewEvent, MAX_ID_LEN, REPLAY_MARK};
use crate::queue::lanes::{Origin, Routed};
use crate::queue::route::{coalesce_of, expiry_of, Route, RoutePattern};
use crate::queue::{now_ms, Millis};
use crate::store::{IngestOutcome, Replay, Store, StoreError, StoreResult, StoredEvent};

/// Stored events examined per page, at most.
pub const PAGE: usize = 500;
/// Stored events examined per second, at most, when a page copies few: a
/// replay of one hour in thirty days reads through the rest this fast.
const EXAMINED_PER_SECOND: f64 = 50_000.0;
/// How long a node holds a replay's page while it makes it.
const HOLD_MS: i64 = 30_000;
/// How often a node looks for replays that are due.
const IDLE: Duration = Duration::from_millis(500);

/// A copy's id: `<original id>~replay-<replay id>`, and when the original
/// id is long, its first characters and a digest of the rest, so that the
/// copy's id stays within what the API looks up (and is always the same).
fn copy_id(original: &str, replay: i64) -> String {
    let suffix = format!("{REPLAY_MARK}{replay}");
    if original.chars().count() + suffix.len() <= MAX_ID_LEN {
        return format!("{original}{suffix}");
    }
    let digest = Sha256::digest(original.as_bytes());
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let keep = MAX_ID_LEN - suffix.len() - hash.len() - 1;
    let head: String = original.chars().take(keep).collect();
    format!("{head}~{hash}{suffix}")
}

/// A replay's copy of `event` (`seq` in the store), for its connector with
/// `routes`.
fn copy_of(replay: &Replay, routes: &[Route], event: &StoredEvent, digest: &[u8]) -> Routed {
    let mut d = [0u8; 32];
    if digest.len() == 32 {
        d.copy_from_slice(digest);
    }
    let copy = NewEvent {
        id: copy_id(&event.id, replay.id),
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
        seq: event.seq,
    });
    r
}

/// Whether `replay` takes `event`: accepted in its range, of its types (the
/// connector's routes when it names none), with its key.
fn selects(replay: &Replay, patterns: &[RoutePattern], routes: &[Route], e: &StoredEvent) -> bool {
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
/// cursor on, its next page due when this one's copies have taken their
/// share of the replay's rate. `None` when the replay is not running, or
/// another node moved the cursor first (then this page's copies were
/// stored once anyway, and ended if the replay was cancelled meanwhile).
/// A replay whose connector is no longer configured is cancelled.
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
        tracing::warn!(replay = replay.id, connector = %replay.connector,
            "replay cancelled: its connector is no longer configured");
        store
            .catalog()
            .cancel_replay(replay.id, "switchboard", now)
            .await?;
        return Ok(None);
    };
    let patterns: Vec<RoutePattern> = replay
        .types
        .iter()
        .filter_map(|t| RoutePattern::parse(t).ok())
        .collect();
    // At most a second's worth of copies at the replay's rate.
    let limit = (replay.rate.ceil() as usize).clamp(1, PAGE);
    let page = store
        .catalog()
        .replay_page(replay.cursor_seq, replay.last_seq, limit)
        .await?;
    let done = page.len() < limit;
    let to = if done {
        replay.last_seq.max(replay.cursor_seq)
    } else {
        page.last().map_or(replay.cursor_seq, |(e, _)| e.seq)
    };
    let copies: Vec<Routed> = page
        .iter()
        .filter(|(e, _)| selects(replay, &patterns, routes, e))
        .map(|(e, digest)| copy_of(replay, routes, e, digest))
        .collect();
    let replayed = copies.len() as u64;
    if !copies.is_empty() {
        if let IngestOutcome::Conflict { id, .. } = store.ingest(copies, now).await? {
            // Only a copy's own id can clash (ids with the replay mark are
            // refused at ingest): nothing of the page was stored.
            return Err(StoreError::Internal(format!(
                "replay {}: the copy id {id:?} is taken by another event",
                replay.id
            )));
        }
    }
    let examined = page.len() as u64;
    let pace =
        (replayed as f64 / replay.rate.max(0.001)).max(examined as f64 / EXAMINED_PER_SECOND);
    let due_at = now + (pace * 1000.0) as i64;
    let moved = store
        .catalog()
        .advance_replay(
            replay.id,
            replay.cursor_seq,
            to,
            examined,
            replayed,
            done,
            due_at,
            now,
        )
        .await?;
    if moved && replayed > 0 {
        fleet.registry().wake(&replay.connector);
    }
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

/// Works on every running replay whose next page is due, taking each page
/// for this node first (one node makes a page, and a replay's rate holds
/// however many nodes there are), until `stop`.
pub async fn run(store: Arc<dyn Store>, fleet: Fleet, mut stop: watch::Receiver<bool>) {
    loop {
        let mut busy = false;
        match store.catalog().due_replays(now_ms(), 100).await {
            Ok(due) => {
                for replay in &due {
                    let now = now_ms();
                    match store.catalog().take_replay(replay.id, now, HOLD_MS).await {
                        Ok(true) => {}
                        Ok(false) => continue,
                        Err(e) => {
                            tracing::warn!(replay = replay.id, error = %e, "cannot take a replay's page; will try again");
                            continue;
                        }
                    }
                    match step(store.as_ref(), &fleet, replay, now).await {
                        Ok(Some(s)) => {
                            busy = true;
                            if s.done {
                                tracing::info!(replay = replay.id, connector = %replay.connector, "replay done");
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(replay = replay.id, error = %e, "replay page failed; will try again");
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the replays due; will try again"),
        }
        let pause = if busy {
            Duration::from_millis(10)
        } else {
            IDLE
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copys_id_names_its_original_and_replay_and_stays_within_the_limit() {
        assert_eq!(copy_id("evt-1", 7), "evt-1~replay-7");
        let long = "x".repeat(MAX_ID_LEN);
        let a = copy_id(&long, 7);
        assert!(a.chars().count() <= MAX_ID_LEN, "{a}");
        assert!(a.ends_with("~replay-7"));
        // The same every time; another long id with the same start differs.
        assert_eq!(a, copy_id(&long, 7));
        let other = format!("{}y", "x".repeat(MAX_ID_LEN - 1));
        assert_ne!(a, copy_id(&other, 7));
    }
}
