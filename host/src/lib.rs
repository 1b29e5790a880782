//! uphost: upgrade a multi-service cluster with sandboxed WebAssembly
//! plugins. See ARCHITECTURE.md for the map of modules.

// Console output that never panics. `println!` panics when stdout is a
// closed pipe (`uphost plan | head -1`), and `eprintln!` when stderr is
// (`uphost run 2>&1 | head`): in the middle of a run that would abandon the
// steps in flight. These write and ignore a failed write, so the run goes on
// and ends as it would have; its journal and report are unaffected.

/// `println!` that ignores a closed stdout.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// `eprintln!` that ignores a closed stderr.
macro_rules! errln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

/// `eprint!` that ignores a closed stderr.
macro_rules! err {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($t)*);
    }};
}

pub mod capabilities;
pub mod cli;
pub mod config;
pub mod distribution;
pub mod events;
pub mod execution;
pub mod harness;
pub mod journal;
pub mod loading;
pub mod planning;
pub mod report;
pub mod runtime;
pub mod terminal;
pub mod transport;
pub mod untrusted;

/// Every error a command can end with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Configuration.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// Loading a plugin.
    #[error(transparent)]
    Load(#[from] loading::LoadError),
    /// Planning.
    #[error(transparent)]
    Plan(#[from] planning::PlanError),
    /// The engine.
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    /// The lock file.
    #[error(transparent)]
    Lock(#[from] capabilities::lock::LockError),
    /// Plugins not approved as they stand.
    #[error("{message}")]
    Unapproved {
        /// The lock file.
        lock: std::path::PathBuf,
        /// Every problem and the fix.
        message: String,
    },
    /// The journal.
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    /// Another run holds the lock.
    #[error(transparent)]
    RunLock(#[from] journal::lock::LockError),
    /// Pulling or pushing a plugin.
    #[error(transparent)]
    Dist(#[from] distribution::DistError),
    /// The run's state on etcd.
    #[error(transparent)]
    Store(#[from] journal::etcd::StoreError),
    /// Bad command-line usage.
    #[error("{0}")]
    Usage(String),
    /// The run did not complete (already reported).
    #[error("{0}")]
    Failed(String),
    /// I/O on a named path.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What kind of failure an [`Error`] is: it decides the exit code and how
/// the operator goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The command line asks for something that cannot be done as asked.
    Usage,
    /// An input file (configuration, inventory, plugin, lock, journal) is
    /// wrong: fix the file named.
    BadInput,
    /// Refused by policy: plugins not approved as they stand, another run
    /// holding the lock.
    Refused,
    /// The work was tried and did not succeed (I/O, a run that could not
    /// start or finish).
    Failed,
    /// Stopped by the operator; resumable.
    Interrupted,
}

impl ErrorKind {
    /// The process exit code for it.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Usage | ErrorKind::BadInput | ErrorKind::Refused => cli::exit::INPUT,
            ErrorKind::Failed => cli::exit::FAILED,
            ErrorKind::Interrupted => cli::exit::INTERRUPTED,
        }
    }
}

impl Error {
    /// Its kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Usage(_) => ErrorKind::Usage,
            Error::Config(_)
            | Error::Load(_)
            | Error::Plan(_)
            | Error::Runtime(_)
            | Error::Lock(_) => ErrorKind::BadInput,
            Error::Unapproved { .. } | Error::RunLock(_) => ErrorKind::Refused,
            Error::Dist(distribution::DistError::Reference(_)) => ErrorKind::Usage,
            Error::Dist(
                distribution::DistError::Digest { .. }
                | distribution::DistError::Signature { .. }
                | distribution::DistError::NotWasm { .. },
            ) => ErrorKind::Refused,
            Error::Dist(_) => ErrorKind::Failed,
            Error::Store(journal::etcd::StoreError::Busy { .. }) => ErrorKind::Refused,
            Error::Store(journal::etcd::StoreError::Damaged { .. }) => ErrorKind::BadInput,
            Error::Store(_) => ErrorKind::Failed,
            Error::Journal(_) | Error::Failed(_) | Error::Io { .. } => ErrorKind::Failed,
        }
    }

    /// What to do about it, where the message itself does not say.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Journal(journal::JournalError::Corrupt { .. }) => Some(
                "the journal is the record of what ran: restore it from a backup, or give the run up with `uphost run --abandon-unfinished`".to_string(),
            ),
            Error::Io { path, .. } => Some(format!(
                "check that {} exists and that uphost may read and write it",
                path.display()
            )),
            _ => None,
        }
    }
}
