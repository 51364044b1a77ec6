//! What a SQLite store's writer knows about which lanes have rows in
//! `lane_entries`, so that it looks there only when it must.
//!
//! Every new lane an ingest joins, and every lane a completion releases, has
//! to be checked for entries in the table (is the new delivery blocked? who
//! is the lane's new head?). Asked of SQLite, each check is a random descent
//! of a B-tree as large as the backlog, and with a few hundred thousand
//! deliveries queued those lookups were about a quarter of batch-ingest time
//! (BENCHMARKS.md). Two answers come from memory instead:
//!
//! - **"Certainly not there"**, from a counting Bloom filter ([`LaneFilter`])
//!   of every row in the table: most events name numbers and customers that
//!   nothing queued holds.
//! - **"Certainly there"**, from a bounded set of lanes a lookup found rows
//!   in and none of whose rows has been deleted since: a customer with work
//!   queued behind a destination that is down gets more events.
//!
//! Neither may ever be wrong. Every row written to `lane_entries` goes
//! through [`TableLanes::added`] and every row deleted through
//! [`TableLanes::removed`]. Both start over (the set empty, the filter
//! counting nothing) when the store opens and after a rolled-back
//! transaction, and the filter is then rebuilt from the table a page at a
//! time, in lane order, while the store serves ([`TableLanes::scanned_to`]):
//! a lane the scan has not passed yet answers "maybe" (the table is asked),
//! and rows written or deleted there count only once the scan has passed
//! them, as the scan itself then counts what the table holds. So a store
//! with millions of lanes queued serves at once rather than after reading
//! them all.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};

/// Slots a lane occupies.
const HASHES: u64 = 3;

/// Counts, per slot, the rows in the table whose lane hashes to it (three
/// slots a lane). A lane with a zero slot has no row. A slot shared by
/// several lanes answers "maybe" for each, and a slot that reaches
/// `u8::MAX` stays there for good (it can no longer tell how many rows it
/// stands for); both only cost lookups.
///
/// Memory is fixed (one byte a slot, pages touched as slots are used); with
/// the default 16 Mi slots, about 3% of lookups of an empty lane still reach
/// the table while it holds 2,000,000 lanes, and over half while it holds
/// 10,000,000.
#[derive(Debug)]
pub(crate) struct LaneFilter {
    slots: Vec<u8>,
    mask: u64,
    hasher: RandomState,
}

impl LaneFilter {
    /// A filter of `slots` counters, rounded up to a power of two (at
    /// least 8).
    pub fn new(slots: usize) -> Self {
        let n = slots.max(8).next_power_of_two();
        Self {
            slots: vec![0; n],
            mask: n as u64 - 1,
            hasher: RandomState::new(),
        }
    }

    fn positions(&self, connector: &str, key: &str) -> impl Iterator<Item = usize> + use<> {
        let mut h = self.hasher.build_hasher();
        connector.hash(&mut h);
        key.hash(&mut h);
        let hash = h.finish();
        // Double hashing (Kirsch–Mitzenmacher): slot i = h1 + i·h2, with h2
        // odd so the three slots differ whenever the table has four or more.
        let (h1, h2) = (hash & 0xffff_ffff, (hash >> 32) | 1);
        let mask = self.mask;
        (0..HASHES).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) & mask) as usize)
    }

    /// One more row of this lane is in the table.
    pub fn add(&mut self, connector: &str, key: &str) {
        for at in self.positions(connector, key) {
            let slot = &mut self.slots[at];
            *slot = slot.saturating_add(1);
        }
    }

    /// One row of this lane left the table.
    pub fn remove(&mut self, connector: &str, key: &str) {
        for at in self.positions(connector, key) {
            let slot = &mut self.slots[at];
            debug_assert!(*slot > 0, "lane filter: a row removed that was never added");
            if *slot != u8::MAX {
                *slot = slot.saturating_sub(1);
            }
        }
    }

    /// False only when the table holds no row of this lane.
    pub fn may_hold(&self, connector: &str, key: &str) -> bool {
        self.positions(connector, key).all(|at| self.slots[at] > 0)
    }

    /// Forgets everything (before a rebuild). The slots are allocated
    /// afresh rather than zeroed, so untouched pages stay unmapped.
    pub fn clear(&mut self) {
        self.slots = vec![0; self.slots.len()];
    }
}

/// (connector, key)
type Lane = (String, String);

/// How far the filter's rebuild from the table has come.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scanned {
    /// Every lane up to this one, in (connector, key) order; `None`: none.
    UpTo(Option<Lane>),
    All,
}

/// The writer's knowledge of the table's lanes: see the module docs.
#[derive(Debug)]
pub(crate) struct TableLanes {
    filter: LaneFilter,
    scanned: Scanned,
    /// Lanes with at least one row in the table.
    known: HashSet<Lane>,
    /// The most lanes `known` holds; it starts over when full (~100 bytes
    /// a lane).
    known_cap: usize,
}

/// What [`TableLanes`] can say about a lane without asking the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InTable {
    Yes,
    No,
    Maybe,
}

impl TableLanes {
    pub fn new(filter_slots: usize, known_cap: usize) -> Self {
        Self {
            filter: LaneFilter::new(filter_slots),
            scanned: Scanned::All,
            known: HashSet::new(),
            known_cap,
        }
    }

    /// Whether the filter counts this lane's rows: the rebuild has passed it.
    fn counts(&self, connector: &str, key: &str) -> bool {
        match &self.scanned {
            Scanned::All => true,
            Scanned::UpTo(None) => false,
            Scanned::UpTo(Some((c, k))) => (connector, key) <= (c.as_str(), k.as_str()),
        }
    }

    pub fn get(&self, lane: &Lane) -> InTable {
        if self.known.contains(lane) {
            InTable::Yes
        } else if self.may_hold(&lane.0, &lane.1) {
            InTable::Maybe
        } else {
            InTable::No
        }
    }

    /// False only when the table holds no row of this lane.
    pub fn may_hold(&self, connector: &str, key: &str) -> bool {
        !self.counts(connector, key) || self.filter.may_hold(connector, key)
    }

    /// Where the rebuild goes on from: `None` when it is done, else the
    /// last lane counted (`Some(None)`: none yet).
    pub fn rebuild_from(&self) -> Option<Option<&Lane>> {
        match &self.scanned {
            Scanned::All => None,
            Scanned::UpTo(lane) => Some(lane.as_ref()),
        }
    }

    /// The rebuild read `rows`: every row of the lanes after the last one
    /// counted, up to `last` (every lane when `None`), in the table as it
    /// stands.
    pub fn scanned_to<'a>(
        &mut self,
        rows: impl IntoIterator<Item = (&'a str, &'a str)>,
        last: Option<Lane>,
    ) {
        for (c, k) in rows {
            self.filter.add(c, k);
        }
        self.scanned = last.map_or(Scanned::All, |lane| Scanned::UpTo(Some(lane)));
    }

    /// A lookup found rows of `lane` in the table.
    pub fn found(&mut self, lane: Lane) {
        if self.known.len() >= self.known_cap {
            self.known.clear();
        }
        if self.known_cap > 0 {
            self.known.insert(lane);
        }
    }

    /// A row of this lane was written to the table.
    pub fn added(&mut self, connector: &str, key: &str) {
        if self.counts(connector, key) {
            self.filter.add(connector, key);
        }
    }

    /// A row of this lane was deleted from the table: the lane may now be
    /// empty.
    pub fn removed(&mut self, lane: &Lane) {
        if self.counts(&lane.0, &lane.1) {
            self.filter.remove(&lane.0, &lane.1);
        }
        self.known.remove(lane);
    }

    /// Forgets everything and starts the rebuild from the table over.
    pub fn restart(&mut self) {
        self.filter.clear();
        self.known = HashSet::new();
        self.scanned = Scanned::UpTo(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_maybe_for_every_lane_with_rows_and_no_for_an_empty_filter() {
        let mut f = LaneFilter::new(1 << 12);
        for i in 0..200 {
            assert!(!f.may_hold("hss", &format!("k{i}")));
        }
        for i in 0..200 {
            f.add("hss", &format!("k{i}"));
        }
        for i in 0..200 {
            assert!(f.may_hold("hss", &format!("k{i}")), "k{i}");
        }
        // Another connector's lane of the same key is another lane; with 600
        // of 4,096 slots set, most lanes not added answer no.
        let hits = (0..200)
            .filter(|i| f.may_hold("crm", &format!("k{i}")))
            .count();
        assert!(hits < 20, "{hits} false positives of 200");
    }

    #[test]
    fn removing_every_row_of_a_lane_empties_it_and_keeps_the_others() {
        let mut f = LaneFilter::new(1 << 12);
        f.add("hss", "a");
        f.add("hss", "a");
        f.add("hss", "b");
        f.remove("hss", "a");
        assert!(f.may_hold("hss", "a"), "one row of a is left");
        f.remove("hss", "a");
        assert!(f.may_hold("hss", "b"));
        f.remove("hss", "b");
        assert!(f.slots.iter().all(|&s| s == 0));
    }

    #[test]
    fn lanes_sharing_slots_keep_each_other_maybe() {
        // Eight slots, three per lane: collisions everywhere.
        let mut f = LaneFilter::new(8);
        let lanes: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
        for k in &lanes {
            f.add("c", k);
        }
        for (i, k) in lanes.iter().enumerate() {
            f.remove("c", k);
            for rest in &lanes[i + 1..] {
                assert!(f.may_hold("c", rest), "{rest} lost after removing {k}");
            }
        }
        assert!(f.slots.iter().all(|&s| s == 0));
    }

    #[test]
    fn a_lane_found_is_yes_until_one_of_its_rows_goes() {
        let mut t = TableLanes::new(1 << 10, 2);
        let lane = |k: &str| ("hss".to_string(), k.to_string());
        assert_eq!(t.get(&lane("a")), InTable::No);
        t.added("hss", "a");
        t.added("hss", "a");
        assert_eq!(t.get(&lane("a")), InTable::Maybe);
        t.found(lane("a"));
        assert_eq!(t.get(&lane("a")), InTable::Yes);
        t.removed(&lane("a"));
        assert_eq!(t.get(&lane("a")), InTable::Maybe, "one row is left");
        t.removed(&lane("a"));
        assert_eq!(t.get(&lane("a")), InTable::No);
    }

    #[test]
    fn the_known_lanes_start_over_when_full() {
        let mut t = TableLanes::new(1 << 10, 2);
        let lane = |k: &str| ("hss".to_string(), k.to_string());
        for k in ["a", "b", "c"] {
            t.added("hss", k);
            t.found(lane(k));
        }
        assert_eq!(t.get(&lane("c")), InTable::Yes);
        assert_eq!(t.get(&lane("a")), InTable::Maybe, "forgotten, still maybe");
        t.restart();
        t.scanned_to([], None);
        assert_eq!(t.get(&lane("c")), InTable::No);
        let mut none = TableLanes::new(8, 0);
        none.added("hss", "a");
        none.found(lane("a"));
        assert_eq!(none.get(&lane("a")), InTable::Maybe);
    }

    /// The rebuild meets writes: a lane it has not reached answers maybe,
    /// and a row written or deleted there is left for the rebuild to count
    /// (it reads the table as it stands), never counted twice.
    #[test]
    fn a_rebuild_under_way_answers_maybe_ahead_and_counts_each_row_once() {
        let mut t = TableLanes::new(1 << 12, 16);
        let lane = |k: &str| ("hss".to_string(), k.to_string());
        t.restart();
        assert_eq!(t.get(&lane("a")), InTable::Maybe, "nothing counted yet");
        // "b" and "d" hold a row each; "c" gets one ahead of the rebuild.
        t.added("hss", "c");
        t.scanned_to([("hss", "b")], Some(lane("b")));
        assert_eq!(t.get(&lane("a")), InTable::No, "passed, no row");
        assert_eq!(t.get(&lane("b")), InTable::Maybe);
        assert_eq!(
            t.get(&lane("c")),
            InTable::Maybe,
            "ahead: the table decides"
        );
        // Behind the rebuild a write counts at once.
        t.added("hss", "a");
        assert_eq!(t.get(&lane("a")), InTable::Maybe);
        t.removed(&lane("a"));
        t.removed(&lane("b"));
        // Ahead of it, a delete is not counted either: the rebuild will
        // not find the row.
        t.removed(&lane("d"));
        t.scanned_to([("hss", "c")], None);
        for (k, want) in [
            ("a", InTable::No),
            ("b", InTable::No),
            ("c", InTable::Maybe),
        ] {
            assert_eq!(t.get(&lane(k)), want, "{k}");
        }
        assert_eq!(t.get(&lane("d")), InTable::No);
        t.removed(&lane("c"));
        assert!(
            t.filter.slots.iter().all(|&s| s == 0),
            "every row counted once"
        );

        // With eight slots every lane shares them: a delete ahead of the
        // rebuild that reached the filter would empty lanes still holding
        // rows.
        let mut t = TableLanes::new(8, 0);
        t.restart();
        let held: Vec<String> = (0..6).map(|i| format!("b{i}")).collect();
        t.scanned_to(held.iter().map(|k| ("hss", k.as_str())), Some(lane("b9")));
        for i in 0..20 {
            t.removed(&lane(&format!("z{i}")));
        }
        for k in &held {
            assert_eq!(t.get(&lane(k)), InTable::Maybe, "{k} holds a row");
        }
    }

    #[test]
    fn a_saturated_slot_stays_maybe_for_good() {
        let mut f = LaneFilter::new(8);
        for _ in 0..300 {
            f.add("c", "hot");
        }
        for _ in 0..300 {
            f.remove("c", "hot");
        }
        // The count was lost at 255: the lane answers maybe for ever, which
        // only costs a lookup.
        assert!(f.may_hold("c", "hot"));
        f.clear();
        assert!(!f.may_hold("c", "hot"));
    }
}
