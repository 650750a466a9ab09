//! Alerts without writing a block: a workflow's `notify:` (or, for a workflow without one, the
//! config's, [`crate::config::Config::notify`]) sends a message when one of its runs ends `failed`
//! or `needs_attention`.
//!
//! ```yaml
//! notify:
//!   credential: alerts          # a `webhook` credential (Slack, Teams): the message goes there
//!   on: [failed, needs_attention]   # the default: both
//!   text: "{{run.workflow}} run {{run.id}} ended {{run.status}}: {{run.error}}"
//! ```
//!
//! This module owns the key (its spec, checked with the workflow: an unknown key or status is a
//! compile error), its compiled text template (compiled once, with the workflow) and the sending,
//! through the `webhook.post` preset with the credential's secret URL. The message is
//! `{"text": TEXT}`, which Slack and Microsoft Teams incoming webhooks both take; `text` is a
//! template over `run` (`id`, `workflow`, `status`, `error`), `record` (the subject) and `vars`.
//!
//! Only live runs alert: a dry run or an offline replay sends nothing. The alert is sent once,
//! after the run's final record is written and flushed; a failed alert is logged (redacted) and
//! does not change the run's status. Not yet here (see the report of issue #19): reminders to
//! approvers, email.

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

/// `notify:`, checked, its text compiled.
#[derive(Debug)]
pub struct Notify {
    pub credential: CredentialName,
    pub on: Vec<NotifyOn>,
    pub text: Template,
}

impl Notify {
    /// Compiles `spec`'s text (or [`DEFAULT_TEXT`]).
    pub fn compile(spec: &NotifySpec) -> Result<Arc<Notify>, TemplateError> {
        let text = Template::compile(spec.text.as_deref().unwrap_or(DEFAULT_TEXT))?;
        Ok(Arc::new(Notify {
            credential: CredentialName::new(spec.credential.clone()),
            on: spec.on.clone(),
            text,
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
        let context = handlebars::Context::from(context);
        let text = match templates.render(&self.text, &context) {
            Ok(text) => text,
            Err(err) => {
                tracing::warn!(run_id = %run.id, error = %client.redactor().text(&err.to_string()), "notify: the text did not render; no alert sent");
                return;
            }
        };
        let id = PresetId::parse("webhook.post").expect("a valid preset id");
        let mut inputs = Map::new();
        inputs.insert("payload".to_owned(), json!({ "text": text }));
        match Box::pin(client.call(&id, &self.credential, &inputs, &CallOptions::default())).await {
            Ok(_) => {
                tracing::info!(run_id = %run.id, credential = %self.credential, "notify: alert sent")
            }
            Err(err) => {
                tracing::warn!(run_id = %run.id, credential = %self.credential, error = %client.redactor().text(&err.to_string()), "notify: the alert was not sent")
            }
        }
    }
}
