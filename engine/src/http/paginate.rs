//! Following a vendor's pagination, one strategy per [`Pagination`] variant.
//!
//! - Calendly (`calendly_cursor`): `pagination.next_page` is a full URL, fetched as given; when it
//!   points outside the credential's base URL, its `next_page_token` (or the URL's `page_token`)
//!   is put on the original request instead. A null `next_page` and token ends the list.
//! - Webex (`link_header`): the `Link: <…>; rel="next"` URL, fetched as given; one outside the
//!   base URL is refused (Webex documents no page token to carry over).
//! - SCIM (`scim_index`): `startIndex` advances by the number of resources received, until
//!   `startIndex - 1 + itemsPerPage >= totalResults` or a page is empty (servers need not honour
//!   `count` exactly, RFC 7644 §3.4.2.4).
//!
//! A credential is only ever sent below its base URL: [`is_below`] compares scheme, host, port
//! and path prefix.
//!
//! [`next_page`] reads the response as the vendor sent it, not its redacted copy (a page token is
//! carried over as written). Whether paging ends despite the vendor (a repeated cursor, a bound on
//! pages) is the client's loop's concern, in `mod.rs`.

use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::preset::Pagination;

/// Where the next page is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextPage {
    /// No more pages.
    Done,
    /// Fetch this URL as given (it is below the base URL).
    Url(String),
    /// Repeat the original request with this query parameter set.
    Param { name: &'static str, value: String },
    /// The vendor points outside the base URL and there is no token to carry over.
    Foreign(String),
}

/// True when `url` has `base`'s scheme, host and port and its path starts with `base`'s path.
pub fn is_below(url: &str, base: &str) -> bool {
    let (Ok(url), Ok(base)) = (url::Url::parse(url), url::Url::parse(base)) else {
        return false;
    };
    let prefix = base.path().trim_end_matches('/');
    url.scheme() == base.scheme()
        && url.host_str() == base.host_str()
        && url.port_or_known_default() == base.port_or_known_default()
        && (url.path() == prefix
            || url.path().starts_with(&format!("{prefix}/"))
            || prefix.is_empty())
}

/// The next page after a response with `headers` and `body` whose request had `start_index`
/// (SCIM) and returned `received` items.
pub fn next_page(
    style: Pagination,
    base: &str,
    headers: &HeaderMap,
    body: &Value,
    start_index: u64,
    received: usize,
) -> NextPage {
    match style {
        Pagination::CalendlyCursor => {
            let pagination = body.get("pagination");
            let next_url = pagination
                .and_then(|p| p.get("next_page"))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty());
            let token = pagination
                .and_then(|p| p.get("next_page_token"))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .or_else(|| {
                    let url = url::Url::parse(next_url?).ok()?;
                    url.query_pairs()
                        .find(|(k, _)| k == "page_token")
                        .map(|(_, v)| v.into_owned())
                });
            match (next_url, token) {
                (Some(url), _) if is_below(url, base) => NextPage::Url(url.to_owned()),
                (_, Some(token)) => NextPage::Param {
                    name: "page_token",
                    value: token,
                },
                (Some(url), None) => NextPage::Foreign(url.to_owned()),
                (None, None) => NextPage::Done,
            }
        }
        Pagination::LinkHeader => {
            let next = headers
                .get_all(reqwest::header::LINK)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(link_next);
            match next {
                None => NextPage::Done,
                Some(url) if is_below(&url, base) => NextPage::Url(url),
                Some(url) => NextPage::Foreign(url),
            }
        }
        Pagination::ScimIndex => {
            let total = body.get("totalResults").and_then(as_u64);
            let start = body
                .get("startIndex")
                .and_then(as_u64)
                .unwrap_or(start_index)
                .max(1);
            let per_page = body
                .get("itemsPerPage")
                .and_then(as_u64)
                .unwrap_or(received as u64);
            match total {
                _ if received == 0 => NextPage::Done,
                // Saturating: a vendor's numbers may be anything up to `u64::MAX`; a sum past it
                // is past any total.
                Some(total)
                    if (start - 1).saturating_add(per_page.max(received as u64)) >= total =>
                {
                    NextPage::Done
                }
                None => NextPage::Done,
                Some(_) => NextPage::Param {
                    name: "startIndex",
                    value: start.saturating_add(received as u64).to_string(),
                },
            }
        }
    }
}

/// A number, or a string holding one (some SCIM servers quote their integers).
fn as_u64(value: &Value) -> Option<u64> {
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
}

/// The `rel="next"` URL of one `Link` header value (RFC 8288), which may list several links.
pub fn link_next(header: &str) -> Option<String> {
    for link in header.split(',') {
        let link = link.trim();
        let Some(end) = link.find('>') else { continue };
        if !link.starts_with('<') {
            continue;
        }
        let url = &link[1..end];
        let is_next = link[end + 1..].split(';').any(|param| {
            let param = param.trim();
            let Some((key, value)) = param.split_once('=') else {
                return false;
            };
            key.trim().eq_ignore_ascii_case("rel")
                && value
                    .trim()
                    .trim_matches('"')
                    .split_whitespace()
                    .any(|rel| rel.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return Some(url.to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn link_headers_are_parsed() {
        assert_eq!(
            link_next(
                r#"<https://webexapis.com/v1/people?max=10&after=Y2lz>; rel="next", <https://webexapis.com/v1/people?max=10>; rel="first""#
            ),
            Some("https://webexapis.com/v1/people?max=10&after=Y2lz".to_owned())
        );
        assert_eq!(link_next(r#"<https://x/a>; rel="prev""#), None);
    }

    #[test]
    fn origins_are_compared_with_the_base_path() {
        let base = "http://127.0.0.1:8080/calendly";
        assert!(is_below("http://127.0.0.1:8080/calendly/users?x=1", base));
        assert!(!is_below("http://127.0.0.1:8080/webex/people", base));
        assert!(!is_below("http://127.0.0.1:9090/calendly/users", base));
        assert!(!is_below("https://evil.example/calendly/users", base));
        assert!(is_below(
            "https://api.calendly.com/x",
            "https://api.calendly.com"
        ));
    }

    #[test]
    fn a_foreign_calendly_link_falls_back_to_its_token() {
        let body = json!({"pagination": {"next_page": "https://evil.example/x?page_token=abc", "next_page_token": null}});
        assert_eq!(
            next_page(
                Pagination::CalendlyCursor,
                "https://api.calendly.com",
                &HeaderMap::new(),
                &body,
                1,
                1
            ),
            NextPage::Param {
                name: "page_token",
                value: "abc".into()
            }
        );
    }

    #[test]
    fn scim_stops_at_total_results() {
        let page =
            |start: u64, n: u64| json!({"totalResults": 3, "startIndex": start, "itemsPerPage": n});
        let h = HeaderMap::new();
        assert_eq!(
            next_page(Pagination::ScimIndex, "", &h, &page(1, 2), 1, 2),
            NextPage::Param {
                name: "startIndex",
                value: "3".into()
            }
        );
        assert_eq!(
            next_page(Pagination::ScimIndex, "", &h, &page(3, 1), 3, 1),
            NextPage::Done
        );
        assert_eq!(
            next_page(Pagination::ScimIndex, "", &h, &page(3, 0), 3, 0),
            NextPage::Done
        );
    }

    #[test]
    fn scim_numbers_near_u64_max_end_the_list_instead_of_overflowing() {
        let h = HeaderMap::new();
        let max = u64::MAX;
        let huge_page = json!({"totalResults": max, "startIndex": 2, "itemsPerPage": max});
        assert_eq!(
            next_page(Pagination::ScimIndex, "", &h, &huge_page, 2, 3),
            NextPage::Done
        );
        let last_start = json!({"totalResults": max, "startIndex": max - 1, "itemsPerPage": 1});
        assert_eq!(
            next_page(Pagination::ScimIndex, "", &h, &last_start, 1, 5),
            NextPage::Done
        );
    }
}
