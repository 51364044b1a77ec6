//! The dispatcher's time: the wall clock in the gateway, or a simulated clock
//! that a driver moves forward, so that days of an outage run through the
//! real store and dispatcher in minutes.
//!
//! A simulated clock only moves when told to ([`Clock::advance_to`]). Its
//! driver waits until the dispatcher has settled ([`Clock::settled`]): every
//! participant it woke has gone round and is asleep on the clock again, and
//! no attempt is running ([`Clock::busy`]). Then it jumps to the earliest
//! sleeper's deadline ([`Clock::next_deadline`]), as a discrete-event
//! simulation does. Nothing in the dispatcher knows which clock it has.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::queue::{now_ms, Millis};

#[derive(Clone, Default)]
pub struct Clock {
    sim: Option<Arc<Sim>>,
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.sim {
            None => f.write_str("Clock::Wall"),
            Some(s) => write!(f, "Clock::Simulated({})", s.now.load(Ordering::SeqCst)),
        }
    }
}

#[derive(Default)]
struct Sim {
    now: AtomicI64,
    busy: AtomicUsize,
    /// Sleeps created so far: a woken participant that sleeps again adds one.
    registered: AtomicU64,
    sleepers: Mutex<Sleepers>,
    /// A sleep was created or work finished.
    changed: tokio::sync::Notify,
    /// For [`Clock::step`]: `registered` at the last step, and how many
    /// participants were woken since.
    stepped: Mutex<(u64, u64)>,
}

#[derive(Default)]
struct Sleepers {
    next_id: u64,
    /// (deadline, id) → the waker of the sleep, once polled.
    waiting: BTreeMap<(Millis, u64), Option<Waker>>,
}

fn lock(m: &Mutex<Sleepers>) -> std::sync::MutexGuard<'_, Sleepers> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Clock {
    /// The system clock and tokio's timers.
    pub fn wall() -> Self {
        Self { sim: None }
    }

    /// A simulated clock standing at `start` until advanced.
    pub fn simulated(start: Millis) -> Self {
        let sim = Sim::default();
        sim.now.store(start, Ordering::SeqCst);
        Self {
            sim: Some(Arc::new(sim)),
        }
    }

    pub fn now(&self) -> Millis {
        match &self.sim {
            None => now_ms(),
            Some(s) => s.now.load(Ordering::SeqCst),
        }
    }

    /// Sleeps for `d` of this clock's time.
    pub fn sleep(&self, d: Duration) -> Sleep {
        match &self.sim {
            None => Sleep(SleepInner::Wall(Box::pin(tokio::time::sleep(d)))),
            Some(s) => {
                let deadline = s
                    .now
                    .load(Ordering::SeqCst)
                    .saturating_add(d.as_millis().min(i64::MAX as u128) as i64);
                let mut w = lock(&s.sleepers);
                let id = w.next_id;
                w.next_id += 1;
                w.waiting.insert((deadline, id), None);
                drop(w);
                s.registered.fetch_add(1, Ordering::SeqCst);
                s.changed.notify_one();
                Sleep(SleepInner::Simulated {
                    sim: s.clone(),
                    key: Some((deadline, id)),
                })
            }
        }
    }

    /// Marks work in progress until the guard drops: a simulated clock's
    /// driver does not move time while any is held.
    pub fn busy(&self) -> Busy {
        if let Some(s) = &self.sim {
            s.busy.fetch_add(1, Ordering::SeqCst);
        }
        Busy(self.sim.clone())
    }

    // ---- Driving a simulated clock (no effect on the wall clock).

    /// Sleeps registered now, and work in progress.
    pub fn load(&self) -> (usize, usize) {
        match &self.sim {
            None => (0, 0),
            Some(s) => (
                lock(&s.sleepers).waiting.len(),
                s.busy.load(Ordering::SeqCst),
            ),
        }
    }

    /// The earliest deadline of a registered sleep.
    pub fn next_deadline(&self) -> Option<Millis> {
        let s = self.sim.as_ref()?;
        lock(&s.sleepers).waiting.keys().next().map(|k| k.0)
    }

    /// One step of a simulation's driver: waits until the dispatcher is at
    /// rest ([`Clock::settled`]), then moves time to the earliest deadline,
    /// at least `tick_ms` on and at most `limit`. Returns the new time.
    pub async fn step(&self, participants: usize, tick_ms: Millis, limit: Millis) -> Millis {
        let Some(s) = &self.sim else { return now_ms() };
        let (mark, woken) = *s.stepped.lock().unwrap_or_else(|p| p.into_inner());
        self.settled(participants, mark, woken, STEP_PATIENCE).await;
        let now = self.now();
        let target = self
            .next_deadline()
            .unwrap_or(limit)
            .max(now.saturating_add(tick_ms))
            .min(limit)
            .max(now);
        let mark = self.mark();
        let woken = self.advance_to(target);
        *s.stepped.lock().unwrap_or_else(|p| p.into_inner()) = (mark, woken);
        target
    }

    /// Tells [`Clock::step`] that `n` participants were woken besides the
    /// clock (a waker), so the next step waits for them to go round too.
    pub fn woke(&self, n: u64) {
        if let Some(s) = &self.sim {
            s.stepped.lock().unwrap_or_else(|p| p.into_inner()).1 += n;
        }
    }

    /// Sleeps created so far (see [`Clock::settled`]).
    pub fn mark(&self) -> u64 {
        self.sim
            .as_ref()
            .map_or(0, |s| s.registered.load(Ordering::SeqCst))
    }

    /// Moves time to `t` (never backwards) and wakes every sleep due by then;
    /// returns how many it woke.
    pub fn advance_to(&self, t: Millis) -> u64 {
        let Some(s) = &self.sim else { return 0 };
        let due: Vec<Option<Waker>> = {
            let mut w = lock(&s.sleepers);
            if t > s.now.load(Ordering::SeqCst) {
                s.now.store(t, Ordering::SeqCst);
            }
            let later = w.waiting.split_off(&(t.saturating_add(1), 0));
            let due = std::mem::replace(&mut w.waiting, later);
            // Due sleeps are removed: they complete on their next poll.
            due.into_values().collect()
        };
        let woken = due.len() as u64;
        for waker in due.into_iter().flatten() {
            waker.wake();
        }
        woken
    }

    /// Waits (in real time) until the simulation is at rest: at least
    /// `sleepers` sleeps registered, `woken` new sleeps since `mark` (each
    /// participant woken since then has gone round and slept again) and
    /// nothing busy. A participant woken twice at once sleeps again only
    /// once, so after `patience` of rest without the new sleeps it is taken
    /// as settled anyway.
    pub async fn settled(&self, sleepers: usize, mark: u64, woken: u64, patience: Duration) {
        let Some(s) = &self.sim else { return };
        let mut rest_since: Option<std::time::Instant> = None;
        loop {
            let changed = s.changed.notified();
            let (n, busy) = self.load();
            let at_rest = n >= sleepers && busy == 0;
            if at_rest && self.mark().saturating_sub(mark) >= woken {
                return;
            }
            if at_rest {
                let since = *rest_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= patience {
                    return;
                }
            } else {
                rest_since = None;
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep(Duration::from_millis(1)) => {}
            }
        }
    }
}

/// How long [`Clock::step`] waits at rest for a woken participant that does
/// not sleep again (one woken twice at once sleeps again only once).
const STEP_PATIENCE: Duration = Duration::from_millis(20);

/// A sleep on a [`Clock`].
pub struct Sleep(SleepInner);

enum SleepInner {
    Wall(Pin<Box<tokio::time::Sleep>>),
    Simulated {
        sim: Arc<Sim>,
        key: Option<(Millis, u64)>,
    },
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.get_mut().0 {
            SleepInner::Wall(s) => s.as_mut().poll(cx),
            SleepInner::Simulated { sim, key } => {
                let Some(k) = *key else {
                    return Poll::Ready(());
                };
                let mut w = lock(&sim.sleepers);
                match w.waiting.get_mut(&k) {
                    // Removed by `advance_to`: due.
                    None => {
                        *key = None;
                        Poll::Ready(())
                    }
                    Some(slot) => {
                        *slot = Some(cx.waker().clone());
                        Poll::Pending
                    }
                }
            }
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let SleepInner::Simulated { sim, key: Some(k) } = &mut self.0 {
            lock(&sim.sleepers).waiting.remove(k);
        }
    }
}

/// Work in progress on a simulated clock (see [`Clock::busy`]).
pub struct Busy(Option<Arc<Sim>>);

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(s) = &self.0 {
            s.busy.fetch_sub(1, Ordering::SeqCst);
            s.changed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_simulated_sleep_ends_when_time_reaches_it_and_not_before() {
        let c = Clock::simulated(1_000);
        let early = c.sleep(Duration::from_millis(500));
        let late = c.sleep(Duration::from_secs(60));
        assert_eq!(c.load(), (2, 0));
        assert_eq!(c.next_deadline(), Some(1_500));
        let early = tokio::spawn(early);
        assert_eq!(c.advance_to(1_499), 0);
        tokio::task::yield_now().await;
        assert!(!early.is_finished());
        assert_eq!(c.advance_to(1_500), 1);
        early.await.unwrap();
        assert_eq!(c.now(), 1_500);
        assert_eq!(c.next_deadline(), Some(61_000));
        // A dropped sleep is no longer waited for.
        drop(late);
        assert_eq!(c.load(), (0, 0));
        // Time never goes back.
        c.advance_to(10);
        assert_eq!(c.now(), 1_500);
    }

    #[tokio::test]
    async fn settled_waits_for_busy_work() {
        let c = Clock::simulated(0);
        let busy = c.busy();
        let mark = c.mark();
        let _sleep = c.sleep(Duration::from_secs(1));
        let patience = Duration::from_secs(60);
        let waiter = {
            let c = c.clone();
            tokio::spawn(async move { c.settled(1, mark, 1, patience).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(!waiter.is_finished());
        drop(busy);
        waiter.await.unwrap();
        // Woken participants that have not slept again are waited for.
        let mark = c.mark();
        let waiter = {
            let c = c.clone();
            tokio::spawn(async move { c.settled(1, mark, 1, patience).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(!waiter.is_finished());
        let _again = c.sleep(Duration::from_secs(1));
        waiter.await.unwrap();
    }
}
