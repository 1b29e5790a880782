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
}

/// Read the services file.
pub fn load(path: &Path) -> Result<ServicesFile, ConfigError> {
    yaml::read(path)
}
