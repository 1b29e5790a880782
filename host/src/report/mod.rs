//! The run report: one self-contained HTML file (inline CSS, SVG and a few
//! lines of script, nothing fetched) built from a run's journal: the plan,
//! a timeline of every (service, node, phase) step with failures and
//! denials highlighted, each service's unavailability window (from its
//! `service-down` to its last `service-up` milestone), and every command.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

#[cfg(test)]
use crate::events::Outcome;
use crate::events::{
    CommandRecord, Event, LogLevel, Phase, PlannedService, StepKey, StepResult, TrainRecord,
};
use crate::journal::{self, JournalError};

/// One bar of the timeline.
struct Bar {
    step: StepKey,
    start: u64,
    end: Option<u64>,
    failed: bool,
    error: Option<String>,
    denied: usize,
    commands: Vec<(String, Vec<String>, CommandRecord)>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Above this many steps the report keeps per-node bars and commands only
/// for failed steps (the journal has everything).
pub const DETAIL_LIMIT: usize = 5_000;

/// The plan's table names at most this many nodes per service, then how
/// many more there are (the journal has them all).
pub const NODES_SHOWN: usize = 100;

/// `s` as the plan's table shows it: its first [`NODES_SHOWN`] nodes.
fn shown(s: &PlannedService) -> PlannedService {
    let mut nodes: Vec<String> = s.nodes.iter().take(NODES_SHOWN).cloned().collect();
    if s.nodes.len() > NODES_SHOWN {
        nodes.push(format!("… and {} more", s.nodes.len() - NODES_SHOWN));
    }
    PlannedService {
        name: s.name.clone(),
        level: s.level,
        depends_on: s.depends_on.clone(),
        nodes,
        rollout: s.rollout.clone(),
        reversible: s.reversible,
        hops: s.hops.clone(),
        guard: s.guard,
    }
}

/// Build the HTML of a journal.
pub fn render(events: impl IntoIterator<Item = Event>) -> String {
    html(&Gathered::of(events))
}

/// A report gathered record by record while its run writes the journal
/// (fed the records written, in their order), so that the end of a run
/// writes its report without reading the journal back.
pub struct Gathering(Gathered);

impl Default for Gathering {
    fn default() -> Self {
        Gathering(Gathered::new())
    }
}

impl Gathering {
    /// The next record written.
    pub fn add(&mut self, ev: &Event) {
        self.0.add(ev);
    }

    /// Write the report of run `run_id` as gathered so far.
    pub fn write(&self, state_dir: &Path, run_id: &str) -> Result<PathBuf, JournalError> {
        write_html(state_dir, run_id, html(&self.0))
    }
}

fn html(g: &Gathered) -> String {
    let total = g.end_ms.max(1);
    let mut h = String::new();
    header(&mut h, g, total);
    plan_table(&mut h, g);
    train_table(&mut h, g);
    probe_table(&mut h, g);
    gate_list(&mut h, g);
    timeline(&mut h, g, total);
    denied(&mut h, g);
    steps(&mut h, g);
    h.push_str(
        r##"</div><script>
"use strict";
console.log("uphost report ready: " + document.querySelectorAll("#timeline rect").length + " bars");
document.getElementById("only-failed").addEventListener("change", function (e) {
  for (const d of document.querySelectorAll("#steps details")) {
    d.style.display = e.target.checked && !d.classList.contains("fail") ? "none" : "";
  }
});
</script></body></html>
"##,
    );

    h
}

/// What the report shows of a run, gathered from its journal in one pass.
struct Gathered {
    run_id: String,
    started: String,
    plan: Vec<PlannedService>,
    outcome: String,
    end_ms: u64,
    bars: Vec<Bar>,
    /// The bars of the steps started and not finished yet.
    open: BTreeMap<StepKey, usize>,
    down: BTreeMap<String, (u64, Option<u64>)>,
    denials: Vec<String>,
    steps_seen: usize,
    /// The release train, when the run has several hops.
    train: Option<TrainRecord>,
    /// A node-major run: the timeline's rows are the nodes.
    node_major: bool,
    /// Per hop: first start, last end, a failed step, a failed gate step.
    hops: BTreeMap<u32, HopSpan>,
    /// When the run was paused, and why.
    pauses: Vec<(u64, String)>,
    /// Per probe: its outages and figures.
    probes: BTreeMap<String, Measured>,
    /// The gates before batches, as lines.
    gates: Vec<String>,
}

/// A probe's outages (start, end if it came back) and figures.
type Measured = (Vec<(u64, Option<u64>)>, crate::events::ProbeFigures);

/// What the report shows of one hop of a train.
#[derive(Default)]
struct HopSpan {
    start: u64,
    end: u64,
    failed: bool,
    gate_failed: bool,
    gate_passed: usize,
}

impl Gathered {
    /// Nothing gathered yet.
    fn new() -> Gathered {
        Gathered {
            run_id: String::new(),
            started: String::new(),
            plan: Vec::new(),
            outcome: "running or interrupted".to_string(),
            end_ms: 0,
            bars: Vec::new(),
            open: BTreeMap::new(),
            down: BTreeMap::new(),
            denials: Vec::new(),
            steps_seen: 0,
            train: None,
            node_major: false,
            hops: BTreeMap::new(),
            pauses: Vec::new(),
            probes: BTreeMap::new(),
            gates: Vec::new(),
        }
    }

    /// One pass over the events: the timeline's bars (per-node detail up
    /// to [`DETAIL_LIMIT`] steps), unavailability windows, denials.
    fn of(events: impl IntoIterator<Item = Event>) -> Gathered {
        let mut g = Gathered::new();
        for ev in events {
            g.add(&ev);
        }
        g
    }

    /// The next event of the journal, in its order.
    fn add(&mut self, ev: &Event) {
        match ev {
            Event::StepStarted {
                step: StepKey { hop: Some(h), .. },
                at_ms,
            } => {
                let span = self.hops.entry(*h).or_insert(HopSpan {
                    start: *at_ms,
                    ..HopSpan::default()
                });
                span.start = span.start.min(*at_ms);
            }
            Event::StepFinished {
                step: step @ StepKey { hop: Some(h), .. },
                at_ms,
                status,
                ..
            } => {
                let span = self.hops.entry(*h).or_default();
                span.end = span.end.max(*at_ms);
                let failed = *status != StepResult::Ok;
                if step.phase == Phase::Verify {
                    span.gate_failed |= failed;
                    span.gate_passed += usize::from(!failed);
                } else {
                    span.failed |= failed;
                }
            }
            _ => {}
        }
        match ev {
            Event::RunStarted {
                run_id: r,
                time,
                plan: p,
                train: t,
                options,
                ..
            } => {
                self.node_major = options.node_major;
                self.run_id = r.clone();
                self.started = time.clone();
                self.plan = p.iter().map(shown).collect();
                self.train = t.clone();
            }
            Event::StepStarted { step, at_ms } => {
                self.steps_seen += 1;
                if self.steps_seen > DETAIL_LIMIT && step.node.is_some() {
                    self.end_ms = self.end_ms.max(*at_ms);
                    return; // summarised; failures are added below
                }
                self.open.insert(step.clone(), self.bars.len());
                self.bars.push(Bar {
                    step: step.clone(),
                    start: *at_ms,
                    end: None,
                    failed: false,
                    error: None,
                    denied: 0,
                    commands: Vec::new(),
                });
                self.end_ms = self.end_ms.max(*at_ms);
            }
            Event::StepFinished {
                step,
                at_ms,
                status,
                error,
                duration_ms,
            } => {
                match self.open.remove(step) {
                    Some(i) => {
                        self.bars[i].end = Some(*at_ms);
                        self.bars[i].failed = *status != StepResult::Ok;
                        self.bars[i].error = error.clone();
                    }
                    None if *status != StepResult::Ok => self.bars.push(Bar {
                        step: step.clone(),
                        start: at_ms.saturating_sub(*duration_ms),
                        end: Some(*at_ms),
                        failed: true,
                        error: error.clone(),
                        denied: 0,
                        commands: Vec::new(),
                    }),
                    None => {}
                }
                self.end_ms = self.end_ms.max(*at_ms);
            }
            Event::CommandFinished {
                step,
                node,
                argv,
                result,
                ..
            } => {
                if let Some(i) = self.open.get(step) {
                    self.bars[*i]
                        .commands
                        .push((node.clone(), argv.clone(), result.clone()));
                }
            }
            Event::Denied {
                step,
                plugin,
                node,
                argv,
                reason,
            } => {
                if let Some(i) = self.open.get(step) {
                    self.bars[*i].denied += 1;
                }
                self.denials
                    .push(format!("{plugin} on {node}: {} — {reason}", argv.join(" ")));
            }
            Event::Log {
                step,
                level,
                message,
                at_ms,
            } if *level == LogLevel::Progress => {
                let e = self
                    .down
                    .entry(step.service.clone())
                    .or_insert((*at_ms, None));
                if message == "service-self.down" {
                    e.0 = e.0.min(*at_ms);
                } else if message == "service-up" {
                    e.1 = Some(e.1.unwrap_or(0).max(*at_ms));
                }
            }
            Event::Paused { reason, at_ms } => {
                self.pauses.push((*at_ms, reason.clone()));
                self.end_ms = self.end_ms.max(*at_ms);
            }
            Event::GateChecked {
                service,
                batch,
                passed,
                detail,
                node,
                at_ms,
            } => {
                let place = if service == crate::events::GATE {
                    format!("after hop {}", batch + 1)
                } else if let Some(n) = node {
                    format!("{service}'s ok-to-stop before {n}")
                } else {
                    format!("{service} before batch {}", batch + 1)
                };
                self.gates.push(format!(
                    "at {:.1} s, {place}: {} ({detail})",
                    *at_ms as f64 / 1000.0,
                    if *passed { "passed" } else { "NOT PASSED" }
                ));
                self.end_ms = self.end_ms.max(*at_ms);
            }
            Event::Probe {
                name, up, at_ms, ..
            } => {
                let outages = &mut self.probes.entry(name.clone()).or_default().0;
                match (up, outages.last_mut()) {
                    (false, Some((_, None))) => {}
                    (false, _) => outages.push((*at_ms, None)),
                    (true, Some((_, end @ None))) => *end = Some(*at_ms),
                    (true, _) => {}
                }
                self.end_ms = self.end_ms.max(*at_ms);
            }
            Event::Survival {
                service,
                name,
                what,
                hop,
                passed,
                detail,
                at_ms,
            } => {
                self.gates.push(format!(
                    "at {:.1} s, survival `{name}` of {service}: {what}{} {} ({detail})",
                    *at_ms as f64 / 1000.0,
                    hop.map(|h| format!(" after hop {}", h + 1))
                        .unwrap_or_default(),
                    if *passed { "passed" } else { "FAILED" }
                ));
            }
            Event::ProbeSummary { name, .. } => {
                self.probes.entry(name.clone()).or_default().1.absorb(ev);
            }
            Event::RunFinished { outcome: o, at_ms } => {
                self.outcome = o.to_string();
                self.end_ms = self.end_ms.max(*at_ms);
            }
            _ => {}
        }
    }
}

/// Measured beside declared: each probe's outages, and the declared
/// window of the service it measures.
fn probe_table(h: &mut String, g: &Gathered) {
    if g.probes.is_empty() {
        return;
    }
    h.push_str("<h2>Measured downtime</h2><table id=\"probes\"><tr><th>probe</th><th>service</th><th>outages</th><th>down</th><th>longest</th><th>budget</th><th>declared window of the service</th></tr>");
    for (name, (_, f)) in &g.probes {
        let declared = match f.service.as_ref().and_then(|s| g.down.get(s)) {
            Some((d, Some(u))) => format!("{:.1} s", (u - d) as f64 / 1000.0),
            Some((_, None)) => "not back up".into(),
            None => "—".into(),
        };
        let _ = write!(
            *h,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{:.1} s</td><td>{:.1} s</td><td>{}</td><td>{}</td></tr>",
            if f.budget_ms.is_some_and(|b| f.down_ms > b) {
                "fail"
            } else {
                ""
            },
            esc(name),
            esc(f.service.as_deref().unwrap_or("—")),
            f.outages,
            f.down_ms as f64 / 1000.0,
            f.longest_ms as f64 / 1000.0,
            f.budget_ms
                .map_or("—".to_string(), |b| format!("{:.1} s", b as f64 / 1000.0)),
            esc(&declared)
        );
    }
    h.push_str("</table>");
}

/// The gates of probes and the survival checks, in order.
fn gate_list(h: &mut String, g: &Gathered) {
    if !g.gates.is_empty() {
        h.push_str("<h2>Gates and survival checks</h2><ul id=\"gates\">");
        for l in &g.gates {
            let _ = write!(*h, "<li>{}</li>", esc(l));
        }
        h.push_str("</ul>");
    }
}

/// A release train's hops as stages of one timeline: what each upgrades,
/// its outcome and its gate.
fn train_table(h: &mut String, g: &Gathered) {
    let Some(t) = &g.train else {
        return;
    };
    let _ = write!(
        *h,
        "<h2>Release train</h2><p>{} hops, {}; a gate after each hop but the last (every deployed service's verify{})</p><table id=\"train\"><tr><th>hop</th><th>upgrades</th><th>steps</th><th>gate</th><th>time</th></tr>",
        t.hops,
        esc(&t.style),
        if t.gates.is_empty() {
            String::new()
        } else {
            format!(", then {}", esc(&t.gates.join(", ")))
        }
    );
    for stage in 0..t.hops {
        let what: Vec<String> = g
            .plan
            .iter()
            .filter_map(|s| {
                let hop = s.hops.iter().find(|x| x.stage == stage)?;
                Some(format!(
                    "{} {} → {}{}",
                    s.name,
                    hop.from,
                    hop.to,
                    if hop.kind == crate::events::HopKind::MigrationsOnly {
                        " (migrations only)"
                    } else {
                        ""
                    }
                ))
            })
            .collect();
        let span = g.hops.get(&stage);
        let steps = match span {
            None => "not started",
            Some(s) if s.failed => "failed",
            Some(_) => "ran",
        };
        let gate = match span {
            _ if stage + 1 == t.hops => "—",
            Some(s) if s.gate_failed => "FAILED",
            Some(s) if s.gate_passed > 0 => "passed",
            _ => "not run",
        };
        let time = span.map_or("—".to_string(), |s| {
            format!("{} → {} ms", s.start, s.end.max(s.start))
        });
        let _ = write!(
            *h,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{steps}</td><td>{gate}</td><td>{}</td></tr>",
            if steps == "failed" || gate == "FAILED" {
                "fail"
            } else {
                ""
            },
            stage + 1,
            esc(&what.join(", ")),
            esc(&time)
        );
    }
    h.push_str("</table>");
}

/// The title, outcome and duration.
fn header(h: &mut String, g: &Gathered, total: u64) {
    let _ = write!(
        *h,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>uphost run {id}</title>
<style>
body{{font:14px system-ui,sans-serif;margin:24px;color:#222}} h1{{font-size:20px}} h2{{font-size:16px;margin-top:28px}}
table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}}
.ok{{fill:#3c9a5f}} .failed{{fill:#d33}} .running{{fill:#e0a800}} .down{{fill:#f3c6c6}} .denied{{stroke:#a0f;stroke-width:3}}
.outcome-complete{{color:#3c9a5f}} .outcome-failed,.outcome-rolled-back{{color:#d33}}
code{{font-size:12px}} details{{margin:2px 0}} .fail{{color:#d33}}
</style></head><body>
<h1>uphost run {id}: <span class="outcome-{outcome}">{outcome}</span></h1>
<p>started {started}; {secs:.1} s; {n} steps{more}</p>
"#,
        id = esc(&g.run_id),
        outcome = esc(&g.outcome),
        started = esc(&g.started),
        secs = total as f64 / 1000.0,
        n = g.steps_seen,
        more = if g.steps_seen > DETAIL_LIMIT {
            format!(
                " (node steps beyond the first {DETAIL_LIMIT} are summarised: failures only; the journal has every step)"
            )
        } else {
            String::new()
        }
    );
}

/// The plan, with each service's unavailability window (and before it,
/// when the run was paused).
fn plan_table(h: &mut String, g: &Gathered) {
    if !g.pauses.is_empty() {
        h.push_str("<h2>Pauses</h2><ul id=\"pauses\">");
        for (at, why) in &g.pauses {
            let _ = write!(*h, "<li>at {:.1} s: {}</li>", *at as f64 / 1000.0, esc(why));
        }
        h.push_str("</ul>");
    }
    h.push_str("<h2>Plan</h2><table><tr><th>level</th><th>service</th><th>after</th><th>rollout</th><th>nodes</th><th>rollback</th><th>unavailable</th></tr>");
    for s in &g.plan {
        let window = match g.down.get(&s.name) {
            Some((d, Some(u))) => format!("{:.1} s ({} → {} ms)", (u - d) as f64 / 1000.0, d, u),
            Some((d, None)) => format!("from {d} ms, not back up"),
            None => "—".into(),
        };
        let _ = write!(
            *h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            s.level,
            esc(&s.name),
            esc(&s.depends_on.join(", ")),
            esc(&s.rollout),
            esc(&s.nodes.join(", ")),
            if s.reversible { "yes" } else { "no" },
            esc(&window)
        );
    }
    h.push_str("</table>");
}

/// The SVG timeline: a bar per step over the unavailability bands.
fn timeline(h: &mut String, g: &Gathered, total: u64) {
    let row_h = 16;
    let label_w = 260;
    let width = 1000;
    // A row per step; in a node-major run, a row per node (and one per
    // service for its steps of no node), the node's steps side by side.
    let mut rows: Vec<String> = Vec::new();
    let row_of: Vec<usize> = g
        .bars
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let label = match (&b.step.node, g.node_major) {
                (Some(n), true) => n.clone(),
                (None, true) => format!("{} (service)", b.step.service),
                _ => return usize::MAX - i,
            };
            rows.iter().position(|r| *r == label).unwrap_or_else(|| {
                rows.push(label);
                rows.len() - 1
            })
        })
        .collect();
    let n_rows = if g.node_major {
        rows.len()
    } else {
        g.bars.len()
    };
    let height = (n_rows + g.probes.len()) as i64 * row_h + 30;
    let x = |ms: u64| label_w as f64 + (ms as f64 / total as f64) * (width - label_w - 10) as f64;
    let _ = write!(
        *h,
        r#"<h2>Timeline</h2><p>{}green: done, red: failed, amber: interrupted; purple outline: a command was denied; pink band: the service's unavailability window</p>
<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="11">"#,
        if g.node_major {
            "node by node: a row per node, its services' steps side by side (hover for each); "
        } else {
            ""
        }
    );
    for (r, label) in rows.iter().enumerate() {
        let _ = write!(
            *h,
            r#"<text x="2" y="{}">{}</text>"#,
            r as i64 * row_h + 16,
            esc(label)
        );
    }
    for (i, b) in g.bars.iter().enumerate() {
        let row = if g.node_major { row_of[i] } else { i };
        let y = row as i64 * row_h + 4;
        if let Some((d, u)) = g.down.get(&b.step.service) {
            let u = u.unwrap_or(total);
            let _ = write!(
                *h,
                r#"<rect class="down" x="{:.1}" y="{y}" width="{:.1}" height="{row_h}"/>"#,
                x(*d),
                (x(u) - x(*d)).max(1.0)
            );
        }
        let end = b.end.unwrap_or(total);
        let class = match (b.end, b.failed) {
            (None, _) => "running",
            (_, true) => "failed",
            _ => "ok",
        };
        if !g.node_major {
            let _ = write!(
                *h,
                r#"<text x="2" y="{}">{}</text>"#,
                y + 12,
                esc(&b.step.to_string())
            );
        }
        let _ = write!(
            *h,
            r#"<rect class="{class}{}" x="{:.1}" y="{}" width="{:.1}" height="{}"><title>{} ({} ms){}</title></rect>"#,
            if b.denied > 0 { " denied" } else { "" },
            x(b.start),
            y + 2,
            (x(end) - x(b.start)).max(1.5),
            row_h - 4,
            esc(&b.step.to_string()),
            end.saturating_sub(b.start),
            b.error
                .as_ref()
                .map(|e| format!(": {}", esc(e)))
                .unwrap_or_default()
        );
    }
    // A row per probe: its outages in red.
    for (i, (name, (outages, _))) in g.probes.iter().enumerate() {
        let y = (n_rows + i) as i64 * row_h + 4;
        let _ = write!(
            *h,
            r#"<text x="2" y="{}">probe {}</text>"#,
            y + 12,
            esc(name)
        );
        for (s, e) in outages {
            let e = e.unwrap_or(total);
            let _ = write!(
                *h,
                r#"<rect class="failed outage" x="{:.1}" y="{}" width="{:.1}" height="{}"><title>probe {} down {} ms</title></rect>"#,
                x(*s),
                y + 2,
                (x(e) - x(*s)).max(1.5),
                row_h - 4,
                esc(name),
                e.saturating_sub(*s)
            );
        }
    }
    // Each hop of a train begins where a dashed line is drawn.
    for (stage, span) in &g.hops {
        let _ = write!(
            *h,
            r##"<line class="hop" x1="{x:.1}" x2="{x:.1}" y1="0" y2="{}" stroke="#555" stroke-dasharray="4 3"/><text x="{:.1}" y="{}" fill="#555">hop {}</text>"##,
            height - 16,
            x(span.start) + 2.0,
            height - 18,
            stage + 1,
            x = x(span.start)
        );
    }
    let _ = write!(
        *h,
        r#"<text x="{label_w}" y="{}">0 s</text><text x="{}" y="{}" text-anchor="end">{:.1} s</text></svg>"#,
        height - 4,
        width - 10,
        height - 4,
        total as f64 / 1000.0
    );
}

/// Every command the grants denied.
fn denied(h: &mut String, g: &Gathered) {
    if !g.denials.is_empty() {
        h.push_str("<h2 class=\"fail\">Denied commands</h2><ul>");
        for d in &g.denials {
            let _ = write!(*h, "<li><code>{}</code></li>", esc(d));
        }
        h.push_str("</ul>");
    }
}

/// Every step with its commands (filterable to failures).
fn steps(h: &mut String, g: &Gathered) {
    h.push_str("<h2>Steps and commands</h2><p><label><input type=\"checkbox\" id=\"only-failed\"> only failed steps</label></p><div id=\"steps\">");
    for b in &g.bars {
        let _ = write!(
            *h,
            "<details class=\"step{}\"><summary>{}{} — {} command(s){}</summary><table>",
            if b.failed { " fail" } else { "" },
            esc(&b.step.to_string()),
            if b.failed { " FAILED" } else { "" },
            b.commands.len(),
            b.error
                .as_ref()
                .map(|e| format!(": {}", esc(e)))
                .unwrap_or_default()
        );
        for (node, argv, r) in &b.commands {
            let status = if r.skipped {
                "would run".to_string()
            } else {
                r.status
                    .map(|s| format!("exit {s}"))
                    .or(r.error.clone())
                    .unwrap_or_default()
            };
            let _ = write!(
                *h,
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{} ms</td><td><code>{}</code></td></tr>",
                esc(node),
                esc(&argv.join(" ")),
                esc(&status),
                r.duration_ms,
                esc(r.stderr.lines().last().unwrap_or(""))
            );
        }
        h.push_str("</table></details>");
    }
}

/// Write `<run dir>/report.html` for a run (reading its journal as a
/// stream: memory holds the bars, not the events); returns its path.
pub fn write(state_dir: &Path, run_id: &str) -> Result<PathBuf, JournalError> {
    let jpath = journal::journal_of(state_dir, run_id)?;
    let mut error = None;
    let html = render(journal::records(&jpath)?.map_while(|r| match r {
        Ok(e) => Some(e),
        Err(e) => {
            error = Some(e);
            None
        }
    }));
    if let Some(e) = error {
        return Err(e);
    }
    write_html(state_dir, run_id, html)
}

/// Write `html` as the report of run `run_id`.
fn write_html(state_dir: &Path, run_id: &str, html: String) -> Result<PathBuf, JournalError> {
    let out = journal::run_dir(state_dir, run_id).join("report.html");
    let io = journal::io_error(&out);
    // Through the journal's handle on the run's directory; written aside and
    // renamed, so a full disk leaves the previous report or none, never half
    // of one.
    let dir = journal::state_root(state_dir)?
        .open_dir(Path::new("runs").join(run_id))
        .map_err(io)?;
    if let Err(e) = dir.write(".report.html.tmp", html) {
        let _ = dir.remove_file(".report.html.tmp");
        return Err(io(e));
    }
    dir.rename(".report.html.tmp", &dir, "report.html")
        .map_err(io)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Phase, RunOptionsRecord};

    fn step(service: &str, phase: Phase, node: Option<&str>) -> StepKey {
        StepKey {
            hop: None,
            service: service.into(),
            phase,
            node: node.map(String::from),
        }
    }

    /// The start of a run of one service, `name` on `nodes`.
    fn started(name: &str, nodes: Vec<String>, rollout: &str) -> Event {
        Event::RunStarted {
            run_id: "r1".into(),
            time: "2026-11-22T00:00:00Z".into(),
            plan: vec![PlannedService {
                name: name.into(),
                level: 0,
                depends_on: vec![],
                nodes,
                rollout: rollout.into(),
                reversible: true,
                hops: vec![],
                guard: false,
            }],
            plugins: vec![],
            options: RunOptionsRecord::default(),
            train: None,
        }
    }

    #[test]
    fn the_plan_table_names_the_first_nodes_and_counts_the_rest() {
        let nodes: Vec<String> = (0..250).map(|i| format!("node-{i:03}")).collect();
        let html = render(vec![started("nova", nodes, "parallel")]);
        assert!(html.contains("node-000, node-001"), "{html}");
        assert!(html.contains("node-099, … and 150 more"), "{html}");
        assert!(!html.contains("node-100"), "{html}");
    }

    #[test]
    fn report_shows_plan_window_failure_and_denial() {
        let pre = step("galera", Phase::PreUpgrade, None);
        let up = step("galera", Phase::Upgrade, Some("ctl1"));
        let events = vec![
            started("galera", vec!["ctl1".into()], "one-at-a-time"),
            Event::StepStarted {
                step: pre.clone(),
                at_ms: 10,
            },
            Event::Log {
                step: pre.clone(),
                level: LogLevel::Progress,
                message: "service-down".into(),
                at_ms: 100,
            },
            Event::StepFinished {
                step: pre,
                at_ms: 120,
                status: StepResult::Ok,
                duration_ms: 110,
                error: None,
            },
            Event::StepStarted {
                step: up.clone(),
                at_ms: 130,
            },
            Event::Denied {
                step: up.clone(),
                plugin: "galera".into(),
                node: "ctl1".into(),
                argv: vec!["rm".into(), "-rf".into(), "/".into()],
                reason: "program `rm` is not granted".into(),
            },
            Event::Log {
                step: up.clone(),
                level: LogLevel::Progress,
                message: "service-up".into(),
                at_ms: 300,
            },
            Event::StepFinished {
                step: up,
                at_ms: 400,
                status: StepResult::Failed,
                duration_ms: 270,
                error: Some("boom <b>".into()),
            },
            Event::RunFinished {
                outcome: Outcome::Failed,
                at_ms: 410,
            },
        ];
        let h = render(events);
        assert!(h.contains("0.2 s (100 → 300 ms)"), "window missing");
        assert!(
            h.contains("class=\"failed denied\""),
            "failed+denied bar missing"
        );
        assert!(h.contains("program `rm` is not granted"));
        assert!(h.contains("boom &lt;b&gt;"), "not escaped");
        assert!(h.contains("outcome-failed"));
        assert!(
            !h.contains("<script src") && !h.contains("<link"),
            "must be self-contained"
        );
    }
}
