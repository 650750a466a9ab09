//! The `wait` block: when a wait ends, and whether its `wake_when` holds.
//!
//! A wait ends at `for:` after it started, or at `until:` (an RFC 3339 instant, or a
//! `YYYY-MM-DD` date read at its midnight in the workflow's `timezone:`), or earlier when its
//! `wake_when:` holds on the subject record. The run loop ([`super::run`]) parks a run whose
//! only work left is waiting as `waiting`, its record's `wake_at` the earliest end, and watches
//! the subject record ([`crate::store::timers`]) so a write of it wakes the run to judge
//! `wake_when` again. This module holds the pure parts: reading `until`, judging `wake_when`.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value};

use crate::compile::WakeWhen;
use crate::rules::{map_to_dynamic, to_dynamic};

/// The step outputs' `outcome` of a wait that ended at its time.
pub(crate) const ELAPSED: &str = "elapsed";
/// The step outputs' `outcome` of a wait that `wake_when` ended.
pub(crate) const WOKEN: &str = "woken";

/// The instant `until:` rendered to: an RFC 3339 instant, or a date's midnight in `zone`.
pub(crate) fn until_instant(text: &str, zone: Tz) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let midnight = date.and_hms_opt(0, 0, 0).expect("midnight exists");
        // A midnight a clock change skips is the first instant of the day that exists.
        let at = zone
            .from_local_datetime(&midnight)
            .earliest()
            .or_else(|| {
                zone.from_local_datetime(&(midnight + chrono::TimeDelta::hours(1)))
                    .earliest()
            })
            .ok_or_else(|| format!("`{text}` has no midnight in `{}`", zone.name()))?;
        return Ok(at.with_timezone(&Utc));
    }
    Err(format!(
        "`until` rendered `{text}`, which is neither an RFC 3339 instant (`2026-12-01T09:00:00Z`) nor a date (`2026-12-01`)"
    ))
}

/// Whether `wake_when` holds on `record` (a rhai condition that fails or is not a boolean does
/// not hold).
pub(crate) fn holds(
    wake: &WakeWhen,
    record: &Value,
    vars: &Map<String, Value>,
    now: DateTime<Utc>,
) -> bool {
    let empty = Map::new();
    let fields = record.as_object().unwrap_or(&empty);
    match wake {
        WakeWhen::Rules(rules) => rules.iter().all(|rule| rule.holds(fields, now)),
        WakeWhen::When(condition) => {
            let vars = map_to_dynamic(vars);
            let record = to_dynamic(record);
            crate::as_of::at(now, || {
                crate::compile::rule_engine()
                    .eval(condition, &record, &vars)
                    .matched()
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_reads_instants_and_dates_in_the_zone() {
        let utc = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(
            until_instant("2026-12-01T09:00:00+01:00", chrono_tz::UTC),
            Ok(utc("2026-12-01T08:00:00Z"))
        );
        assert_eq!(
            until_instant("2026-12-01", chrono_tz::Europe::Berlin),
            Ok(utc("2026-11-30T23:00:00Z"))
        );
        assert_eq!(
            until_instant("2026-07-01", chrono_tz::America::New_York),
            Ok(utc("2026-07-01T04:00:00Z"))
        );
        assert_eq!(
            until_instant("next tuesday", chrono_tz::UTC),
            Err("`until` rendered `next tuesday`, which is neither an RFC 3339 instant (`2026-12-01T09:00:00Z`) nor a date (`2026-12-01`)".to_owned())
        );
    }
}
