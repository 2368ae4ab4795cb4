//! A token bucket of events (a room occupant's messages, an account's PEP
//! publishes): `rate` a second, `burst` at once. Bytes on a stream are
//! shaped by [`crate::c2s::limits`] instead.

use std::time::Instant;

#[derive(Debug)]
pub(crate) struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// Full: a burst may go at once.
    pub fn new(burst: u32, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(burst.max(1)),
            last: now,
        }
    }

    /// Takes one event's token at `now`: false when over the rate (0: no
    /// limit).
    pub fn take(&mut self, rate: u32, burst: u32, now: Instant) -> bool {
        if rate == 0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(f64::from(burst.max(1)));
        self.last = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate_and_never_more_than_the_burst() {
        let start = Instant::now();
        let mut b = Bucket::new(3, start);
        assert!((0..3).all(|_| b.take(1, 3, start)));
        assert!(!b.take(1, 3, start));
        assert!(b.take(1, 3, start + Duration::from_millis(1_100)));
        assert!(!b.take(1, 3, start + Duration::from_millis(1_200)));
        // Long idle: no more than the burst.
        let much_later = start + Duration::from_secs(3600);
        assert!((0..3).all(|_| b.take(1, 3, much_later)));
        assert!(!b.take(1, 3, much_later));
        let mut unlimited = Bucket::new(1, start);
        assert!((0..100).all(|_| unlimited.take(0, 1, start)));
    }
}
