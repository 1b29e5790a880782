//! Exactly once: the way of a granted command from the plugin's `exec` to
//! its journaled result. The import (`host.rs`) checks the grant and hands
//! the command here; this module decides, in order:
//!
//! 1. **read-only**: in `check` and dry runs a mutating command is
//!    recorded as skipped, never run;
//! 2. **replay**: a result an interrupted attempt of the same step already
//!    journaled is handed back instead of running the command again;
//! 3. **intent**: a mutating command's `command-started` is on disk before
//!    it starts (no intent on disk, no command: a resume could not know);
//! 4. **transport**: it runs, through the recorder when it mutates, so its
//!    result survives a SIGKILL of uphost;
//! 5. **record**: its result is journaled, and the recorder's copy removed
//!    once the journal holds it.

use std::time::{Duration, Instant};

use super::bindings::uphost::plugin::node_exec::{ExecError, ExecOutput, ExecRequest};
use super::call::CallEnv;
use crate::capabilities::Access;
use crate::config::NodeSpec;
use crate::events::{CommandRecord, ErrorKind, Event};
use crate::transport::{CommandOutput, CommandSpec, TransportError};

/// What `exec` hands back to the plugin.
pub type ExecResult = Result<ExecOutput, ExecError>;

/// One granted command of a hook call.
struct Granted<'a> {
    env: &'a CallEnv,
    node: &'a NodeSpec,
    seq: u32,
    argv: Vec<String>,
    mutating: bool,
}

/// Run a command the grant allowed (as `access`) at most once across
/// crashes: see the module's documentation for the order of decisions.
pub async fn once(
    env: &CallEnv,
    node: &NodeSpec,
    access: Access,
    seq: u32,
    req: ExecRequest,
) -> ExecResult {
    let mut argv = Vec::with_capacity(req.args.len() + 1);
    argv.push(req.program.clone());
    argv.extend(req.args.iter().cloned());
    let cmd = Granted {
        env,
        node,
        seq,
        argv,
        mutating: access == Access::Mutating,
    };
    if env.read_only && cmd.mutating {
        return cmd.skip();
    }
    if let Some(rec) = env.sink.replay(&env.step, seq) {
        return cmd.replay(rec);
    }
    if cmd.mutating
        && let Err(e) = cmd.intent()
    {
        return Err(e);
    }
    let spec = cmd.spec(req);
    let t0 = Instant::now();
    let res = env.transport.exec(node, &spec).await;
    cmd.record(&spec, res, t0.elapsed())
}

impl Granted<'_> {
    fn finished(&self, result: CommandRecord) {
        self.env.sink.emit(Event::CommandFinished {
            step: self.env.step.clone(),
            seq: self.seq,
            node: self.node.name.clone(),
            argv: self.argv.clone(),
            result,
        });
    }

    /// Read-only mode: record it as skipped, do not run it.
    fn skip(self) -> ExecResult {
        self.finished(CommandRecord::skipped());
        Ok(ExecOutput {
            status: 0,
            stdout: Vec::new(),
            stderr: Vec::new(),
            truncated: false,
            skipped: true,
        })
    }

    /// Hand back what an interrupted attempt recorded.
    fn replay(self, rec: CommandRecord) -> ExecResult {
        tracing::debug!(step = %self.env.step, seq = self.seq, "replaying recorded command result");
        let out = from_record(&rec);
        self.finished(rec);
        out
    }

    /// Put the intent on disk; an error when it could not be.
    fn intent(&self) -> Result<(), ExecError> {
        self.env.sink.emit(Event::CommandStarted {
            step: self.env.step.clone(),
            seq: self.seq,
            node: self.node.name.clone(),
            argv: self.argv.clone(),
        });
        match self.env.sink.write_error() {
            None => Ok(()),
            Some(e) => Err(ExecError::SpawnFailed(format!(
                "not run: the run's journal cannot be written ({e}); free the space and `uphost resume`"
            ))),
        }
    }

    /// The command for the transport: the plugin's timeout within the
    /// operator's, capped output, and a record file when it mutates in a
    /// journaled run.
    fn spec(&self, req: ExecRequest) -> CommandSpec {
        let limits = &self.env.limits;
        let timeout = req
            .timeout_ms
            .map(|ms| Duration::from_millis(ms as u64))
            .unwrap_or(limits.exec_timeout)
            .min(limits.exec_timeout);
        CommandSpec {
            program: req.program,
            args: req.args,
            stdin: req.stdin,
            env: req.env.into_iter().map(|p| (p.key, p.value)).collect(),
            timeout,
            output_cap: limits.output_cap,
            record: match &self.env.record_dir {
                Some(dir) if self.mutating => Some(dir.join(
                    crate::transport::record::record_name(&self.env.step, self.seq),
                )),
                _ => None,
            },
            node_record: match &self.env.node_records {
                Some(dir) if self.mutating => Some(format!(
                    "{dir}/{}",
                    crate::transport::record::record_name(&self.env.step, self.seq)
                )),
                _ => None,
            },
        }
    }

    /// Journal what happened and turn it into the plugin's answer.
    fn record(
        self,
        spec: &CommandSpec,
        res: Result<CommandOutput, TransportError>,
        took: Duration,
    ) -> ExecResult {
        // The recorder found no room to record a result and did not run the
        // command: nothing to journal, and `resume` runs it.
        if let (Some(_), Ok(o)) = (&spec.record, &res)
            && crate::transport::record::not_run(o.status, &o.stderr)
        {
            let why = lossy(&o.stderr).trim_end().to_string();
            self.env.sink.no_room(why.clone());
            return Err(ExecError::SpawnFailed(format!(
                "{why} (on {}); free the space and `uphost resume`",
                self.node.name
            )));
        }
        let duration_ms = took.as_millis() as u64;
        let rec = match &res {
            Ok(o) => CommandRecord {
                truncated: o.truncated,
                ..CommandRecord::exited(
                    o.status,
                    lossy(&o.stdout),
                    lossy(&o.stderr),
                    self.mutating,
                    duration_ms,
                )
            },
            Err(e) => {
                CommandRecord::failed(e.to_string(), Some(e.kind()), self.mutating, duration_ms)
            }
        };
        self.finished(rec);
        // The journal has the result now, the recorder's copy is not needed;
        // unless the journal could not take it: then that copy is what
        // keeps `resume` from running the command again.
        if let Some(f) = &spec.record
            && self.env.sink.write_error().is_none()
        {
            let _ = std::fs::remove_file(f);
        }
        match res {
            Ok(o) => Ok(ExecOutput {
                status: o.status,
                stdout: o.stdout,
                stderr: o.stderr,
                truncated: o.truncated,
                skipped: false,
            }),
            Err(TransportError::Timeout { ms, .. }) => {
                Err(ExecError::Timeout(ms.min(u32::MAX as u64) as u32))
            }
            Err(e @ TransportError::Spawn { .. }) => Err(ExecError::SpawnFailed(e.to_string())),
            Err(e @ TransportError::Unreachable { .. }) => {
                Err(ExecError::Unreachable(e.to_string()))
            }
        }
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Turn a journaled result back into what `exec` returns.
fn from_record(rec: &CommandRecord) -> ExecResult {
    match (rec.status, rec.error_kind) {
        (Some(status), _) => Ok(ExecOutput {
            status,
            stdout: rec.stdout.clone().into_bytes(),
            stderr: rec.stderr.clone().into_bytes(),
            truncated: rec.truncated,
            skipped: rec.skipped,
        }),
        (None, Some(ErrorKind::Timeout)) => Err(ExecError::Timeout(rec.duration_ms as u32)),
        (None, Some(kind)) if kind.is_connection() => Err(ExecError::Unreachable(
            rec.error.clone().unwrap_or_default(),
        )),
        (None, _) => Err(ExecError::SpawnFailed(
            rec.error.clone().unwrap_or_default(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::capabilities::Grant;
    use crate::config::{Connection, Limits, NodeSet};
    use crate::events::{Phase, Sink, StepKey};
    use crate::journal::memory::MemorySink;
    use crate::runtime::call::CallIo;
    use crate::transport::{BoxFuture, ConnectionFailure, Transport};

    /// The journal as the pipeline sees it: events in memory, results an
    /// earlier attempt recorded, and a disk that may have failed.
    #[derive(Default)]
    struct TestSink {
        mem: MemorySink,
        recorded: Mutex<HashMap<(StepKey, u32), CommandRecord>>,
        broken: Option<String>,
    }

    impl Sink for TestSink {
        fn emit(&self, event: Event) {
            self.mem.emit(event)
        }
        fn replay(&self, step: &StepKey, seq: u32) -> Option<CommandRecord> {
            self.recorded.lock().unwrap().remove(&(step.clone(), seq))
        }
        fn state_get(&self, service: &str, key: &str) -> Option<String> {
            self.mem.state_get(service, key)
        }
        fn now_ms(&self) -> u64 {
            0
        }
        fn write_error(&self) -> Option<String> {
            self.broken.clone()
        }
    }

    /// Runs nothing: records each program with the events journaled by
    /// the time it ran.
    struct Spy {
        sink: Arc<TestSink>,
        ran: Mutex<Vec<(String, Vec<Event>)>>,
    }

    impl Transport for Spy {
        fn exec<'a>(
            &'a self,
            _node: &'a NodeSpec,
            cmd: &'a CommandSpec,
        ) -> BoxFuture<'a, Result<CommandOutput, TransportError>> {
            Box::pin(async move {
                self.ran
                    .lock()
                    .unwrap()
                    .push((cmd.program.clone(), self.sink.mem.events()));
                Ok(CommandOutput {
                    status: 3,
                    stdout: b"out".to_vec(),
                    stderr: Vec::new(),
                    truncated: false,
                })
            })
        }
    }

    fn node() -> NodeSpec {
        NodeSpec {
            name: "n1".into(),
            address: "n1".into(),
            port: None,
            user: None,
            key_file: None,
            connection: Connection::DryRun,
            become_user: None,
            roles: vec![],
            node_root: None,
        }
    }

    fn req(program: &str) -> ExecRequest {
        ExecRequest {
            node: "n1".into(),
            program: program.into(),
            args: vec!["a".into()],
            stdin: None,
            env: vec![],
            timeout_ms: None,
        }
    }

    /// One command through the pipeline in phase `phase`.
    fn once_in(
        sink: TestSink,
        phase: Phase,
        dry_run: bool,
        access: Access,
    ) -> (ExecResult, Arc<Spy>, Arc<TestSink>) {
        let sink = Arc::new(sink);
        let spy = Arc::new(Spy {
            sink: sink.clone(),
            ran: Mutex::default(),
        });
        let io = CallIo {
            transport: spy.clone(),
            sink: sink.clone(),
            record_dir: None,
            node_records: None,
            budget: Default::default(),
            reboot: Default::default(),
            deferred: Default::default(),
        };
        let env = CallEnv::new(
            StepKey::of("svc", phase),
            dry_run,
            Arc::new(Grant::default()),
            &crate::runtime::ServiceNodes::unlimited(Arc::new(NodeSet::new(vec![
                Arc::new(node()),
            ]))),
            Limits::default(),
            &io,
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let out = rt.block_on(once(&env, &node(), access, 0, req("prog")));
        (out, spy, sink)
    }

    #[test]
    fn check_and_dry_runs_record_mutating_commands_without_running_them() {
        for (phase, dry_run) in [(Phase::Check, false), (Phase::Upgrade, true)] {
            let (out, spy, sink) = once_in(TestSink::default(), phase, dry_run, Access::Mutating);
            assert!(out.unwrap().skipped);
            assert!(spy.ran.lock().unwrap().is_empty(), "{phase} ran it");
            assert!(matches!(
                sink.mem.events().as_slice(),
                [Event::CommandFinished { result, .. }] if result.skipped && result.mutating
            ));
            // A read-only command runs there.
            let (out, spy, _) = once_in(TestSink::default(), phase, dry_run, Access::ReadOnly);
            assert_eq!(out.unwrap().status, 3);
            assert_eq!(spy.ran.lock().unwrap().len(), 1);
        }
    }

    #[test]
    fn a_recorded_result_is_handed_back_instead_of_running_again() {
        let sink = TestSink::default();
        let rec = CommandRecord {
            status: Some(7),
            error: None,
            error_kind: None,
            stdout: "before".into(),
            stderr: String::new(),
            truncated: false,
            skipped: false,
            mutating: true,
            duration_ms: 1,
        };
        sink.recorded
            .lock()
            .unwrap()
            .insert((StepKey::of("svc", Phase::Upgrade), 0), rec);
        let (out, spy, sink) = once_in(sink, Phase::Upgrade, false, Access::Mutating);
        let out = out.unwrap();
        assert_eq!((out.status, out.stdout.as_slice()), (7, &b"before"[..]));
        assert!(spy.ran.lock().unwrap().is_empty());
        assert_eq!(sink.mem.events().len(), 1);
    }

    #[test]
    fn a_mutating_command_runs_only_once_its_intent_is_journaled() {
        let (out, spy, sink) =
            once_in(TestSink::default(), Phase::Upgrade, false, Access::Mutating);
        assert_eq!(out.unwrap().status, 3);
        let ran = spy.ran.lock().unwrap();
        assert!(matches!(
            ran[0].1.as_slice(),
            [Event::CommandStarted { seq: 0, .. }]
        ));
        assert!(matches!(
            sink.mem.events().last(),
            Some(Event::CommandFinished { result, .. }) if result.status == Some(3) && result.mutating
        ));
        // A read-only one needs no intent.
        let (_, spy, _) = once_in(TestSink::default(), Phase::Upgrade, false, Access::ReadOnly);
        assert!(spy.ran.lock().unwrap()[0].1.is_empty());
    }

    #[test]
    fn no_intent_on_disk_no_command() {
        let sink = TestSink {
            broken: Some("No space left on device".into()),
            ..TestSink::default()
        };
        let (out, spy, _) = once_in(sink, Phase::Upgrade, false, Access::Mutating);
        match out {
            Err(ExecError::SpawnFailed(m)) => {
                assert!(m.contains("not run") && m.contains("No space left"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        assert!(spy.ran.lock().unwrap().is_empty());
    }

    fn failed(kind: ErrorKind) -> CommandRecord {
        CommandRecord {
            status: None,
            error: Some(format!("ctl2 (10.0.0.12) {kind}")),
            error_kind: Some(kind),
            stdout: String::new(),
            stderr: String::new(),
            truncated: false,
            skipped: false,
            mutating: true,
            duration_ms: 7,
        }
    }

    /// A resumed run hands the plugin the same error the first one did.
    #[test]
    fn journaled_failures_replay_as_the_same_exec_error() {
        for k in ConnectionFailure::ALL {
            match from_record(&failed(k.kind())) {
                Err(ExecError::Unreachable(m)) => assert!(m.contains(k.kind().as_str())),
                other => panic!("{k:?}: {other:?}"),
            }
        }
        assert!(matches!(
            from_record(&failed(ErrorKind::Timeout)),
            Err(ExecError::Timeout(7))
        ));
        assert!(matches!(
            from_record(&failed(ErrorKind::SpawnFailed)),
            Err(ExecError::SpawnFailed(_))
        ));
    }
}
