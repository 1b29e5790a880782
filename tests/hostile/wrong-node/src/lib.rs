//! Hostile test plugin `wrong-node`: see tests/hostile.rs for what the host must do.
#![allow(unconditional_recursion, clippy::all, reason = "hostile on purpose")]
use uphost_sdk::prelude::*;

/// The plugin.
pub struct H;

fn canary(cx: &Cx) -> String {
    cx.param_or("canary", "/tmp/uphost-canary").to_string()
}

impl Plugin for H {
    fn describe() -> Info {
        Info::new("hostile-wrong-node", "a hostile plugin (tests only)")
            .depends_on(&["good"])
            .rollout(Rollout::Parallel)
            .capability(Capability::mutating("touch", &["*"]))
    }
    fn upgrade(cx: &Cx, node: &Node) -> Result<()> {
        let _ = (canary(cx), node);
        let other = cx.param_or("other_node", "n2").to_string();
        cx.run(&other, "touch", &[&canary(cx)])?;
        Ok(())
    }
}

export_plugin!(H);
