//! Schedules: cron expressions evaluated in an IANA time zone.
//!
//! The dialect is croner's: 5 fields (`min hour day month weekday`), 6 with seconds first, and the
//! nicknames `@yearly`, `@monthly`, `@weekly`, `@daily`, `@hourly`; day-of-month and day-of-week
//! combine with OR when both are restricted, as in POSIX cron. croner follows Vixie cron's
//! daylight-saving policy (a fixed-time job runs once: at the first occurrence of a repeated hour,
//! and at the first valid instant after a skipped one), which is why it was chosen over `cron`.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;

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
    /// Parses `expr` in `zone` (UTC when `None`).
    pub fn parse(expr: &str, zone: Option<&str>) -> Result<Schedule, ScheduleError> {
        let zone = match zone {
            None => Tz::UTC,
            Some(name) => parse_zone(name)?,
        };
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expr.trim())
            .map_err(|err| ScheduleError::Cron {
                expr: expr.to_owned(),
                message: describe(&err),
            })?;
        Ok(Schedule {
            expr: expr.to_owned(),
            cron,
            zone,
        })
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The first fire instant strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.zone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|at| at.with_timezone(&Utc))
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

    #[test]
    fn bad_expressions_and_zones_are_reported() {
        assert!(matches!(
            Schedule::parse("61 * * * *", None),
            Err(ScheduleError::Cron { .. })
        ));
        assert_eq!(
            Schedule::parse("@daily", Some("Europe/Berln")).unwrap_err(),
            ScheduleError::TimeZone {
                zone: "Europe/Berln".to_owned(),
                suggestion: Some("Europe/Berlin".to_owned())
            }
        );
    }
}
