//! The mass-change guard's settings: `guard:` in a workflow (and the config's default), as written
//! ([`GuardSpec`]) and checked ([`Guard`]).
//!
//! `guard: { max_writes: 50, per: 1h }` lets at most 50 destructive writes of the workflow leave
//! in any 1 hour (a sliding window); `guard: { max_share: 10%, per: 1h }` lets at most 10 % of the
//! workflow's record collection (its current size, rounded down) be written destructively in any
//! hour. `per` is required (there is no silent default window). What happens past the limit is
//! [`crate::exec::guard`]'s.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `guard:` as written.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GuardSpec {
    /// At most this many destructive writes in any window of `per`.
    #[serde(default)]
    pub max_writes: Option<u64>,
    /// At most this share of the workflow's record collection (`10%`) in any window of `per`.
    #[serde(default)]
    pub max_share: Option<String>,
    /// The sliding window the writes are counted in (`1h`, `30m`, `1d`).
    #[serde(default)]
    pub per: Option<String>,
}

/// The checked guard.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Guard {
    pub limit: GuardLimit,
    /// The sliding window.
    #[serde(with = "humantime_secs")]
    pub per: Duration,
}

/// How many destructive writes a window allows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardLimit {
    /// A fixed number.
    MaxWrites(u64),
    /// A share of the collection, in percent (0 < p ≤ 100).
    MaxShare(f64),
}

impl Guard {
    /// The number of destructive writes allowed in one window, for a collection of
    /// `collection` records (rounded down: 10 % of 15 people is 1).
    pub fn allowed(&self, collection: u64) -> u64 {
        match self.limit {
            GuardLimit::MaxWrites(n) => n,
            GuardLimit::MaxShare(p) => ((collection as f64) * p / 100.0).floor() as u64,
        }
    }

    /// The window as written: `1h`, `90m`.
    pub fn window(&self) -> String {
        describe_duration(self.per)
    }

    /// `max_writes: 5, per: 1h`, as the guard is written.
    pub fn describe(&self) -> String {
        let per = describe_duration(self.per);
        match self.limit {
            GuardLimit::MaxWrites(n) => format!("max_writes: {n}, per: {per}"),
            GuardLimit::MaxShare(p) => format!("max_share: {p}%, per: {per}"),
        }
    }
}

fn describe_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 {
        format!("{}ms", d.as_millis())
    } else if secs % 86_400 == 0 {
        format!("{}d", secs / 86_400)
    } else if secs % 3_600 == 0 {
        format!("{}h", secs / 3_600)
    } else if secs % 60 == 0 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

mod humantime_secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::describe_duration(*d))
    }
}

/// A problem with `guard:`: the key it is about (`None`: the `guard` key itself) and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardProblem {
    pub key: Option<&'static str>,
    pub message: String,
}

/// Checks a `guard:`. `has_collection`: the workflow starts from records (a share needs them).
pub fn check(spec: &GuardSpec, has_collection: bool) -> Result<Guard, GuardProblem> {
    let problem = |key, message: String| GuardProblem { key, message };
    let limit = match (&spec.max_writes, &spec.max_share) {
        (None, None) => {
            return Err(problem(
                None,
                "`guard` needs a limit: `max_writes: N` (destructive writes) or `max_share: P%` (of the record collection)".to_owned(),
            ))
        }
        (Some(_), Some(_)) => {
            return Err(problem(
                Some("max_share"),
                "`guard` takes `max_writes` or `max_share`, not both; keep one".to_owned(),
            ))
        }
        (Some(n), None) => GuardLimit::MaxWrites(*n),
        (None, Some(share)) => {
            let parsed = share
                .trim()
                .strip_suffix('%')
                .and_then(|p| p.trim().parse::<f64>().ok())
                .filter(|p| p.is_finite());
            match parsed {
                Some(p) if p > 0.0 && p <= 100.0 => {
                    if !has_collection {
                        return Err(problem(
                            Some("max_share"),
                            "`guard.max_share` is a share of the workflow's record collection, and this workflow has none (`records:` in its begin block); use `max_writes`".to_owned(),
                        ));
                    }
                    GuardLimit::MaxShare(p)
                }
                Some(_) => {
                    return Err(problem(
                        Some("max_share"),
                        format!("`guard.max_share` `{share}` is out of range; write a percentage above 0% and at most 100%, such as `10%`"),
                    ))
                }
                None => {
                    return Err(problem(
                        Some("max_share"),
                        format!("`guard.max_share` `{share}` is not a share; write a percentage, such as `10%`"),
                    ))
                }
            }
        }
    };
    let Some(per) = &spec.per else {
        return Err(problem(
            None,
            "`guard` needs `per`, the sliding window its writes are counted in, such as `per: 1h`"
                .to_owned(),
        ));
    };
    let per = match super::parse_duration(per) {
        Some(d) if !d.is_zero() => d,
        Some(_) => {
            return Err(problem(
                Some("per"),
                "`guard.per` must be more than zero, such as `1h`".to_owned(),
            ))
        }
        None => {
            return Err(problem(
                Some("per"),
                format!("`guard.per` `{per}` is not a duration; write a number and a unit, such as `30m`, `1h` or `1d`"),
            ))
        }
    };
    Ok(Guard { limit, per })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(max_writes: Option<u64>, max_share: Option<&str>, per: Option<&str>) -> GuardSpec {
        GuardSpec {
            max_writes,
            max_share: max_share.map(str::to_owned),
            per: per.map(str::to_owned),
        }
    }

    #[test]
    fn a_share_is_rounded_down_and_a_count_is_itself() {
        let share = check(&spec(None, Some("10%"), Some("1h")), true).unwrap();
        assert_eq!(share.allowed(15), 1);
        assert_eq!(share.allowed(5_000), 500);
        assert_eq!(share.describe(), "max_share: 10%, per: 1h");
        let writes = check(&spec(Some(5), None, Some("90m")), false).unwrap();
        assert_eq!(writes.allowed(1_000_000), 5);
        assert_eq!(writes.describe(), "max_writes: 5, per: 90m");
    }
}
