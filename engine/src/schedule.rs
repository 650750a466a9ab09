//! Schedules: cron expressions evaluated in an IANA time zone.
//!
//! The dialect is croner's: 5 fields (`min hour day month weekday`), 6 with seconds first, and the
//! nicknames `@yearly`, `@monthly`, `@weekly`, `@daily`, `@hourly`; day-of-month and day-of-week
//! combine with OR when both are restricted, as in POSIX cron. croner follows Vixie cron's
//! daylight-saving policy for fixed-time jobs (a single value in each of second, minute and hour):
//! they run once, at the first occurrence of a repeated hour, and at the first valid instant after
//! a skipped one. For interval jobs (a wildcard, step, range or list in second, minute or hour) the
//! policy is to run on both occurrences of a repeated hour and to skip times inside a gap; croner's
//! zone-aware search misses the second occurrence, so [`Schedule::next_after`] searches interval
//! jobs offset by offset instead (see its body). An expression croner accepts but no date
//! satisfies (`0 0 30 2 *`) is refused at parse, where its search costs once, not at every tick.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, FixedOffset, Offset, SubsecRound, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::{Cron, JobType};

/// Why a schedule does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleError {
    Cron {
        expr: String,
        message: String,
    },
    TimeZone {
        zone: String,
        suggestion: Option<String>,
    },
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScheduleError::Cron { expr, message } => {
                write!(f, "invalid cron expression `{expr}`: {message}")
            }
            ScheduleError::TimeZone { zone, .. } => write!(f, "unknown time zone `{zone}`"),
        }
    }
}

impl std::error::Error for ScheduleError {}

/// A parsed cron expression and its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: String,
    cron: Cron,
    zone: Tz,
}

impl Schedule {
    /// Parses `expr` in `zone` (UTC when `None`), reporting every problem: the expression's, then
    /// the zone's (a misspelt zone does not hide a bad expression).
    pub fn parse(expr: &str, zone: Option<&str>) -> Result<Schedule, Vec<ScheduleError>> {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expr.trim())
            .map_err(|err| ScheduleError::Cron {
                expr: expr.to_owned(),
                message: describe(&err),
            });
        let zone = zone.map_or(Ok(Tz::UTC), parse_zone);
        match (cron, zone) {
            (Ok(cron), Ok(zone)) => {
                let schedule = Schedule {
                    expr: expr.to_owned(),
                    cron,
                    zone,
                };
                // croner accepts fields no date satisfies (`0 0 30 2 *`, a bare `L` weekday), and
                // then searches thousands of years at every question: find that out once, here.
                // A schedule that fires at all fires within one 400-year Gregorian cycle.
                let since = DateTime::from_timestamp(946_684_800, 0).unwrap_or_default();
                if schedule.next_after(since).is_none() {
                    return Err(vec![ScheduleError::Cron {
                        expr: expr.to_owned(),
                        message: "no date matches every field, so it never fires".to_owned(),
                    }]);
                }
                Ok(schedule)
            }
            (cron, zone) => Err([cron.err(), zone.err()].into_iter().flatten().collect()),
        }
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The first fire instant strictly after `after`, by the Vixie policy (see the module doc):
    /// a whole second (croner keeps the fraction of the instant it searches from, so the search
    /// starts from `after`'s whole second: workers started at different instants name each
    /// tick alike).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let after = after.trunc_subsecs(0);
        if self.cron.determine_job_type() == JobType::FixedTime {
            let local = after.with_timezone(&self.zone);
            return self
                .cron
                .find_next_occurrence(&local, false)
                .ok()
                .map(|at| at.with_timezone(&Utc));
        }
        // An interval job fires at every instant whose local wall-clock time matches. Search in the
        // fixed offset in force at `from`; a match found past an offset change is only valid if the
        // offset did not change before it, so restart at the change in the new offset. This visits a
        // repeated hour twice and never lands in a gap.
        let mut from = after;
        let mut inclusive = false;
        for _ in 0..16 {
            let offset = self.offset_at(from);
            let found = self
                .cron
                .find_next_occurrence(&from.with_timezone(&offset), inclusive)
                .ok()?
                .with_timezone(&Utc);
            if self.offset_at(found) == offset {
                return Some(found);
            }
            // The first second at which the offset differs from `offset`.
            let (mut lo, mut hi) = (from.timestamp(), found.timestamp());
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                let at = DateTime::from_timestamp(mid, 0)?;
                if self.offset_at(at) == offset {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            from = DateTime::from_timestamp(hi, 0)?;
            inclusive = true;
        }
        None
    }

    fn offset_at(&self, at: DateTime<Utc>) -> FixedOffset {
        self.zone.offset_from_utc_datetime(&at.naive_utc()).fix()
    }
}

impl Schedule {
    /// The last fire instant at or before `at` (catch-up after downtime).
    pub fn last_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = at.with_timezone(&self.zone);
        self.cron
            .find_previous_occurrence(&local, true)
            .ok()
            .map(|at| at.with_timezone(&Utc))
    }

    /// The next `n` fire instants after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut at = after;
        while out.len() < n {
            match self.next_after(at) {
                Some(next) => {
                    out.push(next);
                    at = next;
                }
                None => break,
            }
        }
        out
    }
}

/// An IANA zone name, with a did-you-mean for typos.
pub fn parse_zone(name: &str) -> Result<Tz, ScheduleError> {
    Tz::from_str(name).map_err(|_| ScheduleError::TimeZone {
        zone: name.to_owned(),
        suggestion: crate::compile::suggest(
            name,
            chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()),
        ),
    })
}

fn describe(err: &croner::errors::CronError) -> String {
    let text = err.to_string().to_lowercase();
    let text = text.trim_end_matches('.');
    let text = text.strip_prefix("component error: ").unwrap_or(text);
    if text.is_empty() {
        "not a cron expression".to_owned()
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Workers that started at different instants agree on every tick (each fires it once
    /// across them only if they name the same instant): a tick is a whole second whatever
    /// fraction of a second the search starts from.
    #[test]
    fn a_tick_is_a_whole_second_whatever_it_is_searched_from() {
        for expr in ["* * * * * *", "*/5 * * * *", "30 2 * * *"] {
            let schedule = Schedule::parse(expr, Some("Europe/Berlin")).unwrap();
            let whole = "2026-05-04T10:00:07Z".parse::<DateTime<Utc>>().unwrap();
            let part = "2026-05-04T10:00:07.371833684Z"
                .parse::<DateTime<Utc>>()
                .unwrap();
            let next = schedule.next_after(part).unwrap();
            assert_eq!(next, schedule.next_after(whole).unwrap(), "{expr}");
            assert_eq!(next.timestamp_subsec_nanos(), 0, "{expr}: {next}");
        }
    }

    #[test]
    fn an_expression_that_never_fires_is_an_error() {
        for expr in ["0 0 30 2 *", "0 */1 * * L"] {
            assert_eq!(
                Schedule::parse(expr, Some("Europe/Berlin")).unwrap_err(),
                vec![ScheduleError::Cron {
                    expr: expr.to_owned(),
                    message: "no date matches every field, so it never fires".to_owned(),
                }]
            );
        }
        assert!(
            Schedule::parse("0 0 29 2 *", None).is_ok(),
            "a leap day fires"
        );
    }

    #[test]
    fn fixed_time_jobs_in_a_spring_forward_gap_fire_after_it() {
        let schedule = Schedule::parse("30 2 * * *", Some("America/New_York")).unwrap();
        let after = "2026-03-07T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let first = schedule.next_after(after).unwrap();
        assert_eq!(first.to_rfc3339(), "2026-03-07T07:30:00+00:00");
        // 02:30 does not exist on 2026-03-08; croner fires at 03:00 EDT = 07:00 UTC.
        assert_eq!(
            schedule.next_after(first).unwrap().to_rfc3339(),
            "2026-03-08T07:00:00+00:00"
        );
    }

    fn ticks(expr: &str, zone: &str, after: &str, n: usize) -> Vec<String> {
        let schedule = Schedule::parse(expr, Some(zone)).unwrap();
        schedule
            .upcoming(after.parse().unwrap(), n)
            .iter()
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .collect()
    }

    #[test]
    fn interval_jobs_fire_on_both_occurrences_of_a_repeated_hour() {
        // New York falls back at 06:00Z on 2026-11-01 (02:00 EDT → 01:00 EST).
        assert_eq!(
            ticks(
                "*/30 * * * *",
                "America/New_York",
                "2026-11-01T04:50:00Z",
                5
            ),
            [
                "2026-11-01T05:00:00Z",
                "2026-11-01T05:30:00Z",
                "2026-11-01T06:00:00Z",
                "2026-11-01T06:30:00Z",
                "2026-11-01T07:00:00Z"
            ]
        );
        // Berlin falls back at 01:00Z on 2026-10-25 (03:00 CEST → 02:00 CET).
        assert_eq!(
            ticks("*/30 * * * *", "Europe/Berlin", "2026-10-24T23:50:00Z", 5),
            [
                "2026-10-25T00:00:00Z",
                "2026-10-25T00:30:00Z",
                "2026-10-25T01:00:00Z",
                "2026-10-25T01:30:00Z",
                "2026-10-25T02:00:00Z"
            ]
        );
    }

    #[test]
    fn interval_jobs_skip_a_gap_and_fixed_jobs_fire_once() {
        assert_eq!(
            ticks(
                "*/30 * * * *",
                "America/New_York",
                "2026-03-08T06:00:00Z",
                3
            ),
            [
                "2026-03-08T06:30:00Z",
                "2026-03-08T07:00:00Z",
                "2026-03-08T07:30:00Z"
            ]
        );
        assert_eq!(
            ticks("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", 2),
            ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]
        );
        assert_eq!(
            ticks("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", 2),
            ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]
        );
        assert_eq!(
            ticks("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
        );
    }

    #[test]
    fn bad_expressions_and_zones_are_reported_together() {
        let bad_cron = ScheduleError::Cron {
            expr: "61 * * * *".to_owned(),
            message: "number out of bounds".to_owned(),
        };
        let bad_zone = ScheduleError::TimeZone {
            zone: "Europe/Berln".to_owned(),
            suggestion: Some("Europe/Berlin".to_owned()),
        };
        assert_eq!(
            Schedule::parse("61 * * * *", None).unwrap_err(),
            std::slice::from_ref(&bad_cron)
        );
        assert_eq!(
            Schedule::parse("@daily", Some("Europe/Berln")).unwrap_err(),
            std::slice::from_ref(&bad_zone)
        );
        assert_eq!(
            Schedule::parse("61 * * * *", Some("Europe/Berln")).unwrap_err(),
            [bad_cron, bad_zone]
        );
    }
}
