//! The host side of the plugin's imports. Every import checks the call's
//! grant first, before any side effect.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::NodeList;
use super::bindings::uphost::plugin::{log, node_control, node_exec, state, types};
use super::bindings::v0_1::uphost::plugin as v0_1;
use super::call::CallEnv;
use super::pipe::CappedPipe;
use crate::config::{NodeSet, NodeSpec};
use crate::events::{Event, LogLevel};

/// Largest value `state.set` accepts.
pub const MAX_STATE_VALUE: usize = 64 << 10;
/// Longest state key.
pub const MAX_STATE_KEY: usize = 256;
/// Most keys a plugin may keep (in all, across its hook calls).
pub const MAX_STATE_KEYS: usize = 1024;
/// Most bytes of keys and values a plugin may keep (in all).
pub const MAX_STATE_BYTES: usize = 4 << 20;
/// Most `state.set`/`state.delete` calls in one hook call.
pub const MAX_STATE_WRITES: u32 = 4096;
/// Most bytes of keys and values `state.set` writes in one hook call
/// (each write is a journal record).
pub const MAX_STATE_WRITE_BYTES: usize = 8 << 20;
/// Longest log line kept.
pub const MAX_LOG_LINE: usize = 4096;
/// Most bytes of log lines kept from one hook call.
pub const MAX_LOG_BYTES: usize = 1 << 20;
/// Most denied commands in one hook call: the next stops the call (a
/// plugin probing its grant in a loop would fill the journal).
pub const MAX_DENIALS: u32 = 32;
/// How much of a denied command's argv is journaled and shown.
const DENIED_ARGV_BYTES: usize = 4096;

/// A denied argv as it is journaled: at most [`DENIED_ARGV_BYTES`] in all,
/// the rest counted.
fn capped_argv(argv: Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut used = 0;
    let total = argv.len();
    for a in argv {
        if used + a.len() > DENIED_ARGV_BYTES {
            let room = DENIED_ARGV_BYTES.saturating_sub(used).min(256);
            if room > 0 {
                let mut end = room.min(a.len());
                while !a.is_char_boundary(end) {
                    end -= 1;
                }
                out.push(format!("{}… [{} bytes]", &a[..end], a.len()));
            }
            break;
        }
        used += a.len();
        out.push(a);
    }
    if out.len() < total {
        out.push(format!("… [{} more arguments]", total - out.len()));
    }
    out
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
    log_bytes: usize,
    denials: u32,
    state_writes: u32,
    state_bytes: usize,
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
            log_bytes: 0,
            denials: 0,
            state_writes: 0,
            state_bytes: 0,
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

/// A 0.1 plugin's `node-list`: the same handle, 0.1's node record.
impl v0_1::types::HostNodeList for HostState {
    async fn len(
        &mut self,
        list: wasmtime::component::Resource<NodeList>,
    ) -> wasmtime::Result<u32> {
        types::HostNodeList::len(self, list).await
    }

    async fn get(
        &mut self,
        list: wasmtime::component::Resource<NodeList>,
        index: u32,
    ) -> wasmtime::Result<Option<v0_1::types::Node>> {
        Ok(types::HostNodeList::get(self, list, index)
            .await?
            .map(super::bindings::node_v0_1))
    }

    async fn all(
        &mut self,
        list: wasmtime::component::Resource<NodeList>,
    ) -> wasmtime::Result<Vec<v0_1::types::Node>> {
        Ok(types::HostNodeList::all(self, list)
            .await?
            .into_iter()
            .map(super::bindings::node_v0_1)
            .collect())
    }

    async fn drop(
        &mut self,
        list: wasmtime::component::Resource<NodeList>,
    ) -> wasmtime::Result<()> {
        types::HostNodeList::drop(self, list).await
    }
}

impl v0_1::types::Host for HostState {}

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
        // 1. Enforcement, before anything else.
        let node = env.nodes.by_name(&req.node);
        let verdict = match node {
            None => Err(format!(
                "node `{}` does not host service `{}`",
                clip(req.node.escape_debug().to_string(), 256),
                env.plugin
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
                    .and_then(|access| env.may_change(&req.node, access))
            }
        };
        let access = match verdict {
            Ok(a) => a,
            Err(reason) => {
                let mut argv = Vec::with_capacity(req.args.len() + 1);
                argv.push(req.program);
                argv.extend(req.args);
                let reason = self.denied(argv, req.node, reason)?;
                return Ok(Err(node_exec::ExecError::Denied(reason)));
            }
        };
        let node = node.expect("checked above").clone();
        let seq = self.seq;
        self.seq += 1;
        if let Err(e) = env.charge(0) {
            wasmtime::bail!("{e}");
        }
        // 2. The granted command runs at most once across crashes.
        let out = super::exec::once(env, &node, access, seq, req).await;
        if let Ok(o) = &out
            && let Err(e) = env.charge(o.stdout.len() + o.stderr.len())
        {
            wasmtime::bail!("{e}");
        }
        Ok(out)
    }
}

impl HostState {
    /// Journal a refused request (a command, a reboot) and count it: past
    /// [`MAX_DENIALS`] in one call the plugin is stopped. The reason as the
    /// plugin is told.
    fn denied(
        &mut self,
        argv: Vec<String>,
        node: String,
        reason: String,
    ) -> wasmtime::Result<String> {
        let env = self.env.as_ref().expect("a hook call has its environment");
        self.denials += 1;
        if self.denials > MAX_DENIALS {
            wasmtime::bail!(
                "more than {MAX_DENIALS} denied commands in one hook call: the plugin was stopped (it keeps asking for what it was not granted)"
            );
        }
        let reason = clip(reason, 1024);
        let argv = capped_argv(argv);
        let node = clip(node, 256);
        let size = argv.iter().map(String::len).sum::<usize>() + reason.len();
        if let Err(e) = env.charge(size) {
            wasmtime::bail!("{e}");
        }
        tracing::warn!(
            target: "uphost::security",
            plugin = %env.plugin, node = %crate::untrusted::line(&node), %reason,
            "denied"
        );
        env.sink.emit(Event::Denied {
            step: env.step.clone(),
            plugin: env.plugin.clone(),
            node,
            argv,
            reason: reason.clone(),
        });
        Ok(reason)
    }
}

impl node_control::Host for HostState {
    async fn reboot(
        &mut self,
        node: String,
        kind: types::RebootKind,
    ) -> wasmtime::Result<Result<(), String>> {
        use super::reboot::{Reboot, RebootKind};
        let Some(env) = &self.env else {
            return Ok(Err("describe runs with no capabilities".to_string()));
        };
        let kind = match kind {
            types::RebootKind::Normal => RebootKind::Normal,
            types::RebootKind::Kexec => RebootKind::Kexec,
        };
        let spec = env.nodes.by_name(&node).cloned();
        let verdict = match &spec {
            None => Err(format!(
                "node `{}` does not host service `{}`",
                clip(node.escape_debug().to_string(), 256),
                env.plugin
            )),
            Some(_) => env
                .grant
                .check(crate::capabilities::REBOOT, &[kind.as_str().to_string()], &[])
                .map_err(|_| {
                    format!(
                        "plugin `{}` may not reboot nodes: its description does not ask for it (plugin-info.reboots), or the operator did not approve it",
                        env.plugin
                    )
                })
                .and_then(|c| env.may_change(&node, c.access)),
        };
        if let Err(reason) = verdict {
            let argv = vec![
                crate::capabilities::REBOOT.to_string(),
                kind.as_str().to_string(),
            ];
            return Ok(Err(self.denied(argv, node, reason)?));
        }
        let node = spec.expect("checked above");
        let seq = self.seq;
        self.seq += 1;
        let env = self.env.as_ref().expect("checked above");
        let op = Reboot {
            transport: env.transport.as_ref(),
            sink: env.sink.as_ref(),
            step: &env.step,
            seq,
            node: &node,
            kind,
            settings: &env.reboot,
        };
        if env.read_only {
            op.skip();
            return Ok(Ok(()));
        }
        match env.reboot_mode {
            super::call::RebootMode::Delayed => {
                op.defer();
                env.deferred.push(&env.plugin, &node.name, kind.as_str());
            }
            super::call::RebootMode::Scripted => op.scripted(),
            super::call::RebootMode::Now => return Ok(op.run().await.map(|_| ())),
        }
        Ok(Ok(()))
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
    pub fn log_line(&mut self, level: LogLevel, message: String) {
        let Some(env) = &self.env else {
            tracing::debug!(%level, %message, "log during describe (ignored)");
            return;
        };
        if env.charge(message.len().min(MAX_LOG_LINE)).is_err() {
            return; // over the run's journal budget: the next command or state write stops the plugin
        }
        self.log_lines += 1;
        self.log_bytes += message.len().min(MAX_LOG_LINE);
        if self.log_bytes > MAX_LOG_BYTES && self.log_lines <= env.limits.max_log_lines {
            // Counted as past the line cap from here on: one notice, then
            // nothing more from this call.
            self.log_lines = env.limits.max_log_lines + 1;
            env.sink.emit(Event::Log {
                step: env.step.clone(),
                level: LogLevel::Warn,
                message: format!(
                    "log capped at {MAX_LOG_BYTES} bytes in one hook call; further lines dropped"
                ),
                at_ms: env.sink.now_ms(),
            });
            return;
        }
        if self.log_lines > env.limits.max_log_lines {
            if self.log_lines == env.limits.max_log_lines + 1 {
                env.sink.emit(Event::Log {
                    step: env.step.clone(),
                    level: LogLevel::Warn,
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
            level,
            message: clip(message, MAX_LOG_LINE),
            at_ms: env.sink.now_ms(),
        });
    }

    /// Move the guest's captured stdout/stderr into the log (not counted
    /// against the log-line cap; already capped in size).
    pub fn flush_guest_output(&mut self) {
        for (name, pipe) in [
            (LogLevel::Stdout, self.stdout.clone()),
            (LogLevel::Stderr, self.stderr.clone()),
        ] {
            let (bytes, truncated) = pipe.take();
            self.guest_output(name, &bytes, truncated);
        }
    }

    /// Log what the guest wrote to one of its streams.
    pub fn guest_output(&mut self, name: LogLevel, bytes: &[u8], truncated: bool) {
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
            level: name,
            message: clip(text, MAX_LOG_LINE * 16),
            at_ms: env.sink.now_ms(),
        });
    }
}

impl log::Host for HostState {
    async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        };
        self.log_line(level, message);
        Ok(())
    }

    async fn progress(&mut self, message: String) -> wasmtime::Result<()> {
        self.log_line(LogLevel::Progress, message);
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
        if key.len() > MAX_STATE_KEY {
            wasmtime::bail!(
                "state.set: a key of {} bytes exceeds the {MAX_STATE_KEY} byte limit",
                key.len()
            );
        }
        if value.len() > MAX_STATE_VALUE {
            wasmtime::bail!(
                "state.set(\"{}\"): value of {} bytes exceeds the {} byte limit",
                key.escape_debug(),
                value.len(),
                MAX_STATE_VALUE
            );
        }
        self.state_writes += 1;
        if self.state_writes > MAX_STATE_WRITES {
            wasmtime::bail!(
                "state: more than {MAX_STATE_WRITES} writes and deletes in one hook call"
            );
        }
        if let Err(e) = env.charge(key.len() + value.len()) {
            wasmtime::bail!("{e}");
        }
        self.state_bytes += key.len() + value.len();
        if self.state_bytes > MAX_STATE_WRITE_BYTES {
            wasmtime::bail!(
                "state: more than {MAX_STATE_WRITE_BYTES} bytes of state written in one hook call"
            );
        }
        let old = env.sink.state_get(&env.plugin, &key);
        let (keys, bytes) = env.sink.state_held(&env.plugin);
        if old.is_none() && keys >= MAX_STATE_KEYS {
            wasmtime::bail!("state.set: more than {MAX_STATE_KEYS} keys");
        }
        let after = bytes - old.map_or(0, |o| key.len() + o.len()) + key.len() + value.len();
        if after > MAX_STATE_BYTES {
            wasmtime::bail!(
                "state.set: the plugin's state would hold {after} bytes, over the {MAX_STATE_BYTES} byte limit"
            );
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
            if key.len() > MAX_STATE_KEY {
                wasmtime::bail!(
                    "state.delete: a key of {} bytes exceeds the {MAX_STATE_KEY} byte limit",
                    key.len()
                );
            }
            self.state_writes += 1;
            if self.state_writes > MAX_STATE_WRITES {
                wasmtime::bail!(
                    "state: more than {MAX_STATE_WRITES} writes and deletes in one hook call"
                );
            }
            if env.sink.state_get(&env.plugin, &key).is_none() {
                return Ok(()); // nothing to delete: nothing to journal
            }
            env.sink.emit(Event::State {
                service: env.plugin.clone(),
                key,
                value: None,
            });
        }
        Ok(())
    }
}
