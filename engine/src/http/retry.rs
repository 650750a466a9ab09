//! Retry policy and the clock every wait goes through.
//!
//! [`RetryPolicy`] is a closed, documented enum (as a block's `retry:` would spell it): `none`, or
//! `exponential` backoff with full jitter, bounded by attempts and by total time. The client
//! decides *whether* a failure may be retried (see [`super::CallError::is_retryable`] and the POST
//! rule in `mod.rs`); the policy decides *how long* to wait and *when to stop*. A vendor's own
//! wait (`Retry-After`, `X-RateLimit-Reset`, already capped by the credential's `max_wait`)
//! replaces the computed backoff.
//!
//! [`Clock`] is the one seam for time: `Clock::Tokio` sleeps for real, `Clock::Virtual` records each
//! wait and advances instantly, so tests prove a 429's wait is honoured without sleeping.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a call is retried.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RetryPolicy {
    /// One attempt only (a 429 is still not retried).
    None,
    /// Exponential backoff with full jitter: the n-th wait is random in
    /// `[0, min(max_interval, initial_interval * factor^(n-1))]`, unless the vendor says how long.
    Exponential {
        /// Attempts in all, the first included.
        max_attempts: u32,
        /// Milliseconds before the second attempt (before jitter).
        initial_interval_ms: u64,
        factor: f64,
        /// The longest single computed wait, in milliseconds.
        max_interval_ms: u64,
        /// Give up when the next wait would pass this many milliseconds since the first attempt.
        max_elapsed_ms: u64,
    },
}

impl Default for RetryPolicy {
    /// Five attempts, 500 ms doubling to 30 s, within two minutes.
    fn default() -> RetryPolicy {
        RetryPolicy::Exponential {
            max_attempts: 5,
            initial_interval_ms: 500,
            factor: 2.0,
            max_interval_ms: 30_000,
            max_elapsed_ms: 120_000,
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1`, after `attempt` attempts (1-based) and `elapsed` time,
    /// or `None` when the policy gives up. `vendor_wait` is what the vendor asked for.
    pub fn next_wait(
        &self,
        attempt: u32,
        elapsed: Duration,
        vendor_wait: Option<Duration>,
    ) -> Option<Duration> {
        match *self {
            RetryPolicy::None => None,
            RetryPolicy::Exponential {
                max_attempts,
                initial_interval_ms,
                factor,
                max_interval_ms,
                max_elapsed_ms,
            } => {
                if attempt >= max_attempts {
                    return None;
                }
                let wait = match vendor_wait {
                    Some(wait) => wait,
                    None => {
                        let exp = factor.max(1.0).powi(attempt.saturating_sub(1) as i32);
                        let cap = (initial_interval_ms as f64 * exp).min(max_interval_ms as f64);
                        Duration::from_millis((cap * fastrand::f64()) as u64)
                    }
                };
                if elapsed.saturating_add(wait) > Duration::from_millis(max_elapsed_ms) {
                    return None;
                }
                Some(wait)
            }
        }
    }
}

/// Where time comes from.
#[derive(Debug, Clone)]
pub enum Clock {
    /// Real time through tokio (so `tokio::time::pause` applies too).
    Tokio { start: tokio::time::Instant },
    /// Time that only moves when something waits: each wait is recorded and returns at once.
    Virtual(Arc<Mutex<VirtualTime>>),
}

/// The state of a [`Clock::Virtual`].
#[derive(Debug, Default)]
pub struct VirtualTime {
    pub now: Duration,
    pub waits: Vec<Duration>,
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::Tokio {
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock {
    /// A virtual clock, for tests.
    pub fn virtual_clock() -> Clock {
        Clock::Virtual(Arc::default())
    }

    /// Time since the clock started.
    pub fn now(&self) -> Duration {
        match self {
            Clock::Tokio { start } => start.elapsed(),
            Clock::Virtual(time) => time.lock().unwrap_or_else(|e| e.into_inner()).now,
        }
    }

    pub async fn sleep(&self, wait: Duration) {
        match self {
            Clock::Tokio { .. } => tokio::time::sleep(wait).await,
            Clock::Virtual(time) => {
                let mut time = time.lock().unwrap_or_else(|e| e.into_inner());
                time.now = time.now.saturating_add(wait);
                time.waits.push(wait);
            }
        }
    }

    /// Every wait so far (virtual clocks only; empty for real time).
    pub fn waits(&self) -> Vec<Duration> {
        match self {
            Clock::Tokio { .. } => Vec::new(),
            Clock::Virtual(time) => time.lock().unwrap_or_else(|e| e.into_inner()).waits.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_by_attempts_and_total_time() {
        let policy = RetryPolicy::default();
        for attempt in 1..5 {
            let wait = policy.next_wait(attempt, Duration::ZERO, None).unwrap();
            assert!(wait <= Duration::from_millis(500 * 2u64.pow(attempt - 1)));
        }
        assert_eq!(policy.next_wait(5, Duration::ZERO, None), None);
        let vendor = Some(Duration::from_secs(60));
        assert_eq!(
            policy.next_wait(1, Duration::ZERO, vendor),
            Some(Duration::from_secs(60))
        );
        assert_eq!(policy.next_wait(1, Duration::from_secs(61), vendor), None);
        assert_eq!(RetryPolicy::None.next_wait(1, Duration::ZERO, None), None);
    }
}
