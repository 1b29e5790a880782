//! uphost: upgrade a multi-service cluster with sandboxed WebAssembly
//! plugins. See ARCHITECTURE.md for the map of modules.

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
