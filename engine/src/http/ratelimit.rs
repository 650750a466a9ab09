//! The per-(vendor, credential) request budget, shared by every run.
//!
//! A token bucket holding the vendor's `per_minute` budget (declared in its preset), refilled
//! continuously. [`RateLimiter::acquire`] waits for a token rather than failing. When the vendor
//! answers 429 anyway (its budget is shared with other tools, or is dynamic as at Webex), the
//! client calls [`RateLimiter::pause_for`] with the vendor's wait, so every concurrent run of the
//! same credential waits it out instead of each discovering the 429 for itself. Only a wait within
//! the credential's `max_wait` gets here: a vendor asking for 31 years pauses nobody.

use std::time::Duration;

use tokio::sync::Mutex;

use super::retry::Clock;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    /// Clock time of the last refill.
    refilled: Duration,
    /// No request before this clock time (after a 429).
    paused_until: Duration,
}

/// A token bucket on a [`Clock`].
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    clock: Clock,
    bucket: Mutex<Bucket>,
}

impl RateLimiter {
    pub fn new(per_minute: u32, clock: Clock) -> RateLimiter {
        let per_minute = per_minute.max(1);
        let now = clock.now();
        RateLimiter {
            per_minute,
            clock,
            bucket: Mutex::new(Bucket {
                tokens: f64::from(per_minute),
                refilled: now,
                paused_until: now,
            }),
        }
    }

    /// Waits until a request may be sent, and takes its token.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut bucket = self.bucket.lock().await;
                let now = self.clock.now();
                let rate = f64::from(self.per_minute) / 60.0;
                let earned = now.saturating_sub(bucket.refilled).as_secs_f64() * rate;
                bucket.tokens = (bucket.tokens + earned).min(f64::from(self.per_minute));
                bucket.refilled = now;
                if now < bucket.paused_until {
                    bucket.paused_until - now
                } else if bucket.tokens >= 1.0 - 1e-9 {
                    bucket.tokens = (bucket.tokens - 1.0).max(0.0);
                    return;
                } else {
                    Duration::from_secs_f64((1.0 - bucket.tokens) / rate)
                }
            };
            tracing::debug!(wait_ms = wait.as_millis() as u64, "rate limit: waiting");
            self.clock.sleep(wait).await;
        }
    }

    /// The vendor said to wait `wait` from now: hold every request back until then.
    pub async fn pause_for(&self, wait: Duration) {
        let mut bucket = self.bucket.lock().await;
        // Saturating: the client caps a vendor's wait (`max_wait`), but no wait may overflow.
        let until = self.clock.now().saturating_add(wait);
        if until > bucket.paused_until {
            bucket.paused_until = until;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_spent_budget_waits_for_the_next_token() {
        let clock = Clock::virtual_clock();
        let limiter = RateLimiter::new(2, clock.clone());
        limiter.acquire().await;
        limiter.acquire().await;
        assert!(clock.waits().is_empty());
        limiter.acquire().await;
        assert_eq!(clock.waits(), [Duration::from_secs(30)]);
        limiter.pause_for(Duration::from_secs(60)).await;
        limiter.acquire().await;
        assert_eq!(clock.waits()[1], Duration::from_secs(60));
    }
}
