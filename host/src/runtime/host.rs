//! The host side of the plugin's imports. Every import checks the call's
//! grant first, before any side effect.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::uphost::plugin::{log, node_exec, state, types};
use super::pipe::CappedPipe;
use crate::capabilities::{Access, Grant};
use crate::config::{Limits, NodeSet, NodeSpec};
use crate::events::{CommandRecord, Event, Sink, StepKey};
use crate::transport::{CommandSpec, ConnectionFailure, Transport, TransportError};

/// Largest value `state.set` accepts.
pub const MAX_STATE_VALUE: usize = 64 << 10;
/// Most keys a plugin may keep.
pub const MAX_STATE_KEYS: usize = 1024;
/// Longest log line kept.
pub const MAX_LOG_LINE: usize = 4096;

/// What one hook call may do.
pub struct CallEnv {
    /// Plugin (= service) name.
    pub plugin: String,
    /// The step this call is.
    pub step: StepKey,
    /// Effective grant.
    pub grant: Arc<Grant>,
    /// Nodes hosting the service: the only ones `exec` may target.
    pub nodes: Arc<NodeSet>,
    /// Mutating commands are recorded, not executed.
    pub read_only: bool,
    /// Limits.
    pub limits: Limits,
    /// How commands reach nodes.
    pub transport: Arc<dyn Transport>,
    /// Where events go.
    pub sink: Arc<dyn Sink>,
    /// Where mutating commands record their results (journaled runs).
    pub record_dir: Option<std::path::PathBuf>,
}

/// Per-store state.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// Memory and instance limits.
    pub limits: StoreLimits,
    /// None during `describe` (no capabilities at all).
    pub env: Option<CallEnv>,
    seq: u32,
    log_lines: u64,
    state_keys: usize,
    /// Guest stdout.
    pub stdout: CappedPipe,
    /// Guest stderr.
    pub stderr: CappedPipe,
}

impl HostState {
    /// A fresh state: WASI with nothing (no dirs, env, args, sockets or name
    /// lookup), capped stdout/stderr.
    pub fn new(env: Option<CallEnv>, memory_bytes: u64, output_cap: usize) -> Self {
        let stdout = CappedPipe::new(output_cap);
        let stderr = CappedPipe::new(output_cap);
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .build();
        HostState {
            wasi,
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(memory_bytes as usize)
                .trap_on_grow_failure(true)
                .instances(64)
                .build(),
            env,
            seq: 0,
            log_lines: 0,
            state_keys: 0,
            stdout,
            stderr,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The host side of a `node-list` handle: the service's nodes, shared.
pub struct NodeList(pub Arc<NodeSet>);

/// A node as the contract passes it to a plugin (name, address, roles).
pub fn wit_node(n: &NodeSpec) -> types::Node {
    types::Node {
        name: n.name.clone(),
        address: n.address.clone(),
        roles: n.roles.clone(),
    }
}

impl HostState {
    /// A `node-list` handle for this store.
    pub fn node_list(
        &mut self,
        nodes: Arc<NodeSet>,
    ) -> wasmtime::Result<wasmtime::component::Resource<NodeList>> {
        Ok(self.table.push(NodeList(nodes))?)
    }
}

impl types::HostNodeList for HostState {
    async fn len(
        &mut self,
        list: wasmtime::component::Resource<NodeList>,
    ) -> wasmtime::Result<u32> {
        Ok(self.table.get(&list)?.0.len() as u32)
    }

    async fn get(
        &mut self,
        list: wasmtime::component::Resource<NodeList>,
        index: u32,
    ) -> wasmtime::Result<Option<types::Node>> {
        Ok(self
            .table
            .get(&list)?
            .0
            .get(index as usize)
            .map(|n| wit_node(n)))
    }

    async fn all(
        &mut self,
        list: wasmtime::component::Resource<NodeList>,
    ) -> wasmtime::Result<Vec<types::Node>> {
        Ok(self
            .table
            .get(&list)?
            .0
            .iter()
            .map(|n| wit_node(n))
            .collect())
    }

    async fn drop(
        &mut self,
        list: wasmtime::component::Resource<NodeList>,
    ) -> wasmtime::Result<()> {
        self.table.delete(list)?;
        Ok(())
    }
}

impl types::Host for HostState {}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl node_exec::Host for HostState {
    async fn exec(
        &mut self,
        req: node_exec::ExecRequest,
    ) -> wasmtime::Result<Result<node_exec::ExecOutput, node_exec::ExecError>> {
        let Some(env) = &self.env else {
            return Ok(Err(node_exec::ExecError::Denied(
                "describe runs with no capabilities".to_string(),
            )));
        };
        let mut argv = vec![req.program.clone()];
        argv.extend(req.args.iter().cloned());
        // 1. Enforcement, before anything else.
        let node = env.nodes.by_name(&req.node);
        let verdict = match node {
            None => Err(format!(
                "node `{}` does not host service `{}`",
                req.node, env.plugin
            )),
            Some(_) => {
                let kv: Vec<(String, String)> = req
                    .env
                    .iter()
                    .map(|p| (p.key.clone(), p.value.clone()))
                    .collect();
                env.grant
                    .check(&req.program, &req.args, &kv)
                    .map(|c| c.access)
                    .map_err(|d| d.0)
            }
        };
        let access = match verdict {
            Ok(a) => a,
            Err(reason) => {
                tracing::warn!(
                    target: "uphost::security",
                    plugin = %env.plugin, node = %req.node, argv = ?argv, %reason,
                    "denied"
                );
                env.sink.emit(Event::Denied {
                    step: env.step.clone(),
                    plugin: env.plugin.clone(),
                    node: req.node.clone(),
                    argv,
                    reason: reason.clone(),
                });
                return Ok(Err(node_exec::ExecError::Denied(reason)));
            }
        };
        let node = node.expect("checked above");
        let seq = self.seq;
        self.seq += 1;
        // 2. Read-only mode: record, do not run.
        if env.read_only && access == Access::Mutating {
            env.sink.emit(Event::CommandFinished {
                step: env.step.clone(),
                seq,
                node: req.node.clone(),
                argv,
                result: CommandRecord {
                    status: None,
                    error: None,
                    error_kind: None,
                    stdout: String::new(),
                    stderr: String::new(),
                    truncated: false,
                    skipped: true,
                    mutating: true,
                    duration_ms: 0,
                },
            });
            return Ok(Ok(node_exec::ExecOutput {
                status: 0,
                stdout: Vec::new(),
                stderr: Vec::new(),
                truncated: false,
                skipped: true,
            }));
        }
        // 3. Replay a result an interrupted attempt already recorded.
        if let Some(rec) = env.sink.replay(&env.step, seq) {
            tracing::debug!(step = %env.step, seq, "replaying recorded command result");
            let out = from_record(&rec);
            env.sink.emit(Event::CommandFinished {
                step: env.step.clone(),
                seq,
                node: req.node.clone(),
                argv,
                result: rec,
            });
            return Ok(out);
        }
        // 4. Run it; a mutating command's intent is on disk first.
        let mutating = access == Access::Mutating;
        if mutating {
            env.sink.emit(Event::CommandStarted {
                step: env.step.clone(),
                seq,
                node: req.node.clone(),
                argv: argv.clone(),
            });
            // Its intent is not on disk: running it could not be known to a
            // resume, which might run it again.
            if let Some(e) = env.sink.write_error() {
                return Ok(Err(node_exec::ExecError::SpawnFailed(format!(
                    "not run: the run's journal cannot be written ({e}); free the space and `uphost resume`"
                ))));
            }
        }
        let timeout = req
            .timeout_ms
            .map(|ms| Duration::from_millis(ms as u64))
            .unwrap_or(env.limits.exec_timeout)
            .min(env.limits.exec_timeout);
        let spec = CommandSpec {
            program: req.program,
            args: req.args,
            stdin: req.stdin,
            env: req.env.into_iter().map(|p| (p.key, p.value)).collect(),
            timeout,
            output_cap: env.limits.output_cap,
            record: match (&env.record_dir, access) {
                (Some(dir), Access::Mutating) => Some(dir.join(record_name(&env.step, seq))),
                _ => None,
            },
        };
        let t0 = Instant::now();
        let res = env.transport.exec(node, &spec).await;
        let duration_ms = t0.elapsed().as_millis() as u64;
        // The recorder found no room to record a result and did not run the
        // command: nothing to journal, and `resume` runs it.
        if let (Some(_), Ok(o)) = (&spec.record, &res)
            && crate::transport::record::not_run(o.status, &o.stderr)
        {
            env.sink.no_room(lossy(&o.stderr).trim_end().to_string());
            return Ok(Err(node_exec::ExecError::SpawnFailed(format!(
                "{} (on {}); free the space and `uphost resume`",
                lossy(&o.stderr).trim_end(),
                node.name
            ))));
        }
        let rec = match &res {
            Ok(o) => CommandRecord {
                status: Some(o.status),
                error: None,
                error_kind: None,
                stdout: lossy(&o.stdout),
                stderr: lossy(&o.stderr),
                truncated: o.truncated,
                skipped: false,
                mutating,
                duration_ms,
            },
            Err(e) => CommandRecord {
                status: None,
                error: Some(e.to_string()),
                error_kind: Some(e.kind_name().to_string()),
                stdout: String::new(),
                stderr: String::new(),
                truncated: false,
                skipped: false,
                mutating,
                duration_ms,
            },
        };
        env.sink.emit(Event::CommandFinished {
            step: env.step.clone(),
            seq,
            node: node.name.clone(),
            argv,
            result: rec,
        });
        // The journal has the result now, the recorder's copy is not needed;
        // unless the journal could not take it: then that copy is what
        // keeps `resume` from running the command again.
        if let Some(f) = &spec.record
            && env.sink.write_error().is_none()
        {
            let _ = std::fs::remove_file(f);
        }
        Ok(match res {
            Ok(o) => Ok(node_exec::ExecOutput {
                status: o.status,
                stdout: o.stdout,
                stderr: o.stderr,
                truncated: o.truncated,
                skipped: false,
            }),
            Err(TransportError::Timeout { ms, .. }) => {
                Err(node_exec::ExecError::Timeout(ms.min(u32::MAX as u64) as u32))
            }
            Err(e @ TransportError::Spawn { .. }) => {
                Err(node_exec::ExecError::SpawnFailed(e.to_string()))
            }
            Err(e @ TransportError::Unreachable { .. }) => {
                Err(node_exec::ExecError::Unreachable(e.to_string()))
            }
        })
    }
}

/// The file a mutating command's result is recorded in.
pub fn record_name(step: &StepKey, seq: u32) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!(
        "{}.{}.{}.{seq}.json",
        clean(&step.service),
        step.phase.as_str(),
        clean(step.node.as_deref().unwrap_or("_"))
    )
}

/// Turn a journaled result back into what `exec` returns.
fn from_record(rec: &CommandRecord) -> Result<node_exec::ExecOutput, node_exec::ExecError> {
    match (rec.status, rec.error_kind.as_deref()) {
        (Some(status), _) => Ok(node_exec::ExecOutput {
            status,
            stdout: rec.stdout.clone().into_bytes(),
            stderr: rec.stderr.clone().into_bytes(),
            truncated: rec.truncated,
            skipped: rec.skipped,
        }),
        (None, Some("timeout")) => Err(node_exec::ExecError::Timeout(rec.duration_ms as u32)),
        (None, Some(kind)) if ConnectionFailure::from_name(kind).is_some() => Err(
            node_exec::ExecError::Unreachable(rec.error.clone().unwrap_or_default()),
        ),
        (None, _) => Err(node_exec::ExecError::SpawnFailed(
            rec.error.clone().unwrap_or_default(),
        )),
    }
}

fn clip(s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [truncated]", &s[..end])
}

impl HostState {
    /// Record a log line attributed to the plugin (capped in count and size).
    pub fn log_line(&mut self, level: &str, message: String) {
        let Some(env) = &self.env else {
            tracing::debug!(level, %message, "log during describe (ignored)");
            return;
        };
        self.log_lines += 1;
        if self.log_lines > env.limits.max_log_lines {
            if self.log_lines == env.limits.max_log_lines + 1 {
                env.sink.emit(Event::Log {
                    step: env.step.clone(),
                    level: "warn".into(),
                    message: format!(
                        "log capped at {} lines; further lines dropped",
                        env.limits.max_log_lines
                    ),
                    at_ms: env.sink.now_ms(),
                });
            }
            return;
        }
        env.sink.emit(Event::Log {
            step: env.step.clone(),
            level: level.to_string(),
            message: clip(message, MAX_LOG_LINE),
            at_ms: env.sink.now_ms(),
        });
    }

    /// Move the guest's captured stdout/stderr into the log (not counted
    /// against the log-line cap; already capped in size).
    pub fn flush_guest_output(&mut self) {
        for (name, pipe) in [
            ("stdout", self.stdout.clone()),
            ("stderr", self.stderr.clone()),
        ] {
            let (bytes, truncated) = pipe.take();
            self.guest_output(name, &bytes, truncated);
        }
    }

    /// Log what the guest wrote to one of its streams.
    pub fn guest_output(&mut self, name: &str, bytes: &[u8], truncated: bool) {
        let Some(env) = &self.env else { return };
        if bytes.is_empty() {
            return;
        }
        let mut text = String::new();
        if truncated {
            text.push_str("[guest output truncated at the cap] ");
        }
        text.push_str(&lossy(bytes));
        env.sink.emit(Event::Log {
            step: env.step.clone(),
            level: name.to_string(),
            message: clip(text, MAX_LOG_LINE * 16),
            at_ms: env.sink.now_ms(),
        });
    }
}

impl log::Host for HostState {
    async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            log::Level::Debug => "debug",
            log::Level::Info => "info",
            log::Level::Warn => "warn",
            log::Level::Error => "error",
        };
        self.log_line(level, message);
        Ok(())
    }

    async fn progress(&mut self, message: String) -> wasmtime::Result<()> {
        self.log_line("progress", message);
        Ok(())
    }
}

impl state::Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self
            .env
            .as_ref()
            .and_then(|e| e.sink.state_get(&e.plugin, &key)))
    }

    async fn set(&mut self, key: String, value: String) -> wasmtime::Result<()> {
        let Some(env) = &self.env else {
            wasmtime::bail!("state.set during describe: describe runs with no capabilities");
        };
        if value.len() > MAX_STATE_VALUE {
            wasmtime::bail!(
                "state.set(\"{key}\"): value of {} bytes exceeds the {} byte limit",
                value.len(),
                MAX_STATE_VALUE
            );
        }
        if env.sink.state_get(&env.plugin, &key).is_none() {
            self.state_keys += 1;
            if self.state_keys > MAX_STATE_KEYS {
                wasmtime::bail!("state.set: more than {MAX_STATE_KEYS} keys");
            }
        }
        env.sink.emit(Event::State {
            service: env.plugin.clone(),
            key,
            value: Some(value),
        });
        Ok(())
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        if let Some(env) = &self.env {
            env.sink.emit(Event::State {
                service: env.plugin.clone(),
                key,
                value: None,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(kind: &str) -> CommandRecord {
        CommandRecord {
            status: None,
            error: Some(format!("ctl2 (10.0.0.12) {kind}")),
            error_kind: Some(kind.to_string()),
            stdout: String::new(),
            stderr: String::new(),
            truncated: false,
            skipped: false,
            mutating: true,
            duration_ms: 7,
        }
    }

    /// A resumed run hands the plugin the same error the first one did.
    #[test]
    fn journaled_failures_replay_as_the_same_exec_error() {
        for k in ConnectionFailure::ALL {
            match from_record(&failed(k.name())) {
                Err(node_exec::ExecError::Unreachable(m)) => assert!(m.contains(k.name())),
                other => panic!("{k:?}: {other:?}"),
            }
        }
        assert!(matches!(
            from_record(&failed("timeout")),
            Err(node_exec::ExecError::Timeout(7))
        ));
        assert!(matches!(
            from_record(&failed("spawn-failed")),
            Err(node_exec::ExecError::SpawnFailed(_))
        ));
    }
}
