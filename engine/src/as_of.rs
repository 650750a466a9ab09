//! The instant the time helpers read: templates' `now` and `days_ago`, rhai's `days_since` and
//! `days_idle`.
//!
//! Outside any scope they read the wall clock. The executor evaluates every template of a block
//! [`at`] the instant the block started (its step's `started_at`) and every edge condition at the
//! instant its target became ready (the latest `finished_at` of its source blocks), so what a run
//! rendered is a function of its recorded instants: an offline replay evaluates them at the
//! recorded ones and renders what the original rendered. The instant is a thread-local set for
//! the length of a synchronous call, so rendering stays a plain function call (no clock argument
//! through handlebars and rhai) and costs a thread-local read instead of a clock read.

use std::cell::Cell;

use chrono::{DateTime, Utc};

thread_local! {
    static PINNED: Cell<Option<DateTime<Utc>>> = const { Cell::new(None) };
}

/// The instant of the innermost [`at`] on this thread, else the wall clock.
pub fn now() -> DateTime<Utc> {
    PINNED.with(Cell::get).unwrap_or_else(Utc::now)
}

/// Runs `f` with [`now`] reading `instant` (restored afterwards, also when `f` panics).
pub fn at<R>(instant: DateTime<Utc>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<DateTime<Utc>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            PINNED.with(|pinned| pinned.set(self.0));
        }
    }
    let _restore = Restore(PINNED.with(|pinned| pinned.replace(Some(instant))));
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_pins_now_for_its_call_and_restores_the_outer_instant() {
        let first = DateTime::parse_from_rfc3339("2024-01-02T03:04:05Z")
            .unwrap()
            .to_utc();
        let second = DateTime::parse_from_rfc3339("2025-06-07T08:09:10Z")
            .unwrap()
            .to_utc();
        let before = Utc::now();
        at(first, || {
            assert_eq!(now(), first);
            assert_eq!(at(second, now), second);
            assert_eq!(now(), first);
        });
        assert!(now() >= before, "the wall clock again");
    }

    #[test]
    fn the_rhai_day_counts_count_to_the_pinned_instant() {
        let at = DateTime::parse_from_rfc3339("2020-02-03T04:05:06Z")
            .unwrap()
            .to_utc();
        assert_eq!(super::at(at, || crate::rules::days_since("2020-01-01")), 33);
        let idle = super::at(at, || crate::rules::days_idle(None, Some("2020-01-27")));
        assert_eq!(idle, 7);
    }
}
