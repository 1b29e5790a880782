//! A node's reboot, done by the host (`node-control.reboot`, and the
//! delayed reboots at the end of a run): never a granted shell command.
//!
//! Exactly once, like a mutating command (`exec.rs`), with the node's boot
//! identity in the intent:
//!
//! 1. **replay**: a reboot an earlier attempt of the step saw through is
//!    not done again;
//! 2. **in doubt**: a reboot whose intent is on disk but not its end (uphost
//!    died while the node was away) is waited for, never issued again: the
//!    boot identity it recorded says when the node is back;
//! 3. **intent**: the boot identity is read, and `command-started`
//!    (`uphost:reboot KIND boot-id=ID`) is on disk before the reboot
//!    command is sent;
//! 4. **wait**: the node's connection is dropped (its ssh master), and the
//!    host polls its boot identity until it answers with a new one, within
//!    the operator's timeout;
//! 5. **record**: `command-finished` says how long it took, or why the
//!    node did not come back.

use std::time::{Duration, Instant};

use crate::config::{NodeSpec, RebootSettings};
use crate::events::REBOOT;
use crate::events::{CommandRecord, Event, Sink, StepKey};
use crate::transport::{CommandSpec, Transport};

/// How a node reboots (the contract's `reboot-kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebootKind {
    /// Firmware and boot loader.
    Normal,
    /// Straight into the new kernel.
    Kexec,
}

impl RebootKind {
    /// `normal`, `kexec`.
    pub fn as_str(self) -> &'static str {
        match self {
            RebootKind::Normal => "normal",
            RebootKind::Kexec => "kexec",
        }
    }

    /// From [`as_str`](Self::as_str).
    pub fn parse(s: &str) -> Option<RebootKind> {
        match s {
            "normal" => Some(RebootKind::Normal),
            "kexec" => Some(RebootKind::Kexec),
            _ => None,
        }
    }
}

/// The journaled argv of a reboot: `uphost:reboot KIND boot-id=ID`.
pub fn argv(kind: RebootKind, boot_id: &str) -> Vec<String> {
    vec![
        REBOOT.to_string(),
        kind.as_str().to_string(),
        format!("boot-id={boot_id}"),
    ]
}

/// One reboot of one node, as a step's command `seq`.
pub struct Reboot<'a> {
    /// How commands reach the node.
    pub transport: &'a dyn Transport,
    /// Where its records go (and earlier attempts' come from).
    pub sink: &'a dyn Sink,
    /// The step it belongs to.
    pub step: &'a StepKey,
    /// Its place among the step's commands.
    pub seq: u32,
    /// The node.
    pub node: &'a NodeSpec,
    /// Normal or kexec.
    pub kind: RebootKind,
    /// The operator's settings.
    pub settings: &'a RebootSettings,
}

impl Reboot<'_> {
    fn finished(&self, argv: Vec<String>, result: CommandRecord) {
        self.sink.emit(Event::CommandFinished {
            step: self.step.clone(),
            seq: self.seq,
            node: self.node.name.clone(),
            argv,
            result,
        });
    }

    /// Check, verify or a dry run: recorded, not done.
    pub fn skip(&self) {
        self.finished(
            vec![REBOOT.to_string(), self.kind.as_str().to_string()],
            CommandRecord::skipped(),
        );
    }

    /// A scenario of `uphost test`: recorded as done.
    pub fn scripted(&self) {
        self.finished(
            vec![REBOOT.to_string(), self.kind.as_str().to_string()],
            CommandRecord::exited(0, "rebooted (scenario)".into(), String::new(), true, 0),
        );
    }

    /// Note the reboot for the end of the run instead of doing it now.
    pub fn defer(&self) {
        if self.sink.replay(self.step, self.seq).is_some() {
            return;
        }
        self.finished(
            vec![REBOOT.to_string(), self.kind.as_str().to_string()],
            CommandRecord::exited(
                0,
                crate::events::REBOOT_DEFERRED.to_string(),
                String::new(),
                true,
                0,
            ),
        );
    }

    /// The node's boot identity, or why it did not answer.
    async fn boot_id(&self) -> Result<String, String> {
        let spec = CommandSpec::operator(&self.settings.boot_id, Duration::from_secs(10));
        match self.transport.exec(self.node, &spec).await {
            Ok(o) if o.status == 0 => {
                let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
                if id.is_empty() || id.len() > 128 || !id.chars().all(|c| c.is_ascii_graphic()) {
                    Err(format!(
                        "`{}` printed no single boot identity",
                        self.settings.boot_id.join(" ")
                    ))
                } else {
                    Ok(id)
                }
            }
            Ok(o) => Err(format!(
                "`{}` exited {}: {}",
                self.settings.boot_id.join(" "),
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Reboot the node and wait until it is back: `Ok` with how long it
    /// took, `Err` with why not (the record says the same).
    pub async fn run(&self) -> Result<String, String> {
        let t0 = Instant::now();
        if let Some(rec) = self.sink.replay(self.step, self.seq) {
            let out = match rec.status {
                Some(0) => Ok(rec.stdout.clone()),
                _ => Err(rec.error.clone().unwrap_or_else(|| rec.stderr.clone())),
            };
            self.finished(argv(self.kind, "(replayed)")[..2].to_vec(), rec);
            return out;
        }
        let (before, argv) = match self.sink.reboot_in_doubt(self.step, self.seq) {
            Some(argv) => {
                let before = argv
                    .iter()
                    .find_map(|a| a.strip_prefix("boot-id="))
                    .unwrap_or_default()
                    .to_string();
                tracing::warn!(node = %self.node.name, "a reboot was issued before uphost stopped; waiting for the node, not rebooting it again");
                (before, argv)
            }
            None => {
                let before = self.boot_id().await.map_err(|e| {
                    let why = format!(
                        "not rebooted: the boot identity of {} could not be read before the reboot: {e}",
                        self.node.name
                    );
                    self.finished(
                        argv(self.kind, "")[..2].to_vec(),
                        CommandRecord::failed(why.clone(), None, true, 0),
                    );
                    why
                })?;
                let argv = argv(self.kind, &before);
                self.sink.emit(Event::CommandStarted {
                    step: self.step.clone(),
                    seq: self.seq,
                    node: self.node.name.clone(),
                    argv: argv.clone(),
                });
                if let Some(e) = self.sink.write_error() {
                    return Err(format!(
                        "not rebooted: the run's journal cannot be written ({e}); free the space and `uphost resume`"
                    ));
                }
                if let Err(why) = self.issue().await {
                    self.finished(
                        argv,
                        CommandRecord::failed(
                            why.clone(),
                            None,
                            true,
                            t0.elapsed().as_millis() as u64,
                        ),
                    );
                    return Err(why);
                }
                (before, argv)
            }
        };
        let res = self.wait_back(&before).await;
        let ms = t0.elapsed().as_millis() as u64;
        self.finished(
            argv,
            match &res {
                Ok(said) => CommandRecord::exited(0, said.clone(), String::new(), true, ms),
                Err(why) => CommandRecord::failed(why.clone(), None, true, ms),
            },
        );
        res
    }

    /// Send the reboot command. The connection may drop under it (the node
    /// is going down): that is success; a refusal is not.
    async fn issue(&self) -> Result<(), String> {
        let argv = match self.kind {
            RebootKind::Normal => &self.settings.command,
            RebootKind::Kexec => &self.settings.kexec_command,
        };
        let spec = CommandSpec::operator(argv, Duration::from_secs(60));
        let res = self.transport.exec(self.node, &spec).await;
        self.transport.reset(self.node);
        match res {
            Ok(o) if o.status == 0 || o.status == 255 => Ok(()),
            Ok(o) => Err(format!(
                "the reboot command `{}` on {} exited {}: {}",
                argv.join(" "),
                self.node.name,
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) if e.kind().is_connection() => Ok(()),
            Err(e) => Err(format!(
                "the reboot command `{}` on {} did not run: {e}",
                argv.join(" "),
                self.node.name
            )),
        }
    }

    /// Poll the boot identity until it changes.
    async fn wait_back(&self, before: &str) -> Result<String, String> {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(self.settings.timeout_s);
        let poll = Duration::from_millis(self.settings.poll_ms);
        let mut went_away = false;
        let mut last;
        loop {
            tokio::time::sleep(poll).await;
            match self.boot_id().await {
                Ok(id) if id != before => {
                    return Ok(format!(
                        "{} is back after {:.1} s (boot {} → {})",
                        self.node.name,
                        t0.elapsed().as_secs_f64(),
                        short(before),
                        short(&id)
                    ));
                }
                Ok(_) => last = "it still answers with the boot identity it had before".into(),
                Err(e) => {
                    if !went_away {
                        self.transport.reset(self.node);
                    }
                    went_away = true;
                    last = e;
                }
            }
            if t0.elapsed() >= timeout {
                let state = if went_away {
                    format!("it went away and has not come back (last: {last})")
                } else {
                    "it never went away: the reboot command did not reboot it".to_string()
                };
                return Err(format!(
                    "{} did not come back within {} s of its reboot: {state}. Look at its console; once it is up, `uphost resume` waits for it again (it does not reboot it twice)",
                    self.node.name, self.settings.timeout_s
                ));
            }
        }
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}
