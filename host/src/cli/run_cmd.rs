//! `uphost check`, `run` and `resume`: parse, call the run's lifecycle
//! (`execution::lifecycle`), print.

use std::sync::Arc;

use crate::Error;
use crate::events::{Event, Outcome};
use crate::execution::lifecycle::{self, Left, Resume, ResumeOptions, RunEnd, StartOptions};
use crate::execution::run::{Interrupt, Runner};
use crate::execution::session::Session;
use crate::transport::Transports;
use crate::untrusted::{line as shown, text as shown_text};

use super::output::{observers, shell_join};
use super::signals::TransportsSlot;
use super::{Cli, RunArgs, exit};

/// `uphost check`: every plugin's pre-flight, read-only, no journal.
pub async fn check(
    session: Session,
    only: &[String],
    limit: &[String],
    cli: &Cli,
) -> Result<i32, Error> {
    let (checked, denied) = lifecycle::preflight(&session, only, limit).await?;
    let mut failed = 0;
    for c in &checked {
        match &c.result {
            Ok(()) => {
                if !cli.quiet {
                    outln!("{:<14} ok", c.service)
                }
            }
            Err(e) => {
                failed += 1;
                outln!("{:<14} FAILED: {}", c.service, shown_text(e));
            }
        }
    }
    for ev in denied {
        if let Event::Denied {
            plugin,
            node,
            argv,
            reason,
            ..
        } = ev
        {
            outln!(
                "DENIED {plugin} on {}: {} ({})",
                shown(&node),
                shell_join(&argv),
                shown(&reason)
            );
        }
    }
    Ok(if failed == 0 { exit::OK } else { exit::FAILED })
}

/// Keep the run's transports where a second signal can close them.
fn keep(slot: &TransportsSlot) -> impl FnOnce(&Arc<Runner>, &Arc<Transports>) + '_ {
    move |_, t| {
        let _ = slot.set(t.clone());
    }
}

/// Said when a signal came before the run started.
fn interrupted_before_start() -> i32 {
    errln!("interrupted before the run started; nothing was run");
    exit::INTERRUPTED
}

/// `uphost run`.
pub async fn run(
    session: Session,
    args: &RunArgs,
    cli: &Cli,
    (interrupt, slot): (Arc<Interrupt>, TransportsSlot),
) -> Result<i32, Error> {
    if interrupt.requested() {
        return Ok(interrupted_before_start());
    }
    let o = StartOptions {
        recorded: crate::events::RunOptionsRecord {
            dry_run: args.dry_run,
            only: args.only.clone(),
            limit: args.limit.clone(),
            rollback_on_failure: args.rollback_on_failure,
            pause_between_hops: args.pause_between_hops,
            node_major: args.order.unwrap_or(session.cfg.services.order)
                == crate::config::Order::NodeMajor,
        },
        yes: args.yes,
        forks: args.forks,
        abandon_unfinished: args.abandon_unfinished,
        interrupt,
    };
    let prepared = lifecycle::start(session, o, |dir| observers(cli, Some(dir)))?;
    let end = lifecycle::execute(prepared, keep(&slot)).await?;
    Ok(show_end(&end, cli))
}

/// `uphost resume` (and `uphost standby` once it holds the lock).
pub async fn resume(
    session: Session,
    yes: bool,
    forks: Option<usize>,
    held: Option<Arc<crate::execution::takeover::Held>>,
    cli: &Cli,
    (interrupt, slot): (Arc<Interrupt>, TransportsSlot),
) -> Result<i32, Error> {
    if interrupt.requested() {
        return Ok(interrupted_before_start());
    }
    let o = ResumeOptions {
        yes,
        forks,
        interrupt,
        held,
    };
    let mut prepared = match lifecycle::resume(session, o, |dir| observers(cli, Some(dir)))? {
        Resume::AlreadyComplete(run_id) => {
            errln!("run {run_id} is already complete; nothing to resume");
            return Ok(exit::OK);
        }
        Resume::Continue(p) => *p,
    };
    lifecycle::settle_on_nodes(&mut prepared).await?;
    for (step, seq) in &prepared.in_doubt {
        errln!(
            "warning: command #{seq} of {step} was started when the run was interrupted and did not finish; it runs again"
        );
    }
    let end = lifecycle::execute(prepared, keep(&slot)).await?;
    Ok(show_end(&end, cli))
}

/// Print how a run ended; its exit code.
fn show_end(end: &RunEnd, cli: &Cli) -> i32 {
    show_failures(end);
    if let Some(why) = &end.halted {
        errln!("\nFAILED: {}", shown(why));
    }
    if let Some(why) = &end.paused {
        errln!(
            "\nrun {} {why}; the steps in flight finished, nothing else started: `uphost resume` continues it",
            end.run_id
        );
    }
    if let Some(left) = &end.left {
        show_left(left);
    }
    if !cli.quiet {
        show_summary(end);
    }
    match &end.report {
        Ok(p) if !cli.quiet => errln!("report: {}", p.display()),
        Ok(_) => {}
        Err(e) => errln!("warning: could not write the run report: {e}"),
    }
    if let Some(unfinished) = &end.aside_of {
        let run_id = &end.run_id;
        errln!(
            "note: dry run {run_id} was kept beside unfinished run {unfinished}, which stays current: `uphost resume` continues {unfinished}; `uphost status {run_id}` and `uphost report {run_id}` show this dry run"
        );
    }
    match end.outcome {
        Outcome::Complete => exit::OK,
        Outcome::Interrupted => exit::INTERRUPTED,
        Outcome::Failed | Outcome::RolledBack => exit::FAILED,
    }
}

fn show_failures(end: &RunEnd) {
    for f in &end.failures {
        errln!(
            "\nFAILED: {}\n  {}",
            shown(&f.step.to_string()),
            shown_text(&f.error).replace('\n', "\n  ")
        );
        for c in &f.commands {
            errln!(
                "  $ {}: {}  -> {}",
                shown(&c.node),
                shell_join(&c.argv),
                shown(&c.status)
            );
            for (name, lines) in [("stdout", &c.stdout), ("stderr", &c.stderr)] {
                for l in lines {
                    errln!("    {name}| {}", shown(l));
                }
            }
        }
    }
}

fn show_left(left: &Left) {
    match left {
        Left::RolledBack => errln!(
            "\nthe run was rolled back: fix the cause of the failure, then start a new upgrade with `uphost run`"
        ),
        Left::Rollback(services) => errln!(
            "\nthe rollback of {} is not complete: fix the cause, then `uphost resume` goes on with the rollback (never with the upgrade)",
            services.join(", ")
        ),
        Left::Steps(steps) if steps.is_empty() => {}
        Left::Steps(steps) if steps.iter().any(|(k, _)| k.hop.is_some()) => {
            errln!(
                "\nsteps not done ({}), every one of every remaining hop:",
                steps.len()
            );
            for line in train_left(steps) {
                errln!("{line}");
            }
            errln!("fix the cause, then continue with `uphost resume`");
        }
        Left::Steps(steps) => {
            errln!("\nsteps not done ({}):", steps.len());
            for (k, st) in steps.iter().take(40) {
                errln!("  {k:<40} {st}");
            }
            if steps.len() > 40 {
                errln!("  … and {} more (`uphost status`)", steps.len() - 40);
            }
            errln!("fix the cause, then continue with `uphost resume`");
        }
    }
}

/// What is left of a release train, hop by hop and service by service,
/// each service's steps on one line (its node steps as one entry).
fn train_left(steps: &[(crate::events::StepKey, &'static str)]) -> Vec<String> {
    use crate::events::Phase;
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < steps.len() {
        let (k, _) = &steps[i];
        let hop = k.hop.unwrap_or(0);
        if i == 0 || steps[i - 1].0.hop != k.hop {
            out.push(format!("  hop {}:", hop + 1));
        }
        if k.phase == Phase::Verify && k.service != crate::events::GATE {
            // The gate's health checks, one line.
            let mut names = Vec::new();
            while i < steps.len()
                && steps[i].0.phase == Phase::Verify
                && steps[i].0.service != crate::events::GATE
                && steps[i].0.hop == k.hop
            {
                let (s, st) = &steps[i];
                names.push(if *st == "remaining" {
                    s.service.clone()
                } else {
                    format!("{} ({st})", s.service)
                });
                i += 1;
            }
            out.push(format!("    gate, verify of: {}", names.join(", ")));
            continue;
        }
        let who = k.service.clone();
        let mut parts: Vec<String> = Vec::new();
        while i < steps.len() && steps[i].0.service == who && steps[i].0.hop == k.hop {
            let (s, st) = &steps[i];
            let mark = |st: &str| {
                if st == "remaining" {
                    String::new()
                } else {
                    format!(" ({st})")
                }
            };
            if s.phase == Phase::Upgrade {
                let mut nodes = Vec::new();
                while i < steps.len()
                    && steps[i].0.phase == Phase::Upgrade
                    && steps[i].0.service == who
                    && steps[i].0.hop == k.hop
                {
                    let (n, st) = &steps[i];
                    nodes.push(format!("{}{}", n.node.as_deref().unwrap_or("?"), mark(st)));
                    i += 1;
                }
                let shown = nodes.len().min(10);
                let mut list = nodes[..shown].join(", ");
                if nodes.len() > shown {
                    list.push_str(&format!(" and {} more", nodes.len() - shown));
                }
                parts.push(format!("upgrade on {list}"));
                continue;
            }
            parts.push(match s.node.as_deref() {
                Some(n) if s.service == crate::events::GATE => format!("`{n}`{}", mark(st)),
                _ => format!("{}{}", s.phase, mark(st)),
            });
            i += 1;
        }
        let label = if who == crate::events::GATE {
            "gate commands".to_string()
        } else {
            who
        };
        out.push(format!("    {label}: {}", parts.join(", ")));
    }
    out
}

fn show_summary(end: &RunEnd) {
    errln!("\nsummary of run {}: {}", end.run_id, end.outcome);
    for s in &end.summary {
        errln!(
            "  {:<14} {:>3}/{:<3} steps done{}{}",
            s.name,
            s.done,
            s.total,
            if s.failed > 0 {
                format!(", {} failed", s.failed)
            } else {
                String::new()
            },
            match s.rolled_back {
                Some(true) => ", rolled back",
                Some(false) => ", ROLLBACK FAILED",
                None => "",
            }
        );
    }
    errln!("journal: {}", end.journal.display());
}
