//! `uphost standby` and `uphost state export|import`: the run on etcd,
//! taken over from another machine or moved between the local state
//! directory and etcd (decided in `execution::takeover`; printed here).

use std::sync::Arc;
use std::time::Duration;

use crate::Error;
use crate::config::Config;
use crate::config::store::Takeover;
use crate::execution::session::Session;
use crate::execution::takeover::{self, Look, Store, StoreError};

use super::signals::TransportsSlot;
use super::{Cli, exit, run_cmd};

/// `uphost standby`: wait for the run's holder to die, then take over.
pub async fn standby(
    session: Session,
    yes: bool,
    forks: Option<usize>,
    cli: &Cli,
    (interrupt, slot): (Arc<crate::execution::run::Interrupt>, TransportsSlot),
) -> Result<i32, Error> {
    let settings = takeover::settings(&session.cfg, "standby")?.clone();
    let store = Store::connect(&settings)?;
    let mut said = String::new();
    loop {
        if interrupt.requested() {
            errln!("uphost standby: stopped; nothing was taken over");
            return Ok(exit::INTERRUPTED);
        }
        let now = match takeover::look(&store) {
            Ok(Look::Held(h)) => format!("standing by: the run lock is held by {h}"),
            Ok(Look::Idle(why)) => format!("standing by: {why}"),
            Ok(Look::Orphan(id)) if settings.takeover == Takeover::Operator => {
                errln!(
                    "uphost standby: the holder of run {id} is gone (its lease on etcd expired) and the run is unfinished; `uphost resume` on this machine takes it over (etcd.takeover: operator)"
                );
                return Ok(exit::OK);
            }
            Ok(Look::Orphan(id)) => {
                let i = interrupt.clone();
                match takeover::lock(&store, "standby", move || i.request()) {
                    Ok(held) => {
                        errln!(
                            "uphost standby: the holder of run {id} is gone (its lease on etcd expired); taking the run over"
                        );
                        return run_cmd::resume(
                            session,
                            yes,
                            forks,
                            Some(Arc::new(held)),
                            cli,
                            (interrupt, slot),
                        )
                        .await;
                    }
                    Err(StoreError::Busy { holder, .. }) => {
                        format!("standing by: the run lock is held by {holder}")
                    }
                    Err(e) => format!("standing by; etcd: {e}"),
                }
            }
            // A member down, a leader election: keep standing by.
            Err(e) => format!("standing by; etcd: {e}"),
        };
        if now != said {
            errln!("uphost standby: {now}");
            said = now;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `uphost state export`.
pub fn export(cfg: &Config, run: Option<&str>) -> Result<i32, Error> {
    let m = takeover::export(cfg, run)?;
    outln!(
        "exported run {} ({} records) from etcd under {} to {}",
        m.run_id,
        m.records,
        m.prefix,
        m.path.display()
    );
    Ok(exit::OK)
}

/// `uphost state import`.
pub fn import(cfg: &Config, run: Option<&str>) -> Result<i32, Error> {
    let m = takeover::import(cfg, run)?;
    outln!(
        "imported run {} ({} records) into etcd under {}; it is the deployment's current run: `uphost resume` or `uphost standby` go on with it from any machine",
        m.run_id,
        m.records,
        m.prefix
    );
    Ok(exit::OK)
}
