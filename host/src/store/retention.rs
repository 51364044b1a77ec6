//! What is kept of a finished event, and for how long: written once for
//! both stores (SQL valid in both dialects, run on the connection the
//! store's transaction holds). The duplicate look-up's statement is the
//! one thing each store has its own of: SQLite's writer runs
//! [`known_ids_lite`], PostgreSQL's ingest makes [`known_ids_from`] part of
//! its first statement; one [`known_of`] reads back what either found.
//!
//! An event whose deliveries are all final (delivered, skipped, expired,
//! superseded), or that had none, goes through three stages:
//! 1. **Whole**, for `storage.payload_retention_days` after it was
//!    accepted: payload, deliveries and attempt log, for the event view,
//!    the console and replays.
//! 2. **Its id only**, until `storage.retention_days` (the dedup window):
//!    `finished_ids` holds a 12-byte prefix of the SHA-256 of the id and an
//!    8-byte prefix of the event's digest, keyed by its `seq`, so a re-post
//!    is still answered as a duplicate (same body) or a conflict (another).
//!    Twelve bytes keep a false duplicate — two ids of one window sharing a
//!    prefix — below one in 10^10 even at 1,000 events/s for 30 days.
//! 3. **Nothing**: the id may be used again.
//!
//! Ids are forgotten in `seq` order, which is accept order: `finished_marks`
//! holds the first `seq` kept for each minute of acceptance, so "accepted
//! before the window" is "below the first `seq` of the window's first
//! minute", and the oldest ids go with one range delete. An id is thus
//! forgotten to the minute: up to a minute after its window ends.
//!
//! Events with a delivery pending or dead are never touched, whatever
//! their age.

use std::collections::{BTreeMap, HashMap};

use sha2::{Digest, Sha256};
use sqlx::QueryBuilder;

use super::catalog::{on, Catalog, Conn, Counts};
use super::{runs, state_of, StoreResult};
use crate::queue::{lanes, Millis};

/// Bytes of the id's SHA-256 kept past the payload retention.
pub const ID_HASH_BYTES: usize = 12;
/// Bytes of the event's digest kept past the payload retention: enough to
/// tell a re-post with another body (409) from a duplicate.
pub const DIGEST_BYTES: usize = 8;
const MINUTE_MS: Millis = 60_000;

/// The cut-offs of one purge (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purge {
    /// Finished events accepted before this lose everything but their id.
    pub compact_before: Millis,
    /// Ids of events accepted before this are forgotten; `None` keeps them.
    pub forget_before: Option<Millis>,
}

impl Purge {
    /// Events accepted before `before` deleted whole, ids included: one
    /// window for payloads and ids.
    pub fn whole(before: Millis) -> Self {
        Self {
            compact_before: before,
            forget_before: Some(before),
        }
    }

    /// The cut-offs at `now` for a dedup window of `window_days` (0: ids
    /// kept for good) and a payload retention of `payload_days` (0: as long
    /// as the window). `None` when nothing is ever purged.
    pub fn at(now: Millis, window_days: u32, payload_days: u32) -> Option<Self> {
        let ago = |days: u32| now - i64::from(days) * 24 * 3600 * 1000;
        let forget_before = (window_days > 0).then(|| ago(window_days));
        let compact_before = match payload_days {
            0 => forget_before?,
            days => ago(days),
        };
        Some(Self {
            // A payload retention longer than the window ends at the window.
            compact_before: forget_before.map_or(compact_before, |f| compact_before.max(f)),
            forget_before,
        })
    }
}

/// What one purge did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Events reduced to their id.
    pub compacted: u64,
    /// Events deleted whole (accepted before the dedup window).
    pub deleted: u64,
    /// Ids forgotten.
    pub forgotten: u64,
}

impl Purged {
    /// Events that left the `events` table.
    pub fn events(&self) -> u64 {
        self.compacted + self.deleted
    }
}

/// The prefix of the id's SHA-256 that `finished_ids` keys on.
pub(crate) fn id_hash(id: &str) -> [u8; ID_HASH_BYTES] {
    let full: [u8; 32] = Sha256::digest(id.as_bytes()).into();
    std::array::from_fn(|i| full[i])
}

/// A row of the duplicate look-up: `(id, None, digest)` of an event stored
/// whole, `(None, id_hash, digest prefix)` of one reduced to its id.
type Found = (Option<String>, Option<Vec<u8>>, Vec<u8>);

/// The duplicate look-up on PostgreSQL, as two `FROM` items of a larger
/// statement (the first of an ingest, `store::postgres`): `whole` holds
/// `whole.ids` and `whole.digests` of the events among the ids bound at
/// `ids` (`text[]`) that are stored whole, `reduced` holds
/// `reduced.hashes` and `reduced.digests` of those reduced to their id
/// (`hashes`: [`id_hashes`] of the same ids). Each is one row, of NULLs
/// where nothing is found; [`known_of_arrays`] reads them back.
pub(crate) fn known_ids_from(ids: &str, hashes: &str) -> String {
    format!(
        "(SELECT array_agg(id) AS ids, array_agg(digest) AS digests FROM events \
          WHERE id = ANY({ids})) AS whole, \
         (SELECT array_agg(id_hash) AS hashes, array_agg(digest) AS digests \
          FROM finished_ids WHERE id_hash = ANY({hashes})) AS reduced"
    )
}

/// [`id_hash`] of each of `ids`, as [`known_ids_from`] binds them.
pub(crate) fn id_hashes(ids: &[&str]) -> Vec<Vec<u8>> {
    ids.iter().map(|id| id_hash(id).to_vec()).collect()
}

/// Arrays of the look-up's columns, NULL where it found nothing.
pub(crate) type FoundArrays = (
    Option<Vec<String>>,
    Option<Vec<Vec<u8>>>,
    Option<Vec<Vec<u8>>>,
    Option<Vec<Vec<u8>>>,
);

/// The ids among `ids` that [`known_ids_from`] found (`whole.ids`,
/// `whole.digests`, `reduced.hashes`, `reduced.digests`), as
/// [`known_ids_lite`] answers them.
pub(crate) fn known_of_arrays(
    (ids_whole, digests_whole, hashes, digests_reduced): FoundArrays,
    ids: &[&str],
) -> HashMap<String, Vec<u8>> {
    let whole = ids_whole
        .unwrap_or_default()
        .into_iter()
        .zip(digests_whole.unwrap_or_default())
        .map(|(id, digest)| (Some(id), None, digest));
    let reduced = hashes
        .unwrap_or_default()
        .into_iter()
        .zip(digests_reduced.unwrap_or_default())
        .map(|(hash, digest)| (None, Some(hash), digest));
    known_of(whole.chain(reduced).collect(), ids)
}

/// The ids among `ids` already stored, each with its digest (a prefix of
/// it for an event reduced to its id), as `store::classify` takes them; on
/// the SQLite writer's own connection.
pub(crate) fn known_ids_lite(
    conn: &rusqlite::Connection,
    ids: &[&str],
) -> StoreResult<HashMap<String, Vec<u8>>> {
    let mut found: Vec<Found> = Vec::new();
    for run in runs(ids) {
        let mut qb = super::lite::Builder::new("SELECT id, NULL, digest FROM events WHERE id IN (");
        let mut sep = qb.separated(", ");
        for id in run {
            sep.push_bind(*id);
        }
        qb.push(") UNION ALL SELECT NULL, id_hash, digest FROM finished_ids WHERE id_hash IN (");
        let mut sep = qb.separated(", ");
        for id in run {
            sep.push_bind(id_hash(id).to_vec());
        }
        qb.push(")");
        found.extend(qb.build().fetch_all::<Found>(conn)?);
    }
    Ok(known_of(found, ids))
}

/// What a duplicate look-up found ([`known_ids_lite`], [`known_of_arrays`]),
/// as `store::classify` takes it.
fn known_of(found: Vec<Found>, ids: &[&str]) -> HashMap<String, Vec<u8>> {
    let mut known = HashMap::with_capacity(found.len());
    let mut by_hash: HashMap<[u8; ID_HASH_BYTES], &str> = HashMap::new();
    for (id, hash, digest) in found {
        match (id, hash) {
            (Some(id), _) => {
                known.insert(id, digest);
            }
            (None, Some(hash)) => {
                if by_hash.is_empty() {
                    by_hash.extend(ids.iter().map(|id| (id_hash(id), *id)));
                }
                let hash: Option<[u8; ID_HASH_BYTES]> = hash.as_slice().try_into().ok();
                if let Some(id) = hash.and_then(|h| by_hash.get(&h)) {
                    // An event still stored whole answers for its id.
                    known.entry(id.to_string()).or_insert(digest);
                }
            }
            (None, None) => {}
        }
    }
    known
}

/// Purges up to `limit` of the oldest finished events that `r` says are
/// due, in the caller's transaction, and forgets up to `limit` ids past
/// the window. `lock` ends the statement that selects the events
/// (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so nodes purging at once take
/// different events). `counts` learns the deliveries deleted.
pub(crate) async fn purge(
    mut conn: Conn<'_>,
    r: Purge,
    limit: usize,
    lock: &str,
    counts: &mut Counts,
) -> StoreResult<Purged> {
    let select = format!(
        "SELECT seq, id, digest, accepted_at FROM events e WHERE e.accepted_at < $1 \
         AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq \
             AND d.state NOT IN ({})) \
         ORDER BY seq LIMIT $2 {lock}",
        lanes::sql::final_states()
    );
    let due: Vec<(i64, String, Vec<u8>, i64)> = on!(conn.re(), |c| sqlx::query_as(&select)
        .bind(r.compact_before)
        .bind(limit as i64)
        .fetch_all(c)
        .await)?;
    let kept: Vec<&(i64, String, Vec<u8>, i64)> = due
        .iter()
        .filter(|(.., at)| r.forget_before.is_none_or(|f| *at >= f))
        .collect();
    keep_ids(conn.re(), &kept).await?;
    let seqs: Vec<i64> = due.iter().map(|d| d.0).collect();
    for run in runs(&seqs) {
        // Only the deliveries' delete returns rows: what the counts lose.
        for (table, end) in [
            (
                "attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE event_seq",
                "))",
            ),
            ("deliveries WHERE event_seq", ") RETURNING connector, state"),
            ("events WHERE seq", ")"),
        ] {
            let gone: Vec<(String, String)> = on!(conn.re(), |c| {
                let mut qb = QueryBuilder::<Db>::new(format!("DELETE FROM {table} IN ("));
                let mut sep = qb.separated(", ");
                for seq in run {
                    sep.push_bind(*seq);
                }
                qb.push(end);
                qb.build_query_as().fetch_all(c).await
            })?;
            for (connector, state) in gone {
                counts.gone(&connector, state_of(&state)?, 1);
            }
        }
    }
    let forgotten = match r.forget_before {
        Some(before) => forget_ids(conn, before, limit).await?,
        None => 0,
    };
    Ok(Purged {
        compacted: kept.len() as u64,
        deleted: (due.len() - kept.len()) as u64,
        forgotten,
    })
}

/// Writes the id rows of `events` (`seq`, id, digest, accepted at) and the
/// first `seq` of each of their minutes.
async fn keep_ids(mut conn: Conn<'_>, events: &[&(i64, String, Vec<u8>, i64)]) -> StoreResult<()> {
    for run in runs(events) {
        on!(conn.re(), |c| {
            let mut qb =
                QueryBuilder::<Db>::new("INSERT INTO finished_ids (seq, id_hash, digest) ");
            qb.push_values(run, |mut b, (seq, id, digest, _)| {
                let digest = &digest[..DIGEST_BYTES.min(digest.len())];
                b.push_bind(*seq)
                    .push_bind(id_hash(id).to_vec())
                    .push_bind(digest.to_vec());
            });
            // Only a hash prefix shared by two ids of one window lands here;
            // the newer stands rather than the purge failing for good.
            qb.push(
                " ON CONFLICT (id_hash) DO UPDATE SET seq = excluded.seq, digest = excluded.digest",
            );
            qb.build().execute(c).await.map(|_| ())
        })?;
    }
    // Sorted: nodes marking the same minutes lock them in one order.
    let mut marks: BTreeMap<i64, i64> = BTreeMap::new();
    for (seq, .., at) in events {
        let first = marks.entry(at.div_euclid(MINUTE_MS)).or_insert(*seq);
        *first = (*first).min(*seq);
    }
    let marks: Vec<(i64, i64)> = marks.into_iter().collect();
    for run in runs(&marks) {
        on!(conn.re(), |c| {
            let mut qb = QueryBuilder::<Db>::new("INSERT INTO finished_marks (minute, first_seq) ");
            qb.push_values(run, |mut b, (minute, seq)| {
                b.push_bind(*minute).push_bind(*seq);
            });
            qb.push(
                " ON CONFLICT (minute) DO UPDATE SET first_seq = CASE \
                 WHEN excluded.first_seq < finished_marks.first_seq THEN excluded.first_seq \
                 ELSE finished_marks.first_seq END",
            );
            qb.build().execute(c).await.map(|_| ())
        })?;
    }
    Ok(())
}

/// Forgets up to `limit` ids of events accepted before `before` (to the
/// minute); how many.
async fn forget_ids(mut conn: Conn<'_>, before: Millis, limit: usize) -> StoreResult<u64> {
    let minute = before.div_euclid(MINUTE_MS);
    // One statement, so the marks it reads and the rows it deletes are of
    // one snapshot: an id another node keeps meanwhile (a late compaction,
    // below the first mark read) is never deleted with those before it.
    // No mark from the window on: every id kept is older.
    let gone = on!(conn.re(), |c| sqlx::query(
        "DELETE FROM finished_ids WHERE seq IN (SELECT seq FROM finished_ids \
             WHERE seq < (SELECT COALESCE(MIN(first_seq), 9223372036854775807) \
                          FROM finished_marks WHERE minute >= $1) \
             ORDER BY seq LIMIT $2)"
    )
    .bind(minute)
    .bind(limit as i64)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    if (gone as usize) < limit {
        on!(conn, |c| sqlx::query(
            "DELETE FROM finished_marks WHERE minute < $1"
        )
        .bind(minute)
        .execute(c)
        .await
        .map(|_| ()))?;
    }
    Ok(gone)
}

/// The catalog's reads and writes of what retention keeps.
impl Catalog {
    /// SQLite's purge of finished events ([`purge`]), in
    /// a transaction of the catalog's connection while the queue writer
    /// stands aside: purged events hold no lane and none of the writer's
    /// state, and the writer's thread keeps to the statements of the hot
    /// path.
    pub(crate) async fn purge_aside(&self, r: Purge, limit: usize) -> StoreResult<Purged> {
        let mut tx = self.begin().await?;
        let mut counts = Counts::default();
        let purged = purge(tx.conn(), r, limit, "", &mut counts).await?;
        counts.write(tx.conn(), "").await?;
        tx.commit().await?;
        Ok(purged)
    }

    /// Whether `id` is of a finished event reduced to its id (past the
    /// payload retention, within the dedup window: see the module notes).
    pub async fn reduced_to_id(&self, id: &str) -> StoreResult<bool> {
        let hash = id_hash(id).to_vec();
        let found: Option<i64> = on!(self.read().await?.conn(), |c| sqlx::query_scalar(
            "SELECT seq FROM finished_ids WHERE id_hash = $1"
        )
        .bind(&hash)
        .fetch_optional(c)
        .await)?;
        Ok(found.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Millis = 24 * 3600 * 1000;

    #[test]
    fn cut_offs_follow_the_two_retentions() {
        let now = 100 * DAY;
        let r = Purge::at(now, 30, 7).unwrap();
        assert_eq!(r.compact_before, 93 * DAY);
        assert_eq!(r.forget_before, Some(70 * DAY));
        // Payloads kept as long as the window: events go whole.
        assert_eq!(Purge::at(now, 30, 0), Some(Purge::whole(70 * DAY)));
        // A payload retention past the window ends at the window.
        assert_eq!(Purge::at(now, 3, 7), Some(Purge::whole(97 * DAY)));
        // Ids kept for good, payloads not.
        let r = Purge::at(now, 0, 7).unwrap();
        assert_eq!((r.compact_before, r.forget_before), (93 * DAY, None));
        assert_eq!(Purge::at(now, 0, 0), None);
    }

    #[test]
    fn a_finished_id_answers_for_the_id_it_hashes_unless_the_event_is_whole() {
        let ids = ["a", "b", "c"];
        let rows = vec![
            (None, Some(id_hash("b").to_vec()), vec![2; DIGEST_BYTES]),
            (Some("a".to_string()), None, vec![1; 32]),
            (None, Some(id_hash("a").to_vec()), vec![9; DIGEST_BYTES]),
            (None, Some(id_hash("zz").to_vec()), vec![3; DIGEST_BYTES]),
        ];
        let known = known_of(rows, &ids);
        assert_eq!(known.len(), 2, "{known:?}");
        assert_eq!(known["a"], vec![1; 32]);
        assert_eq!(known["b"], vec![2; DIGEST_BYTES]);
    }
}
