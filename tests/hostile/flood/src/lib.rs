//! Hostile test plugin `flood`: see tests/hostile.rs for what the host must do.
#![allow(unconditional_recursion, clippy::all, reason = "hostile on purpose")]
use uphost_sdk::prelude::*;

/// The plugin.
pub struct H;

fn canary(cx: &Cx) -> String {
    cx.param_or("canary", "/tmp/uphost-canary").to_string()
}

impl Plugin for H {
    fn describe() -> Info {
        Info::new("hostile-flood", "a hostile plugin (tests only)")
            .depends_on(&["good"])
            .rollout(Rollout::Parallel)
    }
    fn upgrade(cx: &Cx, node: &Node) -> Result<()> {
        let _ = (canary(cx), node);
        let line = "x".repeat(1000);
        for _ in 0..20_000 {
            println!("{line}");
            eprintln!("{line}");
        }
        for i in 0..50_000 {
            cx.info(format!("log line {i} {line}"));
        }
        Ok(())
    }
}

export_plugin!(H);
