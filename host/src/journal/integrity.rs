//! A journal checked as it is replayed: a run that resumes, reports or
//! decides whether a new run may start reads only a journal whose records
//! can be accounted for. Each record carries a checksum chained from the
//! one before it (`"chain"`, the last field of the line), so a record cut
//! from the middle, edited or inserted breaks the chain at the next one;
//! and the records must follow the order a run writes them in: the run's
//! start first, a step's commands one after another within the step
//! (sequence numbers without gaps, no command after one whose result is
//! missing), a step ending only after it started, a finished step never
//! started again, and only the services and nodes the run planned.
//! Journals written before the chain existed (no `chain` field) are
//! checked for order and membership only.

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};

use crate::events::{Event, Phase, StepKey, StepResult};

/// The suffix a chained record ends with: `,"chain":"` + 16 hex + `"}`.
const PREFIX: &[u8] = b",\"chain\":\"";
const HEX: usize = 16;
/// Bytes of the suffix.
pub const SUFFIX_LEN: usize = PREFIX.len() + HEX + 2;

/// The next link: the first 16 hex digits of sha256(previous link, body).
pub fn link(prev: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(body);
    hex::encode(&h.finalize()[..HEX / 2])
}

/// A serialized record (`{…}`) with its chain field appended; the new link.
pub fn seal(prev: &str, mut json: Vec<u8>) -> (Vec<u8>, String) {
    debug_assert_eq!(json.last(), Some(&b'}'));
    json.pop();
    let chain = link(prev, &json);
    json.extend_from_slice(PREFIX);
    json.extend_from_slice(chain.as_bytes());
    json.extend_from_slice(b"\"}");
    (json, chain)
}

/// The body and link of a chained line (without its newline), or `None`
/// for a line without a chain.
fn split(line: &[u8]) -> Option<(&[u8], &str)> {
    if line.len() < SUFFIX_LEN + 2 || !line.ends_with(b"\"}") {
        return None;
    }
    let at = line.len() - SUFFIX_LEN;
    if &line[at..at + PREFIX.len()] != PREFIX {
        return None;
    }
    let hex = std::str::from_utf8(&line[at + PREFIX.len()..line.len() - 2]).ok()?;
    hex.bytes()
        .all(|b| b.is_ascii_hexdigit())
        .then_some((&line[..at], hex))
}

/// One attempt of a step: the commands it journaled so far.
#[derive(Default)]
struct Attempt {
    /// Finished ok (a finished step is never started again).
    done: bool,
    /// Started and not yet ended.
    open: bool,
    /// The sequence number the next command must have.
    next: u32,
    /// A command whose start is journaled and its result not yet.
    in_flight: Option<u32>,
}

/// The checks, fed one record at a time.
#[derive(Default)]
pub struct Checker {
    line: usize,
    chain: Option<String>,
    started: bool,
    services: HashMap<String, HashSet<String>>,
    /// Per service, the stages of its hops (empty: a run of one hop).
    hops: HashMap<String, HashSet<u32>>,
    /// The operator's gate commands of a train, and its stages.
    gates: HashSet<String>,
    stages: u32,
    steps: HashMap<StepKey, Attempt>,
}

impl Checker {
    /// Check one complete line (without its newline) and the event it
    /// holds; what is wrong with it, if anything.
    pub fn check(&mut self, raw: &[u8], ev: &Event) -> Result<(), String> {
        self.line += 1;
        if !self.started {
            // Named as what it is before the chain is looked at.
            self.order(ev)?;
        }
        match split(raw) {
            Some((body, got)) => {
                let prev = self.chain.as_deref().unwrap_or("");
                let want = link(prev, body);
                if want != got {
                    return Err(if self.chain.is_none() && self.line > 1 {
                        "its checksum does not follow from the records before it".to_string()
                    } else {
                        "its checksum does not follow from the record before it: a record before it was removed, changed or inserted, or this one was edited".to_string()
                    });
                }
                self.chain = Some(got.to_string());
            }
            None if self.chain.is_some() => {
                return Err(
                    "it has no checksum, while the records before it have one: it was added or edited by hand".into(),
                );
            }
            None => {}
        }
        if self.line == 1 {
            return Ok(()); // the start, checked above
        }
        self.order(ev)
    }

    fn order(&mut self, ev: &Event) -> Result<(), String> {
        if !self.started {
            let Event::RunStarted { plan, train, .. } = ev else {
                return Err(
                    "the journal has no start record (`run-started`) on its first line: what the run planned is unknown".into(),
                );
            };
            self.started = true;
            self.services = plan
                .iter()
                .map(|s| (s.name.clone(), s.nodes.iter().cloned().collect()))
                .collect();
            self.hops = plan
                .iter()
                .map(|s| (s.name.clone(), s.hops.iter().map(|h| h.stage).collect()))
                .collect();
            if let Some(t) = train {
                self.gates = t.gates.iter().cloned().collect();
                self.stages = t.hops;
            }
            return Ok(());
        }
        match ev {
            Event::RunStarted { .. } => Err("a second `run-started` record".into()),
            Event::StepStarted { step, .. } => {
                self.member(step)?;
                let a = self.steps.entry(step.clone()).or_default();
                if a.done && !matches!(step.phase, Phase::Check | Phase::Verify) {
                    return Err(format!(
                        "step {step} starts again after it finished ok: a finished step is never run twice"
                    ));
                }
                a.open = true;
                a.next = 0;
                a.in_flight = None;
                Ok(())
            }
            Event::StepFinished { step, status, .. } => {
                let a = self.attempt(step)?;
                if let Some(n) = a.in_flight {
                    return Err(format!(
                        "step {step} ends while its command {n} has no result"
                    ));
                }
                a.open = false;
                a.done = *status == StepResult::Ok;
                Ok(())
            }
            Event::CommandStarted { step, seq, .. } => {
                let a = self.attempt(step)?;
                if let Some(n) = a.in_flight {
                    return Err(format!(
                        "command {seq} of step {step} starts while command {n} has no result: records are missing"
                    ));
                }
                if *seq != a.next {
                    return Err(format!(
                        "command {seq} of step {step} follows command {}: commands between them are missing",
                        a.next as i64 - 1
                    ));
                }
                a.in_flight = Some(*seq);
                Ok(())
            }
            Event::CommandFinished { step, seq, .. } => {
                let a = self.attempt(step)?;
                match a.in_flight {
                    Some(n) if n != *seq => {
                        return Err(format!(
                            "command {seq} of step {step} ends while command {n} has no result: records are missing"
                        ));
                    }
                    None if *seq != a.next => {
                        return Err(format!(
                            "command {seq} of step {step} follows command {}: commands between them are missing",
                            a.next as i64 - 1
                        ));
                    }
                    _ => {}
                }
                a.in_flight = None;
                a.next = seq + 1;
                Ok(())
            }
            Event::State { service, .. } => self.service(service),
            Event::RollbackStarted {
                services,
                irreversible,
                steps,
            } => {
                services
                    .iter()
                    .chain(irreversible)
                    .try_for_each(|s| self.service(s))?;
                steps.iter().try_for_each(|s| self.member(s))
            }
            Event::RunResumed { .. } => {
                // Attempts cut short by the stop end here; the resumed
                // run starts them again.
                for a in self.steps.values_mut() {
                    a.open = false;
                    a.in_flight = None;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn service(&self, s: &str) -> Result<(), String> {
        if self.services.contains_key(s) {
            Ok(())
        } else {
            Err(format!("service `{s}` is not one this run planned"))
        }
    }

    fn member(&self, step: &StepKey) -> Result<(), String> {
        if step.service == crate::events::GATE {
            let known = step.node.as_ref().is_some_and(|n| self.gates.contains(n));
            return match step.hop {
                Some(h) if known && h + 1 < self.stages => Ok(()),
                _ => Err(format!("step {step} is not a gate this run planned")),
            };
        }
        self.service(&step.service)?;
        let stages = &self.hops[&step.service];
        let planned_hop = match step.hop {
            None => stages.is_empty(),
            Some(h) => stages.contains(&h),
        };
        if !planned_hop {
            return Err(format!(
                "step {step} is of a hop this run did not plan for service `{}`",
                step.service
            ));
        }
        if let Some(n) = &step.node
            && !self.services[&step.service].contains(n)
        {
            return Err(format!(
                "node `{n}` is not one this run planned for service `{}`",
                step.service
            ));
        }
        Ok(())
    }

    fn attempt(&mut self, step: &StepKey) -> Result<&mut Attempt, String> {
        match self.steps.get_mut(step) {
            Some(a) if a.open => Ok(a),
            _ => Err(format!(
                "a record of step {step}, which has not started (or has already ended)"
            )),
        }
    }

    /// The last link of the chain (where a resumed run's records go on).
    pub fn last_link(&self) -> Option<&str> {
        self.chain.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: &str = r#"{"event":"run-started","run_id":"r","time":"t","plan":[{"name":"svc","level":0,"depends_on":[],"nodes":["n1","n2"],"rollout":"parallel","reversible":true}],"plugins":[],"options":{"dry_run":false,"only":[],"limit":[],"rollback_on_failure":false}}"#;

    fn step(phase: &str, node: Option<&str>) -> String {
        match node {
            Some(n) => format!(r#"{{"service":"svc","phase":"{phase}","node":"{n}"}}"#),
            None => format!(r#"{{"service":"svc","phase":"{phase}"}}"#),
        }
    }

    fn started(s: &str) -> String {
        format!(r#"{{"event":"step-started","step":{s},"at_ms":1}}"#)
    }

    fn finished(s: &str, status: &str) -> String {
        format!(
            r#"{{"event":"step-finished","step":{s},"status":"{status}","duration_ms":1,"at_ms":2}}"#
        )
    }

    fn cmd(kind: &str, s: &str, seq: u32) -> String {
        match kind {
            "started" => format!(
                r#"{{"event":"command-started","step":{s},"seq":{seq},"node":"n1","argv":["true"]}}"#
            ),
            _ => format!(
                r#"{{"event":"command-finished","step":{s},"seq":{seq},"node":"n1","argv":["true"],"result":{{"status":0,"stdout":"","stderr":"","truncated":false,"skipped":false,"mutating":true,"duration_ms":1}}}}"#
            ),
        }
    }

    /// A good run of one upgrade step with two commands.
    fn good() -> Vec<String> {
        let s = step("upgrade", Some("n1"));
        vec![
            START.to_string(),
            started(&s),
            cmd("started", &s, 0),
            cmd("finished", &s, 0),
            cmd("finished", &s, 1),
            finished(&s, "ok"),
        ]
    }

    /// Check lines, chained (as a journal writes them) or not (as written
    /// before the chain existed): the first error and its 1-based line.
    fn check(lines: &[String], chained: bool) -> Result<(), (usize, String)> {
        let mut prev = String::new();
        let mut c = Checker::default();
        let sealed: Vec<Vec<u8>> = lines
            .iter()
            .map(|l| {
                if chained {
                    let (line, link) = seal(&prev, l.as_bytes().to_vec());
                    prev = link;
                    line
                } else {
                    l.as_bytes().to_vec()
                }
            })
            .collect();
        for (i, raw) in sealed.iter().enumerate() {
            let ev: Event = serde_json::from_slice(raw).unwrap();
            c.check(raw, &ev).map_err(|e| (i + 1, e))?;
        }
        Ok(())
    }

    #[test]
    fn a_run_as_written_passes_chained_or_not() {
        check(&good(), true).unwrap();
        check(&good(), false).unwrap();
    }

    #[test]
    fn a_trains_steps_name_a_planned_hop_or_gate() {
        const TRAIN: &str = r#"{"event":"run-started","run_id":"r","time":"t","plan":[{"name":"svc","level":0,"depends_on":[],"nodes":["n1"],"rollout":"parallel","reversible":true,"hops":[{"stage":0,"from":"a","to":"b","kind":"full"},{"stage":1,"from":"b","to":"c","kind":"full"}]}],"plugins":[],"options":{"dry_run":false,"only":[],"limit":[],"rollback_on_failure":false},"train":{"hops":2,"style":"in-sequence","gates":["smoke"]}}"#;
        let lines = |step: &str| vec![TRAIN.to_string(), started(step), finished(step, "ok")];
        let hop =
            |h: &str| format!(r#"{{"hop":{h},"service":"svc","phase":"upgrade","node":"n1"}}"#);
        let gate = |h: u32, name: &str| {
            format!(r#"{{"hop":{h},"service":"(gate)","phase":"verify","node":"{name}"}}"#)
        };
        check(&lines(&hop("1")), true).unwrap();
        check(&lines(&gate(0, "smoke")), true).unwrap();
        let e = check(&lines(&hop("2")), true).unwrap_err().1;
        assert!(e.contains("of a hop this run did not plan"), "{e}");
        // A train's step without its hop is not one it planned either.
        let e = check(&lines(&step("upgrade", Some("n1"))), true)
            .unwrap_err()
            .1;
        assert!(e.contains("of a hop this run did not plan"), "{e}");
        for bad in [gate(0, "other"), gate(1, "smoke")] {
            let e = check(&lines(&bad), true).unwrap_err().1;
            assert!(e.contains("is not a gate this run planned"), "{e}");
        }
    }

    #[test]
    fn order_and_membership_are_checked() {
        let s = step("upgrade", Some("n1"));
        let mut again = good();
        again.push(started(&s));
        assert!(
            check(&again, false)
                .unwrap_err()
                .1
                .contains("starts again after it finished ok")
        );
        let mut gap = good();
        gap.remove(3); // command 0's result
        assert!(check(&gap, false).unwrap_err().1.contains("has no result"));
        let mut skip = good();
        skip[4] = cmd("finished", &s, 2);
        assert!(
            check(&skip, false)
                .unwrap_err()
                .1
                .contains("commands between them are missing")
        );
        let mut forged = vec![START.to_string()];
        forged.push(finished(&step("upgrade", Some("n2")), "ok"));
        assert!(
            check(&forged, false)
                .unwrap_err()
                .1
                .contains("has not started")
        );
        let mut stranger = good();
        stranger.push(started(&step("upgrade", Some("n9"))));
        assert!(check(&stranger, false).unwrap_err().1.contains("node `n9`"));
        let mut other = good();
        other.push(r#"{"event":"state","service":"other","key":"k","value":"v"}"#.into());
        assert!(
            check(&other, false)
                .unwrap_err()
                .1
                .contains("service `other`")
        );
        let headless = good()[1..].to_vec();
        assert!(
            check(&headless, false)
                .unwrap_err()
                .1
                .contains("no start record")
        );
    }

    #[test]
    fn the_chain_breaks_where_a_record_was_cut_edited_or_added() {
        let mut prev = String::new();
        let mut lines = Vec::new();
        for l in good() {
            let (line, link) = seal(&prev, l.into_bytes());
            prev = link;
            lines.push(line);
        }
        let run = |lines: &[Vec<u8>]| -> Result<(), (usize, String)> {
            let mut c = Checker::default();
            for (i, raw) in lines.iter().enumerate() {
                let ev: Event = serde_json::from_slice(raw).unwrap();
                c.check(raw, &ev).map_err(|e| (i + 1, e))?;
            }
            Ok(())
        };
        run(&lines).unwrap();
        let mut cut = lines.clone();
        cut.remove(2);
        assert_eq!(run(&cut).unwrap_err().0, 3);
        let mut edited = lines.clone();
        let text = String::from_utf8(edited[5].clone())
            .unwrap()
            .replace("\"ok\"", "\"failed\"");
        edited[5] = text.into_bytes();
        let e = run(&edited).unwrap_err();
        assert_eq!(e.0, 6);
        assert!(e.1.contains("checksum"), "{}", e.1);
        let mut added = lines.clone();
        added.push(finished(&step("upgrade", Some("n2")), "ok").into_bytes());
        assert!(run(&added).unwrap_err().1.contains("no checksum"));
    }
}
