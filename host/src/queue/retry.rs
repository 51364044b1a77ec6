//! When to try a delivery again: exponential backoff with full jitter
//! (AWS architecture blog, "Exponential Backoff And Jitter"), a connector's
//! `Retry-After` honoured but clamped, and an optional deadline after which
//! the delivery is given up (dead).

use std::time::Duration;

use rand::Rng;
use serde::Deserialize;

use super::Millis;

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Upper bound of the first retry's delay, in milliseconds.
    pub initial_backoff_ms: u64,
    /// The cap the doubling stops at, in milliseconds.
    pub max_backoff_ms: u64,
    /// The longest `Retry-After` honoured, in milliseconds.
    pub max_retry_after_ms: u64,
    /// Give a delivery up (dead) when it is still failing this long after its
    /// event was accepted. `None` (the default) retries for ever.
    pub give_up_after_ms: Option<u64>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_backoff_ms: 1_000,
            max_backoff_ms: 300_000,
            max_retry_after_ms: 3_600_000,
            give_up_after_ms: None,
        }
    }
}

/// The decision after a transient failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    At(Millis),
    GiveUp,
}

impl RetryPolicy {
    /// `attempts` is the number of attempts made so far (≥ 1).
    pub fn next(
        &self,
        attempts: u32,
        retry_after: Option<Duration>,
        accepted_at: Millis,
        now: Millis,
        rng: &mut impl Rng,
    ) -> RetryDecision {
        let delay = match retry_after {
            Some(after) => (after.as_millis() as u64).min(self.max_retry_after_ms),
            None => {
                let exp = attempts.saturating_sub(1).min(40);
                let ceiling = self
                    .initial_backoff_ms
                    .saturating_mul(1u64 << exp)
                    .min(self.max_backoff_ms)
                    .max(1);
                rng.gen_range(0..=ceiling)
            }
        };
        let at = now.saturating_add(delay as i64);
        if let Some(limit) = self.give_up_after_ms {
            if at > accepted_at.saturating_add(limit as i64) {
                return RetryDecision::GiveUp;
            }
        }
        RetryDecision::At(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    #[test]
    fn backoff_is_bounded_by_the_doubling_ceiling() {
        let p = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(7);
        for attempts in 1..30u32 {
            let ceiling = (1000u64 << (attempts - 1).min(40)).min(300_000) as i64;
            for _ in 0..50 {
                let RetryDecision::At(at) = p.next(attempts, None, 0, 10_000, &mut rng) else {
                    panic!("never gives up by default")
                };
                assert!(
                    (10_000..=10_000 + ceiling).contains(&at),
                    "attempt {attempts}: {at}"
                );
            }
        }
    }

    #[test]
    fn jitter_spreads_retries() {
        let p = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100 {
            if let RetryDecision::At(at) = p.next(10, None, 0, 0, &mut rng) {
                seen.insert(at / 1000);
            }
        }
        assert!(
            seen.len() > 50,
            "full jitter should spread retries, got {}",
            seen.len()
        );
    }

    #[test]
    fn retry_after_is_honoured_and_clamped() {
        let p = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(
            p.next(1, Some(Duration::from_secs(30)), 0, 1000, &mut rng),
            RetryDecision::At(31_000)
        );
        assert_eq!(
            p.next(1, Some(Duration::from_secs(86_400)), 0, 0, &mut rng),
            RetryDecision::At(3_600_000)
        );
    }

    #[test]
    fn gives_up_only_when_configured() {
        let mut rng = StdRng::seed_from_u64(1);
        let p = RetryPolicy {
            give_up_after_ms: Some(60_000),
            ..RetryPolicy::default()
        };
        assert_eq!(
            p.next(1, Some(Duration::from_secs(10)), 0, 55_000, &mut rng),
            RetryDecision::GiveUp
        );
        assert_eq!(
            p.next(1, Some(Duration::from_secs(1)), 0, 55_000, &mut rng),
            RetryDecision::At(56_000)
        );
    }
}
