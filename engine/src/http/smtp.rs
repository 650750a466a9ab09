//! The SMTP transport: how an action of a `transport: smtp` vendor (the shipped `email.send`)
//! leaves, through `lettre` (rustls with the same ring provider and webpki roots as reqwest).
//!
//! Everything before sending is the HTTP path's: the preset renders a [`RenderedRequest`] whose
//! body is the message (`from`, `to`, `cc`, `subject`, `body`), which a dry run shows, history
//! keeps and an offline replay compares; its URL is the credential's `base_url`
//! (`smtp://host:port`). This module only turns that request into one message and hands it to the
//! server: EHLO, STARTTLS (required by default: a server that does not offer it gets nothing,
//! not the password in clear), AUTH with the credential's `username` and `password`, MAIL, RCPT,
//! DATA. One connection per message (no pool): notifications are few.
//!
//! `tls:` on the credential: `starttls` (default, port 587 unless the URL says), `tls` (implicit
//! TLS, port 465) or `none` (plain text, port 25): `none` is refused by the config unless the
//! server is on loopback ([`is_loopback_url`]), which is what the sandbox's sink is.
//!
//! The answer is a [`Response`] like a vendor's: status 250 and `{"accepted": [...], "reply":
//! "..."}`. A refusal is [`CallError::Smtp`] with the server's code (4xx may succeed later, 5xx
//! not); every message passes through the redactor, so the password never shows.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::{Credentials as SmtpLogin, Mechanism};
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{CallError, Credential, Redactor, RenderedRequest, Response};
use crate::preset::PresetId;

/// How an SMTP connection is secured (a credential's `tls:`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain connect, then STARTTLS, which the server must offer.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS, port 465).
    Tls,
    /// No encryption at all: only to a server on loopback.
    None,
}

impl SmtpTls {
    fn default_port(self) -> u16 {
        match self {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        }
    }
}

/// Whether `url` is `smtp://` to a loopback address (`127.0.0.0/8`, `[::1]`, `localhost`).
pub fn is_loopback_url(url: &str) -> bool {
    let Ok(url) = url::Url::parse(url) else {
        return false;
    };
    url.scheme() == "smtp"
        && match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            // `smtp:` is not a special scheme: its IPv4 host comes back as a name.
            Some(url::Host::Domain(name)) => {
                name.eq_ignore_ascii_case("localhost")
                    || name
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
            None => false,
        }
}

/// One message as the rendered body gives it.
struct Parts {
    from: Mailbox,
    to: Vec<Mailbox>,
    cc: Vec<Mailbox>,
    subject: String,
    body: String,
}

/// Sends `request` (rendered for an SMTP action) with `credential`.
pub(crate) async fn send(
    action: &PresetId,
    credential: &Credential,
    redactor: &Redactor,
    request: &RenderedRequest,
    timeout: Duration,
) -> Result<Response, CallError> {
    let invalid = |message: String| CallError::Smtp {
        action: action.clone(),
        code: None,
        message,
        transient: false,
        maybe_sent: false,
    };
    let parts = parts(request.body.as_ref()).map_err(invalid)?;
    let url = url::Url::parse(&request.url)
        .ok()
        .filter(|u| u.scheme() == "smtp" && u.host_str().is_some_and(|h| !h.is_empty()))
        .ok_or_else(|| CallError::BadSmtpUrl {
            credential: credential.name().clone(),
            url: redactor.text(&request.url),
        })?;
    let host = url
        .host_str()
        .expect("checked above")
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let tls = credential.config.tls;
    let port = url.port().unwrap_or(tls.default_port());
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
        .port(port)
        .timeout(Some(timeout))
        .hello_name(ClientId::Domain("blockyard.localhost".to_owned()))
        .authentication(vec![Mechanism::Plain, Mechanism::Login]);
    builder = match tls {
        SmtpTls::None => builder.tls(Tls::None),
        SmtpTls::Starttls | SmtpTls::Tls => {
            let parameters = TlsParameters::new(host).map_err(|err| CallError::Smtp {
                action: action.clone(),
                code: None,
                message: redactor.text(&message_of(&err)),
                transient: false,
                maybe_sent: false,
            })?;
            builder.tls(match tls {
                SmtpTls::Tls => Tls::Wrapper(parameters),
                _ => Tls::Required(parameters),
            })
        }
    };
    if let Some((username, password)) = credential.basic_login(redactor)? {
        builder = builder.credentials(SmtpLogin::new(username, password.expose().to_owned()));
    }
    let transport = builder.build();
    let mut message = Message::builder().from(parts.from);
    for to in &parts.to {
        message = message.to(to.clone());
    }
    for cc in &parts.cc {
        message = message.cc(cc.clone());
    }
    let message = message
        .subject(parts.subject)
        .header(ContentType::TEXT_PLAIN)
        .body(parts.body)
        .map_err(|err| invalid(format!("cannot build the message: {}", message_of(&err))))?;
    match transport.send(message).await {
        Ok(reply) => {
            let accepted: Vec<String> = parts
                .to
                .iter()
                .chain(&parts.cc)
                .map(|m| m.email.to_string())
                .collect();
            let reply_text = redactor.text(&reply.message().collect::<Vec<_>>().join(" "));
            tracing::info!(action = %action, server = %redactor.text(&request.url), recipients = accepted.len(), "mail sent");
            Ok(Response {
                status: 250,
                headers: Default::default(),
                body: json!({ "accepted": accepted, "reply": reply_text }),
                items: None,
                pages: 1,
                wire_len: 0,
            })
        }
        Err(err) => {
            let code = err.status().map(|code| {
                let text = code.to_string();
                text.parse::<u16>().unwrap_or(0)
            });
            let mut message = redactor.text(&message_of(&err));
            if code.is_some() {
                // "permanent error (535): 5.7.8 ...": the code is said once, by the error.
                if let Some((_, reply)) = message.split_once("): ") {
                    message = reply.to_owned();
                }
            }
            // lettre says only "internal client error: starttls is not supported on this server".
            if err.is_client() && message.contains("starttls") {
                message = format!("the mail server does not offer STARTTLS, which credential `{}` requires (`tls: starttls`, the default), so nothing was sent; use `tls: tls` for an SMTPS port, or `tls: none` for a server on loopback", credential.name());
            }
            tracing::warn!(action = %action, server = %redactor.text(&request.url), code, error = %message, "mail not sent");
            Err(CallError::Smtp {
                action: action.clone(),
                code,
                message,
                // A 4xx, or a connection that failed or dropped; not a refusal, a TLS failure or
                // a server without STARTTLS.
                transient: err.is_transient()
                    || (err.status().is_none() && !err.is_client() && !err.is_tls()),
                maybe_sent: err.status().is_none()
                    && !err.is_client()
                    && !err.is_tls()
                    && !never_connected(&err),
            })
        }
    }
}

/// The message's parts from the rendered body, each address checked.
fn parts(body: Option<&Value>) -> Result<Parts, String> {
    let body = body.and_then(Value::as_object).ok_or_else(|| {
        "the message has no body of `from`, `to`, `subject` and `body`".to_owned()
    })?;
    let text = |key: &str| -> Result<String, String> {
        match body.get(key) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
            None | Some(Value::Null) => {
                Err(format!("the message has no `{key}`; give it in `with:`"))
            }
            Some(Value::String(_)) => Err(format!("the message's `{key}` is empty")),
            Some(other) => Ok(other.to_string()),
        }
    };
    let mailbox = |key: &str, value: &str| -> Result<Mailbox, String> {
        value
            .trim()
            .parse::<Mailbox>()
            .map_err(|_| format!("`{key}`: `{value}` is not an email address"))
    };
    let list = |key: &str| -> Result<Vec<Mailbox>, String> {
        let values: Vec<String> = match body.get(key) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) if s.trim().is_empty() => Vec::new(),
            Some(Value::String(s)) => s.split(',').map(str::to_owned).collect(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect(),
            Some(other) => vec![other.to_string()],
        };
        values.iter().map(|v| mailbox(key, v)).collect()
    };
    let from = mailbox("from", &text("from")?)?;
    let to = list("to")?;
    if to.is_empty() {
        return Err("the message has no `to`; give at least one recipient".to_owned());
    }
    Ok(Parts {
        from,
        to,
        cc: list("cc")?,
        subject: text("subject")?,
        body: text("body")?,
    })
}

/// Whether `err` is a connection that was never made (refused, unreachable, no such host): the
/// message provably did not leave.
fn never_connected(err: &lettre::transport::smtp::Error) -> bool {
    use std::io::ErrorKind;
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::AddrNotAvailable
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
                    | ErrorKind::NotFound
            );
        }
        source = cause.source();
    }
    false
}

/// An error and its causes as one lowercase line.
fn message_of(err: &dyn std::error::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ").to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A subject rendered from a record cannot add a header: lettre encodes line breaks.
    #[test]
    fn a_line_break_in_the_subject_adds_no_header() {
        let message = Message::builder()
            .from("it@x.com".parse().unwrap())
            .to("a@x.com".parse().unwrap())
            .subject("hi\r\nBcc: evil@x.com")
            .header(ContentType::TEXT_PLAIN)
            .body("b".to_owned())
            .unwrap();
        let text = String::from_utf8(message.formatted()).unwrap();
        assert!(!text.contains("\r\nBcc:"), "{text}");
    }

    #[test]
    fn loopback_is_an_smtp_url_to_this_machine() {
        assert!(is_loopback_url("smtp://127.0.0.1:2525"));
        assert!(is_loopback_url("smtp://localhost"));
        assert!(is_loopback_url("smtp://[::1]:25"));
        assert!(!is_loopback_url("smtp://mail.example.com:25"));
        assert!(!is_loopback_url("smtp://10.0.0.1:25"));
        assert!(!is_loopback_url("http://127.0.0.1:25"));
    }

    #[test]
    fn a_message_needs_a_sender_a_recipient_and_valid_addresses() {
        let err = |body: Value| parts(Some(&body)).err().unwrap();
        assert_eq!(
            err(json!({"to": "a@x.com", "subject": "s", "body": "b"})),
            "the message has no `from`; give it in `with:`"
        );
        assert_eq!(
            err(json!({"from": "it@x.com", "to": "", "subject": "s", "body": "b"})),
            "the message has no `to`; give at least one recipient"
        );
        assert_eq!(
            err(
                json!({"from": "it@x.com", "to": ["a@x.com", "nobody"], "subject": "s", "body": "b"})
            ),
            "`to`: `nobody` is not an email address"
        );
        let ok = parts(Some(&json!({"from": "IT <it@x.com>", "to": "a@x.com, b@x.com", "subject": "s", "body": "b"}))).unwrap();
        assert_eq!(ok.to.len(), 2);
        assert_eq!(ok.from.email.to_string(), "it@x.com");
    }
}
