//! The lane entries of a SQLite store's most recent deliveries, held by its
//! writer instead of in `lane_entries`.
//!
//! Keys are random (phone numbers, customer ids), so each lane entry written
//! straight into `lane_entries` lands on a random leaf of a B-tree as large as
//! the backlog: with a backlog of a few hundred thousand deliveries every
//! commit group dirtied about one 4 KiB page per key per event, and writing
//! those pages to the WAL (and again at checkpoints) cost two thirds of
//! batch-ingest throughput. The writer keeps new entries here and writes
//! them in one sorted pass once there are enough of them (a flush), so each
//! leaf is written once for many entries. Most entries never reach the
//! table: a delivery that completes before the next flush releases its
//! entries here.
//!
//! Nothing here needs to survive a crash: the entries of deliveries at or
//! above the store's lane watermark are rebuilt from `deliveries` and
//! `events.keys` when the store opens (and after a rolled-back transaction).
//! That is why a dead delivery that holds its lanes moves its entries to the
//! table at once: a rebuild could not tell it from one that released them.

use std::collections::{HashMap, VecDeque};

/// (connector, key)
type Lane = (String, String);

#[derive(Debug, Default)]
pub(crate) struct RecentLanes {
    /// Per lane, (seq, delivery id) in ascending seq.
    lanes: HashMap<Lane, VecDeque<(i64, i64)>>,
    entries: usize,
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
    pub fn remove(&mut self, connector: &str, key: &str, seq: i64) -> bool {
        let lane = (connector.to_string(), key.to_string());
        let Some(entries) = self.lanes.get_mut(&lane) else {
            return false;
        };
        let Ok(at) = entries.binary_search_by_key(&seq, |&(s, _)| s) else {
            return false;
        };
        entries.remove(at);
        if entries.is_empty() {
            self.lanes.remove(&lane);
        }
        self.entries -= 1;
        true
    }

    /// The lane's first entry held here: (seq, delivery id).
    pub fn head(&self, connector: &str, key: &str) -> Option<(i64, i64)> {
        self.lanes
            .get(&(connector.to_string(), key.to_string()))
            .and_then(|e| e.front().copied())
    }

    /// Entries of the lane held here.
    pub fn count(&self, connector: &str, key: &str) -> usize {
        self.lanes
            .get(&(connector.to_string(), key.to_string()))
            .map_or(0, VecDeque::len)
    }

    /// Every entry, sorted as `lane_entries`' primary key: (connector, key,
    /// seq, delivery id).
    pub fn sorted(&self) -> Vec<(&str, &str, i64, i64)> {
        let mut out: Vec<_> = self
            .lanes
            .iter()
            .flat_map(|((c, k), e)| e.iter().map(move |&(s, d)| (c.as_str(), k.as_str(), s, d)))
            .collect();
        out.sort_unstable();
        out
    }

    pub fn clear(&mut self) {
        self.lanes.clear();
        self.entries = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_keep_seq_order_per_lane_whatever_order_they_arrive_in() {
        let mut r = RecentLanes::default();
        r.push("c", "k", 5, 50);
        r.push("c", "k", 9, 90);
        r.push("c", "k", 2, 20);
        r.push("c", "other", 1, 10);
        r.push("d", "k", 3, 30);
        assert_eq!(r.len(), 5);
        assert_eq!(r.head("c", "k"), Some((2, 20)));
        assert_eq!(r.count("c", "k"), 3);
        assert_eq!(
            r.sorted(),
            vec![
                ("c", "k", 2, 20),
                ("c", "k", 5, 50),
                ("c", "k", 9, 90),
                ("c", "other", 1, 10),
                ("d", "k", 3, 30),
            ]
        );
    }

    #[test]
    fn removing_finds_the_exact_entry_and_forgets_empty_lanes() {
        let mut r = RecentLanes::default();
        r.push("c", "k", 1, 10);
        r.push("c", "k", 4, 40);
        assert!(!r.remove("c", "k", 2), "no entry of seq 2");
        assert!(!r.remove("d", "k", 1), "another connector's lane");
        assert!(r.remove("c", "k", 1));
        assert_eq!(r.head("c", "k"), Some((4, 40)));
        assert!(r.remove("c", "k", 4));
        assert_eq!(r.head("c", "k"), None);
        assert_eq!(r.count("c", "k"), 0);
        assert_eq!(r.len(), 0);
        assert!(r.lanes.is_empty());
        r.push("c", "k", 7, 70);
        r.clear();
        assert_eq!((r.len(), r.head("c", "k")), (0, None));
    }
}
