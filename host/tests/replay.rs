//! Replays through the real store and the real replay step, on every
//! backend: stored events delivered again behind live traffic, in accept
//! order, selected by time, type and key; a backfill by the connector's
//! routes; coalescing that keeps the newest state; cancelling; a page made
//! twice stores nothing twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestStore;
use switchboard::fleet::Fleet;
use switchboard::queue::event::parse_body;
use switchboard::queue::DeliveryState;
use switchboard::replay::{step, Step};
use switchboard::store::{Completion, CompletionKind, NewReplay, Store};

const LEASE: i64 = 30_000;
/// When the replay steps in these tests make their copies.
const NOW: i64 = 450;

fn fleet(hss_routes: serde_json::Value) -> Fleet {
    let config = |name: &str, routes: serde_json::Value| {
        serde_json::from_value(serde_json::json!({"name": name, "routes": routes})).unwrap()
    };
    Fleet::new(
        vec![
            config("hss", hss_routes),
            config("crm", serde_json::json!(["*"])),
        ],
        switchboard::config::Bounds::default(),
    )
}

/// Posts `(id, type, keys)` as the API does: routed by `fleet`.
async fn post(s: &dyn Store, fleet: &Fleet, events: &[(&str, &str, &[&str])], now: i64) {
    let routes = fleet.routes();
    let routed = events
        .iter()
        .map(|(id, ty, keys)| {
            let body =
                serde_json::json!({"id": id, "type": ty, "keys": keys, "payload": {"v": id}});
            routes.routed(
                parse_body(body.to_string().as_bytes(), 1)
                    .unwrap()
                    .remove(0),
            )
        })
        .collect();
    s.ingest(routed, now).await.unwrap();
}

/// Claims and delivers everything `connector` can run, until nothing is
/// left; answers the event ids in the order they were delivered.
async fn drain(s: &dyn Store, connector: &str, now: i64) -> Vec<String> {
    let mut order = Vec::new();
    loop {
        let got = s.claim(connector, 100, now, LEASE).await.unwrap();
        if got.is_empty() {
            return order;
        }
        order.extend(got.iter().map(|d| d.event.id.clone()));
        let done = got
            .iter()
            .map(|d| Completion::of(d, CompletionKind::Delivered))
            .collect();
        s.complete(done, now).await.unwrap();
    }
}

fn ask(connector: &str, types: &[&str], key: Option<&str>) -> NewReplay {
    NewReplay {
        connector: connector.into(),
        since: 0,
        until: i64::MAX / 2,
        types: types.iter().map(|t| t.to_string()).collect(),
        key: key.map(Into::into),
        rate: 1_000.0,
    }
}

async fn a_replay_delivers_stored_events_again_behind_live_traffic(t: TestStore) {
    let s = &*t.store;
    let f = fleet(serde_json::json!(["number.*"]));
    post(
        s,
        &f,
        &[
            ("a1", "number.assign", &["msisdn:1"]),
            ("q1", "quota.reached", &["msisdn:1"]),
            ("a2", "number.release", &["msisdn:1"]),
            ("b1", "number.assign", &["msisdn:2"]),
        ],
        100,
    )
    .await;
    assert_eq!(drain(s, "hss", 200).await, ["a1", "b1", "a2"]);
    // Live traffic waiting when the replay starts.
    post(s, &f, &[("live", "number.assign", &["msisdn:1"])], 300).await;
    // The replay covers what was accepted before the live event.
    let mut asked = ask("hss", &[], None);
    asked.until = 250;
    let replay = s.catalog().create_replay(&asked, "ops", 400).await.unwrap();
    assert_eq!((replay.state.as_str(), replay.replayed), ("running", 0));
    // A backfill takes what the routes take: the quota event is not hss's.
    let did = step(s, &f, &replay, NOW).await.unwrap().unwrap();
    assert_eq!(
        did,
        Step {
            examined: 5,
            replayed: 3,
            done: true
        }
    );
    let copy = |id: &str| format!("{id}~replay-{}", replay.id);
    // Behind what was queued on each key, in the original order.
    assert_eq!(
        drain(s, "hss", 500).await,
        ["live".to_string(), copy("b1"), copy("a1"), copy("a2")]
    );
    let done = s.catalog().replay(replay.id).await.unwrap().unwrap();
    assert_eq!(
        (done.state.as_str(), done.replayed, done.examined),
        ("done", 3, 5)
    );
    assert!(done.finished_at.is_some());
    // The same page again (a second node, a crash before the cursor
    // moved): nothing is stored twice, and the cursor stays.
    assert_eq!(step(s, &f, &replay, NOW).await.unwrap(), None);
    assert!(drain(s, "hss", 600).await.is_empty());
    let audit = s.catalog().audit_log(10, None).await.unwrap();
    assert_eq!(audit[0].action, "replay.start");
    // crm got none of it: a replay is for one connector.
    let view = s.catalog().event(&copy("a1")).await.unwrap().unwrap();
    assert_eq!(view.deliveries.len(), 1);
    assert_eq!(view.deliveries[0].connector, "hss");
    assert_eq!(
        (view.replay, view.original.as_deref()),
        (Some(replay.id), Some("a1"))
    );
    let original = s.catalog().event("a1").await.unwrap().unwrap();
    assert_eq!((original.replay, original.original), (None, None));
}

async fn a_replay_selects_by_time_type_and_key(t: TestStore) {
    let s = &*t.store;
    let f = fleet(serde_json::json!(["*"]));
    post(s, &f, &[("old", "number.assign", &["msisdn:1"])], 100).await;
    post(
        s,
        &f,
        &[
            ("n1", "number.assign", &["msisdn:1"]),
            ("n2", "number.assign", &["msisdn:2"]),
            ("c1", "customer.update", &["msisdn:1"]),
        ],
        1_000,
    )
    .await;
    drain(s, "hss", 2_000).await;
    let mut asked = ask("hss", &["number.*"], Some("msisdn:1"));
    asked.since = 500;
    let replay = s
        .catalog()
        .create_replay(&asked, "ops", 3_000)
        .await
        .unwrap();
    let did = step(s, &f, &replay, NOW).await.unwrap().unwrap();
    assert_eq!(did.replayed, 1);
    assert_eq!(
        drain(s, "hss", 3_000).await,
        [format!("n1~replay-{}", replay.id)]
    );
}

async fn a_replay_coalesces_and_never_overwrites_a_newer_state(t: TestStore) {
    let s = &*t.store;
    let f = fleet(serde_json::json!([
        "number.*",
        {"match": "forwarding.*", "coalesce_key": "customer"}
    ]));
    let fwd = |id: &'static str, customer: &'static str| (id, "forwarding.set", customer);
    for (id, ty, customer) in [
        fwd("f1", "customer:A"),
        fwd("f2", "customer:A"),
        fwd("g1", "customer:B"),
        fwd("f3", "customer:A"),
        fwd("g2", "customer:B"),
    ] {
        post(s, &f, &[(id, ty, &[customer])], 100).await;
        drain(s, "hss", 100).await;
    }
    // B changes again while the destination is down: its newest state waits.
    post(s, &f, &[("g3", "forwarding.set", &["customer:B"])], 200).await;
    // The replay covers what was accepted before g3 (a day restored from a
    // backup, say).
    let mut asked = ask("hss", &["forwarding.*"], None);
    asked.until = 150;
    let replay = s.catalog().create_replay(&asked, "ops", 300).await.unwrap();
    let did = step(s, &f, &replay, NOW).await.unwrap().unwrap();
    assert_eq!(did.replayed, 5, "every stored state in the range is copied");
    // A: only its last state, f3; B: the live g3, never an older copy after it.
    let delivered = drain(s, "hss", 500).await;
    assert_eq!(
        delivered,
        ["g3".to_string(), format!("f3~replay-{}", replay.id)]
    );
    let view = s
        .catalog()
        .event(&format!("g2~replay-{}", replay.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.deliveries[0].state, DeliveryState::Superseded);
    assert_eq!(view.deliveries[0].superseded_by.as_deref(), Some("g3"));
}

async fn a_cancelled_replay_makes_no_more_copies_and_ends_those_not_started(t: TestStore) {
    let s = &*t.store;
    let f = fleet(serde_json::json!(["number.*"]));
    let events: Vec<(String, &str, [&str; 1])> = (0..700)
        .map(|i| (format!("e{i}"), "number.assign", ["msisdn:7"]))
        .collect();
    let refs: Vec<(&str, &str, &[&str])> = events
        .iter()
        .map(|(id, ty, k)| (id.as_str(), *ty, &k[..]))
        .collect();
    post(s, &f, &refs, 100).await;
    drain(s, "hss", 100).await;
    let replay = s
        .catalog()
        .create_replay(&ask("hss", &[], None), "ops", 200)
        .await
        .unwrap();
    // One page of 500 copies: the first runs, the rest wait behind it.
    let did = step(s, &f, &replay, NOW).await.unwrap().unwrap();
    assert_eq!((did.replayed, did.done), (500, false));
    let running = s.claim("hss", 10, 500, LEASE).await.unwrap();
    assert_eq!(running.len(), 1);
    // It is rejected and held: the dead letter keeps msisdn:7 held.
    let dead = CompletionKind::Dead {
        error: "rejected".into(),
        on_dead: switchboard::queue::OnDead::Hold,
    };
    s.complete(vec![Completion::of(&running[0], dead)], 550)
        .await
        .unwrap();
    let dead_copies = s.catalog().replay_dead_copies(replay.id, 10).await.unwrap();
    assert_eq!(dead_copies, [running[0].delivery_id]);
    let (cancelled, ended) = s
        .catalog()
        .cancel_replay(replay.id, "ops", 600)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((cancelled.state.as_str(), ended), ("cancelled", 499));
    assert_eq!(
        s.catalog()
            .cancel_replay(replay.id, "ops", 401)
            .await
            .unwrap(),
        None,
        "only a running replay is cancelled"
    );
    // No more pages: a cancelled replay makes no copies; and a page a node
    // was making as it was cancelled (the replay as that node read it) ends
    // its copies too.
    let current = s.catalog().replay(replay.id).await.unwrap().unwrap();
    assert_eq!(step(s, &f, &current, NOW).await.unwrap(), None);
    let mut stale = current.clone();
    stale.state = "running".into();
    assert_eq!(step(s, &f, &stale, NOW).await.unwrap(), None);
    // The dead copy is skipped (as the API's cancel does), the others
    // expire, and nothing else runs.
    let skip = switchboard::store::OperatorAction::Skip;
    assert!(s
        .operator_action(dead_copies[0], skip, "ops", 602)
        .await
        .unwrap());
    assert!(s.claim("hss", 10, 603, LEASE).await.unwrap().is_empty());
    let expired: u64 = s
        .expire_due(604, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        expired, 699,
        "the 499 of the first page, the 200 of the late one"
    );
    let counts = s.catalog().state_counts("hss").await.unwrap();
    assert_eq!(
        (
            counts.ready,
            counts.blocked,
            counts.dead,
            counts.skipped,
            counts.expired
        ),
        (0, 0, 0, 1, 699)
    );
    let actions: Vec<String> = (s.catalog().audit_log(2, None).await.unwrap())
        .into_iter()
        .map(|a| a.action)
        .collect();
    assert!(
        actions.contains(&"replay.cancel".to_string()),
        "{actions:?}"
    );
}

async fn a_copy_never_puts_back_a_state_older_than_one_delivered(t: TestStore) {
    let s = &*t.store;
    let f = fleet(serde_json::json!([
        {"match": "forwarding.*", "coalesce_key": "customer"}
    ]));
    post(s, &f, &[("old", "forwarding.set", &["customer:A"])], 100).await;
    drain(s, "hss", 100).await;
    let mut asked = ask("hss", &[], None);
    asked.until = 150;
    let replay = s.catalog().create_replay(&asked, "ops", 200).await.unwrap();
    // A newer state is delivered before the replay's page is made.
    post(s, &f, &[("new", "forwarding.set", &["customer:A"])], 300).await;
    assert_eq!(drain(s, "hss", 300).await, ["new"]);
    let did = step(s, &f, &replay, NOW).await.unwrap().unwrap();
    assert_eq!(did.replayed, 1);
    assert!(
        drain(s, "hss", 500).await.is_empty(),
        "the old state stays old"
    );
    let copy = s
        .catalog()
        .event(&format!("old~replay-{}", replay.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(copy.deliveries[0].state, DeliveryState::Superseded);
    assert_eq!(copy.deliveries[0].superseded_by.as_deref(), Some("new"));
}

async fn one_node_makes_each_page_and_a_replay_without_its_connector_ends(t: TestStore) {
    let s = &*t.store;
    let f = fleet(serde_json::json!(["number.*"]));
    post(s, &f, &[("a", "number.assign", &["msisdn:1"])], 100).await;
    let replay = s
        .catalog()
        .create_replay(&ask("hss", &[], None), "ops", 200)
        .await
        .unwrap();
    let c = s.catalog();
    // Due only after the grace period; then one take wins the page.
    assert!(c.due_replays(200, 10).await.unwrap().is_empty());
    let due_at = 200 + switchboard::store::catalog::REPLAY_GRACE_MS;
    assert_eq!(c.due_replays(due_at, 10).await.unwrap().len(), 1);
    assert!(c.take_replay(replay.id, due_at, 30_000).await.unwrap());
    assert!(!c.take_replay(replay.id, due_at, 30_000).await.unwrap());
    assert!(c.due_replays(due_at + 1, 10).await.unwrap().is_empty());
    // The connector goes from the config: the replay is cancelled.
    let without = Fleet::new(vec![], switchboard::config::Bounds::default());
    assert_eq!(step(s, &without, &replay, NOW).await.unwrap(), None);
    let now = c.replay(replay.id).await.unwrap().unwrap();
    assert_eq!(now.state, "cancelled");
}

for_each_backend!(
    a_copy_never_puts_back_a_state_older_than_one_delivered,
    one_node_makes_each_page_and_a_replay_without_its_connector_ends,
    a_replay_delivers_stored_events_again_behind_live_traffic,
    a_replay_selects_by_time_type_and_key,
    a_replay_coalesces_and_never_overwrites_a_newer_state,
    a_cancelled_replay_makes_no_more_copies_and_ends_those_not_started,
);
