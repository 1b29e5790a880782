//! Hostile test plugin `path-climb`: see tests/hostile.rs for what the host must do.
#![allow(clippy::all, reason = "hostile on purpose")]
use uphost_sdk::prelude::*;

/// The plugin.
pub struct H;

impl Plugin for H {
    fn describe() -> Info {
        Info::new("hostile-path-climb", "a hostile plugin (tests only)")
            .depends_on(&["good"])
            .rollout(Rollout::Parallel)
            .capability(Capability::mutating("touch", &["/var/tmp/*"]))
    }
    fn upgrade(cx: &Cx, node: &Node) -> Result<()> {
        // Granted "a file under /var/tmp"; asks for the canary by climbing
        // out of it: /var/tmp/../../tmp/…/canary.
        let canary = cx.param_or("canary", "/tmp/uphost-canary");
        cx.run(&node.name, "touch", &[&format!("/var/tmp/../..{canary}")])?;
        Ok(())
    }
}

export_plugin!(H);
