//! The services file: which roles host each service (TripleO's roles_data
//! idea), versions, rollout overrides, plugin parameters and limits.

use std::collections::BTreeMap;
use std::path::Path;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use super::yaml::{self, ConfigError};
use crate::config::rollout::{MaxFail, Rollout};

/// Major upgrade or minor update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Schema and RPC may change.
    #[default]
    MajorUpgrade,
    /// Rolling update.
    MinorUpdate,
}

/// Resource limits for a plugin; unset fields fall back to the global ones.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsOverride {
    /// Linear memory cap, MiB.
    pub memory_mb: Option<u64>,
    /// Deadline for one hook call, seconds.
    pub hook_timeout_s: Option<u64>,
    /// Default timeout of one command, seconds.
    pub exec_timeout_s: Option<u64>,
    /// Cap on captured stdout and stderr of one command (and the guest's own
    /// output), KiB.
    pub output_cap_kb: Option<u64>,
    /// Cap on log lines per hook call.
    pub max_log_lines: Option<u64>,
    /// Cap on what one plugin may write to the journal in one run
    /// (commands' output, logs, state, denials), MiB.
    pub journal_mb: Option<u64>,
}

impl LimitsOverride {
    /// Every limit set is within its range: the first one that is not, as
    /// (key, message naming the value and the range).
    pub fn out_of_range(&self) -> Option<(&'static str, String)> {
        let checks: [(&'static str, Option<u64>, u64, u64, &str); 6] = [
            (
                "memory_mb",
                self.memory_mb,
                1,
                4096,
                "MiB of linear memory per plugin instance",
            ),
            (
                "hook_timeout_s",
                self.hook_timeout_s,
                1,
                7 * 86400,
                "seconds a hook call may take",
            ),
            (
                "exec_timeout_s",
                self.exec_timeout_s,
                1,
                7 * 86400,
                "seconds one command may take",
            ),
            (
                "output_cap_kb",
                self.output_cap_kb,
                1,
                1 << 20,
                "KiB kept of a command's output",
            ),
            (
                "max_log_lines",
                self.max_log_lines,
                1,
                10_000_000,
                "log lines kept per hook call",
            ),
            (
                "journal_mb",
                self.journal_mb,
                1,
                1 << 20,
                "MiB one plugin may write to the journal in a run",
            ),
        ];
        checks.into_iter().find_map(|(key, v, lo, hi, what)| {
            let v = v?;
            (!(lo..=hi).contains(&v)).then(|| (key, format!("{v} is outside {lo}..={hi} ({what})")))
        })
    }
}

/// One service's settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Inventory groups whose nodes host the service.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Current version (default: the file's `from_version`).
    pub from_version: Option<String>,
    /// Target version (default: the file's `to_version`).
    pub to_version: Option<String>,
    /// In a release train, the releases to land on before the target, in
    /// order (default: the plugin's path, its direct jumps where it has
    /// them); each hop must be one the plugin allows.
    pub via: Option<Vec<String>>,
    /// Override of the plugin's rollout.
    pub rollout: Option<Rollout>,
    /// How many node failures are tolerated before the service fails.
    pub max_fail: Option<MaxFail>,
    /// Pause for confirmation after the first batch.
    #[serde(default)]
    pub canary: bool,
    /// Parameters passed to the plugin.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Per-plugin limits.
    #[serde(default)]
    pub limits: LimitsOverride,
    /// Probes that must be healthy before each batch of its rollout.
    #[serde(default)]
    pub gate: Option<BatchGate>,
    /// Resource survival: what the operator creates before the upgrade and
    /// checks between hops and at the end.
    #[serde(default)]
    pub survival: Vec<Survival>,
    /// When the plugin's reboots happen: `now` (default, where the plugin
    /// asks) or `delayed` (noted, and done at the end of the run, one
    /// node at a time).
    #[serde(default)]
    pub reboot: RebootWhen,
}

/// When a service's reboots happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RebootWhen {
    /// When the plugin asks.
    #[default]
    Now,
    /// At the end of the run.
    Delayed,
}

/// A resource that must survive the upgrade (Javelin's idea): `create`
/// runs once before the first change, `check` after each hop of a train
/// and at the end; both on the control host, from the directory of
/// `uphost.yaml`, and pass when they exit 0.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Survival {
    /// Its name (a-z, 0-9, `-`, `_`).
    pub name: String,
    /// Creates the resource (optional: it may exist already).
    #[serde(default)]
    pub create: Option<Vec<String>>,
    /// Checks it is still there and usable.
    pub check: Vec<String>,
    /// Seconds each may take (default 600).
    #[serde(default)]
    pub timeout_s: Option<u64>,
}

/// What to do when a gate does not pass within its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnTimeout {
    /// Fail the run (the default).
    #[default]
    Stop,
    /// Pause it: `uphost resume` waits for the gate again.
    Pause,
}

/// A gate before each batch of a service's rollout: the named probes
/// healthy for `samples` consecutive samples taken since the gate began,
/// within `deadline_s`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BatchGate {
    /// Probes of the services file (a service's gate may name none: its
    /// deadline and `on_timeout` then govern only its plugin's ok-to-stop
    /// gate).
    #[serde(default)]
    pub probes: Vec<String>,
    /// Consecutive healthy samples (default 3).
    #[serde(default)]
    pub samples: Option<u64>,
    /// Seconds to wait (default 300).
    #[serde(default)]
    pub deadline_s: Option<u64>,
    /// `stop` (default) or `pause`.
    #[serde(default)]
    pub on_timeout: OnTimeout,
}

/// How the operator runs a release train of several hops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TrainStyle {
    /// Every hop a complete upgrade, one release at a time, every service's
    /// hop k done before any service's hop k+1 (the Liberty→Ocata journey,
    /// a fast-forward upgrade).
    #[default]
    InSequence,
    /// Intermediate hops run only their database migrations, where the
    /// plugin can; the target is deployed once, by the last hop (RPCO's
    /// leapfrog). One-way: migrations-only hops do not roll back.
    Leapfrog,
}

impl TrainStyle {
    /// `in-sequence`, `leapfrog`.
    pub fn as_str(self) -> &'static str {
        match self {
            TrainStyle::InSequence => "in-sequence",
            TrainStyle::Leapfrog => "leapfrog",
        }
    }
}

/// One of the operator's gate commands, run on the control host after
/// every hop of a train but the last (a Tempest or Rally smoke run, a
/// resource-survival script). It passes when it exits 0.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GateCommand {
    /// A name for the journal, `status` and the report (a-z, 0-9, `-`, `_`).
    pub name: String,
    /// The program and its arguments (no shell), run from the directory of
    /// `uphost.yaml`, with `UPHOST_RUN_ID`, `UPHOST_HOP` (1-based, the hop
    /// just done) and `UPHOST_HOPS` set.
    pub command: Vec<String>,
    /// Kill it after this many seconds (default 3600).
    #[serde(default)]
    pub timeout_s: Option<u64>,
}

/// The release train settings (`train:` in the services file).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// `in-sequence` (default) or `leapfrog`.
    #[serde(default)]
    pub style: TrainStyle,
    /// Commands that must pass between hops, besides every service's own
    /// `verify`.
    #[serde(default)]
    pub gates: Vec<GateCommand>,
    /// The releases the deployment-wide train lands on before the target
    /// (for services without versions of their own; see a service's `via`).
    pub via: Option<Vec<String>>,
    /// Probes that must be healthy after each hop's gate commands, before
    /// the next hop.
    #[serde(default)]
    pub probes: Option<BatchGate>,
}

/// What a probe does when its outage passes its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnBudget {
    /// Fail the run at the next step boundary (the default).
    #[default]
    Fail,
    /// Say so and go on.
    Warn,
}

/// A read-only command on a node, as a probe.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProbeCommand {
    /// The inventory node it runs on.
    pub node: String,
    /// The program and its arguments (no shell).
    pub argv: Vec<String>,
    /// Text its standard output must contain (besides exit status 0).
    #[serde(default)]
    pub expect: Option<String>,
}

/// A probe the operator declares: sampled from the start of the run to its
/// end, beside it, its state changes journaled and its unavailability
/// measured. Exactly one of `tcp`, `http`, `command`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// Its name (a-z, 0-9, `-`, `_`).
    pub name: String,
    /// The service it measures (for the report), if any.
    #[serde(default)]
    pub service: Option<String>,
    /// `HOST:PORT` that must accept a TCP connection.
    #[serde(default)]
    pub tcp: Option<String>,
    /// `http://HOST[:PORT]/PATH` or `https://…` that must answer (HTTPS:
    /// the certificate is verified, for the URL's host).
    #[serde(default)]
    pub http: Option<String>,
    /// The HTTP status it must answer (default: any 2xx or 3xx).
    #[serde(default)]
    pub expect_status: Option<u16>,
    /// For an `https://` probe: a PEM file of the CAs to trust besides the
    /// public ones (a private CA), relative to the services file.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// A read-only command on a node that must succeed.
    #[serde(default)]
    pub command: Option<ProbeCommand>,
    /// Milliseconds between samples (default 500, at least 10).
    #[serde(default)]
    pub interval_ms: Option<u64>,
    /// Milliseconds one sample may take (default 1000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Seconds of outage allowed in total over the run.
    #[serde(default)]
    pub budget_s: Option<f64>,
    /// Past the budget: `fail` the run (default) or `warn`.
    #[serde(default)]
    pub on_budget: OnBudget,
}

/// The services file.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ServicesFile {
    /// Upgrade or update.
    #[serde(default)]
    pub mode: Mode,
    /// Default current version.
    #[serde(default)]
    pub from_version: String,
    /// Default target version.
    #[serde(default)]
    pub to_version: String,
    /// Services by name.
    #[serde(default)]
    pub services: IndexMap<String, ServiceConfig>,
    /// The release train: style and gates.
    #[serde(default)]
    pub train: TrainConfig,
    /// Probes sampled beside the run, their outages measured.
    #[serde(default)]
    pub probes: Vec<ProbeConfig>,
    /// The unit of the rollout: each service across its nodes
    /// (`service-major`, the default) or each node with all its services
    /// (`node-major`, a rolling minor update).
    #[serde(default)]
    pub order: Order,
    /// How a node-major run goes over the nodes.
    #[serde(default)]
    pub node_major: NodeMajorConfig,
}

/// The unit of a run's rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Order {
    /// Each service across its nodes, then the next service.
    #[default]
    ServiceMajor,
    /// Each node (or batch of nodes) with every service it hosts, wrapped
    /// by the node guards' `leave` and `rejoin`, then the next.
    NodeMajor,
}

impl Order {
    /// As written in the services file.
    pub fn as_str(self) -> &'static str {
        match self {
            Order::ServiceMajor => "service-major",
            Order::NodeMajor => "node-major",
        }
    }
}

/// `node_major:` in the services file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeMajorConfig {
    /// Batches of nodes (default one at a time).
    #[serde(default)]
    pub rollout: Option<Rollout>,
    /// Node failures tolerated (default none).
    #[serde(default)]
    pub max_fail: Option<MaxFail>,
    /// Ask the operator after the first batch.
    #[serde(default)]
    pub canary: bool,
}

/// Read the services file.
pub fn load(path: &Path) -> Result<ServicesFile, ConfigError> {
    yaml::read(path)
}
