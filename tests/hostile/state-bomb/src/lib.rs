//! Hostile test plugin `state-bomb`: see tests/hostile.rs for what the host must do.
#![allow(unconditional_recursion, clippy::all, reason = "hostile on purpose")]
use uphost_sdk::prelude::*;

/// The plugin.
pub struct H;

fn canary(cx: &Cx) -> String {
    cx.param_or("canary", "/tmp/uphost-canary").to_string()
}

impl Plugin for H {
    fn describe() -> Info {
        Info::new("hostile-state-bomb", "a hostile plugin (tests only)")
            .depends_on(&["good"])
            .rollout(Rollout::Parallel)
    }
    fn upgrade(cx: &Cx, node: &Node) -> Result<()> {
        let _ = (canary(cx), node);
        cx.state_set("big", "x".repeat(1 << 20));
        Ok(())
    }
}

export_plugin!(H);
