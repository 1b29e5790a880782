//! A run: pre-flight checks in dependency order, then per service (in
//! dependency order, independent services concurrently) pre-upgrade →
//! upgrade on each node following the rollout → post-upgrade, then finalize.
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
pub use crate::events::Outcome;
use crate::events::{Event, Phase, PlannedService, RunOptionsRecord, Sink, StepKey, StepResult};
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
}

impl RunJournal for Journal {
    fn run_id(&self) -> &str {
        &self.run_id
    }
    fn record_dir(&self) -> Option<PathBuf> {
        Some(Journal::record_dir(self))
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
}

/// The plugins of a session, called in the sandbox with their grants.
pub struct Sandbox {
    rt: Arc<Runtime>,
    plugins: BTreeMap<String, crate::runtime::bindings::PluginPre<crate::runtime::HostState>>,
    grants: BTreeMap<String, Arc<Grant>>,
    ctxs: BTreeMap<String, HookCtx>,
    transport: Arc<dyn Transport>,
    dry_run: bool,
    budget: Arc<crate::runtime::RunBudget>,
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
    ) -> Sandbox {
        Sandbox {
            rt: session.rt.clone(),
            plugins: services
                .iter()
                .map(|s| (s.name.clone(), session.plugins[&s.name].pre.clone()))
                .collect(),
            ctxs: services
                .iter()
                .map(|s| (s.name.clone(), session.hook_ctx(&s.name, run_id, dry_run)))
                .collect(),
            grants,
            transport,
            dry_run,
            budget: Arc::default(),
        }
    }
}

impl Hooks for Sandbox {
    fn call<'a>(
        &'a self,
        svc: &'a ServiceRun,
        step: StepKey,
        hook: Hook,
        journal: Arc<dyn RunJournal>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let io = CallIo {
                transport: self.transport.clone(),
                record_dir: journal.record_dir(),
                sink: journal,
                budget: self.budget.clone(),
            };
            let env = CallEnv::new(
                step,
                self.dry_run,
                self.grants[&svc.name].clone(),
                &svc.scope(),
                svc.limits.clone(),
                &io,
            );
            call_hook(
                &self.rt,
                &self.plugins[&svc.name],
                env,
                &self.ctxs[&svc.name],
                hook,
            )
            .await
            .map_err(|e| e.to_string())
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
    touched: Mutex<BTreeSet<String>>,
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
            }
        })
        .collect()
}

/// Every step of a service, in order.
pub fn steps_of(s: &PlannedService) -> Vec<StepKey> {
    use Phase::*;
    let k = |phase, node: Option<&String>| StepKey {
        service: s.name.clone(),
        phase,
        node: node.cloned(),
    };
    let mut v = vec![k(Check, None), k(PreUpgrade, None)];
    v.extend(s.nodes.iter().map(|n| k(Upgrade, Some(n))));
    v.push(k(PostUpgrade, None));
    v.push(k(Finalize, None));
    v
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
            .filter(|k| k.phase == Phase::PreUpgrade)
            .map(|k| k.service.clone())
            .collect();
        Arc::new(Runner {
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
        })
    }

    /// Stop scheduling new work (Ctrl-C): in-flight steps finish.
    pub fn interrupt(&self) {
        self.opts.interrupt.request();
        self.stop.store(true, Ordering::SeqCst);
    }

    /// No new work starts: a failure stopped the run, or it was
    /// interrupted (by the operator, a signal, a declined confirmation).
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.opts.interrupt.requested()
    }

    /// Run one step unless it is already done.
    async fn step(&self, svc: &ServiceRun, hook: Hook) -> Result<(), String> {
        let phase = hook.phase();
        let node = match &hook {
            Hook::Upgrade(n) => Some(n.name.clone()),
            _ => None,
        };
        let key = StepKey {
            service: svc.name.clone(),
            phase,
            node,
        };
        if self.prior.get(&key) == Some(&StepStatus::Done) {
            return Ok(());
        }
        let _permit = self.forks.acquire().await.expect("never closed");
        if phase == Phase::PreUpgrade {
            self.touched
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(svc.name.clone());
        }
        let t0 = Instant::now();
        self.journal.emit(Event::StepStarted {
            step: key.clone(),
            at_ms: self.journal.now_ms(),
        });
        let res = self
            .hooks
            .call(svc, key.clone(), hook, self.journal.clone())
            .await;
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

    /// Pre-upgrade, the rollout, post-upgrade of one service.
    async fn service(self: Arc<Self>, i: usize) -> Result<(), ()> {
        let svc = &self.services[i];
        if self.stopping() {
            return Err(());
        }
        self.step(svc, Hook::PreUpgrade).await.map_err(|_| ())?;
        let tolerated = svc.max_fail.tolerated(svc.targets.len());
        let batches = svc.rollout.batches(svc.targets.len());
        let mut failed = 0usize;
        for (bi, batch) in batches.iter().enumerate() {
            if self.stopping() {
                return Err(());
            }
            // At most `forks` node steps alive at once: a batch of 100 000
            // nodes must not hold 100 000 futures.
            use futures::StreamExt;
            let results: Vec<Result<(), String>> = futures::stream::iter(batch.clone())
                .map(|i| self.step(svc, Hook::Upgrade(wit_node(&svc.targets[i]))))
                .buffer_unordered(self.opts.forks.max(1))
                .collect()
                .await;
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
        self.step(svc, Hook::PostUpgrade).await.map_err(|_| ())
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

    /// Pre-flight: every service's check, level by level.
    async fn checks(self: &Arc<Self>) -> bool {
        for level in self.plan.levels() {
            if self.stopping() {
                return false;
            }
            // This run's services of the level (--only may leave some out).
            let futs = level
                .iter()
                .filter_map(|p| self.services.iter().find(|s| s.name == p.name))
                .map(|s| self.step(s, Hook::Check));
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

    /// Run everything; returns the outcome (the journal has the details).
    pub async fn run(self: Arc<Self>) -> Outcome {
        if let Some(plan) = self.opts.continue_rollback.clone() {
            return self.continue_rollback(plan).await;
        }
        if !self.checks().await {
            // Interrupted during the pre-flight: nothing changed, resumable.
            if self.opts.interrupt.requested() && self.failures().is_empty() {
                return self.finish(Outcome::Interrupted);
            }
            return self.finish_failed(false).await;
        }
        let mutating = !self.opts.recorded.dry_run;
        let fresh = !self.prior.keys().any(|k| k.phase != Phase::Check);
        if mutating && fresh {
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
            if !irreversible.is_empty() {
                prompt.push_str(&format!(
                    "\n  point of no return: {} cannot roll back",
                    irreversible.join(", ")
                ));
            }
            if !self.confirm(&prompt) {
                self.interrupt();
                return self.finish(Outcome::Interrupted);
            }
        }
        // Services in dependency order; independent ones concurrently.
        let mut pending: BTreeSet<usize> = (0..self.services.len()).collect();
        let mut done: BTreeSet<usize> = BTreeSet::new();
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
                    set.spawn(async move { (i, me.service(i).await) });
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
        let has_failures = !self
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty();
        if self.opts.interrupt.requested() && !has_failures {
            return self.finish(Outcome::Interrupted);
        }
        if failed_any || has_failures {
            return self.finish_failed(true).await;
        }
        // Finalize: deployment-wide, once every service runs the new version.
        let finalize_pending = self.services.iter().any(|s| {
            self.prior.get(&StepKey::of(&s.name, Phase::Finalize)) != Some(&StepStatus::Done)
        });
        if mutating
            && finalize_pending
            && !self.confirm("every service is upgraded. Run the finalize steps (RPC unpin, deployment-wide work)?")
        {
            self.interrupt();
            return self.finish(Outcome::Interrupted);
        }
        for s in &self.services {
            if self.stopping() {
                break;
            }
            if self.step(s, Hook::Finalize).await.is_err() {
                return self.finish_failed(true).await;
            }
        }
        if self.opts.interrupt.requested() {
            return self.finish(Outcome::Interrupted);
        }
        self.finish(Outcome::Complete)
    }

    fn finish(&self, outcome: Outcome) -> Outcome {
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
        let touched: BTreeSet<String> = self
            .touched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if !may_roll_back || touched.is_empty() {
            return self.finish(Outcome::Failed);
        }
        let rollback = self.opts.recorded.rollback_on_failure
            || (self.opts.confirm.asks_a_person()
                && self.opts.confirm.can_ask()
                && self.confirm(&format!(
                    "the run failed. Roll back the reversible services among {}?",
                    touched.iter().cloned().collect::<Vec<_>>().join(", ")
                )));
        if !rollback {
            return self.finish(Outcome::Failed);
        }
        // Reverse dependency order.
        let order: Vec<&ServiceRun> = self
            .services
            .iter()
            .rev()
            .filter(|s| touched.contains(&s.name))
            .collect();
        let (rev, irrev): (Vec<&ServiceRun>, Vec<&ServiceRun>) =
            order.into_iter().partition(|s| s.reversible);
        self.roll_back(RollbackPlan {
            services: rev.iter().map(|s| s.name.clone()).collect(),
            irreversible: irrev.iter().map(|s| s.name.clone()).collect(),
        })
        .await
    }

    /// Roll back the plan's services in its order (a service whose rollback
    /// is already done is skipped: a resumed rollback picks up where it
    /// stopped). A failed rollback does not stop the others; Ctrl-C stops
    /// after the rollback in flight, and `uphost resume` goes on with it.
    async fn roll_back(&self, plan: RollbackPlan) -> Outcome {
        self.journal.emit(Event::RollbackStarted {
            services: plan.services.clone(),
            irreversible: plan.irreversible,
        });
        let mut all_ok = true;
        for name in &plan.services {
            if self.opts.interrupt.requested() {
                return self.finish(Outcome::Interrupted);
            }
            let Some(s) = self.services.iter().find(|s| &s.name == name) else {
                continue;
            };
            if self.step(s, Hook::Rollback).await.is_err() {
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
        let left: Vec<&str> = plan
            .services
            .iter()
            .map(String::as_str)
            .filter(|n| self.prior.get(&StepKey::of(n, Phase::Rollback)) != Some(&StepStatus::Done))
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
    use crate::config::{Connection, Limits, NodeSet, NodeSpec};

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
            .map(|i| {
                Arc::new(NodeSpec {
                    name: format!("{name}{i}"),
                    address: format!("{name}{i}"),
                    port: None,
                    user: None,
                    key_file: None,
                    connection: Connection::DryRun,
                    become_user: None,
                    roles: vec![name.to_string()],
                    node_root: None,
                })
            })
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
        });
        let (outcome, did, _) = c.run();
        assert_eq!(outcome, Outcome::RolledBack);
        assert_eq!(calls(&did), [k("db", Phase::Rollback, None)]);
    }
}
