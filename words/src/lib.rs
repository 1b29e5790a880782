//! # uphost-words
//!
//! The words of a command, as both sides of the contract read them: the
//! argument pattern language of capabilities ([`pattern`]), scripted
//! command responses for tests ([`script`]) and POSIX shell quoting
//! ([`shell`]). The host and the plugin SDK depend on this crate alone for
//! them, so the host does not pull in the guest SDK (nor `wit-bindgen`),
//! and the two sides cannot disagree about what a pattern means.

pub mod pattern;
pub mod script;
pub mod shell;
