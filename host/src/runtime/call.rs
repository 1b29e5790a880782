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
    /// The nodes this run upgrades (all of `nodes` unless the run is
    /// limited): the only ones a mutating command may change.
    pub targets: Arc<NodeSet>,
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
    /// Where mutating commands over ssh record them on their node (a
    /// journal replicated on etcd).
    pub node_records: Option<String>,
    /// What each plugin has journaled in this run.
    pub budget: Arc<RunBudget>,
    /// How the host reboots a node.
    pub reboot: Arc<crate::config::RebootSettings>,
    /// The reboots deferred to the end of the run.
    pub deferred: Deferred,
    /// What a reboot the plugin asks for does.
    pub reboot_mode: RebootMode,
}

/// What `node-control.reboot` does in a hook call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RebootMode {
    /// Reboot and wait for the node.
    #[default]
    Now,
    /// Note it for the end of the run.
    Delayed,
    /// A scenario of `uphost test`: recorded as done, no node involved.
    Scripted,
}

/// The nodes of a service in a run: every one, and those the run upgrades.
#[derive(Debug, Clone)]
pub struct ServiceNodes {
    /// Every node hosting the service.
    pub all: Arc<NodeSet>,
    /// The nodes this run upgrades (`all` unless the run is limited).
    pub targets: Arc<NodeSet>,
}

impl ServiceNodes {
    /// Every node is a target (no limit).
    pub fn unlimited(all: Arc<NodeSet>) -> ServiceNodes {
        ServiceNodes {
            targets: all.clone(),
            all,
        }
    }

    /// Whether the run leaves some of the service's nodes out.
    pub fn is_partial(&self) -> bool {
        self.targets.len() < self.all.len()
    }
}

impl CallEnv {
    /// Whether this call may run a command of `access` on `node` (one of
    /// the service's): a mutating command only on the run's targets, so an
    /// operator's `--limit` is a boundary no plugin can cross.
    pub fn may_change(
        &self,
        node: &str,
        access: crate::capabilities::Access,
    ) -> Result<crate::capabilities::Access, String> {
        if access == crate::capabilities::Access::Mutating && self.targets.by_name(node).is_none() {
            return Err(format!(
                "node `{}` is outside this run's targets (--limit): a mutating command may change only the nodes the operator limited the run to; read-only commands may run on every node of service `{}`",
                crate::untrusted::line_max(node, 256),
                self.plugin
            ));
        }
        Ok(access)
    }

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
        // Looked up before inserted: a key is allocated once per plugin,
        // not once per charge.
        let used = match m.get_mut(plugin) {
            Some(u) => {
                *u += bytes as u64;
                *u
            }
            None => {
                m.insert(plugin.to_string(), bytes as u64);
                bytes as u64
            }
        };
        if used > max {
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
    /// Where mutating commands over ssh record them on their node.
    pub node_records: Option<String>,
    /// What each plugin has journaled in this run.
    pub budget: Arc<RunBudget>,
    /// How the host reboots a node.
    pub reboot: Arc<crate::config::RebootSettings>,
    /// The reboots deferred to the end of the run.
    pub deferred: Deferred,
}

/// The reboots the plugins deferred to the end of a run: (service, node,
/// kind), shared by the run's hook calls.
#[derive(Debug, Clone, Default)]
pub struct Deferred(Arc<std::sync::Mutex<Vec<(String, String, String)>>>);

impl Deferred {
    /// Note one.
    pub fn push(&self, service: &str, node: &str, kind: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push((
            service.into(),
            node.into(),
            kind.into(),
        ));
    }

    /// Every one noted so far, and forget them.
    pub fn take(&self) -> Vec<(String, String, String)> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl CallEnv {
    /// The environment of the hook call that is `step`. Whether mutating
    /// commands run is decided here and only here: never in `check` or a
    /// gate's `verify`, never in a dry run.
    pub fn new(
        step: StepKey,
        dry_run: bool,
        grant: Arc<Grant>,
        nodes: &ServiceNodes,
        limits: Limits,
        io: &CallIo,
    ) -> CallEnv {
        CallEnv {
            plugin: step.service.clone(),
            read_only: dry_run
                || matches!(
                    step.phase,
                    crate::events::Phase::Check
                        | crate::events::Phase::Verify
                        | crate::events::Phase::OkToStop
                ),
            step,
            grant,
            nodes: nodes.all.clone(),
            targets: nodes.targets.clone(),
            limits,
            transport: io.transport.clone(),
            sink: io.sink.clone(),
            record_dir: io.record_dir.clone(),
            node_records: io.node_records.clone(),
            budget: io.budget.clone(),
            reboot: io.reboot.clone(),
            deferred: io.deferred.clone(),
            reboot_mode: RebootMode::Now,
        }
    }
}
