//! Paused workflows: which workflows' triggers are held, by whom and since when.
//!
//! A pause is an operator action (`blockyard pause`, `POST /api/workflows/{name}/pause`). It is
//! **queue and hold**: a paused workflow's triggers still evaluate and queue their run requests
//! (so no record change or schedule tick is lost), but the [`super::worker`] starts none of them
//! until the workflow's triggers are resumed (`blockyard resume-triggers`); the trigger trace of
//! each held request says `not started: workflow `NAME` paused by WHO at WHEN`. Runs already in
//! flight finish; a run started by hand (`POST /api/workflows/{name}/runs`, `blockyard run`) is not
//! a trigger and is not held.
//!
//! The state is kept by the store ([`crate::store::pauses`], behind the
//! [`crate::store::api::WritePauses`] seam), so it survives a restart; callers flush the store
//! before they acknowledge a change.

pub use crate::store::pauses::{Pause, Pauses};

/// The OS user running this process (the actor of a CLI action on a local data dir).
pub fn os_user() -> String {
    ["USER", "USERNAME", "LOGNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "an unknown local user".to_owned())
}
