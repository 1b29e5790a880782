//! `uphost test`: run a real plugin component against simulated nodes with
//! scripted command responses, and check a scenario's expectations. The
//! plugin runs in the same sandbox and under the same grant enforcement as
//! in a real run (its grant is exactly what it requests).

pub mod scenario;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use uphost_words::pattern;
use uphost_words::script::{Response, Rule, Script};

use crate::capabilities::Grant;
use crate::config::{Connection, Limits, NodeSpec, services::Mode};
use crate::events::{Event, LogLevel, StepKey};
use crate::journal::memory::MemorySink;
use crate::loading::LoadedPlugin;
use crate::runtime::bindings::uphost::plugin::types;
use crate::runtime::{CallEnv, Hook, HookCtx, Runtime, call_hook, wit_node};
use crate::transport::{BoxFuture, CommandOutput, CommandSpec, Transport, TransportError};
use scenario::{HookExpect, Scenario};

/// Answers commands from the scenario's script.
struct ScriptTransport {
    script: Mutex<Script>,
    allow_unscripted: bool,
    unscripted: Mutex<Vec<String>>,
}

impl Transport for ScriptTransport {
    fn exec<'a>(
        &'a self,
        node: &'a NodeSpec,
        cmd: &'a CommandSpec,
    ) -> BoxFuture<'a, Result<CommandOutput, TransportError>> {
        Box::pin(async move {
            let answer = self
                .script
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .respond(&node.name, &cmd.program, &cmd.args);
            match answer {
                Some(r) => Ok(CommandOutput {
                    status: r.status,
                    stdout: r.stdout.into_bytes(),
                    stderr: r.stderr.into_bytes(),
                    truncated: false,
                }),
                None if self.allow_unscripted => Ok(CommandOutput::default()),
                None => {
                    let line = format!("{}: {} {}", node.name, cmd.program, cmd.args.join(" "));
                    self.unscripted
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(line.trim_end().to_string());
                    Err(TransportError::Spawn {
                        node: node.name.clone(),
                        program: cmd.program.clone(),
                        detail: "unscripted command in this scenario (add it under `commands:` or set `allow_unscripted: true`)".into(),
                    })
                }
            }
        })
    }
}

/// The result of one scenario.
pub struct Report {
    /// Readable trace: hook, node, argv, status.
    pub trace: Vec<String>,
    /// Unmet expectations, each naming its place in the scenario.
    pub failures: Vec<String>,
}

fn hook_ctx(sc: &Scenario, service: &str) -> HookCtx {
    HookCtx {
        run_id: "scenario".into(),
        service: service.into(),
        from_version: sc.context.from_version.clone(),
        to_version: sc.context.to_version.clone(),
        hop: sc
            .context
            .hop
            .to_ctx(&sc.context.from_version, &sc.context.to_version),
        mode: match sc.context.mode {
            Mode::MajorUpgrade => types::Mode::MajorUpgrade,
            Mode::MinorUpdate => types::Mode::MinorUpdate,
        },
        dry_run: sc.context.dry_run,
        params: sc.context.params.clone().into_iter().collect(),
    }
}

fn line(node: &str, argv: &[String]) -> String {
    format!("{node}: {}", argv.join(" "))
}

/// The scenario's nodes, simulated (nothing reaches them).
fn scenario_nodes(sc: &Scenario) -> Vec<Arc<NodeSpec>> {
    sc.nodes
        .iter()
        .map(|(n, roles)| {
            Arc::new(NodeSpec {
                name: n.clone(),
                address: "simulated".into(),
                port: None,
                user: None,
                key_file: None,
                connection: Connection::DryRun,
                become_user: None,
                roles: roles.clone(),
                node_root: None,
            })
        })
        .collect()
}

/// The scenario's scripted commands.
fn scenario_script(sc: &Scenario) -> Script {
    Script {
        rules: sc
            .commands
            .iter()
            .map(|c| {
                Rule::from_parts(
                    c.node.clone(),
                    c.program.clone(),
                    c.args.clone().unwrap_or_else(|| vec!["...".into()]),
                    c.respond
                        .iter()
                        .map(|a| Response {
                            status: a.status,
                            stdout: a.stdout.clone(),
                            stderr: a.stderr.clone(),
                        })
                        .collect(),
                )
            })
            .collect(),
    }
}

/// The hook calls of a scenario, labelled (`upgrade NODE` once per node).
fn hook_calls(sc: &Scenario, nodes: &[Arc<NodeSpec>]) -> Vec<(String, Hook)> {
    let hooks: Vec<String> = sc.hooks.clone().unwrap_or_else(|| {
        [
            "check",
            "pre-upgrade",
            "upgrade",
            "post-upgrade",
            "finalize",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    });
    let mut calls: Vec<(String, Hook)> = Vec::new();
    for h in &hooks {
        match h.as_str() {
            "check" => calls.push(("check".into(), Hook::Check)),
            "pre-upgrade" => calls.push(("pre-upgrade".into(), Hook::PreUpgrade)),
            "post-upgrade" => calls.push(("post-upgrade".into(), Hook::PostUpgrade)),
            "finalize" => calls.push(("finalize".into(), Hook::Finalize)),
            "rollback" => calls.push(("rollback".into(), Hook::Rollback)),
            "migrate" => calls.push(("migrate".into(), Hook::Migrate)),
            "verify" => calls.push(("verify".into(), Hook::Verify)),
            "leave" => {
                for n in nodes {
                    calls.push((format!("leave {}", n.name), Hook::Leave(wit_node(n))));
                }
            }
            "rejoin" => {
                for n in nodes {
                    calls.push((format!("rejoin {}", n.name), Hook::Rejoin(wit_node(n))));
                }
            }
            "ok-to-stop" => {
                for n in nodes {
                    calls.push((
                        format!("ok-to-stop {}", n.name),
                        Hook::OkToStop(wit_node(n)),
                    ));
                }
            }
            _ => {
                for n in nodes {
                    calls.push((format!("upgrade {}", n.name), Hook::Upgrade(wit_node(n))));
                }
            }
        }
    }
    calls
}

/// Run one scenario against a loaded plugin.
pub async fn run(rt: &Runtime, plugin: &LoadedPlugin, sc: &Scenario) -> Report {
    let service = plugin.name.clone();
    let nodes = scenario_nodes(sc);
    let script = scenario_script(sc);
    let transport = Arc::new(ScriptTransport {
        script: Mutex::new(script),
        allow_unscripted: sc.allow_unscripted,
        unscripted: Mutex::default(),
    });
    let sink = Arc::new(MemorySink::new(None));
    for (k, v) in &sc.state {
        sink.set_state(&service, k, v);
    }
    let grant = Arc::new(Grant {
        commands: plugin.meta.capabilities.clone(),
    });
    let limits = Limits {
        hook_timeout: std::time::Duration::from_secs(60),
        ..Limits::default()
    };
    let calls = hook_calls(sc, &nodes);
    let shared_nodes = Arc::new(crate::config::NodeSet::new(nodes.clone()));
    let io = crate::runtime::CallIo {
        transport: transport.clone(),
        sink: sink.clone(),
        record_dir: None,
        node_records: None,
        budget: Default::default(),
        deferred: Default::default(),
        reboot: Default::default(),
    };
    let mut outcomes: Vec<(String, Result<(), String>)> = Vec::new();
    let mut trace = Vec::new();
    let mut seen = 0usize;
    for (label, hook) in calls {
        let phase = hook.phase();
        let step = StepKey {
            hop: None,
            service: service.clone(),
            phase,
            node: hook.node().map(|n| n.name.clone()),
        };
        let mut env = CallEnv::new(
            step,
            sc.context.dry_run,
            grant.clone(),
            &crate::runtime::ServiceNodes::unlimited(shared_nodes.clone()),
            limits.clone(),
            &io,
        );
        env.reboot_mode = crate::runtime::RebootMode::Scripted;
        let res = call_hook(rt, &plugin.pre, env, &hook_ctx(sc, &service), hook)
            .await
            .map_err(|e| e.to_string());
        let events = sink.events();
        for ev in &events[seen..] {
            match ev {
                Event::CommandFinished {
                    node, argv, result, ..
                } => trace.push(format!(
                    "  [{label}] {} -> {}",
                    line(node, argv),
                    if result.skipped {
                        "would run (read-only)".to_string()
                    } else {
                        result
                            .status
                            .map(|s| format!("exit {s}"))
                            .or(result.error.clone())
                            .unwrap_or_default()
                    }
                )),
                Event::Denied {
                    node, argv, reason, ..
                } => trace.push(format!(
                    "  [{label}] {} -> DENIED: {reason}",
                    line(node, argv)
                )),
                Event::Log { level, message, .. } if *level != LogLevel::Debug => {
                    trace.push(format!("  [{label}] ({level}) {message}"))
                }
                _ => {}
            }
        }
        seen = events.len();
        trace.push(match &res {
            Ok(()) => format!("{label}: ok"),
            Err(e) => format!("{label}: FAILED: {e}"),
        });
        let failed = res.is_err();
        outcomes.push((label, res));
        if failed {
            break;
        }
    }
    let events = sink.events();
    let failures = compare(sc, &service, &outcomes, &events, &sink, &transport, &nodes);
    Report { trace, failures }
}

fn compare(
    sc: &Scenario,
    service: &str,
    outcomes: &[(String, Result<(), String>)],
    events: &[Event],
    sink: &MemorySink,
    transport: &ScriptTransport,
    nodes: &[Arc<NodeSpec>],
) -> Vec<String> {
    let mut f = Vec::new();
    compare_hooks(&mut f, sc, outcomes, nodes);
    compare_commands(&mut f, sc, events);
    compare_state(&mut f, sc, sink.state_of(service));
    compare_progress(&mut f, sc, events);
    for u in transport
        .unscripted
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
    {
        f.push(format!(
            "unscripted command: {u} (script it under `commands:`)"
        ));
    }
    f
}

/// Hooks: expected outcomes, and no unexpected failure.
fn compare_hooks(
    f: &mut Vec<String>,
    sc: &Scenario,
    outcomes: &[(String, Result<(), String>)],
    nodes: &[Arc<NodeSpec>],
) {
    let outcome_of = |label: &str| outcomes.iter().find(|(l, _)| l == label).map(|(_, r)| r);
    for (key, want) in &sc.expect.hooks {
        let labels: Vec<String> =
            if ["upgrade", "leave", "rejoin", "ok-to-stop"].contains(&key.as_str()) {
                nodes.iter().map(|n| format!("{key} {}", n.name)).collect()
            } else {
                vec![key.clone()]
            };
        for label in labels {
            let got = outcome_of(&label);
            let ok = match (want, got) {
                (_, None) => {
                    f.push(format!(
                        "expect.hooks.{key}: `{label}` never ran (an earlier hook failed or it is not in `hooks:`)"
                    ));
                    continue;
                }
                (HookExpect::Word(w), Some(r)) if w == "ok" => r.is_ok(),
                (HookExpect::Word(_), Some(r)) => r.is_err(),
                (HookExpect::FailsWith { fails_with }, Some(r)) => r
                    .as_ref()
                    .err()
                    .is_some_and(|e| e.contains(fails_with.as_str())),
            };
            if !ok {
                let want_s = match want {
                    HookExpect::Word(w) => w.clone(),
                    HookExpect::FailsWith { fails_with } => format!("fails with `{fails_with}`"),
                };
                let got_s = match got {
                    Some(Ok(())) => "ok".to_string(),
                    Some(Err(e)) => format!("failed: {e}"),
                    None => "not run".into(),
                };
                f.push(format!(
                    "expect.hooks.{key}: `{label}` expected {want_s}, got {got_s}"
                ));
            }
        }
    }
    for (label, r) in outcomes {
        if let Err(e) = r {
            let base = label.split_whitespace().next().unwrap_or("");
            if !sc.expect.hooks.contains_key(label) && !sc.expect.hooks.contains_key(base) {
                f.push(format!(
                    "`{label}` failed but the scenario does not expect it (add expect.hooks.{base}): {e}"
                ));
            }
        }
    }
}

/// Commands: in the expected order, and never the forbidden ones.
fn compare_commands(f: &mut Vec<String>, sc: &Scenario, events: &[Event]) {
    let lines: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::CommandFinished { node, argv, .. } | Event::Denied { node, argv, .. } => {
                Some(line(node, argv))
            }
            _ => None,
        })
        .collect();
    let mut from = 0;
    for (i, want) in sc.expect.commands_in_order.iter().enumerate() {
        match lines[from..]
            .iter()
            .position(|l| pattern::glob_matches(want, l))
        {
            Some(p) => from += p + 1,
            None => {
                let anywhere = lines.iter().any(|l| pattern::glob_matches(want, l));
                f.push(format!(
                    "expect.commands_in_order[{i}]: no command matching `{want}` {}",
                    if anywhere {
                        "after the previous expected one (it ran earlier: wrong order)"
                    } else {
                        "ran at all"
                    }
                ));
            }
        }
    }
    for (i, never) in sc.expect.never.iter().enumerate() {
        for l in lines.iter().filter(|l| pattern::glob_matches(never, l)) {
            f.push(format!("expect.never[{i}]: `{never}` ran: {l}"));
        }
    }
}

/// The plugin's state at the end.
fn compare_state(f: &mut Vec<String>, sc: &Scenario, state: BTreeMap<String, String>) {
    for (k, want) in &sc.expect.state {
        match state.get(k) {
            Some(v) if pattern::glob_matches(want, v) => {}
            Some(v) => f.push(format!("expect.state.{k}: expected `{want}`, got `{v}`")),
            None => f.push(format!(
                "expect.state.{k}: expected `{want}`, but the key is not set"
            )),
        }
    }
}

/// The progress milestones, exactly.
fn compare_progress(f: &mut Vec<String>, sc: &Scenario, events: &[Event]) {
    if let Some(want) = &sc.expect.progress {
        let got: Vec<String> = events
            .iter()
            .filter_map(|e| match e {
                Event::Log { level, message, .. } if *level == LogLevel::Progress => {
                    Some(message.clone())
                }
                _ => None,
            })
            .collect();
        if &got != want {
            f.push(format!("expect.progress: expected {want:?}, got {got:?}"));
        }
    }
}

/// Scenario files of a plugin crate directory (`scenarios/*.yaml`).
pub fn scenario_files(dir: &Path) -> Vec<PathBuf> {
    yaml_files(&dir.join("scenarios"))
}

/// The `*.yaml` files of a directory, sorted.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
