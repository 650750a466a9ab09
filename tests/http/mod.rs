//! The HTTP layer against real HTTP servers on loopback (wiremock): the exact request of every
//! shipped action, pagination, 429 waits on a virtual clock, OAuth2 refresh, vendor errors,
//! redaction (`secrets`: a URL's password, a secret given as an input), the token store across
//! processes (`tokens`), and `blockyard call` through the real binary.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use blockyard::config::{Config, CredentialName};
use blockyard::http::{CallError, CallOptions, Client, Clock, Credentials, Exchange};
use blockyard::preset::{PresetId, PresetRegistry};
use serde_json::{json, Map, Value};
use wiremock::matchers::{any, body_string_contains, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::support;

mod connections;
mod paging;
mod secrets;
mod tokens;
mod waits;

/// A wiremock server standing in for all three vendors, and a client configured against it.
struct Harness {
    server: MockServer,
    client: Client,
    clock: Clock,
    config: Config,
}

fn config_text(uri: &str, extra: &str) -> String {
    format!(
        "vars:\n  calendly_organization: https://api.calendly.com/organizations/ORG1\n\
         credentials:\n\
         \x20 calendly:\n    vendor: calendly\n    auth: bearer\n    token: calendly-token-123\n    base_url: {uri}/calendly\n\
         \x20 webex:\n    vendor: webex\n    auth: bearer\n    token: webex-token-456\n    base_url: {uri}/webex\n\
         \x20 scim:\n    vendor: scim\n    auth: bearer\n    token: scim-token-789\n    base_url: {uri}/scim/v2\n{extra}"
    )
}

impl Harness {
    async fn start() -> Harness {
        Harness::with_extra("").await
    }

    async fn with_extra(extra: &str) -> Harness {
        let server = MockServer::start().await;
        let text = config_text(&server.uri(), &extra.replace("{uri}", &server.uri()));
        let config = Config::parse(Path::new("blockyard.yaml"), &text).unwrap();
        let clock = Clock::virtual_clock();
        let client = client(&config, PresetRegistry::builtin(), clock.clone());
        Harness {
            server,
            client,
            clock,
            config,
        }
    }

    fn inputs(&self, id: &str, given: Value) -> Result<Map<String, Value>, CallError> {
        let given = given.as_object().cloned().unwrap_or_default();
        self.client
            .resolve_inputs(&id_of(id), &given, &self.config.context())
    }

    async fn call(&self, id: &str, given: Value) -> Result<Exchange, CallError> {
        self.call_with(id, given, &CallOptions::default()).await
    }

    async fn call_with(
        &self,
        id: &str,
        given: Value,
        options: &CallOptions,
    ) -> Result<Exchange, CallError> {
        let inputs = self.inputs(id, given)?;
        let credential = CredentialName::new(id.split('.').next().unwrap());
        self.client
            .call(&id_of(id), &credential, &inputs, options)
            .await
    }

    async fn requests(&self) -> Vec<Request> {
        self.server.received_requests().await.unwrap_or_default()
    }
}

fn id_of(id: &str) -> PresetId {
    PresetId::parse(id).unwrap()
}

/// A client with `presets` and the credentials of `config`, waiting on `clock`.
fn client(config: &Config, presets: PresetRegistry, clock: Clock) -> Client {
    Client::with_clock(Arc::new(presets), Credentials::from_config(config), clock).unwrap()
}

/// Calls `action` with `credential` and exactly `inputs` (no defaults filled in).
async fn call_as(
    client: &Client,
    action: &str,
    credential: &str,
    inputs: &Value,
) -> Result<Exchange, CallError> {
    client
        .call(
            &id_of(action),
            &CredentialName::new(credential),
            inputs.as_object().unwrap(),
            &CallOptions::default(),
        )
        .await
}

/// A request as seen by the server: method, path, decoded query pairs, and the JSON body.
fn seen(request: &Request) -> (String, String, Vec<(String, String)>, Option<Value>) {
    let query = request
        .url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let body = if request.body.is_empty() {
        None
    } else {
        Some(serde_json::from_slice(&request.body).unwrap())
    };
    (
        request.method.to_string(),
        request.url.path().to_owned(),
        query,
        body,
    )
}

fn header_of<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request.headers.get(name).and_then(|v| v.to_str().ok())
}

/// One row of the exact-request table.
struct Case {
    action: &'static str,
    with: Value,
    method: &'static str,
    path: &'static str,
    query: &'static [(&'static str, &'static str)],
    body: Option<Value>,
    status: u16,
    reply: Value,
}

fn cases() -> Vec<Case> {
    const ORG: &str = "https://api.calendly.com/organizations/ORG1";
    let org = ORG;
    let membership = json!({"collection": [{"uri": "https://api.calendly.com/organization_memberships/M1", "role": "admin", "user": {"uri": "https://api.calendly.com/users/U1", "email": "ann@acme.com"}}], "pagination": {"count": 1, "next_page": null, "previous_page": null, "next_page_token": null, "previous_page_token": null}});
    let person = json!({"id": "P1", "emails": ["ann@acme.com"], "displayName": "Ann", "roles": [], "licenses": ["L1"], "loginEnabled": true});
    let scim_user = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": "S1", "userName": "ann@acme.com", "active": true});
    let list = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "totalResults": 1, "startIndex": 1, "itemsPerPage": 1, "Resources": [scim_user]});
    let patch_op = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
    let scim_schema = "urn:ietf:params:scim:schemas:core:2.0:User";
    vec![
        Case {
            action: "calendly.current_user",
            with: json!({}),
            method: "GET",
            path: "/calendly/users/me",
            query: &[],
            body: None,
            status: 200,
            reply: json!({"resource": {"uri": "https://api.calendly.com/users/U1", "current_organization": org}}),
        },
        Case {
            action: "calendly.get_user_details",
            with: json!({"user_uuid": "https://api.calendly.com/users/U1"}),
            method: "GET",
            path: "/calendly/users/U1",
            query: &[],
            body: None,
            status: 200,
            reply: json!({"resource": {"uri": "https://api.calendly.com/users/U1"}}),
        },
        Case {
            action: "calendly.find_membership",
            with: json!({"email": "ann@acme.com"}),
            method: "GET",
            path: "/calendly/organization_memberships",
            query: &[("organization", ORG), ("email", "ann@acme.com")],
            body: None,
            status: 200,
            reply: membership.clone(),
        },
        Case {
            action: "calendly.list_memberships",
            with: json!({}),
            method: "GET",
            path: "/calendly/organization_memberships",
            query: &[("organization", ORG), ("count", "100")],
            body: None,
            status: 200,
            reply: membership.clone(),
        },
        Case {
            action: "calendly.members_page",
            with: json!({}),
            method: "GET",
            path: "/calendly/organization_memberships",
            query: &[("organization", ORG), ("count", "1")],
            body: None,
            status: 200,
            reply: membership.clone(),
        },
        Case {
            action: "calendly.activity_log_page",
            with: json!({}),
            method: "GET",
            path: "/calendly/activity_log_entries",
            query: &[
                ("organization", ORG),
                ("sort", "occurred_at:desc"),
                ("count", "1"),
            ],
            body: None,
            status: 200,
            reply: json!({"collection": [{"occurred_at": "2024-01-02T03:04:05Z"}], "pagination": {}}),
        },
        Case {
            action: "calendly.get_membership",
            with: json!({"membership_uuid": "M1"}),
            method: "GET",
            path: "/calendly/organization_memberships/M1",
            query: &[],
            body: None,
            status: 200,
            reply: json!({"resource": {"role": "user"}}),
        },
        Case {
            action: "calendly.remove_user_membership",
            with: json!({"membership_uuid": "https://api.calendly.com/organization_memberships/M1"}),
            method: "DELETE",
            path: "/calendly/organization_memberships/M1",
            query: &[],
            body: None,
            status: 204,
            reply: Value::Null,
        },
        Case {
            action: "calendly.invite_user",
            with: json!({"email": "ann@acme.com"}),
            method: "POST",
            path: "/calendly/organizations/ORG1/invitations",
            query: &[],
            body: Some(json!({"email": "ann@acme.com"})),
            status: 201,
            reply: json!({"resource": {"uri": "https://api.calendly.com/organizations/ORG1/invitations/I1", "status": "pending"}}),
        },
        Case {
            action: "calendly.list_invitations",
            with: json!({"status": "pending"}),
            method: "GET",
            path: "/calendly/organizations/ORG1/invitations",
            query: &[("count", "100"), ("status", "pending")],
            body: None,
            status: 200,
            reply: json!({"collection": [], "pagination": {"next_page": null, "next_page_token": null}}),
        },
        Case {
            action: "calendly.revoke_invitation",
            with: json!({"invitation_uuid": "I1"}),
            method: "DELETE",
            path: "/calendly/organizations/ORG1/invitations/I1",
            query: &[],
            body: None,
            status: 204,
            reply: Value::Null,
        },
        Case {
            action: "calendly.user_role",
            with: json!({"email": "ann@acme.com", "organization": "ORG2"}),
            method: "GET",
            path: "/calendly/organization_memberships",
            query: &[
                ("organization", "BASE/calendly/organizations/ORG2"),
                ("email", "ann@acme.com"),
            ],
            body: None,
            status: 200,
            reply: membership,
        },
        Case {
            action: "calendly.last_activity",
            with: json!({"user_uuid": "https://api.calendly.com/users/U1"}),
            method: "GET",
            path: "/calendly/activity_log_entries",
            query: &[
                ("organization", ORG),
                ("actor", "https://api.calendly.com/users/U1"),
                ("sort", "occurred_at:desc"),
                ("count", "1"),
            ],
            body: None,
            status: 200,
            reply: json!({"collection": [{"occurred_at": "2024-01-02T03:04:05Z"}], "pagination": {}}),
        },
        Case {
            action: "webex.find_user_by_email",
            with: json!({"email": "ann@acme.com"}),
            method: "GET",
            path: "/webex/people",
            query: &[("email", "ann@acme.com")],
            body: None,
            status: 200,
            reply: json!({"items": [person.clone()]}),
        },
        Case {
            action: "webex.get_user_details",
            with: json!({"webex_user_id": "P1"}),
            method: "GET",
            path: "/webex/people/P1",
            query: &[],
            body: None,
            status: 200,
            reply: person.clone(),
        },
        Case {
            action: "webex.create_user",
            with: json!({"email": "ann@acme.com", "display_name": "Ann Lee", "first_name": "Ann"}),
            method: "POST",
            path: "/webex/people",
            query: &[],
            body: Some(
                json!({"emails": ["ann@acme.com"], "displayName": "Ann Lee", "firstName": "Ann"}),
            ),
            status: 200,
            reply: person.clone(),
        },
        Case {
            action: "webex.delete_user",
            with: json!({"webex_user_id": "P1"}),
            method: "DELETE",
            path: "/webex/people/P1",
            query: &[],
            body: None,
            status: 204,
            reply: Value::Null,
        },
        Case {
            action: "webex.user_role",
            with: json!({"webex_user_id": "P1"}),
            method: "GET",
            path: "/webex/people/P1",
            query: &[],
            body: None,
            status: 200,
            reply: person.clone(),
        },
        Case {
            action: "webex.people_page",
            with: json!({}),
            method: "GET",
            path: "/webex/people",
            query: &[("max", "1")],
            body: None,
            status: 200,
            reply: json!({"items": [person]}),
        },
        Case {
            action: "webex.list_people",
            with: json!({}),
            method: "GET",
            path: "/webex/people",
            query: &[("max", "100")],
            body: None,
            status: 200,
            reply: json!({"items": [person]}),
        },
        Case {
            action: "scim.create_user",
            with: json!({"user_name": "ann@acme.com", "display_name": "Ann Lee"}),
            method: "POST",
            path: "/scim/v2/Users",
            query: &[],
            body: Some(
                json!({"schemas": [scim_schema], "userName": "ann@acme.com", "displayName": "Ann Lee", "active": true}),
            ),
            status: 201,
            reply: scim_user.clone(),
        },
        Case {
            action: "scim.get_user",
            with: json!({"scim_user_id": "S1"}),
            method: "GET",
            path: "/scim/v2/Users/S1",
            query: &[],
            body: None,
            status: 200,
            reply: scim_user.clone(),
        },
        Case {
            action: "scim.find_user",
            with: json!({"user_name": "ann@acme.com"}),
            method: "GET",
            path: "/scim/v2/Users",
            query: &[("filter", "userName eq \"ann@acme.com\"")],
            body: None,
            status: 200,
            reply: list.clone(),
        },
        Case {
            action: "scim.replace_user",
            with: json!({"scim_user_id": "S1", "user_name": "ann@acme.com", "display_name": "Ann Lee", "external_id": "E7", "active": false}),
            method: "PUT",
            path: "/scim/v2/Users/S1",
            query: &[],
            body: Some(
                json!({"schemas": [scim_schema], "userName": "ann@acme.com", "displayName": "Ann Lee", "externalId": "E7", "active": false}),
            ),
            status: 200,
            reply: scim_user.clone(),
        },
        Case {
            action: "scim.activate_user",
            with: json!({"scim_user_id": "S1"}),
            method: "PATCH",
            path: "/scim/v2/Users/S1",
            query: &[],
            body: Some(
                json!({"schemas": [patch_op], "Operations": [{"op": "replace", "path": "active", "value": true}]}),
            ),
            status: 204,
            reply: Value::Null,
        },
        Case {
            action: "scim.deactivate_user",
            with: json!({"scim_user_id": "S1"}),
            method: "PATCH",
            path: "/scim/v2/Users/S1",
            query: &[],
            body: Some(
                json!({"schemas": [patch_op], "Operations": [{"op": "replace", "path": "active", "value": false}]}),
            ),
            status: 200,
            reply: scim_user.clone(),
        },
        Case {
            action: "scim.patch_user",
            with: json!({"scim_user_id": "S1", "operations": [{"op": "replace", "path": "displayName", "value": "Ann L"}]}),
            method: "PATCH",
            path: "/scim/v2/Users/S1",
            query: &[],
            body: Some(
                json!({"schemas": [patch_op], "Operations": [{"op": "replace", "path": "displayName", "value": "Ann L"}]}),
            ),
            status: 200,
            reply: scim_user,
        },
        Case {
            action: "scim.delete_user",
            with: json!({"scim_user_id": "S1"}),
            method: "DELETE",
            path: "/scim/v2/Users/S1",
            query: &[],
            body: None,
            status: 204,
            reply: Value::Null,
        },
        Case {
            action: "scim.list_users",
            with: json!({}),
            method: "GET",
            path: "/scim/v2/Users",
            query: &[("startIndex", "1"), ("count", "100")],
            body: None,
            status: 200,
            reply: list,
        },
        Case {
            action: "scim.add_to_group",
            with: json!({"group_id": "G1", "scim_user_id": "S1"}),
            method: "PATCH",
            path: "/scim/v2/Groups/G1",
            query: &[],
            body: Some(
                json!({"schemas": [patch_op], "Operations": [{"op": "add", "path": "members", "value": [{"value": "S1"}]}]}),
            ),
            status: 204,
            reply: Value::Null,
        },
        Case {
            action: "scim.remove_from_group",
            with: json!({"group_id": "G1", "scim_user_id": "S1"}),
            method: "PATCH",
            path: "/scim/v2/Groups/G1",
            query: &[],
            body: Some(
                json!({"schemas": [patch_op], "Operations": [{"op": "remove", "path": "members[value eq \"S1\"]"}]}),
            ),
            status: 204,
            reply: Value::Null,
        },
    ]
}

fn reply(status: u16, body: &Value, content_type: &str) -> ResponseTemplate {
    let template = ResponseTemplate::new(status);
    if body.is_null() {
        template
    } else {
        template.set_body_raw(serde_json::to_vec(body).unwrap(), content_type)
    }
}

#[tokio::test]
async fn every_shipped_action_sends_its_exact_request() {
    let h = Harness::start().await;
    let base = h.server.uri();
    let mut covered = Vec::new();
    for case in cases() {
        h.server.reset().await;
        let content_type = if case.action.starts_with("scim.") {
            "application/scim+json"
        } else {
            "application/json"
        };
        Mock::given(any())
            .respond_with(reply(case.status, &case.reply, content_type))
            .mount(&h.server)
            .await;
        let exchange = h
            .call(case.action, case.with.clone())
            .await
            .unwrap_or_else(|err| panic!("{}: {err}", case.action));
        assert_eq!(exchange.response.status, case.status, "{}", case.action);
        let requests = h.requests().await;
        assert_eq!(requests.len(), 1, "{}: one request", case.action);
        let (method, path, query, body) = seen(&requests[0]);
        let want_query: Vec<(String, String)> = case
            .query
            .iter()
            .map(|(k, v)| (k.to_string(), v.replace("BASE", &base)))
            .collect();
        assert_eq!(
            (method.as_str(), path.as_str(), &query, &body),
            (case.method, case.path, &want_query, &case.body),
            "{}",
            case.action
        );
        let token = match case.action.split('.').next().unwrap() {
            "calendly" => "Bearer calendly-token-123",
            "webex" => "Bearer webex-token-456",
            _ => "Bearer scim-token-789",
        };
        let request = &requests[0];
        assert_eq!(
            header_of(request, "authorization"),
            Some(token),
            "{}",
            case.action
        );
        let media = if case.action.starts_with("scim.") {
            "application/scim+json"
        } else {
            "application/json"
        };
        assert_eq!(header_of(request, "accept"), Some(media), "{}", case.action);
        assert_eq!(
            header_of(request, "content-type"),
            case.body.as_ref().map(|_| media),
            "{}",
            case.action
        );
        covered.push(case.action.to_owned());
    }
    // Webex Update User is two requests; it has its own test below.
    covered.push("webex.update_user".to_owned());
    // The webhook's address is its credential's secret URL; its test is in `notify`.
    covered.push("webhook.post".to_owned());
    // A mail message over SMTP, read back from the sandbox's sink in `notify::mail`.
    covered.push("email.send".to_owned());
    let registry = PresetRegistry::builtin();
    let shipped: Vec<String> = registry.actions().map(|(_, a)| a.id.to_string()).collect();
    for action in &shipped {
        assert!(
            covered.contains(action),
            "no exact-request test for `{action}`"
        );
    }
}

#[tokio::test]
async fn scim_find_user_encodes_the_filter_in_the_query() {
    let h = Harness::start().await;
    Mock::given(any())
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"totalResults": 1, "Resources": [{"id": "S1"}]})),
        )
        .mount(&h.server)
        .await;
    h.call("scim.find_user", json!({"user_name": "ann lee@acme.com"}))
        .await
        .unwrap();
    let requests = h.requests().await;
    assert_eq!(
        requests[0].url.query(),
        Some("filter=userName%20eq%20%22ann%20lee%40acme.com%22")
    );
}

#[tokio::test]
async fn webex_update_user_gets_merges_and_puts_every_writable_field_back() {
    let h = Harness::start().await;
    let current = json!({
        "id": "P1", "emails": ["ann@acme.com"], "displayName": "Ann", "firstName": "Ann", "lastName": "Lee",
        "orgId": "O1", "roles": ["R1"], "licenses": ["L1", "L2"], "created": "2015-10-18T14:26:16.000Z",
        "lastModified": "2015-10-18T14:26:16.000Z", "timezone": "America/Denver", "lastActivity": "2024-01-01T00:00:00Z",
        "sipAddresses": [], "status": "active", "invitePending": "false", "loginEnabled": "true", "type": "person",
        "xmppFederationJid": "ann@acme.com"
    });
    Mock::given(method("GET"))
        .and(path("/webex/people/P1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(current))
        .mount(&h.server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/webex/people/P1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "P1"})))
        .mount(&h.server)
        .await;
    let exchange = h
        .call(
            "webex.update_user",
            json!({"webex_user_id": "P1", "display_name": "Ann Lee", "last_name": ""}),
        )
        .await
        .unwrap();
    assert_eq!(exchange.response.status, 200);
    assert_eq!(exchange.attempts, 2);
    let requests = h.requests().await;
    assert_eq!(seen(&requests[0]).0, "GET");
    let (method, path, query, body) = seen(&requests[1]);
    assert_eq!(
        (method.as_str(), path.as_str(), query.len()),
        ("PUT", "/webex/people/P1", 0)
    );
    assert_eq!(
        body.unwrap(),
        json!({"emails": ["ann@acme.com"], "displayName": "Ann Lee", "firstName": "Ann", "lastName": "Lee",
               "orgId": "O1", "roles": ["R1"], "licenses": ["L1", "L2"], "loginEnabled": true})
    );
}

#[tokio::test]
async fn hostile_values_never_change_the_shape_of_a_request() {
    let h = Harness::start().await;
    Mock::given(any())
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"items": [{"id": "P1"}], "resource": {}})),
        )
        .mount(&h.server)
        .await;
    // Slashes, a query, a fragment, quotes, unicode and a newline stay inside one path segment.
    h.call(
        "webex.get_user_details",
        json!({"webex_user_id": "../a/b?x=1#f\"é\n"}),
    )
    .await
    .unwrap();
    // Query values are parameters, never query syntax.
    h.call(
        "webex.find_user_by_email",
        json!({"email": "a@b.c&max=1#x"}),
    )
    .await
    .unwrap();
    let all = h.requests().await;
    let raw = |r: &Request| match r.url.query() {
        Some(query) => format!("{}?{query}", r.url.path()),
        None => r.url.path().to_owned(),
    };
    assert_eq!(
        raw(&all[0]),
        "/webex/people/..%2Fa%2Fb%3Fx%3D1%23f%22%C3%A9%0A"
    );
    assert_eq!(raw(&all[1]), "/webex/people?email=a%40b.c%26max%3D1%23x");
    assert_eq!(
        seen(&all[1]).2,
        [("email".to_owned(), "a@b.c&max=1#x".to_owned())]
    );
    // A value that is a dot segment would be removed by URL parsing: refused, nothing sent.
    for value in ["..", ".", "https://api.calendly.com/users/.."] {
        let err = h
            .call("calendly.get_user_details", json!({"user_uuid": value}))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("`calendly.get_user_details`: an input renders the path segment `"),
            "{err}"
        );
    }
    let err = h
        .call("webex.delete_user", json!({"webex_user_id": ""}))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "`webex.delete_user`: input `webex_user_id` is required; give it with `with: { webex_user_id: ... }` or set it on the record");
    assert_eq!(h.requests().await.len(), 2);

    h.server.reset().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "S9"})))
        .mount(&h.server)
        .await;
    // A body is built leaf by leaf: JSON syntax in a value is just text.
    let name = "x\" or userName pr \"\n{\"a\":1}";
    h.call(
        "scim.create_user",
        json!({"user_name": name, "display_name": "Zoë \\ <b>"}),
    )
    .await
    .unwrap();
    let (_, path, query, body) = seen(&h.requests().await[0]);
    assert_eq!((path.as_str(), query.len()), ("/scim/v2/Users", 0));
    assert_eq!(
        body.unwrap(),
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name, "displayName": "Zoë \\ <b>", "active": true})
    );
}

#[tokio::test]
async fn missing_inputs_and_variables_are_named() {
    let h = Harness::start().await;
    let err = h.inputs("calendly.find_membership", json!({})).unwrap_err();
    assert_eq!(
        err.to_string(),
        "`calendly.find_membership`: input `email` is required; give it with `with: { email: ... }` or set it on the record"
    );
    let no_vars = Config::parse(
        Path::new("b.yaml"),
        "credentials:\n  calendly:\n    vendor: calendly\n    auth: bearer\n    token: t\n",
    )
    .unwrap();
    let given = json!({"email": "a@b.c"}).as_object().cloned().unwrap();
    let err = h
        .client
        .resolve_inputs(
            &id_of("calendly.find_membership"),
            &given,
            &no_vars.context(),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "`calendly.find_membership`: cannot render the default of input `organization`: `vars.calendly_organization` is not defined"
    );
    let err = h
        .inputs("calendly.find_membership", json!({"emial": "x"}))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "`calendly.find_membership` has no input `emial`; its inputs are: `organization`, `email`"
    );
    // The record's field of the same name fills an input that was not given.
    let context =
        json!({"vars": {"calendly_organization": "ORG1"}, "record": {"email": "rec@acme.com"}});
    let inputs = h
        .client
        .resolve_inputs(&id_of("calendly.find_membership"), &Map::new(), &context)
        .unwrap();
    assert_eq!(
        Value::Object(inputs),
        json!({"organization": "ORG1", "email": "rec@acme.com"})
    );
    let err = call_as(&h.client, "calendly.current_user", "nope", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown credential `nope`; define it under `credentials:` in blockyard.yaml"
    );
    let err = call_as(&h.client, "calendly.current_user", "webex", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "credential `webex` is for `webex`, but `calendly.current_user` needs a `calendly` credential"
    );
}

#[tokio::test]
async fn calendly_pages_are_collected_by_next_page_and_by_token() {
    let h = Harness::start().await;
    let base = h.server.uri();
    let page = |n: u32, next: Value, token: Value| json!({"collection": [{"uri": format!("m{n}")}], "pagination": {"count": 1, "next_page": next, "next_page_token": token}});
    Mock::given(query_param("page_token", "T2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(
            2,
            // A next page on another origin: followed by its token on the base URL instead.
            json!("https://elsewhere.example/organization_memberships?page_token=T3"),
            Value::Null,
        )))
        .mount(&h.server)
        .await;
    Mock::given(query_param("page_token", "T3"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(3, Value::Null, Value::Null)))
        .mount(&h.server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(
            1,
            json!(format!(
                "{base}/calendly/organization_memberships?count=100&page_token=T2"
            )),
            json!("T2"),
        )))
        .mount(&h.server)
        .await;
    let exchange = h
        .call("calendly.list_memberships", json!({}))
        .await
        .unwrap();
    let uris: Vec<&str> = exchange
        .response
        .items
        .as_ref()
        .unwrap()
        .iter()
        .map(|i| i["uri"].as_str().unwrap())
        .collect();
    assert_eq!(uris, ["m1", "m2", "m3"]);
    assert_eq!(exchange.response.pages, 3);
    assert_eq!(
        exchange.response.body["collection"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let requests = h.requests().await;
    assert_eq!(requests.len(), 3);
    assert_eq!(
        seen(&requests[2]).2,
        [
            (
                "organization".to_owned(),
                "https://api.calendly.com/organizations/ORG1".to_owned()
            ),
            ("count".to_owned(), "100".to_owned()),
            ("page_token".to_owned(), "T3".to_owned())
        ]
    );
    assert!(requests
        .iter()
        .all(|r| header_of(r, "authorization") == Some("Bearer calendly-token-123")));
}

#[tokio::test]
async fn webex_pages_follow_link_headers_and_refuse_foreign_ones() {
    let h = Harness::start().await;
    let base = h.server.uri();
    Mock::given(query_param("after", "C2"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"items": [{"id": "P2", "loginEnabled": "false"}]})),
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
                .set_body_json(json!({"items": [{"id": "P1", "loginEnabled": true}]})),
        )
        .mount(&h.server)
        .await;
    let exchange = h.call("webex.list_people", json!({})).await.unwrap();
    assert_eq!(
        exchange.response.items.unwrap(),
        [
            json!({"id": "P1", "loginEnabled": true}),
            json!({"id": "P2", "loginEnabled": false})
        ]
    );

    h.server.reset().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header(
                    "link",
                    "<https://evil.example/v1/people?after=C2>; rel=\"next\"",
                )
                .set_body_json(json!({"items": [{"id": "P1"}]})),
        )
        .mount(&h.server)
        .await;
    let err = h.call("webex.list_people", json!({})).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("`webex.list_people`: the next page is at `https://evil.example/v1/people?after=C2`, outside the base URL `{base}/webex`; refusing to send the credential there")
    );
}

#[tokio::test]
async fn scim_pages_advance_start_index_until_total_results() {
    let h = Harness::start().await;
    for (start, ids) in [
        ("1", vec!["a", "b"]),
        ("3", vec!["c", "d"]),
        ("5", vec!["e"]),
    ] {
        let resources: Vec<Value> = ids.iter().map(|id| json!({"id": id})).collect();
        Mock::given(query_param("startIndex", start))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "totalResults": 5, "startIndex": start.parse::<u32>().unwrap(), "itemsPerPage": resources.len(), "Resources": resources
            })))
            .mount(&h.server)
            .await;
    }
    let exchange = h.call("scim.list_users", json!({})).await.unwrap();
    let ids: Vec<&str> = exchange
        .response
        .items
        .as_ref()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b", "c", "d", "e"]);
    assert_eq!(h.requests().await.len(), 3);
}

#[tokio::test]
async fn a_429_is_retried_after_the_vendors_wait() {
    let h = Harness::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("X-RateLimit-Reset", "60")
                .set_body_json(json!({"title": "Too Many Requests", "message": "slow down"})),
        )
        .up_to_n_times(1)
        .mount(&h.server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"resource": {}})))
        .mount(&h.server)
        .await;
    let exchange = h.call("calendly.current_user", json!({})).await.unwrap();
    assert_eq!((exchange.response.status, exchange.attempts), (200, 2));
    assert_eq!(h.clock.waits(), [Duration::from_secs(60)]);

    // Webex: Retry-After, and a POST is retried on 429 too.
    h.server.reset().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "7"))
        .up_to_n_times(1)
        .mount(&h.server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "P1"})))
        .mount(&h.server)
        .await;
    h.call(
        "webex.create_user",
        json!({"email": "a@b.c", "display_name": "A"}),
    )
    .await
    .unwrap();
    assert_eq!(h.clock.waits()[1], Duration::from_secs(7));
}

#[tokio::test]
async fn gateway_errors_are_retried_for_reads_but_not_for_posts() {
    let h = Harness::start().await;
    Mock::given(any())
        .respond_with(
            ResponseTemplate::new(503)
                .set_body_json(json!({"message": "Service Unavailable", "trackingId": "T-1"})),
        )
        .mount(&h.server)
        .await;
    let err = h
        .call(
            "webex.create_user",
            json!({"email": "a@b.c", "display_name": "A"}),
        )
        .await
        .unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(
        err.to_string(),
        "`webex.create_user`: `webex` answered 503: Service Unavailable [tracking id T-1]"
    );
    assert_eq!(
        h.requests().await.len(),
        1,
        "a POST is not re-sent after a 503"
    );
    h.server.reset().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(503))
        .mount(&h.server)
        .await;
    let options = CallOptions {
        retry: blockyard::http::RetryPolicy::Exponential {
            max_attempts: 3,
            initial_interval_ms: 100,
            factor: 2.0,
            max_interval_ms: 1000,
            max_elapsed_ms: 10_000,
        },
        ..CallOptions::default()
    };
    h.call_with(
        "webex.get_user_details",
        json!({"webex_user_id": "P1"}),
        &options,
    )
    .await
    .unwrap_err();
    assert_eq!(
        h.requests().await.len(),
        3,
        "a GET is retried up to max_attempts"
    );
}

#[tokio::test]
async fn a_connect_error_is_a_retryable_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let text = config_text(&format!("http://127.0.0.1:{port}"), "");
    let config = Config::parse(Path::new("b.yaml"), &text).unwrap();
    let clock = Clock::virtual_clock();
    let client = client(&config, PresetRegistry::builtin(), clock.clone());
    let inputs =
        json!({"email": "a@b.c", "display_name": "A", "first_name": null, "last_name": null});
    let err = call_as(&client, "webex.create_user", "webex", &inputs)
        .await
        .unwrap_err();
    assert!(err.is_retryable());
    assert!(
        matches!(
            err,
            CallError::Transport {
                kind: blockyard::http::TransportKind::Connect,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        clock.waits().len(),
        4,
        "a POST that never connected is retried"
    );
}

#[tokio::test]
async fn vendor_errors_carry_the_vendors_own_words() {
    let h = Harness::start().await;
    Mock::given(path("/calendly/organizations/ORG1/invitations"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"title": "Invalid Argument", "message": "The supplied parameters are invalid.", "details": [{"parameter": "email", "message": "must be filled"}]})))
        .mount(&h.server)
        .await;
    let err = h
        .call("calendly.invite_user", json!({"email": "x"}))
        .await
        .unwrap_err();
    assert!(!err.is_retryable());
    assert_eq!(err.to_string(), "`calendly.invite_user`: `calendly` answered 400 `Invalid Argument`: The supplied parameters are invalid. (email: must be filled)");
    for status in [json!("409"), json!(409)] {
        h.server.reset().await;
        Mock::given(any())
            .respond_with(ResponseTemplate::new(409).set_body_json(json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": status, "scimType": "uniqueness", "detail": "userName is taken"})))
            .mount(&h.server)
            .await;
        let err = h
            .call(
                "scim.create_user",
                json!({"user_name": "a", "display_name": "A"}),
            )
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`scim.create_user`: `scim` answered 409 `uniqueness`: userName is taken"
        );
    }
    h.server.reset().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(403).set_body_json(json!({"title": "Permission Denied", "message": "Please upgrade your Calendly account to Enterprise."})))
        .mount(&h.server)
        .await;
    let err = h
        .call("calendly.last_activity", json!({"user_uuid": "U1"}))
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Unsupported { .. }), "{err:?}");
    h.server.reset().await;
    Mock::given(any())
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"collection": [], "pagination": {}})),
        )
        .mount(&h.server)
        .await;
    let err = h
        .call("calendly.user_role", json!({"email": "gone@acme.com"}))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "`calendly.user_role`: not found (status 200)"
    );
}

#[tokio::test]
async fn an_oauth_token_is_cached_and_refreshed_once_on_a_401() {
    let extra = "  webex_oauth:\n    vendor: webex\n    auth: oauth2_refresh_token\n    client_id: C0ffee\n    client_secret: oauth-client-secret-1\n    refresh_token: oauth-refresh-token-1\n    base_url: {uri}/webex\n    token_url: {uri}/oauth/token\n";
    let h = Harness::with_extra(extra).await;
    Mock::given(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"access_token": "access-one", "expires_in": 3600, "refresh_token": "oauth-refresh-token-2"})))
        .up_to_n_times(1)
        .mount(&h.server)
        .await;
    Mock::given(path("/oauth/token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": "access-two", "expires_in": 3600})),
        )
        .mount(&h.server)
        .await;
    Mock::given(header("authorization", "Bearer access-one"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "P1"})))
        .up_to_n_times(1)
        .mount(&h.server)
        .await;
    Mock::given(header("authorization", "Bearer access-one"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"message": "The request requires a valid access token set in the Authorization request header."})))
        .mount(&h.server)
        .await;
    Mock::given(header("authorization", "Bearer access-two"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "P1"})))
        .mount(&h.server)
        .await;
    let inputs = json!({"webex_user_id": "P1"});
    for _ in 0..2 {
        call_as(&h.client, "webex.get_user_details", "webex_oauth", &inputs)
            .await
            .unwrap();
    }
    let requests = h.requests().await;
    let token_requests: Vec<String> = requests
        .iter()
        .filter(|r| r.url.path() == "/oauth/token")
        .map(|r| String::from_utf8(r.body.clone()).unwrap())
        .collect();
    assert_eq!(
        token_requests,
        [
            "grant_type=refresh_token&client_id=C0ffee&client_secret=oauth-client-secret-1&refresh_token=oauth-refresh-token-1",
            // The vendor rotated the refresh token: the new one is used (and kept in memory only).
            "grant_type=refresh_token&client_id=C0ffee&client_secret=oauth-client-secret-1&refresh_token=oauth-refresh-token-2",
        ]
    );
    // token, call (200), call (401), token, call (200)
    assert_eq!(requests.len(), 5);
    let _ = body_string_contains("unused");
}

/// Captures tracing output in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

const SECRETS: [&str; 3] = [
    "bearer-SECRET-env-5f1c",
    "client-SECRET-9a7e",
    "refresh-SECRET-3b2d",
];

#[test]
fn no_secret_appears_in_any_output() {
    std::env::set_var("BLOCKYARD_TEST_REDACT_TOKEN", SECRETS[0]);
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut output = String::new();
    let dir = tempfile::tempdir().unwrap();
    runtime.block_on(async {
        let server = MockServer::start().await;
        let uri = server.uri();
        // A token endpoint that refuses, then one that echoes what it got; an API that echoes the
        // Authorization header back in its error body, fails with 500, and answers 401.
        Mock::given(path("/oauth/token"))
            .and(body_string_contains("client_id=bad"))
            .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_grant", "error_description": format!("refresh token {} is revoked", SECRETS[2])})))
            .mount(&server)
            .await;
        Mock::given(path("/oauth/token"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"access_token": "issued-ACCESS-4c4c", "refresh_token": "rotated-REFRESH-8d8d", "expires_in": 3600})))
            .mount(&server)
            .await;
        Mock::given(path("/calendly/users/me"))
            .respond_with(|req: &Request| {
                let auth = req.headers.get("authorization").unwrap().to_str().unwrap().to_owned();
                ResponseTemplate::new(401).set_body_json(json!({"title": "Unauthenticated", "message": format!("The access token {auth} is invalid")}))
            })
            .mount(&server)
            .await;
        Mock::given(path("/webex/people/P1"))
            .respond_with(|req: &Request| {
                let auth = req.headers.get("authorization").unwrap().to_str().unwrap().to_owned();
                ResponseTemplate::new(500).insert_header("set-cookie", "session=abc").set_body_string(format!("internal error for {auth}"))
            })
            .mount(&server)
            .await;
        let text = format!(
            "credentials:\n\
             \x20 calendly:\n    vendor: calendly\n    auth: bearer\n    token: ${{BLOCKYARD_TEST_REDACT_TOKEN}}\n    base_url: {uri}/calendly\n\
             \x20 webex:\n    vendor: webex\n    auth: oauth2_refresh_token\n    client_id: C0ffee\n    client_secret: {}\n    refresh_token: {}\n    base_url: {uri}/webex\n    token_url: {uri}/oauth/token\n\
             \x20 webex_bad:\n    vendor: webex\n    auth: oauth2_refresh_token\n    client_id: bad\n    client_secret: {}\n    refresh_token: {}\n    base_url: {uri}/webex\n    token_url: {uri}/oauth/token\n\
             \x20 down:\n    vendor: webex\n    auth: oauth2_refresh_token\n    client_id: C0ffee\n    client_secret: {}\n    refresh_token: {}\n    base_url: http://127.0.0.1:9/webex\n    token_url: {uri}/oauth/token\n",
            SECRETS[1], SECRETS[2], SECRETS[1], SECRETS[2], SECRETS[1], SECRETS[2]
        );
        let file = dir.path().join("blockyard.yaml");
        std::fs::write(&file, &text).unwrap();
        let config = Config::load(&file).unwrap();
        let client = client(&config, PresetRegistry::builtin(), Clock::virtual_clock());
        let calls = [
            ("calendly.current_user", "calendly", json!({})),
            ("webex.get_user_details", "webex", json!({"webex_user_id": "P1"})),
            ("webex.get_user_details", "webex_bad", json!({"webex_user_id": "P1"})),
            ("webex.get_user_details", "down", json!({"webex_user_id": "P1"})),
        ];
        for (action, credential, given) in calls {
            let id = id_of(action);
            let cred = CredentialName::new(credential);
            let inputs = client.resolve_inputs(&id, given.as_object().unwrap(), &config.context()).unwrap();
            let request = client.render(&id, &cred, &inputs).unwrap();
            output += &format!("{request}\n{}\n", serde_json::to_string(&request).unwrap());
            let err = client.call(&id, &cred, &inputs, &CallOptions::default()).await.unwrap_err();
            output += &format!("{err}\n{err:?}\n");
            if let Some(response) = err.response() {
                output += &serde_json::to_string(response).unwrap();
            }
        }
        // The CLI, with tracing on, against the same server.
        for args in [
            vec!["call", "calendly.current_user", "--json"],
            vec!["call", "calendly.current_user"],
            vec!["call", "webex.get_user_details", "--credential", "webex", "--with", "webex_user_id=P1"],
            vec!["call", "webex.get_user_details", "--credential", "webex_bad", "--with", "webex_user_id=P1"],
        ] {
            let file = file.clone();
            let out = tokio::task::spawn_blocking(move || {
                std::process::Command::new(env!("CARGO_BIN_EXE_blockyard"))
                    .args(&args)
                    .arg("--config")
                    .arg(&file)
                    .env("RUST_LOG", "trace")
                    .env("BLOCKYARD_TEST_REDACT_TOKEN", SECRETS[0])
                    .output()
                    .unwrap()
            })
            .await
            .unwrap();
            assert_eq!(out.status.code(), Some(1), "{}", support::stderr(&out));
            output += &support::stdout(&out);
            output += &support::stderr(&out);
        }
    });
    drop(_guard);
    output += &String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    // The calls did happen and were logged, with their failures.
    assert!(output.contains("vendor call"), "{output}");
    assert!(output.contains("answered 401"), "{output}");
    assert!(output.contains("answered 500"), "{output}");
    assert!(output.contains("cannot connect"), "{output}");
    assert!(
        output.contains("invalid_grant") || output.contains("revoked"),
        "{output}"
    );
    for secret in
        SECRETS
            .iter()
            .chain(&["issued-ACCESS-4c4c", "rotated-REFRESH-8d8d", "session=abc"])
    {
        assert!(!output.contains(secret), "`{secret}` leaked:\n{output}");
    }
}

#[tokio::test]
async fn blockyard_call_prints_the_request_and_the_response() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/calendly/users/me"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"resource": {"uri": "https://api.calendly.com/users/U1", "current_organization": "https://api.calendly.com/organizations/ORG1"}})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/webex/people/NOPE"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"message": "Person not found", "trackingId": "T9"})),
        )
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("blockyard.yaml"),
        config_text(&server.uri(), ""),
    )
    .unwrap();
    let path = dir.path().to_owned();
    let run = move |args: &'static [&'static str]| {
        let path = path.clone();
        tokio::task::spawn_blocking(move || support::blockyard_in(&path, args))
    };
    let out = run(&["call", "calendly.current_user", "--json"])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", support::stderr(&out));
    let printed: Value = serde_json::from_str(&support::stdout(&out)).unwrap();
    assert_eq!(printed["request"]["method"], "GET");
    assert_eq!(
        printed["request"]["url"],
        format!("{}/calendly/users/me", server.uri())
    );
    assert_eq!(printed["request"]["headers"]["Authorization"], "[redacted]");
    assert_eq!(printed["response"]["status"], 200);
    assert_eq!(
        printed["response"]["headers"]["content-type"],
        "application/json"
    );
    assert_eq!(
        printed["response"]["body"]["resource"]["uri"],
        "https://api.calendly.com/users/U1"
    );

    let out = run(&[
        "call",
        "calendly.invite_user",
        "--with",
        "email=ann@acme.com",
        "--dry-run",
    ])
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        support::stdout(&out),
        format!("> POST {}/calendly/organizations/ORG1/invitations\n> Accept: application/json\n> Content-Type: application/json\n> Authorization: [redacted]\n>\n> {{\n>   \"email\": \"ann@acme.com\"\n> }}\n", server.uri())
    );

    let out = run(&[
        "call",
        "webex.get_user_details",
        "--with",
        "webex_user_id=NOPE",
    ])
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        support::stdout(&out).contains("< 404 Not Found"),
        "{}",
        support::stdout(&out)
    );
    assert_eq!(
        support::stderr(&out),
        "error: `webex.get_user_details`: not found (status 404)\n"
    );

    let out = run(&["call", "calendly.current_user", "--credential", "nope"])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        support::stderr(&out),
        "error: unknown credential `nope`; `blockyard.yaml` defines: `calendly`, `webex`, `scim`\n"
    );
    let received = server.received_requests().await.unwrap();
    assert_eq!(received.len(), 2, "a dry run sends nothing");
}

#[tokio::test]
async fn the_rate_limit_is_shared_by_every_clone_of_a_client() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"resource": {}})))
        .mount(&server)
        .await;
    let text = PresetRegistry::builtin()
        .vendor("calendly")
        .map(|v| std::fs::read_to_string(support::root().join(&v.file)).unwrap())
        .unwrap()
        .replace("per_minute: 500", "per_minute: 2");
    let mut registry = PresetRegistry::builtin();
    registry.insert(blockyard::preset::load_vendor(Path::new("calendly.yaml"), &text).unwrap());
    let config = Config::parse(Path::new("b.yaml"), &config_text(&server.uri(), "")).unwrap();
    let clock = Clock::virtual_clock();
    let client = client(&config, registry, clock.clone());
    let mut runs = Vec::new();
    for _ in 0..3 {
        let client = client.clone();
        runs.push(tokio::spawn(async move {
            call_as(&client, "calendly.current_user", "calendly", &json!({}))
                .await
                .map(|e| e.response.status)
        }));
    }
    for run in runs {
        assert_eq!(run.await.unwrap().unwrap(), 200);
    }
    // Two requests fit the budget of 2 per minute; the third waited for a token instead of failing.
    assert_eq!(clock.waits(), [Duration::from_secs(30)]);
}
