//! The local transport: the command runs on this machine, in its own process
//! group (killed as a whole at the timeout), with an empty environment but
//! for PATH, LANG and what the grant allows. A node with `uphost_node_root`
//! gets `<root>/bin` first on PATH and `UPHOST_NODE_ROOT` (simulated nodes).

use std::process::Stdio;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::{BoxFuture, CommandOutput, CommandSpec, Transport, TransportError};
use crate::config::NodeSpec;

/// Runs commands here.
pub struct Local;

const BASE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Read a stream to its end, keeping at most `cap` bytes.
pub async fn read_capped<R: AsyncRead + Unpin>(mut r: R, cap: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                if n > room {
                    truncated = true;
                }
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    (kept, truncated)
}

/// Kills a process group when dropped (timeout, cancellation) unless disarmed.
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take()
            && let Some(pid) = rustix::process::Pid::from_raw(pgid)
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Exit status of a finished child (128+signal for a signal).
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Spawn a prepared command in its own process group, feed its stdin, read
/// its capped output, and wait for it up to the command's timeout (then the
/// whole group is killed). Shared by the local and ssh transports.
pub async fn run_child(
    mut c: tokio::process::Command,
    node: &NodeSpec,
    program: &str,
    cmd: &CommandSpec,
) -> Result<CommandOutput, TransportError> {
    let spawn_err = |e: std::io::Error| TransportError::Spawn {
        node: node.name.clone(),
        program: program.to_string(),
        detail: e.to_string(),
    };
    c.stdin(if cmd.stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0)
    .kill_on_drop(true);
    let mut child = c.spawn().map_err(spawn_err)?;
    let mut guard = GroupGuard(child.id().map(|p| p as i32));
    let stdin = child.stdin.take();
    let input = cmd.stdin.clone();
    let feed = async move {
        if let (Some(mut w), Some(bytes)) = (stdin, input) {
            let _ = w.write_all(&bytes).await;
            let _ = w.shutdown().await;
        }
    };
    let out = read_capped(child.stdout.take().expect("piped"), cmd.output_cap);
    let err = read_capped(child.stderr.take().expect("piped"), cmd.output_cap);
    let work = async {
        let ((), (stdout, t1), (stderr, t2)) = tokio::join!(feed, out, err);
        (child.wait().await, stdout, stderr, t1 || t2)
    };
    match tokio::time::timeout(cmd.timeout, work).await {
        Ok((status, stdout, stderr, truncated)) => {
            let status = status.map_err(spawn_err)?;
            // Finished: whatever it left running (a daemon) is not ours to kill.
            guard.0 = None;
            Ok(CommandOutput {
                status: exit_code(status),
                stdout,
                stderr,
                truncated,
            })
        }
        Err(_) => {
            drop(guard);
            Err(TransportError::Timeout {
                node: node.name.clone(),
                ms: cmd.timeout.as_millis() as u64,
            })
        }
    }
}

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
            let mut c = super::record::command(node, cmd, &program)?;
            c.args(&cmd.args)
                .env_clear()
                .env("LANG", "C")
                .env("PATH", &path);
            if let Some(root) = &root {
                c.env("UPHOST_NODE_ROOT", root)
                    .env("UPHOST_NODE", &node.name);
            }
            for (k, v) in &cmd.env {
                c.env(k, v);
            }
            run_child(c, node, &cmd.program, cmd).await
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
