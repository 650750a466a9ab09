//! The shared rate budget on PostgreSQL ([`RateBudget`] for [`PgBudget`]): one token-bucket row
//! per (vendor, credential) in `rate_buckets` (migration 4), which every worker takes its tokens
//! from.
//!
//! # Why a bucket row, not a share per worker
//!
//! A share leased to each worker (say `per_minute / workers`) needs no database round trip per
//! request, but wastes the budget of idle workers and must be re-divided whenever a worker starts
//! or dies; vendors' budgets are small (Calendly's, Webex's: hundreds a minute) and blockyard's
//! requests are writes of a few hundred milliseconds, so one short `UPDATE` per request costs
//! little next to the request it admits. The row is the budget, whoever asks.
//!
//! Taking a token is one statement: the row is refilled to `now` (`least(cap, tokens + elapsed
//! × rate)`), a token taken when one is there and no pause is running, and the verdict kept in
//! `granted` for `RETURNING`. The row's lock serializes concurrent takers, so of N workers
//! asking for the last token one gets it.
//!
//! # Accuracy
//!
//! Exact across workers that agree on the time: every token taken is one committed row update,
//! so no more than `per_minute` requests start in any minute beyond the bucket's start (full,
//! as the in-process limiter). The time is each worker's own clock (`now` passed in): the refill
//! time only moves forward (`greatest(refilled, now)`), so a worker whose clock is behind refills
//! nothing, and one ahead by `skew` hands out at most `skew × per_minute / 60` tokens early, once
//! (the others then refill from its later time). A waiting worker is not queued: when a token
//! comes back, whichever worker asks first gets it (no fairness between workers). Costs: one
//! round trip per request, and one hot row per credential (its updates serialize; thousands a
//! second, far above any vendor's budget).

use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{nanos, Postgres};
use crate::store::api::{RateBudget, Result};

/// The shared budget of one PostgreSQL store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PgBudget {
    pg: Postgres,
}

impl PgBudget {
    pub fn new(pg: &Postgres) -> PgBudget {
        PgBudget { pg: pg.clone() }
    }

    /// Makes the bucket's row, full at `at`, unless there is one.
    async fn create(
        &self,
        client: &deadpool_postgres::Object,
        vendor: &str,
        credential: &str,
        per_minute: u32,
        at: i64,
    ) -> Result<()> {
        let stmt = client
            .prepare_cached(
                "INSERT INTO rate_buckets (vendor, credential, tokens, refilled_ns, paused_until_ns)
                 VALUES ($1, $2, $3, $4, $4) ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        client
            .execute(
                &stmt,
                &[&vendor, &credential, &f64::from(per_minute.max(1)), &at],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        Ok(())
    }
}

/// The bucket refilled to `$4` (capacity `$3`, `$3 / 60e9` tokens a nanosecond).
const REFILLED: &str =
    "least($3::float8, tokens + greatest($4::bigint - refilled_ns, 0)::float8 * ($3::float8 / 60e9::float8))";

/// Takes a token from bucket (`$1`, `$2`) at `$4`: see the module doc. Every SET expression reads
/// the row as it was, so `granted` is the verdict the `tokens` update made.
static TAKE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE rate_buckets SET
             tokens = CASE WHEN $4 >= paused_until_ns AND {REFILLED} >= 1 - 1e-9
                           THEN greatest({REFILLED} - 1, 0) ELSE {REFILLED} END,
             refilled_ns = greatest(refilled_ns, $4),
             granted = ($4 >= paused_until_ns AND {REFILLED} >= 1 - 1e-9)
         WHERE vendor = $1 AND credential = $2
         RETURNING granted, tokens, paused_until_ns"
    )
});

impl RateBudget for PgBudget {
    async fn acquire(
        &self,
        vendor: &str,
        credential: &str,
        per_minute: u32,
        now: DateTime<Utc>,
    ) -> Result<Duration> {
        let client = self.pg.client().await?;
        let cap = f64::from(per_minute.max(1));
        let at = nanos(now);
        let stmt = client
            .prepare_cached(&TAKE)
            .await
            .map_err(|e| self.pg.error(e))?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [&vendor, &credential, &cap, &at];
        let mut row = client
            .query_opt(&stmt, &params)
            .await
            .map_err(|e| self.pg.error(e))?;
        if row.is_none() {
            self.create(&client, vendor, credential, per_minute, at)
                .await?;
            row = client
                .query_opt(&stmt, &params)
                .await
                .map_err(|e| self.pg.error(e))?;
        }
        let Some(row) = row else {
            return Err(self.pg.failed(format!(
                "the rate bucket of `{vendor}`/`{credential}` vanished while taking a token"
            )));
        };
        let (granted, tokens, paused): (bool, f64, i64) = (row.get(0), row.get(1), row.get(2));
        Ok(if granted {
            Duration::ZERO
        } else if paused > at {
            Duration::from_nanos(u64::try_from(paused - at).unwrap_or(u64::MAX))
        } else {
            Duration::from_secs_f64(((1.0 - tokens) / (cap / 60.0)).max(0.0))
        })
    }

    async fn pause_until(
        &self,
        vendor: &str,
        credential: &str,
        per_minute: u32,
        until: DateTime<Utc>,
    ) -> Result<()> {
        let client = self.pg.client().await?;
        let until = nanos(until);
        let stmt = client
            .prepare_cached(
                "INSERT INTO rate_buckets (vendor, credential, tokens, refilled_ns, paused_until_ns)
                 VALUES ($1, $2, $3, $4, $4)
                 ON CONFLICT (vendor, credential) DO UPDATE
                     SET paused_until_ns = greatest(rate_buckets.paused_until_ns, $4)",
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        client
            .execute(
                &stmt,
                &[&vendor, &credential, &f64::from(per_minute.max(1)), &until],
            )
            .await
            .map_err(|e| self.pg.error(e))?;
        Ok(())
    }
}
