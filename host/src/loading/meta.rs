//! What `describe` returned, as host types (serializable for the lock file,
//! `plugins inspect` and JSON output).

use serde::Serialize;

use crate::capabilities::{Access, CommandCap};
use crate::execution::rollout::Rollout;
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
        let mut caps = Vec::new();
        for c in i.capabilities {
            if c.program.is_empty() || c.program.chars().any(|ch| ch.is_control()) {
                return Err("a capability has an empty or unprintable program".to_string());
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
                reason: c.reason,
            });
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
            version: i.version,
            description: i.description,
            depends_on: i.depends_on,
            capabilities: caps,
            rollout,
            reversible: i.reversible,
        })
    }
}
