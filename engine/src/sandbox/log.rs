//! The request log: every vendor request with its status, in a bounded ring so that a long
//! benchmark cannot exhaust memory. Tests read it to prove a write was sent exactly once.
//!
//! Recording stores the raw body (`Bytes`, a reference count, no copy); turning bodies into JSON
//! happens only when the log is read.

use std::collections::VecDeque;
use std::sync::Mutex;

use axum::body::Bytes;
use axum::http::Method;
use serde::{Deserialize, Serialize};

use super::lock;

/// One vendor request as the sandbox saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The full path, vendor prefix included (`/webex/v1/people`).
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// The body as JSON when it parses, as a string otherwise, `null` when empty.
    pub body: serde_json::Value,
    /// The status the sandbox answered.
    pub status: u16,
}

struct Entry {
    method: Method,
    path: String,
    query: Option<String>,
    body: Bytes,
    status: u16,
}

/// A bounded ring of requests (the oldest are dropped first).
pub(crate) struct RequestLog {
    capacity: usize,
    entries: Mutex<VecDeque<Entry>>,
}

impl RequestLog {
    pub(crate) fn new(capacity: usize) -> RequestLog {
        RequestLog {
            capacity,
            entries: Mutex::new(VecDeque::new()),
        }
    }

    pub(crate) fn record(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        body: Bytes,
        status: u16,
    ) {
        if self.capacity == 0 {
            return;
        }
        let entry = Entry {
            method: method.clone(),
            path: path.to_owned(),
            query: query.map(str::to_owned),
            body,
            status,
        };
        let mut entries = lock(&self.entries);
        if entries.len() >= self.capacity {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    pub(crate) fn snapshot(&self) -> Vec<RecordedRequest> {
        let entries = lock(&self.entries);
        entries
            .iter()
            .map(|e| RecordedRequest {
                method: e.method.to_string(),
                path: e.path.clone(),
                query: e.query.clone(),
                body: body_value(&e.body),
                status: e.status,
            })
            .collect()
    }

    pub(crate) fn clear(&self) {
        lock(&self.entries).clear();
    }
}

fn body_value(body: &[u8]) -> serde_json::Value {
    if body.is_empty() {
        return serde_json::Value::Null;
    }
    serde_json::from_slice(body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(body).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_and_renders_bodies() {
        let log = RequestLog::new(2);
        log.record(&Method::GET, "/a", None, Bytes::new(), 200);
        log.record(
            &Method::POST,
            "/b",
            Some("x=1"),
            Bytes::from_static(b"{\"k\":1}"),
            201,
        );
        log.record(
            &Method::PUT,
            "/c",
            None,
            Bytes::from_static(b"not json"),
            400,
        );
        let got = log.snapshot();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].path, "/b");
        assert_eq!(got[0].query.as_deref(), Some("x=1"));
        assert_eq!(got[0].body, serde_json::json!({"k": 1}));
        assert_eq!(got[1].body, serde_json::json!("not json"));
        assert_eq!((got[1].method.as_str(), got[1].status), ("PUT", 400));
    }
}
