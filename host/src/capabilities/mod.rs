//! Capabilities: what a plugin requests, what the operator granted
//! (`uphost.lock`), and the check every `exec` passes before anything runs.
//! Default deny: a command runs only if its node hosts the plugin's service
//! and a granted capability matches its program, every argument and every
//! environment variable.

pub mod lock;

use serde::{Deserialize, Serialize};
use uphost_sdk::pattern;

/// Read-only or mutating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Runs in check and dry-run.
    ReadOnly,
    /// Recorded, not executed, in check and dry-run.
    Mutating,
}

/// One command capability (requested or granted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandCap {
    /// Program pattern (alternatives with `|`, globs).
    pub program: String,
    /// Argument patterns.
    #[serde(default)]
    pub args: Vec<String>,
    /// Access.
    pub access: Access,
    /// Environment variable names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Why (from the plugin).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

impl CommandCap {
    /// `program arg…` as one line for people.
    pub fn display(&self) -> String {
        let mut s = format!("{} {}", self.access_tag(), self.program);
        for a in &self.args {
            s.push(' ');
            s.push_str(a);
        }
        if !self.env.is_empty() {
            s.push_str(&format!("  (env: {})", self.env.join(", ")));
        }
        s
    }

    fn access_tag(&self) -> &'static str {
        match self.access {
            Access::ReadOnly => "[read-only]",
            Access::Mutating => "[mutating] ",
        }
    }

    /// Is this request covered by `grant`?
    pub fn covered_by(&self, grant: &CommandCap) -> bool {
        pattern::element_covers(&grant.program, &self.program)
            && pattern::list_covers(&grant.args, &self.args)
            && self.env.iter().all(|e| grant.env.contains(e))
            && (grant.access == self.access || grant.access == Access::Mutating)
    }
}

/// The effective grant of one plugin: requested ∩ granted.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    /// Capabilities in force.
    pub commands: Vec<CommandCap>,
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Denial(pub String);

impl Grant {
    /// The effective grant: every request that the operator's grant covers.
    pub fn effective(requested: &[CommandCap], granted: &[CommandCap]) -> Grant {
        Grant {
            commands: requested
                .iter()
                .filter(|r| granted.iter().any(|g| r.covered_by(g)))
                .cloned()
                .collect(),
        }
    }

    /// Check a command; on success, the capability that allows it.
    pub fn check(
        &self,
        program: &str,
        args: &[String],
        env: &[(String, String)],
    ) -> Result<&CommandCap, Denial> {
        let same_program: Vec<&CommandCap> = self
            .commands
            .iter()
            .filter(|c| pattern::element_matches(&c.program, program))
            .collect();
        if same_program.is_empty() {
            return Err(Denial(format!("program `{program}` is not granted")));
        }
        let mut best: Option<(usize, &CommandCap)> = None;
        for cap in &same_program {
            match pattern::first_mismatch(&cap.args, args) {
                None => {
                    if let Some((i, p)) = climbs_out(&cap.args, args) {
                        return Err(Denial(format!(
                            "argument {} `{}` of `{program}` climbs out of the granted path pattern `{p}` with `..`",
                            i + 1,
                            args[i].escape_debug()
                        )));
                    }
                    if let Some((k, _)) = env.iter().find(|(k, _)| !cap.env.contains(k)) {
                        return Err(Denial(format!(
                            "environment variable `{k}` is not granted for `{program}`"
                        )));
                    }
                    return Ok(cap);
                }
                Some(i) => {
                    if best.is_none_or(|(b, _)| i > b) {
                        best = Some((i, cap));
                    }
                }
            }
        }
        let (i, cap) = best.expect("at least one capability for the program");
        Err(Denial(match (args.get(i), cap.args.get(i)) {
            (Some(a), Some(p)) => format!(
                "argument {} `{}` of `{program}` does not match the granted pattern `{p}`",
                i + 1,
                a.escape_debug()
            ),
            (Some(a), None) => format!(
                "argument {} `{}` of `{program}` is beyond the granted arguments",
                i + 1,
                a.escape_debug()
            ),
            (None, Some(p)) => format!(
                "`{program}` is missing argument {} (granted pattern `{p}`)",
                i + 1
            ),
            (None, None) => format!("`{program}` does not match its grant"),
        }))
    }
}

/// The first argument that a path pattern's wildcard matches only by way
/// of a `..` segment (`/var/tmp/*.disabled` against
/// `/var/tmp/../../etc/x.disabled`), with its pattern. A glob containing `/`
/// reads as "a file under here"; `..` would make it any file at all. A
/// pattern that spells `..` itself allows it.
fn climbs_out<'a>(patterns: &'a [String], args: &[String]) -> Option<(usize, &'a str)> {
    patterns
        .iter()
        .zip(args)
        .enumerate()
        .find(|(_, (p, a))| {
            p.as_str() != pattern::REST
                && p.contains('/')
                && (p.contains('*') || p.contains('?'))
                && !p.split('/').any(|seg| seg == "..")
                && a.split('/').any(|seg| seg == "..")
        })
        .map(|(i, (p, _))| (i, p.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_globs_do_not_match_dot_dot() {
        let g = Grant {
            commands: vec![
                cap(Access::Mutating, "touch", &["/*/clustercheck.disabled"]),
                cap(Access::Mutating, "mysql", &["-e", "source /*/galera-*.sql"]),
                cap(Access::ReadOnly, "cat", &["/etc/../etc/*.conf"]),
            ],
        };
        assert!(
            g.check("touch", &v(&["/var/tmp/clustercheck.disabled"]), &[])
                .is_ok()
        );
        let e = g
            .check(
                "touch",
                &v(&["/var/tmp/../../root/clustercheck.disabled"]),
                &[],
            )
            .unwrap_err();
        assert!(
            e.0.contains("argument 1 `/var/tmp/../../root/clustercheck.disabled` of `touch` climbs out of the granted path pattern `/*/clustercheck.disabled`"),
            "{}",
            e.0
        );
        assert!(
            g.check("mysql", &v(&["-e", "source /var/backup/galera-1.sql"]), &[])
                .is_ok()
        );
        assert!(
            g.check(
                "mysql",
                &v(&["-e", "source /var/../root/galera-1.sql"]),
                &[]
            )
            .is_err()
        );
        // `..` inside a name is not a segment; a pattern that spells `..` allows it.
        assert!(
            g.check("touch", &v(&["/var/x..y/clustercheck.disabled"]), &[])
                .is_ok()
        );
        assert!(g.check("cat", &v(&["/etc/../etc/my.conf"]), &[]).is_ok());
    }

    fn cap(access: Access, program: &str, args: &[&str]) -> CommandCap {
        CommandCap {
            program: program.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            access,
            env: vec![],
            reason: String::new(),
        }
    }

    fn v(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn default_deny_and_precise_reasons() {
        let g = Grant {
            commands: vec![cap(Access::Mutating, "systemctl", &["restart", "nova-*"])],
        };
        assert!(
            g.check("systemctl", &v(&["restart", "nova-api"]), &[])
                .is_ok()
        );
        let e = g
            .check("systemctl", &v(&["disable", "nova-api"]), &[])
            .unwrap_err();
        assert!(e.0.contains("argument 1 `disable`"), "{}", e.0);
        let e = g.check("rm", &v(&["-rf", "/"]), &[]).unwrap_err();
        assert!(e.0.contains("program `rm` is not granted"));
        let e = g
            .check("systemctl", &v(&["restart", "nova-api", "x"]), &[])
            .unwrap_err();
        assert!(e.0.contains("beyond"), "{}", e.0);
        let e = g
            .check(
                "systemctl",
                &v(&["restart", "nova-api"]),
                &[("LD_PRELOAD".into(), "x".into())],
            )
            .unwrap_err();
        assert!(e.0.contains("LD_PRELOAD"));
    }

    #[test]
    fn effective_grant_is_the_intersection() {
        let req = vec![
            cap(Access::Mutating, "systemctl", &["restart", "nova-api"]),
            cap(Access::Mutating, "rm", &["-rf", "*"]),
        ];
        let granted = vec![cap(Access::Mutating, "systemctl", &["restart", "nova-*"])];
        let g = Grant::effective(&req, &granted);
        assert_eq!(g.commands.len(), 1);
        assert_eq!(g.commands[0].program, "systemctl");
        // a read-only grant does not cover a mutating request
        let ro = vec![cap(Access::ReadOnly, "systemctl", &["restart", "nova-api"])];
        assert!(Grant::effective(&req[..1], &ro).commands.is_empty());
    }
}
