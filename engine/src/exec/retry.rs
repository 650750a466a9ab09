//! Durable retries: what a failed vendor call means for the run, and when its block is tried again.
//!
//! The client retries a call a few times within the call (a block's `retry.max_attempts`, waits
//! of seconds, see [`crate::http`]). When the call still fails, [`classify`] sorts its error:
//!
//! - **transient**: 429 (a wait past the credential's `max_wait` included), 5xx, 408, a timeout,
//!   a connection error, a token endpoint answering 429 or 5xx. The block does not settle and
//!   never takes `on_failure`: its step is recorded `retrying` (with the error, the attempt and
//!   the next attempt's time, [`StepRetry`]), and once nothing else in the run can go on the run
//!   parks as `retrying` with `wake_at` and a durable timer in the store
//!   ([`crate::store::timers`]). `serve` wakes it when the timer falls due, `blockyard resume`
//!   once that time has come, and the block is tried again, across restarts, until
//!   `retry.give_up_after` (24 h by default) has passed since its first transient failure: the
//!   attempt at that limit is its last, and if it fails too the block fails (its `on_failure`
//!   path, else the run fails), saying it gave up.
//! - **uncertain** (writes only): the write may have been performed (a 5xx or 408 answered after
//!   it was sent, a timeout, a connection broken after sending). It is never sent again blind:
//!   the preset's probe ([`super::resume::probe`]) checks it. Done: the block succeeded (its
//!   outputs and saves rendered from the probe's answer); not done: transient, sent again at the
//!   next attempt; no probe, or the probe cannot tell: the run ends `needs_attention`. A 429 or
//!   a connect error on a write means it was not performed: transient.
//! - **definitive**: every other answer (404, other 4xx, a render error, …): the block fails and
//!   takes `on_failure` as always.
//!
//! Durable retries apply to live runs that are recorded; a dry run's transient failure fails the
//! block (nothing waits for a plan).
//!
//! # Backoff
//!
//! Between attempts: [`DurableRetry::first`] (1 minute) doubling per attempt up to
//! [`DurableRetry::max`] (1 hour), with equal jitter (half the wait fixed, half random, so runs
//! parked together spread out), or the vendor's asked wait when that is longer; never past the
//! `give_up_after` limit. Times come from the engine's clock ([`super::EngineOptions::clock`]),
//! so tests move through hours of backoff under paused tokio time.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};

use super::block::{Answer, Called, Task};
use super::resume::{probe, Verdict};
use super::ExecError;
use crate::compile::ApiCall;
use crate::http::{CallError, TransportKind};
use crate::store::api::ReadHistory;
use crate::store::history::{StepRecord, StepRetry};

/// How long a block keeps being retried after its first transient failure, unless its
/// `retry.give_up_after` says otherwise.
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The backoff between durable attempts (engine-wide; see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurableRetry {
    /// The wait after the first transient failure (before jitter).
    pub first: Duration,
    /// The longest wait between attempts (before jitter).
    pub max: Duration,
}

impl Default for DurableRetry {
    /// 1 minute, doubling to 1 hour.
    fn default() -> DurableRetry {
        DurableRetry {
            first: Duration::from_secs(60),
            max: Duration::from_secs(3600),
        }
    }
}

impl DurableRetry {
    /// The wait after durable attempt `attempt` (1-based) failed: `first * 2^(attempt-1)`
    /// capped at `max`, half of it fixed and half random.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doubled = self
            .first
            .checked_mul(1u32 << attempt.saturating_sub(1).min(30))
            .unwrap_or(self.max);
        let base = doubled.min(self.max);
        let half = base / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

/// What a failed call means (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Try the block again later; the vendor's asked wait, when it said one.
    Transient { vendor_wait: Option<Duration> },
    /// A write that may have been performed: its probe decides.
    Uncertain,
    /// The answer stands: the block fails.
    Definitive,
}

/// Sorts a call's error (after the client's in-call retries); `write` is the block's kind.
pub(crate) fn classify(err: &CallError, write: bool) -> Class {
    // Which failures may succeed later is the call error's own rule; here only how.
    if !err.is_retryable() {
        return Class::Definitive;
    }
    let sent = |transient: Class| if write { Class::Uncertain } else { transient };
    let transient = Class::Transient { vendor_wait: None };
    match err {
        // Never connected: the request did not leave.
        CallError::Transport {
            kind: TransportKind::Connect,
            ..
        } => transient,
        CallError::Transport { .. } => sent(transient),
        // A 429 whose wait was longer than the credential waits: not performed.
        CallError::WaitTooLong { asked, .. } => Class::Transient {
            vendor_wait: Some(*asked),
        },
        CallError::Vendor { error, .. } if error.status == 429 => Class::Transient {
            vendor_wait: error.retry_after,
        },
        // 408 or 5xx: the vendor may have performed it.
        CallError::Vendor { .. } => sent(transient),
        // The token endpoint failed: the vendor call itself was never sent.
        CallError::Token { .. } => transient,
        // An SMTP 4xx or a connection never made: the message was not taken. A connection lost
        // on the way: it may have been.
        CallError::Smtp {
            maybe_sent: false, ..
        } => transient,
        CallError::Smtp { .. } => sent(transient),
        // `is_retryable` answers false for every other kind.
        _ => Class::Definitive,
    }
}

/// Checks a write whose delivery is uncertain (`message` says why) with its preset's probe:
/// done → [`Called::Ok`] with the write's answer the probe's `answer` recovers (the block's
/// outputs and saves render from it; when it cannot be, the run needs attention),
/// not done → [`Called::Transient`] (sent again at the next attempt), cannot tell →
/// [`Called::Unknown`]. Notes the verdict on the step.
pub(crate) async fn check(
    task: &Task,
    call: &ApiCall,
    step: &mut StepRecord,
    message: String,
    answer: Option<Answer>,
) -> Result<Called, ExecError> {
    let engine = &task.engine;
    let record = &task.context["record"];
    let verdict = match engine.history().run(task.run).await? {
        Some(run) => probe(engine, &task.prepared, task.node, step, record, &run).await,
        None => Verdict::Unknown("its run is not in the history to probe it".to_owned()),
    };
    Ok(match verdict {
        Verdict::Done(Ok(probed)) => {
            step.note = Some(format!("delivery uncertain ({message}); the preset's probe found the write had taken effect, so it was not sent again"));
            Called::Ok(probed)
        }
        Verdict::Done(Err(reason)) => Called::Unknown {
            attention: format!(
                "block `{}`: the write `{}` had taken effect ({message}; its probe found it), but its save and outputs cannot be recovered from the probe's answer: {reason}; set what it saves by hand, then run the workflow again if later blocks are still wanted",
                step.block, call.preset
            ),
            message,
            answer,
        },
        Verdict::NotDone => {
            step.note = Some("delivery uncertain; the preset's probe found the write had not taken effect, so it is sent again at the next attempt".to_owned());
            Called::Transient {
                message,
                answer,
                vendor_wait: None,
            }
        }
        Verdict::Unknown(reason) => Called::Unknown {
            attention: format!(
                "block `{}`: the write `{}` may or may not have taken effect ({message}), and {reason}; check it at the vendor, then run the workflow again",
                step.block, call.preset
            ),
            message,
            answer,
        },
    })
}

/// When a block whose durable attempt `attempt` just failed transiently at `now` is tried again,
/// `since` being its first transient failure; `None` when it gives up (`give_up_after` has
/// passed). The wait is the backoff or the vendor's, whichever is longer, and the attempt never
/// falls after the limit: the one at the limit is the last. Whole milliseconds, as the timer
/// keeps it, so a run woken by its timer finds its time has come.
pub(crate) fn next_attempt(
    policy: &DurableRetry,
    give_up_after: Duration,
    attempt: u32,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    vendor_wait: Option<Duration>,
) -> Option<DateTime<Utc>> {
    let limit = TimeDelta::from_std(give_up_after)
        .ok()
        .and_then(|d| since.checked_add_signed(d));
    if limit.is_some_and(|limit| now >= limit) {
        return None;
    }
    let wait = policy.backoff(attempt).max(vendor_wait.unwrap_or_default());
    let at = TimeDelta::from_std(wait)
        .ok()
        .and_then(|d| now.checked_add_signed(d));
    let at = match (at, limit) {
        (Some(at), Some(limit)) => at.min(limit),
        (Some(at), None) => at,
        (None, Some(limit)) => limit,
        (None, None) => DateTime::<Utc>::MAX_UTC,
    };
    Some(at.trunc_subsecs(3))
}

/// The [`StepRetry`] of a block's transient failure at `now`, given the block's previous one
/// (its last `retrying` step's, if any): the attempt number, when it first failed, and the next
/// attempt's time (`None`: it gives up).
pub(crate) fn step_retry(
    policy: &DurableRetry,
    give_up_after: Duration,
    previous: Option<StepRetry>,
    now: DateTime<Utc>,
    vendor_wait: Option<Duration>,
) -> StepRetry {
    let (attempt, since) = match previous {
        Some(p) => (p.attempt + 1, p.since),
        None => (1, now.trunc_subsecs(3)),
    };
    StepRetry {
        attempt,
        since,
        next_at: next_attempt(policy, give_up_after, attempt, since, now, vendor_wait),
    }
}

/// A duration as a person reads it: whole days, hours, minutes or seconds when exact (`24h`,
/// `90s`), else milliseconds (the config's spelling, [`crate::http::error::Exact`]).
pub(crate) fn spoken(d: Duration) -> String {
    crate::http::error::Exact(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn backoff_doubles_from_a_minute_to_an_hour_with_half_of_it_random() {
        let policy = DurableRetry::default();
        for (attempt, base) in [
            (1, 60),
            (2, 120),
            (3, 240),
            (7, 3600),
            (8, 3600),
            (40, 3600),
        ] {
            for _ in 0..50 {
                let wait = policy.backoff(attempt);
                let base = Duration::from_secs(base);
                assert!(
                    wait >= base / 2 && wait <= base,
                    "attempt {attempt}: {wait:?}"
                );
            }
        }
    }

    #[test]
    fn the_next_attempt_takes_the_longer_wait_and_never_passes_the_limit() {
        let policy = DurableRetry {
            first: Duration::from_secs(60),
            max: Duration::from_secs(60),
        };
        let t0 = Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap();
        let day = Duration::from_secs(86_400);
        let at = |now, wait| next_attempt(&policy, day, 1, t0, now, wait).unwrap();
        let after = |at: DateTime<Utc>, now: DateTime<Utc>| (at - now).num_seconds();
        assert!((30..=60).contains(&after(at(t0, None), t0)));
        // The vendor asked for 15 minutes: longer than the backoff, so it wins.
        let asked = Some(Duration::from_secs(900));
        assert_eq!(after(at(t0, asked), t0), 900);
        // Ten seconds before the limit: the last attempt is at the limit.
        let late = t0 + TimeDelta::seconds(86_390);
        assert_eq!(at(late, None), t0 + TimeDelta::days(1));
        // An absurd vendor wait is capped by the limit too.
        assert_eq!(at(t0, Some(Duration::MAX)), t0 + TimeDelta::days(1));
        // At (or past) the limit: give up.
        let limit = t0 + TimeDelta::days(1);
        assert_eq!(next_attempt(&policy, day, 9, t0, limit, None), None);
        // `give_up_after: 0s`: the first transient failure gives up at once.
        assert_eq!(next_attempt(&policy, Duration::ZERO, 1, t0, t0, None), None);

        let first = step_retry(&policy, day, None, t0, None);
        assert_eq!((first.attempt, first.since), (1, t0));
        let later = t0 + TimeDelta::minutes(1);
        let second = step_retry(&policy, day, Some(first), later, None);
        assert_eq!((second.attempt, second.since), (2, t0));
        assert!(second.next_at.unwrap() > later);
    }

    #[test]
    fn errors_are_sorted_into_transient_uncertain_and_definitive() {
        use crate::config::CredentialName;
        use crate::http::{Response, VendorError};
        use crate::preset::{ErrorStyle, PresetId};
        let action = PresetId::parse("webex.delete_user").unwrap();
        let vendor = |status: u16, retry_after: Option<u64>| {
            let mut error = VendorError::parse(
                "webex",
                ErrorStyle::Webex,
                status,
                &serde_json::Value::Null,
                None,
            );
            error.retry_after = retry_after.map(Duration::from_secs);
            CallError::Vendor {
                action: action.clone(),
                error: Box::new(error),
                response: Box::new(Response {
                    status,
                    headers: Default::default(),
                    body: serde_json::Value::Null,
                    items: None,
                    pages: 1,
                    wire_len: 0,
                }),
            }
        };
        let transport = |kind| CallError::Transport {
            action: action.clone(),
            method: "DELETE",
            url: "http://127.0.0.1/people/P1".to_owned(),
            kind,
            message: "x".to_owned(),
        };
        let transient = Class::Transient { vendor_wait: None };
        let waited = Class::Transient {
            vendor_wait: Some(Duration::from_secs(60)),
        };
        for (err, read, write) in [
            // Rate limited: never performed, for reads and writes alike.
            (vendor(429, Some(60)), waited, waited),
            (vendor(503, None), transient, Class::Uncertain),
            (vendor(500, None), transient, Class::Uncertain),
            (vendor(408, None), transient, Class::Uncertain),
            (vendor(404, None), Class::Definitive, Class::Definitive),
            (vendor(400, None), Class::Definitive, Class::Definitive),
            (vendor(403, None), Class::Definitive, Class::Definitive),
            (transport(TransportKind::Connect), transient, transient),
            (
                transport(TransportKind::Timeout),
                transient,
                Class::Uncertain,
            ),
            (transport(TransportKind::Other), transient, Class::Uncertain),
            (
                CallError::Token {
                    credential: CredentialName::new("webex".to_owned()),
                    status: 503,
                    message: "down".to_owned(),
                },
                transient,
                transient,
            ),
            (
                CallError::Token {
                    credential: CredentialName::new("webex".to_owned()),
                    status: 401,
                    message: "bad secret".to_owned(),
                },
                Class::Definitive,
                Class::Definitive,
            ),
        ] {
            assert_eq!(classify(&err, false), read, "read: {err}");
            assert_eq!(classify(&err, true), write, "write: {err}");
        }
    }

    #[test]
    fn smtp_failures_are_sorted_like_http_ones() {
        use crate::preset::PresetId;
        let smtp = |code: Option<u16>, transient: bool, maybe_sent: bool| CallError::Smtp {
            action: PresetId::parse("email.send").unwrap(),
            code,
            message: "x".to_owned(),
            transient,
            maybe_sent,
        };
        let again = Class::Transient { vendor_wait: None };
        // A 4xx refusal: the server took nothing, so the message may be sent again later.
        assert_eq!(classify(&smtp(Some(451), true, false), true), again);
        // A 5xx refusal stands.
        assert_eq!(
            classify(&smtp(Some(550), false, false), true),
            Class::Definitive
        );
        // A server that could not be reached took nothing; one lost mid-message may have.
        assert_eq!(classify(&smtp(None, true, false), true), again);
        assert_eq!(classify(&smtp(None, true, true), true), Class::Uncertain);
    }

    #[test]
    fn durations_are_spoken_in_their_largest_exact_unit() {
        assert_eq!(spoken(Duration::from_secs(86_400)), "1d");
        assert_eq!(spoken(Duration::from_secs(36 * 3600)), "36h");
        assert_eq!(spoken(Duration::from_secs(90)), "90s");
        assert_eq!(spoken(Duration::from_millis(1500)), "1500ms");
    }
}
