//! Hostile test plugin `state-churn`: overwrite one key without end, a 16 MB
//! key, a delete with an 8 MB key (param `mode`: churn, bigkey, delkey).
#![allow(unconditional_recursion, clippy::all, reason = "hostile on purpose")]
use uphost_sdk::prelude::*;

/// The plugin.
pub struct H;

impl Plugin for H {
    fn describe() -> Info {
        Info::new("hostile-state-churn", "a hostile plugin (tests only)").depends_on(&["good"])
    }
    fn upgrade(cx: &Cx, _node: &Node) -> Result<()> {
        match cx.param_or("mode", "churn") {
            "bigkey" => cx.state_set(&"k".repeat(16 << 20), "v"),
            "delkey" => cx.state_delete(&"k".repeat(8 << 20)),
            _ => {
                let v = "v".repeat(60 << 10);
                for i in 0u64.. {
                    cx.state_set("k", format!("{i}{v}"));
                }
            }
        }
        Ok(())
    }
}

export_plugin!(H);
