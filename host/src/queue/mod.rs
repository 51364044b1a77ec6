//! The delivery domain, free of I/O: what an event is and how it is validated,
//! which connectors an event routes to, the states a delivery moves through and
//! the retry policy that decides when it is tried again.
//!
//! Invariants every store implementation upholds (SPEC §2):
//! - events are immutable and ordered by an accept sequence (`seq`) that grows
//!   with commit order;
//! - a delivery of connector C for an event with keys K is in the lane
//!   (C, k) for every k in K until it is final (or dead and released);
//! - a delivery may be claimed only while it is the head (lowest `seq`) of
//!   every lane it is in. Since all lanes order by the same `seq`, the
//!   "waits-for" relation always points to a lower `seq` and can never cycle.

pub mod breaker;
pub mod event;
pub mod lanes;
pub mod rate;
pub mod retry;
pub mod route;

use serde::{Deserialize, Serialize};

/// The closed set of delivery states (SPEC §1). The stores keep it as a CHECK
/// constraint too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for an earlier delivery in one of its lanes.
    Blocked,
    /// Head of all its lanes; runs when `next_attempt_at` has passed.
    Ready,
    /// Claimed by a dispatcher under a lease.
    InFlight,
    Delivered,
    /// Rejected or given up; keeps its keys held unless `on_dead = "release"`.
    Dead,
    Superseded,
    /// Dropped by an operator; final, keys released.
    Skipped,
    /// Not started before its route's `expire_after` passed; final, keys
    /// released, never attempted again.
    Expired,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 8] = [
        DeliveryState::Blocked,
        DeliveryState::Ready,
        DeliveryState::InFlight,
        DeliveryState::Delivered,
        DeliveryState::Dead,
        DeliveryState::Superseded,
        DeliveryState::Skipped,
        DeliveryState::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Blocked => "blocked",
            DeliveryState::Ready => "ready",
            DeliveryState::InFlight => "in_flight",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
            DeliveryState::Superseded => "superseded",
            DeliveryState::Skipped => "skipped",
            DeliveryState::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Waiting for or running an attempt: it holds a place in the queue.
    /// Every state is named, so a new one does not compile until it is
    /// placed here and in [`is_final`](Self::is_final).
    pub fn is_pending(self) -> bool {
        use DeliveryState::*;
        match self {
            Blocked | Ready | InFlight => true,
            Delivered | Dead | Superseded | Skipped | Expired => false,
        }
    }

    /// Final states never change again (a dead delivery can still be retried
    /// or skipped by an operator, so it is not final).
    pub fn is_final(self) -> bool {
        use DeliveryState::*;
        match self {
            Delivered | Superseded | Skipped | Expired => true,
            Blocked | Ready | InFlight | Dead => false,
        }
    }
}

/// What to do with a dead delivery's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnDead {
    /// Keep the keys held until an operator retries or skips it: later events
    /// on the same keys wait (the safe default for ordered resources).
    #[default]
    Hold,
    /// Release the keys at once so later events proceed.
    Release,
}

/// Milliseconds since the Unix epoch. Time is always a parameter of the store
/// so tests drive it.
pub type Millis = i64;

/// The wall clock, in milliseconds.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::DeliveryState;

    /// `ALL` lists every state once, in order (the counts' columns follow
    /// it), and each state's name reads back as that state. A new state
    /// does not compile here until it is in the list below, and then fails
    /// until `ALL` has it too.
    #[test]
    fn all_lists_every_state_once_and_names_read_back() {
        macro_rules! every_state {
            ($($state:ident),+) => {{
                use DeliveryState::*;
                let _exhaustive = |s: DeliveryState| match s {
                    $($state)|+ => (),
                };
                [$($state),+]
            }};
        }
        let every =
            every_state!(Blocked, Ready, InFlight, Delivered, Dead, Superseded, Skipped, Expired);
        assert_eq!(DeliveryState::ALL, every);
        for s in every {
            assert_eq!(DeliveryState::parse(s.as_str()), Some(s));
            assert!(!(s.is_pending() && s.is_final()), "{s:?}");
        }
    }
}
