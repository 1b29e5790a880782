//! Execution: sessions (config + plugins + plan), a run's lifecycle
//! (start, resume, refusals, what the operator is told), the orchestrator,
//! confirmations, and looking at runs (status, runs).

pub mod confirm;
pub mod inspect;
pub mod lifecycle;
pub mod probes;
pub mod run;
pub mod session;
pub mod takeover;
pub mod tally;
