//! The gate in front of every vendor: fixed one-minute rate-limit windows (one per vendor) and
//! seeded failure injection.
//!
//! Windows run on tokio's clock (`tokio::time::Instant`) so tests can drive them with paused
//! time. Failures come from one seeded generator, so a given seed and request order always fail
//! the same requests.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::{lock, Vendor};

const WINDOW: Duration = Duration::from_secs(60);

/// The outcome of counting one request against its vendor's window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WindowState {
    pub(crate) limit: u32,
    pub(crate) remaining: u32,
    /// Seconds until the window resets (at least 1).
    pub(crate) reset_secs: u64,
    pub(crate) exceeded: bool,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    used: u32,
}

/// Per-vendor fixed windows; `limit: None` means unlimited (and no lock is taken).
#[derive(Debug)]
pub(crate) struct RateLimits {
    limit: Option<u32>,
    windows: [Mutex<Option<Window>>; 3],
}

impl RateLimits {
    pub(crate) fn new(limit: Option<u32>) -> RateLimits {
        RateLimits {
            limit,
            windows: [Mutex::new(None), Mutex::new(None), Mutex::new(None)],
        }
    }

    /// Counts one request for `vendor`; `None` when no limit is configured.
    pub(crate) fn take(&self, vendor: Vendor) -> Option<WindowState> {
        let limit = self.limit?;
        let now = Instant::now();
        let mut slot = lock(&self.windows[vendor.index()]);
        let window = match slot.as_mut() {
            Some(w) if now.duration_since(w.started) < WINDOW => w,
            _ => slot.insert(Window {
                started: now,
                used: 0,
            }),
        };
        let elapsed = now.duration_since(window.started);
        let left = WINDOW.saturating_sub(elapsed);
        let reset_secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        let exceeded = window.used >= limit;
        if !exceeded {
            window.used += 1;
        }
        Some(WindowState {
            limit,
            remaining: limit - window.used,
            reset_secs: reset_secs.max(1),
            exceeded,
        })
    }

    /// Forgets every window (used by reset and reseed).
    pub(crate) fn reset(&self) {
        for window in &self.windows {
            *lock(window) = None;
        }
    }
}

/// Seeded failure injection: answers `fail()` true for `rate` of the calls.
#[derive(Debug)]
pub(crate) struct Faults {
    rate: f64,
    rng: Mutex<fastrand::Rng>,
}

impl Faults {
    pub(crate) fn new(rate: f64, seed: u64) -> Faults {
        Faults {
            rate,
            rng: Mutex::new(fastrand::Rng::with_seed(seed ^ 0xFA11_FA11)),
        }
    }

    pub(crate) fn fail(&self) -> bool {
        if self.rate <= 0.0 {
            return false;
        }
        lock(&self.rng).f64() < self.rate
    }

    pub(crate) fn reseed(&self, seed: u64) {
        *lock(&self.rng) = fastrand::Rng::with_seed(seed ^ 0xFA11_FA11);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_window_counts_down_and_resets_after_a_minute() {
        let limits = RateLimits::new(Some(2));
        let first = limits.take(Vendor::Webex).unwrap();
        assert_eq!(
            (first.remaining, first.exceeded, first.reset_secs),
            (1, false, 60)
        );
        let second = limits.take(Vendor::Webex).unwrap();
        assert_eq!((second.remaining, second.exceeded), (0, false));
        tokio::time::advance(Duration::from_millis(15_500)).await;
        let third = limits.take(Vendor::Webex).unwrap();
        assert_eq!(
            (third.remaining, third.exceeded, third.reset_secs),
            (0, true, 45)
        );
        assert!(
            !limits.take(Vendor::Scim).unwrap().exceeded,
            "windows are per vendor"
        );
        tokio::time::advance(Duration::from_secs(45)).await;
        let fresh = limits.take(Vendor::Webex).unwrap();
        assert_eq!((fresh.remaining, fresh.exceeded), (1, false));
    }

    #[test]
    fn faults_are_deterministic_for_a_seed() {
        let draw = |seed| {
            let faults = Faults::new(0.5, seed);
            (0..64).map(|_| faults.fail()).collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
        assert!(!Faults::new(0.0, 1).fail());
    }
}
