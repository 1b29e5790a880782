//! What a plugin declares about itself in `describe`.

/// Whether a command changes the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Executed in `check` and dry-run.
    ReadOnly,
    /// Recorded, not executed, in `check` and dry-run.
    Mutating,
}

/// A request to run one program with arguments matching patterns (see
/// [`pattern`](crate::pattern) for the syntax).
#[derive(Debug, Clone, PartialEq)]
pub struct Capability {
    /// The program.
    pub program: String,
    /// One pattern per argument; a final `...` matches any rest.
    pub args: Vec<String>,
    /// Read-only or mutating.
    pub access: Access,
    /// Environment variable names the plugin may set.
    pub env: Vec<String>,
    /// Why it is needed (shown on approval).
    pub reason: String,
}

impl Capability {
    fn new(access: Access, program: &str, args: &[&str]) -> Self {
        Capability {
            program: program.to_string(),
            args: args.iter().map(|s| s.to_string()).collect(),
            access,
            env: Vec::new(),
            reason: String::new(),
        }
    }

    /// A command that only reads state.
    pub fn read_only(program: &str, args: &[&str]) -> Self {
        Self::new(Access::ReadOnly, program, args)
    }

    /// A command that changes the node.
    pub fn mutating(program: &str, args: &[&str]) -> Self {
        Self::new(Access::Mutating, program, args)
    }

    /// Say why the plugin needs it.
    pub fn reason(mut self, reason: &str) -> Self {
        self.reason = reason.to_string();
        self
    }

    /// Allow the plugin to set these environment variables.
    pub fn env(mut self, names: &[&str]) -> Self {
        self.env = names.iter().map(|s| s.to_string()).collect();
        self
    }
}

/// How `upgrade(node)` is spread over the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollout {
    /// All nodes at once.
    Parallel,
    /// Batches of N nodes.
    Serial(u32),
    /// Batches of N% of the nodes.
    SerialPercent(u8),
    /// One node at a time.
    OneAtATime,
}

/// The releases a plugin can upgrade between (a release train).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Releases {
    /// Every release known, oldest first; a hop may go from one to the next.
    pub sequence: Vec<String>,
    /// Further direct jumps (from, to), e.g. SLURP pairs.
    pub jumps: Vec<(String, String)>,
    /// Whether an intermediate hop may run as migrations only
    /// ([`Plugin::migrate`](crate::Plugin::migrate)), for a leapfrog.
    pub migrations_only: bool,
}

/// The plugin's description.
#[derive(Debug, Clone, PartialEq)]
pub struct Info {
    /// Service name (unique among plugins).
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// One line for operators.
    pub description: String,
    /// Services upgraded before this one.
    pub depends_on: Vec<String>,
    /// Commands it may run.
    pub capabilities: Vec<Capability>,
    /// Default rollout.
    pub rollout: Rollout,
    /// Whether `rollback` restores the pre-upgrade state.
    pub reversible: bool,
    /// The releases it knows, for release trains (`None`: one hop).
    pub releases: Option<Releases>,
    /// It guards its nodes' cluster membership: `leave`/`rejoin` around
    /// each node's steps in a node-major run.
    pub node_guard: bool,
    /// It may ask the host to reboot its nodes ([`Cx::reboot`](crate::Cx::reboot)).
    pub reboots: bool,
    /// The host asks [`Plugin::ok_to_stop`](crate::Plugin::ok_to_stop)
    /// before each node's `upgrade`, retrying until it passes.
    pub ok_to_stop: bool,
    /// Probes the host samples beside the run on each of the service's
    /// nodes.
    pub probes: Vec<Probe>,
}

/// A probe a plugin declares ([`Info::probe`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// Its name (`a-z`, `0-9`, `-`).
    pub name: String,
    /// A TCP port of each node, or a read-only command on each node.
    pub check: ProbeCheck,
    /// How often, in milliseconds.
    pub interval_ms: u32,
}

/// What a [`Probe`] checks.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeCheck {
    /// A TCP connect to this port of the node's address.
    Tcp(u16),
    /// A read-only command (covered by one of the plugin's read-only
    /// capabilities), healthy when it exits 0 and prints `expect`.
    Command {
        /// Program and arguments.
        argv: Vec<String>,
        /// Text the output must contain.
        expect: Option<String>,
    },
}

impl Probe {
    /// A TCP connect to `port` of each node, every `interval_ms`.
    pub fn tcp(name: &str, port: u16, interval_ms: u32) -> Probe {
        Probe {
            name: name.to_string(),
            check: ProbeCheck::Tcp(port),
            interval_ms,
        }
    }

    /// `argv` on each node, healthy when it exits 0 (and prints `expect`).
    pub fn command(name: &str, argv: &[&str], expect: Option<&str>, interval_ms: u32) -> Probe {
        Probe {
            name: name.to_string(),
            check: ProbeCheck::Command {
                argv: argv.iter().map(|s| s.to_string()).collect(),
                expect: expect.map(String::from),
            },
            interval_ms,
        }
    }
}

impl Info {
    /// A plugin for `name`; version defaults to `0.1.0`, rollout to
    /// one-at-a-time, not reversible. Use the builder methods for the rest.
    pub fn new(name: &str, description: &str) -> Self {
        Info {
            name: name.to_string(),
            version: "0.1.0".to_string(),
            description: description.to_string(),
            depends_on: Vec::new(),
            capabilities: Vec::new(),
            rollout: Rollout::OneAtATime,
            reversible: false,
            releases: None,
            node_guard: false,
            reboots: false,
            ok_to_stop: false,
            probes: Vec::new(),
        }
    }

    /// Declare a probe the host samples beside the run on each node
    /// ([`Probe::tcp`], [`Probe::command`]); a command must be covered by a
    /// read-only capability of this plugin.
    pub fn probe(mut self, probe: Probe) -> Self {
        self.probes.push(probe);
        self
    }

    /// Declare an ok-to-stop gate: the host calls
    /// [`Plugin::ok_to_stop`](crate::Plugin::ok_to_stop) before each node's
    /// `upgrade` and retries it until it passes (or the operator's
    /// deadline), so the plugin does not loop itself.
    pub fn ok_to_stop(mut self, yes: bool) -> Self {
        self.ok_to_stop = yes;
        self
    }

    /// Declare that this plugin guards its nodes' cluster membership
    /// (Pacemaker): in a node-major run the host calls
    /// [`Plugin::leave`](crate::Plugin::leave) before a node's steps and
    /// [`Plugin::rejoin`](crate::Plugin::rejoin) after them.
    pub fn node_guard(mut self, yes: bool) -> Self {
        self.node_guard = yes;
        self
    }

    /// Ask for the host's reboot operation ([`Cx::reboot`](crate::Cx::reboot));
    /// the operator approves it with the commands.
    pub fn reboots(mut self, yes: bool) -> Self {
        self.reboots = yes;
        self
    }

    /// Set the plugin's version (usually `env!("CARGO_PKG_VERSION")`).
    pub fn version(mut self, version: &str) -> Self {
        self.version = version.to_string();
        self
    }

    /// Services that must be upgraded first.
    pub fn depends_on(mut self, services: &[&str]) -> Self {
        self.depends_on = services.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Request one capability.
    pub fn capability(mut self, cap: Capability) -> Self {
        self.capabilities.push(cap);
        self
    }

    /// Request several capabilities.
    pub fn capabilities(mut self, caps: impl IntoIterator<Item = Capability>) -> Self {
        self.capabilities.extend(caps);
        self
    }

    /// Default rollout.
    pub fn rollout(mut self, rollout: Rollout) -> Self {
        self.rollout = rollout;
        self
    }

    /// Declare that `rollback` restores the pre-upgrade state.
    pub fn reversible(mut self, yes: bool) -> Self {
        self.reversible = yes;
        self
    }

    /// The releases this plugin upgrades between, oldest first: the host
    /// plans a train of hops, one release at a time.
    pub fn releases(mut self, sequence: &[&str]) -> Self {
        self.releases.get_or_insert_with(Releases::default).sequence =
            sequence.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Allow a direct jump from `from` to `to` (releases not consecutive in
    /// the sequence).
    pub fn jump(mut self, from: &str, to: &str) -> Self {
        self.releases
            .get_or_insert_with(Releases::default)
            .jumps
            .push((from.to_string(), to.to_string()));
        self
    }

    /// Allow each of these direct jumps (see [`Info::jump`]).
    pub fn jumps(mut self, jumps: &[(&str, &str)]) -> Self {
        for (from, to) in jumps {
            self = self.jump(from, to);
        }
        self
    }

    /// Declare that an intermediate hop may run as migrations only
    /// ([`Plugin::migrate`](crate::Plugin::migrate)): a leapfrog.
    pub fn migrations_only(mut self, yes: bool) -> Self {
        self.releases
            .get_or_insert_with(Releases::default)
            .migrations_only = yes;
        self
    }

    /// Is `argv` (program first) covered by one of the requested
    /// capabilities? Plugin unit tests use it to prove they request what
    /// they run.
    pub fn allows(&self, program: &str, args: &[String]) -> Option<&Capability> {
        self.capabilities
            .iter()
            .find(|c| c.program == program && crate::pattern::args_match(&c.args, args))
    }
}
