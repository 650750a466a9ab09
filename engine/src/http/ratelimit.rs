//! The per-(vendor, credential) request budget, shared by every run.
//!
//! A token bucket holding the vendor's `per_minute` budget (declared in its preset), refilled
//! continuously. [`RateLimiter::acquire`] waits for a token rather than failing. When the vendor
//! answers 429 anyway (its budget is shared with other tools, or is dynamic as at Webex), the
//! client calls [`RateLimiter::pause_for`] with the vendor's wait, so every concurrent run of the
//! same credential waits it out instead of each discovering the 429 for itself. Only a wait within
//! the credential's `max_wait` gets here: a vendor asking for 31 years pauses nobody.
//!
//! The bucket's arithmetic is [`Bucket`], on explicit times, so that the same bucket serves a
//! budget kept elsewhere: [`LocalBudget`] is the in-process
//! [`RateBudget`](crate::store::api::RateBudget) (one process per data dir, as with sled), whose
//! PostgreSQL twin keeps one bucket row per (vendor, credential) for every worker
//! (`store/postgres/budget.rs`, where its accuracy is told).
//!
//! A limiter made with [`RateLimiter::shared`] (the client of `serve` on a `store: postgres`,
//! [`crate::http::Client::on_store`]) takes each request's token from that
//! [`PgBudget`] row instead of its own bucket, and a 429's wait pauses the row, so every worker
//! holds back: one database round trip per request (and one per wait). The time it passes is the
//! wall clock (what workers on several hosts share; a virtual [`Clock`] counts from the Unix
//! epoch). When the database cannot be asked, that request takes its token from the limiter's own
//! bucket (a warning says so): the budget is then per worker until the database answers again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Mutex;

use super::retry::Clock;
use crate::store::api::RateBudget;
use crate::store::postgres::budget::PgBudget;

/// A token bucket of `per_minute` tokens refilled continuously, on any clock (times are
/// durations since that clock's epoch).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    tokens: f64,
    /// Clock time of the last refill.
    refilled: Duration,
    /// No request before this clock time (after a 429).
    paused_until: Duration,
}

impl Bucket {
    /// A full bucket at `now`.
    pub fn full(per_minute: u32, now: Duration) -> Bucket {
        Bucket {
            tokens: f64::from(per_minute.max(1)),
            refilled: now,
            paused_until: now,
        }
    }

    /// Takes a request's token at `now`: `None` when taken, else how long to wait before asking
    /// again (nothing taken). A clock that went back refills nothing.
    pub fn take(&mut self, per_minute: u32, now: Duration) -> Option<Duration> {
        let cap = f64::from(per_minute.max(1));
        let rate = cap / 60.0;
        let earned = now.saturating_sub(self.refilled).as_secs_f64() * rate;
        self.tokens = (self.tokens + earned).min(cap);
        self.refilled = self.refilled.max(now);
        if now < self.paused_until {
            Some(self.paused_until - now)
        } else if self.tokens >= 1.0 - 1e-9 {
            self.tokens = (self.tokens - 1.0).max(0.0);
            None
        } else {
            Some(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }

    /// No token before `until` (a later pause wins).
    pub fn pause_until(&mut self, until: Duration) {
        self.paused_until = self.paused_until.max(until);
    }
}

/// A token bucket on a [`Clock`], in process or shared by every worker ([`RateLimiter::shared`]).
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    clock: Clock,
    /// The bucket of this process (the one in use unless the budget is shared).
    bucket: Mutex<Bucket>,
    shared: Option<Shared>,
}

/// The budget every worker takes from, and this limiter's bucket in it.
#[derive(Debug)]
struct Shared {
    budget: PgBudget,
    vendor: String,
    credential: String,
}

impl RateLimiter {
    pub fn new(per_minute: u32, clock: Clock) -> RateLimiter {
        let per_minute = per_minute.max(1);
        let now = clock.now();
        RateLimiter {
            per_minute,
            clock,
            bucket: Mutex::new(Bucket::full(per_minute, now)),
            shared: None,
        }
    }

    /// A limiter taking its tokens from `budget`'s bucket of (`vendor`, `credential`), which
    /// every worker of the store shares (see the module docs).
    pub fn shared(
        per_minute: u32,
        clock: Clock,
        budget: PgBudget,
        vendor: &str,
        credential: &str,
    ) -> RateLimiter {
        RateLimiter {
            shared: Some(Shared {
                budget,
                vendor: vendor.to_owned(),
                credential: credential.to_owned(),
            }),
            ..RateLimiter::new(per_minute, clock)
        }
    }

    /// The time the shared budget is asked at: the wall clock, or a virtual clock's time since
    /// the Unix epoch (so that clones of one virtual clock agree).
    fn wall(&self) -> DateTime<Utc> {
        match &self.clock {
            Clock::Tokio { .. } => Utc::now(),
            Clock::Virtual(_) => later(DateTime::UNIX_EPOCH, self.clock.now()),
        }
    }

    /// Waits until a request may be sent, and takes its token.
    pub async fn acquire(&self) {
        loop {
            let wait = match &self.shared {
                Some(shared) => {
                    let asked = shared
                        .budget
                        .acquire(
                            &shared.vendor,
                            &shared.credential,
                            self.per_minute,
                            self.wall(),
                        )
                        .await;
                    match asked {
                        Ok(wait) if wait.is_zero() => return,
                        Ok(wait) => wait,
                        Err(err) => {
                            tracing::warn!(credential = %shared.credential, error = %err, "rate limit: the shared budget cannot be asked; this request takes its token from this worker's own bucket");
                            match self.take_local().await {
                                None => return,
                                Some(wait) => wait,
                            }
                        }
                    }
                }
                None => match self.take_local().await {
                    None => return,
                    Some(wait) => wait,
                },
            };
            tracing::debug!(wait_ms = wait.as_millis() as u64, "rate limit: waiting");
            self.clock.sleep(wait).await;
        }
    }

    /// A token from this process's bucket: `None` when taken, else how long to wait.
    async fn take_local(&self) -> Option<Duration> {
        let mut bucket = self.bucket.lock().await;
        bucket.take(self.per_minute, self.clock.now())
    }

    /// The vendor said to wait `wait` from now: hold every request back until then (every
    /// worker's, when the budget is shared).
    pub async fn pause_for(&self, wait: Duration) {
        {
            let mut bucket = self.bucket.lock().await;
            // Saturating: the client caps a vendor's wait (`max_wait`), but no wait may overflow.
            bucket.pause_until(self.clock.now().saturating_add(wait));
        }
        if let Some(shared) = &self.shared {
            let until = later(self.wall(), wait);
            if let Err(err) = shared
                .budget
                .pause_until(&shared.vendor, &shared.credential, self.per_minute, until)
                .await
            {
                tracing::warn!(credential = %shared.credential, error = %err, "rate limit: the vendor's wait cannot be shared with the other workers; only this worker waits");
            }
        }
    }
}

/// `at` plus `wait`, saturating.
fn later(at: DateTime<Utc>, wait: Duration) -> DateTime<Utc> {
    chrono::TimeDelta::from_std(wait)
        .ok()
        .and_then(|wait| at.checked_add_signed(wait))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The in-process [`RateBudget`]: a [`Bucket`] per (vendor, credential) in memory, exact for the
/// one process that holds a sled data dir. Clones share the buckets.
#[derive(Debug, Clone, Default)]
pub struct LocalBudget {
    buckets: Arc<std::sync::Mutex<HashMap<(String, String), Bucket>>>,
}

/// An instant as a [`Bucket`]'s clock time: since the Unix epoch (0 before it).
fn since_epoch(at: DateTime<Utc>) -> Duration {
    (at - DateTime::UNIX_EPOCH).to_std().unwrap_or_default()
}

impl LocalBudget {
    fn with<T>(
        &self,
        vendor: &str,
        credential: &str,
        f: impl FnOnce(&mut Bucket) -> T,
        fresh: Bucket,
    ) -> T {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets
            .entry((vendor.to_owned(), credential.to_owned()))
            .or_insert(fresh);
        f(bucket)
    }
}

impl RateBudget for LocalBudget {
    fn acquire(
        &self,
        vendor: &str,
        credential: &str,
        per_minute: u32,
        now: DateTime<Utc>,
    ) -> impl std::future::Future<Output = crate::store::api::Result<Duration>> + Send {
        let now = since_epoch(now);
        let wait = self.with(
            vendor,
            credential,
            |bucket| bucket.take(per_minute, now),
            Bucket::full(per_minute, now),
        );
        std::future::ready(Ok(wait.unwrap_or(Duration::ZERO)))
    }

    fn pause_until(
        &self,
        vendor: &str,
        credential: &str,
        per_minute: u32,
        until: DateTime<Utc>,
    ) -> impl std::future::Future<Output = crate::store::api::Result<()>> + Send {
        let until = since_epoch(until);
        self.with(
            vendor,
            credential,
            |bucket| bucket.pause_until(until),
            Bucket::full(per_minute, until),
        );
        std::future::ready(Ok(()))
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
