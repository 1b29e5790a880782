//! Native unit tests for plugins: a mock host with the same scripting model
//! as `uphost test` scenarios.
//!
//! ```ignore
//! let host = MockHost::for_plugin::<Galera>()
//!     .rule(Rule::new("mysql", &["..."]).then(0, "wsrep_cluster_size\t3"));
//! let cx = host.cx(testing::context("galera", &["ctl1", "ctl2", "ctl3"]));
//! Galera::check(&cx).unwrap();
//! assert_eq!(host.commands()[0], "ctl1: mysql -e ...");
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::Plugin;
use crate::cx::{Context, Cx, ExecError, ExecOutput, ExecRequest, Host, Level, Mode, Node};
use crate::info::{Access, Info};
use crate::script::{Rule, Script};

pub use crate::script::Response;

/// A context for `service` on the named nodes (role `controller`), upgrading
/// 1.0 → 2.0, major upgrade, not dry-run, no parameters.
pub fn context(service: &str, nodes: &[&str]) -> Context {
    Context {
        run_id: "test-run".to_string(),
        service: service.to_string(),
        from_version: "1.0".to_string(),
        to_version: "2.0".to_string(),
        hop: crate::cx::Hop::single("1.0", "2.0"),
        mode: Mode::MajorUpgrade,
        dry_run: false,
        nodes: nodes
            .iter()
            .map(|n| Node {
                name: n.to_string(),
                address: "127.0.0.1".to_string(),
                roles: vec!["controller".to_string()],
            })
            .collect(),
        targets: None,
        params: Vec::new(),
    }
}

/// One command the plugin asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// Node.
    pub node: String,
    /// Program then arguments.
    pub argv: Vec<String>,
    /// True when it was recorded but not run (read-only mode).
    pub skipped: bool,
}

impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.node, self.argv.join(" "))
    }
}

/// A host that answers from a [`Script`], records every call, keeps state
/// in memory and, when built with [`MockHost::for_plugin`], refuses commands
/// the plugin did not request (as the real host does).
#[derive(Default)]
pub struct MockHost {
    script: Script,
    info: Option<Info>,
    read_only: bool,
    limit: Option<Vec<String>>,
    calls: RefCell<Vec<Call>>,
    logs: RefCell<Vec<(Level, String)>>,
    progress: RefCell<Vec<String>>,
    state: RefCell<BTreeMap<String, String>>,
}

impl MockHost {
    /// A mock host that allows any command that is scripted.
    pub fn new() -> Self {
        Self::default()
    }

    /// A mock host that enforces `P`'s requested capabilities.
    pub fn for_plugin<P: Plugin>() -> Self {
        MockHost {
            info: Some(P::describe()),
            ..Self::default()
        }
    }

    /// Add a scripted rule (first match wins).
    pub fn rule(mut self, rule: Rule) -> Self {
        self.script.rules.push(rule);
        self
    }

    /// Record mutating commands instead of answering them (like `check`).
    pub fn read_only(mut self, yes: bool) -> Self {
        self.read_only = yes;
        self
    }

    /// Limit the run to these nodes (as `--limit` does): the context's
    /// targets become these, and a mutating command on any other node is
    /// denied, as the real host denies it.
    pub fn limit(mut self, nodes: &[&str]) -> Self {
        self.limit = Some(nodes.iter().map(|n| n.to_string()).collect());
        self
    }

    /// Preset a state key.
    pub fn with_state(self, key: &str, value: &str) -> Self {
        self.state
            .borrow_mut()
            .insert(key.to_string(), value.to_string());
        self
    }

    /// A hook context backed by this host.
    pub fn cx(&self, mut ctx: Context) -> Cx<'_> {
        if let Some(limit) = &self.limit {
            ctx.targets = Some(
                ctx.nodes
                    .iter()
                    .filter(|n| limit.contains(&n.name))
                    .cloned()
                    .collect(),
            );
        }
        Cx::new(ctx, self)
    }

    /// Every command so far, as `node: argv…` lines.
    pub fn commands(&self) -> Vec<String> {
        self.calls.borrow().iter().map(|c| c.to_string()).collect()
    }

    /// How many commands so far contain `text` in their `node: argv…`
    /// line (`host.count("db_sync") == 1`, `host.count("restart") == 0`).
    pub fn count(&self, text: &str) -> usize {
        self.commands().iter().filter(|c| c.contains(text)).count()
    }

    /// Every command so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.borrow().clone()
    }

    /// Log lines so far.
    pub fn logs(&self) -> Vec<(Level, String)> {
        self.logs.borrow().clone()
    }

    /// Progress milestones so far.
    pub fn milestones(&self) -> Vec<String> {
        self.progress.borrow().clone()
    }

    /// The state map.
    pub fn state(&self) -> BTreeMap<String, String> {
        self.state.borrow().clone()
    }
}

impl Host for MockHost {
    fn exec(&self, req: ExecRequest) -> Result<ExecOutput, ExecError> {
        let mut argv = vec![req.program.clone()];
        argv.extend(req.args.iter().cloned());
        let mut mutating = false;
        if let Some(info) = &self.info {
            match info.allows(&req.program, &req.args) {
                Some(cap) => mutating = cap.access == Access::Mutating,
                None => {
                    return Err(ExecError::Denied(format!(
                        "`{}` is not covered by any capability the plugin requests",
                        argv.join(" ")
                    )));
                }
            }
        }
        if mutating
            && let Some(limit) = &self.limit
            && !limit.contains(&req.node)
        {
            return Err(ExecError::Denied(format!(
                "node `{}` is outside this run's targets (--limit)",
                req.node
            )));
        }
        let skipped = mutating && self.read_only;
        self.calls.borrow_mut().push(Call {
            node: req.node.clone(),
            argv: argv.clone(),
            skipped,
        });
        if skipped {
            return Ok(ExecOutput {
                skipped: true,
                ..ExecOutput::default()
            });
        }
        match self.script.respond(&req.node, &req.program, &req.args) {
            Some(r) => Ok(ExecOutput {
                status: r.status,
                stdout: r.stdout.into_bytes(),
                stderr: r.stderr.into_bytes(),
                truncated: false,
                skipped: false,
            }),
            None => Err(ExecError::SpawnFailed(format!(
                "unscripted command on {}: {} (add a rule for it)",
                req.node,
                argv.join(" ")
            ))),
        }
    }

    /// Recorded as the call `uphost:reboot normal|kexec` on the node; the
    /// node is "back" at once. Refused, as the host refuses it, when the
    /// plugin's description does not ask for reboots.
    fn reboot(&self, node: &str, kexec: bool) -> Result<(), String> {
        if self.info.as_ref().is_some_and(|i| !i.reboots) {
            return Err("the plugin's description does not ask for reboots (Info::reboots)".into());
        }
        self.calls.borrow_mut().push(Call {
            node: node.to_string(),
            argv: vec![
                "uphost:reboot".to_string(),
                if kexec { "kexec" } else { "normal" }.to_string(),
            ],
            skipped: self.read_only,
        });
        Ok(())
    }

    fn log(&self, level: Level, message: &str) {
        self.logs.borrow_mut().push((level, message.to_string()));
    }

    fn progress(&self, message: &str) {
        self.progress.borrow_mut().push(message.to_string());
    }

    fn state_get(&self, key: &str) -> Option<String> {
        self.state.borrow().get(key).cloned()
    }

    fn state_set(&self, key: &str, value: &str) {
        self.state
            .borrow_mut()
            .insert(key.to_string(), value.to_string());
    }

    fn state_delete(&self, key: &str) {
        self.state.borrow_mut().remove(key);
    }
}
