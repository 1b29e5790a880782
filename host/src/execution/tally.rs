//! What a new run's journal holds, gathered while the journal is written
//! (a [`crate::journal::Tap`]): each service's summary counts and the
//! report. The end of a run then reads nothing back, where reading back a
//! 2 000 000-step journal took a third of the run and held every step's
//! key in memory twice (the summary's and the report's readers).
//!
//! Exact only for what it is used for: a run that began here (a resumed
//! run's journal holds attempts this process never saw) and whose records
//! were all written. A node step runs at most once in a run attempt, so
//! counting the node steps' ends is the same as looking up each one's
//! last status; the few steps that are not a node's are kept one by one.

use std::collections::{BTreeMap, HashMap};

use crate::events::{Event, Phase, PlannedService, StepKey, StepResult};
use crate::journal::StepStatus;
use crate::report::Gathering;

use super::lifecycle::ServiceSummary;
use super::run::{hop_phases, hops_of};

/// Node steps of one (hop, phase) of a service: how many ended, and how.
#[derive(Default, Clone, Copy)]
struct Ends {
    done: usize,
    failed: usize,
}

/// The summary and the report of a run, record by record.
#[derive(Default)]
pub struct Tally {
    report: Gathering,
    /// The last status of each step that is not a node's.
    steps: BTreeMap<StepKey, StepStatus>,
    /// Per service, per (hop, phase): its node steps' ends.
    nodes: HashMap<String, HashMap<(Option<u32>, Phase), Ends>>,
}

impl Tally {
    /// The next record written.
    pub fn add(&mut self, ev: &Event) {
        self.report.add(ev);
        match ev {
            Event::StepStarted { step, .. } if step.node.is_none() => {
                self.steps.insert(step.clone(), StepStatus::Running);
            }
            Event::StepFinished { step, status, .. } => {
                let ok = *status == StepResult::Ok;
                if step.node.is_none() {
                    self.steps.insert(
                        step.clone(),
                        if ok {
                            StepStatus::Done
                        } else {
                            StepStatus::Failed
                        },
                    );
                    return;
                }
                let per = match self.nodes.get_mut(step.service.as_str()) {
                    Some(per) => per,
                    None => self.nodes.entry(step.service.clone()).or_default(),
                };
                let ends = per.entry((step.hop, step.phase)).or_default();
                if ok {
                    ends.done += 1;
                } else {
                    ends.failed += 1;
                }
            }
            _ => {}
        }
    }

    /// Service `s`'s line of the summary: the same as counting each of its
    /// steps' last status in the journal.
    pub fn summary(&self, s: &PlannedService) -> ServiceSummary {
        let (mut done, mut failed, mut total) = (0, 0, 0);
        for (hop, kind) in hops_of(s) {
            let (before, per_node, after) = hop_phases(kind);
            for phase in before.iter().chain(after) {
                total += 1;
                match self.steps.get(&StepKey {
                    hop,
                    service: s.name.clone(),
                    phase: *phase,
                    node: None,
                }) {
                    Some(StepStatus::Done) => done += 1,
                    Some(StepStatus::Failed) => failed += 1,
                    _ => {}
                }
            }
            if let Some(phase) = per_node {
                total += s.nodes.len();
                let ends = self
                    .nodes
                    .get(&s.name)
                    .and_then(|per| per.get(&(hop, phase)))
                    .copied()
                    .unwrap_or_default();
                done += ends.done;
                failed += ends.failed;
            }
        }
        let rollbacks: Vec<&StepStatus> = self
            .steps
            .iter()
            .filter(|(k, _)| k.service == s.name && k.phase == Phase::Rollback)
            .map(|(_, st)| st)
            .collect();
        ServiceSummary {
            name: s.name.clone(),
            done,
            failed,
            total,
            rolled_back: (!rollbacks.is_empty())
                .then(|| rollbacks.iter().all(|st| **st == StepStatus::Done)),
        }
    }

    /// The report as gathered.
    pub fn report(&self) -> &Gathering {
        &self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let want: Vec<ServiceSummary> = plan
            .iter()
            .map(|s| super::super::lifecycle::summarize(s, &read_back))
            .collect();
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
