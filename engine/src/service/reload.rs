//! Reloading the workflows of a running service: SIGHUP (`blockyard serve`) and
//! `POST /api/reload` both end here, so they behave alike.
//!
//! A reload compiles every workflow file again; only when all of them load does it swap the new
//! set in (the engine's triggers, the API's workflows) and restart the scheduler on it. On any
//! error the old set stays in place and keeps running, and the error names each bad file and
//! line. Reloads take turns (the scheduler's lock is held throughout), so a SIGHUP and an API
//! reload at once never interleave.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, Mutex};

use super::{start_scheduler, ServiceError, Shared, Workflows};
use crate::records::Fields;
use crate::trigger::scheduler::{Clock, Fired, SchedulerHandle};

/// What a reload needs besides [`Shared`]: where the workflows are and the scheduler to restart.
#[derive(Debug)]
pub(crate) struct Reloader {
    pub(crate) dir: PathBuf,
    pub(crate) vars: Fields,
    pub(crate) clock: Clock,
    pub(crate) scheduler: Arc<Mutex<Option<SchedulerHandle>>>,
    /// Weak, so a stopping service's forwarder still ends when the service drops its sender.
    pub(crate) fired: mpsc::WeakUnboundedSender<Fired>,
}

impl Shared {
    /// Loads the workflows again and swaps them in, restarting the scheduler on the new set;
    /// returns how many are loaded. On failure the old set stays (and keeps running) and the
    /// error says why.
    pub async fn reload(&self) -> Result<usize, ServiceError> {
        let reloader = self
            .reloader
            .get()
            .expect("the reloader is set before the service serves");
        let mut scheduler = reloader.scheduler.lock().await;
        let workflows = Workflows::load(&reloader.dir, &self.engine, &reloader.vars)?;
        super::warn_matching(&self.engine, &workflows);
        let count = workflows.len();
        self.engine.set_triggers(workflows.triggers.clone());
        *self.workflows.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(workflows);
        if let Some(old) = scheduler.take() {
            old.stop().await?;
        }
        // No sender: the service is stopping, and its scheduler with it.
        if let Some(fired) = reloader.fired.upgrade() {
            *scheduler = Some(start_scheduler(self, reloader.clock, fired));
        }
        tracing::info!(workflows = count, "reloaded the workflows");
        Ok(count)
    }
}
