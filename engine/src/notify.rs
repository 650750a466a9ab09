//! Alerts without writing a block: a workflow's `notify:` (or, for a workflow without one, the
//! config's, [`crate::config::Config::notify`]) sends a message when one of its runs ends `failed`
//! or `needs_attention`, and can remind approvers of a run that has waited for approval too long.
//!
//! ```yaml
//! notify:
//!   credential: alerts          # a `webhook` credential (Slack, Teams), or an `email` one with `to:`
//!   on: [failed, needs_attention]   # the default: both; `[]` for reminders only
//!   text: "{{run.workflow}} run {{run.id}} ended {{run.status}}: {{run.error}}"
//!   # by email instead (the credential is then an `email` one, see `presets/email.yaml`):
//!   to: [it-oncall@example.com]
//!   from: blockyard@example.com
//!   subject: "blockyard: {{run.workflow}} {{run.status}}"
//!   # approval reminders:
//!   remind_approvers_after: 1d
//!   reminder_text: "run {{run.id}} has waited for approval of {{run.blocks}} since {{run.waiting_since}}"
//! ```
//!
//! This module owns the key (its spec, checked with the workflow: an unknown key or status, a
//! bad template or duration, `from`/`subject` without `to`, or `to` without `from` is a compile
//! error), its compiled templates (compiled once, with the workflow) and the sending. Without
//! `to`, the message is `{"text": TEXT}` posted through `webhook.post` with the credential's
//! secret URL (Slack and Microsoft Teams incoming webhooks both take it); with `to`, it is an
//! `email.send` message (`subject` and the text as its body) over the credential's SMTP server.
//! Templates see `run` (`id`, `workflow`, `status`, `error`; for a reminder also `blocks` and
//! `waiting_since`), `record` (the subject) and `vars`.
//!
//! Only live runs alert: a dry run or an offline replay sends nothing. The alert is sent once,
//! after the run's final record is written and flushed; a failed alert is logged (redacted) and
//! does not change the run's status. Reminders are scheduled in the store when a live run stops
//! to wait for approval ([`crate::store::reminders`]) and sent by `serve`'s reminder loop
//! ([`crate::exec::reminders`]).

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::config::CredentialName;
use crate::http::{CallOptions, Client};
use crate::preset::PresetId;
use crate::store::history::{RunRecord, RunStatus};
use crate::template::{Template, TemplateEngine, TemplateError};

/// The text sent when `notify:` gives none.
pub const DEFAULT_TEXT: &str =
    "blockyard: run {{run.id}} of `{{run.workflow}}` ended {{run.status}}: {{run.error}}";

/// The subject of an email alert when `notify:` gives none.
pub const DEFAULT_SUBJECT: &str = "blockyard: {{run.workflow}} run {{run.status}}";

/// The reminder's text when `notify:` gives none.
pub const DEFAULT_REMINDER: &str = "blockyard: run {{run.id}} of `{{run.workflow}}` has waited for approval of {{run.blocks}} since {{run.waiting_since}}; approve or reject it with `blockyard approve {{run.id}} BLOCK` or `blockyard reject {{run.id}} BLOCK`";

/// One address or a list of them, as written.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Recipients {
    One(String),
    Many(Vec<String>),
}

impl Recipients {
    fn list(&self) -> Vec<String> {
        match self {
            Recipients::One(one) => vec![one.clone()],
            Recipients::Many(many) => many.clone(),
        }
    }
}

/// `notify:`, as written.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifySpec {
    /// The `webhook` credential the message is posted to.
    pub credential: String,
    /// The run statuses that send it (`failed` and `needs_attention` when not given).
    #[serde(default = "NotifyOn::both")]
    pub on: Vec<NotifyOn>,
    /// The message: a template over `run`, `record` and `vars`.
    #[serde(default)]
    pub text: Option<String>,
    /// Send by email to these addresses (the credential is then an `email` one).
    #[serde(default)]
    pub to: Option<Recipients>,
    /// The email's sender (required with `to`).
    #[serde(default)]
    pub from: Option<String>,
    /// The email's subject: a template like `text`.
    #[serde(default)]
    pub subject: Option<String>,
    /// Remind approvers when a run has waited for approval this long (`1d`, `4h`).
    #[serde(default)]
    pub remind_approvers_after: Option<String>,
    /// The reminder: a template over `run` (with `blocks` and `waiting_since`), `record`, `vars`.
    #[serde(default)]
    pub reminder_text: Option<String>,
}

/// A `notify:` that cannot be used: the key under `notify` and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyError {
    /// The key under `notify` (`text`, `from`, `remind_approvers_after`...).
    pub key: &'static str,
    pub problem: NotifyProblem,
}

/// What is wrong with a `notify:` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyProblem {
    /// A template that does not compile (the message).
    Template(String),
    /// A duration that does not parse, or is zero (as written).
    Duration(String),
    /// Anything else, said in full.
    Invalid(String),
}

/// Where an alert goes.
#[derive(Debug)]
pub enum Channel {
    /// `webhook.post` with the credential's secret URL: `{"text": TEXT}`.
    Webhook,
    /// `email.send` with the credential's SMTP server.
    Email {
        to: Vec<String>,
        from: String,
        subject: Template,
    },
}

/// A run status that sends the alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotifyOn {
    Failed,
    NeedsAttention,
}

impl NotifyOn {
    fn both() -> Vec<NotifyOn> {
        vec![NotifyOn::Failed, NotifyOn::NeedsAttention]
    }

    fn matches(self, status: RunStatus) -> bool {
        matches!(
            (self, status),
            (NotifyOn::Failed, RunStatus::Failed)
                | (NotifyOn::NeedsAttention, RunStatus::NeedsAttention)
        )
    }
}

/// `notify:`, checked, its templates compiled.
#[derive(Debug)]
pub struct Notify {
    pub credential: CredentialName,
    pub on: Vec<NotifyOn>,
    pub text: Template,
    pub channel: Channel,
    /// Remind approvers after a run has waited for approval this long.
    pub remind_after: Option<std::time::Duration>,
    pub reminder_text: Template,
}

impl Notify {
    /// Checks `spec` and compiles its templates (or the defaults).
    pub fn compile(spec: &NotifySpec) -> Result<Arc<Notify>, NotifyError> {
        let template = |key: &'static str, text: Option<&str>, default: &str| {
            Template::compile(text.unwrap_or(default)).map_err(|err: TemplateError| NotifyError {
                key,
                problem: NotifyProblem::Template(err.to_string()),
            })
        };
        let invalid = |key: &'static str, message: &str| NotifyError {
            key,
            problem: NotifyProblem::Invalid(message.to_owned()),
        };
        let text = template("text", spec.text.as_deref(), DEFAULT_TEXT)?;
        let channel = match (&spec.to, &spec.from) {
            (None, Some(_)) => return Err(invalid("from", "`from` is the sender of an email alert; add `to:` with its recipients, or remove `from`")),
            (None, None) if spec.subject.is_some() => return Err(invalid("subject", "`subject` is for an email alert; add `to:` and `from:`, or remove `subject`")),
            (None, None) => Channel::Webhook,
            (Some(_), None) => return Err(invalid("to", "an email alert needs a sender: add `from:` (such as `blockyard@example.com`)")),
            (Some(to), Some(from)) => {
                let to = to.list();
                if to.is_empty() || to.iter().any(|t| !t.contains('@')) {
                    return Err(invalid("to", "`to` takes email addresses, such as `it-oncall@example.com` or a list of them"));
                }
                if !from.contains('@') {
                    return Err(invalid("from", "`from` takes an email address, such as `blockyard@example.com`"));
                }
                Channel::Email {
                    to,
                    from: from.clone(),
                    subject: template("subject", spec.subject.as_deref(), DEFAULT_SUBJECT)?,
                }
            }
        };
        let remind_after = match &spec.remind_approvers_after {
            None => None,
            Some(text) => match crate::compile::parse_duration(text) {
                Some(after) if !after.is_zero() => Some(after),
                _ => {
                    return Err(NotifyError {
                        key: "remind_approvers_after",
                        problem: NotifyProblem::Duration(text.clone()),
                    })
                }
            },
        };
        if spec.on.is_empty() {
            if spec.text.is_some() {
                return Err(invalid("text", "`text` is the alert's, and `on: []` sends no alert; list the statuses to alert on in `on:`, or remove `text`"));
            }
            if remind_after.is_none() {
                return Err(invalid("on", "`on: []` sends no alert, and without `remind_approvers_after` this `notify:` sends nothing; list statuses (`failed`, `needs_attention`) or add `remind_approvers_after`"));
            }
        }
        if spec.reminder_text.is_some() && remind_after.is_none() {
            return Err(invalid("reminder_text", "`reminder_text` is sent only with `remind_approvers_after`; add it (such as `1d`) or remove `reminder_text`"));
        }
        let reminder_text = template(
            "reminder_text",
            spec.reminder_text.as_deref(),
            DEFAULT_REMINDER,
        )?;
        Ok(Arc::new(Notify {
            credential: CredentialName::new(spec.credential.clone()),
            on: spec.on.clone(),
            text,
            channel,
            remind_after,
            reminder_text,
        }))
    }

    /// Whether a run that ended with `status` sends the alert.
    pub fn wants(&self, status: RunStatus) -> bool {
        self.on.iter().any(|on| on.matches(status))
    }

    /// Sends the alert for `run` (which ended with a status [`Notify::wants`]); a failure is
    /// logged, redacted, and otherwise ignored: the run's outcome stands as recorded.
    pub async fn send(
        &self,
        client: &Client,
        templates: &TemplateEngine,
        run: &RunRecord,
        subject: &Value,
        vars: &Map<String, Value>,
    ) {
        let context = json!({
            "run": {
                "id": run.id.to_string(),
                "workflow": run.workflow,
                "status": run.status.to_string(),
                "error": run.error.as_deref().unwrap_or(""),
            },
            "record": subject,
            "vars": vars,
        });
        Box::pin(self.deliver(client, templates, &self.text, context, run, "alert")).await;
    }

    /// Sends `reminder`, of `run` waiting for approval. Returns whether it was sent (a failure
    /// is logged, redacted).
    pub async fn remind(
        &self,
        client: &Client,
        templates: &TemplateEngine,
        run: &RunRecord,
        reminder: &crate::store::reminders::Reminder,
        subject: &Value,
        vars: &Map<String, Value>,
    ) -> bool {
        let context = json!({
            "run": {
                "id": run.id.to_string(),
                "workflow": run.workflow,
                "status": run.status.to_string(),
                "error": run.error.as_deref().unwrap_or(""),
                "blocks": reminder.blocks.iter().map(|b| format!("`{b}`")).collect::<Vec<_>>().join(", "),
                "waiting_since": reminder.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            },
            "record": subject,
            "vars": vars,
        });
        Box::pin(self.deliver(
            client,
            templates,
            &self.reminder_text,
            context,
            run,
            "reminder",
        ))
        .await
    }

    /// Renders `text` (and an email's subject) over `context` and sends it on the channel.
    async fn deliver(
        &self,
        client: &Client,
        templates: &TemplateEngine,
        text: &Template,
        context: Value,
        run: &RunRecord,
        what: &'static str,
    ) -> bool {
        let context = handlebars::Context::from(context);
        let rendered = templates.render(text, &context).and_then(|text| match &self.channel {
            Channel::Webhook => Ok((PresetId::parse("webhook.post"), json!({ "payload": { "text": text } }))),
            Channel::Email { to, from, subject } => {
                let subject = templates.render(subject, &context)?;
                Ok((
                    PresetId::parse("email.send"),
                    json!({ "from": from, "to": to, "cc": null, "subject": subject, "body": text }),
                ))
            }
        });
        let (id, inputs) = match rendered {
            Ok((id, Value::Object(inputs))) => (id.expect("a valid preset id"), inputs),
            Ok(_) => unreachable!("the inputs are an object"),
            Err(err) => {
                tracing::warn!(run_id = %run.id, error = %client.redactor().text(&err.to_string()), "notify: the {what} did not render; nothing sent");
                return false;
            }
        };
        match Box::pin(client.call(&id, &self.credential, &inputs, &CallOptions::default())).await {
            Ok(_) => {
                tracing::info!(run_id = %run.id, credential = %self.credential, "notify: {what} sent");
                true
            }
            Err(err) => {
                tracing::warn!(run_id = %run.id, credential = %self.credential, error = %client.redactor().text(&err.to_string()), "notify: the {what} was not sent");
                false
            }
        }
    }
}
