//! One run at a time: an exclusive `flock` on `<state>/run.lock`, whose
//! content names the holder. The kernel drops the lock when its holder dies,
//! so a lock left by a killed run is detected as stale and taken over.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Who holds the lock.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Holder {
    /// Process id.
    pub pid: u32,
    /// Host name.
    pub host: String,
    /// RFC 3339 start time.
    pub since: String,
    /// What it is doing.
    pub command: String,
}

impl Holder {
    /// This process, doing `command`, from now.
    pub fn me(command: &str) -> Holder {
        Holder {
            pid: std::process::id(),
            host: hostname(),
            since: crate::events::now_rfc3339(),
            command: command.to_string(),
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} on {} since {} ({})",
            self.pid, self.host, self.since, self.command
        )
    }
}

/// Lock failures.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Someone else is running.
    #[error(
        "another uphost is running against this state directory: {holder}; wait for it to finish (lock file {path})"
    )]
    Busy {
        /// The holder.
        holder: Holder,
        /// Lock file.
        path: PathBuf,
    },
    /// Someone else holds the lock and has not written its name yet (it
    /// is starting this very moment).
    #[error(
        "another uphost is starting against this state directory (it holds the run lock and has not written its name yet); wait for it, then see `uphost status` (lock file {path})"
    )]
    Starting {
        /// Lock file.
        path: PathBuf,
    },
    /// I/O.
    #[error("cannot use lock file {path}: {source}")]
    Io {
        /// Lock file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A held run lock (released on drop, or by the kernel if we die).
pub struct RunLock {
    file: File,
    /// A holder that died holding the lock (its name was still in the
    /// file), to tell the operator.
    pub took_over: Option<Holder>,
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // A clean release leaves no name behind: a name found by the next
        // holder means its owner died with the lock.
        let _ = self.file.set_len(0);
    }
}

/// The machine's host name.
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// Take the lock or say who has it.
pub fn acquire(state_dir: &Path, command: &str) -> Result<RunLock, LockError> {
    let path = state_dir.join("run.lock");
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(state_dir).map_err(io)?;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    let mut prev = String::new();
    let _ = file.read_to_string(&mut prev);
    let prev: Option<Holder> = serde_json::from_str(prev.trim()).ok();
    if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        // The holder writes its name right after it takes the lock: the
        // name read before may be a dead holder's, or not written yet.
        // Read it again, for up to half a second.
        let holder = (0..50).find_map(|_| {
            let named = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_json::from_str::<Holder>(t.trim()).ok());
            if named.is_none() {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            named
        });
        return Err(match holder {
            Some(holder) => LockError::Busy { holder, path },
            None => LockError::Starting { path },
        });
    }
    let me = Holder::me(command);
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    file.write_all(
        serde_json::to_string(&me)
            .expect("holder serializes")
            .as_bytes(),
    )
    .map_err(io)?;
    file.sync_data().map_err(io)?;
    Ok(RunLock {
        file,
        took_over: prev,
    })
}

/// The holder of the lock if it is a live uphost on this machine (read
/// from the lock file, checked against /proc; the lock itself is not
/// touched, so a run starting meanwhile is never refused because of us).
pub fn live_holder(state_dir: &Path) -> Option<Holder> {
    let text = std::fs::read_to_string(state_dir.join("run.lock")).ok()?;
    let h: Holder = serde_json::from_str(text.trim()).ok()?;
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", h.pid)).ok()?;
    let is_uphost = cmdline
        .split(|b| *b == 0)
        .next()
        .is_some_and(|argv0| argv0.ends_with(b"uphost"));
    (h.host == hostname() && is_uphost).then_some(h)
}

/// The uphost running `run_id` now: the lock's live holder, when `run_id`
/// is the current run (a run that is not current is not running).
pub fn running(state_dir: &Path, run_id: &str) -> Option<Holder> {
    (super::current_run(state_dir).ok()? == run_id)
        .then(|| live_holder(state_dir))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A holder that has the lock and has not written its name yet is
    /// "starting", never "pid 0 on ?".
    #[test]
    fn a_holder_without_a_name_yet_is_starting() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(dir.path().join("run.lock")).unwrap();
        rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
        match acquire(dir.path(), "run") {
            Err(e @ LockError::Starting { .. }) => {
                assert!(e.to_string().contains("is starting"), "{e}")
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("two holders"),
        }
    }

    #[test]
    fn second_holder_is_refused_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = acquire(dir.path(), "run").unwrap();
        let e = acquire(dir.path(), "run").err().unwrap();
        let s = e.to_string();
        assert!(s.contains(&format!("pid {}", std::process::id())), "{s}");
        drop(a);
        // Released cleanly: nobody to report.
        let b = acquire(dir.path(), "resume").unwrap();
        assert!(b.took_over.is_none());
        drop(b);
        // A holder that died with the lock left its name.
        std::fs::write(
            dir.path().join("run.lock"),
            r#"{"pid":4242,"host":"h","since":"t","command":"run"}"#,
        )
        .unwrap();
        let c = acquire(dir.path(), "resume").unwrap();
        assert_eq!(c.took_over.as_ref().map(|h| h.pid), Some(4242));
    }
}
