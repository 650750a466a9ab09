//! Email over SMTP against the sandbox's SMTP sink: `email.send` sends the rendered subject and
//! body (read back from `/_sandbox/mail`), a dry run and an offline replay send nothing, the
//! password appears nowhere; STARTTLS is required unless `tls: none` to loopback.

use serde_json::json;

use crate::support::{self, Env};

/// The SMTP password of the sandbox and the `mail` credential: no output or file may hold it.
pub const PASSWORD: &str = "SMTP-SECRET-pw-5150";

/// A sandbox whose SMTP sink requires the `mailer` login, with a `mail` credential for it
/// (`tls: none`, loopback) in the config.
pub async fn env_with_mail() -> Env {
    let env = Env::start(blockyard::sandbox::SandboxConfig {
        smtp_login: Some(("mailer".to_owned(), PASSWORD.to_owned())),
        ..Default::default()
    })
    .await;
    add_mail(&env, "mail", "tls: none, ");
    env
}

/// Adds an `email` credential `name` for the sandbox's sink, with `extra` keys.
pub fn add_mail(env: &Env, name: &str, extra: &str) {
    let config = env.path().join("blockyard.yaml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text += &format!(
        "  {name}: {{vendor: email, auth: basic, base_url: \"{}\", {extra}username: mailer, password: {PASSWORD}}}\n",
        env.sb.smtp_url()
    );
    std::fs::write(&config, text).unwrap();
}

const MAIL: &str = r#"name: mail
blocks:
  begin:
    type: begin
    next: tell
  tell:
    type: api
    preset: email.send
    credential: mail
    with:
      from: "IT <it@acme.com>"
      to: "{{record.email}}"
      subject: "Your access ends on {{record.last_day}}"
      body: "Hello {{record.email}},\n.your account closes on {{record.last_day}}."
    next: end
  end:
    type: end
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_block_sends_its_rendered_message_over_smtp() {
    let env = env_with_mail().await;
    let file = env.write("mail.yaml", MAIL).display().to_string();
    let args = [
        "run",
        &file,
        "--record",
        "email=ann@acme.com",
        "--record",
        "last_day=2026-12-31",
    ];
    let message = json!({
        "from": "IT <it@acme.com>",
        "to": "ann@acme.com",
        "subject": "Your access ends on 2026-12-31",
        "body": "Hello ann@acme.com,\n.your account closes on 2026-12-31.",
    });

    // A dry run shows the message and sends nothing.
    let planned = env.json(&[&args[..], &["--dry-run", "--json"]].concat());
    assert_eq!(planned["steps"][1]["status"], "planned", "{planned}");
    assert_eq!(planned["steps"][1]["request"]["body"], message);
    assert_eq!(
        planned["steps"][1]["request"]["url"],
        env.sb.smtp_url().as_str()
    );
    assert!(env.sb.mails().is_empty(), "a dry run sent nothing");

    let run = env.json(&[&args[..], &["--json"]].concat());
    assert_eq!(run["status"], "succeeded", "{run}");
    let received = env.sb.mails();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].from, "it@acme.com");
    assert_eq!(received[0].to, ["ann@acme.com"]);
    assert_eq!(received[0].subject, "Your access ends on 2026-12-31");
    // The line starting with `.` went through dot-stuffing and came back as written.
    assert_eq!(
        received[0].body,
        "Hello ann@acme.com,\n.your account closes on 2026-12-31."
    );
    assert_eq!(received[0].login.as_deref(), Some("mailer"));

    // History keeps the rendered message and the server's answer.
    let id = run["id"].as_str().unwrap();
    let shown = env.json(&["history", "show", id, "--json"]);
    let step = &shown["steps"][1];
    assert_eq!(step["block"], "tell");
    assert_eq!(step["request"]["body"], message);
    assert_eq!(step["response"]["status"], 250, "{step}");
    assert_eq!(
        step["response"]["body"]["accepted"],
        json!(["ann@acme.com"])
    );

    // Offline replay answers from the recording: identical, nothing sent.
    let (code, stdout, stderr) = env.run(&["replay", id, "--offline"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("identical to the recording"), "{stdout}");
    assert_eq!(env.sb.mails().len(), 1, "offline replay sent nothing");

    // The password is in no output and no file of the data dir.
    let (_, text, _) = env.run(&["history", "show", id]);
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(!shown.to_string().contains(PASSWORD));
    assert!(!planned.to_string().contains(PASSWORD));
    assert_eq!(
        support::files_containing(&env.data_dir(), PASSWORD),
        Vec::<std::path::PathBuf>::new()
    );

    // The sink lists what it received.
    let listed = support::get_json(format!("http://{}/_sandbox/mail", env.sb.addr())).await;
    assert_eq!(
        listed,
        json!([{
            "from": "it@acme.com",
            "to": ["ann@acme.com"],
            "subject": "Your access ends on 2026-12-31",
            "body": "Hello ann@acme.com,\n.your account closes on 2026-12-31.",
            "login": "mailer",
        }])
    );
}

/// Without `tls:`, the credential wants STARTTLS, which the plain sink does not offer: nothing
/// is sent (the password least of all) and the run fails saying why; a wrong password is the
/// server's 535.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_is_required_unless_tls_none_and_a_wrong_password_is_refused() {
    let env = env_with_mail().await;
    add_mail(&env, "strict", "");
    let config = env.path().join("blockyard.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    let wrong = format!(
        "  wrong: {{vendor: email, auth: basic, base_url: \"{}\", tls: none, username: mailer, password: not-the-SMTP-SECRET}}\n",
        env.sb.smtp_url()
    );
    std::fs::write(&config, text + wrong.as_str()).unwrap();
    let send = |credential: &str| {
        let workflow = MAIL.replace("credential: mail", &format!("credential: {credential}"));
        let file = env.write("m.yaml", &workflow).display().to_string();
        env.json(&[
            "run",
            &file,
            "--record",
            "email=ann@acme.com",
            "--record",
            "last_day=2026-12-31",
            "--json",
        ])
    };
    let run = send("strict");
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(
        run["error"],
        "block `tell` failed: `email.send`: the mail server does not offer STARTTLS, which credential `strict` requires (`tls: starttls`, the default), so nothing was sent; use `tls: tls` for an SMTPS port, or `tls: none` for a server on loopback"
    );
    let run = send("wrong");
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(
        run["error"],
        "block `tell` failed: `email.send`: the mail server answered 535: 5.7.8 authentication credentials invalid"
    );
    assert!(env.sb.mails().is_empty());
    assert_eq!(
        support::files_containing(&env.data_dir(), "SMTP-SECRET"),
        Vec::<std::path::PathBuf>::new()
    );
}

#[test]
fn tls_none_is_only_for_a_loopback_server() {
    let parse = |base: &str, tls: &str| {
        blockyard::config::Config::parse(
            std::path::Path::new("b.yaml"),
            &format!("credentials:\n  mail:\n    vendor: email\n    auth: basic\n    base_url: \"{base}\"\n    username: u\n    password: p\n    tls: {tls}\n"),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    assert_eq!(parse("smtp://127.0.0.1:2525", "none"), Ok(()));
    assert_eq!(parse("smtp://mail.example.com:587", "starttls"), Ok(()));
    assert_eq!(
        parse("smtp://mail.example.com:25", "none"),
        Err("b.yaml:8:10: credentials.mail.tls: `none` sends the password and the mail in plain text, so it is only for a loopback server (`base_url: smtp://127.0.0.1:PORT`, the sandbox's sink); use `starttls` or `tls` for any other".to_owned())
    );
    assert_eq!(
        parse("smtp://mail.example.com:25", "ssl"),
        Err("b.yaml:8:10: credentials.mail.tls: unknown variant `ssl`, expected one of `starttls`, `tls`, `none`".to_owned())
    );
    // `tls:` secures an SMTP connection only: on an HTTP credential it would do nothing.
    assert_eq!(
        parse("https://api.calendly.com", "tls"),
        Err("b.yaml:8:10: credentials.mail.tls: `tls` is how an SMTP connection is secured; this credential's `base_url` is not `smtp://…`, so remove the key (HTTPS comes from the `https://` in the URL)".to_owned())
    );
}

/// The sink speaks SMTP to any client: a login is required and checked, dot-stuffed lines come
/// back as written, an over-long line is refused and the session goes on.
#[tokio::test]
async fn the_smtp_sink_checks_the_login_and_bounds_lines() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    let env = env_with_mail().await;
    let addr = env.sb.smtp_url().trim_start_matches("smtp://").to_owned();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    // Reads one reply (every line of a multi-line one), joined with `|`.
    async fn reply(read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> String {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            read.read_line(&mut line).await.unwrap();
            let line = line.trim_end().to_owned();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return lines.join("|");
            }
        }
    }
    let mut said = Vec::new();
    said.push(reply(&mut read).await);
    let plain = "AUTH PLAIN AG1haWxlcgBTTVRQLVNFQ1JFVC1wdy01MTUw"; // \0mailer\0SMTP-SECRET-pw-5150
    let long = format!("NOOP {}", "x".repeat(1200));
    for command in [
        "EHLO test",
        "MAIL FROM:<a@x.com>",
        "AUTH PLAIN AG1haWxlcgB3cm9uZw==", // \0mailer\0wrong
        plain,
        long.as_str(),
        "MAIL FROM:<a@x.com>",
        "RCPT TO:<b@x.com>",
        "DATA",
    ] {
        write
            .write_all(format!("{command}\r\n").as_bytes())
            .await
            .unwrap();
        said.push(reply(&mut read).await);
    }
    write
        .write_all(b"Subject: hi\r\n\r\n..dot\r\nend\r\n.\r\nQUIT\r\n")
        .await
        .unwrap();
    said.push(reply(&mut read).await);
    said.push(reply(&mut read).await);
    assert_eq!(
        said,
        [
            "220 blockyard-sandbox ESMTP ready",
            "250-blockyard-sandbox greets test|250-SIZE 1048576|250-8BITMIME|250-AUTH PLAIN LOGIN|250 HELP",
            "530 5.7.0 authentication required",
            "535 5.7.8 authentication credentials invalid",
            "235 2.7.0 authentication succeeded",
            "500 5.5.6 line too long",
            "250 2.1.0 sender ok",
            "250 2.1.5 recipient ok",
            "354 end data with <CR><LF>.<CR><LF>",
            "250 2.0.0 ok: queued",
            "221 2.0.0 bye",
        ]
    );
    let mails = env.sb.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(
        (mails[0].subject.as_str(), mails[0].body.as_str()),
        ("hi", ".dot\nend")
    );
}

/// A block that fails (the sandbox serves no `/nowhere`), under an email `notify:`.
const FAILING: &str = r#"name: failing
notify:
  credential: mail
  to: [oncall@acme.com, it@acme.com]
  from: "blockyard <blockyard@acme.com>"
  subject: "{{run.workflow}} {{run.status}} for {{record.email}}"
  text: "{{run.workflow}} failed for {{record.email}}: {{run.error}}"
blocks:
  begin:
    type: begin
    next: tell
  tell:
    type: api
    preset: webhook.post
    credential: nowhere
    with:
      payload: {text: "hello"}
    next: end
  end:
    type: end
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_sends_its_notify_email_and_a_dry_run_or_replay_none() {
    let env = env_with_mail().await;
    let config = env.path().join("blockyard.yaml");
    let nowhere = format!(
        "  nowhere: {{vendor: webhook, auth: url, url: \"http://{}/nowhere\"}}\n",
        env.sb.addr()
    );
    let text = std::fs::read_to_string(&config).unwrap() + nowhere.as_str();
    std::fs::write(&config, text).unwrap();
    let file = env.write("failing.yaml", FAILING).display().to_string();

    let (code, stdout, stderr) =
        env.run(&["run", &file, "--record", "email=ann@acme.com", "--dry-run"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(env.sb.mails().is_empty(), "a dry run mails nobody");

    let out = env
        .command(&["run", &file, "--record", "email=ann@acme.com", "--json"])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let (stdout, stderr) = (support::stdout(&out), support::stderr(&out));
    let run: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(run["status"], "failed", "{run}");
    let received = env.sb.mails();
    assert_eq!(received.len(), 1, "{received:?} {stderr}");
    assert!(!stderr.contains(PASSWORD), "{stderr}");
    assert_eq!(received[0].from, "blockyard@acme.com");
    assert_eq!(received[0].to, ["oncall@acme.com", "it@acme.com"]);
    assert_eq!(received[0].subject, "failing failed for ann@acme.com");
    assert_eq!(
        received[0].body,
        "failing failed for ann@acme.com: block `tell` failed: `webhook.post`: not found (status 404)"
    );
    let id = run["id"].as_str().unwrap();
    let (code, stdout, stderr) = env.run(&["replay", id, "--offline"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(env.sb.mails().len(), 1, "an offline replay mails nobody");
    assert_eq!(
        support::files_containing(&env.data_dir(), PASSWORD),
        Vec::<std::path::PathBuf>::new()
    );
}

#[test]
fn bad_email_and_reminder_keys_in_notify_are_compile_errors() {
    let dir = tempfile::tempdir().unwrap();
    let body = "blocks:\n  begin:\n    type: begin\n    next: end\n  end:\n    type: end\n";
    let head = "checked 1 workflow: 0 valid, 1 invalid (1 error)\nDIR/w.yaml:";
    let cases = [
        (
            "notify:\n  credential: mail\n  to: it@acme.com\n",
            "4:7: error: invalid `notify.to`: an email alert needs a sender: add `from:` (such as `blockyard@example.com`)\n",
        ),
        (
            "notify:\n  credential: mail\n  from: it@acme.com\n",
            "4:9: error: invalid `notify.from`: `from` is the sender of an email alert; add `to:` with its recipients, or remove `from`\n",
        ),
        (
            "notify:\n  credential: alerts\n  subject: hi\n",
            "4:12: error: invalid `notify.subject`: `subject` is for an email alert; add `to:` and `from:`, or remove `subject`\n",
        ),
        (
            "notify:\n  credential: mail\n  to: [oncall]\n  from: it@acme.com\n",
            "4:7: error: invalid `notify.to`: `to` takes email addresses, such as `it-oncall@example.com` or a list of them\n",
        ),
        (
            "notify:\n  credential: mail\n  to: a@acme.com\n  from: it@acme.com\n  subject: \"{{#if}}\"\n",
            "6:12: error: invalid template in `notify.subject`: invalid handlebars syntax (template column 8); write expressions as `{{name}}` or `<<name>>`\n",
        ),
        (
            "notify:\n  credential: alerts\n  remind_approvers_after: tomorrow\n",
            "4:27: error: invalid duration `tomorrow` for `notify.remind_approvers_after` (write a number and a unit: `500ms`, `30s`, `5m`, `1h`)\n",
        ),
        (
            "notify:\n  credential: alerts\n  remind_approvers_after: 0s\n",
            "4:27: error: invalid duration `0s` for `notify.remind_approvers_after` (write a number and a unit: `500ms`, `30s`, `5m`, `1h`)\n",
        ),
        (
            "notify:\n  credential: alerts\n  reminder_text: hurry\n",
            "4:18: error: invalid `notify.reminder_text`: `reminder_text` is sent only with `remind_approvers_after`; add it (such as `1d`) or remove `reminder_text`\n",
        ),
        (
            "notify:\n  credential: alerts\n  remind_after: 1d\n",
            "4:3: error: unknown key `remind_after` in `notify`\n",
        ),
        // Accepted before and then did nothing: no block of this workflow waits for approval.
        (
            "notify:\n  credential: alerts\n  remind_approvers_after: 1d\n",
            "4:27: error: invalid `notify.remind_approvers_after`: no block of this workflow has `approval: required`, so no run of it waits for approval; remove the key or gate a block\n",
        ),
        // Accepted before and then did nothing: `on: []` sends no alert, so `text` is never sent.
        (
            "notify:\n  credential: alerts\n  on: []\n  text: hi\n",
            "5:9: error: invalid `notify.text`: `text` is the alert's, and `on: []` sends no alert; list the statuses to alert on in `on:`, or remove `text`\n",
        ),
        (
            "notify:\n  credential: alerts\n  on: []\n",
            "4:7: error: invalid `notify.on`: `on: []` sends no alert, and without `remind_approvers_after` this `notify:` sends nothing; list statuses (`failed`, `needs_attention`) or add `remind_approvers_after`\n",
        ),
    ];
    for (notify, expected) in cases {
        let file = dir.path().join("w.yaml");
        std::fs::write(&file, format!("name: w\n{notify}{body}")).unwrap();
        let out = support::blockyard(&["validate", &file.display().to_string()]);
        let shown = support::stderr(&out) + support::stdout(&out).as_str();
        assert_eq!(
            shown.replace(&dir.path().display().to_string(), "DIR"),
            format!("{head}{expected}"),
            "{notify}"
        );
    }
    // The config's `notify:` is checked the same way.
    let err = blockyard::config::Config::parse(
        std::path::Path::new("b.yaml"),
        "notify:\n  credential: alerts\n  remind_approvers_after: soon\n",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "b.yaml:3:27: invalid duration `soon` for `notify.remind_approvers_after`; write a number and a unit, such as `4h` or `1d`"
    );
}

#[test]
fn presets_show_an_smtp_action_as_a_message_not_a_post() {
    let out = support::blockyard(&["presets", "show", "email.send"]);
    let text = support::stdout(&out);
    assert!(
        text.starts_with("email.send: Email Send\n  SMTP message (write)\n"),
        "{text}"
    );
    let out = support::blockyard(&["presets", "list"]);
    let line = support::stdout(&out)
        .lines()
        .find(|l| l.starts_with("email.send "))
        .unwrap()
        .to_owned();
    assert!(line.ends_with("write  SMTP message"), "{line}");
}
