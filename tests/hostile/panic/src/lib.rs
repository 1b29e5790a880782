//! Hostile test plugin `panic`: see tests/hostile.rs for what the host must do.
#![allow(unconditional_recursion, clippy::all, reason = "hostile on purpose")]
use uphost_sdk::prelude::*;

/// The plugin.
pub struct H;

fn canary(cx: &Cx) -> String {
    cx.param_or("canary", "/tmp/uphost-canary").to_string()
}

impl Plugin for H {
    fn describe() -> Info {
        Info::new("hostile-panic", "a hostile plugin (tests only)")
            .depends_on(&["good"])
            .rollout(Rollout::Parallel)
    }
    fn upgrade(cx: &Cx, node: &Node) -> Result<()> {
        let _ = (canary(cx), node);
        let v: Vec<u32> = Vec::new();
        if v.is_empty() {
            panic!("hostile plugin panicked on purpose");
        }
        Ok(())
    }
}

export_plugin!(H);
