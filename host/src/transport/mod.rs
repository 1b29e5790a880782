//! Transports: how a command reaches a node. One trait; `local` runs on this
//! machine, `dry-run` runs nothing, `ssh` uses the system OpenSSH client.

#[path = "become_.rs"]
pub mod become_;
pub mod dryrun;
pub mod local;
pub mod process;
pub mod record;
pub mod ssh;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::config::{Connection, NodeSpec};
use crate::events::ErrorKind;

/// A command for a node: an argv, never a shell line.
#[derive(Debug, Clone)]
pub struct CommandSpec {
    /// Program (argv[0]).
    pub program: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Standard input.
    pub stdin: Option<Vec<u8>>,
    /// Environment (only what the grant allows; the transport adds PATH).
    pub env: Vec<(String, String)>,
    /// Kill after this long.
    pub timeout: Duration,
    /// Keep at most this many bytes of stdout and of stderr.
    pub output_cap: usize,
    /// For a mutating command: where a wrapper process records the result
    /// as soon as the command ends, so that a run killed while it ran can
    /// learn on resume whether it completed (exactly-once across SIGKILL).
    pub record: Option<std::path::PathBuf>,
    /// For a mutating command over ssh in a run another machine may take
    /// over: the directory on the node where the command's status and
    /// output are kept, so that the other machine can learn its outcome
    /// there (`ssh::record_on_node`).
    pub node_record: Option<String>,
}

impl CommandSpec {
    /// `argv` as a command of the operator's own (a probe, a gate): no
    /// stdin, no environment of its own, no recorder, 64 KiB of output kept.
    pub fn operator(argv: &[String], timeout: Duration) -> CommandSpec {
        CommandSpec {
            program: argv[0].clone(),
            args: argv[1..].to_vec(),
            stdin: None,
            env: Vec::new(),
            timeout,
            output_cap: 64 << 10,
            record: None,
            node_record: None,
        }
    }
}

/// What a finished command produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommandOutput {
    /// Exit status (128+signal when killed by a signal).
    pub status: i32,
    /// Standard output, capped.
    pub stdout: Vec<u8>,
    /// Standard error, capped.
    pub stderr: Vec<u8>,
    /// Something was cut at the cap.
    pub truncated: bool,
}

/// Why a command produced no exit status.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum TransportError {
    /// Killed at its timeout.
    #[error("timed out after {ms} ms on {node}; the command's process group was killed")]
    Timeout {
        /// Node.
        node: String,
        /// Timeout.
        ms: u64,
    },
    /// Could not start.
    #[error("could not start `{program}` on {node}: {detail}")]
    Spawn {
        /// Node.
        node: String,
        /// Program.
        program: String,
        /// Why.
        detail: String,
    },
    /// The node could not be reached, or the connection to it failed.
    #[error("{node} ({address}) {kind}: {detail}")]
    Unreachable {
        /// Node.
        node: String,
        /// Address.
        address: String,
        /// Which failure.
        kind: ConnectionFailure,
        /// What the client said.
        detail: String,
    },
}

impl TransportError {
    /// The journal's `error_kind` for this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            TransportError::Timeout { .. } => ErrorKind::Timeout,
            TransportError::Spawn { .. } => ErrorKind::SpawnFailed,
            TransportError::Unreachable { kind, .. } => kind.kind(),
        }
    }
}

/// How reaching a node failed: each asks the operator for something else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionFailure {
    /// No connection (refused, no route, name lookup, connect timeout).
    Unreachable,
    /// Connected, but the node refused the credentials.
    AuthenticationFailed,
    /// The node's host key is unknown or changed (strict checking).
    HostKeyRejected,
    /// The connection broke while a command was running: whether the
    /// command finished on the node is unknown.
    Dropped,
}

impl ConnectionFailure {
    /// Every kind.
    pub const ALL: [ConnectionFailure; 4] = [
        ConnectionFailure::Unreachable,
        ConnectionFailure::AuthenticationFailed,
        ConnectionFailure::HostKeyRejected,
        ConnectionFailure::Dropped,
    ];

    /// The journal's `error_kind` for it.
    pub fn kind(self) -> ErrorKind {
        match self {
            ConnectionFailure::Unreachable => ErrorKind::Unreachable,
            ConnectionFailure::AuthenticationFailed => ErrorKind::AuthenticationFailed,
            ConnectionFailure::HostKeyRejected => ErrorKind::HostKeyRejected,
            ConnectionFailure::Dropped => ErrorKind::ConnectionDropped,
        }
    }
}

impl std::fmt::Display for ConnectionFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConnectionFailure::Unreachable => "is unreachable",
            ConnectionFailure::AuthenticationFailed => {
                "refused authentication (check ansible_user and ansible_ssh_private_key_file)"
            }
            ConnectionFailure::HostKeyRejected => {
                "failed host key verification (add its key to known_hosts, or set ssh.accept_new_host_keys for new hosts)"
            }
            ConnectionFailure::Dropped => {
                "dropped the connection during the command (it may or may not have finished there)"
            }
        })
    }
}

/// A boxed future (transports are used as trait objects).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How commands reach nodes.
pub trait Transport: Send + Sync {
    /// Run one command on one node.
    fn exec<'a>(
        &'a self,
        node: &'a NodeSpec,
        cmd: &'a CommandSpec,
    ) -> BoxFuture<'a, Result<CommandOutput, TransportError>>;

    /// Forget the node's connection (its ssh master): it is rebooting, and
    /// the next command must connect anew.
    fn reset(&self, _node: &NodeSpec) {}
}

/// Picks the transport for each node from its `ansible_connection`.
pub struct Transports {
    local: local::Local,
    dry: dryrun::DryRun,
    ssh_settings: crate::config::SshSettings,
    ssh: std::sync::OnceLock<Result<ssh::Ssh, String>>,
}

impl Transports {
    /// The standard set; the ssh transport starts on first use.
    pub fn new(ssh_settings: crate::config::SshSettings) -> Self {
        Transports {
            local: local::Local,
            dry: dryrun::DryRun,
            ssh_settings,
            ssh: std::sync::OnceLock::new(),
        }
    }
}

impl Transports {
    /// Close the ssh master connections, if any were opened (call before
    /// the process exits).
    pub fn close(&self) {
        if let Some(Ok(ssh)) = self.ssh.get() {
            ssh.close();
        }
    }
}

impl Transport for Transports {
    fn exec<'a>(
        &'a self,
        node: &'a NodeSpec,
        cmd: &'a CommandSpec,
    ) -> BoxFuture<'a, Result<CommandOutput, TransportError>> {
        match node.connection {
            Connection::Local => self.local.exec(node, cmd),
            Connection::DryRun => self.dry.exec(node, cmd),
            Connection::Ssh => {
                let ssh = self.ssh.get_or_init(|| {
                    ssh::Ssh::new(self.ssh_settings.clone())
                        .map_err(|e| format!("cannot create the ssh control directory: {e}"))
                });
                match ssh {
                    Ok(t) => t.exec(node, cmd),
                    Err(e) => {
                        let detail = e.clone();
                        Box::pin(async move {
                            Err(TransportError::Spawn {
                                node: node.name.clone(),
                                program: "ssh".into(),
                                detail,
                            })
                        })
                    }
                }
            }
        }
    }

    fn reset(&self, node: &NodeSpec) {
        if let (Connection::Ssh, Some(Ok(ssh))) = (node.connection, self.ssh.get()) {
            ssh.reset(node);
        }
    }
}
