//! A token bucket: at most `rate` attempts per second on average, bursts of
//! up to `burst`. Pure: time is a parameter.

use super::Millis;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Tokens added per second; `None` means unlimited.
    rate: Option<f64>,
    burst: f64,
    tokens: f64,
    last: Millis,
}

impl TokenBucket {
    /// `rate` attempts per second (`None`: unlimited); the bucket holds up to
    /// one second's worth (at least 1).
    pub fn new(rate: Option<f64>, now: Millis) -> Self {
        let burst = rate.map_or(f64::INFINITY, |r| r.max(1.0));
        Self {
            rate: rate.filter(|r| *r > 0.0),
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Millis) {
        if let Some(rate) = self.rate {
            let elapsed = (now - self.last).max(0) as f64 / 1000.0;
            self.tokens = (self.tokens + elapsed * rate).min(self.burst);
        }
        self.last = self.last.max(now);
    }

    /// Whole tokens available now (saturating at `usize::MAX` when unlimited).
    pub fn available(&mut self, now: Millis) -> usize {
        if self.rate.is_none() {
            return usize::MAX;
        }
        self.refill(now);
        self.tokens.floor() as usize
    }

    /// Spends `n` tokens (callers spend at most what [`available`] said).
    ///
    /// [`available`]: TokenBucket::available
    pub fn take(&mut self, n: usize, now: Millis) {
        if self.rate.is_some() {
            self.refill(now);
            self.tokens = (self.tokens - n as f64).max(0.0);
        }
    }

    /// When the next token will be there, if the bucket is empty.
    pub fn next_token_at(&mut self, now: Millis) -> Option<Millis> {
        let rate = self.rate?;
        self.refill(now);
        if self.tokens >= 1.0 {
            return None;
        }
        Some(now + ((1.0 - self.tokens) / rate * 1000.0).ceil() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_never_limits() {
        let mut b = TokenBucket::new(None, 0);
        assert_eq!(b.available(0), usize::MAX);
        b.take(1_000_000, 0);
        assert_eq!(b.available(0), usize::MAX);
        assert_eq!(b.next_token_at(0), None);
    }

    #[test]
    fn a_rate_holds_over_time_with_a_one_second_burst() {
        let mut b = TokenBucket::new(Some(10.0), 0);
        assert_eq!(b.available(0), 10);
        b.take(10, 0);
        assert_eq!(b.available(0), 0);
        assert_eq!(b.next_token_at(0), Some(100));
        assert_eq!(b.available(250), 2);
        // Over a simulated minute, spending greedily, about 10/s get through.
        let mut spent = 0;
        let mut now = 250;
        while now <= 60_250 {
            let n = b.available(now);
            b.take(n, now);
            spent += n;
            now += 7;
        }
        assert!((598..=602).contains(&spent), "{spent}");
    }
}
