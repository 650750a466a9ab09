//! Sandbox tests: every vendor over real HTTP (reqwest against an in-process `Sandbox::start`),
//! asserting exact status codes, bodies and headers; pagination of 1,000 seeded people; parallel
//! creates; the gate (token, 429, latency, injected failures); and the real binary.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use blockyard::sandbox::{Sandbox, SandboxConfig};
use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};

async fn start(config: SandboxConfig) -> Sandbox {
    Sandbox::start(config).await.expect("the sandbox starts")
}

async fn seeded(users: usize) -> Sandbox {
    start(SandboxConfig {
        seed_users: users,
        seed: 42,
        ..SandboxConfig::default()
    })
    .await
}

/// The URL of the sandbox's control endpoint `path` (under `/_sandbox/`).
fn control(sb: &Sandbox, path: &str) -> String {
    format!("http://{}/_sandbox/{path}", sb.addr())
}

async fn body(response: Response) -> Value {
    let text = response.text().await.expect("a body");
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

/// Sends a request and returns (status, JSON body or null).
async fn call(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("the request is sent");
    let status = response.status();
    let text = response.text().await.expect("a body");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    };
    (status, value)
}

const SCIM_USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const SCIM_ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

// ---------------------------------------------------------------------------------------------
// Calendly

#[tokio::test]
async fn calendly_membership_and_invitation_lifecycle() {
    let sb = seeded(10).await;
    let c = Client::new();
    let base = sb.calendly_url();
    let org = sb.organization_uri();
    assert!(org.starts_with(&format!("{base}/organizations/")), "{org}");
    let org_uuid = org.rsplit('/').next().unwrap().to_owned();
    assert_eq!(org_uuid.len(), 16);

    let (status, me) = call(c.get(format!("{base}/users/me"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["resource"]["current_organization"], json!(org));
    let me_uri = me["resource"]["uri"].as_str().unwrap().to_owned();
    let (status, user) = call(c.get(&me_uri)).await;
    assert_eq!(
        (status, user["resource"]["email"].clone()),
        (StatusCode::OK, me["resource"]["email"].clone())
    );

    // Memberships need `organization` or `user`; count is 1..=100.
    let (status, err) = call(c.get(format!("{base}/organization_memberships"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["title"], "Invalid Argument");
    assert_eq!(err["message"], "The supplied parameters are invalid.");
    let (status, err) = call(
        c.get(format!("{base}/organization_memberships"))
            .query(&[("organization", org.as_str()), ("count", "101")]),
    )
    .await;
    assert_eq!(
        (status, err["details"][0]["parameter"].clone()),
        (StatusCode::BAD_REQUEST, json!("count"))
    );
    let (status, mine) = call(
        c.get(format!("{base}/organization_memberships"))
            .query(&[("user", me_uri.as_str())]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(mine["collection"][0]["role"], "owner");
    let owner_membership = mine["collection"][0]["uri"].as_str().unwrap().to_owned();
    assert_eq!(
        mine["pagination"],
        json!({"count": 20, "next_page": null, "previous_page": null, "next_page_token": null, "previous_page_token": null})
    );

    // Invite, duplicate invite, invite a member.
    let invitations = format!("{base}/organizations/{org_uuid}/invitations");
    let (status, created) = call(
        c.post(&invitations)
            .json(&json!({"email": "new.person@example.org"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created["resource"]["status"], "pending");
    assert_eq!(created["resource"]["organization"], json!(org));
    let invitation = created["resource"]["uri"].as_str().unwrap().to_owned();
    let (status, err) = call(
        c.post(&invitations)
            .json(&json!({"email": "NEW.person@example.org"})),
    )
    .await;
    assert_eq!(
        (status, err["title"].clone()),
        (StatusCode::BAD_REQUEST, json!("Already Invited"))
    );
    let member_email = me["resource"]["email"].as_str().unwrap();
    let (status, err) = call(c.post(&invitations).json(&json!({"email": member_email}))).await;
    assert_eq!(
        (status, err["title"].clone()),
        (
            StatusCode::BAD_REQUEST,
            json!("Already Organization Member")
        )
    );
    let (status, err) = call(c.post(&invitations).json(&json!({"email": ""}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        err["details"],
        json!([{"parameter": "email", "message": "must be filled"}])
    );
    let (_, pending) = call(c.get(&invitations).query(&[("status", "pending")])).await;
    assert_eq!(pending["collection"].as_array().unwrap().len(), 1);

    // Accepting (control endpoint) turns it into a membership.
    let inv_uuid = invitation.rsplit('/').next().unwrap();
    let (status, accepted) = call(c.post(control(
        &sb,
        &format!("calendly/invitations/{inv_uuid}/accept"),
    )))
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(accepted["resource"]["role"], "user");
    let (_, found) = call(c.get(format!("{base}/organization_memberships")).query(&[
        ("organization", org.as_str()),
        ("email", "New.Person@Example.org"),
    ]))
    .await;
    assert_eq!(found["collection"].as_array().unwrap().len(), 1);
    let new_membership = found["collection"][0]["uri"].as_str().unwrap().to_owned();
    let (status, err) = call(c.delete(&invitation)).await;
    assert_eq!(
        (status, err["title"].clone()),
        (
            StatusCode::BAD_REQUEST,
            json!("Invitation Already Accepted")
        )
    );
    let (_, accepted) = call(c.get(&invitations).query(&[("status", "accepted")])).await;
    assert_eq!(
        accepted["collection"][0]["user"],
        found["collection"][0]["user"]["uri"]
    );

    // Revoke a pending invitation.
    let (_, other) = call(
        c.post(&invitations)
            .json(&json!({"email": "other@example.org"})),
    )
    .await;
    let other = other["resource"]["uri"].as_str().unwrap().to_owned();
    let (status, gone) = call(c.delete(&other)).await;
    assert_eq!((status, gone), (StatusCode::NO_CONTENT, Value::Null));
    assert_eq!(call(c.get(&other)).await.0, StatusCode::NOT_FOUND);

    // Remove memberships: the new member, yourself, the owner.
    assert_eq!(
        call(c.delete(&new_membership)).await.0,
        StatusCode::NO_CONTENT
    );
    let (status, err) = call(c.get(&new_membership)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        err,
        json!({"title": "Resource Not Found", "message": "The server could not find the requested resource."})
    );
    let (status, err) = call(c.delete(&owner_membership)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        err,
        json!({"title": "Permission Denied", "message": "You can not remove yourself from organization"})
    );
    let (_, admins) = call(
        c.get(format!("{base}/organization_memberships"))
            .query(&[("organization", org.as_str()), ("role", "admin")]),
    )
    .await;
    let admin_email = admins["collection"][0]["user"]["email"].as_str().unwrap();
    let actor = control(&sb, "calendly/actor");
    assert_eq!(
        call(c.post(&actor).json(&json!({"email": admin_email})))
            .await
            .0,
        StatusCode::OK
    );
    let (status, err) = call(c.delete(&owner_membership)).await;
    assert_eq!(
        (status, err["message"].clone()),
        (
            StatusCode::FORBIDDEN,
            json!("You can not change owner role")
        )
    );

    // The log proves each write was sent exactly once, with its status.
    let posts: Vec<_> = sb
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.body == json!({"email": "new.person@example.org"}))
        .collect();
    assert_eq!(posts.len(), 1);
    assert_eq!(
        (posts[0].status, posts[0].path.as_str()),
        (
            201,
            format!("/calendly/organizations/{org_uuid}/invitations").as_str()
        )
    );
    sb.shutdown().await;
}

#[tokio::test]
async fn calendly_activity_log_and_plan() {
    let sb = seeded(40).await;
    let c = Client::new();
    let base = sb.calendly_url();
    let org = sb.organization_uri();
    let (_, members) = call(
        c.get(format!("{base}/organization_memberships"))
            .query(&[("organization", org.as_str()), ("count", "100")]),
    )
    .await;
    let mut with = 0;
    let mut without = 0;
    for m in members["collection"].as_array().unwrap() {
        let actor = m["user"]["uri"].as_str().unwrap();
        let (status, log) = call(c.get(format!("{base}/activity_log_entries")).query(&[
            ("organization", org.as_str()),
            ("actor", actor),
            ("sort", "occurred_at:desc"),
            ("count", "1"),
        ]))
        .await;
        assert_eq!(status, StatusCode::OK);
        match log["collection"].as_array().unwrap().first() {
            Some(entry) => {
                with += 1;
                assert_eq!(entry["actor"]["uri"], json!(actor));
                assert_eq!(log["last_event_time"], entry["occurred_at"]);
                assert!(entry["occurred_at"].as_str().unwrap().ends_with('Z'));
            }
            None => without += 1,
        }
    }
    assert!(
        with > 0 && without > 0,
        "{with} with activity, {without} without"
    );
    let (status, err) = call(c.get(format!("{base}/activity_log_entries"))).await;
    assert_eq!(
        (status, err["title"].clone()),
        (StatusCode::BAD_REQUEST, json!("Invalid Argument"))
    );

    sb.set_calendly_plan(blockyard::sandbox::CalendlyPlan::Standard);
    let (status, err) = call(
        c.get(format!("{base}/activity_log_entries"))
            .query(&[("organization", org.as_str())]),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        err,
        json!({"title": "Permission Denied", "message": "Please upgrade your Calendly account to Enterprise."})
    );
    let plan = control(&sb, "calendly/plan");
    assert_eq!(
        call(c.post(&plan).json(&json!({"plan": "enterprise"})))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        call(
            c.get(format!("{base}/activity_log_entries"))
                .query(&[("organization", org.as_str())])
        )
        .await
        .0,
        StatusCode::OK
    );
}

// ---------------------------------------------------------------------------------------------
// Webex

#[tokio::test]
async fn webex_people_lifecycle() {
    let sb = seeded(5).await;
    let c = Client::new();
    let people = format!("{}/people", sb.webex_url());
    let new = json!({"emails": ["grace@example.org"], "displayName": "Grace H", "firstName": "Grace", "lastName": "H"});
    let (status, created) = call(c.post(&people).json(&new)).await;
    assert_eq!(status, StatusCode::OK, "Webex answers 200 to a create");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["emails"], json!(["grace@example.org"]));
    assert_eq!(
        (
            created["invitePending"].clone(),
            created["loginEnabled"].clone()
        ),
        (json!(true), json!(true))
    );

    let response = c.post(&people).json(&new).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let tracking = response.headers()["trackingid"]
        .to_str()
        .unwrap()
        .to_owned();
    let err = body(response).await;
    assert_eq!(err["trackingId"], json!(tracking));
    assert_eq!(err["errors"][0]["description"], err["message"]);
    let (status, err) = call(c.post(&people).json(&json!({"displayName": "No Email"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(err["message"].as_str().unwrap().contains("emails"), "{err}");
    // An address without a domain is refused, as Calendly refuses it.
    let typo = json!({"emails": ["grace@example"], "displayName": "Grace Typo"});
    let (status, err) = call(c.post(&people).json(&typo)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        err["message"],
        "`emails` is required and must hold a valid email address."
    );

    let (status, got) = call(c.get(format!("{people}/{id}"))).await;
    assert_eq!(
        (status, got["displayName"].clone()),
        (StatusCode::OK, json!("Grace H"))
    );
    let (_, by_email) = call(c.get(&people).query(&[("email", "GRACE@example.org")])).await;
    assert_eq!(by_email["items"][0]["id"], json!(id));
    let (_, by_name) = call(c.get(&people).query(&[("displayName", "grace")])).await;
    assert_eq!(by_name["items"].as_array().unwrap().len(), 1);

    // PUT replaces: displayName required; dropping the implicit license is a 400.
    let (status, err) = call(
        c.put(format!("{people}/{id}"))
            .json(&json!({"emails": ["grace@example.org"], "licenses": got["licenses"]})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    let (status, err) = call(
        c.put(format!("{people}/{id}"))
            .json(&json!({"emails": ["grace@example.org"], "displayName": "Grace Hopper"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("Implicitly assigned"),
        "{err}"
    );
    let put = json!({"emails": ["grace@example.org"], "displayName": "Grace Hopper", "firstName": "Grace", "licenses": got["licenses"], "title": "RADM"});
    let (status, updated) = call(c.put(format!("{people}/{id}")).json(&put)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (updated["displayName"].clone(), updated["title"].clone()),
        (json!("Grace Hopper"), json!("RADM"))
    );
    assert!(
        updated.get("lastName").is_none(),
        "a PUT replaces the record"
    );

    let (status, roles) = call(c.get(format!("{}/roles", sb.webex_url()))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(roles["items"][0]["name"], "Full Administrator");
    let (_, me) = call(c.get(format!("{people}/me"))).await;
    assert_eq!(me["roles"], json!([roles["items"][0]["id"]]));
    assert!(me["lastActivity"].is_string() && me["status"].is_string());

    assert_eq!(
        call(c.delete(format!("{people}/{id}"))).await,
        (StatusCode::NO_CONTENT, Value::Null)
    );
    let (status, err) = call(c.get(format!("{people}/{id}"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["message"], "The requested resource could not be found.");
}

// ---------------------------------------------------------------------------------------------
// SCIM

#[tokio::test]
async fn scim_user_lifecycle() {
    let sb = seeded(3).await;
    let c = Client::new();
    let users = format!("{}/Users", sb.scim_url());
    let alice = json!({"schemas": [SCIM_USER], "userName": "Alice@Example.org", "displayName": "Alice", "active": true, "externalId": "ext-1"});
    let response = c.post(&users).json(&alice).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["content-type"], "application/scim+json");
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let created = body(response).await;
    assert_eq!(created["meta"]["location"], json!(location));
    assert_eq!(created["meta"]["version"], json!(etag));
    assert!(etag.starts_with("W/\""), "{etag}");

    let (status, err) = call(
        c.post(&users)
            .json(&json!({"schemas": [SCIM_USER], "userName": "alice@example.ORG"})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(err["schemas"], json!([SCIM_ERROR]));
    assert_eq!(
        (err["status"].clone(), err["scimType"].clone()),
        (json!("409"), json!("uniqueness"))
    );
    let (status, err) = call(c.post(&users).json(&json!({"schemas": [SCIM_USER]}))).await;
    assert_eq!(
        (status, err["scimType"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalidValue"))
    );

    let (_, list) = call(
        c.get(&users)
            .query(&[("filter", r#"USERNAME eq "alice@example.org""#)]),
    )
    .await;
    assert_eq!(
        (
            list["totalResults"].clone(),
            list["Resources"][0]["id"].clone()
        ),
        (json!(1), created["id"].clone())
    );
    let (status, err) = call(c.get(&users).query(&[("filter", "userName eq")])).await;
    assert_eq!(
        (status, err["scimType"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalidFilter"))
    );
    let (_, list) = call(
        c.get(&users)
            .query(&[("filter", r#"userName sw "ALICE" and not (active eq false)"#)]),
    )
    .await;
    assert_eq!(list["totalResults"], 1);

    // Entra-style PATCH: capitalised op, "False" string.
    let patch = json!({"schemas": [PATCH_OP], "Operations": [{"op": "Replace", "path": "active", "value": "False"}]});
    let (status, patched) = call(c.patch(&location).json(&patch)).await;
    assert_eq!(
        (status, patched["active"].clone()),
        (StatusCode::OK, json!(false))
    );
    // Atomic: a failing later op leaves the earlier one unapplied.
    let bad = json!({"schemas": [PATCH_OP], "Operations": [
        {"op": "replace", "path": "active", "value": true},
        {"op": "replace", "path": "bogus", "value": 1}]});
    let (status, err) = call(c.patch(&location).json(&bad)).await;
    assert_eq!(
        (status, err["scimType"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalidPath"))
    );
    let (_, now) = call(c.get(&location)).await;
    assert_eq!(now["active"], false);
    let pathless = json!({"schemas": [PATCH_OP], "Operations": [{"op": "add", "value": {"name.givenName": "Al", "title": "CTO"}}]});
    let (_, patched) = call(c.patch(&location).json(&pathless)).await;
    assert_eq!(
        (
            patched["name"]["givenName"].clone(),
            patched["title"].clone()
        ),
        (json!("Al"), json!("CTO"))
    );

    // If-Match with a stale version: 412.
    let (status, err) = call(c.put(&location).header("if-match", &etag).json(&alice)).await;
    assert_eq!(
        (status, err["status"].clone()),
        (StatusCode::PRECONDITION_FAILED, json!("412"))
    );
    let (status, replaced) = call(
        c.put(&location)
            .header("if-match", patched["meta"]["version"].as_str().unwrap())
            .json(&alice),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(replaced.get("title").is_none(), "PUT replaces");

    assert_eq!(
        call(c.delete(&location)).await,
        (StatusCode::NO_CONTENT, Value::Null)
    );
    let (status, err) = call(c.get(&location)).await;
    assert_eq!(
        (status, err["status"].clone()),
        (StatusCode::NOT_FOUND, json!("404"))
    );
    assert_eq!(call(c.delete(&location)).await.0, StatusCode::NOT_FOUND);

    // Discovery.
    for path in [
        "ServiceProviderConfig",
        "ResourceTypes",
        "Schemas",
        "Schemas/urn:ietf:params:scim:schemas:core:2.0:User",
    ] {
        assert_eq!(
            call(c.get(format!("{}/{path}", sb.scim_url()))).await.0,
            StatusCode::OK,
            "{path}"
        );
    }
}

#[tokio::test]
async fn scim_groups_track_members() {
    let sb = seeded(0).await;
    let c = Client::new();
    let base = sb.scim_url();
    let (_, user) = call(
        c.post(format!("{base}/Users"))
            .json(&json!({"schemas": [SCIM_USER], "userName": "bob@example.org"})),
    )
    .await;
    let uid = user["id"].as_str().unwrap();
    let group =
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Ops"});
    let (status, g) = call(c.post(format!("{base}/Groups")).json(&group)).await;
    assert_eq!(status, StatusCode::CREATED);
    let gloc = g["meta"]["location"].as_str().unwrap().to_owned();
    let add = json!({"schemas": [PATCH_OP], "Operations": [{"op": "add", "path": "members", "value": [{"value": uid}]}]});
    let (_, g) = call(c.patch(&gloc).json(&add)).await;
    assert_eq!(g["members"], json!([{"value": uid}]));
    let (_, u) = call(c.get(format!("{base}/Users/{uid}"))).await;
    assert_eq!(u["groups"][0]["display"], "Ops");
    let remove = json!({"schemas": [PATCH_OP], "Operations": [{"op": "remove", "path": format!("members[value eq \"{uid}\"]")}]});
    let (_, g) = call(c.patch(&gloc).json(&remove)).await;
    assert!(g.get("members").is_none());
}

// ---------------------------------------------------------------------------------------------
// Pagination and concurrency

#[tokio::test]
async fn a_thousand_seeded_people_list_page_by_page_exactly_once_in_every_vendor() {
    let sb = seeded(1000).await;
    let c = Client::new();

    let mut calendly = Vec::new();
    let mut next = Some(format!(
        "{}/organization_memberships?organization={}&count=100",
        sb.calendly_url(),
        sb.organization_uri()
    ));
    while let Some(url) = next {
        let (status, page) = call(c.get(&url)).await;
        assert_eq!(status, StatusCode::OK);
        for m in page["collection"].as_array().unwrap() {
            calendly.push(m["user"]["email"].as_str().unwrap().to_owned());
        }
        next = page["pagination"]["next_page"].as_str().map(str::to_owned);
    }

    let mut webex = Vec::new();
    let mut next = Some(format!("{}/people?max=100", sb.webex_url()));
    while let Some(url) = next {
        let response = c.get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        next = response.headers().get("link").map(|l| {
            let l = l.to_str().unwrap();
            assert!(l.ends_with(">; rel=\"next\""), "{l}");
            l[1..l.find('>').unwrap()].to_owned()
        });
        for p in body(response).await["items"].as_array().unwrap() {
            webex.push(p["emails"][0].as_str().unwrap().to_owned());
        }
    }

    let mut scim = Vec::new();
    let mut start = 1;
    loop {
        let (_, page) = call(c.get(format!(
            "{}/Users?startIndex={start}&count=100",
            sb.scim_url()
        )))
        .await;
        let items = page["Resources"].as_array().unwrap();
        if items.is_empty() {
            break;
        }
        assert_eq!(page["totalResults"], 1000);
        scim.extend(
            items
                .iter()
                .map(|u| u["userName"].as_str().unwrap().to_owned()),
        );
        start += items.len();
    }

    for (name, list) in [("calendly", &calendly), ("webex", &webex), ("scim", &scim)] {
        assert_eq!(list.len(), 1000, "{name}");
        assert_eq!(
            list.iter().collect::<HashSet<_>>().len(),
            1000,
            "{name} repeats someone"
        );
    }
    let c_set: HashSet<_> = calendly.iter().collect();
    assert_eq!(
        c_set,
        webex.iter().collect::<HashSet<_>>(),
        "same people in Calendly and Webex"
    );
    assert_eq!(
        c_set,
        scim.iter().collect::<HashSet<_>>(),
        "same people in Calendly and SCIM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_parallel_creates_lose_nothing_and_duplicate_nothing() {
    let sb = seeded(0).await;
    let c = Client::new();
    let mut tasks = Vec::new();
    for i in 0..100 {
        let (c, webex, scim) = (c.clone(), sb.webex_url(), sb.scim_url());
        tasks.push(tokio::spawn(async move {
            let w = c
                .post(format!("{webex}/people"))
                .json(&json!({"emails": [format!("p{i}@example.org")], "displayName": format!("P {i}")}))
                .send()
                .await
                .unwrap();
            let s = c
                .post(format!("{scim}/Users"))
                .json(&json!({"schemas": [SCIM_USER], "userName": format!("p{i}@example.org")}))
                .send()
                .await
                .unwrap();
            (w.status(), body(w).await["id"].clone(), s.status(), body(s).await["id"].clone())
        }));
    }
    let mut webex_ids = HashSet::new();
    let mut scim_ids = HashSet::new();
    for t in tasks {
        let (ws, wid, ss, sid) = t.await.unwrap();
        assert_eq!((ws, ss), (StatusCode::OK, StatusCode::CREATED));
        webex_ids.insert(wid.as_str().unwrap().to_owned());
        scim_ids.insert(sid.as_str().unwrap().to_owned());
    }
    assert_eq!((webex_ids.len(), scim_ids.len()), (100, 100));
    let (_, people) = call(c.get(format!("{}/people?max=1000", sb.webex_url()))).await;
    assert_eq!(people["items"].as_array().unwrap().len(), 100);
    let (_, users) = call(c.get(format!("{}/Users?count=1000", sb.scim_url()))).await;
    assert_eq!(users["totalResults"], 100);
}

// ---------------------------------------------------------------------------------------------
// The gate: token, rate limit, latency, failures

#[tokio::test]
async fn a_token_is_checked_with_each_vendors_401() {
    let sb = start(SandboxConfig {
        seed_users: 2,
        token: Some("s3cret".into()),
        ..SandboxConfig::default()
    })
    .await;
    let c = Client::new();
    let (status, err) = call(c.get(format!("{}/users/me", sb.calendly_url()))).await;
    assert_eq!(
        (status, err),
        (
            StatusCode::UNAUTHORIZED,
            json!({"title": "Unauthenticated", "message": "The access token is invalid"})
        )
    );
    let response = c
        .get(format!("{}/people", sb.webex_url()))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key("trackingid"));
    let err = body(response).await;
    assert_eq!(
        err["message"],
        "The request requires a valid access token set in the Authorization request header."
    );
    let (status, err) = call(c.get(format!("{}/Users", sb.scim_url()))).await;
    assert_eq!(
        (status, err["schemas"].clone(), err["status"].clone()),
        (StatusCode::UNAUTHORIZED, json!([SCIM_ERROR]), json!("401"))
    );
    for url in [
        format!("{}/users/me", sb.calendly_url()),
        format!("{}/people", sb.webex_url()),
        format!("{}/Users", sb.scim_url()),
    ] {
        assert_eq!(
            call(c.get(&url).bearer_auth("s3cret")).await.0,
            StatusCode::OK,
            "{url}"
        );
    }
    // Control endpoints are not token-checked.
    assert_eq!(call(c.get(control(&sb, "state"))).await.0, StatusCode::OK);
}

#[tokio::test]
async fn exceeding_the_rate_limit_gets_each_vendors_429() {
    let sb = start(SandboxConfig {
        seed_users: 2,
        rate_limit_per_min: Some(3),
        ..SandboxConfig::default()
    })
    .await;
    let c = Client::new();
    let me = format!("{}/users/me", sb.calendly_url());
    for remaining in ["2", "1", "0"] {
        let r = c.get(&me).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["x-ratelimit-limit"], "3");
        assert_eq!(r.headers()["x-ratelimit-remaining"], remaining);
    }
    let r = c.get(&me).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    let reset: u64 = r.headers()["x-ratelimit-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&reset), "{reset}");
    assert_eq!(body(r).await["title"], "Too Many Requests");

    let people = format!("{}/people", sb.webex_url());
    for _ in 0..3 {
        assert_eq!(
            call(c.get(&people)).await.0,
            StatusCode::OK,
            "windows are per vendor"
        );
    }
    let r = c.get(&people).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse::<u64>()
        .is_ok());
    assert!(body(r).await["trackingId"].is_string());

    let users = format!("{}/Users", sb.scim_url());
    for _ in 0..3 {
        c.get(&users).send().await.unwrap();
    }
    let r = c.get(&users).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(body(r).await["status"], "429");
    // Control endpoints are not rate-limited.
    assert_eq!(
        call(c.get(control(&sb, "requests"))).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn latency_is_added_before_every_vendor_response_but_not_control() {
    let latency = Duration::from_millis(150);
    let sb = start(SandboxConfig {
        seed_users: 1,
        latency,
        ..SandboxConfig::default()
    })
    .await;
    let c = Client::new();
    // A lower bound only: `tokio::time::sleep` never wakes early, so this cannot flake.
    for url in [
        format!("{}/users/me", sb.calendly_url()),
        format!("{}/people/me", sb.webex_url()),
        format!("{}/Users", sb.scim_url()),
    ] {
        let t = Instant::now();
        assert_eq!(call(c.get(&url)).await.0, StatusCode::OK);
        assert!(
            t.elapsed() >= latency,
            "{url} answered in {:?}",
            t.elapsed()
        );
    }
}

#[tokio::test]
async fn latency_changes_at_run_time_through_the_control_endpoint() {
    // Started with an hour's latency: a vendor request answers at all only once it is lifted.
    let sb = start(SandboxConfig {
        seed_users: 1,
        latency: Duration::from_secs(3600),
        ..SandboxConfig::default()
    })
    .await;
    let c = Client::new();
    let latency_url = control(&sb, "latency");
    assert_eq!(
        call(c.post(&latency_url).json(&json!({"ms": 0}))).await,
        (StatusCode::OK, json!({"ms": 0}))
    );
    let me = format!("{}/users/me", sb.calendly_url());
    assert_eq!(call(c.get(&me)).await.0, StatusCode::OK);
    let latency = Duration::from_millis(150);
    sb.set_latency(latency);
    let t = Instant::now();
    assert_eq!(call(c.get(&me)).await.0, StatusCode::OK);
    assert!(t.elapsed() >= latency, "answered in {:?}", t.elapsed());
    let (status, error) = call(c.post(&latency_url).json(&json!({"ms": -1}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid control body: "),
        "{error}"
    );
}

#[tokio::test]
async fn injected_failures_are_seeded_and_deterministic() {
    async fn statuses(seed: u64) -> Vec<u16> {
        let sb = start(SandboxConfig {
            seed_users: 1,
            seed,
            fail_rate: 0.3,
            ..SandboxConfig::default()
        })
        .await;
        let c = Client::new();
        let mut out = Vec::new();
        for _ in 0..40 {
            out.push(
                c.get(format!("{}/people/me", sb.webex_url()))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16(),
            );
        }
        let (status, body) = loop {
            let r = call(c.get(format!("{}/Users", sb.scim_url()))).await;
            if r.0 == StatusCode::SERVICE_UNAVAILABLE {
                break r;
            }
        };
        assert_eq!(
            (status, body["status"].clone()),
            (StatusCode::SERVICE_UNAVAILABLE, json!("503"))
        );
        out
    }
    let a = statuses(7).await;
    assert_eq!(a, statuses(7).await);
    assert!(a.contains(&503) && a.contains(&200), "{a:?}");
    assert_ne!(a, statuses(8).await);
}

// ---------------------------------------------------------------------------------------------
// Control endpoints and the binary

#[tokio::test]
async fn control_endpoints_log_reset_and_reseed() {
    let sb = seeded(3).await;
    let c = Client::new();
    c.get(format!("{}/people?max=1", sb.webex_url()))
        .send()
        .await
        .unwrap();
    let (_, log) = call(c.get(control(&sb, "requests"))).await;
    assert_eq!(
        log,
        json!([{"method": "GET", "path": "/webex/v1/people", "query": "max=1", "body": null, "status": 200}])
    );
    let (_, state) = call(c.get(control(&sb, "state"))).await;
    assert_eq!(state["webex"]["people"].as_array().unwrap().len(), 3);
    assert_eq!(state["scim"]["Users"].as_array().unwrap().len(), 3);
    let (status, seeded) = call(
        c.post(control(&sb, "seed"))
            .json(&json!({"users": 7, "seed": 1})),
    )
    .await;
    assert_eq!(
        (status, seeded["users"].clone()),
        (StatusCode::OK, json!(7))
    );
    assert_eq!(seeded["organization"], json!(sb.organization_uri()));
    assert!(sb.requests().is_empty());
    let (_, state) = call(c.get(control(&sb, "state"))).await;
    assert_eq!(
        state["calendly"]["memberships"].as_array().unwrap().len(),
        7
    );
    assert_eq!(
        call(c.post(control(&sb, "reset"))).await.0,
        StatusCode::NO_CONTENT
    );
    let (_, state) = call(c.get(control(&sb, "state"))).await;
    assert_eq!(state["webex"]["people"], json!([]));
    assert_eq!(state["scim"]["Users"], json!([]));
    // The same seed gives the same data.
    let again = seeded_emails(3).await;
    assert_eq!(again, seeded_emails(3).await);
}

async fn seeded_emails(users: usize) -> Vec<String> {
    let sb = seeded(users).await;
    let (_, people) = call(Client::new().get(format!("{}/people", sb.webex_url()))).await;
    people["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["emails"][0].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_binary_prints_its_urls_serves_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_blockyard"))
        .args(["sandbox", "--listen", "127.0.0.1:0", "--seed-users", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut urls = Vec::new();
    for name in ["calendly", "webex", "scim"] {
        let line = lines.next().unwrap().unwrap();
        let (label, url) = line.split_once(' ').unwrap();
        assert_eq!(label, name);
        urls.push(url.to_owned());
    }
    assert!(urls[0].starts_with("http://127.0.0.1:") && urls[0].ends_with("/calendly"));
    assert!(urls[1].ends_with("/webex/v1") && urls[2].ends_with("/scim/v2"));
    let smtp = lines.next().unwrap().unwrap();
    assert!(smtp.starts_with("smtp smtp://127.0.0.1:"), "{smtp}");
    let (status, me) = call(Client::new().get(format!("{}/users/me", urls[0]))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(me["resource"]["email"]
        .as_str()
        .unwrap()
        .ends_with("@example.com"));
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(lines.next().is_none(), "nothing else on stdout");
}

#[test]
fn a_bad_rate_limit_is_a_usage_error() {
    // The binary directly (not `support`): cargo also builds this file as its own test target.
    let out = Command::new(env!("CARGO_BIN_EXE_blockyard"))
        .args(["sandbox", "--rate-limit", "600"])
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("expected `N/min` (e.g. `600/min`), got `600`"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn the_binary_writes_no_colour_codes_into_a_log_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sandbox.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_blockyard"))
        .args(["sandbox", "--listen", "127.0.0.1:0", "--seed-users", "1"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("the binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..4 {
        lines.next().unwrap().unwrap();
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("sandbox serving"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in a log file: {text:?}"
    );
}
