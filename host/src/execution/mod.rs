//! Execution: sessions (config + plugins + plan), the run orchestrator,
//! rollouts, confirmations.

pub mod confirm;
pub mod memsink;
pub mod rollout;
pub mod run;
pub mod session;
