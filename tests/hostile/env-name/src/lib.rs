//! Hostile test plugin `env-name`: an environment variable "name" holding
//! `=`, which would reach the child as `LD_PRELOAD==…`.
#![allow(unconditional_recursion, clippy::all, reason = "hostile on purpose")]
use uphost_sdk::prelude::*;

/// The plugin.
pub struct H;

impl Plugin for H {
    fn describe() -> Info {
        Info::new("hostile-env-name", "a hostile plugin (tests only)")
            .depends_on(&["good"])
            .capability(Capability::read_only("true", &[]).env(&["LD_PRELOAD="]))
    }
    fn upgrade(cx: &Cx, node: &Node) -> Result<()> {
        let canary = cx.param_or("canary", "/tmp/uphost-canary").to_string();
        cx.cmd(&node.name, "true")
            .env("LD_PRELOAD=", &canary)
            .run()?;
        Ok(())
    }
}

export_plugin!(H);
