//! A run: pre-flight checks in dependency order, then per service (in
//! dependency order, independent services concurrently) pre-upgrade →
//! upgrade on each node following the rollout → post-upgrade, then finalize.
//! Every step is journaled; a resumed run skips every completed step. A
//! failure stops new work, lets in-flight steps finish, reports the failed
//! step and what remains, and optionally rolls back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Semaphore;

use super::confirm::Confirm;
use super::session::{ServiceRun, Session};
use crate::capabilities::Grant;
use crate::events::{Event, PlannedService, RunOptionsRecord, Sink, StepKey};
use crate::journal::{Journal, RollbackPlan, StepStatus};
use crate::runtime::{CallEnv, Hook, call_hook, wit_node};
use crate::transport::Transport;

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
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything done.
    Complete,
    /// A step failed (and nothing was rolled back).
    Failed,
    /// Failed, then rolled back.
    RolledBack,
    /// Stopped by the operator (Ctrl-C, declined confirmation); resumable.
    Interrupted,
}

impl Outcome {
    /// The journal's word for it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::Failed => "failed",
            Outcome::RolledBack => "rolled-back",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// Everything a run shares between its tasks.
pub struct Runner {
    session: Session,
    journal: Arc<Journal>,
    grants: BTreeMap<String, Arc<Grant>>,
    services: Vec<ServiceRun>,
    prior: BTreeMap<StepKey, StepStatus>,
    /// Set on failure or interruption: no new work starts.
    pub stop: Arc<AtomicBool>,
    interrupted: AtomicBool,
    forks: Semaphore,
    transport: Arc<dyn Transport>,
    opts: RunOptions,
    failures: Mutex<Vec<(StepKey, String)>>,
    touched: Mutex<BTreeSet<String>>,
    /// Each service's hook context, built once per run.
    ctxs: BTreeMap<String, crate::runtime::HookCtx>,
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
    use crate::events::Phase::*;
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
    /// Prepare a run (new or resumed).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        session: Session,
        journal: Arc<Journal>,
        grants: BTreeMap<String, Arc<Grant>>,
        services: Vec<ServiceRun>,
        prior: BTreeMap<StepKey, StepStatus>,
        transport: Arc<dyn Transport>,
        opts: RunOptions,
    ) -> Arc<Runner> {
        let touched = prior
            .keys()
            .filter(|k| k.phase == crate::events::Phase::PreUpgrade)
            .map(|k| k.service.clone())
            .collect();
        let ctxs = services
            .iter()
            .map(|s| {
                let c = session.hook_ctx(&s.name, &journal.run_id, opts.recorded.dry_run);
                (s.name.clone(), c)
            })
            .collect();
        Arc::new(Runner {
            ctxs,
            forks: Semaphore::new(opts.forks.max(1)),
            session,
            journal,
            grants,
            services,
            prior,
            stop: Arc::new(AtomicBool::new(false)),
            interrupted: AtomicBool::new(false),
            transport,
            opts,
            failures: Mutex::new(Vec::new()),
            touched: Mutex::new(touched),
        })
    }

    /// Stop scheduling new work (Ctrl-C): in-flight steps finish.
    pub fn interrupt(&self) {
        self.interrupted.store(true, Ordering::SeqCst);
        self.stop.store(true, Ordering::SeqCst);
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
        if phase == crate::events::Phase::PreUpgrade {
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
        let plugin = &self.session.plugins[&svc.name];
        let read_only = self.opts.recorded.dry_run || phase == crate::events::Phase::Check;
        let env = CallEnv {
            plugin: svc.name.clone(),
            step: key.clone(),
            grant: self.grants[&svc.name].clone(),
            nodes: svc.nodes.clone(),
            read_only,
            limits: svc.limits.clone(),
            transport: self.transport.clone(),
            sink: self.journal.clone(),
            record_dir: Some(self.journal.record_dir()),
        };
        let res = call_hook(
            &self.session.rt,
            &plugin.pre,
            env,
            &self.ctxs[&svc.name],
            hook,
        )
        .await
        .map_err(|e| e.to_string());
        let res = match self.journal.write_error() {
            Some(e) => Err(format!(
                "the journal could not be written ({e}); stopping so that nothing counts as done that is not on disk"
            )),
            None => res,
        };
        self.journal.emit(Event::StepFinished {
            step: key.clone(),
            at_ms: self.journal.now_ms(),
            status: if res.is_ok() { "ok" } else { "failed" }.to_string(),
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
        if self.stop.load(Ordering::SeqCst) {
            return Err(());
        }
        self.step(svc, Hook::PreUpgrade).await.map_err(|_| ())?;
        let tolerated = svc.max_fail.tolerated(svc.targets.len());
        let batches = svc.rollout.batches(svc.targets.len());
        let mut failed = 0usize;
        for (bi, batch) in batches.iter().enumerate() {
            if self.stop.load(Ordering::SeqCst) {
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
                        phase: crate::events::Phase::Upgrade,
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
        if self.stop.load(Ordering::SeqCst) {
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
            .session
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
        for level in self.session.plan.levels() {
            // This run's services of the level (--only may leave some out).
            let futs = level
                .iter()
                .filter_map(|p| self.services.iter().find(|s| s.name == p.name))
                .map(|s| self.step(s, Hook::Check));
            let ok = futures::future::join_all(futs)
                .await
                .iter()
                .all(|r| r.is_ok());
            if !ok || self.stop.load(Ordering::SeqCst) {
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
            return self.finish_failed(false).await;
        }
        let mutating = !self.opts.recorded.dry_run;
        let fresh = !self
            .prior
            .keys()
            .any(|k| k.phase != crate::events::Phase::Check);
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
            if !self.stop.load(Ordering::SeqCst) {
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
        if self.interrupted.load(Ordering::SeqCst) && !has_failures {
            return self.finish(Outcome::Interrupted);
        }
        if failed_any || has_failures {
            return self.finish_failed(true).await;
        }
        // Finalize: deployment-wide, once every service runs the new version.
        let finalize_pending = self.services.iter().any(|s| {
            self.prior
                .get(&StepKey::of(&s.name, crate::events::Phase::Finalize))
                != Some(&StepStatus::Done)
        });
        if mutating
            && finalize_pending
            && !self.confirm("every service is upgraded. Run the finalize steps (RPC unpin, deployment-wide work)?")
        {
            self.interrupt();
            return self.finish(Outcome::Interrupted);
        }
        for s in &self.services {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            if self.step(s, Hook::Finalize).await.is_err() {
                return self.finish_failed(true).await;
            }
        }
        if self.interrupted.load(Ordering::SeqCst) {
            return self.finish(Outcome::Interrupted);
        }
        self.finish(Outcome::Complete)
    }

    fn finish(&self, outcome: Outcome) -> Outcome {
        self.journal.emit(Event::RunFinished {
            outcome: outcome.as_str().to_string(),
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
            || (self.opts.confirm == Confirm::Ask
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
            if self.interrupted.load(Ordering::SeqCst) {
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
            .filter(|n| {
                self.prior
                    .get(&StepKey::of(n, crate::events::Phase::Rollback))
                    != Some(&StepStatus::Done)
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
