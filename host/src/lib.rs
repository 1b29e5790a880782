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
