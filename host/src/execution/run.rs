//! A run: pre-flight checks in dependency order, then per service (in
//! dependency order, independent services concurrently) pre-upgrade →
//! upgrade on each node following the rollout → post-upgrade, then finalize.
//! A release train repeats this once per stage (hop), a migrations-only hop
//! calling `migrate` instead, with a gate between stages: every service's
//! `verify` and the operator's gate commands, then `--pause-between-hops`.
//! Every step is journaled; a resumed run skips every completed step. A
//! failure stops new work, lets in-flight steps finish, reports the failed
//! step and what remains, and optionally rolls back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Semaphore;

use super::confirm::Confirm;
use super::session::{ServiceRun, Session};
use crate::capabilities::Grant;
use crate::config::GateCommand;
use crate::config::rollout::Rollout;
pub use crate::events::Outcome;
use crate::events::{
    CommandRecord, Event, GATE, HopKind, Phase, PlannedService, RunOptionsRecord, Sink, StepKey,
    StepResult, TrainRecord,
};
use crate::journal::memory::MemorySink;
use crate::journal::{Journal, RollbackPlan, StepStatus};
use crate::planning::Plan;
use crate::runtime::{CallEnv, CallIo, Hook, HookCtx, Runtime, call_hook, wit_node};
use crate::transport::{BoxFuture, Transport};

/// What a run needs of its journal: a sink whose `replay` and
/// `write_error` the run reads back, its id, and where the recorder keeps
/// mutating commands' results. The journal on disk in a run; memory in
/// unit tests.
pub trait RunJournal: Sink {
    /// The run's id.
    fn run_id(&self) -> &str;
    /// Where mutating commands record their results (`None`: not recorded).
    fn record_dir(&self) -> Option<PathBuf>;
    /// Where, on a node reached over ssh, they record them too (a journal
    /// another machine may take over).
    fn node_record_dir(&self) -> Option<String> {
        None
    }
}

impl RunJournal for Journal {
    fn run_id(&self) -> &str {
        &self.run_id
    }
    fn record_dir(&self) -> Option<PathBuf> {
        Some(Journal::record_dir(self))
    }
    fn node_record_dir(&self) -> Option<String> {
        Journal::node_record_dir(self)
    }
}

impl RunJournal for MemorySink {
    fn run_id(&self) -> &str {
        "in-memory"
    }
    fn record_dir(&self) -> Option<PathBuf> {
        None
    }
}

/// Calls a service's hook for one step and says whether it succeeded: the
/// sandboxed plugin in a run ([`Sandbox`]), a script in unit tests.
pub trait Hooks: Send + Sync {
    /// Call `hook` of `svc` as the step `step`; its events go to `journal`.
    fn call<'a>(
        &'a self,
        svc: &'a ServiceRun,
        step: StepKey,
        hook: Hook,
        journal: Arc<dyn RunJournal>,
    ) -> BoxFuture<'a, Result<(), String>>;

    /// Wait until `gate`'s probes are healthy (before a batch, between
    /// hops): `Err` says which probe was not, and what it saw last.
    fn probe_gate<'a>(
        &'a self,
        _gate: &'a crate::config::BatchGate,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async { Ok(String::new()) })
    }

    /// Run a resource-survival command (`create` or `check`) on the control
    /// host: `Ok` with what it printed last, `Err` with why it failed.
    fn survival<'a>(
        &'a self,
        _argv: &'a [String],
        _timeout: std::time::Duration,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async { Ok(String::new()) })
    }

    /// Check (`stamped`: this run stamped it before) or set the update
    /// identifier on `node`: `Ok(true)` when it stamped it now, `Err` when
    /// another run holds the node.
    fn update_id<'a>(
        &'a self,
        _node: &'a str,
        _stamped: bool,
    ) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async { Ok(false) })
    }

    /// The run is complete: mark its stamps on `nodes` done.
    fn release_ids(&self, _nodes: Vec<String>) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// `svc`'s ok-to-stop gate before `node`: retried until it passes (`Ok`
    /// with how long it took) or the deadline (`Err` with its last answer).
    fn ok_to_stop<'a>(
        &'a self,
        _svc: &'a ServiceRun,
        _node: &'a str,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async { Ok(String::new()) })
    }

    /// The reboots the plugins deferred in this run: (service, node, kind).
    fn deferred_reboots(&self) -> Vec<(String, String, String)> {
        Vec::new()
    }

    /// Reboot `step.node` (`kind`: normal or kexec) as the step `step` and
    /// wait for it.
    fn reboot<'a>(
        &'a self,
        _step: StepKey,
        _kind: &'a str,
        _journal: Arc<dyn RunJournal>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    /// Run the operator's gate command `gate` as the step `step` (after
    /// the hop `step.hop` of `hops`); it passes when it exits 0.
    fn gate<'a>(
        &'a self,
        gate: &'a GateCommand,
        step: StepKey,
        hops: u32,
        journal: Arc<dyn RunJournal>,
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// The plugins of a session, called in the sandbox with their grants.
pub struct Sandbox {
    rt: Arc<Runtime>,
    plugins: BTreeMap<String, crate::runtime::bindings::PluginPre<crate::runtime::HostState>>,
    grants: BTreeMap<String, Arc<Grant>>,
    /// Per service, its hooks' context per hop of its train.
    ctxs: BTreeMap<String, Vec<HookCtx>>,
    transport: Arc<dyn Transport>,
    dry_run: bool,
    budget: Arc<crate::runtime::RunBudget>,
    /// Where the operator's gate commands run (the directory of
    /// `uphost.yaml`).
    gate_dir: PathBuf,
    run_id: String,
    /// What the probes see, for the gates before batches.
    board: Arc<super::probes::ProbeBoard>,
    /// How the host reboots a node.
    reboot: Arc<crate::config::RebootSettings>,
    /// Every node of the run, by name (the deferred reboots, the update
    /// identifier).
    nodes: BTreeMap<String, Arc<crate::config::NodeSpec>>,
    /// The update identifier's file on the nodes, when the operator set one.
    update_id: Option<String>,
    /// The reboots the plugins deferred in this run.
    deferred: crate::runtime::Deferred,
}

impl Sandbox {
    /// The sandbox of `services`' plugins for run `run_id`.
    pub fn new(
        session: &Session,
        services: &[ServiceRun],
        grants: BTreeMap<String, Arc<Grant>>,
        transport: Arc<dyn Transport>,
        run_id: &str,
        dry_run: bool,
        board: Arc<super::probes::ProbeBoard>,
    ) -> Sandbox {
        Sandbox {
            rt: session.rt.clone(),
            plugins: services
                .iter()
                .map(|s| (s.name.clone(), session.plugins[&s.name].pre.clone()))
                .collect(),
            ctxs: services
                .iter()
                .map(|s| (s.name.clone(), session.hook_ctxs(s, run_id, dry_run)))
                .collect(),
            grants,
            transport,
            dry_run,
            budget: Arc::default(),
            gate_dir: std::path::absolute(&session.cfg.path)
                .ok()
                .and_then(|p| p.parent().map(std::path::Path::to_path_buf))
                .unwrap_or_else(|| PathBuf::from(".")),
            run_id: run_id.to_string(),
            board,
            reboot: Arc::new(session.cfg.reboot.clone()),
            nodes: services
                .iter()
                .flat_map(|s| s.nodes.iter().map(|n| (n.name.clone(), n.clone())))
                .collect(),
            update_id: session
                .cfg
                .update_identifier
                .as_ref()
                .map(|u| u.path.clone()),
            deferred: Default::default(),
        }
    }
}

/// Where the operator's own commands run, as the journal names it.
const CONTROL_HOST: &str = "(control host)";

impl Sandbox {
    /// Run an operator's command on the control host from the directory
    /// of `uphost.yaml` (nothing in a dry run): its output, or why it did
    /// not finish.
    async fn on_control_host(
        &self,
        argv: &[String],
        timeout: std::time::Duration,
        hop: u32,
        hops: u32,
    ) -> Option<Result<crate::transport::CommandOutput, crate::transport::TransportError>> {
        if self.dry_run {
            return None;
        }
        let spec = crate::transport::CommandSpec::operator(argv, timeout);
        let mut c = tokio::process::Command::new(&argv[0]);
        c.args(&argv[1..])
            .current_dir(&self.gate_dir)
            .env("UPHOST_RUN_ID", &self.run_id)
            .env("UPHOST_HOP", hop.to_string())
            .env("UPHOST_HOPS", hops.to_string());
        let node = crate::config::NodeSpec::simulated(CONTROL_HOST, &[]);
        Some(crate::transport::process::run_child(c, &node, &argv[0], &spec).await)
    }
}

/// The last three lines of `bytes`, joined, as a one-line summary.
fn last_lines(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let tail: Vec<&str> = text.lines().rev().take(3).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
}

impl Sandbox {
    /// Read the update identifier on `node`: (run id, state) or `None`
    /// when the node has none.
    async fn read_id(
        &self,
        node: &crate::config::NodeSpec,
        path: &str,
    ) -> Result<Option<(String, String)>, String> {
        let spec = crate::transport::CommandSpec::operator(
            &["cat".to_string(), path.to_string()],
            std::time::Duration::from_secs(30),
        );
        let cannot = |why: String| {
            format!(
                "the update identifier of {} ({path}) could not be read: {why}",
                node.name
            )
        };
        match self.transport.exec(node, &spec).await {
            Ok(o) if o.status == 0 => {
                let text = String::from_utf8_lossy(&o.stdout);
                let mut w = text.split_whitespace();
                let id = crate::untrusted::line_max(w.next().unwrap_or(""), 128).into_owned();
                let state = crate::untrusted::line_max(w.next().unwrap_or(""), 32).into_owned();
                Ok(Some((id, state)))
            }
            Ok(o) if String::from_utf8_lossy(&o.stderr).contains("No such file") => Ok(None),
            Ok(o) => Err(cannot(format!(
                "`cat` exited {}: {}",
                o.status,
                last_lines(&o.stderr)
            ))),
            Err(e) => Err(cannot(e.to_string())),
        }
    }

    /// Write `RUN-ID STATE` to the update identifier on `node`.
    async fn write_id(
        &self,
        node: &crate::config::NodeSpec,
        path: &str,
        state: &str,
    ) -> Result<(), String> {
        let dir = path.rsplit_once('/').map_or("/", |(d, _)| d);
        let t = std::time::Duration::from_secs(30);
        let mkdir = crate::transport::CommandSpec::operator(
            &["mkdir".to_string(), "-p".to_string(), dir.to_string()],
            t,
        );
        let mut tee =
            crate::transport::CommandSpec::operator(&["tee".to_string(), path.to_string()], t);
        tee.stdin = Some(format!("{} {state}\n", self.run_id).into_bytes());
        for spec in [&mkdir, &tee] {
            match self.transport.exec(node, spec).await {
                Ok(o) if o.status == 0 => {}
                Ok(o) => {
                    return Err(format!(
                        "the update identifier of {} ({path}) could not be written: `{}` exited {}: {}",
                        node.name,
                        spec.program,
                        o.status,
                        last_lines(&o.stderr)
                    ));
                }
                Err(e) => {
                    return Err(format!(
                        "the update identifier of {} ({path}) could not be written: {e}",
                        node.name
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Hooks for Sandbox {
    fn update_id<'a>(
        &'a self,
        node: &'a str,
        stamped: bool,
    ) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            let (Some(path), Some(spec)) = (&self.update_id, self.nodes.get(node)) else {
                return Ok(false);
            };
            let mine = &self.run_id;
            let current = self.read_id(spec, path).await?;
            if stamped {
                return match current {
                    Some((id, _)) if &id == mine => Ok(false),
                    Some((id, _)) => Err(format!(
                        "{node} carries update identifier {id} ({path}), not this run's {mine}, which stamped it: another run or another control host has taken the node over since. A step of a stale run is refused: find out who drives {node}; then finish that run, or abandon this one (`uphost run --abandon-unfinished`)"
                    )),
                    None => Err(format!(
                        "{node} no longer carries this run's update identifier {mine} ({path} is gone): something changed the node since this run stamped it. Refused; once you know the node is this run's, write `{mine} running` to {path} and `uphost resume`"
                    )),
                };
            }
            match current {
                Some((id, state)) if &id != mine && state != "done" => Err(format!(
                    "{node} is being updated by run {id} (update identifier in {path}, `{state}`), not by this run {mine}: a second control host, or an unfinished run elsewhere. Refused: finish or abandon that run; once nothing drives {node}, write `{id} done` to {path} (or remove it)"
                )),
                _ => self.write_id(spec, path, "running").await.map(|()| true),
            }
        })
    }

    fn release_ids(&self, nodes: Vec<String>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Some(path) = &self.update_id else { return };
            for n in nodes {
                if let Some(spec) = self.nodes.get(&n)
                    && let Err(e) = self.write_id(spec, path, "done").await
                {
                    tracing::warn!(node = %n, error = %e, "the update identifier was not marked done");
                }
            }
        })
    }

    fn deferred_reboots(&self) -> Vec<(String, String, String)> {
        self.deferred.take()
    }

    fn ok_to_stop<'a>(
        &'a self,
        svc: &'a ServiceRun,
        node: &'a str,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let Some(spec) = svc.targets.by_name(node) else {
                return Err(format!("{node} is not a target of {}", svc.name));
            };
            let deadline = std::time::Duration::from_secs(
                svc.gate.as_ref().and_then(|g| g.deadline_s).unwrap_or(600),
            );
            let t0 = Instant::now();
            let mut tries = 0u32;
            loop {
                tries += 1;
                // Read-only, into memory: its commands are not steps of the
                // run (the journal gets the gate's outcome).
                let io = CallIo {
                    transport: self.transport.clone(),
                    record_dir: None,
                    node_records: None,
                    sink: Arc::new(MemorySink::new(None)),
                    budget: self.budget.clone(),
                    reboot: self.reboot.clone(),
                    deferred: self.deferred.clone(),
                };
                let env = CallEnv::new(
                    StepKey {
                        hop: None,
                        service: svc.name.clone(),
                        phase: Phase::OkToStop,
                        node: Some(node.to_string()),
                    },
                    self.dry_run,
                    self.grants[&svc.name].clone(),
                    &svc.scope(),
                    svc.limits.clone(),
                    &io,
                );
                let res = call_hook(
                    &self.rt,
                    &self.plugins[&svc.name],
                    env,
                    &self.ctxs[&svc.name][0],
                    Hook::OkToStop(wit_node(spec)),
                )
                .await;
                match res {
                    Ok(()) => {
                        return Ok(format!(
                            "{node} ok to stop ({tries} check(s), {:.1} s)",
                            t0.elapsed().as_secs_f64()
                        ));
                    }
                    Err(e) if t0.elapsed() >= deadline => {
                        return Err(format!(
                            "{node} was not ok to stop within {} s ({tries} checks); last: {e}",
                            deadline.as_secs()
                        ));
                    }
                    Err(_) => tokio::time::sleep(std::time::Duration::from_secs(2)).await,
                }
            }
        })
    }

    fn reboot<'a>(
        &'a self,
        step: StepKey,
        kind: &'a str,
        journal: Arc<dyn RunJournal>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let node = step.node.clone().unwrap_or_default();
            let Some(spec) = self.nodes.get(&node) else {
                return Err(format!("node `{node}` is not in this run"));
            };
            let op = crate::runtime::reboot::Reboot {
                transport: self.transport.as_ref(),
                sink: journal.as_ref(),
                step: &step,
                seq: 0,
                node: spec,
                kind: crate::runtime::reboot::RebootKind::parse(kind)
                    .unwrap_or(crate::runtime::reboot::RebootKind::Normal),
                settings: &self.reboot,
            };
            op.run().await.map(|_| ())
        })
    }

    fn call<'a>(
        &'a self,
        svc: &'a ServiceRun,
        step: StepKey,
        hook: Hook,
        journal: Arc<dyn RunJournal>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let hop = svc.hop_at(step.hop.unwrap_or(0)).map_or(0, |(i, _)| i);
            let io = CallIo {
                transport: self.transport.clone(),
                record_dir: journal.record_dir(),
                node_records: journal.node_record_dir(),
                sink: journal,
                budget: self.budget.clone(),
                reboot: self.reboot.clone(),
                deferred: self.deferred.clone(),
            };
            let mut env = CallEnv::new(
                step,
                self.dry_run,
                self.grants[&svc.name].clone(),
                &svc.scope(),
                svc.limits.clone(),
                &io,
            );
            if svc.reboot == crate::config::RebootWhen::Delayed {
                env.reboot_mode = crate::runtime::RebootMode::Delayed;
            }
            call_hook(
                &self.rt,
                &self.plugins[&svc.name],
                env,
                &self.ctxs[&svc.name][hop],
                hook,
            )
            .await
            .map_err(|e| e.to_string())
        })
    }

    fn probe_gate<'a>(
        &'a self,
        gate: &'a crate::config::BatchGate,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(self.board.wait_healthy(gate))
    }

    fn survival<'a>(
        &'a self,
        argv: &'a [String],
        timeout: std::time::Duration,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            match self.on_control_host(argv, timeout, 0, 0).await {
                None => Ok("not run: a dry run".into()),
                Some(Ok(o)) if o.status == 0 => Ok(last_lines(&o.stdout)),
                Some(Ok(o)) => Err(format!(
                    "`{}` exited {}: {}",
                    argv.join(" "),
                    o.status,
                    last_lines(&o.stderr)
                )),
                Some(Err(e)) => Err(format!("`{}` did not run to its end: {e}", argv.join(" "))),
            }
        })
    }

    fn gate<'a>(
        &'a self,
        gate: &'a GateCommand,
        step: StepKey,
        hops: u32,
        journal: Arc<dyn RunJournal>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            const WHERE: &str = CONTROL_HOST;
            let argv = gate.command.clone();
            journal.emit(Event::CommandStarted {
                step: step.clone(),
                seq: 0,
                node: WHERE.into(),
                argv: argv.clone(),
            });
            let t0 = Instant::now();
            let timeout = std::time::Duration::from_secs(gate.timeout_s.unwrap_or(3600));
            let out = self
                .on_control_host(&argv, timeout, step.hop.unwrap_or(0) + 1, hops)
                .await;
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            let ms = t0.elapsed().as_millis() as u64;
            let shown = || format!("gate command `{}` ({})", gate.name, argv.join(" "));
            let (result, verdict) = match out {
                None => (
                    CommandRecord {
                        skipped: true,
                        ..CommandRecord::exited(0, String::new(), String::new(), false, ms)
                    },
                    Ok(()),
                ),
                Some(Ok(o)) => {
                    let tail = last_lines(&o.stderr);
                    let verdict = match o.status {
                        0 => Ok(()),
                        s if tail.is_empty() => Err(format!("{} exited {s}", shown())),
                        s => Err(format!("{} exited {s}: {tail}", shown())),
                    };
                    let rec = CommandRecord {
                        truncated: o.truncated,
                        ..CommandRecord::exited(
                            o.status,
                            text(&o.stdout),
                            text(&o.stderr),
                            false,
                            ms,
                        )
                    };
                    (rec, verdict)
                }
                Some(Err(e)) => (
                    CommandRecord::failed(e.to_string(), Some(e.kind()), false, ms),
                    Err(format!("{} did not run to its end: {e}", shown())),
                ),
            };
            journal.emit(Event::CommandFinished {
                step,
                seq: 0,
                node: WHERE.into(),
                argv,
                result,
            });
            verdict
        })
    }
}

/// Options of `uphost run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Recorded options (dry-run, only, limit, rollback-on-failure).
    pub recorded: RunOptionsRecord,
    /// Parallelism bound.
    pub forks: usize,
    /// How confirmations are answered.
    pub confirm: Confirm,
    /// A resumed run that was rolling back: only its rollback goes on,
    /// never the upgrade.
    pub continue_rollback: Option<RollbackPlan>,
    /// Set from outside (a signal) to stop the run as a first Ctrl-C does.
    pub interrupt: Arc<Interrupt>,
    /// The operator's gate commands between the hops of a train.
    pub gates: Vec<GateCommand>,
    /// Probes that must be healthy between hops (after the commands).
    pub hop_probes: Option<crate::config::BatchGate>,
    /// The survival resources already created: (service, name).
    pub created: BTreeSet<(String, String)>,
    /// A node-major run, and how it goes over the nodes (`None`:
    /// service-major).
    pub node_major: Option<crate::config::NodeMajorConfig>,
    /// The nodes a resumed run had stamped with its update identifier.
    pub stamped: BTreeSet<String>,
    /// The reboots a resumed run had deferred and not done: (service,
    /// node, kind).
    pub deferred: BTreeSet<(String, String, String)>,
}

/// A request to stop a run after the steps in flight: the operator's
/// Ctrl-C, SIGTERM or SIGQUIT, which may come before the run has even
/// started (while its plugins load); the run honours it as soon as it
/// looks.
#[derive(Debug, Default)]
pub struct Interrupt(AtomicBool);

impl Interrupt {
    /// Ask the run to stop.
    pub fn request(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Was it asked to?
    pub fn requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Everything a run shares between its tasks.
pub struct Runner {
    plan: Plan,
    journal: Arc<dyn RunJournal>,
    hooks: Arc<dyn Hooks>,
    services: Vec<ServiceRun>,
    prior: BTreeMap<StepKey, StepStatus>,
    /// Set on failure or interruption: no new work starts.
    stop: AtomicBool,
    forks: Semaphore,
    opts: RunOptions,
    failures: Mutex<Vec<(StepKey, String)>>,
    /// (service, stage) whose hop began changing things.
    touched: Mutex<BTreeSet<(String, u32)>>,
    /// Why the run was paused, once it was.
    paused: Mutex<Option<String>>,
    /// Why it was halted (a probe past its budget), once it was.
    halted: Mutex<Option<String>>,
    /// Called once, just before the run's end is recorded (the probes'
    /// figures).
    before_end: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// Stages (hops) of the run: 1 unless it is a release train.
    stages: u32,
    /// The nodes this run stamped with its update identifier.
    stamped: Mutex<BTreeSet<String>>,
}

/// A mutex's value, even after a panic elsewhere held it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The recorded plan of a run.
pub fn planned(services: &[ServiceRun], session: &Session) -> Vec<PlannedService> {
    services
        .iter()
        .map(|s| {
            let p = session.plan.get(&s.name);
            PlannedService {
                name: s.name.clone(),
                level: p.map(|p| p.level).unwrap_or(0),
                depends_on: p.map(|p| p.depends_on.clone()).unwrap_or_default(),
                nodes: s.targets.iter().map(|n| n.name.clone()).collect(),
                rollout: s.rollout.to_string(),
                reversible: s.reversible,
                hops: if is_train(services) {
                    s.hops.clone()
                } else {
                    Vec::new()
                },
                guard: s.node_guard,
            }
        })
        .collect()
}

/// Is this run a release train (a service with more than one hop, or
/// hops in more than one stage)?
pub fn is_train(services: &[ServiceRun]) -> bool {
    services.iter().any(|s| s.hops.iter().any(|h| h.stage > 0))
}

/// The train record of a run's start, when it is a train.
pub fn train_record(services: &[ServiceRun], session: &Session) -> Option<TrainRecord> {
    is_train(services).then(|| {
        let t = &session.cfg.services.train;
        TrainRecord {
            hops: stages_of(services),
            style: t.style.as_str().to_string(),
            gates: t.gates.iter().map(|g| g.name.clone()).collect(),
        }
    })
}

fn stages_of(services: &[ServiceRun]) -> u32 {
    services
        .iter()
        .flat_map(|s| s.hops.iter().map(|h| h.stage + 1))
        .max()
        .unwrap_or(1)
}

/// Every step of a service, in order (of one stage of a train, with
/// `stage`; its steps in a run of one hop, without).
pub fn steps_of(s: &PlannedService) -> Vec<StepKey> {
    hops_of(s)
        .into_iter()
        .flat_map(|(hop, kind)| hop_steps(s, hop, kind))
        .collect()
}

/// The phases of a hop of kind `kind`: the service's steps before its
/// nodes, the phase of its node steps (one per node), its steps after.
pub fn hop_phases(kind: HopKind) -> (&'static [Phase], Option<Phase>, &'static [Phase]) {
    use Phase::*;
    match kind {
        HopKind::MigrationsOnly => (&[Check, Migrate], None, &[]),
        HopKind::Full => (
            &[Check, PreUpgrade],
            Some(Upgrade),
            &[PostUpgrade, Finalize],
        ),
    }
}

/// The hops of a service: (stage, kind), or one `None` hop.
pub fn hops_of(s: &PlannedService) -> Vec<(Option<u32>, HopKind)> {
    if s.hops.is_empty() {
        return vec![(None, HopKind::Full)];
    }
    s.hops.iter().map(|h| (Some(h.stage), h.kind)).collect()
}

fn hop_steps(s: &PlannedService, hop: Option<u32>, kind: HopKind) -> Vec<StepKey> {
    let k = |phase, node: Option<&String>| StepKey {
        hop,
        service: s.name.clone(),
        phase,
        node: node.cloned(),
    };
    let (before, per_node, after) = hop_phases(kind);
    let mut v: Vec<StepKey> = before.iter().map(|p| k(*p, None)).collect();
    if let Some(p) = per_node {
        v.extend(s.nodes.iter().map(|n| k(p, Some(n))));
    }
    v.extend(after.iter().map(|p| k(*p, None)));
    v
}

/// Every step of a run in the order it runs them: per stage, each
/// service's steps, then the gate (each service's `verify` after a full
/// hop, then the operator's gate commands) but after the last stage.
pub fn run_steps(plan: &[PlannedService], train: Option<&TrainRecord>) -> Vec<StepKey> {
    let Some(train) = train else {
        return plan.iter().flat_map(steps_of).collect();
    };
    let mut out = Vec::new();
    for stage in 0..train.hops {
        let here: Vec<(&PlannedService, HopKind)> = plan
            .iter()
            .filter_map(|s| {
                s.hops
                    .iter()
                    .find(|h| h.stage == stage)
                    .map(|h| (s, h.kind))
            })
            .collect();
        for (s, kind) in &here {
            out.extend(hop_steps(s, Some(stage), *kind));
        }
        if stage + 1 < train.hops {
            out.extend(gate_steps(&here, &train.gates, stage));
        }
    }
    out
}

fn gate_steps(here: &[(&PlannedService, HopKind)], gates: &[String], stage: u32) -> Vec<StepKey> {
    here.iter()
        .filter(|(_, kind)| *kind == HopKind::Full)
        .map(|(s, _)| StepKey {
            hop: Some(stage),
            ..StepKey::of(&s.name, Phase::Verify)
        })
        .chain(gates.iter().map(|g| gate_key(g, stage)))
        .collect()
}

/// The step of the operator's gate command `name` after stage `stage`.
pub fn gate_key(name: &str, stage: u32) -> StepKey {
    StepKey {
        hop: Some(stage),
        service: GATE.to_string(),
        phase: Phase::Verify,
        node: Some(name.to_string()),
    }
}

impl Runner {
    /// Prepare a run (new or resumed): `prior` is what the journal says of
    /// each step so far, `plan` orders the services.
    pub fn new(
        plan: Plan,
        services: Vec<ServiceRun>,
        prior: BTreeMap<StepKey, StepStatus>,
        journal: Arc<dyn RunJournal>,
        hooks: Arc<dyn Hooks>,
        opts: RunOptions,
    ) -> Arc<Runner> {
        let touched = prior
            .keys()
            .filter(|k| matches!(k.phase, Phase::PreUpgrade | Phase::Migrate))
            .map(|k| (k.service.clone(), k.hop.unwrap_or(0)))
            .collect();
        let stamped = opts.stamped.clone();
        Arc::new(Runner {
            stages: stages_of(&services),
            forks: Semaphore::new(opts.forks.max(1)),
            plan,
            journal,
            hooks,
            services,
            prior,
            stop: AtomicBool::new(false),
            opts,
            failures: Mutex::new(Vec::new()),
            touched: Mutex::new(touched),
            paused: Mutex::new(None),
            halted: Mutex::new(None),
            before_end: Mutex::new(None),
            stamped: Mutex::new(stamped),
        })
    }

    /// Stop scheduling new work (Ctrl-C): in-flight steps finish.
    pub fn interrupt(&self) {
        self.opts.interrupt.request();
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Pause the run (`uphost pause`, the end of the maintenance window):
    /// recorded once, then no new step starts, as after a first Ctrl-C; the
    /// run ends interrupted and `resume` continues it. Nothing happens once
    /// the run is stopping anyway.
    pub fn pause(&self, reason: String) {
        let mut p = self.paused.lock().unwrap_or_else(|p| p.into_inner());
        if p.is_some() || self.stopping() {
            return;
        }
        self.journal.emit(Event::Paused {
            reason: reason.clone(),
            at_ms: self.journal.now_ms(),
        });
        *p = Some(reason);
        self.interrupt();
    }

    /// Halt the run: no new step starts, the steps in flight finish, and it
    /// fails (rolling back as a failure would) with `reason`.
    pub fn halt(&self, reason: String) {
        let mut h = self.halted.lock().unwrap_or_else(|p| p.into_inner());
        if h.is_some() || self.stopping() {
            return;
        }
        tracing::error!("{reason}; stopping the run");
        *h = Some(reason);
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Why it was halted, if it was.
    pub fn halted(&self) -> Option<String> {
        self.halted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Call `f` once, just before the run's end is recorded.
    pub fn before_end(&self, f: Box<dyn FnOnce() + Send>) {
        *self.before_end.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
    }

    /// Why it was paused, if it was.
    pub fn paused(&self) -> Option<String> {
        self.paused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// No new work starts: a failure stopped the run, or it was
    /// interrupted (by the operator, a signal, a declined confirmation).
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.opts.interrupt.requested()
    }

    /// The hop of a step key in stage `stage`: none in a run of one hop.
    fn hop(&self, stage: u32) -> Option<u32> {
        (self.stages > 1).then_some(stage)
    }

    /// Run one step of stage `stage` unless it is already done.
    async fn step(&self, svc: &ServiceRun, stage: u32, hook: Hook) -> Result<(), String> {
        let phase = hook.phase();
        let node = hook.node().map(|n| n.name.clone());
        let key = StepKey {
            hop: self.hop(stage),
            service: svc.name.clone(),
            phase,
            node,
        };
        if matches!(phase, Phase::PreUpgrade | Phase::Migrate) {
            self.touched
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((svc.name.clone(), stage));
        }
        let hooks = self.hooks.clone();
        let journal = self.journal.clone();
        let node = key.node.clone();
        self.journaled(key.clone(), move || {
            Box::pin(async move {
                // A node this step was rebooting is checked once it is back
                // (the step's reboot waits for it first).
                if let Some(n) = &node
                    && !self.journal.rebooting(&key)
                {
                    self.identify(n).await?;
                }
                hooks.call(svc, key, hook, journal).await
            })
        })
        .await
    }

    /// Run the operator's gate command `gate` after stage `stage`.
    async fn gate_command(&self, gate: &GateCommand, stage: u32) -> Result<(), String> {
        let key = gate_key(&gate.name, stage);
        let hooks = self.hooks.clone();
        let journal = self.journal.clone();
        let stages = self.stages;
        self.journaled(key.clone(), move || {
            Box::pin(async move { hooks.gate(gate, key, stages, journal).await })
        })
        .await
    }

    /// A step between its `step-started` and `step-finished` records,
    /// skipped when done already, bounded by `--forks`.
    async fn journaled<'a>(
        &'a self,
        key: StepKey,
        work: impl FnOnce() -> BoxFuture<'a, Result<(), String>>,
    ) -> Result<(), String> {
        if self.prior.get(&key) == Some(&StepStatus::Done) {
            return Ok(());
        }
        let _permit = self.forks.acquire().await.expect("never closed");
        let t0 = Instant::now();
        self.journal.emit(Event::StepStarted {
            step: key.clone(),
            at_ms: self.journal.now_ms(),
        });
        let res = work().await;
        let res = match self.journal.write_error() {
            Some(e) => Err(format!(
                "the journal could not be written ({e}); stopping so that nothing counts as done that is not on disk"
            )),
            None => res,
        };
        self.journal.emit(Event::StepFinished {
            step: key.clone(),
            at_ms: self.journal.now_ms(),
            status: if res.is_ok() {
                StepResult::Ok
            } else {
                StepResult::Failed
            },
            duration_ms: t0.elapsed().as_millis() as u64,
            error: res.as_ref().err().cloned(),
        });
        if let Err(e) = &res {
            self.failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((key, e.clone()));
        }
        res
    }

    /// Stage `stage` of one service: pre-upgrade, the rollout,
    /// post-upgrade; or `migrate`, for a migrations-only hop.
    async fn service(self: Arc<Self>, i: usize, stage: u32) -> Result<(), ()> {
        let svc = &self.services[i];
        if self.stopping() {
            return Err(());
        }
        let kind = svc.hop_at(stage).map_or(HopKind::Full, |(_, h)| h.kind);
        if kind == HopKind::MigrationsOnly {
            return self.step(svc, stage, Hook::Migrate).await.map_err(|_| ());
        }
        self.step(svc, stage, Hook::PreUpgrade)
            .await
            .map_err(|_| ())?;
        let tolerated = svc.max_fail.tolerated(svc.targets.len());
        let batches = svc.rollout.batches(svc.targets.len());
        let mut failed = 0usize;
        for (bi, batch) in batches.iter().enumerate() {
            if self.stopping() {
                return Err(());
            }
            if let Some(gate) = &svc.gate
                && !gate.probes.is_empty()
                && !self.opts.recorded.dry_run
                && !self.probe_gate(gate, &svc.name, bi as u32).await
            {
                return Err(());
            }
            for i in batch.clone() {
                if !self.ok_to_stop(svc, &svc.targets[i].name, bi as u32).await {
                    return Err(());
                }
            }
            // Each node step is a task of its own, so that every worker
            // takes steps (one task polling all of a service's steps ran
            // them on one worker at a time, and left the other idle); at
            // most `forks` of them alive at once: a batch of 100 000 nodes
            // must not hold 100 000 futures. Dropping the set (the run
            // aborted) aborts them.
            let forks = self.opts.forks.max(1);
            let ended = |r: Result<Result<(), String>, tokio::task::JoinError>| {
                r.unwrap_or_else(|e| Err(format!("the step's task ended abnormally: {e}")))
            };
            let mut steps = tokio::task::JoinSet::new();
            let mut results: Vec<Result<(), String>> = Vec::with_capacity(batch.len());
            for n in batch.clone() {
                if steps.len() >= forks
                    && let Some(r) = steps.join_next().await
                {
                    results.push(ended(r));
                }
                let me = self.clone();
                steps.spawn(async move {
                    let svc = &me.services[i];
                    me.step(svc, stage, Hook::Upgrade(wit_node(&svc.targets[n])))
                        .await
                });
            }
            while let Some(r) = steps.join_next().await {
                results.push(ended(r));
            }
            self.journal.barrier();
            failed += results.iter().filter(|r| r.is_err()).count();
            if failed > tolerated {
                self.stop.store(true, Ordering::SeqCst);
                return Err(());
            }
            if failed > 0 {
                tracing::warn!(
                    service = %svc.name, failed, tolerated,
                    "node failures within max_fail; carrying on"
                );
            }
            if bi == 0 && svc.canary && batches.len() > 1 && !self.opts.recorded.dry_run {
                let done_already = svc.targets[batches[1].clone()].iter().all(|n| {
                    self.prior.get(&StepKey {
                        hop: self.hop(stage),
                        service: svc.name.clone(),
                        phase: Phase::Upgrade,
                        node: Some(n.name.clone()),
                    }) == Some(&StepStatus::Done)
                });
                if !done_already {
                    let prompt = format!(
                        "canary: {} upgraded on {}; continue with the remaining {} node(s)?",
                        svc.name,
                        svc.targets[batch.clone()]
                            .iter()
                            .map(|n| n.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        svc.targets.len() - batch.len()
                    );
                    if !self.confirm(&prompt) {
                        self.interrupt();
                        return Err(());
                    }
                }
            }
        }
        if self.stopping() {
            return Err(());
        }
        self.step(svc, stage, Hook::PostUpgrade)
            .await
            .map_err(|_| ())
    }

    /// The services' resource-survival commands: `create` (those not yet
    /// created) or `check` (after hop `hop`, or at the end). Journaled; the
    /// first that fails halts the run, naming it.
    async fn survive(&self, what: &str, hop: Option<u32>) -> bool {
        if self.opts.recorded.dry_run {
            return true;
        }
        for svc in &self.services {
            for s in &svc.survival {
                let argv = match (what, &s.create) {
                    ("check", _) => &s.check,
                    (_, Some(c))
                        if !self
                            .opts
                            .created
                            .contains(&(svc.name.clone(), s.name.clone())) =>
                    {
                        c
                    }
                    _ => continue,
                };
                let timeout = std::time::Duration::from_secs(s.timeout_s.unwrap_or(600));
                let res = self.hooks.survival(argv, timeout).await;
                self.journal.emit(Event::Survival {
                    service: svc.name.clone(),
                    name: s.name.clone(),
                    what: what.to_string(),
                    hop,
                    passed: res.is_ok(),
                    detail: match &res {
                        Ok(d) | Err(d) => crate::untrusted::line_max(d, 400).into_owned(),
                    },
                    at_ms: self.journal.now_ms(),
                });
                if let Err(why) = res {
                    self.halt(format!(
                        "survival `{}` of {}: its {what}{} failed: {why}",
                        s.name,
                        svc.name,
                        hop.map(|h| format!(" after hop {}", h + 1))
                            .unwrap_or_default()
                    ));
                    return false;
                }
            }
        }
        true
    }

    /// A gate of probes: before batch `at` of `service`, or (`service`
    /// [`GATE`]) after hop `at`. Journaled either way; on timeout the run
    /// stops (fails) or pauses, as the gate says.
    async fn probe_gate(&self, gate: &crate::config::BatchGate, service: &str, at: u32) -> bool {
        let res = self.hooks.probe_gate(gate).await;
        self.journal.emit(Event::GateChecked {
            service: service.to_string(),
            batch: at,
            passed: res.is_ok(),
            detail: match &res {
                Ok(d) | Err(d) => d.clone(),
            },
            node: None,
            at_ms: self.journal.now_ms(),
        });
        match res {
            Ok(_) => true,
            Err(why) => {
                let why = if service == GATE {
                    format!("gate after hop {}: {why}", at + 1)
                } else {
                    format!("gate before batch {} of {service}: {why}", at + 1)
                };
                match gate.on_timeout {
                    crate::config::OnTimeout::Stop => self.halt(why),
                    crate::config::OnTimeout::Pause => self.pause(format!("paused: {why}")),
                }
                false
            }
        }
    }

    /// The plugin's ok-to-stop gate before `node`'s upgrade (batch `at` of
    /// `svc`), unless its upgrade began already: retried by the sandbox
    /// until it passes or the deadline; journaled either way; on timeout
    /// the run stops (fails) or pauses, as the service's `gate:` says.
    async fn ok_to_stop(&self, svc: &ServiceRun, node: &str, at: u32) -> bool {
        // A node whose upgrade began (an interrupted or failed attempt) is
        // stopped already: its step goes on without asking again.
        let begun = self.prior.contains_key(&StepKey {
            hop: self.hop(0),
            service: svc.name.clone(),
            phase: Phase::Upgrade,
            node: Some(node.to_string()),
        });
        if !svc.ok_to_stop || begun || self.opts.recorded.dry_run || self.stopping() {
            return true;
        }
        let res = self.hooks.ok_to_stop(svc, node).await;
        self.journal.emit(Event::GateChecked {
            service: svc.name.clone(),
            batch: at,
            passed: res.is_ok(),
            detail: match &res {
                Ok(d) | Err(d) => crate::untrusted::line_max(d, 600).into_owned(),
            },
            node: Some(node.to_string()),
            at_ms: self.journal.now_ms(),
        });
        match res {
            Ok(_) => true,
            Err(why) => {
                let why = format!(
                    "{}'s ok-to-stop gate before {node}: {}",
                    svc.name,
                    crate::untrusted::line_max(&why, 600)
                );
                match svc.gate.as_ref().map(|g| g.on_timeout) {
                    Some(crate::config::OnTimeout::Pause) => self.pause(format!("paused: {why}")),
                    _ => self.halt(why),
                }
                false
            }
        }
    }

    fn confirm(&self, prompt: &str) -> bool {
        let a = self.opts.confirm.ask(prompt);
        self.journal.emit(Event::Confirmation {
            prompt: prompt.to_string(),
            accepted: a.accepted,
            how: a.how.to_string(),
        });
        a.accepted
    }

    fn deps_within(&self, i: usize) -> Vec<usize> {
        let name = &self.services[i].name;
        let deps = self
            .plan
            .get(name)
            .map(|p| p.depends_on.clone())
            .unwrap_or_default();
        deps.iter()
            .filter_map(|d| self.services.iter().position(|s| &s.name == d))
            .collect()
    }

    /// This run's services in stage `stage` (--only may leave some out,
    /// and a service's train may not reach every stage), level by level.
    fn levels_of(&self, stage: u32) -> Vec<Vec<&ServiceRun>> {
        self.plan
            .levels()
            .iter()
            .map(|level| {
                level
                    .iter()
                    .filter_map(|p| self.services.iter().find(|s| s.name == p.name))
                    .filter(|s| s.hop_at(stage).is_some())
                    .collect()
            })
            .collect()
    }

    /// Pre-flight of stage `stage`: every service's check (or, with
    /// `Hook::Verify`, the gate's health checks), level by level.
    async fn checks(self: &Arc<Self>, stage: u32, hook: Hook) -> bool {
        for level in self.levels_of(stage) {
            if self.stopping() {
                return false;
            }
            let futs = level
                .into_iter()
                .filter(|s| {
                    // A gate verifies the services that were deployed.
                    hook.phase() != Phase::Verify
                        || s.hop_at(stage)
                            .is_some_and(|(_, h)| h.kind == HopKind::Full)
                })
                .map(|s| self.step(s, stage, hook.clone()));
            let ok = futures::future::join_all(futs)
                .await
                .iter()
                .all(|r| r.is_ok());
            if !ok || self.stopping() {
                return false;
            }
        }
        true
    }

    /// The gate after stage `stage`: every deployed service's `verify`,
    /// then the operator's gate commands in order; then, when asked, the
    /// operator's go for the next hop.
    async fn gate(self: &Arc<Self>, stage: u32) -> Result<(), Outcome> {
        if !self.checks(stage, Hook::Verify).await {
            return Err(self.stopped_at_gate().await);
        }
        for g in &self.opts.gates {
            if self.stopping() {
                return Err(self.stopped_at_gate().await);
            }
            if self.gate_command(g, stage).await.is_err() {
                self.stop.store(true, Ordering::SeqCst);
                return Err(self.stopped_at_gate().await);
            }
        }
        if !self.survive("check", Some(stage)).await {
            return Err(self.stopped_at_gate().await);
        }
        if let Some(g) = &self.opts.hop_probes
            && !self.opts.recorded.dry_run
            && !self.probe_gate(g, GATE, stage).await
        {
            return Err(self.stopped_at_gate().await);
        }
        let next_begun = self.prior.keys().any(|k| k.hop == Some(stage + 1));
        if self.opts.recorded.pause_between_hops && !self.opts.recorded.dry_run && !next_begun {
            let prompt = format!(
                "hop {} of {} is done and its gate passed. Start hop {}{}?",
                stage + 1,
                self.stages,
                stage + 2,
                self.hop_label(stage + 1)
            );
            if !self.confirm(&prompt) {
                self.interrupt();
                return Err(self.finish(Outcome::Interrupted));
            }
        }
        Ok(())
    }

    /// ` (keystone mitaka -> newton, ...)`: what stage `stage` upgrades.
    fn hop_label(&self, stage: u32) -> String {
        let parts: Vec<String> = self
            .services
            .iter()
            .filter_map(|s| s.hop_at(stage).map(|(_, h)| h.label(&s.name)))
            .collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!(": {}", parts.join(", "))
        }
    }

    async fn stopped_at_gate(self: &Arc<Self>) -> Outcome {
        if self.opts.interrupt.requested() && self.failures().is_empty() {
            return self.finish(Outcome::Interrupted);
        }
        self.finish_failed(true).await
    }

    /// Run everything; returns the outcome (the journal has the details).
    pub async fn run(self: Arc<Self>) -> Outcome {
        if let Some(plan) = self.opts.continue_rollback.clone() {
            return self.continue_rollback(plan).await;
        }
        for stage in 0..self.stages {
            if let Err(outcome) = self.clone().stage(stage).await {
                return outcome;
            }
        }
        if self.halted().is_none() && !self.opts.interrupt.requested() {
            if !self.deferred_reboots().await {
                if self.opts.interrupt.requested() && self.failures().is_empty() {
                    return self.finish(Outcome::Interrupted);
                }
                return self.finish_failed(false).await;
            }
            // ... and after it.
            self.survive("check", None).await;
        }
        if self.halted().is_some() {
            return self.finish_failed(true).await;
        }
        if self.opts.interrupt.requested() {
            return self.finish(Outcome::Interrupted);
        }
        if !self.opts.recorded.dry_run {
            let nodes: Vec<String> = lock(&self.stamped).iter().cloned().collect();
            self.hooks.release_ids(nodes).await;
        }
        self.finish(Outcome::Complete)
    }

    /// One stage (the whole run, unless it is a release train): its
    /// checks, the confirmation before the first, its services in
    /// dependency order, finalize, and the gate before the next stage.
    async fn stage(self: Arc<Self>, stage: u32) -> Result<(), Outcome> {
        let last = stage + 1 == self.stages;
        if !self.checks(stage, Hook::Check).await {
            // Interrupted during the pre-flight: nothing changed, resumable.
            if self.opts.interrupt.requested() && self.failures().is_empty() {
                return Err(self.finish(Outcome::Interrupted));
            }
            return Err(self.finish_failed(stage > 0).await);
        }
        let mutating = !self.opts.recorded.dry_run;
        let fresh = !self.prior.keys().any(|k| k.phase != Phase::Check);
        if stage == 0 && mutating && fresh {
            let irreversible: Vec<&str> = self
                .services
                .iter()
                .filter(|s| !s.reversible)
                .map(|s| s.name.as_str())
                .collect();
            let mut prompt = format!(
                "pre-flight checks passed. Upgrade {} service(s) on {} node(s) now?",
                self.services.len(),
                self.services
                    .iter()
                    .flat_map(|s| s.targets.iter().map(|n| n.name.as_str()))
                    .collect::<BTreeSet<_>>()
                    .len()
            );
            if self.stages > 1 {
                prompt.push_str(&format!(
                    "\n  release train of {} hops; hop 1{}",
                    self.stages,
                    self.hop_label(0)
                ));
            }
            if !irreversible.is_empty() {
                prompt.push_str(&format!(
                    "\n  point of no return: {} cannot roll back",
                    irreversible.join(", ")
                ));
            }
            if !self.confirm(&prompt) {
                self.interrupt();
                return Err(self.finish(Outcome::Interrupted));
            }
        }
        // What must survive the upgrade exists before anything changes.
        if stage == 0 && !self.survive("create", None).await {
            return Err(self.finish_failed(false).await);
        }
        let ok = match &self.opts.node_major {
            Some(nm) => self.clone().node_major(nm).await,
            None => self.clone().service_major(stage).await,
        };
        let failed_any = !ok;
        let has_failures = !self.failures().is_empty();
        if self.opts.interrupt.requested() && !has_failures {
            return Err(self.finish(Outcome::Interrupted));
        }
        if failed_any || has_failures {
            return Err(self.finish_failed(true).await);
        }
        // Finalize: deployment-wide, once every service of the stage runs
        // its new version (in a train, before the next hop: an RPC pin must
        // not outlive its release).
        let full: Vec<&ServiceRun> = self
            .services
            .iter()
            .filter(|s| {
                s.hop_at(stage)
                    .is_some_and(|(_, h)| h.kind == HopKind::Full)
            })
            .collect();
        let finalize_pending = full.iter().any(|s| {
            self.prior.get(&StepKey {
                hop: self.hop(stage),
                ..StepKey::of(&s.name, Phase::Finalize)
            }) != Some(&StepStatus::Done)
        });
        if last
            && mutating
            && finalize_pending
            && !self.confirm("every service is upgraded. Run the finalize steps (RPC unpin, deployment-wide work)?")
        {
            self.interrupt();
            return Err(self.finish(Outcome::Interrupted));
        }
        for s in full {
            if self.stopping() {
                break;
            }
            if self.step(s, stage, Hook::Finalize).await.is_err() {
                return Err(self.finish_failed(true).await);
            }
        }
        if self.opts.interrupt.requested() {
            return Err(self.finish(Outcome::Interrupted));
        }
        if !last {
            self.gate(stage).await?;
        }
        Ok(())
    }

    /// The services of stage `stage` in dependency order, independent ones
    /// concurrently, each across its nodes; false when one failed.
    async fn service_major(self: Arc<Self>, stage: u32) -> bool {
        // Services in dependency order; independent ones concurrently.
        let mut pending: BTreeSet<usize> = (0..self.services.len())
            .filter(|i| self.services[*i].hop_at(stage).is_some())
            .collect();
        let mut done: BTreeSet<usize> = (0..self.services.len())
            .filter(|i| !pending.contains(i))
            .collect();
        let mut failed_any = false;
        let mut set = tokio::task::JoinSet::new();
        loop {
            if !self.stopping() {
                let ready: Vec<usize> = pending
                    .iter()
                    .copied()
                    .filter(|i| self.deps_within(*i).iter().all(|d| done.contains(d)))
                    .collect();
                for i in ready {
                    pending.remove(&i);
                    let me = self.clone();
                    set.spawn(async move { (i, me.service(i, stage).await) });
                }
            }
            match set.join_next().await {
                None => break,
                Some(Ok((i, Ok(())))) => {
                    done.insert(i);
                }
                Some(Ok((_, Err(())))) => {
                    failed_any = true;
                    self.stop.store(true, Ordering::SeqCst);
                }
                Some(Err(e)) => {
                    tracing::error!(error = %e, "service task ended abnormally");
                    failed_any = true;
                    self.stop.store(true, Ordering::SeqCst);
                }
            }
        }
        !failed_any
    }

    /// A node-major run (one stage): every service's pre-upgrade (level by
    /// level), then the nodes batch by batch, each node's services between
    /// its guards' `leave` and `rejoin`, then every post-upgrade. False when
    /// something failed beyond `max_fail`.
    async fn node_major(self: Arc<Self>, nm: &crate::config::NodeMajorConfig) -> bool {
        if !self.per_service(Hook::PreUpgrade).await {
            return false;
        }
        let nodes = self.node_order();
        let rollout = nm.rollout.unwrap_or(Rollout::OneAtATime);
        let batches = rollout.batches(nodes.len());
        let tolerated = nm.max_fail.unwrap_or_default().tolerated(nodes.len());
        let mut failed = 0usize;
        for (bi, batch) in batches.iter().enumerate() {
            if self.stopping() {
                return false;
            }
            use futures::StreamExt;
            let results: Vec<bool> = futures::stream::iter(batch.clone())
                .map(|i| self.node(&nodes[i], i as u32))
                .buffer_unordered(self.opts.forks.max(1))
                .collect()
                .await;
            self.journal.barrier();
            failed += results.iter().filter(|ok| !**ok).count();
            if failed > tolerated {
                self.stop.store(true, Ordering::SeqCst);
                return false;
            }
            let next_begun = batches.get(1).is_some_and(|b| {
                b.clone().any(|i| {
                    self.prior
                        .keys()
                        .any(|k| k.node.as_deref() == Some(nodes[i].as_str()))
                })
            });
            if bi == 0
                && nm.canary
                && batches.len() > 1
                && !self.opts.recorded.dry_run
                && !next_begun
            {
                let prompt = format!(
                    "canary: node(s) {} updated; continue with the remaining {} node(s)?",
                    batch
                        .clone()
                        .map(|i| nodes[i].as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    nodes.len() - batch.len()
                );
                if !self.confirm(&prompt) {
                    self.interrupt();
                    return false;
                }
            }
        }
        !self.stopping() && self.per_service(Hook::PostUpgrade).await
    }

    /// `hook` of every service, level by level (independent services
    /// concurrently); false at the first failure.
    async fn per_service(self: &Arc<Self>, hook: Hook) -> bool {
        for level in self.levels_of(0) {
            if self.stopping() {
                return false;
            }
            let futs = level.into_iter().map(|s| self.step(s, 0, hook.clone()));
            if !futures::future::join_all(futs)
                .await
                .iter()
                .all(|r| r.is_ok())
            {
                self.stop.store(true, Ordering::SeqCst);
                return false;
            }
        }
        true
    }

    /// Every node of the run, each once: the nodes of guarded services
    /// first (a cluster's members, in inventory order), then the others in
    /// the order the services (in plan order) list them.
    fn node_order(&self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        let mut services: Vec<&ServiceRun> = self.levels_of(0).into_iter().flatten().collect();
        services.sort_by_key(|s| !s.node_guard);
        for s in services {
            for n in s.targets.iter() {
                if seen.insert(n.name.clone()) {
                    out.push(n.name.clone());
                }
            }
        }
        out
    }

    /// One node of a node-major run: its guards' `leave`, each of its
    /// services' `upgrade` in plan order, its guards' `rejoin` (in reverse).
    /// A failure leaves the node as it is (out of its cluster), for the
    /// operator to look at. `at`: its place in the run's node order.
    async fn node(&self, name: &str, at: u32) -> bool {
        let here: Vec<&ServiceRun> = self
            .levels_of(0)
            .into_iter()
            .flatten()
            .filter(|s| s.targets.by_name(name).is_some())
            .collect();
        let on =
            |s: &ServiceRun| Hook::Upgrade(wit_node(s.targets.by_name(name).expect("filtered")));
        let guards: Vec<&ServiceRun> = here.iter().copied().filter(|s| s.node_guard).collect();
        for s in &here {
            if !self.ok_to_stop(s, name, at).await {
                return false;
            }
        }
        for g in &guards {
            if self.stopping() {
                return false;
            }
            let Hook::Upgrade(n) = on(g) else {
                unreachable!()
            };
            if self.step(g, 0, Hook::Leave(n)).await.is_err() {
                return false;
            }
        }
        for s in &here {
            if self.stopping() {
                return false;
            }
            if self.step(s, 0, on(s)).await.is_err() {
                return false;
            }
        }
        // Once a node left, it comes back even when a stop was asked for:
        // a paused run must not leave a healthy node out of its cluster.
        for g in guards.iter().rev() {
            let Hook::Upgrade(n) = on(g) else {
                unreachable!()
            };
            if self.step(g, 0, Hook::Rejoin(n)).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Before a step on `node` changes it: the update identifier says this
    /// run is the one changing it (stamped now when it was not yet).
    async fn identify(&self, node: &str) -> Result<(), String> {
        if self.opts.recorded.dry_run {
            return Ok(());
        }
        let known = lock(&self.stamped).contains(node);
        if self.hooks.update_id(node, known).await? {
            lock(&self.stamped).insert(node.to_string());
            self.journal.emit(Event::NodeStamped {
                node: node.to_string(),
                id: self.journal.run_id().to_string(),
                at_ms: self.journal.now_ms(),
            });
        }
        Ok(())
    }

    /// The reboots the plugins deferred to the end of the run, one node at
    /// a time (a node asked for by several services once: `normal` if one
    /// of them asked for it, else `kexec`). False when one failed.
    async fn deferred_reboots(&self) -> bool {
        if self.opts.recorded.dry_run {
            return true;
        }
        let mut by_node: BTreeMap<String, (String, String)> = BTreeMap::new();
        for (service, node, kind) in self
            .opts
            .deferred
            .iter()
            .cloned()
            .chain(self.hooks.deferred_reboots())
        {
            let e = by_node.entry(node).or_insert((service, kind.clone()));
            if kind == "normal" {
                e.1 = kind;
            }
        }
        for (node, (service, kind)) in by_node {
            if self.stopping() {
                return false;
            }
            let key = StepKey {
                hop: None,
                service,
                phase: Phase::Reboot,
                node: Some(node.clone()),
            };
            let hooks = self.hooks.clone();
            let journal = self.journal.clone();
            let k2 = key.clone();
            let res = self
                .journaled(key, move || {
                    Box::pin(async move { hooks.reboot(k2, &kind, journal).await })
                })
                .await;
            if res.is_err() {
                self.stop.store(true, Ordering::SeqCst);
                return false;
            }
        }
        true
    }

    fn finish(&self, outcome: Outcome) -> Outcome {
        // A pause asked for now comes too late: nothing follows the end.
        let _no_pause = self.paused.lock().unwrap_or_else(|p| p.into_inner());
        self.stop.store(true, Ordering::SeqCst);
        let before = self
            .before_end
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(f) = before {
            f();
        }
        self.journal.emit(Event::RunFinished {
            outcome,
            at_ms: self.journal.now_ms(),
        });
        outcome
    }

    /// The failures so far.
    pub fn failures(&self) -> Vec<(StepKey, String)> {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn finish_failed(self: &Arc<Self>, may_roll_back: bool) -> Outcome {
        let touched: BTreeSet<(String, u32)> = self
            .touched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if !may_roll_back || touched.is_empty() {
            return self.finish(Outcome::Failed);
        }
        let names: BTreeSet<&str> = touched.iter().map(|(s, _)| s.as_str()).collect();
        let rollback = self.opts.recorded.rollback_on_failure
            || (self.opts.confirm.asks_a_person()
                && self.opts.confirm.can_ask()
                && self.confirm(&format!(
                    "the run failed. Roll back the reversible services among {}?",
                    names.iter().copied().collect::<Vec<_>>().join(", ")
                )));
        if !rollback {
            return self.finish(Outcome::Failed);
        }
        self.roll_back(self.rollback_plan(&touched)).await
    }

    /// What a rollback undoes: in reverse dependency order, each touched
    /// service's hop in progress (its latest), and its earlier hops too
    /// when every hop it went through can be undone; a migrations-only hop
    /// (a leapfrog's) or an irreversible plugin cannot.
    fn rollback_plan(&self, touched: &BTreeSet<(String, u32)>) -> RollbackPlan {
        let mut plan = RollbackPlan::default();
        for s in self.services.iter().rev() {
            let mut stages: Vec<u32> = touched
                .iter()
                .filter(|(n, _)| *n == s.name)
                .map(|(_, st)| *st)
                .collect();
            if stages.is_empty() {
                continue;
            }
            stages.sort_unstable_by(|a, b| b.cmp(a));
            let undoable = |st: &u32| {
                s.reversible && s.hop_at(*st).is_none_or(|(_, h)| h.kind == HopKind::Full)
            };
            if !undoable(&stages[0]) {
                plan.irreversible.push(s.name.clone());
                continue;
            }
            if !stages.iter().all(undoable) {
                stages.truncate(1);
            }
            plan.services.push(s.name.clone());
            if self.stages > 1 {
                plan.steps.extend(stages.iter().map(|st| StepKey {
                    hop: Some(*st),
                    ..StepKey::of(&s.name, Phase::Rollback)
                }));
            }
        }
        plan
    }

    /// Roll back the plan's steps in its order (a rollback already done is
    /// skipped: a resumed rollback picks up where it stopped). A failed
    /// rollback does not stop the others; Ctrl-C stops after the rollback
    /// in flight, and `uphost resume` goes on with it.
    async fn roll_back(&self, plan: RollbackPlan) -> Outcome {
        self.journal.emit(Event::RollbackStarted {
            services: plan.services.clone(),
            irreversible: plan.irreversible.clone(),
            steps: plan.steps.clone(),
        });
        let mut all_ok = true;
        for key in plan.steps_in_order() {
            if self.opts.interrupt.requested() {
                return self.finish(Outcome::Interrupted);
            }
            let Some(s) = self.services.iter().find(|s| s.name == key.service) else {
                continue;
            };
            if self
                .step(s, key.hop.unwrap_or(0), Hook::Rollback)
                .await
                .is_err()
            {
                all_ok = false;
            }
        }
        self.finish(if all_ok {
            Outcome::RolledBack
        } else {
            Outcome::Failed
        })
    }

    /// A resumed run that was rolling back: after confirmation, the rollback
    /// goes on (failed rollbacks are retried); the upgrade never does.
    async fn continue_rollback(&self, plan: RollbackPlan) -> Outcome {
        let left: Vec<String> = plan
            .steps_in_order()
            .into_iter()
            .filter(|k| self.prior.get(k) != Some(&StepStatus::Done))
            .map(|k| match k.hop {
                Some(h) => format!("{} (hop {})", k.service, h + 1),
                None => k.service,
            })
            .collect();
        let prompt = format!(
            "this run was rolling back when it stopped. Go on rolling back {}?",
            left.join(", ")
        );
        if !left.is_empty() && !self.opts.recorded.dry_run && !self.confirm(&prompt) {
            self.interrupt();
            return self.finish(Outcome::Interrupted);
        }
        self.roll_back(plan).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::rollout::MaxFail;
    use crate::config::rollout::Rollout;
    use crate::config::{Limits, NodeSet, NodeSpec};

    /// One thing the runner did, in order.
    #[derive(Debug, Clone, PartialEq)]
    enum Did {
        Call(StepKey),
        Barrier,
    }

    /// Hooks that succeed but for the steps named to fail.
    struct Script {
        fail: BTreeSet<StepKey>,
        log: Arc<Mutex<Vec<Did>>>,
    }

    impl Hooks for Script {
        fn call<'a>(
            &'a self,
            _svc: &'a ServiceRun,
            step: StepKey,
            _hook: Hook,
            _journal: Arc<dyn RunJournal>,
        ) -> BoxFuture<'a, Result<(), String>> {
            self.scripted(step)
        }

        fn gate<'a>(
            &'a self,
            _gate: &'a GateCommand,
            step: StepKey,
            _hops: u32,
            _journal: Arc<dyn RunJournal>,
        ) -> BoxFuture<'a, Result<(), String>> {
            self.scripted(step)
        }
    }

    impl Script {
        /// Log the step; fail it when scripted to.
        fn scripted<'a>(&'a self, step: StepKey) -> BoxFuture<'a, Result<(), String>> {
            Box::pin(async move {
                self.log.lock().unwrap().push(Did::Call(step.clone()));
                tokio::task::yield_now().await;
                if self.fail.contains(&step) {
                    Err(format!("{step} failed as scripted"))
                } else {
                    Ok(())
                }
            })
        }
    }

    /// The in-memory journal, with its barriers in the log.
    struct Mem {
        sink: MemorySink,
        log: Arc<Mutex<Vec<Did>>>,
    }

    impl Sink for Mem {
        fn emit(&self, event: Event) {
            self.sink.emit(event)
        }
        fn state_get(&self, service: &str, key: &str) -> Option<String> {
            self.sink.state_get(service, key)
        }
        fn now_ms(&self) -> u64 {
            self.sink.now_ms()
        }
        fn barrier(&self) {
            self.log.lock().unwrap().push(Did::Barrier);
        }
    }

    impl RunJournal for Mem {
        fn run_id(&self) -> &str {
            "test"
        }
        fn record_dir(&self) -> Option<PathBuf> {
            None
        }
    }

    fn service(name: &str, nodes: usize, rollout: Rollout) -> ServiceRun {
        let nodes: Vec<Arc<NodeSpec>> = (1..=nodes)
            .map(|i| Arc::new(NodeSpec::simulated(&format!("{name}{i}"), &[name])))
            .collect();
        ServiceRun {
            name: name.to_string(),
            nodes: Arc::new(NodeSet::new(nodes.clone())),
            targets: Arc::new(NodeSet::new(nodes)),
            rollout,
            max_fail: MaxFail::Zero,
            canary: false,
            reversible: true,
            limits: Limits::default(),
            hops: vec![hop(0, HopKind::Full)],
            gate: None,
            survival: vec![],
            node_guard: false,
            reboot: Default::default(),
            ok_to_stop: false,
        }
    }

    fn hop(stage: u32, kind: HopKind) -> crate::events::Hop {
        crate::events::Hop {
            stage,
            from: format!("r{stage}"),
            to: format!("r{}", stage + 1),
            kind,
        }
    }

    /// `name` on `nodes` nodes, with hops in stages `stages`.
    fn train_service(name: &str, nodes: usize, stages: &[(u32, HopKind)]) -> ServiceRun {
        ServiceRun {
            hops: stages.iter().map(|(s, k)| hop(*s, *k)).collect(),
            ..service(name, nodes, Rollout::Parallel)
        }
    }

    struct Case {
        services: Vec<ServiceRun>,
        deps: Vec<(&'static str, &'static str)>,
        fail: Vec<StepKey>,
        prior: Vec<StepKey>,
        confirm: Confirm,
        rollback_on_failure: bool,
        continue_rollback: Option<RollbackPlan>,
        interrupt: Arc<Interrupt>,
        gates: Vec<GateCommand>,
        node_major: Option<crate::config::NodeMajorConfig>,
    }

    impl Case {
        fn new(services: Vec<ServiceRun>) -> Case {
            Case {
                services,
                deps: Vec::new(),
                fail: Vec::new(),
                prior: Vec::new(),
                confirm: Confirm::Yes,
                rollback_on_failure: false,
                continue_rollback: None,
                interrupt: Arc::default(),
                gates: Vec::new(),
                node_major: None,
            }
        }

        /// Run it: the outcome, what was done in order, the events.
        fn run(self) -> (Outcome, Vec<Did>, Vec<Event>) {
            let mut deps: BTreeMap<String, Vec<String>> = self
                .services
                .iter()
                .map(|s| (s.name.clone(), Vec::new()))
                .collect();
            for (a, b) in &self.deps {
                deps.get_mut(*a).unwrap().push(b.to_string());
            }
            let plan = crate::planning::plan(&deps).unwrap();
            let log = Arc::new(Mutex::new(Vec::new()));
            let journal = Arc::new(Mem {
                sink: MemorySink::new(None),
                log: log.clone(),
            });
            let hooks = Arc::new(Script {
                fail: self.fail.into_iter().collect(),
                log: log.clone(),
            });
            let runner = Runner::new(
                plan,
                self.services,
                self.prior
                    .into_iter()
                    .map(|k| (k, StepStatus::Done))
                    .collect(),
                journal.clone(),
                hooks,
                RunOptions {
                    recorded: RunOptionsRecord {
                        rollback_on_failure: self.rollback_on_failure,
                        ..Default::default()
                    },
                    forks: 4,
                    confirm: self.confirm,
                    continue_rollback: self.continue_rollback,
                    interrupt: self.interrupt.clone(),
                    gates: self.gates,
                    hop_probes: None,
                    created: BTreeSet::new(),
                    node_major: self.node_major,
                    stamped: BTreeSet::new(),
                    deferred: BTreeSet::new(),
                },
            );
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let outcome = rt.block_on(runner.run());
            let did = log.lock().unwrap().clone();
            (outcome, did, journal.sink.events())
        }
    }

    fn k(service: &str, phase: Phase, node: Option<&str>) -> StepKey {
        StepKey {
            hop: None,
            service: service.into(),
            phase,
            node: node.map(String::from),
        }
    }

    fn calls(did: &[Did]) -> Vec<StepKey> {
        did.iter()
            .filter_map(|d| match d {
                Did::Call(k) => Some(k.clone()),
                Did::Barrier => None,
            })
            .collect()
    }

    fn pos(did: &[Did], key: &StepKey) -> usize {
        calls(did)
            .iter()
            .position(|c| c == key)
            .unwrap_or_else(|| panic!("{key} was not called: {did:?}"))
    }

    /// The node steps of each batch, as the barriers separate them.
    fn batches(did: &[Did]) -> Vec<BTreeSet<String>> {
        let mut out = vec![BTreeSet::new()];
        for d in did {
            match d {
                Did::Barrier => out.push(BTreeSet::new()),
                Did::Call(k) if k.phase == Phase::Upgrade => {
                    out.last_mut().unwrap().insert(k.node.clone().unwrap());
                }
                Did::Call(_) => {}
            }
        }
        out.retain(|b| !b.is_empty());
        out
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn levels_and_dependencies_order_the_steps() {
        // In plan order (level, then name), as a session gives them.
        let mut c = Case::new(vec![
            service("cache", 1, Rollout::Parallel),
            service("db", 1, Rollout::Parallel),
            service("api", 1, Rollout::Parallel),
        ]);
        c.deps = vec![("api", "db")];
        let (outcome, did, events) = c.run();
        assert_eq!(outcome, Outcome::Complete);
        // Every check before anything changes, level by level.
        let first_change = pos(&did, &k("db", Phase::PreUpgrade, None))
            .min(pos(&did, &k("cache", Phase::PreUpgrade, None)));
        for s in ["db", "api", "cache"] {
            assert!(pos(&did, &k(s, Phase::Check, None)) < first_change);
        }
        assert!(pos(&did, &k("db", Phase::Check, None)) < pos(&did, &k("api", Phase::Check, None)));
        // A dependent starts once its dependency is done.
        assert!(
            pos(&did, &k("db", Phase::PostUpgrade, None))
                < pos(&did, &k("api", Phase::PreUpgrade, None))
        );
        // Finalize after every service, in plan order.
        let finals: Vec<usize> = ["cache", "db", "api"]
            .iter()
            .map(|s| pos(&did, &k(s, Phase::Finalize, None)))
            .collect();
        for s in ["db", "api", "cache"] {
            assert!(pos(&did, &k(s, Phase::PostUpgrade, None)) < finals[0]);
        }
        assert!(finals.windows(2).all(|w| w[0] < w[1]), "{finals:?}");
        // Every step is started and finished ok in the journal, and the run
        // ends complete.
        let ok = events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::StepFinished {
                        status: StepResult::Ok,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(ok, 3 * 5);
        assert!(matches!(
            events.last(),
            Some(Event::RunFinished {
                outcome: Outcome::Complete,
                ..
            })
        ));
    }

    #[test]
    fn rollouts_make_their_batches() {
        let cases = [
            (
                Rollout::Parallel,
                vec![set(&["s1", "s2", "s3", "s4", "s5"])],
            ),
            (
                Rollout::Serial(2),
                vec![set(&["s1", "s2"]), set(&["s3", "s4"]), set(&["s5"])],
            ),
            (
                Rollout::SerialPercent(40),
                vec![set(&["s1", "s2"]), set(&["s3", "s4"]), set(&["s5"])],
            ),
            (
                Rollout::OneAtATime,
                vec![
                    set(&["s1"]),
                    set(&["s2"]),
                    set(&["s3"]),
                    set(&["s4"]),
                    set(&["s5"]),
                ],
            ),
        ];
        for (rollout, want) in cases {
            let (outcome, did, _) = Case::new(vec![service("s", 5, rollout)]).run();
            assert_eq!(outcome, Outcome::Complete);
            assert_eq!(batches(&did), want, "{rollout}");
        }
    }

    #[test]
    fn max_fail_tolerates_up_to_its_bound_and_no_more() {
        // 4 nodes, serial 2: node 1 fails in the first batch.
        for (max_fail, tolerated) in [(MaxFail::Zero, false), (MaxFail::Count(1), true)] {
            let mut s = service("s", 4, Rollout::Serial(2));
            s.max_fail = max_fail;
            let mut c = Case::new(vec![s]);
            c.fail = vec![k("s", Phase::Upgrade, Some("s1"))];
            let (outcome, did, _) = c.run();
            // A tolerated failure lets the rollout go on, but the run still
            // ends failed: a node is not upgraded.
            assert_eq!(outcome, Outcome::Failed, "{max_fail:?}");
            let later = calls(&did).contains(&k("s", Phase::Upgrade, Some("s3")));
            assert_eq!(later, tolerated, "{max_fail:?}: {did:?}");
            let post = calls(&did).contains(&k("s", Phase::PostUpgrade, None));
            assert_eq!(post, tolerated, "{max_fail:?}");
        }
        // Two failures where one is tolerated: the rollout stops.
        let mut s = service("s", 4, Rollout::Serial(2));
        s.max_fail = MaxFail::Count(1);
        let mut c = Case::new(vec![s]);
        c.fail = vec![
            k("s", Phase::Upgrade, Some("s1")),
            k("s", Phase::Upgrade, Some("s2")),
        ];
        let (outcome, did, _) = c.run();
        assert_eq!(outcome, Outcome::Failed);
        assert_eq!(batches(&did), vec![set(&["s1", "s2"])]);
    }

    #[test]
    fn a_canary_pauses_after_the_first_batch() {
        let mut s = service("s", 3, Rollout::OneAtATime);
        s.canary = true;
        // Yes to "upgrade now?", no at the canary pause.
        let mut c = Case::new(vec![s.clone()]);
        c.confirm = Confirm::scripted(&[true, false]);
        let (outcome, did, events) = c.run();
        assert_eq!(outcome, Outcome::Interrupted);
        assert_eq!(batches(&did), vec![set(&["s1"])]);
        assert!(events.iter().any(|e| matches!(
            e,
            Event::Confirmation { prompt, accepted: false, .. } if prompt.starts_with("canary: s upgraded on s1")
        )));
        // Yes at the pause: the rest follows.
        let mut c = Case::new(vec![s]);
        c.confirm = Confirm::scripted(&[true, true, true]);
        let (outcome, did, _) = c.run();
        assert_eq!(outcome, Outcome::Complete);
        assert_eq!(batches(&did).len(), 3);
    }

    #[test]
    fn a_declined_start_changes_nothing() {
        let mut c = Case::new(vec![service("s", 2, Rollout::Parallel)]);
        c.confirm = Confirm::scripted(&[false]);
        let (outcome, did, _) = c.run();
        assert_eq!(outcome, Outcome::Interrupted);
        assert!(calls(&did).iter().all(|k| k.phase == Phase::Check));
    }

    #[test]
    fn a_failure_stops_new_work_and_rolls_back_in_reverse_order() {
        let mut c = Case::new(vec![
            service("db", 1, Rollout::Parallel),
            service("mq", 1, Rollout::Parallel),
            service("api", 1, Rollout::Parallel),
        ]);
        c.deps = vec![("mq", "db"), ("api", "mq")];
        c.fail = vec![k("mq", Phase::PostUpgrade, None)];
        c.rollback_on_failure = true;
        let (outcome, did, events) = c.run();
        assert_eq!(outcome, Outcome::RolledBack);
        let called = calls(&did);
        // api never started; nothing was finalized.
        assert!(
            !called
                .iter()
                .any(|k| k.service == "api" && k.phase != Phase::Check)
        );
        assert!(!called.iter().any(|k| k.phase == Phase::Finalize));
        // The touched services roll back, dependents first.
        let rollbacks: Vec<&str> = called
            .iter()
            .filter(|k| k.phase == Phase::Rollback)
            .map(|k| k.service.as_str())
            .collect();
        assert_eq!(rollbacks, ["mq", "db"]);
        assert!(events.iter().any(|e| matches!(
            e,
            Event::RollbackStarted { services, .. } if services == &["mq", "db"]
        )));
        // Without rollback: failed, nothing rolled back.
        let mut c = Case::new(vec![service("db", 1, Rollout::Parallel)]);
        c.fail = vec![k("db", Phase::PreUpgrade, None)];
        let (outcome, did, _) = c.run();
        assert_eq!(outcome, Outcome::Failed);
        assert!(!calls(&did).iter().any(|k| k.phase == Phase::Rollback));
    }

    #[test]
    fn an_interrupt_before_or_during_the_pre_flight_ends_interrupted() {
        let c = Case::new(vec![service("s", 2, Rollout::Parallel)]);
        c.interrupt.request();
        let (outcome, did, events) = c.run();
        assert_eq!(outcome, Outcome::Interrupted);
        assert!(calls(&did).is_empty(), "{did:?}");
        assert!(matches!(
            events.last(),
            Some(Event::RunFinished {
                outcome: Outcome::Interrupted,
                ..
            })
        ));
    }

    #[test]
    fn a_resumed_run_skips_the_steps_that_are_done() {
        let mut c = Case::new(vec![service("s", 3, Rollout::OneAtATime)]);
        c.prior = vec![
            k("s", Phase::Check, None),
            k("s", Phase::PreUpgrade, None),
            k("s", Phase::Upgrade, Some("s1")),
        ];
        let (outcome, did, _) = c.run();
        assert_eq!(outcome, Outcome::Complete);
        // Its check is done as well: nothing done is called again.
        assert_eq!(
            calls(&did),
            [
                k("s", Phase::Upgrade, Some("s2")),
                k("s", Phase::Upgrade, Some("s3")),
                k("s", Phase::PostUpgrade, None),
                k("s", Phase::Finalize, None),
            ]
        );
    }

    #[test]
    fn a_resumed_rollback_goes_on_with_the_rollback_only() {
        let mut c = Case::new(vec![
            service("db", 1, Rollout::Parallel),
            service("mq", 1, Rollout::Parallel),
        ]);
        c.prior = vec![k("mq", Phase::Rollback, None)];
        c.continue_rollback = Some(RollbackPlan {
            services: vec!["mq".into(), "db".into()],
            irreversible: vec![],
            steps: vec![],
        });
        let (outcome, did, _) = c.run();
        assert_eq!(outcome, Outcome::RolledBack);
        assert_eq!(calls(&did), [k("db", Phase::Rollback, None)]);
    }

    fn hk(hop: u32, service: &str, phase: Phase, node: Option<&str>) -> StepKey {
        StepKey {
            hop: Some(hop),
            ..k(service, phase, node)
        }
    }

    fn gate(name: &str) -> GateCommand {
        GateCommand {
            name: name.into(),
            command: vec!["true".into()],
            timeout_s: None,
        }
    }

    /// Three services; `mq` has two hops of its own chain, `db` and `api`
    /// three, `new` joins in the last.
    fn train() -> Case {
        use HopKind::Full;
        let mut c = Case::new(vec![
            train_service("db", 1, &[(0, Full), (1, Full), (2, Full)]),
            train_service("mq", 1, &[(0, Full), (1, Full)]),
            train_service("api", 2, &[(0, Full), (1, Full), (2, Full)]),
            train_service("new", 1, &[(2, Full)]),
        ]);
        c.deps = vec![("api", "db"), ("api", "mq"), ("new", "api")];
        c.gates = vec![gate("smoke")];
        c
    }

    #[test]
    fn a_train_finishes_each_hop_and_its_gate_before_the_next() {
        let (outcome, did, _) = train().run();
        assert_eq!(outcome, Outcome::Complete);
        let calls = calls(&did);
        let hop_of = |k: &StepKey| k.hop.expect("every step of a train has its hop");
        // Stage by stage: the hops never go back.
        let hops: Vec<u32> = calls.iter().map(hop_of).collect();
        assert!(hops.windows(2).all(|w| w[0] <= w[1]), "{calls:?}");
        // Within a hop, dependencies first; the gate last, after finalize.
        for h in 0..2 {
            assert!(
                pos(&did, &hk(h, "db", Phase::PostUpgrade, None))
                    < pos(&did, &hk(h, "api", Phase::PreUpgrade, None))
            );
            let smoke = pos(&did, &gate_key("smoke", h));
            assert!(pos(&did, &hk(h, "api", Phase::Finalize, None)) < smoke);
            assert!(pos(&did, &hk(h, "db", Phase::Verify, None)) < smoke);
        }
        // No gate after the last hop; `new` only in it; `mq` only in two.
        assert!(!calls.contains(&gate_key("smoke", 2)));
        assert!(!calls.iter().any(|k| k.service == "new" && k.hop != Some(2)));
        assert!(!calls.iter().any(|k| k.service == "mq" && k.hop == Some(2)));
        assert_eq!(
            calls
                .iter()
                .filter(|k| k.phase == Phase::Upgrade && k.service == "api")
                .count(),
            6
        );
    }

    #[test]
    fn a_failed_gate_stops_the_train_before_the_next_hop() {
        let mut c = train();
        c.fail = vec![gate_key("smoke", 1)];
        let (outcome, did, _) = c.run();
        assert_eq!(outcome, Outcome::Failed);
        assert!(!calls(&did).iter().any(|k| k.hop == Some(2)), "{did:?}");
        // Resumed with hops 1 and 2 done but the failed gate: only the gate
        // and hop 3 run.
        let mut c = train();
        c.prior = run_steps(
            &planned_of(&c.services),
            Some(&TrainRecord {
                hops: 3,
                style: "in-sequence".into(),
                gates: vec!["smoke".into()],
            }),
        )
        .into_iter()
        .filter(|k| k.hop < Some(2) && *k != gate_key("smoke", 1))
        .collect();
        let (outcome, did, _) = c.run();
        assert_eq!(outcome, Outcome::Complete);
        let calls = calls(&did);
        assert_eq!(calls[0], gate_key("smoke", 1));
        assert!(calls[1..].iter().all(|k| k.hop == Some(2)), "{calls:?}");
    }

    #[test]
    fn a_leapfrog_migrates_and_deploys_once() {
        use HopKind::{Full, MigrationsOnly};
        let c = Case::new(vec![train_service(
            "api",
            2,
            &[(0, MigrationsOnly), (1, MigrationsOnly), (2, Full)],
        )]);
        let (outcome, did, _) = c.run();
        assert_eq!(outcome, Outcome::Complete);
        let calls = calls(&did);
        let migrations: Vec<&StepKey> =
            calls.iter().filter(|k| k.phase == Phase::Migrate).collect();
        assert_eq!(
            migrations,
            [
                &hk(0, "api", Phase::Migrate, None),
                &hk(1, "api", Phase::Migrate, None)
            ]
        );
        let deploys: Vec<&StepKey> = calls.iter().filter(|k| k.phase == Phase::Upgrade).collect();
        assert!(
            deploys.iter().all(|k| k.hop == Some(2)) && deploys.len() == 2,
            "{calls:?}"
        );
        // Migrations-only hops have no health gate of their own.
        assert!(!calls.iter().any(|k| k.phase == Phase::Verify));
    }

    #[test]
    fn a_train_rolls_back_the_hop_in_progress_and_earlier_ones_only_if_all_can_be_undone() {
        use HopKind::{Full, MigrationsOnly};
        let mut c = Case::new(vec![
            train_service("db", 1, &[(0, Full), (1, Full)]),
            train_service("api", 1, &[(0, MigrationsOnly), (1, Full)]),
        ]);
        c.deps = vec![("api", "db")];
        c.fail = vec![hk(1, "api", Phase::PostUpgrade, None)];
        c.rollback_on_failure = true;
        let (outcome, did, events) = c.run();
        assert_eq!(outcome, Outcome::RolledBack);
        let rollbacks: Vec<StepKey> = calls(&did)
            .into_iter()
            .filter(|k| k.phase == Phase::Rollback)
            .collect();
        // api: only hop 2 (its hop 1 was migrations only); db: both hops,
        // newest first, after api.
        assert_eq!(
            rollbacks,
            [
                hk(1, "api", Phase::Rollback, None),
                hk(1, "db", Phase::Rollback, None),
                hk(0, "db", Phase::Rollback, None),
            ]
        );
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::RollbackStarted { steps, .. } if steps.len() == 3))
        );
    }

    /// The recorded plan of these services (as `planned` makes it).
    fn planned_of(services: &[ServiceRun]) -> Vec<PlannedService> {
        services
            .iter()
            .map(|s| PlannedService {
                name: s.name.clone(),
                level: 0,
                depends_on: vec![],
                nodes: s.targets.iter().map(|n| n.name.clone()).collect(),
                rollout: s.rollout.to_string(),
                reversible: s.reversible,
                hops: s.hops.clone(),
                guard: s.node_guard,
            })
            .collect()
    }

    #[test]
    fn a_pause_is_recorded_once_and_stops_new_work() {
        let c = Case::new(vec![service("s", 3, Rollout::OneAtATime)]);
        let log = Arc::new(Mutex::new(Vec::new()));
        let journal = Arc::new(Mem {
            sink: MemorySink::new(None),
            log: log.clone(),
        });
        let deps: BTreeMap<String, Vec<String>> = [("s".to_string(), vec![])].into();
        let runner = Runner::new(
            crate::planning::plan(&deps).unwrap(),
            c.services,
            BTreeMap::new(),
            journal.clone(),
            Arc::new(Script {
                fail: BTreeSet::new(),
                log: log.clone(),
            }),
            RunOptions {
                recorded: RunOptionsRecord::default(),
                forks: 1,
                confirm: Confirm::Yes,
                continue_rollback: None,
                interrupt: Arc::default(),
                gates: vec![],
                hop_probes: None,
                created: BTreeSet::new(),
                node_major: None,
                stamped: BTreeSet::new(),
                deferred: BTreeSet::new(),
            },
        );
        runner.pause("paused by a test".into());
        runner.pause("a second request".into());
        let outcome = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(runner.clone().run());
        assert_eq!(outcome, Outcome::Interrupted);
        assert!(calls(&log.lock().unwrap()).is_empty());
        let paused: Vec<Event> = journal
            .sink
            .events()
            .into_iter()
            .filter(|e| matches!(e, Event::Paused { .. }))
            .collect();
        assert_eq!(paused.len(), 1);
        assert_eq!(runner.paused().as_deref(), Some("paused by a test"));
    }

    /// A service on the named nodes (node-major runs share nodes).
    fn on(name: &str, nodes: &[&str], guard: bool) -> ServiceRun {
        let nodes: Vec<Arc<NodeSpec>> = nodes
            .iter()
            .map(|n| Arc::new(NodeSpec::simulated(n, &[name])))
            .collect();
        ServiceRun {
            nodes: Arc::new(NodeSet::new(nodes.clone())),
            targets: Arc::new(NodeSet::new(nodes)),
            node_guard: guard,
            ..service(name, 0, Rollout::Parallel)
        }
    }

    fn node_major_case() -> Case {
        let mut c = Case::new(vec![
            on("pcm", &["a", "b"], true),
            on("web", &["a", "b"], false),
            on("cmp", &["c"], false),
        ]);
        c.node_major = Some(crate::config::NodeMajorConfig::default());
        c
    }

    #[test]
    fn a_node_major_run_wraps_each_nodes_steps_in_its_guards_one_node_at_a_time() {
        use Phase::*;
        let (outcome, did, _) = node_major_case().run();
        assert_eq!(outcome, Outcome::Complete);
        let node_steps: Vec<StepKey> = calls(&did)
            .into_iter()
            .filter(|k| k.node.is_some())
            .collect();
        assert_eq!(
            node_steps,
            [
                k("pcm", Leave, Some("a")),
                k("pcm", Upgrade, Some("a")),
                k("web", Upgrade, Some("a")),
                k("pcm", Rejoin, Some("a")),
                k("pcm", Leave, Some("b")),
                k("pcm", Upgrade, Some("b")),
                k("web", Upgrade, Some("b")),
                k("pcm", Rejoin, Some("b")),
                k("cmp", Upgrade, Some("c")),
            ]
        );
        // Every pre-upgrade before the first node, every post-upgrade after
        // the last.
        let last_node = pos(&did, &k("cmp", Upgrade, Some("c")));
        for s in ["pcm", "web", "cmp"] {
            assert!(pos(&did, &k(s, PreUpgrade, None)) < pos(&did, &k("pcm", Leave, Some("a"))));
            assert!(pos(&did, &k(s, PostUpgrade, None)) > last_node);
        }
    }

    #[test]
    fn a_failed_rejoin_stops_a_node_major_run_before_the_next_node() {
        use Phase::*;
        let mut c = node_major_case();
        c.fail = vec![k("pcm", Rejoin, Some("a"))];
        let (outcome, did, _) = c.run();
        assert_eq!(outcome, Outcome::Failed);
        let called = calls(&did);
        assert!(called.contains(&k("pcm", Rejoin, Some("a"))));
        assert!(!called.iter().any(|k| k.node.as_deref() == Some("b")));
        assert!(!called.iter().any(|k| k.phase == PostUpgrade));
    }
}
