//! What `describe` returned, as host types (serializable for the lock file,
//! `plugins inspect` and JSON output).

use serde::Serialize;

use crate::capabilities::{Access, CommandCap};
use crate::config::rollout::Rollout;
use crate::planning::train::ReleasePath;
use crate::runtime::bindings::uphost::plugin::types;

/// A plugin's description.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PluginMeta {
    /// Service name.
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// One line.
    pub description: String,
    /// Services upgraded first.
    pub depends_on: Vec<String>,
    /// Requested capabilities.
    pub capabilities: Vec<CommandCap>,
    /// Default rollout.
    pub rollout: Rollout,
    /// Can roll back.
    pub reversible: bool,
    /// The releases it knows, for release trains (`None`: one hop).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub releases: Option<ReleasePath>,
    /// It guards its nodes' cluster membership (`leave`/`rejoin` around a
    /// node's steps in a node-major run).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub node_guard: bool,
}

/// Most capabilities a plugin may request (each is reviewed by a person).
pub const MAX_CAPABILITIES: usize = 256;
/// Most argument patterns of one capability.
pub const MAX_ARGS: usize = 64;
/// Longest argument pattern.
pub const MAX_PATTERN: usize = 1024;
/// Most environment variable names of one capability.
pub const MAX_ENV: usize = 32;
/// Longest reason, description (bytes, as shown).
pub const MAX_TEXT: usize = 512;
/// Longest version.
pub const MAX_VERSION: usize = 64;
/// Most releases (and jumps) of a release path.
pub const MAX_RELEASES: usize = 256;

/// A release path as the host keeps it: every release a version string an
/// operator can type (it is compared with the services file's versions,
/// never escaped), the path well formed.
fn release_path(r: types::ReleasePath) -> Result<ReleasePath, String> {
    if r.sequence.len() > MAX_RELEASES || r.jumps.len() > MAX_RELEASES {
        return Err(format!(
            "its release path has {} releases and {} jumps; at most {MAX_RELEASES} of each",
            r.sequence.len(),
            r.jumps.len()
        ));
    }
    let release = |v: &String| {
        if v.is_empty()
            || v.len() > MAX_VERSION
            || !v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-+~:".contains(c))
        {
            Err(format!(
                "release `{}` in its release path is not a version (1-{MAX_VERSION} of a-z, A-Z, 0-9, `.`, `_`, `-`, `+`, `~`, `:`)",
                crate::untrusted::line_max(v, MAX_VERSION)
            ))
        } else {
            Ok(())
        }
    };
    for v in &r.sequence {
        release(v)?;
    }
    let path = ReleasePath {
        sequence: r.sequence,
        jumps: r.jumps.into_iter().map(|j| (j.from, j.to)).collect(),
        migrations_only: r.migrations_only,
    };
    path.validate()?;
    Ok(path)
}

/// A plugin's text as the operator is shown it, and as the lock records
/// it: control characters made visible, length capped. What is approved
/// is byte for byte what was on the screen.
fn as_shown(s: String, max: usize) -> String {
    crate::untrusted::line_max(&s, max).into_owned()
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

impl PluginMeta {
    /// Convert and validate.
    pub fn from_wit(i: types::PluginInfo) -> Result<PluginMeta, String> {
        if !valid_name(&i.name) {
            return Err(format!(
                "service name `{}` is invalid: use 1-64 of a-z, 0-9, `-`, `_`",
                i.name.escape_debug()
            ));
        }
        for d in &i.depends_on {
            if !valid_name(d) {
                return Err(format!(
                    "depends-on entry `{}` is invalid",
                    d.escape_debug()
                ));
            }
        }
        if i.capabilities.len() > MAX_CAPABILITIES {
            return Err(format!(
                "it requests {} capabilities; at most {MAX_CAPABILITIES} can be reviewed and granted",
                i.capabilities.len()
            ));
        }
        if i.depends_on.len() > 64 {
            return Err(format!(
                "it depends on {} services; at most 64",
                i.depends_on.len()
            ));
        }
        let mut caps = Vec::new();
        for c in i.capabilities {
            crate::capabilities::check_program(&c.program)
                .map_err(|e| format!("capability {}: {e}", caps.len() + 1))?;
            if c.args.len() > MAX_ARGS {
                return Err(format!(
                    "capability `{}`: {} argument patterns; at most {MAX_ARGS}",
                    c.program,
                    c.args.len()
                ));
            }
            if let Some(a) = c.args.iter().find(|a| a.len() > MAX_PATTERN) {
                return Err(format!(
                    "capability `{}`: an argument pattern of {} bytes; at most {MAX_PATTERN}",
                    c.program,
                    a.len()
                ));
            }
            if c.env.len() > MAX_ENV {
                return Err(format!(
                    "capability `{}`: {} environment variables; at most {MAX_ENV}",
                    c.program,
                    c.env.len()
                ));
            }
            for e in &c.env {
                crate::capabilities::check_env_name(e)
                    .map_err(|why| format!("capability `{}`: {why}", c.program))?;
            }
            if let Some(pos) = c.args.iter().position(|a| a == "...")
                && pos + 1 != c.args.len()
            {
                return Err(format!(
                    "capability `{}`: `...` may only be the last argument pattern",
                    c.program
                ));
            }
            caps.push(CommandCap {
                program: c.program,
                args: c.args,
                access: match c.access {
                    types::Access::ReadOnly => Access::ReadOnly,
                    types::Access::Mutating => Access::Mutating,
                },
                env: c.env,
                reason: as_shown(c.reason, MAX_TEXT),
            });
        }
        if i.reboots {
            caps.push(crate::capabilities::reboot_capability());
        }
        let rollout = match i.rollout {
            types::Rollout::Parallel => Rollout::Parallel,
            types::Rollout::Serial(0) => return Err("rollout serial(0) is invalid".into()),
            types::Rollout::Serial(n) => Rollout::Serial(n),
            types::Rollout::SerialPercent(p) if (1..=100).contains(&p) => Rollout::SerialPercent(p),
            types::Rollout::SerialPercent(p) => {
                return Err(format!("rollout serial-percent({p}) is outside 1..100"));
            }
            types::Rollout::OneAtATime => Rollout::OneAtATime,
        };
        Ok(PluginMeta {
            name: i.name,
            version: as_shown(i.version, MAX_VERSION),
            description: as_shown(i.description, MAX_TEXT),
            depends_on: i.depends_on,
            capabilities: caps,
            rollout,
            reversible: i.reversible,
            releases: i.releases.map(release_path).transpose()?,
            node_guard: i.node_guard,
        })
    }
}
