//! The lane entries of a SQLite store's most recent deliveries, held by its
//! writer instead of in `lane_entries`.
//!
//! Keys are random (phone numbers, customer ids), so each lane entry written
//! straight into `lane_entries` lands on a random leaf of a B-tree as large as
//! the backlog: with a backlog of a few hundred thousand deliveries every
//! commit group dirtied about one 4 KiB page per key per event, and writing
//! those pages to the WAL (and again at checkpoints) cost two thirds of
//! batch-ingest throughput. The writer keeps new entries here and, once
//! there are enough of them, sweeps them into the table in key order, a
//! slice per commit group (a flush), so each leaf is written once for many
//! entries. Most entries never reach the table: a delivery that completes
//! before the sweep reaches its lanes releases its entries here.
//!
//! Nothing here needs to survive a crash: the entries of deliveries at or
//! above the store's lane watermark are rebuilt from `deliveries` and
//! `events.keys` when the store opens (and after a rolled-back transaction).
//! That is why a dead delivery that holds its lanes moves its entries to the
//! table at once: a rebuild could not tell it from one that released them.

use std::collections::{HashMap, VecDeque};

/// (connector, key)
pub(crate) type Lane = (String, String);

/// (connector, key, seq, delivery id), as a row of `lane_entries`.
pub(crate) type Entry = (String, String, i64, i64);

#[derive(Debug, Default)]
pub(crate) struct RecentLanes {
    /// Per lane, (seq, delivery id) in ascending seq.
    lanes: HashMap<Lane, VecDeque<(i64, i64)>>,
    entries: usize,
    /// The lanes a sweep has still to visit, in `lane_entries`' key order.
    to_sweep: VecDeque<Lane>,
}

impl RecentLanes {
    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Adds an entry. Entries of a lane usually arrive in seq order (an
    /// ingest hands out rising seqs); a rebuild may add them in any order.
    pub fn push(&mut self, connector: &str, key: &str, seq: i64, delivery: i64) {
        let lane = self
            .lanes
            .entry((connector.to_string(), key.to_string()))
            .or_default();
        match lane.back() {
            Some(&(last, _)) if last > seq => {
                let at = lane.partition_point(|&(s, _)| s < seq);
                lane.insert(at, (seq, delivery));
            }
            _ => lane.push_back((seq, delivery)),
        }
        self.entries += 1;
    }

    /// Removes the entry of `seq` from the lane; false when it is not here.
    pub fn remove(&mut self, lane: &Lane, seq: i64) -> bool {
        let Some(entries) = self.lanes.get_mut(lane) else {
            return false;
        };
        let Ok(at) = entries.binary_search_by_key(&seq, |&(s, _)| s) else {
            return false;
        };
        entries.remove(at);
        if entries.is_empty() {
            self.lanes.remove(lane);
        }
        self.entries -= 1;
        true
    }

    /// The lane's first entry held here: (seq, delivery id).
    pub fn head(&self, lane: &Lane) -> Option<(i64, i64)> {
        self.lanes.get(lane).and_then(|e| e.front().copied())
    }

    /// The lane's first `n` entries held here, in seq order.
    pub fn first(&self, lane: &Lane, n: usize) -> Vec<(i64, i64)> {
        self.lanes
            .get(lane)
            .map_or_else(Vec::new, |e| e.iter().take(n).copied().collect())
    }

    /// Whether any entry of the lane is held here.
    pub fn holds(&self, lane: &Lane) -> bool {
        self.lanes.contains_key(lane)
    }

    /// Entries of the lane held here.
    pub fn count(&self, lane: &Lane) -> usize {
        self.lanes.get(lane).map_or(0, VecDeque::len)
    }

    /// Starts a sweep: every lane held now, in key order.
    pub fn start_sweep(&mut self) {
        let mut lanes: Vec<Lane> = self.lanes.keys().cloned().collect();
        lanes.sort_unstable();
        self.to_sweep = lanes.into();
    }

    /// Takes the sweep's next whole lanes until at least `max` entries are
    /// taken, in `lane_entries`' key order. Lanes created since the sweep
    /// started wait for the next one. True when the sweep has visited every
    /// lane.
    pub fn sweep(&mut self, max: usize) -> (Vec<Entry>, bool) {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(lane) = self.to_sweep.pop_front() else {
                break;
            };
            if let Some(entries) = self.lanes.remove(&lane) {
                self.entries -= entries.len();
                out.extend(
                    entries
                        .into_iter()
                        .map(|(s, d)| (lane.0.clone(), lane.1.clone(), s, d)),
                );
            }
        }
        (out, self.to_sweep.is_empty())
    }

    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(connector: &str, key: &str) -> Lane {
        (connector.to_string(), key.to_string())
    }

    #[test]
    fn entries_keep_seq_order_per_lane_whatever_order_they_arrive_in() {
        let mut r = RecentLanes::default();
        r.push("c", "k", 5, 50);
        r.push("c", "k", 9, 90);
        r.push("c", "k", 2, 20);
        r.push("c", "other", 1, 10);
        r.push("d", "k", 3, 30);
        assert_eq!(r.len(), 5);
        assert_eq!(r.head(&lane("c", "k")), Some((2, 20)));
        assert_eq!(r.count(&lane("c", "k")), 3);
        let e = |c: &str, k: &str, s: i64, d: i64| (c.to_string(), k.to_string(), s, d);
        r.start_sweep();
        assert_eq!(
            r.sweep(usize::MAX).0,
            vec![
                e("c", "k", 2, 20),
                e("c", "k", 5, 50),
                e("c", "k", 9, 90),
                e("c", "other", 1, 10),
                e("d", "k", 3, 30),
            ]
        );
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn a_sweep_takes_whole_lanes_in_key_order_and_only_those_it_started_with() {
        let mut r = RecentLanes::default();
        let e = |c: &str, k: &str, s: i64, d: i64| (c.to_string(), k.to_string(), s, d);
        r.push("c", "b", 2, 20);
        r.push("c", "a", 1, 10);
        r.push("c", "a", 4, 40);
        r.push("c", "c", 3, 30);
        r.start_sweep();
        let (taken, done) = r.sweep(1);
        assert_eq!(
            (taken, done),
            (vec![e("c", "a", 1, 10), e("c", "a", 4, 40)], false),
            "a whole lane, past the limit"
        );
        // Entries added meanwhile go with their lane if the sweep has not
        // reached it yet; new lanes wait for the next sweep.
        r.push("c", "c", 5, 50);
        r.push("c", "0", 6, 60);
        assert!(
            r.remove(&lane("c", "b"), 2),
            "released before the sweep got there"
        );
        let (taken, done) = r.sweep(100);
        assert_eq!(
            (taken, done),
            (vec![e("c", "c", 3, 30), e("c", "c", 5, 50)], true)
        );
        assert_eq!((r.len(), r.head(&lane("c", "0"))), (1, Some((6, 60))));
        assert_eq!(r.sweep(100), (vec![], true), "nothing left to visit");
    }

    #[test]
    fn removing_finds_the_exact_entry_and_forgets_empty_lanes() {
        let mut r = RecentLanes::default();
        r.push("c", "k", 1, 10);
        r.push("c", "k", 4, 40);
        assert!(!r.remove(&lane("c", "k"), 2), "no entry of seq 2");
        assert!(!r.remove(&lane("d", "k"), 1), "another connector's lane");
        assert!(r.remove(&lane("c", "k"), 1));
        assert!(r.holds(&("c".to_string(), "k".to_string())));
        assert_eq!(r.head(&lane("c", "k")), Some((4, 40)));
        assert!(r.remove(&lane("c", "k"), 4));
        assert_eq!(r.head(&lane("c", "k")), None);
        assert_eq!(r.count(&lane("c", "k")), 0);
        assert!(!r.holds(&("c".to_string(), "k".to_string())));
        assert_eq!(r.len(), 0);
        assert!(r.lanes.is_empty());
        r.push("c", "k", 7, 70);
        r.clear();
        assert_eq!((r.len(), r.head(&lane("c", "k"))), (0, None));
    }
}
