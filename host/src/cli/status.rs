//! `uphost status`: done / failed / running / remaining per service and node.

use serde::Serialize;

use crate::Error;
use crate::events::Event;
use crate::execution::run::steps_of;
use crate::journal;

use super::{StatusFormat, exit};

#[derive(Serialize)]
struct StepView {
    phase: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<String>,
    status: &'static str,
}

#[derive(Serialize)]
struct ServiceView {
    name: String,
    status: &'static str,
    done: usize,
    total: usize,
    steps: Vec<StepView>,
    /// Once the run's rollback began: `done`, `failed`, `running` or
    /// `pending` for a service it rolls back, `irreversible` for one it
    /// cannot; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    rollback: Option<&'static str>,
}

/// The run's rollback, once it began.
#[derive(Serialize)]
struct RollbackView {
    /// Services to roll back, in order.
    services: Vec<String>,
    /// Touched services that cannot roll back.
    irreversible: Vec<String>,
    /// Every listed rollback is done.
    complete: bool,
}

#[derive(Serialize)]
struct StatusView {
    run_id: String,
    /// The run executed no mutating command (`run --dry-run`).
    dry_run: bool,
    /// `complete`, `failed`, `interrupted`, `rolled-back`, or `running`.
    outcome: String,
    /// The uphost running it, while `outcome` is `running`.
    #[serde(skip_serializing_if = "Option::is_none")]
    running: Option<String>,
    complete: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    rollback: Option<RollbackView>,
    services: Vec<ServiceView>,
}

/// The outcome of a run whose journal has none yet.
pub(super) fn unfinished_outcome(running: bool) -> String {
    if running { "running" } else { "interrupted" }.to_string()
}

/// Show a run's status.
pub fn show(
    state_dir: &std::path::Path,
    run: Option<&str>,
    format: StatusFormat,
) -> Result<i32, Error> {
    let run_id = match run {
        Some(r) => r.to_string(),
        None => journal::current_run(state_dir)?,
    };
    let path = journal::journal_of(state_dir, &run_id)?;
    let r = journal::replay_summary(&path)?;
    let Some(Event::RunStarted { plan, options, .. }) = r.run_started() else {
        return Err(Error::Failed(format!(
            "{}: no run-started record",
            path.display()
        )));
    };
    // No outcome yet: running now, or stopped without one (killed,
    // crashed, a lost machine), which `resume` continues.
    let (outcome, holder) = match r.outcome() {
        Some(o) => (o, None),
        None => {
            let h = journal::lock::running(state_dir, &run_id);
            (unfinished_outcome(h.is_some()), h)
        }
    };
    let mut services = Vec::new();
    for s in plan {
        let steps: Vec<StepView> = steps_of(s)
            .into_iter()
            .map(|k| StepView {
                phase: k.phase.to_string(),
                status: r.steps.get(&k).map_or("remaining", |s| s.as_str()),
                node: k.node,
            })
            .collect();
        let done = steps.iter().filter(|s| s.status == "done").count();
        let status = if done == steps.len() {
            "done"
        } else if steps.iter().any(|s| s.status == "failed") {
            "failed"
        } else if steps.iter().any(|s| s.status == "running") {
            "running"
        } else if done > 0 {
            "partial"
        } else {
            "remaining"
        };
        let rollback = r.rollback.as_ref().and_then(|rb| {
            if rb.irreversible.contains(&s.name) {
                Some("irreversible")
            } else if rb.services.contains(&s.name) {
                let key = crate::events::StepKey::of(&s.name, crate::events::Phase::Rollback);
                Some(r.steps.get(&key).map_or("pending", |s| s.as_str()))
            } else {
                None
            }
        });
        services.push(ServiceView {
            name: s.name.clone(),
            status,
            done,
            total: steps.len(),
            steps,
            rollback,
        });
    }
    let rollback = r.rollback.as_ref().map(|rb| RollbackView {
        complete: services
            .iter()
            .filter(|s| rb.services.contains(&s.name))
            .all(|s| s.rollback == Some("done")),
        services: rb.services.clone(),
        irreversible: rb.irreversible.clone(),
    });
    let view = StatusView {
        complete: outcome == "complete",
        dry_run: options.dry_run,
        running: holder.map(|h| h.to_string()),
        run_id,
        outcome,
        rollback,
        services,
    };
    match format {
        StatusFormat::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&view).expect("serializes")
        ),
        StatusFormat::Text => {
            outln!(
                "run {}{}: {}",
                view.run_id,
                if view.dry_run { " (dry run)" } else { "" },
                match (&view.running, view.outcome.as_str()) {
                    (Some(h), _) => format!("running ({h})"),
                    (None, "interrupted") =>
                        "interrupted (stopped before it finished; `uphost resume` continues it)"
                            .to_string(),
                    (None, o) => o.to_string(),
                }
            );
            if let Some(rb) = &view.rollback {
                if rb.complete {
                    outln!("  rolled back: {}", rb.services.join(", "));
                } else {
                    outln!(
                        "  ROLLBACK NOT COMPLETE: `uphost resume` goes on rolling back {} (never with the upgrade)",
                        rb.services.join(", ")
                    );
                }
                if !rb.irreversible.is_empty() {
                    outln!(
                        "  cannot roll back (stay upgraded): {}",
                        rb.irreversible.join(", ")
                    );
                }
            }
            for s in &view.services {
                outln!(
                    "  {:<14} {:<9} {}/{}{}",
                    s.name,
                    s.status,
                    s.done,
                    s.total,
                    match s.rollback {
                        Some("irreversible") | None => String::new(),
                        Some(st) => format!("   rollback {st}"),
                    }
                );
                for st in s.steps.iter().filter(|st| st.status != "done") {
                    outln!(
                        "      {:<13} {:<10} {}",
                        st.phase,
                        st.node.as_deref().unwrap_or(""),
                        st.status
                    );
                }
            }
        }
    }
    Ok(exit::OK)
}
