//! Per-connector health: a circuit breaker with probes and slow start
//! (SPEC §2.6, §3 "Health").
//!
//! - **Closed**: attempts flow, up to a window that starts at 1 after a
//!   recovery and grows by one per success (doubling per round trip, as TCP
//!   slow start) up to the connector's concurrency. A transient failure halves
//!   the window; `failure_threshold` consecutive transient failures open the
//!   breaker.
//! - **Open**: nothing is attempted until the next probe is due; then exactly
//!   one delivery is let through (**probing**). Its success closes the breaker
//!   (window 1); its failure reopens it with the probe interval doubled, up to
//!   `probe_max_ms`.
//!
//! Only transient failures (`retry`, traps, timeouts) count: a `reject` means
//! the destination answered, so it is healthy. While open, queued deliveries'
//! own retry timers do not matter — they are never claimed — so an outage of
//! any length costs one attempt per probe interval, whatever the backlog.
//!
//! Pure: time is a parameter, so the state machine is tested without I/O and
//! a simulated three-day outage runs in milliseconds.

use serde::{Deserialize, Serialize};

use super::Millis;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerPolicy {
    /// Consecutive transient failures that open the breaker.
    pub failure_threshold: u32,
    /// First probe interval after opening, in milliseconds.
    pub probe_initial_ms: u64,
    /// The probe interval doubles up to this, in milliseconds.
    pub probe_max_ms: u64,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            probe_initial_ms: 1_000,
            probe_max_ms: 60_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum BreakerState {
    Closed {
        consecutive_failures: u32,
        /// Attempts allowed in flight now (slow start).
        window: usize,
    },
    Open {
        next_probe_at: Millis,
        probe_interval_ms: u64,
    },
    Probing {
        probe_interval_ms: u64,
    },
}

impl BreakerState {
    /// The coarse state, as the API's `state` tag and the store's breaker
    /// log name it: `closed`, `open` or `probing`.
    pub fn name(&self) -> &'static str {
        match self {
            BreakerState::Closed { .. } => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::Probing { .. } => "probing",
        }
    }

    /// What the other nodes sharing the store should know of this state:
    /// open with its probe schedule, or closed. `None` while probing (the
    /// probe's result will say).
    pub fn shared(&self) -> Option<SharedHealth> {
        match *self {
            BreakerState::Closed { .. } => Some(SharedHealth::Closed),
            BreakerState::Open {
                next_probe_at,
                probe_interval_ms,
            } => Some(SharedHealth::Open {
                next_probe_at,
                probe_interval_ms,
            }),
            BreakerState::Probing { .. } => None,
        }
    }
}

/// A breaker's state as the nodes sharing a store see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum SharedHealth {
    Closed,
    Open {
        next_probe_at: Millis,
        probe_interval_ms: u64,
    },
}

#[derive(Debug, Clone)]
pub struct Breaker {
    policy: BreakerPolicy,
    concurrency: usize,
    state: BreakerState,
}

impl Breaker {
    pub fn new(policy: BreakerPolicy, concurrency: usize) -> Self {
        let concurrency = concurrency.max(1);
        Self {
            policy,
            concurrency,
            // A fresh start trusts the destination fully; only a recovery
            // from an outage ramps up.
            state: BreakerState::Closed {
                consecutive_failures: 0,
                window: concurrency,
            },
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    pub fn is_open(&self) -> bool {
        !matches!(self.state, BreakerState::Closed { .. })
    }

    /// New thresholds and probe intervals (a reconfigured connector); the
    /// current state stays.
    pub fn set_policy(&mut self, policy: BreakerPolicy) {
        self.policy = policy;
    }

    pub fn set_concurrency(&mut self, concurrency: usize) {
        self.concurrency = concurrency.max(1);
        if let BreakerState::Closed { window, .. } = &mut self.state {
            *window = (*window).min(self.concurrency);
        }
    }

    /// How many new attempts may start now, with `in_flight` running.
    pub fn permits(&self, now: Millis, in_flight: usize) -> usize {
        match self.state {
            BreakerState::Closed { window, .. } => window.saturating_sub(in_flight),
            BreakerState::Open { next_probe_at, .. } if now >= next_probe_at && in_flight == 0 => 1,
            BreakerState::Open { .. } | BreakerState::Probing { .. } => 0,
        }
    }

    /// When an open breaker next lets a probe through.
    pub fn next_probe_at(&self) -> Option<Millis> {
        match self.state {
            BreakerState::Open { next_probe_at, .. } => Some(next_probe_at),
            _ => None,
        }
    }

    /// An attempt started (call once per started attempt).
    pub fn on_start(&mut self, now: Millis) {
        if let BreakerState::Open {
            next_probe_at,
            probe_interval_ms,
        } = self.state
        {
            if now >= next_probe_at {
                self.state = BreakerState::Probing { probe_interval_ms };
            }
        }
    }

    /// What the other nodes sharing the store should know of this breaker
    /// ([`BreakerState::shared`]).
    pub fn shared(&self) -> Option<SharedHealth> {
        self.state.shared()
    }

    /// Takes in the cluster's view, written by whichever node saw the
    /// destination last: a breaker another node opened opens here too (so a
    /// dead destination gets one probe per interval from the whole cluster),
    /// one another node's probe closed closes here and ramps up from 1. A
    /// probe running here is left to finish.
    pub fn adopt(&mut self, shared: SharedHealth) {
        self.state = match (self.state, shared) {
            (probing @ BreakerState::Probing { .. }, _) => probing,
            (
                _,
                SharedHealth::Open {
                    next_probe_at,
                    probe_interval_ms,
                },
            ) => BreakerState::Open {
                next_probe_at,
                probe_interval_ms,
            },
            (closed @ BreakerState::Closed { .. }, SharedHealth::Closed) => closed,
            (BreakerState::Open { .. }, SharedHealth::Closed) => BreakerState::Closed {
                consecutive_failures: 0,
                window: 1,
            },
        };
    }

    /// An attempt ended; `healthy` is false only for transient failures.
    pub fn on_result(&mut self, healthy: bool, now: Millis) {
        self.state = match (self.state, healthy) {
            (BreakerState::Closed { window, .. }, true) => BreakerState::Closed {
                consecutive_failures: 0,
                window: (window + 1).min(self.concurrency),
            },
            (
                BreakerState::Closed {
                    consecutive_failures,
                    window,
                },
                false,
            ) => {
                let failures = consecutive_failures + 1;
                if failures >= self.policy.failure_threshold {
                    BreakerState::Open {
                        next_probe_at: now + self.policy.probe_initial_ms as i64,
                        probe_interval_ms: self.policy.probe_initial_ms,
                    }
                } else {
                    BreakerState::Closed {
                        consecutive_failures: failures,
                        window: (window / 2).max(1),
                    }
                }
            }
            (BreakerState::Probing { .. }, true) => BreakerState::Closed {
                consecutive_failures: 0,
                window: 1,
            },
            (BreakerState::Probing { probe_interval_ms }, false) => {
                let next = (probe_interval_ms.saturating_mul(2)).min(self.policy.probe_max_ms);
                BreakerState::Open {
                    next_probe_at: now + next as i64,
                    probe_interval_ms: next,
                }
            }
            // Results of attempts that started before the breaker opened do
            // not move an open breaker: only its probe does.
            (open @ BreakerState::Open { .. }, _) => open,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adopting_the_cluster_view_opens_and_closes_but_never_cuts_a_probe() {
        let mut b = breaker();
        let open = SharedHealth::Open {
            next_probe_at: 5_000,
            probe_interval_ms: 4_000,
        };
        b.adopt(open);
        assert_eq!(b.permits(4_999, 0), 0, "opened by another node");
        assert_eq!(b.shared(), Some(open));
        b.adopt(SharedHealth::Closed);
        assert_eq!(
            b.state(),
            BreakerState::Closed {
                consecutive_failures: 0,
                window: 1
            },
            "closed by another node's probe: ramp up from one"
        );
        b.adopt(open);
        b.on_start(5_000);
        b.adopt(SharedHealth::Closed);
        assert!(
            matches!(b.state(), BreakerState::Probing { .. }),
            "a probe in flight decides for itself"
        );
        assert_eq!(b.shared(), None);
    }

    fn breaker() -> Breaker {
        Breaker::new(BreakerPolicy::default(), 8)
    }

    #[test]
    fn opens_after_consecutive_transient_failures_only() {
        let mut b = breaker();
        for _ in 0..4 {
            b.on_result(false, 0);
        }
        assert!(!b.is_open());
        b.on_result(true, 0);
        for _ in 0..4 {
            b.on_result(false, 0);
        }
        assert!(!b.is_open(), "a success resets the count");
        b.on_result(false, 10);
        assert_eq!(
            b.state(),
            BreakerState::Open {
                next_probe_at: 1_010,
                probe_interval_ms: 1_000
            }
        );
    }

    #[test]
    fn open_lets_one_probe_through_per_interval_backing_off_to_the_cap() {
        let mut b = breaker();
        for _ in 0..5 {
            b.on_result(false, 0);
        }
        let mut now = 0;
        let mut intervals = Vec::new();
        for _ in 0..10 {
            assert_eq!(b.permits(now, 0), 0);
            now = b.next_probe_at().unwrap();
            assert_eq!(b.permits(now, 0), 1);
            b.on_start(now);
            assert_eq!(b.permits(now, 1), 0, "one probe at a time");
            b.on_result(false, now);
            intervals.push(b.next_probe_at().unwrap() - now);
        }
        assert_eq!(
            intervals,
            [2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000, 60_000, 60_000]
        );
    }

    #[test]
    fn a_successful_probe_closes_and_ramps_up_by_slow_start() {
        let mut b = breaker();
        for _ in 0..5 {
            b.on_result(false, 0);
        }
        b.on_start(1_000);
        b.on_result(true, 1_000);
        let mut windows = vec![b.permits(1_000, 0)];
        for _ in 0..8 {
            b.on_result(true, 1_000);
            windows.push(b.permits(1_000, 0));
        }
        assert_eq!(windows, [1, 2, 3, 4, 5, 6, 7, 8, 8]);
        b.on_result(false, 1_000);
        assert_eq!(b.permits(1_000, 0), 4, "a failure halves the window");
    }

    #[test]
    fn a_three_day_outage_costs_about_one_attempt_per_minute() {
        let mut b = breaker();
        let (mut now, end) = (0i64, 72 * 3_600 * 1_000);
        let mut attempts = 0u64;
        while now < end {
            let n = b.permits(now, 0);
            for _ in 0..n {
                b.on_start(now);
                attempts += 1;
                b.on_result(false, now);
            }
            now = b.next_probe_at().unwrap_or(now + 1);
        }
        // 72 h at a 60 s cap is 4,320 probes, plus the first few failures
        // and the ramp from 1 s.
        assert!(attempts <= 4_400, "{attempts} attempts");
        assert!(attempts >= 4_300, "{attempts} attempts");
    }
}
