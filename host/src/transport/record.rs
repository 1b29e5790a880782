//! The exec recorder: `uphost __exec-record FILE CAP -- PROGRAM ARGS…` runs
//! the command, and the moment it ends writes its status and (capped)
//! output to FILE (atomically, fsync'd), then replays the output on its own
//! stdout/stderr and exits with the command's status. If the uphost that
//! started it is killed meanwhile, the record survives, and `resume` takes
//! the result from it instead of running the command a second time.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::config::NodeSpec;
use crate::events::CommandRecord;
use crate::transport::{CommandSpec, TransportError};

/// The process that runs `program` for `cmd` on `node`: the program itself,
/// or, when the command's result must survive uphost (`cmd.record`), this
/// uphost's recorder wrapped around it. Shared by the local and ssh
/// transports (for ssh, `program` is the ssh client).
pub fn command(
    node: &NodeSpec,
    cmd: &CommandSpec,
    program: impl AsRef<std::ffi::OsStr>,
) -> Result<tokio::process::Command, TransportError> {
    let Some(file) = &cmd.record else {
        return Ok(tokio::process::Command::new(program));
    };
    let exe = std::env::current_exe().map_err(|e| TransportError::Spawn {
        node: node.name.clone(),
        program: cmd.program.clone(),
        detail: format!("cannot find the uphost executable for the recorder: {e}"),
    })?;
    let mut c = tokio::process::Command::new(exe);
    c.arg("__exec-record")
        .arg(file)
        .arg(cmd.output_cap.to_string())
        .arg("--")
        .arg(program);
    Ok(c)
}

/// What the recorder writes.
#[derive(Debug, Serialize, Deserialize)]
pub struct Recorded {
    /// Exit status.
    pub status: i32,
    /// Standard output (lossy UTF-8, capped).
    pub stdout: String,
    /// Standard error (lossy UTF-8, capped).
    pub stderr: String,
    /// Output was cut at the cap.
    pub truncated: bool,
    /// Wall time.
    pub duration_ms: u64,
}

impl Recorded {
    /// As a journal record.
    pub fn into_record(self) -> CommandRecord {
        CommandRecord {
            status: Some(self.status),
            error: None,
            error_kind: None,
            stdout: self.stdout,
            stderr: self.stderr,
            truncated: self.truncated,
            skipped: false,
            mutating: true,
            duration_ms: self.duration_ms,
        }
    }
}

fn capped(mut r: impl Read, cap: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    let mut truncated = false;
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 {
            break;
        }
        let room = cap.saturating_sub(kept.len());
        truncated |= n > room;
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    (kept, truncated)
}

/// The recorder's exit status when it did not run the command (with
/// [`NOT_RUN_MARKER`] opening its stderr).
pub const NOT_RUN_STATUS: i32 = 125;

/// How the recorder's stderr begins when it did not run the command.
pub const NOT_RUN_MARKER: &str = "uphost __exec-record: the command was not run:";

/// Bytes taken for the record before the command runs: enough for the
/// record without its output.
const RESERVE: u64 = 4096;

/// Whether a recorded command's output says the recorder did not run it
/// (so there is no result to journal: `resume` runs it).
pub fn not_run(status: i32, stderr: &[u8]) -> bool {
    status == NOT_RUN_STATUS && stderr.starts_with(NOT_RUN_MARKER.as_bytes())
}

/// Create `tmp` with [`RESERVE`] bytes allocated on disk.
fn reserve(tmp: &Path) -> std::io::Result<std::fs::File> {
    let f = std::fs::File::create(tmp)?;
    match rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, RESERVE) {
        Ok(()) => {}
        // A file system without fallocate: zeros take the blocks as well.
        Err(rustix::io::Errno::OPNOTSUPP) => {
            (&f).write_all(&[0u8; RESERVE as usize])?;
        }
        Err(e) => return Err(e.into()),
    }
    // No fsync: the blocks are the file system's once fallocate returns;
    // the record is made durable when it is written.
    Ok(f)
}

/// Write `rec` over the reserved file and make it durable. If the whole
/// record does not fit on the disk, the record without its output does
/// (it fits in the reserved bytes): the status is what `resume` needs.
fn write_record(f: &mut std::fs::File, rec: &Recorded) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom};
    let full = serde_json::to_vec(rec).unwrap_or_default();
    let body = match f.seek(SeekFrom::Start(0)).and_then(|_| f.write_all(&full)) {
        Ok(()) => full,
        Err(_) => {
            let short = Recorded {
                status: rec.status,
                stdout: String::new(),
                stderr: "[output not kept: no space left on the state directory's disk]".into(),
                truncated: true,
                duration_ms: rec.duration_ms,
            };
            let short = serde_json::to_vec(&short).unwrap_or_default();
            f.seek(SeekFrom::Start(0))?;
            f.write_all(&short)?;
            short
        }
    };
    f.set_len(body.len() as u64)?;
    f.sync_all()
}

/// The recorder's main; returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let (file, cap, argv) = match args {
        [file, cap, dash, argv @ ..] if dash == "--" && !argv.is_empty() => (
            Path::new(file),
            cap.parse::<usize>().unwrap_or(1 << 20),
            argv,
        ),
        _ => {
            errln!("usage: uphost __exec-record FILE CAP -- PROGRAM ARGS...");
            return 2;
        }
    };
    if let Some(dir) = file.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // Room for at least a short record, taken before the command runs: on a
    // full disk the command does not run at all, rather than run and leave
    // no trace for `resume` (which would run it a second time).
    let tmp = file.with_extension("tmp");
    let mut reserved = match reserve(&tmp) {
        Ok(f) => f,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            errln!(
                "{NOT_RUN_MARKER} no room to record its result in {}: {e}",
                tmp.display()
            );
            return NOT_RUN_STATUS;
        }
    };
    let _ = std::fs::write(file.with_extension("pid"), std::process::id().to_string());
    let t0 = std::time::Instant::now();
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            errln!("{}: {e}", argv[0]);
            return 127;
        }
    };
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    let t = std::thread::spawn(move || capped(err, cap));
    let (stdout, t1) = capped(out, cap);
    let (stderr, t2) = t.join().unwrap_or_default();
    let status = child.wait().map(super::process::exit_code).unwrap_or(127);
    let rec = Recorded {
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        truncated: t1 || t2,
        duration_ms: t0.elapsed().as_millis() as u64,
    };
    // ssh's own failures (255: unreachable, dropped) say nothing about
    // whether the remote command ran: no record, so resume runs it again.
    let ssh_failed = argv[0] == "ssh" && status == 255;
    if ssh_failed {
        let _ = std::fs::remove_file(&tmp);
    } else if write_record(&mut reserved, &rec).is_ok() {
        let _ = std::fs::rename(&tmp, file);
    }
    let _ = std::fs::remove_file(file.with_extension("pid"));
    let _ = std::io::stdout().write_all(&stdout);
    let _ = std::io::stderr().write_all(&stderr);
    status
}

/// The file a mutating command's result is recorded in.
pub fn record_name(step: &crate::events::StepKey, seq: u32) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!(
        "{}.{}.{}.{seq}.json",
        clean(&step.service),
        step.phase.as_str(),
        clean(step.node.as_deref().unwrap_or("_"))
    )
}
