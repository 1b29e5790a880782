//! The dry-run transport: nothing is executed; every command "succeeds" with
//! empty output. For planning rehearsals and scale benchmarks.

use super::{BoxFuture, CommandOutput, CommandSpec, Transport, TransportError};
use crate::config::NodeSpec;

/// Runs nothing.
pub struct DryRun;

impl Transport for DryRun {
    fn exec<'a>(
        &'a self,
        _node: &'a NodeSpec,
        _cmd: &'a CommandSpec,
    ) -> BoxFuture<'a, Result<CommandOutput, TransportError>> {
        Box::pin(async { Ok(CommandOutput::default()) })
    }
}
