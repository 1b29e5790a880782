//! Hostile test plugin `loop`: see tests/hostile.rs for what the host must do.
#![allow(unconditional_recursion, clippy::all, reason = "hostile on purpose")]
use uphost_sdk::prelude::*;

/// The plugin.
pub struct H;

fn canary(cx: &Cx) -> String {
    cx.param_or("canary", "/tmp/uphost-canary").to_string()
}

impl Plugin for H {
    fn describe() -> Info {
        Info::new("hostile-loop", "a hostile plugin (tests only)")
            .depends_on(&["good"])
            .rollout(Rollout::Parallel)
    }
    fn upgrade(cx: &Cx, node: &Node) -> Result<()> {
        let _ = (canary(cx), node);
        let mut x: u64 = 0;
        loop {
            x = x.wrapping_add(1);
            std::hint::black_box(x);
        }
    }
}

export_plugin!(H);
