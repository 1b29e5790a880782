//! `uphost runs`: every run in the state directory, oldest first.

use serde::Serialize;

use crate::Error;
use crate::events::Event;
use crate::journal;

use super::{StatusFormat, exit};

#[derive(Serialize)]
struct RunView {
    run_id: String,
    /// The run `status`, `report` and `resume` use by default.
    current: bool,
    /// RFC 3339 start time (absent if the journal has no run-started).
    #[serde(skip_serializing_if = "Option::is_none")]
    started: Option<String>,
    dry_run: bool,
    only: Vec<String>,
    limit: Vec<String>,
    /// `complete`, `failed`, `interrupted` (also: killed before it could
    /// say so), `rolled-back`, or `running`.
    outcome: String,
}

/// List the runs.
pub fn list(state_dir: &std::path::Path, format: StatusFormat) -> Result<i32, Error> {
    let current = journal::current_run(state_dir).ok();
    let mut runs = Vec::new();
    for id in journal::run_ids(state_dir) {
        let path = journal::run_dir(state_dir, &id).join("journal.jsonl");
        let (started, options) = match journal::first_record(&path)? {
            Some(Event::RunStarted { time, options, .. }) => (Some(time), options),
            _ => (None, Default::default()),
        };
        let outcome = match journal::last_record(&path)? {
            Some(Event::RunFinished { outcome, .. }) => outcome,
            _ => {
                super::status::unfinished_outcome(journal::lock::running(state_dir, &id).is_some())
            }
        };
        runs.push(RunView {
            current: current.as_deref() == Some(id.as_str()),
            run_id: id,
            started,
            dry_run: options.dry_run,
            only: options.only,
            limit: options.limit,
            outcome,
        });
    }
    // Ids order runs by the second they started; the start time breaks ties.
    runs.sort_by(|a, b| (&a.started, &a.run_id).cmp(&(&b.started, &b.run_id)));
    match format {
        StatusFormat::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&runs).expect("serializes")
        ),
        StatusFormat::Text if runs.is_empty() => outln!(
            "no runs in {}; start one with `uphost run`",
            state_dir.display()
        ),
        StatusFormat::Text => {
            outln!(
                "  {:<22} {:<20} {:<12} OPTIONS",
                "RUN",
                "STARTED",
                "OUTCOME"
            );
            for r in &runs {
                let mut opts = Vec::new();
                if r.dry_run {
                    opts.push("--dry-run".to_string());
                }
                if !r.only.is_empty() {
                    opts.push(format!("--only {}", r.only.join(" ")));
                }
                if !r.limit.is_empty() {
                    opts.push(format!("--limit {}", r.limit.join(" ")));
                }
                let started = r.started.as_deref().unwrap_or("?");
                outln!(
                    "{} {:<22} {:<20} {:<12} {}",
                    if r.current { "*" } else { " " },
                    r.run_id,
                    started.get(..19).unwrap_or(started),
                    r.outcome,
                    opts.join(" ")
                );
            }
        }
    }
    Ok(exit::OK)
}
