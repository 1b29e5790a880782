//! `uphost check`, `run` and `resume`.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;

use crate::Error;
use crate::events::{Event, PlannedService, RunOptionsRecord, Sink, StepKey};
use crate::execution::confirm::Confirm;
use crate::execution::memsink::MemorySink;
use crate::execution::run::{Outcome, RunOptions, Runner, planned, steps_of};
use crate::execution::session::Session;
use crate::journal::{self, Journal, StepStatus};
use crate::runtime::{CallEnv, Hook, call_hook};
use crate::transport::{Transport, Transports};

use super::output::{observers, shell_join};
use super::{Cli, RunArgs, exit};

fn new_run_id() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    format!(
        "{}-{:04x}",
        now.format(&fmt).unwrap_or_default(),
        (std::process::id() ^ now.nanosecond()) & 0xffff
    )
}

/// `uphost check`: every plugin's pre-flight, read-only, no journal.
pub async fn check(
    session: Session,
    only: &[String],
    limit: &[String],
    cli: &Cli,
) -> Result<i32, Error> {
    let grants = session.grants()?;
    let services = session.services(only, limit)?;
    let sink = Arc::new(MemorySink::new(None));
    let transports = Arc::new(Transports::new(session.cfg.ssh.clone()));
    let transport: Arc<dyn Transport> = transports.clone();
    let mut failed = 0;
    for svc in &services {
        let p = &session.plugins[&svc.name];
        let step = StepKey {
            service: svc.name.clone(),
            phase: crate::events::Phase::Check,
            node: None,
        };
        let env = CallEnv {
            plugin: svc.name.clone(),
            step,
            grant: grants[&svc.name].clone(),
            nodes: svc.nodes.clone(),
            read_only: true,
            limits: svc.limits.clone(),
            transport: transport.clone(),
            sink: sink.clone(),
            record_dir: None,
        };
        let hctx = session.hook_ctx(&svc.name, "check", true);
        let res = call_hook(&session.rt, &p.pre, env, &hctx, Hook::Check).await;
        match res {
            Ok(()) => {
                if !cli.quiet {
                    outln!("{:<14} ok", svc.name)
                }
            }
            Err(e) => {
                failed += 1;
                outln!("{:<14} FAILED: {e}", svc.name);
            }
        }
    }
    for ev in sink.events() {
        if let Event::Denied {
            plugin,
            node,
            argv,
            reason,
            ..
        } = ev
        {
            outln!(
                "DENIED {plugin} on {node}: {} ({reason})",
                shell_join(&argv)
            );
        }
    }
    transports.close();
    Ok(if failed == 0 { exit::OK } else { exit::FAILED })
}

/// Say so when the last uphost died holding the run lock.
fn tell_taken_over(lock: &journal::lock::RunLock) {
    if let Some(h) = &lock.took_over {
        tracing::warn!(
            "the previous uphost ({h}) stopped without releasing the run lock (killed or crashed); lock taken over"
        );
    }
}

fn need_terminal(yes: bool, dry_run: bool) -> Result<(), Error> {
    if !yes && !dry_run && !std::io::stdin().is_terminal() {
        return Err(Error::Usage(
            "this run has confirmation points and there is no terminal to ask on: run it interactively, or pass --yes to accept them".to_string(),
        ));
    }
    Ok(())
}

fn on_ctrl_c(runner: &Arc<Runner>, transports: Arc<Transports>) {
    let r = runner.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            errln!(
                "interrupt: no new steps start; in-flight steps finish, then the run stops (resume with `uphost resume`). Ctrl-C again aborts at once."
            );
            r.interrupt();
        }
        if tokio::signal::ctrl_c().await.is_ok() {
            errln!("aborted; `uphost resume` re-runs the steps that were in flight");
            transports.close();
            std::process::exit(exit::INTERRUPTED);
        }
    });
}

/// `uphost run`.
pub async fn run(session: Session, args: &RunArgs, cli: &Cli) -> Result<i32, Error> {
    let grants = session.grants()?;
    let services = session.services(&args.only, &args.limit)?;
    need_terminal(args.yes, args.dry_run)?;
    let state_dir = session.cfg.state_dir.clone();
    let lock = journal::lock::acquire(&state_dir, "run")?;
    tell_taken_over(&lock);
    // A dry run changes nothing, so it may look ahead while a real run is
    // unfinished; it is kept beside that run, which stays the current one.
    let aside = match unfinished(&state_dir) {
        Some(_) if args.abandon_unfinished => None,
        Some((id, _)) if args.dry_run => Some(id),
        Some((_, why)) => return Err(Error::Usage(why)),
        None => None,
    };
    let run_id = new_run_id();
    // The run becomes current once its start is on disk.
    let journal = Journal::create(&state_dir, &run_id, observers(cli))?;
    let recorded = RunOptionsRecord {
        dry_run: args.dry_run,
        only: args.only.clone(),
        limit: args.limit.clone(),
        rollback_on_failure: args.rollback_on_failure,
    };
    let plan = planned(&services, &session);
    journal.emit(Event::RunStarted {
        run_id: run_id.clone(),
        time: crate::events::now_rfc3339(),
        plan: plan.clone(),
        plugins: session
            .plugins
            .values()
            .map(|p| (p.name.clone(), p.sha256.clone()))
            .collect(),
        options: recorded.clone(),
    });
    let started = match journal.write_error() {
        Some(e) => Err(e),
        None if aside.is_none() => journal.make_current(&state_dir).map_err(|e| e.to_string()),
        None => Ok(()),
    };
    if let Err(e) = started {
        journal.discard(&state_dir);
        return Err(Error::Failed(format!(
            "the run could not start: its journal cannot be written ({e}); nothing was run. Free space in {} and run again",
            state_dir.display()
        )));
    }
    let journal = Arc::new(journal);
    let forks = args.forks.unwrap_or(session.cfg.forks);
    let opts = RunOptions {
        recorded,
        forks,
        confirm: Confirm::from_flag(args.yes),
        continue_rollback: None,
    };
    let code = execute(
        session,
        journal,
        grants,
        services,
        BTreeMap::new(),
        opts,
        &plan,
        &state_dir,
        cli,
    )
    .await?;
    if let Some(unfinished) = aside {
        errln!(
            "note: dry run {run_id} was kept beside unfinished run {unfinished}, which stays current: `uphost resume` continues {unfinished}; `uphost status {run_id}` and `uphost report {run_id}` show this dry run"
        );
    }
    Ok(code)
}

/// Why a new run must not start: the current run stopped half-way after
/// changing the cluster (a real run, not finished, not rolled back), so a
/// new run would lose its place, its plugin state (backup paths) and its
/// rollback. That run's id and the refusal, or `None` when there is no such
/// run.
fn unfinished(state_dir: &std::path::Path) -> Option<(String, String)> {
    let id = journal::current_run(state_dir).ok()?;
    let path = journal::run_dir(state_dir, &id).join("journal.jsonl");
    // The usual case, a run that finished, is read off the journal's tail;
    // only a run that did not is replayed.
    if let Some(Event::RunFinished { outcome, .. }) = journal::last_record(&path).ok()?
        && matches!(outcome.as_str(), "complete" | "rolled-back")
    {
        return None;
    }
    let r = journal::replay_summary(&path).ok()?;
    if let Some(Event::RunStarted { options, .. }) = r.run_started()
        && options.dry_run
    {
        return None;
    }
    let changed = r
        .steps
        .keys()
        .any(|k| k.phase != crate::events::Phase::Check);
    if !changed {
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
    Some((id, why))
}

#[allow(clippy::too_many_arguments)]
async fn execute(
    session: Session,
    journal: Arc<Journal>,
    grants: BTreeMap<String, Arc<crate::capabilities::Grant>>,
    services: Vec<crate::execution::session::ServiceRun>,
    prior: BTreeMap<StepKey, StepStatus>,
    opts: RunOptions,
    plan: &[PlannedService],
    state_dir: &std::path::Path,
    cli: &Cli,
) -> Result<i32, Error> {
    let run_id = journal.run_id.clone();
    let path = journal.path.clone();
    let transport = Arc::new(Transports::new(session.cfg.ssh.clone()));
    let runner = Runner::new(
        session,
        journal.clone(),
        grants,
        services,
        prior,
        transport.clone(),
        opts,
    );
    on_ctrl_c(&runner, transport.clone());
    let outcome = runner.clone().run().await;
    let failures = runner.failures();
    drop(runner);
    // The process exits without running drops: close ssh masters now.
    transport.close();
    drop(journal);
    let replayed = journal::replay_summary(&path)?;
    if !failures.is_empty() {
        report_failures(&failures, &path)?;
    }
    if outcome != Outcome::Complete {
        report_remaining(plan, &replayed, outcome);
    }
    if !cli.quiet {
        summary(plan, &replayed, &run_id, outcome, state_dir);
    }
    match crate::report::write(state_dir, &run_id) {
        Ok(p) if !cli.quiet => errln!("report: {}", p.display()),
        Ok(_) => {}
        Err(e) => errln!("warning: could not write the run report: {e}"),
    }
    Ok(match outcome {
        Outcome::Complete => exit::OK,
        Outcome::Interrupted => exit::INTERRUPTED,
        Outcome::Failed | Outcome::RolledBack => exit::FAILED,
    })
}

fn report_failures(
    failures: &[(StepKey, String)],
    journal_path: &std::path::Path,
) -> Result<(), Error> {
    let failed: std::collections::BTreeSet<&StepKey> = failures.iter().map(|(s, _)| s).collect();
    let mut by_step: BTreeMap<StepKey, Vec<Event>> = BTreeMap::new();
    journal::for_each(journal_path, |e| {
        if let Event::CommandFinished { step, .. } = &e
            && failed.contains(step)
        {
            by_step.entry(step.clone()).or_default().push(e);
        }
    })?;
    for (step, err) in failures {
        errln!("\nFAILED: {step}\n  {}", err.replace('\n', "\n  "));
        let cmds: Vec<&Event> = by_step
            .get(step)
            .map(|v| v.iter().collect())
            .unwrap_or_default();
        for e in cmds.iter().rev().take(5).rev() {
            if let Event::CommandFinished {
                node, argv, result, ..
            } = e
            {
                let status = result
                    .status
                    .map(|s| format!("exit {s}"))
                    .or(result.error.clone())
                    .unwrap_or_default();
                errln!("  $ {node}: {}  -> {status}", shell_join(argv));
                for (name, text) in [("stdout", &result.stdout), ("stderr", &result.stderr)] {
                    let lines: Vec<&str> = text.lines().collect();
                    for l in &lines[lines.len().saturating_sub(6)..] {
                        errln!("    {name}| {l}");
                    }
                }
            }
        }
    }
    Ok(())
}

fn report_remaining(plan: &[PlannedService], r: &journal::Replayed, outcome: Outcome) {
    if outcome == Outcome::RolledBack {
        errln!(
            "\nthe run was rolled back: fix the cause of the failure, then start a new upgrade with `uphost run`"
        );
        return;
    }
    if let Some(rb) = &r.rollback {
        errln!(
            "\nthe rollback of {} is not complete: fix the cause, then `uphost resume` goes on with the rollback (never with the upgrade)",
            rb.services.join(", ")
        );
        return;
    }
    let remaining: Vec<StepKey> = plan
        .iter()
        .flat_map(steps_of)
        .filter(|k| r.steps.get(k) != Some(&StepStatus::Done))
        .collect();
    if remaining.is_empty() {
        return;
    }
    errln!("\nsteps not done ({}):", remaining.len());
    for k in remaining.iter().take(40) {
        let st = match r.steps.get(k) {
            Some(StepStatus::Failed) => "failed",
            Some(StepStatus::Running) => "interrupted",
            _ => "remaining",
        };
        errln!("  {k:<40} {st}");
    }
    if remaining.len() > 40 {
        errln!("  … and {} more (`uphost status`)", remaining.len() - 40);
    }
    errln!("fix the cause, then continue with `uphost resume`");
}

fn summary(
    plan: &[PlannedService],
    r: &journal::Replayed,
    run_id: &str,
    outcome: Outcome,
    state_dir: &std::path::Path,
) {
    errln!("\nsummary of run {run_id}: {}", outcome.as_str());
    for s in plan {
        let steps = steps_of(s);
        let done = steps
            .iter()
            .filter(|k| r.steps.get(*k) == Some(&StepStatus::Done))
            .count();
        let failed = steps
            .iter()
            .filter(|k| r.steps.get(*k) == Some(&StepStatus::Failed))
            .count();
        let rolled = r
            .steps
            .get(&StepKey::of(&s.name, crate::events::Phase::Rollback));
        errln!(
            "  {:<14} {:>3}/{:<3} steps done{}{}",
            s.name,
            done,
            steps.len(),
            if failed > 0 {
                format!(", {failed} failed")
            } else {
                String::new()
            },
            match rolled {
                Some(StepStatus::Done) => ", rolled back",
                Some(_) => ", ROLLBACK FAILED",
                None => "",
            }
        );
    }
    errln!(
        "journal: {}",
        journal::run_dir(state_dir, run_id)
            .join("journal.jsonl")
            .display()
    );
}

/// `uphost resume`.
pub async fn resume(
    session: Session,
    yes: bool,
    forks: Option<usize>,
    cli: &Cli,
) -> Result<i32, Error> {
    let state_dir = session.cfg.state_dir.clone();
    let lock = journal::lock::acquire(&state_dir, "resume")?;
    tell_taken_over(&lock);
    let run_id = journal::current_run(&state_dir)?;
    let (journal, replayed) = Journal::reopen(&state_dir, &run_id, observers(cli))?;
    match replayed.outcome().as_deref() {
        Some("complete") => {
            errln!("run {run_id} is already complete; nothing to resume");
            return Ok(exit::OK);
        }
        Some("rolled-back") => {
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
        ..
    }) = replayed.run_started().cloned()
    else {
        return Err(Error::Failed(format!(
            "run {run_id} has no start record; it cannot be resumed (start a new run)"
        )));
    };
    let services = session.services(&options.only, &options.limit)?;
    let plan = planned(&services, &session);
    let plugins: Vec<(String, String)> = session
        .plugins
        .values()
        .map(|p| (p.name.clone(), p.sha256.clone()))
        .collect();
    let diff = plan_diff(&rec_plan, &plan, &rec_plugins, &plugins);
    if !diff.is_empty() {
        return Err(Error::Usage(format!(
            "run {run_id} cannot be resumed: the plugins or the plan changed since it began:\n{}\nrestore what changed, or start a new run with `uphost run`",
            diff.join("\n")
        )));
    }
    let grants = session.grants()?;
    need_terminal(yes, options.dry_run)?;
    for (step, seq) in journal.resolve_in_doubt(&replayed) {
        errln!(
            "warning: command #{seq} of {step} was started when the run was interrupted and did not finish; it runs again"
        );
    }
    let journal = Arc::new(journal);
    journal.emit(Event::RunResumed {
        time: crate::events::now_rfc3339(),
        at_ms: journal.now_ms(),
    });
    let prior: BTreeMap<StepKey, StepStatus> = replayed.steps.clone();
    let opts = RunOptions {
        recorded: options,
        forks: forks.unwrap_or(session.cfg.forks),
        confirm: Confirm::from_flag(yes),
        continue_rollback: replayed.rollback.clone(),
    };
    execute(
        session, journal, grants, services, prior, opts, &plan, &state_dir, cli,
    )
    .await
}

fn plan_diff(
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
