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
    /// It has an ok-to-stop gate (`ok-to-stop(node)` before each node's
    /// `upgrade`, retried).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ok_to_stop: bool,
    /// The probes it declares, sampled on each of its nodes beside a run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<DeclaredProbe>,
}

/// A probe a plugin declares (validated: its command is covered by one of
/// the plugin's own read-only capabilities).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeclaredProbe {
    /// Its name (`a-z`, `0-9`, `-`).
    pub name: String,
    /// A TCP port of each node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_port: Option<u16>,
    /// Or a read-only command on each node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Text the command's output must contain (as shown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
    /// How often.
    pub interval_ms: u32,
}

impl DeclaredProbe {
    /// One line for the operator: `NAME: tcp PORT every N ms` or the command.
    pub fn display(&self) -> String {
        let what = match (&self.tcp_port, &self.command) {
            (Some(p), _) => format!("tcp connect to port {p} of each node"),
            (None, Some(argv)) => format!(
                "`{}`{} on each node",
                crate::untrusted::line_max(&argv.join(" "), 300),
                self.expect
                    .as_ref()
                    .map(|e| format!(" printing `{e}`"))
                    .unwrap_or_default()
            ),
            (None, None) => String::new(),
        };
        format!("{}: {what}, every {} ms", self.name, self.interval_ms)
    }
}

/// Most probes a plugin may declare.
pub const MAX_PROBES: usize = 16;

fn declared_probes(
    probes: Vec<types::Probe>,
    caps: &[CommandCap],
) -> Result<Vec<DeclaredProbe>, String> {
    if probes.len() > MAX_PROBES {
        return Err(format!(
            "it declares {} probes; at most {MAX_PROBES}",
            probes.len()
        ));
    }
    let grant = crate::capabilities::Grant {
        commands: caps.to_vec(),
    };
    let mut out: Vec<DeclaredProbe> = Vec::new();
    for p in probes {
        let shown = p.name.escape_debug().to_string();
        if p.name.is_empty()
            || p.name.len() > 32
            || !p
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(format!(
                "probe name `{shown}` is invalid: use 1-32 of a-z, 0-9, `-`"
            ));
        }
        if out.iter().any(|o| o.name == p.name) {
            return Err(format!("probe `{shown}` is declared twice"));
        }
        if !(100..=60_000).contains(&p.interval_ms) {
            return Err(format!(
                "probe `{shown}`: interval-ms {} is outside 100..=60000",
                p.interval_ms
            ));
        }
        let (tcp_port, command, expect) = match p.check {
            types::ProbeCheck::Tcp(0) => {
                return Err(format!("probe `{shown}`: port 0"));
            }
            types::ProbeCheck::Tcp(port) => (Some(port), None, None),
            types::ProbeCheck::Command(c) => {
                let Some((program, args)) = c.argv.split_first() else {
                    return Err(format!("probe `{shown}`: its command is empty"));
                };
                let covered = grant
                    .check(program, args, &[])
                    .is_ok_and(|cap| cap.access == Access::ReadOnly);
                if !covered {
                    return Err(format!(
                        "probe `{shown}`: its command `{}` is not covered by a read-only capability the plugin requests (a probe may only read)",
                        crate::untrusted::line_max(&c.argv.join(" "), 300)
                    ));
                }
                if c.expect.as_ref().is_some_and(|e| e.len() > 256) {
                    return Err(format!("probe `{shown}`: expect is longer than 256 bytes"));
                }
                (None, Some(c.argv), c.expect.map(|e| as_shown(e, 256)))
            }
        };
        out.push(DeclaredProbe {
            name: p.name,
            tcp_port,
            command,
            expect,
            interval_ms: p.interval_ms,
        });
    }
    Ok(out)
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
        let probes = declared_probes(i.probes, &caps)?;
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
            ok_to_stop: i.ok_to_stop,
            probes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps() -> Vec<CommandCap> {
        vec![
            CommandCap {
                program: "systemctl".into(),
                args: vec!["is-active".into(), "haproxy".into()],
                access: Access::ReadOnly,
                env: vec![],
                reason: String::new(),
            },
            CommandCap {
                program: "systemctl".into(),
                args: vec!["restart".into(), "haproxy".into()],
                access: Access::Mutating,
                env: vec![],
                reason: String::new(),
            },
        ]
    }

    fn command(name: &str, argv: &[&str]) -> types::Probe {
        types::Probe {
            name: name.into(),
            check: types::ProbeCheck::Command(types::ProbeCommand {
                argv: argv.iter().map(|s| s.to_string()).collect(),
                expect: Some("active".into()),
            }),
            interval_ms: 500,
        }
    }

    #[test]
    fn a_declared_probe_may_only_read_what_the_plugin_requests() {
        let ok = declared_probes(
            vec![
                command("active", &["systemctl", "is-active", "haproxy"]),
                types::Probe {
                    name: "stats".into(),
                    check: types::ProbeCheck::Tcp(8404),
                    interval_ms: 1000,
                },
            ],
            &caps(),
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        assert!(
            ok[0]
                .display()
                .contains("`systemctl is-active haproxy` printing `active`")
        );
        let mutating = declared_probes(
            vec![command("x", &["systemctl", "restart", "haproxy"])],
            &caps(),
        );
        assert!(
            mutating
                .unwrap_err()
                .contains("not covered by a read-only capability")
        );
        let unrequested = declared_probes(vec![command("x", &["cat", "/etc/shadow"])], &caps());
        assert!(unrequested.unwrap_err().contains("not covered"));
        let bad_name = declared_probes(
            vec![command("Bad Name", &["systemctl", "is-active", "haproxy"])],
            &caps(),
        );
        assert!(bad_name.unwrap_err().contains("is invalid"));
        let twice = declared_probes(
            vec![
                command("a", &["systemctl", "is-active", "haproxy"]),
                command("a", &["systemctl", "is-active", "haproxy"]),
            ],
            &caps(),
        );
        assert!(twice.unwrap_err().contains("declared twice"));
        let mut fast = command("a", &["systemctl", "is-active", "haproxy"]);
        fast.interval_ms = 5;
        assert!(
            declared_probes(vec![fast], &caps())
                .unwrap_err()
                .contains("interval-ms 5")
        );
    }
}
