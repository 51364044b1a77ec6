//! Group commit's one rule, for both stores: how long a group that found
//! little waiting waits for more before it begins.
//!
//! Each store applies its work in groups: SQLite's writer thread takes
//! whatever is queued when it is free, PostgreSQL's group workers likewise
//! (see `sqlite::Writer::run`, `postgres::group_worker`). Under load a group
//! fills while the one before it commits, so a commit, its sync and its
//! wake-ups are shared by many events. At a steady trickle — the ~1,000
//! events a second posted one by one that operators run — each commit is
//! quicker than the gap between requests, so nearly every group holds one
//! request and every event pays a transaction, a sync and a sleep and
//! wake-up of its own.
//!
//! So a group of posts waits for company where company is due: when it
//! holds fewer than eight posts and, at the rate posts arrived over the last
//! tenth of a second or more, one and a half or more are due within `wait`
//! (so that it gathers one or two, not none), it waits until its oldest
//! post has waited `wait` — or, where that rate fills it to eight sooner,
//! as long after its oldest post as filling takes — then takes in what
//! arrived meanwhile. (The
//! shorter wait matters to producers that post again only once answered:
//! under such a closed loop at thousands a second, a full `wait` cost 6% of
//! the delivered rate.) Posts that trickle in share a commit, and none waits for
//! company longer than `wait`; a post after a quiet spell, posts too sparse
//! to meet within `wait` (which would only answer later), and a group
//! already full enough begin at once. `wait = 0` turns waiting off.
//!
//! Waiting also has to pay: when the waits lately gathered less than half a
//! post each (a lone producer that posts again only once answered, whose
//! posts no other producer's join), groups stop waiting, and try one wait a
//! second to learn whether company has come back. Without that, such a
//! producer would spend most of its time waiting for itself.
//!
//! Posts make a group wait, and so do outcomes on PostgreSQL, whose settle
//! worker keeps a window of its own (its "posts" are outcomes). An outcome
//! holds no connector's slot while it waits: the dispatcher frees the slot
//! once the outcome is handed over (`dispatch`, `Settling`). Before it did,
//! outcomes that waited kept their slots, a closed loop that waiting slows
//! down (saturated delivery fell by a third in such a run). On SQLite
//! outcomes arrive while the posts' groups wait and join them; counting
//! them as company too changed nothing measurable, so there only posts make
//! a group wait. Claims never do. What else is queued shares the group and
//! waits with it. Posts mostly arrive whatever the store does; where they
//! do not (a producer that posts again only once answered), the wait is the
//! shorter one above.

use std::time::{Duration, Instant};

/// A group at least this large begins without waiting.
const COMPANY: usize = 8;

/// SQLite's default wait. Measured (BENCHMARKS.md, "Group commit waits for
/// company"): at 1,000 posts a second it cut the gateway's CPU per event by
/// almost a third; requests answer about 2 ms later (p99 under 4 ms, within
/// the 5 ms the product aims at).
pub const SQLITE_WAIT: Duration = Duration::from_millis(2);

/// PostgreSQL's default wait, longer: an ingest there already takes several
/// round trips, and the server's CPU per event, which each commit and round
/// trip costs, is what waiting saves most (a third at 1,000 posts a second;
/// p99 about 8.5 ms, within the 15 ms aimed at).
pub const POSTGRES_WAIT: Duration = Duration::from_millis(4);

/// Posts due within the wait, at least, for a group to wait for them.
const DUE: f64 = 1.5;

/// How long an arrival rate is counted over before it is used.
const PERIOD: Duration = Duration::from_millis(100);

/// Posts a wait must have gathered, on average lately, for groups to go on
/// waiting.
const WORTH: f64 = 0.5;

/// How often a window whose waits gathered too little tries one again.
const PROBE: Duration = Duration::from_secs(1);

/// When a commit group begins (see the module notes).
#[derive(Debug, Clone)]
pub struct CommitWindow {
    wait: Duration,
    /// Posts a second over the last period counted.
    rate: f64,
    /// Posts taken since `counting_since`.
    counted: usize,
    counting_since: Option<Instant>,
    /// Posts a wait gathered, a moving average (weight 1/8 to the newest).
    gain: f64,
    /// When the last wait began, and the group's posts then.
    waited: Option<Instant>,
    waiting_with: Option<usize>,
}

impl CommitWindow {
    /// A window that holds a group up to `wait` (zero: never).
    pub fn new(wait: Duration) -> Self {
        Self {
            wait,
            rate: 0.0,
            counted: 0,
            counting_since: None,
            gain: DUE,
            waited: None,
            waiting_with: None,
        }
    }

    /// A group of `posts`, the oldest queued `since`, could begin `now`:
    /// until when it waits for more first, if it does. Call it once per
    /// group with posts, when what was already queued has joined; then
    /// [`CommitWindow::took`] with how many posts the group took in all.
    pub fn until(&mut self, posts: usize, since: Instant, now: Instant) -> Option<Instant> {
        let start = *self.counting_since.get_or_insert(now);
        let counted_for = now.saturating_duration_since(start);
        if counted_for >= PERIOD {
            self.rate = self.counted as f64 / counted_for.as_secs_f64();
            self.counted = 0;
            self.counting_since = Some(now);
        }
        let due = self.rate * self.wait.as_secs_f64() >= DUE;
        let worth = self.gain >= WORTH
            || self
                .waited
                .is_none_or(|w| now.saturating_duration_since(w) >= PROBE);
        // No longer than, at that rate, the group takes to fill.
        let fill = COMPANY.saturating_sub(posts) as f64 / self.rate;
        let wait = Duration::try_from_secs_f64(fill).map_or(self.wait, |f| f.min(self.wait));
        let until = since + wait;
        let waits = due && worth && posts < COMPANY && until > now;
        if waits {
            self.waited = Some(now);
            self.waiting_with = Some(posts);
        }
        waits.then_some(until)
    }

    /// The group that began last took `posts` in all.
    pub fn took(&mut self, posts: usize) {
        self.counted += posts;
        if let Some(before) = self.waiting_with.take() {
            let gathered = posts.saturating_sub(before) as f64;
            self.gain += (gathered - self.gain) / 8.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(2);

    fn at(t: Instant, micros: u64) -> Instant {
        t + Duration::from_micros(micros)
    }

    /// Posts arriving one every `gap_us` for `for_us` from many producers:
    /// a group begins as its first arrives and, if it waits, takes in those
    /// that arrive meanwhile. How many of the groups waited.
    fn trickle(window: &mut CommitWindow, t: Instant, gap_us: u64, for_us: u64) -> usize {
        let (total, mut n, mut waited) = (for_us / gap_us, 0, 0);
        while n < total {
            let now = at(t, n * gap_us);
            let mut took = 1;
            if let Some(until) = window.until(1, now, now) {
                assert!(until <= now + WAIT, "longer than the wait");
                waited += 1;
                while n + took < total && at(t, (n + took) * gap_us) <= until {
                    took += 1;
                }
            }
            window.took(took as usize);
            n += took;
        }
        waited
    }

    /// A window after 200 ms of posts one every `gap_us`, and that moment.
    fn after_trickle(gap_us: u64) -> (CommitWindow, Instant) {
        let mut window = CommitWindow::new(WAIT);
        let t = Instant::now();
        trickle(&mut window, t, gap_us, 200_000);
        (window, at(t, 200_000))
    }

    #[test]
    fn a_steady_trickle_waits_once_its_rate_is_known_and_a_quiet_spell_ends_it() {
        let mut window = CommitWindow::new(WAIT);
        let t = Instant::now();
        // 1,000 posts a second: two are due within 2 ms, so after the first
        // tenth of a second each group waits and takes three.
        let waited = trickle(&mut window, t, 1_000, 300_000);
        assert!((60..=70).contains(&waited), "{waited} groups waited");
        let later = at(t, 1_300_000);
        assert_eq!(window.until(1, later, later), None, "after a quiet second");
        assert_eq!(window.until(1, later, later), None);
    }

    #[test]
    fn posts_too_sparse_to_meet_within_the_wait_begin_at_once() {
        let mut window = CommitWindow::new(WAIT);
        // 500 a second: one due within 2 ms, too few to wait for.
        assert_eq!(trickle(&mut window, Instant::now(), 2_000, 1_000_000), 0);
    }

    #[test]
    fn a_group_waits_only_for_what_its_oldest_has_not_waited_yet() {
        let (mut window, queued) = after_trickle(500);
        let now = at(queued, 1_500);
        assert_eq!(window.until(3, queued, now), Some(queued + WAIT));
        let now = at(queued, 2_500);
        assert_eq!(window.until(3, queued, now), None, "it waited long enough");
    }

    #[test]
    fn at_a_rate_that_fills_a_group_sooner_it_waits_only_that_long() {
        // 10,000 posts a second: seven more arrive within 0.7 ms.
        let (mut window, now) = after_trickle(100);
        let until = window.until(1, now, now).unwrap();
        let waits = until - now;
        assert!(
            waits >= Duration::from_micros(600) && waits <= Duration::from_micros(800),
            "{waits:?}"
        );
    }

    #[test]
    fn a_full_enough_group_begins_at_once() {
        let (mut window, now) = after_trickle(500);
        assert_eq!(window.until(COMPANY, now, now), None);
        assert!(window.until(COMPANY - 1, now, now).is_some());
    }

    #[test]
    fn waits_that_gather_nothing_stop_and_one_a_second_tries_again() {
        let mut window = CommitWindow::new(WAIT);
        let t = Instant::now();
        // One producer, posting again once answered: a post every 0.3 ms
        // when nothing waits, and no other post ever joins a waiting group.
        let (mut now, mut waits) = (t, Vec::new());
        while now < at(t, 3_000_000) {
            match window.until(1, now, now) {
                Some(until) => {
                    waits.push(now);
                    now = until;
                }
                None => now += Duration::from_micros(300),
            }
            window.took(1);
        }
        let after_learning: Vec<_> = waits.iter().filter(|w| **w > at(t, 500_000)).collect();
        assert!(
            waits.len() < 20 && (2..=3).contains(&after_learning.len()),
            "{} waits, {} after the first half second",
            waits.len(),
            after_learning.len()
        );
        // Company comes back (many producers, 1,000 posts a second): a try
        // gathers posts, and waiting resumes within the second.
        let waited = trickle(&mut window, at(t, 3_000_000), 1_000, 2_000_000);
        assert!(waited > 300, "{waited} of at most 666 groups waited");
    }

    #[test]
    fn a_zero_wait_never_waits() {
        let mut window = CommitWindow::new(Duration::ZERO);
        assert_eq!(trickle(&mut window, Instant::now(), 100, 300_000), 0);
    }
}
