//! `uphost status`: done / failed / running / remaining per service and node.

use serde::Serialize;

use crate::Error;
use crate::events::Event;
use crate::execution::run::steps_of;
use crate::journal::{self, StepStatus};

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
}

#[derive(Serialize)]
struct StatusView {
    run_id: String,
    outcome: String,
    complete: bool,
    services: Vec<ServiceView>,
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
    let Some(Event::RunStarted { plan, .. }) = r.run_started() else {
        return Err(Error::Failed(format!(
            "{}: no run-started record",
            path.display()
        )));
    };
    let outcome = r
        .outcome()
        .unwrap_or_else(|| "running or interrupted".to_string());
    let mut services = Vec::new();
    for s in plan {
        let steps: Vec<StepView> = steps_of(s)
            .into_iter()
            .map(|k| StepView {
                phase: k.phase.to_string(),
                status: match r.steps.get(&k) {
                    Some(StepStatus::Done) => "done",
                    Some(StepStatus::Failed) => "failed",
                    Some(StepStatus::Running) => "running",
                    None => "remaining",
                },
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
        services.push(ServiceView {
            name: s.name.clone(),
            status,
            done,
            total: steps.len(),
            steps,
        });
    }
    let view = StatusView {
        complete: outcome == "complete",
        run_id,
        outcome,
        services,
    };
    match format {
        StatusFormat::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&view).expect("serializes")
        ),
        StatusFormat::Text => {
            outln!("run {}: {}", view.run_id, view.outcome);
            for s in &view.services {
                outln!("  {:<14} {:<9} {}/{}", s.name, s.status, s.done, s.total);
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
