//! Secrets the user did not mark as such: a password in a `base_url`'s userinfo, and a configured
//! secret given as an input value. Neither may appear in a log, in `call`'s output or in the bytes
//! of the data dir, through the real binary against a loopback server.

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::support;

/// The password in the credential's `base_url`.
const PASSWORD: &str = "Userinfo-PASS-6c1e";

/// The bearer token of the credential, also given as an input value.
const TOKEN: &str = "calendly-SECRET-token-0d9a";

const ORG: &str = "https://api.calendly.com/organizations/ORG1";

/// Runs the binary with `args` from `dir` (logs on at `info`): `(exit code, stdout, stderr)`.
async fn blockyard(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let dir = dir.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        support::command_in(&dir, &args)
            .env("RUST_LOG", "info")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        support::stdout(&out),
        support::stderr(&out),
    )
}

/// A server answering `current_user`, and an invitation that echoes the email it was sent.
async fn calendly() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/calendly/users/me"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"resource": {"uri": "https://api.calendly.com/users/U1", "current_organization": ORG}}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/calendly/organizations/ORG1/invitations"))
        .respond_with(|req: &Request| {
            let body: Value = serde_json::from_slice(&req.body).unwrap();
            ResponseTemplate::new(201).set_body_json(
                json!({"resource": {"email": body["email"], "status": "pending", "organization": ORG}}),
            )
        })
        .mount(&server)
        .await;
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_a_base_urls_userinfo_appears_nowhere() {
    let server = calendly().await;
    let dir = tempfile::tempdir().unwrap();
    let base = server
        .uri()
        .replace("http://", &format!("http://robot:{PASSWORD}@"));
    std::fs::write(
        dir.path().join("blockyard.yaml"),
        format!(
            "data_dir: data\nvars:\n  calendly_organization: {ORG}\ncredentials:\n  calendly: {{vendor: calendly, auth: bearer, token: {TOKEN}, base_url: {base}/calendly}}\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("whoami.yaml"), support::WHOAMI).unwrap();
    let mut output = String::new();
    for args in [
        &["call", "calendly.current_user"][..],
        &["call", "calendly.current_user", "--json"],
        &["call", "calendly.current_user", "--dry-run"],
    ] {
        let (code, stdout, stderr) = blockyard(dir.path(), args).await;
        assert_eq!(code, 0, "{args:?}: {stdout}{stderr}");
        output += &format!("{stdout}{stderr}");
    }
    let (code, stdout, stderr) = blockyard(dir.path(), &["run", "whoami.yaml", "--json"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let run: Value = serde_json::from_str(&stdout).unwrap();
    output += &format!("{stdout}{stderr}");
    for args in [&["--json"][..], &[]] {
        let mut args = args.to_vec();
        args.splice(0..0, ["history", "show", run["id"].as_str().unwrap()]);
        let (code, stdout, stderr) = blockyard(dir.path(), &args).await;
        assert_eq!(code, 0, "{stdout}{stderr}");
        output += &format!("{stdout}{stderr}");
    }
    // The calls happened and were logged with their URL, the password left out.
    assert!(output.contains("vendor call"), "{output}");
    assert!(
        output.contains(&format!(
            "http://robot:[redacted]@{}/calendly/users/me",
            server.address()
        )),
        "{output}"
    );
    assert!(!output.contains(PASSWORD), "the password leaked:\n{output}");
    let leaks = support::files_containing(&dir.path().join("data"), PASSWORD);
    assert!(leaks.is_empty(), "the password is in {leaks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_secret_given_as_an_input_is_redacted_in_the_request_shown_and_stored() {
    let server = calendly().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("blockyard.yaml"),
        format!(
            "data_dir: data\nvars:\n  calendly_organization: {ORG}\ncredentials:\n  calendly: {{vendor: calendly, auth: bearer, token: {TOKEN}, base_url: {}/calendly}}\n",
            server.uri()
        ),
    )
    .unwrap();
    let with = format!("email={TOKEN}");
    let (code, out, err) = blockyard(
        dir.path(),
        &["call", "calendly.invite_user", "--with", &with, "--dry-run"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out,
        format!("> POST {}/calendly/organizations/ORG1/invitations\n> Accept: application/json\n> Content-Type: application/json\n> Authorization: [redacted]\n>\n> {{\n>   \"email\": \"[redacted]\"\n> }}\n", server.uri())
    );
    let mut output = String::new();
    for args in [
        &["call", "calendly.invite_user", "--with", &with][..],
        &["call", "calendly.invite_user", "--with", &with, "--json"],
    ] {
        let (code, stdout, stderr) = blockyard(dir.path(), args).await;
        assert_eq!(code, 0, "{args:?}: {stdout}{stderr}");
        output += &format!("{stdout}{stderr}");
    }
    assert!(!output.contains(TOKEN), "the token leaked:\n{output}");
    assert!(
        output.contains("\"email\": \"[redacted]\""),
        "the response shows the echo redacted:\n{output}"
    );
    // The vendor got the value itself.
    let sent: Vec<Value> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(sent, [json!({"email": TOKEN}), json!({"email": TOKEN})]);

    // A run records the request it sent redacted, like its inputs and the response.
    std::fs::write(
        dir.path().join("invite.yaml"),
        "name: invite\nblocks:\n  begin: {type: begin, next: invite}\n  invite: {type: api, preset: calendly.invite_user, credential: calendly, with: {email: \"{{record.email}}\"}, next: end}\n  end: {type: end}\n",
    )
    .unwrap();
    let record = format!("email={TOKEN}");
    for dry in [false, true] {
        let mut args = vec!["run", "invite.yaml", "--record", &record, "--json"];
        if dry {
            args.push("--dry-run");
        }
        let (code, stdout, stderr) = blockyard(dir.path(), &args).await;
        assert_eq!(code, 0, "{stdout}{stderr}");
        let run: Value = serde_json::from_str(&stdout).unwrap();
        let step = &run["steps"][1];
        assert_eq!(step["block"], "invite");
        assert_eq!(step["inputs"]["email"], "[redacted]", "dry run: {dry}");
        assert_eq!(
            step["request"]["body"]["email"], "[redacted]",
            "dry run: {dry}"
        );
        let (code, shown, stderr) = blockyard(
            dir.path(),
            &["history", "show", run["id"].as_str().unwrap(), "--json"],
        )
        .await;
        assert_eq!(code, 0, "{shown}{stderr}");
        let shown: Value = serde_json::from_str(&shown).unwrap();
        let step = &shown["steps"][1];
        assert_eq!(
            step["request"]["body"]["email"], "[redacted]",
            "dry run: {dry}"
        );
        if !dry {
            assert_eq!(step["response"]["body"]["resource"]["email"], "[redacted]");
        }
    }
}
