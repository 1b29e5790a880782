//! Looking at runs without running anything: where a run stands
//! (`uphost status`) and every run of a state directory (`uphost runs`),
//! read from their journals and the run lock. The views serialize as the
//! commands' JSON output.

use std::path::Path;

use serde::Serialize;

use super::run::{run_steps, steps_of};
use crate::Error;
use crate::events::{Event, Outcome};
use crate::journal;

/// The run asked for, or the current one.
pub fn run_or_current(state_dir: &Path, run: Option<&str>) -> Result<String, Error> {
    Ok(match run {
        Some(r) => r.to_string(),
        None => journal::current_run(state_dir)?,
    })
}

/// One step of a service.
#[derive(Serialize)]
pub struct StepView {
    /// Its hop of a release train, 1-based (absent in a run of one hop).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hop: Option<u32>,
    /// Its phase.
    pub phase: String,
    /// Its node, for `upgrade`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// `done`, `failed`, `running` or `remaining`.
    pub status: &'static str,
}

/// One service of a run.
#[derive(Serialize)]
pub struct ServiceView {
    /// Service.
    pub name: String,
    /// `done`, `failed`, `running`, `partial` or `remaining`.
    pub status: &'static str,
    /// Steps done.
    pub done: usize,
    /// Steps in all.
    pub total: usize,
    /// Every step.
    pub steps: Vec<StepView>,
    /// Once the run's rollback began: `done`, `failed`, `running` or
    /// `pending` for a service it rolls back, `irreversible` for one it
    /// cannot; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback: Option<&'static str>,
}

/// The run's rollback, once it began.
#[derive(Serialize)]
pub struct RollbackView {
    /// Services to roll back, in order.
    pub services: Vec<String>,
    /// Touched services that cannot roll back.
    pub irreversible: Vec<String>,
    /// Every listed rollback is done.
    pub complete: bool,
}

/// One hop of a release train: the stage of the run's timeline.
#[derive(Serialize)]
pub struct HopView {
    /// 1-based.
    pub hop: u32,
    /// `done`, `failed`, `running`, `partial` or `remaining`: its steps
    /// (`failed` too when its gate failed).
    pub status: &'static str,
    /// Its gate (every deployed service's `verify`, the operator's
    /// commands): `passed`, `failed`, `running`, `pending`; absent after
    /// the last hop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<&'static str>,
    /// The gate's failed checks, as steps.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gate_failed: Vec<String>,
}

/// Where a run stands.
#[derive(Serialize)]
pub struct StatusView {
    /// The run.
    pub run_id: String,
    /// The run executed no mutating command (`run --dry-run`).
    pub dry_run: bool,
    /// `complete`, `failed`, `interrupted`, `rolled-back`, or `running`.
    pub outcome: String,
    /// The uphost running it, while `outcome` is `running`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running: Option<String>,
    /// Why it was paused (`uphost pause`, the maintenance window), when it
    /// stopped paused and has not resumed since.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
    /// Its outcome is `complete`.
    pub complete: bool,
    /// Its rollback, once it began.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackView>,
    /// Each probe's measured unavailability (every attempt of the run).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub probes: std::collections::BTreeMap<String, crate::events::ProbeFigures>,
    /// The hops of a release train, in order (empty for a run of one hop).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hops: Vec<HopView>,
    /// Per service, in plan order.
    pub services: Vec<ServiceView>,
}

/// The status word of a group of steps.
fn group_status<'a>(statuses: impl Iterator<Item = &'a str>) -> &'static str {
    let all: Vec<&str> = statuses.collect();
    let done = all.iter().filter(|s| **s == "done").count();
    if done == all.len() {
        "done"
    } else if all.contains(&"failed") {
        "failed"
    } else if all.contains(&"running") {
        "running"
    } else if done > 0 {
        "partial"
    } else {
        "remaining"
    }
}

/// The hops of a train as stages of one timeline.
fn hop_views(
    plan: &[crate::events::PlannedService],
    train: Option<&crate::events::TrainRecord>,
    r: &journal::Replayed,
) -> Vec<HopView> {
    let Some(t) = train else {
        return Vec::new();
    };
    let steps = run_steps(plan, Some(t));
    let word = |k: &crate::events::StepKey| r.steps.get(k).map_or("remaining", |s| s.as_str());
    (0..t.hops)
        .map(|h| {
            let (gate, work): (Vec<&crate::events::StepKey>, Vec<&crate::events::StepKey>) = steps
                .iter()
                .filter(|k| k.hop == Some(h))
                .partition(|k| k.phase == crate::events::Phase::Verify);
            let gate_status =
                (h + 1 < t.hops).then(|| match group_status(gate.iter().map(|k| word(k))) {
                    "done" => "passed",
                    "failed" => "failed",
                    "running" => "running",
                    _ => "pending",
                });
            HopView {
                hop: h + 1,
                // A hop whose gate failed failed: the next one cannot start.
                status: match gate_status {
                    Some("failed") => "failed",
                    _ => group_status(work.iter().map(|k| word(k))),
                },
                gate: gate_status,
                gate_failed: gate
                    .iter()
                    .filter(|k| word(k) == "failed")
                    .map(|k| k.to_string())
                    .collect(),
            }
        })
        .collect()
}

/// The outcome of a run whose journal has none yet.
pub fn unfinished_outcome(running: bool) -> String {
    if running { "running" } else { "interrupted" }.to_string()
}

/// Where a run stands (`run`, or the current run): per service and
/// node, from its journal, and whether its uphost is running it now.
pub fn status(state_dir: &Path, run: Option<&str>) -> Result<StatusView, Error> {
    let run_id = run_or_current(state_dir, run)?;
    let path = journal::journal_of(state_dir, &run_id)?;
    let r = journal::replay_summary(&path)?;
    let Some(Event::RunStarted {
        plan,
        options,
        train,
        ..
    }) = r.run_started()
    else {
        return Err(Error::Failed(format!(
            "{}: no run-started record",
            path.display()
        )));
    };
    // No outcome yet: running now, or stopped without one (killed,
    // crashed, a lost machine), which `resume` continues.
    let (outcome, holder) = match r.outcome() {
        Some(o) => (o.to_string(), None),
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
                hop: k.hop.map(|h| h + 1),
                phase: k.phase.to_string(),
                status: r.steps.get(&k).map_or("remaining", |s| s.as_str()),
                node: k.node,
            })
            .collect();
        let done = steps.iter().filter(|s| s.status == "done").count();
        let status = group_status(steps.iter().map(|s| s.status));
        let rollback = r.rollback.as_ref().and_then(|rb| {
            if rb.irreversible.contains(&s.name) {
                Some("irreversible")
            } else if rb.services.contains(&s.name) {
                let keys: Vec<_> = rb
                    .steps_in_order()
                    .into_iter()
                    .filter(|k| k.service == s.name)
                    .collect();
                Some(
                    match group_status(
                        keys.iter()
                            .map(|k| r.steps.get(k).map_or("pending", |s| s.as_str())),
                    ) {
                        "remaining" => "pending",
                        other => other,
                    },
                )
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
    Ok(StatusView {
        complete: outcome == Outcome::Complete.as_str(),
        dry_run: options.dry_run,
        running: holder.map(|h| h.to_string()),
        paused: r.paused.clone(),
        probes: r.probes.clone(),
        run_id,
        outcome,
        rollback,
        hops: hop_views(plan, train.as_ref(), &r),
        services,
    })
}

/// One run of a state directory.
#[derive(Serialize)]
pub struct RunView {
    /// The run.
    pub run_id: String,
    /// The run `status`, `report` and `resume` use by default.
    pub current: bool,
    /// RFC 3339 start time (absent if the journal has no run-started).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    /// A dry run.
    pub dry_run: bool,
    /// Its `--only`.
    pub only: Vec<String>,
    /// Its `--limit`.
    pub limit: Vec<String>,
    /// `complete`, `failed`, `interrupted` (also: killed before it could
    /// say so), `rolled-back`, or `running`.
    pub outcome: String,
}

/// Every run in the state directory, oldest first, from each journal's
/// first and last records.
pub fn runs(state_dir: &Path) -> Result<Vec<RunView>, Error> {
    let current = journal::current_run(state_dir).ok();
    let mut runs = Vec::new();
    for id in journal::run_ids(state_dir) {
        let path = journal::run_dir(state_dir, &id).join("journal.jsonl");
        let (started, options) = match journal::first_record(&path)? {
            Some(Event::RunStarted { time, options, .. }) => (Some(time), options),
            _ => (None, Default::default()),
        };
        let outcome = match journal::last_record(&path)? {
            Some(Event::RunFinished { outcome, .. }) => outcome.to_string(),
            _ => unfinished_outcome(journal::lock::running(state_dir, &id).is_some()),
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
    Ok(runs)
}

/// How a followed run ended for the follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Followed {
    /// Its `run-finished` record came.
    Finished(Outcome),
    /// No uphost runs it and its journal says no more (killed, crashed):
    /// `uphost resume` continues it.
    Stopped,
}

/// Follow a run's journal from its start as it is written: every complete
/// record to `on_event`, until the run finishes or no uphost is running it
/// (read from the journal and the run lock, never from the running
/// process, which may be in another session or have lost its terminal).
pub fn follow(
    state_dir: &Path,
    run: Option<&str>,
    mut on_event: impl FnMut(&Event),
) -> Result<Followed, Error> {
    use std::io::{BufRead, Seek, SeekFrom};
    let run_id = run_or_current(state_dir, run)?;
    let path = journal::journal_of(state_dir, &run_id)?;
    let io = |source| Error::Io {
        path: path.clone(),
        source,
    };
    let mut reader = std::io::BufReader::new(std::fs::File::open(&path).map_err(io)?);
    let mut offset = 0u64;
    let mut line = Vec::new();
    let mut finished = None;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(io)?;
        if n > 0 && line.ends_with(b"\n") {
            offset += n as u64;
            // A record this release cannot read is skipped, not fatal: the
            // follower only shows.
            if let Ok(ev) = serde_json::from_slice::<Event>(&line) {
                match &ev {
                    Event::RunFinished { outcome, .. } => finished = Some(*outcome),
                    Event::RunResumed { .. } => finished = None,
                    _ => {}
                }
                on_event(&ev);
            }
            continue;
        }
        // At the end (or a record still being written): is it still going?
        reader.seek(SeekFrom::Start(offset)).map_err(io)?;
        let live = journal::lock::running(state_dir, &run_id).is_some();
        match (finished, live) {
            (Some(o), false) => return Ok(Followed::Finished(o)),
            (None, false) => {
                // One more look: the last records may have landed just now.
                line.clear();
                if reader.read_until(b'\n', &mut line).map_err(io)? == 0 {
                    return Ok(Followed::Stopped);
                }
                reader.seek(SeekFrom::Start(offset)).map_err(io)?;
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(200)),
        }
    }
}
