//! `uphost status`: done / failed / running / remaining per service and node.

use crate::Error;
use crate::execution::inspect;

use super::{StatusFormat, exit};

/// Show a run's status.
pub fn show(
    state_dir: &std::path::Path,
    run: Option<&str>,
    format: StatusFormat,
) -> Result<i32, Error> {
    let view = inspect::status(state_dir, run)?;
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
                    (None, "interrupted") if view.paused.is_some() => format!(
                        "{} (`uphost resume` continues it)",
                        crate::untrusted::line(view.paused.as_deref().unwrap_or(""))
                    ),
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
            for (name, f) in &view.probes {
                outln!(
                    "  probe {name}{}: down {:.1} s in {} outage(s), longest {:.1} s, {} samples{}",
                    f.service
                        .as_deref()
                        .map(|s| format!(" ({s})"))
                        .unwrap_or_default(),
                    f.down_ms as f64 / 1000.0,
                    f.outages,
                    f.longest_ms as f64 / 1000.0,
                    f.samples,
                    match f.budget_ms {
                        Some(b) if f.down_ms > b =>
                            format!(", OVER its budget of {:.1} s", b as f64 / 1000.0),
                        Some(b) => format!(", budget {:.1} s", b as f64 / 1000.0),
                        None => String::new(),
                    }
                );
            }
            for h in &view.hops {
                outln!(
                    "  hop {} of {}: {}{}",
                    h.hop,
                    view.hops.len(),
                    h.status,
                    match h.gate {
                        Some("passed") => ", gate passed".to_string(),
                        Some("failed") => format!(
                            ", GATE FAILED: {}",
                            h.gate_failed
                                .iter()
                                .map(|s| crate::untrusted::line(s).into_owned())
                                .collect::<Vec<_>>()
                                .join("; ")
                        ),
                        Some(g) => format!(", gate {g}"),
                        None => String::new(),
                    }
                );
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
                        "      {}{:<13} {:<10} {}",
                        st.hop.map(|h| format!("hop {h:<3}")).unwrap_or_default(),
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
