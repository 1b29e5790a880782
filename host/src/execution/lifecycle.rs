//! A run's lifecycle: what a run is (its [`RunState`], derived from its
//! journal), whether a new run may start or a stopped one resume, and the
//! way from a session to a finished run and what the operator is told
//! about it ([`RunEnd`]). The command line parses, calls and prints; every
//! decision about a run is here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::confirm::Confirm;
use super::run::{
    Interrupt, Outcome, RunOptions, Runner, Sandbox, planned, run_steps, steps_of, train_record,
};
use super::session::{ServiceRun, Session};
pub use super::tally::ServiceSummary;
use super::tally::{Tally, rolled_back};
use crate::Error;
use crate::capabilities::Grant;
use crate::events::{Event, Phase, PlannedService, RunOptionsRecord, Sink, StepKey, TrainRecord};
use crate::journal::etcd::{self, Held, Store};
use crate::journal::lock::RunLock;
use crate::journal::memory::MemorySink;
use crate::journal::{self, Journal, Observer, Replayed, RollbackPlan, StepStatus};
use crate::runtime::{CallEnv, CallIo, Hook, call_hook};
use crate::transport::Transports;

/// What a run is, as its journal tells. The one place that says what may
/// happen to a run next.
#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    /// Started, its upgrade under way or stopped without a last word (its
    /// uphost runs, or was killed: the run lock tells which).
    /// → `Complete`, `Failed`, `Interrupted`, or `RollingBack` when a
    /// failure is rolled back. `resume` continues the upgrade.
    Upgrading,
    /// Its rollback began and has not finished (failed, interrupted or
    /// killed meanwhile). → `RolledBack`, or stays here. `resume` goes on
    /// with the rollback, never with the upgrade.
    RollingBack(RollbackPlan),
    /// Every step done. Final: nothing to resume, a new run may start.
    Complete,
    /// Failed, then rolled back. Final: a new run starts over.
    RolledBack,
    /// A step failed, nothing rolled back. → `Upgrading` on `resume`
    /// (failed steps are retried, done ones skipped).
    Failed,
    /// Stopped by the operator or a full disk. → `Upgrading` on `resume`.
    Interrupted,
}

impl RunState {
    /// The state a replayed journal shows.
    pub fn of(r: &Replayed) -> RunState {
        match r.outcome() {
            Some(Outcome::Complete) => RunState::Complete,
            Some(Outcome::RolledBack) => RunState::RolledBack,
            _ if r.rollback.is_some() => {
                RunState::RollingBack(r.rollback.clone().unwrap_or_default())
            }
            Some(Outcome::Failed) => RunState::Failed,
            Some(Outcome::Interrupted) => RunState::Interrupted,
            None => RunState::Upgrading,
        }
    }

    /// Nothing more will happen to this run.
    pub fn is_final(&self) -> bool {
        matches!(self, RunState::Complete | RunState::RolledBack)
    }
}

/// Why a new run must not start, when it must not.
#[derive(Debug, Clone, PartialEq)]
pub struct Unfinished {
    /// The current run, stopped half-way.
    pub run_id: String,
    /// The refusal, with the ways on.
    pub why: String,
}

/// The current run when it stopped half-way after changing the cluster (a
/// real run, not final): a new run would lose its place, its plugin state
/// (backup paths) and its rollback. `None` when a new run may start.
pub fn unfinished(state_dir: &Path) -> Option<Unfinished> {
    let id = journal::current_run(state_dir).ok()?;
    let path = journal::run_dir(state_dir, &id).join("journal.jsonl");
    // The usual case, a run that finished, is read off the journal's tail;
    // only a run that did not is replayed.
    if let Some(Event::RunFinished { outcome, .. }) = journal::last_record(&path).ok()?
        && outcome.is_final()
    {
        return None;
    }
    let r = match journal::replay_summary(&path) {
        Ok(r) => r,
        // A journal that cannot be accounted for is not a finished run: a
        // new run is refused until the operator gives it up explicitly.
        Err(
            e
            @ (journal::JournalError::Corrupt { .. } | journal::JournalError::Inconsistent { .. }),
        ) => {
            return Some(Unfinished {
                run_id: id,
                why: e.to_string(),
            });
        }
        Err(_) => return None,
    };
    match r.run_started() {
        Some(Event::RunStarted { options, .. }) if options.dry_run => return None,
        Some(_) => {}
        // Without its start it cannot be resumed: say so, the same way
        // `resume` does.
        None if r.steps.is_empty() => return None,
        None => {
            return Some(Unfinished {
                why: no_start(&id, state_dir),
                run_id: id,
            });
        }
    }
    if !r.steps.keys().any(|k| k.phase != Phase::Check) {
        return None;
    }
    let failed: Vec<String> = r
        .steps
        .iter()
        .filter(|(_, s)| **s != StepStatus::Done)
        .map(|(k, s)| match s {
            StepStatus::Failed => format!("{k} failed"),
            _ => format!("{k} interrupted"),
        })
        .take(3)
        .collect();
    let why = format!(
        "run {id} stopped half-way ({}) and has changed the cluster: `uphost resume` continues it{} (`uphost status` shows where it stands). To give it up and start over, pass --abandon-unfinished (its journal stays in {})",
        if failed.is_empty() {
            "stopped between steps".to_string()
        } else {
            failed.join(", ")
        },
        if r.rollback.is_some() {
            " with its rollback"
        } else {
            ""
        },
        journal::run_dir(state_dir, &id).display()
    );
    Some(Unfinished { run_id: id, why })
}

/// A journal without its start record: what was planned is unknown.
fn no_start(run_id: &str, state_dir: &Path) -> String {
    format!(
        "run {run_id} has no start record (its journal was cut or edited): it cannot be resumed, since what it planned is unknown; check the cluster, then start over with `uphost run --abandon-unfinished` (its journal stays in {})",
        journal::run_dir(state_dir, run_id).display()
    )
}

/// What changed between a run's recorded plan and plugins and today's: a
/// line per difference, empty when the run may resume.
pub fn plan_diff(
    old: &[PlannedService],
    new: &[PlannedService],
    old_plugins: &[(String, String)],
    new_plugins: &[(String, String)],
) -> Vec<String> {
    let mut out = Vec::new();
    let om: BTreeMap<&str, &str> = old_plugins
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let nm: BTreeMap<&str, &str> = new_plugins
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    for (n, h) in &om {
        match nm.get(n) {
            None => out.push(format!("  - plugin {n} was removed")),
            Some(h2) if h2 != h => out.push(format!(
                "  ~ plugin {n} changed: sha256 {} -> {}",
                &h[..12.min(h.len())],
                &h2[..12.min(h2.len())]
            )),
            _ => {}
        }
    }
    for n in nm.keys() {
        if !om.contains_key(n) {
            out.push(format!("  + plugin {n} was added"));
        }
    }
    let os: BTreeMap<&str, &PlannedService> = old.iter().map(|s| (s.name.as_str(), s)).collect();
    let ns: BTreeMap<&str, &PlannedService> = new.iter().map(|s| (s.name.as_str(), s)).collect();
    for (n, s) in &os {
        match ns.get(n) {
            None => out.push(format!("  - service {n} is no longer in the plan")),
            Some(s2) if s2 != s => out.push(format!(
                "  ~ service {n}: nodes [{}] rollout {} -> nodes [{}] rollout {}",
                s.nodes.join(", "),
                s.rollout,
                s2.nodes.join(", "),
                s2.rollout
            )),
            _ => {}
        }
    }
    for n in ns.keys() {
        if !os.contains_key(n) {
            out.push(format!("  + service {n} joined the plan"));
        }
    }
    out
}

/// A train record as the operator reads it.
fn describe_train(t: Option<&TrainRecord>) -> String {
    match t {
        None => "one hop".into(),
        Some(t) => format!(
            "{} hops, {}, gates [{}]",
            t.hops,
            t.style,
            t.gates.join(", ")
        ),
    }
}

fn new_run_id() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    format!(
        "{}-{:04x}",
        now.format(&fmt).unwrap_or_default(),
        (std::process::id() ^ now.nanosecond()) & 0xffff
    )
}

/// Refuse a run that has confirmation points and no terminal to ask them.
pub fn need_terminal(yes: bool, dry_run: bool) -> Result<(), Error> {
    if !yes && !dry_run && !Confirm::Ask.can_ask() {
        return Err(Error::Usage(
            "this run has confirmation points and there is no terminal to ask on: run it interactively, or pass --yes to accept them".to_string(),
        ));
    }
    Ok(())
}

/// Say so when the last uphost died holding the run lock.
fn tell_taken_over(lock: &RunLock) {
    if let Some(h) = &lock.took_over {
        tracing::warn!(
            "the previous uphost ({h}) stopped without releasing the run lock (killed or crashed); lock taken over"
        );
    }
}

/// The operator's choices for a new run.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Recorded with the run (dry run, --only, --limit, rollback).
    pub recorded: RunOptionsRecord,
    /// Accept every confirmation.
    pub yes: bool,
    /// Parallelism bound (default: the configuration's).
    pub forks: Option<usize>,
    /// Start even over an unfinished run.
    pub abandon_unfinished: bool,
    /// Stop it as a first Ctrl-C does (set by a signal, possibly before
    /// the run starts).
    pub interrupt: Arc<Interrupt>,
}

/// A run ready to execute: its lock held, its start on disk.
pub struct Prepared {
    session: Session,
    journal: Arc<Journal>,
    grants: BTreeMap<String, Arc<Grant>>,
    services: Vec<ServiceRun>,
    prior: BTreeMap<StepKey, StepStatus>,
    opts: RunOptions,
    plan: Vec<PlannedService>,
    train: Option<TrainRecord>,
    /// A dry run kept beside this unfinished run, which stays current.
    pub aside_of: Option<String>,
    /// Commands a resumed run found started and not finished: they run
    /// again (the operator is told).
    pub in_doubt: Vec<(StepKey, u32)>,
    /// The node each command in doubt was started on.
    in_doubt_nodes: BTreeMap<(StepKey, u32), String>,
    _lock: RunLock,
    /// The run lock on etcd, when the journal is replicated there.
    held: Option<Arc<Held>>,
    /// A new run's summary and report, gathered as its journal is written
    /// (none for a resumed run: its journal holds earlier attempts).
    tally: Option<Arc<std::sync::Mutex<Tally>>>,
}

impl Prepared {
    /// The run's id.
    pub fn run_id(&self) -> &str {
        &self.journal.run_id
    }
}

/// Start a new run: take the run lock, refuse to start over an unfinished
/// run (a dry run may look ahead beside it), record the start.
pub fn start(
    session: Session,
    o: StartOptions,
    observers: impl FnOnce(&Path) -> Vec<Observer>,
) -> Result<Prepared, Error> {
    let grants = session.grants()?;
    let services = session.services(&o.recorded.only, &o.recorded.limit)?;
    if o.recorded.node_major && super::run::is_train(&services) {
        return Err(Error::Usage(
            "a node-major run updates each node once, from the installed release to the target: it cannot be a release train of several hops. Nothing was executed. Run the train service-major (`--order service-major`), or give each service one hop (from_version and to_version adjacent)".into(),
        ));
    }
    need_terminal(o.yes, o.recorded.dry_run)?;
    require_window(&session, o.recorded.dry_run)?;
    let state_dir = session.cfg.state_dir.clone();
    let lock = journal::lock::acquire(&state_dir, "run")?;
    tell_taken_over(&lock);
    // A dry run changes nothing and needs no standby: it stays local.
    let held = if o.recorded.dry_run {
        None
    } else {
        replicated_lock(&session, "run", &o.interrupt)?
    };
    if let Some(h) = &held {
        from_etcd(h, &state_dir)?;
    }
    // A dry run changes nothing, so it may look ahead while a real run is
    // unfinished; it is kept beside that run, which stays the current one.
    let aside_of = match unfinished(&state_dir) {
        Some(_) if o.abandon_unfinished => None,
        Some(u) if o.recorded.dry_run => Some(u.run_id),
        Some(u) => return Err(Error::Usage(u.why)),
        None => None,
    };
    let run_id = new_run_id();
    // The run becomes current once its start is on disk.
    let observers = observers(&journal::run_dir(&state_dir, &run_id));
    let tally = Arc::new(std::sync::Mutex::new(Tally::default()));
    let journal = Journal::create(&state_dir, &run_id, observers)?.tap({
        let tally = tally.clone();
        Box::new(move |ev| tally.lock().unwrap_or_else(|p| p.into_inner()).add(ev))
    });
    let journal = match &held {
        _ if o.recorded.dry_run => journal.volatile(),
        Some(h) => journal.replicate_to(h.clone(), 0),
        None => journal,
    };
    let plan = planned(&services, &session);
    let train = train_record(&services, &session);
    journal.emit(Event::RunStarted {
        run_id: run_id.clone(),
        time: crate::events::now_rfc3339(),
        plan: plan.clone(),
        plugins: plugin_hashes(&session),
        options: o.recorded.clone(),
        train: train.clone(),
    });
    let started = match journal.write_error() {
        Some(e) => Err(e),
        None if aside_of.is_none() => journal.make_current(&state_dir).map_err(|e| e.to_string()),
        None => Ok(()),
    };
    if let Err(e) = started {
        journal.discard(&state_dir);
        return Err(Error::Failed(format!(
            "the run could not start: its journal cannot be written ({e}); nothing was run. Free space in {} and run again",
            state_dir.display()
        )));
    }
    let node_major = o.recorded.node_major;
    let opts = RunOptions {
        recorded: o.recorded,
        forks: o.forks.unwrap_or(session.cfg.forks),
        confirm: Confirm::from_flag(o.yes),
        continue_rollback: None,
        interrupt: o.interrupt,
        gates: session.cfg.services.train.gates.clone(),
        hop_probes: session.cfg.services.train.probes.clone(),
        created: Default::default(),
        node_major: node_major.then(|| session.cfg.services.node_major.clone()),
        stamped: Default::default(),
        deferred: Default::default(),
    };
    Ok(Prepared {
        session,
        journal: Arc::new(journal),
        grants,
        services,
        prior: BTreeMap::new(),
        opts,
        plan,
        train,
        aside_of,
        in_doubt: Vec::new(),
        in_doubt_nodes: BTreeMap::new(),
        _lock: lock,
        held,
        tally: Some(tally),
    })
}

/// The run lock on etcd, when `etcd:` is configured: a lost lease stops
/// the run as an interrupt does (and every write after it is fenced).
fn replicated_lock(
    session: &Session,
    command: &str,
    interrupt: &Arc<Interrupt>,
) -> Result<Option<Arc<Held>>, Error> {
    let Some(settings) = &session.cfg.etcd else {
        return Ok(None);
    };
    let store = Store::connect(settings)?;
    let interrupt = interrupt.clone();
    let held = super::takeover::lock(&store, command, move || interrupt.request())?;
    Ok(Some(Arc::new(held)))
}

/// Bring the deployment's current run from etcd into the local state
/// directory (the copy on etcd is the one that counts): its id and its
/// number of records.
fn from_etcd(held: &Held, state_dir: &Path) -> Result<Option<(String, u64)>, Error> {
    let store = held.store();
    let Some(id) = store.current()? else {
        return Ok(None);
    };
    let lines = store.records(&id)?;
    if lines.is_empty() {
        return Ok(None);
    }
    etcd::materialize(state_dir, &id, &lines, true)?;
    Ok(Some((id, lines.len() as u64)))
}

fn plugin_hashes(session: &Session) -> Vec<(String, String)> {
    session
        .plugins
        .values()
        .map(|p| (p.name.clone(), p.sha256.clone()))
        .collect()
}

/// The operator's choices for a resume.
#[derive(Debug, Clone, Default)]
pub struct ResumeOptions {
    /// Accept every confirmation.
    pub yes: bool,
    /// Parallelism bound (default: the configuration's).
    pub forks: Option<usize>,
    /// Stop it as a first Ctrl-C does.
    pub interrupt: Arc<Interrupt>,
    /// The run lock on etcd, already taken (by `uphost standby`).
    pub held: Option<Arc<Held>>,
}

/// What `resume` found.
pub enum Resume {
    /// The current run is complete: nothing to do.
    AlreadyComplete(String),
    /// Ready to go on (with the upgrade, or with its rollback).
    Continue(Box<Prepared>),
}

/// Resume the current run: take the run lock, replay its journal, refuse
/// a run that is rolled back, has no start, or whose plugins or plan
/// changed; otherwise go on where it stopped.
pub fn resume(
    session: Session,
    o: ResumeOptions,
    observers: impl FnOnce(&Path) -> Vec<Observer>,
) -> Result<Resume, Error> {
    let ResumeOptions {
        yes,
        forks,
        interrupt,
        held,
    } = o;
    let state_dir = session.cfg.state_dir.clone();
    let lock = journal::lock::acquire(&state_dir, "resume")?;
    tell_taken_over(&lock);
    let held = match held {
        Some(h) => Some(h),
        None => replicated_lock(&session, "resume", &interrupt)?,
    };
    let records = match &held {
        None => None,
        Some(h) => match from_etcd(h, &state_dir)? {
            Some((_, n)) => Some(n),
            None => {
                return Err(Error::Usage(format!(
                    "there is no run on etcd under {} to resume; a run kept in the local state directory moves there with `uphost state import`",
                    h.store().prefix()
                )));
            }
        },
    };
    let run_id = journal::current_run(&state_dir)?;
    let observers = observers(&journal::run_dir(&state_dir, &run_id));
    let (journal, replayed) = Journal::reopen(&state_dir, &run_id, observers)?;
    let journal = match (&held, records) {
        (Some(h), Some(n)) => journal.replicate_to(h.clone(), n),
        _ => journal,
    };
    let state = RunState::of(&replayed);
    match &state {
        RunState::Complete => return Ok(Resume::AlreadyComplete(run_id)),
        RunState::RolledBack => {
            return Err(Error::Usage(format!(
                "run {run_id} was rolled back ({}); there is nothing to resume: once the cause of its failure is fixed, start a new upgrade with `uphost run`",
                replayed
                    .rollback
                    .as_ref()
                    .map(|rb| rb.services.join(", "))
                    .unwrap_or_default()
            )));
        }
        _ => {}
    }
    let Some(Event::RunStarted {
        plan: rec_plan,
        plugins: rec_plugins,
        options,
        train: rec_train,
        ..
    }) = replayed.run_started().cloned()
    else {
        return Err(Error::Failed(no_start(&run_id, &state_dir)));
    };
    let services = session.services(&options.only, &options.limit)?;
    let plan = planned(&services, &session);
    let train = train_record(&services, &session);
    let mut diff = plan_diff(&rec_plan, &plan, &rec_plugins, &plugin_hashes(&session));
    if rec_train != train {
        diff.push(format!(
            "  ~ the release train changed: {} -> {}",
            describe_train(rec_train.as_ref()),
            describe_train(train.as_ref())
        ));
    }
    if !diff.is_empty() {
        return Err(Error::Usage(format!(
            "run {run_id} cannot be resumed: the plugins or the plan changed since it began:\n{}\nrestore what changed, or start a new run with `uphost run`",
            diff.join("\n")
        )));
    }
    let grants = session.grants()?;
    need_terminal(yes, options.dry_run)?;
    require_window(&session, options.dry_run)?;
    // A pause asked for earlier is over: this resume is the go.
    let _ = std::fs::remove_file(journal::run_dir(&state_dir, &run_id).join(PAUSE_REQUEST));
    let in_doubt = journal.resolve_in_doubt(&replayed);
    journal.emit(Event::RunResumed {
        time: crate::events::now_rfc3339(),
        at_ms: journal.now_ms(),
    });
    let opts = RunOptions {
        forks: forks.unwrap_or(session.cfg.forks),
        confirm: Confirm::from_flag(yes),
        continue_rollback: match state {
            RunState::RollingBack(plan) => Some(plan),
            _ => None,
        },
        interrupt,
        gates: session.cfg.services.train.gates.clone(),
        hop_probes: session.cfg.services.train.probes.clone(),
        created: replayed.created.clone(),
        node_major: options
            .node_major
            .then(|| session.cfg.services.node_major.clone()),
        stamped: replayed.stamped.clone(),
        deferred: replayed.deferred.clone(),
        recorded: options,
    };
    Ok(Resume::Continue(Box::new(Prepared {
        session,
        journal: Arc::new(journal),
        grants,
        services,
        prior: replayed.steps,
        opts,
        plan,
        train,
        aside_of: None,
        in_doubt,
        in_doubt_nodes: replayed.in_doubt.clone(),
        _lock: lock,
        held,
        tally: None,
    })))
}

/// Learn on the nodes what became of the commands in doubt of a run whose
/// journal is replicated on etcd (its last holder may have died on another
/// machine, with its local records): each ssh node keeps the record of
/// the command it runs (`transport::ssh::record_on_node`). A finished one
/// is replayed, not run again; one still running is waited for; one that
/// never started runs again; one whose outcome cannot be known stops the
/// resume with what to check and how to go on. Nothing runs before all
/// are settled.
pub async fn settle_on_nodes(p: &mut Prepared) -> Result<(), Error> {
    use crate::transport::ssh::{
        NodeRecord, node_record_file, node_record_probe, parse_node_record,
    };
    use crate::transport::{CommandSpec, Transport};
    let Some(dir) = p.journal.node_record_dir() else {
        return Ok(());
    };
    if p.in_doubt.is_empty() {
        return Ok(());
    }
    let transports = Transports::new(p.session.cfg.ssh.clone());
    let cap = p.session.cfg.limits.output_cap;
    let ran_here = p.journal.record_dir().is_dir();
    let mut again = Vec::new();
    let mut result = Ok(());
    'commands: for (step, seq) in std::mem::take(&mut p.in_doubt) {
        let name = p.in_doubt_nodes.get(&(step.clone(), seq)).cloned();
        let node = name
            .as_deref()
            .and_then(|n| p.session.cfg.inventory.node(n));
        let unknown = |why: String| {
            Error::Failed(format!(
                "command #{seq} of {step} on {} started under the uphost that held this run, and its outcome cannot be known: {why}. Nothing was run. Check on that node whether it did its work; then say so on the node (`echo STATUS > {dir}/{}/rc`: 0 if it did) or, if it did not, remove {dir}/{} there, and run `uphost resume` again",
                name.as_deref().unwrap_or("?"),
                crate::transport::record::record_name(&step, seq),
                crate::transport::record::record_name(&step, seq),
            ))
        };
        let Some(node) = node else {
            result = Err(unknown("its node is no longer in the inventory".into()));
            break;
        };
        if node.connection != crate::config::Connection::Ssh {
            // Its record is the control host's own: here if this machine ran it.
            if ran_here {
                again.push((step, seq));
                continue;
            }
            result = Err(unknown(format!(
                "{} is reached without ssh, so its record was on the machine that ran it, not this one",
                node.name
            )));
            break;
        }
        let rec = format!(
            "{dir}/{}",
            crate::transport::record::record_name(&step, seq)
        );
        let read = |argv: Vec<String>| {
            let mut spec = CommandSpec::operator(&argv, std::time::Duration::from_secs(60));
            spec.output_cap = cap;
            spec
        };
        let mut told = false;
        loop {
            let probe = transports.exec(node, &read(node_record_probe(&rec))).await;
            let state = match probe {
                Ok(o) if o.status == 0 => parse_node_record(&String::from_utf8_lossy(&o.stdout)),
                Ok(o) => {
                    result = Err(Error::Failed(format!(
                        "cannot read the record of command #{seq} of {step} on {}: exit {}: {}; nothing was run. Run `uphost resume` again once the node answers",
                        node.name,
                        o.status,
                        crate::untrusted::line(&String::from_utf8_lossy(&o.stderr))
                    )));
                    break 'commands;
                }
                Err(e) => {
                    result = Err(Error::Failed(format!(
                        "cannot learn whether command #{seq} of {step} ran on {}: {e}; nothing was run. Run `uphost resume` again once the node answers",
                        node.name
                    )));
                    break 'commands;
                }
            };
            match state {
                Some(NodeRecord::Absent) => {
                    again.push((step.clone(), seq));
                    break;
                }
                Some(NodeRecord::Running) => {
                    if !told {
                        tracing::warn!(node = %node.name, %step, seq, "a command of the previous holder is still running on the node; waiting for it");
                        told = true;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                }
                Some(NodeRecord::Done(status)) => {
                    let cat = |f: &str| read(node_record_file(&rec, f));
                    let (out, err) = (
                        transports.exec(node, &cat("out")).await,
                        transports.exec(node, &cat("err")).await,
                    );
                    let text = |r: &Result<crate::transport::CommandOutput, _>| {
                        r.as_ref()
                            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                            .unwrap_or_default()
                    };
                    p.journal.settle(
                        &step,
                        seq,
                        crate::events::CommandRecord::exited(
                            status,
                            text(&out),
                            text(&err),
                            true,
                            0,
                        ),
                    );
                    break;
                }
                Some(NodeRecord::Lost) => {
                    result = Err(unknown(format!(
                        "its record in {rec} on the node says it started, and its process is gone with no exit status (the node rebooted, or it was killed)"
                    )));
                    break 'commands;
                }
                None => {
                    result = Err(unknown(format!(
                        "its record in {rec} on the node cannot be read"
                    )));
                    break 'commands;
                }
            }
        }
    }
    transports.close();
    p.in_doubt = again;
    result
}

/// The last commands of a failed step, as the operator is shown them./// The last commands of a failed step, as the operator is shown them.
#[derive(Debug, Clone)]
pub struct ShownCommand {
    /// Node.
    pub node: String,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// `exit N`, or why it has no status.
    pub status: String,
    /// The last lines of its stdout.
    pub stdout: Vec<String>,
    /// The last lines of its stderr.
    pub stderr: Vec<String>,
}

/// A failed step and what it ran last.
#[derive(Debug, Clone)]
pub struct FailedStep {
    /// The step.
    pub step: StepKey,
    /// Its error.
    pub error: String,
    /// Its last five commands.
    pub commands: Vec<ShownCommand>,
}

/// What is left of a run that did not complete.
#[derive(Debug, Clone, PartialEq)]
pub enum Left {
    /// It was rolled back: a new run starts over.
    RolledBack,
    /// Its rollback of these services is not complete: `resume` goes on
    /// with it.
    Rollback(Vec<String>),
    /// These steps are not done, with their status word.
    Steps(Vec<(StepKey, &'static str)>),
}

/// How a run ended and everything the operator is told about it.
pub struct RunEnd {
    /// The run.
    pub run_id: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Why it was paused (`uphost pause`, the maintenance window), if it was.
    pub paused: Option<String>,
    /// Why it was halted (a probe past its budget), if it was.
    pub halted: Option<String>,
    /// Failed steps with their last commands.
    pub failures: Vec<FailedStep>,
    /// What is left (nothing when complete).
    pub left: Option<Left>,
    /// Per service, in plan order.
    pub summary: Vec<ServiceSummary>,
    /// The journal.
    pub journal: PathBuf,
    /// The HTML report, or why it could not be written.
    pub report: Result<PathBuf, String>,
    /// The unfinished run a dry run was kept beside.
    pub aside_of: Option<String>,
}

/// Run a prepared run to its end. `on_start` is handed the runner and the
/// transports (to close them on an abort) before it starts.
pub async fn execute(
    p: Prepared,
    on_start: impl FnOnce(&Arc<Runner>, &Arc<Transports>),
) -> Result<RunEnd, Error> {
    let Prepared {
        session,
        journal,
        grants,
        services,
        prior,
        opts,
        plan,
        train,
        aside_of,
        in_doubt: _,
        in_doubt_nodes: _,
        _lock,
        held,
        tally,
    } = p;
    let run_id = journal.run_id.clone();
    let path = journal.path.clone();
    let state_dir = session.cfg.state_dir.clone();
    let dry_run = opts.recorded.dry_run;
    let transports = Arc::new(Transports::new(session.cfg.ssh.clone()));
    let board = Arc::new(super::probes::ProbeBoard::default());
    let mut probes = session.cfg.services.probes.clone();
    probes.extend(session.plugin_probes(&services));
    let sandbox = Sandbox::new(
        &session,
        &services,
        grants,
        transports.clone(),
        &run_id,
        opts.recorded.dry_run,
        board.clone(),
    );
    let runner = Runner::new(
        session.plan.clone(),
        services,
        prior,
        journal.clone(),
        Arc::new(sandbox),
        opts,
    );
    on_start(&runner, &transports);
    let watcher = tokio::spawn(watch_for_pause(
        runner.clone(),
        journal::run_dir(&state_dir, &run_id).join(PAUSE_REQUEST),
        if dry_run {
            None
        } else {
            session.cfg.window.clone()
        },
    ));
    let probes = (!dry_run).then(|| {
        let r = runner.clone();
        let (probes, end) = super::probes::Probes::start(
            &probes,
            &session.cfg.inventory,
            transports.clone(),
            journal.clone(),
            Arc::new(move |why| r.halt(why)),
            board,
        );
        runner.before_end(end);
        probes
    });
    let outcome = runner.clone().run().await;
    watcher.abort();
    if let Some(p) = probes {
        p.stop().await;
    }
    let paused = runner.paused();
    let halted = runner.halted();
    let failures = runner.failures();
    drop(runner);
    // The process exits without running drops: close ssh masters now.
    transports.close();
    let all_written = journal.write_error().is_none();
    drop(journal);
    let failures = failed_steps(&failures, &path)?;
    // A new run that completed with every record written: its summary and
    // report were gathered as the journal was written.
    let (summary, left, report) =
        match tally.filter(|_| all_written && outcome == Outcome::Complete) {
            Some(tally) => {
                let tally = tally.lock().unwrap_or_else(|p| p.into_inner());
                let report = tally
                    .report()
                    .write(&state_dir, &run_id)
                    .map_err(|e| e.to_string());
                (
                    plan.iter().map(|s| tally.summary(s)).collect(),
                    None,
                    report,
                )
            }
            // Otherwise the summary and the report each read the journal back
            // from disk: side by side (a 100 000-node run's journal is 1 GB of
            // records).
            None => {
                let report = {
                    let (dir, id) = (state_dir.clone(), run_id.clone());
                    tokio::task::spawn_blocking(move || {
                        crate::report::write(&dir, &id).map_err(|e| e.to_string())
                    })
                };
                let replayed = journal::replay_summary(&path);
                let report = report
                    .await
                    .unwrap_or_else(|e| Err(format!("the report could not be written: {e}")));
                let replayed = replayed?;
                let left = (outcome != Outcome::Complete)
                    .then(|| left(&plan, train.as_ref(), &replayed, outcome));
                (
                    plan.iter().map(|s| summarize(s, &replayed)).collect(),
                    left,
                    report,
                )
            }
        };
    if let Some(h) = held {
        h.release();
    }
    Ok(RunEnd {
        run_id,
        outcome,
        paused,
        halted,
        failures,
        left,
        summary,
        journal: path,
        report,
        aside_of,
    })
}

/// The file `uphost pause` writes in a run's directory: who asked.
pub const PAUSE_REQUEST: &str = "pause-request";

/// Pause `runner` when `uphost pause` asks (its request in `request`) or
/// when the maintenance window closes; looked at every 200 ms, so a run
/// pauses at the first step boundary after.
async fn watch_for_pause(
    runner: Arc<Runner>,
    request: PathBuf,
    window: Option<crate::config::window::Window>,
) {
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        if let Ok(who) = std::fs::read_to_string(&request) {
            runner.pause(format!(
                "paused by `uphost pause` ({})",
                crate::untrusted::line_max(who.trim(), 200)
            ));
            return;
        }
        if let Some(why) = window
            .as_ref()
            .and_then(|w| w.closed_at(time::OffsetDateTime::now_utc()))
        {
            runner.pause(format!("paused: {why}"));
            return;
        }
    }
}

/// A run that would change the cluster may not start outside the
/// maintenance window: the error says when it opens.
fn require_window(session: &Session, dry_run: bool) -> Result<(), Error> {
    if dry_run {
        return Ok(());
    }
    match session
        .cfg
        .window
        .as_ref()
        .and_then(|w| w.closed_at(time::OffsetDateTime::now_utc()))
    {
        Some(why) => Err(Error::Usage(format!(
            "{why}: nothing was run. Run it then, or change `window:` in {}",
            session.cfg.path.display()
        ))),
        None => Ok(()),
    }
}

/// Ask the running run (`run`, or the current one) to pause: its uphost
/// lets the steps in flight finish, starts nothing new and ends the run
/// interrupted, for `uphost resume`. The run's id.
pub fn request_pause(state_dir: &Path, run: Option<&str>) -> Result<String, Error> {
    let run_id = super::inspect::run_or_current(state_dir, run)?;
    if journal::lock::running(state_dir, &run_id).is_none() {
        return Err(Error::Usage(format!(
            "run {run_id} is not running: there is nothing to pause (`uphost status` shows where it stands)"
        )));
    }
    let who = format!(
        "{}, pid {}, at {}",
        std::env::var("USER").unwrap_or_else(|_| "someone".into()),
        std::process::id(),
        crate::events::now_rfc3339()
    );
    let path = journal::run_dir(state_dir, &run_id).join(PAUSE_REQUEST);
    std::fs::write(&path, who).map_err(|e| {
        Error::Failed(format!(
            "cannot write the pause request {}: {e}",
            path.display()
        ))
    })?;
    Ok(run_id)
}

fn failed_steps(failures: &[(StepKey, String)], path: &Path) -> Result<Vec<FailedStep>, Error> {
    if failures.is_empty() {
        return Ok(Vec::new());
    }
    let failed: BTreeSet<&StepKey> = failures.iter().map(|(s, _)| s).collect();
    let mut by_step: BTreeMap<StepKey, Vec<ShownCommand>> = BTreeMap::new();
    journal::for_each(path, |e| {
        if let Event::CommandFinished {
            step,
            node,
            argv,
            result,
            ..
        } = e
            && failed.contains(&step)
        {
            let tail = |text: &str| -> Vec<String> {
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(6)..]
                    .iter()
                    .map(|l| l.to_string())
                    .collect()
            };
            by_step.entry(step).or_default().push(ShownCommand {
                node,
                argv,
                status: result
                    .status
                    .map(|s| format!("exit {s}"))
                    .or(result.error.clone())
                    .unwrap_or_default(),
                stdout: tail(&result.stdout),
                stderr: tail(&result.stderr),
            });
        }
    })?;
    Ok(failures
        .iter()
        .map(|(step, error)| {
            let mut commands = by_step.get(step).cloned().unwrap_or_default();
            commands.drain(..commands.len().saturating_sub(5));
            FailedStep {
                step: step.clone(),
                error: error.clone(),
                commands,
            }
        })
        .collect())
}

fn left(
    plan: &[PlannedService],
    train: Option<&TrainRecord>,
    r: &Replayed,
    outcome: Outcome,
) -> Left {
    if outcome == Outcome::RolledBack {
        return Left::RolledBack;
    }
    if let Some(rb) = &r.rollback {
        return Left::Rollback(rb.services.clone());
    }
    Left::Steps(
        run_steps(plan, train)
            .into_iter()
            .filter_map(|k| match r.steps.get(&k) {
                Some(StepStatus::Done) => None,
                Some(StepStatus::Failed) => Some((k, "failed")),
                Some(StepStatus::Running) => Some((k, "interrupted")),
                None => Some((k, "remaining")),
            })
            .collect(),
    )
}

pub(crate) fn summarize(s: &PlannedService, r: &Replayed) -> ServiceSummary {
    let steps = steps_of(s);
    let count = |want: StepStatus| {
        steps
            .iter()
            .filter(|k| r.steps.get(*k) == Some(&want))
            .count()
    };
    ServiceSummary {
        name: s.name.clone(),
        done: count(StepStatus::Done),
        failed: count(StepStatus::Failed),
        total: steps.len(),
        rolled_back: rolled_back(&r.steps, &s.name),
    }
}

/// One service's pre-flight result.
pub struct Checked {
    /// Service.
    pub service: String,
    /// Its check's result.
    pub result: Result<(), String>,
}

/// Every selected service's `check`, read-only, with no journal: each
/// result and the commands the grants denied.
pub async fn preflight(
    session: &Session,
    only: &[String],
    limit: &[String],
) -> Result<(Vec<Checked>, Vec<Event>), Error> {
    let grants = session.grants()?;
    let services = session.services(only, limit)?;
    let sink = Arc::new(MemorySink::new(None));
    let transports = Arc::new(Transports::new(session.cfg.ssh.clone()));
    let io = CallIo {
        transport: transports.clone(),
        sink: sink.clone(),
        record_dir: None,
        node_records: None,
        budget: Default::default(),
        deferred: Default::default(),
        reboot: Arc::new(session.cfg.reboot.clone()),
    };
    let mut checked = Vec::new();
    for svc in &services {
        let env = CallEnv::new(
            StepKey::of(&svc.name, Phase::Check),
            true,
            grants[&svc.name].clone(),
            &svc.scope(),
            svc.limits.clone(),
            &io,
        );
        let hctx = session.hook_ctxs(svc, "check", true).swap_remove(0);
        let p = &session.plugins[&svc.name];
        let result = call_hook(&session.rt, &p.pre, env, &hctx, Hook::Check)
            .await
            .map_err(|e| e.to_string());
        checked.push(Checked {
            service: svc.name.clone(),
            result,
        });
    }
    transports.close();
    let denied = sink
        .events()
        .into_iter()
        .filter(|e| matches!(e, Event::Denied { .. }))
        .collect();
    Ok((checked, denied))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::StepResult;

    fn replayed(events: &[Event]) -> Replayed {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j.jsonl");
        let start = (!events.is_empty()).then(|| journal::test_start(events));
        let text: String = start
            .iter()
            .chain(events)
            .map(|e| serde_json::to_string(e).unwrap() + "\n")
            .collect();
        std::fs::write(&p, text).unwrap();
        journal::replay(&p).unwrap()
    }

    fn finished(outcome: Outcome) -> Event {
        Event::RunFinished { outcome, at_ms: 1 }
    }

    #[test]
    fn the_state_follows_the_journal() {
        assert_eq!(RunState::of(&replayed(&[])), RunState::Upgrading);
        assert_eq!(
            RunState::of(&replayed(&[finished(Outcome::Complete)])),
            RunState::Complete
        );
        assert_eq!(
            RunState::of(&replayed(&[finished(Outcome::Failed)])),
            RunState::Failed
        );
        assert_eq!(
            RunState::of(&replayed(&[finished(Outcome::Interrupted)])),
            RunState::Interrupted
        );
        let rb = Event::RollbackStarted {
            services: vec!["galera".into()],
            irreversible: vec![],
            steps: vec![],
        };
        // A rollback that began and did not end is continued, whatever
        // stopped it.
        for end in [None, Some(Outcome::Failed), Some(Outcome::Interrupted)] {
            let mut ev = vec![rb.clone()];
            ev.extend(end.map(finished));
            assert_eq!(
                RunState::of(&replayed(&ev)),
                RunState::RollingBack(RollbackPlan {
                    services: vec!["galera".into()],
                    irreversible: vec![],
                    steps: vec![],
                }),
                "{end:?}"
            );
        }
        let s = RunState::of(&replayed(&[rb, finished(Outcome::RolledBack)]));
        assert_eq!(s, RunState::RolledBack);
        assert!(s.is_final() && RunState::Complete.is_final());
        assert!(!RunState::Failed.is_final() && !RunState::Upgrading.is_final());
        // A resumed run is unfinished again until it ends once more.
        let resumed = replayed(&[
            finished(Outcome::Interrupted),
            Event::RunResumed {
                time: String::new(),
                at_ms: 2,
            },
            Event::StepStarted {
                step: StepKey::of("a", Phase::PreUpgrade),
                at_ms: 3,
            },
            Event::StepFinished {
                step: StepKey::of("a", Phase::PreUpgrade),
                at_ms: 3,
                status: StepResult::Ok,
                duration_ms: 1,
                error: None,
            },
        ]);
        assert_eq!(RunState::of(&resumed), RunState::Upgrading);
    }

    fn svc(name: &str, nodes: &[&str]) -> PlannedService {
        PlannedService {
            name: name.into(),
            level: 0,
            depends_on: vec![],
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            hops: vec![],
            rollout: "parallel".into(),
            reversible: true,
            guard: false,
        }
    }

    #[test]
    fn the_plan_diff_names_every_change() {
        let p = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let same = plan_diff(
            &[svc("a", &["n1"])],
            &[svc("a", &["n1"])],
            &p(&[("a", "h1")]),
            &p(&[("a", "h1")]),
        );
        assert!(same.is_empty());
        let d = plan_diff(
            &[svc("a", &["n1"]), svc("b", &[])],
            &[svc("a", &["n1", "n2"]), svc("c", &[])],
            &p(&[("a", "aaaaaaaaaaaaaaaa"), ("b", "h")]),
            &p(&[("a", "bbbbbbbbbbbbbbbb"), ("c", "h")]),
        );
        assert_eq!(
            d,
            [
                "  ~ plugin a changed: sha256 aaaaaaaaaaaa -> bbbbbbbbbbbb",
                "  - plugin b was removed",
                "  + plugin c was added",
                "  ~ service a: nodes [n1] rollout parallel -> nodes [n1, n2] rollout parallel",
                "  - service b is no longer in the plan",
                "  + service c joined the plan",
            ]
        );
    }

    /// A new run's summary, gathered as its journal is written, against
    /// the summary read back from that journal.
    mod tally {
        use super::super::*;
        use crate::events::StepResult;

        use crate::events::{Hop, HopKind, RunOptionsRecord, Sink};
        use crate::journal::{self, Journal};
        use std::sync::{Arc, Mutex};

        fn planned(name: &str, nodes: &[&str], hops: Vec<Hop>) -> PlannedService {
            PlannedService {
                name: name.into(),
                level: 0,
                depends_on: vec![],
                nodes: nodes.iter().map(|n| n.to_string()).collect(),
                rollout: "parallel".into(),
                reversible: true,
                hops,
                guard: false,
            }
        }

        fn hop(stage: u32, kind: HopKind) -> Hop {
            Hop {
                stage,
                from: format!("r{stage}"),
                to: format!("r{}", stage + 1),
                kind,
            }
        }

        /// Started, then finished (`Some(ok)`) or not (`None`).
        fn step(
            j: &Journal,
            service: &str,
            hop: Option<u32>,
            phase: Phase,
            node: Option<&str>,
            end: Option<bool>,
        ) {
            let step = StepKey {
                hop,
                service: service.into(),
                phase,
                node: node.map(String::from),
            };
            j.emit(Event::StepStarted {
                step: step.clone(),
                at_ms: 1,
            });
            if let Some(ok) = end {
                j.emit(Event::StepFinished {
                    step,
                    at_ms: 2,
                    status: if ok {
                        StepResult::Ok
                    } else {
                        StepResult::Failed
                    },
                    duration_ms: 1,
                    error: (!ok).then(|| "it failed".to_string()),
                });
            }
        }

        /// Also for a dry run's journal, which writes a block at a time (its
        /// last records, with no end record here, when it is dropped).
        #[test]
        fn the_tally_says_what_reading_the_journal_back_says() {
            for volatile in [false, true] {
                tally_and_read_back(volatile);
            }
        }

        fn tally_and_read_back(volatile: bool) {
            let dir = tempfile::tempdir().unwrap();
            let plan = vec![
                planned("a", &["n1", "n2", "n3", "n4"], vec![]),
                planned(
                    "b",
                    &["n1", "n2"],
                    vec![hop(0, HopKind::Full), hop(1, HopKind::MigrationsOnly)],
                ),
                planned("c", &["n1"], vec![]),
            ];
            let tally = Arc::new(Mutex::new(Tally::default()));
            let j = Journal::create(dir.path(), "r1", vec![]).unwrap().tap({
                let t = tally.clone();
                Box::new(move |ev| t.lock().unwrap().add(ev))
            });
            let j = if volatile { j.volatile() } else { j };
            j.emit(Event::RunStarted {
                run_id: "r1".into(),
                time: String::new(),
                plan: plan.clone(),
                plugins: vec![],
                options: RunOptionsRecord::default(),
                train: None,
            });
            use Phase::*;
            // a: two checks (the second one counts), two nodes ok, one
            // failed, one started only; no post-upgrade.
            step(&j, "a", None, Check, None, Some(false));
            step(&j, "a", None, Check, None, Some(true));
            step(&j, "a", None, PreUpgrade, None, Some(true));
            step(&j, "a", None, Upgrade, Some("n1"), Some(true));
            step(&j, "a", None, Upgrade, Some("n2"), Some(false));
            step(&j, "a", None, Upgrade, Some("n3"), Some(true));
            step(&j, "a", None, Upgrade, Some("n4"), None);
            // b: hop 0 in full, hop 1's migration failed.
            for phase in [Check, PreUpgrade] {
                step(&j, "b", Some(0), phase, None, Some(true));
            }
            for n in ["n1", "n2"] {
                step(&j, "b", Some(0), Upgrade, Some(n), Some(true));
            }
            for phase in [PostUpgrade, Finalize] {
                step(&j, "b", Some(0), phase, None, Some(true));
            }
            step(&j, "b", Some(1), Check, None, Some(true));
            step(&j, "b", Some(1), Migrate, None, Some(false));
            // c: rolled back, in part.
            step(&j, "c", None, Check, None, Some(true));
            step(&j, "c", None, Rollback, None, Some(false));
            let path = j.path.clone();
            drop(j);

            let read_back = journal::replay_summary(&path).unwrap();
            let tally = tally.lock().unwrap();
            let got: Vec<ServiceSummary> = plan.iter().map(|s| tally.summary(s)).collect();
            let want: Vec<ServiceSummary> = plan.iter().map(|s| summarize(s, &read_back)).collect();
            assert_eq!(got, want);
            let counts: Vec<(usize, usize, usize, Option<bool>)> = got
                .iter()
                .map(|s| (s.done, s.failed, s.total, s.rolled_back))
                .collect();
            assert_eq!(
                counts,
                vec![(4, 1, 8, None), (7, 1, 8, None), (1, 0, 5, Some(false)),]
            );
        }
    }
}
