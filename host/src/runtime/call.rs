//! What one hook call may do and where its effects go: the environment
//! every import of the call checks against.

use std::sync::Arc;

use crate::capabilities::Grant;
use crate::config::{Limits, NodeSet};
use crate::events::{Sink, StepKey};
use crate::transport::Transport;

/// What one hook call may do.
pub struct CallEnv {
    /// Plugin (= service) name.
    pub plugin: String,
    /// The step this call is.
    pub step: StepKey,
    /// Effective grant.
    pub grant: Arc<Grant>,
    /// Nodes hosting the service: the only ones `exec` may target.
    pub nodes: Arc<NodeSet>,
    /// Mutating commands are recorded, not executed.
    pub read_only: bool,
    /// Limits.
    pub limits: Limits,
    /// How commands reach nodes.
    pub transport: Arc<dyn Transport>,
    /// Where events go.
    pub sink: Arc<dyn Sink>,
    /// Where mutating commands record their results (journaled runs).
    pub record_dir: Option<std::path::PathBuf>,
    /// What each plugin has journaled in this run.
    pub budget: Arc<RunBudget>,
}

impl CallEnv {
    /// Count `bytes` journaled by this call's plugin against its budget.
    pub fn charge(&self, bytes: usize) -> Result<(), String> {
        self.budget
            .charge(&self.plugin, bytes, self.limits.journal_bytes)
    }
}

/// What each plugin has written to the journal in this run (its commands'
/// output, logs, state, denials), held to `limits.journal_bytes`: shared
/// by every hook call of a run, so the budget is per plugin per run, not
/// per call.
#[derive(Debug, Default)]
pub struct RunBudget(std::sync::Mutex<std::collections::HashMap<String, u64>>);

impl RunBudget {
    /// Count `bytes` against `plugin`; an error once it is over `max`.
    pub fn charge(&self, plugin: &str, bytes: usize, max: u64) -> Result<(), String> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let used = m.entry(plugin.to_string()).or_default();
        *used += bytes as u64;
        if *used > max {
            return Err(format!(
                "plugin `{plugin}` wrote more than {max} bytes to the journal in this run (limits.journal_mb); it was stopped"
            ));
        }
        Ok(())
    }
}

/// Where a hook call's commands go and its events are recorded: the same
/// for every call of a run.
#[derive(Clone)]
pub struct CallIo {
    /// How commands reach nodes.
    pub transport: Arc<dyn Transport>,
    /// Where events go.
    pub sink: Arc<dyn Sink>,
    /// Where mutating commands record their results (journaled runs).
    pub record_dir: Option<std::path::PathBuf>,
    /// What each plugin has journaled in this run.
    pub budget: Arc<RunBudget>,
}

impl CallEnv {
    /// The environment of the hook call that is `step`. Whether mutating
    /// commands run is decided here and only here: never in `check`, never
    /// in a dry run.
    pub fn new(
        step: StepKey,
        dry_run: bool,
        grant: Arc<Grant>,
        nodes: Arc<NodeSet>,
        limits: Limits,
        io: &CallIo,
    ) -> CallEnv {
        CallEnv {
            plugin: step.service.clone(),
            read_only: dry_run || step.phase == crate::events::Phase::Check,
            step,
            grant,
            nodes,
            limits,
            transport: io.transport.clone(),
            sink: io.sink.clone(),
            record_dir: io.record_dir.clone(),
            budget: io.budget.clone(),
        }
    }
}
