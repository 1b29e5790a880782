//! Glue between the generated bindings and [`Plugin`](crate::Plugin); used by
//! [`export_plugin!`](crate::export_plugin).

use crate::bindings::uphost::plugin::{log, node_control, node_exec, state, types};
use crate::cx::{
    Context, Cx, ExecError, ExecOutput, ExecRequest, Hop, HopKind, Host, Level, Mode, Node,
};
use crate::info::{Access, Info, Rollout};
use crate::{Plugin, Result};

/// The real host, reached through the component's imports.
struct WasmHost {
    nodes: Option<types::NodeList>,
    targets: Option<types::NodeList>,
}

impl Host for WasmHost {
    fn exec(&self, req: ExecRequest) -> Result<ExecOutput, ExecError> {
        let wreq = node_exec::ExecRequest {
            node: req.node,
            program: req.program,
            args: req.args,
            stdin: req.stdin,
            env: req
                .env
                .into_iter()
                .map(|(key, value)| types::Pair { key, value })
                .collect(),
            timeout_ms: req.timeout_ms,
        };
        match node_exec::exec(&wreq) {
            Ok(o) => Ok(ExecOutput {
                status: o.status,
                stdout: o.stdout,
                stderr: o.stderr,
                truncated: o.truncated,
                skipped: o.skipped,
            }),
            Err(node_exec::ExecError::Denied(m)) => Err(ExecError::Denied(m)),
            Err(node_exec::ExecError::Timeout(ms)) => Err(ExecError::Timeout(ms)),
            Err(node_exec::ExecError::SpawnFailed(m)) => Err(ExecError::SpawnFailed(m)),
            Err(node_exec::ExecError::Unreachable(m)) => Err(ExecError::Unreachable(m)),
        }
    }

    fn log(&self, level: Level, message: &str) {
        let level = match level {
            Level::Debug => log::Level::Debug,
            Level::Info => log::Level::Info,
            Level::Warn => log::Level::Warn,
            Level::Error => log::Level::Error,
        };
        log::log(level, message);
    }

    fn progress(&self, message: &str) {
        log::progress(message);
    }

    fn state_get(&self, key: &str) -> Option<String> {
        state::get(key)
    }

    fn state_set(&self, key: &str, value: &str) {
        state::set(key, value);
    }

    fn state_delete(&self, key: &str) {
        state::delete(key);
    }

    fn reboot(&self, node: &str, kexec: bool) -> Result<(), String> {
        node_control::reboot(
            node,
            if kexec {
                types::RebootKind::Kexec
            } else {
                types::RebootKind::Normal
            },
        )
    }

    fn nodes(&self) -> Option<Vec<Node>> {
        self.nodes
            .as_ref()
            .map(|l| l.all().into_iter().map(node).collect())
    }

    fn targets(&self) -> Option<Vec<Node>> {
        self.targets
            .as_ref()
            .map(|l| l.all().into_iter().map(node).collect())
    }
}

/// Convert a WIT node.
pub fn node(n: types::Node) -> Node {
    Node {
        name: n.name,
        address: n.address,
        roles: n.roles,
    }
}

fn context(c: types::Context) -> (Context, types::NodeList, types::NodeList) {
    let ctx = Context {
        run_id: c.run_id,
        service: c.service,
        from_version: c.from_version,
        to_version: c.to_version,
        hop: Hop {
            index: c.hop.index,
            count: c.hop.count,
            kind: match c.hop.kind {
                types::HopKind::Full => HopKind::Full,
                types::HopKind::MigrationsOnly => HopKind::MigrationsOnly,
            },
            train_from: c.hop.train_from,
            train_to: c.hop.train_to,
        },
        mode: match c.mode {
            types::Mode::MajorUpgrade => Mode::MajorUpgrade,
            types::Mode::MinorUpdate => Mode::MinorUpdate,
        },
        dry_run: c.dry_run,
        nodes: Vec::new(),
        targets: None,
        params: c.params.into_iter().map(|p| (p.key, p.value)).collect(),
    };
    (ctx, c.nodes, c.targets)
}

/// Run a hook with the real host.
pub fn hook(
    ctx: types::Context,
    f: impl FnOnce(&Cx) -> Result<()>,
) -> Result<(), types::HookError> {
    let (ctx, nodes, targets) = context(ctx);
    let host = WasmHost {
        nodes: Some(nodes),
        targets: Some(targets),
    };
    let cx = Cx::new(ctx, &host);
    f(&cx).map_err(|e| types::HookError {
        message: e.to_string(),
    })
}

/// `describe` in WIT types.
pub fn describe<P: Plugin>() -> types::PluginInfo {
    let info: Info = P::describe();
    types::PluginInfo {
        name: info.name,
        version: info.version,
        description: info.description,
        depends_on: info.depends_on,
        capabilities: info
            .capabilities
            .into_iter()
            .map(|c| types::CommandCapability {
                program: c.program,
                args: c.args,
                access: match c.access {
                    Access::ReadOnly => types::Access::ReadOnly,
                    Access::Mutating => types::Access::Mutating,
                },
                env: c.env,
                reason: c.reason,
            })
            .collect(),
        rollout: match info.rollout {
            Rollout::Parallel => types::Rollout::Parallel,
            Rollout::Serial(n) => types::Rollout::Serial(n),
            Rollout::SerialPercent(p) => types::Rollout::SerialPercent(p),
            Rollout::OneAtATime => types::Rollout::OneAtATime,
        },
        reversible: info.reversible,
        releases: info.releases.map(|r| types::ReleasePath {
            sequence: r.sequence,
            jumps: r
                .jumps
                .into_iter()
                .map(|(from, to)| types::Jump { from, to })
                .collect(),
            migrations_only: r.migrations_only,
        }),
        node_guard: info.node_guard,
        reboots: info.reboots,
        ok_to_stop: info.ok_to_stop,
        probes: info
            .probes
            .into_iter()
            .map(|p| types::Probe {
                name: p.name,
                check: match p.check {
                    crate::ProbeCheck::Tcp(port) => types::ProbeCheck::Tcp(port),
                    crate::ProbeCheck::Command { argv, expect } => {
                        types::ProbeCheck::Command(types::ProbeCommand { argv, expect })
                    }
                },
                interval_ms: p.interval_ms,
            })
            .collect(),
    }
}
