//! The ssh transport: the system OpenSSH client, one multiplexed master
//! connection per node (`ControlMaster=auto`, `ControlPersist`), reused for
//! every command. Honours `~/.ssh/config` (or `-F FILE` from uphost.yaml)
//! and the inventory's `ansible_host`, `ansible_port`, `ansible_user`,
//! `ansible_ssh_private_key_file`. Host keys are checked strictly unless
//! the operator opts into accepting new ones.
//!
//! The remote side receives exactly the plugin's argv: each argument is
//! single-quoted for the remote POSIX shell (`'` becomes `'\''`), so spaces,
//! quotes, `$`, `;`, backquotes and newlines arrive as literal bytes.

use std::path::PathBuf;
use std::process::Stdio;

use super::process::run_child;
use super::{BoxFuture, CommandOutput, CommandSpec, ConnectionFailure, Transport, TransportError};
use crate::config::{NodeSpec, SshSettings};

/// The ssh transport.
pub struct Ssh {
    settings: SshSettings,
    control_dir: PathBuf,
}

pub use uphost_words::shell::quote;

/// The remote command line for an argv and environment.
pub fn remote_command(program: &str, args: &[String], env: &[(String, String)]) -> String {
    let mut parts = Vec::new();
    if !env.is_empty() {
        parts.push("env".to_string());
        for (k, v) in env {
            parts.push(quote(&format!("{k}={v}")));
        }
    }
    parts.push(quote(program));
    parts.extend(args.iter().map(|a| quote(a)));
    parts.join(" ")
}

/// How a wrapped command's stderr begins when the node's record says it
/// cannot be known whether it ran (see [`record_on_node`]).
pub const UNKNOWN_OUTCOME: &str = "uphost: outcome unknown:";

/// `line` wrapped so that its outcome is kept on the node, in `dir`, for an
/// uphost on another machine to learn if this one dies (a run on etcd):
///
/// - `mkdir dir` is the node's own "started" mark, atomic: the command
///   runs only from the wrapper that made it, never twice;
/// - the command runs detached (`setsid`), its stdin, stdout and stderr in
///   files there, so it finishes even when the ssh connection or this
///   uphost's machine goes away, then writes its status (`rc`, renamed
///   into place);
/// - the wrapper waits for it and hands its output and status back as the
///   command's own.
///
/// A wrapper that finds `dir` already made does not run anything: it waits
/// for that command's status. A command whose record says it started and
/// whose process is gone with no status is reported as of unknown outcome
/// ([`UNKNOWN_OUTCOME`], status 125).
pub fn record_on_node(dir: &str, line: &str) -> String {
    // The wrapper's own tools come from the system's default PATH
    // (`command -p`), never from what the node's PATH puts first: the
    // command line itself keeps the node's PATH.
    let job = format!(
        "{line} <\"$1/in\" >\"$1/out\" 2>\"$1/err\"; echo $? >\"$1/rc.tmp\"; command -p mv -f \"$1/rc.tmp\" \"$1/rc\""
    );
    let script = format!(
        r#"D=$1
command -p mkdir -p "${{D%/*}}" || exit 125
if command -p mkdir "$D" 2>/dev/null; then
  command -p cat >"$D/in"
  command -p setsid sh -c {job} uphost-record "$D" </dev/null >/dev/null 2>&1 &
  echo $! >"$D/pid"
  wait $!
else
  command -p cat >/dev/null
  n=0
  while [ ! -e "$D/rc" ]; do
    if [ -e "$D/pid" ]; then
      kill -0 "$(command -p cat "$D/pid")" 2>/dev/null || [ -e "$D/rc" ] || {{ echo "{UNKNOWN_OUTCOME} it started ($D) and its process is gone without a status" >&2; exit 125; }}
    else
      n=$((n+1)); [ $n -lt 200 ] || {{ echo "{UNKNOWN_OUTCOME} it was being started ($D) and never ran as far as the node knows" >&2; exit 125; }}
    fi
    command -p sleep 0.05
  done
fi
[ -e "$D/rc" ] || {{ echo "{UNKNOWN_OUTCOME} it ended without a status ($D)" >&2; exit 125; }}
command -p cat "$D/out"; command -p cat "$D/err" >&2; exit "$(command -p cat "$D/rc")""#,
        job = quote(&job)
    );
    format!("sh -c {} uphost-record {}", quote(&script), quote(dir))
}

/// What a node's record says of a command (see [`record_on_node`]).
#[derive(Debug, Clone, PartialEq)]
pub enum NodeRecord {
    /// No record: the command never started there.
    Absent,
    /// It is still running.
    Running,
    /// It finished with this status.
    Done(i32),
    /// It started and its process is gone with no status (the node
    /// rebooted, say): whether it did its work cannot be known.
    Lost,
}

/// The read-only command that tells a [`NodeRecord`]: prints `absent`,
/// `running`, `lost` or `done STATUS`.
pub fn node_record_probe(dir: &str) -> Vec<String> {
    let script = r#"D=$1
if [ -e "$D/rc" ]; then echo "done $(command -p cat "$D/rc")"
elif [ ! -d "$D" ]; then echo absent
elif [ -e "$D/pid" ] && kill -0 "$(command -p cat "$D/pid")" 2>/dev/null; then echo running
elif [ -e "$D/rc" ]; then echo "done $(command -p cat "$D/rc")"
else echo lost
fi"#;
    vec![
        "sh".into(),
        "-c".into(),
        script.into(),
        "uphost-record".into(),
        dir.into(),
    ]
}

/// The read-only command that prints file `name` of the record in `dir`.
pub fn node_record_file(dir: &str, name: &str) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        "command -p cat \"$1/$2\"".into(),
        "uphost-record".into(),
        dir.into(),
        name.into(),
    ]
}

/// Read the probe's answer.
pub fn parse_node_record(stdout: &str) -> Option<NodeRecord> {
    let s = stdout.trim();
    match s {
        "absent" => Some(NodeRecord::Absent),
        "running" => Some(NodeRecord::Running),
        "lost" => Some(NodeRecord::Lost),
        _ => s
            .strip_prefix("done ")
            .and_then(|n| n.trim().parse().ok())
            .map(NodeRecord::Done),
    }
}

impl Ssh {
    /// A transport whose control sockets live in a private directory
    /// (short path: unix sockets have a length limit), removed on drop.
    pub fn new(settings: SshSettings) -> std::io::Result<Ssh> {
        // Made new (mkdir fails on an existing name), mode 0700 from the
        // start: a directory or a link someone else put at that name in the
        // shared temporary directory is never used; another name is tried.
        use std::os::unix::fs::DirBuilderExt;
        let mut attempt = 0u32;
        loop {
            let nonce = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            let control_dir = std::env::temp_dir().join(format!(
                "uphost-ssh-{}-{:08x}",
                std::process::id(),
                (nonce as u32) ^ attempt.wrapping_mul(0x9e37_79b9)
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&control_dir) {
                Ok(()) => {
                    return Ok(Ssh {
                        settings,
                        control_dir,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 16 => {
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The node's own master socket: named by the inventory node and every
    /// connection setting it has (not OpenSSH's `%C`, which hashes only
    /// host, port and user: two nodes that differ only in key would share
    /// one master, and one node's commands would run under the other's
    /// key).
    pub fn control_path(&self, node: &NodeSpec) -> PathBuf {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [
            node.name.as_str(),
            node.address.as_str(),
            &node.port.map(|p| p.to_string()).unwrap_or_default(),
            node.user.as_deref().unwrap_or(""),
            &node
                .key_file
                .as_ref()
                .map(|k| k.display().to_string())
                .unwrap_or_default(),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        // 16 bytes of hash: short enough for a unix socket path.
        self.control_dir.join(hex::encode(&h.finalize()[..16]))
    }

    fn base_args(&self, node: &NodeSpec) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        if let Some(cfg) = &self.settings.config {
            a.push("-F".into());
            a.push(cfg.display().to_string());
        }
        let strict = if self.settings.accept_new_host_keys {
            "accept-new"
        } else {
            "yes"
        };
        for o in [
            "ControlMaster=auto".to_string(),
            format!("ControlPath={}", self.control_path(node).display()),
            "ControlPersist=120".to_string(),
            "BatchMode=yes".to_string(),
            format!("StrictHostKeyChecking={strict}"),
            format!(
                "ConnectTimeout={}",
                self.settings.connect_timeout_s.unwrap_or(10)
            ),
            "ServerAliveInterval=5".to_string(),
            "ServerAliveCountMax=2".to_string(),
            "LogLevel=ERROR".to_string(),
        ] {
            a.push("-o".into());
            a.push(o);
        }
        if let Some(p) = node.port {
            a.push("-p".into());
            a.push(p.to_string());
        }
        if let Some(u) = &node.user {
            a.push("-l".into());
            a.push(u.clone());
        }
        if let Some(k) = &node.key_file {
            a.push("-i".into());
            a.push(k.display().to_string());
        }
        a
    }

    /// Is the node's master connection up (`ssh -O check`), twice 200 ms
    /// apart (a master whose connection just broke may not have exited)?
    async fn master_alive(&self, node: &NodeSpec) -> bool {
        for attempt in 0..2 {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            let mut args = self.base_args(node);
            args.extend(["-O".into(), "check".into(), node.address.clone()]);
            let alive = tokio::process::Command::new("ssh")
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await
                .is_ok_and(|s| s.success());
            if !alive {
                return false;
            }
        }
        true
    }

    /// A failed connection, from what the client printed (exit status 255).
    /// Nothing printed: the connection ended under a running command.
    fn classify(node: &NodeSpec, stderr: &str) -> TransportError {
        let s = stderr.to_ascii_lowercase();
        let address = match node.port {
            Some(p) => format!("{}:{p}", node.address),
            None => node.address.clone(),
        };
        let kind = if s.contains("permission denied") || s.contains("too many authentication") {
            ConnectionFailure::AuthenticationFailed
        } else if s.contains("host key verification failed")
            || s.contains("remote host identification has changed")
        {
            ConnectionFailure::HostKeyRejected
        } else if s.trim().is_empty()
            || s.contains("closed by remote host")
            || s.contains("connection reset")
            || s.contains("broken pipe")
            || s.contains("timeout, server")
            || s.contains("mux_client")
        {
            ConnectionFailure::Dropped
        } else {
            ConnectionFailure::Unreachable
        };
        TransportError::Unreachable {
            node: node.name.clone(),
            address,
            kind,
            detail: stderr.trim().to_string(),
        }
    }

    /// Make the node's master connection exit and remove its socket: the
    /// node is going away (a reboot), and the next command connects anew.
    pub fn reset(&self, node: &NodeSpec) {
        let path = self.control_path(node);
        let _ = std::process::Command::new("ssh")
            .args(["-o", &format!("ControlPath={}", path.display())])
            .args(["-O", "exit", "x"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_file(&path);
    }

    /// Close the master connections and remove their directory (also done
    /// on drop; the binary calls it before it exits, which skips drops).
    pub fn close(&self) {
        // Masters exit on their own (ControlPersist) once their socket is
        // gone; ask them to exit now, and remove the directory so none can
        // be reused.
        if let Ok(rd) = std::fs::read_dir(&self.control_dir) {
            for e in rd.flatten() {
                let _ = std::process::Command::new("ssh")
                    .args([
                        "-o",
                        &format!("ControlPath={}", e.path().display()),
                        "-O",
                        "exit",
                        "x",
                    ])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.control_dir);
    }
}

impl Drop for Ssh {
    fn drop(&mut self) {
        self.close();
    }
}

/// Is this path a usable ssh client?
pub fn available() -> bool {
    std::process::Command::new("ssh")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

impl Transport for Ssh {
    fn exec<'a>(
        &'a self,
        node: &'a NodeSpec,
        cmd: &'a CommandSpec,
    ) -> BoxFuture<'a, Result<CommandOutput, TransportError>> {
        Box::pin(async move {
            let mut args = self.base_args(node);
            args.push(node.address.clone());
            args.push("--".into());
            let line = match &node.become_user {
                None => remote_command(&cmd.program, &cmd.args, &cmd.env),
                Some(user) => {
                    super::become_::check_program(node, &cmd.program)?;
                    let prefix: Vec<String> = super::become_::sudo_prefix(user)
                        .iter()
                        .map(|w| quote(w))
                        .collect();
                    // sudo resets the environment: `env` (always there,
                    // even when empty) sets the granted variables after it.
                    let mut argv = vec![cmd.program.clone()];
                    argv.extend(cmd.args.iter().cloned());
                    let env: Vec<String> =
                        cmd.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    let mut rest: Vec<String> = env;
                    rest.extend(argv);
                    format!("{} {}", prefix.join(" "), remote_command("env", &rest, &[]))
                }
            };
            let line = match &cmd.node_record {
                Some(dir) => record_on_node(dir, &line),
                None => line,
            };
            args.push(line);
            let mut c = super::record::command(node, cmd, "ssh")?;
            c.args(&args);
            let out = run_child(c, node, "ssh", cmd).await?;
            if out.status == 255 {
                let stderr = String::from_utf8_lossy(&out.stderr);
                // The client reports every failure to connect; silence
                // means the command's own status was 255, or the master
                // connection died under it (then the master is gone too).
                if stderr.trim().is_empty() && self.master_alive(node).await {
                    return Ok(out);
                }
                return Err(Self::classify(node, &stderr));
            }
            if let Some(e) = super::become_::refused(node, &out) {
                return Err(e);
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run a remote line as the node's shell would (here: this machine's).
    fn sh(line: &str) -> std::process::Output {
        std::process::Command::new("sh")
            .args(["-c", line])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// The node-side record: the command runs once, its output and status
    /// come back as its own, a second wrapper for the same record runs
    /// nothing and answers the same; the probe tells every state.
    #[test]
    fn a_recorded_command_runs_once_and_tells_its_outcome() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run1/keystone.upgrade.ctl1.3.json");
        let dir = dir.to_str().unwrap();
        let count = tmp.path().join("count");
        let line = remote_command(
            "sh",
            &[
                "-c".into(),
                format!(
                    "echo x >> {}; echo out; echo err >&2; exit 3",
                    count.display()
                ),
            ],
            &[],
        );
        let probe = |d: &str| {
            let argv = node_record_probe(d);
            let o = std::process::Command::new(&argv[0])
                .args(&argv[1..])
                .output()
                .unwrap();
            parse_node_record(&String::from_utf8_lossy(&o.stdout))
        };
        assert_eq!(probe(dir), Some(NodeRecord::Absent));
        for _ in 0..2 {
            let o = sh(&record_on_node(dir, &line));
            assert_eq!(o.status.code(), Some(3));
            assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n");
            assert_eq!(String::from_utf8_lossy(&o.stderr), "err\n");
        }
        assert_eq!(std::fs::read_to_string(&count).unwrap(), "x\n", "ran twice");
        assert_eq!(probe(dir), Some(NodeRecord::Done(3)));
        // Started, its process gone, no status: unknowable, never re-run.
        let lost = tmp.path().join("run1/lost");
        std::fs::create_dir_all(&lost).unwrap();
        let dead = std::process::Command::new("true").spawn().unwrap();
        let pid = dead.id();
        let _ = dead.wait_with_output();
        std::fs::write(lost.join("pid"), pid.to_string()).unwrap();
        let lost = lost.to_str().unwrap();
        assert_eq!(probe(lost), Some(NodeRecord::Lost));
        let o = sh(&record_on_node(lost, &line));
        assert_eq!(o.status.code(), Some(125));
        assert!(
            String::from_utf8_lossy(&o.stderr).starts_with(UNKNOWN_OUTCOME),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(std::fs::read_to_string(&count).unwrap(), "x\n");
        // Still running: the probe says so.
        let slow = tmp.path().join("run1/slow");
        let slow = slow.to_str().unwrap();
        let child = std::process::Command::new("sh")
            .args(["-c", &record_on_node(slow, "sleep 1")])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let t = std::time::Instant::now();
        while !std::path::Path::new(slow).join("pid").exists() {
            assert!(t.elapsed().as_secs() < 10);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(probe(slow), Some(NodeRecord::Running));
        assert!(child.wait_with_output().unwrap().status.success());
        assert_eq!(probe(slow), Some(NodeRecord::Done(0)));
    }

    /// What OpenSSH 9 prints for each failure (exit status 255).
    #[test]
    fn client_messages_are_classified() {
        let node = NodeSpec {
            name: "ctl2".into(),
            address: "10.0.0.12".into(),
            port: Some(2222),
            user: None,
            key_file: None,
            connection: crate::config::Connection::Ssh,
            become_user: None,
            roles: vec![],
            node_root: None,
        };
        for (stderr, want) in [
            (
                "ssh: connect to host 10.0.0.12 port 2222: Connection refused",
                ConnectionFailure::Unreachable,
            ),
            (
                "ssh: connect to host 10.0.0.12 port 2222: No route to host",
                ConnectionFailure::Unreachable,
            ),
            (
                "ssh: Could not resolve hostname ctl2.example: Name or service not known",
                ConnectionFailure::Unreachable,
            ),
            (
                "root@10.0.0.12: Permission denied (publickey).",
                ConnectionFailure::AuthenticationFailed,
            ),
            (
                "Host key verification failed.",
                ConnectionFailure::HostKeyRejected,
            ),
            (
                "Connection to 10.0.0.12 closed by remote host.",
                ConnectionFailure::Dropped,
            ),
            (
                "client_loop: send disconnect: Broken pipe",
                ConnectionFailure::Dropped,
            ),
            ("", ConnectionFailure::Dropped),
        ] {
            let e = Ssh::classify(&node, stderr);
            match &e {
                TransportError::Unreachable { kind, .. } => assert_eq!(*kind, want, "{stderr}"),
                other => panic!("{other:?}"),
            }
            let text = e.to_string();
            assert!(text.starts_with("ctl2 (10.0.0.12:2222) "), "{text}");
            assert!(text.trim_end().ends_with(stderr), "{text}");
            assert_eq!(e.kind(), want.kind());
        }
    }

    #[test]
    fn quoting_is_literal_for_a_posix_shell() {
        // The words themselves: uphost-words' tests.
        assert_eq!(
            remote_command("echo", &["a b".into()], &[("K".into(), "v w".into())]),
            "env 'K=v w' echo 'a b'"
        );
    }
}
