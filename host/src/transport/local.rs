//! The local transport: the command runs on this machine, in its own process
//! group (killed as a whole at the timeout), with an empty environment but
//! for PATH, LANG and what the grant allows. A node with `uphost_node_root`
//! gets `<root>/bin` first on PATH and `UPHOST_NODE_ROOT` (simulated nodes).

use super::process::run_child;
use super::{BoxFuture, CommandOutput, CommandSpec, Transport, TransportError};
use crate::config::NodeSpec;

/// Runs commands here.
pub struct Local;

const BASE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `program` found on `path` the way execvp would, or unchanged when it is
/// not there (the spawn then fails with "No such file or directory").
///
/// Spawning a bare name with a PATH of the child's own makes the standard
/// library fall back from posix_spawn (vfork: the parent's page tables are
/// not copied) to fork + exec, which costs more the bigger uphost is (the
/// engine's reservations); with a path it takes posix_spawn.
fn resolve(program: &str, path: &str) -> std::path::PathBuf {
    if program.contains('/') {
        return program.into();
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| std::path::Path::new(d).join(program))
        .find(|p| p.is_file() && rustix::fs::access(p, rustix::fs::Access::EXEC_OK).is_ok())
        .unwrap_or_else(|| program.into())
}

impl Transport for Local {
    fn exec<'a>(
        &'a self,
        node: &'a NodeSpec,
        cmd: &'a CommandSpec,
    ) -> BoxFuture<'a, Result<CommandOutput, TransportError>> {
        Box::pin(async move {
            let root = node
                .node_root
                .as_ref()
                .map(|r| std::path::absolute(r).unwrap_or(r.clone()));
            let path = match &root {
                Some(root) => format!("{}:{BASE_PATH}", root.join("bin").display()),
                None => BASE_PATH.to_string(),
            };
            let path = cmd
                .env
                .iter()
                .rev()
                .find(|(k, _)| k == "PATH")
                .map_or(path, |(_, v)| v.clone());
            let program = resolve(&cmd.program, &path);
            let mut env: Vec<(String, String)> =
                vec![("LANG".into(), "C".into()), ("PATH".into(), path.clone())];
            if let Some(root) = &root {
                env.push(("UPHOST_NODE_ROOT".into(), root.display().to_string()));
                env.push(("UPHOST_NODE".into(), node.name.clone()));
            }
            env.extend(cmd.env.iter().cloned());
            let Some(user) = &node.become_user else {
                let mut c = super::record::command(node, cmd, &program)?;
                c.args(&cmd.args).env_clear().envs(env);
                return run_child(c, node, &cmd.program, cmd).await;
            };
            // become: sudo resets the environment, so `env` sets it for
            // the command (which is resolved on the node's PATH first).
            super::become_::check_program(node, &cmd.program)?;
            let prefix = super::become_::sudo_prefix(user);
            let mut c = super::record::command(node, cmd, resolve(prefix[0], BASE_PATH))?;
            c.args(&prefix[1..])
                .arg("env")
                .args(env.iter().map(|(k, v)| format!("{k}={v}")))
                .arg(&program)
                .args(&cmd.args)
                .env_clear()
                .env("LANG", "C")
                .env("PATH", BASE_PATH);
            let out = run_child(c, node, &cmd.program, cmd).await?;
            match super::become_::refused(node, &out) {
                Some(e) => Err(e),
                None => Ok(out),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_resolve_on_the_childs_path_node_bin_first() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let shim = bin.join("true");
        std::fs::write(&shim, "#!/bin/sh\n").unwrap();
        let path = format!("{}:{BASE_PATH}", bin.display());
        // Not executable yet: skipped, as execvp would.
        assert_ne!(resolve("true", &path), shim);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(resolve("true", &path), shim);
        assert!(resolve("true", BASE_PATH).ends_with("bin/true"));
        assert_eq!(
            resolve("no-such-program-here", &path),
            std::path::PathBuf::from("no-such-program-here")
        );
        assert_eq!(
            resolve("./local", &path),
            std::path::PathBuf::from("./local")
        );
    }
}
