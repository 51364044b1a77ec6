//! The egress gate: until when this process may send anything upstream.
//!
//! Where several gateways share the work, one that may have been given up
//! on by the others (its heartbeat unconfirmed for too long: frozen, paused,
//! cut off from the database) must stop sending before they take its work
//! over, or a destination could see a stale "assign" after the new owner's
//! "release; assign". The host moves the gate's closing time on each time
//! the store confirms its heartbeat; once that time passes (read from the
//! monotonic clock at the moment of each check, so a process resumed after
//! a freeze finds it closed before doing anything else), the egress path
//! refuses new requests, stops writing request bodies, and abandons the
//! responses it waits for. A process that works alone leaves it open.
//!
//! Reopening does not revive what the closing stopped: the others may have
//! taken that work over meanwhile. Work holds the [`Pass`] of the time it
//! was claimed, and a pass is good only until the gate first closes after
//! it was issued, even if the gate has reopened since.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// See the module notes. Shared (`Arc`) between the host, which moves it
/// on, and every call's egress path, which reads it.
#[derive(Debug)]
pub struct EgressGate {
    base: Instant,
    /// Closing time in nanoseconds after `base`; `u64::MAX`: never.
    until: AtomicU64,
    /// How many times the gate reopened after it had closed.
    reopened: AtomicU64,
}

/// Permission to send for work claimed while the gate was open
/// ([`EgressGate::pass`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pass(u64);

impl Pass {
    pub fn number(self) -> u64 {
        self.0
    }

    pub fn of_number(n: u64) -> Pass {
        Pass(n)
    }
}

impl Default for EgressGate {
    fn default() -> Self {
        Self::open()
    }
}

impl EgressGate {
    /// Open for good (a process that works alone).
    pub fn open() -> Self {
        Self {
            base: Instant::now(),
            until: AtomicU64::new(u64::MAX),
            reopened: AtomicU64::new(0),
        }
    }

    /// Open until `at`, and from then on only as far as [`open_until`]
    /// moves it.
    ///
    /// [`open_until`]: EgressGate::open_until
    pub fn closing_at(at: Instant) -> Self {
        let gate = Self {
            base: Instant::now(),
            until: AtomicU64::new(0),
            reopened: AtomicU64::new(0),
        };
        gate.open_until(at);
        gate
    }

    /// Moves the closing time on to `at`; never back (confirmations may
    /// arrive out of order). Reopening a closed gate voids every pass
    /// issued before (see the module notes).
    pub fn open_until(&self, at: Instant) {
        let nanos = at.saturating_duration_since(self.base).as_nanos();
        let nanos = u64::try_from(nanos).unwrap_or(u64::MAX - 1);
        if !self.is_open() {
            self.reopened.fetch_add(1, Ordering::AcqRel);
        }
        self.until.fetch_max(nanos, Ordering::AcqRel);
    }

    /// A pass for work claimed now. [`Pass::number`] carries it where this
    /// crate's types are not known (a store's offer), [`Pass::of_number`]
    /// brings it back.
    pub fn pass(&self) -> Pass {
        Pass(self.reopened.load(Ordering::Acquire))
    }

    /// Whether work holding `pass` may send now: the gate is open and has
    /// not closed since the pass was issued.
    pub fn is_open_for(&self, pass: Pass) -> bool {
        self.is_open() && self.reopened.load(Ordering::Acquire) == pass.0
    }

    /// Whether it can close at all (not [`EgressGate::open`] for good).
    pub fn fences(&self) -> bool {
        self.until.load(Ordering::Acquire) != u64::MAX
    }

    /// Whether sending is allowed now.
    pub fn is_open(&self) -> bool {
        match self.until.load(Ordering::Acquire) {
            u64::MAX => true,
            until => (self.base.elapsed().as_nanos() as u64) < until,
        }
    }

    /// Resolves once work holding `pass` may no longer send (never, while
    /// the gate keeps being moved on in time).
    pub async fn closed_for(&self, pass: Pass) {
        loop {
            if self.reopened.load(Ordering::Acquire) != pass.0 {
                return;
            }
            let until = self.until.load(Ordering::Acquire);
            if until == u64::MAX {
                // Open for good unless someone starts moving it: look again
                // now and then.
                tokio::time::sleep(Duration::from_secs(3600)).await;
                continue;
            }
            let now = self.base.elapsed().as_nanos() as u64;
            if now >= until {
                return;
            }
            tokio::time::sleep(Duration::from_nanos(until - now)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_moves_forward_only_and_closes_when_its_time_passes() {
        assert!(EgressGate::open().is_open());
        let now = Instant::now();
        let gate = EgressGate::closing_at(now + Duration::from_secs(60));
        assert!(gate.is_open());
        // An older confirmation arriving late does not move it back.
        gate.open_until(now);
        assert!(gate.is_open());
        let shut = EgressGate::closing_at(now);
        assert!(!shut.is_open());
        let before = shut.pass();
        shut.open_until(Instant::now() + Duration::from_secs(60));
        assert!(shut.is_open(), "a confirmation reopens it");
        assert!(shut.is_open_for(shut.pass()), "for work claimed now");
        assert!(!shut.is_open_for(before), "not for work it stopped");
        // Moving an open gate on keeps passes good.
        let pass = gate.pass();
        gate.open_until(Instant::now() + Duration::from_secs(120));
        assert!(gate.is_open_for(pass));
    }

    #[tokio::test]
    async fn closed_resolves_when_the_time_passes_not_before() {
        let gate = EgressGate::closing_at(Instant::now() + Duration::from_millis(50));
        let pass = gate.pass();
        let started = Instant::now();
        gate.closed_for(pass).await;
        assert!(started.elapsed() >= Duration::from_millis(45));
        assert!(!gate.is_open());
    }

    #[tokio::test]
    async fn a_pass_ends_when_the_gate_reopens_before_its_holder_looked() {
        // Closed while its holder was frozen, reopened by a confirmation
        // before the holder ran again: the holder still stops.
        let gate = EgressGate::closing_at(Instant::now() + Duration::from_millis(20));
        let pass = gate.pass();
        std::thread::sleep(Duration::from_millis(30));
        gate.open_until(Instant::now() + Duration::from_secs(60));
        assert!(gate.is_open());
        tokio::time::timeout(Duration::from_secs(5), gate.closed_for(pass))
            .await
            .expect("the pass is void");
    }
}
