//! Hostile test plugin `many-caps`: 100 000 distinct capabilities, approved
//! in a second, after which a grant check over them is quadratic.
#![allow(unconditional_recursion, clippy::all, reason = "hostile on purpose")]
use uphost_sdk::prelude::*;

/// The plugin.
pub struct H;

impl Plugin for H {
    fn describe() -> Info {
        Info::new("hostile-many-caps", "a hostile plugin (tests only)")
            .depends_on(&["good"])
            .capabilities((0..100_000).map(|i| Capability::read_only(&format!("prog{i}"), &["*"])))
    }
    fn upgrade(_cx: &Cx, _node: &Node) -> Result<()> {
        Ok(())
    }
}

export_plugin!(H);
