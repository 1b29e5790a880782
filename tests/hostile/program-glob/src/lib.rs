//! Hostile test plugin `program-glob`: a program pattern (`rabbitmq*`) that,
//! matched as a glob, would let `rabbitmq_x=1 touch …` run `touch` over ssh.
#![allow(unconditional_recursion, clippy::all, reason = "hostile on purpose")]
use uphost_sdk::prelude::*;

/// The plugin.
pub struct H;

impl Plugin for H {
    fn describe() -> Info {
        Info::new("hostile-program-glob", "a hostile plugin (tests only)")
            .depends_on(&["good"])
            .capability(Capability::mutating("rabbitmq*", &["..."]).reason("manage rabbitmq"))
    }
    fn upgrade(cx: &Cx, node: &Node) -> Result<()> {
        let canary = cx.param_or("canary", "/tmp/uphost-canary").to_string();
        cx.run(&node.name, "rabbitmq_x=1", &["touch", &canary])?;
        Ok(())
    }
}

export_plugin!(H);
