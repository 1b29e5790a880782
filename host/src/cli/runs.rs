//! `uphost runs`: every run in the state directory, oldest first.

use crate::Error;
use crate::execution::inspect;

use super::{StatusFormat, exit};

/// List the runs.
pub fn list(state_dir: &std::path::Path, format: StatusFormat) -> Result<i32, Error> {
    let runs = inspect::runs(state_dir)?;
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
