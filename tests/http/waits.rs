//! The waits a vendor asks for (`Retry-After`, Calendly's `X-RateLimit-Reset`), on a virtual clock:
//! any value, however absurd, is read without panicking, and a wait longer than the credential's
//! `max_wait` fails the call at once as a transient failure instead of holding every run of the
//! credential back.

use std::time::Duration;

use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, ResponseTemplate};

use super::Harness;

#[tokio::test]
async fn an_absurd_retry_after_fails_the_call_at_once_and_holds_nothing_back() {
    let h = Harness::start().await;
    for (value, asked) in [
        ("999999999", "31 years"),
        ("18446744073709551615", "more than 1000 years"),
        ("1e20", "more than 1000 years"),
        ("1e308", "more than 1000 years"),
        ("Fri, 31 Dec 9999 23:59:59 GMT", "more than 1000 years"),
    ] {
        h.server.reset().await;
        Mock::given(method("GET"))
            .respond_with(
                ResponseTemplate::new(429)
                    .insert_header("Retry-After", value)
                    .set_body_json(json!({"message": "Too Many Requests"})),
            )
            .mount(&h.server)
            .await;
        let err = h
            .call("webex.get_user_details", json!({"webex_user_id": "P1"}))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("`webex.get_user_details`: the vendor asked to wait {asked} (`Retry-After: {value}`), more than the 15m that credential `webex` waits at most (`max_wait`); not waiting: the call failed for now and may succeed later, or raise `max_wait`")
        );
        assert!(err.is_retryable(), "{value}: a transient failure");
        assert_eq!(err.response().map(|r| r.status), Some(429));
        assert_eq!(h.requests().await.len(), 1, "{value}: not retried");
    }
    // The limiter was not paused: the next call goes out at once.
    h.server.reset().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "P1"})))
        .mount(&h.server)
        .await;
    h.call("webex.get_user_details", json!({"webex_user_id": "P1"}))
        .await
        .unwrap();
    assert_eq!(h.clock.waits(), [] as [Duration; 0], "nothing waited");
}

#[tokio::test]
async fn calendly_rate_limit_reset_goes_through_the_same_cap() {
    let h = Harness::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("X-RateLimit-Reset", "999999999")
                .set_body_json(json!({"title": "Too Many Requests", "message": "slow down"})),
        )
        .mount(&h.server)
        .await;
    let err = h
        .call("calendly.current_user", json!({}))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "`calendly.current_user`: the vendor asked to wait 31 years (`X-RateLimit-Reset: 999999999`), more than the 15m that credential `calendly` waits at most (`max_wait`); not waiting: the call failed for now and may succeed later, or raise `max_wait`"
    );
    assert!(h.clock.waits().is_empty());
}

#[tokio::test]
async fn a_wait_no_longer_than_max_wait_is_honoured_and_a_longer_one_is_not() {
    // `max_wait: 10s` on the `scim` credential (the last one in the harness's config).
    let h = Harness::with_extra("    max_wait: 10s\n").await;
    for (value, waited) in [("10", 10_000), ("2.5", 2_500), ("-3", 0), ("nan", 0)] {
        h.server.reset().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", value))
            .up_to_n_times(1)
            .mount(&h.server)
            .await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "U1"})))
            .mount(&h.server)
            .await;
        let before = h.clock.waits().len();
        h.call("scim.get_user", json!({"scim_user_id": "U1"}))
            .await
            .unwrap();
        let waits = h.clock.waits();
        assert_eq!(waits.len(), before + 1, "{value}");
        if waited > 0 {
            // The vendor's wait replaces the backoff.
            assert_eq!(waits[before], Duration::from_millis(waited), "{value}");
        } else {
            // Not a wait it can mean: the computed backoff (at most 500 ms the first time).
            assert!(waits[before] <= Duration::from_millis(500), "{value}");
        }
    }
    h.server.reset().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "11"))
        .mount(&h.server)
        .await;
    let err = h
        .call("scim.get_user", json!({"scim_user_id": "U1"}))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "`scim.get_user`: the vendor asked to wait 11s (`Retry-After: 11`), more than the 10s that credential `scim` waits at most (`max_wait`); not waiting: the call failed for now and may succeed later, or raise `max_wait`"
    );
}

/// The failure is transient: the run waits as `retrying`, and since the vendor's wait is longer
/// than the block's `give_up_after` (24 hours), its next attempt is at that limit.
#[tokio::test]
async fn a_run_whose_vendor_asks_an_absurd_wait_retries_at_its_limit_with_the_reason() {
    let server = wiremock::MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("X-RateLimit-Reset", "1e20")
                .set_body_json(json!({"title": "Too Many Requests", "message": "slow down"})),
        )
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!("data_dir: data\n{}", super::config_text(&server.uri(), ""));
    std::fs::write(dir.path().join("blockyard.yaml"), config).unwrap();
    std::fs::write(dir.path().join("whoami.yaml"), crate::support::WHOAMI).unwrap();
    let path = dir.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        crate::support::blockyard_in(&path, &["run", "whoami.yaml", "--json"])
    })
    .await
    .unwrap();
    let stdout = crate::support::stdout(&out);
    let run: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|_| panic!("not JSON: {stdout}\n{}", crate::support::stderr(&out)));
    assert_eq!(run["status"], "retrying", "{stdout}");
    assert_eq!(out.status.code(), Some(6));
    let me = &run["steps"][1];
    assert_eq!(me["block"], "me");
    assert_eq!(me["status"], "retrying");
    let at =
        |v: &serde_json::Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    assert_eq!(
        at(&run["wake_at"]) - at(&me["retry"]["since"]),
        chrono::TimeDelta::hours(24)
    );
    assert_eq!(
        me["error"],
        "`calendly.current_user`: the vendor asked to wait more than 1000 years (`X-RateLimit-Reset: 1e20`), more than the 15m that credential `calendly` waits at most (`max_wait`); not waiting: the call failed for now and may succeed later, or raise `max_wait`"
    );
    assert_eq!(me["response"]["status"], 429);
}
