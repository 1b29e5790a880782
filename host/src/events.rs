//! What happens during a run, as records: the journal stores them (one JSON
//! object per line), `--output json` streams them, progress and reports are
//! built from them. Field names are stable (docs/events.md).

use serde::{Deserialize, Serialize};

/// The program name a reboot is journaled under (`uphost:reboot KIND
/// boot-id=ID`): the host's own operation, never a command a plugin can
/// name (`:` is not allowed in a program).
pub const REBOOT: &str = "uphost:reboot";

/// What the stdout of a deferred reboot's record starts with.
pub const REBOOT_DEFERRED: &str = "deferred to the end of the run";

/// A plugin hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Pre-flight validation.
    Check,
    /// Once per service, before nodes.
    PreUpgrade,
    /// Once per node.
    Upgrade,
    /// Once per service, after nodes.
    PostUpgrade,
    /// Deployment-wide, after every service.
    Finalize,
    /// Restore.
    Rollback,
    /// A migrations-only hop of a release train (once per service).
    Migrate,
    /// The gate after a hop: a service's health check, or an operator's
    /// command.
    Verify,
    /// A node-major run: a node guard takes the node out of its cluster.
    Leave,
    /// A node-major run: a node guard brings the node back and checks the
    /// cluster.
    Rejoin,
    /// A reboot deferred to the end of the run.
    Reboot,
    /// A plugin's ok-to-stop gate before a node's upgrade (read-only, not
    /// a step of its own: its outcome is a `gate-checked` record).
    OkToStop,
}

impl Phase {
    /// The WIT/CLI name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Check => "check",
            Phase::PreUpgrade => "pre-upgrade",
            Phase::Upgrade => "upgrade",
            Phase::PostUpgrade => "post-upgrade",
            Phase::Finalize => "finalize",
            Phase::Rollback => "rollback",
            Phase::Migrate => "migrate",
            Phase::Verify => "verify",
            Phase::Leave => "leave",
            Phase::Rejoin => "rejoin",
            Phase::Reboot => "reboot",
            Phase::OkToStop => "ok-to-stop",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The service name of an operator's gate command in a step: no plugin
/// can have it (a service name is a-z, 0-9, `-`, `_`).
pub const GATE: &str = "(gate)";

/// One (hop, service, phase, node) step.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StepKey {
    /// The hop of a release train (0-based); absent in a run of one hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hop: Option<u32>,
    /// Service ([`GATE`] for an operator's gate command, named by `node`).
    pub service: String,
    /// Phase.
    pub phase: Phase,
    /// Node, for `upgrade`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl StepKey {
    /// A service-level step (check, pre-upgrade, post-upgrade, finalize,
    /// rollback): no node.
    pub fn of(service: &str, phase: Phase) -> StepKey {
        StepKey {
            hop: None,
            service: service.to_string(),
            phase,
            node: None,
        }
    }
}

impl std::fmt::Display for StepKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.node {
            Some(n) if self.service == GATE => write!(f, "gate command `{n}`"),
            Some(n) => write!(f, "{} {} on {}", self.service, self.phase, n),
            None => write!(f, "{} {}", self.service, self.phase),
        }?;
        match self.hop {
            Some(h) => write!(f, " (hop {})", h + 1),
            None => Ok(()),
        }
    }
}

/// The result of one command as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRecord {
    /// Exit status, when it ran to completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<i32>,
    /// Why it produced no status (timeout, spawn failure, unreachable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Error kind for replay: `timeout`, `spawn-failed`, `unreachable`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<ErrorKind>,
    /// Standard output (capped; lossy UTF-8).
    #[serde(default)]
    pub stdout: String,
    /// Standard error (capped; lossy UTF-8).
    #[serde(default)]
    pub stderr: String,
    /// Output was cut at the cap.
    #[serde(default)]
    pub truncated: bool,
    /// Recorded, not executed (read-only mode).
    #[serde(default)]
    pub skipped: bool,
    /// The command changes the node (its record is fsync'd before the
    /// plugin continues; read-only results need not be).
    #[serde(default)]
    pub mutating: bool,
    /// Wall time.
    pub duration_ms: u64,
}

impl CommandRecord {
    /// A command that ran to its exit status.
    pub fn exited(status: i32, stdout: String, stderr: String, mutating: bool, ms: u64) -> Self {
        CommandRecord {
            status: Some(status),
            error: None,
            error_kind: None,
            stdout,
            stderr,
            truncated: false,
            skipped: false,
            mutating,
            duration_ms: ms,
        }
    }

    /// A command that produced no exit status, and why.
    pub fn failed(error: String, kind: Option<ErrorKind>, mutating: bool, ms: u64) -> Self {
        CommandRecord {
            status: None,
            error: Some(error),
            error_kind: kind,
            stdout: String::new(),
            stderr: String::new(),
            truncated: false,
            skipped: false,
            mutating,
            duration_ms: ms,
        }
    }

    /// A mutating command recorded, not run (check, verify, a dry run).
    pub fn skipped() -> Self {
        CommandRecord {
            status: None,
            error: None,
            error_kind: None,
            stdout: String::new(),
            stderr: String::new(),
            truncated: false,
            skipped: true,
            mutating: true,
            duration_ms: 0,
        }
    }
}

/// A run event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// A run began.
    RunStarted {
        /// Run id.
        run_id: String,
        /// RFC 3339 time.
        time: String,
        /// Services in plan order with their nodes.
        plan: Vec<PlannedService>,
        /// Plugin name → sha256.
        plugins: Vec<(String, String)>,
        /// The options the run was started with (resume reuses them).
        options: RunOptionsRecord,
        /// The release train, when the run has more than one hop.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        train: Option<TrainRecord>,
    },
    /// A step began.
    StepStarted {
        /// The step.
        step: StepKey,
        /// Milliseconds since the run started.
        at_ms: u64,
    },
    /// A step ended.
    StepFinished {
        /// The step.
        step: StepKey,
        /// Milliseconds since the run started.
        at_ms: u64,
        /// `ok` or `failed`.
        status: StepResult,
        /// Wall time of the step.
        duration_ms: u64,
        /// Why it failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A command is about to run (written before it starts).
    CommandStarted {
        /// Step it belongs to.
        step: StepKey,
        /// Sequence number of the command within the step.
        seq: u32,
        /// Node.
        node: String,
        /// Program then arguments.
        argv: Vec<String>,
    },
    /// A command finished (or was skipped in read-only mode).
    CommandFinished {
        /// Step it belongs to.
        step: StepKey,
        /// Sequence number within the step.
        seq: u32,
        /// Node.
        node: String,
        /// Program then arguments.
        argv: Vec<String>,
        /// What it produced.
        result: CommandRecord,
    },
    /// A command refused by the grant.
    Denied {
        /// Step.
        step: StepKey,
        /// Plugin.
        plugin: String,
        /// Node asked for.
        node: String,
        /// Program then arguments.
        argv: Vec<String>,
        /// What part was refused.
        reason: String,
    },
    /// A plugin log line or progress milestone.
    Log {
        /// Step.
        step: StepKey,
        /// `debug`, `info`, `warn`, `error`, `progress`, `stdout`, `stderr`.
        level: LogLevel,
        /// Text.
        message: String,
        /// Milliseconds since the run started.
        at_ms: u64,
    },
    /// Plugin state changed.
    State {
        /// Service.
        service: String,
        /// Key.
        key: String,
        /// New value; absent when deleted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<String>,
    },
    /// An operator confirmation.
    Confirmation {
        /// What was asked.
        prompt: String,
        /// Whether it was accepted.
        accepted: bool,
        /// `--yes`, `terminal`.
        how: String,
    },
    /// Rollback began.
    RollbackStarted {
        /// Services to roll back, in order.
        services: Vec<String>,
        /// Completed services that cannot roll back.
        irreversible: Vec<String>,
        /// In a release train, the rollback steps in order (a service's
        /// hop in progress, and its earlier hops when all can be undone).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        steps: Vec<StepKey>,
    },
    /// The run was paused: no new step starts, the steps in flight
    /// finish, and it ends interrupted, for `uphost resume` to continue.
    Paused {
        /// Who asked (`uphost pause`) or why (the maintenance window).
        reason: String,
        /// Milliseconds since the run started.
        at_ms: u64,
    },
    /// The run stamped a node with its update identifier (the file
    /// `update_identifier.path` holds `RUN-ID running`): from now on each of
    /// its steps on the node checks the stamp is still this run's.
    NodeStamped {
        /// The node.
        node: String,
        /// The identifier (the run's id).
        id: String,
        /// Milliseconds since the run started.
        at_ms: u64,
    },
    /// A probe changed state (its first sample too).
    Probe {
        /// The probe.
        name: String,
        /// Whether it answers as expected.
        up: bool,
        /// What the sample saw (why it is down).
        detail: String,
        /// Milliseconds since the run started.
        at_ms: u64,
    },
    /// A gate before a batch of a service's rollout was passed, or not.
    GateChecked {
        /// The service.
        service: String,
        /// The batch (0-based) it guards.
        batch: u32,
        /// Whether the probes were healthy in time.
        passed: bool,
        /// How long it waited, or why it did not pass.
        detail: String,
        /// A plugin's ok-to-stop gate: the node it was about to stop.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<String>,
        /// Milliseconds since the run started.
        at_ms: u64,
    },
    /// A resource-survival command ran (`create` before the first change,
    /// `check` after a hop or at the end).
    Survival {
        /// The service it belongs to.
        service: String,
        /// The check's name.
        name: String,
        /// `create` or `check`.
        what: String,
        /// After which hop (a train's check between hops); absent otherwise.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hop: Option<u32>,
        /// Whether it exited 0.
        passed: bool,
        /// The last lines it printed, or why it failed.
        detail: String,
        /// Milliseconds since the run started.
        at_ms: u64,
    },
    /// A probe's figures for this run (or this part of a resumed run), at
    /// its end.
    ProbeSummary {
        /// The probe.
        name: String,
        /// The service it measures, if the operator said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service: Option<String>,
        /// Samples taken.
        samples: u64,
        /// How many times it went down.
        outages: u64,
        /// Milliseconds down in all.
        down_ms: u64,
        /// The longest outage, milliseconds.
        longest_ms: u64,
        /// Its budget (milliseconds down allowed), if it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        budget_ms: Option<u64>,
    },
    /// The run resumed after an interruption.
    RunResumed {
        /// RFC 3339 time.
        time: String,
        /// Milliseconds since the run first started.
        at_ms: u64,
    },
    /// The run ended.
    RunFinished {
        /// `complete`, `failed`, `interrupted`, `rolled-back`.
        outcome: Outcome,
        /// Milliseconds since the run started.
        at_ms: u64,
    },
}

/// Declares a closed vocabulary the journal writes as kebab-case words:
/// the enum, its word (`as_str`, also its `Display`) and serde under the
/// same words, so journals written before the type existed replay.
macro_rules! words {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $w:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $w)] $v,)*
        }

        impl $name {
            /// Every word, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];

            /// The journal's word for it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$v => $w,)*
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

words! {
    /// How a run ended (`run-finished`'s `outcome`).
    Outcome {
        /// Every step done. Final.
        Complete = "complete",
        /// A step failed and nothing was rolled back; `resume` retries.
        Failed = "failed",
        /// Failed, then rolled back. Final: a new run starts over.
        RolledBack = "rolled-back",
        /// Stopped by the operator (Ctrl-C, a declined confirmation) or by
        /// a journal that could not be written; `resume` continues.
        Interrupted = "interrupted",
    }
}

impl Outcome {
    /// Nothing is left to do in a run that ended so: it cannot be resumed,
    /// and a new run may start after it.
    pub fn is_final(self) -> bool {
        matches!(self, Outcome::Complete | Outcome::RolledBack)
    }
}

words! {
    /// How a step ended (`step-finished`'s `status`).
    StepResult {
        /// The hook returned success.
        Ok = "ok",
        /// The hook failed, trapped or timed out.
        Failed = "failed",
    }
}

words! {
    /// A log record's level: the plugin's own levels, its progress
    /// milestones, and what it wrote to its stdout/stderr.
    LogLevel {
        /// Detail.
        Debug = "debug",
        /// Information.
        Info = "info",
        /// A warning.
        Warn = "warn",
        /// An error.
        Error = "error",
        /// A progress milestone.
        Progress = "progress",
        /// The guest's standard output.
        Stdout = "stdout",
        /// The guest's standard error.
        Stderr = "stderr",
    }
}

impl LogLevel {
    /// Shown to the operator without `-v`.
    pub fn is_notable(self) -> bool {
        matches!(self, LogLevel::Warn | LogLevel::Error | LogLevel::Progress)
    }
}

words! {
    /// Why a command produced no exit status (`error_kind`).
    ErrorKind {
        /// It ran past its timeout and was killed.
        Timeout = "timeout",
        /// It could not be started.
        SpawnFailed = "spawn-failed",
        /// No connection to the node.
        Unreachable = "unreachable",
        /// The node refused the credentials.
        AuthenticationFailed = "authentication-failed",
        /// The node's host key was refused.
        HostKeyRejected = "host-key-rejected",
        /// The connection dropped while the command ran.
        ConnectionDropped = "connection-dropped",
    }
}

impl ErrorKind {
    /// A failure to reach the node (as opposed to one of the command).
    pub fn is_connection(self) -> bool {
        !matches!(self, ErrorKind::Timeout | ErrorKind::SpawnFailed)
    }
}

/// A probe's outages, folded from its state changes (the probe as it
/// runs, and the journal's readers, count alike).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProbeTally {
    /// Its last state.
    pub up: Option<bool>,
    /// Why it is down, when it is.
    pub detail: String,
    /// How many times it went down.
    pub outages: u64,
    /// Milliseconds down, outages that ended.
    pub down_ms: u64,
    /// The longest outage that ended.
    pub longest_ms: u64,
    /// When the outage in progress began.
    pub down_since: Option<u64>,
}

impl ProbeTally {
    /// A state change at `at_ms`.
    pub fn observe(&mut self, up: bool, detail: &str, at_ms: u64) {
        if self.up == Some(up) {
            return;
        }
        if up {
            if let Some(s) = self.down_since.take() {
                let d = at_ms.saturating_sub(s);
                self.down_ms += d;
                self.longest_ms = self.longest_ms.max(d);
            }
            self.detail.clear();
        } else {
            self.outages += 1;
            self.down_since = Some(at_ms);
            self.detail = detail.to_string();
        }
        self.up = Some(up);
    }

    /// Milliseconds down as of `now_ms` (an outage in progress counts).
    pub fn down_at(&self, now_ms: u64) -> u64 {
        self.down_ms + self.down_since.map_or(0, |s| now_ms.saturating_sub(s))
    }

    /// The longest outage as of `now_ms`.
    pub fn longest_at(&self, now_ms: u64) -> u64 {
        self.longest_ms
            .max(self.down_since.map_or(0, |s| now_ms.saturating_sub(s)))
    }
}

/// A probe's figures over a run (every attempt of a resumed run added up).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProbeFigures {
    /// The service it measures, if the operator said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Samples taken.
    pub samples: u64,
    /// Outages.
    pub outages: u64,
    /// Milliseconds down in all.
    pub down_ms: u64,
    /// The longest outage.
    pub longest_ms: u64,
    /// Its budget, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_ms: Option<u64>,
}

impl ProbeFigures {
    /// Add the figures of a `probe-summary` (one attempt of the run).
    pub fn absorb(&mut self, e: &Event) {
        if let Event::ProbeSummary {
            service,
            samples,
            outages,
            down_ms,
            longest_ms,
            budget_ms,
            ..
        } = e
        {
            self.service = service.clone();
            self.samples += samples;
            self.outages += outages;
            self.down_ms += down_ms;
            self.longest_ms = self.longest_ms.max(*longest_ms);
            self.budget_ms = *budget_ms;
        }
    }
}

/// Options of a run, as recorded for resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RunOptionsRecord {
    /// Mutating commands recorded, not executed.
    pub dry_run: bool,
    /// `--only` services.
    #[serde(default)]
    pub only: Vec<String>,
    /// `--limit` nodes or roles.
    #[serde(default)]
    pub limit: Vec<String>,
    /// Roll back on failure without asking.
    #[serde(default)]
    pub rollback_on_failure: bool,
    /// Ask the operator before each hop of a release train after the first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pause_between_hops: bool,
    /// A node-major run: each node (batch) with every service it hosts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub node_major: bool,
}

/// A service in the recorded plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedService {
    /// Name.
    pub name: String,
    /// Level.
    pub level: usize,
    /// Direct dependencies.
    pub depends_on: Vec<String>,
    /// Node names.
    pub nodes: Vec<String>,
    /// Rollout.
    pub rollout: String,
    /// Whether the plugin can roll back.
    pub reversible: bool,
    /// Its hops, in a release train (empty in a run of one hop).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hops: Vec<Hop>,
    /// Its plugin guards its nodes (`leave`/`rejoin` in a node-major run).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub guard: bool,
}

/// What a hop of a release train does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HopKind {
    /// Every hook, every node.
    Full,
    /// `migrate` only (a leapfrog's intermediate hop).
    MigrationsOnly,
}

impl HopKind {
    /// `full`, `migrations-only`.
    pub fn as_str(self) -> &'static str {
        match self {
            HopKind::Full => "full",
            HopKind::MigrationsOnly => "migrations-only",
        }
    }
}

/// One hop of a service's release train.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    /// The stage of the run it belongs to (0-based): every service's hops
    /// of stage k end before any hop of stage k+1 starts.
    #[serde(default)]
    pub stage: u32,
    /// The release it starts from.
    pub from: String,
    /// The release it lands on.
    pub to: String,
    /// Full, or migrations only.
    pub kind: HopKind,
}

impl Hop {
    /// `keystone mitaka -> newton (migrations only)`: the hop of `service`
    /// as the plan and the prompts show it.
    pub fn label(&self, service: &str) -> String {
        format!(
            "{service} {} -> {}{}",
            self.from,
            self.to,
            if self.kind == HopKind::MigrationsOnly {
                " (migrations only)"
            } else {
                ""
            }
        )
    }
}

/// A release train as a run records it: present when a service has more
/// than one hop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TrainRecord {
    /// How many hops (the longest service's train).
    pub hops: u32,
    /// `in-sequence` or `leapfrog`.
    pub style: String,
    /// The operator's gate commands, by name, run after every hop but the
    /// last.
    #[serde(default)]
    pub gates: Vec<String>,
}

/// Where events go (journal, stream, progress, test harness).
pub trait Sink: Send + Sync {
    /// Record an event. Step ends, command intents and state changes are
    /// durable (fsync'd) before this returns.
    fn emit(&self, event: Event);

    /// A command result recorded by an earlier attempt of the same step, to
    /// replay instead of executing again after a crash.
    fn replay(&self, _step: &StepKey, _seq: u32) -> Option<CommandRecord> {
        None
    }

    /// A reboot of this step that an earlier attempt issued and did not
    /// see through: its journaled argv (with the boot identity before).
    fn reboot_in_doubt(&self, _step: &StepKey, _seq: u32) -> Option<Vec<String>> {
        None
    }

    /// Whether an earlier attempt of `step` left a reboot in doubt (its
    /// node may be down until the reboot is waited for).
    fn rebooting(&self, _step: &StepKey) -> bool {
        false
    }

    /// Plugin state.
    fn state_get(&self, service: &str, key: &str) -> Option<String>;

    /// How much state `service` holds: its keys and the bytes of their
    /// values (the budget a plugin's state is held to).
    fn state_held(&self, _service: &str) -> (usize, usize) {
        (0, 0)
    }

    /// Milliseconds since the run started (for event timestamps).
    fn now_ms(&self) -> u64;

    /// Make every event emitted so far durable (the end of a batch of node
    /// steps, before anything that depends on them starts).
    fn barrier(&self) {}

    /// Why events can no longer be recorded durably (the journal's disk is
    /// full or failing), once that happened; `None` while all is well.
    fn write_error(&self) -> Option<String> {
        None
    }

    /// Stop recording: the run's disk has no room for what must be on it
    /// (a command's result). Like a failed write, it stops the run, and
    /// the steps in flight are left for `resume` to replay, not failed.
    fn no_room(&self, _why: String) {}
}

/// The keys of `service` in a state map and the bytes of their values.
pub fn held_by(
    state: &std::collections::BTreeMap<(String, String), String>,
    service: &str,
) -> (usize, usize) {
    state
        .range((service.to_string(), String::new())..)
        .take_while(|((s, _), _)| s == service)
        .fold((0, 0), |(n, b), ((_, k), v)| (n + 1, b + k.len() + v.len()))
}

/// Milliseconds since the Unix epoch formatted as RFC 3339.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
