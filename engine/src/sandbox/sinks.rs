//! The notification sinks: where the sandbox receives what notification presets send, so tests
//! and the demo see exactly what left. `POST /hooks/<anything>` is an incoming-webhook endpoint
//! (it answers `ok` like Slack's); each request is kept with its path and JSON body and listed by
//! `GET /_sandbox/webhooks` (oldest first); the SMTP sink ([`super::smtp`]) keeps mail here too,
//! listed by `GET /_sandbox/mail`. The sink skips the vendor gate (no token, rate limit,
//! latency or failures) and is cleared by a reset or reseed.

use std::sync::Mutex;

use serde::Serialize;
use serde_json::Value;

use super::lock;

/// The path prefix webhook URLs are served under.
pub(crate) const HOOKS: &str = "/hooks";

/// The most messages a sink keeps (the oldest are dropped first).
pub(crate) const CAPACITY: usize = 10_000;

/// One webhook request the sink received.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReceivedWebhook {
    /// The path it was posted to, such as `/hooks/T000/B000/XXXX`.
    pub path: String,
    /// The body, as JSON (a body that is not JSON is kept as a string).
    pub body: Value,
}

#[derive(Debug, Default)]
pub(crate) struct Sinks {
    webhooks: Mutex<Vec<ReceivedWebhook>>,
    /// What the SMTP sink received (see [`super::smtp`]).
    pub(crate) mails: Mutex<Vec<super::smtp::ReceivedMail>>,
}

impl Sinks {
    pub(crate) fn webhook(&self, path: &str, body: &[u8]) {
        let body = serde_json::from_slice(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
        let mut webhooks = lock(&self.webhooks);
        if webhooks.len() == CAPACITY {
            webhooks.remove(0);
        }
        webhooks.push(ReceivedWebhook {
            path: path.to_owned(),
            body,
        });
    }

    pub(crate) fn webhooks(&self) -> Vec<ReceivedWebhook> {
        lock(&self.webhooks).clone()
    }

    pub(crate) fn clear(&self) {
        lock(&self.webhooks).clear();
        lock(&self.mails).clear();
    }
}
