//! Model-based property test of the queue: random sequences of enqueue (random
//! keys, several per event, overlapping), claim, done/retry/reject, lease
//! rescue and crash-and-restart run against the real store and a small
//! reference model.
//!
//! Invariants checked after every step:
//! - a claim never hands out a delivery while an earlier delivery of the same
//!   connector sharing a key is unfinished (ordering);
//! - a claim hands out exactly `min(limit, runnable)` deliveries, so nothing
//!   whose predecessors are final waits (liveness);
//! - at the end, after the destination recovers, every routed delivery of every
//!   accepted event is delivered or dead — nothing lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashSet};

use proptest::prelude::*;
use switchboard::queue::OnDead;
use switchboard::store::{Claimed, Completion, CompletionKind};

const CONNECTORS: [&str; 2] = ["hss", "crm"];
const KEYS: [&str; 5] = [
    "msisdn:1",
    "msisdn:2",
    "customer:A1",
    "customer:A2",
    "sim:9",
];
const LEASE: i64 = 10_000;

#[derive(Debug, Clone)]
enum Op {
    Enqueue {
        keys: Vec<usize>,
        to: Vec<usize>,
        batch: usize,
    },
    Claim {
        connector: usize,
        limit: usize,
    },
    Finish {
        pick: usize,
        outcome: Outcome,
    },
    Advance {
        ms: i64,
    },
    Rescue,
    Crash,
    OperatorSkip {
        pick: usize,
    },
    OperatorRetry {
        pick: usize,
    },
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Done,
    Retry { after: i64 },
    Reject { release: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (proptest::collection::vec(0..KEYS.len(), 0..3),
              proptest::collection::vec(0..CONNECTORS.len(), 0..3),
              1..4usize)
            .prop_map(|(keys, to, batch)| Op::Enqueue { keys, to, batch }),
        4 => (0..CONNECTORS.len(), 1..5usize).prop_map(|(connector, limit)| Op::Claim { connector, limit }),
        4 => (any::<usize>(), prop_oneof![
                3 => Just(Outcome::Done),
                2 => (0..3_000i64).prop_map(|after| Outcome::Retry { after }),
                1 => any::<bool>().prop_map(|release| Outcome::Reject { release }),
            ]).prop_map(|(pick, outcome)| Op::Finish { pick, outcome }),
        2 => (1..4_000i64).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Rescue),
        1 => Just(Op::Crash),
        1 => any::<usize>().prop_map(|pick| Op::OperatorSkip { pick }),
        1 => any::<usize>().prop_map(|pick| Op::OperatorRetry { pick }),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum St {
    Waiting { at: i64 },
    InFlight { lease: i64, until: i64 },
    Delivered,
    Dead { holds: bool },
    Skipped,
}

#[derive(Debug, Clone)]
struct MDelivery {
    connector: String,
    seq: usize,
    keys: HashSet<String>,
    st: St,
    /// Still listed in its lanes (false once released by a final state or a
    /// dead letter with `on_dead = "release"`; an operator retry does not
    /// re-enter the lanes).
    in_lanes: bool,
}

impl MDelivery {
    /// Still occupies its lanes.
    fn holds_lanes(&self) -> bool {
        self.in_lanes
    }
}

#[derive(Default)]
struct Model {
    /// (event id, connector) → delivery, in accept order via `seq`.
    deliveries: BTreeMap<(usize, String), MDelivery>,
    /// Store delivery id ↔ model key, learnt from claims and views.
    in_flight: Vec<Claimed>,
    next_event: usize,
}

impl Model {
    fn runnable(&self, connector: &str, now: i64) -> Vec<(usize, String)> {
        self.deliveries
            .iter()
            .filter(|(_, d)| d.connector == connector)
            .filter(|(_, d)| matches!(d.st, St::Waiting { at } if at <= now))
            .filter(|(_, d)| !self.blocked(d))
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn held_by_dead(&self, d: &MDelivery) -> bool {
        self.deliveries.values().any(|e| {
            e.connector == d.connector
                && e.seq < d.seq
                && e.in_lanes
                && !e.keys.is_disjoint(&d.keys)
                && match e.st {
                    St::Dead { holds: true } => true,
                    St::Waiting { .. } => self.held_by_dead(e),
                    _ => false,
                }
        })
    }

    fn blocked(&self, d: &MDelivery) -> bool {
        d.in_lanes
            && self.deliveries.values().any(|e| {
                e.connector == d.connector
                    && e.seq < d.seq
                    && e.holds_lanes()
                    && !e.keys.is_disjoint(&d.keys)
            })
    }
}

#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    /// SQLite moving its in-memory lane entries to the table every few
    /// deliveries.
    SqliteFlushing,
    Postgres,
}

fn run(ops: Vec<Op>, backend: Backend) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut t = match backend {
            Backend::Sqlite => common::sqlite().await,
            Backend::SqliteFlushing => common::sqlite_flushing().await,
            Backend::Postgres => common::postgres().await,
        };
        let mut m = Model::default();
        let mut now: i64 = 1_000_000;
        for op in ops {
            match op {
                Op::Enqueue { keys, to, batch } => {
                    let mut events = Vec::new();
                    for _ in 0..batch {
                        let n = m.next_event;
                        m.next_event += 1;
                        let id = format!("e{n}");
                        let ks: Vec<&str> = keys.iter().map(|&k| KEYS[k]).collect();
                        let cs: Vec<&str> = to.iter().map(|&c| CONNECTORS[c]).collect();
                        let r = common::ev(&id, "t", &ks, &cs);
                        for c in &r.connectors {
                            m.deliveries.insert(
                                (n, c.clone()),
                                MDelivery {
                                    connector: c.clone(),
                                    seq: n,
                                    keys: ks.iter().map(|k| k.to_string()).collect(),
                                    st: St::Waiting { at: now },
                                    in_lanes: true,
                                },
                            );
                        }
                        events.push(r);
                    }
                    t.store.ingest(events, now).await.unwrap();
                }
                Op::Claim { connector, limit } => {
                    let c = CONNECTORS[connector];
                    let expected = m.runnable(c, now);
                    let got = t.store.claim(c, limit, now, LEASE).await.unwrap();
                    assert_eq!(
                        got.len(),
                        expected.len().min(limit),
                        "claim({c}, {limit}) at {now}: runnable {expected:?}, got {:?}",
                        got.iter().map(|d| &d.event.id).collect::<Vec<_>>()
                    );
                    for d in &got {
                        let key = (d.event.id[1..].parse::<usize>().unwrap(), c.to_string());
                        assert!(
                            expected.contains(&key),
                            "claimed {key:?} that is not runnable"
                        );
                        let md = m.deliveries.get_mut(&key).unwrap();
                        md.st = St::InFlight {
                            lease: d.lease,
                            until: now + LEASE,
                        };
                    }
                    m.in_flight.extend(got);
                }
                Op::Finish { pick, outcome } => {
                    if m.in_flight.is_empty() {
                        continue;
                    }
                    let d = m.in_flight.remove(pick % m.in_flight.len());
                    let key = (
                        d.event.id[1..].parse::<usize>().unwrap(),
                        d.connector.clone(),
                    );
                    let md = m.deliveries.get_mut(&key).unwrap();
                    let current = matches!(md.st, St::InFlight { lease, .. } if lease == d.lease);
                    let kind = match outcome {
                        Outcome::Done => CompletionKind::Delivered,
                        Outcome::Retry { after } => CompletionKind::Retry {
                            at: now + after,
                            error: "retry".into(),
                        },
                        Outcome::Reject { release } => CompletionKind::Dead {
                            error: "rejected".into(),
                            on_dead: if release {
                                OnDead::Release
                            } else {
                                OnDead::Hold
                            },
                        },
                    };
                    let applied = t
                        .store
                        .complete(vec![Completion::of(&d, kind)], now)
                        .await
                        .unwrap();
                    assert_eq!(
                        applied,
                        vec![current],
                        "completion of {key:?} with lease {}",
                        d.lease
                    );
                    if current {
                        md.st = match outcome {
                            Outcome::Done => St::Delivered,
                            Outcome::Retry { after } => St::Waiting { at: now + after },
                            Outcome::Reject { release } => St::Dead { holds: !release },
                        };
                        if matches!(outcome, Outcome::Done | Outcome::Reject { release: true }) {
                            md.in_lanes = false;
                        }
                    }
                }
                Op::Advance { ms } => now += ms,
                Op::Rescue => {
                    let mut expected = 0;
                    for d in m.deliveries.values_mut() {
                        if let St::InFlight { until, .. } = d.st {
                            if until <= now {
                                d.st = St::Waiting { at: now };
                                expected += 1;
                            }
                        }
                    }
                    assert_eq!(t.store.rescue_expired(now).await.unwrap(), expected);
                }
                Op::Crash => {
                    // In-flight attempts die with the process; their leases expire later.
                    m.in_flight.clear();
                    t.reopen().await;
                }
                Op::OperatorSkip { pick } | Op::OperatorRetry { pick } => {
                    let dead: Vec<(usize, String)> = m
                        .deliveries
                        .iter()
                        .filter(|(_, d)| matches!(d.st, St::Dead { .. }))
                        .map(|(k, _)| k.clone())
                        .collect();
                    if dead.is_empty() {
                        continue;
                    }
                    let key = dead[pick % dead.len()].clone();
                    let view = t
                        .store
                        .event(&format!("e{}", key.0))
                        .await
                        .unwrap()
                        .unwrap();
                    let id = view
                        .deliveries
                        .iter()
                        .find(|d| d.connector == key.1)
                        .unwrap()
                        .id;
                    let md = m.deliveries.get_mut(&key).unwrap();
                    if matches!(op, Op::OperatorSkip { .. }) {
                        assert!(t.store.skip_dead(id, now).await.unwrap());
                        md.st = St::Skipped;
                        md.in_lanes = false;
                    } else {
                        assert!(t.store.retry_dead(id, now).await.unwrap());
                        // A dead delivery that released its keys re-runs unordered.
                        md.st = St::Waiting { at: now };
                    }
                }
            }
        }

        assert_eq!(
            t.pending_flag_mismatches().await,
            0,
            "pending flag disagrees with state"
        );

        // The destination recovers: everything still pending is delivered.
        m.in_flight.clear();
        now += 10 * LEASE;
        t.store.rescue_expired(now).await.unwrap();
        for _ in 0..10_000 {
            let mut progressed = false;
            for c in CONNECTORS {
                let got = t.store.claim(c, 3, now, LEASE).await.unwrap();
                for d in &got {
                    let key = (d.event.id[1..].parse::<usize>().unwrap(), c.to_string());
                    let md = m.deliveries.get(&key).unwrap();
                    assert!(!m.blocked(md), "drain claimed {key:?} out of order");
                }
                let items: Vec<_> = got
                    .iter()
                    .map(|d| Completion::of(d, CompletionKind::Delivered))
                    .collect();
                progressed |= !items.is_empty();
                t.store.complete(items, now).await.unwrap();
                for d in got {
                    let key = (d.event.id[1..].parse::<usize>().unwrap(), c.to_string());
                    let md = m.deliveries.get_mut(&key).unwrap();
                    md.st = St::Delivered;
                    md.in_lanes = false;
                }
            }
            if !progressed {
                break;
            }
        }
        for ((n, c), d) in &m.deliveries {
            match d.st {
                St::Delivered | St::Dead { .. } | St::Skipped => {}
                St::Waiting { .. } if m.blocked(d) => {
                    // Only a held dead letter, directly or through deliveries
                    // waiting behind it, may keep it waiting.
                    assert!(
                        m.held_by_dead(d),
                        "e{n}/{c} waits with no dead letter ahead of it"
                    );
                }
                other => panic!("e{n}/{c} was never delivered: {other:?}"),
            }
            let view = t.store.event(&format!("e{n}")).await.unwrap();
            assert!(view.is_some(), "event e{n} lost");
        }
        assert_eq!(
            t.pending_flag_mismatches().await,
            0,
            "pending flag disagrees with state"
        );
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn sqlite_queue_matches_the_reference_model(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops, Backend::Sqlite);
    }

    #[test]
    fn sqlite_flushing_lanes_often_matches_the_reference_model(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops, Backend::SqliteFlushing);
    }

    #[test]
    fn postgres_queue_matches_the_reference_model(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops, Backend::Postgres);
    }
}
