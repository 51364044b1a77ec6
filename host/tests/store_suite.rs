//! The store contract, exercised through the `Store` trait so every backend
//! runs the same cases.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ev, TestStore};
use switchboard::queue::{DeliveryState, OnDead};
use switchboard::store::{
    Claimed, Completion, CompletionKind, IngestCounts, IngestOutcome, LimitOverrides, Offer,
    OperatorAction, Purge, Purged, QueueStats, Retention, Served, Store,
};

const LEASE: i64 = 30_000;

fn accepted(accepted: u64, duplicates: u64, unrouted: u64) -> IngestOutcome {
    IngestOutcome::Accepted(IngestCounts {
        accepted,
        duplicates,
        unrouted,
        ..IngestCounts::default()
    })
}

async fn ids(s: &dyn Store, c: &str, n: usize, now: i64) -> Vec<String> {
    s.claim(c, n, now, LEASE)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.event.id)
        .collect()
}

async fn finish(s: &dyn Store, c: &str, now: i64, kind: CompletionKind) -> Vec<String> {
    let claimed = s.claim(c, 100, now, LEASE).await.unwrap();
    let items = claimed
        .iter()
        .map(|d| Completion::of(d, kind.clone()))
        .collect();
    assert!(s
        .complete(items, now)
        .await
        .unwrap()
        .into_iter()
        .all(|ok| ok));
    claimed.into_iter().map(|d| d.event.id).collect()
}

async fn ingest_is_idempotent_and_conflicts_store_nothing(t: TestStore) {
    let s = &*t.store;
    let out = s
        .ingest(vec![ev("e1", "a", &[], &["c"]), ev("e2", "a", &[], &[])], 1)
        .await;
    assert_eq!(out.unwrap(), accepted(2, 0, 1));
    // Same id and body again: a duplicate, nothing new.
    assert_eq!(
        s.ingest(vec![ev("e1", "a", &[], &["c"])], 2).await.unwrap(),
        accepted(0, 1, 0)
    );
    // A batch whose second event reuses e1 with another body stores nothing.
    let out = s
        .ingest(
            vec![ev("e3", "a", &[], &["c"]), ev("e1", "b", &[], &["c"])],
            3,
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        IngestOutcome::Conflict {
            index: 1,
            id: "e1".into()
        }
    );
    assert!(s.catalog().event("e3").await.unwrap().is_none());
    // The same id twice in one batch with the same body is one event.
    let out = s
        .ingest(
            vec![ev("e4", "a", &[], &["c"]), ev("e4", "a", &[], &["c"])],
            4,
        )
        .await;
    assert_eq!(out.unwrap(), accepted(1, 1, 0));
    assert_eq!(ids(s, "c", 10, 10).await, vec!["e1", "e4"]);
}

async fn a_lane_runs_one_delivery_at_a_time_in_accept_order(t: TestStore) {
    let s = &*t.store;
    let batch = vec![
        ev(
            "release-A1",
            "number.release",
            &["msisdn:1", "customer:A1"],
            &["hss"],
        ),
        ev(
            "assign-A2",
            "number.assign",
            &["msisdn:1", "customer:A2"],
            &["hss"],
        ),
        ev("other", "number.assign", &["msisdn:2"], &["hss"]),
    ];
    s.ingest(batch, 1).await.unwrap();
    assert_eq!(ids(s, "hss", 10, 1).await, vec!["release-A1", "other"]);
    assert!(
        ids(s, "hss", 10, 1).await.is_empty(),
        "assign must wait for release"
    );
    let view = s.catalog().event("assign-A2").await.unwrap().unwrap();
    assert_eq!(view.deliveries[0].state, DeliveryState::Blocked);
}

async fn a_delivery_with_several_keys_waits_for_every_lane(t: TestStore) {
    let s = &*t.store;
    s.ingest(
        vec![ev("a", "t", &["k1"], &["c"]), ev("b", "t", &["k2"], &["c"])],
        1,
    )
    .await
    .unwrap();
    s.ingest(vec![ev("ab", "t", &["k1", "k2"], &["c"])], 2)
        .await
        .unwrap();
    let first = s.claim("c", 10, 2, LEASE).await.unwrap();
    assert_eq!(first.len(), 2);
    let a = first.iter().find(|d| d.event.id == "a").unwrap();
    let b = first.iter().find(|d| d.event.id == "b").unwrap();
    s.complete(vec![Completion::of(a, CompletionKind::Delivered)], 3)
        .await
        .unwrap();
    assert!(ids(s, "c", 10, 3).await.is_empty(), "still behind b on k2");
    s.complete(vec![Completion::of(b, CompletionKind::Delivered)], 4)
        .await
        .unwrap();
    assert_eq!(ids(s, "c", 10, 4).await, vec!["ab"]);
}

/// The dispatcher claims after an outcome only when the outcome says it
/// made a delivery of its connector ready: an outcome that released a lane
/// onto a delivery must say so, or that delivery waits for the poll.
async fn an_outcome_names_the_connectors_whose_deliveries_it_made_ready(t: TestStore) {
    let s = &*t.store;
    let batch = vec![
        ev("a", "t", &["k1"], &["c"]),
        ev("b", "t", &["k2"], &["c"]),
        ev("x", "t", &[], &["c"]),
        ev("p", "t", &["k1"], &["d"]),
        ev("q", "t", &["k1"], &["d"]),
    ];
    s.ingest(batch, 1).await.unwrap();
    s.ingest(vec![ev("ab", "t", &["k1", "k2"], &["c"])], 2)
        .await
        .unwrap();
    let c = s.claim("c", 10, 2, LEASE).await.unwrap();
    let d = s.claim("d", 10, 2, LEASE).await.unwrap();
    let of = |list: &[switchboard::store::Claimed], id: &str| {
        let d = list.iter().find(|d| d.event.id == id).unwrap();
        Completion::of(d, CompletionKind::Delivered)
    };
    let none: Vec<String> = Vec::new();
    // Nothing behind it.
    let out = s.settle(vec![of(&c, "x")], 3).await.unwrap();
    assert_eq!((out.applied, out.readied), (vec![true], none.clone()));
    // `ab` is still behind `b` on k2.
    let out = s.settle(vec![of(&c, "a")], 4).await.unwrap();
    assert_eq!(
        (out.applied.clone(), out.readied.clone()),
        (vec![true], none.clone())
    );
    assert!(!out.readied("c"));
    // A retry keeps its lane: nothing moves up.
    let retry = CompletionKind::Retry {
        at: 1_000,
        error: "503".into(),
    };
    let b = c.iter().find(|d| d.event.id == "b").unwrap();
    let out = s.settle(vec![Completion::of(b, retry)], 5).await.unwrap();
    assert_eq!(out.readied, none);
    let b = s.claim("c", 10, 1_000, LEASE).await.unwrap();
    assert_eq!(b.len(), 1);
    // `b` done: `ab` heads both its lanes now.
    let out = s.settle(vec![of(&b, "b")], 1_001).await.unwrap();
    assert_eq!(out.readied, vec!["c".to_string()]);
    assert!(out.readied("c") && !out.readied("d"));
    // The other connector's lane of k1 moves on to `q`, in one call with a
    // stale outcome, which applies nothing and releases nothing.
    let stale = of(&c, "x");
    let out = s.settle(vec![of(&d, "p"), stale], 1_002).await.unwrap();
    assert_eq!(out.applied, vec![true, false]);
    assert_eq!(out.readied, vec!["d".to_string()]);
    assert_eq!(ids(s, "c", 10, 1_002).await, vec!["ab"]);
    assert_eq!(ids(s, "d", 10, 1_002).await, vec!["q"]);
}

async fn connectors_have_independent_lanes(t: TestStore) {
    let s = &*t.store;
    s.ingest(
        vec![
            ev("1", "t", &["k"], &["x", "y"]),
            ev("2", "t", &["k"], &["x", "y"]),
        ],
        1,
    )
    .await
    .unwrap();
    assert_eq!(
        finish(s, "x", 2, CompletionKind::Delivered).await,
        vec!["1"]
    );
    assert_eq!(
        finish(s, "x", 3, CompletionKind::Delivered).await,
        vec!["2"]
    );
    // y has not moved: its own head is still 1.
    assert_eq!(ids(s, "y", 10, 4).await, vec!["1"]);
}

async fn retry_waits_for_its_time_and_keeps_the_lane(t: TestStore) {
    let s = &*t.store;
    s.ingest(
        vec![ev("1", "t", &["k"], &["c"]), ev("2", "t", &["k"], &["c"])],
        0,
    )
    .await
    .unwrap();
    let retry = CompletionKind::Retry {
        at: 5_000,
        error: "503".into(),
    };
    assert_eq!(finish(s, "c", 1, retry).await, vec!["1"]);
    assert!(ids(s, "c", 10, 4_999).await.is_empty());
    assert_eq!(s.catalog().next_due("c", 2).await.unwrap(), Some(5_000));
    let d = s.claim("c", 10, 5_000, LEASE).await.unwrap();
    assert_eq!((d[0].event.id.as_str(), d[0].attempt), ("1", 2));
    let view = s.catalog().event("1").await.unwrap().unwrap();
    assert_eq!(view.deliveries[0].last_error.as_deref(), Some("503"));
}

/// A connector's loop that claimed nothing sleeps until `next_due`: a
/// delivery no claim would take (expired, or its connector paused) must not
/// count, or the loop would claim nothing again every millisecond.
async fn the_next_due_time_leaves_out_what_no_claim_would_take(t: TestStore) {
    let s = &*t.store;
    let mut soon = ev("soon", "t", &[], &["c"]);
    soon.expire_after.insert("c".into(), 100);
    s.ingest(vec![soon], 0).await.unwrap();
    assert_eq!(s.catalog().next_due("c", 50).await.unwrap(), Some(0));
    assert_eq!(s.catalog().next_due("c", 100).await.unwrap(), None);
    s.ingest(vec![ev("later", "t", &[], &["c"])], 200)
        .await
        .unwrap();
    assert_eq!(s.catalog().next_due("c", 200).await.unwrap(), Some(200));
    let catalog = s.catalog();
    assert!(catalog.set_paused("c", true, "ops", 300).await.unwrap());
    assert_eq!(catalog.next_due("c", 300).await.unwrap(), None);
    assert!(catalog.set_paused("c", false, "ops", 400).await.unwrap());
    assert_eq!(catalog.next_due("c", 400).await.unwrap(), Some(200));
}

/// A store may answer when the next delivery is due from what the last
/// claim that got fewer than it asked for found (both stores do); either way
/// the answer is the one a read would give.
async fn a_claim_that_gets_fewer_than_asked_says_when_the_next_is_due(t: TestStore) {
    let s = &*t.store;
    s.ingest(
        vec![ev("a", "t", &[], &["c"]), ev("b", "t", &[], &["c"])],
        0,
    )
    .await
    .unwrap();
    let a = s.claim("c", 1, 0, LEASE).await.unwrap().remove(0);
    assert_eq!(s.next_due("c", 0).await.unwrap(), Some(0), "b waits");
    let retry = CompletionKind::Retry {
        at: 5_000,
        error: "busy".into(),
    };
    let done = s.complete(vec![Completion::of(&a, retry)], 10);
    assert_eq!(done.await.unwrap(), vec![true]);
    let b = s.claim("c", 4, 20, LEASE).await.unwrap();
    assert_eq!(b.len(), 1, "b only: a is not due");
    assert_eq!(s.next_due("c", 20).await.unwrap(), Some(5_000));
    assert_eq!(
        s.next_due("c", 20).await.unwrap(),
        Some(5_000),
        "read again"
    );
    let done = s.complete(vec![Completion::of(&b[0], CompletionKind::Delivered)], 30);
    assert_eq!(done.await.unwrap(), vec![true]);
    assert!(s.claim("c", 4, 40, LEASE).await.unwrap().is_empty());
    assert!(s.catalog().set_paused("c", true, "ops", 50).await.unwrap());
    assert!(s.claim("c", 4, 60, LEASE).await.unwrap().is_empty());
    assert_eq!(s.next_due("c", 60).await.unwrap(), None, "paused");
}

/// A claim's finding answers only the look that follows it: a loop that
/// sleeps for another reason (its probe, its rate) drops it, and its next
/// look reads what is there then.
async fn a_dropped_finding_is_read_afresh(t: TestStore) {
    let s = &*t.store;
    s.ingest(vec![ev("a", "t", &[], &["c"])], 0).await.unwrap();
    assert_eq!(s.claim("c", 4, 0, LEASE).await.unwrap().len(), 1);
    s.ingest(vec![ev("b", "t", &[], &["c"])], 10).await.unwrap();
    s.forget_due("c");
    assert_eq!(s.next_due("c", 20).await.unwrap(), Some(10), "b, read");
    assert_eq!(s.claim("c", 4, 30, LEASE).await.unwrap().len(), 1);
    assert_eq!(
        s.next_due("c", 30).await.unwrap(),
        None,
        "the claim's own finding"
    );
}

fn counts_of(outcome: IngestOutcome) -> IngestCounts {
    match outcome {
        IngestOutcome::Accepted(counts) => counts,
        other => panic!("not accepted: {other:?}"),
    }
}

fn served_ids(served: &Served) -> Vec<&str> {
    served.claimed.iter().map(|d| d.event.id.as_str()).collect()
}

/// The next batch claimed for an offer: sent right after its transaction's
/// answers.
async fn next_batch(
    served: &mut tokio::sync::mpsc::UnboundedReceiver<Served>,
    what: &str,
) -> Served {
    let wait = tokio::time::timeout(std::time::Duration::from_secs(5), served.recv());
    wait.await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("{what}"))
}

/// A loop's open offer is claimed for inside the transaction that makes
/// one of its deliveries ready and its batch follows that transaction's
/// answer; the loop needs no wake for it. Every store does so for an
/// ingest and an outcome that moves a lane on; SQLite's writer also for a
/// rescue, which on PostgreSQL wakes the loops to claim. (A store call
/// answered after another one's has sent that one's batches: absence is
/// checked after such a call.) A claim that fills the room closes the
/// offer; a closed offer, or one whose loop is gone, gets nothing and its
/// loop is woken as before.
async fn an_open_offer_is_claimed_for_in_the_transaction_that_readies_a_delivery(t: TestStore) {
    let s = &*t.store;
    let (offer, mut served) = Offer::new("c");
    assert!(s.offer(offer.clone()), "every store takes offers");
    let rescues_serve = t.url.starts_with("sqlite");
    assert!(offer.open(2, LEASE, 0));
    let both = vec![ev("1", "t", &["k"], &["c"]), ev("2", "t", &["k"], &["c"])];
    let counts = counts_of(s.ingest(both, 0).await.unwrap());
    let delivered = |d: &Claimed| Completion::of(d, CompletionKind::Delivered);
    assert!(
        !counts.needs_wake("c"),
        "claimed in the ingest's transaction"
    );
    let batch = next_batch(&mut served, "1 is claimed with its ingest").await;
    assert_eq!((served_ids(&batch), batch.exhausted), (vec!["1"], false));
    assert_eq!(
        (
            batch.claimed[0].attempt,
            batch.claimed[0].event.keys.clone()
        ),
        (1, vec!["k".to_string()])
    );
    assert_eq!(offer.in_transit(), 1, "1 holds a slot until received");
    offer.received(1);
    assert!(
        ids(s, "c", 10, 0).await.is_empty(),
        "1 is in flight, 2 waits behind it"
    );
    let settled = s
        .settle(vec![delivered(&batch.claimed[0])], 1)
        .await
        .unwrap();
    assert_eq!(settled.applied, vec![true], "leased as a claim is");
    // 1's outcome moves the lane on: 2 is claimed with it, filling the room.
    assert!(!settled.readied("c"), "no wake: 2 went to the offer");
    let batch = next_batch(&mut served, "2 is claimed with 1's outcome").await;
    assert_eq!((served_ids(&batch), batch.exhausted), (vec!["2"], true));
    assert_eq!(batch.claimed[0].attempt, 1);
    assert!(!offer.is_open(), "a filled room closes the offer");
    offer.received(1);
    let done = s
        .complete(vec![delivered(&batch.claimed[0])], 2)
        .await
        .unwrap();
    assert_eq!(done, vec![true], "leased as a claim is");
    // Closed: the loop claims itself.
    let counts = counts_of(s.ingest(vec![ev("3", "t", &[], &["c"])], 3).await.unwrap());
    assert!(counts.needs_wake("c"));
    let three = s.claim("c", 10, 3, LEASE).await.unwrap();
    assert_eq!(three.len(), 1);
    assert!(served.try_recv().is_err(), "nothing for a closed offer");
    // Reopened: a lease that runs out readies 3 again, and SQLite's rescue
    // claims it.
    assert!(offer.open(1, LEASE, 0));
    assert_eq!(s.rescue_expired(3 + LEASE).await.unwrap(), 1);
    if rescues_serve {
        let batch = next_batch(&mut served, "3 is claimed by its rescue").await;
        assert_eq!(
            (served_ids(&batch), batch.claimed[0].attempt),
            (vec!["3"], 2)
        );
        offer.received(1);
    } else {
        assert!(served.try_recv().is_err(), "a rescue wakes the loops");
        offer.close();
        let again = s.claim("c", 10, 3 + LEASE, LEASE).await.unwrap();
        assert_eq!((again[0].event.id.as_str(), again[0].attempt), ("3", 2));
    }
    // An offer whose loop is gone is dropped: its deliveries stay ready.
    assert!(offer.open(5, LEASE, 0));
    drop(served);
    let counts = counts_of(s.ingest(vec![ev("4", "t", &[], &["c"])], 4).await.unwrap());
    assert!(counts.needs_wake("c"));
    assert_eq!(ids(s, "c", 10, 4).await, ["4"]);
}

/// An ingest that makes more ready than the offer has room for fills it,
/// oldest first, and closes it (the loop claims the rest itself); only the
/// offer's own connector is claimed for, and a paused connector's offer
/// gets nothing and its loop no wake (a claim would take nothing either).
async fn an_ingest_fills_an_offer_up_to_its_room_and_not_for_a_paused_connector(t: TestStore) {
    let s = &*t.store;
    let (offer, mut served) = Offer::new("c");
    assert!(s.offer(offer.clone()));
    assert!(offer.open(2, LEASE, 0));
    let three = ["1", "2", "3"].map(|id| ev(id, "t", &[], &["c", "d"]));
    let counts = counts_of(s.ingest(three.to_vec(), 0).await.unwrap());
    assert!(!counts.needs_wake("c"), "the full batch says to claim");
    assert!(counts.needs_wake("d"), "no offer for d");
    let batch = next_batch(&mut served, "the room is filled").await;
    assert_eq!(
        (served_ids(&batch), batch.exhausted),
        (vec!["1", "2"], true)
    );
    assert!(!offer.is_open());
    offer.received(2);
    assert_eq!(ids(s, "c", 10, 0).await, ["3"], "the rest is left ready");
    assert_eq!(ids(s, "d", 10, 0).await, ["1", "2", "3"]);
    // Paused: nothing is taken, and the loop stays asleep.
    s.catalog().set_paused("c", true, "ops", 1).await.unwrap();
    assert!(offer.open(2, LEASE, 0));
    let counts = counts_of(s.ingest(vec![ev("4", "t", &[], &["c"])], 1).await.unwrap());
    assert!(!counts.needs_wake("c"));
    s.lanes("k", &["c".to_string()]).await.unwrap();
    assert!(served.try_recv().is_err(), "nothing claimed while paused");
    assert!(offer.is_open(), "the room is given back");
    s.catalog().set_paused("c", false, "ops", 2).await.unwrap();
    offer.close();
    assert_eq!(ids(s, "c", 10, 2).await, ["4"]);
}

/// An outcome that moves a lane on hands the next delivery to an open
/// offer even when that delivery was accepted a moment after the time the
/// outcome carries (the attempt's end, read before the outcome waited to
/// share a commit): it was due when accepted, and no one else would claim
/// it, since the loop is not woken for what its offer was given.
async fn an_offer_gets_what_an_outcome_readies_though_accepted_after_its_time(t: TestStore) {
    let s = &*t.store;
    let (offer, mut served) = Offer::new("c");
    assert!(s.offer(offer.clone()));
    s.ingest(vec![ev("1", "t", &["k"], &["c"])], 0)
        .await
        .unwrap();
    let first = s.claim("c", 4, 0, LEASE).await.unwrap().remove(0);
    s.ingest(vec![ev("2", "t", &["k"], &["c"])], 100)
        .await
        .unwrap();
    assert!(offer.open(4, LEASE, 0));
    let done = Completion::of(&first, CompletionKind::Delivered);
    let settled = s.settle(vec![done], 50).await.unwrap();
    if settled.readied("c") {
        // The store says so: the loop is woken to claim 2.
        offer.close();
        assert_eq!(ids(s, "c", 4, 100).await, ["2"]);
    } else {
        let batch = next_batch(&mut served, "2 goes to the offer").await;
        assert_eq!(served_ids(&batch), ["2"]);
    }
}

/// What moves up behind a delivery that a newer full-state event
/// supersedes is ready too, though the new event's own delivery waits:
/// SQLite's open offer takes it in the ingest's transaction; PostgreSQL's
/// ingest takes only its own deliveries for an offer, so it wakes the loop
/// (else no one would claim it).
async fn an_offer_takes_what_a_superseded_delivery_leaves_ready(t: TestStore) {
    let s = &*t.store;
    let (offer, mut served) = Offer::new("c");
    assert!(s.offer(offer.clone()));
    // x holds lane L; d1 heads K but waits on L behind x; d2 waits behind d1.
    s.ingest(vec![ev("x", "t", &["L"], &["c"])], 0)
        .await
        .unwrap();
    let d1 = ev_full_state("d1", &["K", "L"], &["c"], "c", "T");
    s.ingest(vec![d1], 0).await.unwrap();
    s.ingest(vec![ev("d2", "t", &["K"], &["c"])], 0)
        .await
        .unwrap();
    assert_eq!(ids(s, "c", 10, 0).await, ["x"]);
    assert!(offer.open(4, LEASE, 0));
    // e supersedes d1, which leaves K: d2 heads it now; e waits behind x.
    let e = ev_full_state("e", &["L"], &["c"], "c", "T");
    let counts = counts_of(s.ingest(vec![e], 1).await.unwrap());
    assert_eq!(counts.superseded.get("c"), Some(&1));
    if t.url.starts_with("sqlite") {
        assert!(!counts.needs_wake("c"));
        let batch = next_batch(&mut served, "d2 is claimed with e's ingest").await;
        assert_eq!(served_ids(&batch), ["d2"]);
    } else {
        assert!(counts.needs_wake("c"), "the loop is woken for d2");
        assert!(served.try_recv().is_err());
        assert!(offer.is_open(), "the room is given back");
        offer.close();
        assert_eq!(ids(s, "c", 10, 1).await, ["d2"]);
    }
}

async fn expired_leases_are_rescued_and_late_completions_ignored(t: TestStore) {
    let s = &*t.store;
    s.ingest(
        vec![ev("1", "t", &["k"], &["c"]), ev("2", "t", &["k"], &["c"])],
        0,
    )
    .await
    .unwrap();
    let stale = s.claim("c", 10, 0, LEASE).await.unwrap().remove(0);
    // Operators see which node holds the lease, and only while it is held.
    let owner =
        |v: Option<switchboard::store::EventView>| v.unwrap().deliveries[0].lease_owner.clone();
    let held =
        owner(s.catalog().event("1").await.unwrap()).expect("an in-flight delivery names its node");
    assert!(
        held.ends_with(&format!(":{}", std::process::id())),
        "{held}"
    );
    assert_eq!(s.rescue_expired(LEASE - 1).await.unwrap(), 0);
    assert_eq!(s.rescue_expired(LEASE).await.unwrap(), 1);
    assert_eq!(
        owner(s.catalog().event("1").await.unwrap()),
        None,
        "rescued: no owner"
    );
    let fresh = s.claim("c", 10, LEASE, LEASE).await.unwrap().remove(0);
    assert_eq!((fresh.event.id.as_str(), fresh.attempt), ("1", 2));
    // The hung first attempt finally answers: its lease is gone, nothing changes.
    let late = s.complete(
        vec![Completion::of(&stale, CompletionKind::Delivered)],
        LEASE + 1,
    );
    assert_eq!(late.await.unwrap(), vec![false]);
    assert!(
        ids(s, "c", 10, LEASE + 1).await.is_empty(),
        "2 still waits behind 1"
    );
    let done = s.complete(
        vec![Completion::of(&fresh, CompletionKind::Delivered)],
        LEASE + 2,
    );
    assert_eq!(done.await.unwrap(), vec![true]);
    assert_eq!(ids(s, "c", 10, LEASE + 2).await, vec!["2"]);
}

async fn dead_letters_hold_or_release_their_keys(t: TestStore) {
    let s = &*t.store;
    s.ingest(
        vec![
            ev("h1", "t", &["held"], &["c"]),
            ev("h2", "t", &["held"], &["c"]),
            ev("r1", "t", &["rel"], &["c"]),
            ev("r2", "t", &["rel"], &["c"]),
        ],
        0,
    )
    .await
    .unwrap();
    let claimed = s.claim("c", 10, 1, LEASE).await.unwrap();
    let items = claimed
        .iter()
        .map(|d| {
            let on_dead = if d.event.id == "h1" {
                OnDead::Hold
            } else {
                OnDead::Release
            };
            Completion::of(
                d,
                CompletionKind::Dead {
                    error: "400 bad".into(),
                    on_dead,
                },
            )
        })
        .collect();
    s.complete(items, 2).await.unwrap();
    assert_eq!(
        ids(s, "c", 10, 3).await,
        vec!["r2"],
        "release frees the lane, hold does not"
    );

    // Operator retry puts h1 back at the head of its lane.
    let h1 = s.catalog().event("h1").await.unwrap().unwrap().deliveries[0].id;
    assert!(s
        .operator_action(h1, OperatorAction::Retry, "ops", 4)
        .await
        .unwrap());
    assert!(
        !s.operator_action(h1, OperatorAction::Retry, "ops", 4)
            .await
            .unwrap(),
        "only dead deliveries can be retried"
    );
    let again = s.claim("c", 10, 5, LEASE).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].event.id, "h1");
    let dead = CompletionKind::Dead {
        error: "400".into(),
        on_dead: OnDead::Hold,
    };
    s.complete(vec![Completion::of(&again[0], dead)], 6)
        .await
        .unwrap();
    // Skip is final and releases the lane.
    assert!(s
        .operator_action(h1, OperatorAction::Skip, "ops", 7)
        .await
        .unwrap());
    assert_eq!(ids(s, "c", 10, 8).await, vec!["h2"]);
    let v = s.catalog().event("h1").await.unwrap().unwrap();
    assert_eq!(v.deliveries[0].state, DeliveryState::Skipped);
}

async fn everything_acknowledged_survives_a_reopen(mut t: TestStore) {
    t.store
        .ingest(
            vec![ev("1", "t", &["k"], &["c"]), ev("2", "t", &["k"], &["c"])],
            0,
        )
        .await
        .unwrap();
    let _in_flight = t.store.claim("c", 10, 1, LEASE).await.unwrap();
    t.reopen().await;
    let s = &*t.store;
    assert_eq!(s.catalog().state_counts("c").await.unwrap().in_flight, 1);
    assert_eq!(s.rescue_expired(1 + LEASE).await.unwrap(), 1);
    assert_eq!(
        finish(s, "c", 1 + LEASE, CompletionKind::Delivered).await,
        vec!["1"]
    );
    assert_eq!(
        finish(s, "c", 2 + LEASE, CompletionKind::Delivered).await,
        vec!["2"]
    );
    // Ids keep growing after a reopen: a new event is ordered after the old.
    s.ingest(vec![ev("3", "t", &["k"], &["c"])], 3 + LEASE)
        .await
        .unwrap();
    let v3 = s.catalog().event("3").await.unwrap().unwrap();
    let v2 = s.catalog().event("2").await.unwrap().unwrap();
    assert!(v3.seq > v2.seq && v3.deliveries[0].id > v2.deliveries[0].id);
}

/// The lane entries of recent deliveries a SQLite store holds in memory are
/// rebuilt when it opens: order, a dead letter holding its lane, and an
/// operator's skip all survive a crash at each step.
async fn lanes_and_held_dead_letters_survive_reopens(mut t: TestStore) {
    t.store
        .ingest(
            vec![
                ev("a", "t", &["k1"], &["c"]),
                ev("b", "t", &["k1", "k2"], &["c"]),
                ev("c", "t", &["k2"], &["c"]),
            ],
            0,
        )
        .await
        .unwrap();
    t.reopen().await;
    let a = t.store.claim("c", 10, 1, LEASE).await.unwrap();
    assert_eq!(a.len(), 1, "only a heads its lanes");
    assert_eq!(a[0].event.id, "a");
    let dead = CompletionKind::Dead {
        error: "409 number in use".into(),
        on_dead: OnDead::Hold,
    };
    t.store
        .complete(vec![Completion::of(&a[0], dead)], 2)
        .await
        .unwrap();
    t.reopen().await;
    assert!(
        ids(&*t.store, "c", 10, 3).await.is_empty(),
        "dead a still holds k1, so b waits, and c waits for b"
    );
    let k1 = t.store.lanes("k1", &["c".into()]).await.unwrap().remove(0);
    assert_eq!(k1.head.map(|(e, _)| e).as_deref(), Some("a"));
    assert_eq!(k1.waiting, 1);
    assert!(t
        .store
        .operator_action(a[0].delivery_id, OperatorAction::Skip, "ops", 4)
        .await
        .unwrap());
    t.reopen().await;
    let s = &*t.store;
    assert_eq!(
        finish(s, "c", 5, CompletionKind::Delivered).await,
        vec!["b"]
    );
    t.reopen().await;
    let s = &*t.store;
    assert_eq!(
        finish(s, "c", 6, CompletionKind::Delivered).await,
        vec!["c"]
    );
    assert!(ids(s, "c", 10, 7).await.is_empty());
    let k2 = s.lanes("k2", &["c".into()]).await.unwrap().remove(0);
    assert_eq!((k2.head.is_none(), k2.waiting), (true, 0));
}

async fn lane_rows_are_deleted_on_release(t: TestStore) {
    let s = &*t.store;
    for i in 0..20 {
        let id = format!("e{i}");
        s.ingest(vec![ev(&id, "t", &[&format!("msisdn:{i}")], &["c"])], 0)
            .await
            .unwrap();
    }
    while !finish(s, "c", 1, CompletionKind::Delivered)
        .await
        .is_empty()
    {}
    let counts = s.catalog().state_counts("c").await.unwrap();
    assert_eq!(counts.delivered, 20);
    assert_eq!(t.count_rows("lane_entries").await, 0);
}

async fn a_paused_connector_queues_but_is_never_claimed(t: TestStore) {
    let s = &*t.store;
    assert!(s.catalog().set_paused("c", true, "ops", 0).await.unwrap());
    assert!(
        !s.catalog().set_paused("c", true, "ops", 0).await.unwrap(),
        "already paused"
    );
    s.ingest(vec![ev("1", "t", &[], &["c", "other"])], 1)
        .await
        .unwrap();
    assert!(ids(s, "c", 10, 2).await.is_empty());
    assert_eq!(
        ids(s, "other", 10, 2).await,
        vec!["1"],
        "other connectors are unaffected"
    );
    assert!(s.catalog().is_paused("c").await.unwrap());
    assert!(s.catalog().set_paused("c", false, "ops", 3).await.unwrap());
    assert_eq!(ids(s, "c", 10, 4).await, vec!["1"]);
    let audit = s.catalog().audit_log(10, None).await.unwrap();
    let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(actions, ["connector.resume", "connector.pause"]);
}

async fn concurrent_requests_share_a_commit_and_stay_all_or_nothing_each(t: TestStore) {
    t.store
        .ingest(vec![ev("taken", "a", &["k"], &["c"])], 0)
        .await
        .unwrap();
    // Many requests at once: the writer applies them as one batch.
    let mut calls = Vec::new();
    for i in 0..40 {
        let s = t.store.clone();
        calls.push(tokio::spawn(async move {
            let batch = if i == 7 {
                // Reuses "taken" with another body: this request stores nothing.
                vec![
                    ev("x7", "a", &["k"], &["c"]),
                    ev("taken", "b", &["k"], &["c"]),
                ]
            } else {
                vec![
                    ev(&format!("x{i}"), "a", &["k"], &["c"]),
                    ev(&format!("y{i}"), "a", &[], &[]),
                ]
            };
            s.ingest(batch, 1).await.unwrap()
        }));
    }
    for (i, c) in calls.into_iter().enumerate() {
        let out = c.await.unwrap();
        if i == 7 {
            assert_eq!(
                out,
                IngestOutcome::Conflict {
                    index: 1,
                    id: "taken".into()
                }
            );
        } else {
            assert_eq!(out, accepted(2, 0, 1), "request {i}");
        }
    }
    assert!(t.store.catalog().event("x7").await.unwrap().is_none());
    // Every accepted keyed delivery is in the lane, strictly one at a time.
    let mut delivered = 0;
    loop {
        let got = finish(&*t.store, "c", 2, CompletionKind::Delivered).await;
        if got.is_empty() {
            break;
        }
        assert_eq!(got.len(), 1, "one lane, one at a time");
        delivered += 1;
    }
    assert_eq!(delivered, 40, "taken + 39 accepted requests");
}

async fn limit_overrides_round_trip_and_are_audited(t: TestStore) {
    let s = &*t.store;
    assert_eq!(
        s.catalog().limit_overrides("c").await.unwrap(),
        LimitOverrides::default()
    );
    let set = LimitOverrides {
        concurrency: Some(2),
        rate: Some(5.0),
    };
    s.catalog().set_limits("c", set, "ops", 1).await.unwrap();
    assert_eq!(s.catalog().limit_overrides("c").await.unwrap(), set);
    // A pause keeps the overrides; clearing them keeps the pause.
    s.catalog().set_paused("c", true, "ops", 2).await.unwrap();
    assert_eq!(s.catalog().limit_overrides("c").await.unwrap(), set);
    s.catalog()
        .set_limits("c", LimitOverrides::default(), "ops", 3)
        .await
        .unwrap();
    assert!(s.catalog().is_paused("c").await.unwrap());
    let audit = s.catalog().audit_log(10, None).await.unwrap();
    assert_eq!(audit[0].action, "connector.limits");
    assert_eq!(audit[0].before.as_ref().unwrap()["concurrency"], 2);
}

async fn the_component_registry_keeps_versions_and_one_active(t: TestStore) {
    let s = &*t.store;
    let info = serde_json::json!({"name": "hss"});
    let v1 = s
        .catalog()
        .add_component("hss", "sha256:aa", b"one", &info, "ops", 10, Retention::ALL)
        .await
        .unwrap();
    assert_eq!((v1.version, v1.active, v1.size_bytes), (1, true, 3));
    // The same bytes as the active version: that version, nothing new (nodes
    // starting together with one configured file deploy it once).
    let again = s
        .catalog()
        .add_component(
            "hss",
            "sha256:aa",
            b"one",
            &info,
            "config",
            11,
            Retention::ALL,
        )
        .await
        .unwrap();
    assert_eq!((again.version, again.uploaded_at), (1, 10));
    let v2 = s
        .catalog()
        .add_component(
            "hss",
            "sha256:bb",
            b"two!",
            &info,
            "ops",
            12,
            Retention::ALL,
        )
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    let versions = s.catalog().component_versions("hss").await.unwrap();
    let listed: Vec<(i64, bool)> = versions.iter().map(|v| (v.version, v.active)).collect();
    assert_eq!(listed, vec![(2, true), (1, false)]);
    assert!(s
        .catalog()
        .activate_component("hss", 1, "ops", 13)
        .await
        .unwrap());
    assert!(!s
        .catalog()
        .activate_component("hss", 9, "ops", 14)
        .await
        .unwrap());
    assert_eq!(
        s.catalog()
            .component_wasm("hss", 2)
            .await
            .unwrap()
            .as_deref(),
        Some(&b"two!"[..])
    );
    let active: Vec<i64> = s
        .catalog()
        .component_versions("hss")
        .await
        .unwrap()
        .iter()
        .filter(|v| v.active)
        .map(|v| v.version)
        .collect();
    assert_eq!(active, vec![1]);
    let actions: Vec<String> = s
        .catalog()
        .audit_log(10, None)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.action)
        .collect();
    assert_eq!(
        actions,
        vec!["component.activate", "component.deploy", "component.deploy"]
    );
}

/// The stored versions of `connector`'s component, newest first.
async fn versions_of(s: &dyn Store, connector: &str) -> Vec<i64> {
    (s.catalog().component_versions(connector).await.unwrap())
        .iter()
        .map(|v| v.version)
        .collect()
}

async fn deploying_beyond_the_retention_prunes_the_oldest_versions(t: TestStore) {
    let s = &*t.store;
    let info = serde_json::json!({"name": "hss"});
    let keep3 = Retention::newest(3);
    for (n, digest) in ["sha256:01", "sha256:02", "sha256:03", "sha256:04"]
        .iter()
        .enumerate()
    {
        let v = s
            .catalog()
            .add_component("hss", digest, b"wasm", &info, "ops", 10 + n as i64, keep3)
            .await
            .unwrap();
        assert_eq!((v.version, v.active), (n as i64 + 1, true));
    }
    // Another connector's versions are its own.
    s.catalog()
        .add_component("crm", "sha256:c1", b"wasm", &info, "ops", 20, keep3)
        .await
        .unwrap();
    let kept = versions_of(s, "hss").await;
    assert_eq!(kept, vec![4, 3, 2]);
    assert_eq!(s.catalog().component_wasm("hss", 1).await.unwrap(), None);
    assert!(!s
        .catalog()
        .activate_component("hss", 1, "ops", 30)
        .await
        .unwrap());
    // Rolled back to the oldest kept, then a new deploy: still 3 kept, the
    // new one active, numbering goes on.
    assert!(s
        .catalog()
        .activate_component("hss", 2, "ops", 31)
        .await
        .unwrap());
    let v5 = s
        .catalog()
        .add_component("hss", "sha256:05", b"wasm", &info, "ops", 32, keep3)
        .await
        .unwrap();
    assert_eq!((v5.version, v5.active), (5, true));
    let kept: Vec<(i64, bool)> = (s.catalog().component_versions("hss").await.unwrap())
        .iter()
        .map(|v| (v.version, v.active))
        .collect();
    assert_eq!(kept, vec![(5, true), (4, false), (3, false)]);
    assert_eq!(
        s.catalog().component_versions("crm").await.unwrap().len(),
        1
    );
    // Each pruning is audited with the versions it deleted.
    let prunes: Vec<serde_json::Value> = (s.catalog().audit_log(50, None).await.unwrap())
        .into_iter()
        .filter(|a| a.action == "component.prune")
        .map(|a| a.before.unwrap()["versions"].clone())
        .collect();
    assert_eq!(prunes, vec![serde_json::json!([2]), serde_json::json!([1])]);

    // The configured file's version is kept whatever its age.
    let keep_file = Retention {
        keep: 2,
        except_digest: Some("sha256:03"),
    };
    for (n, digest) in ["sha256:06", "sha256:07"].iter().enumerate() {
        s.catalog()
            .add_component(
                "hss",
                digest,
                b"wasm",
                &info,
                "ops",
                40 + n as i64,
                keep_file,
            )
            .await
            .unwrap();
    }
    let kept = versions_of(s, "hss").await;
    assert_eq!(kept, vec![7, 6, 3]);
}

/// Claims the ready deliveries of "c" at `now` and settles them at `done`:
/// the event "dead" dies (holding its keys), the others are delivered.
async fn settle_all_but_dead(s: &dyn Store, now: i64, done: i64) {
    let claimed = s.claim("c", 10, now, LEASE).await.unwrap();
    let items = claimed
        .iter()
        .map(|d| {
            let kind = if d.event.id == "dead" {
                CompletionKind::Dead {
                    error: "rejected".into(),
                    on_dead: OnDead::Hold,
                }
            } else {
                CompletionKind::Delivered
            };
            Completion::of(d, kind)
        })
        .collect();
    s.complete(items, done).await.unwrap();
}

async fn finished_events_keep_only_their_id_past_the_payload_retention(t: TestStore) {
    let s = &*t.store;
    const M: i64 = 60_000;
    s.ingest(
        vec![
            ev("old", "t", &["k1"], &["c"]),
            ev("other", "t", &[], &[]),
            ev("dead", "t", &["k2"], &["c"]),
        ],
        M,
    )
    .await
    .unwrap();
    settle_all_but_dead(s, M, M + 1).await;
    s.ingest(vec![ev("new", "t", &["k3"], &["c"])], 5 * M)
        .await
        .unwrap();
    finish(s, "c", 5 * M + 1, CompletionKind::Delivered).await;

    // Past the payload retention, within the window: payload, deliveries
    // and attempts go, the id stays; the dead letter is not touched.
    let keep_ids = |compact: i64, forget: i64| Purge {
        compact_before: compact,
        forget_before: Some(forget),
    };
    let purged = s.purge_finished(keep_ids(3 * M, 0), 100).await.unwrap();
    let want = Purged {
        compacted: 2,
        deleted: 0,
        forgotten: 0,
    };
    assert_eq!(purged, want);
    for (id, whole) in [
        ("old", false),
        ("other", false),
        ("dead", true),
        ("new", true),
    ] {
        assert_eq!(
            s.catalog().event(id).await.unwrap().is_some(),
            whole,
            "{id}"
        );
    }
    assert_eq!(t.count_mismatches().await, Vec::<String>::new());
    let left = s.catalog().state_counts("c").await.unwrap();
    assert_eq!((left.delivered, left.dead), (1, 1), "{left:?}");
    assert_eq!(
        s.purge_finished(keep_ids(3 * M, 0), 100).await.unwrap(),
        Purged::default(),
        "nothing more"
    );

    // A re-post of a reduced id is still a duplicate, with another body a
    // conflict that stores nothing; beside a fresh event in one request.
    assert_eq!(
        s.ingest(
            vec![ev("old", "t", &["k1"], &["c"]), ev("fresh", "t", &[], &[])],
            6 * M
        )
        .await
        .unwrap(),
        accepted(1, 1, 1)
    );
    assert!(matches!(
        s.ingest(
            vec![ev("x1", "t", &[], &[]), ev("other", "changed", &[], &[])],
            6 * M
        )
        .await
        .unwrap(),
        IngestOutcome::Conflict { index: 1, .. }
    ));
    assert!(s.catalog().event("x1").await.unwrap().is_none());

    // Past the window the id is forgotten, and may be used again.
    let purged = s.purge_finished(keep_ids(3 * M, 2 * M), 100).await.unwrap();
    assert_eq!(purged.forgotten, 2, "{purged:?}");
    assert_eq!(
        s.ingest(vec![ev("old", "t", &["k1"], &["c"])], 7 * M)
            .await
            .unwrap(),
        accepted(1, 0, 0)
    );
    let purged = s.purge_finished(keep_ids(6 * M, 5 * M), 100).await.unwrap();
    assert_eq!((purged.compacted, purged.forgotten), (1, 0), "{purged:?}");
    // Ids are forgotten to the minute: "new", accepted in minute 5,
    // outlives a cut-off inside that minute.
    let purged = s
        .purge_finished(keep_ids(6 * M, 5 * M + M / 2), 100)
        .await
        .unwrap();
    assert_eq!(purged, Purged::default());
    assert_eq!(
        s.ingest(vec![ev("new", "t", &["k3"], &["c"])], 8 * M)
            .await
            .unwrap(),
        accepted(0, 1, 0)
    );
    // Ids go a limited number at a time.
    let purged = s.purge_finished(keep_ids(6 * M, 6 * M), 1).await.unwrap();
    assert_eq!(purged.forgotten, 1, "{purged:?}");
    let purged = s.purge_finished(keep_ids(6 * M, 6 * M), 1).await.unwrap();
    assert_eq!(purged.forgotten, 0, "{purged:?}");
    assert_eq!(
        s.ingest(vec![ev("new", "t", &["k3"], &["c"])], 9 * M)
            .await
            .unwrap(),
        accepted(1, 0, 0)
    );
    // An event finished only after the window was over goes whole.
    finish(s, "c", 9 * M, CompletionKind::Delivered).await;
    let purged = s.purge_finished(keep_ids(8 * M, 8 * M), 100).await.unwrap();
    assert_eq!((purged.compacted, purged.deleted), (0, 2), "{purged:?}");
    assert_eq!(t.count_mismatches().await, Vec::<String>::new());
}

/// The newest events reduced to their id, then a reopen: the next `seq`
/// and delivery id are past every one handed out, so a new event neither
/// takes a kept id's `seq` (which would stop every later purge) nor falls
/// below the lane watermark.
async fn a_reopen_after_the_newest_events_were_reduced_reuses_no_seq(mut t: TestStore) {
    const M: i64 = 60_000;
    let keep_ids = Purge {
        compact_before: 100 * M,
        forget_before: Some(0),
    };
    for round in 0..3 {
        let s = &*t.store;
        let (a, b) = (format!("a{round}"), format!("b{round}"));
        s.ingest(
            vec![ev(&a, "t", &["k"], &["c"]), ev(&b, "t", &["k"], &["c"])],
            M,
        )
        .await
        .unwrap();
        finish(s, "c", M, CompletionKind::Delivered).await;
        finish(s, "c", M, CompletionKind::Delivered).await;
        let purged = s.purge_finished(keep_ids, 100).await.unwrap();
        assert_eq!(purged.compacted, 2, "round {round}: {purged:?}");
        t.reopen().await;
    }
    let s = &*t.store;
    // Every id is still known, and the lane still orders a new pair.
    for round in 0..3 {
        let dup = s.ingest(vec![ev(&format!("a{round}"), "t", &["k"], &["c"])], 2 * M);
        assert_eq!(dup.await.unwrap(), accepted(0, 1, 0));
    }
    s.ingest(
        vec![ev("x", "t", &["k"], &["c"]), ev("y", "t", &["k"], &["c"])],
        2 * M,
    )
    .await
    .unwrap();
    assert_eq!(ids(s, "c", 10, 2 * M).await, vec!["x"]);
    assert_eq!(t.count_mismatches().await, Vec::<String>::new());
}

/// A reopen serves before its filter of the lane table is rebuilt (a page
/// at a time, in lane order): lanes the rebuild has not reached are looked
/// up, so an event on a lane with rows in the table still waits its turn,
/// whether it comes before or after the rebuild passes that lane.
async fn a_reopened_store_keeps_order_while_it_rebuilds_its_lane_filter(mut t: TestStore) {
    let keys: Vec<String> = (0..300).map(|i| format!("k{i:03}")).collect();
    for round in ["a", "b"] {
        let batch = keys
            .iter()
            .map(|k| ev(&format!("{round}-{k}"), "t", &[k], &["c"]))
            .collect();
        s_ingest(&*t.store, batch, 10).await;
    }
    t.reopen().await;
    let s = &*t.store;
    // At once: third events on every lane, the heads delivered.
    let batch = keys
        .iter()
        .map(|k| ev(&format!("c-{k}"), "t", &[k], &["c"]))
        .collect();
    s_ingest(s, batch, 20).await;
    let mut heads = deliver_all(s, 20).await;
    heads.sort();
    let want: Vec<String> = keys.iter().map(|k| format!("a-{k}")).collect();
    assert_eq!(heads, want, "only the heads are ready");
    // Fourth events while the rebuild may still be under way.
    let batch = keys
        .iter()
        .map(|k| ev(&format!("d-{k}"), "t", &[k], &["c"]))
        .collect();
    s_ingest(s, batch, 30).await;
    for round in ["b", "c", "d"] {
        let mut got = deliver_all(s, 40).await;
        got.sort();
        let want: Vec<String> = keys.iter().map(|k| format!("{round}-{k}")).collect();
        assert_eq!(got, want, "round {round}: one per lane, in order");
    }
    assert_eq!(t.count_mismatches().await, Vec::<String>::new());
}

/// Claims every ready delivery of "c" and delivers it; their event ids.
async fn deliver_all(s: &dyn Store, now: i64) -> Vec<String> {
    let claimed = s.claim("c", 10_000, now, LEASE).await.unwrap();
    let items = claimed
        .iter()
        .map(|d| Completion::of(d, CompletionKind::Delivered))
        .collect();
    s.complete(items, now).await.unwrap();
    claimed.into_iter().map(|d| d.event.id).collect()
}

async fn s_ingest(s: &dyn Store, batch: Vec<switchboard::store::Routed>, now: i64) {
    let n = batch.len() as u64;
    assert_eq!(s.ingest(batch, now).await.unwrap(), accepted(n, 0, 0));
}

async fn finished_events_past_the_window_are_purged_and_nothing_else(t: TestStore) {
    let s = &*t.store;
    s.ingest(
        vec![
            ev("done", "t", &["k1"], &["c"]),
            ev("dead", "t", &["k2"], &["c"]),
            ev("unrouted", "t", &[], &[]),
            ev("waiting", "t", &["k2"], &["c"]),
        ],
        100,
    )
    .await
    .unwrap();
    settle_all_but_dead(s, 100, 101).await;
    s.ingest(vec![ev("recent", "t", &["k3"], &["c"])], 500)
        .await
        .unwrap();
    finish(s, "c", 501, CompletionKind::Delivered).await;

    // Only events accepted before 200 whose deliveries are all final (or that
    // had none) go; the dead letter and the one waiting behind it stay.
    assert_eq!(
        s.purge_finished(Purge::whole(200), 100)
            .await
            .unwrap()
            .events(),
        2
    );
    for (id, kept) in [
        ("done", false),
        ("unrouted", false),
        ("dead", true),
        ("waiting", true),
        ("recent", true),
    ] {
        assert_eq!(s.catalog().event(id).await.unwrap().is_some(), kept, "{id}");
    }
    assert_eq!(
        s.purge_finished(Purge::whole(200), 100)
            .await
            .unwrap()
            .events(),
        0,
        "nothing more"
    );
    // Past the window an id may be used again.
    assert_eq!(
        s.ingest(vec![ev("done", "t", &["k1"], &["c"])], 600)
            .await
            .unwrap(),
        accepted(1, 0, 0)
    );
    // The limit is honoured: "recent" (delivered) and five unrouted events
    // are due at 800, three at a time.
    let batch = (0..5)
        .map(|i| ev(&format!("u{i}"), "t", &[], &[]))
        .collect();
    s.ingest(batch, 700).await.unwrap();
    assert_eq!(
        s.purge_finished(Purge::whole(800), 3)
            .await
            .unwrap()
            .events(),
        3
    );
    assert_eq!(
        s.purge_finished(Purge::whole(800), 3)
            .await
            .unwrap()
            .events(),
        3
    );
    assert_eq!(
        s.purge_finished(Purge::whole(800), 3)
            .await
            .unwrap()
            .events(),
        0
    );
    assert!(s.catalog().event("dead").await.unwrap().is_some());
    // The counts lost what the purge deleted.
    assert_eq!(t.count_mismatches().await, Vec::<String>::new());
    let left = s.catalog().state_counts("c").await.unwrap();
    assert_eq!((left.delivered, left.dead), (0, 1), "{left:?}");
}

async fn two_outcomes_for_one_delivery_in_one_call_apply_once_in_order(t: TestStore) {
    let s = &*t.store;
    s.ingest(
        vec![ev("1", "t", &["k"], &["c"]), ev("2", "t", &["k"], &["c"])],
        0,
    )
    .await
    .unwrap();
    let d = s.claim("c", 10, 1, LEASE).await.unwrap().remove(0);
    // An attempt that reported Delivered, then was abandoned at shutdown and
    // handed back as a retry under the same lease: only the first counts.
    let retry = CompletionKind::Retry {
        at: 5,
        error: "handed back at shutdown".into(),
    };
    let out = s
        .complete(
            vec![
                Completion::of(&d, CompletionKind::Delivered),
                Completion::of(&d, retry),
            ],
            2,
        )
        .await
        .unwrap();
    assert_eq!(out, vec![true, false]);
    let v = s.catalog().event("1").await.unwrap().unwrap();
    assert_eq!(v.deliveries[0].state, DeliveryState::Delivered);
    // The lane moved on exactly once: 2 runs, alone.
    assert_eq!(ids(s, "c", 10, 10).await, vec!["2"]);
}

/// `ev` whose delivery to each of `expiring` expires `after` ms after it is
/// accepted.
fn ev_expiring(
    id: &str,
    keys: &[&str],
    connectors: &[&str],
    expiring: &[&str],
    after: i64,
) -> switchboard::store::Routed {
    let mut r = ev(id, "t", keys, connectors);
    for c in expiring {
        r.expire_after.insert(c.to_string(), after);
    }
    r
}

/// `ev` whose route declares it full-state for `connector` under `tag`.
fn ev_full_state(
    id: &str,
    keys: &[&str],
    connectors: &[&str],
    connector: &str,
    tag: &str,
) -> switchboard::store::Routed {
    let mut r = ev(id, "forwarding.set", keys, connectors);
    r.coalesce.insert(connector.to_string(), tag.to_string());
    r
}

/// The state of `connector`'s delivery of event `id`, and what superseded it.
async fn delivery_of(s: &dyn Store, id: &str, connector: &str) -> (DeliveryState, Option<String>) {
    let view = s.catalog().event(id).await.unwrap().unwrap();
    let d = view
        .deliveries
        .into_iter()
        .find(|d| d.connector == connector)
        .unwrap();
    (d.state, d.superseded_by)
}

/// Full-state updates for a few customers posted by many concurrent
/// requests (one commit group on SQLite, several PostgreSQL workers) while
/// claims and completions run beside them: nothing claimed is ever
/// superseded, every customer's last update is delivered last, at most one
/// update per customer is pending unstarted at the end of each request, and
/// the counts agree with the rows.
async fn concurrent_full_state_updates_race_claims_and_keep_the_last(t: TestStore) {
    let store = t.store.clone();
    let customers = 4;
    let posters: Vec<_> = (0..8)
        .map(|p| {
            let s = store.clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    let c = (p + i) % customers;
                    let key = format!("customer:{c}");
                    let r = ev_full_state(&format!("u{p}-{i}"), &[&key], &["hss"], "hss", &key);
                    s.ingest(vec![r], 1).await.unwrap();
                }
            })
        })
        .collect();
    let claimer = {
        let s = store.clone();
        tokio::spawn(async move {
            let mut delivered: Vec<(String, String, i64)> = Vec::new();
            for round in 0..400 {
                let got = s.claim("hss", 3, 2 + round, LEASE).await.unwrap();
                let done = got
                    .iter()
                    .map(|d| Completion::of(d, CompletionKind::Delivered))
                    .collect::<Vec<_>>();
                for d in &got {
                    delivered.push((d.event.keys[0].clone(), d.event.id.clone(), d.event.seq));
                }
                if !done.is_empty() {
                    let applied = s.complete(done, 2 + round).await.unwrap();
                    assert!(
                        applied.iter().all(|a| *a),
                        "a claimed delivery was superseded"
                    );
                }
                tokio::task::yield_now().await;
            }
            delivered
        })
    };
    for p in posters {
        p.await.unwrap();
    }
    let mut delivered = claimer.await.unwrap();
    // Drain what is left.
    loop {
        let got = store.claim("hss", 100, 10_000, LEASE).await.unwrap();
        if got.is_empty() {
            break;
        }
        for d in &got {
            delivered.push((d.event.keys[0].clone(), d.event.id.clone(), d.event.seq));
        }
        let done = got
            .iter()
            .map(|d| Completion::of(d, CompletionKind::Delivered))
            .collect();
        store.complete(done, 10_000).await.unwrap();
    }
    let counts = store.catalog().state_counts("hss").await.unwrap();
    assert_eq!(counts.delivered as usize, delivered.len());
    assert_eq!(counts.delivered + counts.superseded, 200, "{counts:?}");
    assert!(counts.superseded > 0 && counts.delivered > 4, "{counts:?}");
    assert_eq!((counts.ready, counts.blocked, counts.in_flight), (0, 0, 0));
    // Per customer: deliveries in accept order, the last accepted one among them.
    for c in 0..customers {
        let key = format!("customer:{c}");
        let seqs: Vec<i64> = delivered
            .iter()
            .filter(|d| d.0 == key)
            .map(|d| d.2)
            .collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{key}: {seqs:?}");
        let mut newest: Option<(i64, String)> = None;
        for p in 0..8 {
            for i in 0..25 {
                if (p + i) % customers == c {
                    let id = format!("u{p}-{i}");
                    let seq = store.catalog().event(&id).await.unwrap().unwrap().seq;
                    if newest.as_ref().is_none_or(|n| seq > n.0) {
                        newest = Some((seq, id));
                    }
                }
            }
        }
        let last = delivered.iter().rfind(|d| d.0 == key).unwrap();
        assert_eq!(
            last.1,
            newest.unwrap().1,
            "{key}: the last update is delivered last"
        );
    }
    assert_eq!(t.count_mismatches().await, Vec::<String>::new());
}

async fn a_lane_view_lists_the_first_deliveries_behind_its_head(t: TestStore) {
    let s = &*t.store;
    for i in 0..15 {
        s.ingest(
            vec![ev(
                &format!("q{i}"),
                "t",
                &["k", &format!("own{i}")],
                &["c"],
            )],
            0,
        )
        .await
        .unwrap();
    }
    let events = |v: &switchboard::store::LaneView| -> Vec<String> {
        v.behind.iter().map(|(e, _)| e.clone()).collect()
    };
    let lanes = s.lanes("k", &["c".to_string()]).await.unwrap();
    assert_eq!(lanes[0].head.as_ref().unwrap().0, "q0");
    assert_eq!(lanes[0].waiting, 14);
    let want: Vec<String> = (1..=10).map(|i| format!("q{i}")).collect();
    assert_eq!(events(&lanes[0]), want);
    assert!(lanes[0]
        .behind
        .iter()
        .all(|(_, d)| d.state == DeliveryState::Blocked));
    let head = s.claim("c", 10, 1, LEASE).await.unwrap();
    assert_eq!(head.len(), 1);
    s.complete(vec![Completion::of(&head[0], CompletionKind::Delivered)], 2)
        .await
        .unwrap();
    let lanes = s.lanes("k", &["c".to_string()]).await.unwrap();
    assert_eq!(lanes[0].head.as_ref().unwrap().0, "q1");
    assert_eq!(lanes[0].waiting, 13);
    let want: Vec<String> = (2..=11).map(|i| format!("q{i}")).collect();
    assert_eq!(events(&lanes[0]), want);
    let empty = s.lanes("nothing", &["c".to_string()]).await.unwrap();
    assert!(empty[0].head.is_none() && empty[0].behind.is_empty());
}

async fn a_full_state_event_supersedes_older_unstarted_deliveries_at_their_lane_position(
    t: TestStore,
) {
    let s = &*t.store;
    let one = |r| async { s.ingest(vec![r], 0).await.unwrap() };
    // set1 and set2 on customer A1; a move (not full-state) between them on
    // the same lane; set1 also to crm, whose route does not coalesce.
    one(ev_full_state(
        "set1",
        &["customer:A1", "msisdn:1"],
        &["hss", "crm"],
        "hss",
        "A1",
    ))
    .await;
    one(ev(
        "move",
        "number.move",
        &["customer:A1", "msisdn:2"],
        &["hss"],
    ))
    .await;
    one(ev_full_state(
        "other",
        &["customer:A2"],
        &["hss"],
        "hss",
        "A2",
    ))
    .await;
    let out = one(ev_full_state(
        "set2",
        &["customer:A1", "msisdn:1"],
        &["hss"],
        "hss",
        "A1",
    ))
    .await;
    let IngestOutcome::Accepted(counts) = out else {
        panic!("{out:?}")
    };
    assert_eq!(counts.superseded.get("hss"), Some(&1), "{counts:?}");
    assert_eq!(
        delivery_of(s, "set1", "hss").await,
        (DeliveryState::Superseded, Some("set2".into()))
    );
    assert_eq!(delivery_of(s, "set1", "crm").await.0, DeliveryState::Ready);
    // The move, which set1 held back, heads its lanes now; set2 still waits
    // for it: superseding never lets a newer event jump what it follows.
    assert_eq!(ids(s, "hss", 10, 1).await, vec!["move", "other"]);
    assert_eq!(
        delivery_of(s, "set2", "hss").await.0,
        DeliveryState::Blocked
    );
    let counts = s.catalog().state_counts("hss").await.unwrap();
    assert_eq!(
        (counts.superseded, counts.blocked, counts.in_flight),
        (1, 1, 2)
    );
    // A superseded delivery is final: a purge may take its event once the
    // other deliveries end, and nothing claims it.
    assert!(ids(s, "hss", 10, 2).await.is_empty());

    // Once the superseding event is purged whole (set1 stays: its crm
    // delivery is still pending), set1's view names it by its `seq`.
    let set2 = s.catalog().event("set2").await.unwrap().unwrap().seq;
    assert_eq!(s.rescue_expired(LEASE + 2).await.unwrap(), 2);
    for (now, want) in [
        (LEASE + 3, vec!["move", "other"]),
        (LEASE + 4, vec!["set2"]),
    ] {
        assert_eq!(finish(s, "hss", now, CompletionKind::Delivered).await, want);
    }
    assert_eq!(
        delivery_of(s, "set2", "hss").await.0,
        DeliveryState::Delivered
    );
    let purged = s.purge_finished(Purge::whole(100), 100).await.unwrap();
    assert_eq!(purged.deleted, 3, "{purged:?}");
    assert!(s.catalog().event("set2").await.unwrap().is_none());
    assert_eq!(
        delivery_of(s, "set1", "hss").await,
        (DeliveryState::Superseded, Some(format!("seq {set2}")))
    );
    assert_eq!(t.count_mismatches().await, Vec::<String>::new());
}

async fn a_started_or_attempted_delivery_is_never_superseded(t: TestStore) {
    let s = &*t.store;
    let one = |r| async { s.ingest(vec![r], 0).await.unwrap() };
    one(ev_full_state("a1", &["customer:A1"], &["hss"], "hss", "A1")).await;
    one(ev_full_state("b1", &["customer:B1"], &["hss"], "hss", "B1")).await;
    let running = s.claim("hss", 2, 1, LEASE).await.unwrap();
    assert_eq!(running.len(), 2);
    // a1 is in flight: a2 does not touch it and waits behind it.
    one(ev_full_state("a2", &["customer:A1"], &["hss"], "hss", "A1")).await;
    assert_eq!(delivery_of(s, "a1", "hss").await.0, DeliveryState::InFlight);
    assert_eq!(
        delivery_of(s, "a2", "hss").await,
        (DeliveryState::Blocked, None)
    );
    // b1 failed once and waits to run again: attempted, so b2 waits too.
    let retry = CompletionKind::Retry {
        at: 5,
        error: "503".into(),
    };
    let b1 = running.iter().find(|d| d.event.id == "b1").unwrap();
    s.complete(vec![Completion::of(b1, retry)], 2)
        .await
        .unwrap();
    one(ev_full_state("b2", &["customer:B1"], &["hss"], "hss", "B1")).await;
    assert_eq!(
        delivery_of(s, "b1", "hss").await,
        (DeliveryState::Ready, None)
    );
    assert_eq!(delivery_of(s, "b2", "hss").await.0, DeliveryState::Blocked);
    // a3 supersedes a2 (never started) but still not a1.
    one(ev_full_state("a3", &["customer:A1"], &["hss"], "hss", "A1")).await;
    assert_eq!(
        delivery_of(s, "a2", "hss").await,
        (DeliveryState::Superseded, Some("a3".into()))
    );
    let a1 = running.iter().find(|d| d.event.id == "a1").unwrap();
    s.complete(vec![Completion::of(a1, CompletionKind::Delivered)], 3)
        .await
        .unwrap();
    assert_eq!(ids(s, "hss", 10, 6).await, vec!["b1", "a3"]);
}

async fn within_one_request_only_the_last_full_state_event_is_delivered(mut t: TestStore) {
    let s = &*t.store;
    let out = s
        .ingest(
            vec![
                ev_full_state("x1", &["customer:A1"], &["hss"], "hss", "A1"),
                ev_full_state("x2", &["customer:A1"], &["hss"], "hss", "A1"),
                ev("dereg", "number.release", &["customer:A1"], &["hss"]),
                ev_full_state("x3", &["customer:A1"], &["hss"], "hss", "A1"),
            ],
            0,
        )
        .await
        .unwrap();
    let IngestOutcome::Accepted(counts) = out else {
        panic!("{out:?}")
    };
    assert_eq!(counts.accepted, 4);
    assert_eq!(counts.superseded.get("hss"), Some(&2));
    // As if posted one by one: each supersedes the one before it.
    for (old, by) in [("x1", "x2"), ("x2", "x3")] {
        assert_eq!(
            delivery_of(s, old, "hss").await,
            (DeliveryState::Superseded, Some(by.into()))
        );
    }
    // The release keeps its place ahead of x3.
    let first = s.claim("hss", 10, 1, LEASE).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].event.id, "dereg");
    s.complete(
        vec![Completion::of(&first[0], CompletionKind::Delivered)],
        2,
    )
    .await
    .unwrap();
    assert_eq!(ids(s, "hss", 10, 3).await, vec!["x3"]);
    // Survives a reopen: nothing comes back to life.
    t.reopen().await;
    let s = &*t.store;
    assert_eq!(
        delivery_of(s, "x1", "hss").await.0,
        DeliveryState::Superseded
    );
    assert!(s.claim("hss", 10, 4, LEASE).await.unwrap().is_empty());
}

async fn deliveries_past_their_expiry_end_expired_and_release_their_lanes(t: TestStore) {
    let s = &*t.store;
    s.ingest(
        vec![
            ev("head", "t", &["k"], &["c"]),
            ev_expiring("stale", &["k"], &["c", "d"], &["c"], 100),
            ev("next", "t", &["k"], &["c"]),
            ev_expiring("alone", &[], &["c"], &["c"], 100),
            ev_expiring("j1", &["j"], &["c"], &["c"], 100),
            ev("j2", "t", &["j"], &["c"]),
        ],
        0,
    )
    .await
    .unwrap();
    let head = s.claim("c", 1, 10, LEASE).await.unwrap();
    assert_eq!(head[0].event.id, "head");
    assert!(s.expire_due(99, 100).await.unwrap().is_empty(), "not yet");
    // Past their expiry, ready ones are no longer claimed even before the
    // sweep ends them.
    assert!(ids(s, "c", 10, 100).await.is_empty());
    // The sweep honours its limit; the rest go in the next call.
    assert_eq!(
        s.expire_due(100, 2).await.unwrap(),
        vec![("c".to_string(), 2)]
    );
    assert_eq!(
        s.expire_due(100, 100).await.unwrap(),
        vec![("c".to_string(), 1)]
    );
    assert!(s.expire_due(100, 100).await.unwrap().is_empty());
    // j1 was the head of j: j2 runs. "stale" expired while blocked behind
    // "head": once head is done, "next" runs.
    assert_eq!(ids(s, "c", 10, 101).await, vec!["j2"]);
    assert!(ids(s, "c", 10, 101).await.is_empty(), "head is in flight");
    let applied = s
        .complete(
            vec![Completion::of(&head[0], CompletionKind::Delivered)],
            102,
        )
        .await
        .unwrap();
    assert_eq!(applied, vec![true]);
    assert_eq!(ids(s, "c", 10, 103).await, vec!["next"]);
    // The other connector's delivery of "stale" has no expiry on its route.
    assert_eq!(ids(s, "d", 10, 103).await, vec!["stale"]);
    let view = s.catalog().event("stale").await.unwrap().unwrap();
    let state_of = |c: &str| {
        view.deliveries
            .iter()
            .find(|d| d.connector == c)
            .unwrap()
            .state
    };
    assert_eq!(state_of("c"), DeliveryState::Expired);
    assert_eq!(state_of("d"), DeliveryState::InFlight);
    let counts = s.catalog().state_counts("c").await.unwrap();
    assert_eq!(counts.expired, 3);
    // Final: never claimed, never expired twice.
    assert!(s.expire_due(i64::MAX / 2, 100).await.unwrap().is_empty());
}

/// The depth figures of `/metrics` and `switchboard status` through every
/// move a delivery makes: promotion, expiry, claim, dead letter, operator
/// retry, delivery.
/// Two entries of one lane released in one call, the head and the one
/// behind it: the next delivery becomes the lane's head once, so it loses
/// one blocker, not two.
async fn a_lane_releasing_its_head_and_the_next_at_once_moves_up_once(t: TestStore) {
    let s = &*t.store;
    s.ingest(
        vec![
            ev_expiring("x1", &["k"], &["c"], &["c"], 100),
            ev_expiring("x2", &["k"], &["c"], &["c"], 100),
            ev("x3", "t", &["k", "other"], &["c"]),
            ev("o", "t", &["other"], &["c"]),
        ],
        0,
    )
    .await
    .unwrap();
    assert_eq!(s.expire_due(150, 100).await.unwrap(), vec![("c".into(), 2)]);
    assert_eq!(ids(s, "c", 10, 160).await, vec!["x3"]);
    let v = s.catalog().event("x3").await.unwrap().unwrap();
    assert_eq!(v.deliveries[0].state, DeliveryState::InFlight);
    assert!(ids(s, "c", 10, 170).await.is_empty(), "o waits behind x3");
}

/// A dead letter that holds its lane keeps an entry in the lane table. Once
/// an operator skips it, the lane holds whatever is queued behind it and
/// nothing more: an event on it then waits only for those, and a lane left
/// empty takes the next event at once (a store that remembered the lane as
/// occupied would block that event for ever).
async fn a_lane_emptied_of_its_dead_letter_takes_the_next_event_at_once(t: TestStore) {
    let s = &*t.store;
    let hold = CompletionKind::Dead {
        error: "400".into(),
        on_dead: OnDead::Hold,
    };
    // Lane "one": a dead letter, one event behind it, then nothing.
    s.ingest(vec![ev("a1", "t", &["one"], &["c"])], 0)
        .await
        .unwrap();
    assert_eq!(finish(s, "c", 1, hold.clone()).await, vec!["a1"]);
    s.ingest(vec![ev("a2", "t", &["one"], &["c"])], 2)
        .await
        .unwrap();
    assert!(ids(s, "c", 10, 3).await.is_empty(), "a2 waits behind a1");
    let a1 = s.catalog().event("a1").await.unwrap().unwrap().deliveries[0].id;
    assert!(s
        .operator_action(a1, OperatorAction::Skip, "ops", 4)
        .await
        .unwrap());
    assert_eq!(
        finish(s, "c", 5, CompletionKind::Delivered).await,
        vec!["a2"]
    );
    s.ingest(vec![ev("a3", "t", &["one"], &["c"])], 6)
        .await
        .unwrap();
    assert_eq!(ids(s, "c", 10, 7).await, vec!["a3"], "the lane is empty");

    // Lane "two": a dead letter and two events behind it, each ingested on
    // its own; skipping the dead letter leaves the second behind the first.
    s.ingest(vec![ev("b1", "t", &["two"], &["c"])], 10)
        .await
        .unwrap();
    assert_eq!(finish(s, "c", 11, hold).await, vec!["b1"]);
    for (i, id) in ["b2", "b3"].into_iter().enumerate() {
        s.ingest(vec![ev(id, "t", &["two"], &["c"])], 12 + i as i64)
            .await
            .unwrap();
    }
    let b1 = s.catalog().event("b1").await.unwrap().unwrap().deliveries[0].id;
    assert!(s
        .operator_action(b1, OperatorAction::Skip, "ops", 14)
        .await
        .unwrap());
    assert_eq!(
        finish(s, "c", 15, CompletionKind::Delivered).await,
        vec!["b2"]
    );
    s.ingest(vec![ev("b4", "t", &["two"], &["c"])], 16)
        .await
        .unwrap();
    assert_eq!(ids(s, "c", 10, 17).await, vec!["b3"], "b4 waits behind b3");
}

async fn queue_stats_follow_every_transition(t: TestStore) {
    let s = &*t.store;
    let stats = |ready, blocked, in_flight, dead, oldest_pending_at| QueueStats {
        ready,
        blocked,
        in_flight,
        dead,
        oldest_pending_at,
    };
    async fn check(t: &TestStore, want: QueueStats, when: &str) {
        assert_eq!(
            t.store.catalog().queue_stats("c").await.unwrap(),
            want,
            "{when}"
        );
        assert_eq!(
            t.pending_flag_mismatches().await,
            0,
            "{when}: pending flag disagrees with state"
        );
        assert_eq!(t.count_mismatches().await, Vec::<String>::new(), "{when}");
    }
    check(&t, stats(0, 0, 0, 0, None), "empty").await;
    s.ingest(vec![ev("a1", "t", &["k"], &["c"])], 10)
        .await
        .unwrap();
    s.ingest(
        vec![
            ev("a2", "t", &["k"], &["c"]),
            ev_expiring("x", &["j"], &["c"], &["c"], 100),
        ],
        20,
    )
    .await
    .unwrap();
    s.ingest(vec![ev("x2", "t", &["j"], &["c"])], 30)
        .await
        .unwrap();
    check(&t, stats(2, 2, 0, 0, Some(10)), "queued").await;

    assert_eq!(s.expire_due(150, 100).await.unwrap(), vec![("c".into(), 1)]);
    check(&t, stats(2, 1, 0, 0, Some(10)), "x expired, x2 promoted").await;

    let a1 = s.claim("c", 1, 160, LEASE).await.unwrap();
    assert_eq!(a1.len(), 1);
    assert_eq!(a1[0].event.id, "a1");
    check(&t, stats(1, 1, 1, 0, Some(10)), "a1 claimed").await;

    let a1_id = a1[0].delivery_id;
    let dead = Completion::of(
        &a1[0],
        CompletionKind::Dead {
            error: "rejected".into(),
            on_dead: OnDead::Hold,
        },
    );
    assert_eq!(s.complete(vec![dead], 170).await.unwrap(), vec![true]);
    check(&t, stats(1, 1, 0, 1, Some(20)), "a1 dead, holding k").await;

    assert!(s
        .operator_action(a1_id, OperatorAction::Retry, "ops", 180)
        .await
        .unwrap());
    check(&t, stats(2, 1, 0, 0, Some(10)), "a1 retried").await;

    let mut done = finish(s, "c", 190, CompletionKind::Delivered).await;
    done.sort();
    assert_eq!(done, vec!["a1", "x2"]);
    check(
        &t,
        stats(1, 0, 0, 0, Some(20)),
        "a1 and x2 delivered, a2 promoted",
    )
    .await;

    assert_eq!(
        finish(s, "c", 200, CompletionKind::Delivered).await,
        vec!["a2"]
    );
    check(&t, stats(0, 0, 0, 0, None), "all delivered").await;
}

async fn every_finished_attempt_is_logged_once_with_how_it_ended(t: TestStore) {
    let s = &*t.store;
    s.ingest(vec![ev("a", "t", &["k"], &["c"])], 10)
        .await
        .unwrap();
    // 1: retried; 2: its lease runs out; 3: its late report is refused
    // after the rescue; 4: delivered.
    let first = s.claim("c", 1, 20, LEASE).await.unwrap();
    let id = first[0].delivery_id;
    let retry = CompletionKind::Retry {
        at: 30,
        error: "upstream 503".into(),
    };
    assert_eq!(
        s.complete(vec![Completion::of(&first[0], retry)], 25)
            .await
            .unwrap(),
        vec![true]
    );
    let second = s.claim("c", 1, 40, LEASE).await.unwrap();
    assert_eq!(s.rescue_expired(40 + LEASE).await.unwrap(), 1);
    let late = Completion::of(&second[0], CompletionKind::Delivered);
    assert_eq!(
        s.complete(vec![late], 41 + LEASE).await.unwrap(),
        vec![false]
    );
    let third = s.claim("c", 1, 50 + LEASE, LEASE).await.unwrap();
    let done = Completion::of(&third[0], CompletionKind::Delivered);
    assert_eq!(
        s.complete(vec![done], 60 + LEASE).await.unwrap(),
        vec![true]
    );
    let log = s.catalog().attempts(id).await.unwrap();
    let got: Vec<(u32, i64, i64, &str, Option<&str>)> = log
        .iter()
        .map(|a| {
            (
                a.attempt,
                a.started_at,
                a.finished_at,
                a.outcome.as_str(),
                a.reason.as_deref(),
            )
        })
        .collect();
    let expired = switchboard::store::LEASE_EXPIRED_REASON;
    assert_eq!(
        got,
        vec![
            (1, 20, 25, "retry", Some("upstream 503")),
            (2, 40, 40 + LEASE, "lease_expired", Some(expired)),
            (3, 50 + LEASE, 60 + LEASE, "delivered", None),
        ]
    );
    assert!(log.iter().all(|a| a.node == s.catalog().node()), "{log:?}");
    assert_eq!(t.count_mismatches().await, Vec::<String>::new());
    // The log goes with its event.
    assert_eq!(
        s.purge_finished(Purge::whole(i64::MAX), 10)
            .await
            .unwrap()
            .events(),
        1
    );
    assert!(s.catalog().attempts(id).await.unwrap().is_empty());
}

async fn nodes_and_breaker_transitions_are_recorded(t: TestStore) {
    let c = t.store.catalog();
    let wall = switchboard::queue::now_ms();
    assert_eq!(c.register_node().await.unwrap(), 1);
    let first = c.nodes().await.unwrap();
    assert_eq!(first.len(), 1);
    let n = &first[0];
    assert_eq!((n.name.as_str(), n.epoch), (c.node(), 1));
    // By the database's clock, which here is this machine's.
    assert!((n.started_at - wall).abs() < 60_000, "{n:?} against {wall}");
    assert!(
        (0..1_000).contains(&(n.heartbeat_at - n.started_at)),
        "{n:?}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    c.heartbeat().await.unwrap();
    let beat = c.nodes().await.unwrap()[0].heartbeat_at;
    assert!(beat > n.heartbeat_at, "{beat} after {}", n.heartbeat_at);
    // A restart under the same name is the next epoch.
    assert_eq!(c.register_node().await.unwrap(), 2);
    c.record_breaker("hss", "closed", "open", 300)
        .await
        .unwrap();
    c.record_breaker("hss", "open", "probing", 400)
        .await
        .unwrap();
    c.record_breaker("crm", "closed", "open", 500)
        .await
        .unwrap();
    let hss = c.breaker_transitions("hss", 10).await.unwrap();
    let got: Vec<(&str, &str, i64)> = hss
        .iter()
        .map(|b| (b.from.as_str(), b.to.as_str(), b.at))
        .collect();
    assert_eq!(got, vec![("open", "probing", 400), ("closed", "open", 300)]);
    assert_eq!(c.breaker_transitions("hss", 1).await.unwrap().len(), 1);
}

/// At start-up a node takes back at once what its previous run left in
/// flight: the lease's end does not matter, the attempt is logged as ended
/// with why, the lane keeps its order, and that run's late answer is refused.
async fn a_restart_reclaims_its_in_flight_deliveries_at_once(t: TestStore) {
    let s = &*t.store;
    s.ingest(
        vec![
            ev("1", "t", &["k"], &["c"]),
            ev("2", "t", &["k"], &["c"]),
            ev("3", "t", &["j"], &["c"]),
        ],
        0,
    )
    .await
    .unwrap();
    let before = s.claim("c", 10, 10, LEASE).await.unwrap();
    assert_eq!(before.len(), 2, "1 and 3 head their lanes");
    // Nothing in flight is left: a second reclaim finds nothing.
    assert_eq!(s.reclaim(20).await.unwrap(), 2);
    assert_eq!(s.reclaim(21).await.unwrap(), 0);
    let again = s.claim("c", 10, 30, LEASE).await.unwrap();
    let mut got: Vec<(String, u32)> = again
        .iter()
        .map(|d| (d.event.id.clone(), d.attempt))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![("1".into(), 2), ("3".into(), 2)],
        "2 still waits behind 1"
    );
    let late = before
        .iter()
        .map(|d| Completion::of(d, CompletionKind::Delivered))
        .collect();
    assert_eq!(s.complete(late, 40).await.unwrap(), vec![false, false]);
    let id = s.catalog().event("1").await.unwrap().unwrap().deliveries[0].id;
    let log = s.catalog().attempts(id).await.unwrap();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(
        (log[0].outcome.as_str(), log[0].finished_at),
        ("lease_expired", 20)
    );
    assert!(
        log[0]
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("reclaimed at start-up"),
        "{log:?}"
    );
    assert_eq!(t.count_mismatches().await, Vec::<String>::new());
}

/// What a restart or a rescue takes back keeps its place at the front of
/// the ready order: a lane that was in flight does not wait behind a
/// backlog that arrived after it.
async fn a_delivery_taken_back_goes_before_the_backlog(t: TestStore) {
    let s = &*t.store;
    s.ingest(vec![ev("first", "t", &["k0"], &["c"])], 0)
        .await
        .unwrap();
    assert_eq!(ids(s, "c", 1, 1).await, vec!["first"]);
    let backlog = (1..50)
        .map(|i| ev(&format!("b{i}"), "t", &[&format!("k{i}")], &["c"]))
        .collect();
    s.ingest(backlog, 10).await.unwrap();
    assert_eq!(s.reclaim(20).await.unwrap(), 1);
    assert_eq!(ids(s, "c", 1, 30).await, vec!["first"]);
    assert_eq!(s.rescue_expired(30 + LEASE).await.unwrap(), 1);
    assert_eq!(ids(s, "c", 1, 40 + LEASE).await, vec!["first"]);
}

/// On PostgreSQL a restarting node takes back only its own leases; those of
/// another node are taken over only once its heartbeat is old by the
/// database's clock.
#[tokio::test]
async fn postgres_a_node_reclaims_its_own_leases_and_takes_over_only_silent_nodes() {
    use switchboard::store::postgres::PostgresStore;
    let t = common::postgres().await;
    let a = &*t.store;
    let b = PostgresStore::open_as(&t.url, "node-b:1").await.unwrap();
    a.catalog().register_node().await.unwrap();
    b.catalog().register_node().await.unwrap();
    a.ingest(
        vec![
            ev("a1", "t", &["ka"], &["c"]),
            ev("b1", "t", &["kb"], &["c"]),
        ],
        0,
    )
    .await
    .unwrap();
    let mine = a.claim("c", 1, 10, LEASE).await.unwrap();
    let theirs = b.claim("c", 1, 10, LEASE).await.unwrap();
    assert_eq!((mine.len(), theirs.len()), (1, 1));
    // A's restart: only A's lease.
    assert_eq!(a.reclaim(20).await.unwrap(), 1);
    let cluster = a.cluster().expect("PostgreSQL shares work between nodes");
    // B beat just now: alive, whatever the bound.
    assert_eq!(cluster.take_over(30, 10_000).await.unwrap(), 0);
    // B has been silent for a minute by the database's clock.
    let pool = sqlx::PgPool::connect(&t.url).await.unwrap();
    sqlx::query("UPDATE nodes SET heartbeat_at = heartbeat_at - 60000 WHERE name = 'node-b:1'")
        .execute(&pool)
        .await
        .unwrap();
    // Not yet past a bound longer than its silence.
    assert_eq!(cluster.take_over(40, 120_000).await.unwrap(), 0);
    // A is silent too now, but never takes over its own leases this way.
    a.claim("c", 1, 45, LEASE).await.unwrap();
    sqlx::query("UPDATE nodes SET heartbeat_at = heartbeat_at - 60000")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(cluster.take_over(50, 10_000).await.unwrap(), 1);
    let view = a.catalog().event("b1").await.unwrap().unwrap();
    assert_eq!(view.deliveries[0].state, DeliveryState::Ready);
    assert!(
        view.deliveries[0]
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("taken over"),
        "{view:?}"
    );
    // B's late answer is refused; A's delivery of b1 counts once.
    let late = theirs
        .iter()
        .map(|d| Completion::of(d, CompletionKind::Delivered))
        .collect();
    assert_eq!(b.complete(late, 60).await.unwrap(), vec![false]);
    assert_eq!(t.count_mismatches().await, Vec::<String>::new());
}

/// Two running gateways never act under one node name; the name is free
/// again once its holder's session ends.
#[tokio::test]
async fn postgres_a_node_name_is_held_by_one_process_at_a_time() {
    use std::time::Duration;
    use switchboard::store::postgres::PostgresStore;
    use switchboard::store::StoreError;
    let t = common::postgres().await;
    let first = PostgresStore::open_as(&t.url, "same:1").await.unwrap();
    let second = PostgresStore::open_as(&t.url, "same:1").await.unwrap();
    let other = PostgresStore::open_as(&t.url, "other:1").await.unwrap();
    first
        .cluster()
        .unwrap()
        .hold_name(Duration::ZERO)
        .await
        .unwrap();
    // Holding it again is a no-op.
    first
        .cluster()
        .unwrap()
        .hold_name(Duration::ZERO)
        .await
        .unwrap();
    other
        .cluster()
        .unwrap()
        .hold_name(Duration::ZERO)
        .await
        .unwrap();
    match second
        .cluster()
        .unwrap()
        .hold_name(Duration::from_millis(300))
        .await
    {
        Err(StoreError::InUse(m)) => assert!(m.contains("\"same:1\""), "{m}"),
        r => panic!("a second holder of one name: {r:?}"),
    }
    drop(first);
    second
        .cluster()
        .unwrap()
        .hold_name(Duration::from_secs(10))
        .await
        .expect("free once its holder is gone");
}

/// PostgreSQL writers each keep their own rows of the counts; a node that
/// starts folds those of nodes long gone, and the sums stay right.
#[tokio::test]
async fn postgres_count_rows_of_gone_nodes_fold_into_one_without_changing_a_sum() {
    let t = common::postgres().await;
    let s = &*t.store;
    let pool = sqlx::PgPool::connect(&t.url).await.unwrap();
    // This node is alive (it starts now, by the database's clock); a node
    // that once wrote counts was last heard of at 1,000, long ago.
    s.catalog().register_node().await.unwrap();
    sqlx::query(
        "INSERT INTO nodes (name, epoch, started_at, heartbeat_at) VALUES ('gone:1', 1, 0, 1000)",
    )
    .execute(&pool)
    .await
    .unwrap();
    s.ingest(
        vec![ev("a", "t", &["k"], &["c"]), ev("b", "t", &["k"], &["c"])],
        10,
    )
    .await
    .unwrap();
    s.claim("c", 1, 20, LEASE).await.unwrap();
    // This node's ingest rows move under the gone node's name, as if that
    // node wrote them.
    sqlx::query(
        "UPDATE connector_counts SET writer = 'gone:1/' || writer WHERE writer LIKE '%/ingest%'",
    )
    .execute(&pool)
    .await
    .unwrap();
    let before = s.catalog().queue_stats("c").await.unwrap();
    assert_eq!((before.ready, before.blocked, before.in_flight), (0, 1, 1));
    let writers = |pool: sqlx::PgPool| async move {
        let mut w: Vec<String> =
            sqlx::query_scalar("SELECT writer FROM connector_counts WHERE connector = 'c'")
                .fetch_all(&pool)
                .await
                .unwrap();
        w.sort();
        w
    };
    let node = s.catalog().node().to_string();
    let w = writers(pool.clone()).await;
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w.contains(&format!("{node}/claim")), "{w:?}");
    assert!(
        w.iter()
            .any(|x| x.starts_with(&format!("gone:1/{node}/ingest"))),
        "{w:?}"
    );
    // This node starts again: the gone node's rows become the shared one,
    // the live node's stay.
    s.catalog().register_node().await.unwrap();
    assert_eq!(
        writers(pool.clone()).await,
        vec![String::new(), format!("{node}/claim")]
    );
    assert_eq!(s.catalog().queue_stats("c").await.unwrap(), before);
    assert_eq!(t.count_mismatches().await, Vec::<String>::new());
}

/// The console's reads: dead letters by what their reason contains, a
/// connector's recent attempts with their events, and the per-minute counts
/// that nodes add to and that are summed across them.
async fn the_consoles_reads_filter_sum_and_purge(t: TestStore) {
    let s = &*t.store;
    s.ingest(
        vec![
            ev("a", "t", &["k1"], &["c"]),
            ev("b", "t", &["k2"], &["c"]),
            ev("z", "t", &["k3"], &["other"]),
        ],
        0,
    )
    .await
    .unwrap();
    let claimed = s.claim("c", 10, 1, LEASE).await.unwrap();
    let items = claimed
        .iter()
        .map(|d| {
            let error = if d.event.id == "a" {
                "rejected: HTTP 422 <b>customer unknown</b>"
            } else {
                "rejected: HTTP 409 number in use"
            };
            let dead = CompletionKind::Dead {
                error: error.into(),
                on_dead: OnDead::Hold,
            };
            Completion::of(d, dead)
        })
        .collect();
    s.complete(items, 2).await.unwrap();
    let c = s.catalog();
    let by_reason = |reason: &str| switchboard::store::DeadFilter {
        reason: Some(reason.to_string()),
        limit: 100,
        ..Default::default()
    };
    let found = c.dead_letters(&by_reason("HTTP 422")).await.unwrap();
    assert_eq!(
        found
            .iter()
            .map(|d| d.event_id.as_str())
            .collect::<Vec<_>>(),
        vec!["a"]
    );
    assert_eq!(
        c.dead_letters(&by_reason("rejected")).await.unwrap().len(),
        2
    );
    assert!(
        c.dead_letters(&by_reason("%")).await.unwrap().is_empty(),
        "no wildcards"
    );
    assert!(
        c.dead_letters(&by_reason("http 422"))
            .await
            .unwrap()
            .is_empty(),
        "case kept"
    );

    assert!(c.recent_attempts("other", 10).await.unwrap().is_empty());
    // A busy neighbour's newer attempts never hide a connector's own.
    let busy: Vec<_> = (0..40)
        .map(|i| ev(&format!("n{i}"), "t", &[], &["other"]))
        .collect();
    s.ingest(busy, 3).await.unwrap();
    let running = s.claim("other", 100, 4, LEASE).await.unwrap();
    let done = running
        .iter()
        .map(|d| Completion::of(d, CompletionKind::Delivered))
        .collect();
    s.complete(done, 5).await.unwrap();
    let recent = c.recent_attempts("c", 10).await.unwrap();
    let mut events: Vec<&str> = recent.iter().map(|(e, _, _)| e.as_str()).collect();
    events.sort();
    assert_eq!(events, vec!["a", "b"]);
    assert!(recent.iter().all(|(_, _, a)| a.outcome == "dead"));
    assert_eq!(c.recent_attempts("c", 1).await.unwrap().len(), 1, "limit");
    let other = c.recent_attempts("other", 100).await.unwrap();
    assert_eq!(other.len(), 41, "z and the 40");
    assert!(other
        .windows(2)
        .all(|w| w[0].2.finished_at >= w[1].2.finished_at));

    c.add_minute_counts(&[("c".into(), 100, 5, 1), ("c".into(), 101, 7, 0)])
        .await
        .unwrap();
    c.add_minute_counts(&[("c".into(), 100, 2, 2), ("other".into(), 99, 1, 0)])
        .await
        .unwrap();
    let m = c.minute_counts(100).await.unwrap();
    let got: Vec<(i64, i64, i64)> = m["c"]
        .iter()
        .map(|x| (x.minute, x.delivered, x.failed))
        .collect();
    assert_eq!(got, vec![(100, 7, 3), (101, 7, 0)]);
    assert!(!m.contains_key("other"), "before `since`");
    assert_eq!(c.purge_minute_counts(101).await.unwrap(), 2);
    assert_eq!(c.minute_counts(0).await.unwrap()["c"].len(), 1);
}

for_each_backend!(
    concurrent_full_state_updates_race_claims_and_keep_the_last,
    a_lane_view_lists_the_first_deliveries_behind_its_head,
    a_full_state_event_supersedes_older_unstarted_deliveries_at_their_lane_position,
    a_started_or_attempted_delivery_is_never_superseded,
    within_one_request_only_the_last_full_state_event_is_delivered,
    the_consoles_reads_filter_sum_and_purge,
    every_finished_attempt_is_logged_once_with_how_it_ended,
    nodes_and_breaker_transitions_are_recorded,
    a_restart_reclaims_its_in_flight_deliveries_at_once,
    a_delivery_taken_back_goes_before_the_backlog,
    a_lane_emptied_of_its_dead_letter_takes_the_next_event_at_once,
    a_lane_releasing_its_head_and_the_next_at_once_moves_up_once,
    queue_stats_follow_every_transition,
    deliveries_past_their_expiry_end_expired_and_release_their_lanes,
    two_outcomes_for_one_delivery_in_one_call_apply_once_in_order,
    finished_events_past_the_window_are_purged_and_nothing_else,
    finished_events_keep_only_their_id_past_the_payload_retention,
    a_reopen_after_the_newest_events_were_reduced_reuses_no_seq,
    a_reopened_store_keeps_order_while_it_rebuilds_its_lane_filter,
    the_component_registry_keeps_versions_and_one_active,
    deploying_beyond_the_retention_prunes_the_oldest_versions,
    ingest_is_idempotent_and_conflicts_store_nothing,
    a_lane_runs_one_delivery_at_a_time_in_accept_order,
    a_delivery_with_several_keys_waits_for_every_lane,
    an_outcome_names_the_connectors_whose_deliveries_it_made_ready,
    connectors_have_independent_lanes,
    retry_waits_for_its_time_and_keeps_the_lane,
    the_next_due_time_leaves_out_what_no_claim_would_take,
    a_claim_that_gets_fewer_than_asked_says_when_the_next_is_due,
    a_dropped_finding_is_read_afresh,
    an_open_offer_is_claimed_for_in_the_transaction_that_readies_a_delivery,
    an_ingest_fills_an_offer_up_to_its_room_and_not_for_a_paused_connector,
    an_offer_gets_what_an_outcome_readies_though_accepted_after_its_time,
    an_offer_takes_what_a_superseded_delivery_leaves_ready,
    expired_leases_are_rescued_and_late_completions_ignored,
    dead_letters_hold_or_release_their_keys,
    everything_acknowledged_survives_a_reopen,
    lane_rows_are_deleted_on_release,
    lanes_and_held_dead_letters_survive_reopens,
    a_paused_connector_queues_but_is_never_claimed,
    concurrent_requests_share_a_commit_and_stay_all_or_nothing_each,
    limit_overrides_round_trip_and_are_audited,
);

/// An outcome that moves a lane on commits unsynced and then syncs the
/// write-ahead log before it is answered; should that sync fail, the store
/// answers every request with the failure from then on (a later sync could
/// not be trusted), until a restart reads back what the disk holds. The
/// sync is made to fail by taking the log's name away.
#[tokio::test]
async fn sqlite_a_failed_sync_stops_the_store() {
    use switchboard::store::StoreError;
    let t = common::sqlite().await;
    let s = &*t.store;
    s.ingest(
        vec![ev("1", "t", &["k"], &["c"]), ev("2", "t", &["k"], &["c"])],
        0,
    )
    .await
    .unwrap();
    let first = s.claim("c", 10, 1, LEASE).await.unwrap().remove(0);
    let db = switchboard::store::sqlite::SqliteStore::path_of(&t.url).unwrap();
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::remove_file(&wal).unwrap();
    let done = s.complete(vec![Completion::of(&first, CompletionKind::Delivered)], 2);
    let err = done.await.expect_err("the sync of the log must fail");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(err.to_string().contains("restart"), "{err}");
    let later = s.ingest(vec![ev("3", "t", &["j"], &["c"])], 3).await;
    assert!(
        matches!(later, Err(StoreError::Unavailable(_))),
        "{later:?}"
    );
    assert!(s.claim("c", 10, 4, LEASE).await.is_err());
}

/// SQLite's ingest inserts use `OR FAIL`, which keeps the rows a multi-row
/// statement wrote before the one that failed: only the commit group's
/// transaction undoes them. An event row planted by another connection under
/// a sequence number the writer is about to hand out makes row 101 of a
/// 300-event request fail.
#[tokio::test]
async fn sqlite_a_request_that_fails_part_way_leaves_nothing_and_the_store_recovers() {
    let t = common::sqlite().await;
    let s = &*t.store;
    s.ingest(vec![ev("first", "t", &["k0"], &["c"])], 0)
        .await
        .unwrap();
    let first_seq = s.catalog().event("first").await.unwrap().unwrap().seq;
    let pool = sqlx::SqlitePool::connect(&t.url).await.unwrap();
    sqlx::query(
        "INSERT INTO events (seq, id, type, keys, payload, digest, accepted_at) \
         VALUES (?1, 'planted', 't', '[]', '{}', x'00', 0)",
    )
    .bind(first_seq + 101)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let batch = || -> Vec<_> {
        (0..300)
            .map(|i| {
                let key = format!("k{i}");
                ev(&format!("e{i}"), "t", &[key.as_str(), "shared"], &["c"])
            })
            .collect()
    };
    let err = s
        .ingest(batch(), 1)
        .await
        .expect_err("the planted row must fail the request");
    assert!(err.to_string().contains("events.seq"), "{err}");
    assert!(s.catalog().event("e0").await.unwrap().is_none());
    assert_eq!(t.count_rows("events").await, 2, "first and planted only");
    assert_eq!(t.count_rows("deliveries").await, 1);
    let lane = |key: &'static str| async move {
        let v = s.lanes(key, &["c".to_string()]).await.unwrap().remove(0);
        (v.head.map(|(event, _)| event), v.waiting)
    };
    assert_eq!(lane("shared").await, (None, 0));
    assert_eq!(lane("k0").await, (Some("first".to_string()), 0));

    // The writer re-reads its counters after a rollback, so the same request
    // now goes through whole, ordered after everything before it.
    assert_eq!(s.ingest(batch(), 2).await.unwrap(), accepted(300, 0, 0));
    assert_eq!(t.count_rows("deliveries").await, 301);
    assert_eq!(lane("shared").await, (Some("e0".to_string()), 299));
    assert_eq!(lane("k0").await, (Some("first".to_string()), 1));
    assert_eq!(lane("k299").await, (Some("e299".to_string()), 0));
    let e0 = s.catalog().event("e0").await.unwrap().unwrap();
    assert!(e0.seq > first_seq + 101);
    // `first` holds k0, so e0 waits for it; e1 shares `shared` with e0.
    assert_eq!(ids(s, "c", 10, 3).await, vec!["first"]);
}

/// Nodes sharing a PostgreSQL schema hear of each other's new work and
/// breaker changes through the database; another schema's nodes do not,
/// and a node does not hear its own (it woke its loops itself).
#[tokio::test]
async fn postgres_nodes_hear_of_each_others_work_and_breaker_changes() {
    use std::time::Duration;
    use switchboard::store::postgres::PostgresStore;
    use switchboard::store::{Announcement, SharedHealth};
    use tokio::sync::mpsc::Receiver;
    async fn next(heard: &mut Receiver<Announcement>) -> Announcement {
        tokio::time::timeout(Duration::from_secs(10), heard.recv())
            .await
            .expect("announced within seconds")
            .unwrap()
    }
    async fn silent(heard: &mut Receiver<Announcement>) -> bool {
        tokio::time::timeout(Duration::from_millis(300), heard.recv())
            .await
            .is_err()
    }
    let t = common::postgres().await;
    let other_schema = common::postgres().await;
    let a = &*t.store;
    let b = PostgresStore::open_as(&t.url, "b:1").await.unwrap();
    let stranger = &*other_schema.store;
    let mut heard = b.cluster().unwrap().listen().await.unwrap();
    let mut stranger_heard = stranger.cluster().unwrap().listen().await.unwrap();
    // A's announcements are on once A listens too.
    let mut a_heard = a.cluster().unwrap().listen().await.unwrap();
    a.ingest(
        vec![
            ev("n1", "t", &["k"], &["hss"]),
            ev("n2", "t", &["j"], &["crm", "hss"]),
        ],
        0,
    )
    .await
    .unwrap();
    let mut got = std::collections::BTreeSet::new();
    while got.len() < 2 {
        got.insert(next(&mut heard).await);
    }
    assert_eq!(
        got,
        [
            Announcement::Work("crm".into()),
            Announcement::Work("hss".into())
        ]
        .into()
    );
    a.cluster()
        .unwrap()
        .publish_health("hss", SharedHealth::Closed, 1)
        .await
        .unwrap();
    assert_eq!(next(&mut heard).await, Announcement::Health("hss".into()));
    a.ingest(vec![ev("n3", "t", &["k"], &["hss"])], 2)
        .await
        .unwrap();
    assert_eq!(next(&mut heard).await, Announcement::Work("hss".into()));
    // A delivery whose lane moves on to the next event, ready now.
    let done = |claimed: Vec<switchboard::store::Claimed>| -> Vec<Completion> {
        claimed
            .iter()
            .map(|d| Completion::of(d, CompletionKind::Delivered))
            .collect()
    };
    let n1 = a.claim("hss", 1, 2, LEASE).await.unwrap();
    assert_eq!(n1[0].event.id, "n1");
    assert_eq!(a.complete(done(n1), 3).await.unwrap(), vec![true]);
    assert_eq!(next(&mut heard).await, Announcement::Work("hss".into()));
    // Deliveries with nothing behind them: nothing to announce.
    let rest = a.claim("hss", 10, 4, LEASE).await.unwrap();
    assert_eq!(rest.len(), 2);
    assert_eq!(a.complete(done(rest), 5).await.unwrap(), vec![true, true]);
    assert!(
        silent(&mut heard).await,
        "an outcome that made nothing ready is not announced"
    );
    // An operator's resume, which the API announces.
    a.cluster().unwrap().announce_work("crm");
    assert_eq!(next(&mut heard).await, Announcement::Work("crm".into()));
    assert!(
        silent(&mut stranger_heard).await,
        "another schema's nodes hear nothing"
    );
    assert!(
        a_heard.try_recv().is_err(),
        "a node hears its own announcements"
    );
    // It does hear the others'.
    b.cluster().unwrap().announce_work("sms");
    assert_eq!(next(&mut a_heard).await, Announcement::Work("sms".into()));
    assert!(silent(&mut heard).await, "b heard its own announcement");
}

/// Where posts arrive often enough that more are due within the group
/// commit wait (here one every 150 ms against a 3 s wait: the second post
/// waits about a second, as long as eight take at that rate), a post waits
/// for them to share its commit; a post with none before it begins at once,
/// well within the second it would otherwise wait. (Timed only one way: a
/// slow machine answers later, never sooner.)
async fn a_steady_trickle_of_posts_shares_a_commit(s: std::sync::Arc<dyn Store>) {
    use std::time::{Duration, Instant};
    let first = Instant::now();
    s.ingest(vec![ev("t0", "a", &[], &["c"])], 1).await.unwrap();
    assert!(
        first.elapsed() < Duration::from_millis(500),
        "the first post waited for company"
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    let second = tokio::spawn({
        let s = s.clone();
        async move {
            let out = s.ingest(vec![ev("t1", "a", &[], &["c"])], 2).await;
            (out.unwrap(), Instant::now())
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let third_sent = Instant::now();
    let third = s.ingest(vec![ev("t2", "a", &[], &["c"])], 3).await.unwrap();
    let (second, answered) = second.await.unwrap();
    assert_eq!((second, third), (accepted(1, 0, 0), accepted(1, 0, 0)));
    assert!(
        answered >= third_sent,
        "the second post was answered before the third was posted: it did not wait"
    );
    assert_eq!(ids(&*s, "c", 10, 4).await, ["t0", "t1", "t2"]);
}

const WAIT: std::time::Duration = std::time::Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_steady_trickle_of_posts_shares_a_commit() {
    use switchboard::store::sqlite::{LaneFlush, SqliteStore};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("sb.db").display());
    let node = switchboard::store::default_node();
    let s = SqliteStore::open_tuned(&url, &node, LaneFlush::default(), Some(WAIT)).await;
    a_steady_trickle_of_posts_shares_a_commit(std::sync::Arc::new(s.unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_steady_trickle_of_posts_shares_a_commit() {
    let url = common::pg_schema_url().await;
    let s = switchboard::store::open_waiting(&url, "trickle:1", Some(WAIT)).await;
    a_steady_trickle_of_posts_shares_a_commit(s.unwrap()).await;
}

/// PostgreSQL's outcomes wait for company as posts do (an outcome waiting
/// for its commit holds no connector's slot): the first at once, the second
/// of a steady trickle until the third joins it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_steady_trickle_of_outcomes_shares_a_commit() {
    use std::time::{Duration, Instant};
    let url = common::pg_schema_url().await;
    let s = switchboard::store::open_waiting(&url, "trickle:1", Some(WAIT))
        .await
        .unwrap();
    let events = (0..3).map(|i| ev(&format!("o{i}"), "a", &[], &["c"]));
    s.ingest(events.collect(), 1).await.unwrap();
    let mut claimed = s.claim("c", 3, 2, LEASE).await.unwrap().into_iter();
    let mut done = move || {
        vec![Completion::of(
            &claimed.next().unwrap(),
            CompletionKind::Delivered,
        )]
    };
    let first = Instant::now();
    assert_eq!(s.complete(done(), 3).await.unwrap(), vec![true]);
    assert!(
        first.elapsed() < Duration::from_millis(500),
        "the first outcome waited for company"
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    let second = tokio::spawn({
        let (s, items) = (s.clone(), done());
        async move { (s.complete(items, 4).await.unwrap(), Instant::now()) }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let third_sent = Instant::now();
    assert_eq!(s.complete(done(), 5).await.unwrap(), vec![true]);
    let (second, answered) = second.await.unwrap();
    assert_eq!(second, vec![true]);
    assert!(
        answered >= third_sent,
        "the second outcome was answered before the third was handed over: it did not wait"
    );
    for i in 0..3 {
        let v = s.catalog().event(&format!("o{i}")).await.unwrap().unwrap();
        assert_eq!(v.deliveries[0].state, DeliveryState::Delivered);
    }
}
