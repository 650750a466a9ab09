//! Seeding: the same N people, consistently across Calendly, Webex and SCIM.
//!
//! [`people`] draws names, emails, roles and activity dates from one seeded generator; each
//! vendor then builds its own records from that list (with its own seeded id generator). Dates
//! are offsets from the start of the current UTC day, so a seed gives identical data all day long
//! while "90 days ago" stays meaningful.

use chrono::{DateTime, Duration, DurationRound, Utc};

use super::{calendly, scim, webex, CalendlyPlan};

const FIRST: &[&str] = &[
    "Ada",
    "Alan",
    "Barbara",
    "Claude",
    "Donald",
    "Edsger",
    "Frances",
    "Grace",
    "Hedy",
    "Ivan",
    "Joan",
    "Ken",
    "Leslie",
    "Margaret",
    "Niklaus",
    "Ole",
    "Radia",
    "Shafi",
    "Tim",
    "Whitfield",
    "Yukihiro",
    "Zhang",
    "Anita",
    "Bjarne",
    "Carol",
    "Dennis",
    "Elena",
    "Fernando",
    "Guido",
    "Hal",
];
const LAST: &[&str] = &[
    "Lovelace",
    "Turing",
    "Liskov",
    "Shannon",
    "Knuth",
    "Dijkstra",
    "Allen",
    "Hopper",
    "Lamarr",
    "Sutherland",
    "Clarke",
    "Thompson",
    "Lamport",
    "Hamilton",
    "Wirth",
    "Dahl",
    "Perlman",
    "Goldwasser",
    "Berners-Lee",
    "Diffie",
    "Matsumoto",
    "Wei",
    "Borg",
    "Stroustrup",
    "Shaw",
    "Ritchie",
    "Garcia",
    "Corbato",
    "Rossum",
    "Abelson",
];
const TIMEZONES: &[&str] = &[
    "America/New_York",
    "America/Denver",
    "America/Los_Angeles",
    "Europe/London",
    "Europe/Berlin",
    "Asia/Tokyo",
];
/// The domain every seeded email uses.
pub(crate) const DOMAIN: &str = "example.com";

/// A person's role in the organization (Calendly role; Webex admin roles follow it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SeedRole {
    Owner,
    Admin,
    Member,
}

/// One seeded person, before any vendor shapes it.
#[derive(Debug, Clone)]
pub(crate) struct SeedPerson {
    pub(crate) first: String,
    pub(crate) last: String,
    pub(crate) email: String,
    pub(crate) role: SeedRole,
    pub(crate) timezone: &'static str,
    pub(crate) created: DateTime<Utc>,
    /// Most recent activity first; empty for people who never did anything.
    pub(crate) activity: Vec<DateTime<Utc>>,
}

impl SeedPerson {
    pub(crate) fn name(&self) -> String {
        format!("{} {}", self.first, self.last)
    }
}

/// The moment seeded dates are offsets from: the start of the current UTC day.
pub(crate) fn anchor() -> DateTime<Utc> {
    let now = Utc::now();
    now.duration_trunc(Duration::days(1)).unwrap_or(now)
}

/// `n` people for `seed`: the first is the owner, the next three (when present) are admins;
/// about 15% never had any activity, about a quarter last did something 100 to 400 days ago.
pub(crate) fn people(n: usize, seed: u64) -> Vec<SeedPerson> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let anchor = anchor();
    let mut used = std::collections::HashSet::new();
    (0..n)
        .map(|i| {
            let first = FIRST[rng.usize(..FIRST.len())];
            let last = LAST[rng.usize(..LAST.len())];
            let local = format!("{}.{}", first, last).to_ascii_lowercase();
            let mut email = format!("{local}@{DOMAIN}");
            let mut k = 2;
            while !used.insert(email.clone()) {
                email = format!("{local}{k}@{DOMAIN}");
                k += 1;
            }
            let role = match i {
                0 => SeedRole::Owner,
                1..=3 => SeedRole::Admin,
                _ => SeedRole::Member,
            };
            let created =
                anchor - Duration::days(rng.i64(400..1500)) + Duration::seconds(rng.i64(0..86_400));
            let kind = rng.f64();
            let latest = match (role, kind) {
                (SeedRole::Owner, _) => Some(anchor - Duration::hours(20)),
                (_, k) if k < 0.15 => None,
                (_, k) if k < 0.40 => Some(anchor - Duration::days(rng.i64(100..400))),
                _ => {
                    Some(anchor - Duration::days(rng.i64(0..30)) - Duration::hours(rng.i64(1..24)))
                }
            };
            let activity = match latest {
                None => Vec::new(),
                Some(latest) => {
                    let extra = rng.usize(0..3);
                    std::iter::once(latest)
                        .chain((1..=extra).map(|j| latest - Duration::days(7 * j as i64)))
                        .collect()
                }
            };
            SeedPerson {
                first: first.to_owned(),
                last: last.to_owned(),
                email,
                role,
                timezone: TIMEZONES[rng.usize(..TIMEZONES.len())],
                created,
                activity,
            }
        })
        .collect()
}

/// Freshly seeded state for every vendor.
pub(crate) struct Seeded {
    pub(crate) calendly: calendly::CalendlyState,
    pub(crate) webex: webex::WebexState,
    pub(crate) scim: scim::ScimState,
}

/// Seeds all three vendors from the same people. `root` is `http://IP:PORT`.
pub(crate) fn build(root: &str, users: usize, seed: u64, plan: CalendlyPlan) -> Seeded {
    let people = people(users, seed);
    Seeded {
        calendly: calendly::CalendlyState::seeded(root, &people, seed, plan),
        webex: webex::WebexState::seeded(root, &people, seed),
        scim: scim::ScimState::seeded(root, &people, seed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn people_are_deterministic_unique_and_varied() {
        let a = people(300, 11);
        let b = people(300, 11);
        assert_eq!(
            a.iter().map(|p| &p.email).collect::<Vec<_>>(),
            b.iter().map(|p| &p.email).collect::<Vec<_>>()
        );
        let unique: std::collections::HashSet<_> = a.iter().map(|p| &p.email).collect();
        assert_eq!(unique.len(), 300);
        assert_eq!(a[0].role, SeedRole::Owner);
        assert_eq!(a.iter().filter(|p| p.role == SeedRole::Admin).count(), 3);
        let old = anchor() - Duration::days(90);
        assert!(a.iter().any(|p| p.activity.is_empty()));
        assert!(a
            .iter()
            .any(|p| p.activity.first().is_some_and(|t| *t < old)));
        assert!(a
            .iter()
            .any(|p| p.activity.first().is_some_and(|t| *t > old)));
        assert_ne!(people(5, 12)[1].email, String::new());
    }
}
