//! Child processes as both process transports (local and ssh) and the
//! exec recorder run them: their own process group, fed stdin, capped
//! output, a timeout that kills the whole group, and the exit status as
//! one number.

use std::process::Stdio;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::{CommandOutput, CommandSpec, TransportError};
use crate::config::NodeSpec;

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
