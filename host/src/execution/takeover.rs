//! What `uphost standby` and `uphost state export|import` decide: whether a
//! run on etcd has been left by its holder, and moving a run's journal
//! between the local state directory and etcd. The command line prints.

use std::path::PathBuf;

use crate::Error;
use crate::config::Config;
use crate::journal::{self, etcd};

pub use crate::journal::etcd::{Held, Store, StoreError};

/// What a standby sees.
#[derive(Debug, Clone, PartialEq)]
pub enum Look {
    /// Someone holds the run lock (named).
    Held(String),
    /// Nobody does, and there is nothing to take over (why).
    Idle(String),
    /// Nobody does, and this run is unfinished: its holder died.
    Orphan(String),
}

/// Look at the deployment on etcd.
pub fn look(store: &Store) -> Result<Look, StoreError> {
    if let Some(h) = store.holder()? {
        return Ok(Look::Held(h));
    }
    let Some(id) = store.current()? else {
        return Ok(Look::Idle("no run on etcd yet".into()));
    };
    if store.ended(&id)? != Some(false) {
        return Ok(Look::Idle(format!(
            "run {id} ended; waiting for the next one"
        )));
    }
    // Nobody holds the lock: look again, a holder may be taking it now.
    Ok(match store.holder()? {
        Some(h) => Look::Held(h),
        None => Look::Orphan(id),
    })
}

/// Take the deployment's run lock on etcd as this machine running
/// `command`; `on_lost` is called if the lease is lost later.
pub fn lock(
    store: &std::sync::Arc<Store>,
    command: &str,
    on_lost: impl Fn() + Send + Sync + 'static,
) -> Result<Held, StoreError> {
    store.lock(&journal::lock::Holder::me(command), on_lost)
}

/// A run moved.
#[derive(Debug)]
pub struct Moved {
    /// The run.
    pub run_id: String,
    /// Its records.
    pub records: usize,
    /// The local journal.
    pub path: PathBuf,
    /// The deployment's prefix on etcd.
    pub prefix: String,
}

/// The `etcd:` of a configuration, or the error for `what` without it.
pub fn settings<'a>(
    cfg: &'a Config,
    what: &str,
) -> Result<&'a crate::config::store::EtcdSettings, Error> {
    cfg.etcd.as_ref().ok_or_else(|| {
        Error::Usage(format!(
            "`uphost {what}` works with a run journal on etcd: add `etcd:` (endpoints, prefix) to uphost.yaml, the same on every machine that may drive the run"
        ))
    })
}

/// A run's journal from etcd into the local state directory (the current
/// run by default), checked as any journal is.
pub fn export(cfg: &Config, run: Option<&str>) -> Result<Moved, Error> {
    let store = Store::connect(settings(cfg, "state export")?)?;
    let current = store.current()?;
    let id = match run {
        Some(r) => {
            journal::check_run_id(r)?;
            r.to_string()
        }
        None => current.clone().ok_or_else(|| {
            Error::Usage(format!(
                "there is no run on etcd under {}; nothing to export",
                store.prefix()
            ))
        })?,
    };
    let lines = store.records(&id)?;
    if lines.is_empty() {
        let ids = store.run_ids()?;
        return Err(Error::Usage(format!(
            "there is no run {id} on etcd under {}: {}",
            store.prefix(),
            if ids.is_empty() {
                "it has no runs".to_string()
            } else {
                format!("its runs are {}", ids.join(", "))
            }
        )));
    }
    let _lock = journal::lock::acquire(&cfg.state_dir, "state export")?;
    etcd::materialize(&cfg.state_dir, &id, &lines, current.as_deref() == Some(&id))?;
    let path = journal::journal_of(&cfg.state_dir, &id)?;
    // What etcd held is checked as any journal is (the checksum chain).
    journal::replay_summary(&path)?;
    Ok(Moved {
        run_id: id,
        records: lines.len(),
        path,
        prefix: store.prefix().to_string(),
    })
}

/// A run's journal from the local state directory to etcd (the local
/// current run by default), made the deployment's current run.
pub fn import(cfg: &Config, run: Option<&str>) -> Result<Moved, Error> {
    let settings = settings(cfg, "state import")?;
    let _lock = journal::lock::acquire(&cfg.state_dir, "state import")?;
    let id = match run {
        Some(r) => r.to_string(),
        None => journal::current_run(&cfg.state_dir)?,
    };
    let path = journal::journal_of(&cfg.state_dir, &id)?;
    // Only a journal that checks out goes (the chain), and only its whole
    // records (a torn tail stays behind).
    let replayed = journal::replay_summary(&path)?;
    let bytes = std::fs::read(&path).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    let lines: Vec<Vec<u8>> = bytes[..replayed.valid_len as usize]
        .split_inclusive(|b| *b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    let store = Store::connect(settings)?;
    let held = lock(&store, "state import", || {})?;
    if let Some(cur) = store.current()?
        && cur != id
        && store.ended(&cur)? == Some(false)
    {
        return Err(Error::Usage(format!(
            "run {cur} on etcd under {} is unfinished; importing {id} would hide it. Finish or resume it first (`uphost state export` brings it here to look at)",
            store.prefix()
        )));
    }
    if store.has_records(&id)? {
        return Err(Error::Usage(format!(
            "run {id} is already on etcd under {}; `uphost state export --run {id}` brings that copy here",
            store.prefix()
        )));
    }
    held.append(&id, 0, &lines)?;
    held.set_current(&id)?;
    held.release();
    Ok(Moved {
        run_id: id,
        records: lines.len(),
        path,
        prefix: store.prefix().to_string(),
    })
}
