//! Paging that ends: a vendor that sends the same cursor or `Link` again is stopped at the first
//! repeat, a list longer than the credential's `max_pages` fails naming the bound, and Calendly's
//! `next_page_token` is carried over as the vendor wrote it (not as its redacted history copy).

use serde_json::{json, Value};
use wiremock::matchers::{method, query_param, query_param_is_missing};
use wiremock::{Mock, ResponseTemplate};

use super::{seen, Harness};

/// A Calendly page of one item whose next page is `next` and `token`.
fn calendly_page(item: &str, next: Value, token: Value) -> Value {
    json!({"collection": [{"uri": item}], "pagination": {"count": 1, "next_page": next, "next_page_token": token, "previous_page": null, "previous_page_token": null}})
}

/// The query parameters of the `n`-th request the server saw.
async fn query_of(h: &Harness, n: usize) -> Vec<(String, String)> {
    seen(&h.requests().await[n]).2
}

#[tokio::test]
async fn calendly_paging_stops_when_the_vendor_repeats_its_cursor() {
    // As the vendor's published OpenAPI mock does: every page names the same next page.
    let h = Harness::start().await;
    let base = h.server.uri();
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(calendly_page(
            "m",
            json!(format!(
                "{base}/calendly/organization_memberships?count=100&page_token=SAME"
            )),
            json!("SAME"),
        )))
        .mount(&h.server)
        .await;
    let err = h
        .call("calendly.list_memberships", json!({}))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "`calendly.list_memberships`: after page 2 the vendor pointed again at page 2, which was already fetched (it repeats its next-page cursor), so the list would never end; stopped after 2 pages"
    );
    assert!(!err.is_retryable());
    assert_eq!(h.requests().await.len(), 2);

    // The token alone (no `next_page` URL), on the list of invitations.
    h.server.reset().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(calendly_page(
            "i",
            Value::Null,
            json!("SAME-TOKEN"),
        )))
        .mount(&h.server)
        .await;
    let err = h
        .call("calendly.list_invitations", json!({}))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "`calendly.list_invitations`: after page 2 the vendor pointed again at page 2, which was already fetched (it repeats its next-page cursor), so the list would never end; stopped after 2 pages"
    );
    assert_eq!(h.requests().await.len(), 2);
}

#[tokio::test]
async fn a_cursor_that_cycles_back_to_the_first_page_is_stopped() {
    let h = Harness::start().await;
    let base = h.server.uri();
    // Page 1 → page 2 (`after=C2`) → page 1 again.
    Mock::given(query_param("after", "C2"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header(
                    "link",
                    format!("<{base}/webex/people?max=100>; rel=\"next\"").as_str(),
                )
                .set_body_json(json!({"items": [{"id": "P2"}]})),
        )
        .mount(&h.server)
        .await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header(
                    "link",
                    format!("<{base}/webex/people?max=100&after=C2>; rel=\"next\"").as_str(),
                )
                .set_body_json(json!({"items": [{"id": "P1"}]})),
        )
        .mount(&h.server)
        .await;
    let err = h.call("webex.list_people", json!({})).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "`webex.list_people`: after page 2 the vendor pointed again at page 1, which was already fetched (it repeats its next-page cursor), so the list would never end; stopped after 2 pages"
    );
    assert_eq!(h.requests().await.len(), 2);
}

#[tokio::test]
async fn the_calendly_page_token_is_sent_as_the_vendor_wrote_it() {
    let h = Harness::start().await;
    // The next page's URL is on the public host, so its token is put on the base URL instead.
    Mock::given(method("GET"))
        .and(query_param_is_missing("page_token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(calendly_page(
            "m1",
            json!(
                "https://api.calendly.com/organization_memberships?count=100&page_token=tok-REAL-2"
            ),
            json!("tok-REAL-2"),
        )))
        .mount(&h.server)
        .await;
    Mock::given(query_param("page_token", "tok-REAL-2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(calendly_page(
            "m2",
            Value::Null,
            Value::Null,
        )))
        .mount(&h.server)
        .await;
    let result = h.call("calendly.list_memberships", json!({})).await;
    assert!(
        query_of(&h, 1)
            .await
            .contains(&("page_token".to_owned(), "tok-REAL-2".to_owned())),
        "{:?}",
        query_of(&h, 1).await
    );
    let exchange = result.unwrap();
    assert_eq!(exchange.response.pages, 2);
    assert_eq!(h.requests().await.len(), 2);
    // What is kept (history, the CLI) still shows the token redacted.
    assert_eq!(
        exchange.response.body["pagination"]["next_page_token"],
        "[redacted]"
    );
}

#[tokio::test]
async fn a_list_longer_than_max_pages_fails_naming_the_bound() {
    // `max_pages: 2` on the `scim` credential (the last one in the harness's config).
    let h = Harness::with_extra("    max_pages: 2\n").await;
    Mock::given(method("GET"))
        .respond_with(|request: &wiremock::Request| {
            let start: u64 = request
                .url
                .query_pairs()
                .find(|(k, _)| k == "startIndex")
                .map_or(1, |(_, v)| v.parse().unwrap());
            ResponseTemplate::new(200).set_body_json(json!({
                "totalResults": 5, "startIndex": start, "itemsPerPage": 1, "Resources": [{"id": start.to_string()}]
            }))
        })
        .mount(&h.server)
        .await;
    let err = h.call("scim.list_users", json!({})).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "`scim.list_users`: the vendor has more than 2 pages, the most credential `scim` fetches in one call (`max_pages: 2`); narrow the query or raise `max_pages`"
    );
    assert!(!err.is_retryable());
    assert_eq!(h.requests().await.len(), 2);
}
