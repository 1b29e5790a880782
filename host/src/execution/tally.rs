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

use super::run::{hop_phases, hops_of};

/// A service's line in the summary.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSummary {
    /// Service.
    pub name: String,
    /// Steps done.
    pub done: usize,
    /// Steps failed.
    pub failed: usize,
    /// Steps in all.
    pub total: usize,
    /// Whether its rollback ran: done (`Some(true)`) or not (`Some(false)`).
    pub rolled_back: Option<bool>,
}

/// Whether `service`'s rollback ran, by its rollback steps' last status:
/// all done (`Some(true)`), not all (`Some(false)`), none (`None`).
pub(crate) fn rolled_back(steps: &BTreeMap<StepKey, StepStatus>, service: &str) -> Option<bool> {
    let mut rollbacks = steps
        .iter()
        .filter(|(k, _)| k.service == service && k.phase == Phase::Rollback)
        .map(|(_, st)| *st)
        .peekable();
    rollbacks.peek()?;
    Some(rollbacks.all(|st| st == StepStatus::Done))
}

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
        ServiceSummary {
            name: s.name.clone(),
            done,
            failed,
            total,
            rolled_back: rolled_back(&self.steps, &s.name),
        }
    }

    /// The report as gathered.
    pub fn report(&self) -> &Gathering {
        &self.report
    }
}
