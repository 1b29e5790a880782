//! become: a node whose inventory sets `ansible_become` runs every command
//! through `sudo -n -u USER --` (Ansible's default become method). `-n`:
//! sudo never prompts, so a command that would need a password fails at
//! once with a message saying what to configure, instead of hanging.

use super::{CommandOutput, TransportError};
use crate::config::NodeSpec;

/// The argv prefix that runs a command as `user`.
pub fn sudo_prefix(user: &str) -> [&str; 5] {
    ["sudo", "-n", "-u", user, "--"]
}

/// A program that `env` (which sets the command's environment under sudo)
/// would take for an assignment cannot be run through become.
pub fn check_program(node: &NodeSpec, program: &str) -> Result<(), TransportError> {
    if node.become_user.is_some() && program.contains('=') {
        return Err(TransportError::Spawn {
            node: node.name.clone(),
            program: program.to_string(),
            detail: "a program name with `=` cannot run through become (sudo … env would read it as a variable)".into(),
        });
    }
    Ok(())
}

/// What sudo prints when it refuses to run without a password or a grant.
const REFUSALS: &[&str] = &[
    "a password is required",
    "a terminal is required",
    "is not in the sudoers file",
    "is not allowed to execute",
    "may not run sudo",
    "unknown user",
];

/// sudo's refusal, as the error it is (not the command's exit status).
pub fn refused(node: &NodeSpec, out: &CommandOutput) -> Option<TransportError> {
    let user = node.become_user.as_ref()?;
    if out.status != 1 {
        return None;
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("sudo: ") && REFUSALS.iter().any(|r| l.contains(r)))?;
    let login = node.user.as_deref().unwrap_or("the connecting user");
    Some(TransportError::Spawn {
        node: node.name.clone(),
        program: "sudo".into(),
        detail: format!(
            "become {user} was refused ({}): uphost runs `sudo -n` and never types a password; allow {login} to run the upgrade's commands as {user} without a password (NOPASSWD in sudoers) on {}, or set ansible_become: false for it",
            crate::untrusted::line_max(line.trim(), 200),
            node.name
        ),
    })
}
