//! The hook's view of the run: context, and the host's services behind the
//! [`Host`] trait (the real host on wasm, [`MockHost`](crate::testing::MockHost)
//! in native tests).

use std::fmt;

use crate::error::{CommandFailed, Error, Result};

/// Major upgrade or minor update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Schemas and RPC may change.
    MajorUpgrade,
    /// Rolling, no schema change.
    MinorUpdate,
}

/// A node hosting the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Inventory name.
    pub name: String,
    /// Transport address.
    pub address: String,
    /// Roles (inventory groups).
    pub roles: Vec<String>,
}

impl Node {
    /// Does the node have this role?
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// What one hop of a release train does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HopKind {
    /// A complete upgrade: every hook, every node.
    Full,
    /// Only the release's database migrations ([`Plugin::migrate`](crate::Plugin::migrate)).
    MigrationsOnly,
}

/// Where a hook runs in its service's release train.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// 0-based position in the train.
    pub index: u32,
    /// How many hops the train has.
    pub count: u32,
    /// Full upgrade or migrations only.
    pub kind: HopKind,
    /// The release installed when the train started.
    pub train_from: String,
    /// The train's target.
    pub train_to: String,
}

impl Hop {
    /// A run of one hop from `from` to `to`.
    pub fn single(from: &str, to: &str) -> Hop {
        Hop {
            index: 0,
            count: 1,
            kind: HopKind::Full,
            train_from: from.to_string(),
            train_to: to.to_string(),
        }
    }

    /// Is this the train's last hop (the target release)?
    pub fn is_last(&self) -> bool {
        self.index + 1 >= self.count
    }

    /// Is this the train's first hop?
    pub fn is_first(&self) -> bool {
        self.index == 0
    }
}

/// The run's context as a hook sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    /// Run id.
    pub run_id: String,
    /// This plugin's service.
    pub service: String,
    /// Current version.
    pub from_version: String,
    /// Target version.
    pub to_version: String,
    /// Which hop of the release train this hook runs in (`from_version`
    /// and `to_version` are the hop's).
    pub hop: Hop,
    /// Upgrade or update.
    pub mode: Mode,
    /// Nothing may change.
    pub dry_run: bool,
    /// The service's nodes in inventory order, when the caller has them
    /// at hand (native tests). In a component they come from the host on
    /// first use: call [`Cx::nodes`], not this field.
    pub nodes: Vec<Node>,
    /// The nodes this run upgrades, when the caller has them at hand
    /// (native tests; `None`: every node). In a component they come from
    /// the host: call [`Cx::targets`], not this field.
    pub targets: Option<Vec<Node>>,
    /// Operator parameters.
    pub params: Vec<(String, String)>,
}

/// Log severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Detail.
    Debug,
    /// Progress.
    Info,
    /// Attention.
    Warn,
    /// Failure.
    Error,
}

/// A command for a node.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecRequest {
    /// Node name.
    pub node: String,
    /// Program.
    pub program: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Standard input.
    pub stdin: Option<Vec<u8>>,
    /// Environment.
    pub env: Vec<(String, String)>,
    /// Timeout in milliseconds.
    pub timeout_ms: Option<u32>,
}

/// A finished command.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExecOutput {
    /// Exit status.
    pub status: i32,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
    /// Output was cut at the host's cap.
    pub truncated: bool,
    /// Not executed (mutating command in check or dry-run).
    pub skipped: bool,
}

impl ExecOutput {
    /// Standard output as (lossy) text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    /// Standard error as (lossy) text.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    /// Exit status 0.
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

/// Why a command produced no exit status.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecError {
    /// Refused by the grant.
    Denied(String),
    /// Killed after this many milliseconds.
    Timeout(u32),
    /// Could not start.
    SpawnFailed(String),
    /// Node unreachable.
    Unreachable(String),
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecError::Denied(m) => write!(f, "denied: {m}"),
            ExecError::Timeout(ms) => write!(f, "timed out after {ms} ms and was killed"),
            ExecError::SpawnFailed(m) => f.write_str(m),
            ExecError::Unreachable(m) => f.write_str(m),
        }
    }
}

/// The host's services.
pub trait Host {
    /// Run a command.
    fn exec(&self, req: ExecRequest) -> Result<ExecOutput, ExecError>;
    /// Write a log line.
    fn log(&self, level: Level, message: &str);
    /// Report a milestone (`service-down`, `service-up`, ...).
    fn progress(&self, message: &str);
    /// Read persisted state.
    fn state_get(&self, key: &str) -> Option<String>;
    /// Write persisted state.
    fn state_set(&self, key: &str, value: &str);
    /// Delete persisted state.
    fn state_delete(&self, key: &str);
    /// Reboot a node (`kexec`: straight into the new kernel) and wait until
    /// it is back; the error says why not.
    fn reboot(&self, node: &str, kexec: bool) -> Result<(), String> {
        let _ = (node, kexec);
        Err("this host cannot reboot nodes".to_string())
    }
    /// The service's nodes, when the host provides them lazily (`None`:
    /// use the context's list).
    fn nodes(&self) -> Option<Vec<Node>> {
        None
    }
    /// The run's targets, when the host provides them lazily (`None`: use
    /// the context's).
    fn targets(&self) -> Option<Vec<Node>> {
        None
    }
}

/// What a hook receives: the context and the host.
pub struct Cx<'a> {
    /// The run's context.
    pub ctx: Context,
    host: &'a dyn Host,
    nodes: std::cell::OnceCell<Vec<Node>>,
    targets: std::cell::OnceCell<Vec<Node>>,
}

impl<'a> Cx<'a> {
    /// Pair a context with a host.
    pub fn new(ctx: Context, host: &'a dyn Host) -> Self {
        Cx {
            ctx,
            host,
            nodes: std::cell::OnceCell::new(),
            targets: std::cell::OnceCell::new(),
        }
    }

    /// The nodes of the service, in inventory order (fetched from the host
    /// on first use).
    pub fn nodes(&self) -> &[Node] {
        self.nodes
            .get_or_init(|| self.host.nodes().unwrap_or_else(|| self.ctx.nodes.clone()))
    }

    /// The nodes this run upgrades, in inventory order: every node of
    /// [`Cx::nodes`] unless the operator limited the run (`--limit`).
    /// `upgrade` is called for these only, and the host refuses a mutating
    /// command on any other node; read-only commands may run on all.
    pub fn targets(&self) -> &[Node] {
        self.targets.get_or_init(|| {
            self.host
                .targets()
                .or_else(|| self.ctx.targets.clone())
                .unwrap_or_else(|| self.nodes().to_vec())
        })
    }

    /// Whether the run leaves some of the service's nodes out.
    pub fn is_limited(&self) -> bool {
        self.targets().len() < self.nodes().len()
    }

    /// Refuse a limited run, for a procedure that needs every node of the
    /// service at once (a new-cluster bootstrap, a stop-all). Call it in
    /// `check`: the error names the nodes left out and what to run
    /// instead. `why` completes "this procedure …".
    pub fn require_every_node(&self, why: &str) -> Result<()> {
        if !self.is_limited() {
            return Ok(());
        }
        let names = |ns: &[Node]| {
            ns.iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let left_out: Vec<Node> = self
            .nodes()
            .iter()
            .filter(|n| !self.targets().iter().any(|t| t.name == n.name))
            .cloned()
            .collect();
        Err(Error::msg(format!(
            "service {} cannot be upgraded on part of its nodes: this procedure {why}. This run is limited to {} and leaves out {}; limit the run to all of {} (--limit {}), or leave {} out of it (--only)",
            self.ctx.service,
            names(self.targets()),
            names(&left_out),
            names(self.nodes()),
            self.nodes()
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
                .join(","),
            self.ctx.service,
        )))
    }

    /// The first node (the conventional bootstrap/primary node).
    pub fn primary(&self) -> Result<&Node> {
        self.nodes().first().ok_or_else(|| {
            Error::msg(format!(
                "service {} has no nodes: map it to a role in the services file",
                self.ctx.service
            ))
        })
    }

    /// The first node of the run's targets: where a limited run sends the
    /// commands that act on the whole cluster (a cluster flag), since a
    /// mutating command may change only a target.
    pub fn first_target(&self) -> Result<&Node> {
        self.targets().first().ok_or_else(|| {
            Error::msg(format!(
                "service {} has no nodes in this run",
                self.ctx.service
            ))
        })
    }

    /// An operator parameter.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.ctx
            .params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// An operator parameter or a default.
    pub fn param_or<'b>(&'b self, key: &str, default: &'b str) -> &'b str {
        self.param(key).unwrap_or(default)
    }

    /// An operator parameter parsed as `T` (a number, say), or `default`
    /// when it is not set. A value that does not parse is an error naming
    /// the parameter, the value and what was expected, so a typo in the
    /// services file fails the hook instead of silently using the default.
    pub fn param_parse<T>(&self, key: &str, default: T) -> Result<T>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        match self.param(key) {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|e| {
                Error::msg(format!(
                    "parameter `{key}` of service {} is `{v}`: {e} (expected a {}); fix it under services.{}.params",
                    self.ctx.service,
                    std::any::type_name::<T>(),
                    self.ctx.service
                ))
            }),
        }
    }

    /// Start building a command for `node`.
    pub fn cmd(&self, node: &str, program: &str) -> Command<'_> {
        Command {
            host: self.host,
            req: ExecRequest {
                node: node.to_string(),
                program: program.to_string(),
                args: Vec::new(),
                stdin: None,
                env: Vec::new(),
                timeout_ms: None,
            },
        }
    }

    /// Run `program args…` on `node`; a non-zero exit is an error carrying
    /// program, args, status and stderr.
    pub fn run(&self, node: &str, program: &str, args: &[&str]) -> Result<ExecOutput> {
        self.cmd(node, program).args(args).run()
    }

    /// Reboot `node` through the host and wait until it is back (a new
    /// boot, reachable again). Needs [`Info::reboots`](crate::Info::reboots).
    /// The host journals it: a resumed run waits for a reboot in progress,
    /// never reboots twice; with the operator's delayed reboots it returns
    /// at once and the node reboots at the end of the run. Check the
    /// service's health yourself afterwards.
    pub fn reboot(&self, node: &str) -> Result<()> {
        self.host.reboot(node, false).map_err(Error::msg)
    }

    /// [`Cx::reboot`] by `kexec`: the new kernel without the hardware's
    /// power-on self test.
    pub fn reboot_kexec(&self, node: &str) -> Result<()> {
        self.host.reboot(node, true).map_err(Error::msg)
    }

    /// Run and return the output whatever the status.
    pub fn output(&self, node: &str, program: &str, args: &[&str]) -> Result<ExecOutput> {
        self.cmd(node, program).args(args).output()
    }

    /// Log at info.
    pub fn info(&self, message: impl AsRef<str>) {
        self.host.log(Level::Info, message.as_ref());
    }
    /// Log at warn.
    pub fn warn(&self, message: impl AsRef<str>) {
        self.host.log(Level::Warn, message.as_ref());
    }
    /// Log at debug.
    pub fn debug(&self, message: impl AsRef<str>) {
        self.host.log(Level::Debug, message.as_ref());
    }
    /// Report a milestone.
    pub fn progress(&self, message: impl AsRef<str>) {
        self.host.progress(message.as_ref());
    }
    /// Read persisted state.
    pub fn state_get(&self, key: &str) -> Option<String> {
        self.host.state_get(key)
    }
    /// Write persisted state.
    pub fn state_set(&self, key: &str, value: impl AsRef<str>) {
        self.host.state_set(key, value.as_ref());
    }
    /// Delete persisted state.
    pub fn state_delete(&self, key: &str) {
        self.host.state_delete(key);
    }
}

/// A command being built (see [`Cx::cmd`]).
pub struct Command<'a> {
    host: &'a dyn Host,
    req: ExecRequest,
}

impl Command<'_> {
    /// Append one argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.req.args.push(arg.into());
        self
    }
    /// Append arguments.
    pub fn args<S: AsRef<str>>(mut self, args: &[S]) -> Self {
        self.req
            .args
            .extend(args.iter().map(|a| a.as_ref().to_string()));
        self
    }
    /// Feed standard input.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.req.stdin = Some(bytes.into());
        self
    }
    /// Set an environment variable (must be granted).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.req.env.push((key.to_string(), value.to_string()));
        self
    }
    /// Timeout in milliseconds.
    pub fn timeout_ms(mut self, ms: u32) -> Self {
        self.req.timeout_ms = Some(ms);
        self
    }

    fn argv(&self) -> Vec<String> {
        let mut argv = vec![self.req.program.clone()];
        argv.extend(self.req.args.iter().cloned());
        argv
    }

    /// Run and return the output whatever the exit status.
    pub fn output(self) -> Result<ExecOutput> {
        let node = self.req.node.clone();
        let argv = self.argv();
        self.host
            .exec(self.req)
            .map_err(|error| Error::Exec { node, argv, error })
    }

    /// Run; a non-zero exit status is an error.
    pub fn run(self) -> Result<ExecOutput> {
        let (node, program, args) = (
            self.req.node.clone(),
            self.req.program.clone(),
            self.req.args.clone(),
        );
        let out = self.output()?;
        if out.success() {
            Ok(out)
        } else {
            Err(Error::Command(Box::new(CommandFailed {
                node,
                program,
                args,
                status: out.status,
                stderr: out.stderr_text().trim().to_string(),
                stdout: out.stdout_text().trim().to_string(),
            })))
        }
    }
}
