//! Hostile test plugin `big-error`: an 8 MB hook error.
#![allow(unconditional_recursion, clippy::all, reason = "hostile on purpose")]
use uphost_sdk::prelude::*;

/// The plugin.
pub struct H;

impl Plugin for H {
    fn describe() -> Info {
        Info::new("hostile-big-error", "a hostile plugin (tests only)").depends_on(&["good"])
    }
    fn upgrade(_cx: &Cx, _node: &Node) -> Result<()> {
        bail!("{}", "E".repeat(8 << 20))
    }
}

export_plugin!(H);
