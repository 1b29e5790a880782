//! Capabilities: what a plugin requests, what the operator granted
//! (`uphost.lock`), and the check every `exec` passes before anything runs.
//! Default deny: a command runs only if its node hosts the plugin's service
//! and a granted capability matches its program, every argument and every
//! environment variable.

pub mod lock;
pub mod signing;

use serde::{Deserialize, Serialize};
use uphost_words::pattern;

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
    /// Program: a plain name looked up on the node's PATH, or an absolute
    /// normalised path; matched literally (see [`check_program`]).
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
    /// `program arg…` as one line for people: every part from the plugin
    /// with its control characters made visible.
    pub fn display(&self) -> String {
        use crate::untrusted::line;
        let mut s = format!("{} {}", self.access_tag(), line(&self.program));
        for a in &self.args {
            s.push(' ');
            s.push_str(&line(a));
        }
        if !self.env.is_empty() {
            s.push_str(&format!("  (env: {})", line(&self.env.join(", "))));
        }
        s
    }

    /// What an operator should think twice about before granting this:
    /// a shell or interpreter as the program (it runs whatever its
    /// arguments say), `...` (any further arguments), a bare `*` argument,
    /// recursive removal, a mutating capability whose reason claims it
    /// only reads, text that hides control characters.
    pub fn dangers(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        let base = self.program.rsplit('/').next().unwrap_or(&self.program);
        let interpreter = INTERPRETERS.contains(&base)
            || ["python", "perl", "ruby", "php", "lua", "node"]
                .iter()
                .any(|p| base.starts_with(p));
        if interpreter {
            out.push("the program is a shell or interpreter: it runs whatever its arguments say");
        }
        if self.args.iter().any(|a| a == pattern::REST) {
            out.push("`...` allows any further arguments");
        }
        if self.args.iter().any(|a| a == "*") {
            out.push("a bare `*` argument allows any value there");
        }
        let recursive = |a: &String| {
            let a = a.as_str();
            a == "--recursive"
                || (a.starts_with('-')
                    && !a.starts_with("--")
                    && (a.contains('r') || a.contains('R')))
        };
        if base == "rm" && self.args.iter().any(recursive) {
            out.push("recursive removal");
        }
        let r = self.reason.to_ascii_lowercase();
        if self.access == Access::Mutating
            && [
                "read-only",
                "read only",
                "readonly",
                "only reads",
                "does not change",
                "no changes",
            ]
            .iter()
            .any(|w| r.contains(w))
        {
            out.push("mutating, although its reason says it only reads");
        }
        // Raw, or as the loader keeps a reason: made visible (`\u{1b}`).
        let hidden = |s: &str| crate::untrusted::line_max(s, usize::MAX) != s || s.contains("\\u{");
        if hidden(&self.reason) || hidden(&self.program) || self.args.iter().any(|a| hidden(a)) {
            out.push("its text holds control characters (shown escaped)");
        }
        out
    }

    fn access_tag(&self) -> &'static str {
        match self.access {
            Access::ReadOnly => "[read-only]",
            Access::Mutating => "[mutating] ",
        }
    }

    /// Is this request covered by `grant`? (The program is the same word:
    /// programs are never patterns.)
    pub fn covered_by(&self, grant: &CommandCap) -> bool {
        grant.program == self.program
            && pattern::list_covers(&grant.args, &self.args)
            && self.env.iter().all(|e| grant.env.contains(e))
            && (grant.access == self.access || grant.access == Access::Mutating)
    }
}

/// Is `program` one a capability may name? A plain name (letters, digits,
/// `._+-`, not starting with `-` or `.`), or an absolute path of such
/// names with no `.` or `..` segment and no empty one. Never a pattern:
/// `*`, `?`, `|` and `[` are refused, and so are `=` (a word `NAME=value`
/// is an assignment to a shell and to `env`), whitespace, quotes, shell
/// metacharacters and control characters. The reason, when not.
pub fn check_program(program: &str) -> Result<(), String> {
    let shown = program.escape_debug();
    if program.is_empty() {
        return Err("the program is empty".to_string());
    }
    if program.len() > 256 {
        return Err(format!(
            "the program is {} bytes long (at most 256)",
            program.len()
        ));
    }
    let word_ok = |w: &str| {
        !w.is_empty()
            && !w.starts_with('-')
            && !w.starts_with('.')
            && w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
    };
    if let Some(path) = program.strip_prefix('/') {
        if let Some(bad) = path.split('/').find(|seg| !word_ok(seg)) {
            return Err(format!(
                "program `{shown}` is not a normalised absolute path (segment `{}`): give it as /dir/name without `.`, `..`, `//` or characters other than letters, digits and `._+-`",
                bad.escape_debug()
            ));
        }
        return Ok(());
    }
    if !word_ok(program) {
        return Err(format!(
            "program `{shown}` is neither a plain name nor an absolute path: a program is matched literally (no patterns, no `|`: list each program as its own capability) and may hold only letters, digits and `._+-` (no `=`, spaces, quotes or shell syntax)"
        ));
    }
    Ok(())
}

/// Is `name` an environment variable name (`[A-Za-z_][A-Za-z0-9_]*`)?
pub fn check_env_name(name: &str) -> Result<(), String> {
    let mut b = name.bytes();
    let ok = b
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
        && name.len() <= 128;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "environment variable name `{}` is not a name: use [A-Za-z_][A-Za-z0-9_]* (at most 128 bytes)",
            name.escape_debug()
        ))
    }
}

/// Programs that run what their arguments say (shells, interpreters and
/// the like): granting one is granting everything its arguments allow.
const INTERPRETERS: &[&str] = &[
    "sh",
    "bash",
    "dash",
    "zsh",
    "ksh",
    "mksh",
    "csh",
    "tcsh",
    "fish",
    "busybox",
    "env",
    "sudo",
    "su",
    "doas",
    "xargs",
    "find",
    "awk",
    "gawk",
    "mawk",
    "nawk",
    "sed",
    "tclsh",
    "expect",
    "nsenter",
    "chroot",
    "unshare",
    "setsid",
    "nohup",
    "timeout",
    "watch",
    "ssh",
    "script",
    "socat",
    "nc",
    "ncat",
    "docker",
    "podman",
    "kubectl",
    "crictl",
    "systemd-run",
];

/// The capability a plugin's `plugin-info.reboots` stands for: the host's
/// own reboot operation (`node-control.reboot`), approved like a command.
/// A plugin cannot request it as a command: `:` is not allowed in a
/// program name ([`check_program`]).
pub use crate::events::REBOOT;

/// The capability for [`REBOOT`], as the approval screen shows it.
pub fn reboot_capability() -> CommandCap {
    CommandCap {
        program: REBOOT.to_string(),
        args: vec!["normal|kexec".to_string()],
        access: Access::Mutating,
        env: Vec::new(),
        reason: "reboot its nodes through the host (normal or kexec); the host waits for each to come back"
            .to_string(),
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
            .filter(|c| c.program == program)
            .collect();
        let program = program.escape_debug().to_string();
        if same_program.is_empty() {
            return Err(Denial(format!("program `{program}` is not granted")));
        }
        if let Some((k, _)) = env.iter().find(|(k, _)| check_env_name(k).is_err()) {
            return Err(Denial(format!(
                "environment variable name `{}` is not a name ([A-Za-z_][A-Za-z0-9_]*)",
                k.escape_debug()
            )));
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
    fn programs_are_names_or_clean_paths_never_patterns() {
        for ok in [
            "systemctl",
            "rabbitmq-plugins",
            "galera_new_cluster",
            "/usr/bin/mysql",
            "/opt/x.y/bin/z+1",
        ] {
            assert_eq!(check_program(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "rabbitmq_x=1",
            "rabbitmq*",
            "a|b",
            "*",
            "sys?emctl",
            "/opt/tools/../../usr/bin/touch",
            "/opt//x",
            "/opt/./x",
            "/opt/x/",
            "-x",
            "..",
            "a b",
            "a;b",
            "a\nb",
            "a\u{1b}b",
            "$(x)",
            "relative/path",
            "x'y",
        ] {
            assert!(check_program(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_env_name("LD_PRELOAD").is_ok() && check_env_name("_x1").is_ok());
        for bad in ["", "LD_PRELOAD=", "1X", "A-B", "A B", "A\u{0}"] {
            assert!(check_env_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_program_is_matched_literally() {
        let g = Grant {
            commands: vec![cap(Access::Mutating, "rabbitmqctl", &["..."])],
        };
        assert!(g.check("rabbitmqctl", &v(&["x"]), &[]).is_ok());
        for other in ["rabbitmq_x=1", "rabbitmqctl ", "/usr/sbin/rabbitmqctl", "*"] {
            assert!(g.check(other, &v(&["x"]), &[]).is_err(), "{other}");
        }
        // A pattern-looking program in a grant matches only itself.
        let g = Grant {
            commands: vec![cap(Access::Mutating, "/opt/tools/*", &["..."])],
        };
        assert!(
            g.check("/opt/tools/../../usr/bin/touch", &v(&["x"]), &[])
                .is_err()
        );
        let e = g
            .check("/opt/tools/*", &v(&["x"]), &[("A=B".into(), "c".into())])
            .unwrap_err();
        assert!(e.0.contains("is not a name"), "{}", e.0);
    }

    #[test]
    fn dangers_are_named() {
        let c = |p: &str, args: &[&str], access, reason: &str| CommandCap {
            reason: reason.into(),
            ..cap(access, p, args)
        };
        assert!(c("sh", &["-c", "*"], Access::Mutating, "").dangers().len() >= 2);
        assert!(
            !c("rm", &["-rf", "/var/tmp/x"], Access::Mutating, "")
                .dangers()
                .is_empty()
        );
        assert!(
            !c(
                "systemctl",
                &["restart", "x"],
                Access::Mutating,
                "read-only status"
            )
            .dangers()
            .is_empty()
        );
        assert!(
            c(
                "systemctl",
                &["restart", "nova-*"],
                Access::Mutating,
                "restart nova"
            )
            .dangers()
            .is_empty()
        );
        assert!(
            !c("true", &[], Access::ReadOnly, "a\u{1b}[2K")
                .dangers()
                .is_empty()
        );
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
