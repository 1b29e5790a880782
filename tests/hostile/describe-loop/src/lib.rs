//! Hostile test plugin `describe-loop`: `describe` never returns.
#![allow(unconditional_recursion, clippy::all, reason = "hostile on purpose")]
use uphost_sdk::prelude::*;

/// The plugin.
pub struct H;

impl Plugin for H {
    fn describe() -> Info {
        let mut n = 0u64;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
            if n == u64::MAX {
                break;
            }
        }
        Info::new("hostile-describe-loop", "a hostile plugin (tests only)")
    }
    fn upgrade(_cx: &Cx, _node: &Node) -> Result<()> {
        Ok(())
    }
}

export_plugin!(H);
