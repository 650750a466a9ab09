//! The sandbox's plain-SMTP sink: a small SMTP server on loopback (its own port, beside the HTTP
//! one) that receives what `email.send` sends, so tests and the demo see exactly what left. Each
//! message is kept (from, to, subject, body) and listed by `GET /_sandbox/mail`, oldest first;
//! a reset or reseed clears them.
//!
//! It speaks the part of RFC 5321 a client needs: EHLO/HELO, AUTH PLAIN and LOGIN (advertised
//! and required only when the sandbox has an SMTP login, [`super::SandboxConfig::smtp_login`],
//! and checked against it), MAIL FROM, RCPT TO, DATA (ended by a lone `.`, dot-unstuffed), RSET,
//! NOOP, QUIT. No STARTTLS: a credential reaches it with `tls: none`, which the config allows
//! only for loopback. Bounded like the HTTP side: a line longer than [`MAX_LINE`] is refused, a
//! message larger than [`MAX_MESSAGE`] is refused (552) after reading to its end, at most
//! [`MAX_RECIPIENTS`] recipients, and a client silent for [`READ_TIMEOUT`] is dropped (421).
//!
//! The kept body is the message's text after its headers, with a `quoted-printable` or `base64`
//! transfer encoding undone (lettre picks one for non-ASCII or long lines).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::{lock, Shared};

/// The longest command or text line read, CRLF included (RFC 5321 §4.5.3.1.6: 1000).
pub(crate) const MAX_LINE: usize = 1000;
/// The largest message kept (advertised as `SIZE`).
pub(crate) const MAX_MESSAGE: usize = 1024 * 1024;
/// The most recipients of one message.
pub(crate) const MAX_RECIPIENTS: usize = 100;
/// How long the sink waits for the client's next line.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// One message the sink received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReceivedMail {
    /// The envelope sender (`MAIL FROM`).
    pub from: String,
    /// The envelope recipients (`RCPT TO`), in order.
    pub to: Vec<String>,
    /// The `Subject:` header.
    pub subject: String,
    /// The text after the headers, its transfer encoding undone.
    pub body: String,
    /// The user name it logged in with, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
}

/// Accepts connections until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            if let Err(err) = session(stream, &shared).await {
                tracing::debug!(error = %err, "sandbox smtp session ended");
            }
        });
    }
}

/// What reading a line gave.
enum Line {
    Text(String),
    TooLong,
    Closed,
    TimedOut,
}

async fn read_line(reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> Line {
    let mut buf = Vec::new();
    loop {
        let chunk = match tokio::time::timeout(READ_TIMEOUT, reader.fill_buf()).await {
            Err(_) => return Line::TimedOut,
            Ok(Err(_)) => return Line::Closed,
            Ok(Ok(chunk)) => chunk,
        };
        if chunk.is_empty() {
            return Line::Closed;
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (chunk.len(), false),
        };
        let over = buf.len() + take > MAX_LINE;
        if !over {
            buf.extend_from_slice(&chunk[..take]);
        }
        reader.consume(take);
        if over {
            // Read the rest of the line so the next command starts clean.
            if !done {
                loop {
                    let chunk = match tokio::time::timeout(READ_TIMEOUT, reader.fill_buf()).await {
                        Ok(Ok(chunk)) if !chunk.is_empty() => chunk,
                        _ => return Line::Closed,
                    };
                    match chunk.iter().position(|&b| b == b'\n') {
                        Some(at) => {
                            reader.consume(at + 1);
                            break;
                        }
                        None => {
                            let n = chunk.len();
                            reader.consume(n);
                        }
                    }
                }
            }
            return Line::TooLong;
        }
        if done {
            let text = String::from_utf8_lossy(&buf);
            return Line::Text(text.trim_end_matches(['\r', '\n']).to_owned());
        }
    }
}

/// The envelope of the message being received.
#[derive(Default)]
struct Envelope {
    from: Option<String>,
    to: Vec<String>,
}

async fn session(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let login = shared.smtp_login.as_ref();
    write
        .write_all(b"220 blockyard-sandbox ESMTP ready\r\n")
        .await?;
    let mut greeted = false;
    let mut logged_in: Option<String> = None;
    let mut envelope = Envelope::default();
    loop {
        let line = match read_line(&mut reader).await {
            Line::Text(line) => line,
            Line::TooLong => {
                write.write_all(b"500 5.5.6 line too long\r\n").await?;
                continue;
            }
            Line::Closed => return Ok(()),
            Line::TimedOut => {
                write
                    .write_all(b"421 4.4.2 idle too long, closing\r\n")
                    .await?;
                return Ok(());
            }
        };
        let (verb, arg) = match line.split_once(' ') {
            Some((verb, arg)) => (verb.to_ascii_uppercase(), arg.trim().to_owned()),
            None => (line.to_ascii_uppercase(), String::new()),
        };
        let reply: String = match verb.as_str() {
            "EHLO" => {
                greeted = true;
                envelope = Envelope::default();
                let mut reply = format!(
                    "250-blockyard-sandbox greets {arg}\r\n250-SIZE {MAX_MESSAGE}\r\n250-8BITMIME\r\n"
                );
                if login.is_some() {
                    reply.push_str("250-AUTH PLAIN LOGIN\r\n");
                }
                reply.push_str("250 HELP\r\n");
                reply
            }
            "HELO" => {
                greeted = true;
                envelope = Envelope::default();
                "250 blockyard-sandbox\r\n".to_owned()
            }
            "AUTH" => match login {
                None => "503 5.5.1 this sandbox takes no login (start it with an SMTP login to test one)\r\n".to_owned(),
                Some(_) if !greeted => "503 5.5.1 send EHLO first\r\n".to_owned(),
                Some(_) if logged_in.is_some() => "503 5.5.1 already logged in\r\n".to_owned(),
                Some((user, password)) => {
                    let given = auth(&arg, &mut reader, &mut write).await?;
                    match given {
                        Some((u, p)) if &u == user && &p == password => {
                            logged_in = Some(u);
                            "235 2.7.0 authentication succeeded\r\n".to_owned()
                        }
                        Some(_) => "535 5.7.8 authentication credentials invalid\r\n".to_owned(),
                        None => "501 5.5.2 cannot read the AUTH response (AUTH PLAIN or LOGIN, base64)\r\n".to_owned(),
                    }
                }
            },
            "MAIL" => {
                if !greeted {
                    "503 5.5.1 send EHLO first\r\n".to_owned()
                } else if login.is_some() && logged_in.is_none() {
                    "530 5.7.0 authentication required\r\n".to_owned()
                } else if envelope.from.is_some() {
                    "503 5.5.1 nested MAIL command\r\n".to_owned()
                } else {
                    match path(&arg, "FROM:") {
                        Some(from) => {
                            envelope.from = Some(from);
                            "250 2.1.0 sender ok\r\n".to_owned()
                        }
                        None => "501 5.5.4 write MAIL FROM:<address>\r\n".to_owned(),
                    }
                }
            }
            "RCPT" => {
                if envelope.from.is_none() {
                    "503 5.5.1 send MAIL first\r\n".to_owned()
                } else if envelope.to.len() >= MAX_RECIPIENTS {
                    "452 4.5.3 too many recipients\r\n".to_owned()
                } else {
                    match path(&arg, "TO:") {
                        Some(to) if !to.is_empty() => {
                            envelope.to.push(to);
                            "250 2.1.5 recipient ok\r\n".to_owned()
                        }
                        _ => "501 5.5.4 write RCPT TO:<address>\r\n".to_owned(),
                    }
                }
            }
            "DATA" => {
                if envelope.to.is_empty() {
                    "503 5.5.1 send RCPT first\r\n".to_owned()
                } else {
                    write
                        .write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                        .await?;
                    match data(&mut reader).await {
                        Data::Closed => return Ok(()),
                        Data::TooLarge => {
                            envelope = Envelope::default();
                            format!("552 5.3.4 message larger than {MAX_MESSAGE} bytes\r\n")
                        }
                        Data::Message(text) => {
                            let envelope = std::mem::take(&mut envelope);
                            let (subject, body) = split_message(&text);
                            shared.sinks.mail(ReceivedMail {
                                from: envelope.from.unwrap_or_default(),
                                to: envelope.to,
                                subject,
                                body,
                                login: logged_in.clone(),
                            });
                            "250 2.0.0 ok: queued\r\n".to_owned()
                        }
                    }
                }
            }
            "RSET" => {
                envelope = Envelope::default();
                "250 2.0.0 ok\r\n".to_owned()
            }
            "NOOP" => "250 2.0.0 ok\r\n".to_owned(),
            "QUIT" => {
                write.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            }
            "STARTTLS" => "502 5.5.1 the sandbox's sink is plain text (`tls: none`)\r\n".to_owned(),
            _ => "500 5.5.2 unknown command\r\n".to_owned(),
        };
        write.write_all(reply.as_bytes()).await?;
    }
}

/// The address in `FROM:<a@b>` / `TO:<a@b>` (parameters after it ignored).
fn path(arg: &str, prefix: &str) -> Option<String> {
    let rest = arg.get(..prefix.len())?;
    if !rest.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = arg[prefix.len()..].trim_start();
    let inner = rest.strip_prefix('<')?;
    let end = inner.find('>')?;
    Some(inner[..end].to_owned())
}

/// Reads an AUTH exchange: `(user, password)`, or `None` when it cannot be read.
async fn auth(
    arg: &str,
    reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    write: &mut tokio::net::tcp::OwnedWriteHalf,
) -> std::io::Result<Option<(String, String)>> {
    let (mechanism, initial) = match arg.split_once(' ') {
        Some((m, i)) => (m.to_ascii_uppercase(), Some(i.trim().to_owned())),
        None => (arg.to_ascii_uppercase(), None),
    };
    let decode = |text: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    match mechanism.as_str() {
        "PLAIN" => {
            let response = match initial {
                Some(initial) => Some(initial),
                None => prompt(reader, write, b"334 \r\n").await?,
            };
            let Some(decoded) = response.as_deref().and_then(decode) else {
                return Ok(None);
            };
            let mut parts = decoded.split('\0');
            let (_authzid, user, password) = (parts.next(), parts.next(), parts.next());
            Ok(user
                .zip(password)
                .map(|(u, p)| (u.to_owned(), p.to_owned())))
        }
        "LOGIN" => {
            let user = match initial {
                Some(initial) => Some(initial),
                // "Username:" and "Password:", in base64.
                None => prompt(reader, write, b"334 VXNlcm5hbWU6\r\n").await?,
            };
            let Some(user) = user.as_deref().and_then(decode) else {
                return Ok(None);
            };
            let password = prompt(reader, write, b"334 UGFzc3dvcmQ6\r\n").await?;
            Ok(password.as_deref().and_then(decode).map(|p| (user, p)))
        }
        _ => Ok(None),
    }
}

/// Sends a `334` challenge and reads the answer line.
async fn prompt(
    reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    write: &mut tokio::net::tcp::OwnedWriteHalf,
    challenge: &[u8],
) -> std::io::Result<Option<String>> {
    write.write_all(challenge).await?;
    Ok(match read_line(reader).await {
        Line::Text(line) => Some(line),
        _ => None,
    })
}

enum Data {
    Message(String),
    TooLarge,
    Closed,
}

/// The message text up to the lone `.`, dot-unstuffed, lines joined with `\n`.
async fn data(reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> Data {
    let mut text = String::new();
    let mut too_large = false;
    loop {
        let line = match read_line(reader).await {
            Line::Text(line) => line,
            Line::TooLong => {
                too_large = true;
                continue;
            }
            Line::Closed | Line::TimedOut => return Data::Closed,
        };
        if line == "." {
            return if too_large {
                Data::TooLarge
            } else {
                Data::Message(text)
            };
        }
        let line = line.strip_prefix('.').unwrap_or(&line);
        if text.len() + line.len() + 1 > MAX_MESSAGE {
            too_large = true;
        }
        if !too_large {
            text.push_str(line);
            text.push('\n');
        }
    }
}

/// The `Subject:` and the decoded body of a message's text.
fn split_message(text: &str) -> (String, String) {
    let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
    // Unfold continuation lines.
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push_str(line);
                continue;
            }
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let subject = header("subject").unwrap_or("").to_owned();
    let encoding = header("content-transfer-encoding")
        .unwrap_or("7bit")
        .to_ascii_lowercase();
    let body = body.strip_suffix('\n').unwrap_or(body);
    let body = match encoding.as_str() {
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(body.split_whitespace().collect::<String>())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|_| body.to_owned()),
        "quoted-printable" => {
            let decoded = quoted_printable::decode(
                body.replace('\n', "\r\n"),
                quoted_printable::ParseMode::Robust,
            );
            decoded
                .map(|b| String::from_utf8_lossy(&b).replace("\r\n", "\n"))
                .unwrap_or_else(|_| body.to_owned())
        }
        _ => body.to_owned(),
    };
    (subject, body)
}

impl super::sinks::Sinks {
    pub(crate) fn mail(&self, mail: ReceivedMail) {
        let mut mails = lock(&self.mails);
        if mails.len() == super::sinks::CAPACITY {
            mails.remove(0);
        }
        mails.push(mail);
    }

    pub(crate) fn mails(&self) -> Vec<ReceivedMail> {
        lock(&self.mails).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_messages_are_read_as_sent() {
        assert_eq!(
            path("FROM:<a@x.com> SIZE=10", "FROM:"),
            Some("a@x.com".into())
        );
        assert_eq!(path("to: <b@x.com>", "TO:"), Some("b@x.com".into()));
        assert_eq!(path("FROM:a@x.com", "FROM:"), None);
        let (subject, body) = split_message(
            "From: a@x.com\nSubject: Hello\n there\nContent-Transfer-Encoding: quoted-printable\n\nH=C3=A9llo=\n world\n",
        );
        assert_eq!(subject, "Hello there");
        assert_eq!(body, "Héllo world");
        let (_, body) =
            split_message("Subject: s\nContent-Transfer-Encoding: base64\n\nSMOpbGxv\n");
        assert_eq!(body, "Héllo");
    }
}
