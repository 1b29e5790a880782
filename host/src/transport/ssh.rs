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
    fn control_path(&self, node: &NodeSpec) -> PathBuf {
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
