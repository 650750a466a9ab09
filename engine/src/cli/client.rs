//! Where a state command's data lives: the data dir itself ([`Local`]), or a running `blockyard
//! serve` that holds it ([`Remote`], over its HTTP API). Each command is written once, over
//! [`Backend`]; only what differs between the two paths is here.
//!
//! The service is used when it is named (`--server URL`, else `BLOCKYARD_SERVER`, else the config's
//! `server:` unless `--data-dir` is given) or when the data dir holds the `serve.json` of a live
//! `serve` ([`blockyard::service::endpoint`]); otherwise the data dir is opened. The token is
//! `BLOCKYARD_TOKEN`, else the config's `token` (as `serve` finds it). Every error on the service path says so ("via the service at URL"), and one
//! that cannot reach it says what to do. Through the service, a `--config` or `--presets` other
//! than the service's is an error (the service's apply, not the command's).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _};
use blockyard::config::Config;
use blockyard::exec::{Engine, EngineOptions};
use blockyard::http::{Client, Credentials};
use blockyard::records::{Collection, Fields, RecordStore, Subject};
use blockyard::service::endpoint::Endpoint;
use blockyard::store::history::{History, RunId, RunRecord, StepRecord};
use blockyard::store::queue::{Queue, QueueId};
use blockyard::store::Store;
use serde_json::{json, Value};

use super::run::CommonArgs;

/// A run and its steps.
pub type RunSteps = (RunRecord, Vec<StepRecord>);

/// A run request a write queued, as the CLI lists it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct QueuedRequest {
    pub id: String,
    pub workflow: String,
    pub subject: Option<String>,
    pub cause: String,
}

/// The data dir, opened by this process.
pub struct Local {
    pub store: Store,
    pub config: Option<Config>,
    pub common: CommonArgs,
}

impl Local {
    pub fn history(&self) -> anyhow::Result<History> {
        Ok(History::open(&self.store)?)
    }

    pub fn records(&self) -> anyhow::Result<RecordStore> {
        Ok(RecordStore::open(&self.store)?)
    }

    /// An engine over the data dir, with the config's credentials and vars.
    pub fn engine(&self) -> anyhow::Result<Engine> {
        if let Some(config) = &self.config {
            super::auth::warn_about_token_store(config);
        }
        let credentials = self
            .config
            .as_ref()
            .map(Credentials::persistent)
            .unwrap_or_default();
        let client = Client::new(Arc::new(self.common.presets.load()?), credentials)?;
        let vars = self
            .config
            .as_ref()
            .map(|c| c.vars.clone().into_iter().collect())
            .unwrap_or_default();
        Ok(Engine::new(
            &self.store,
            client,
            vars,
            EngineOptions {
                notify: self.config.as_ref().and_then(|c| c.notify.clone()),
                guard: self.config.as_ref().and_then(|c| c.guard),
                match_warning: self
                    .config
                    .as_ref()
                    .map_or(blockyard::plan::DEFAULT_MATCH_WARNING, |c| c.match_warning),
                ..EngineOptions::default()
            },
        )?)
    }

    /// The run requests `ids`, as they wait in the queue.
    pub fn queued(&self, ids: &[QueueId]) -> anyhow::Result<Vec<QueuedRequest>> {
        let queue = Queue::open(&self.store)?;
        let mut out = Vec::new();
        for id in ids {
            if let Some(entry) = queue.get(*id)? {
                out.push(QueuedRequest {
                    id: id.to_string(),
                    workflow: entry.request.workflow.to_string(),
                    subject: entry.request.subject.as_ref().map(ToString::to_string),
                    cause: entry.request.trigger.to_string(),
                });
            }
        }
        Ok(out)
    }

    pub fn flush(&self) -> anyhow::Result<()> {
        super::run::runtime()?.block_on(self.store.flush())?;
        Ok(())
    }
}

/// A running `blockyard serve`, over its API.
pub struct Remote {
    /// `http://127.0.0.1:8080`.
    pub url: String,
    token: Option<String>,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
    /// `GET /api/service`.
    pub about: Value,
}

/// An API answer that is not a success: its status and message.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub message: String,
}

impl Remote {
    fn connect(url: &str, common: &CommonArgs, config: Option<&Config>) -> anyhow::Result<Remote> {
        let url = url.trim_end_matches('/').to_owned();
        // As `serve` finds its token: `BLOCKYARD_TOKEN`, else the config's `token`.
        let token = match std::env::var("BLOCKYARD_TOKEN") {
            Ok(token) if !token.is_empty() => Some(token),
            _ => match config.and_then(|c| c.token.as_ref()) {
                Some(secret) => Some(secret.resolve()?),
                None => None,
            },
        };
        let http = reqwest::Client::builder()
            .build()
            .context("cannot set up the HTTP client")?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let mut remote = Remote {
            url,
            token,
            http,
            rt,
            about: Value::Null,
        };
        remote.about = remote.get("/service")?;
        remote.check_setup(common, config)?;
        Ok(remote)
    }

    /// "via the service at URL", for errors.
    pub fn via(&self) -> String {
        format!("via the service at {}", self.url)
    }

    /// A `--config` or `--presets` other than the service's is an error: the service's apply.
    fn check_setup(&self, common: &CommonArgs, config: Option<&Config>) -> anyhow::Result<()> {
        let same = |given: &Path, theirs: &Value| {
            theirs
                .as_str()
                .is_some_and(|t| canonical(Path::new(t)) == canonical(given))
        };
        if let (Some(file), Some(config)) = (common.config_file(), config) {
            if !same(&config.file, &self.about["config"]) {
                bail!(
                    "`--config {}` is not the config the service at {} runs with ({}); drop `--config` (the service's config applies), or stop the service to use this one on the data dir",
                    file.display(),
                    self.url,
                    describe(&self.about["config"], "none")
                );
            }
        }
        if let Some(dir) = common.presets.dir() {
            if !same(dir, &self.about["presets"]) {
                bail!(
                    "`--presets {}` is not the presets directory the service at {} runs with ({}); drop `--presets` (the service's presets apply), or stop the service to use these on the data dir",
                    dir.display(),
                    self.url,
                    describe(&self.about["presets"], "the shipped presets only")
                );
            }
        }
        Ok(())
    }

    fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Result<Value, Refused>> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        self.rt.block_on(async {
            let response = request.send().await.map_err(|err| {
                anyhow!(
                    "cannot reach the service at {} ({}); check that `blockyard serve` runs there, or stop naming it (`--server`, `BLOCKYARD_SERVER`, the config's `server:`; a `serve.json` it left in the data dir after a crash can be removed)",
                    self.url,
                    reqwest_reason(&err)
                )
            })?;
            let status = response.status().as_u16();
            let body: Value = response.json().await.map_err(|err| {
                anyhow!(
                    "the service at {} answered {status} with a body that is not JSON ({}); is it a `blockyard serve`?",
                    self.url,
                    reqwest_reason(&err)
                )
            })?;
            if (200..300).contains(&status) {
                return Ok(Ok(body));
            }
            let message = body["error"]["message"]
                .as_str()
                .unwrap_or("no message")
                .to_owned();
            Ok(Err(Refused { status, message }))
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api{path}", self.url)
    }

    /// `GET /api{path}`, a refusal as an error.
    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.answer(self.http.get(self.url(path)))
    }

    /// `GET /api{path}`, a refusal as a value.
    pub fn try_get(&self, path: &str) -> anyhow::Result<Result<Value, Refused>> {
        self.send(self.http.get(self.url(path)))
    }

    pub fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.answer(self.http.post(self.url(path)).json(&body))
    }

    /// `POST /api{path}` with a JSON body already serialized.
    pub fn post_raw(&self, path: &str, body: Vec<u8>) -> anyhow::Result<Value> {
        self.answer(
            self.http
                .post(self.url(path))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body),
        )
    }

    pub fn try_post(&self, path: &str, body: Value) -> anyhow::Result<Result<Value, Refused>> {
        self.send(self.http.post(self.url(path)).json(&body))
    }

    pub fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.answer(self.http.delete(self.url(path)))
    }

    fn answer(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        self.send(request)?.map_err(|refused| self.refused(refused))
    }

    /// A refusal as the error the user sees.
    pub fn refused(&self, refused: Refused) -> anyhow::Error {
        match refused.status {
            401 => anyhow!(
                "{} refused the request: {}; set `BLOCKYARD_TOKEN` to the service's token",
                self.via(),
                refused.message
            ),
            _ => anyhow!("{}: {}", self.via(), refused.message),
        }
    }

    /// A run and its steps; `None` when there is no such run.
    pub fn run(&self, id: RunId) -> anyhow::Result<Option<RunSteps>> {
        match self.try_get(&format!("/runs/{id}"))? {
            Ok(value) => Ok(Some(run_steps(value)?)),
            Err(refused) if refused.status == 404 => Ok(None),
            Err(refused) => Err(self.refused(refused)),
        }
    }

    /// "no run `ID` in the data dir of the service at URL; …": a run the service does not have.
    pub fn no_run(&self, id: RunId) -> anyhow::Error {
        anyhow!(
            "no run `{id}` in the data dir of the service at {}; `blockyard history list` shows the runs",
            self.url
        )
    }

    /// A `--workflows DIR` other than the directory the service serves is an error.
    pub fn check_workflows(&self, dir: Option<&Path>) -> anyhow::Result<()> {
        let Some(dir) = dir else {
            return Ok(());
        };
        let theirs = self.about["workflows_dir"].as_str().unwrap_or_default();
        if canonical(dir) != canonical(Path::new(theirs)) {
            bail!(
                "`--workflows {}` is not the directory the service at {} serves (`{theirs}`); drop `--workflows` (the service's workflows apply)",
                dir.display(),
                self.url
            );
        }
        Ok(())
    }

    /// The workflow the service has loaded under the name of `file`, with the same content;
    /// its name, else an error.
    pub fn loaded_workflow(&self, file: &Path) -> anyhow::Result<String> {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read `{}`", file.display()))?;
        let name = serde_yaml::from_str::<serde_yaml::Value>(&text)
            .ok()
            .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(str::to_owned))
            .ok_or_else(|| {
                anyhow!(
                    "`{}` has no `name:`; `blockyard validate {}` says what is wrong",
                    file.display(),
                    file.display()
                )
            })?;
        let hash = blockyard::store::history::snapshot_hash(&text);
        let loaded = self.about["workflows"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let Some(found) = loaded.iter().find(|w| w["name"] == name.as_str()) else {
            bail!(
                "the service at {} has no workflow `{name}` loaded (from `{}`); put the file in its workflows directory (`{}`) and reload it (SIGHUP), or stop the service to run the file on the data dir",
                self.url,
                file.display(),
                self.about["workflows_dir"].as_str().unwrap_or("?")
            );
        };
        if found["snapshot"] != hash.as_str() {
            bail!(
                "`{}` differs from the workflow `{name}` the service at {} has loaded (`{}`); reload the service (SIGHUP) after editing, or run the loaded one by giving its file",
                file.display(),
                self.url,
                found["file"].as_str().unwrap_or("?")
            );
        }
        Ok(name)
    }
}

fn describe(value: &Value, none: &str) -> String {
    match value.as_str() {
        Some(path) => format!("`{path}`"),
        None => none.to_owned(),
    }
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

/// reqwest's error with its causes (its own text is only "error sending request").
fn reqwest_reason(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The data dir, or the service holding it (one per command: the size of a variant is no
/// concern).
#[allow(clippy::large_enum_variant)]
pub enum Backend {
    Local(Local),
    Remote(Remote),
}

impl Backend {
    /// The service when one is named or holds the data dir, else the data dir (see the module
    /// docs).
    pub fn open(common: &CommonArgs) -> anyhow::Result<Backend> {
        let config = common.config()?;
        let named = common
            .server()
            .map(str::to_owned)
            .or_else(|| std::env::var("BLOCKYARD_SERVER").ok())
            .filter(|s| !s.is_empty())
            .or_else(|| {
                config
                    .as_ref()
                    .filter(|_| !common.data_dir_given())
                    .and_then(|c| c.server.clone())
            });
        if let Some(url) = named {
            return Ok(Backend::Remote(Remote::connect(
                &url,
                common,
                config.as_ref(),
            )?));
        }
        let dir = common.data_dir(config.as_ref());
        if let Some(endpoint) = Endpoint::find(&dir)? {
            return Ok(Backend::Remote(Remote::connect(
                &endpoint.url,
                common,
                config.as_ref(),
            )?));
        }
        super::store::refuse_postgres(config.as_ref(), "this command", &dir)?;
        let store = Store::open(&dir)?;
        Ok(Backend::Local(Local {
            store,
            config,
            common: common.clone(),
        }))
    }

    /// A run and its steps; `None` when there is no such run.
    pub fn run(&self, id: RunId) -> anyhow::Result<Option<RunSteps>> {
        match self {
            Backend::Local(local) => {
                let history = local.history()?;
                let Some(run) = history.run(id)? else {
                    return Ok(None);
                };
                let steps = history.steps(id)?;
                Ok(Some((run, steps)))
            }
            Backend::Remote(remote) => remote.run(id),
        }
    }

    /// A record's fields; `None` when there is none.
    pub fn record(&self, subject: &Subject) -> anyhow::Result<Option<Fields>> {
        match self {
            Backend::Local(local) => Ok(local.records()?.get(subject)?),
            Backend::Remote(remote) => {
                let path = format!(
                    "/records/{}/{}",
                    subject.collection.name(),
                    encode_key(subject.key.as_str())
                );
                match remote.try_get(&path)? {
                    Ok(Value::Object(fields)) => Ok(Some(fields)),
                    Ok(other) => bail!("{}: a record is not an object: {other}", remote.via()),
                    Err(refused) if refused.status == 404 => Ok(None),
                    Err(refused) => Err(remote.refused(refused)),
                }
            }
        }
    }

    /// A collection's records, in key order.
    pub fn records(&self, collection: Collection) -> anyhow::Result<Vec<(String, Fields)>> {
        match self {
            Backend::Local(local) => local
                .records()?
                .list(collection)
                .map(|r| r.map(|(k, f)| (k.to_string(), f)).map_err(Into::into))
                .collect(),
            Backend::Remote(remote) => {
                let list = remote.get(&format!("/records/{}", collection.name()))?;
                let mut out = Vec::new();
                for item in list.as_array().into_iter().flatten() {
                    let key = item["key"].as_str().unwrap_or_default().to_owned();
                    let Value::Object(fields) = item["fields"].clone() else {
                        bail!("{}: a record is not an object: {item}", remote.via());
                    };
                    out.push((key, fields));
                }
                Ok(out)
            }
        }
    }
}

/// A run with its steps, from `history show --json`'s shape.
pub fn run_steps(mut value: Value) -> anyhow::Result<RunSteps> {
    let steps = value
        .as_object_mut()
        .and_then(|o| o.remove("steps"))
        .unwrap_or_else(|| json!([]));
    Ok((
        serde_json::from_value(value).context("the service answered a run this CLI cannot read")?,
        serde_json::from_value(steps).context("the service answered steps this CLI cannot read")?,
    ))
}

/// A record key as one path segment per part (`app/email` keeps its `/`).
pub fn encode_key(key: &str) -> String {
    key.split('/')
        .map(|part| percent_encoding::utf8_percent_encode(part, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'@')
    .remove(b'+');
