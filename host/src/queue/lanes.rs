//! The lane rules, in one place and without I/O. Both stores call these
//! functions, or run the SQL fragments generated here; neither decides a
//! lane question on its own.
//!
//! A lane is `(connector, key)`. Every delivery of connector C for an event
//! with keys K has one entry in each lane `(C, k)`, ordered by the event's
//! accept sequence `seq`, from the moment it is accepted until a step that
//! [releases](Step::releases) it. The rules:
//!
//! - **Accept** ([`plan_accept`]): a new delivery counts one *blocker* per
//!   lane it joins behind an existing entry. It starts `blocked` if it has
//!   any ([`initial_state`]), else `ready`.
//! - **Ready**: a delivery may be claimed only when its blockers are zero,
//!   that is, when it heads *every* one of its lanes (a multi-key event
//!   waits for each lane's head), and when it is due and not past its
//!   expiry ([`sql::claimable`]).
//! - **Settle** ([`Step`]): each step has one resulting state and either
//!   keeps the delivery's lane entries or releases them.
//! - **Supersede** ([`supersessions`], SPEC §3 coalescing): an accepted
//!   event whose route declares its type full-state supersedes the
//!   connector's older deliveries with the same coalesce tag (group and key
//!   value) that have not started ([`sql::supersedable`]: `blocked` or
//!   `ready`, never attempted). Each is final at its own lane position: it
//!   leaves its lanes as any released delivery does, and the newer delivery
//!   still waits for every earlier delivery that was not superseded. Per
//!   connector and tag, the stored candidates and the accept's events are
//!   ordered by the event they carry (a replayed copy's original, else its
//!   own `seq`): each is superseded by the next, and the newest state
//!   survives. For live events that is accept order, as if posted one by
//!   one; a replayed copy of an old state never supersedes a newer one
//!   waiting, it is created superseded instead. One of the accept that is
//!   superseded is created so and never joins its lanes.
//! - **Release** ([`first_released`], [`promotions`]): when entries leave a
//!   lane, the lane's new head loses one blocker if an entry before it went,
//!   however many went; it becomes `ready` when it has none left
//!   ([`sql::unblocked_state`]). One delivery heading several released lanes
//!   loses one blocker per lane.
//!
//! Since every lane orders by the same `seq`, "waits for" always points to a
//! lower `seq`: waits never form a cycle.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::Hash;

use super::event::NewEvent;
use super::{DeliveryState, Millis, OnDead};

/// Every way a delivery moves on: attempt outcomes, the dispatcher's own
/// decisions and operator actions. A new step starts here (a new final
/// state starts at [`DeliveryState`], then its step here; see
/// docs/ARCHITECTURE.md §4): [`Step::state`] and [`Step::releases`] are all
/// a store needs to apply it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The attempt succeeded.
    Delivered,
    /// The attempt failed and will run again later, also when the sandbox
    /// was busy or the gateway handed the attempt back at shutdown.
    Retry,
    /// Rejected, or retried past `give_up_after_ms`.
    Dead(OnDead),
    /// Its lease ran out (the node stopped or the attempt hung).
    LeaseExpired,
    /// Not started before its route's `expire_after`.
    Expired,
    /// An operator dropped a dead letter.
    Skipped,
    /// An operator sent a dead letter back to the queue.
    OperatorRetry,
    /// A later event on the same keys replaced it (coalescing, SPEC §3).
    Superseded,
}

impl Step {
    /// The state the delivery is in after this step. [`Step::OperatorRetry`]
    /// and the others that go back to the queue name `ready`: whether that
    /// is `blocked` instead depends on its blockers ([`sql::REQUEUED_STATE`]).
    pub fn state(self) -> DeliveryState {
        match self {
            Step::Delivered => DeliveryState::Delivered,
            Step::Retry | Step::LeaseExpired | Step::OperatorRetry => DeliveryState::Ready,
            Step::Dead(_) => DeliveryState::Dead,
            Step::Expired => DeliveryState::Expired,
            Step::Skipped => DeliveryState::Skipped,
            Step::Superseded => DeliveryState::Superseded,
        }
    }

    /// Whether the delivery leaves its lanes, letting those behind it move
    /// up. Those that go back to the queue keep their place; a dead letter
    /// keeps it unless its connector says `on_dead = "release"`. An
    /// operator retry neither takes a place back nor gives one up: a dead
    /// letter that held its lanes still holds them, one that released them
    /// runs again outside any lane.
    pub fn releases(self) -> bool {
        match self {
            Step::Delivered | Step::Expired | Step::Skipped | Step::Superseded => true,
            Step::Dead(on_dead) => on_dead == OnDead::Release,
            Step::Retry | Step::LeaseExpired | Step::OperatorRetry => false,
        }
    }

    /// The delivery keeps its lane entries without being pending: a dead
    /// letter that holds its keys. A store that rebuilds its lanes from the
    /// pending deliveries must keep these entries where it can find them.
    pub fn parks(self) -> bool {
        !self.releases() && !self.state().is_pending()
    }
}

/// The state a delivery is accepted in.
pub fn initial_state(blockers: i64) -> DeliveryState {
    if blockers > 0 {
        DeliveryState::Blocked
    } else {
        DeliveryState::Ready
    }
}

/// An event and the connectors its type routes to.
#[derive(Debug, Clone)]
pub struct Routed {
    pub event: NewEvent,
    pub connectors: Vec<String>,
    /// Connectors whose delivery expires this many milliseconds after the
    /// event is accepted if it has not started (a route's `expire_after`);
    /// the others never expire.
    pub expire_after: BTreeMap<String, Millis>,
    /// Connectors whose route declares this event full-state, with its
    /// coalesce tag (`queue::route::coalesce_of`).
    pub coalesce: BTreeMap<String, String>,
    /// A replay's copy of a stored event: the replay and the original.
    pub origin: Option<Origin>,
}

/// What a replayed copy of an event comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// The replay that made it.
    pub replay: i64,
    /// The original event's `seq`: where its state stands among the others.
    pub seq: i64,
}

impl Routed {
    /// `event` for `connectors`, none of them expiring.
    pub fn new(event: NewEvent, connectors: Vec<String>) -> Self {
        Self {
            event,
            connectors,
            expire_after: BTreeMap::new(),
            coalesce: BTreeMap::new(),
            origin: None,
        }
    }

    /// Where its state stands among the events of its tag: the original's
    /// `seq` for a replayed copy, else `seq`, its own.
    pub fn order(&self, seq: i64) -> i64 {
        self.origin.map_or(seq, |o| o.seq)
    }

    /// The connectors it makes a delivery for: each once, however often
    /// its routes name it.
    pub fn targets(&self) -> impl Iterator<Item = &String> {
        self.connectors
            .iter()
            .enumerate()
            .filter(|(i, c)| !self.connectors[..*i].contains(c))
            .map(|(_, c)| c)
    }
}

/// A delivery an accept creates.
#[derive(Debug, PartialEq)]
pub struct NewDelivery<'a> {
    pub id: i64,
    pub seq: i64,
    pub connector: &'a str,
    pub blockers: i64,
    pub expires_at: Option<Millis>,
    /// Its coalesce tag, if its route declares the event full-state.
    pub coalesce: Option<&'a str>,
    /// The `seq` of a newer event of the same accept that supersedes it:
    /// it is created final and joins no lane.
    pub superseded_by: Option<i64>,
}

impl NewDelivery<'_> {
    pub fn state(&self) -> DeliveryState {
        match self.superseded_by {
            Some(_) => Step::Superseded.state(),
            None => initial_state(self.blockers),
        }
    }
}

/// A lane entry: connector, key, seq, delivery id.
pub type Entry<'a> = (&'a str, &'a str, i64, i64);

/// What accepting events writes: one delivery per (event, connector) and
/// one lane entry per (delivery, key), in accept order.
#[derive(Debug, PartialEq)]
pub struct AcceptPlan<'a> {
    pub deliveries: Vec<NewDelivery<'a>>,
    pub entries: Vec<Entry<'a>>,
}

/// Accepts `fresh` events with sequence numbers `seqs`: `occupied` holds
/// the lanes that have an entry already and learns the new ones, so each
/// delivery counts one blocker per lane it joins behind another. Those
/// `superseded` names ((seq, connector) → the superseding event's seq,
/// from [`supersessions`]) are created superseded, outside every lane.
pub fn plan_accept<'a>(
    fresh: &[&'a Routed],
    seqs: &[i64],
    mut next_delivery: impl FnMut() -> i64,
    occupied: &mut HashSet<(String, String)>,
    now: Millis,
    superseded: &HashMap<(i64, String), i64>,
) -> AcceptPlan<'a> {
    let mut plan = AcceptPlan {
        deliveries: Vec::new(),
        entries: Vec::new(),
    };
    for (r, &seq) in fresh.iter().zip(seqs) {
        for c in r.targets() {
            let id = next_delivery();
            let coalesce = r.coalesce.get(c).map(String::as_str);
            let superseded_by = superseded.get(&(seq, c.clone())).copied();
            let mut blockers = 0;
            if superseded_by.is_none() {
                for k in &r.event.keys {
                    if !occupied.insert((c.clone(), k.clone())) {
                        blockers += 1;
                    }
                    plan.entries.push((c, k, seq, id));
                }
            }
            plan.deliveries.push(NewDelivery {
                id,
                seq,
                connector: c,
                blockers,
                expires_at: r.expire_after.get(c).map(|ms| now.saturating_add(*ms)),
                coalesce,
                superseded_by,
            });
        }
    }
    plan
}

/// The (connector, coalesce tag) pairs of `fresh` events: a store looks
/// up the stored deliveries that may be superseded ([`sql::supersedable`])
/// with these tags.
pub fn tags_of<'a>(fresh: &[&'a Routed]) -> BTreeSet<(&'a str, &'a str)> {
    fresh
        .iter()
        .flat_map(|r| {
            r.targets()
                .filter_map(|c| Some((c.as_str(), r.coalesce.get(c)?.as_str())))
        })
        .collect()
}

/// A stored delivery not started yet with the tag of an event being
/// accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub id: i64,
    pub connector: String,
    pub tag: String,
    /// Its event's `seq`, and where its state stands ([`Routed::order`]).
    pub seq: i64,
    pub order: i64,
}

impl Candidate {
    pub fn new(id: i64, connector: &str, tag: &str, seq: i64, order: i64) -> Self {
        Self {
            id,
            connector: connector.to_string(),
            tag: tag.to_string(),
            seq,
            order,
        }
    }
}

/// What coalescing decides for one accept.
#[derive(Debug, Default, PartialEq)]
pub struct Supersessions {
    /// Stored deliveries to end: (delivery id, the superseding event's seq).
    pub stored: Vec<(i64, i64)>,
    /// This accept's deliveries created superseded: (seq, connector) → the
    /// superseding event's seq.
    pub fresh: HashMap<(i64, String), i64>,
}

/// Per (connector, tag), the stored `candidates` and the `fresh` events
/// (accepted with `seqs`) in the order of the states they carry: each is
/// superseded by the next, and the newest survives. `kept` are deliveries
/// whose state a destination has or is getting ([`sql::delivering`]): never
/// superseded, they still supersede an older state that comes after them,
/// which only a replay's copy can be (so a replay never puts back a state
/// older than one already delivered).
pub fn supersessions(
    fresh: &[&Routed],
    seqs: &[i64],
    candidates: &[Candidate],
    kept: &[Candidate],
) -> Supersessions {
    #[derive(Clone, Copy)]
    enum Item {
        Stored(i64),
        Fresh,
        Kept,
    }
    // Per (connector, tag): (order, seq, what it is).
    type Group = Vec<(i64, i64, Item)>;
    let mut groups: BTreeMap<(&str, &str), Group> = BTreeMap::new();
    for c in candidates {
        groups
            .entry((c.connector.as_str(), c.tag.as_str()))
            .or_default()
            .push((c.order, c.seq, Item::Stored(c.id)));
    }
    for (r, &seq) in fresh.iter().zip(seqs) {
        for c in r.targets() {
            if let Some(tag) = r.coalesce.get(c) {
                groups.entry((c.as_str(), tag.as_str())).or_default().push((
                    r.order(seq),
                    seq,
                    Item::Fresh,
                ));
            }
        }
    }
    for k in kept {
        if let Some(group) = groups.get_mut(&(k.connector.as_str(), k.tag.as_str())) {
            group.push((k.order, k.seq, Item::Kept));
        }
    }
    let mut out = Supersessions::default();
    for ((connector, _), mut items) in groups {
        items.sort_by_key(|&(order, seq, _)| (order, seq));
        for pair in items.windows(2) {
            let by = pair[1].1;
            match pair[0].2 {
                Item::Stored(id) => out.stored.push((id, by)),
                Item::Fresh => {
                    out.fresh.insert((pair[0].1, connector.to_string()), by);
                }
                Item::Kept => {}
            }
        }
    }
    out
}

/// How many deliveries accepting `fresh` creates.
pub fn delivery_count(fresh: &[&Routed]) -> usize {
    fresh.iter().map(|r| r.targets().count()).sum()
}

/// Per lane, the earliest `seq` of the entries `released` from it.
pub fn first_released<L: Hash + Eq>(
    released: impl IntoIterator<Item = (L, i64)>,
) -> HashMap<L, i64> {
    let mut first: HashMap<L, i64> = HashMap::new();
    for (lane, seq) in released {
        let at = first.entry(lane).or_insert(seq);
        *at = (*at).min(seq);
    }
    first
}

/// Given the earliest entry released from each lane and each lane's head
/// once the release is done (`head`: its seq and delivery id, `None` for an
/// empty lane), how many blockers each head loses: one per lane in which an
/// entry before it went. Ordered by delivery id.
pub fn promotions<L: Hash + Eq>(
    first_released: &HashMap<L, i64>,
    mut head: impl FnMut(&L) -> Option<(i64, i64)>,
) -> BTreeMap<i64, i64> {
    let mut lose: BTreeMap<i64, i64> = BTreeMap::new();
    for (lane, &released) in first_released {
        if let Some((seq, id)) = head(lane) {
            if seq > released {
                *lose.entry(id).or_default() += 1;
            }
        }
    }
    lose
}

/// The rules that run inside the stores' SQL, written once. Column names
/// are the `deliveries` table's; callers pass their own parameter
/// placeholders (both backends accept `$n`).
pub mod sql {
    /// The state of a delivery that loses `lost` blockers (an expression):
    /// `ready` once a `blocked` one has none left, unchanged otherwise. `d`
    /// is the `deliveries` row's name in the statement.
    pub fn unblocked_state(d: &str, lost: &str) -> String {
        format!(
            "CASE WHEN {d}.blockers = {lost} AND {d}.state = 'blocked' THEN 'ready' \
             ELSE {d}.state END"
        )
    }

    /// [`super::promotions`] inside one statement: from `gone`, the lane
    /// entries (`connector`, `key`, `seq`) the statement deletes, which its
    /// snapshot of `lane_entries` still shows, each new head that loses
    /// blockers and how many (`id`, `n`): one per lane in which an entry
    /// before it went. A lane's new head is its first entry not in `gone`.
    pub fn promotions(gone: &str) -> String {
        format!(
            "SELECT h.delivery_id AS id, COUNT(*) AS n \
             FROM (SELECT connector, key, MIN(seq) AS first FROM {gone} \
                   GROUP BY connector, key) f \
             CROSS JOIN LATERAL (SELECT e.seq, e.delivery_id FROM lane_entries e \
                 WHERE e.connector = f.connector AND e.key = f.key \
                 AND NOT EXISTS (SELECT 1 FROM {gone} g WHERE g.connector = e.connector \
                                 AND g.key = e.key AND g.seq = e.seq) \
                 ORDER BY e.seq LIMIT 1) h \
             WHERE h.seq > f.first GROUP BY h.delivery_id"
        )
    }

    /// The state of a delivery sent back to the queue by an operator: it
    /// waits again behind whatever it still waits for.
    pub const REQUEUED_STATE: &str = "CASE WHEN blockers > 0 THEN 'blocked' ELSE 'ready' END";

    /// Which of a connector's deliveries a claim may take at `now` (a
    /// placeholder), beside the connector filter: ready (head of all its
    /// lanes), due, and not expired.
    pub fn claimable(now: &str) -> String {
        format!("{} AND next_attempt_at <= {now}", ready_unexpired(now))
    }

    /// Which deliveries will be claimable once due ([`claimable`] but for
    /// the time): ready and not expired at `now`.
    pub fn ready_unexpired(now: &str) -> String {
        format!("state = 'ready' AND (expires_at IS NULL OR expires_at > {now})")
    }

    /// Deliveries no attempt has started: `blocked` or `ready`.
    pub const NOT_STARTED: &str = "state IN ('blocked', 'ready')";

    /// Which deliveries an expiry sweep may end at `now`: not started yet
    /// and past `expires_at`.
    pub fn expirable(now: &str) -> String {
        format!("expires_at IS NOT NULL AND {NOT_STARTED} AND expires_at <= {now}")
    }

    /// Which deliveries a lease rescue takes back at `now`.
    pub fn lease_expired(now: &str) -> String {
        format!("{IN_FLIGHT} AND lease_until <= {now}")
    }

    /// Which deliveries (`d`, the row's name) a newer full-state event may
    /// supersede: not started (`blocked` or `ready`) and never attempted,
    /// so one in flight, or one that failed and waits to run again, is
    /// never dropped.
    pub fn supersedable(d: &str) -> String {
        format!("{d}.state IN ('blocked', 'ready') AND {d}.attempts = 0")
    }

    /// Deliveries (`d`) whose state a destination has or is getting:
    /// delivered, in flight, or attempted and waiting to run again. A
    /// replay's copy of an older state never supersedes them, and never
    /// follows them either.
    pub fn delivering(d: &str) -> String {
        format!(
            "({d}.state IN ('delivered', 'in_flight') \
             OR ({d}.state IN ('blocked', 'ready') AND {d}.attempts > 0))"
        )
    }

    /// Deliveries an attempt holds (the lease may be anyone's).
    pub const IN_FLIGHT: &str = "state = 'in_flight'";

    /// The states a purge may delete: final ones.
    pub fn final_states() -> String {
        quoted_states(super::DeliveryState::is_final)
    }

    /// The pending states (`blocked`, `ready`, `in_flight`).
    pub fn pending_states() -> String {
        quoted_states(super::DeliveryState::is_pending)
    }

    /// The states `keep` selects, as a quoted SQL list.
    fn quoted_states(keep: fn(super::DeliveryState) -> bool) -> String {
        super::DeliveryState::ALL
            .into_iter()
            .filter(|s| keep(*s))
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::event::parse_body;

    fn routed(id: &str, keys: &[&str], to: &[&str]) -> Routed {
        let keys: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
        let body = format!(
            r#"{{"id":"{id}","type":"t","keys":[{}],"payload":{{}}}}"#,
            keys.join(",")
        );
        let event = parse_body(body.as_bytes(), 10).unwrap().remove(0);
        Routed::new(event, to.iter().map(|c| c.to_string()).collect())
    }

    #[test]
    fn every_step_has_one_state_and_one_lane_effect() {
        use DeliveryState as S;
        let table = [
            (Step::Delivered, S::Delivered, true),
            (Step::Retry, S::Ready, false),
            (Step::Dead(OnDead::Hold), S::Dead, false),
            (Step::Dead(OnDead::Release), S::Dead, true),
            (Step::LeaseExpired, S::Ready, false),
            (Step::Expired, S::Expired, true),
            (Step::Skipped, S::Skipped, true),
            (Step::OperatorRetry, S::Ready, false),
            (Step::Superseded, S::Superseded, true),
        ];
        for (step, state, releases) in table {
            assert_eq!(step.state(), state, "{step:?}");
            assert_eq!(step.releases(), releases, "{step:?}");
            // A final state always gives its lanes up.
            if state.is_final() {
                assert!(step.releases(), "{step:?}");
            }
        }
        let parks: Vec<Step> = table.iter().map(|t| t.0).filter(|s| s.parks()).collect();
        assert_eq!(parks, [Step::Dead(OnDead::Hold)]);
    }

    #[test]
    fn an_accepted_delivery_counts_one_blocker_per_lane_it_joins_behind_another() {
        let a = routed("a", &["k1"], &["hss"]);
        let b = routed("b", &["k1", "k2"], &["hss", "crm", "hss"]);
        let c = routed("c", &["k2", "k3"], &["hss"]);
        let mut occupied = HashSet::from([("crm".to_string(), "k2".to_string())]);
        let mut id = 100;
        let plan = plan_accept(
            &[&a, &b, &c],
            &[1, 2, 3],
            || {
                id += 1;
                id
            },
            &mut occupied,
            0,
            &HashMap::new(),
        );
        let got: Vec<(i64, &str, i64, DeliveryState)> = plan
            .deliveries
            .iter()
            .map(|d| (d.seq, d.connector, d.blockers, d.state()))
            .collect();
        assert_eq!(
            got,
            [
                (1, "hss", 0, DeliveryState::Ready),
                // Behind a on hss/k1; first on hss/k2.
                (2, "hss", 1, DeliveryState::Blocked),
                // crm/k2 was occupied before; crm/k1 is new.
                (2, "crm", 1, DeliveryState::Blocked),
                // Behind b on hss/k2; first on hss/k3.
                (3, "hss", 1, DeliveryState::Blocked),
            ]
        );
        assert_eq!(plan.entries.len(), 1 + 2 + 2 + 2);
        assert_eq!(delivery_count(&[&a, &b, &c]), 4);
    }

    #[test]
    fn within_one_accept_each_full_state_event_supersedes_the_one_before() {
        let tagged = |id: &str, keys: &[&str], tag: Option<&str>| {
            let mut r = routed(id, keys, &["hss", "crm"]);
            if let Some(t) = tag {
                r.coalesce.insert("hss".into(), t.into());
            }
            r
        };
        let a = tagged("a", &["customer:A1", "msisdn:1"], Some("fwd/A1"));
        let b = tagged("b", &["customer:A1"], None);
        let c = tagged("c", &["customer:A1", "msisdn:2"], Some("fwd/A1"));
        let d = tagged("d", &["customer:A2"], Some("fwd/A2"));
        let fresh = [&a, &b, &c, &d];
        let tags = tags_of(&fresh);
        assert_eq!(
            tags.into_iter().collect::<Vec<_>>(),
            [("hss", "fwd/A1"), ("hss", "fwd/A2")]
        );
        let decided = supersessions(&fresh, &[1, 2, 3, 4], &[], &[]);
        assert!(decided.stored.is_empty());
        let mut id = 0;
        let plan = plan_accept(
            &[&a, &b, &c, &d],
            &[1, 2, 3, 4],
            || {
                id += 1;
                id
            },
            &mut HashSet::new(),
            0,
            &decided.fresh,
        );
        let got: Vec<(i64, &str, i64, Option<i64>, DeliveryState)> = plan
            .deliveries
            .iter()
            .map(|d| (d.seq, d.connector, d.blockers, d.superseded_by, d.state()))
            .collect();
        use DeliveryState::{Blocked, Ready, Superseded};
        assert_eq!(
            got,
            [
                // Superseded by c, at once: joins no lane.
                (1, "hss", 0, Some(3), Superseded),
                // Not declared for crm: never superseded.
                (1, "crm", 0, None, Ready),
                // b is not full-state: first on hss/A1 now that a left.
                (2, "hss", 0, None, Ready),
                (2, "crm", 1, None, Blocked),
                // c waits for b, which was not superseded.
                (3, "hss", 1, None, Blocked),
                (3, "crm", 1, None, Blocked),
                (4, "hss", 0, None, Ready),
                (4, "crm", 0, None, Ready),
            ]
        );
        assert!(!plan.entries.iter().any(|e| e.3 == 1), "a joined a lane");
    }

    #[test]
    fn the_newest_state_survives_whichever_arrives_last() {
        let tagged = |id: &str, origin: Option<i64>| {
            let mut r = routed(id, &["customer:A1"], &["hss"]);
            r.coalesce.insert("hss".into(), "fwd/A1".into());
            r.origin = origin.map(|seq| Origin { replay: 7, seq });
            r
        };
        let stored = |id: i64, seq: i64, order: i64| Candidate {
            id,
            connector: "hss".into(),
            tag: "fwd/A1".into(),
            seq,
            order,
        };
        // Live: a waiting update (seq 10) and a new one (seq 20): the old
        // one goes, superseded by the new.
        let live = tagged("new", None);
        let d = supersessions(&[&live], &[20], &[stored(100, 10, 10)], &[]);
        assert_eq!(d.stored, [(100, 20)]);
        assert!(d.fresh.is_empty());
        // A replay's copies of states 3 and 8 arrive (seqs 30, 31) while the
        // state of seq 10 waits: the copies are created superseded, the
        // newer state waiting is kept.
        let (c3, c8) = (tagged("c3", Some(3)), tagged("c8", Some(8)));
        let d = supersessions(&[&c3, &c8], &[30, 31], &[stored(100, 10, 10)], &[]);
        assert!(d.stored.is_empty(), "{d:?}");
        assert_eq!(d.fresh[&(30, "hss".to_string())], 31);
        assert_eq!(d.fresh[&(31, "hss".to_string())], 10);
        // A copy of state 12 supersedes the waiting state of 10.
        let c12 = tagged("c12", Some(12));
        let d = supersessions(&[&c12], &[40], &[stored(100, 10, 10)], &[]);
        assert_eq!(d.stored, [(100, 40)]);
        // Nothing waits, but the state of seq 10 was delivered: a copy of
        // state 8 is created superseded by it; one of state 12 is not.
        let d = supersessions(&[&c8, &c12], &[50, 51], &[], &[stored(0, 10, 10)]);
        assert_eq!(d.fresh.get(&(50, "hss".to_string())), Some(&10));
        assert_eq!(d.fresh.get(&(51, "hss".to_string())), None);
    }

    #[test]
    fn a_head_loses_one_blocker_per_lane_in_which_something_before_it_went() {
        // Lane x: 1 and 2 released, head now 5 → one blocker, not two.
        // Lane y: 3 released, head now 5 → a second blocker for 5.
        // Lane z: 9 released, head now 4 (it was before) → nothing.
        // Lane w: emptied → nothing.
        let first = first_released([("x", 2), ("x", 1), ("y", 3), ("z", 9), ("w", 7)]);
        assert_eq!(first[&"x"], 1);
        let heads = HashMap::from([("x", (5, 50)), ("y", (5, 50)), ("z", (4, 40))]);
        let lose = promotions(&first, |l| heads.get(l).copied());
        assert_eq!(lose, BTreeMap::from([(50, 2)]));
    }

    #[test]
    fn the_sql_state_lists_follow_the_domain() {
        assert_eq!(
            sql::final_states(),
            "'delivered', 'superseded', 'skipped', 'expired'"
        );
        assert_eq!(sql::pending_states(), "'blocked', 'ready', 'in_flight'");
    }
}
